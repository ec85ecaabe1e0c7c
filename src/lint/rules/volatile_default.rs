//! `ADD COLUMN … DEFAULT <volatile>` (or a serial type) rewrites the table: constant and
//! stable defaults do not, since Postgres 11.

use pg_query::protobuf::ConstrType;

use super::{calls, column_constraints, kind, new_columns, type_of, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "volatile-default",
    severity: Severity::Error,
    summary:
        "ADD COLUMN with a volatile default or a serial type (a rewrite under ACCESS EXCLUSIVE)",
    check,
};

const VOLATILE: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "nextval",
    "setseed",
    "txid_current",
];

/// Whether a default expression (SQL text) calls a volatile function.
pub fn is_volatile(expr: &str) -> bool {
    let text = expr.to_lowercase();
    VOLATILE.iter().any(|f| text.contains(&format!("{f}(")))
}

fn check(ctx: &Context) -> Vec<Hit> {
    new_columns(ctx)
        .into_iter()
        .filter(|(_, _, existing)| *existing)
        .filter_map(|(table, cd, _)| {
            let serial = type_of(cd).is_some_and(|(n, _)| n.contains("serial"));
            let volatile = column_constraints(cd)
                .filter(|k| kind(k, ConstrType::ConstrDefault))
                .filter_map(|k| k.raw_expr.as_deref())
                .flat_map(calls)
                .find(|f| VOLATILE.contains(&f.as_str()));
            let why = match (serial, volatile) {
                (true, _) => "a serial type (its DEFAULT nextval() is volatile)".to_string(),
                (_, Some(f)) => format!("the volatile default {f}()"),
                _ => return None,
            };
            Some(Hit {
                message: format!("ADD COLUMN {} with {why} rewrites {table} under an ACCESS EXCLUSIVE lock", cd.colname),
                suggestion: "add the column without a default, SET DEFAULT for new rows, and backfill old rows in batches".into(),
            })
        })
        .collect()
}
