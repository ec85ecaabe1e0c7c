//! The batched backfill: copy old into new columns in primary-key order.
//!
//! Each batch is one short transaction that also moves the checkpoint, so a
//! crash resumes exactly where the last committed batch ended. The batch
//! skips rows already equal (the sync trigger filled them). The sync
//! trigger's `UPDATE OF` and `WHEN` mean our own updates never fire it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::execute::Runner;
use crate::hint_bits::HintBits;
use crate::names::quote;
use crate::ops::widen_integer::differs;
use crate::output::Progress;
use crate::plan::copy::CopyTable;
use crate::plan::{BackfillShape, TablePlan};

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

    fn first_batch(&self) -> i64 {
        self.fixed_batch.unwrap_or(1000).clamp(1, i64::MAX)
    }

    /// Bounds one batch; a batch that hits it is retried at half the size.
    fn statement_timeout(&self) -> Duration {
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

fn keys(t: &TablePlan) -> String {
    let cols: Vec<String> = t.key.iter().map(|k| quote(&k.name)).collect();
    format!("({})", cols.join(", "))
}

/// `($n::text::type, …)`, so any key type travels as text.
fn params(t: &TablePlan, first: usize) -> String {
    let ps: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("${}::text::{}", first + i, k.type_name))
        .collect();
    format!("({})", ps.join(", "))
}

/// `key > $n` and `key <= $m` for the bounds given, and the number of the
/// next free parameter.
fn key_range(t: &TablePlan, with_lower: bool, with_upper: bool) -> (Vec<String>, usize) {
    let mut conds = Vec::new();
    let mut next = 1;
    if with_lower {
        conds.push(format!("{} > {}", keys(t), params(t, next)));
        next += t.key.len();
    }
    if with_upper {
        conds.push(format!("{} <= {}", keys(t), params(t, next)));
        next += t.key.len();
    }
    (conds, next)
}

/// The last key of the next batch: `OFFSET batch-1` on the primary key
/// index, within `(lower, upper]` when they are given.
pub fn bound_sql(t: &TablePlan, with_lower: bool, with_upper: bool) -> String {
    // Aliased: `ORDER BY "id"` would otherwise sort by the text output column.
    let texts: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text AS pgshift_k{i}", quote(&k.name)))
        .collect();
    let order: Vec<String> = t.key.iter().map(|k| quote(&k.name)).collect();
    let (conds, next) = key_range(t, with_lower, with_upper);
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY {} OFFSET ${next} LIMIT 1",
        texts.join(", "),
        t.qualified(),
        order.join(", ")
    )
}

/// One batch: rows in `(lower, upper]` whose new columns still differ.
/// (At run time the batch also assigns some indexed columns to themselves:
/// see [`columns_to_assign`].)
pub fn batch_sql(t: &TablePlan, with_lower: bool) -> String {
    batch_sql_bounded(t, with_lower, true, &[], Pass::Full)
}

/// One batch of the copy engine: the rows in `(lower, upper]` inserted
/// into the copy. A plain read: the application's writes to these rows
/// neither wait for it nor are lost (the capture logs them).
pub fn copy_sql(t: &TablePlan, c: &CopyTable, with_lower: bool) -> String {
    copy_sql_bounded(t, c, with_lower, true)
}

fn copy_sql_bounded(t: &TablePlan, c: &CopyTable, with_lower: bool, with_upper: bool) -> String {
    let (conds, _) = key_range(t, with_lower, with_upper);
    let cols = c
        .columns
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM ONLY {}{}",
        c.qualified_new(),
        t.qualified(),
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        }
    )
}

fn batch_sql_bounded(
    t: &TablePlan,
    with_lower: bool,
    with_upper: bool,
    assign: &[String],
    pass: Pass,
) -> String {
    let sets: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{} = {}", quote(&c.shadow), quote(&c.name)))
        .chain(
            assign
                .iter()
                .map(|c| format!("{} = {}", quote(c), quote(c))),
        )
        .collect();
    let (mut conds, _) = key_range(t, with_lower, with_upper);
    if pass == Pass::EvenKeys {
        conds.push(format!("{} % 2 = 0", quote(&t.key[0].name)));
    }
    conds.push(format!("({})", differs(t)));
    format!(
        "UPDATE {} SET {} WHERE {}",
        t.qualified(),
        sets.join(", "),
        conds.join(" AND ")
    )
}

