//! In a transaction, a lock that blocks writes is held until COMMIT: slow work after it keeps
//! the table blocked for all that time.

use super::{slow_work, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "lock-held-during-slow-work",
    severity: Severity::Error,
    summary: "a transaction that takes a blocking lock, then does slow work before COMMIT",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let (Some((line, table)), Some(work)) = (ctx.lock_held, slow_work(ctx)) else {
        return vec![];
    };
    vec![Hit {
        message: format!(
            "{work} runs while this transaction still holds the lock on {table} taken at line {line}: \
             {table} stays blocked until COMMIT"
        ),
        suggestion: "do the slow work first or in its own transaction, and keep the blocking statement short and last \
                     (or commit before the slow work)"
            .into(),
    }]
}
