//! A snapshot of the parts of the live schema a migration touches.
//!
//! The snapshot is plain data (serde), so planning is a pure function of it
//! and can be unit-tested from a hand-written snapshot. [`load`] fills it
//! from `pg_catalog`; all catalog queries live in `load.rs`.

mod load;
pub mod rehearse;

use serde::{Deserialize, Serialize};

pub use load::{load, replication_slots, resolve_table};

/// Tables and views reachable from the migration's target tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub tables: Vec<Table>,
    /// Views that depend (directly or through other views) on loaded tables' columns.
    pub views: Vec<View>,
    /// `server_version_num`, e.g. 150018.
    pub server_version: i32,
    /// The settings that decide what the backfill's WAL costs.
    #[serde(default)]
    pub wal: WalSettings,
    /// Replication slots that hold WAL back.
    #[serde(default)]
    pub slots: Vec<ReplicationSlot>,
    /// What Postgres made of each table's type changes (other than integer
    /// widenings), rehearsed on an empty copy.
    #[serde(default)]
    pub rehearsals: Vec<Rehearsal>,
    /// The settings conversions run with (name, value): see
    /// [`rehearse::CONVERSION_SETTINGS`].
    #[serde(default)]
    pub conversion_settings: Vec<(String, String)>,
    /// The views over those tables, created again on the rehearsed copies.
    #[serde(default)]
    pub rehearsed_views: Vec<RehearsedView>,
}

/// Whether a view's definition still holds on the new column types.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RehearsedView {
    pub oid: u32,
    /// Postgres's message when it does not.
    pub error: Option<String>,
}

/// What the blocking `ALTER` would do to one table, as Postgres did it to an
/// empty copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rehearsal {
    pub table: u32,
    /// Postgres refused the change: its message.
    pub error: Option<String>,
    /// Whether it rewrites the table (else it changes the catalog only).
    pub rewrites: bool,
    /// Indexes it builds again.
    pub rebuilt_indexes: i32,
    pub columns: Vec<RehearsedColumn>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RehearsedColumn {
    pub name: String,
    /// `format_type` of the new type.
    pub new_type: String,
    /// The new collation (qualified), when not the type's default.
    pub collation: Option<String>,
    /// The column's default as Postgres converted it (`pg_get_expr`).
    #[serde(default)]
    pub default: Option<String>,
    /// The expression that converts a new value back (the column, a cast, or
    /// the migration's `pgshift:down`), when there is one.
    pub back: Option<String>,
    /// Why there is no way back.
    pub back_error: Option<String>,
}

impl Catalog {
    /// The views `reads` picks and every view over those, a view after the
    /// views it reads (the order to create them in).
    pub fn views_over(&self, reads: impl Fn(&View) -> bool) -> Vec<&View> {
        let mut affected: std::collections::BTreeSet<u32> = self
            .views
            .iter()
            .filter(|v| reads(v))
            .map(|v| v.oid)
            .collect();
        loop {
            let more: Vec<u32> = self
                .views
                .iter()
                .filter(|v| {
                    !affected.contains(&v.oid)
                        && v.depends_on_views.iter().any(|d| affected.contains(d))
                })
                .map(|v| v.oid)
                .collect();
            if more.is_empty() {
                break;
            }
            affected.extend(more);
        }
        let mut ordered: Vec<&View> = Vec::new();
        let mut remaining: Vec<&View> = self
            .views
            .iter()
            .filter(|v| affected.contains(&v.oid))
            .collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|v| {
                let ready = v
                    .depends_on_views
                    .iter()
                    .all(|d| !affected.contains(d) || ordered.iter().any(|o| o.oid == *d));
                if ready {
                    ordered.push(v);
                }
                !ready
            });
            if remaining.len() == before {
                ordered.append(&mut remaining);
            }
        }
        ordered
    }

    pub fn rehearsal(&self, table: u32) -> Option<&Rehearsal> {
        self.rehearsals.iter().find(|r| r.table == table)
    }
}

/// A replication slot and the WAL it keeps in pg_wal: everything from its
/// consumer's restart position on, however much the migration writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicationSlot {
    pub name: String,
    /// `physical` (a standby, pg_receivewal) or `logical` (a subscriber, CDC).
    pub kind: String,
    /// Whether a consumer is connected.
    pub active: bool,
    /// WAL it retains now, in bytes.
    pub retained_bytes: i64,
    /// How much more WAL can be written before Postgres invalidates the slot
    /// (`max_slot_wal_keep_size`); None when that is unlimited.
    pub safe_wal_bytes: Option<i64>,
}

