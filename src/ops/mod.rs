//! Online operations: each turns a plan into the ordered steps of every
//! phase, forward and back, so the undo is designed with the do.

pub mod widen_integer;

use serde::Serialize;

/// One step as `plan` shows it and the runner executes it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub phase: &'static str,
    pub description: String,
    /// The SQL it runs (for a backfill: one representative batch).
    pub sql: String,
    /// The strongest table lock it takes.
    pub lock: &'static str,
    /// Whether that lock blocks the application's reads or writes (briefly, under lock_timeout).
    pub blocking: bool,
    #[serde(skip)]
    pub action: Action,
    /// The one table this step touches, when it touches one: steps of
    /// different tables may run in parallel.
    #[serde(skip)]
    pub lane: Option<u32>,
}

/// How the runner executes a step.
#[derive(Debug, Clone)]
pub enum Action {
    /// DDL under `lock_timeout`, retried on lock timeouts; skipped when `skip_if` returns true.
    Ddl { skip_if: Option<String> },
    /// `CREATE INDEX CONCURRENTLY` (no transaction); an invalid leftover of a
    /// failed build is dropped and rebuilt. `schema`/`index` name it.
    BuildIndex { schema: String, index: String },
    /// `DROP INDEX CONCURRENTLY IF EXISTS`.
    DropIndex,
    /// Batched copy of old into new columns of a table.
    Backfill { table: u32 },
    /// Proves no row has `new IS DISTINCT FROM old`.
    Verify { table: u32 },
    /// One transaction of several statements under `lock_timeout`, retried whole.
    Transaction { statements: Vec<String> },
}

pub const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
pub const SHARE_ROW_EXCLUSIVE: &str = "SHARE ROW EXCLUSIVE";
pub const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE";
pub const ROW_EXCLUSIVE: &str = "ROW EXCLUSIVE";
pub const NONE: &str = "none";
