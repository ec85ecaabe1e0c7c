//! `TRUNCATE` deletes every row irreversibly, under an ACCESS EXCLUSIVE lock (and with
//! CASCADE, every table that references it).

use pg_query::NodeEnum;

use super::{existing_tables, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "truncate",
    severity: Severity::Error,
    summary: "TRUNCATE",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(NodeEnum::TruncateStmt(t)) = ctx.statement else {
        return vec![];
    };
    let tables = existing_tables(ctx, &t.relations);
    if tables.is_empty() {
        return vec![];
    }
    vec![Hit {
        message: format!(
            "TRUNCATE {} deletes every row irreversibly{}",
            tables.join(", "),
            if t.behavior == pg_query::protobuf::DropBehavior::DropCascade as i32 {
                ", and CASCADE empties every table that references it"
            } else {
                ""
            }
        ),
        suggestion: "delete in batches, or keep the data until a backup exists".into(),
    }]
}
