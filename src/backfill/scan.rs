//! `plan --scan-values`: reads every row of the tables whose columns
//! convert and finds the values that would not, before anything changes.
//!
//! Each batch converts its rows into a temporary table in a transaction
//! that is rolled back: Postgres applies exactly the conversion the copy
//! will (the `USING` expression, assigned to the new type, with the plan's
//! settings), and nothing is written but temporary pages. Batches rest as
//! long as they ran, so the scan takes at most half of one core's time.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::misfit;
use super::sql::{convert_sql_bounded, keys_in_range, range_args};
use crate::catalog::rehearse::{alter_clause, settings_suffix};
use crate::error::{Error, Result};
use crate::plan::copy::Direction;
use crate::plan::Plan;

/// Rows each batch of the scan reads.
const SCAN_BATCH: i64 = 10_000;

const SCRATCH: &str = "pg_temp.pgshift_scan";

/// What the scan found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ValueCheck {
    pub rows_read: i64,
    /// The first row of each table that does not convert.
    pub misfits: Vec<TableMisfit>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableMisfit {
    pub table: String,
    pub key: String,
    pub reason: String,
}

pub async fn scan(client: &Client, plan: &Plan) -> Result<ValueCheck> {
    let mut out = ValueCheck::default();
    let Some(copy) = &plan.copy else {
        return Ok(out);
    };
    for c in copy.tables.iter().filter(|c| !c.conversions.is_empty()) {
        let Some(t) = plan.table(c.oid) else { continue };
        let context = || format!("could not scan the values of {}", t.display());
        // The copy's columns, empty, to convert into.
        let mut setup = vec![
            format!("DROP TABLE IF EXISTS {SCRATCH}"),
            format!(
                "CREATE TEMP TABLE pgshift_scan (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                t.qualified()
            ),
        ];
        let alters: Vec<String> = t
            .columns
            .iter()
            .filter_map(|col| {
                let v = col.conversion.as_ref()?;
                Some(alter_clause(
                    &col.name,
                    &v.to_type,
                    v.collation.as_deref(),
                    Some("NULL"),
                ))
            })
            .collect();
        setup.push(format!("ALTER TABLE {SCRATCH} {}", alters.join(", ")));
        client
            .batch_execute(&setup.join(";\n"))
            .await
            .map_err(Error::db(context()))?;
        let settings = settings_suffix(&plan.conversion_settings);
        let mut lower: Option<Vec<String>> = None;
        loop {
            let upper = super::next_bound(client, t, lower.as_deref(), None, SCAN_BATCH).await?;
            let insert = convert_sql_bounded(t, c, SCRATCH, lower.is_some(), upper.is_some());
            let args = range_args(lower.as_deref(), upper.as_deref());
            let started = Instant::now();
            client
                .batch_execute(&format!("BEGIN READ WRITE{settings}"))
                .await
                .map_err(Error::db(context()))?;
            let converted = client.execute(insert.as_str(), &args).await;
            let _ = client.batch_execute("ROLLBACK").await;
            match converted {
                Ok(n) => out.rows_read += n as i64,
                Err(e) if misfit::is_conversion_error(&e) => {
                    let (candidates, _) = keys_in_range(t, lower.is_some(), upper.is_some());
                    let found = misfit::find(
                        client,
                        c,
                        Direction::Forward,
                        Some(SCRATCH),
                        &plan.conversion_settings,
                        &candidates,
                        &args,
                    )
                    .await
                    .map_err(Error::db(context()))?;
                    let m = found.unwrap_or(misfit::Misfit {
                        key: "(not found again)".into(),
                        reason: e
                            .as_db_error()
                            .map(|d| d.message().to_string())
                            .unwrap_or_default(),
                    });
                    out.misfits.push(TableMisfit {
                        table: t.display(),
                        key: m.key,
                        reason: m.reason,
                    });
                    break;
                }
                Err(e) => return Err(Error::db(context())(e)),
            }
            if upper.is_none() {
                break;
            }
            lower = upper;
            tokio::time::sleep(started.elapsed()).await;
        }
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {SCRATCH}"))
            .await
            .map_err(Error::db(context()))?;
    }
    Ok(out)
}
