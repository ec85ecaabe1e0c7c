//! The batched backfill: copy old into new columns in primary-key order
//! (the update engine), or the rows into the copy (the copy engine).
//!
//! Each batch is one short transaction that also moves the checkpoint, so a
//! crash resumes exactly where the last committed batch ended. The batch
//! skips rows already equal (the sync trigger filled them). The sync
//! trigger's `UPDATE OF` and `WHEN` mean our own updates never fire it.
//!
//! Here: key ranges and their checkpoints, and the workers that run them;
//! `settings` sizes the batches, `sql` writes them, `pass` splits a large
//! range in two passes.

mod pass;
mod settings;
mod sql;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::execute::Runner;
use crate::hint_bits::HintBits;
use crate::output::Progress;
use crate::plan::copy::{CopyTable, Direction};
use crate::plan::{BackfillShape, TablePlan};
use pass::{first_pass, Pass};
pub use settings::{Settings, COPY_TARGET, UPDATE_TARGET};
pub mod misfit;
pub mod scan;

pub use sql::{batch_sql, bound_sql, columns_to_assign, copy_sql};
use sql::{batch_sql_bounded, copy_sql_bounded};

/// One disjoint key range of a table, as checkpointed.
#[derive(Debug, Clone)]
struct Part {
    part: i32,
    /// Where the part begins (exclusive): the previous part's `upper`.
    start: Option<Vec<String>>,
    /// Last key done (exclusive lower bound of what is left); None: from the start.
    cursor: Option<Vec<String>>,
    /// Last key of the part; None: to the end of the table.
    upper: Option<Vec<String>>,
    pass: Pass,
}
/// Fills the shadow columns of one table, resuming from its checkpoints;
/// with more than one worker in the pool, disjoint key ranges in parallel.
pub async fn run(runner: &Runner, t: &TablePlan) -> Result<()> {
    run_on(runner, &runner.worker, runner.workers, t).await
}

/// `run` on `client`, split into at most `workers` parts; the parts past the
/// first take more connections from the pool.
pub async fn run_on(runner: &Runner, client: &Client, workers: usize, t: &TablePlan) -> Result<()> {
    let copy = runner
        .plan
        .copy
        .as_ref()
        .and_then(|c| c.tables.iter().find(|c| c.oid == t.oid));
    run_with(runner, client, workers, t, copy).await
}

/// The copy engine's backfill of one leaf of a partitioned table: `t` and
/// `copy` name the leaf and its copy (see `CopyTable::for_leaf`).
pub async fn run_leaf(
    runner: &Runner,
    client: &Client,
    workers: usize,
    t: &TablePlan,
    copy: &CopyTable,
) -> Result<()> {
    run_with(runner, client, workers, t, Some(copy)).await
}

async fn run_with(
    runner: &Runner,
    client: &Client,
    workers: usize,
    t: &TablePlan,
    copy: Option<&CopyTable>,
) -> Result<()> {
    let (parts, done_rows, total_rows) = ensure_parts(runner, client, workers, t).await?;
    if parts.is_empty() {
        return Ok(());
    }
    runner.calibrate_commit_limit(false).await?;
    let progress = Mutex::new(runner.printer.progress(
        &t.display(),
        total_rows.max(1) as u64,
        done_rows as u64,
    ));
    // The first part runs on the runner's worker, the others on more pooled connections.
    let mut extra = Vec::new();
    for _ in 1..parts.len() {
        extra.push(runner.extra_worker().await?);
    }
    let assign = match copy {
        Some(_) => Vec::new(),
        None => columns_to_assign(client, t).await?,
    };
    tracing::debug!(
        "{}: each batch also assigns [{}] to themselves (no bottom-up index deletion)",
        t.display(),
        assign.join(", ")
    );
    let work = parts.iter().enumerate().map(|(i, part)| {
        let c: &Client = if i == 0 { client } else { &extra[i - 1] };
        run_part(runner, c, t, copy, part, &assign, &progress)
    });
    let result = futures_util::future::try_join_all(work).await;
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
    result.map(|_| ())
}

