//! Commands that change the database: apply (a file or a folder), resume,
//! cutover, rollback, finalize, pause, with the plan gate and the watch window.

use super::*;

pub(super) async fn apply(global: &GlobalArgs, printer: &Printer, args: ApplyArgs) -> Result<()> {
    if args.migration.is_dir() {
        return apply_folder(global, printer, args).await;
    }
    // An ordinary migration (not an integer widening) goes through the runner, like a folder of one.
    let file = MigrationFile::read(&args.migration)?;
    if migration::intents(&file).is_err() {
        return apply_folder(global, printer, args).await;
    }
    apply_file(global, printer, args).await
}

/// Applies the pending files of a folder (or one ordinary file) in lexical
/// order: integer widenings through the online engine, everything else
/// through the runner.
pub(super) async fn apply_folder(
    global: &GlobalArgs,
    printer: &Printer,
    args: ApplyArgs,
) -> Result<()> {
    let started = Instant::now();
    let dir = args.migration.clone();
    let options = runner::Options {
        allow_rewrite: args.allow_rewrite,
        allow_unparsed: args.allow_unparsed,
    };
    let target = primary(global)?;
    let lifeline = target.connect("pgshift lifeline").await?;
    guard::check_budget(
        &lifeline,
        &limits(&args.tuning),
        i64::from(args.tuning.max_connections) - 1,
    )
    .await?;
    // Everything is read and planned before anything runs: input errors change nothing.
    let mut work = Vec::new();
    let paths = if dir.is_dir() {
        runner::files(&dir)?
    } else {
        vec![dir.clone()]
    };
    for f in runner::states(&lifeline, &paths).await? {
        let path = f.path.clone();
        let file = MigrationFile::read(&path)?;
        match f.state.as_str() {
            "applied" => continue,
            "changed" => {
                return Err(Error::Usage(format!(
                    "{} was applied but has changed since (checksum differs); restore it, or add a new migration instead",
                    path.display()
                )))
            }
            _ => {}
        }
        let planned = match migration::intents(&file) {
            Ok(_) => None,
            Err(_) => Some(runner::plan_file(&file, &options)?),
        };
        work.push((file, planned));
    }
    state::ensure_schema(&lifeline).await?;
    runner::ensure_schema(&lifeline).await?;
    let folder = format!("folder:{}", dir.display());
    if !state::try_lock(&lifeline, &folder).await? {
        return Err(Error::Refused(format!(
            "another pgshift process is applying {}",
            dir.display()
        )));
    }
    let worker = target.connect(APP_NAME).await?;
    let policy = lock_policy(&args.tuning);
    let mut applied = Vec::new();
    for (file, planned) in work {
        printer.note(format!("{}: applying", file.name));
        match planned {
            Some(planned) => {
                let took = runner::apply_file(&worker, &file, &planned, &policy).await?;
                printer.note(format!("{}: applied in {} ms", file.name, took.as_millis()));
            }
            None => {
                let t = Instant::now();
                let mut one = args.clone();
                one.migration = file.path.clone();
                Box::pin(apply_file(global, printer, one)).await?;
                runner::record_engine_file(&lifeline, &file, t.elapsed()).await?;
            }
        }
        applied.push(file.name);
    }
    printer
        .report(&RunReport {
            migration: dir.display().to_string(),
            command: "apply",
            phase: "applied".into(),
            seconds: started.elapsed().as_secs_f64(),
            message: if applied.is_empty() {
                "nothing pending".into()
            } else {
                format!("applied {}", applied.join(", "))
            },
        })
        .map_err(io_error)
}

