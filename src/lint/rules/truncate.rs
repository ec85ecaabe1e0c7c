//! `TRUNCATE` deletes every row irreversibly, under an ACCESS EXCLUSIVE lock.

use sqlparser::ast::Statement;

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "truncate",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(Statement::Truncate(_)) = ctx.statement else {
        return vec![];
    };
    vec![Hit {
        message: "TRUNCATE deletes every row irreversibly".into(),
        suggestion: "delete in batches, or keep the data until a backup exists".into(),
    }]
}
