//! Command-line interface: the contract users' scripts depend on.
//!
//! Command names, flags and exit codes are stable; extend, never rename.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pgshift",
    version,
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Catalog-aware online plan of a migration; changes nothing.
    Plan(PlanArgs),
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
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Path to the migration's .sql file.
    pub migration: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct Tuning {
    /// lock_timeout of every DDL statement; lock waits longer than this are retried.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub lock_timeout: Duration,

    /// How many times a DDL statement that hit the lock timeout is retried.
    #[arg(long, default_value_t = 10)]
    pub lock_retries: u32,

    /// Rows per backfill batch.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: i64,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Path to the migration's .sql file.
    pub migration: PathBuf,

    /// Stop at `ready`, before the cutover; finish later with `pgshift cutover`.
    #[arg(long)]
    pub no_cutover: bool,

    #[command(flatten)]
    pub tuning: Tuning,
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
    /// Only this migration (path or name).
    pub migration: Option<String>,
}
