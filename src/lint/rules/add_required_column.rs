//! `ADD COLUMN … NOT NULL` without a default fails on a table that has rows.

use pg_query::protobuf::ConstrType;

use super::{column_constraints, kind, new_columns, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "add-required-column",
    severity: Severity::Error,
    summary: "ADD COLUMN … NOT NULL without a default (fails on a table with rows)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    new_columns(ctx)
        .into_iter()
        .filter(|(_, cd, existing)| {
            let cons: Vec<_> = column_constraints(cd).collect();
            *existing
                && (cd.is_not_null || cons.iter().any(|c| kind(c, ConstrType::ConstrNotnull)))
                && !cons.iter().any(|c| {
                    kind(c, ConstrType::ConstrDefault)
                        || kind(c, ConstrType::ConstrIdentity)
                        || kind(c, ConstrType::ConstrGenerated)
                })
        })
        .map(|(table, cd, _)| Hit {
            message: format!(
                "ADD COLUMN {} NOT NULL without a default fails on {table} as soon as it has a row",
                cd.colname
            ),
            suggestion: "add it with a constant DEFAULT (a catalog change since Postgres 11), or nullable, backfill in batches, \
                         then the NOT NULL through a validated CHECK"
                .into(),
        })
        .collect()
}