/// Reads the table's unfinished parts and its (rows done, rows in all),
/// creating the parts on first run: with W workers, W ranges cut at key
/// quantiles read from the primary-key index.
async fn ensure_parts(
    runner: &Runner,
    client: &Client,
    workers: usize,
    t: &TablePlan,
) -> Result<(Vec<Part>, i64, i64)> {
    let migration = runner.name();
    let existing = client
        .query(
            "SELECT part, cursor, upper, done, rows_done, rows_total, pass
             FROM pgshift.backfill WHERE migration = $1 AND table_oid = $2 ORDER BY part",
            &[&migration, &t.oid],
        )
        .await
        .map_err(Error::db("could not read the backfill checkpoint"))?;
    if !existing.is_empty() {
        let done = existing.iter().map(|r| r.get::<_, i64>(4)).sum();
        let total = existing.iter().map(|r| r.get::<_, i64>(5)).sum();
        // Parts are contiguous: each starts where the one before it ends.
        let mut start = None;
        let mut parts = Vec::new();
        for r in &existing {
            let upper: Option<Vec<String>> = r.get(2);
            if !r.get::<_, bool>(3) {
                parts.push(Part {
                    part: r.get(0),
                    start: start.clone(),
                    cursor: r.get(1),
                    upper: upper.clone(),
                    pass: Pass::from_db(r.get(6)),
                });
            }
            start = upper;
        }
        return Ok((parts, done, total));
    }
    let estimate: i64 = client
        .query_one(
            "SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = $1",
            &[&t.oid],
        )
        .await
        .map_err(Error::db("could not estimate the table size"))?
        .get(0);
    let shape = BackfillShape {
        workers,
        two_pass_above: runner.backfill.two_pass_above,
    };
    let workers = workers.max(1) as i64;
    let mut bounds: Vec<Vec<String>> = Vec::new();
    let from_statistics = if shape.splits(estimate) {
        key_quantiles_from_statistics(client, t, workers).await
    } else {
        None
    };
    if let Some(cut) = from_statistics {
        bounds = cut;
    } else if shape.splits(estimate) {
        let sql = bound_sql(t, false, false);
        for i in 1..workers {
            let offset = estimate * i / workers;
            let row = client
                .query_opt(sql.as_str(), &[&offset])
                .await
                .map_err(Error::db(format!(
                    "could not split {} into key ranges",
                    t.display()
                )))?;
            if let Some(r) = row {
                let key: Vec<String> = (0..t.key.len()).map(|k| r.get::<_, String>(k)).collect();
                if bounds.last() != Some(&key) {
                    bounds.push(key);
                }
            }
        }
    }
    let share = estimate / (bounds.len() as i64 + 1);
    // A copy has no dead versions to make room for: one pass.
    let pass = match runner.plan.engine {
        crate::plan::Engine::Copy => Pass::Full,
        crate::plan::Engine::Update => first_pass(t, share, &runner.backfill),
    };
    let mut parts = Vec::new();
    let mut start: Option<Vec<String>> = None;
    for (i, end) in bounds
        .iter()
        .map(Some)
        .chain(std::iter::once(None))
        .enumerate()
    {
        let part = Part {
            part: i as i32,
            start: start.clone(),
            cursor: start.clone(),
            upper: end.cloned(),
            pass,
        };
        client
            .execute(
                "INSERT INTO pgshift.backfill (migration, table_oid, part, cursor, upper, rows_total, pass)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[&migration, &t.oid, &part.part, &part.cursor, &part.upper, &share, &pass.to_db()],
            )
            .await
            .map_err(Error::db("could not create the backfill checkpoint"))?;
        start = end.cloned();
        parts.push(part);
    }
    Ok((parts, 0, share * (bounds.len() as i64 + 1)))
}

