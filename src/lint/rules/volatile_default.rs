//! `ADD COLUMN … DEFAULT <volatile>` rewrites the table (constant and stable defaults do not, since Postgres 11).

use sqlparser::ast::{AlterTableOperation, ColumnOption, Expr};

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "volatile-default",
    severity: Severity::Error,
    check,
};

const VOLATILE: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "nextval",
    "setseed",
];

/// Whether a default expression calls a volatile function (and so rewrites
/// the table when added with its column).
pub fn is_volatile(expr: &str) -> bool {
    let text = expr.to_lowercase();
    VOLATILE.iter().any(|f| text.contains(&format!("{f}(")))
}

fn volatile(e: &Expr) -> bool {
    is_volatile(&e.to_string())
}

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, ops)) = alter_ops(ctx) else {
        return vec![];
    };
    if ctx.is_new_table(table) {
        return vec![];
    }
    ops.iter()
        .filter_map(|op| match op {
            AlterTableOperation::AddColumn { column_def, .. } => column_def.options.iter().find_map(|o| match &o.option {
                ColumnOption::Default(e) if volatile(e) => Some(Hit {
                    message: format!(
                        "ADD COLUMN {} with the volatile default {e} rewrites {table} under an ACCESS EXCLUSIVE lock",
                        column_def.name
                    ),
                    suggestion: "add the column without a default, backfill it in batches, then SET DEFAULT".into(),
                }),
                _ => None,
            }),
            _ => None,
        })
        .collect()
}