/// Server settings behind the WAL estimate of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalSettings {
    /// With `full_page_writes`, the first change to a page after a checkpoint
    /// logs the whole page: the backfill touches every page of the table.
    pub full_page_writes: bool,
    /// `max_wal_size` in bytes.
    pub max_wal_size_bytes: i64,
    pub checkpoint_completion_target: f64,
    /// `checkpoint_timeout` in seconds: a checkpoint starts this often
    /// whatever the WAL volume.
    #[serde(default = "default_checkpoint_timeout")]
    pub checkpoint_timeout_secs: i64,
    /// The `wal_compression` methods pgshift's sessions may set (this server
    /// has them and the user is a superuser); empty otherwise.
    #[serde(default)]
    pub compression_methods: Vec<String>,
    /// The server's own `wal_compression`, which sessions start with.
    #[serde(default = "default_compression")]
    pub server_compression: String,
}

fn default_checkpoint_timeout() -> i64 {
    300
}

fn default_compression() -> String {
    "off".into()
}

impl WalSettings {
    /// What pgshift's sessions compress full pages with under `choice`: the
    /// first method of its preference they may set, else the server's own
    /// (None when that is off).
    pub fn compression(&self, choice: crate::connection::WalCompression) -> Option<&str> {
        choice
            .preference()
            .into_iter()
            .find(|m| self.compression_methods.iter().any(|have| have == m))
            .or(Some(self.server_compression.as_str()).filter(|m| *m != "off"))
    }
}

impl Default for WalSettings {
    /// Postgres's defaults.
    fn default() -> Self {
        WalSettings {
            full_page_writes: true,
            max_wal_size_bytes: 1 << 30,
            checkpoint_completion_target: 0.9,
            checkpoint_timeout_secs: default_checkpoint_timeout(),
            compression_methods: Vec::new(),
            server_compression: default_compression(),
        }
    }
}

impl Catalog {
    pub fn table(&self, oid: u32) -> Option<&Table> {
        self.tables.iter().find(|t| t.oid == oid)
    }

