//! Command-line interface: the contract users' scripts depend on.
//!
//! Command names, flags and exit codes are stable; extend, never rename.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pgshift",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PGSHIFT_GIT_COMMIT"), ")"),
    about = "Zero-downtime schema changes for live PostgreSQL databases",
    after_help = "Exit codes: 0 success; 1 a check failed or a guard refused; \
                  2 usage or input error (nothing changed); 3 runtime failure (state kept: resume or rollback)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Connection string of the primary (URL or key=value); falls back to DATABASE_URL.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connection string of a replica or clone used for checks; falls back to PGSHIFT_REPLICA_URL.
    #[arg(
        long,
        global = true,
        env = "PGSHIFT_REPLICA_URL",
        hide_env_values = true
    )]
    pub replica_url: Option<String>,

    /// Output format of reports on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// More log output (debug); RUST_LOG overrides.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Only errors on stderr, no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
    /// GitHub Actions annotations (lint); other commands print text.
    Github,
    /// SARIF 2.1.0 for code scanning (lint); other commands print text.
    Sarif,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offline checks of migration files (no database).
    Lint(LintArgs),
    /// Catalog-aware online plan of a migration; changes nothing.
    Plan(PlanArgs),
    /// Query-plan regression check against --replica-url (a hot standby or a writable clone).
    Check(CheckArgs),
    /// Run a migration online, through cutover (--no-cutover stops before it).
    Apply(ApplyArgs),
    /// Where in-flight migrations stand.
    Status(StatusArgs),
    /// Continue a migration after a crash or pause.
    Resume(RunArgs),
    /// Cut over a migration stopped before cutover.
    Cutover(RunArgs),
    /// One-step rollback from any phase before finalize.
    Rollback(RunArgs),
    /// Drop what rollback needed (irreversible; asks, or --yes).
    Finalize(FinalizeArgs),
    /// Pause a running migration's backfill (another process; `resume` continues it).
    Pause(NameArg),
    /// Find integer keys near exhaustion.
    Audit(AuditArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `pgshift man > pgshift.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: `pgshift completions bash > /etc/bash_completion.d/pgshift`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Path to the migration's .sql file.
    pub migration: PathBuf,

    /// Show type changes that rewrite the table as they would run.
    #[arg(long)]
    pub allow_rewrite: bool,

    /// Show statements pgshift cannot parse as they would run, verbatim.
    #[arg(long)]
    pub allow_unparsed: bool,

    /// Recreate and refresh dependent materialized views inside the cutover.
    #[arg(long)]
    pub rebuild_matviews: bool,

    /// Read every row of the tables whose column types change and convert it
    /// (into a temporary table, rolled back) to find the values that would
    /// not convert, before `apply`; exit 1 when one does not. Reads the whole
    /// table, resting as long as each batch ran.
    #[arg(long)]
    pub scan_values: bool,

    /// The tuning flags of `apply`: the plan then shows the backfill that
    /// `apply` would run with them (workers, two passes, their WAL).
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Debug, Clone, Args)]
pub struct Tuning {
    /// How the rows move. `update`: shadow columns of the new types filled by batched
    /// UPDATEs in place (every kind of table). `copy`: a copy of each table
    /// with the new types, changes captured by key and replayed, the copy
    /// swapped in at cutover; about the rewrite's WAL and no row locks on
    /// the application's rows (plan names what it refuses). `auto` (the
    /// default since 2026-12-02; `update` before): `copy` when it takes
    /// every table, else `update`; the plan says which and why.
    #[arg(
        long,
        value_enum,
        env = "PGSHIFT_ENGINE",
        default_value_t = crate::plan::EngineChoice::Auto
    )]
    pub engine: crate::plan::EngineChoice,

    /// lock_timeout of every DDL statement; lock waits longer than this are retried.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub lock_timeout: Duration,

    /// How many times a DDL statement that hit the lock timeout is retried.
    #[arg(long, default_value_t = 10)]
    pub lock_retries: u32,

    /// Fixed rows per backfill batch (disables adaptive sizing).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: Option<i64>,

    /// Adaptive batches aim at this duration [default: 100ms for the update
    /// engine, whose batch holds row locks on its rows, so the application's
    /// worst wait is about one batch; 20ms for the copy engine, whose WAL
    /// backlog from longer batches slows the application's commits].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub batch_target: Option<Duration>,

    /// Smallest adaptive batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_batch: i64,

    /// Largest adaptive batch.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_batch: i64,

    /// Backfill a worker's key range of at least this many rows in two
    /// passes, even keys first, when the key is one integer column. On full
    /// pages the second pass's new versions fit where the first pass's dead
    /// ones were pruned: HOT updates, no new index entries. The first pass
    /// must outlast the replicas' hot_standby_feedback delay (up to
    /// wal_receiver_status_interval, 10 s) or nothing is prunable in time.
    /// A trade, measured at 10M rows: unthrottled, the backfill 13% faster
    /// with 5% more WAL; with defaults, the migration 3.5% faster with 14%
    /// more WAL (the second pass logs pages whole again after a
    /// checkpoint). `0`: never.
    #[arg(long, default_value_t = crate::plan::DEFAULT_TWO_PASS_ABOVE, value_parser = clap::value_parser!(i64).range(0..))]
    pub two_pass_above: i64,

    /// Cap on backfill throughput.
    #[arg(long)]
    pub max_rows_per_second: Option<u64>,

    /// Cap on the server's WAL rate while the backfill runs, in MB/s (`0`:
    /// none). Every application commit waits for the WAL flush, so the
    /// faster the backfill writes WAL, the longer the application's writes
    /// wait; `plan` shows how much WAL the migration writes.
    #[arg(long, default_value_t = 0)]
    pub max_wal_mb_per_second: u64,

    /// Connections pgshift may open to the primary, the lifeline included.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_connections: u32,

    /// Free connection slots to leave to the application; pgshift refuses to
    /// start, and pauses the backfill, below it [default: max(10% of max_connections, 5)].
    #[arg(long)]
    pub min_free_connections: Option<i64>,

    /// Pause the backfill while a replica's replay lag exceeds this. Reads
    /// from replicas see data this old while it lasts; 1 s is what
    /// pt-online-schema-change and gh-ost (1.5 s) hold to by default.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub max_replica_lag: Duration,

    /// Pause the backfill while a replication slot retains more than this
    /// much WAL, in MB (`0`: never). A slot keeps every byte its consumer
    /// has not confirmed, and the backfill writes several times its tables'
    /// size: a slow subscriber or CDC consumer, or a slot whose consumer is
    /// gone, would otherwise fill the disk of pg_wal, which stops the
    /// server. `plan` names the slots without a consumer.
    #[arg(long, default_value_t = 10_240)]
    pub max_slot_wal_mb: u64,

    /// Slow the backfill down while a commit takes longer than this (a
    /// one-record commit timed mid-batch, twice a second; each slow one
    /// halves the backfill's duty cycle): the application's writes wait as
    /// long. A duration (`20ms`), or a multiple of the median commit
    /// measured just before the backfill starts (`2x`), which follows the
    /// server's own disk. `0` turns the probe off.
    #[arg(long, value_parser = crate::guard::CommitLimit::parse, default_value = "2x")]
    pub max_commit_latency: crate::guard::CommitLimit,

    /// While the backfill and validation run, flush the server's WAL this
    /// often (a one-record commit on the lifeline, when WAL is waiting):
    /// an application commit then waits for a few milliseconds of our WAL,
    /// not for the backlog the WAL writer leaves between its rounds (up to
    /// 200 ms of backfill or index build). A trade: in the benchmark, every
    /// 25 ms took application writes' median from 2.7–3.0 to 2.1–2.2 ms
    /// during the backfill, and the backfill 26% longer. `0`: off.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    pub flush_wal_every: Duration,

    /// Write one JSON line per event to this file (`-` for stderr).
    #[arg(long)]
    pub events: Option<String>,

    /// Run this shell command for every event, with the event's JSON on stdin.
    #[arg(long)]
    pub on_event: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Path to the migration's .sql file, or a folder of them (applied in lexical order).
    pub migration: PathBuf,

    /// (folder) Run column type changes that rewrite the table, under lock_timeout.
    #[arg(long)]
    pub allow_rewrite: bool,

    /// (folder) Run statements pgshift cannot parse verbatim, under lock_timeout.
    #[arg(long)]
    pub allow_unparsed: bool,

    /// Recreate and refresh dependent materialized views inside the cutover
    /// (it then holds its locks for the refresh); refused without it.
    #[arg(long)]
    pub rebuild_matviews: bool,

    /// Stop at `ready`, before the cutover; finish later with `pgshift cutover`.
    #[arg(long)]
    pub no_cutover: bool,

    #[command(flatten)]
    pub tuning: Tuning,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The migration: a path to its .sql file or its name (the file stem).
    pub migration: String,

    /// (resume) Stop at `ready` instead of continuing through the cutover.
    #[arg(long)]
    pub no_cutover: bool,

    #[command(flatten)]
    pub tuning: Tuning,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// The migration: a path to its .sql file or its name (the file stem).
    pub migration: String,

    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,

    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this migration (path or name), or a folder: its applied and pending files.
    pub migration: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The migration: a path to its .sql file or its name (the file stem).
    pub migration: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Mark columns past this percentage of their type's range as at risk (exit 1).
    #[arg(long, default_value_t = 50.0)]
    pub threshold: f64,

    /// Sample sequence values over this window to measure growth (e.g. 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sample: Option<Duration>,

    /// Record this run's readings in the pgshift schema, so later runs forecast from history.
    #[arg(long)]
    pub record: bool,

    /// Write a ready migration file per at-risk key into this directory.
    #[arg(long)]
    pub write_migrations: Option<PathBuf>,
}

/// The workload whose plans must not regress, and the gate's knobs.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// SQL statements to check, one per `;` (`$1…$n` parameters allowed).
    #[arg(long)]
    pub queries: Option<PathBuf>,

    /// Without --queries: the top N statements by total time from pg_stat_statements on the target.
    #[arg(long, default_value_t = 50)]
    pub top: i64,

    /// Flag a query whose total estimated cost grows more than this factor.
    #[arg(long, default_value_t = 2.0)]
    pub max_cost_ratio: f64,

    /// Explain parameterized statements as custom plans with values sampled from
    /// the compared columns, instead of generic plans.
    #[arg(long)]
    pub custom_plans: bool,

    /// (apply, resume, cutover) Cut over even when the plan check finds regressions.
    #[arg(long)]
    pub accept_plan_changes: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The migration: a path to its .sql file, or the name of one started with `apply --no-cutover`.
    pub migration: String,

    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// The watch window after cutover, with automatic rollback.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Stay attached this long after cutover and roll back by itself when the
    /// workload degrades (needs pg_stat_statements), e.g. `--watch 5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,

    /// Roll back when a statement's mean time since cutover exceeds this
    /// multiple of its mean before.
    #[arg(long, default_value_t = 3.0)]
    pub watch_max_latency_ratio: f64,

    /// Roll back when fewer connection slots than this are free
    /// [default: the --min-free-connections threshold].
    #[arg(long)]
    pub watch_min_free_connections: Option<i64>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Migration files, directories of them, glob patterns (`'db/**/*.sql'`), or `-` for standard input.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// Lint configuration (`[lint.severity] rule = "error" | "warning" | "off"`, `[lint] disable = ["rule", …]`).
    #[arg(long, default_value = "pgshift.toml")]
    pub config: PathBuf,
}
