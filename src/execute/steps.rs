//! Running a phase's steps: one at a time on the worker, or a table per
//! connection (lanes), each under the lock policy, with the steps that need
//! more than one statement (concurrent builds, replays, verification).

use super::*;

impl Runner {
    pub(super) async fn run_steps(&self, steps: &[Step]) -> Result<()> {
        let mut i = 0;
        while i < steps.len() {
            self.check_interrupt()?;
            // A run of lane steps: its lanes in parallel.
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

    /// Runs lanes with a connection each (up to the pool's size); each
    /// lane's steps keep their order. A connection takes the next lane that
    /// may start, largest table first, so one big table does not end up
    /// behind smaller ones on the same connection; a lane of a later stage
    /// may start once its table's lanes of earlier stages are done (other
    /// tables' lanes may still run).
    pub(super) async fn run_lanes(&self, steps: &[Step]) -> Result<()> {
        let mut lanes: Vec<(ops::Lane, Vec<&Step>)> = Vec::new();
        for s in steps {
            let lane = s.lane.expect("only lane steps here");
            match lanes.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, v)) => v.push(s),
                None => lanes.push((lane, vec![s])),
            }
        }
        let size = |oid: u32| match self.plan.table(oid) {
            Some(t) => t.estimated_rows,
            None => self.plan.leaf(oid).map_or(0, |(t, _)| t.estimated_rows),
        };
        lanes.sort_by_key(|(lane, _)| (lane.stage, std::cmp::Reverse(size(lane.table))));
        let connections = lanes.len().min(self.workers);
        let board = std::sync::Mutex::new(LaneBoard {
            waiting: lanes,
            running: Vec::new(),
        });
        let moved = tokio::sync::Notify::new();
        let mut extra = Vec::new();
        for _ in 1..connections {
            extra.push(self.extra_worker().await?);
        }
        let work = (0..connections).map(|c| {
            let client: &Client = if c == 0 { &self.worker } else { &extra[c - 1] };
            let (board, moved) = (&board, &moved);
            async move {
                loop {
                    // Registered before looking, so a lane finishing in
                    // between still wakes this connection.
                    let notified = moved.notified();
                    let next = board.lock().expect("lane board").take();
                    let (lane, steps) = match next {
                        Taken::Lane(lane, steps) => (lane, steps),
                        Taken::Wait => {
                            notified.await;
                            continue;
                        }
                        Taken::Done => return Ok::<(), Error>(()),
                    };
                    let result = async {
                        for step in steps {
                            self.check_interrupt()?;
                            tracing::info!("{}", step.description);
                            self.run_step(client, step).await?;
                        }
                        Ok::<(), Error>(())
                    }
                    .await;
                    board.lock().expect("lane board").finish(lane);
                    moved.notify_waiters();
                    result?;
                }
            }
        });
        futures_util::future::try_join_all(work).await.map(|_| ())
    }

    /// Cancels autovacuum on `tables` before we ask for a strong lock, asking
    /// on `client` (the connection about to ask for the lock).
    pub(super) async fn cancel_autovacuum(&self, client: &Client, tables: &[String]) {
        let pids = guard::cancel_autovacuum(client, tables).await;
        if !pids.is_empty() {
            tracing::info!("cancelled autovacuum (pids {pids:?}) so it does not hold up our lock");
            self.events
                .emit("autovacuum_cancelled", json!({"pids": pids}));
        }
    }

    /// Runs one step and reports it as a `step` event with its duration, so
    /// an application stall can be matched to the statement behind it.
    pub(super) async fn run_step(&self, client: &Client, step: &Step) -> Result<()> {
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

    pub(super) async fn execute_step(&self, client: &Client, step: &Step) -> Result<()> {
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
                if let Some(t) = self.plan.table(*table) {
                    return backfill::run(self, t).await;
                }
                let (t, copy) = self.plan.leaf(*table).ok_or_else(|| {
                    Error::Runtime(format!("table oid {table} is not in the plan"))
                })?;
                // On its lane's connection, beside the other leaves' lanes.
                let workers = if step.lane.is_some() && self.workers > 1 {
                    1
                } else {
                    self.workers
                };
                backfill::run_leaf(self, client, workers, &t, &copy).await
            }
            Action::Verify { table } => self.verify(client, *table, step).await,
            Action::Replay { function, log } => {
                // Less than a round may stay: the catch-up before the
                // cutover replays the rest.
                let leave = ops::copy_swap::REPLAY_BATCH - 1;
                self.replay(client, (function, log), leave, &step.description)
                    .await
            }
            Action::Vacuum { cost_delay_ms } => self.vacuum(client, step, *cost_delay_ms).await,
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

    /// Runs a `VACUUM` step paced by `vacuum_cost_delay` (a manual VACUUM
    /// runs unpaced by default), set for the session around it: the
    /// connection goes back to the pool after.
    async fn vacuum(&self, client: &Client, step: &Step, cost_delay_ms: u32) -> Result<()> {
        client
            .batch_execute(&format!("SET vacuum_cost_delay = {cost_delay_ms}"))
            .await
            .map_err(Error::db("could not set vacuum_cost_delay"))?;
        let done = retry::ddl(
            client,
            &step.sql,
            &self.lock,
            &step.description,
            Some(&self.events),
        )
        .await;
        let reset = client
            .batch_execute("RESET vacuum_cost_delay")
            .await
            .map_err(Error::db("could not reset vacuum_cost_delay"));
        done.and(reset)
    }

    /// `CONCURRENTLY` statements wait for older transactions to end. Those
    /// waits and their SHARE UPDATE EXCLUSIVE lock do not block the
    /// application's reads and writes, so no lock_timeout applies: a timeout
    /// here would only leave an invalid index behind.
    pub(super) async fn concurrently(&self, client: &Client, sql: &str, what: &str) -> Result<()> {
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

    pub(super) async fn build_index(
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

    /// Replays a copy's log in rounds of at most
    /// [`ops::copy_swap::REPLAY_BATCH`] entries, each its own transaction,
    /// until at most `leave` entries are left. A round counts the distinct
    /// keys it took, fewer than the entries when a key was written twice, so
    /// the log itself says whether to go on: stopping at the first round of
    /// fewer keys than a batch once left 40,000 entries to a cutover, which
    /// held its lock 826 ms.
    pub(super) async fn replay(
        &self,
        client: &Client,
        (function, log): (&str, &str),
        leave: i64,
        description: &str,
    ) -> Result<()> {
        let sql = format!("SELECT {function}($1)");
        // Counts no further than one past `leave`: the log may be long.
        let pending_sql = format!("SELECT count(*) FROM (SELECT FROM {log} LIMIT $1) pending");
        let mut keys = 0i64;
        let left = loop {
            self.check_interrupt()?;
            let taken: i64 = match client
                .query_one(sql.as_str(), &[&ops::copy_swap::REPLAY_BATCH])
                .await
            {
                Ok(row) => row.get(0),
                Err(e) => return Err(self.replay_error(client, function, e, description).await),
            };
            keys += taken;
            let pending: i64 = client
                .query_one(pending_sql.as_str(), &[&(leave + 1)])
                .await
                .map_err(Error::db(format!("`{description}` failed")))?
                .get(0);
            if taken == 0 || pending <= leave {
                break pending;
            }
        };
        self.events.emit(
            "replayed",
            json!({"step": description, "keys": keys, "left": left}),
        );
        Ok(())
    }

    /// A replay's failure; for a value that does not convert, the row it is.
    async fn replay_error(
        &self,
        client: &Client,
        function: &str,
        e: tokio_postgres::Error,
        description: &str,
    ) -> Error {
        use crate::backfill::misfit;
        use crate::plan::copy::Direction;
        let found = self.plan.copy.iter().flat_map(|c| &c.tables).find_map(|t| {
            if t.replay_forward == function {
                Some((t, Direction::Forward, &t.log_forward))
            } else if t.replay_back == function {
                Some((t, Direction::Back, &t.log_back))
            } else {
                None
            }
        });
        match found {
            Some((t, way, log)) if !t.conversions.is_empty() && misfit::is_conversion_error(&e) => {
                match misfit::find(
                    client,
                    t,
                    way,
                    None,
                    &self.plan.conversion_settings,
                    &misfit::logged_keys(t, log),
                    &[],
                )
                .await
                {
                    Ok(Some(m)) => {
                        crate::backfill::misfit_error(self.name(), &t.display(), &m, way)
                    }
                    _ => Error::db(format!("`{description}` failed"))(e),
                }
            }
            _ => Error::db(format!("`{description}` failed"))(e),
        }
    }

    pub(super) async fn verify(&self, client: &Client, table: u32, step: &Step) -> Result<()> {
        // A conversion compares with the settings the plan fixed.
        let settings = match self.plan.table(table) {
            Some(t) if ops::widen_integer::converts(t) => {
                crate::catalog::rehearse::settings_suffix(&self.plan.conversion_settings)
            }
            _ => String::new(),
        };
        let count = |sql: String| {
            let settings = settings.clone();
            async move {
                client
                    .batch_execute(&format!("BEGIN{settings}"))
                    .await
                    .map_err(Error::db("could not begin the verification"))?;
                let counted = client
                    .query_one(sql.as_str(), &[])
                    .await
                    .map(|r| r.get::<_, i64>(0));
                let end = if counted.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                let _ = client.batch_execute(end).await;
                counted.map_err(Error::db("verification query failed"))
            }
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
}

/// The lanes of a run: those not started yet, in the order to take them,
/// and those running.
struct LaneBoard<'a> {
    waiting: Vec<(ops::Lane, Vec<&'a Step>)>,
    running: Vec<ops::Lane>,
}

enum Taken<'a> {
    Lane(ops::Lane, Vec<&'a Step>),
    /// Lanes are left, but each waits for its table's earlier stages.
    Wait,
    Done,
}

impl<'a> LaneBoard<'a> {
    fn take(&mut self) -> Taken<'a> {
        if self.waiting.is_empty() {
            return Taken::Done;
        }
        let earlier_of = |lane: &ops::Lane, other: &ops::Lane| {
            other.table == lane.table && other.stage < lane.stage
        };
        let ready = self.waiting.iter().position(|(lane, _)| {
            !self.running.iter().any(|r| earlier_of(lane, r))
                && !self.waiting.iter().any(|(w, _)| earlier_of(lane, w))
        });
        match ready {
            Some(i) => {
                let (lane, steps) = self.waiting.remove(i);
                self.running.push(lane);
                Taken::Lane(lane, steps)
            }
            None => Taken::Wait,
        }
    }

    fn finish(&mut self, lane: ops::Lane) {
        self.running.retain(|r| *r != lane);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(table: u32, strand: u32, stage: u32) -> ops::Lane {
        ops::Lane {
            table,
            strand,
            stage,
        }
    }

    fn taken(t: Taken) -> Option<ops::Lane> {
        match t {
            Taken::Lane(l, _) => Some(l),
            Taken::Wait => None,
            Taken::Done => panic!("nothing left"),
        }
    }

    #[test]
    fn a_later_stage_waits_for_its_own_table_only() {
        let mut board = LaneBoard {
            waiting: vec![
                (lane(1, 1, 0), vec![]),
                (lane(2, 1, 0), vec![]),
                (lane(1, 0, 1), vec![]),
                (lane(2, 0, 1), vec![]),
            ],
            running: vec![],
        };
        assert_eq!(taken(board.take()), Some(lane(1, 1, 0)));
        assert_eq!(taken(board.take()), Some(lane(2, 1, 0)));
        // Both builds running: neither table's second stage may start.
        assert_eq!(taken(board.take()), None);
        board.finish(lane(1, 1, 0));
        assert_eq!(taken(board.take()), Some(lane(1, 0, 1)));
        assert_eq!(taken(board.take()), None);
        board.finish(lane(2, 1, 0));
        assert_eq!(taken(board.take()), Some(lane(2, 0, 1)));
        assert!(matches!(board.take(), Taken::Done));
    }
}