/// Where to cut a one-column key into `workers` ranges, from the
/// histogram `ANALYZE` keeps of it: milliseconds, where walking the key's
/// index to an offset reads half of it first (0.3 s at 5M rows). Only
/// from fresh statistics (fewer rows changed since than a tenth of the
/// table's): cuts from stale ones could leave one worker most of the rows.
/// None: cut by offsets.
async fn key_quantiles_from_statistics(
    client: &Client,
    t: &TablePlan,
    workers: i64,
) -> Option<Vec<Vec<String>>> {
    let [key] = t.key.as_slice() else {
        return None;
    };
    let row = client
        .query_opt(
            "SELECT s.histogram_bounds::text::text[]
             FROM pg_catalog.pg_stats s
             JOIN pg_catalog.pg_stat_all_tables a ON a.schemaname = s.schemaname AND a.relname = s.tablename
             JOIN pg_catalog.pg_class c ON c.oid = a.relid
             WHERE a.relid = $1 AND s.attname = $2 AND NOT s.inherited
               AND a.n_mod_since_analyze <= GREATEST(c.reltuples, 0) / 10",
            &[&t.oid, &key.name],
        )
        .await
        .ok()??;
    let histogram: Vec<Option<String>> = row.get::<_, Option<Vec<Option<String>>>>(0)?;
    let histogram: Vec<String> = histogram.into_iter().collect::<Option<_>>()?;
    // Each bucket holds about as many rows: cut at every len/workers-th bound.
    let buckets = histogram.len() as i64 - 1;
    if buckets < workers {
        return None;
    }
    let mut cuts: Vec<Vec<String>> = Vec::new();
    for i in 1..workers {
        let bound = vec![histogram[(buckets * i / workers) as usize].clone()];
        if cuts.last() != Some(&bound) {
            cuts.push(bound);
        }
    }
    Some(cuts)
}

