//! The migration runner for a folder of ordinary SQL files: pending files in
//! lexical order, each statement in its online form (see [`classify`]),
//! recorded in `pgshift.applied` with a checkpoint after every step, so a
//! crash resumes at the step that was running.

pub mod classify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::execute::{retry, LockPolicy};
use crate::migration::{split_statements, MigrationFile};
use crate::names::quote;
pub use classify::{Action, Options, Planned};

const SCHEMA_SQL: &str = "CREATE TABLE IF NOT EXISTS pgshift.applied (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    steps_done  int NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    duration_ms bigint
);";

pub async fn ensure_schema(client: &Client) -> Result<()> {
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .map_err(Error::db("could not create pgshift.applied"))
}

/// The .sql files of a folder, in lexical order.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "sql"))
        .collect();
    found.sort();
    Ok(found)
}

/// Where one file stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileState {
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// `applied`, `pending`, `partial` (started, not finished) or `changed`.
    pub state: String,
    pub applied_at: Option<String>,
    pub duration_ms: Option<i64>,
}

pub async fn states(client: &Client, paths: &[PathBuf]) -> Result<Vec<FileState>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgshift.applied') IS NOT NULL", &[])
        .await
        .map_err(Error::db("could not look for pgshift.applied"))?
        .get(0);
    let mut out = Vec::new();
    for path in paths {
        let file = MigrationFile::read(path)?;
        let row = if exists {
            client
                .query_opt(
                    "SELECT checksum, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), duration_ms,
                            steps_done
                     FROM pgshift.applied WHERE name = $1",
                    &[&file.name],
                )
                .await
                .map_err(Error::db("could not read pgshift.applied"))?
        } else {
            None
        };
        let (state, applied_at, duration_ms) = match row {
            None => ("pending", None, None),
            // Edited before any step of it ran: still simply pending.
            Some(r) if r.get::<_, Option<String>>(1).is_none() && r.get::<_, i32>(3) == 0 => {
                ("pending", None, None)
            }
            Some(r) if r.get::<_, String>(0) != file.checksum => ("changed", r.get(1), r.get(2)),
            Some(r) if r.get::<_, Option<String>>(1).is_none() => ("partial", None, None),
            Some(r) => ("applied", r.get(1), r.get(2)),
        };
        out.push(FileState {
            name: file.name,
            path: path.clone(),
            state: state.into(),
            applied_at,
            duration_ms,
        });
    }
    Ok(out)
}

/// Plans every statement of a file; refusals name file and line.
pub fn plan_file(file: &MigrationFile, options: &Options) -> Result<Vec<Planned>> {
    let display = file.path.display().to_string();
    let statements = split_statements(&file.sql).map_err(|(line, message)| Error::Parse {
        file: display.clone(),
        line,
        message,
    })?;
    // A file with its own BEGIN … COMMIT asked for atomicity: run it as
    // written in one transaction (no online forms; CONCURRENTLY cannot run there).
    let is_control = |t: &str| {
        let first = t.split_whitespace().next().unwrap_or("").to_lowercase();
        matches!(first.as_str(), "begin" | "start" | "commit" | "end")
    };
    if statements.iter().any(|s| is_control(&s.text)) {
        if let Some(s) = statements
            .iter()
            .find(|s| s.text.to_lowercase().contains("concurrently"))
        {
            return Err(Error::Unsupported {
                what: format!("{display}:{}", s.line),
                reason: "CONCURRENTLY cannot run inside the file's BEGIN … COMMIT; move it to a file of its own".into(),
            });
        }
        let body: Vec<String> = statements
            .iter()
            .filter(|s| !is_control(&s.text))
            .map(|s| s.text.clone())
            .collect();
        return Ok(vec![Planned {
            line: statements[0].line,
            original: file.sql.clone(),
            rewrite: Some("explicit transaction: run as written, in one transaction retried whole (no online forms)"),
            actions: vec![Action::Transaction(body)],
        }]);
    }
    // A statement that does not parse is the first thing to fix: report it
    // before any refusal of a statement that did parse.
    if !options.allow_unparsed {
        for st in &statements {
            if let Err(e) = sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                &st.text,
            ) {
                return Err(Error::Parse {
                    file: display.clone(),
                    line: st.line,
                    message: format!(
                        "could not parse this statement: {e} (--allow-unparsed runs it verbatim)"
                    ),
                });
            }
        }
    }
    statements
        .iter()
        .map(|s| {
            classify::classify(s.line, &s.text, options).map_err(|r| Error::Unsupported {
                what: format!("{display}:{}", r.line),
                reason: r.message,
            })
        })
        .collect()
}

