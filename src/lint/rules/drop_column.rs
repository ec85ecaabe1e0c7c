//! Dropping a column breaks application code that still reads or writes it.

use sqlparser::ast::AlterTableOperation;

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "drop-column",
    severity: Severity::Warning,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, ops)) = alter_ops(ctx) else {
        return vec![];
    };
    ops.iter()
        .filter_map(|op| match op {
            AlterTableOperation::DropColumn { column_names, .. } => Some(Hit {
                message: format!(
                    "dropping {} from {table} breaks application code still using it",
                    column_names.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                ),
                suggestion: "deploy code that no longer uses the column first, then drop it in a later migration".into(),
            }),
            _ => None,
        })
        .collect()
}
