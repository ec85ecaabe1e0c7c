//! Commands that read or explain: plan, status, audit, lint.

use super::*;

pub(super) async fn plan(global: &GlobalArgs, printer: &Printer, args: PlanArgs) -> Result<()> {
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
        backfill: backfill_shape(&args.tuning),
        engine: args.tuning.engine,
        wal_compression: wal_compression(&args.tuning),
        pace: pace(&args.tuning),
    };
    let plan = make_plan(&client, &file, options).await?;
    let mut report = PlanReport::new(plan.clone());
    if args.scan_values && plan.blockers.is_empty() {
        report.values = Some(backfill::scan::scan(&client, &plan).await?);
    }
    printer.report(&report).map_err(io_error)?;
    refuse_blockers(&plan)?;
    match report.values.as_ref().and_then(|v| v.misfits.first()) {
        Some(m) => Err(Error::Refused(format!(
            "the row of {} with {} does not convert to the new type: {}; fix it before `pgshift apply`",
            m.table, m.key, m.reason
        ))),
        None => Ok(()),
    }
}

pub(super) async fn status(global: &GlobalArgs, printer: &Printer, args: StatusArgs) -> Result<()> {
    let client = primary(global)?.connect(APP_NAME).await?;
    let mut migrations = state::list(&client).await?;
    if let Some(dir) = args
        .migration
        .as_deref()
        .map(Path::new)
        .filter(|p| p.is_dir())
    {
        let files = runner::states(&client, &runner::files(dir)?).await?;
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

pub(super) async fn audit(global: &GlobalArgs, printer: &Printer, args: AuditArgs) -> Result<()> {
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
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
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
            std::fs::write(&file, audit::migration_sql(k)).map_err(|source| Error::Write {
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

pub(super) fn lint(printer: &Printer, args: LintArgs) -> Result<()> {
    let config = crate::lint::Config::load(&args.config)?;
    let files = crate::lint::files(&args.paths)?;
    let mut findings = Vec::new();
    for file in &files {
        let (name, sql) = if file.as_os_str() == "-" {
            let mut sql = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql).map_err(|source| {
                Error::Read {
                    path: file.clone(),
                    source,
                }
            })?;
            ("stdin".to_string(), sql)
        } else {
            let sql = std::fs::read_to_string(file).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            (file.display().to_string(), sql)
        };
        findings.extend(crate::lint::lint(&name, &sql, &config)?);
    }
    let report = LintReport {
        findings,
        files: files.len(),
    };
    if printer.format() == crate::cli::Format::Github {
        printer.raw(|w| report.github(w)).map_err(io_error)?;
    } else if printer.format() == crate::cli::Format::Sarif {
        printer.raw(|w| report.sarif(w)).map_err(io_error)?;
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
