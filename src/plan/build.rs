//! Building a [`Plan`] from requests and a catalog snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlparser::ast::{SetExpr, Statement, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::*;
use crate::catalog::{Catalog, ReplicationSlot, Table, View, WalSettings};
use crate::error::{Error, Result};
use crate::names::{self, literal, quote, PREFIX};
use crate::sqltext;

/// One `ALTER COLUMN … TYPE bigint` of the migration, resolved to a table.
#[derive(Debug, Clone)]
pub struct Request {
    pub table: u32,
    pub column: String,
}

const WIDENABLE: [&str; 2] = ["smallint", "integer"];

/// Plans the widening of the requested columns and everything that depends on them.
/// Choices the user makes about the plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Recreate and refresh dependent materialized views inside the cutover
    /// (which then holds its locks for the refresh); refused without it.
    pub rebuild_matviews: bool,
    /// How the backfill will split the tables (for its description and the WAL estimate).
    pub backfill: BackfillShape,
    /// Which engine moves the rows.
    pub engine: super::EngineChoice,
}

pub fn build(
    migration: &str,
    checksum: &str,
    requests: &[Request],
    catalog: &Catalog,
    options: Options,
) -> Result<Plan> {
    use super::{Engine, EngineChoice};
    let with = |engine| build_with(migration, checksum, requests, catalog, options, engine);
    match options.engine {
        EngineChoice::Update => with(Engine::Update),
        EngineChoice::Copy => with(Engine::Copy),
        EngineChoice::Auto => {
            let mut copy = with(Engine::Copy)?;
            if copy.blockers.is_empty() {
                copy.warnings.insert(
                    0,
                    "--engine auto chose the copy engine: it takes every table of this migration"
                        .into(),
                );
                return Ok(copy);
            }
            let mut update = with(Engine::Update)?;
            if update.blockers.is_empty() {
                let why: Vec<String> = copy
                    .blockers
                    .iter()
                    .map(|b| format!("{}: {}", b.object, b.reason))
                    .collect();
                update.warnings.insert(
                    0,
                    format!(
                        "--engine auto chose the update engine, since the copy engine refuses {}",
                        why.join("; ")
                    ),
                );
            }
            Ok(update)
        }
    }
}

