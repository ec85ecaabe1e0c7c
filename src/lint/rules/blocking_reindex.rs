//! `REINDEX` without `CONCURRENTLY` blocks writes to the table (and reads that use the index).

use pg_query::NodeEnum;

use super::{has_option, relation, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "blocking-reindex",
    severity: Severity::Error,
    summary: "REINDEX without CONCURRENTLY",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::ReindexStmt(r)) = ctx.statement else {
        return vec![];
    };
    if has_option(&r.params, "concurrently") {
        return vec![];
    }
    let what = match relation(r.relation.as_ref()) {
        t if t.is_empty() => r.name.clone(),
        t => t,
    };
    vec![Hit {
        message: format!(
            "REINDEX {what} blocks writes while it rebuilds, and reads that use the index"
        ),
        suggestion: "REINDEX (CONCURRENTLY) … (Postgres 12+, outside a transaction block)".into(),
    }]
}
