//! `DROP SCHEMA` / `DROP DATABASE` delete everything in them irreversibly.

use pg_query::protobuf::ObjectType;
use pg_query::NodeEnum;

use super::{dropped_names, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "drop-schema",
    severity: Severity::Error,
    summary: "DROP SCHEMA / DROP DATABASE",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let (what, names) = match ctx.statement {
        Some(NodeEnum::DropStmt(d)) if d.remove_type == ObjectType::ObjectSchema as i32 => {
            ("SCHEMA", dropped_names(d))
        }
        Some(NodeEnum::DropdbStmt(d)) => ("DATABASE", vec![d.dbname.clone()]),
        _ => return vec![],
    };
    vec![Hit {
        message: format!(
            "DROP {what} {} deletes everything in it irreversibly",
            names.join(", ")
        ),
        suggestion:
            "rename it aside and drop it later, after a backup and with someone's explicit consent"
                .into(),
    }]
}
