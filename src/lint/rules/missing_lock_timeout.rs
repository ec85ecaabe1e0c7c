//! DDL without `lock_timeout` waits for its lock forever, and every query on the table queues behind it.

use super::{blocking_lock, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "missing-lock-timeout",
    severity: Severity::Warning,
    summary: "a blocking lock with no lock_timeout set before it (pgshift apply sets one)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    if ctx.lock_timeout_set || blocking_lock(ctx).is_none() {
        return vec![];
    }
    vec![Hit {
        message: "this statement takes a lock that blocks traffic, and no lock_timeout is set before it: \
                  while it waits, every query on the table queues behind it"
            .into(),
        suggestion: "SET lock_timeout = '2s' at the top of the file (pgshift apply sets it and retries)".into(),
    }]
}
