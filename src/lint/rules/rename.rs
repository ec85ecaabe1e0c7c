//! Renaming a column or table breaks running application code that uses the old name.

use pg_query::protobuf::ObjectType;
use pg_query::NodeEnum;

use super::{object_kind, relation, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "rename",
    severity: Severity::Error,
    summary: "RENAME of a table, view or column (breaks the running application)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::RenameStmt(r)) = ctx.statement else {
        return vec![];
    };
    let table = relation(r.relation.as_ref());
    if ctx.is_new_table(&table) {
        return vec![];
    }
    let t = r.rename_type;
    if t == ObjectType::ObjectColumn as i32 {
        vec![Hit {
            message: format!("renaming {table}.{} to {} breaks code that uses the old name", r.subname, r.newname),
            suggestion: "expand/contract: add the new column, write both (a trigger), backfill, switch readers, then drop the old one".into(),
        }]
    } else if [
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
    ]
    .iter()
    .any(|k| *k as i32 == t)
    {
        vec![Hit {
            message: format!("renaming {} {table} to {} breaks code that uses the old name", object_kind(t), r.newname),
            suggestion: "rename, and create a view with the old name (simple views are updatable) until no code uses it".into(),
        }]
    } else {
        vec![]
    }
}
