//! Runs each CLI command: connect, plan, act, report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::audit;
use crate::backfill;
use crate::catalog;
use crate::cli::{
    ApplyArgs, AuditArgs, CheckArgs, Cli, Command, FinalizeArgs, GlobalArgs, LintArgs, NameArg,
    PlanArgs, RunArgs, StatusArgs, Tuning, WatchArgs, WorkloadArgs,
};
use crate::connection::Target;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::execute::{LockPolicy, Runner};
use crate::guard::{self, Limits};
use crate::migration::{self, Intent, MigrationFile};
use crate::output::Printer;
use crate::plan::{self, Plan, Request};
use crate::plancheck::{self, CheckResult};
use crate::report::{
    AuditReport, CheckReport, FolderReport, LintReport, PlanReport, RunReport, RunnerPlanReport,
    StatusReport,
};
use crate::runner;
use crate::state::{self, Phase};

const APP_NAME: &str = "pgshift";

pub async fn run(cli: Cli, printer: Printer) -> Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Lint(args) => lint(&printer, args),
        Command::Plan(args) => plan(&global, &printer, args).await,
        Command::Check(args) => check(&global, &printer, args).await,
        Command::Apply(args) => apply(&global, &printer, args).await,
        Command::Status(args) => status(&global, &printer, args).await,
        Command::Resume(args) => resume(&global, &printer, args, "resume").await,
        Command::Cutover(args) => resume(&global, &printer, args, "cutover").await,
        Command::Rollback(args) => rollback(&global, &printer, args).await,
        Command::Finalize(args) => finalize(&global, &printer, args).await,
        Command::Pause(args) => pause(&global, &printer, args).await,
        Command::Audit(args) => audit(&global, &printer, args).await,
    }
}

fn primary(global: &GlobalArgs) -> Result<Target> {
    let url = global.database_url.as_deref().ok_or_else(|| {
        Error::Usage("no database given: pass --database-url or set DATABASE_URL".into())
    })?;
    Target::parse(url, "--database-url")
}

/// Reads the file, resolves its tables and plans it against the live catalog.
async fn make_plan(client: &Client, file: &MigrationFile, options: plan::Options) -> Result<Plan> {
    let intents = migration::intents(file)?;
    let mut requests = Vec::new();
    for located in &intents {
        let Intent::WidenToBigint { table, column } = &located.value;
        let oid = catalog::resolve_table(client, table)
            .await
            .map_err(|e| match e {
                Error::UnknownTable { table } => Error::Parse {
                    file: file.path.display().to_string(),
                    line: located.line,
                    message: format!("table {table} does not exist"),
                },
                other => other,
            })?;
        requests.push(Request {
            table: oid,
            column: column.clone(),
        });
    }
    let roots: Vec<u32> = requests.iter().map(|r| r.table).collect();
    let snapshot = catalog::load(client, &roots).await?;
    plan::build(&file.name, &file.checksum, &requests, &snapshot, options)
}

fn refuse_blockers(plan: &Plan) -> Result<()> {
    if plan.blockers.is_empty() {
        return Ok(());
    }
    let first = &plan.blockers[0];
    Err(Error::Unsupported {
        what: format!("migration {}", plan.migration),
        reason: format!(
            "{} blocker{} (first: {}: {}); see `pgshift plan`",
            plan.blockers.len(),
            if plan.blockers.len() == 1 { "" } else { "s" },
            first.object,
            first.reason
        ),
    })
}

async fn plan(global: &GlobalArgs, printer: &Printer, args: PlanArgs) -> Result<()> {
    let file = MigrationFile::read(&args.migration)?;
    if migration::intents(&file).is_err() {
        // Not an integer widening: an ordinary migration, planned statement by statement.
        let options = runner::Options {
            allow_rewrite: args.allow_rewrite,
            allow_unparsed: args.allow_unparsed,
        };
        let statements = runner::plan_file(&file, &options)?;
        return printer
            .report(&RunnerPlanReport {
                migration: file.name.clone(),
                statements,
            })
            .map_err(io_error);
    }
    let client = primary(global)?.connect(APP_NAME).await?;
    let options = plan::Options {
        rebuild_matviews: args.rebuild_matviews,
    };
    let plan = make_plan(&client, &file, options).await?;
    printer
        .report(&PlanReport::new(plan.clone()))
        .map_err(io_error)?;
    refuse_blockers(&plan)
}

