//! Statements that rewrite a whole table (or its indexes) under an ACCESS EXCLUSIVE lock:
//! `VACUUM FULL`, `CLUSTER`, `SET TABLESPACE`, `SET LOGGED/UNLOGGED`, `SET ACCESS METHOD`,
//! and a new stored generated or identity column.

use pg_query::protobuf::{AlterTableType, ConstrType};
use pg_query::NodeEnum;

use super::{
    column_constraints, has_option, is, kind, new_columns, relation, Context, Hit, Rule, Severity,
};

pub const RULE: Rule = Rule {
    name: "table-rewrite",
    severity: Severity::Error,
    summary: "VACUUM FULL, CLUSTER, SET TABLESPACE, SET LOGGED/UNLOGGED, SET ACCESS METHOD, a new stored generated or identity column",
    check,
};

fn hit(what: String, suggestion: &str) -> Hit {
    Hit {
        message: format!("{what} rewrites the whole table while blocking reads and writes"),
        suggestion: suggestion.into(),
    }
}

fn check(ctx: &Context) -> Vec<Hit> {
    let mut hits = Vec::new();
    match ctx.statement {
        Some(NodeEnum::VacuumStmt(v)) if has_option(&v.options, "full") => {
            hits.push(hit("VACUUM FULL".into(), "plain VACUUM (no lock that blocks traffic); to return space to the OS, pg_repack or pg_squeeze"))
        }
        Some(NodeEnum::ClusterStmt(c)) => hits.push(hit(
            format!("CLUSTER {}", relation(c.relation.as_ref())),
            "pg_repack --order-by, or accept the physical order and drop CLUSTER",
        )),
        Some(NodeEnum::AlterTableStmt(a))
            if a.objtype == pg_query::protobuf::ObjectType::ObjectIndex as i32
                && a.cmds.iter().any(|c| {
                    matches!(c.node.as_ref(), Some(NodeEnum::AlterTableCmd(c)) if is(c, AlterTableType::AtSetTableSpace))
                }) =>
        {
            hits.push(Hit {
                message: format!(
                    "ALTER INDEX {} SET TABLESPACE copies the index while blocking writes to its table",
                    relation(a.relation.as_ref())
                ),
                suggestion: "CREATE INDEX CONCURRENTLY … TABLESPACE …, then DROP INDEX CONCURRENTLY the old one".into(),
            });
        }
        _ => {}
    }
    if let Some((table, cmds)) = ctx.alter_existing() {
        for c in &cmds {
            let what = if is(c, AlterTableType::AtSetTableSpace) {
                "SET TABLESPACE"
            } else if is(c, AlterTableType::AtSetLogged) {
                "SET LOGGED"
            } else if is(c, AlterTableType::AtSetUnLogged) {
                "SET UNLOGGED"
            } else if is(c, AlterTableType::AtSetAccessMethod) {
                "SET ACCESS METHOD"
            } else {
                continue;
            };
            hits.push(hit(
                format!("ALTER TABLE {table} {what}"),
                "a copy of the table swapped in online (pg_repack, or a new table filled in batches)",
            ));
        }
    }
    for (table, cd, existing) in new_columns(ctx) {
        if !existing || !matches!(ctx.statement, Some(NodeEnum::AlterTableStmt(_))) {
            continue;
        }
        for k in column_constraints(cd) {
            if kind(k, ConstrType::ConstrGenerated) {
                hits.push(hit(
                    format!("ADD COLUMN {} GENERATED ALWAYS AS (…) STORED on {table}", cd.colname),
                    "add a plain column, fill it with a trigger and batched UPDATEs; or, on Postgres 18, a VIRTUAL generated column (no rewrite)",
                ));
            } else if kind(k, ConstrType::ConstrIdentity) {
                hits.push(hit(
                    format!("ADD COLUMN {} GENERATED … AS IDENTITY on {table}", cd.colname),
                    "add the column nullable, fill it in batches from a sequence, then SET NOT NULL through a validated CHECK and ADD GENERATED … AS IDENTITY",
                ));
            }
        }
    }
    hits
}
