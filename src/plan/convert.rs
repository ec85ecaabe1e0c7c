//! Column type changes other than integer widenings: how each value
//! converts (forward and back), what pgshift refuses, and which changes are
//! catalog-only and need no copy at all.
//!
//! Postgres decides all of it: the catalog snapshot carries its rehearsal of
//! each table's changes on an empty copy (`catalog::rehearse`), so this
//! module only reads the verdicts.

use std::collections::BTreeMap;

use super::{Blocker, Conversion, Engine, InPlaceChange, Request, TablePlan};
use crate::catalog::rehearse::alter_clause;
use crate::catalog::{Catalog, Column, Table};
use crate::migration::TypeChange;
use crate::names::quote;

/// The conversion of one requested change, or blockers saying why not.
pub(super) fn conversion(
    catalog: &Catalog,
    t: &Table,
    c: &Column,
    change: &TypeChange,
    engine: Engine,
    blockers: &mut Vec<Blocker>,
) -> Option<Conversion> {
    let object = format!("column {}.{}", t.display(), c.name);
    let before = blockers.len();
    let mut block = |reason: String, remedy: &str| {
        blockers.push(Blocker {
            object: object.clone(),
            reason,
            remedy: remedy.to_string(),
        })
    };
    let Some(rehearsal) = catalog.rehearsal(t.oid) else {
        block("its change was not rehearsed".into(), "run the plan again");
        return None;
    };
    if let Some(error) = &rehearsal.error {
        block(
            format!("Postgres refuses the change: {error}"),
            "fix the statement: the blocking ALTER would fail the same way",
        );
        return None;
    }
    let Some(rehearsed) = rehearsal.columns.iter().find(|r| r.name == c.name) else {
        block("its change was not rehearsed".into(), "run the plan again");
        return None;
    };
    if engine == Engine::Update {
        // The shadow column's key would have to be converted by the
        // backfill's keyset walk and the rollback's reverse sync alike; the
        // copy engine converts keys both ways (see `KeyConversion`).
        if t.primary_key()
            .is_some_and(|pk| pk.columns.contains(&c.attnum))
        {
            block(
                "the update engine converts a primary key only when widening integers".into(),
                "use --engine copy (or auto, the default), which converts primary keys",
            );
        }
        if c.sequence.is_some() || c.is_identity() {
            block(
                format!("it owns a sequence or is an identity, which the update engine moves only to bigint, not to {}", rehearsed.new_type),
                "use --engine copy (or auto, the default)",
            );
        }
    }
    if t.partition_columns.contains(&c.name) {
        block(
            "it is in the partition key, and Postgres does not change the type of a partition key column".into(),
            "keep the partition key's type, or convert the tree by hand (a new partitioned table, then ATTACH)",
        );
    }
    if let Some(pk) = t.primary_key().filter(|pk| pk.columns.contains(&c.attnum)) {
        // The change logs record the key in the type of the table written;
        // the replays convert logged keys to find the other table's rows,
        // and convert keys back for a rollback, so both ways must be exact.
        let mut refuse = |reason: String| {
            block(
                format!("it is the primary key, and {reason}"),
                "change the key's type with a plain ALTER in a maintenance window, or remove what the reason names",
            )
        };
        if pk.columns.len() > 1 {
            refuse("pgshift converts one-column primary keys only".into());
        }
        if let Some(using) = &change.using {
            match columns_used(using) {
                Some(used) if used.iter().all(|u| u == &c.name) => {}
                Some(used) => refuse(format!(
                    "its USING expression reads other columns ({}): a deleted row's key must convert from the key alone",
                    used.join(", ")
                )),
                None => refuse("its USING expression could not be read".into()),
            }
        }
        if rehearsed.back.is_none() {
            refuse(
                "there is no way back to its old type (add `-- pgshift:down USING <expression>`): the replays \
                 convert keys both ways"
                    .into(),
            );
        }
        if let Some(ix) = t.indexes.iter().find(|ix| ix.is_unique && !ix.is_primary) {
            refuse(format!(
                "the table has another unique index ({}), whose replays would find evicted rows by the key converted back",
                ix.name
            ));
        }
    }
    // A foreign key holds on the new types only when its other side
    // changes to the same type in this migration (the copy engine adds it
    // again on the copies at cutover, and validates it).
    let other_side_matches = |table: u32, attnum: i16| {
        let Some(other) = catalog.table(table).and_then(|o| o.column_by_num(attnum)) else {
            return false;
        };
        catalog
            .rehearsal(table)
            .and_then(|h| h.columns.iter().find(|r| r.name == other.name))
            .is_some_and(|r| r.new_type == rehearsed.new_type)
    };
    let declared = t
        .constraints
        .iter()
        .filter(|k| k.kind == "f")
        .filter_map(|k| {
            let pos = k.columns.iter().position(|&a| a == c.attnum)?;
            Some((k, k.ref_table?, *k.ref_columns.get(pos)?))
        });
    let referencing = t.referenced_by.iter().filter_map(|k| {
        let pos = k.ref_columns.iter().position(|&a| a == c.attnum)?;
        Some((k, k.table, *k.columns.get(pos)?))
    });
    for (fk, table, attnum) in declared.chain(referencing) {
        if !other_side_matches(table, attnum) {
            let other = catalog
                .table(table)
                .and_then(|o| {
                    o.column_by_num(attnum)
                        .map(|col| format!("{}.{}", o.display(), col.name))
                })
                .unwrap_or_else(|| "its other column".into());
            block(
                format!(
                    "it is part of foreign key {}, and {other} does not change to {} in this migration",
                    fk.name, rehearsed.new_type
                ),
                &format!("change {other} to the same type in this migration, or drop the foreign key first and add it again (NOT VALID, then VALIDATE) after cutover"),
            );
        }
    }
    if c.sequence.is_some() || c.is_identity() {
        block(
            "it owns a sequence (serial or identity), which fills integer columns only".into(),
            "drop the default or identity first, or convert to bigint",
        );
    }
    // Views over the column are made again on the new types at cutover,
    // where the blocking ALTER refuses them: each was rehearsed on the new
    // types (see `view_blockers`); one that was not cannot be vouched for.
    for v in catalog
        .views
        .iter()
        .filter(|v| v.table_columns.contains(&(t.oid, c.attnum)))
        .filter(|v| !catalog.rehearsed_views.iter().any(|r| r.oid == v.oid))
    {
        block(
            format!(
                "view {} uses it and was not rehearsed on the new type",
                v.display()
            ),
            "run the plan again",
        );
    }
    if blockers.len() > before {
        return None;
    }
    Some(Conversion {
        to_type: rehearsed.new_type.clone(),
        collation: rehearsed.collation.clone(),
        using: change.using.clone(),
        forward: change
            .using
            .as_ref()
            .map(|u| format!("({u})"))
            .unwrap_or_else(|| quote(&c.name)),
        default: rehearsed.default.clone(),
        back: rehearsed.back.clone(),
        back_error: rehearsed.back_error.clone(),
    })
}

