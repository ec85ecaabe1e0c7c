//! How much WAL a migration writes, estimated from the catalog alone. The
//! backfill updates every row, so it writes several times what a blocking
//! rewrite would: replicas replay all of it, the WAL archive keeps it, and
//! past `max_wal_size` it starts checkpoints in the middle of the backfill.
//!
//! The model follows `pg_waldump --stats=record` of the backfill of the
//! incident schema (3.5M rows, 1.65 GB of WAL; the model gives 1.63 GB):
//! - every old heap page is logged whole once (its first change after the
//!   last checkpoint), when `full_page_writes` is on;
//! - every row writes its new version (`Heap/UPDATE`: the tuple and 53 bytes
//!   more) and a `Heap/LOCK` of 54 bytes, because the new version goes to
//!   another page;
//! - every row adds an entry to every index of its table (91 bytes with the
//!   page splits it causes);
//! - each index rebuilt on the new column writes about its own size;
//! - a table backfilled in two passes logs its old heap pages whole a second
//!   time when a checkpoint falls between the passes (the WAL volume starts
//!   one). An upper bound: at 10M rows two passes wrote 0.3–2.7 GB more
//!   than one, against the 2.4–3.0 GB of heap the model adds, because the
//!   second pass's HOT updates write no lock record and no index entry.
//!
//! Whole pages (the heap's first change after a checkpoint, index builds)
//! shrink by `wal_compression`, which pgshift sets for its own sessions
//! where it may (see `connection::WalCompression`).

use serde::{Deserialize, Serialize};

use crate::catalog::{ReplicationSlot, Table, WalSettings};
use crate::names::{literal, quote};

use super::TablePlan;

/// `Heap/LOCK` plus what `Heap/UPDATE` adds to the tuple, per row.
const ROW_BYTES: i64 = 107;
/// `Btree/INSERT_LEAF` plus the splits and deduplication it causes, per entry.
const INDEX_ENTRY_BYTES: i64 = 91;

