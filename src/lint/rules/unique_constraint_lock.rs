//! Adding a UNIQUE or PRIMARY KEY constraint builds its index under a lock that blocks writes.

use sqlparser::ast::{AlterTableOperation, TableConstraint};

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "unique-constraint-lock",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, ops)) = alter_ops(ctx) else {
        return vec![];
    };
    if ctx.is_new_table(table) || ctx.text.to_lowercase().contains("using index") {
        return vec![];
    }
    ops.iter()
        .filter_map(|op| match op {
            AlterTableOperation::AddConstraint { constraint: TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_), .. } => {
                Some(Hit {
                    message: format!("adding a unique or primary key constraint to {table} builds its index while blocking writes"),
                    suggestion: "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX (or PRIMARY KEY USING INDEX)".into(),
                })
            }
            _ => None,
        })
        .collect()
}
