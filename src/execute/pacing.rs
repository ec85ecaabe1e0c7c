//! How a run paces itself: the throttle before every batch (free slots,
//! replica lag, slots, pauses), the commit-latency probe and the duty
//! cycle it steers, the WAL flusher, and the calm moment the cutover waits
//! for.

use super::*;

#[derive(Default)]
pub(super) struct ThrottleState {
    /// When headroom, lag, slots and requests were last read.
    last_check: Option<Instant>,
    /// Why the backfill is paused, while it is.
    paused_for: Option<String>,
    /// When the pause reason was last written to the state table.
    reason_written: Option<Instant>,
}

/// How many times the commit limit a WAL flush takes to count as a stall.
const STALL_TIMES: u32 = 3;

/// How often the throttle reads headroom, lag and requests.
const THROTTLE_EVERY: Duration = Duration::from_millis(500);

impl Runner {
    /// Runs `work` while the lifeline flushes the WAL every
    /// `--flush-wal-every`. The WAL writer flushes only every 200 ms
    /// (`wal_writer_delay`); in between, our batches and index builds leave
    /// megabytes unflushed, and the first application commit after them
    /// waits for all of it. A flusher that fails stops; the work goes on
    /// without it. The `wal_flushes` event says, once `work` is done, how
    /// often the flusher looked and how often it flushed: how fast the disk
    /// let it keep up shows there, not in pgshift's settings.
    pub(super) async fn keeping_wal_flushed(
        &self,
        phase: Phase,
        work: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let Some(every) = self.limits.flush_wal_every else {
            return work.await;
        };
        let looked = AtomicU64::new(0);
        let flushed = AtomicU64::new(0);
        let flusher = async {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = Instant::now();
                match guard::flush_wal(&self.lifeline).await {
                    Ok(did) => {
                        looked.fetch_add(1, Ordering::Relaxed);
                        flushed.fetch_add(u64::from(did), Ordering::Relaxed);
                        if did {
                            self.observe_flush(started.elapsed());
                        }
                    }
                    Err(e) => {
                        tracing::warn!("stopped flushing the WAL: {e}");
                        return;
                    }
                }
            }
        };
        tokio::pin!(work);
        let done = tokio::select! {
            done = &mut work => done,
            () = flusher => work.await,
        };
        self.events.emit(
            "wal_flushes",
            json!({"phase": phase.as_str(),
                   "looked": looked.load(Ordering::Relaxed),
                   "flushed": flushed.load(Ordering::Relaxed)}),
        );
        done
    }

    /// Waits, before the cutover takes its locks, until commits are fast
    /// (guard::Calm), at most CALM_WAIT_MAX; then goes ahead either way.
    /// Each probe is a flushing commit, so the WAL of the last replays is
    /// on disk before the lock. Without a commit limit (full speed) one
    /// flush. Says how long it waited in a `calm` event.
    pub(super) async fn wait_for_calm_commits(&self) -> Result<()> {
        self.calibrate_commit_limit(true).await?;
        let Some(&limit) = self.commit_limit.get() else {
            guard::flush_wal(&self.lifeline).await?;
            return Ok(());
        };
        let started = Instant::now();
        let mut calm = guard::Calm::default();
        let mut probes = 0u32;
        let mut slowest = Duration::ZERO;
        let calmed = loop {
            let commit = guard::commit_latency(&self.lifeline).await?;
            probes += 1;
            slowest = slowest.max(commit);
            if calm.observe(commit, limit) {
                break true;
            }
            if started.elapsed() >= guard::CALM_WAIT_MAX {
                break false;
            }
            tokio::time::sleep(guard::CALM_SPACING).await;
        };
        let ms = tenths_of_ms;
        if !calmed {
            tracing::warn!(
                "commits stayed over {} ms for {} s before the cutover; cutting over anyway",
                ms(limit),
                guard::CALM_WAIT_MAX.as_secs()
            );
        }
        self.events.emit(
            "calm",
            json!({"calm": calmed, "waited_ms": started.elapsed().as_millis() as u64,
                   "probes": probes, "slowest_ms": ms(slowest), "limit_ms": ms(limit)}),
        );
        Ok(())
    }

    /// Called before every backfill batch: waits while the database needs
    /// room (free slots, replica lag) or a pause was asked for; errors when
    /// interrupted or asked to roll back.
    pub async fn throttle(&self) -> Result<()> {
        loop {
            self.check_interrupt()?;
            let due = {
                let st = self.throttle.lock().expect("throttle state");
                st.paused_for.is_some()
                    || st.last_check.is_none_or(|t| t.elapsed() >= THROTTLE_EVERY)
            };
            let reason = if self.paused_by_signal.load(Ordering::SeqCst) {
                Some("paused by SIGUSR1 (SIGUSR2 continues)".to_string())
            } else if due {
                self.throttle.lock().expect("throttle state").last_check = Some(Instant::now());
                self.pause_reason().await?
            } else {
                None
            };
            let was = self
                .throttle
                .lock()
                .expect("throttle state")
                .paused_for
                .clone();
            match (reason, was) {
                (None, None) => return Ok(()),
                (None, Some(_)) => {
                    self.throttle.lock().expect("throttle state").paused_for = None;
                    state::set_paused(&self.lifeline, self.name(), None).await?;
                    self.events.emit("resumed", json!({}));
                    tracing::info!("backfill continues");
                    return Ok(());
                }
                (Some(reason), was) => {
                    // Announce a pause once; while it lasts, refresh the reason
                    // in `status` now and then (lag figures change every check).
                    let refresh = {
                        let mut st = self.throttle.lock().expect("throttle state");
                        let due = st
                            .reason_written
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
                        if was.is_none() || due {
                            st.reason_written = Some(Instant::now());
                        }
                        was.is_none() || due
                    };
                    if was.is_none() {
                        tracing::warn!("backfill paused: {reason}");
                        self.events.emit("paused", json!({"reason": reason}));
                    }
                    if refresh {
                        state::set_paused(&self.lifeline, self.name(), Some(&reason)).await?;
                    }
                    self.throttle.lock().expect("throttle state").paused_for = Some(reason);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Resolves `--max-commit-latency` before the first batch: a multiple
    /// of the baseline is measured now, while none of our batches runs
    /// (once per run; a resumed run measures again).
    /// `for_cutover`: a run that starts at `ready` calibrates for the
    /// cutover's wait alone, and says so.
    pub async fn calibrate_commit_limit(&self, for_cutover: bool) -> Result<()> {
        let Some(limit) = self.limits.max_commit_latency else {
            return Ok(());
        };
        self.commit_limit
            .get_or_try_init(|| async {
                let (resolved, baseline) = limit.resolve(&self.lifeline).await?;
                if let Some(baseline) = baseline {
                    let ms = tenths_of_ms;
                    self.printer.note(if for_cutover {
                        format!(
                            "commit latency now: {} ms; the cutover locks once commits are under {} ms",
                            ms(baseline),
                            ms(resolved)
                        )
                    } else {
                        format!(
                            "commit latency before the backfill: {} ms; the backfill slows down above {} ms \
                             (`--max-commit-latency 0 --flush-wal-every 0`: full speed)",
                            ms(baseline),
                            ms(resolved)
                        )
                    });
                    self.events.emit(
                        "commit_baseline",
                        json!({"baseline_ms": ms(baseline), "limit_ms": ms(resolved)}),
                    );
                }
                Ok::<Duration, Error>(resolved)
            })
            .await?;
        Ok(())
    }

    /// Measures commit latency while a batch runs (when a probe is due and
    /// the probe is on), `delay` into the batch: between batches the WAL is
    /// drained and commits look fast even while the application's are slow.
    pub async fn probe_commit(&self, delay: Duration) -> Result<Option<Duration>> {
        if self.commit_limit.get().is_none() || !self.pacer.lock().expect("pacer").probe_due() {
            return Ok(None);
        }
        tokio::time::sleep(delay).await;
        guard::commit_latency(&self.lifeline).await.map(Some)
    }

    /// How long to rest after a batch that took `took`, given the probe
    /// taken during it: the pacer halves the duty cycle when a commit took
    /// longer than `--max-commit-latency` and wins it back slowly after.
    pub fn rest_after_batch(&self, took: Duration, probe: Option<Duration>) -> Duration {
        let Some(&limit) = self.commit_limit.get() else {
            return Duration::ZERO;
        };
        let mut pacer = self.pacer.lock().expect("pacer");
        if let Some(commit) = probe {
            let before = pacer.duty();
            pacer.observe(commit, limit);
            if pacer.duty() < before {
                self.backed_off("commit", commit, pacer.duty());
            }
        }
        pacer.rest(took)
    }

    /// A flush of the lifeline's is a commit timed a hundred times a second:
    /// it sees the rare stalls (the disk busy writing back what the
    /// backfill dirtied) that a probe twice a second misses, and that set
    /// the application's tail. A flush over three times the limit is a
    /// stall, and halves the duty cycle (at most once per probe interval).
    pub(super) fn observe_flush(&self, took: Duration) {
        let Some(&limit) = self.commit_limit.get() else {
            return;
        };
        let mut pacer = self.pacer.lock().expect("pacer");
        if took > limit * STALL_TIMES && pacer.stalled() {
            self.backed_off("flush", took, pacer.duty());
        }
    }

    /// Says that a slow `what` (`commit`: the probe, `flush`: the lifeline's
    /// WAL flush) that took `took` cut the duty cycle to `duty`: a log line
    /// and a `backing_off` event with `{what}_ms`.
    pub(super) fn backed_off(&self, what: &str, took: Duration, duty: f64) {
        let ms = tenths_of_ms(took);
        tracing::info!(
            "a {what} took {ms:.1} ms: backfill duty cycle {:.0}%",
            duty * 100.0
        );
        let mut event = serde_json::Map::new();
        event.insert(format!("{what}_ms"), json!(ms));
        event.insert("duty".into(), json!((duty * 100.0).round() / 100.0));
        self.events
            .emit("backing_off", serde_json::Value::Object(event));
    }

    /// Why the backfill should wait now, if it should.
    pub(super) async fn pause_reason(&self) -> Result<Option<String>> {
        let (pause_requested, request) = state::requests(&self.lifeline, self.name()).await?;
        if request.as_deref() == Some("rollback") {
            self.rollback_requested.store(true, Ordering::SeqCst);
            return Err(Error::Refused(format!(
                "{}: rollback requested by another pgshift process",
                self.name()
            )));
        }
        if pause_requested {
            return Ok(Some(format!(
                "pause requested (`pgshift resume {}` continues)",
                self.name()
            )));
        }
        let h = Headroom::read(&self.lifeline).await?;
        let min_free = self.limits.min_free(h.max_connections);
        if h.free() < min_free {
            return Ok(Some(format!(
                "only {} free connection slots (max_connections {}, in use {}); waiting for {min_free}",
                h.free(),
                h.max_connections,
                h.in_use
            )));
        }
        if let Some(limit) = self.limits.max_slot_wal_bytes {
            if let Some(reason) = guard::slot_over(&self.lifeline, limit).await? {
                return Ok(Some(reason));
            }
        }
        let lag = guard::replica_lag(&self.lifeline, self.replica.as_ref()).await?;
        if lag > self.limits.max_replica_lag.as_secs_f64() {
            return Ok(Some(format!(
                "replica replay lag {lag:.1} s exceeds {:.1} s (--max-replica-lag)",
                self.limits.max_replica_lag.as_secs_f64()
            )));
        }
        Ok(None)
    }
}