pub(super) async fn apply_file(
    global: &GlobalArgs,
    printer: &Printer,
    args: ApplyArgs,
) -> Result<()> {
    let started = Instant::now();
    let file = MigrationFile::read(&args.migration)?;
    migration::intents(&file)?;
    let target = primary(global)?;
    let client = target.connect(APP_NAME).await?;
    let plan = make_plan(
        &client,
        &file,
        plan::Options {
            rebuild_matviews: args.rebuild_matviews,
            backfill: super::backfill_shape(&args.tuning),
            engine: args.tuning.engine,
            wal_compression: super::wal_compression(&args.tuning),
            pace: super::pace(&args.tuning),
        },
    )
    .await?;
    refuse_blockers(&plan)?;
    if !plan.in_place.is_empty() {
        return apply_in_place(printer, &client, &file, &plan, &args, started).await;
    }
    if let Some(existing) = state::get(&client, &file.name).await? {
        match existing.phase {
            Phase::RolledBack => {}
            Phase::Finalized => {
                return printer
                    .report(&RunReport {
                        migration: file.name.clone(),
                        command: "apply",
                        phase: existing.phase.as_str().into(),
                        seconds: 0.0,
                        message: "already finalized; nothing to do".into(),
                    })
                    .map_err(io_error)
            }
            phase => {
                return Err(Error::Usage(format!(
                    "migration {} was already started and is at phase {phase}: run `pgshift resume {}` (or `pgshift rollback {}`)",
                    file.name, file.name, file.name
                )))
            }
        }
    }
    if args.watch.watch.is_some() && !guard::watch::available(&client).await? {
        return Err(Error::Usage(
            "--watch compares statement times from pg_stat_statements, which is not installed on the primary: \
             add it to shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
                .into(),
        ));
    }
    drop(client);
    // The plan check before cutover needs a workload: find out now, not after the backfill.
    if let (Some(url), false) = (&global.replica_url, args.workload.accept_plan_changes) {
        let target = Target::parse(url, "--replica-url")?
            .connect("pgshift check")
            .await?;
        plancheck::workload(&target, &check_options(&args.workload)).await?;
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    let runner = runner(global, printer, plan, &args.tuning).await?;
    state::start(
        &runner.lifeline,
        &runner.plan,
        &file.path.display().to_string(),
    )
    .await?;
    printer.note(format!("{}: started (state in schema pgshift)", file.name));
    let outcome = forward_with_gate(
        global,
        printer,
        &runner,
        Phase::Expanding,
        args.no_cutover,
        &args.workload,
        &args.watch,
    )
    .await;
    finish(printer, &runner, "apply", outcome, started).await
}

/// A migration whose every type change is catalog-only: each `ALTER` as
/// written, under `lock_timeout` with retries, recorded like an ordinary
/// migration (no copy, no state to resume or roll back).
async fn apply_in_place(
    printer: &Printer,
    client: &Client,
    file: &MigrationFile,
    plan: &Plan,
    args: &ApplyArgs,
    started: Instant,
) -> Result<()> {
    state::ensure_schema(client).await?;
    runner::ensure_schema(client).await?;
    let planned: Vec<runner::Planned> = plan
        .in_place
        .iter()
        .map(|c| runner::Planned {
            line: 1,
            original: c.statement.clone(),
            rewrite: Some("catalog-only type change: the plain ALTER under lock_timeout"),
            actions: vec![runner::Action::Ddl(c.statement.clone())],
        })
        .collect();
    printer.note(format!(
        "{}: every change is catalog-only (no rewrite, no index rebuilt): running the ALTERs in place",
        file.name
    ));
    runner::apply_file(client, file, &planned, &lock_policy(&args.tuning)).await?;
    let tables: Vec<&str> = plan.in_place.iter().map(|c| c.table.as_str()).collect();
    printer
        .report(&RunReport {
            migration: file.name.clone(),
            command: "apply",
            phase: "applied".into(),
            seconds: started.elapsed().as_secs_f64(),
            message: format!("changed {} in place (catalog-only)", tables.join(", ")),
        })
        .map_err(io_error)
}

pub(super) async fn finish(
    printer: &Printer,
    runner: &Runner,
    command: &'static str,
    outcome: Result<Phase>,
    started: Instant,
) -> Result<()> {
    match outcome {
        Ok(phase) => {
            let message = match phase {
                Phase::Ready => format!(
                    "ready for cutover; run `pgshift cutover {}` when you choose",
                    runner.plan.migration
                ),
                Phase::CutOver => format!(
                    "cut over; the {} kept in sync for rollback until `pgshift finalize {}`",
                    match runner.plan.engine {
                        crate::plan::Engine::Update => "old columns are",
                        crate::plan::Engine::Copy => "original tables are",
                    },
                    runner.plan.migration
                ),
                other => format!("at phase {other}"),
            };
            printer
                .report(&RunReport {
                    migration: runner.plan.migration.clone(),
                    command,
                    phase: phase.as_str().into(),
                    seconds: started.elapsed().as_secs_f64(),
                    message,
                })
                .map_err(io_error)
        }
        Err(e) if runner.rollback_requested.load(Ordering::SeqCst) => {
            tracing::warn!("{e}; rolling back through the lifeline");
            state::clear_request(&runner.lifeline, &runner.plan.migration).await?;
            runner.abort().await?;
            Err(Error::Refused(format!(
                "migration {} was rolled back on request; everything pgshift created is gone",
                runner.plan.migration
            )))
        }
        Err(e) if runner.interrupted.load(Ordering::SeqCst) => {
            runner.record_error(&e).await;
            let phase = state::get(&runner.lifeline, runner.name())
                .await?
                .map(|m| m.phase);
            // On a terminal, offer the way back; anywhere else, stay paused.
            if phase.is_some_and(Phase::before_cutover)
                && printer.confirm(&format!(
                    "{}: interrupted. Roll back now? (No keeps it paused for `pgshift resume {}`)",
                    runner.name(),
                    runner.name()
                ))
            {
                runner.abort().await?;
                return Err(Error::Refused(format!(
                    "{} was rolled back after the interrupt",
                    runner.name()
                )));
            }
            Err(e)
        }
        Err(e) => {
            runner.record_error(&e).await;
            Err(e)
        }
    }
}

/// A MIGRATION argument after `apply`: a path to the file, or its name.
pub(super) fn migration_name(arg: &str) -> (String, Option<PathBuf>) {
    let path = Path::new(arg);
    if arg.ends_with(".sql") || path.is_file() {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string());
        (name, Some(path.to_path_buf()))
    } else {
        (arg.to_string(), None)
    }
}

