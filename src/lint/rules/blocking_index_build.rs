//! `CREATE INDEX` without `CONCURRENTLY` blocks every write to the table for the whole build.

use sqlparser::ast::Statement;

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "blocking-index-build",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(Statement::CreateIndex(ix)) = ctx.statement else {
        return vec![];
    };
    if ix.concurrently || ctx.is_new_table(&ix.table_name) {
        return vec![];
    }
    vec![Hit {
        message: format!("CREATE INDEX on {} blocks writes to it for the whole build", ix.table_name),
        suggestion: "CREATE INDEX CONCURRENTLY (outside a transaction block); pgshift apply runs it that way".into(),
    }]
}