/// The share of a whole page left after `method`. Measured on the
/// benchmark's tables: index pages 0.58 with lz4, 0.31 with zstd, 0.55 with
/// pglz; heap pages 0.47, 0.29, 0.45. Generated rows compress better than
/// most real ones, so these round up.
fn compressed_share(method: Option<&str>) -> f64 {
    match method {
        Some("zstd") => 0.35,
        Some("lz4" | "pglz" | "on") => 0.6,
        _ => 1.0,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WalEstimate {
    /// WAL written from the backfill through validation.
    pub bytes: i64,
    /// Of which whole pages (0 without `full_page_writes`).
    pub full_page_bytes: i64,
    /// Checkpoints that the WAL volume alone starts during the migration.
    pub checkpoints: i64,
    /// `max_wal_size` when the plan was made.
    pub max_wal_size_bytes: i64,
    /// A `max_wal_size` under which the WAL volume starts no checkpoint
    /// (0 when the current one already does not), in whole GiB.
    #[serde(default)]
    pub advised_max_wal_size_bytes: i64,
    /// Checkpoints that `checkpoint_timeout` starts anyway during the
    /// estimated backfill.
    #[serde(default)]
    pub timed_checkpoints: i64,
}

/// Headroom over the estimate in the advised `max_wal_size`: the estimate
/// is within a few percent, and the WAL written since the last checkpoint
/// counts too.
const ADVICE_HEADROOM: f64 = 1.25;

/// The estimate for `tables` (catalog entry and plan of each).
pub fn estimate(
    tables: &[(&Table, &TablePlan)],
    settings: &WalSettings,
    engine: super::Engine,
    compression: crate::connection::WalCompression,
    pace: super::Pace,
) -> WalEstimate {
    let share = compressed_share(settings.compression(compression));
    let whole = |bytes: i64| (bytes as f64 * share).round() as i64;
    let mut bytes = 0;
    let mut full_page_bytes = 0;
    let mut second_pass_pages = 0;
    for (table, plan) in tables {
        if engine == super::Engine::Copy {
            // The copy writes each heap page once (inserts into new pages)
            // and its index builds log every index page whole: about the
            // tables' size, what the blocking rewrite writes.
            let total = table.total_bytes.max(0);
            let heap = table.heap_bytes.clamp(0, total);
            let indexes = whole(total - heap);
            bytes += heap + indexes;
            if settings.full_page_writes {
                full_page_bytes += indexes;
            }
            continue;
        }
        let rows = table.estimated_rows.max(0);
        let heap = table.heap_bytes.max(0);
        if settings.full_page_writes {
            full_page_bytes += whole(heap);
            if plan.backfill_passes == 2 {
                second_pass_pages += whole(heap);
            }
        }
        let entries = rows * table.indexes.len() as i64;
        let rebuilt: i64 = plan.indexes.iter().map(|i| whole(i.bytes.max(0))).sum();
        bytes += heap + rows * ROW_BYTES + entries * INDEX_ENTRY_BYTES + rebuilt;
    }
    if engine == super::Engine::Update {
        bytes += full_page_bytes;
    }
    // Postgres starts a checkpoint once the WAL since the last one reaches
    // max_wal_size / (1 + checkpoint_completion_target).
    let distance =
        settings.max_wal_size_bytes as f64 / (1.0 + settings.checkpoint_completion_target);
    if distance > 0.0 && bytes as f64 >= distance {
        bytes += second_pass_pages;
        full_page_bytes += second_pass_pages;
    }
    let checkpoints = if distance > 0.0 {
        (bytes as f64 / distance).floor() as i64
    } else {
        0
    };
    let advised_max_wal_size_bytes = if checkpoints > 0 {
        let needed = bytes as f64 * (1.0 + settings.checkpoint_completion_target) * ADVICE_HEADROOM;
        (needed / GIB).ceil() as i64 * GIB as i64
    } else {
        0
    };
    let rows: i64 = tables.iter().map(|(t, _)| t.estimated_rows.max(0)).sum();
    let seconds = pace.backfill_secs(rows, engine);
    let timed_checkpoints = if settings.checkpoint_timeout_secs > 0 {
        (seconds / settings.checkpoint_timeout_secs as f64).floor() as i64
    } else {
        0
    };
    WalEstimate {
        bytes,
        full_page_bytes,
        checkpoints,
        max_wal_size_bytes: settings.max_wal_size_bytes,
        advised_max_wal_size_bytes,
        timed_checkpoints,
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// Checkpoints during the backfill are what most slows the application's
/// commits (the benchmark: p99 37-68 ms with one, 8.4-14.3 ms without, at
/// 1M rows): the checkpointer's writes and the whole pages logged after it
/// share the disk with every commit's WAL flush. `max_wal_size` can be
/// raised without a restart; `checkpoint_timeout` starts them anyway.
pub(super) fn checkpoint_warning(wal: &WalEstimate, settings: &WalSettings) -> Option<String> {
    let mut causes = Vec::new();
    let mut remedies = Vec::new();
    if wal.checkpoints > 0 {
        let gb = wal.advised_max_wal_size_bytes >> 30;
        causes.push(format!(
            "with max_wal_size {} MB that starts about {} checkpoint{}",
            settings.max_wal_size_bytes >> 20,
            wal.checkpoints,
            if wal.checkpoints == 1 { "" } else { "s" }
        ));
        remedies.push(format!(
            "raise max_wal_size for the migration (no restart: `ALTER SYSTEM SET max_wal_size = '{gb}GB'; \
             SELECT pg_reload_conf();`) if the disk of pg_wal has {gb} GB free, and set it back afterwards"
        ));
    }
    if wal.timed_checkpoints > 0 {
        causes.push(format!(
            "checkpoint_timeout ({} s) starts about {} during the backfill",
            settings.checkpoint_timeout_secs, wal.timed_checkpoints
        ));
        remedies.push(
            "raising checkpoint_timeout the same way keeps those out too, at the cost of a longer crash recovery"
                .to_string(),
        );
    }
    if causes.is_empty() {
        return None;
    }
    Some(format!(
        "the migration writes about {} MB of WAL: {}. A checkpoint during the backfill slows the application's commits \
         several times (its writes and the whole pages logged after it share the disk with every commit's flush): {}",
        wal.bytes >> 20,
        causes.join(", and "),
        remedies.join("; ")
    ))
}

/// A slot keeps every byte of WAL its consumer has not confirmed. The
/// migration writes several times its tables' size in WAL: a slot without a
/// consumer keeps all of it in pg_wal, and a full pg_wal disk stops the
/// server. Under `max_slot_wal_keep_size` Postgres invalidates the slot
/// instead, and its standby needs a new base backup, its subscriber a new
/// initial copy.
pub(super) fn slot_warnings(slots: &[ReplicationSlot], wal: &WalEstimate) -> Vec<String> {
    let mb = |b: i64| b >> 20;
    let mut out = Vec::new();
    for s in slots {
        let invalidated = s.safe_wal_bytes.filter(|&safe| safe < wal.bytes).map(|safe| {
            format!(
                "max_slot_wal_keep_size lets it fall only {} MB further behind, less than the migration's WAL, \
                 so Postgres would invalidate it ({})",
                mb(safe.max(0)),
                if s.kind == "logical" {
                    "its subscriber would need a new initial copy"
                } else {
                    "its standby would need a new base backup"
                }
            )
        });
        if !s.active {
            let mut w = format!(
                "replication slot {} ({}, no consumer connected) retains {} MB of WAL and would keep all that the \
                 migration writes (about {} MB) in pg_wal until its consumer is back; the backfill pauses while a \
                 slot retains more than --max-slot-wal-mb. If its consumer is gone for good: \
                 SELECT pg_drop_replication_slot({});",
                quote(&s.name),
                s.kind,
                mb(s.retained_bytes),
                mb(wal.bytes),
                literal(&s.name)
            );
            if let Some(i) = invalidated {
                w.push_str(&format!(" And {i}."));
            }
            out.push(w);
        } else if let Some(i) = invalidated {
            out.push(format!(
                "replication slot {} ({}): if its consumer cannot keep up with the backfill, {i}; \
                 --max-replica-lag and --max-slot-wal-mb pause the backfill while a consumer falls behind",
                quote(&s.name),
                s.kind
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{incident, plan};

    fn sized(settings: WalSettings) -> WalEstimate {
        let mut catalog = incident();
        for t in &mut catalog.tables {
            t.estimated_rows = 1_000_000;
            t.heap_bytes = 126_000_000;
        }
        catalog.wal = settings;
        let p = plan(&catalog, &[(1, "id")]);
        p.wal
    }

    #[test]
    fn full_pages_add_the_heap_once() {
        let on = sized(WalSettings::default());
        let off = sized(WalSettings {
            full_page_writes: false,
            ..WalSettings::default()
        });
        assert_eq!(
            on.full_page_bytes,
            off.full_page_bytes + on.bytes - off.bytes
        );
        assert!(off.full_page_bytes == 0 && on.full_page_bytes > 0);
        // Each widened table's heap, once.
        assert_eq!(on.full_page_bytes % 126_000_000, 0);
    }

    #[test]
    fn whole_pages_shrink_by_the_method_the_sessions_will_use() {
        use crate::connection::WalCompression::{Fast, Small};
        let estimate = |methods: &[&str], server: &str, choice| {
            let mut catalog = incident();
            for t in &mut catalog.tables {
                t.estimated_rows = 1_000_000;
                t.heap_bytes = 126_000_000;
            }
            catalog.wal.compression_methods = methods.iter().map(|m| m.to_string()).collect();
            catalog.wal.server_compression = server.into();
            let requests = [crate::plan::Request {
                table: 1,
                column: "id".into(),
                change: None,
            }];
            let options = crate::plan::Options {
                wal_compression: choice,
                ..Default::default()
            };
            crate::plan::build("m", "abc", &requests, &catalog, options)
                .unwrap()
                .wal
        };
        let plain = estimate(&[], "off", Small);
        let zstd = estimate(&["lz4", "zstd"], "off", Small);
        let lz4 = estimate(&["lz4", "zstd"], "off", Fast);
        // A user who may not set it gets the server's own method.
        let server = estimate(&[], "lz4", Small);
        let only_lz4 = estimate(&["lz4"], "off", Small);
        assert!(zstd.full_page_bytes < lz4.full_page_bytes);
        assert!(lz4.full_page_bytes < plain.full_page_bytes);
        assert_eq!(server, lz4);
        assert_eq!(only_lz4, lz4);
        // Only whole pages shrink: rows and index entries stay as they are.
        let saved = plain.full_page_bytes - zstd.full_page_bytes;
        assert!(plain.bytes - zstd.bytes >= saved, "{plain:?} {zstd:?}");
        assert!(zstd.bytes > plain.bytes - plain.full_page_bytes);
    }

    #[test]
    fn two_passes_log_the_heap_again_only_when_a_checkpoint_falls_between_them() {
        let mut catalog = incident();
        for t in &mut catalog.tables {
            t.estimated_rows = 4_000_000;
            t.heap_bytes = 500_000_000;
        }
        let build = |catalog: &crate::catalog::Catalog, workers: usize, two_pass_above: i64| {
            let requests = [crate::plan::Request {
                table: 1,
                column: "id".into(),
                change: None,
            }];
            let options = crate::plan::Options {
                backfill: crate::plan::BackfillShape {
                    workers,
                    two_pass_above,
                },
                ..Default::default()
            };
            crate::plan::build("m", "abc", &requests, catalog, options).unwrap()
        };
        let two = build(&catalog, 1, 3_000_000);
        let one = build(&catalog, 1, 0);
        assert!(two.tables.iter().all(|t| t.backfill_passes == 2));
        assert!(one.tables.iter().all(|t| t.backfill_passes == 1));
        // scripts and script_runs are widened: each heap once more.
        assert_eq!(two.wal.bytes - one.wal.bytes, 2 * 500_000_000);
        assert_eq!(
            two.wal.full_page_bytes - one.wal.full_page_bytes,
            2 * 500_000_000
        );
        // Two workers halve each range: under the threshold, one pass.
        let halves = build(&catalog, 2, 3_000_000);
        assert!(halves.tables.iter().all(|t| t.backfill_passes == 1));
        // Without a checkpoint during the migration, no page is logged twice.
        catalog.wal.max_wal_size_bytes = 1 << 40;
        assert_eq!(
            build(&catalog, 1, 3_000_000).wal.bytes,
            build(&catalog, 1, 0).wal.bytes
        );
    }

    #[test]
    fn the_estimate_scales_with_the_tables() {
        let mut catalog = incident();
        let small = plan(&catalog, &[(1, "id")]).wal;
        for t in &mut catalog.tables {
            t.estimated_rows *= 10;
            t.heap_bytes *= 10;
            for i in &mut t.indexes {
                i.bytes *= 10;
            }
        }
        let large = plan(&catalog, &[(1, "id")]).wal;
        assert_eq!(large.bytes, 10 * small.bytes);
        assert_eq!(large.full_page_bytes, 10 * small.full_page_bytes);
    }

    #[test]
    fn every_index_of_the_table_takes_an_entry_per_row() {
        let mut catalog = incident();
        let before = plan(&catalog, &[(1, "id")]).wal.bytes;
        let scripts = catalog.tables.iter_mut().find(|t| t.oid == 1).unwrap();
        // An index on another column: not rebuilt, but the backfill's
        // updates still add to it.
        let mut by_name = scripts.indexes[0].clone();
        by_name.oid = 12;
        by_name.name = "scripts_name_idx".into();
        by_name.is_primary = false;
        by_name.is_unique = false;
        by_name.constraint = None;
        by_name.columns = vec![2];
        scripts.indexes.push(by_name);
        let rows = scripts.estimated_rows;
        let after = plan(&catalog, &[(1, "id")]).wal.bytes;
        assert_eq!(after - before, rows * INDEX_ENTRY_BYTES);
    }

    #[test]
    fn checkpoints_follow_max_wal_size_and_the_completion_target() {
        let settings = WalSettings {
            full_page_writes: true,
            max_wal_size_bytes: 1 << 30,
            checkpoint_completion_target: 0.9,
            ..WalSettings::default()
        };
        let e = sized(settings.clone());
        let distance = (1u64 << 30) as f64 / 1.9;
        assert_eq!(e.checkpoints, (e.bytes as f64 / distance) as i64);
        assert!(e.checkpoints >= 1);
        let level = sized(WalSettings {
            max_wal_size_bytes: e.bytes,
            ..settings
        });
        assert_eq!(
            level.checkpoints, 1,
            "one checkpoint every 1/1.9 of the WAL"
        );
        let huge = sized(WalSettings {
            max_wal_size_bytes: e.bytes * 4,
            ..WalSettings::default()
        });
        assert_eq!(huge.checkpoints, 0);
    }

    #[test]
    fn the_advised_max_wal_size_holds_the_whole_migration_with_headroom() {
        let small = sized(WalSettings {
            max_wal_size_bytes: 64 << 20,
            ..WalSettings::default()
        });
        assert!(small.checkpoints >= 1);
        let advised = small.advised_max_wal_size_bytes;
        assert_eq!(advised % (1 << 30), 0, "whole GiB: {advised}");
        // Under the advice, the same migration starts no checkpoint.
        let under = sized(WalSettings {
            max_wal_size_bytes: advised,
            ..WalSettings::default()
        });
        assert_eq!(under.checkpoints, 0);
        assert_eq!(
            under.advised_max_wal_size_bytes, 0,
            "no advice when none is needed"
        );
        // With headroom: the WAL since the last checkpoint counts as well.
        let distance = advised as f64 / 1.9;
        assert!(distance >= small.bytes as f64 * 1.25 - 1.0);
    }

    #[test]
    fn checkpoint_timeout_counts_the_estimated_backfill() {
        let mut catalog = incident();
        for t in &mut catalog.tables {
            t.estimated_rows = 1_000_000;
        }
        let every = |secs| {
            let mut c = catalog.clone();
            c.wal.checkpoint_timeout_secs = secs;
            plan(&c, &[(1, "id")])
        };
        let p = every(10);
        let seconds = p.estimated_backfill_secs();
        assert!(seconds >= 10.0, "{seconds} s");
        assert_eq!(p.wal.timed_checkpoints, (seconds / 10.0) as i64);
        assert_eq!(every(300).wal.timed_checkpoints, 0);
        assert_eq!(
            every(0).wal.timed_checkpoints,
            0,
            "a zero timeout is not a division"
        );
    }

    #[test]
    fn a_paced_backfill_is_estimated_slower_and_meets_more_timed_checkpoints() {
        use crate::plan::{EngineChoice, Pace};
        let mut catalog = incident();
        for t in &mut catalog.tables {
            t.estimated_rows = 3_000_000;
        }
        catalog.wal.checkpoint_timeout_secs = 60;
        let requests = [crate::plan::Request {
            table: 1,
            column: "id".into(),
            change: None,
        }];
        let with = |engine, pace| {
            let options = crate::plan::Options {
                engine,
                pace,
                ..Default::default()
            };
            crate::plan::build("m", "abc", &requests, &catalog, options).unwrap()
        };
        for engine in [EngineChoice::Update, EngineChoice::Copy] {
            let full = with(engine, Pace::default());
            let paced = with(
                engine,
                Pace {
                    paced: true,
                    max_rows_per_second: None,
                },
            );
            assert_eq!(
                paced.pace,
                Pace {
                    paced: true,
                    max_rows_per_second: None
                }
            );
            assert!(
                paced.estimated_backfill_secs() > 5.0 * full.estimated_backfill_secs(),
                "{engine:?}: paced {} s, full speed {} s",
                paced.estimated_backfill_secs(),
                full.estimated_backfill_secs()
            );
            assert!(paced.wal.timed_checkpoints > full.wal.timed_checkpoints);
            // A cap below the assumed speed is the speed.
            let capped = with(
                engine,
                Pace {
                    paced: true,
                    max_rows_per_second: Some(1_000),
                },
            );
            assert_eq!(capped.estimated_rows_per_sec(), 1_000.0);
            // The estimates are the same whatever bytes the WAL estimate saw.
            assert_eq!(paced.wal.bytes, full.wal.bytes);
        }
    }
}
