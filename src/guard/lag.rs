//! Replica replay lag, so the backfill's WAL never leaves a standby behind.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Seconds of replay lag: measured on the replica when one is given (time
/// since the last replayed transaction, 0 when it has replayed everything
/// it received), else the worst `replay_lag` the primary reports for a
/// standby that replays: `pg_receivewal` (a WAL archive such as Barman's)
/// and `pg_basebackup` report no replay position, yet show a `replay_lag`
/// of up to their status interval (10 s), and would hold the backfill.
/// Logical consumers (subscribers, CDC) are left out too: they confirm
/// when they choose (a CDC connector typically when it commits its
/// offsets), so their `replay_lag` says little about staleness, and what a
/// slow one costs is the WAL its slot retains, which the slot guard
/// watches in bytes.
///
/// A logical walsender is told apart by the database it is connected to
/// (a physical one has none): a subscription's table-sync worker drops its
/// slot before its walsender goes, and in between only that shows it.
///
/// A standby that has not replayed any transaction since it started has no
/// replay timestamp; with WAL pending, its start time bounds the lag.
pub async fn replica_lag(primary: &Client, replica: Option<&Client>) -> Result<f64> {
    let (client, sql) = match replica {
        Some(r) => (
            r,
            "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
                         ELSE EXTRACT(EPOCH FROM now() - COALESCE(pg_last_xact_replay_timestamp(), pg_postmaster_start_time())) END::float8",
        ),
        None => (
            primary,
            "SELECT COALESCE(max(EXTRACT(EPOCH FROM replay_lag)), 0)::float8 FROM pg_stat_replication r
             WHERE replay_lsn IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                               WHERE a.pid = r.pid AND a.datid IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                               WHERE s.active_pid = r.pid AND s.slot_type = 'logical')",
        ),
    };
    Ok(client
        .query_one(sql, &[])
        .await
        .map_err(Error::db("could not read replica lag"))?
        .get(0))
}
