//! Sessions that would make a cutover wait: long transactions, autovacuum.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{Error, Result};

#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockingSession {
    pub pid: i32,
    pub age_seconds: f64,
    pub state: String,
    pub query: String,
}

impl std::fmt::Display for BlockingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, transaction open {:.0} s): {}",
            self.pid, self.state, self.age_seconds, self.query
        )
    }
}

/// Transactions older than `older_than` that hold a lock on one of `tables`
/// (qualified names): the cutover's ACCESS EXCLUSIVE lock would wait for them.
pub async fn long_transactions(
    client: &Client,
    tables: &[String],
    older_than: Duration,
) -> Result<Vec<BlockingSession>> {
    let secs = older_than.as_secs_f64();
    let rows = client
        .query(
            "SELECT a.pid, EXTRACT(EPOCH FROM now() - a.xact_start)::float8, COALESCE(a.state, ''),
                    left(regexp_replace(COALESCE(a.query, ''), '\\s+', ' ', 'g'), 200)
             FROM pg_stat_activity a
             WHERE a.pid <> pg_backend_pid() AND a.xact_start < now() - make_interval(secs => $1)
               AND EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.pid = a.pid AND l.granted
                             AND l.relation = ANY (SELECT to_regclass(t)::oid FROM unnest($2::text[]) t))
             ORDER BY a.xact_start",
            &[&secs, &tables],
        )
        .await
        .map_err(Error::db("could not look for long transactions"))?;
    Ok(rows
        .iter()
        .map(|r| BlockingSession {
            pid: r.get(0),
            age_seconds: r.get(1),
            state: r.get(2),
            query: r.get(3),
        })
        .collect())
}

/// Cancels autovacuum workers that hold a lock on one of `tables`, except
/// anti-wraparound ones, and returns their pids. A lock request that waits
/// for autovacuum makes the application queue behind it until the server
/// cancels the worker after `deadlock_timeout` (1 s by default): cancelling
/// first keeps that wait out of the cutover. Autovacuum comes back on its
/// own; on a server where we may not signal it, this does nothing.
pub async fn cancel_autovacuum(client: &Client, tables: &[String]) -> Vec<i32> {
    let rows = client
        .query(
            // Materialized first: in one WHERE the planner may order the
            // quals so that pg_cancel_backend runs on other sessions too.
            "WITH workers AS MATERIALIZED (
                 SELECT a.pid FROM pg_stat_activity a
                 WHERE a.backend_type = 'autovacuum worker'
                   AND a.query NOT LIKE '%(to prevent wraparound)%'
                   AND EXISTS (SELECT 1 FROM pg_locks l
                               WHERE l.pid = a.pid
                                 AND l.relation = ANY (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)))
             SELECT pid FROM workers WHERE pg_cancel_backend(pid)",
            &[&tables],
        )
        .await;
    match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            tracing::debug!("could not cancel autovacuum: {e}");
            Vec::new()
        }
    }
}
