//! `serial` makes a sequence the column does not own as a constraint: grants, dumps and copies of the table go wrong; identity columns are the standard form.

use super::{columns_of_type, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "prefer-identity",
    severity: Severity::Warning,
    summary: "a new serial column (identity is the standard form)",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    columns_of_type(
        ctx,
        |name, _| name.contains("serial"),
        "serial makes a free-standing sequence with a DEFAULT nextval(): INSERTs that name the column bypass it, and grants and copies of the table miss it",
        "use GENERATED ALWAYS AS IDENTITY (on a bigint column)",
    )
}