async fn run_part(
    runner: &Runner,
    client: &Client,
    t: &TablePlan,
    copy: Option<&CopyTable>,
    part: &Part,
    assign: &[String],
    progress: &Mutex<Progress>,
) -> Result<()> {
    let migration = runner.name();
    let settings = &runner.backfill.for_engine(copy.is_some());
    let mut lower = part.cursor.clone();
    let mut pass = part.pass;
    let mut batch = settings.first_batch();
    let timeout_ms = settings.statement_timeout().as_millis();
    let mut last_event = Instant::now();
    let began = Instant::now();
    // Where the WAL stood, and since when; read only under a WAL cap, so
    // an uncapped batch costs no extra round trip.
    let mut wal_mark = match settings.max_wal_per_second {
        Some(_) => Some((wal_position(client).await?, Instant::now())),
        None => None,
    };
    // Only while the commit probe paces the copy: the marks keep the later
    // index builds and validation from writing the copy again, outside the
    // pacing (the application's over-goal transactions halved at 10M rows),
    // but at full speed they cost more than they save (1M rows, unthrottled:
    // 8.4 s against 6.8–7.8 s without, the blocking ALTER 5.5–6.9 s).
    let mut hints = copy
        .filter(|_| runner.limits.max_commit_latency.is_some())
        .map(HintBits::new);
    // A batch that converts values runs with the settings the plan fixed.
    let conversion: String = match copy {
        Some(c) if !c.conversions.is_empty() => {
            crate::catalog::rehearse::settings_suffix(&runner.plan.conversion_settings)
        }
        None if crate::ops::widen_integer::converts(t) => {
            crate::catalog::rehearse::settings_suffix(&runner.plan.conversion_settings)
        }
        _ => String::new(),
    };
    loop {
        runner.throttle().await?;
        let started = Instant::now();
        let found = next_bound(client, t, lower.as_deref(), part.upper.as_deref(), batch).await?;
        let is_last = found.is_none();
        let upper = found.or_else(|| part.upper.clone());
        let sql = match copy {
            Some(c) => copy_sql_bounded(t, c, lower.is_some(), upper.is_some()),
            None => batch_sql_bounded(t, lower.is_some(), upper.is_some(), assign, pass),
        };
        // The end of the even-key pass starts the rest from the part's
        // beginning, in the same transaction as its last batch.
        let (next_cursor, next_pass, finished) = match (is_last, pass) {
            (true, Pass::EvenKeys) => (part.start.clone(), Pass::Rest, false),
            (true, _) => (upper.clone(), pass, true),
            (false, _) => (upper.clone(), pass, false),
        };
        let args = sql::range_args(lower.as_deref(), upper.as_deref());
        let work = async {
            // An update batch's commit does not wait for its WAL flush: a
            // crash can lose only the last batches together with their
            // checkpoint, which resume redoes. A copy batch's waits for the
            // local flush (not for a synchronous standby), whatever the
            // server's setting, so that the next batch can mark its rows
            // committed (see hint_bits).
            let commit = if hints.is_some() { "local" } else { "off" };
            client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL synchronous_commit = {commit}{conversion}"
                ))
                .await?;
            let first_page = match &hints {
                Some(h) => Some(h.before_batch(client).await?),
                None => None,
            };
            let updated = client.execute(&sql, &args).await?;
            let scanned = pass.counted(if is_last { updated as i64 } else { batch });
            client
                .execute(
                    "UPDATE pgshift.backfill SET cursor = $4, rows_done = rows_done + $5, done = $6,
                         rows_total = GREATEST(rows_total, rows_done + $5), pass = $7
                     WHERE migration = $1 AND table_oid = $2 AND part = $3",
                    &[&migration, &t.oid, &part.part, &next_cursor, &scanned, &finished, &next_pass.to_db()],
                )
                .await?;
            client.batch_execute("COMMIT").await?;
            Ok::<(i64, Option<i64>), tokio_postgres::Error>((scanned, first_page))
        };
        let (outcome, probe) =
            futures_util::future::join(work, runner.probe_commit(settings.target / 2)).await;
        let probe = probe?;
        match outcome {
            Ok((scanned, first_page)) => {
                if let (Some(h), Some(page)) = (hints.as_mut(), first_page) {
                    h.committed(page);
                }
                let took = started.elapsed();
                let (done, rate) = {
                    let mut p = progress.lock().expect("progress");
                    p.advance(scanned as u64);
                    (p.done(), p.rate())
                };
                if last_event.elapsed() >= Duration::from_secs(5) {
                    last_event = Instant::now();
                    runner.events.emit(
                        "progress",
                        serde_json::json!({"table": t.display(), "part": part.part, "rows_done": done,
                                           "rows_per_second": rate.round(), "batch": batch}),
                    );
                }
                if finished {
                    if let Some(h) = hints.as_mut() {
                        h.finish(client).await.map_err(Error::db(format!(
                            "could not read the last rows copied into {}",
                            t.display()
                        )))?;
                    }
                    // When each part ends shows how evenly the key ranges
                    // split the work: a worker whose part is done waits
                    // for the table's other parts.
                    runner.events.emit(
                        "part_done",
                        serde_json::json!({"table": t.display(), "part": part.part,
                                           "seconds": (began.elapsed().as_secs_f64() * 10.0).round() / 10.0}),
                    );
                    return Ok(());
                }
                if next_pass != pass {
                    tracing::debug!("{}: part {} starts its second pass", t.display(), part.part);
                }
                pass = next_pass;
                lower = next_cursor;
                let mut pause = settings
                    .pace(scanned, took)
                    .max(runner.rest_after_batch(took, probe));
                if let Some((at, since)) = wal_mark {
                    let now = wal_position(client).await?;
                    pause = pause.max(settings.wal_rest(now - at, since.elapsed()));
                    wal_mark = Some((now, Instant::now() + pause));
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                batch = settings.next_batch(batch, took);
            }
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) && batch > settings.min_batch => {
                let _ = client.batch_execute("ROLLBACK").await;
                batch = (batch / 2).max(settings.min_batch);
                tracing::warn!(
                    "a backfill batch of {} hit the statement timeout; retrying with {batch} rows",
                    t.display()
                );
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                if let Some(c) =
                    copy.filter(|c| !c.conversions.is_empty() && misfit::is_conversion_error(&e))
                {
                    // The batch's rows, in key order, one of which does not convert.
                    let (candidates, _) = sql::keys_in_range(t, lower.is_some(), upper.is_some());
                    if let Some(found) = misfit::find(
                        client,
                        c,
                        Direction::Forward,
                        None,
                        &runner.plan.conversion_settings,
                        &candidates,
                        &args,
                    )
                    .await
                    .map_err(Error::db(format!(
                        "could not find the row of {} that does not convert",
                        t.display()
                    )))? {
                        return Err(misfit_error(
                            runner.name(),
                            &t.display(),
                            &found,
                            Direction::Forward,
                        ));
                    }
                }
                if copy.is_none()
                    && crate::ops::widen_integer::converts(t)
                    && misfit::is_conversion_error(&e)
                {
                    let found =
                        misfit::find_in_place(client, t, lower.is_some(), upper.is_some(), &args)
                            .await
                            .map_err(Error::db(format!(
                                "could not find the row of {} that does not convert",
                                t.display()
                            )))?;
                    if let Some(found) = found {
                        return Err(misfit_error(
                            runner.name(),
                            &t.display(),
                            &found,
                            Direction::Forward,
                        ));
                    }
                }
                if copy.is_none() {
                    if let Some(refusal) = broken_constraint(runner.name(), &t.display(), &e) {
                        return Err(refusal);
                    }
                }
                return Err(Error::db(format!(
                    "backfill batch of {} failed",
                    t.display()
                ))(e));
            }
        }
    }
}