fn build_with(
    migration: &str,
    checksum: &str,
    requests: &[Request],
    catalog: &Catalog,
    options: Options,
    engine: super::Engine,
) -> Result<Plan> {
    let mut blockers = Vec::new();
    let mut widen: BTreeMap<u32, BTreeMap<i16, String>> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut add = |oid: u32, attnum: i16, reason: String, order: &mut Vec<u32>| -> bool {
        if !order.contains(&oid) {
            order.push(oid);
        }
        let cols = widen.entry(oid).or_default();
        if cols.contains_key(&attnum) {
            return false;
        }
        cols.insert(attnum, reason);
        true
    };

    // The requested columns.
    let mut queue = Vec::new();
    for req in requests {
        let table = table(catalog, req.table)?;
        let column = table
            .column(&req.column)
            .ok_or_else(|| Error::UnknownColumn {
                table: table.display(),
                column: req.column.clone(),
            })?;
        if !WIDENABLE.contains(&column.type_name.as_str()) {
            blockers.push(Blocker {
                object: format!("column {}.{}", table.display(), column.name),
                reason: format!("it is {}, not smallint or integer", column.type_name),
                remedy: if column.type_name == "bigint" {
                    "nothing to do: remove this statement from the migration".into()
                } else {
                    "pgshift widens smallint and integer columns to bigint online".into()
                },
            });
            continue;
        }
        if add(table.oid, column.attnum, "requested".into(), &mut order) {
            queue.push((table.oid, column.attnum));
        }
    }

    // Columns that reference a widened column by foreign key widen with it:
    // otherwise the first key above the old type's limit breaks their inserts.
    while let Some((oid, attnum)) = queue.pop() {
        let parent = table(catalog, oid)?;
        for fk in &parent.referenced_by {
            let Some(pos) = fk.ref_columns.iter().position(|&a| a == attnum) else {
                continue;
            };
            let child = table(catalog, fk.table)?;
            let Some(child_col) = fk.columns.get(pos).and_then(|&a| child.column_by_num(a)) else {
                continue;
            };
            if WIDENABLE.contains(&child_col.type_name.as_str()) {
                let reason = format!(
                    "references {}.{} ({})",
                    parent.display(),
                    parent
                        .column_by_num(attnum)
                        .map(|c| c.name.as_str())
                        .unwrap_or("?"),
                    fk.name
                );
                if add(child.oid, child_col.attnum, reason, &mut order) {
                    queue.push((child.oid, child_col.attnum));
                }
            }
        }
    }

    let mut tables = Vec::new();
    for &oid in &order {
        let t = table(catalog, oid)?;
        let mut p = plan_table(migration, t, &widen[&oid], engine, &mut blockers);
        let range = options.backfill.rows_per_part(p.estimated_rows);
        p.backfill_passes = if options.backfill.two_passes(&p.key, range) {
            2
        } else {
            1
        };
        tables.push(p);
    }
    let (foreign_keys, views, copy) = match engine {
        super::Engine::Update => (
            plan_foreign_keys(catalog, &widen, &mut blockers),
            plan_views(catalog, &widen, &mut blockers, options),
            None,
        ),
        // A copy replaces whole tables: every foreign key and every view
        // over any of their columns moves to it.
        super::Engine::Copy => {
            let copy = super::copy::plan(migration, catalog, &tables, &mut blockers);
            let every = super::copy::all_columns(catalog, &tables);
            (
                Vec::new(),
                plan_views(catalog, &every, &mut blockers, options),
                Some(copy),
            )
        }
    };
    let mut warnings = warnings(&tables, &views);
    for v in views.iter().filter(|v| v.materialized) {
        warnings.push(format!(
            "materialized view {}.{} (about {} rows) is recreated and refreshed inside the cutover transaction: the cutover \
             holds its locks, and blocks the tables, for as long as that refresh takes",
            v.schema, v.name, v.estimated_rows
        ));
    }
    // Full pages make every backfill update a non-HOT one: a new index entry in
    // every index of the table, and a dead tuple for vacuum.
    let full: Vec<String> = order
        .iter()
        .filter_map(|oid| catalog.table(*oid))
        .filter(|t| t.fillfactor >= 100 && t.estimated_rows >= 1_000_000)
        .map(|t| t.display())
        .collect();
    if !full.is_empty() && engine == super::Engine::Update {
        warnings.push(format!(
            "{} {} fillfactor 100: the backfill's updates cannot be HOT, so each one adds an entry to every index and leaves a \
             dead row (the benchmark measured 0% HOT in one pass, 45% in two). For tables you expect to widen, set fillfactor = 90 ahead of time \
             (it applies to pages written afterwards), and plan a VACUUM after the migration",
            full.join(", "),
            if full.len() == 1 { "has" } else { "have" }
        ));
    }

    if engine == super::Engine::Update && blockers.is_empty() {
        let mut refused = Vec::new();
        super::copy::plan(migration, catalog, &tables, &mut refused);
        if refused.is_empty() {
            warnings.push(
                "--engine copy can take these tables: it copies each one without row locks and swaps the copy in, writing about \
                 the tables' size in WAL instead of several times it (10M-row benchmark: 0.93× the blocking ALTER's time against \
                 2.51× unthrottled, 5.3 GB of WAL against 17.5), and needs that much free disk until finalize"
                    .into(),
            );
        }
    }
    if engine == super::Engine::Copy {
        let bytes: i64 = tables.iter().map(|t| t.total_bytes.max(0)).sum();
        warnings.push(format!(
            "the copies need about {} of free disk (the tables' size, indexes included) from the copy until finalize drops \
             the originals, on top of the WAL below",
            crate::report::bytes(bytes)
        ));
    }
    let sized: Vec<_> = tables
        .iter()
        .filter_map(|p| catalog.table(p.oid).map(|t| (t, p)))
        .collect();
    let wal = super::wal::estimate(&sized, &catalog.wal, engine);
    warnings.extend(checkpoint_warning(&wal, &catalog.wal));
    warnings.extend(slot_warnings(&catalog.slots, &wal));
    Ok(Plan {
        migration: migration.to_string(),
        checksum: checksum.to_string(),
        replication_slots: catalog.slots.clone(),
        wal,
        tables,
        foreign_keys,
        views,
        warnings,
        blockers,
        engine,
        copy,
    })
}

