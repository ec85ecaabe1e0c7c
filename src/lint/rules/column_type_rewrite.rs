//! `ALTER COLUMN … TYPE` rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock,
//! unless Postgres only changes its catalog (which an offline lint cannot know: it depends
//! on the column's current type). `pgshift apply` runs either kind online.

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
                        "changing the type of {table}.{column_name} to {data_type} rewrites the table under an ACCESS EXCLUSIVE lock \
                         (unless Postgres only changes its catalog, as for varchar(n) → text)"
                    ),
                    suggestion: if widening {
                        "pgshift apply converts integer keys to bigint online (shadow column, backfill, millisecond cutover)".into()
                    } else {
                        "in a migration file of its own, pgshift apply runs it online: a copy with the new type swapped in at \
                         cutover, or the plain ALTER under lock_timeout when Postgres changes only its catalog (varchar(n) → text). \
                         It refuses a primary-key column, a column a view uses, and a foreign key whose other side keeps its type; \
                         without a cast back, rollback after cutover needs `-- pgshift:down USING <expression>` (`pgshift plan` says which)"
                            .into()
                    },
                })
            }
            _ => None,
        })
        .collect()
}
