//! `SET NOT NULL` scans the whole table under an ACCESS EXCLUSIVE lock.

use sqlparser::ast::{AlterColumnOperation, AlterTableOperation};

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "set-not-null",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, ops)) = alter_ops(ctx) else {
        return vec![];
    };
    if ctx.is_new_table(table) {
        return vec![];
    }
    ops.iter()
        .filter_map(|op| match op {
            AlterTableOperation::AlterColumn { column_name, op: AlterColumnOperation::SetNotNull } => Some(Hit {
                message: format!("SET NOT NULL on {table}.{column_name} scans the table while blocking reads and writes"),
                suggestion: format!(
                    "ADD CONSTRAINT … CHECK ({column_name} IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT; then SET NOT NULL (no scan); then drop the check"
                ),
            }),
            _ => None,
        })
        .collect()
}
