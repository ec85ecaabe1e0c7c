//! `CONCURRENTLY` cannot run inside a transaction block: the migration fails halfway.

use sqlparser::ast::Statement;

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "concurrently-in-transaction",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    if !ctx.in_transaction {
        return vec![];
    }
    let concurrent = match ctx.statement {
        Some(Statement::CreateIndex(ix)) => ix.concurrently,
        // DROP/REINDEX … CONCURRENTLY may not parse: look at the words.
        _ => ctx
            .text
            .split_whitespace()
            .any(|w| w.eq_ignore_ascii_case("concurrently")),
    };
    if !concurrent {
        return vec![];
    }
    vec![Hit {
        message:
            "CONCURRENTLY inside BEGIN … COMMIT fails: Postgres refuses it in a transaction block"
                .into(),
        suggestion: "move the statement out of the transaction; pgshift apply runs it on its own"
            .into(),
    }]
}
