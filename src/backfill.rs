//! The batched backfill: copy old into new columns in primary-key order.
//!
//! Each batch is one short transaction that also moves the checkpoint, so a
//! crash resumes exactly where the last committed batch ended. The batch
//! skips rows already equal (the sync trigger filled them), and `UPDATE OF`
//! on the trigger means our own updates never fire it.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::execute::Runner;
use crate::names::quote;
use crate::ops::widen_integer::differs;
use crate::plan::TablePlan;

/// Knobs of the backfill.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A fixed batch size; None sizes batches to hold `target`.
    pub fixed_batch: Option<i64>,
    /// How long one batch should take: it holds row locks on its rows, so
    /// this is about the longest an application update waits for it.
    pub target: Duration,
    pub min_batch: i64,
    pub max_batch: i64,
    pub max_rows_per_second: Option<u64>,
}

impl Settings {
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

/// The last key of the next batch: `OFFSET batch-1` on the primary key index.
pub fn bound_sql(t: &TablePlan, with_lower: bool) -> String {
    // Aliased: `ORDER BY "id"` would otherwise sort by the text output column.
    let texts: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text AS pgshift_k{i}", quote(&k.name)))
        .collect();
    let order: Vec<String> = t.key.iter().map(|k| quote(&k.name)).collect();
    let (filter, offset_param) = if with_lower {
        (
            format!(" WHERE {} > {}", keys(t), params(t, 1)),
            t.key.len() + 1,
        )
    } else {
        (String::new(), 1)
    };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY {} OFFSET ${offset_param} LIMIT 1",
        texts.join(", "),
        t.qualified(),
        order.join(", ")
    )
}

/// One batch: rows in `(lower, upper]` whose new columns still differ.
pub fn batch_sql(t: &TablePlan, with_lower: bool) -> String {
    batch_sql_bounded(t, with_lower, true)
}

fn batch_sql_bounded(t: &TablePlan, with_lower: bool, with_upper: bool) -> String {
    let sets: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{} = {}", quote(&c.shadow), quote(&c.name)))
        .collect();
    let mut conds = Vec::new();
    let mut next = 1;
    if with_lower {
        conds.push(format!("{} > {}", keys(t), params(t, next)));
        next += t.key.len();
    }
    if with_upper {
        conds.push(format!("{} <= {}", keys(t), params(t, next)));
    }
    conds.push(format!("({})", differs(t)));
    format!(
        "UPDATE {} SET {} WHERE {}",
        t.qualified(),
        sets.join(", "),
        conds.join(" AND ")
    )
}

/// Fills the shadow columns of one table, resuming from its checkpoint.
pub async fn run(runner: &Runner, t: &TablePlan) -> Result<()> {
    let client: &Client = &runner.worker;
    let migration = runner.name();
    let settings = &runner.backfill;
    client
        .execute(
            "INSERT INTO pgshift.backfill (migration, table_oid, rows_total)
             VALUES ($1, $2, GREATEST((SELECT reltuples::bigint FROM pg_class WHERE oid = $2), 0))
             ON CONFLICT DO NOTHING",
            &[&migration, &t.oid],
        )
        .await
        .map_err(Error::db("could not create the backfill checkpoint"))?;
    let row = client
        .query_one(
            "SELECT cursor, rows_done, rows_total, done FROM pgshift.backfill WHERE migration = $1 AND table_oid = $2",
            &[&migration, &t.oid],
        )
        .await
        .map_err(Error::db("could not read the backfill checkpoint"))?;
    let mut lower: Option<Vec<String>> = row.get(0);
    let done: bool = row.get(3);
    if done {
        return Ok(());
    }
    let mut progress = runner.printer.progress(
        &t.display(),
        row.get::<_, i64>(2).max(1) as u64,
        row.get::<_, i64>(1) as u64,
    );
    let mut batch = settings.first_batch();
    let timeout_ms = settings.statement_timeout().as_millis();
    let mut last_event = Instant::now();

    loop {
        if let Err(e) = runner.throttle().await {
            progress.finish();
            return Err(e);
        }
        let started = Instant::now();
        let upper = next_bound(client, t, lower.as_deref(), batch).await?;
        let sql = batch_sql_bounded(t, lower.is_some(), upper.is_some());
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(lo) = &lower {
            args.extend(lo.iter().map(|v| v as &(dyn ToSql + Sync)));
        }
        if let Some(hi) = &upper {
            args.extend(hi.iter().map(|v| v as &(dyn ToSql + Sync)));
        }
        let is_last = upper.is_none();
        let outcome = async {
            client
                .batch_execute(&format!("BEGIN; SET LOCAL statement_timeout = {timeout_ms}"))
                .await?;
            let updated = client.execute(&sql, &args).await?;
            let scanned = if is_last { updated as i64 } else { batch };
            client
                .execute(
                    "UPDATE pgshift.backfill SET cursor = $3, rows_done = rows_done + $4, done = $5,
                         rows_total = CASE WHEN $5 THEN rows_done + $4 ELSE GREATEST(rows_total, rows_done + $4) END
                     WHERE migration = $1 AND table_oid = $2",
                    &[&migration, &t.oid, &upper, &scanned, &is_last],
                )
                .await?;
            client.batch_execute("COMMIT").await?;
            Ok::<i64, tokio_postgres::Error>(scanned)
        }
        .await;
        match outcome {
            Ok(scanned) => {
                let took = started.elapsed();
                progress.advance(scanned as u64);
                if last_event.elapsed() >= Duration::from_secs(5) {
                    last_event = Instant::now();
                    runner.events.emit(
                        "progress",
                        serde_json::json!({"table": t.display(), "rows_done": progress.done(), "rows_per_second": progress.rate().round(), "batch": batch}),
                    );
                }
                if is_last {
                    progress.finish();
                    return Ok(());
                }
                lower = upper;
                let pause = settings.pace(scanned, took);
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

async fn next_bound(
    client: &Client,
    t: &TablePlan,
    lower: Option<&[String]>,
    batch: i64,
) -> Result<Option<Vec<String>>> {
    let sql = bound_sql(t, lower.is_some());
    let offset = batch - 1;
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(lo) = lower {
        args.extend(lo.iter().map(|v| v as &(dyn ToSql + Sync)));
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
            "UPDATE pgshift.backfill SET cursor = NULL, done = false, rows_done = 0 WHERE migration = $1 AND table_oid = $2",
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
            target: Duration::from_millis(100),
            min_batch: 100,
            max_batch: 50_000,
            max_rows_per_second: None,
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
}
