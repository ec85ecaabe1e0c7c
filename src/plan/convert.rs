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
        block(
            format!(
                "the update engine converts integer columns to bigint only, not {} to {}",
                c.type_name, rehearsed.new_type
            ),
            "use --engine copy (or auto, the default), which converts any type",
        );
    }
    if t.primary_key()
        .is_some_and(|pk| pk.columns.contains(&c.attnum))
    {
        block(
            "it is part of the primary key, which the copy's change logs record in its old type".into(),
            "change the key's type with a plain ALTER in a maintenance window; pgshift converts keys from integer to bigint only",
        );
    }
    let in_fk = t
        .constraints
        .iter()
        .filter(|k| k.kind == "f")
        .find(|k| k.columns.contains(&c.attnum))
        .or_else(|| {
            t.referenced_by
                .iter()
                .find(|k| k.ref_columns.contains(&c.attnum))
        });
    if let Some(fk) = in_fk {
        block(
            format!("it is part of foreign key {}, whose other side keeps its type", fk.name),
            "drop the foreign key before the migration and add it again (NOT VALID, then VALIDATE) on matching types after cutover",
        );
    }
    if c.sequence.is_some() || c.is_identity() {
        block(
            "it owns a sequence (serial or identity), which fills integer columns only".into(),
            "drop the default or identity first, or convert to bigint",
        );
    }
    for v in catalog
        .views
        .iter()
        .filter(|v| v.table_columns.contains(&(t.oid, c.attnum)))
    {
        block(
            format!(
                "view {} uses it: Postgres refuses to change the type of a column a view uses (the blocking ALTER fails too)",
                v.display()
            ),
            "drop the view, change the type, then create the view again on the new type",
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
        back: rehearsed.back.clone(),
        back_error: rehearsed.back_error.clone(),
    })
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
    if !blockers.is_empty()
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
