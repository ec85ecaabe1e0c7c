//! A new `integer`/`serial`/`smallint` primary key runs out at 2^31 − 1 (2^15 − 1); widening it
//! later is the migration that started pgshift.

use pg_query::protobuf::ConstrType;
use pg_query::NodeEnum;

use super::{
    column_constraints, display_type, is_small_integer, kind, new_columns, type_of, Context, Hit,
    Rule, Severity,
};

pub const RULE: Rule = Rule {
    name: "integer-primary-key",
    severity: Severity::Error,
    summary: "a new integer, serial or smallint primary key (or identity)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let mut pk: Vec<String> = Vec::new();
    if let Some(NodeEnum::CreateStmt(c)) = ctx.statement {
        for e in &c.table_elts {
            if let Some(NodeEnum::Constraint(k)) = e.node.as_ref() {
                if kind(k, ConstrType::ConstrPrimary) {
                    pk.extend(k.keys.iter().filter_map(|n| match n.node.as_ref() {
                        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                        _ => None,
                    }));
                }
            }
        }
    }
    new_columns(ctx)
        .into_iter()
        .filter_map(|(table, cd, _)| {
            let (name, mods) = type_of(cd)?;
            let key = pk.contains(&cd.colname)
                || column_constraints(cd).any(|k| kind(k, ConstrType::ConstrPrimary) || kind(k, ConstrType::ConstrIdentity));
            (key && is_small_integer(&name)).then(|| Hit {
                message: format!(
                    "{table}.{} is a {} key: it runs out at {}, and widening it later rewrites the table and every key that references it",
                    cd.colname,
                    display_type(&name, &mods),
                    if name.contains('2') || name == "smallserial" { "32,767" } else { "2,147,483,647" }
                ),
                suggestion: "use bigint GENERATED ALWAYS AS IDENTITY (or bigserial)".into(),
            })
        })
        .collect()
}