fn io_error(e: std::io::Error) -> Error {
    Error::Runtime(format!("could not write output: {e}"))
}

fn lock_policy(t: &Tuning) -> LockPolicy {
    LockPolicy {
        lock_timeout: t.lock_timeout,
        retries: t.lock_retries,
    }
}

fn backfill_settings(t: &Tuning) -> backfill::Settings {
    backfill::Settings {
        fixed_batch: t.batch_size,
        target: t.batch_target,
        min_batch: t.min_batch,
        max_batch: t.max_batch,
        max_rows_per_second: t.max_rows_per_second,
    }
}

fn limits(t: &Tuning) -> Limits {
    Limits {
        max_connections: t.max_connections,
        min_free_connections: t.min_free_connections,
        max_replica_lag: t.max_replica_lag,
    }
}

/// SIGUSR1 pauses the backfill, SIGUSR2 lets it continue.
fn pause_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, value) in [
            (SignalKind::user_defined1(), true),
            (SignalKind::user_defined2(), false),
        ] {
            if let Ok(mut stream) = signal(kind) {
                let flag = flag.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        flag.store(value, Ordering::SeqCst);
                    }
                });
            }
        }
    }
    flag
}

/// Ctrl-C sets the flag: the run stops after the current batch or step.
fn interrupt_flag(printer: &Printer) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let printer = printer.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            printer.note("interrupt: stopping after the current step; state is kept");
            set.store(true, Ordering::SeqCst);
        }
    });
    flag
}

/// Opens the lifeline, checks the connection budget, takes the migration's
/// advisory lock, and opens the worker from a bounded pool.
async fn runner(
    global: &GlobalArgs,
    printer: &Printer,
    plan: Plan,
    tuning: &Tuning,
) -> Result<Runner> {
    let target = primary(global)?;
    let lifeline = target.connect("pgshift lifeline").await?;
    let limits = limits(tuning);
    // Before anything changes: would our connections leave the application enough?
    guard::check_budget(&lifeline, &limits, i64::from(tuning.max_connections) - 1).await?;
    state::ensure_schema(&lifeline).await?;
    if !state::try_lock(&lifeline, &plan.migration).await? {
        return Err(Error::Refused(format!(
            "another pgshift process is working on migration {}; wait for it, or use `pgshift pause|resume|rollback {}` to steer it",
            plan.migration, plan.migration
        )));
    }
    let pool = target.pool(APP_NAME, tuning.max_connections as usize - 1)?;
    let worker = target.checkout(&pool).await?;
    let replica = match &global.replica_url {
        Some(url) => Some(
            Target::parse(url, "--replica-url")?
                .connect("pgshift lag probe")
                .await?,
        ),
        None => None,
    };
    let events = Events::new(
        &plan.migration,
        tuning.events.as_deref(),
        tuning.on_event.as_deref(),
    )?;
    Ok(Runner::new(
        lifeline,
        pool,
        worker,
        replica,
        plan,
        lock_policy(tuning),
        backfill_settings(tuning),
        limits,
        events,
        printer.clone(),
        interrupt_flag(printer),
        pause_signals(),
    ))
}

/// When another pgshift runs `name`, asks it (through the state table) and
/// returns true; false when nothing runs it.
async fn steer_running(
    client: &Client,
    name: &str,
    pause: Option<bool>,
    request: Option<&str>,
) -> Result<bool> {
    if !state::is_running(client, name).await? {
        return Ok(false);
    }
    state::request(client, name, pause, request).await?;
    Ok(true)
}

