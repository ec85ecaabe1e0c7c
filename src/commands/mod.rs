//! Runs each CLI command: connect, plan, act, report. The commands live in
//! `inspect` (plan, status, audit, lint), `check`, `migrate` (apply and
//! everything that moves a migration) and `gate` (around the cutover);
//! shared helpers are here.

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
use crate::connection::{Target, WalCompression};
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

mod check;
mod gate;
mod inspect;
mod migrate;

use check::*;
use gate::*;
use inspect::*;
use migrate::*;

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
        Command::Completions(args) => completions(&printer, args.shell),
        Command::Man => man(&printer),
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
        let (table, column, change) = match &located.value {
            Intent::WidenToBigint { table, column } => (table, column, None),
            Intent::ChangeType {
                table,
                column,
                change,
            } => (table, column, Some(change.clone())),
        };
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
            change,
        });
    }
    let roots: Vec<u32> = requests.iter().map(|r| r.table).collect();
    let mut snapshot = catalog::load(client, &roots).await?;
    rehearse(client, &requests, &mut snapshot).await?;
    let mut plan = plan::build(&file.name, &file.checksum, &requests, &snapshot, options)?;
    plan.blockers
        .extend(held_by_unfinished(client, &plan).await?);
    Ok(plan)
}

/// Tables of `plan` that another migration has not finished with: the copy
/// engine's, cut over, keeps its original in sync (as `pgshift_old_…`)
/// until finalize, and one before cutover has its copy or shadow columns
/// there. A second
/// migration on them would fail at its cutover, after all its work.
async fn held_by_unfinished(client: &Client, plan: &Plan) -> Result<Vec<plan::Blocker>> {
    let mut blockers = Vec::new();
    for other in state::list(client).await? {
        if other.name == plan.migration
            || matches!(other.phase, Phase::Finalized | Phase::RolledBack)
        {
            continue;
        }
        // After an update engine's cutover the table is the user's again (a
        // retired column and a reverse trigger ride along, and a copy
        // carries both); a copy engine's keeps the original beside it.
        if other.phase == Phase::CutOver && other.plan.engine != plan::Engine::Copy {
            continue;
        }
        for t in plan.tables.iter().filter(|t| {
            other
                .plan
                .tables
                .iter()
                .any(|o| o.schema == t.schema && o.name == t.name)
        }) {
            let (why, remedy) = if other.phase == Phase::CutOver {
                (
                    format!(
                        "migration {} is cut over on it and keeps the original in sync for its rollback until finalized",
                        other.name
                    ),
                    format!("run `pgshift finalize {0}` (or `pgshift rollback {0}`) first", other.name),
                )
            } else {
                (
                    format!("migration {} is at phase {} on it", other.name, other.phase),
                    format!(
                        "let it finish (`pgshift resume {0}`, then `pgshift finalize {0}`) or run `pgshift rollback {0}` first",
                        other.name
                    ),
                )
            };
            blockers.push(plan::Blocker {
                object: format!("table {}", t.display()),
                reason: why,
                remedy,
            });
        }
    }
    Ok(blockers)
}

/// Rehearses each table's type changes (other than integer widenings) on an
/// empty copy, and reads the settings the conversions will run with.
async fn rehearse(
    client: &Client,
    requests: &[Request],
    snapshot: &mut catalog::Catalog,
) -> Result<()> {
    let mut tables: Vec<catalog::rehearse::TableChanges> = Vec::new();
    for r in requests {
        let Some(change) = &r.change else { continue };
        let Some(t) = snapshot.table(r.table) else {
            continue;
        };
        let Some(c) = t.column(&r.column) else {
            return Err(Error::UnknownColumn {
                table: t.display(),
                column: r.column.clone(),
            });
        };
        let entry = (c.name.clone(), c.type_name.clone(), change.clone());
        match tables.iter_mut().find(|x| x.oid == r.table) {
            Some(x) => x.columns.push(entry),
            None => tables.push(catalog::rehearse::TableChanges {
                oid: t.oid,
                schema: &t.schema,
                name: &t.name,
                columns: vec![entry],
            }),
        }
    }
    if tables.is_empty() {
        return Ok(());
    }
    // The views over the changing tables, directly or through other views.
    let views = snapshot.views_over(|v| {
        v.table_columns
            .iter()
            .any(|(t, _)| tables.iter().any(|x| x.oid == *t))
    });
    let (rehearsals, rehearsed_views) =
        catalog::rehearse::rehearse(client, &tables, &views).await?;
    let settings = catalog::rehearse::conversion_settings(client).await?;
    snapshot.conversion_settings = settings;
    snapshot.rehearsals = rehearsals;
    snapshot.rehearsed_views = rehearsed_views;
    Ok(())
}

