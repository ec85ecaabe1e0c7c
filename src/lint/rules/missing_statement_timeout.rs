//! Slow work under a blocking lock with no `statement_timeout` has no upper bound on how long
//! the application waits.

use super::{blocking_lock, slow_work, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "missing-statement-timeout",
    severity: Severity::Warning,
    summary: "slow work under a blocking lock with no statement_timeout set",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    if ctx.statement_timeout_set {
        return vec![];
    }
    let (Some(table), Some(work)) = (blocking_lock(ctx), slow_work(ctx)) else {
        return vec![];
    };
    vec![Hit {
        message: format!("{work} holds a lock on {table} that blocks traffic, with no statement_timeout to bound it"),
        suggestion: "SET statement_timeout before it (e.g. '15min'), or use the online form the other findings name".into(),
    }]
}
