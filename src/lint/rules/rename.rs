//! Renaming a column or table breaks running application code that uses the old name.

use sqlparser::ast::AlterTableOperation;

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "rename",
    severity: Severity::Warning,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, ops)) = alter_ops(ctx) else {
        return vec![];
    };
    ops.iter()
        .filter_map(|op| match op {
            AlterTableOperation::RenameColumn { old_column_name, new_column_name } => Some(Hit {
                message: format!("renaming {table}.{old_column_name} to {new_column_name} breaks code that uses the old name"),
                suggestion: "add the new column, write both, switch readers, then drop the old one".into(),
            }),
            AlterTableOperation::RenameTable { .. } => Some(Hit {
                message: format!("renaming table {table} breaks code that uses the old name"),
                suggestion: "rename, then create a view with the old name until the code is deployed".into(),
            }),
            _ => None,
        })
        .collect()
}
