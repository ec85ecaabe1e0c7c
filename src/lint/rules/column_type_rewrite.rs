//! `ALTER COLUMN … TYPE` rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock,
//! unless Postgres only changes its catalog (which an offline lint cannot know: it depends
//! on the column's current type). `pgshift apply` runs either kind online.

use pg_query::protobuf::AlterTableType;
use pg_query::NodeEnum;

use super::{display_type, is, type_of, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "column-type-rewrite",
    severity: Severity::Error,
    summary: "ALTER COLUMN … TYPE (a rewrite under ACCESS EXCLUSIVE; pgshift apply runs it online)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, cmds)) = ctx.alter_existing() else {
        return vec![];
    };
    cmds.iter()
        .filter(|c| is(c, AlterTableType::AtAlterColumnType))
        .filter_map(|c| {
            let Some(NodeEnum::ColumnDef(cd)) = c.def.as_ref().and_then(|d| d.node.as_ref()) else {
                return None;
            };
            let (name, mods) = type_of(cd)?;
            let widening = name == "int8";
            Some(Hit {
                message: format!(
                    "changing the type of {table}.{} to {} rewrites the table under an ACCESS EXCLUSIVE lock \
                     (unless Postgres only changes its catalog, as for varchar(n) → text)",
                    c.name,
                    display_type(&name, &mods)
                ),
                suggestion: if widening {
                    "pgshift apply converts integer keys to bigint online (shadow column, backfill, millisecond cutover)".into()
                } else {
                    "in a migration file of its own, pgshift apply runs it online: a copy with the new type swapped in at \
                     cutover, or the plain ALTER under lock_timeout when Postgres changes only its catalog (varchar(n) → text). \
                     It refuses a primary key it cannot convert both ways (several columns, a USING that reads other columns, \
                     no way back) and a foreign key whose other side keeps its type; without a cast back, \
                     rollback after cutover needs `-- pgshift:down USING <expression>` (`pgshift plan` says which)"
                        .into()
                },
            })
        })
        .collect()
}