/// A completion script for `shell`, from the CLI definition itself.
fn completions(printer: &Printer, shell: clap_complete::Shell) -> Result<()> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    printer
        .raw(|w| {
            clap_complete::generate(shell, &mut command, "pgshift", w);
            Ok(())
        })
        .map_err(io_error)
}

/// The man page (roff), from the CLI definition itself.
fn man(printer: &Printer) -> Result<()> {
    use clap::CommandFactory;
    printer
        .raw(|w| clap_mangen::Man::new(Cli::command()).render(w))
        .map_err(io_error)
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
        target: t.batch_target.unwrap_or(backfill::UPDATE_TARGET),
        copy_target: t.batch_target.unwrap_or(backfill::COPY_TARGET),
        min_batch: t.min_batch,
        max_batch: t.max_batch,
        two_pass_above: t.two_pass_above,
        max_rows_per_second: t.max_rows_per_second,
        max_wal_per_second: Some(t.max_wal_mb_per_second * 1_000_000).filter(|&b| b > 0),
    }
}

/// The backfill `t` asks for: one worker per connection past the lifeline.
fn backfill_shape(t: &Tuning) -> plan::BackfillShape {
    plan::BackfillShape {
        workers: t.max_connections as usize - 1,
        two_pass_above: t.two_pass_above,
    }
}

/// The least WAL while the commit probe paces the work; when it runs at
/// full speed, the method that costs no time.
fn wal_compression(t: &Tuning) -> WalCompression {
    if pace(t).paced {
        WalCompression::Small
    } else {
        WalCompression::Fast
    }
}

/// How fast the backfill is asked to go, for the plan's time estimate.
fn pace(t: &Tuning) -> plan::Pace {
    plan::Pace {
        paced: t.max_commit_latency.active().is_some(),
        max_rows_per_second: t.max_rows_per_second,
    }
}

fn limits(t: &Tuning) -> Limits {
    Limits {
        max_connections: t.max_connections,
        min_free_connections: t.min_free_connections,
        max_replica_lag: t.max_replica_lag,
        max_commit_latency: t.max_commit_latency.active(),
        flush_wal_every: Some(t.flush_wal_every).filter(|d| !d.is_zero()),
        max_slot_wal_bytes: Some((t.max_slot_wal_mb as i64) << 20).filter(|&b| b > 0),
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
    let limits = limits(tuning);
    let target = primary(global)?.with_wal_compression(wal_compression(tuning));
    let lifeline = target.connect("pgshift lifeline").await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn tuning(args: &[&str]) -> Tuning {
        let argv = ["pgshift", "apply", "m.sql"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Apply(a) => a.tuning,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn each_engine_has_its_default_batch_target_and_the_flag_sets_both() {
        let defaults = backfill_settings(&tuning(&[]));
        assert_eq!(defaults.target, backfill::UPDATE_TARGET);
        assert_eq!(defaults.copy_target, backfill::COPY_TARGET);
        let set = backfill_settings(&tuning(&["--batch-target", "50ms"]));
        assert_eq!(set.target, Duration::from_millis(50));
        assert_eq!(set.copy_target, Duration::from_millis(50));
    }
}
