//! Structural comparison of two `EXPLAIN (FORMAT JSON)` plan trees.
//!
//! Not a text diff: index names and costs always move a little. What
//! matters is whether a relation lost its index access, a join changed
//! method, a set operation stopped being flattened (a filter now sits above
//! a subquery scan instead of inside each branch), a cast appeared on a
//! column in a condition, or the total cost grew past the allowed ratio.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What one plan contains, for comparison.
#[derive(Debug, Default)]
struct Shape {
    /// Scan node types per relation.
    scans: BTreeMap<String, BTreeSet<String>>,
    joins: Vec<String>,
    subquery_scans: Vec<String>,
    /// Nodes that are not scans but carry a Filter.
    filters_above_scans: usize,
    /// Casts applied to column references in conditions.
    casts: BTreeSet<String>,
}

const INDEX_SCANS: [&str; 3] = ["Index Scan", "Index Only Scan", "Bitmap Heap Scan"];
const JOINS: [&str; 3] = ["Nested Loop", "Hash Join", "Merge Join"];
const CONDITIONS: [&str; 6] = [
    "Index Cond",
    "Filter",
    "Recheck Cond",
    "Hash Cond",
    "Join Filter",
    "Merge Cond",
];

/// The root `Plan` object of an EXPLAIN (FORMAT JSON) result.
pub fn root(explain: &Value) -> &Value {
    explain
        .get(0)
        .and_then(|p| p.get("Plan"))
        .unwrap_or(explain)
}

pub fn total_cost(explain: &Value) -> f64 {
    root(explain)["Total Cost"].as_f64().unwrap_or(0.0)
}

fn shape(node: &Value, out: &mut Shape) {
    let kind = node["Node Type"].as_str().unwrap_or("");
    if let Some(rel) = node["Relation Name"].as_str() {
        out.scans
            .entry(rel.to_string())
            .or_default()
            .insert(kind.to_string());
    } else if node.get("Filter").is_some() && kind != "Subquery Scan" {
        out.filters_above_scans += 1;
    }
    if JOINS.contains(&kind) {
        out.joins.push(kind.to_string());
    }
    if kind == "Subquery Scan" {
        let alias = node["Alias"].as_str().unwrap_or("?").to_string();
        out.subquery_scans.push(alias);
        if node.get("Filter").is_some() {
            out.filters_above_scans += 1;
        }
    }
    for key in CONDITIONS {
        if let Some(cond) = node[key].as_str() {
            out.casts.extend(casts_on_columns(cond));
        }
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            shape(child, out);
        }
    }
}

/// `(archived_scripts.id)::bigint`-style casts of a column reference.
fn casts_on_columns(cond: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cond;
    while let Some(pos) = rest.find(")::") {
        let before = &rest[..pos];
        if let Some(open) = before.rfind('(') {
            let inner = &before[open + 1..];
            let is_column = !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '"');
            if is_column && !inner.starts_with('$') {
                let ty: String = rest[pos + 3..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ' ')
                    .collect();
                out.push(format!("({inner})::{}", ty.trim()));
            }
        }
        rest = &rest[pos + 3..];
    }
    out
}

