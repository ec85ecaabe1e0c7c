//! What happens around the cutover: the plan-check gate before it, and the
//! watch window (with automatic rollback) after it.

use super::*;

/// Runs up to `ready`, then (unless told to stop there) the plan check when
/// a replica or clone is given, then the cutover, then the watch window.
pub(super) async fn forward_with_gate(
    global: &GlobalArgs,
    printer: &Printer,
    runner: &Runner,
    phase: Phase,
    stop_at_ready: bool,
    workload: &WorkloadArgs,
    watch: &WatchArgs,
) -> Result<Phase> {
    let since = match watch.watch {
        Some(_) => Some(guard::watch::snapshot(&runner.lifeline).await?),
        None => None,
    };
    let phase = runner.forward(phase, true).await?;
    if phase != Phase::Ready || stop_at_ready {
        return Ok(phase);
    }
    if let (Some(url), false) = (&global.replica_url, workload.accept_plan_changes) {
        let target = Target::parse(url, "--replica-url")?
            .connect("pgshift check")
            .await?;
        let standby = wait_for_replay(&runner.lifeline, &target).await?;
        let result = run_check(&target, standby, &runner.plan, workload).await?;
        if result.regressions > 0 {
            printer
                .report(&CheckReport(result.clone()))
                .map_err(io_error)?;
            return Err(Error::Refused(format!(
                "stopped at ready: {} of {} queries would get worse plans after cutover (see the report). \
                 Fix the cause, or run `pgshift cutover {} --accept-plan-changes`",
                result.regressions,
                result.queries.len(),
                runner.plan.migration
            )));
        }
        printer.note(format!(
            "plan check: {} queries, no regression",
            result.queries.len()
        ));
    }
    let before_cutover = match watch.watch {
        Some(_) => Some(guard::watch::snapshot(&runner.lifeline).await?),
        None => None,
    };
    runner.cutover().await?;
    if let (Some(window), Some(since), Some(cut)) = (watch.watch, since, before_cutover) {
        watch_window(printer, runner, window, &since, &cut, watch).await?;
    }
    Ok(Phase::CutOver)
}

/// Stays attached after cutover; rolls back by itself when a statement got
/// much slower than before the cutover, or free connections ran low.
pub(super) async fn watch_window(
    printer: &Printer,
    runner: &Runner,
    window: Duration,
    since: &guard::watch::Snapshot,
    cut: &guard::watch::Snapshot,
    watch: &WatchArgs,
) -> Result<()> {
    // The workload as it was before pgshift started (means since statistics
    // were last reset): the migration's own load would inflate a baseline taken
    // during it. Statements first seen during the migration use that window.
    let mut baseline = guard::watch::window(&guard::watch::Snapshot::default(), since);
    for (q, v) in guard::watch::window(since, cut) {
        baseline.entry(q).or_insert(v);
    }
    printer.note(format!(
        "{}: watching for {} ({} statements in the baseline)",
        runner.name(),
        humantime::format_duration(window),
        baseline.len()
    ));
    let deadline = Instant::now() + window;
    let mut worst: Option<(f64, String)> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        runner.check_interrupt()?;
        let now = guard::watch::snapshot(&runner.lifeline).await?;
        let after = guard::watch::window(cut, &now);
        if let Some(w) = guard::watch::worst(&baseline, &after) {
            if worst.as_ref().is_none_or(|(r, _)| w.0 > *r) {
                worst = Some(w);
            }
        }
        let mut why = guard::watch::slowdown(&baseline, &after, watch.watch_max_latency_ratio);
        if why.is_none() {
            let h = guard::Headroom::read(&runner.lifeline).await?;
            let min_free = watch
                .watch_min_free_connections
                .unwrap_or_else(|| runner.limits.min_free(h.max_connections));
            if h.free() < min_free {
                why = Some(format!(
                    "only {} connection slots are free (in use {} of {}), below {min_free}",
                    h.free(),
                    h.in_use,
                    h.max_connections
                ));
            }
        }
        if let Some(why) = why {
            tracing::warn!("watch window: {why}; rolling back");
            runner
                .events
                .emit("watch_breach", serde_json::json!({"reason": why}));
            let held = runner.revert().await?;
            return Err(Error::Refused(format!(
                "watch window: {why}. Rolled back automatically through the lifeline (the swap held its locks {} ms); \
                 every write since cutover is kept",
                held.as_millis()
            )));
        }
    }
    printer.note(match worst {
        Some((ratio, q)) => format!(
            "{}: watch window passed; the most slowed statement ran at {ratio:.1}× its time before: `{}`",
            runner.name(),
            q.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        None => format!("{}: watch window passed (too few calls to compare)", runner.name()),
    });
    Ok(())
}

/// On a hot standby, waits until it has replayed what the primary wrote so far
/// (the shadow indexes and their statistics). Returns whether it is a standby.
pub(super) async fn wait_for_replay(primary: &Client, target: &Client) -> Result<bool> {
    if !is_standby(target).await? {
        return Ok(false);
    }
    // The insert position, not the write position: with synchronous_commit
    // off, the last commits (our ANALYZE among them) may not be written yet,
    // and waiting for less would let the check run without their statistics.
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(Error::db("could not read the primary's WAL position"))?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up: bool = target
            .query_one(
                "SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .await
            .map_err(Error::db("could not read the standby's replay position"))?
            .get(0);
        if caught_up {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Err(Error::Refused(
                "the standby did not replay the migration's shadow columns within 2 minutes; the plan check cannot run there".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