/// Checkpoints during the backfill are what most slows the application's
/// commits (the benchmark: p99 37-68 ms with one, 8.4-14.3 ms without, at
/// 1M rows): the checkpointer's writes and the whole pages logged after it
/// share the disk with every commit's WAL flush. `max_wal_size` can be
/// raised without a restart; `checkpoint_timeout` starts them anyway.
fn checkpoint_warning(wal: &super::wal::WalEstimate, settings: &WalSettings) -> Option<String> {
    let mut causes = Vec::new();
    let mut remedies = Vec::new();
    if wal.checkpoints > 0 {
        let gb = wal.advised_max_wal_size_bytes >> 30;
        causes.push(format!(
            "with max_wal_size {} MB that starts about {} checkpoint{}",
            settings.max_wal_size_bytes >> 20,
            wal.checkpoints,
            if wal.checkpoints == 1 { "" } else { "s" }
        ));
        remedies.push(format!(
            "raise max_wal_size for the migration (no restart: `ALTER SYSTEM SET max_wal_size = '{gb}GB'; \
             SELECT pg_reload_conf();`) if the disk of pg_wal has {gb} GB free, and set it back afterwards"
        ));
    }
    if wal.timed_checkpoints > 0 {
        causes.push(format!(
            "checkpoint_timeout ({} s) starts about {} during the backfill",
            settings.checkpoint_timeout_secs, wal.timed_checkpoints
        ));
        remedies.push(
            "raising checkpoint_timeout the same way keeps those out too, at the cost of a longer crash recovery"
                .to_string(),
        );
    }
    if causes.is_empty() {
        return None;
    }
    Some(format!(
        "the migration writes about {} MB of WAL: {}. A checkpoint during the backfill slows the application's commits \
         several times (its writes and the whole pages logged after it share the disk with every commit's flush): {}",
        wal.bytes >> 20,
        causes.join(", and "),
        remedies.join("; ")
    ))
}

/// A slot keeps every byte of WAL its consumer has not confirmed. The
/// migration writes several times its tables' size in WAL: a slot without a
/// consumer keeps all of it in pg_wal, and a full pg_wal disk stops the
/// server. Under `max_slot_wal_keep_size` Postgres invalidates the slot
/// instead, and its standby needs a new base backup, its subscriber a new
/// initial copy.
fn slot_warnings(slots: &[ReplicationSlot], wal: &super::wal::WalEstimate) -> Vec<String> {
    let mb = |b: i64| b >> 20;
    let mut out = Vec::new();
    for s in slots {
        let invalidated = s.safe_wal_bytes.filter(|&safe| safe < wal.bytes).map(|safe| {
            format!(
                "max_slot_wal_keep_size lets it fall only {} MB further behind, less than the migration's WAL, \
                 so Postgres would invalidate it ({})",
                mb(safe.max(0)),
                if s.kind == "logical" {
                    "its subscriber would need a new initial copy"
                } else {
                    "its standby would need a new base backup"
                }
            )
        });
        if !s.active {
            let mut w = format!(
                "replication slot {} ({}, no consumer connected) retains {} MB of WAL and would keep all that the \
                 migration writes (about {} MB) in pg_wal until its consumer is back; the backfill pauses while a \
                 slot retains more than --max-slot-wal-mb. If its consumer is gone for good: \
                 SELECT pg_drop_replication_slot({});",
                quote(&s.name),
                s.kind,
                mb(s.retained_bytes),
                mb(wal.bytes),
                literal(&s.name)
            );
            if let Some(i) = invalidated {
                w.push_str(&format!(" And {i}."));
            }
            out.push(w);
        } else if let Some(i) = invalidated {
            out.push(format!(
                "replication slot {} ({}): if its consumer cannot keep up with the backfill, {i}; \
                 --max-replica-lag and --max-slot-wal-mb pause the backfill while a consumer falls behind",
                quote(&s.name),
                s.kind
            ));
        }
    }
    out
}

fn table(catalog: &Catalog, oid: u32) -> Result<&Table> {
    catalog.table(oid).ok_or_else(|| Error::UnknownTable {
        table: format!("oid {oid}"),
    })
}

