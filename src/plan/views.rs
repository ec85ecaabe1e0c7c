//! The views over widened columns, recreated at cutover, and the warnings
//! about unions whose branches would no longer have one type.

use std::collections::{BTreeMap, BTreeSet};

use sqlparser::ast::{SetExpr, Statement, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;
use crate::catalog::Catalog;

/// Views over widened columns (and views over those), in creation order.
pub(super) fn plan_views(
    catalog: &Catalog,
    widen: &BTreeMap<u32, BTreeMap<i16, String>>,
    blockers: &mut Vec<Blocker>,
    options: Options,
) -> Vec<ViewPlan> {
    let ordered = catalog.views_over(|v| {
        v.table_columns
            .iter()
            .any(|(t, a)| widen.get(t).is_some_and(|c| c.contains_key(a)))
    });
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

pub(super) fn warnings(tables: &[TablePlan], views: &[ViewPlan]) -> Vec<String> {
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
    // Only integer widenings: a view over a column whose type changes
    // otherwise is refused (see `convert`).
    let widened_tables: BTreeSet<&str> = tables
        .iter()
        .filter(|t| t.columns.iter().any(|c| c.conversion.is_none()))
        .map(|t| t.name.as_str())
        .collect();
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
