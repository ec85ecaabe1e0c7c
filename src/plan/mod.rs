//! From what the user asked (intents) and the live schema (a catalog
//! snapshot) to a plan: every column to widen, every dependent object to
//! rebuild, and every reason pgshift must refuse.
//!
//! Planning is pure: it reads only the [`Catalog`], so it is unit-tested
//! from hand-built snapshots. The plan is stored in the state table when a
//! migration starts and `resume` follows the stored plan, not a new one.

mod build;
mod convert;
pub mod copy;
mod table;
#[cfg(test)]
pub(crate) mod tests;
mod views;
pub mod wal;

use serde::{Deserialize, Serialize};

pub use build::{build, Options, Request};
pub(crate) use convert::columns_used;
pub use copy::{Engine, EngineChoice};

/// Backfill speeds assumed for estimates (rows/s), from the benchmark on
/// the 2-core reference machine (see docs/benchmarks.md). At full speed:
/// the slowest medians (update engine 185k-314k rows/s, copy engine
/// 785k-1.14M unthrottled, both rounded down). Paced by the commit probe
/// (the defaults), the speed is the disk's: these are the slowest seen on
/// the bench's virtual disk at 1M-10M rows (copy 28k-70k rows/s, update
/// 6k-11k); a faster disk goes faster.
const FULL_SPEED_UPDATE_ROWS_PER_SEC: f64 = 150_000.0;
const FULL_SPEED_COPY_ROWS_PER_SEC: f64 = 500_000.0;
const PACED_UPDATE_ROWS_PER_SEC: f64 = 6_000.0;
const PACED_COPY_ROWS_PER_SEC: f64 = 28_000.0;

/// How fast the backfill is asked to go: what its time estimate assumes
/// (and through it the checkpoints `checkpoint_timeout` starts meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// The commit probe paces the backfill (`--max-commit-latency`, on by
    /// default): it goes as fast as the disk keeps commits quick.
    pub paced: bool,
    /// `--max-rows-per-second`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_second: Option<u64>,
}

impl Pace {
    /// The speed `engine` is assumed to reach before any rate cap (rows/s).
    fn uncapped_rows_per_sec(self, engine: Engine) -> f64 {
        match (engine, self.paced) {
            (Engine::Update, false) => FULL_SPEED_UPDATE_ROWS_PER_SEC,
            (Engine::Update, true) => PACED_UPDATE_ROWS_PER_SEC,
            (Engine::Copy, false) => FULL_SPEED_COPY_ROWS_PER_SEC,
            (Engine::Copy, true) => PACED_COPY_ROWS_PER_SEC,
        }
    }

    /// The backfill speed the estimates assume for `engine` (rows/s).
    pub fn rows_per_sec(self, engine: Engine) -> f64 {
        let speed = self.uncapped_rows_per_sec(engine);
        match self.max_rows_per_second {
            Some(cap) if cap > 0 => speed.min(cap as f64),
            _ => speed,
        }
    }

    /// Whether `--max-rows-per-second` sets the speed for `engine`.
    pub fn capped(self, engine: Engine) -> bool {
        self.rows_per_sec(engine) < self.uncapped_rows_per_sec(engine)
    }

    /// Seconds the backfill of `rows` rows is estimated to take.
    pub fn backfill_secs(self, rows: i64, engine: Engine) -> f64 {
        rows.max(0) as f64 / self.rows_per_sec(engine)
    }
}

/// Rows per worker's key range from which the backfill goes in two passes
/// (`--two-pass-above`'s default).
pub const DEFAULT_TWO_PASS_ABOVE: i64 = 3_000_000;

/// A key range smaller than this is not worth a connection of its own.
pub const MIN_ROWS_PER_PART: i64 = 20_000;

/// How the backfill will split a table: `workers` key ranges, and two
/// passes over a range of at least `two_pass_above` rows (0: never).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillShape {
    pub workers: usize,
    pub two_pass_above: i64,
}

impl Default for BackfillShape {
    /// The command line's defaults: `--max-connections 2` leaves one worker.
    fn default() -> Self {
        BackfillShape {
            workers: 1,
            two_pass_above: DEFAULT_TWO_PASS_ABOVE,
        }
    }
}

impl BackfillShape {
    /// Whether a table of `rows` rows is split into one key range per worker.
    pub fn splits(&self, rows: i64) -> bool {
        let workers = self.workers.max(1) as i64;
        workers > 1 && rows >= MIN_ROWS_PER_PART * workers
    }

