//! The step runner: walks a migration through its phases, persisting the
//! phase before acting so that a crash anywhere leaves a state `resume` and
//! `rollback` understand.
//!
//! Here: the phases, the cutover and the rollbacks. `steps` runs a phase's
//! steps (on lanes, one table per connection), `pacing` keeps the database
//! comfortable while they run, `retry` takes locks under `lock_timeout`.

mod pacing;
pub mod retry;
mod steps;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;

use pacing::ThrottleState;
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

    /// The update engine's sync noted the rows whose value did not
    /// convert: one that still does not stops the cutover before it locks,
    /// by name (the cutover checks again under its lock).
    async fn refuse_noted_misfits(&self) -> Result<()> {
        if self.plan.engine == crate::plan::Engine::Update {
            for t in &self.plan.tables {
                let Some(query) = ops::widen_integer::misfit_query(t) else {
                    continue;
                };
                let row = self
                    .worker
                    .query_opt(query.as_str(), &[])
                    .await
                    .map_err(Error::db(format!(
                        "could not look up the rows of {} whose values did not convert",
                        t.display()
                    )))?;
                if let Some(row) = row {
                    let found = crate::backfill::misfit::Misfit {
                        key: row.get(0),
                        reason: row.get(1),
                    };
                    return Err(crate::backfill::misfit_error(
                        self.name(),
                        &t.display(),
                        &found,
                        crate::plan::copy::Direction::Forward,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The cutover transaction; it marks the phase itself, atomically.
    pub async fn cutover(&self) -> Result<Duration> {
        let step = ops::cutover(&self.plan, &state::cutover_marker(self.name()));
        let Action::Transaction { statements } = &step.action else {
            unreachable!("cutover is a transaction")
        };
        let tables = ops::locked_tables(&self.plan);
        // The copy engine replays under the cutover's lock what was written
        // since the last replay: catch up first, so that is milliseconds' worth.
        for t in self.plan.copy.iter().flat_map(|c| &c.tables) {
            self.replay(
                &self.worker,
                (&t.replay_forward, &t.log_forward),
                ops::copy_swap::LEFT_FOR_THE_LOCK,
                &format!("replay the rows written in {} before cutover", t.display()),
            )
            .await?;
        }
        self.refuse_noted_misfits().await?;
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
        let no_way_back = self.plan.no_way_back();
        if !no_way_back.is_empty() {
            return Err(Error::Refused(format!(
                "cannot roll back {} after cutover: no way to convert back {}. Nothing was changed; keep the migration, \
                 or give the way back in the file (`-- pgshift:down USING <expression>`) before you apply it",
                self.name(),
                no_way_back.join("; ")
            )));
        }
        for (table, column, sql) in ops::misfits(&self.plan) {
            let row = self
                .worker
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!(
                    "could not check {table}.{column} before rollback"
                )))?;
            let (count, smallest): (i64, Option<String>) = (row.get(0), row.get(1));
            let converted = self.plan.tables.iter().any(|t| {
                t.display() == table
                    && t.columns
                        .iter()
                        .any(|c| c.name == column && c.conversion.is_some())
            });
            if count > 0 && converted {
                return Err(Error::Refused(format!(
                    "cannot roll back {}: {count} rows of {table}.{column} written after cutover do not convert back                      to the old type (the first: the row with {}). Nothing was changed and the migration stays cut                      over; fix those rows and run `pgshift rollback {}` again, or keep the migration",
                    self.name(),
                    smallest.unwrap_or_default(),
                    self.name()
                )));
            }
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
        for (table, column, sql) in ops::copy_swap::key_round_trips(&self.plan) {
            let row = self
                .worker
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!(
                    "could not check the keys of {table}.{column} before rollback"
                )))?;
            let (count, first): (i64, Option<String>) = (row.get(0), row.get(1));
            if count > 0 {
                return Err(Error::Refused(format!(
                    "cannot roll back {} after cutover: {count} keys of {table}.{column} do not come back as they were \
                     when converted and converted back (the first: {}), so the original's rows of those keys cannot be \
                     found from the new table's. Nothing was changed; keep the migration, or give an exact way back \
                     (`-- pgshift:down USING <expression>`) the next time",
                    self.name(),
                    first.unwrap_or_default()
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
                ops::copy_swap::LEFT_FOR_THE_LOCK,
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

    /// Records a failure in the state table (best effort).
    pub async fn record_error(&self, error: &Error) {
        state::record_error(&self.lifeline, self.name(), &error.to_string()).await;
    }
}

/// Milliseconds to a tenth, as the events and notes give them.
fn tenths_of_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
