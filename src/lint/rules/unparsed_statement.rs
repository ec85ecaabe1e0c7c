//! A statement pgshift's parser does not understand is not checked by the other rules.

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "unparsed-statement",
    severity: Severity::Warning,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    if ctx.statement.is_some() {
        return vec![];
    }
    vec![Hit {
        message: "pgshift's SQL parser does not understand this statement, so no other rule checked it".into(),
        suggestion: "review it by hand; `pgshift apply --allow-unparsed` runs such statements verbatim under lock_timeout".into(),
    }]
}
