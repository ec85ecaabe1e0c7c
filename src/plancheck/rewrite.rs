//! The shadow method's query rewrite: on a hot standby the migration has
//! not cut over, but the shadow columns, their indexes and statistics are
//! there. Rewriting each query to read the shadow columns (and inlining the
//! views over them, rewritten the same way) gives the plans the queries will
//! get after cutover, without writing anything.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions_mut, Expr, Ident, Join, JoinConstraint, JoinOperator, ObjectNamePart, Query,
    Select, SelectItem, SetExpr, Statement, TableAlias, TableFactor, TableWithJoins,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::plan::Plan;

/// Which columns read which shadow column, and the views to inline.
pub struct ShadowMap {
    /// table name (unqualified) -> column -> shadow column.
    tables: HashMap<String, HashMap<String, String>>,
    /// view name (unqualified) -> definition.
    views: HashMap<String, String>,
    /// The copy engine: table name (unqualified) -> its copy, read in its
    /// place under the table's name.
    copies: HashMap<String, String>,
}

impl ShadowMap {
    pub fn from_plan(plan: &Plan) -> ShadowMap {
        let copies: HashMap<String, String> = plan
            .copy
            .iter()
            .flat_map(|c| &c.tables)
            .map(|t| (t.name.clone(), t.new_name.clone()))
            .collect();
        let tables = plan
            .tables
            .iter()
            .filter(|t| !copies.contains_key(&t.name))
            .map(|t| {
                (
                    t.name.clone(),
                    t.columns
                        .iter()
                        .map(|c| (c.name.clone(), c.shadow.clone()))
                        .collect(),
                )
            })
            .collect();
        let views = plan
            .views
            .iter()
            .map(|v| (v.name.clone(), v.definition.clone()))
            .collect();
        ShadowMap {
            tables,
            views,
            copies,
        }
    }
}

/// Rewrites one query; errors say why it could not be.
pub fn rewrite(sql: &str, map: &ShadowMap) -> Result<String, String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| format!("could not parse: {e}"))?;
    if statements.len() != 1 {
        return Err("expected one statement".into());
    }
    match &mut statements[0] {
        Statement::Query(q) => rewrite_query(q, map, 0)?,
        _ => return Err("only SELECT queries can be explained on a hot standby".into()),
    }
    Ok(statements[0].to_string())
}

fn rewrite_query(q: &mut Query, map: &ShadowMap, depth: usize) -> Result<(), String> {
    if depth > 16 {
        return Err("views nest too deeply".into());
    }
    if let Some(with) = &mut q.with {
        for cte in &mut with.cte_tables {
            rewrite_query(&mut cte.query, map, depth + 1)?;
        }
    }
    rewrite_set_expr(&mut q.body, map, depth)
}

fn rewrite_set_expr(body: &mut SetExpr, map: &ShadowMap, depth: usize) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => rewrite_select(select, map, depth),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, map, depth)?;
            rewrite_set_expr(right, map, depth)
        }
        SetExpr::Query(q) => rewrite_query(q, map, depth + 1),
        _ => Ok(()),
    }
}

/// (name the query uses for a relation, its column -> shadow map)
type Binding<'a> = (String, &'a HashMap<String, String>);

fn rewrite_select(select: &mut Select, map: &ShadowMap, depth: usize) -> Result<(), String> {
    let mut bindings: Vec<Binding> = Vec::new();
    for twj in &mut select.from {
        bind(&mut twj.relation, map, depth, &mut bindings)?;
        for join in &mut twj.joins {
            bind(&mut join.relation, map, depth, &mut bindings)?;
        }
    }
    if bindings.is_empty() {
        return Ok(());
    }
    for item in &mut select.projection {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let original = match expr {
                    Expr::Identifier(i) => Some(i.clone()),
                    Expr::CompoundIdentifier(parts) => parts.last().cloned(),
                    _ => None,
                };
                let before = expr.to_string();
                rename(expr, &bindings);
                // Keep the output column's name, which outer queries and set operations rely on.
                if let Some(name) = original.filter(|_| expr.to_string() != before) {
                    *item = SelectItem::ExprWithAlias {
                        expr: expr.clone(),
                        alias: name,
                    };
                }
            }
            SelectItem::ExprWithAlias { expr, .. } => rename(expr, &bindings),
            _ => {}
        }
    }
    if let Some(e) = &mut select.selection {
        rename(e, &bindings);
    }
    if let Some(e) = &mut select.having {
        rename(e, &bindings);
    }
    for twj in &mut select.from {
        for join in &mut twj.joins {
            rename_join(join, &bindings);
        }
    }
    Ok(())
}

fn rename_join(join: &mut Join, bindings: &[Binding]) {
    let constraint = match &mut join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => c,
        _ => return,
    };
    if let JoinConstraint::On(e) = constraint {
        rename(e, bindings);
    }
}