/// Loads a started migration and refuses when its file changed since.
pub(super) async fn started_migration(client: &Client, arg: &str) -> Result<state::Migration> {
    let (name, path) = migration_name(arg);
    let m = state::get(client, &name)
        .await?
        .ok_or_else(|| Error::UnknownMigration { name: name.clone() })?;
    let path = path.unwrap_or_else(|| PathBuf::from(&m.path));
    if path.is_file() {
        let file = MigrationFile::read(&path)?;
        if file.checksum != m.checksum {
            return Err(Error::FileChanged {
                name: m.name.clone(),
                path: path.display().to_string(),
                started: m.checksum[..12].to_string(),
                now: file.checksum[..12].to_string(),
            });
        }
    }
    Ok(m)
}

pub(super) async fn resume(
    global: &GlobalArgs,
    printer: &Printer,
    args: RunArgs,
    command: &'static str,
) -> Result<()> {
    let started = Instant::now();
    let client = primary(global)?.connect(APP_NAME).await?;
    let m = started_migration(&client, &args.migration).await?;
    if command == "resume" && steer_running(&client, &m.name, Some(false), None).await? {
        return printer
            .report(&RunReport {
                migration: m.name.clone(),
                command,
                phase: m.phase.as_str().into(),
                seconds: 0.0,
                message: "the running pgshift was asked to continue".into(),
            })
            .map_err(io_error);
    }
    drop(client);
    match (command, m.phase) {
        (_, Phase::Finalized | Phase::RolledBack | Phase::CutOver) => {
            return printer
                .report(&RunReport {
                    migration: m.name.clone(),
                    command,
                    phase: m.phase.as_str().into(),
                    seconds: 0.0,
                    message: format!("already {}; nothing to do", m.phase),
                })
                .map_err(io_error)
        }
        ("cutover", phase) if phase != Phase::Ready => {
            return Err(Error::Usage(format!(
                "migration {} is at phase {phase}, not ready: run `pgshift resume {} --no-cutover` first",
                m.name, m.name
            )))
        }
        _ => {}
    }
    let runner = runner(global, printer, m.plan.clone(), &args.tuning).await?;
    let outcome = forward_with_gate(
        global,
        printer,
        &runner,
        m.phase,
        command == "resume" && args.no_cutover,
        &args.workload,
        &args.watch,
    )
    .await;
    finish(printer, &runner, command, outcome, started).await
}

