//! Commit latency, as the application's writes see it. A commit waits for
//! the WAL flush, so it slows when the disk is busy: our own WAL, and above
//! all a checkpoint writing out the pages the backfill dirtied. Pausing the
//! backfill then lets the checkpointer fall back to its paced writes.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// How long one tiny write's commit takes. The write is a transactional
/// WAL message of no content: a transaction that only takes an xid commits
/// without waiting for the flush, one that wrote WAL waits like every
/// application write. Only for the local flush: a synchronous standby that
/// went away must not hang the lifeline (the setting is local to the
/// statement's own transaction and still in force at its commit). Costs one
/// xid; logical decoding sees an empty message with the prefix `pgshift`.
/// One statement, not BEGIN … COMMIT: the lifeline is shared, and a failed
/// explicit transaction would stay open for whatever query came next.
pub async fn commit_latency(client: &Client) -> Result<Duration> {
    let started = Instant::now();
    client
        .batch_execute(FLUSHING_COMMIT)
        .await
        .map_err(Error::db("could not measure commit latency"))?;
    Ok(started.elapsed())
}

/// The one-record commit of [`commit_latency`] and [`flush_wal`].
const FLUSHING_COMMIT: &str = "SELECT set_config('synchronous_commit', 'local', true), \
     pg_logical_emit_message(true, 'pgshift', '')";

/// Below this much unflushed WAL a flush is not worth a commit.
const FLUSH_ABOVE_BYTES: i64 = 64 * 1024;

/// Flushes the server's WAL when more than a little is waiting, with the
/// same one-record commit as [`commit_latency`] (a commit that wrote WAL
/// flushes everything before it). One round trip: below the threshold the
/// WHERE keeps the message out, and a transaction that wrote nothing
/// commits without a flush. Returns whether it flushed.
pub async fn flush_wal(client: &Client) -> Result<bool> {
    let sql = format!(
        "{FLUSHING_COMMIT} WHERE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), \
         pg_current_wal_flush_lsn()) >= {FLUSH_ABOVE_BYTES}"
    );
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(Error::db("could not flush the WAL"))?;
    Ok(messages
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))))
}

/// How often the pacer probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// `--max-commit-latency`: a fixed duration, or a multiple of the commit
/// latency measured before the backfill starts (`3x`). A multiple follows
/// the server's own disk: 20 ms is nothing on a slow network volume and a
/// lot on local NVMe, where a commit takes a fraction of a millisecond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommitLimit {
    /// `0`: no probe.
    Off,
    Fixed(Duration),
    TimesBaseline(f64),
}

/// How many probes make the baseline, and how far apart.
const BASELINE_PROBES: u32 = 20;
const BASELINE_SPACING: Duration = Duration::from_millis(25);
/// Below this a limit is noise: a round trip and a flush on a quiet disk.
const LIMIT_FLOOR: Duration = Duration::from_millis(1);

impl CommitLimit {
    pub fn parse(text: &str) -> std::result::Result<CommitLimit, String> {
        let text = text.trim();
        if let Some(times) = text.strip_suffix(['x', 'X']) {
            let k: f64 = times
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: expected a multiple such as `3x`"))?;
            if !(k >= 1.0 && k.is_finite()) {
                return Err(format!(
                    "`{text}`: a multiple of the baseline commit latency must be at least 1x"
                ));
            }
            return Ok(CommitLimit::TimesBaseline(k));
        }
        let d = humantime::parse_duration(text).map_err(|e| {
            format!("`{text}`: expected a duration (`20ms`) or a multiple (`3x`): {e}")
        })?;
        Ok(if d.is_zero() {
            CommitLimit::Off
        } else {
            CommitLimit::Fixed(d)
        })
    }

    /// `None` when off.
    pub fn active(self) -> Option<CommitLimit> {
        (self != CommitLimit::Off).then_some(self)
    }