/// Applies one ordinary migration file, resuming after its last finished step.
pub async fn apply_file(
    client: &Client,
    file: &MigrationFile,
    planned: &[Planned],
    policy: &LockPolicy,
) -> Result<Duration> {
    let started = Instant::now();
    let row = client
        .query_opt(
            "SELECT checksum, steps_done FROM pgshift.applied WHERE name = $1",
            &[&file.name],
        )
        .await
        .map_err(Error::db("could not read pgshift.applied"))?;
    let done = match row {
        Some(r) if r.get::<_, i32>(1) == 0 && r.get::<_, String>(0) != file.checksum => {
            // Nothing of the old text ran: start over with the new one.
            client
                .execute(
                    "UPDATE pgshift.applied SET checksum = $2 WHERE name = $1",
                    &[&file.name, &file.checksum],
                )
                .await
                .map_err(Error::db("could not record the file's start"))?;
            0
        }
        Some(r) if r.get::<_, String>(0) != file.checksum => {
            return Err(Error::FileChanged {
                name: file.name.clone(),
                path: file.path.display().to_string(),
                started: r.get::<_, String>(0)[..12].to_string(),
                now: file.checksum[..12].to_string(),
            })
        }
        Some(r) => r.get::<_, i32>(1) as usize,
        None => {
            client
                .execute(
                    "INSERT INTO pgshift.applied (name, checksum) VALUES ($1, $2)",
                    &[&file.name, &file.checksum],
                )
                .await
                .map_err(Error::db("could not record the file's start"))?;
            0
        }
    };
    let steps: Vec<(&Planned, &Action)> = planned
        .iter()
        .flat_map(|p| p.actions.iter().map(move |a| (p, a)))
        .collect();
    for (i, (p, action)) in steps.iter().enumerate().skip(done) {
        let what = format!("{}:{}", file.path.display(), p.line);
        run_action(client, action, policy, &what).await?;
        client
            .execute(
                "UPDATE pgshift.applied SET steps_done = $2 WHERE name = $1",
                &[&file.name, &(i as i32 + 1)],
            )
            .await
            .map_err(Error::db("could not checkpoint the file"))?;
    }
    let ms = started.elapsed().as_millis() as i64;
    client
        .execute(
            "UPDATE pgshift.applied SET applied_at = now(), duration_ms = COALESCE(duration_ms, 0) + $2 WHERE name = $1",
            &[&file.name, &ms],
        )
        .await
        .map_err(Error::db("could not record the file as applied"))?;
    Ok(started.elapsed())
}

/// Records a file the online widening engine has cut over.
pub async fn record_engine_file(
    client: &Client,
    file: &MigrationFile,
    took: Duration,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO pgshift.applied (name, checksum, applied_at, duration_ms) VALUES ($1, $2, now(), $3)
             ON CONFLICT (name) DO UPDATE SET applied_at = now(), duration_ms = EXCLUDED.duration_ms",
            &[&file.name, &file.checksum, &(took.as_millis() as i64)],
        )
        .await
        .map_err(Error::db("could not record the file as applied"))?;
    Ok(())
}

async fn run_action(
    client: &Client,
    action: &Action,
    policy: &LockPolicy,
    what: &str,
) -> Result<()> {
    match action {
        Action::Ddl(sql) => retry::ddl(client, sql, policy, what, None).await,
        Action::BuildIndex { sql, name } => {
            if let Some(name) = name {
                let valid: Option<bool> = client
                    .query_opt(
                        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
                        &[&quote(name)],
                    )
                    .await
                    .map_err(Error::db(format!(
                        "{what}: could not look for index {name}"
                    )))?
                    .map(|r| r.get(0));
                match valid {
                    Some(true) => return Ok(()),
                    Some(false) => {
                        tracing::warn!("{what}: index {name} was left invalid by a failed build; dropping and rebuilding it");
                        concurrently(
                            client,
                            &format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote(name)),
                            policy,
                            what,
                        )
                        .await?;
                    }
                    None => {}
                }
            }
            concurrently(client, sql, policy, what).await
        }
        Action::Backfill {
            table,
            column,
            expr,
        } => backfill_column(client, table, column, expr, what).await,
        Action::Transaction(statements) => {
            retry::transaction(client, statements, policy, what, None)
                .await
                .map(|_| ())
        }
    }
}

/// CONCURRENTLY waits for older transactions without blocking anyone: no lock_timeout.
async fn concurrently(client: &Client, sql: &str, policy: &LockPolicy, what: &str) -> Result<()> {
    client
        .batch_execute("SET lock_timeout = 0")
        .await
        .map_err(Error::db(what.to_string()))?;
    let r = client.batch_execute(sql).await;
    let _ = client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            policy.lock_timeout.as_millis()
        ))
        .await;
    r.map_err(Error::db(format!("{what} failed")))
}

/// Heap pages per backfill batch (8 kB each).
const PAGES_PER_BATCH: i64 = 256;

/// Fills `column` with `expr` where it is NULL, a range of heap pages at a
/// time (TID range scans), then once more for rows that moved behind the scan.
async fn backfill_column(
    client: &Client,
    table: &str,
    column: &str,
    expr: &str,
    what: &str,
) -> Result<()> {
    for _pass in 0..2 {
        let pages: i64 = client
            .query_one(
                &format!(
                    "SELECT (pg_relation_size('{}') / current_setting('block_size')::int8)::int8",
                    table.replace('\'', "''")
                ),
                &[],
            )
            .await
            .map_err(Error::db(format!("{what}: could not size {table}")))?
            .get(0);
        let mut page = 0;
        while page <= pages {
            let sql = format!(
                "UPDATE {table} SET {column} = {expr} WHERE ctid >= '({page},0)'::tid AND ctid < '({},0)'::tid AND {column} IS NULL",
                page + PAGES_PER_BATCH
            );
            client
                .execute(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!(
                    "{what}: backfill of {table}.{column} failed"
                )))?;
            page += PAGES_PER_BATCH;
        }
    }
    Ok(())
}
