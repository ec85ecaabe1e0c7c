//! The step runner: walks a migration through its phases, persisting the
//! phase before acting so that a crash anywhere leaves a state `resume` and
//! `rollback` understand.

pub mod retry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;

pub use retry::LockPolicy;

use crate::backfill;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::guard::{self, Headroom, Limits};
use crate::ops::{self, Action, Step};
use crate::output::Printer;
use crate::plan::Plan;
use crate::state::{self, Phase};

/// What a run needs: the lifeline (state, advisory lock, requests) and a
/// worker from a bounded pool (DDL, index builds, batches), the policies,
/// and the flags that signals and other pgshift processes set.
pub struct Runner {
    /// Holds the advisory lock and writes state; never busy with long work,
    /// so pgshift can always pause or roll back, even when the server is full.
    pub lifeline: Client,
    /// Runs DDL, index builds and backfill batches.
    pub worker: deadpool_postgres::Object,
    /// The bounded pool the worker came from; parallel backfill parts take more from it.
    pub pool: deadpool_postgres::Pool,
    /// Backfill workers allowed (the pool's size).
    pub workers: usize,
    /// Optional replica, for lag measurements.
    pub replica: Option<Client>,
    pub plan: Plan,
    pub lock: LockPolicy,
    pub backfill: backfill::Settings,
    pub limits: Limits,
    pub events: Events,
    pub printer: Printer,
    /// Set by Ctrl-C: stop after the current batch or step.
    pub interrupted: Arc<AtomicBool>,
    /// Set by SIGUSR1, cleared by SIGUSR2.
    pub paused_by_signal: Arc<AtomicBool>,
    /// Set when another pgshift asked this run to roll back.
    pub rollback_requested: AtomicBool,
    /// When the throttle last read headroom, lag and requests, and what it saw.
    throttle: Mutex<ThrottleState>,
    /// The backfill's duty cycle, steered by the commit-latency probe.
    pacer: Mutex<guard::CommitPacer>,
    /// `--max-commit-latency` in time, measured once before the first batch
    /// when it is a multiple of the baseline.
    commit_limit: tokio::sync::OnceCell<Duration>,
}

#[derive(Default)]
struct ThrottleState {
    last_check: Option<Instant>,
    paused_for: Option<String>,
    /// When the pause reason was last written to the state table.
    reason_written: Option<Instant>,
}

/// How many times the commit limit a WAL flush takes to count as a stall.
const STALL_TIMES: u32 = 3;