async fn pause(global: &GlobalArgs, printer: &Printer, args: NameArg) -> Result<()> {
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

async fn apply(global: &GlobalArgs, printer: &Printer, args: ApplyArgs) -> Result<()> {
    if args.migration.is_dir() {
        return apply_folder(global, printer, args).await;
    }
    apply_file(global, printer, args).await
}

/// Applies the pending files of a folder in lexical order: integer
/// widenings through the online engine, everything else through the runner.
async fn apply_folder(global: &GlobalArgs, printer: &Printer, args: ApplyArgs) -> Result<()> {
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
    for f in runner::states(&lifeline, &dir).await? {
        let path = dir.join(format!("{}.sql", f.name));
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

async fn apply_file(global: &GlobalArgs, printer: &Printer, args: ApplyArgs) -> Result<()> {
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
        },
    )
    .await?;
    refuse_blockers(&plan)?;
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
    drop(client);
    if args.watch.watch.is_some()
        && !guard::watch::available(&client_for_watch(global).await?).await?
    {
        return Err(Error::Usage(
            "--watch compares statement times from pg_stat_statements, which is not installed on the primary: \
             add it to shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
                .into(),
        ));
    }
    // The plan check before cutover needs a workload: find out now, not after the backfill.
    if let (Some(url), false) = (&global.replica_url, args.workload.accept_plan_changes) {
        let target = Target::parse(url, "--replica-url")?
            .connect("pgshift check")
            .await?;
        let options = plancheck::Options {
            queries_file: args.workload.queries.clone(),
            top: args.workload.top,
            max_cost_ratio: args.workload.max_cost_ratio,
        };
        plancheck::workload(&target, &options).await?;
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

async fn finish(
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
                    "cut over; the old columns are kept in sync for rollback until `pgshift finalize {}`",
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
fn migration_name(arg: &str) -> (String, Option<PathBuf>) {
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
async fn started_migration(client: &Client, arg: &str) -> Result<state::Migration> {
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

async fn resume(
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

async fn rollback(global: &GlobalArgs, printer: &Printer, args: RunArgs) -> Result<()> {
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
            match runner.revert().await {
                Ok(held) => format!(
                    "rolled back from cut_over: the original columns are back with every write made since; the swap held its locks {} ms",
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

async fn finalize(global: &GlobalArgs, printer: &Printer, args: FinalizeArgs) -> Result<()> {
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
    let columns: Vec<String> = m
        .plan
        .tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(move |c| format!("{}.{}", t.display(), c.retired))
        })
        .collect();
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

async fn status(global: &GlobalArgs, printer: &Printer, args: StatusArgs) -> Result<()> {
    let client = primary(global)?.connect(APP_NAME).await?;
    let mut migrations = state::list(&client).await?;
    if let Some(dir) = args
        .migration
        .as_deref()
        .map(Path::new)
        .filter(|p| p.is_dir())
    {
        let files = runner::states(&client, dir).await?;
        return printer
            .report(&FolderReport { files, migrations })
            .map_err(io_error);
    }
    if let Some(arg) = args.migration {
        let (name, _) = migration_name(&arg);
        migrations.retain(|m| m.name == name);
        if migrations.is_empty() {
            return Err(Error::UnknownMigration { name });
        }
    }
    printer
        .report(&StatusReport { migrations })
        .map_err(io_error)
}

async fn audit(global: &GlobalArgs, printer: &Printer, args: AuditArgs) -> Result<()> {
    let client = primary(global)?.connect(APP_NAME).await?;
    let mut keys = audit::scan(&client, args.threshold).await?;
    let estimate = if let Some(window) = args.sample {
        printer.note(format!(
            "sampling sequences for {}",
            humantime::format_duration(window)
        ));
        let before = audit::read_sequences(&client, &keys).await?;
        tokio::time::sleep(window).await;
        let after = audit::read_sequences(&client, &keys).await?;
        audit::apply_sample(&mut keys, &before, &after, window);
        format!(
            "from growth sampled over {}",
            humantime::format_duration(window)
        )
    } else if audit::apply_history(&client, &mut keys).await? {
        "from readings recorded by earlier runs (--record)".to_string()
    } else {
        "unknown (use --sample 60s, or --record on a schedule)".to_string()
    };
    if args.record {
        audit::record(&client, &keys).await?;
    }
    audit::sort_by_urgency(&mut keys);
    let mut written = Vec::new();
    if let Some(dir) = &args.write_migrations {
        std::fs::create_dir_all(dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let at_risk = keys.iter().filter(|k| {
            k.used_pct > args.threshold && matches!(k.type_name.as_str(), "smallint" | "integer")
        });
        for (i, k) in at_risk.enumerate() {
            let file = dir.join(format!(
                "{:04}_widen_{}_{}.sql",
                i + 1,
                k.table.replace('.', "_"),
                k.column
            ));
            std::fs::write(&file, audit::migration_sql(k)).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            written.push(file.display().to_string());
        }
    }
    let report = AuditReport {
        columns: keys,
        threshold: args.threshold,
        estimate,
        written,
    };
    printer.report(&report).map_err(io_error)?;
    match report.at_risk() {
        0 => Ok(()),
        n => Err(Error::Refused(format!(
            "{n} column{} past {}% of {} range",
            if n == 1 { " is" } else { "s are" },
            args.threshold,
            if n == 1 { "its" } else { "their" }
        ))),
    }
}

/// Runs up to `ready`, then (unless told to stop there) the plan check when
/// a replica or clone is given, then the cutover, then the watch window.
async fn forward_with_gate(
    global: &GlobalArgs,
    printer: &Printer,
    runner: &Runner,
    phase: Phase,
    stop_at_ready: bool,
    workload: &WorkloadArgs,
    watch: &WatchArgs,
) -> Result<Phase> {
    let since = match watch.watch {
        Some(_) => Some(guard::watch::snapshot(&runner.lifeline).await?),
        None => None,
    };
    let phase = runner.forward(phase, true).await?;
    if phase != Phase::Ready || stop_at_ready {
        return Ok(phase);
    }
    if let (Some(url), false) = (&global.replica_url, workload.accept_plan_changes) {
        let target = Target::parse(url, "--replica-url")?
            .connect("pgshift check")
            .await?;
        wait_for_replay(&runner.lifeline, &target).await?;
        let result = run_check(&target, &runner.plan, None, workload).await?;
        if result.regressions > 0 {
            printer
                .report(&CheckReport(result.clone()))
                .map_err(io_error)?;
            return Err(Error::Refused(format!(
                "stopped at ready: {} of {} queries would get worse plans after cutover (see the report). \
                 Fix the cause, or run `pgshift cutover {} --accept-plan-changes`",
                result.regressions,
                result.queries.len(),
                runner.plan.migration
            )));
        }
        printer.note(format!(
            "plan check: {} queries, no regression",
            result.queries.len()
        ));
    }
    let before_cutover = match watch.watch {
        Some(_) => Some(guard::watch::snapshot(&runner.lifeline).await?),
        None => None,
    };
    runner.cutover().await?;
    if let (Some(window), Some(since), Some(cut)) = (watch.watch, since, before_cutover) {
        watch_window(printer, runner, window, &since, &cut, watch).await?;
    }
    Ok(Phase::CutOver)
}

/// Stays attached after cutover; rolls back by itself when a statement got
/// much slower than before the cutover, or free connections ran low.
async fn watch_window(
    printer: &Printer,
    runner: &Runner,
    window: Duration,
    since: &guard::watch::Snapshot,
    cut: &guard::watch::Snapshot,
    watch: &WatchArgs,
) -> Result<()> {
    let baseline = guard::watch::window(since, cut);
    printer.note(format!(
        "{}: watching for {} ({} statements in the baseline)",
        runner.name(),
        humantime::format_duration(window),
        baseline.len()
    ));
    let deadline = Instant::now() + window;
    let mut worst: Option<(f64, String)> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        runner.check_interrupt()?;
        let now = guard::watch::snapshot(&runner.lifeline).await?;
        let after = guard::watch::window(cut, &now);
        if let Some(w) = guard::watch::worst(&baseline, &after) {
            if worst.as_ref().is_none_or(|(r, _)| w.0 > *r) {
                worst = Some(w);
            }
        }
        let mut why = guard::watch::slowdown(&baseline, &after, watch.watch_max_latency_ratio);
        if why.is_none() {
            let h = guard::Headroom::read(&runner.lifeline).await?;
            let min_free = watch
                .watch_min_free_connections
                .unwrap_or_else(|| runner.limits.min_free(h.max_connections));
            if h.free() < min_free {
                why = Some(format!(
                    "only {} connection slots are free (in use {} of {}), below {min_free}",
                    h.free(),
                    h.in_use,
                    h.max_connections
                ));
            }
        }
        if let Some(why) = why {
            tracing::warn!("watch window: {why}; rolling back");
            runner
                .events
                .emit("watch_breach", serde_json::json!({"reason": why}));
            let held = runner.revert().await?;
            return Err(Error::Refused(format!(
                "watch window: {why}. Rolled back automatically through the lifeline (the swap held its locks {} ms); \
                 every write since cutover is kept",
                held.as_millis()
            )));
        }
    }
    printer.note(match worst {
        Some((ratio, q)) => format!(
            "{}: watch window passed; the most slowed statement ran at {ratio:.1}× its time before: `{}`",
            runner.name(),
            q.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        None => format!("{}: watch window passed (too few calls to compare)", runner.name()),
    });
    Ok(())
}

/// A short-lived connection to the primary for a pre-flight question.
async fn client_for_watch(global: &GlobalArgs) -> Result<Client> {
    primary(global)?.connect(APP_NAME).await
}

/// On a hot standby, waits until it has replayed what the primary wrote so far
/// (the shadow indexes and their statistics).
async fn wait_for_replay(primary: &Client, target: &Client) -> Result<()> {
    let standby: bool = target
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(Error::db(
            "could not ask the check target whether it is a standby",
        ))?
        .get(0);
    if !standby {
        return Ok(());
    }
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(Error::db("could not read the primary's WAL position"))?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up: bool = target
            .query_one(
                "SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .await
            .map_err(Error::db("could not read the standby's replay position"))?
            .get(0);
        if caught_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Refused(
                "the standby did not replay the migration's shadow columns within 2 minutes; the plan check cannot run there".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The check against `target`: the shadow method on a hot standby, the
/// rehearsal on a writable clone.
async fn run_check(
    target: &Client,
    plan: &Plan,
    queries: Option<Vec<String>>,
    workload: &WorkloadArgs,
) -> Result<CheckResult> {
    let options = plancheck::Options {
        queries_file: workload.queries.clone(),
        top: workload.top,
        max_cost_ratio: workload.max_cost_ratio,
    };
    let queries = match queries {
        Some(q) => q,
        None => plancheck::workload(target, &options).await?,
    };
    let standby: bool = target
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(Error::db(
            "could not ask the check target whether it is a standby",
        ))?
        .get(0);
    if standby {
        plancheck::shadow(target, plan, &queries, options.max_cost_ratio).await
    } else {
        plancheck::rehearsal(target, plan, &queries, options.max_cost_ratio).await
    }
}

async fn check(global: &GlobalArgs, printer: &Printer, args: CheckArgs) -> Result<()> {
    let url = global.replica_url.as_deref().ok_or_else(|| {
        Error::Usage(
            "check needs --replica-url (or PGSHIFT_REPLICA_URL): a hot standby or a writable clone"
                .into(),
        )
    })?;
    let (name, path) = migration_name(&args.migration);
    if let Some(p) = &path {
        migration::intents(&MigrationFile::read(p)?)?;
    }
    let target = Target::parse(url, "--replica-url")?
        .connect("pgshift check")
        .await?;
    let standby: bool = target
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(Error::db(
            "could not ask the check target whether it is a standby",
        ))?
        .get(0);
    let plan = if standby {
        // The shadow columns must exist there: the migration's stored plan names them.
        let m = state::get(&target, &name).await?.ok_or_else(|| {
            Error::Usage(format!(
                "migration {name} has not been started: on a hot standby the check reads the shadow columns, so run \
                 `pgshift apply {} --no-cutover` on the primary first",
                args.migration
            ))
        })?;
        if m.phase != Phase::Ready {
            return Err(Error::Usage(format!(
                "migration {name} is at phase {} on the standby; the shadow method needs it `ready` (after `apply --no-cutover`)",
                m.phase
            )));
        }
        m.plan
    } else {
        let p = path.ok_or_else(|| {
            Error::Usage("on a writable clone, pass the migration's .sql path".into())
        })?;
        let file = MigrationFile::read(&p)?;
        // A rehearsal is rolled back: materialized views may be rebuilt in it.
        make_plan(
            &target,
            &file,
            plan::Options {
                rebuild_matviews: true,
            },
        )
        .await?
    };
    let result = run_check(&target, &plan, None, &args.workload).await?;
    let regressions = result.regressions;
    printer.report(&CheckReport(result)).map_err(io_error)?;
    if regressions > 0 {
        return Err(Error::Refused(format!(
            "{regressions} queries would get worse plans after the migration"
        )));
    }
    Ok(())
}

fn lint(printer: &Printer, args: LintArgs) -> Result<()> {
    let config = crate::lint::Config::load(&args.config)?;
    let files = crate::lint::files(&args.paths)?;
    let mut findings = Vec::new();
    for file in &files {
        let sql = std::fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        findings.extend(crate::lint::lint(
            &file.display().to_string(),
            &sql,
            &config,
        )?);
    }
    let report = LintReport {
        findings,
        files: files.len(),
    };
    if printer.format() == crate::cli::Format::Github {
        printer.raw(|w| report.github(w)).map_err(io_error)?;
    } else {
        printer.report(&report).map_err(io_error)?;
    }
    match report.errors() {
        0 => Ok(()),
        n => Err(Error::Refused(format!(
            "lint found {n} error{}",
            if n == 1 { "" } else { "s" }
        ))),
    }
}
