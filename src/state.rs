//! Migration state persisted in the target database (schema `pgshift`), so
//! that a crash at any point leaves something `resume` and `rollback` read.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::plan::Plan;

/// Where a migration stands. `status` shows these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Expanding,
    Backfilling,
    Validating,
    Ready,
    CutOver,
    Finalized,
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expanding => "expanding",
            Phase::Backfilling => "backfilling",
            Phase::Validating => "validating",
            Phase::Ready => "ready",
            Phase::CutOver => "cut_over",
            Phase::Finalized => "finalized",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// Before cutover: rollback only drops what pgshift added.
    pub fn before_cutover(self) -> bool {
        self < Phase::CutOver
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Phase> {
        Ok(match s {
            "expanding" => Phase::Expanding,
            "backfilling" => Phase::Backfilling,
            "validating" => Phase::Validating,
            "ready" => Phase::Ready,
            "cut_over" => Phase::CutOver,
            "finalized" => Phase::Finalized,
            "rolled_back" => Phase::RolledBack,
            other => {
                return Err(Error::Runtime(format!(
                    "unknown phase {other:?} in pgshift.migrations"
                )))
            }
        })
    }
}

const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    path        text NOT NULL,
    phase       text NOT NULL,
    plan        jsonb NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    pause_reason text,
    last_error  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    cutover_at  timestamptz
);
-- One row per disjoint key range (part) of a table: parallel workers each
-- own a part; `cursor` is the last key done, `upper` the part's last key.
CREATE TABLE IF NOT EXISTS pgshift.backfill (
    migration   text NOT NULL REFERENCES pgshift.migrations (name) ON DELETE CASCADE,
    table_oid   oid NOT NULL,
    part        int NOT NULL DEFAULT 0,
    cursor      text[],
    upper       text[],
    rows_done   bigint NOT NULL DEFAULT 0,
    rows_total  bigint NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (migration, table_oid, part)
);
ALTER TABLE pgshift.migrations ADD COLUMN IF NOT EXISTS pause_requested boolean NOT NULL DEFAULT false;
ALTER TABLE pgshift.migrations ADD COLUMN IF NOT EXISTS request text;
-- 0: the first of two passes (even keys only); 2: the second; 1: the only pass.
ALTER TABLE pgshift.backfill ADD COLUMN IF NOT EXISTS pass smallint NOT NULL DEFAULT 1;";

/// Creates the state schema and tables if missing.
pub async fn ensure_schema(client: &Client) -> Result<()> {
    // Two pgshift processes starting at once would race on CREATE IF NOT EXISTS.
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_lock(hashtext('pgshift'), 0); {SCHEMA_SQL} SELECT pg_advisory_unlock(hashtext('pgshift'), 0);"
        ))
        .await
        .map_err(Error::db("could not create the pgshift state schema"))
}

/// Whether the state schema exists (read-only commands must not create it).
pub async fn exists(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass('pgshift.migrations') IS NOT NULL", &[])
        .await
        .map_err(Error::db("could not look for the pgshift state"))?
        .get(0))
}

#[derive(Debug, Clone, Serialize)]
pub struct Backfill {
    pub table: String,
    pub rows_done: i64,
    pub rows_total: i64,
    pub done: bool,
}

/// One row of `pgshift.migrations`.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub checksum: String,
    pub path: String,
    pub phase: Phase,
    pub plan: Plan,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub last_error: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub backfill: Vec<Backfill>,
    /// Foreign keys the copy engine's swap added NOT VALID and has not
    /// validated yet (`finalize` does, if nothing else has): `name on table`.
    pub unvalidated: Vec<String>,
}

const SELECT: &str = "SELECT name, checksum, path, phase, plan, paused, pause_reason, last_error,
        to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
    FROM pgshift.migrations";

async fn from_row(client: &Client, row: tokio_postgres::Row) -> Result<Migration> {
    let name: String = row.get(0);
    let plan: serde_json::Value = row.get(4);
    let plan: Plan = serde_json::from_value(plan).map_err(|e| {
        Error::Runtime(format!(
            "the stored plan of migration {name} is unreadable: {e}"
        ))
    })?;
    let backfill = client
        .query(
            "SELECT table_oid, sum(rows_done)::int8, sum(rows_total)::int8, bool_and(done)
             FROM pgshift.backfill WHERE migration = $1 GROUP BY table_oid ORDER BY table_oid",
            &[&name],
        )
        .await
        .map_err(Error::db("could not read backfill progress"))?
        .into_iter()
        .map(|r| {
            let oid: u32 = r.get(0);
            Backfill {
                table: plan
                    .table(oid)
                    .map(|t| t.display())
                    .unwrap_or_else(|| oid.to_string()),
                rows_done: r.get(1),
                rows_total: r.get(2),
                done: r.get(3),
            }
        })
        .collect();
    // One query for all of them: `status` reads every migration.
    let (tables, names): (Vec<String>, Vec<String>) = plan
        .copy
        .iter()
        .flat_map(|c| &c.foreign_keys)
        .filter(|fk| fk.validated)
        .map(|fk| (fk.table.clone(), fk.name.clone()))
        .unzip();
    let unvalidated: Vec<String> = if names.is_empty() {
        Vec::new()
    } else {
        client
            .query(
                "SELECT f.name || ' on ' || f.t FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS f(t, name, i)
                 WHERE EXISTS (SELECT 1 FROM pg_constraint
                               WHERE conrelid = to_regclass(f.t) AND conname = f.name AND NOT convalidated)
                 ORDER BY f.i",
                &[&tables, &names],
            )
            .await
            .map_err(Error::db("could not read the foreign keys' validation"))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    Ok(Migration {
        name,
        checksum: row.get(1),
        path: row.get(2),
        phase: row.get::<_, String>(3).parse()?,
        plan,
        paused: row.get(5),
        pause_reason: row.get(6),
        last_error: row.get(7),
        started_at: row.get(8),
        updated_at: row.get(9),
        backfill,
        unvalidated,
    })
}

pub async fn get(client: &Client, name: &str) -> Result<Option<Migration>> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(&format!("{SELECT} WHERE name = $1"), &[&name])
        .await
        .map_err(Error::db(format!(
            "could not read the state of migration {name}"
        )))?;
    match row {
        Some(row) => Ok(Some(from_row(client, row).await?)),
        None => Ok(None),
    }
}

