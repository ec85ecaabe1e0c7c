//! Finding the row whose value does not convert to the new type, when a
//! copy batch or a replay fails on one: the DBA gets the table, the key of
//! the row and Postgres's reason, instead of a batch's error.
//!
//! Each candidate row is converted into the target inside a savepoint that
//! is always rolled back, so the search writes nothing.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error as PgError};

use crate::names::quote;
use crate::plan::copy::{CopyTable, Direction};

/// The row that did not convert: its key as `col = value, …`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub key: String,
    pub reason: String,
}

/// Whether `e` is a value that does not convert: a data exception (class
/// 22: invalid input, value too long, out of range), a CHECK or NOT NULL
/// the converted value breaks.
pub fn is_conversion_error(e: &PgError) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("22") || c == "23514" || c == "23502"
    })
}

/// The candidate keys (texts, in key order) from `candidates_sql` run with
/// `args`, converted one by one into the target of `way` (or `into`).
pub async fn find(
    client: &Client,
    t: &CopyTable,
    way: Direction,
    into: Option<&str>,
    settings: &[(String, String)],
    candidates_sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Option<Misfit>, PgError> {
    let keys = t.key_columns();
    let target = match (into, way) {
        (Some(table), _) => table.to_string(),
        (None, Direction::Forward) => t.qualified_new(),
        (None, Direction::Back) => t.qualified_old(),
    };
    let cols: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
    // The key as a text parameter, in the source's type; in the target,
    // converted when the key's type changes.
    let param = |i: usize, k: &crate::plan::copy::CopyKey| {
        format!("${}::text::{}", i + 1, k.log_type_of(way))
    };
    let matches: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} = {}", quote(&k.name), param(i, k)))
        .collect();
    let matches = matches.join(" AND ");
    let in_target: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let value = match k.to_target(way) {
                Some(expr) => crate::ops::copy_swap::key_expression(
                    t,
                    &k.name,
                    expr,
                    &param(i, k),
                    Some(k.target_type(way)),
                ),
                None => param(i, k),
            };
            format!("{} = {value}", quote(&k.name))
        })
        .collect();
    let in_target = in_target.join(" AND ");
    // The target's row of the key goes first (a replay replaces it).
    let probe = [
        format!("DELETE FROM {target} WHERE {in_target}"),
        format!(
            "INSERT INTO {target} ({}) SELECT {} FROM {}{} WHERE {matches}",
            cols.join(", "),
            t.select_list(way),
            t.only(),
            t.qualified()
        ),
    ];
    // With the settings the conversion runs with.
    let mut begin = vec!["BEGIN".to_string()];
    begin.extend(crate::catalog::rehearse::apply_settings(settings));
    client.batch_execute(&begin.join(";\n")).await?;
    let outcome = async {
        let rows = client.query(candidates_sql, args).await?;
        for row in rows {
            let values: Vec<Option<String>> = (0..keys.len()).map(|i| row.get(i)).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            client.batch_execute("SAVEPOINT pgshift_probe").await?;
            let [delete, insert] = &probe;
            // A key that does not convert is in no row of the target (the
            // replays leave it out the same way): only its row can fail.
            if let Err(e) = client.execute(delete.as_str(), &params).await {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT pgshift_probe")
                    .await?;
                if !is_conversion_error(&e) {
                    return Err(e);
                }
            }
            let failed = client.execute(insert.as_str(), &params).await.err();
            client
                .batch_execute("ROLLBACK TO SAVEPOINT pgshift_probe")
                .await?;
            match failed {
                Some(e) if is_conversion_error(&e) => {
                    let key: Vec<String> = keys
                        .iter()
                        .zip(&values)
                        .map(|(k, v)| format!("{} = {}", k.name, v.as_deref().unwrap_or("NULL")))
                        .collect();
                    let reason = e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string());
                    return Ok(Some(Misfit {
                        key: key.join(", "),
                        reason,
                    }));
                }
                Some(e) => return Err(e),
                None => {}
            }
        }
        Ok(None)
    }
    .await;
    let _ = client.batch_execute("ROLLBACK").await;
    outcome
}

/// The keys waiting in a change log, as texts: where a failed replay's
/// row is.
pub fn logged_keys(t: &CopyTable, log: &str) -> String {
    let cols: Vec<String> = t
        .log_columns()
        .iter()
        .map(|c| format!("{c}::text"))
        .collect();
    // The round that failed took the oldest entries.
    format!(
        "SELECT DISTINCT {} FROM (SELECT * FROM {log} ORDER BY seq LIMIT {}) k",
        cols.join(", "),
        crate::ops::copy_swap::REPLAY_BATCH
    )
}

/// The update engine's search: the first row in the batch's range `(lower,
/// upper]` whose value does not convert, by the check function the sync
/// made (it tries each conversion in a block of its own; nothing is written).
pub async fn find_in_place(
    client: &Client,
    t: &crate::plan::TablePlan,
    with_lower: bool,
    with_upper: bool,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Option<Misfit>, PgError> {
    let sql = super::sql::first_misfit_sql(t, with_lower, with_upper);
    Ok(client.query_opt(&sql, args).await?.map(|r| Misfit {
        key: r.get(0),
        reason: r.get(1),
    }))
}
