//! `varchar(n)`: raising the limit is cheap, lowering it rewrites; a CHECK can be changed online.

use super::{columns_of_type, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "prefer-text-over-varchar",
    severity: Severity::Warning,
    summary: "a new varchar(n) column",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    columns_of_type(
        ctx,
        |name, mods| name == "varchar" && !mods.is_empty(),
        "changing its limit later takes an ACCESS EXCLUSIVE lock (and a rewrite or a full scan to lower it)",
        "use text with CHECK (char_length(x) <= n) NOT VALID: a CHECK can be replaced and validated without blocking writes",
    )
}
