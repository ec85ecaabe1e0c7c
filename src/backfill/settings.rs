//! The backfill's knobs, and how each batch's size and the rests between
//! batches follow from them.

use std::time::Duration;

/// Knobs of the backfill.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A fixed batch size; None sizes batches to hold `target`.
    pub fixed_batch: Option<i64>,
    /// How long one batch of the update engine should take: it holds row
    /// locks on its rows, so this is about the longest an application update
    /// waits for it.
    pub target: Duration,
    /// The same for the copy engine, whose batches lock no application row:
    /// shorter, because a batch's WAL reaches the disk faster than the
    /// server's writeback drains it, and the application's commits queue
    /// behind that backlog (measured: p99 2.55-2.84x the baseline at 20 ms
    /// against 2.98-4.25x at 100 ms, for 18% more wall time).
    pub copy_target: Duration,
    pub min_batch: i64,
    pub max_batch: i64,
    /// Key ranges of at least this many rows go in two passes (see [`Pass`]); 0: never.
    pub two_pass_above: i64,
    pub max_rows_per_second: Option<u64>,
    /// Cap on the server's WAL rate while a batch runs, in bytes per second.
    pub max_wal_per_second: Option<u64>,
}

/// The default `target` of each engine.
pub const UPDATE_TARGET: Duration = Duration::from_millis(100);
pub const COPY_TARGET: Duration = Duration::from_millis(20);

impl Settings {
    /// The settings a worker of this engine runs with: the copy engine's
    /// target in place of the update engine's.
    pub fn for_engine(&self, copy: bool) -> Settings {
        let target = if copy { self.copy_target } else { self.target };
        Settings {
            target,
            ..self.clone()
        }
    }

    pub(super) fn first_batch(&self) -> i64 {
        self.fixed_batch.unwrap_or(1000).clamp(1, i64::MAX)
    }

    /// Bounds one batch; a batch that hits it is retried at half the size.
    pub(super) fn statement_timeout(&self) -> Duration {
        (self.target * 50).max(Duration::from_secs(2))
    }

    /// The next batch size after one of `size` rows took `took`: steer toward
    /// the target, at most doubling or halving per step so one odd batch
    /// (a checkpoint, a cold cache) does not swing it.
    pub fn next_batch(&self, size: i64, took: Duration) -> i64 {
        if let Some(fixed) = self.fixed_batch {
            return fixed;
        }
        let ratio = (self.target.as_secs_f64() / took.as_secs_f64().max(1e-4)).clamp(0.5, 2.0);
        ((size as f64 * ratio) as i64).clamp(self.min_batch, self.max_batch.max(self.min_batch))
    }

    /// How long to sleep after `rows` rows took `took`, to honour the rate cap.
    pub fn pace(&self, rows: i64, took: Duration) -> Duration {
        match self.max_rows_per_second {
            Some(cap) if cap > 0 => {
                Duration::from_secs_f64(rows as f64 / cap as f64).saturating_sub(took)
            }
            _ => Duration::ZERO,
        }
    }

    /// How long to rest when the server wrote `bytes` of WAL in `elapsed`
    /// (the last batch and the rest before it), to honour the WAL cap. The
    /// whole server's WAL counts: every commit waits for its flush.
    pub fn wal_rest(&self, bytes: i64, elapsed: Duration) -> Duration {
        match self.max_wal_per_second {
            Some(cap) if cap > 0 && bytes > 0 => {
                Duration::from_secs_f64(bytes as f64 / cap as f64).saturating_sub(elapsed)
            }
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Adaptive batches with the defaults, no caps.
    pub(crate) fn adaptive() -> Settings {
        Settings {
            fixed_batch: None,
            target: UPDATE_TARGET,
            copy_target: COPY_TARGET,
            min_batch: 100,
            max_batch: 50_000,
            two_pass_above: 3_000_000,
            max_rows_per_second: None,
            max_wal_per_second: None,
        }
    }

    #[test]
    fn batches_steer_toward_the_target_within_bounds() {
        let s = adaptive();
        assert_eq!(s.next_batch(1000, Duration::from_millis(50)), 2000);
        assert_eq!(
            s.next_batch(1000, Duration::from_millis(10)),
            2000,
            "at most doubles"
        );
        assert_eq!(
            s.next_batch(1000, Duration::from_millis(400)),
            500,
            "at most halves"
        );
        assert_eq!(
            s.next_batch(150, Duration::from_secs(1)),
            100,
            "never below min"
        );
        assert_eq!(
            s.next_batch(40_000, Duration::from_millis(1)),
            50_000,
            "never above max"
        );
        let fixed = Settings {
            fixed_batch: Some(777),
            ..adaptive()
        };
        assert_eq!(fixed.next_batch(777, Duration::from_secs(3)), 777);
    }

    #[test]
    fn the_rate_cap_sleeps_off_the_difference() {
        let capped = Settings {
            max_rows_per_second: Some(10_000),
            ..adaptive()
        };
        assert_eq!(
            capped.pace(5000, Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        assert_eq!(capped.pace(5000, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(adaptive().pace(5000, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_wal_cap_rests_until_the_server_is_back_under_it() {
        let capped = Settings {
            max_wal_per_second: Some(32_000_000),
            ..adaptive()
        };
        // 8 MB in 100 ms is 80 MB/s: rest until 250 ms have passed.
        assert_eq!(
            capped.wal_rest(8_000_000, Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        assert_eq!(
            capped.wal_rest(2_000_000, Duration::from_millis(100)),
            Duration::ZERO
        );
        assert_eq!(
            adaptive().wal_rest(8_000_000, Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn each_engine_steers_toward_its_own_target() {
        let s = adaptive();
        // 1000 rows in 40 ms: short of the update engine's 100 ms, past the copy's 20 ms.
        let took = Duration::from_millis(40);
        assert_eq!(s.for_engine(false).next_batch(1000, took), 2000);
        assert_eq!(s.for_engine(true).next_batch(1000, took), 500);
        assert_eq!(s.for_engine(true).target, COPY_TARGET);
        assert_eq!(s.for_engine(false).target, UPDATE_TARGET);
        // The timeout follows the engine's target, never under two seconds.
        let long = Settings {
            target: Duration::from_secs(1),
            copy_target: Duration::from_millis(500),
            ..adaptive()
        };
        assert_eq!(
            long.for_engine(false).statement_timeout(),
            Duration::from_secs(50)
        );
        assert_eq!(
            long.for_engine(true).statement_timeout(),
            Duration::from_secs(25)
        );
    }
}