fn renames(table: &Table, cols: &BTreeMap<i16, String>) -> HashMap<String, String> {
    cols.keys()
        .filter_map(|&a| table.column_by_num(a))
        .map(|c| (c.name.clone(), names::shadow("new", &c.name)))
        .collect()
}

fn plan_table(
    migration: &str,
    t: &Table,
    cols: &BTreeMap<i16, String>,
    engine: super::Engine,
    blockers: &mut Vec<Blocker>,
) -> TablePlan {
    let object = format!("table {}", t.display());
    let mut block = |object: String, reason: String, remedy: &str| {
        blockers.push(Blocker {
            object,
            reason,
            remedy: remedy.to_string(),
        })
    };
    if t.kind == "p" || t.is_partition {
        block(object.clone(), "it is partitioned or a partition".into(),
              "widen each partition's column with a plain ALTER during a maintenance window, or wait for pgshift's partition support");
    }
    if t.has_inheritance {
        block(
            object.clone(),
            "it has inheritance parents or children".into(),
            "convert the inheritance hierarchy by hand; pgshift cannot keep every member in sync",
        );
    }
    if !t.publications.is_empty() {
        block(object.clone(), format!("it is published for logical replication ({})", t.publications.join(", ")),
              "remove it from the publication during the migration, or add the shadow column on subscribers first");
    }
    for rule in &t.rules {
        block(
            format!("rule {rule} on {}", t.display()),
            "rules rewrite queries against the column by name".into(),
            "drop the rule before the migration and recreate it after cutover",
        );
    }

    let key: Vec<KeyColumn> = match t.primary_key() {
        Some(pk) => pk
            .columns
            .iter()
            .filter_map(|&a| t.column_by_num(a))
            .map(|c| KeyColumn {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
            })
            .collect(),
        None => {
            block(
                object.clone(),
                "it has no primary key".into(),
                "add a primary key first: the backfill walks the table in primary-key order",
            );
            Vec::new()
        }
    };

    let mut columns = Vec::new();
    for (&attnum, reason) in cols {
        let Some(c) = t.column_by_num(attnum) else {
            continue;
        };
        if c.generated {
            block(format!("column {}.{}", t.display(), c.name), "it is a generated column".into(),
                  "generated columns cannot be synced by trigger; drop and re-add it with a blocking ALTER");
        }
        let sequence = c.sequence.as_ref().map(|s| {
            let old_type_max = if s.data_type == "smallint" {
                i16::MAX as i64
            } else {
                i32::MAX as i64
            };
            let max = if s.max == old_type_max {
                i64::MAX
            } else {
                s.max
            };
            SequencePlan::from_catalog(s, &c.identity, max)
        });
        columns.push(ColumnPlan {
            name: c.name.clone(),
            shadow: names::shadow("new", &c.name),
            retired: names::shadow("old", &c.name),
            from_type: c.type_name.clone(),
            not_null: c.not_null,
            not_null_check: names::shadow("nn", &format!("{}_{}", t.name, c.name)),
            shadow_not_null: c.not_null,
            default: if c.is_identity() {
                None
            } else {
                c.default.clone()
            },
            sequence,
            reason: reason.clone(),
            privileges: c.privileges.clone(),
            comment: c.comment.clone(),
            statistics: c.statistics,
            options: c.options.clone(),
        });
    }

    let map = renames(t, cols);
    let touches = |attnums: &[i16]| attnums.iter().any(|a| cols.contains_key(a));

    let mut indexes = Vec::new();
    for ix in t.indexes.iter().filter(|ix| touches(&ix.columns)) {
        if !ix.is_valid {
            block(format!("index {}", ix.name), "it is invalid (a failed concurrent build)".into(),
                  "drop it (DROP INDEX CONCURRENTLY) or rebuild it (REINDEX INDEX CONCURRENTLY) first");
            continue;
        }
        let backs = ix
            .constraint
            .as_ref()
            .and_then(|name| t.constraints.iter().find(|c| &c.name == name));
        let constraint = backs.map(|c| (c.name.clone(), c.kind.clone()));
        let marks = super::IndexMarks {
            comment: ix.comment.clone(),
            deferrable: match backs {
                Some(c) if c.initially_deferred => " DEFERRABLE INITIALLY DEFERRED".into(),
                Some(c) if c.deferrable => " DEFERRABLE".into(),
                _ => String::new(),
            },
            constraint_comment: backs.and_then(|c| c.comment.clone()),
            clustered: ix.clustered,
            replica_identity: ix.replica_identity,
        };
        if matches!(&constraint, Some((_, k)) if k == "x") {
            block(
                format!("constraint {} on {}", ix.name, t.display()),
                "exclusion constraints are not rebuilt online yet".into(),
                "drop the exclusion constraint before the migration and re-add it after",
            );
            continue;
        }
        let shadow = names::shadow("new", &ix.name);
        // In the original's tablespace: pg_get_indexdef leaves it out.
        let sql = index_sql(&ix.definition, &shadow, &map).and_then(|sql| match &ix.tablespace {
            Some(ts) => sqltext::index_in_tablespace(&sql, ts),
            None => Some(sql),
        });
        match sql {
            Some(create_sql) => indexes.push(IndexPlan {
                name: ix.name.clone(),
                shadow,
                retired: names::shadow("old", &ix.name),
                create_sql,
                constraint,
                bytes: ix.bytes,
                marks,
            }),
            None => block(
                format!("index {}", ix.name),
                format!("pgshift could not read its definition: {}", ix.definition),
                "drop it before the migration and recreate it after",
            ),
        }
    }

    let mut checks = Vec::new();
    for c in t
        .constraints
        .iter()
        .filter(|c| c.kind == "c" && touches(&c.columns))
    {
        let def = c.definition.trim_end_matches(" NOT VALID");
        match sqltext::rename_columns(def, 0, &map) {
            Ok(definition) => checks.push(CheckPlan {
                name: c.name.clone(),
                shadow: names::shadow("new", &c.name),
                definition,
            }),
            Err(e) => block(
                format!("constraint {} on {}", c.name, t.display()),
                format!("its definition did not tokenize: {e}"),
                "drop it before the migration and re-add it after",
            ),
        }
    }
    for c in t
        .constraints
        .iter()
        .filter(|c| c.kind == "x" && touches(&c.columns))
    {
        if !indexes
            .iter()
            .any(|i| i.name == c.index.clone().unwrap_or_default())
        {
            block(
                format!("constraint {} on {}", c.name, t.display()),
                "exclusion constraints are not rebuilt online yet".into(),
                "drop the exclusion constraint before the migration and re-add it after",
            );
        }
    }

    let widened_names: Vec<&str> = cols
        .keys()
        .filter_map(|&a| t.column_by_num(a))
        .map(|c| c.name.as_str())
        .collect();
    // The update engine's backfill fires the table's triggers on every row
    // and hands them the shadow column; the copy engine moves them to the
    // copy at cutover, where they see the bigint column and nothing else.
    for trg in t
        .triggers
        .iter()
        .filter(|g| !g.internal && !g.name.starts_with(PREFIX))
        .filter(|_| engine == super::Engine::Update)
    {
        let by_column = touches(&trg.columns);
        let by_name = widened_names
            .iter()
            .find(|n| sqltext::mentions_identifier(&trg.function_source, n));
        if by_column || by_name.is_some() {
            block(format!("trigger {} on {}", trg.name, t.display()),
                  format!("its function {} uses a widened column by name", trg.function),
                  "check the function works with bigint and the shadow column, disable the trigger during the migration, or drop and recreate it after cutover");
        }
    }
    for dep in t
        .column_dependents
        .iter()
        .filter(|d| cols.contains_key(&d.attnum))
    {
        let handled = match dep.catalog.as_str() {
            "pg_class" => matches!(dep.detail.as_str(), "i" | "I" | "S"),
            "pg_constraint" | "pg_trigger" => true,
            // A column's own default depends on it; another column's default
            // (a generated column) does not come along.
            "pg_attrdef" => dep.detail == dep.attnum.to_string(),
            "pg_rewrite" => dep.detail.ends_with(":v") || dep.detail.ends_with(":m"),
            _ => false,
        };
        if !handled {
            let remedy = match dep.catalog.as_str() {
                "pg_attrdef" => "a generated column uses it: drop the generated column and re-add it after finalize",
                "pg_statistic_ext" => "drop the extended statistics and recreate them after cutover",
                "pg_policy" => "drop the row-level security policy during the migration and recreate it after cutover",
                "pg_rewrite" => "drop the rule before the migration and recreate it after cutover",
                _ => "drop it before the migration and recreate it after cutover",
            };
            block(
                dep.description.clone(),
                "it depends on a widened column and pgshift does not rebuild it".into(),
                remedy,
            );
        }
    }

    let sync_base = format!(
        "{}_{}",
        t.name,
        names::hex8(&format!("{migration}/{}", t.oid))
    );
    TablePlan {
        oid: t.oid,
        schema: t.schema.clone(),
        name: t.name.clone(),
        estimated_rows: t.estimated_rows,
        total_bytes: t.total_bytes,
        key,
        columns,
        indexes,
        checks,
        sync_function: names::shadow("sync", &sync_base),
        sync_trigger: names::shadow("sync", &t.name),
        reverse_function: names::shadow("rsync", &sync_base),
        reverse_trigger: names::shadow("rsync", &t.name),
        backfill_passes: 1,
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY <shadow> ON …` with columns renamed.
fn index_sql(definition: &str, shadow: &str, map: &HashMap<String, String>) -> Option<String> {
    let tokens = sqltext::tokenize(definition).ok()?;
    let on = tokens.iter().position(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::ON && w.quote_style.is_none()))?;
    let unique = tokens[..on]
        .iter()
        .any(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::UNIQUE));
    let from = sqltext::index_columns_start(definition)?;
    let renamed = sqltext::rename_columns(definition, from, map).ok()?;
    let rest = &renamed[tokens[on].start..];
    Some(format!(
        "CREATE {}INDEX CONCURRENTLY {} {}",
        if unique { "UNIQUE " } else { "" },
        names::quote(shadow),
        rest
    ))
}

fn plan_foreign_keys(
    catalog: &Catalog,
    widen: &BTreeMap<u32, BTreeMap<i16, String>>,
    blockers: &mut Vec<Blocker>,
) -> Vec<ForeignKeyPlan> {
    let mut out = Vec::new();
    for child in &catalog.tables {
        for fk in child.constraints.iter().filter(|c| c.kind == "f") {
            let Some(parent_oid) = fk.ref_table else {
                continue;
            };
            let child_cols = widen.get(&child.oid);
            let parent_cols = widen.get(&parent_oid);
            let child_hit =
                child_cols.is_some_and(|c| fk.columns.iter().any(|a| c.contains_key(a)));
            let parent_hit =
                parent_cols.is_some_and(|c| fk.ref_columns.iter().any(|a| c.contains_key(a)));
            if !child_hit && !parent_hit {
                continue;
            }
            let Some(parent) = catalog.table(parent_oid) else {
                continue;
            };
            let empty = BTreeMap::new();
            let child_map = renames(child, child_cols.unwrap_or(&empty));
            let parent_map = renames(parent, parent_cols.unwrap_or(&empty));
            let def = fk.definition.trim_end_matches(" NOT VALID");
            match sqltext::rename_in_foreign_key(def, &child_map, &parent_map) {
                Ok(definition) => out.push(ForeignKeyPlan {
                    name: fk.name.clone(),
                    shadow: names::shadow("new", &fk.name),
                    table: child.qualified(),
                    table_oid: child.oid,
                    referenced_table: parent.display(),
                    definition,
                    was_validated: fk.validated,
                }),
                Err(e) => blockers.push(Blocker {
                    object: format!("foreign key {} on {}", fk.name, child.display()),
                    reason: format!("its definition did not tokenize: {e}"),
                    remedy: "drop it before the migration and re-add it after".into(),
                }),
            }
        }
    }
    out
}

/// Views over widened columns (and views over those), in creation order.
fn plan_views(
    catalog: &Catalog,
    widen: &BTreeMap<u32, BTreeMap<i16, String>>,
    blockers: &mut Vec<Blocker>,
    options: Options,
) -> Vec<ViewPlan> {
    let mut affected: BTreeSet<u32> = catalog
        .views
        .iter()
        .filter(|v| {
            v.table_columns
                .iter()
                .any(|(t, a)| widen.get(t).is_some_and(|c| c.contains_key(a)))
        })
        .map(|v| v.oid)
        .collect();
    loop {
        let more: Vec<u32> = catalog
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
    // Topological order: a view after the views it reads.
    let mut ordered: Vec<&View> = Vec::new();
    let mut remaining: Vec<&View> = catalog
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
    let mut out = Vec::new();
    for v in ordered {
        if v.kind == "m" && !options.rebuild_matviews {
            blockers.push(Blocker {
                object: format!("materialized view {}", v.display()),
                reason: format!(
                    "it must be recreated and refreshed inside the cutover (about {} rows), which holds the cutover's locks for as long",
                    v.estimated_rows
                ),
                remedy: "pass --rebuild-matviews to accept that, or drop it before the migration and recreate it after cutover"
                    .into(),
            });
            continue;
        }
        if v.has_triggers_or_rules {
            blockers.push(Blocker {
                object: format!("view {}", v.display()),
                reason: "it has triggers or rules, which pgshift does not recreate".into(),
                remedy: "drop them before the migration and recreate them after cutover".into(),
            });
        }
        out.push(ViewPlan {
            schema: v.schema.clone(),
            name: v.name.clone(),
            definition: v.definition.trim().trim_end_matches(';').to_string(),
            options: v.options.clone(),
            owner: v.owner.clone(),
            grants: v.grants.clone(),
            comment: v.comment.clone(),
            materialized: v.kind == "m",
            indexes: v.indexes.clone(),
            estimated_rows: v.estimated_rows,
        });
    }
    out
}

fn warnings(tables: &[TablePlan], views: &[ViewPlan]) -> Vec<String> {
    let mut out = Vec::new();
    let columns: Vec<String> = tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(move |c| format!("{}.{}", t.display(), c.name))
        })
        .collect();
    if !columns.is_empty() {
        out.push(format!(
            "clients holding prepared statements that return {} get `cached plan must not change result type` once after cutover: \
             reconnect them, run DISCARD ALL, or RECONNECT them in PgBouncer",
            columns.join(", ")
        ));
    }
    let widened_tables: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for view in views {
        for (op, branches) in set_operations(&view.definition) {
            let converted: Vec<&String> = branches
                .iter()
                .filter(|b| widened_tables.contains(b.as_str()))
                .collect();
            let kept: Vec<&String> = branches
                .iter()
                .filter(|b| !widened_tables.contains(b.as_str()))
                .collect();
            if !converted.is_empty() && !kept.is_empty() {
                out.push(format!(
                    "view {} combines {} (widened to bigint) with {} (unchanged) in a {op}: mixed column types stop the planner \
                     from pushing `WHERE … = …` into the branches, so lookups through the view can scan whole tables. \
                     Widen the matching columns of {} in this migration too, or cast them to bigint in the view",
                    if view.schema == "public" { view.name.clone() } else { format!("{}.{}", view.schema, view.name) },
                    join(&converted),
                    join(&kept),
                    join(&kept),
                ));
            }
        }
    }
    out
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The set operations of a view definition and the tables each reads.
fn set_operations(definition: &str) -> Vec<(String, Vec<String>)> {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, definition) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for st in statements {
        if let Statement::Query(q) = st {
            collect_set_ops(&q.body, &mut out);
        }
    }
    out
}

fn collect_set_ops(expr: &SetExpr, out: &mut Vec<(String, Vec<String>)>) {
    if let SetExpr::SetOperation {
        op,
        set_quantifier,
        left,
        right,
    } = expr
    {
        let mut tables = Vec::new();
        branch_tables(left, &mut tables);
        branch_tables(right, &mut tables);
        let label = format!("{op} {set_quantifier}").trim().to_string();
        out.push((label, tables));
    }
}

fn branch_tables(expr: &SetExpr, out: &mut Vec<String>) {
    match expr {
        SetExpr::Select(select) => {
            for from in &select.from {
                if let TableFactor::Table { name, .. } = &from.relation {
                    if let Some(last) = name.0.last() {
                        let name = last.to_string();
                        let name = name.trim_matches('"').to_string();
                        if !out.contains(&name) {
                            out.push(name);
                        }
                    }
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            branch_tables(left, out);
            branch_tables(right, out);
        }
        SetExpr::Query(q) => branch_tables(&q.body, out),
        _ => {}
    }
}
