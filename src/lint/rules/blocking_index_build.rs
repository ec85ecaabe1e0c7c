//! `CREATE INDEX` without `CONCURRENTLY` blocks every write to the table for the whole build.

use pg_query::NodeEnum;

use super::{relation, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "blocking-index-build",
    severity: Severity::Error,
    summary: "CREATE INDEX without CONCURRENTLY on an existing table",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::IndexStmt(ix)) = ctx.statement else {
        return vec![];
    };
    let table = relation(ix.relation.as_ref());
    if ix.concurrent || ctx.is_new_table(&table) {
        return vec![];
    }
    vec![Hit {
        message: format!("CREATE INDEX on {table} blocks writes to it for the whole build"),
        suggestion: "CREATE INDEX CONCURRENTLY (outside a transaction block); pgshift apply runs it that way".into(),
    }]
}