    /// About how many rows each worker's range of a table of `rows` holds.
    pub fn rows_per_part(&self, rows: i64) -> i64 {
        if self.splits(rows) {
            rows / self.workers as i64
        } else {
            rows
        }
    }

    /// Whether a range of `rows` rows goes in two passes: only a single
    /// integer key has the parity the first pass splits on, and only a long
    /// first pass lets the replicas' horizon move past it.
    pub fn two_passes(&self, key: &[KeyColumn], rows: i64) -> bool {
        let integer_key =
            matches!(key, [k] if matches!(k.type_name.as_str(), "smallint" | "integer" | "bigint"));
        integer_key && self.two_pass_above > 0 && rows >= self.two_pass_above
    }
}

/// The online plan of one migration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub migration: String,
    pub checksum: String,
    /// Tables in a fixed order (requested first, then referencing tables).
    pub tables: Vec<TablePlan>,
    /// Foreign keys to rebuild on the new columns.
    pub foreign_keys: Vec<ForeignKeyPlan>,
    /// Views to recreate at cutover, in creation (dependency) order.
    pub views: Vec<ViewPlan>,
    pub warnings: Vec<String>,
    /// Why pgshift cannot run this migration online; `apply` refuses when not empty.
    pub blockers: Vec<Blocker>,
    /// The WAL the migration is expected to write.
    #[serde(default)]
    pub wal: wal::WalEstimate,
    /// Replication slots when the plan was made: each keeps that WAL until
    /// its consumer has it.
    #[serde(default)]
    pub replication_slots: Vec<crate::catalog::ReplicationSlot>,
    /// How the rows move: shadow columns (`update`) or a copy of each table (`copy`).
    #[serde(default)]
    pub engine: Engine,
    /// How fast the backfill was asked to go, for its time estimate (plans
    /// stored before it estimate full speed).
    #[serde(default)]
    pub pace: Pace,
    /// The copy engine's tables, foreign keys and names (`engine` = copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<copy::CopyPlan>,
    /// Type changes Postgres makes in the catalog alone (no rewrite, no
    /// index rebuilt): run as the plain `ALTER` under `lock_timeout`, with
    /// no copy. Set only when every change of the migration is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_place: Vec<InPlaceChange>,
    /// The settings every conversion runs with (name, value), as the user's
    /// session would have had them for the blocking `ALTER`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversion_settings: Vec<(String, String)>,
}

/// A catalog-only type change: one `ALTER TABLE` of the migration's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InPlaceChange {
    /// The table, for messages.
    pub table: String,
    pub statement: String,
}

impl Plan {
    pub fn table(&self, oid: u32) -> Option<&TablePlan> {
        self.tables.iter().find(|t| t.oid == oid)
    }

