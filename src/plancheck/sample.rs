//! Sample values for custom plans: a `$n` compared with a column gets a
//! value of that column, read from the table (or view) the query names.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions, visit_relations, Expr, Statement, TableFactor, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tokio_postgres::Client;

use crate::names::literal;

/// `$n` → (relation, column) it is compared with, when the query says.
pub fn parameter_columns(sql: &str) -> HashMap<usize, (String, String)> {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return HashMap::new();
    };
    let Some(statement) = statements.first() else {
        return HashMap::new();
    };
    // Relations by the name the query uses for them (alias or table name).
    let mut relations: Vec<(String, String)> = Vec::new();
    if let Statement::Query(q) = statement {
        collect_relations(&q.body, &mut relations);
    }
    if relations.is_empty() {
        let _ = visit_relations(statement, |name| {
            let full = name.to_string();
            let short = full
                .rsplit('.')
                .next()
                .unwrap_or(&full)
                .trim_matches('"')
                .to_string();
            relations.push((short, full));
            ControlFlow::<()>::Continue(())
        });
    }
    let mut out = HashMap::new();
    let _ = visit_expressions(statement, |e| {
        if let Expr::BinaryOp { left, right, .. } = e {
            for (a, b) in [(left, right), (right, left)] {
                if let (Some(n), Some((qualifier, column))) = (placeholder(b), column_ref(a)) {
                    let relation = match qualifier {
                        Some(q) => relations
                            .iter()
                            .find(|(used, _)| *used == q)
                            .map(|(_, r)| r.clone()),
                        None if relations.len() == 1 => Some(relations[0].1.clone()),
                        None => None,
                    };
                    if let Some(r) = relation {
                        out.entry(n).or_insert((r, column));
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

fn collect_relations(body: &sqlparser::ast::SetExpr, out: &mut Vec<(String, String)>) {
    use sqlparser::ast::SetExpr;
    match body {
        SetExpr::Select(select) => {
            for twj in &select.from {
                for factor in
                    std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation))
                {
                    if let TableFactor::Table { name, alias, .. } = factor {
                        let full = name.to_string();
                        let used = alias
                            .as_ref()
                            .map(|a| crate::names::fold(&a.name))
                            .unwrap_or_else(|| {
                                full.rsplit('.')
                                    .next()
                                    .unwrap_or(&full)
                                    .trim_matches('"')
                                    .to_string()
                            });
                        out.push((used, full));
                    }
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            collect_relations(left, out);
            collect_relations(right, out);
        }
        SetExpr::Query(q) => collect_relations(&q.body, out),
        _ => {}
    }
}

fn placeholder(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.trim_start_matches('$').parse().ok(),
            _ => None,
        },
        Expr::Cast { expr, .. } => placeholder(expr),
        _ => None,
    }
}

fn column_ref(e: &Expr) -> Option<(Option<String>, String)> {
    match e {
        Expr::Identifier(i) => Some((None, crate::names::fold(i))),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => Some((
            Some(crate::names::fold(&parts[parts.len() - 2])),
            crate::names::fold(&parts[parts.len() - 1]),
        )),
        _ => None,
    }
}

/// SQL literals for `$1…$n`: a sampled value of the compared column, or NULL.
pub async fn values(client: &Client, sql: &str, n: usize) -> Vec<String> {
    let columns = parameter_columns(sql);
    let mut out = Vec::new();
    for i in 1..=n {
        let value = match columns.get(&i) {
            Some((relation, column)) => sample(client, relation, column).await,
            None => None,
        };
        out.push(value.map(|v| literal(&v)).unwrap_or_else(|| "NULL".into()));
    }
    out
}

async fn sample(client: &Client, relation: &str, column: &str) -> Option<String> {
    // The relation name comes from the user's own query text; the column is quoted.
    let sql = format!(
        "SELECT {col}::text FROM {relation} WHERE {col} IS NOT NULL LIMIT 1 OFFSET (random() * 100)::int",
        col = crate::names::quote(column)
    );
    let fallback = format!(
        "SELECT {col}::text FROM {relation} WHERE {col} IS NOT NULL LIMIT 1",
        col = crate::names::quote(column)
    );
    for q in [sql, fallback] {
        if let Ok(Some(row)) = client.query_opt(q.as_str(), &[]).await {
            return row.get(0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_matched_with_their_columns_and_relations() {
        let m = parameter_columns("SELECT name FROM all_scripts WHERE id = $1");
        assert_eq!(
            m.get(&1),
            Some(&("all_scripts".to_string(), "id".to_string()))
        );
        let m = parameter_columns("SELECT s.name FROM scripts s JOIN script_runs r ON r.script_id = s.id WHERE s.id = $1 AND $2 = r.status");
        assert_eq!(m.get(&1), Some(&("scripts".to_string(), "id".to_string())));
        assert_eq!(
            m.get(&2),
            Some(&("script_runs".to_string(), "status".to_string()))
        );
        let m = parameter_columns("SELECT 1 FROM a, b WHERE x = $1");
        assert!(
            m.is_empty(),
            "an unqualified column of two relations is ambiguous"
        );
    }
}
