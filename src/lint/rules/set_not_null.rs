//! `SET NOT NULL` scans the whole table under an ACCESS EXCLUSIVE lock, unless a validated
//! `CHECK (col IS NOT NULL)` already proves it.

use pg_query::protobuf::AlterTableType;

use super::{is, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "set-not-null",
    severity: Severity::Error,
    summary: "SET NOT NULL without a validated CHECK (col IS NOT NULL) before it",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, cmds)) = ctx.alter_existing() else {
        return vec![];
    };
    cmds.iter()
        .filter(|c| is(c, AlterTableType::AtSetNotNull))
        .filter(|c| !ctx.not_null_proven.iter().any(|(t, col)| *t == table && *col == c.name))
        .map(|c| Hit {
            message: format!("SET NOT NULL on {table}.{} scans the table while blocking reads and writes", c.name),
            suggestion: format!(
                "ADD CONSTRAINT … CHECK ({} IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT; then SET NOT NULL (no scan); then drop the check",
                c.name
            ),
        })
        .collect()
}
