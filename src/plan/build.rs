//! Building a [`Plan`] from requests and a catalog snapshot.

use std::collections::BTreeMap;

use super::table::{plan_foreign_keys, plan_table};
use super::views::{plan_views, warnings};
use super::wal::{checkpoint_warning, slot_warnings};
use super::*;
use crate::catalog::{Catalog, Table};
use crate::error::{Error, Result};

/// One `ALTER COLUMN … TYPE …` of the migration, resolved to a table.
#[derive(Debug, Clone)]
pub struct Request {
    pub table: u32,
    pub column: String,
    /// A change other than an integer widening (rehearsed in the catalog).
    pub change: Option<crate::migration::TypeChange>,
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
    /// What the sessions that run it compress the WAL with (for the estimate).
    pub wal_compression: crate::connection::WalCompression,
    /// How fast the backfill is asked to go (for the time estimate).
    pub pace: super::Pace,
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
            // Only the copy engine takes partitioned tables: then its plan
            // says what blocks.
            let partitioned = requests
                .iter()
                .filter_map(|r| catalog.table(r.table))
                .any(|t| t.kind == "p");
            if (copy.blockers.is_empty() && !copy.in_place.is_empty())
                || (partitioned && !copy.blockers.is_empty())
            {
                return Ok(copy);
            }
            if copy.blockers.is_empty() {
                copy.warnings.insert(
                    0,
                    "--engine auto chose the copy engine: it takes every table of this migration"
                        .into(),
                );
                return Ok(copy);
            }
            let mut update = with(Engine::Update)?;
            // A type change both engines refuse: the copy engine's reasons,
            // since it is the one that converts everything else.
            let converts = requests.iter().any(|r| r.change.is_some());
            if converts && !update.blockers.is_empty() {
                return Ok(copy);
            }
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
    let mut conversions = BTreeMap::new();
    for req in requests {
        let table = table(catalog, req.table)?;
        let column = table
            .column(&req.column)
            .ok_or_else(|| Error::UnknownColumn {
                table: table.display(),
                column: req.column.clone(),
            })?;
        if let Some(change) = &req.change {
            if let Some(conversion) =
                super::convert::conversion(catalog, table, column, change, engine, &mut blockers)
            {
                conversions.insert((table.oid, column.attnum), conversion);
                add(table.oid, column.attnum, "requested".into(), &mut order);
            }
            continue;
        }
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

    if !conversions.is_empty() {
        super::convert::view_blockers(catalog, &mut blockers);
    }
    let in_place = super::convert::in_place(catalog, requests, &conversions, &blockers);
    if !in_place.is_empty() {
        order.clear();
    }
    let mut tables = Vec::new();
    for &oid in &order {
        let t = table(catalog, oid)?;
        let mut p = plan_table(migration, t, &widen[&oid], engine, &mut blockers);
        for c in p.columns.iter_mut() {
            let attnum = t.column(&c.name).map(|col| col.attnum);
            c.conversion = attnum.and_then(|a| conversions.get(&(oid, a)).cloned());
            // The placeholder default that lets a shadow be added NOT NULL
            // is a bigint 0: a converted column's shadow proves its NOT NULL
            // with a validated constraint instead.
            if c.conversion.is_some() {
                c.shadow_not_null = false;
            }
        }
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
    warnings.extend(super::convert::warnings(&tables, &in_place));
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

    // The update engine's backfill updates every row, and Postgres checks a
    // NOT VALID constraint (a CHECK; on 18 a NOT NULL too) on each updated
    // row: a row that breaks it, which nobody has updated since, stops the
    // backfill there. The copy engine adds such constraints back NOT VALID.
    if engine == super::Engine::Update {
        let not_valid: Vec<String> = order
            .iter()
            .filter_map(|oid| catalog.table(*oid))
            .flat_map(|t| {
                t.constraints
                    .iter()
                    .filter(|c| matches!(c.kind.as_str(), "c" | "n") && !c.validated)
                    .map(move |c| format!("{} on {}", c.name, t.display()))
            })
            .collect();
        if !not_valid.is_empty() {
            warnings.push(format!(
                "NOT VALID constraint{} {}: the update engine's backfill updates every row and Postgres checks {} on each one, \
                 so a row that breaks {} stops the backfill with that row's values (fix the row and resume, or roll back); \
                 --engine copy keeps {} NOT VALID and never stops on such a row",
                if not_valid.len() == 1 { "" } else { "s" },
                not_valid.join(", "),
                if not_valid.len() == 1 { "it" } else { "them" },
                if not_valid.len() == 1 { "it" } else { "one" },
                if not_valid.len() == 1 { "it" } else { "them" },
            ));
        }
    }
    // The update engine adds each new column last; from cutover until
    // finalize the old one keeps its place under its retired name, so a
    // statement that relies on the column order reads or fills the wrong one.
    if engine == super::Engine::Update {
        let moved: Vec<String> = tables
            .iter()
            .flat_map(|t| {
                t.columns.iter().map(move |c| {
                    format!(
                        "{}.{} is the table's last column and the old one keeps its place as {}",
                        t.display(),
                        c.name,
                        c.retired
                    )
                })
            })
            .collect();
        if !moved.is_empty() {
            warnings.push(format!(
                "the update engine adds the new column{s} last: from cutover until finalize {}; an INSERT without a column list \
                 fills the retired column{s} by position and leaves the new one{s} to {}, and SELECT * returns both. Name the \
                 columns in such statements, finalize soon after cutover, or use --engine copy, which keeps the column order",
                moved.join("; "),
                if moved.len() == 1 { "its default" } else { "their defaults" },
                s = if moved.len() == 1 { "" } else { "s" },
            ));
        }
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
    let wal = super::wal::estimate(
        &sized,
        &catalog.wal,
        engine,
        options.wal_compression,
        options.pace,
    );
    warnings.extend(checkpoint_warning(&wal, &catalog.wal));
    warnings.extend(slot_warnings(&catalog.slots, &wal));
    if !in_place.is_empty() {
        // No copy, no backfill: only what the in-place ALTERs mean.
        warnings = super::convert::warnings(&[], &in_place);
    }
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
        pace: options.pace,
        copy,
        conversion_settings: if conversions.is_empty() {
            Vec::new()
        } else {
            catalog.conversion_settings.clone()
        },
        in_place,
    })
}

fn table(catalog: &Catalog, oid: u32) -> Result<&Table> {
    catalog.table(oid).ok_or_else(|| Error::UnknownTable {
        table: format!("oid {oid}"),
    })
}