/// Why `after` is worse than `before`; empty when it is not.
pub fn regressions(before: &Value, after: &Value, max_cost_ratio: f64) -> Vec<String> {
    let (mut b, mut a) = (Shape::default(), Shape::default());
    shape(root(before), &mut b);
    shape(root(after), &mut a);
    let mut reasons = Vec::new();
    for (rel, kinds) in &b.scans {
        let had_index = kinds.iter().any(|k| INDEX_SCANS.contains(&k.as_str()));
        if let Some(now) = a.scans.get(rel) {
            let has_index = now.iter().any(|k| INDEX_SCANS.contains(&k.as_str()));
            if had_index && !has_index && now.contains("Seq Scan") {
                reasons.push(format!("{rel}: an index scan became a sequential scan"));
            }
        }
    }
    let (mut jb, mut ja) = (b.joins.clone(), a.joins.clone());
    jb.sort();
    ja.sort();
    if jb != ja {
        reasons.push(format!(
            "join method changed: {} → {}",
            list(&b.joins),
            list(&a.joins)
        ));
    }
    if a.subquery_scans.len() > b.subquery_scans.len() {
        let new: Vec<&String> = a
            .subquery_scans
            .iter()
            .filter(|s| !b.subquery_scans.contains(s))
            .collect();
        reasons.push(format!(
            "a set operation or subquery is no longer flattened (subquery scan on {})",
            new.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if a.filters_above_scans > b.filters_above_scans {
        reasons.push("a filter is now applied above the scans instead of inside them".into());
    }
    let new_casts: Vec<&String> = a.casts.difference(&b.casts).collect();
    if !new_casts.is_empty() {
        reasons.push(format!(
            "a cast on a column appeared in a condition, which stops index use: {}",
            new_casts
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (cb, ca) = (total_cost(before), total_cost(after));
    if cb > 0.0 && ca / cb > max_cost_ratio {
        reasons.push(format!(
            "total cost rose {:.1}× ({cb:.2} → {ca:.2}), above --max-cost-ratio {max_cost_ratio}",
            ca / cb
        ));
    }
    reasons
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The plan as indented text lines, like EXPLAIN's text format.
pub fn render(explain: &Value) -> Vec<String> {
    let mut out = Vec::new();
    render_node(root(explain), 0, &mut out);
    out
}

fn render_node(node: &Value, depth: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let arrow = if depth == 0 { "" } else { "-> " };
    let mut line = format!("{pad}{arrow}{}", node["Node Type"].as_str().unwrap_or("?"));
    if let Some(index) = node["Index Name"].as_str() {
        line.push_str(&format!(" using {index}"));
    }
    if let Some(rel) = node["Relation Name"].as_str() {
        line.push_str(&format!(" on {rel}"));
        if let Some(alias) = node["Alias"].as_str().filter(|a| *a != rel) {
            line.push_str(&format!(" {alias}"));
        }
    } else if let Some(alias) = node["Alias"].as_str() {
        line.push_str(&format!(" on {alias}"));
    }
    line.push_str(&format!(
        " (cost={:.2}..{:.2} rows={})",
        node["Startup Cost"].as_f64().unwrap_or(0.0),
        node["Total Cost"].as_f64().unwrap_or(0.0),
        node["Plan Rows"].as_i64().unwrap_or(0)
    ));
    out.push(line);
    for key in CONDITIONS {
        if let Some(cond) = node[key].as_str() {
            out.push(format!("{pad}     {key}: {cond}"));
        }
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            render_node(child, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(kind: &str, rel: &str, cond: Option<&str>) -> Value {
        let mut v = json!({"Node Type": kind, "Relation Name": rel, "Alias": rel, "Startup Cost": 0.0, "Total Cost": 8.0, "Plan Rows": 1});
        if let Some(c) = cond {
            let key = if kind == "Seq Scan" {
                "Filter"
            } else {
                "Index Cond"
            };
            v[key] = json!(c);
        }
        v
    }

    fn explain(plan: Value) -> Value {
        json!([{ "Plan": plan }])
    }

    #[test]
    fn the_union_view_regression_is_flagged_for_every_reason() {
        let before = explain(json!({"Node Type": "Append", "Total Cost": 16.6, "Plans": [
            scan("Index Scan", "scripts", Some("(id = $1)")),
            scan("Index Scan", "archived_scripts", Some("(id = $1)")),
        ]}));
        let after = explain(
            json!({"Node Type": "Subquery Scan", "Alias": "all_scripts", "Filter": "(all_scripts.id = $1)", "Total Cost": 2400.0, "Plans": [
                {"Node Type": "Append", "Total Cost": 2000.0, "Plans": [
                    scan("Seq Scan", "scripts", None),
                    scan("Seq Scan", "archived_scripts", Some("((archived_scripts.id)::bigint = $1)")),
                ]}
            ]}),
        );
        let reasons = regressions(&before, &after, 2.0);
        let text = reasons.join("\n");
        assert!(
            text.contains("archived_scripts: an index scan became a sequential scan"),
            "{text}"
        );
        assert!(
            text.contains("scripts: an index scan became a sequential scan"),
            "{text}"
        );
        assert!(
            text.contains("no longer flattened (subquery scan on all_scripts)"),
            "{text}"
        );
        assert!(text.contains("(archived_scripts.id)::bigint"), "{text}");
        assert!(text.contains("total cost rose"), "{text}");
    }

    #[test]
    fn an_index_scan_on_another_index_of_the_same_table_is_not_a_regression() {
        let before = explain(scan("Index Scan", "scripts", Some("(id = $1)")));
        let after = explain(scan("Index Scan", "scripts", Some("(pgshift_new_id = $1)")));
        assert!(regressions(&before, &after, 2.0).is_empty());
    }

    #[test]
    fn join_method_changes_are_flagged() {
        let join = |kind: &str| {
            explain(json!({"Node Type": kind, "Total Cost": 10.0, "Plans": [
            scan("Index Scan", "scripts", None), scan("Index Scan", "script_runs", None)]}))
        };
        let reasons = regressions(&join("Nested Loop"), &join("Hash Join"), 2.0);
        assert_eq!(
            reasons,
            vec!["join method changed: Nested Loop → Hash Join"]
        );
    }

    #[test]
    fn renders_like_explain_text() {
        let lines = render(&explain(
            json!({"Node Type": "Append", "Total Cost": 16.0, "Startup Cost": 0.0, "Plan Rows": 2, "Plans": [
                {"Node Type": "Index Scan", "Index Name": "scripts_pkey", "Relation Name": "scripts", "Alias": "scripts", "Index Cond": "(id = $1)", "Total Cost": 8.0, "Startup Cost": 0.29, "Plan Rows": 1}
            ]}),
        ));
        assert_eq!(
            lines,
            vec![
                "Append (cost=0.00..16.00 rows=2)",
                "  -> Index Scan using scripts_pkey on scripts (cost=0.29..8.00 rows=1)",
                "       Index Cond: (id = $1)",
            ]
        );
    }
}