/// Indexed columns each batch assigns to themselves, one per index.
///
/// An UPDATE that assigns none of an index's columns hints the btree that
/// its entry is "logically unchanged"; a full leaf page then first tries to
/// delete older versions of the same rows (bottom-up deletion), reading heap
/// pages to check them. In a backfill that mostly fails: the old versions
/// are the batch's own, or a replica's feedback still needs them. Measured
/// on 800k rows in 100k batches (two runs each), the attempts cost 10% of
/// the time with a snapshot held open and 23% without. Assigning a column to itself drops the hint; the values,
/// HOT and the row lock's strength stay the same (Postgres compares values).
/// Left out: columns that cannot be assigned (generated, identity ALWAYS),
/// columns that generated columns are computed from, the shadow columns,
/// and columns named in a trigger's `UPDATE OF` (other than pgshift's own,
/// whose `WHEN` skips unchanged values).
pub async fn columns_to_assign(client: &Client, t: &TablePlan) -> Result<Vec<String>> {
    let shadows: Vec<&str> = t.columns.iter().map(|c| c.shadow.as_str()).collect();
    let rows = client
        .query(
            r"SELECT DISTINCT pick.attname::text
              FROM pg_index i
              CROSS JOIN LATERAL (
                  SELECT a.attname
                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE a.attgenerated = '' AND a.attidentity <> 'a'
                    AND a.attname <> ALL ($2::text[])
                    AND NOT EXISTS (SELECT 1 FROM pg_trigger tg
                                    WHERE tg.tgrelid = i.indrelid AND tg.tgname NOT LIKE 'pgshift\_%'
                                      AND a.attnum = ANY (tg.tgattr::int2[]))
                    AND NOT EXISTS (SELECT 1 FROM pg_attrdef ad
                                    JOIN pg_attribute g ON g.attrelid = ad.adrelid AND g.attnum = ad.adnum
                                    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                    WHERE ad.adrelid = i.indrelid AND g.attgenerated <> ''
                                      AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid
                                      AND d.refobjsubid = a.attnum)
                  ORDER BY k.n
                  LIMIT 1) pick
              WHERE i.indrelid = $1
              ORDER BY 1",
            &[&t.oid, &shadows],
        )
        .await
        .map_err(Error::db(format!(
            "could not read the indexes of {}",
            t.display()
        )))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

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

/// Which pass over its key range a part is in, as checkpointed.
///
/// A backfill update on a full page puts the new version on another page:
/// a lock record, a new entry in every index. In two passes, the first
/// moves the rows with even keys away; once their old versions are
/// prunable, the second pass's new versions fit in their place, HOT. The
/// second pass is the full one (rows already copied are skipped), so a
/// resume in it never needs to know what the first did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The first of two passes: even keys only.
    EvenKeys,
    /// The second of two passes: the whole range, even keys already done.
    Rest,
    /// The only pass.
    Full,
}

impl Pass {
    fn from_db(pass: i16) -> Pass {
        match pass {
            0 => Pass::EvenKeys,
            2 => Pass::Rest,
            _ => Pass::Full,
        }
    }

    fn to_db(self) -> i16 {
        match self {
            Pass::EvenKeys => 0,
            Pass::Full => 1,
            Pass::Rest => 2,
        }
    }

    /// The rows `scanned` rows of this pass count for: each of two passes
    /// counts half, so progress reaches the range's size once, at the end
    /// of the second.
    fn counted(self, scanned: i64) -> i64 {
        match self {
            Pass::Full => scanned,
            Pass::EvenKeys => scanned / 2,
            Pass::Rest => scanned - scanned / 2,
        }
    }
}

