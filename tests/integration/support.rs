//! Shared helpers for the integration tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgshift::testkit::{incident, Cluster, ClusterOptions};
use tokio_postgres::{Client, NoTls};

/// The engine of pgshift runs that name none (`PGSHIFT_ENGINE`): most tests
/// were written for the update engine, which was the default until
/// 2026-12-02; tests of the copy engine and of `auto` name theirs, and
/// `pgshift_default_engine` runs without it.
pub const ENGINE: &str = "update";

/// Connects to `url` without TLS (test clusters listen on loopback only).
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh primary with a database `app`, and a client on it.
pub async fn primary() -> (Cluster, Client) {
    primary_with(ClusterOptions::default()).await
}

pub async fn primary_with(options: ClusterOptions) -> (Cluster, Client) {
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(options))
        .await
        .unwrap()
        .expect("start primary");
    cluster.create_database("app").expect("create database");
    let client = connect(&cluster.url("app")).await;
    (cluster, client)
}

/// A primary with the incident schema filled with `rows` scripts, plus
/// control tables the writer mirrors every change into.
pub async fn incident_primary(rows: i64) -> (Cluster, Client) {
    let (cluster, client) = primary().await;
    incident::load(&client, rows)
        .await
        .expect("load incident schema");
    client
        .batch_execute(
            "CREATE TABLE scripts_control AS SELECT id, account_id, name FROM scripts;
             ALTER TABLE scripts_control ADD PRIMARY KEY (id);
             CREATE TABLE runs_control AS SELECT id, script_id FROM script_runs;
             ALTER TABLE runs_control ADD PRIMARY KEY (id);",
        )
        .await
        .unwrap();
    (cluster, client)
}

/// Output of one pgshift run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the pgshift binary with `args` against `url`.
pub async fn pgshift(url: &str, args: &[&str]) -> Run {
    pgshift_logging(url, args, "pgshift=info").await
}

/// `pgshift`, with `rust_log` as the log filter (e.g. `pgshift=debug`).
pub async fn pgshift_logging(url: &str, args: &[&str], rust_log: &str) -> Run {
    run_pgshift(url, args, rust_log, Some(ENGINE)).await
}

/// `pgshift` as users run it: no `PGSHIFT_ENGINE`, so pgshift's own default.
pub async fn pgshift_default_engine(url: &str, args: &[&str]) -> Run {
    run_pgshift(url, args, "pgshift=info", None).await
}

/// The pgshift binary aimed at `url`, with the tests' engine (`ENGINE`);
/// the caller adds the command, its flags and what to do with its output.
pub fn pgshift_command(url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgshift"));
    cmd.env("PGSHIFT_ENGINE", ENGINE)
        .env_remove("DATABASE_URL")
        .arg("--database-url")
        .arg(url);
    cmd
}

async fn run_pgshift(url: &str, args: &[&str], rust_log: &str, engine: Option<&str>) -> Run {
    let mut cmd = pgshift_command(url);
    match engine {
        Some(engine) => cmd.env("PGSHIFT_ENGINE", engine),
        None => cmd.env_remove("PGSHIFT_ENGINE"),
    };
    let out = cmd
        .args(args)
        .env("RUST_LOG", rust_log)
        .output()
        .await
        .expect("run pgshift");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Writes migration `name` and applies it up to `ready` (no cutover).
pub async fn apply_to_ready(url: &str, name: &str, sql: &str) -> (tempfile::TempDir, String) {
    let (dir, path) = migration(name, sql);
    let run = pgshift(url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    (dir, path)
}

/// The events pgshift wrote to an `--events` file, one JSON object per line.
pub fn read_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `event` of each line of an `--events` file, in order.
pub fn event_kinds(path: &std::path::Path) -> Vec<String> {
    read_events(path)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// Writes a migration file into a temp dir and returns (dir, path).
pub fn migration(name: &str, sql: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.sql"));
    std::fs::write(&path, sql).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

/// The incident writer's statements, in turn (inserts of scripts twice as often).
const INCIDENT_WRITES: &[&str] = &[
    "WITH s AS (INSERT INTO scripts (account_id, name, body) VALUES (7, 'w' || $1::int8::text, 'b') RETURNING id, account_id, name)
     INSERT INTO scripts_control SELECT id, account_id, name FROM s",
    "WITH s AS (INSERT INTO scripts (account_id, name, body) VALUES (7, 'w' || $1::int8::text, 'b') RETURNING id, account_id, name)
     INSERT INTO scripts_control SELECT id, account_id, name FROM s",
    "WITH u AS (UPDATE scripts SET name = 'u' || $1::int8::text WHERE id = (SELECT max(id) FROM scripts) - ($1::int8 % 50) RETURNING id, name)
     UPDATE scripts_control c SET name = u.name FROM u WHERE c.id = u.id",
    "WITH r AS (INSERT INTO script_runs (script_id, status) SELECT id, 'ok' FROM scripts WHERE id = (SELECT max(id) FROM scripts) - ($1::int8 % 20) RETURNING id, script_id)
     INSERT INTO runs_control SELECT id, script_id FROM r",
    "WITH u AS (UPDATE script_runs SET script_id = (SELECT max(id) FROM scripts) - ($1::int8 % 30)
     WHERE id = (SELECT max(id) FROM script_runs) - ($1::int8 % 10) RETURNING id, script_id)
     UPDATE runs_control c SET script_id = u.script_id FROM u WHERE c.id = u.id",
    "WITH d AS (DELETE FROM script_runs WHERE id = (SELECT min(id) FROM script_runs) + $1::int8 % 3 RETURNING id)
     DELETE FROM runs_control c USING d WHERE c.id = d.id",
];

/// An application running `write(i)` for i = 1, 2, … (a batch that keeps a
/// table and its control copy in step, in one transaction) until stopped;
/// Literals rather than typed parameters assign to the old column types
/// before cutover and to the new ones after it.
pub struct Mirror {
    stop: Arc<AtomicBool>,
    pub ops: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<Vec<String>>,
}

impl Mirror {
    pub async fn start(url: &str, write: fn(i64) -> String) -> Mirror {
        let client = connect(url).await;
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ops.clone());
        let handle = tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i: i64 = 0;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                match client.batch_execute(&write(i)).await {
                    Ok(()) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => errors.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            errors
        });
        Mirror { stop, ops, handle }
    }

    /// Stops the writer and returns the errors it saw.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap()
    }
}

