//! Sessions whose open transactions would make a cutover wait.

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