/// Inlines a planned view, rewrites derived tables, and records which
/// widened tables the select reads and under which name.
fn bind<'a>(
    relation: &mut TableFactor,
    map: &'a ShadowMap,
    depth: usize,
    bindings: &mut Vec<Binding<'a>>,
) -> Result<(), String> {
    match relation {
        TableFactor::Table { name, alias, .. } => {
            let Some(ObjectNamePart::Identifier(last)) = name.0.last() else {
                return Ok(());
            };
            let table = crate::names::fold(last);
            if let Some(def) = map.views.get(&table) {
                let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, def)
                    .map_err(|e| format!("could not parse view {table}: {e}"))?;
                let Some(Statement::Query(mut q)) = parsed.pop() else {
                    return Err(format!("view {table} is not a query"));
                };
                rewrite_query(&mut q, map, depth + 1)?;
                let alias = alias.clone().unwrap_or(TableAlias {
                    explicit: true,
                    name: Ident::new(table.clone()),
                    columns: vec![],
                    at: None,
                });
                *relation = TableFactor::Derived {
                    lateral: false,
                    subquery: q,
                    alias: Some(alias),
                    sample: None,
                };
            } else if let Some(copy) = map.copies.get(&table) {
                if alias.is_none() {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: Ident::new(table.clone()),
                        columns: vec![],
                        at: None,
                    });
                }
                if let Some(ObjectNamePart::Identifier(last)) = name.0.last_mut() {
                    *last = Ident::with_quote('"', copy.as_str());
                }
            } else if let Some(cols) = map.tables.get(&table) {
                let used = alias
                    .as_ref()
                    .map(|a| crate::names::fold(&a.name))
                    .unwrap_or(table);
                bindings.push((used, cols));
            }
        }
        TableFactor::Derived { subquery, .. } => rewrite_query(subquery, map, depth + 1)?,
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => {
            let TableWithJoins { relation, joins } = table_with_joins.as_mut();
            bind(relation, map, depth, bindings)?;
            for j in joins {
                bind(&mut j.relation, map, depth, bindings)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Renames column references in `expr` that belong to a widened table.
fn rename(expr: &mut Expr, bindings: &[Binding]) {
    let _ = visit_expressions_mut(expr, |e| {
        match e {
            Expr::Identifier(id) => {
                let col = crate::names::fold(id);
                let owners: Vec<&String> = bindings
                    .iter()
                    .filter_map(|(_, cols)| cols.get(&col))
                    .collect();
                if let [shadow] = owners.as_slice() {
                    *id = Ident::with_quote('"', shadow.as_str());
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let n = parts.len();
                let qualifier = crate::names::fold(&parts[n - 2]);
                let col = crate::names::fold(&parts[n - 1]);
                if let Some((_, cols)) = bindings.iter().find(|(name, _)| *name == qualifier) {
                    if let Some(shadow) = cols.get(&col) {
                        parts[n - 1] = Ident::with_quote('"', shadow.as_str());
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShadowMap {
        ShadowMap {
            tables: HashMap::from([
                ("scripts".to_string(), HashMap::from([("id".to_string(), "pgshift_new_id".to_string())])),
                (
                    "script_runs".to_string(),
                    HashMap::from([("script_id".to_string(), "pgshift_new_script_id".to_string())]),
                ),
            ]),
            views: HashMap::from([(
                "all_scripts".to_string(),
                "SELECT scripts.id, scripts.name FROM scripts UNION ALL SELECT archived_scripts.id, archived_scripts.name FROM archived_scripts".to_string(),
            )]),
            copies: HashMap::new(),
        }
    }

    #[test]
    fn the_copy_engine_reads_the_copies_under_the_tables_names() {
        let copy = ShadowMap {
            tables: HashMap::new(),
            views: map().views,
            copies: HashMap::from([
                ("scripts".to_string(), "pgshift_new_scripts".to_string()),
                (
                    "archived_scripts".to_string(),
                    "pgshift_new_archived_scripts".to_string(),
                ),
            ]),
        };
        let got = rewrite("SELECT s.name FROM public.scripts s WHERE s.id = $1", &copy).unwrap();
        assert_eq!(
            got,
            "SELECT s.name FROM public.\"pgshift_new_scripts\" s WHERE s.id = $1"
        );
        let got = rewrite("SELECT name FROM all_scripts WHERE id = $1", &copy).unwrap();
        assert_eq!(
            got,
            "SELECT name FROM (SELECT scripts.id, scripts.name FROM \"pgshift_new_scripts\" AS scripts UNION ALL \
             SELECT archived_scripts.id, archived_scripts.name FROM \"pgshift_new_archived_scripts\" AS archived_scripts) AS all_scripts \
             WHERE id = $1"
        );
    }

    #[test]
    fn table_queries_read_the_shadow_columns_and_keep_output_names() {
        let got = rewrite("SELECT id, name FROM scripts WHERE id = $1", &map()).unwrap();
        assert_eq!(
            got,
            "SELECT \"pgshift_new_id\" AS id, name FROM scripts WHERE \"pgshift_new_id\" = $1"
        );
    }

    #[test]
    fn joins_use_aliases() {
        let got = rewrite(
            "SELECT s.name, r.status FROM scripts s JOIN script_runs r ON r.script_id = s.id WHERE s.id = $1",
            &map(),
        )
        .unwrap();
        assert_eq!(
            got,
            "SELECT s.name, r.status FROM scripts s JOIN script_runs r ON r.\"pgshift_new_script_id\" = s.\"pgshift_new_id\" WHERE s.\"pgshift_new_id\" = $1"
        );
    }

    #[test]
    fn views_over_widened_columns_are_inlined_and_rewritten() {
        let got = rewrite("SELECT name FROM all_scripts WHERE id = $1", &map()).unwrap();
        assert_eq!(
            got,
            "SELECT name FROM (SELECT scripts.\"pgshift_new_id\" AS id, scripts.name FROM scripts UNION ALL SELECT archived_scripts.id, archived_scripts.name FROM archived_scripts) AS all_scripts WHERE id = $1"
        );
    }

    #[test]
    fn writes_are_not_rewritten() {
        assert!(rewrite("DELETE FROM scripts WHERE id = 1", &map()).is_err());
    }
}