/// Whether a key range of `rows` rows of `t` starts with the even-key pass
/// (see `--two-pass-above` and [`BackfillShape::two_passes`]).
fn first_pass(t: &TablePlan, rows: i64, settings: &Settings) -> Pass {
    let shape = BackfillShape {
        workers: 1,
        two_pass_above: settings.two_pass_above,
    };
    if shape.two_passes(&t.key, rows) {
        Pass::EvenKeys
    } else {
        Pass::Full
    }
}

/// Fills the shadow columns of one table, resuming from its checkpoints;
/// with more than one worker in the pool, disjoint key ranges in parallel.
pub async fn run(runner: &Runner, t: &TablePlan) -> Result<()> {
    run_on(runner, &runner.worker, runner.workers, t).await
}

/// `run` on `client`, split into at most `workers` parts; the parts past the
/// first take more connections from the pool.
pub async fn run_on(runner: &Runner, client: &Client, workers: usize, t: &TablePlan) -> Result<()> {
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
    let copy = runner
        .plan
        .copy
        .as_ref()
        .and_then(|c| c.tables.iter().find(|c| c.oid == t.oid));
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
    if shape.splits(estimate) {
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
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(lo) = &lower {
            args.extend(lo.iter().map(|v| v as &(dyn ToSql + Sync)));
        }
        if let Some(hi) = &upper {
            args.extend(hi.iter().map(|v| v as &(dyn ToSql + Sync)));
        }
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
                    "BEGIN; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL synchronous_commit = {commit}"
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
                return Err(Error::db(format!(
                    "backfill batch of {} failed",
                    t.display()
                ))(e));
            }
        }
    }
}

/// The server's WAL insert position, in bytes.
async fn wal_position(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
        .await
        .map_err(Error::db("could not read the WAL position"))?
        .get(0))
}

async fn next_bound(
    client: &Client,
    t: &TablePlan,
    lower: Option<&[String]>,
    upper: Option<&[String]>,
    batch: i64,
) -> Result<Option<Vec<String>>> {
    let sql = bound_sql(t, lower.is_some(), upper.is_some());
    let offset = batch - 1;
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(lo) = lower {
        args.extend(lo.iter().map(|v| v as &(dyn ToSql + Sync)));
    }
    if let Some(hi) = upper {
        args.extend(hi.iter().map(|v| v as &(dyn ToSql + Sync)));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive() -> Settings {
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

    #[test]
    fn only_large_ranges_with_one_integer_key_go_in_two_passes() {
        let catalog = crate::plan::tests::incident();
        let p = crate::plan::tests::plan(&catalog, &[(1, "id")]);
        let mut t = p.tables[0].clone();
        assert_eq!(t.key.len(), 1, "{:?}", t.key);
        let settings = Settings {
            two_pass_above: 1_000,
            ..adaptive()
        };
        for ty in ["smallint", "integer", "bigint"] {
            t.key[0].type_name = ty.into();
            assert_eq!(first_pass(&t, 1_000, &settings), Pass::EvenKeys, "{ty}");
            assert_eq!(first_pass(&t, 999, &settings), Pass::Full, "{ty}");
        }
        let never = Settings {
            two_pass_above: 0,
            ..adaptive()
        };
        assert_eq!(first_pass(&t, i64::MAX, &never), Pass::Full);
        // No parity to split on.
        t.key[0].type_name = "uuid".into();
        assert_eq!(first_pass(&t, 1_000_000, &settings), Pass::Full);
        t.key[0].type_name = "integer".into();
        t.key.push(t.key[0].clone());
        assert_eq!(first_pass(&t, 1_000_000, &settings), Pass::Full);
    }

    #[test]
    fn the_pass_survives_the_checkpoint_table() {
        for pass in [Pass::EvenKeys, Pass::Rest, Pass::Full] {
            assert_eq!(Pass::from_db(pass.to_db()), pass);
        }
        // Rows written before passes existed default to 1: the full pass.
        assert_eq!(Pass::from_db(1), Pass::Full);
    }
}
