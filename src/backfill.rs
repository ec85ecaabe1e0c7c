//! The batched backfill: copy old into new columns in primary-key order.
//!
//! Each batch is one short transaction that also moves the checkpoint, so a
//! crash resumes exactly where the last committed batch ended. The batch
//! skips rows already equal (the sync trigger filled them), and `UPDATE OF`
//! on the trigger means our own updates never fire it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::names::quote;
use crate::ops::widen_integer::differs;
use crate::output::Printer;
use crate::plan::TablePlan;

/// Knobs of the backfill.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: i64,
    /// Bounds one batch; a batch that hits it is retried at half the size.
    pub statement_timeout: Duration,
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
pub async fn run(
    client: &Client,
    migration: &str,
    t: &TablePlan,
    settings: &Settings,
    printer: &Printer,
    interrupted: &Arc<AtomicBool>,
) -> Result<()> {
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
    let mut progress = printer.progress(
        &t.display(),
        row.get::<_, i64>(2).max(1) as u64,
        row.get::<_, i64>(1) as u64,
    );
    let mut batch = settings.batch_size;
    let timeout_ms = settings.statement_timeout.as_millis();

    loop {
        if interrupted.load(Ordering::SeqCst) {
            progress.finish();
            return Err(Error::Runtime(format!(
                "interrupted during the backfill of {}; progress is saved: run `pgshift resume {migration}`",
                t.display()
            )));
        }
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
                progress.advance(scanned as u64);
                if is_last {
                    progress.finish();
                    return Ok(());
                }
                lower = upper;
            }
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) && batch > 100 => {
                let _ = client.batch_execute("ROLLBACK").await;
                batch = (batch / 2).max(100);
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
