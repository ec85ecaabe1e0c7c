//! The step runner: walks a migration through its phases, persisting the
//! phase before acting so that a crash anywhere leaves a state `resume` and
//! `rollback` understand.

mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

pub use retry::LockPolicy;

use crate::backfill;
use crate::error::{Error, Result};
use crate::ops::{widen_integer, Action, Step};
use crate::output::Printer;
use crate::plan::Plan;
use crate::state::{self, Phase};

/// What a run needs: two connections (a worker for long work, a lifeline
/// for state and the advisory lock), the policies, and a stop flag.
pub struct Runner {
    /// Holds the advisory lock and writes state; never blocked by long work.
    pub lifeline: Client,
    /// Runs DDL, index builds and backfill batches.
    pub worker: Client,
    pub plan: Plan,
    pub lock: LockPolicy,
    pub backfill: backfill::Settings,
    pub printer: Printer,
    /// Set by Ctrl-C: stop after the current batch or step.
    pub interrupted: Arc<AtomicBool>,
}

impl Runner {
    fn name(&self) -> &str {
        &self.plan.migration
    }

    /// Runs from `phase` up to `ready`, then through cutover unless `stop_at_ready`.
    pub async fn forward(&self, mut phase: Phase, stop_at_ready: bool) -> Result<Phase> {
        loop {
            self.check_interrupt()?;
            let next = match phase {
                Phase::Expanding => {
                    self.run_steps(&widen_integer::expand(&self.plan)).await?;
                    Phase::Backfilling
                }
                Phase::Backfilling => {
                    self.run_steps(&widen_integer::backfill(&self.plan)).await?;
                    Phase::Validating
                }
                Phase::Validating => {
                    self.run_steps(&widen_integer::validate(&self.plan)).await?;
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
            self.printer.note(format!("{}: {next}", self.name()));
            phase = next;
        }
    }

    /// The cutover transaction; it marks the phase itself, atomically.
    pub async fn cutover(&self) -> Result<Duration> {
        let step = widen_integer::cutover(&self.plan, &state::cutover_marker(self.name()));
        let Action::Transaction { statements } = &step.action else {
            unreachable!("cutover is a transaction")
        };
        let held = retry::transaction(&self.worker, statements, &self.lock, "cutover").await?;
        self.printer.note(format!(
            "{}: cut over in {} ms (locks held)",
            self.name(),
            held.as_millis()
        ));
        Ok(held)
    }

    /// Drops the retired columns and the reverse sync; irreversible.
    pub async fn finalize(&self) -> Result<()> {
        self.run_steps(&widen_integer::finalize(&self.plan)).await?;
        state::set_phase(&self.lifeline, self.name(), Phase::Finalized).await
    }

    /// Rollback before cutover: drop what pgshift created. Idempotent.
    pub async fn abort(&self) -> Result<()> {
        self.run_steps(&widen_integer::abort(&self.plan)).await?;
        state::set_phase(&self.lifeline, self.name(), Phase::RolledBack).await
    }

    /// Rollback after cutover: refuse if new values no longer fit the old
    /// type, prepare without blocking, swap back in one short transaction,
    /// then drop the bigint columns. Returns how long the swap held its locks.
    pub async fn revert(&self) -> Result<Duration> {
        for (table, column, sql) in widen_integer::revert::misfits(&self.plan) {
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
        self.run_steps(&widen_integer::revert::prepare(&self.plan))
            .await?;
        let swap = widen_integer::revert::swap_back(
            &self.plan,
            &state::phase_marker(self.name(), Phase::RolledBack),
        );
        let Action::Transaction { statements } = &swap.action else {
            unreachable!("the swap back is a transaction")
        };
        let held =
            retry::transaction(&self.worker, statements, &self.lock, "rollback swap").await?;
        self.printer.note(format!(
            "{}: swapped back in {} ms (locks held)",
            self.name(),
            held.as_millis()
        ));
        self.cleanup_after_revert().await?;
        Ok(held)
    }

    /// Drops what a swap-back left (idempotent; also finishes an interrupted rollback).
    pub async fn cleanup_after_revert(&self) -> Result<()> {
        self.run_steps(&widen_integer::revert::cleanup(&self.plan))
            .await
    }

    fn check_interrupt(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Error::Runtime(format!(
                "interrupted; state is saved: run `pgshift resume {0}` to continue or `pgshift rollback {0}` to undo",
                self.name()
            )));
        }
        Ok(())
    }

    async fn run_steps(&self, steps: &[Step]) -> Result<()> {
        for step in steps {
            self.check_interrupt()?;
            tracing::info!("{}", step.description);
            tracing::debug!("{}", step.sql);
            self.run_step(step).await?;
        }
        Ok(())
    }

    async fn run_step(&self, step: &Step) -> Result<()> {
        match &step.action {
            Action::Ddl { skip_if } => {
                if let Some(check) = skip_if {
                    let done: bool = self
                        .worker
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
                retry::ddl(&self.worker, &step.sql, &self.lock, &step.description).await
            }
            Action::BuildIndex { schema, index } => self.build_index(step, schema, index).await,
            Action::DropIndex => self.concurrently(&step.sql, &step.description).await,
            Action::Backfill { table } => {
                let t = self.plan.table(*table).ok_or_else(|| {
                    Error::Runtime(format!("table oid {table} is not in the plan"))
                })?;
                backfill::run(
                    &self.worker,
                    self.name(),
                    t,
                    &self.backfill,
                    &self.printer,
                    &self.interrupted,
                )
                .await
            }
            Action::Verify { table } => self.verify(*table, step).await,
            Action::Transaction { statements } => {
                retry::transaction(&self.worker, statements, &self.lock, &step.description)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// `CONCURRENTLY` statements wait for older transactions to end. Those
    /// waits and their SHARE UPDATE EXCLUSIVE lock do not block the
    /// application's reads and writes, so no lock_timeout applies: a timeout
    /// here would only leave an invalid index behind.
    async fn concurrently(&self, sql: &str, what: &str) -> Result<()> {
        // Separate calls: several statements in one call form an implicit
        // transaction block, which CONCURRENTLY refuses.
        let run = async {
            self.worker.batch_execute("SET lock_timeout = 0").await?;
            let result = self.worker.batch_execute(sql).await;
            self.worker
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    self.lock.lock_timeout.as_millis()
                ))
                .await?;
            result
        };
        run.await.map_err(Error::db(format!("{what} failed")))
    }

    async fn build_index(&self, step: &Step, schema: &str, index: &str) -> Result<()> {
        let valid: Option<bool> = self
            .worker
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
                self.concurrently(&drop, "drop the invalid index").await?;
            }
            None => {}
        }
        self.concurrently(&step.sql, &step.description).await
    }

    async fn verify(&self, table: u32, step: &Step) -> Result<()> {
        let count = |sql: String| async move {
            self.worker
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
        backfill::run(
            &self.worker,
            self.name(),
            t,
            &self.backfill,
            &self.printer,
            &self.interrupted,
        )
        .await?;
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
