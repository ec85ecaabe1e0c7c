//! `json` keeps the text as written: no equality operator (DISTINCT, UNION, GROUP BY fail), no GIN index, reparsed on every access.

use super::{columns_of_type, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "prefer-jsonb",
    severity: Severity::Warning,
    summary: "a new json column (jsonb has equality and GIN indexes)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    columns_of_type(
        ctx,
        |name, _| name == "json",
        "it has no equality operator (DISTINCT, UNION and GROUP BY on it fail) and no GIN index, and every access parses it again",
        "use jsonb",
    )
}
