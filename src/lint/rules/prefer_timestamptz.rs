//! `timestamp` without time zone stores wall-clock times: the same instant reads differently per session TimeZone, and DST makes some values ambiguous.

use super::{columns_of_type, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "prefer-timestamptz",
    severity: Severity::Warning,
    summary: "a new timestamp without time zone column",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    columns_of_type(
        ctx,
        |name, _| name == "timestamp",
        "it stores wall-clock times without a zone, so an instant depends on each writer's TimeZone and DST makes some values ambiguous",
        "use timestamptz (timestamp with time zone)",
    )
}