/// The update engine's batch updated a row that breaks a NOT VALID
/// constraint (Postgres checks it on every updated row): the row, named by
/// Postgres's detail, is the user's to fix; nothing the application uses
/// has changed.
fn broken_constraint(migration: &str, table: &str, e: &tokio_postgres::Error) -> Option<Error> {
    let db = e.as_db_error()?;
    if !matches!(
        db.code(),
        &SqlState::CHECK_VIOLATION | &SqlState::NOT_NULL_VIOLATION
    ) {
        return None;
    }
    let constraint = db
        .constraint()
        .map(|c| format!("constraint {c}"))
        .unwrap_or_else(|| format!("the NOT NULL of column {}", db.column().unwrap_or("?")));
    Some(Error::Refused(format!(
        "a row of {table} breaks the NOT VALID {constraint}, which Postgres checks on every row the update engine's \
         backfill updates ({}{}). The application's tables are unchanged; fix the row and run `pgshift resume {migration}`, \
         or run `pgshift rollback {migration}` and apply with --engine copy, which keeps the constraint NOT VALID",
        db.message(),
        db.detail().map(|d| format!("; {d}")).unwrap_or_default(),
    )))
}

/// The refusal for a row that does not convert: nothing the application
/// uses has changed.
pub fn misfit_error(migration: &str, table: &str, found: &misfit::Misfit, way: Direction) -> Error {
    Error::Refused(match way {
        Direction::Forward => format!(
            "the row of {table} with {} does not convert to the new type: {}. The application's tables are unchanged; \
             fix the row and run `pgshift resume {migration}`, or run `pgshift rollback {migration}`",
            found.key, found.reason
        ),
        Direction::Back => format!(
            "the row of {table} with {} (written after cutover) does not convert back to the old type: {}. Nothing was \
             changed and the migration stays cut over; fix the row and run `pgshift rollback {migration}` again, or keep \
             the migration",
            found.key, found.reason
        ),
    })
}

/// The server's WAL insert position, in bytes.
async fn wal_position(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
        .await
        .map_err(Error::db("could not read the WAL position"))?
        .get(0))
}

pub(crate) async fn next_bound(
    client: &Client,
    t: &TablePlan,
    lower: Option<&[String]>,
    upper: Option<&[String]>,
    batch: i64,
) -> Result<Option<Vec<String>>> {
    let sql = bound_sql(t, lower.is_some(), upper.is_some());
    let offset = batch - 1;
    let mut args = sql::range_args(lower, upper);
    args.push(&offset);
    let row = client
        .query_opt(&sql, &args)
        .await
        .map_err(Error::db(format!(
            "could not find the next backfill batch of {}",
            t.display()
        )))?;
    Ok(row.map(|r| (0..t.key.len()).map(|i| r.get::<_, String>(i)).collect()))
}

/// Restarts a table's backfill from the beginning (after a failed verification).
pub async fn reset(client: &Client, migration: &str, table: u32) -> Result<()> {
    client
        .execute(
            "DELETE FROM pgshift.backfill WHERE migration = $1 AND table_oid = $2",
            &[&migration, &table],
        )
        .await
        .map_err(Error::db("could not reset the backfill checkpoint"))?;
    Ok(())
}