/// How often the throttle reads headroom, lag and requests.
const THROTTLE_EVERY: Duration = Duration::from_millis(500);

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lifeline: Client,
        pool: deadpool_postgres::Pool,
        worker: deadpool_postgres::Object,
        replica: Option<Client>,
        plan: Plan,
        lock: LockPolicy,
        backfill: backfill::Settings,
        limits: Limits,
        events: Events,
        printer: Printer,
        interrupted: Arc<AtomicBool>,
        paused_by_signal: Arc<AtomicBool>,
    ) -> Runner {
        Runner {
            lifeline,
            workers: pool.status().max_size,
            pool,
            worker,
            replica,
            plan,
            lock,
            backfill,
            limits,
            events,
            printer,
            interrupted,
            paused_by_signal,
            rollback_requested: AtomicBool::new(false),
            throttle: Mutex::new(ThrottleState::default()),
            pacer: Mutex::new(guard::CommitPacer::default()),
            commit_limit: tokio::sync::OnceCell::new(),
        }
    }

    /// Another connection from the bounded pool, for a parallel backfill part.
    pub async fn extra_worker(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::Runtime(format!("could not get another backfill connection: {e}")))
    }

    pub fn name(&self) -> &str {
        &self.plan.migration
    }

    /// Runs from `phase` up to `ready`, then through cutover unless `stop_at_ready`.
    pub async fn forward(&self, mut phase: Phase, stop_at_ready: bool) -> Result<Phase> {
        loop {
            self.check_interrupt()?;
            let next = match phase {
                Phase::Expanding => {
                    self.run_steps(&ops::expand(&self.plan)).await?;
                    Phase::Backfilling
                }
                Phase::Backfilling => {
                    let steps = ops::backfill(&self.plan);
                    self.keeping_wal_flushed(phase, self.run_steps(&steps))
                        .await?;
                    Phase::Validating
                }
                Phase::Validating => {
                    let steps = ops::validate(&self.plan);
                    self.keeping_wal_flushed(phase, self.run_steps(&steps))
                        .await?;
                    Phase::Ready
                }
                Phase::Ready if stop_at_ready => return Ok(Phase::Ready),
                Phase::Ready => {
                    self.cutover().await?;
                    return Ok(Phase::CutOver);
                }
                done => return Ok(done),
            };
            state::set_phase(&self.lifeline, self.name(), next).await?;
            self.events.emit("phase", json!({"phase": next.as_str()}));
            self.printer.note(format!("{}: {next}", self.name()));
            phase = next;
        }
    }

    /// Runs `work` while the lifeline flushes the WAL every
    /// `--flush-wal-every`. The WAL writer flushes only every 200 ms
    /// (`wal_writer_delay`); in between, our batches and index builds leave
    /// megabytes unflushed, and the first application commit after them
    /// waits for all of it. A flusher that fails stops; the work goes on
    /// without it. The `wal_flushes` event says, once `work` is done, how
    /// often the flusher looked and how often it flushed: how fast the disk
    /// let it keep up shows there, not in pgshift's settings.
    async fn keeping_wal_flushed(
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

    /// The cutover transaction; it marks the phase itself, atomically.
    pub async fn cutover(&self) -> Result<Duration> {
        let step = ops::cutover(&self.plan, &state::cutover_marker(self.name()));
        let Action::Transaction { statements } = &step.action else {
            unreachable!("cutover is a transaction")
        };
        let tables = ops::locked_tables(&self.plan);
        // The copy engine replays under the cutover's lock what was written
        // since the last replay: catch up first, so that is seconds' worth.
        for t in self.plan.copy.iter().flat_map(|c| &c.tables) {
            self.replay(
                &self.worker,
                (&t.replay_forward, &t.log_forward),
                &format!("replay the rows written in {} before cutover", t.display()),
            )
            .await?;
        }
        // Waiting behind a long transaction would queue the application
        // behind our lock request: name those sessions before trying.
        let blockers =
            guard::long_transactions(&self.worker, &tables, self.lock.lock_timeout).await?;
        for b in &blockers {
            tracing::warn!("cutover may wait for {b}");
            self.events.emit(
                "blocker",
                json!({"pid": b.pid, "age_seconds": b.age_seconds, "query": b.query}),
            );
        }
        self.wait_for_calm_commits().await?;
        self.cancel_autovacuum(&self.worker, &tables).await;
        let started = Instant::now();
        match retry::transaction(
            &self.worker,
            statements,
            &self.lock,
            "cutover",
            Some(&self.events),
        )
        .await
        {
            Ok(held) => {
                // lock_ms: the transaction, COMMIT included; statements_ms:
                // until COMMIT was sent (see retry::Held).
                self.events.emit(
                    "cutover",
                    json!({"lock_ms": held.total.as_millis() as u64,
                           "lock_wait_ms": held.locked.as_millis() as u64,
                           "statements_ms": held.statements.as_millis() as u64,
                           "total_ms": started.elapsed().as_millis() as u64}),
                );
                self.printer.note(format!(
                    "{}: cut over in {} ms (locks held; {} ms before COMMIT)",
                    self.name(),
                    held.total.as_millis(),
                    held.statements.as_millis()
                ));
                // Outside the lock: what the cutover added NOT VALID.
                self.run_steps(&ops::after_cutover(&self.plan)).await?;
                Ok(held.total)
            }
            Err(Error::Refused(message)) => {
                let blockers =
                    guard::long_transactions(&self.worker, &tables, Duration::ZERO).await?;
                let named: Vec<String> = blockers.iter().map(|b| b.to_string()).collect();
                Err(Error::Refused(if named.is_empty() {
                    message
                } else {
                    format!(
                        "{message}. Sessions holding locks on the tables: {}",
                        named.join("; ")
                    )
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits, before the cutover takes its locks, until commits are fast
    /// (guard::Calm), at most CALM_WAIT_MAX; then goes ahead either way.
    /// Each probe is a flushing commit, so the WAL of the last replays is
    /// on disk before the lock. Without a commit limit (full speed) one
    /// flush. Says how long it waited in a `calm` event.
    async fn wait_for_calm_commits(&self) -> Result<()> {
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
    fn observe_flush(&self, took: Duration) {
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
    fn backed_off(&self, what: &str, took: Duration, duty: f64) {
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
    async fn pause_reason(&self) -> Result<Option<String>> {
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

    /// Drops the retired columns and the reverse sync; irreversible.
    pub async fn finalize(&self) -> Result<()> {
        self.run_steps(&ops::finalize(&self.plan)).await?;
        state::set_phase(&self.lifeline, self.name(), Phase::Finalized).await
    }

    /// Rollback before cutover: drop what pgshift created. Idempotent.
    pub async fn abort(&self) -> Result<()> {
        self.run_steps(&ops::abort(&self.plan)).await?;
        state::set_phase(&self.lifeline, self.name(), Phase::RolledBack).await?;
        self.events
            .emit("rolled_back", json!({"from": "before_cutover"}));
        Ok(())
    }

    /// Rollback after cutover: refuse if new values no longer fit the old
    /// type, prepare without blocking, swap back in one short transaction,
    /// then drop the bigint columns. Returns how long the swap held its locks.
    pub async fn revert(&self) -> Result<Duration> {
        for (table, column, sql) in ops::misfits(&self.plan) {
            let row = self
                .worker
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!(
                    "could not check {table}.{column} before rollback"
                )))?;
            let (count, smallest): (i64, Option<String>) = (row.get(0), row.get(1));
            if count > 0 {
                return Err(Error::Refused(format!(
                    "cannot roll back {}: {count} rows of {table}.{column} hold values that do not fit the old type \
                     (written after cutover; the smallest is {}). Nothing was changed; keep the migration, or delete or \
                     renumber those rows first",
                    self.name(),
                    smallest.unwrap_or_default()
                )));
            }
        }
        self.run_steps(&ops::prepare_revert(&self.plan)).await?;
        // The copy engine replays under the swap's lock what was written
        // since the last replay: catch up first, or a rollback days after
        // cutover would replay days of writes with the tables locked.
        for t in self.plan.copy.iter().flat_map(|c| &c.tables) {
            self.replay(
                &self.worker,
                (&t.replay_back, &t.log_back),
                &format!(
                    "replay the rows written in {} since cutover onto its original",
                    t.display()
                ),
            )
            .await?;
        }
        let swap = ops::swap_back(
            &self.plan,
            &state::phase_marker(self.name(), Phase::RolledBack),
        );
        let Action::Transaction { statements } = &swap.action else {
            unreachable!("the swap back is a transaction")
        };
        self.cancel_autovacuum(&self.worker, &ops::locked_tables(&self.plan))
            .await;
        let held = retry::transaction(
            &self.worker,
            statements,
            &self.lock,
            "rollback swap",
            Some(&self.events),
        )
        .await?;
        self.printer.note(format!(
            "{}: swapped back in {} ms (locks held; {} ms before COMMIT)",
            self.name(),
            held.total.as_millis(),
            held.statements.as_millis()
        ));
        self.events.emit(
            "rolled_back",
            json!({"from": "cut_over", "lock_ms": held.total.as_millis() as u64,
                   "statements_ms": held.statements.as_millis() as u64}),
        );
        self.cleanup_after_revert().await?;
        Ok(held.total)
    }

    /// Drops what a swap-back left (idempotent; also finishes an interrupted rollback).
    pub async fn cleanup_after_revert(&self) -> Result<()> {
        self.run_steps(&ops::cleanup_after_revert(&self.plan)).await
    }

    pub fn check_interrupt(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Error::Runtime(format!(
                "interrupted; state is saved: run `pgshift resume {0}` to continue or `pgshift rollback {0}` to undo",
                self.name()
            )));
        }
        Ok(())
    }

    async fn run_steps(&self, steps: &[Step]) -> Result<()> {
        let mut i = 0;
        while i < steps.len() {
            self.check_interrupt()?;
            // A run of steps that each touch one table: tables in parallel.
            let run = steps[i..].iter().take_while(|s| s.lane.is_some()).count();
            if self.workers > 1 && run > 1 {
                self.run_lanes(&steps[i..i + run]).await?;
                i += run;
                continue;
            }
            let step = &steps[i];
            tracing::info!("{}", step.description);
            tracing::debug!("{}", step.sql);
            self.run_step(&self.worker, step).await?;
            i += 1;
        }
        Ok(())
    }

    /// Runs per-table steps with one connection per table (up to the pool's
    /// size); each table's steps keep their order. Connections take the next
    /// table from a queue, largest first, so one big table does not end up
    /// behind smaller ones on the same connection.
    async fn run_lanes(&self, steps: &[Step]) -> Result<()> {
        let mut lanes: Vec<(u32, Vec<&Step>)> = Vec::new();
        for s in steps {
            let lane = s.lane.expect("only lane steps here");
            match lanes.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, v)) => v.push(s),
                None => lanes.push((lane, vec![s])),
            }
        }
        let size = |oid: u32| self.plan.table(oid).map_or(0, |t| t.estimated_rows);
        lanes.sort_by_key(|(oid, _)| std::cmp::Reverse(size(*oid)));
        let connections = lanes.len().min(self.workers);
        let queue = std::sync::Mutex::new(
            lanes
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let mut extra = Vec::new();
        for _ in 1..connections {
            extra.push(self.extra_worker().await?);
        }
        let work = (0..connections).map(|c| {
            let client: &Client = if c == 0 { &self.worker } else { &extra[c - 1] };
            let queue = &queue;
            async move {
                loop {
                    let Some(lane) = queue.lock().expect("lane queue").next() else {
                        return Ok::<(), Error>(());
                    };
                    for step in lane {
                        self.check_interrupt()?;
                        tracing::info!("{}", step.description);
                        self.run_step(client, step).await?;
                    }
                }
            }
        });
        futures_util::future::try_join_all(work).await.map(|_| ())
    }

    /// Cancels autovacuum on `tables` before we ask for a strong lock, asking
    /// on `client` (the connection about to ask for the lock).
    async fn cancel_autovacuum(&self, client: &Client, tables: &[String]) {
        let pids = guard::cancel_autovacuum(client, tables).await;
        if !pids.is_empty() {
            tracing::info!("cancelled autovacuum (pids {pids:?}) so it does not hold up our lock");
            self.events
                .emit("autovacuum_cancelled", json!({"pids": pids}));
        }
    }

    /// Runs one step and reports it as a `step` event with its duration, so
    /// an application stall can be matched to the statement behind it.
    async fn run_step(&self, client: &Client, step: &Step) -> Result<()> {
        if step.blocking {
            self.cancel_autovacuum(client, &ops::locked_tables(&self.plan))
                .await;
        }
        let started = std::time::Instant::now();
        self.execute_step(client, step).await?;
        self.events.emit(
            "step",
            json!({"phase": step.phase, "step": step.description, "lock": step.lock,
                   "ms": started.elapsed().as_millis() as u64}),
        );
        Ok(())
    }

    async fn execute_step(&self, client: &Client, step: &Step) -> Result<()> {
        match &step.action {
            Action::Ddl { skip_if } => {
                if let Some(check) = skip_if {
                    let done: bool = client
                        .query_one(check.as_str(), &[])
                        .await
                        .map_err(Error::db(format!(
                            "could not check whether `{}` is done",
                            step.description
                        )))?
                        .get(0);
                    if done {
                        return Ok(());
                    }
                }
                retry::ddl(
                    client,
                    &step.sql,
                    &self.lock,
                    &step.description,
                    Some(&self.events),
                )
                .await
            }
            Action::BuildIndex { schema, index } => {
                self.build_index(client, step, schema, index).await
            }
            Action::DropIndex => {
                self.concurrently(client, &step.sql, &step.description)
                    .await
            }
            Action::Backfill { table } => {
                let t = self.plan.table(*table).ok_or_else(|| {
                    Error::Runtime(format!("table oid {table} is not in the plan"))
                })?;
                backfill::run(self, t).await
            }
            Action::Verify { table } => self.verify(client, *table, step).await,
            Action::Replay { function, log } => {
                self.replay(client, (function, log), &step.description)
                    .await
            }
            Action::Transaction { statements } => retry::transaction(
                &self.worker,
                statements,
                &self.lock,
                &step.description,
                Some(&self.events),
            )
            .await
            .map(|_| ()),
        }
    }

    /// `CONCURRENTLY` statements wait for older transactions to end. Those
    /// waits and their SHARE UPDATE EXCLUSIVE lock do not block the
    /// application's reads and writes, so no lock_timeout applies: a timeout
    /// here would only leave an invalid index behind.
    async fn concurrently(&self, client: &Client, sql: &str, what: &str) -> Result<()> {
        // Separate calls: several statements in one call form an implicit
        // transaction block, which CONCURRENTLY refuses.
        let run = async {
            client.batch_execute("SET lock_timeout = 0").await?;
            let result = client.batch_execute(sql).await;
            client
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    self.lock.lock_timeout.as_millis()
                ))
                .await?;
            result
        };
        run.await.map_err(Error::db(format!("{what} failed")))
    }

    async fn build_index(
        &self,
        client: &Client,
        step: &Step,
        schema: &str,
        index: &str,
    ) -> Result<()> {
        let valid: Option<bool> = client
            .query_opt(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &index],
            )
            .await
            .map_err(Error::db(format!("could not look for index {index}")))?
            .map(|r| r.get(0));
        match valid {
            Some(true) => return Ok(()),
            Some(false) => {
                // A failed concurrent build leaves an invalid index that
                // writes still maintain: drop it and build again.
                tracing::warn!(
                    "index {index} was left invalid by an interrupted build; rebuilding it"
                );
                let drop = format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    crate::names::qualified(schema, index)
                );
                self.concurrently(client, &drop, "drop the invalid index")
                    .await?;
            }
            None => {}
        }
        self.concurrently(client, &step.sql, &step.description)
            .await
    }

    /// Replays a copy's log in rounds of [`ops::copy_swap::REPLAY_BATCH`]
    /// keys, each its own transaction, until a round finds less than a
    /// round's worth: what is left then is what the cutover replays.
    /// Replays in rounds of a batch until the log holds less than one: what
    /// is left is seconds' worth, for the swap's lock. A round counts the
    /// distinct keys it took, fewer than the entries when a key was written
    /// twice, so the log itself says whether to go on: stopping at the first
    /// round of fewer keys than a batch once left 40,000 entries to a
    /// cutover, which held its lock 826 ms.
    async fn replay(
        &self,
        client: &Client,
        (function, log): (&str, &str),
        description: &str,
    ) -> Result<()> {
        let sql = format!("SELECT {function}($1)");
        let full = format!("SELECT count(*) >= $1 FROM (SELECT FROM {log} LIMIT $1) pending");
        let mut keys = 0i64;
        loop {
            self.check_interrupt()?;
            let taken: i64 = client
                .query_one(sql.as_str(), &[&ops::copy_swap::REPLAY_BATCH])
                .await
                .map_err(Error::db(format!("`{description}` failed")))?
                .get(0);
            keys += taken;
            let more: bool = client
                .query_one(full.as_str(), &[&ops::copy_swap::REPLAY_BATCH])
                .await
                .map_err(Error::db(format!("`{description}` failed")))?
                .get(0);
            if taken == 0 || !more {
                break;
            }
        }
        self.events
            .emit("replayed", json!({"step": description, "keys": keys}));
        Ok(())
    }

    async fn verify(&self, client: &Client, table: u32, step: &Step) -> Result<()> {
        let count = |sql: String| async move {
            client
                .query_one(sql.as_str(), &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .map_err(Error::db("verification query failed"))
        };
        let differing = count(step.sql.clone()).await?;
        if differing == 0 {
            return Ok(());
        }
        let t = self
            .plan
            .table(table)
            .expect("verified table is in the plan");
        tracing::warn!(
            "{differing} rows of {} differ after the backfill; backfilling again",
            t.display()
        );
        backfill::reset(&self.lifeline, self.name(), table).await?;
        // On this connection only: other lanes may hold the rest of the pool.
        backfill::run_on(self, client, 1, t).await?;
        let differing = count(step.sql.clone()).await?;
        if differing > 0 {
            return Err(Error::Runtime(format!(
                "{differing} rows of {} still differ between old and new columns after a second backfill; \
                 a trigger or rule may be rewriting them. Run `pgshift rollback {}`",
                t.display(),
                self.name()
            )));
        }
        Ok(())
    }

    /// Records a failure in the state table (best effort).
    pub async fn record_error(&self, error: &Error) {
        state::record_error(&self.lifeline, self.name(), &error.to_string()).await;
    }
}

/// Milliseconds to a tenth, as the events and notes give them.
fn tenths_of_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