    /// The limit in time, and the baseline it was measured from: a multiple
    /// of the median of a few probes, taken while none of our batches runs.
    pub async fn resolve(self, client: &Client) -> Result<(Duration, Option<Duration>)> {
        let k = match self {
            CommitLimit::Off => return Ok((Duration::MAX, None)),
            CommitLimit::Fixed(d) => return Ok((d, None)),
            CommitLimit::TimesBaseline(k) => k,
        };
        let mut probes = Vec::with_capacity(BASELINE_PROBES as usize);
        for _ in 0..BASELINE_PROBES {
            probes.push(commit_latency(client).await?);
            tokio::time::sleep(BASELINE_SPACING).await;
        }
        let median = median(&mut probes);
        Ok((median.mul_f64(k).max(LIMIT_FLOOR), Some(median)))
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}
/// The smallest duty cycle: even while commits are slow the backfill moves.
const MIN_DUTY: f64 = 0.05;
/// What one fast probe wins back.
const DUTY_STEP: f64 = 0.1;
/// The longest rest after one batch.
const MAX_REST: Duration = Duration::from_secs(5);

/// The backfill's duty cycle (share of the time spent in batches), steered
/// like TCP's congestion window: halved when a commit is slow, raised a step
/// when it is fast. A pause only until commits are fast again would flap:
/// the next full-speed batch brings the slowness straight back.
#[derive(Debug)]
pub struct CommitPacer {
    duty: f64,
    last_probe: Option<Instant>,
    last_halved: Option<Instant>,
}

impl Default for CommitPacer {
    fn default() -> Self {
        CommitPacer {
            duty: 1.0,
            last_probe: None,
            last_halved: None,
        }
    }
}

impl CommitPacer {
    pub fn duty(&self) -> f64 {
        self.duty
    }

    /// Whether a probe is due; claims it, so parallel parts probe in turn.
    pub fn probe_due(&mut self) -> bool {
        let due = self.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
        if due {
            self.last_probe = Some(Instant::now());
        }
        due
    }

    pub fn observe(&mut self, commit: Duration, limit: Duration) {
        if commit > limit {
            self.halve();
        } else {
            self.duty = (self.duty + DUTY_STEP).min(1.0);
        }
    }

    /// A stall seen outside the probe: halves the duty cycle unless it was
    /// halved within the last probe interval (one stall is seen by many
    /// flushes). Returns whether it did.
    pub fn stalled(&mut self) -> bool {
        if self.last_halved.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return false;
        }
        self.halve();
        true
    }

    fn halve(&mut self) {
        self.duty = (self.duty / 2.0).max(MIN_DUTY);
        self.last_halved = Some(Instant::now());
    }

    /// The rest after a batch of `took` that keeps the duty cycle.
    pub fn rest(&self, took: Duration) -> Duration {
        took.mul_f64(1.0 / self.duty - 1.0).min(MAX_REST)
    }
}

/// The cutover's moment. Its statements are catalog changes that take
/// milliseconds on a quiet disk, and the application queues behind its
/// lock for as long as they take. In seven cutovers of 3M-row benches they
/// took 18-129 ms; the slowest came right after the last replays, while
/// the application's writes took 135-145 ms. So the cutover waits until a
/// few commits in a row are under the limit, for at most a few seconds: a
/// burst of writes lasts hundreds of milliseconds, a busy disk may last
/// all day.
#[derive(Debug, Default)]
pub struct Calm {
    streak: u32,
}

/// Commits in a row under the limit that make the disk calm.
pub const CALM_STREAK: u32 = 3;
/// How far apart the cutover's probes are.
pub const CALM_SPACING: Duration = Duration::from_millis(50);
/// The longest the cutover waits for calm before it goes ahead anyway.
pub const CALM_WAIT_MAX: Duration = Duration::from_secs(5);

