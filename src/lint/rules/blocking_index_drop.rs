//! `DROP INDEX` without `CONCURRENTLY` takes ACCESS EXCLUSIVE on the index's table.

use pg_query::protobuf::ObjectType;
use pg_query::NodeEnum;

use super::{dropped_names, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "blocking-index-drop",
    severity: Severity::Error,
    summary: "DROP INDEX without CONCURRENTLY",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::DropStmt(d)) = ctx.statement else {
        return vec![];
    };
    if d.remove_type != ObjectType::ObjectIndex as i32 || d.concurrent {
        return vec![];
    }
    vec![Hit {
        message: format!(
            "DROP INDEX {} locks its table against reads and writes, and waits behind every query on it",
            dropped_names(d).join(", ")
        ),
        suggestion: "DROP INDEX CONCURRENTLY (outside a transaction block, one index per statement)".into(),
    }]
}
