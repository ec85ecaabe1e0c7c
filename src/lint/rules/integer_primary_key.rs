//! A new `integer`/`serial` primary key runs out at 2^31 − 1; widening it later is a migration.

use sqlparser::ast::{ColumnOption, DataType, Statement, TableConstraint};

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "integer-primary-key",
    severity: Severity::Warning,
    check,
};

fn small(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int(_)
            | DataType::Integer(_)
            | DataType::Int4(_)
            | DataType::SmallInt(_)
            | DataType::Int2(_)
    ) || matches!(t, DataType::Custom(name, _) if ["serial", "serial4", "smallserial", "serial2"].contains(&name.to_string().to_lowercase().as_str()))
}

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(Statement::CreateTable(ct)) = ctx.statement else {
        return vec![];
    };
    let mut pk_cols: Vec<String> = ct
        .columns
        .iter()
        .filter(|c| {
            c.options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        })
        .map(|c| c.name.value.to_lowercase())
        .collect();
    for tc in &ct.constraints {
        if let TableConstraint::PrimaryKey(pk) = tc {
            pk_cols.extend(
                pk.columns
                    .iter()
                    .map(|c| c.to_string().trim_matches('"').to_lowercase()),
            );
        }
    }
    ct.columns
        .iter()
        .filter(|c| pk_cols.contains(&c.name.value.to_lowercase()) && small(&c.data_type))
        .map(|c| Hit {
            message: format!(
                "{}.{} is a {} primary key: it runs out at 2^31 − 1 (or 2^15 − 1)",
                ct.name, c.name, c.data_type
            ),
            suggestion: "use bigint (bigserial, or bigint GENERATED ALWAYS AS IDENTITY)".into(),
        })
        .collect()
}