/// A concurrent application writer on the incident tables that mirrors every
/// change into the control tables in the same statement.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub ops: Arc<AtomicU64>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub async fn start(url: &str) -> Writer {
        Writer::start_with(url, INCIDENT_WRITES).await
    }

    /// A writer that runs `writes` in turn, each given the iteration as `$1`
    /// (an int8), and keeps whatever control tables they write in step.
    pub async fn start_with(url: &str, writes: &'static [&'static str]) -> Writer {
        let client = connect(url).await;
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, e) = (stop.clone(), ops.clone(), errors.clone());
        let handle = tokio::spawn(async move {
            let mut i: i64 = 0;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let sql = writes[i as usize % writes.len()];
                match client.execute(sql, &[&i]).await {
                    Ok(_) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(err) => e.lock().unwrap().push(format!("{err:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Writer {
            stop,
            ops,
            errors,
            handle,
        }
    }

    /// Stops the writer and returns the errors it saw.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap();
        let errors = self.errors.lock().unwrap().clone();
        errors
    }
}

/// Asserts the incident tables hold exactly what the control tables hold.
pub async fn assert_matches_control(client: &Client) {
    let q = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
    };
    let scripts = q("SELECT md5(string_agg(id || ':' || account_id || ':' || coalesce(name, ''), ',' ORDER BY id)) FROM scripts").await;
    let control = q("SELECT md5(string_agg(id || ':' || account_id || ':' || coalesce(name, ''), ',' ORDER BY id)) FROM scripts_control").await;
    assert_eq!(scripts, control, "scripts differ from the control copy");
    let runs =
        q("SELECT md5(string_agg(id || ':' || script_id, ',' ORDER BY id)) FROM script_runs").await;
    let control =
        q("SELECT md5(string_agg(id || ':' || script_id, ',' ORDER BY id)) FROM runs_control")
            .await;
    assert_eq!(runs, control, "script_runs differ from the control copy");
}

/// A text dump of a schema's tables, columns, indexes, constraints,
/// triggers, sequences and views, to compare before and after.
pub async fn schema_dump(client: &Client) -> String {
    let rows = client
        .query(
            "SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                    || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v')
             UNION ALL
             SELECT 'index ' || pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
                    || CASE WHEN convalidated THEN '' ELSE ' (not validated)' END
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT 'sequence ' || schemaname || '.' || sequencename || ' ' || data_type || ' max ' || max_value
             FROM pg_sequences WHERE schemaname = 'public'
             UNION ALL
             SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
             UNION ALL
             SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'pgshift')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names of objects pgshift created that still exist (should be none when done).
pub async fn leftovers(client: &Client) -> Vec<String> {
    texts(
        client,
            "SELECT 'relation ' || relname FROM pg_class WHERE relname LIKE 'pgshift\\_%' AND relkind <> 'i'
                 AND relnamespace <> 'pgshift'::regnamespace
             UNION ALL SELECT 'index ' || relname FROM pg_class WHERE relname LIKE 'pgshift\\_%' AND relkind = 'i'
             UNION ALL SELECT 'column ' || attrelid::regclass || '.' || attname FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'v')
                 WHERE attname LIKE 'pgshift\\_%' AND NOT attisdropped
             UNION ALL SELECT 'constraint ' || conname FROM pg_constraint WHERE conname LIKE 'pgshift\\_%'
             UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'pgshift\\_%'
             UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'pgshift\\_%'",
    )
    .await
}

/// Starts `apply` of `path` with the default engine and `--batch-size
/// batch`, waits until a part of its backfill has `rows` rows done, and
/// kills it with SIGKILL: no cleanup at all.
pub async fn kill_apply_mid_copy(client: &Client, url: &str, path: &str, batch: &str, rows: i64) {
    kill_apply_mid_backfill(client, url, path, batch, rows, None).await
}

/// [`kill_apply_mid_copy`] with `engine` (`--engine`), or the default.
pub async fn kill_apply_mid_backfill(
    client: &Client,
    url: &str,
    path: &str,
    batch: &str,
    rows: i64,
    engine: Option<&str>,
) {
    let mut cmd = pgshift_command(url);
    cmd.env_remove("PGSHIFT_ENGINE")
        .args(["-q", "apply", path, "--batch-size", batch]);
    if let Some(engine) = engine {
        cmd.args(["--engine", engine]);
    }
    let mut child = cmd.spawn().unwrap();
    let reached = wait_until(
        client,
        &format!("SELECT bool_or(rows_done >= {rows} AND NOT done) FROM pgshift.backfill"),
        Duration::from_secs(60),
    )
    .await;
    assert!(reached, "the copy never got going");
    child.kill().await.unwrap();
}

/// Polls `sql` (returning one bool) until true or the timeout.
/// The first column of every row of `sql`, as text.
pub async fn texts(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn wait_until(client: &Client, sql: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(row) = client.query_one(sql, &[]).await {
            if row.get::<_, Option<bool>>(0) == Some(true) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The one value of a one-row, one-column query.
pub async fn one<T>(client: &Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query_one(sql, &[]).await.unwrap().get(0)
}