/// The columns `expr` reads (by their last name), read by Postgres's own
/// parser; None when it does not parse.
pub(crate) fn columns_used(expr: &str) -> Option<Vec<String>> {
    use pg_query::protobuf::node::Node;
    use pg_query::NodeRef;
    let parsed = pg_query::parse(&format!("SELECT {expr}"), 0).ok()?;
    let mut out: Vec<String> = parsed
        .protobuf
        .nodes()
        .into_iter()
        .filter_map(|(n, ..)| match n {
            NodeRef::ColumnRef(c) => c.fields.iter().rev().find_map(|f| match f.node.as_ref() {
                Some(Node::String(s)) => Some(s.sval.clone()),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// Views whose definitions do not hold on the new column types: the
/// cutover, which makes them again, would fail.
pub(super) fn view_blockers(catalog: &Catalog, blockers: &mut Vec<Blocker>) {
    for r in &catalog.rehearsed_views {
        let Some(error) = &r.error else { continue };
        let name = catalog
            .view(r.oid)
            .map(|v| v.display())
            .unwrap_or_else(|| format!("oid {}", r.oid));
        blockers.push(Blocker {
            object: format!("view {name}"),
            reason: format!("its definition does not hold on the new column types: {error}"),
            remedy: "change the columns it combines with the changed ones in this migration too, or drop the view before \
                     the migration and create it again after cutover"
                .into(),
        });
    }
}

/// The plain `ALTER`s of a migration whose every change is catalog-only
/// (Postgres neither rewrites a table nor rebuilds an index for it); empty
/// otherwise, and when anything blocks.
pub(super) fn in_place(
    catalog: &Catalog,
    requests: &[Request],
    conversions: &BTreeMap<(u32, i16), Conversion>,
    blockers: &[Blocker],
) -> Vec<InPlaceChange> {
    // Postgres refuses even a catalog-only ALTER of a column a view uses:
    // the copy engine's cutover makes such views again instead.
    let viewed = catalog.views.iter().any(|v| {
        v.table_columns
            .iter()
            .any(|(t, a)| conversions.contains_key(&(*t, *a)))
    });
    if !blockers.is_empty()
        || viewed
        || requests.is_empty()
        || requests.iter().any(|r| r.change.is_none())
        || conversions.len() != requests.len()
    {
        return Vec::new();
    }
    let mut by_table: Vec<(u32, Vec<String>)> = Vec::new();
    for r in requests {
        let Some(change) = &r.change else {
            return Vec::new();
        };
        match catalog.rehearsal(r.table) {
            Some(h) if h.error.is_none() && !h.rewrites && h.rebuilt_indexes == 0 => {}
            _ => return Vec::new(),
        }
        let clause = alter_clause(
            &r.column,
            &change.type_text,
            change.collate.as_deref(),
            change.using.as_deref(),
        );
        match by_table.iter_mut().find(|(t, _)| *t == r.table) {
            Some((_, clauses)) => clauses.push(clause),
            None => by_table.push((r.table, vec![clause])),
        }
    }
    by_table
        .into_iter()
        .filter_map(|(oid, clauses)| {
            let t = catalog.table(oid)?;
            Some(InPlaceChange {
                table: t.display(),
                statement: format!("ALTER TABLE {} {}", t.qualified(), clauses.join(", ")),
            })
        })
        .collect()
}

/// What a DBA must know before converting: rollbacks that cannot convert
/// back, and that catalog-only changes have no rollback of their own.
pub(super) fn warnings(tables: &[TablePlan], in_place: &[InPlaceChange]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        for c in &t.columns {
            let Some(conv) = &c.conversion else { continue };
            if let Some(e) = &conv.back_error {
                out.push(format!(
                    "{}.{}: no way back from {} to {} ({e}): `rollback` after cutover will refuse; before cutover it works. \
                     Add `-- pgshift:down USING <expression>` before the statement to give one",
                    t.display(),
                    c.name,
                    conv.to_type,
                    c.from_type
                ));
            }
        }
    }
    if !in_place.is_empty() {
        out.push(
            "every change is catalog-only: each ALTER runs as written under lock_timeout with retries, holding its lock for \
             milliseconds, with no copy; it is recorded like an ordinary migration, and undone by a new migration"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::incident;
    use super::super::{build, Engine, EngineChoice, Options, Plan, Request};
    use crate::catalog::{Catalog, Rehearsal, RehearsedColumn};
    use crate::migration::TypeChange;
    use crate::plan::copy::Direction;

    fn change(type_text: &str, using: Option<&str>) -> TypeChange {
        TypeChange {
            type_text: type_text.into(),
            collate: None,
            using: using.map(str::to_string),
            down: None,
        }
    }

    /// The catalog with Postgres's verdict on table 1's changes.
    fn rehearsed(rewrites: bool, columns: Vec<RehearsedColumn>) -> Catalog {
        let mut catalog = incident();
        catalog.rehearsals.push(Rehearsal {
            table: 1,
            error: None,
            rewrites,
            rebuilt_indexes: 0,
            columns,
        });
        catalog.conversion_settings = vec![("TimeZone".into(), "Asia/Kolkata".into())];
        catalog
    }

    fn column(name: &str, new_type: &str, back: Option<&str>) -> RehearsedColumn {
        RehearsedColumn {
            name: name.into(),
            new_type: new_type.into(),
            collation: None,
            default: None,
            back: back.map(str::to_string),
            back_error: if back.is_none() {
                Some("cannot cast type jsonb to integer".into())
            } else {
                None
            },
        }
    }

    fn plan(catalog: &Catalog, requests: Vec<Request>, engine: EngineChoice) -> Plan {
        let options = Options {
            engine,
            ..Options::default()
        };
        build("m", "abc", &requests, catalog, options).unwrap()
    }

    fn request(table: u32, column: &str, change: TypeChange) -> Request {
        Request {
            table,
            column: column.into(),
            change: Some(change),
        }
    }

    #[test]
    fn a_rewriting_change_is_a_copy_that_converts_each_value_with_the_fixed_settings() {
        let catalog = rehearsed(true, vec![column("name", "jsonb", Some("\"name\""))]);
        let p = plan(
            &catalog,
            vec![request(1, "name", change("jsonb", Some("name::jsonb")))],
            EngineChoice::Auto,
        );
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert_eq!(p.engine, Engine::Copy);
        assert!(p.in_place.is_empty());
        let conv = p.tables[0].columns[0].conversion.as_ref().unwrap();
        assert_eq!(conv.to_type, "jsonb");
        assert_eq!(conv.forward, "(name::jsonb)");
        let copy = &p.copy.as_ref().unwrap().tables[0];
        assert_eq!(
            copy.select_list(Direction::Forward),
            "\"id\", (name::jsonb)"
        );
        assert_eq!(copy.select_list(Direction::Back), "\"id\", \"name\"");
        assert!(
            copy.create
                .iter()
                .any(|s| s.ends_with("ALTER COLUMN \"name\" TYPE jsonb USING NULL")),
            "{:?}",
            copy.create
        );
        assert_eq!(p.conversion_settings, catalog.conversion_settings);
        assert!(p.no_way_back().is_empty());
    }

    #[test]
    fn catalog_only_changes_run_in_place_unless_the_file_also_needs_a_copy() {
        let catalog = rehearsed(
            false,
            vec![column("name", "character varying(200)", Some("\"name\""))],
        );
        let varchar = || request(1, "name", change("varchar(200)", None));
        let p = plan(&catalog, vec![varchar()], EngineChoice::Auto);
        assert!(p.tables.is_empty(), "{:?}", p.tables);
        assert_eq!(p.in_place.len(), 1);
        assert_eq!(
            p.in_place[0].statement,
            "ALTER TABLE \"public\".\"scripts\" ALTER COLUMN \"name\" TYPE varchar(200)"
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("catalog-only")),
            "{:?}",
            p.warnings
        );

        // With an integer widening beside it, everything goes through the copy.
        let widen = Request {
            table: 3,
            column: "id".into(),
            change: None,
        };
        let p = plan(&catalog, vec![varchar(), widen], EngineChoice::Auto);
        assert!(p.in_place.is_empty());
        assert_eq!(p.tables.len(), 2);
        assert_eq!(p.engine, Engine::Copy);
    }

    #[test]
    fn refusals_name_the_column_and_what_to_do() {
        let catalog = rehearsed(
            true,
            vec![column("id", "text", Some("CAST(\"id\" AS integer)"))],
        );
        let p = plan(
            &catalog,
            vec![request(
                1,
                "id",
                change("text", Some("id::text || scripts.name")),
            )],
            EngineChoice::Auto,
        );
        let reasons: Vec<&str> = p.blockers.iter().map(|b| b.reason.as_str()).collect();
        for expected in [
            "it is the primary key, and its USING expression reads other columns (id, name)",
            "foreign key script_runs_script_id_fkey",
            "sequence",
            "view all_scripts",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(expected)),
                "{expected}: {reasons:?}"
            );
        }
        assert!(p
            .blockers
            .iter()
            .all(|b| b.object == "column scripts.id" && !b.remedy.is_empty()));

        let p = plan(
            &rehearsed(true, vec![column("name", "jsonb", Some("\"name\""))]),
            vec![request(1, "name", change("jsonb", Some("name::jsonb")))],
            EngineChoice::Update,
        );
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert_eq!(p.engine, Engine::Update);
        // The update engine converts in place, but not a primary key.
        let p = plan(
            &rehearsed(
                true,
                vec![column("id", "text", Some("CAST(\"id\" AS integer)"))],
            ),
            vec![request(1, "id", change("text", None))],
            EngineChoice::Update,
        );
        assert!(
            p.blockers.iter().any(|b| b
                .reason
                .contains("update engine converts a primary key only when widening integers")),
            "{:?}",
            p.blockers
        );

        let mut refused = rehearsed(true, vec![]);
        refused.rehearsals[0].error = Some("type \"nosuchtype\" does not exist".into());
        let p = plan(
            &refused,
            vec![request(1, "name", change("nosuchtype", None))],
            EngineChoice::Auto,
        );
        assert!(
            p.blockers[0].reason.contains("nosuchtype"),
            "{:?}",
            p.blockers
        );
    }

    #[test]
    fn no_way_back_is_said_up_front() {
        let catalog = rehearsed(true, vec![column("name", "integer", None)]);
        let p = plan(
            &catalog,
            vec![request(1, "name", change("integer", Some("length(name)")))],
            EngineChoice::Copy,
        );
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert_eq!(p.no_way_back().len(), 1);
        assert!(
            p.no_way_back()[0].contains("scripts.name (text → integer)"),
            "{:?}",
            p.no_way_back()
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("pgshift:down")),
            "{:?}",
            p.warnings
        );
    }
}
