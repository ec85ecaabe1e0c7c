//! Online operations: each turns a plan into the ordered steps of every
//! phase, forward and back, so the undo is designed with the do.

pub mod copy_swap;
pub mod views;
pub mod widen_integer;

use serde::Serialize;

use crate::names::{literal, qualified, quote};
use crate::plan::{Engine, Plan};

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
    /// Where it may run beside other steps, when it touches one table.
    #[serde(skip)]
    pub lane: Option<Lane>,
}

/// A connection's sequence of steps. The lanes of a run of consecutive
/// lane steps run in parallel (a connection each, within the budget), each
/// lane's steps in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// The table its steps work on: the largest tables' lanes start first.
    pub table: u32,
    /// Lanes of one table that may run beside each other (its copy's
    /// index builds); 0 for a table's own lane.
    pub strand: u32,
    /// A lane starts once its table's lanes of earlier stages are done.
    pub stage: u32,
}

impl Lane {
    /// A table's own lane in the first stage.
    pub fn table(oid: u32) -> Lane {
        Lane {
            table: oid,
            strand: 0,
            stage: 0,
        }
    }
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
    /// Calls a copy's replay `function(batch)` until `log` holds less than
    /// a batch.
    Replay { function: String, log: String },
    /// One transaction of several statements under `lock_timeout`, retried whole.
    Transaction { statements: Vec<String> },
    /// A `VACUUM` (alone: it refuses a transaction block) under
    /// `lock_timeout`, with the session's `vacuum_cost_delay` at
    /// `cost_delay_ms` while it runs.
    Vacuum { cost_delay_ms: u32 },
}

pub const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
pub const SHARE_ROW_EXCLUSIVE: &str = "SHARE ROW EXCLUSIVE";
pub const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE";
pub const ROW_EXCLUSIVE: &str = "ROW EXCLUSIVE";
pub const NONE: &str = "none";

/// A step; those taking a lock that blocks the application are marked so.
pub(crate) fn step(
    phase: &'static str,
    description: String,
    sql: String,
    lock: &'static str,
    action: Action,
) -> Step {
    let blocking = matches!(lock, ACCESS_EXCLUSIVE | SHARE_ROW_EXCLUSIVE);
    Step {
        phase,
        description,
        sql,
        lock,
        blocking,
        action,
        lane: None,
    }
}

/// A migration of catalog-only type changes: each `ALTER` as written.
pub fn in_place(plan: &Plan) -> Vec<Step> {
    plan.in_place
        .iter()
        .map(|c| {
            step(
                "in place",
                format!(
                    "change the column types of {} in the catalog (no rewrite, no index rebuilt)",
                    c.table
                ),
                c.statement.clone(),
                ACCESS_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            )
        })
        .collect()
}

/// What an index carries besides its definition, given to the index
/// `index` (in `schema`, on `table`); `constraint`, when it backs one.
pub(crate) fn index_marks(
    schema: &str,
    table: &str,
    index: &str,
    constraint: Option<&str>,
    m: &crate::plan::IndexMarks,
) -> Vec<String> {
    let mut s = Vec::new();
    if let Some(comment) = &m.comment {
        s.push(format!(
            "COMMENT ON INDEX {} IS {}",
            qualified(schema, index),
            literal(comment)
        ));
    }
    if let (Some(name), Some(comment)) = (constraint, &m.constraint_comment) {
        s.push(format!(
            "COMMENT ON CONSTRAINT {} ON {table} IS {}",
            quote(name),
            literal(comment)
        ));
    }
    if m.clustered {
        s.push(format!("ALTER TABLE {table} CLUSTER ON {}", quote(index)));
    }
    if m.replica_identity {
        s.push(format!(
            "ALTER TABLE {table} REPLICA IDENTITY USING INDEX {}",
            quote(index)
        ));
    }
    s
}

/// What a swap's check of pgshift's own triggers is guarding.
pub(crate) enum Guarded {
    /// The cutover: the new columns or copies must have every write.
    Cutover,
    /// The rollback after cutover: the originals must have every write.
    Rollback,
}

