//! Dropping a column breaks application code that still reads or writes it.

use pg_query::protobuf::AlterTableType;

use super::{alter_table, is, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "drop-column",
    severity: Severity::Error,
    summary: "DROP COLUMN (breaks the running application; the data is gone)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, cmds)) = ctx.statement.and_then(alter_table) else {
        return vec![];
    };
    if ctx.is_new_table(&table) {
        return vec![];
    }
    cmds.iter()
        .filter(|c| is(c, AlterTableType::AtDropColumn))
        .map(|c| Hit {
            message: format!("dropping {table}.{} breaks application code still using it, and its data is gone", c.name),
            suggestion: "expand/contract: deploy code that no longer reads or writes the column (ignore it in the ORM), \
                         then drop it in a later migration"
                .into(),
        })
        .collect()
}
