//! Adding a UNIQUE, PRIMARY KEY or EXCLUDE constraint builds its index under a lock that blocks writes.

use pg_query::protobuf::{AlterTableType, ConstrType};
use pg_query::NodeEnum;

use super::{is, kind, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "unique-constraint-lock",
    severity: Severity::Error,
    summary: "ADD UNIQUE / PRIMARY KEY / EXCLUDE that builds its index under the table's lock",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some((table, cmds)) = ctx.alter_existing() else {
        return vec![];
    };
    cmds.iter()
        .filter(|c| is(c, AlterTableType::AtAddConstraint))
        .filter_map(|c| match c.def.as_ref().and_then(|d| d.node.as_ref()) {
            Some(NodeEnum::Constraint(k)) if k.indexname.is_empty() => {
                if kind(k, ConstrType::ConstrExclusion) {
                    Some(Hit {
                        message: format!("adding an exclusion constraint to {table} builds its index while blocking reads and writes"),
                        suggestion: "no online form exists: build it on a new table and swap, or in a maintenance window".into(),
                    })
                } else if kind(k, ConstrType::ConstrUnique) || kind(k, ConstrType::ConstrPrimary) {
                    Some(Hit {
                        message: format!("adding a unique or primary key constraint to {table} builds its index while blocking writes"),
                        suggestion: "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX (or PRIMARY KEY USING INDEX)".into(),
                    })
                } else {
                    None
                }
            }
            _ => None,
        })
        .collect()
}