/// A statement for the start of a swap, under its lock: it fails, naming
/// them, unless every trigger of `triggers` (table, name) is still there
/// and `ENABLE ALWAYS`. One that was dropped, disabled (`ALTER TABLE …
/// DISABLE TRIGGER USER` disables ours too) or re-enabled as an ordinary
/// trigger may have missed writes, which the swap would then lose.
pub(crate) fn assert_triggers_always(
    plan: &Plan,
    triggers: &[(String, String)],
    guarded: Guarded,
) -> String {
    let rows: Vec<String> = triggers
        .iter()
        .map(|(table, name)| format!("({}, {})", literal(table), literal(name)))
        .collect();
    let (missed, remedy) = match guarded {
        Guarded::Cutover => (
            "the new columns or copies",
            format!(
                "Nothing was changed: roll back with `pgshift rollback {}` and apply again",
                plan.migration
            ),
        ),
        Guarded::Rollback => (
            "the original tables",
            format!(
                "Nothing was changed: keep the migration (`pgshift finalize {}`)",
                plan.migration
            ),
        ),
    };
    let message = format!(
        "pgshift's triggers % are gone or no longer ENABLE ALWAYS (dropped, or disabled by ALTER TABLE … DISABLE TRIGGER): \
         {missed} may have missed writes. {remedy}"
    );
    format!(
        "DO $pgshift$\nDECLARE off text;\nBEGIN\n  \
         SELECT string_agg(coalesce(to_regclass(x.t)::text, x.t) || '.' || x.n, ', ') INTO off FROM (VALUES {}) x(t, n)\n  \
         WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = to_regclass(x.t) AND g.tgname = x.n AND g.tgenabled = 'A');\n  \
         IF off IS NOT NULL THEN RAISE EXCEPTION {}, off; END IF;\nEND\n$pgshift$",
        rows.join(", "),
        literal(&message)
    )
}

/// The steps of each phase, from the engine the plan names.
pub fn expand(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::expand(plan),
        Engine::Copy => copy_swap::expand(plan),
    }
}

pub fn backfill(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::backfill(plan),
        Engine::Copy => copy_swap::backfill(plan),
    }
}

pub fn validate(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::validate(plan),
        Engine::Copy => copy_swap::validate(plan),
    }
}

pub fn cutover(plan: &Plan, mark_phase: &str) -> Step {
    match plan.engine {
        Engine::Update => widen_integer::cutover(plan, mark_phase),
        Engine::Copy => copy_swap::cutover(plan, mark_phase),
    }
}

/// Steps right after cutover (the copy engine validates the foreign keys
/// the cutover added NOT VALID); none for the update engine.
pub fn after_cutover(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => Vec::new(),
        Engine::Copy => copy_swap::after_swap(plan),
    }
}

pub fn locked_tables(plan: &Plan) -> Vec<String> {
    match plan.engine {
        Engine::Update => widen_integer::locked_tables(plan),
        Engine::Copy => copy_swap::locked_tables(plan),
    }
}

pub fn finalize(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::finalize(plan),
        Engine::Copy => copy_swap::finalize(plan),
    }
}

pub fn abort(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::abort(plan),
        Engine::Copy => copy_swap::abort(plan),
    }
}

/// Non-blocking work before the swap back (none for the copy engine: its
/// originals kept their indexes and constraints).
pub fn prepare_revert(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::revert::prepare(plan),
        Engine::Copy => Vec::new(),
    }
}

pub fn swap_back(plan: &Plan, mark_phase: &str) -> Step {
    match plan.engine {
        Engine::Update => widen_integer::revert::swap_back(plan, mark_phase),
        Engine::Copy => copy_swap::swap_back(plan, mark_phase),
    }
}

/// After the swap back: what is left goes (and, for the copy engine, the
/// foreign keys re-added NOT VALID are validated first).
pub fn cleanup_after_revert(plan: &Plan) -> Vec<Step> {
    match plan.engine {
        Engine::Update => widen_integer::revert::cleanup(plan),
        Engine::Copy => {
            let mut steps = copy_swap::after_swap(plan);
            steps.extend(copy_swap::cleanup(plan));
            steps
        }
    }
}

/// Per widened column: (table, column, query returning the count and the
/// smallest of the values written since cutover that the old type cannot hold).
pub fn misfits(plan: &Plan) -> Vec<(String, String, String)> {
    match plan.engine {
        Engine::Update => widen_integer::revert::misfits(plan),
        Engine::Copy => copy_swap::misfits(plan),
    }
}
