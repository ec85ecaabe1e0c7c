//! `char(n)` pads with spaces and is no faster than text: a length limit belongs in a CHECK.

use super::{columns_of_type, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "prefer-text-over-char",
    severity: Severity::Warning,
    summary: "a new char(n) column",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    columns_of_type(
        ctx,
        |name, _| name == "bpchar",
        "char(n) pads values with spaces (which comparisons then ignore) and is no faster than text",
        "use text (with a CHECK (char_length(x) <= n) if the limit matters)",
    )
}