pub async fn list(client: &Client) -> Result<Vec<Migration>> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(&format!("{SELECT} ORDER BY started_at, name"), &[])
        .await
        .map_err(Error::db("could not list migrations"))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_row(client, row).await?);
    }
    Ok(out)
}

/// Records a new start (or a restart after a rollback).
pub async fn start(client: &Client, plan: &Plan, path: &str) -> Result<()> {
    let plan_json = serde_json::to_value(plan)
        .map_err(|e| Error::Runtime(format!("could not store the plan: {e}")))?;
    client
        .execute(
            "INSERT INTO pgshift.migrations (name, checksum, path, phase, plan)
             VALUES ($1, $2, $3, 'expanding', $4)
             ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, path = EXCLUDED.path,
                 phase = 'expanding', plan = EXCLUDED.plan, paused = false, pause_reason = NULL,
                 pause_requested = false, request = NULL,
                 last_error = NULL, started_at = now(), updated_at = now(), cutover_at = NULL",
            &[&plan.migration, &plan.checksum, &path, &plan_json],
        )
        .await
        .map_err(Error::db("could not record the migration's start"))?;
    client
        .execute(
            "DELETE FROM pgshift.backfill WHERE migration = $1",
            &[&plan.migration],
        )
        .await
        .map_err(Error::db("could not reset backfill progress"))?;
    Ok(())
}

pub async fn set_phase(client: &Client, name: &str, phase: Phase) -> Result<()> {
    client
        .execute(
            "UPDATE pgshift.migrations SET phase = $2, updated_at = now(), last_error = NULL WHERE name = $1",
            &[&name, &phase.as_str()],
        )
        .await
        .map_err(Error::db(format!("could not record phase {phase} of {name}")))?;
    Ok(())
}

/// The statement that marks cutover done, run inside the cutover transaction
/// itself so the phase and the schema can never disagree.
pub fn cutover_marker(name: &str) -> String {
    format!(
        "UPDATE pgshift.migrations SET phase = 'cut_over', cutover_at = now(), updated_at = now() WHERE name = {}",
        crate::names::literal(name)
    )
}

/// A statement that sets the phase, for use inside a transaction that does
/// the phase's work, so the two commit together.
pub fn phase_marker(name: &str, phase: Phase) -> String {
    format!(
        "UPDATE pgshift.migrations SET phase = {}, updated_at = now() WHERE name = {}",
        crate::names::literal(phase.as_str()),
        crate::names::literal(name)
    )
}

/// Records whether the running backfill is paused, and why.
pub async fn set_paused(client: &Client, name: &str, reason: Option<&str>) -> Result<()> {
    client
        .execute(
            "UPDATE pgshift.migrations SET paused = $2, pause_reason = $3, updated_at = now() WHERE name = $1",
            &[&name, &reason.is_some(), &reason],
        )
        .await
        .map_err(Error::db("could not record the pause"))?;
    Ok(())
}

/// What another pgshift process asked the running one: (pause requested, request).
pub async fn requests(client: &Client, name: &str) -> Result<(bool, Option<String>)> {
    let row = client
        .query_one(
            "SELECT pause_requested, request FROM pgshift.migrations WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(Error::db("could not read requests"))?;
    Ok((row.get(0), row.get(1)))
}

/// Asks the process running `name` to pause (`Some(true)`), continue
/// (`Some(false)`), or roll back (`request = Some("rollback")`).
pub async fn request(
    client: &Client,
    name: &str,
    pause: Option<bool>,
    request: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE pgshift.migrations SET pause_requested = COALESCE($2, pause_requested),
                 request = COALESCE($3, request), updated_at = now() WHERE name = $1",
            &[&name, &pause, &request],
        )
        .await
        .map_err(Error::db("could not record the request"))?;
    Ok(())
}

pub async fn clear_request(client: &Client, name: &str) -> Result<()> {
    client
        .execute(
            "UPDATE pgshift.migrations SET request = NULL WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(Error::db("could not clear the request"))?;
    Ok(())
}

/// Whether another session holds the migration's advisory lock (a pgshift is running it).
pub async fn is_running(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND classid::int = hashtext('pgshift') AND objid::int = hashtext($1) AND objsubid = 2
                 AND pid <> pg_backend_pid())",
            &[&name],
        )
        .await
        .map_err(Error::db("could not look for a running pgshift"))?
        .get(0))
}

pub async fn record_error(client: &Client, name: &str, error: &str) {
    let _ = client
        .execute(
            "UPDATE pgshift.migrations SET last_error = $2, updated_at = now() WHERE name = $1",
            &[&name, &error],
        )
        .await;
}

/// Takes the per-migration advisory lock on this session; false when another
/// pgshift holds it.
pub async fn try_lock(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('pgshift'), hashtext($1))",
            &[&name],
        )
        .await
        .map_err(Error::db("could not take the migration's advisory lock"))?
        .get(0))
}