pub(super) async fn rollback(global: &GlobalArgs, printer: &Printer, args: RunArgs) -> Result<()> {
    let started = Instant::now();
    let client = primary(global)?.connect(APP_NAME).await?;
    let (name, _) = migration_name(&args.migration);
    let m = state::get(&client, &name)
        .await?
        .ok_or(Error::UnknownMigration { name })?;
    if m.phase.before_cutover() && steer_running(&client, &m.name, None, Some("rollback")).await? {
        // The running process rolls back with the connections it holds.
        printer.note(format!(
            "{}: asked the running pgshift to roll back; waiting for it",
            m.name
        ));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = state::get(&client, &m.name).await?.map(|m| m.phase);
            if now == Some(Phase::RolledBack) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Runtime(format!(
                    "the running pgshift did not roll back {} within 10 minutes",
                    m.name
                )));
            }
        }
        return printer
            .report(&RunReport {
                migration: m.name.clone(),
                command: "rollback",
                phase: Phase::RolledBack.as_str().into(),
                seconds: started.elapsed().as_secs_f64(),
                message: "rolled back by the running pgshift, through its own connections".into(),
            })
            .map_err(io_error);
    }
    drop(client);
    let message = match m.phase {
        Phase::Finalized => {
            return Err(Error::Usage(format!(
                "migration {} is finalized: the old columns are gone, so there is nothing to roll back to",
                m.name
            )))
        }
        Phase::RolledBack => {
            // Finishes the cleanup of an interrupted rollback; harmless otherwise.
            let runner = runner(global, printer, m.plan.clone(), &args.tuning).await?;
            runner.cleanup_after_revert().await?;
            "already rolled back; nothing left to do".to_string()
        }
        Phase::CutOver => {
            let runner = runner(global, printer, m.plan.clone(), &args.tuning).await?;
            let originals = match m.plan.engine {
                crate::plan::Engine::Copy => "tables",
                crate::plan::Engine::Update => "columns",
            };
            match runner.revert().await {
                Ok(held) => format!(
                    "rolled back from cut_over: the original {originals} are back with every write made since; the swap held its locks {} ms",
                    held.as_millis()
                ),
                Err(e) => {
                    if !matches!(e, Error::Refused(_)) {
                        runner.record_error(&e).await;
                    }
                    return Err(e);
                }
            }
        }
        _ => {
            let runner = runner(global, printer, m.plan.clone(), &args.tuning).await?;
            let outcome = runner.abort().await;
            if let Err(e) = outcome {
                runner.record_error(&e).await;
                return Err(e);
            }
            format!("rolled back from {}: everything pgshift created is gone, the table is as before", m.phase)
        }
    };
    printer
        .report(&RunReport {
            migration: m.name.clone(),
            command: "rollback",
            phase: Phase::RolledBack.as_str().into(),
            seconds: started.elapsed().as_secs_f64(),
            message,
        })
        .map_err(io_error)
}

pub(super) async fn finalize(
    global: &GlobalArgs,
    printer: &Printer,
    args: FinalizeArgs,
) -> Result<()> {
    let started = Instant::now();
    let client = primary(global)?.connect(APP_NAME).await?;
    let m = started_migration(&client, &args.migration).await?;
    drop(client);
    match m.phase {
        Phase::CutOver => {}
        Phase::Finalized => {
            return printer
                .report(&RunReport {
                    migration: m.name.clone(),
                    command: "finalize",
                    phase: m.phase.as_str().into(),
                    seconds: 0.0,
                    message: "already finalized; nothing to do".into(),
                })
                .map_err(io_error)
        }
        phase => {
            return Err(Error::Usage(format!(
                "migration {} is at phase {phase}; finalize comes after cutover",
                m.name
            )))
        }
    }
    // What finalize drops, named in the confirmation: the retired columns,
    // or (copy engine) the original tables with all their rows.
    let columns: Vec<String> = match &m.plan.copy {
        Some(copy) => copy
            .tables
            .iter()
            .map(|t| {
                format!(
                    "table {} (the original of {})",
                    crate::names::display(&t.schema, &t.old_name),
                    t.display()
                )
            })
            .collect(),
        None => m
            .plan
            .tables
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(move |c| format!("{}.{}", t.display(), c.retired))
            })
            .collect(),
    };
    if !args.yes
        && !printer.confirm(&format!(
            "finalize {} drops {} and makes rollback impossible. Continue?",
            m.name,
            columns.join(", ")
        ))
    {
        return Err(Error::Refused(format!(
            "finalize is irreversible and was not confirmed; rerun with --yes to drop {}",
            columns.join(", ")
        )));
    }
    let runner = runner(global, printer, m.plan.clone(), &args.tuning).await?;
    if let Err(e) = runner.finalize().await {
        runner.record_error(&e).await;
        return Err(e);
    }
    printer
        .report(&RunReport {
            migration: m.name.clone(),
            command: "finalize",
            phase: Phase::Finalized.as_str().into(),
            seconds: started.elapsed().as_secs_f64(),
            message: format!("finalized: dropped {}", columns.join(", ")),
        })
        .map_err(io_error)
}

pub(super) async fn pause(global: &GlobalArgs, printer: &Printer, args: NameArg) -> Result<()> {
    let client = primary(global)?.connect(APP_NAME).await?;
    let (name, _) = migration_name(&args.migration);
    state::get(&client, &name)
        .await?
        .ok_or_else(|| Error::UnknownMigration { name: name.clone() })?;
    if !steer_running(&client, &name, Some(true), None).await? {
        return Err(Error::Usage(format!(
            "no pgshift process is running migration {name}; it is already stopped (`pgshift resume {name}` continues it)"
        )));
    }
    printer
        .report(&RunReport {
            migration: name.clone(),
            command: "pause",
            phase: "paused".into(),
            seconds: 0.0,
            message: format!("pause requested; the backfill stops before its next batch (`pgshift resume {name}` continues)"),
        })
        .map_err(io_error)
}
