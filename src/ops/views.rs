//! Dependent views at a swap: dropped at the start (dependents first) and
//! recreated at the end, with options, owner, grants and comment, so they
//! read the columns or tables that took the old ones' names.

use crate::names::{literal, quote};
use crate::plan::Plan;

/// Recreates the views, in dependency order, with options, owner, grants,
/// comment; materialized views are refreshed (WITH DATA) and get their indexes.
pub fn push_views(s: &mut Vec<String>, plan: &Plan) {
    for v in &plan.views {
        let with = if v.options.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", v.options.join(", "))
        };
        let kind = if v.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        s.push(format!(
            "CREATE {kind} {}{with} AS {}",
            v.qualified(),
            v.definition
        ));
        s.extend(v.indexes.iter().cloned());
        s.push(format!(
            "ALTER {kind} {} OWNER TO {}",
            v.qualified(),
            quote(&v.owner)
        ));
        s.extend(v.grants.iter().cloned());
        if let Some(comment) = &v.comment {
            s.push(format!(
                "COMMENT ON {kind} {} IS {}",
                v.qualified(),
                literal(comment)
            ));
        }
    }
}

/// Drops the views, dependents first.
pub fn drop_views(s: &mut Vec<String>, plan: &Plan) {
    for v in plan.views.iter().rev() {
        let kind = if v.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        s.push(format!("DROP {kind} {}", v.qualified()));
    }
}
