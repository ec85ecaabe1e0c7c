//! `ALTER COLUMN … TYPE` rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock.

use sqlparser::ast::{AlterColumnOperation, AlterTableOperation, DataType};

use super::{alter_ops, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "column-type-rewrite",
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
            AlterTableOperation::AlterColumn { column_name, op: AlterColumnOperation::SetDataType { data_type, .. } } => {
                let widening = matches!(data_type, DataType::BigInt(None) | DataType::Int8(None));
                Some(Hit {
                    message: format!(
                        "changing the type of {table}.{column_name} to {data_type} rewrites the table under an ACCESS EXCLUSIVE lock"
                    ),
                    suggestion: if widening {
                        "pgshift apply converts integer keys to bigint online (shadow column, backfill, millisecond cutover)".into()
                    } else {
                        "add a new column, backfill it in batches, switch the application, then drop the old one".into()
                    },
                })
            }
            _ => None,
        })
        .collect()
}