impl Calm {
    /// Takes one probe's commit time; true once the last CALM_STREAK were
    /// all under `limit`.
    pub fn observe(&mut self, commit: Duration, limit: Duration) -> bool {
        self.streak = if commit <= limit { self.streak + 1 } else { 0 };
        self.streak >= CALM_STREAK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(20);

    #[test]
    fn the_disk_is_calm_after_three_fast_commits_in_a_row_and_a_slow_one_starts_over() {
        let mut c = Calm::default();
        let fast = Duration::from_millis(2);
        let slow = Duration::from_millis(90);
        assert!(!c.observe(fast, LIMIT));
        assert!(!c.observe(fast, LIMIT));
        assert!(!c.observe(slow, LIMIT), "a slow commit breaks the streak");
        assert!(!c.observe(fast, LIMIT));
        assert!(!c.observe(LIMIT, LIMIT), "at the limit counts as calm");
        assert!(c.observe(fast, LIMIT));
        assert!(c.observe(fast, LIMIT), "stays calm while commits stay fast");
    }

    #[test]
    fn slow_commits_halve_the_duty_cycle_and_fast_ones_win_it_back_in_steps() {
        let mut p = CommitPacer::default();
        assert_eq!(p.rest(Duration::from_millis(100)), Duration::ZERO);
        p.observe(Duration::from_millis(45), LIMIT);
        assert_eq!(p.duty(), 0.5);
        assert_eq!(
            p.rest(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        p.observe(Duration::from_millis(45), LIMIT);
        assert_eq!(p.duty(), 0.25);
        assert_eq!(
            p.rest(Duration::from_millis(100)),
            Duration::from_millis(300)
        );
        p.observe(Duration::from_millis(3), LIMIT);
        assert!((p.duty() - 0.35).abs() < 1e-9);
        for _ in 0..20 {
            p.observe(Duration::from_millis(3), LIMIT);
        }
        assert_eq!(p.duty(), 1.0);
    }

    #[test]
    fn the_backfill_never_stops_and_never_rests_long() {
        let mut p = CommitPacer::default();
        for _ in 0..20 {
            p.observe(Duration::from_secs(1), LIMIT);
        }
        assert_eq!(p.duty(), MIN_DUTY);
        assert_eq!(
            p.rest(Duration::from_millis(100)),
            Duration::from_millis(1900)
        );
        assert_eq!(p.rest(Duration::from_secs(2)), MAX_REST);
    }

    #[test]
    fn one_stall_seen_by_many_flushes_halves_the_duty_cycle_once() {
        let mut p = CommitPacer::default();
        assert!(p.stalled());
        assert_eq!(p.duty(), 0.5);
        for _ in 0..50 {
            assert!(!p.stalled());
        }
        assert_eq!(p.duty(), 0.5);
        // A probe interval later, a stall counts again.
        p.last_halved = Some(Instant::now() - PROBE_EVERY);
        assert!(p.stalled());
        assert_eq!(p.duty(), 0.25);
    }

    #[test]
    fn the_limit_is_a_duration_or_a_multiple_of_the_baseline() {
        assert_eq!(
            CommitLimit::parse("20ms"),
            Ok(CommitLimit::Fixed(Duration::from_millis(20)))
        );
        assert_eq!(
            CommitLimit::parse("2.5x"),
            Ok(CommitLimit::TimesBaseline(2.5))
        );
        assert_eq!(CommitLimit::parse("0"), Ok(CommitLimit::Off));
        for bad in ["0.5x", "x", "fastx", "20 parsecs", "NaNx"] {
            let e = CommitLimit::parse(bad).unwrap_err();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
    }

    #[test]
    fn the_baseline_is_the_median_probe() {
        let mut v: Vec<Duration> = [9, 1, 2, 50, 3].map(Duration::from_millis).to_vec();
        assert_eq!(median(&mut v), Duration::from_millis(3));
    }

    #[test]
    fn probes_are_spaced_out() {
        let mut p = CommitPacer::default();
        assert!(p.probe_due());
        assert!(!p.probe_due());
    }
}
