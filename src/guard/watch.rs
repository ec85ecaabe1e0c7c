//! The watch window after cutover: compare the workload with the minutes
//! before it, and say when to roll back.
//!
//! Statements are keyed by their normalized text, not their query id: a
//! view recreated at cutover gets a new OID, which changes the query id of
//! every statement that reads it.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Cumulative (calls, total milliseconds) per normalized statement.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(HashMap<String, (i64, f64)>);

/// Calls below this are too few to judge a mean.
const MIN_CALLS: i64 = 10;
/// Mean times closer than this (ms) are noise, whatever their ratio.
const MIN_SLOWDOWN_MS: f64 = 1.0;

pub async fn available(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass('pg_stat_statements') IS NOT NULL", &[])
        .await
        .map_err(Error::db("could not look for pg_stat_statements"))?
        .get(0))
}

pub async fn snapshot(client: &Client) -> Result<Snapshot> {
    let rows = client
        .query(
            "SELECT s.query, sum(s.calls)::int8, sum(s.total_exec_time)::float8
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
             WHERE s.query !~* '(pgshift|pg_stat|pg_catalog)' GROUP BY s.query",
            &[],
        )
        .await
        .map_err(Error::db("could not read pg_stat_statements"))?;
    Ok(Snapshot(
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect(),
    ))
}

/// What happened between two snapshots: (calls, mean ms) per statement.
pub fn window(from: &Snapshot, to: &Snapshot) -> HashMap<String, (i64, f64)> {
    to.0.iter()
        .filter_map(|(q, (calls, total))| {
            let (c0, t0) = from.0.get(q).copied().unwrap_or((0, 0.0));
            let calls = calls - c0;
            (calls > 0).then(|| (q.clone(), (calls, (total - t0) / calls as f64)))
        })
        .collect()
}

/// The worst slowdown past `ratio` between the baseline and the window after cutover.
pub fn slowdown(
    before: &HashMap<String, (i64, f64)>,
    after: &HashMap<String, (i64, f64)>,
    ratio: f64,
) -> Option<String> {
    after
        .iter()
        .filter_map(|(q, (calls, mean))| {
            let (base_calls, base_mean) = before.get(q)?;
            let slow = *calls >= MIN_CALLS
                && *base_calls >= MIN_CALLS
                && *mean > base_mean * ratio
                && mean - base_mean > MIN_SLOWDOWN_MS;
            slow.then(|| (mean / base_mean.max(1e-6), q, *mean, *base_mean))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(r, q, mean, base)| {
            format!(
                "`{}` takes {mean:.2} ms on average since cutover against {base:.3} ms before ({r:.0}×, limit {ratio}×)",
                q.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
}

/// The statement with the highest slowdown ratio (judged or not), for the report.
pub fn worst(
    before: &HashMap<String, (i64, f64)>,
    after: &HashMap<String, (i64, f64)>,
) -> Option<(f64, String)> {
    after
        .iter()
        .filter_map(|(q, (calls, mean))| {
            let (base_calls, base_mean) = before.get(q)?;
            (*calls >= MIN_CALLS && *base_calls >= MIN_CALLS)
                .then(|| (mean / base_mean.max(1e-6), q.clone()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(items: &[(&str, i64, f64)]) -> Snapshot {
        Snapshot(
            items
                .iter()
                .map(|(q, c, t)| (q.to_string(), (*c, *t)))
                .collect(),
        )
    }

    #[test]
    fn a_statement_that_got_much_slower_is_named() {
        let a = snap(&[("SELECT 1", 0, 0.0), ("SELECT v", 100, 5.0)]);
        let b = snap(&[("SELECT 1", 100, 5.0), ("SELECT v", 200, 10.0)]);
        let c = snap(&[("SELECT 1", 150, 7.5), ("SELECT v", 300, 1010.0)]);
        let before = window(&a, &b);
        let after = window(&b, &c);
        let why = slowdown(&before, &after, 3.0).unwrap();
        assert!(
            why.starts_with(
                "`SELECT v` takes 10.00 ms on average since cutover against 0.050 ms before (200×"
            ),
            "{why}"
        );
    }

    #[test]
    fn fast_statements_and_thin_samples_are_not_judged() {
        let before = HashMap::from([("q".to_string(), (100, 0.01)), ("r".to_string(), (5, 0.01))]);
        let after = HashMap::from([
            ("q".to_string(), (100, 0.5)),
            ("r".to_string(), (100, 50.0)),
        ]);
        assert_eq!(
            slowdown(&before, &after, 3.0),
            None,
            "0.5 ms is under the noise floor; r had 5 calls"
        );
    }
}
