//! A foreign key or check added without `NOT VALID` scans the table under a lock that blocks writes.

use sqlparser::ast::{AlterTableOperation, TableConstraint};

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "constraint-without-not-valid",
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
            AlterTableOperation::AddConstraint { constraint, not_valid: false } => {
                let kind = match constraint {
                    TableConstraint::ForeignKey(_) => "foreign key",
                    TableConstraint::Check(_) => "check constraint",
                    _ => return None,
                };
                Some(Hit {
                    message: format!("adding a {kind} to {table} validates every row while blocking writes"),
                    suggestion: "ADD CONSTRAINT … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT … (does not block writes)".into(),
                })
            }
            _ => None,
        })
        .collect()
}
