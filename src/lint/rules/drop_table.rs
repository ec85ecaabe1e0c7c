//! `DROP TABLE` is irreversible: the data is gone.

use sqlparser::ast::{ObjectType, Statement};

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "drop-table",
    severity: Severity::Error,
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(Statement::Drop {
        object_type: ObjectType::Table,
        names,
        ..
    }) = ctx.statement
    else {
        return vec![];
    };
    vec![Hit {
        message: format!(
            "DROP TABLE {} deletes its data irreversibly",
            names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        suggestion:
            "rename it aside (or move it to an archive schema) and drop it later, after a backup"
                .into(),
    }]
}
