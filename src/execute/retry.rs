//! Running DDL without letting a lock queue form behind it.
//!
//! A DDL statement that waits for a lock makes every later query on the
//! table wait behind it, even plain SELECTs: a short `lock_timeout` bounds
//! that queue, and we retry later, with exponential backoff and jitter so
//! that retries never line up with the application's own rhythm. Only
//! `lock_not_available` and `deadlock_detected` are retried: other errors
//! are real.

use std::time::Duration;

use rand::Rng;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::events::Events;

#[derive(Debug, Clone)]
pub struct LockPolicy {
    pub lock_timeout: Duration,
    pub retries: u32,
}

impl LockPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let base = 200u64.saturating_mul(1 << attempt.min(6));
        let capped = base.min(10_000);
        let jitter = rand::rng().random_range(0..=capped / 2);
        Duration::from_millis(capped / 2 + jitter)
    }
}

/// A lock we did not get: a timeout, or a deadlock the server resolved by
/// cancelling us (our short deadlock_timeout makes us the one it cancels,
/// not the application). Both leave nothing changed and are worth a retry.
fn is_lock_not_granted(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

/// Runs `sql` (one or more statements) under the lock policy.
pub async fn ddl(
    client: &Client,
    sql: &str,
    policy: &LockPolicy,
    what: &str,
    events: Option<&Events>,
) -> Result<()> {
    let ms = policy.lock_timeout.as_millis();
    let mut attempt = 0;
    loop {
        let result = async {
            client
                .batch_execute(&format!("SET lock_timeout = {ms}"))
                .await?;
            client.batch_execute(sql).await
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if is_lock_not_granted(&e) && attempt < policy.retries => {
                attempt += 1;
                let wait = policy.backoff(attempt);
                tracing::warn!("{what}: lock not granted within {ms} ms; retry {attempt}/{} in {wait:?}", policy.retries);
                if let Some(ev) = events {
                    ev.emit("retry", serde_json::json!({"step": what, "attempt": attempt, "wait_ms": wait.as_millis() as u64}));
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) if is_lock_not_granted(&e) => {
                return Err(Error::Refused(format!(
                    "{what}: could not get its lock within {ms} ms after {} retries; something holds a conflicting lock (see pg_locks); nothing was changed by this step",
                    policy.retries
                )))
            }
            Err(e) => return Err(Error::db(format!("{what} failed"))(e)),
        }
    }
}

/// How long a successful transaction took: until COMMIT was sent (its locks
/// were held all that time, plus the commit's WAL flush), and until COMMIT
/// returned. Postgres releases the locks before it unlinks the files of
/// relations the transaction dropped, so most of the difference is time the
/// application does not wait for.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Until BEGIN and the first statement returned: for a transaction
    /// that starts with its LOCK, the wait for the locks.
    pub locked: Duration,
    pub statements: Duration,
    pub total: Duration,
}

/// Runs `statements` in one transaction under the lock policy, retried whole.
pub async fn transaction(
    client: &Client,
    statements: &[String],
    policy: &LockPolicy,
    what: &str,
    events: Option<&Events>,
) -> Result<Held> {
    let ms = policy.lock_timeout.as_millis();
    let mut attempt = 0;
    loop {
        let started = std::time::Instant::now();
        let result = async {
            client
                .batch_execute(&format!("BEGIN; SET LOCAL lock_timeout = {ms}"))
                .await?;
            let mut locked = None;
            for s in statements {
                client.batch_execute(s).await?;
                locked.get_or_insert_with(|| started.elapsed());
            }
            let statements = started.elapsed();
            client.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>((locked.unwrap_or(statements), statements))
        }
        .await;
        match result {
            Ok((locked, statements)) => {
                return Ok(Held {
                    locked,
                    statements,
                    total: started.elapsed(),
                })
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                if is_lock_not_granted(&e) && attempt < policy.retries {
                    attempt += 1;
                    let wait = policy.backoff(attempt);
                    tracing::warn!(
                        "{what}: locks not granted within {ms} ms; retry {attempt}/{} in {wait:?}",
                        policy.retries
                    );
                    if let Some(ev) = events {
                        ev.emit("retry", serde_json::json!({"step": what, "attempt": attempt, "wait_ms": wait.as_millis() as u64}));
                    }
                    tokio::time::sleep(wait).await;
                } else if is_lock_not_granted(&e) {
                    return Err(Error::Refused(format!(
                        "{what}: could not get its locks within {ms} ms after {} retries; a long transaction may hold them (see pg_stat_activity); nothing was changed",
                        policy.retries
                    )));
                } else {
                    return Err(Error::db(format!("{what} failed and was rolled back"))(e));
                }
            }
        }
    }
}
