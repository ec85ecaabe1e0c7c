//! An explicit `LOCK TABLE` in a mode that blocks writes stops the application for as long as
//! the transaction lasts.

use pg_query::NodeEnum;

use super::{existing_tables, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "lock-table",
    severity: Severity::Error,
    summary: "LOCK TABLE in a mode that blocks writes",
    check,
};

const MODES: [&str; 9] = [
    "",
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::LockStmt(l)) = ctx.statement else {
        return vec![];
    };
    // SHARE (5) and above conflict with ROW EXCLUSIVE: every write waits.
    if l.mode < 5 {
        return vec![];
    }
    let tables = existing_tables(ctx, &l.relations);
    if tables.is_empty() {
        return vec![];
    }
    vec![Hit {
        message: format!(
            "LOCK TABLE {} IN {} MODE blocks {} until the transaction ends",
            tables.join(", "),
            MODES.get(l.mode as usize).unwrap_or(&"?"),
            if l.mode >= 7 { "every read and write" } else { "every write" }
        ),
        suggestion: "let each statement take the lock it needs under lock_timeout (pgshift apply retries it), or use NOWAIT \
                     in a short transaction"
            .into(),
    }]
}