    /// Columns whose values cannot be converted back, with the reason: a
    /// rollback after cutover is refused for them.
    pub fn no_way_back(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.columns.iter().filter_map(move |c| {
                    let conv = c.conversion.as_ref()?;
                    conv.back_error.as_ref().map(|e| {
                        format!(
                            "{}.{} ({} → {}): {e}",
                            t.display(),
                            c.name,
                            c.from_type,
                            conv.to_type
                        )
                    })
                })
            })
            .collect()
    }

    pub fn estimated_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.estimated_rows).sum()
    }

    /// The backfill speed the estimates assume (rows/s).
    pub fn estimated_rows_per_sec(&self) -> f64 {
        self.pace.rows_per_sec(self.engine)
    }

    /// Seconds the backfill is estimated to take.
    pub fn estimated_backfill_secs(&self) -> f64 {
        self.pace.backfill_secs(self.estimated_rows(), self.engine)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Blocker {
    /// The object, e.g. `table scripts` or `trigger audit on scripts`.
    pub object: String,
    pub reason: String,
    /// What the user can do about it.
    pub remedy: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TablePlan {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub estimated_rows: i64,
    pub total_bytes: i64,
    /// Primary-key columns the backfill walks in keyset order, with their types.
    pub key: Vec<KeyColumn>,
    pub columns: Vec<ColumnPlan>,
    /// Indexes that contain a widened column, rebuilt concurrently.
    pub indexes: Vec<IndexPlan>,
    /// CHECK constraints that use a widened column, rebuilt NOT VALID + VALIDATE.
    pub checks: Vec<CheckPlan>,
    /// Sync function and trigger (old → new) until cutover.
    pub sync_function: String,
    pub sync_trigger: String,
    /// Reverse sync (new → old) from cutover to finalize, so rollback loses nothing.
    pub reverse_function: String,
    pub reverse_trigger: String,
    /// Passes the backfill is expected to make over each key range (1 or 2),
    /// from the plan's estimate; the backfill decides from the table's size
    /// when it starts.
    #[serde(default = "one_pass")]
    pub backfill_passes: u8,
}

fn one_pass() -> u8 {
    1
}

impl Plan {
    /// A leaf of a partitioned table the copy engine copies: its table's plan
    /// and copy, with the leaf's names (what its backfill walks and fills).
    pub fn leaf(&self, oid: u32) -> Option<(TablePlan, copy::CopyTable)> {
        self.copy.as_ref()?.tables.iter().find_map(|c| {
            let leaf = c.leaves().find(|p| p.oid == oid)?;
            let root = self.table(c.oid)?;
            let t = TablePlan {
                oid: leaf.oid,
                schema: leaf.schema.clone(),
                name: leaf.name.clone(),
                estimated_rows: leaf.estimated_rows,
                total_bytes: leaf.total_bytes,
                ..root.clone()
            };
            Some((t, c.for_leaf(leaf)))
        })
    }
}

impl TablePlan {
    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }

    /// SQL for a row's key as text, `col = value, …`, to name the row in a
    /// message; the key columns read through `qualifier` when given.
    pub fn key_text(&self, qualifier: Option<&str>) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|k| {
                let column = match qualifier {
                    Some(q) => format!("{q}.{}", crate::names::quote(&k.name)),
                    None => crate::names::quote(&k.name),
                };
                format!(
                    "{} || ' = ' || {column}::text",
                    crate::names::literal(&k.name)
                )
            })
            .collect();
        format!("concat_ws(', ', {})", parts.join(", "))
    }

    pub fn display(&self) -> String {
        crate::names::display(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyColumn {
    pub name: String,
    pub type_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnPlan {
    pub name: String,
    /// The bigint column filled online; takes `name` at cutover.
    pub shadow: String,
    /// What the original column is called from cutover to finalize.
    pub retired: String,
    /// `smallint` or `integer`.
    pub from_type: String,
    pub not_null: bool,
    /// Name of the constraint that proves the shadow column NOT NULL before
    /// cutover, in plans whose shadow column is added nullable: a
    /// `CHECK (shadow IS NOT NULL)` that makes `SET NOT NULL` instant, or on
    /// Postgres 18 the NOT NULL itself, added `NOT VALID` and validated
    /// (see [`ColumnPlan::named_not_null`]).
    pub not_null_check: String,
    /// The shadow column of a NOT NULL column is added `NOT NULL DEFAULT 0`:
    /// a catalog change like a nullable column (Postgres stores the default
    /// once and neither rewrites nor scans), and its NOT NULL then needs no
    /// check constraint, no validating scan and no lock to add one. The
    /// backfill and the verification look for values that differ, which 0
    /// does as much as NULL. False in plans made before (they use the check).
    #[serde(default)]
    pub shadow_not_null: bool,
    pub default: Option<String>,
    pub sequence: Option<SequencePlan>,
    /// Why it is widened: requested, or which key it references.
    pub reason: String,
    /// Column privileges (`PRIVILEGE grantee …`), comment and statistics
    /// target, given to the shadow column so they survive the cutover.
    #[serde(default)]
    pub privileges: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub statistics: i16,
    /// `n_distinct` and the like (`attoptions`).
    #[serde(default)]
    pub options: Vec<String>,
    /// The conversion of a type change other than an integer widening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    /// The name of the column's NOT NULL constraint (Postgres 18 names
    /// them): the incoming column's takes it at cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null_name: Option<String>,
}

/// How a column's values convert to the new type, and back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversion {
    /// The new type as Postgres names it (`format_type`).
    pub to_type: String,
    /// The new collation, when not the type's default.
    pub collation: Option<String>,
    /// The migration's `USING`, when given.
    pub using: Option<String>,
    /// What the copy's batches and replays select for the column: the
    /// `USING` expression, else the column (assigned to the new type as the
    /// blocking `ALTER` assigns it).
    pub forward: String,
    /// The column's default converted to the new type, as the blocking
    /// `ALTER` converts it (the update engine gives it to the new column).
    #[serde(default)]
    pub default: Option<String>,
    /// What the replays after cutover select to convert a value back.
    pub back: Option<String>,
    /// Why there is no way back: a rollback after cutover is refused.
    pub back_error: Option<String>,
}

impl ColumnPlan {
    /// Whether the column's NOT NULL is a named constraint (Postgres 18 and
    /// later): then the shadow's NOT NULL is added `NOT VALID`, validated
    /// without blocking writes, and only renamed at cutover, instead of a
    /// CHECK that `SET NOT NULL` reads and the cutover drops.
    pub fn named_not_null(&self) -> bool {
        self.not_null && self.not_null_name.is_some()
    }

    /// The clause of the blocking `ALTER TABLE` that makes this change.
    pub fn blocking_alter(&self) -> String {
        match &self.conversion {
            Some(c) => crate::catalog::rehearse::alter_clause(
                &self.name,
                &c.to_type,
                c.collation.as_deref(),
                c.using.as_deref(),
            ),
            None => crate::catalog::rehearse::alter_clause(&self.name, "bigint", None, None),
        }
    }

    /// The value range of the original type, for the reverse trigger and rollback.
    pub fn range(&self) -> (i64, i64) {
        match self.from_type.as_str() {
            "smallint" => (i16::MIN as i64, i16::MAX as i64),
            _ => (i32::MIN as i64, i32::MAX as i64),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SequencePlan {
    pub schema: String,
    pub name: String,
    pub data_type: String,
    /// `a`/`d` for identity columns (ALWAYS / BY DEFAULT), empty for serial.
    pub identity: String,
    pub increment: i64,
    pub min: i64,
    /// Max after the migration: the bigint max when it was the old type's max.
    pub max: i64,
    pub start: i64,
    pub cache: i64,
    pub cycle: bool,
    pub last_value: Option<i64>,
}

impl SequencePlan {
    /// The plan of a catalog sequence: `identity` as the column has it,
    /// `max` as the migration leaves it.
    pub fn from_catalog(s: &crate::catalog::Sequence, identity: &str, max: i64) -> SequencePlan {
        SequencePlan {
            schema: s.schema.clone(),
            name: s.name.clone(),
            data_type: s.data_type.clone(),
            identity: identity.to_string(),
            increment: s.increment,
            min: s.min,
            max,
            start: s.start,
            cache: s.cache,
            cycle: s.cycle,
            last_value: s.last_value,
        }
    }

    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexPlan {
    pub name: String,
    /// Built concurrently under this name; renamed to `name` at cutover.
    pub shadow: String,
    /// What the original index is called from cutover to finalize (plain indexes).
    pub retired: String,
    /// `CREATE … INDEX CONCURRENTLY` on the shadow columns.
    pub create_sql: String,
    /// Backs this PRIMARY KEY (`p`) or UNIQUE (`u`) constraint, re-added `USING INDEX`.
    pub constraint: Option<(String, String)>,
    pub bytes: i64,
    /// What the index carries besides its definition, given again to the
    /// index that takes the name at each swap.
    #[serde(default)]
    pub marks: IndexMarks,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexMarks {
    pub comment: Option<String>,
    /// ` DEFERRABLE …` of the constraint it backs.
    pub deferrable: String,
    pub constraint_comment: Option<String>,
    /// `CLUSTER ON` it.
    pub clustered: bool,
    /// `REPLICA IDENTITY USING INDEX` it.
    pub replica_identity: bool,
}

impl IndexMarks {
    /// The marks of catalog index `ix`, which backs constraint `backs`.
    pub fn of(
        ix: &crate::catalog::Index,
        backs: Option<&crate::catalog::Constraint>,
    ) -> IndexMarks {
        IndexMarks {
            comment: ix.comment.clone(),
            deferrable: match backs {
                Some(c) if c.initially_deferred => " DEFERRABLE INITIALLY DEFERRED".into(),
                Some(c) if c.deferrable => " DEFERRABLE".into(),
                _ => String::new(),
            },
            constraint_comment: backs.and_then(|c| c.comment.clone()),
            clustered: ix.clustered,
            replica_identity: ix.replica_identity,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckPlan {
    pub name: String,
    pub shadow: String,
    /// The constraint definition on the shadow columns.
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForeignKeyPlan {
    pub name: String,
    pub shadow: String,
    /// Qualified name of the referencing (declaring) table.
    pub table: String,
    pub table_oid: u32,
    pub referenced_table: String,
    /// Definition on the new columns, as `pg_get_constraintdef` would print it.
    pub definition: String,
    pub was_validated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ViewPlan {
    pub schema: String,
    pub name: String,
    pub definition: String,
    pub options: Vec<String>,
    pub owner: String,
    pub grants: Vec<String>,
    pub comment: Option<String>,
    /// A materialized view (recreated WITH DATA; only with --rebuild-matviews).
    #[serde(default)]
    pub materialized: bool,
    /// Its indexes (`pg_get_indexdef`), recreated after it.
    #[serde(default)]
    pub indexes: Vec<String>,
    #[serde(default)]
    pub estimated_rows: i64,
}

impl ViewPlan {
    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }
}
