//! `DROP TABLE` is irreversible: the data is gone, and code still using it breaks.

use pg_query::protobuf::ObjectType;
use pg_query::NodeEnum;

use super::{dropped_names, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "drop-table",
    severity: Severity::Error,
    summary: "DROP TABLE",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::DropStmt(d)) = ctx.statement else {
        return vec![];
    };
    if d.remove_type != ObjectType::ObjectTable as i32 {
        return vec![];
    }
    let names: Vec<String> = dropped_names(d)
        .into_iter()
        .filter(|n| !ctx.is_new_table(n))
        .collect();
    if names.is_empty() {
        return vec![];
    }
    vec![Hit {
        message: format!("DROP TABLE {} deletes its data irreversibly and breaks code still using it", names.join(", ")),
        suggestion: "rename it aside (or move it to an archive schema) once no code uses it, and drop it later, after a backup".into(),
    }]
}
