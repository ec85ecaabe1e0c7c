//! A statement Postgres's own parser rejects would fail when the migration runs.

use super::{Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "unparsed-statement",
    severity: Severity::Error,
    summary: "a statement Postgres's parser rejects (the migration would fail there)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let Some(error) = ctx.parse_error else {
        return vec![];
    };
    vec![Hit {
        message: format!("Postgres rejects this statement: {error}; the migration would fail here"),
        suggestion: "fix the SQL (psql meta-commands such as \\set or \\connect are not SQL and do not run in a migration)".into(),
    }]
}
