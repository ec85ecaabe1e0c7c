//! A new `integer`/`smallint` column that references another table: if the key it references
//! is bigint (or becomes one), the two sides differ; if it is integer, both run out together.

use pg_query::protobuf::ConstrType;
use pg_query::NodeEnum;

use super::{
    column_constraints, display_type, is_small_integer, kind, new_columns, relation, type_of,
    Context, Hit, Rule, Severity,
};

pub const RULE: Rule = Rule {
    name: "integer-foreign-key",
    severity: Severity::Warning,
    summary: "a new integer or smallint column that references a key",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let columns = new_columns(ctx);
    // Columns named by a table-level FOREIGN KEY of a new table.
    let mut referencing: Vec<(String, String)> = Vec::new();
    if let Some(NodeEnum::CreateStmt(c)) = ctx.statement {
        for e in &c.table_elts {
            if let Some(NodeEnum::Constraint(k)) = e.node.as_ref() {
                if kind(k, ConstrType::ConstrForeign) {
                    for a in &k.fk_attrs {
                        if let Some(NodeEnum::String(s)) = a.node.as_ref() {
                            referencing.push((s.sval.clone(), relation(k.pktable.as_ref())));
                        }
                    }
                }
            }
        }
    }
    columns
        .into_iter()
        .filter_map(|(table, cd, _)| {
            let (name, mods) = type_of(cd)?;
            if !is_small_integer(&name) {
                return None;
            }
            let target = column_constraints(cd)
                .find(|k| kind(k, ConstrType::ConstrForeign))
                .map(|k| relation(k.pktable.as_ref()))
                .or_else(|| referencing.iter().find(|(c, _)| *c == cd.colname).map(|(_, t)| t.clone()))?;
            Some(Hit {
                message: format!(
                    "{table}.{} is {} and references {target}: a bigint key on the other side does not fit in it, \
                     and mixed key types stop Postgres from pushing `WHERE id = …` into a UNION's branches",
                    cd.colname,
                    display_type(&name, &mods)
                ),
                suggestion: "make foreign-key columns bigint, like the keys they reference should be".into(),
            })
        })
        .collect()
}
