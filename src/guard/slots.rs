//! WAL held back by replication slots, so the backfill never fills pg_wal
//! for a consumer that is slow or gone.

use tokio_postgres::Client;

use crate::catalog::replication_slots;
use crate::error::Result;
use crate::names::{literal, quote};

/// Why the backfill should wait for a slot: the first that retains more
/// than `limit` bytes, named, with what ends the wait.
pub async fn slot_over(client: &Client, limit: i64) -> Result<Option<String>> {
    let slots = replication_slots(client).await?;
    Ok(slots.iter().find(|s| s.retained_bytes > limit).map(|s| {
        format!(
            "replication slot {} ({}, {}) retains {} MB of WAL, over {} MB (--max-slot-wal-mb): {}",
            quote(&s.name),
            s.kind,
            if s.active {
                "consumer connected"
            } else {
                "no consumer connected"
            },
            s.retained_bytes >> 20,
            limit >> 20,
            if s.active {
                "waiting for its consumer to catch up".to_string()
            } else {
                format!(
                    "waiting for its consumer to come back; if it is gone for good, \
                     SELECT pg_drop_replication_slot({});",
                    literal(&s.name)
                )
            }
        )
    }))
}
