//! A foreign key or check added without `NOT VALID` scans the table under a lock that blocks
//! writes; so does a REFERENCES on a new column of an existing table (both tables are locked),
//! and a domain constraint (every column of the domain is checked).

use pg_query::protobuf::{AlterTableType, ConstrType};
use pg_query::NodeEnum;

use super::{
    column_constraints, dotted, is, kind, new_columns, relation, Context, Hit, Rule, Severity,
};

pub const RULE: Rule = Rule {
    name: "constraint-without-not-valid",
    severity: Severity::Error,
    summary: "FOREIGN KEY / CHECK / domain constraint added without NOT VALID, inline REFERENCES on an existing table",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    let mut hits = Vec::new();
    if let Some(NodeEnum::AlterDomainStmt(d)) = ctx.statement {
        if d.subtype == "C" {
            if let Some(NodeEnum::Constraint(c)) = d.def.as_ref().and_then(|n| n.node.as_ref()) {
                if !c.skip_validation {
                    hits.push(Hit {
                        message: format!(
                            "adding a constraint to domain {} checks every column of that type while locking their tables",
                            dotted(&d.type_name)
                        ),
                        suggestion: "ALTER DOMAIN … ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT".into(),
                    });
                }
            }
        }
    }
    if let Some((table, cmds)) = ctx.alter_existing() {
        for c in cmds
            .iter()
            .filter(|c| is(c, AlterTableType::AtAddConstraint))
        {
            let Some(NodeEnum::Constraint(k)) = c.def.as_ref().and_then(|d| d.node.as_ref()) else {
                continue;
            };
            let what = if kind(k, ConstrType::ConstrForeign) {
                format!("foreign key (referencing {})", relation(k.pktable.as_ref()))
            } else if kind(k, ConstrType::ConstrCheck) {
                "check constraint".into()
            } else {
                continue;
            };
            if !k.skip_validation {
                hits.push(Hit {
                    message: format!("adding a {what} to {table} validates every row while blocking writes"),
                    suggestion: "ADD CONSTRAINT … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT … (does not block writes)".into(),
                });
            }
        }
    }
    for (table, cd, existing) in new_columns(ctx) {
        if !existing {
            continue;
        }
        for k in column_constraints(cd).filter(|k| kind(k, ConstrType::ConstrForeign)) {
            hits.push(Hit {
                message: format!(
                    "ADD COLUMN {} REFERENCES {} adds a validated foreign key: it locks {table} and {} against writes",
                    cd.colname,
                    relation(k.pktable.as_ref()),
                    relation(k.pktable.as_ref())
                ),
                suggestion: "add the column without REFERENCES, then ADD CONSTRAINT … FOREIGN KEY … NOT VALID and VALIDATE CONSTRAINT".into(),
            });
        }
    }
    hits
}
