//! An `UPDATE` or `DELETE` of a whole table in a migration locks every row it touches until
//! COMMIT, in one long transaction: writers wait, vacuum cannot clean up, WAL comes in a burst.

use pg_query::NodeEnum;

use super::{relation, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "whole-table-write",
    severity: Severity::Error,
    summary: "UPDATE or DELETE without WHERE on an existing table (a backfill in one transaction)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let (verb, table) = match ctx.statement {
        Some(NodeEnum::UpdateStmt(u)) if u.where_clause.is_none() => {
            ("UPDATE", relation(u.relation.as_ref()))
        }
        Some(NodeEnum::DeleteStmt(d)) if d.where_clause.is_none() => {
            ("DELETE", relation(d.relation.as_ref()))
        }
        _ => return vec![],
    };
    if ctx.is_new_table(&table) {
        return vec![];
    }
    vec![Hit {
        message: format!(
            "{verb} of every row of {table} in one transaction: each row stays locked until COMMIT, writers to it wait, \
             and vacuum and the replicas fall behind"
        ),
        suggestion: "backfill in batches of a few thousand keys, each its own transaction (pgshift's engines do for type changes)".into(),
    }]
}
