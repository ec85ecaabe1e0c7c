//! Guards that keep pgshift from hurting the database: a connection budget
//! it never exceeds, replica-lag, replication-slot and headroom checks that
//! pause the backfill, and a look for what would hold up the cutover: long
//! transactions (named) and autovacuum (cancelled).

mod blockers;
mod budget;
mod commit;
mod lag;
mod slots;
pub mod watch;

pub use blockers::{cancel_autovacuum, long_transactions, BlockingSession};
pub use budget::{check_budget, Headroom};
pub use commit::{
    commit_latency, flush_wal, Calm, CommitLimit, CommitPacer, CALM_SPACING, CALM_WAIT_MAX,
};
pub use lag::replica_lag;
pub use slots::slot_over;

use std::time::Duration;

/// What the guards enforce, from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections pgshift may open to the primary, lifeline included.
    pub max_connections: u32,
    /// Free slots to leave to the application; None: max(10% of max_connections, 5).
    pub min_free_connections: Option<i64>,
    pub max_replica_lag: Duration,
    /// Slow the backfill while a probe commit takes longer; None: never.
    pub max_commit_latency: Option<CommitLimit>,
    /// Flush the WAL this often during backfill and validation; None: never.
    pub flush_wal_every: Option<Duration>,
    /// Pause the backfill while a replication slot retains more WAL than
    /// this, in bytes; None: never.
    pub max_slot_wal_bytes: Option<i64>,
}

impl Limits {
    pub fn min_free(&self, max_connections: i64) -> i64 {
        self.min_free_connections
            .unwrap_or_else(|| ((max_connections as f64 * 0.1).ceil() as i64).max(5))
    }
}