    pub fn view(&self, oid: u32) -> Option<&View> {
        self.views.iter().find(|v| v.oid == oid)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `relkind`: `r` ordinary, `p` partitioned.
    pub kind: String,
    pub is_partition: bool,
    /// Has inheritance parents or children.
    pub has_inheritance: bool,
    /// Publications that include the table.
    pub publications: Vec<String>,
    /// Rules other than a view's `_RETURN`.
    pub rules: Vec<String>,
    /// Planner estimate (`reltuples`).
    pub estimated_rows: i64,
    /// Heap + indexes + toast.
    pub total_bytes: i64,
    /// The heap alone (main fork).
    #[serde(default)]
    pub heap_bytes: i64,
    /// `fillfactor` storage parameter (100 when unset).
    #[serde(default = "full")]
    pub fillfactor: i32,
    /// What a copy of the table needs to stand in for it: its owner, table
    /// privileges (`PRIVILEGE grantee …`), comment, storage options, row
    /// security, replica identity, and objects that use its row type.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub reloptions: Vec<String>,
    #[serde(default)]
    pub row_security: bool,
    #[serde(default)]
    pub force_row_security: bool,
    /// Row security applies to this session (`row_security_active`): its
    /// reads see only what the policies let it see.
    #[serde(default)]
    pub row_security_applies: bool,
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// `relpersistence`: `p` permanent, `u` unlogged.
    #[serde(default)]
    pub persistence: String,
    /// Its tablespace, when not the database's default.
    #[serde(default)]
    pub tablespace: Option<String>,
    /// The TOAST table's storage options, without the `toast.` prefix.
    #[serde(default)]
    pub toast_reloptions: Vec<String>,
    /// Extended statistics on the table (`CREATE STATISTICS`).
    #[serde(default)]
    pub statistics: Vec<ExtendedStatistics>,
    #[serde(default)]
    pub replica_identity: String,
    /// Objects other than routines that use the table's row type (or its
    /// array type), with their dependency type.
    #[serde(default)]
    pub rowtype_users: Vec<String>,
    /// Functions and procedures whose arguments or result use the row type.
    #[serde(default)]
    pub rowtype_routines: Vec<Routine>,
    /// Routines whose SQL-standard body (`BEGIN ATOMIC`) reads the table:
    /// they are bound to it, not to its name.
    #[serde(default)]
    pub body_routines: Vec<Routine>,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
    /// Constraints declared on this table.
    pub constraints: Vec<Constraint>,
    /// Foreign keys on other tables that reference this one.
    pub referenced_by: Vec<Constraint>,
    pub triggers: Vec<Trigger>,
    /// Other catalog objects that depend on a column (catch-all, described).
    pub column_dependents: Vec<Dependent>,
    /// A partitioned table's partition tree, parents before their children.
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// A partitioned table's `pg_get_partkeydef` (`RANGE (created_at)`).
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Columns in the partition key of any level of the tree, by name; and
    /// whether a key of some level is an expression.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    #[serde(default)]
    pub partition_expressions: bool,
}

/// One member of a partitioned table's tree below the root: a leaf, or a
/// partitioned table of its own (sub-partitioning).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// Its parent's oid (the root's, or a sub-partitioned partition's).
    pub parent: u32,
    /// `relkind`: `r` a leaf, `p` partitioned itself, `f` a foreign table.
    pub kind: String,
    /// `FOR VALUES …` or `DEFAULT` (`pg_get_expr(relpartbound)`).
    pub bound: String,
    /// `pg_get_partkeydef` when partitioned itself.
    pub partition_key: Option<String>,
    pub estimated_rows: i64,
    pub total_bytes: i64,
    pub heap_bytes: i64,
    pub owner: String,
    pub grants: Vec<String>,
    pub comment: Option<String>,
    pub reloptions: Vec<String>,
    pub tablespace: Option<String>,
    pub persistence: String,
    pub indexes: Vec<PartitionIndex>,
    /// What belongs to this partition alone and the copy engine does not
    /// carry yet (a trigger, a constraint, a view, …), described.
    pub own_objects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionIndex {
    pub oid: u32,
    pub name: String,
    pub definition: String,
    /// The partitioned index it is attached to.
    pub parent: Option<u32>,
    /// `p` or `u` when it backs that constraint (named like the index).
    pub constraint: Option<String>,
    /// `pg_get_constraintdef` of that constraint.
    pub constraint_definition: Option<String>,
    pub is_unique: bool,
    pub is_valid: bool,
    pub tablespace: Option<String>,
}

fn full() -> i32 {
    100
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_by_num(&self, attnum: i16) -> Option<&Column> {
        self.columns.iter().find(|c| c.attnum == attnum)
    }

    pub fn primary_key(&self) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.kind == "p")
    }

    /// `schema.name` for messages.
    pub fn display(&self) -> String {
        crate::names::display(&self.schema, &self.name)
    }

    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub attnum: i16,
    pub name: String,
    /// `format_type`, e.g. `integer`.
    pub type_name: String,
    pub not_null: bool,
    /// Default expression (`pg_get_expr`), if any.
    pub default: Option<String>,
    /// `a` always, `d` by default, empty when not an identity column.
    pub identity: String,
    /// Whether this is a generated column.
    pub generated: bool,
    /// The sequence owned by this column (serial or identity).
    pub sequence: Option<Sequence>,
    /// Column privileges as `PRIVILEGE grantee [WITH GRANT OPTION]`.
    #[serde(default)]
    pub privileges: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// `attstattarget` when set (-1 or 0 when default).
    #[serde(default)]
    pub statistics: i16,
    /// `attoptions` (`n_distinct=…`, `n_distinct_inherited=…`).
    #[serde(default)]
    pub options: Vec<String>,
    /// The name of its NOT NULL constraint (Postgres 18 names them).
    #[serde(default)]
    pub not_null_name: Option<String>,
}

impl Column {
    pub fn is_identity(&self) -> bool {
        !self.identity.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    /// `smallint`, `integer` or `bigint`.
    pub data_type: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
    pub last_value: Option<i64>,
}

impl Sequence {
    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub oid: u32,
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    pub is_primary: bool,
    pub is_unique: bool,
    pub is_valid: bool,
    /// The PK/UNIQUE/EXCLUDE constraint backed by this index.
    pub constraint: Option<String>,
    /// Columns used as keys, in expressions or in the predicate.
    pub columns: Vec<i16>,
    pub bytes: i64,
    /// Each key column or expression as written (`INCLUDE` columns left out).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The `WHERE` of a partial index.
    #[serde(default)]
    pub predicate: Option<String>,
    /// `NULLS NOT DISTINCT` (Postgres 15).
    #[serde(default)]
    pub nulls_not_distinct: bool,
    #[serde(default)]
    pub comment: Option<String>,
    /// The index `REPLICA IDENTITY USING INDEX` names.
    #[serde(default)]
    pub replica_identity: bool,
    /// Its tablespace, when not the database's default.
    #[serde(default)]
    pub tablespace: Option<String>,
    /// The index `CLUSTER` uses (`indisclustered`).
    #[serde(default)]
    pub clustered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExtendedStatistics {
    pub schema: String,
    pub name: String,
    /// `stxkind`: `d` ndistinct, `f` dependencies, `m` mcv, `e` expressions.
    pub kinds: String,
    /// `pg_get_statisticsobjdef_columns`: columns and expressions.
    pub columns: String,
    /// `stxstattarget`, -1 for the default.
    pub target: i32,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Routine {
    /// `regprocedure`: name and argument types, for DROP and GRANT.
    pub signature: String,
    pub description: String,
    /// `prokind`: `f` function, `p` procedure, `a` aggregate, `w` window.
    pub kind: String,
    /// `pg_get_functiondef` (functions and procedures).
    pub definition: Option<String>,
    pub owner: String,
    /// `proacl` is set (otherwise the defaults: EXECUTE for PUBLIC).
    pub explicit_privileges: bool,
    /// `PRIVILEGE grantee …` entries other than the owner's.
    pub grants: Vec<String>,
    pub comment: Option<String>,
    /// Something depends on it (a view, a trigger, another routine).
    pub has_dependents: bool,
    pub in_extension: bool,
    /// This session may drop and create it (a member of its owner role).
    pub replaceable: bool,
}

/// A row security policy, as `pg_policies` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub name: String,
    /// `PERMISSIVE` or `RESTRICTIVE`.
    pub kind: String,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Role names; `public` for PUBLIC.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Constraint {
    pub name: String,
    /// `p` primary key, `u` unique, `f` foreign key, `c` check, `x` exclusion.
    pub kind: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// The table the constraint is declared on.
    pub table: u32,
    pub columns: Vec<i16>,
    /// For foreign keys: the referenced table and columns.
    pub ref_table: Option<u32>,
    pub ref_columns: Vec<i16>,
    pub validated: bool,
    /// The index that backs a PK/UNIQUE constraint.
    pub index: Option<String>,
    #[serde(default)]
    pub deferrable: bool,
    #[serde(default)]
    pub initially_deferred: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    pub name: String,
    /// Generated for foreign keys etc.
    pub internal: bool,
    /// `UPDATE OF` columns.
    pub columns: Vec<i16>,
    /// The trigger function, qualified.
    pub function: String,
    /// The function's source, to find references to a column by name.
    pub function_source: String,
    /// `pg_get_triggerdef`.
    #[serde(default)]
    pub definition: String,
    /// `tgenabled`: `O` origin, `D` disabled, `R` replica, `A` always.
    #[serde(default)]
    pub enabled: String,
}

/// Something in the catalog that depends on a column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dependent {
    pub attnum: i16,
    /// Catalog holding the dependent object (`pg_class`, `pg_rewrite`, …).
    pub catalog: String,
    pub objid: u32,
    /// `pg_describe_object`, for messages.
    pub description: String,
    /// For `pg_rewrite`: `relation:relkind` of the rule's owner; for `pg_class`:
    /// its relkind; for `pg_attrdef`: the attnum whose default it is.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `v` view, `m` materialized view.
    pub kind: String,
    /// `pg_get_viewdef(oid, true)`.
    pub definition: String,
    /// `reloptions` (security_barrier, check_option, …).
    pub options: Vec<String>,
    pub owner: String,
    /// `GRANT` statements that restore its privileges.
    pub grants: Vec<String>,
    pub comment: Option<String>,
    /// (table oid, attnum) pairs this view reads.
    pub table_columns: Vec<(u32, i16)>,
    /// Views this view reads.
    pub depends_on_views: Vec<u32>,
    /// Whether it has triggers or rules besides `_RETURN`.
    pub has_triggers_or_rules: bool,
    pub estimated_rows: i64,
    /// Index definitions (materialized views can have indexes).
    #[serde(default)]
    pub indexes: Vec<String>,
}

impl View {
    pub fn qualified(&self) -> String {
        crate::names::qualified(&self.schema, &self.name)
    }

    pub fn display(&self) -> String {
        crate::names::display(&self.schema, &self.name)
    }
}
