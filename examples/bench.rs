//! The benchmark behind `scripts/bench`: the incident migration (or, with
//! `--change jsonb`, `body` text → jsonb on both tables of the union view;
//! with `--change partitioned`, `events.id` widened on a table of 10 monthly
//! partitions of `--rows` rows each, under a load on `events`)
//! done two ways on identical copies of the same database, under the same fixed-rate
//! application load, on a primary with a streaming replica:
//! (a) the blocking `ALTER TABLE … TYPE bigint` (in one transaction, with
//!     the view dropped and recreated, as a hand-written runbook would);
//! (b) `pgshift apply --engine update` with default settings, and (c) unthrottled
//!     (`--batch-target 1s --max-batch 200000`, two workers, no commit probe,
//!     no WAL flushing); (d) and (e) the same with
//!     the copy-and-swap engine (`--engine copy`).
//! Orders alternate across repetitions; medians are reported. Every way
//! starts from a checkpoint with the replica caught up, and the baseline is
//! measured before each repetition. pgshift's `step` events name the step
//! behind the application's slowest transactions.
//!
//! The load is generated here rather than by pgbench: pgbench writes its
//! per-transaction log only when its run ends, and the run must end exactly
//! when the migration does. The transaction mix is a pgbench-style script:
//! reads by id through the table and through the union view, updates, and
//! inserts of scripts and runs, at a fixed rate, latency measured per
//! transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgshift::testkit::{incident, Cluster, ClusterOptions};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WAYS: [&str; 7] = [
    "blocking",
    "pgshift-default",
    "pgshift-unthrottled",
    "copy-default",
    "copy-unthrottled",
    // The defaults plus `--alt-args`: a trade-off measured against the
    // defaults in the same run (not run unless `--ways` names them).
    "pgshift-alt",
    "copy-alt",
];

struct Args {
    rows: i64,
    reps: usize,
    rate: u64,
    clients: u64,
    /// Which ways to run (all three unless `--ways` narrows it).
    ways: Vec<String>,
    /// Extra `pgshift apply` flags for the default way, to measure a trade-off.
    default_args: Vec<String>,
    /// `apply` flags of the `-alt` ways.
    alt_args: Vec<String>,
    /// Extra postgresql.conf lines for the primary (and its replica), e.g.
    /// `max_wal_size = '8GB'`: the same server for every way of the run.
    server_conf: Vec<String>,
    /// How long each repetition's baseline window lasts: at 200 tx/s, 10 s
    /// gave a p99 from 20 transactions, which ranged 1.2–7.8 ms.
    baseline_secs: u64,
    /// Which migration: the incident's `bigint` widening, or `jsonb`
    /// (`scripts.body` and `archived_scripts.body` text → jsonb, each value
    /// wrapped by `jsonb_build_object`: a conversion function on every row).
    change: Change,
}

#[derive(Clone, Copy, PartialEq)]
enum Change {
    Bigint,
    Jsonb,
    Partitioned,
}

/// Monthly partitions of `events` in the partitioned bench.
const PARTITIONS: i64 = 10;

impl Change {
    /// The migration's name (its file stem).
    fn name(self) -> &'static str {
        match self {
            Change::Bigint => "0001_scripts_id_bigint",
            Change::Jsonb => "0002_scripts_body_jsonb",
            Change::Partitioned => "0003_events_id_bigint",
        }
    }

    /// The blocking way, as a hand-written runbook runs it.
    fn blocking(self) -> &'static str {
        match self {
            Change::Bigint => BLOCKING,
            Change::Jsonb => BLOCKING_JSONB,
            Change::Partitioned => MIGRATION_PARTITIONED,
        }
    }

    /// The body the application's inserts write: valid before and after.
    fn insert_body(self) -> &'static str {
        match self {
            Change::Bigint => "'x'",
            Change::Jsonb | Change::Partitioned => "'{\"text\": \"x\"}'",
        }
    }

    /// Rows the migration converts, for the backfill's rows/s: scripts,
    /// archived scripts (rows/2) and runs (2 × rows); or every partition's.
    fn converted_rows(self, rows: i64) -> f64 {
        match self {
            Change::Bigint => rows as f64 * 3.5,
            Change::Jsonb => rows as f64 * 1.5,
            Change::Partitioned => (rows * PARTITIONS) as f64,
        }
    }
}

/// postgresql.conf lines of the bench's primary and replica: its own, then
/// `--server-conf`'s (a later line wins).
fn server_conf(args: &Args) -> Vec<String> {
    [
        "shared_buffers = '512MB'",
        "checkpoint_timeout = '15min'",
        "log_checkpoints = on",
    ]
    .iter()
    .map(|l| l.to_string())
    .chain(args.server_conf.iter().cloned())
    .collect()
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        rows: 1_000_000,
        reps: 1,
        rate: 200,
        clients: 4,
        ways: WAYS
            .iter()
            .filter(|w| !w.ends_with("-alt"))
            .map(|w| w.to_string())
            .collect(),
        default_args: Vec::new(),
        alt_args: Vec::new(),
        server_conf: Vec::new(),
        baseline_secs: 30,
        change: Change::Bigint,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rows" => a.rows = value.parse()?,
            "--reps" => a.reps = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--clients" => a.clients = value.parse()?,
            "--ways" => {
                a.ways = value.split(',').map(str::to_string).collect();
                if let Some(w) = a.ways.iter().find(|w| !WAYS.contains(&w.as_str())) {
                    return Err(format!("unknown way {w} (one of {})", WAYS.join(", ")).into());
                }
            }
            "--default-args" => a.default_args = words(&value),
            "--alt-args" => a.alt_args = words(&value),
            "--server-conf" => a.server_conf.push(value),
            "--baseline-secs" => a.baseline_secs = value.parse()?,
            "--change" => {
                a.change = match value.as_str() {
                    "bigint" => Change::Bigint,
                    "jsonb" => Change::Jsonb,
                    "partitioned" => Change::Partitioned,
                    other => return Err(format!("unknown change {other} (bigint, jsonb or partitioned)").into()),
                }
            }
            other => {
                return Err(format!(
                "unknown flag {other} (--rows, --reps, --rate, --clients, --ways, --default-args, --alt-args, --server-conf, --baseline-secs, --change)"
            )
                .into())
            }
        }
    }
    if a.change == Change::Partitioned {
        // The update engine does not take partitioned tables.
        if a.ways.iter().any(|w| w.starts_with("pgshift-")) {
            if std::env::args().any(|f| f == "--ways") {
                return Err("--change partitioned runs blocking and the copy-* ways only".into());
            }
            a.ways.retain(|w| !w.starts_with("pgshift-"));
        }
    }
    Ok(a)
}

/// A flags argument split into the words `apply` gets.
fn words(flags: &str) -> Vec<String> {
    flags.split_whitespace().map(str::to_string).collect()
}

/// Flags as the report shows them.
fn shown(flags: &[String]) -> String {
    if flags.is_empty() {
        "none".to_string()
    } else {
        flags.join(" ")
    }
}

async fn connect(url: &str) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Latencies of one load run.
#[derive(Default, Clone)]
struct Latencies {
    ms: Vec<f64>,
    /// When each transaction started (wall clock), parallel to `ms`.
    at: Vec<std::time::SystemTime>,
    failed: u64,
    /// Whether each transaction wrote (update or insert), parallel to `ms`.
    wrote: Vec<bool>,
    /// What each transaction did, parallel to `ms`.
    kind: Vec<&'static str>,
    /// The first few distinct errors the application saw.
    errors: Vec<String>,
}

impl Latencies {
    fn pct(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return 0.0;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
    /// The `p` percentile of reads only (`writes` false) or writes only.
    fn pct_of(&self, writes: bool, p: f64) -> f64 {
        let only = Latencies {
            ms: self
                .ms
                .iter()
                .zip(&self.wrote)
                .filter(|(_, w)| **w == writes)
                .map(|(m, _)| *m)
                .collect(),
            ..Latencies::default()
        };
        only.pct(p)
    }

    fn max(&self) -> f64 {
        self.ms.iter().copied().fold(0.0, f64::max)
    }
}

/// The application: `clients` connections at `rate` transactions/s in total.
struct Load {
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Latencies>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(
        url: &str,
        rate: u64,
        clients: u64,
        rows: i64,
        change: Change,
    ) -> Result<Load, Error> {
        let body = change.insert_body();
        let partitioned = change == Change::Partitioned;
        let rows = if partitioned { rows * PARTITIONS } else { rows };
        let stop = Arc::new(AtomicBool::new(false));
        let out = Arc::new(Mutex::new(Latencies::default()));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = connect(url).await?;
            let (stop, out) = (stop.clone(), out.clone());
            let every = Duration::from_secs_f64(clients as f64 / rate as f64);
            tasks.push(tokio::spawn(async move {
                let mut next = Instant::now();
                let mut i: i64 = c as i64 * 7919;
                while !stop.load(Ordering::SeqCst) {
                    next += every;
                    i = (i * 48271 + 11) % 2_147_483_647;
                    let id = 1 + i % rows;
                    // Literal integers only (generated here): simple protocol,
                    // no cached plans to invalidate at cutover.
                    let sql = match i % 20 {
                        // The partitioned bench's load is on `events`.
                        0..=9 if partitioned => format!("SELECT payload FROM events WHERE id = {id}"),
                        10..=15 if partitioned => format!("UPDATE events SET payload = 'b{i}' WHERE id = {id}"),
                        _ if partitioned => format!(
                            // The baseline's load ran the same ids on this database.
                            "INSERT INTO events (id, created_at, payload) VALUES ({}, date '2024-01-01' + {}, 'new') ON CONFLICT DO NOTHING",
                            rows + i % 1_000_000_000,
                            i % (PARTITIONS * 30)
                        ),
                        0..=7 => format!("SELECT name FROM scripts WHERE id = {id}"),
                        8..=13 => format!("SELECT name FROM all_scripts WHERE id = {id}"),
                        14..=16 => format!("UPDATE scripts SET name = 'b{i}' WHERE id = {id}"),
                        17..=18 => {
                            format!("INSERT INTO scripts (account_id, name, body) VALUES (1, 'bench', {body})")
                        }
                        _ => format!(
                            "INSERT INTO script_runs (script_id, status) VALUES ({id}, 'ok')"
                        ),
                    };
                    let t = Instant::now();
                    let wall = std::time::SystemTime::now();
                    let r = client.simple_query(&sql).await;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    {
                        let mut o = out.lock().unwrap();
                        match r {
                            Ok(_) => {
                                o.ms.push(ms);
                                o.at.push(wall);
                                o.wrote.push(if partitioned { i % 20 >= 10 } else { i % 20 >= 14 });
                                o.kind.push(match i % 20 {
                                    0..=9 if partitioned => "read of events by id",
                                    10..=15 if partitioned => "update of events",
                                    _ if partitioned => "insert into events",
                                    0..=7 => "read by id",
                                    8..=13 => "read through the view",
                                    14..=16 => "update of scripts",
                                    17..=18 => "insert into scripts",
                                    _ => "insert into script_runs",
                                });
                            }
                            Err(e) => {
                                o.failed += 1;
                                let e = e
                                    .as_db_error()
                                    .map_or(e.to_string(), |d| d.message().to_string());
                                if o.errors.len() < 5 && !o.errors.contains(&e) {
                                    o.errors.push(e);
                                }
                            }
                        }
                    }
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    } else {
                        next = now;
                    }
                }
            }));
        }
        Ok(Load { stop, out, tasks })
    }

    async fn stop(self) -> Latencies {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let l = self.out.lock().unwrap().clone();
        l
    }
}

/// Polls the replica's replay lag until stopped; returns the peak (s).
fn watch_lag(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let Ok(standby) = connect(&url).await else {
            return -1.0;
        };
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(row) = standby
                .query_one(
                    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END::float8",
                    &[],
                )
                .await
            {
                peak = peak.max(row.get::<_, Option<f64>>(0).unwrap_or(0.0));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    })
}

/// (updates, HOT updates) of `scripts` so far.
async fn update_counts(client: &Client) -> Result<(i64, i64), Error> {
    let r = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'scripts'",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Buffers written out so far: by checkpoints, by the background writer,
/// and by backends evicting a dirty page themselves (the writes that no
/// `*_flush_after` paces, left in the kernel's page cache).
/// Postgres 17 moved the checkpointer's count to `pg_stat_checkpointer` and
/// the backends' to `pg_stat_io` (write operations of client backends).
async fn buffer_writes(client: &Client) -> Result<[i64; 3], Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let sql = if version >= 170000 {
        "SELECT (SELECT buffers_written FROM pg_stat_checkpointer), (SELECT buffers_clean FROM pg_stat_bgwriter),
                (SELECT coalesce(sum(writes), 0)::int8 FROM pg_stat_io WHERE backend_type = 'client backend')"
    } else {
        "SELECT buffers_checkpoint, buffers_clean, buffers_backend FROM pg_stat_bgwriter"
    };
    let r = client.query_one(sql, &[]).await?;
    Ok([r.get(0), r.get(1), r.get(2)])
}

/// The database's size on disk, in MB.
async fn database_size_mb(client: &Client) -> Result<f64, Error> {
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok(bytes as f64 / 1e6)
}

async fn wal_lsn(client: &Client) -> Result<i64, Error> {
    Ok(client
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8",
            &[],
        )
        .await?
        .get(0))
}

const BLOCKING: &str = "BEGIN;
DROP VIEW all_scripts;
ALTER TABLE script_runs ALTER COLUMN script_id TYPE bigint;
ALTER TABLE scripts ALTER COLUMN id TYPE bigint;
ALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;
ALTER SEQUENCE scripts_id_seq AS bigint;
CREATE VIEW all_scripts AS
    SELECT id, account_id, name, body, created_at FROM scripts
    UNION ALL
    SELECT id, account_id, name, body, created_at FROM archived_scripts;
COMMIT;";

const BLOCKING_JSONB: &str = "BEGIN;
DROP VIEW all_scripts;
ALTER TABLE scripts ALTER COLUMN body TYPE jsonb USING jsonb_build_object('text', body);
ALTER TABLE archived_scripts ALTER COLUMN body TYPE jsonb USING jsonb_build_object('text', body);
CREATE VIEW all_scripts AS
    SELECT id, account_id, name, body, created_at FROM scripts
    UNION ALL
    SELECT id, account_id, name, body, created_at FROM archived_scripts;
COMMIT;";

/// The online form of `BLOCKING_JSONB`: the view holds once both columns change.
const MIGRATION_JSONB: &str = "\
ALTER TABLE scripts ALTER COLUMN body TYPE jsonb USING jsonb_build_object('text', body);
ALTER TABLE archived_scripts ALTER COLUMN body TYPE jsonb USING jsonb_build_object('text', body);
";

/// `events (id int, created_at date, payload text)` by month, `rows` rows
/// in each of the `PARTITIONS` partitions, keyed by (id, created_at).
fn partitioned_schema(rows: i64) -> String {
    let mut sql = String::from(
        "CREATE TABLE events (id int NOT NULL, created_at date NOT NULL, payload text,
             PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);\n",
    );
    for m in 0..PARTITIONS {
        sql.push_str(&format!(
            "CREATE TABLE events_{m:02} PARTITION OF events FOR VALUES FROM (date '2024-01-01' + {}) TO (date '2024-01-01' + {});\n",
            m * 30,
            (m + 1) * 30
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO events SELECT g, date '2024-01-01' + (g - 1) / {rows} * 30 + g % 30, repeat('x', 60)
         FROM generate_series(1, {}) g;\n",
        rows * PARTITIONS
    ));
    sql
}

/// Both the blocking way and the migration: Postgres rewrites each
/// partition and rebuilds its indexes under the lock.
const MIGRATION_PARTITIONED: &str = "ALTER TABLE events ALTER COLUMN id TYPE bigint;\n";

/// One way, measured.
#[derive(Clone, Debug, serde::Serialize)]
struct Way {
    way: String,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// p99 of reads by id, and of updates and inserts (which wait for their
    /// commit's WAL flush, behind whatever WAL was written before it).
    read_p99_ms: f64,
    write_p99_ms: f64,
    max_ms: f64,
    transactions: usize,
    failed: u64,
    errors: Vec<String>,
    wal_bytes: i64,
    /// The database's size before the way, after it, and (copy engine)
    /// after `finalize` drops the original tables: what the migration
    /// needs in free disk, and what it leaves.
    database_mb: [f64; 2],
    finalized_mb: Option<f64>,
    peak_replica_lag_s: f64,
    backfill_rows_per_s: Option<f64>,
    cutover_lock_ms: Option<f64>,
    /// The cutover transaction until COMMIT was sent (the rest is mostly
    /// file unlinks that Postgres does after releasing the locks).
    cutover_statements_ms: Option<f64>,
    /// Of the cutover transaction: until its LOCK returned.
    cutover_lock_wait_ms: Option<f64>,
    /// How long the cutover waited for calm commits before it locked.
    calm_waited_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
    /// Worst application latency within a second of the cutover.
    cutover_stall_ms: Option<f64>,
    /// Worst latency of the transactions that overlapped the cutover's
    /// lock, and of those that started in the second after it: the window
    /// above also holds whatever ran just before (an index build's end).
    cutover_overlap_ms: Option<f64>,
    after_cutover_ms: Option<f64>,
    /// The pgshift phase during which the worst latency happened.
    worst_during: Option<String>,
    /// The ten slowest application transactions: what they did, and during which step.
    slowest: Vec<serde_json::Value>,
    /// Per phase and step: its seconds, its transactions, their p99, and
    /// how many were over the goal (3× the baseline p99): which part of
    /// the migration sets the tail.
    tail: Vec<serde_json::Value>,
    /// MB of buffers written during the way by checkpoints, the background
    /// writer and backends (the application's and pgshift's).
    buffers_written_mb: [f64; 3],
    /// Share of updates to `scripts` that were HOT (no index maintenance).
    hot_update_pct: Option<f64>,
    /// Lock time of `pgshift rollback` right after the cutover.
    rollback_lock_ms: Option<f64>,
}

// One way's run needs the servers, the load's shape, the binary, the
// migration and the goal its tail is counted against.
#[allow(clippy::too_many_arguments)]
async fn run_way(
    way: &str,
    primary: &Cluster,
    replica: &Cluster,
    db: &str,
    args: &Args,
    bin: &str,
    migration: &str,
    goal_ms: f64,
) -> Result<Way, Error> {
    let url = primary.url(db);
    let admin = connect(&url).await?;
    let load = Load::start(&url, args.rate, args.clients, args.rows, args.change).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop_lag = Arc::new(AtomicBool::new(false));
    let lag = watch_lag(replica.url(db), stop_lag.clone());
    let wal0 = wal_lsn(&admin).await?;
    let size0 = database_size_mb(&admin).await?;
    let upd0 = update_counts(&admin).await?;
    let written0 = buffer_writes(&admin).await?;
    let started = Instant::now();
    let mut from_log = FromEvents::default();
    let mut peak_rss_mb = None;
    let mut phases: Vec<(std::time::SystemTime, String)> = Vec::new();
    let mut steps: Vec<(std::time::SystemTime, std::time::SystemTime, String)> = Vec::new();
    if way == "blocking" {
        admin.batch_execute(args.change.blocking()).await?;
    } else {
        let events = std::env::temp_dir().join(format!("pgshift-bench-{db}.jsonl"));
        let _ = std::fs::remove_file(&events);
        let mut cmd = tokio::process::Command::new(bin);
        // The replica the bench reports lag from, so the lag guard reads the
        // same lag; the plan check before cutover is not what is timed here.
        cmd.args(["--database-url", &url, "--replica-url", &replica.url(db)])
            .args([
                "-q",
                "apply",
                migration,
                "--accept-plan-changes",
                "--events",
            ])
            .arg(&events);
        // Each way names its engine: the default (auto) would take the
        // copy engine for both.
        cmd.args([
            "--engine",
            if way.starts_with("copy-") {
                "copy"
            } else {
                "update"
            },
        ]);
        if way.ends_with("-default") {
            cmd.args(&args.default_args);
        }
        if way.ends_with("-alt") {
            cmd.args(&args.alt_args);
        }
        if way.ends_with("-unthrottled") {
            // Two backfill workers (plus the lifeline), batches sized for throughput.
            cmd.args([
                "--batch-target",
                "1s",
                "--max-batch",
                "200000",
                "--max-connections",
                "3",
                "--max-commit-latency",
                "0",
                "--max-wal-mb-per-second",
                "0",
                "--flush-wal-every",
                "0",
            ]);
        }
        let mut child = cmd.stdout(std::process::Stdio::null()).spawn()?;
        let pid = child.id().unwrap_or(0);
        let mut rss_kb: u64 = 0;
        let status = loop {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                    let kb: u64 = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    rss_kb = rss_kb.max(kb);
                }
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !status.success() {
            return Err(format!("pgshift apply failed on {db}: {status}").into());
        }
        // Read and parsed once; the helpers below pick what they need.
        let log = read_events(&events)?;
        from_log = parse_events(&log, args.rows, args.change);
        phases = phase_times(&log);
        steps = step_times(&log);
        peak_rss_mb = Some(rss_kb as f64 / 1024.0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let wal_bytes = wal_lsn(&admin).await? - wal0;
    let database_mb = [size0, database_size_mb(&admin).await?];
    tokio::time::sleep(Duration::from_millis(600)).await; // stats are flushed at most every 500 ms
    let upd1 = update_counts(&admin).await?;
    let written1 = buffer_writes(&admin).await?;
    let buffers_written_mb = [0, 1, 2].map(|i| (written1[i] - written0[i]) as f64 * 8192.0 / 1e6);
    let hot_update_pct =
        (upd1.0 > upd0.0).then(|| 100.0 * (upd1.1 - upd0.1) as f64 / (upd1.0 - upd0.0) as f64);
    let mut rollback_lock_ms = None;
    if way == "pgshift-default" {
        let events = std::env::temp_dir().join(format!("pgshift-bench-rb-{db}.jsonl"));
        let _ = std::fs::remove_file(&events);
        let status = tokio::process::Command::new(bin)
            .args([
                "--database-url",
                &url,
                "-q",
                "rollback",
                args.change.name(),
                "--events",
            ])
            .arg(&events)
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        if status.success() {
            rollback_lock_ms = read_events(&events)?
                .into_iter()
                .find(|e| e["event"] == "rolled_back")
                .and_then(|e| e["lock_ms"].as_f64());
        }
    }
    let mut finalized_mb = None;
    if way.starts_with("copy-") {
        // The application runs on through finalize: its transactions there
        // are grouped under it and its steps, as apply's are.
        let events = std::env::temp_dir().join(format!("pgshift-bench-fin-{db}.jsonl"));
        let _ = std::fs::remove_file(&events);
        phases.push((std::time::SystemTime::now(), "finalize".to_string()));
        let status = tokio::process::Command::new(bin)
            .args([
                "--database-url",
                &url,
                "-q",
                "finalize",
                args.change.name(),
                "--yes",
                "--events",
            ])
            .arg(&events)
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        if status.success() {
            finalized_mb = Some(database_size_mb(&admin).await?);
        }
        if let Ok(log) = read_events(&events) {
            steps.extend(step_times(&log));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latencies = load.stop().await;
    // For digging into a tail: every transaction as CSV (start, ms, kind).
    if let Ok(dir) = std::env::var("PGSHIFT_BENCH_TIMELINE") {
        let mut csv = String::from("at_unix_ms,ms,kind\n");
        for i in 0..latencies.ms.len() {
            let at = latencies.at[i]
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            csv.push_str(&format!(
                "{at},{:.3},{}\n",
                latencies.ms[i], latencies.kind[i]
            ));
        }
        std::fs::write(format!("{dir}/{db}.csv"), csv)?;
        std::fs::write(format!("{dir}/server.log"), primary.log())?;
    }
    stop_lag.store(true, Ordering::SeqCst);
    let peak_lag = lag.await.unwrap_or(-1.0);
    let cutover_at = phases.iter().find(|(_, p)| p == "cutover").map(|(t, _)| *t);
    let cutover_stall_ms = cutover_at.map(|c| {
        latencies
            .at
            .iter()
            .zip(&latencies.ms)
            .filter(|(t, _)| {
                let d = if **t > c {
                    t.duration_since(c)
                } else {
                    c.duration_since(**t)
                };
                d.map(|d| d < Duration::from_secs(1)).unwrap_or(false)
            })
            .map(|(_, ms)| *ms)
            .fold(0.0, f64::max)
    });
    let lock = Duration::from_millis(from_log.cutover_lock_ms.unwrap_or(0.0) as u64);
    let worst = |keep: &dyn Fn(std::time::SystemTime, f64) -> bool| {
        latencies
            .at
            .iter()
            .zip(&latencies.ms)
            .filter(|(t, ms)| keep(**t, **ms))
            .map(|(_, ms)| *ms)
            .fold(0.0, f64::max)
    };
    let cutover_overlap_ms = cutover_at
        .map(|c| worst(&|t, ms| t < c && t + Duration::from_secs_f64(ms / 1e3) > c - lock));
    let after_cutover_ms =
        cutover_at.map(|c| worst(&|t, _| t >= c && t < c + Duration::from_secs(1)));
    let during = |t: std::time::SystemTime| -> Option<String> {
        let phase = phases
            .iter()
            .rev()
            .find(|(p, _)| *p <= t)
            .map(|(_, name)| name.clone())?;
        let step = steps
            .iter()
            .find(|(from, to, _)| *from <= t && t <= *to)
            .map(|(_, _, what)| format!(": {what}"))
            .unwrap_or_default();
        Some(format!("{phase}{step}"))
    };
    let mut order: Vec<usize> = (0..latencies.ms.len()).collect();
    order.sort_by(|a, b| latencies.ms[*b].total_cmp(&latencies.ms[*a]));
    let slowest: Vec<serde_json::Value> = order
        .iter()
        .take(10)
        .map(|&i| {
            json!({"ms": latencies.ms[i], "kind": latencies.kind[i],
                   "during": during(latencies.at[i])})
        })
        .collect();
    let worst_during = order.first().and_then(|&i| during(latencies.at[i]));
    let tail = tail_by_step(&latencies, &during, goal_ms);
    Ok(Way {
        way: way.to_string(),
        seconds,
        p50_ms: latencies.pct(0.5),
        p99_ms: latencies.pct(0.99),
        read_p99_ms: latencies.pct_of(false, 0.99),
        write_p99_ms: latencies.pct_of(true, 0.99),
        max_ms: latencies.max(),
        transactions: latencies.ms.len(),
        failed: latencies.failed,
        errors: latencies.errors.clone(),
        wal_bytes,
        database_mb,
        finalized_mb,
        peak_replica_lag_s: peak_lag,
        backfill_rows_per_s: from_log.backfill_rows_per_s,
        cutover_lock_ms: from_log.cutover_lock_ms,
        cutover_statements_ms: from_log.cutover_statements_ms,
        cutover_lock_wait_ms: from_log.cutover_lock_wait_ms,
        calm_waited_ms: from_log.calm_waited_ms,
        peak_rss_mb,
        cutover_stall_ms,
        cutover_overlap_ms,
        after_cutover_ms,
        worst_during,
        slowest,
        tail,
        hot_update_pct,
        buffers_written_mb,
        rollback_lock_ms,
    })
}

/// The transactions grouped by the phase and step they started in, those
/// with the most over `goal_ms` first; outside pgshift's phases: `before`.
fn tail_by_step(
    latencies: &Latencies,
    during: &dyn Fn(std::time::SystemTime) -> Option<String>,
    goal_ms: f64,
) -> Vec<serde_json::Value> {
    let mut groups: std::collections::BTreeMap<
        String,
        (Vec<f64>, std::time::SystemTime, std::time::SystemTime),
    > = std::collections::BTreeMap::new();
    for (t, ms) in latencies.at.iter().zip(&latencies.ms) {
        let key = during(*t).unwrap_or_else(|| "before".to_string());
        let g = groups.entry(key).or_insert((Vec::new(), *t, *t));
        g.0.push(*ms);
        g.1 = g.1.min(*t);
        g.2 = g.2.max(*t);
    }
    let mut out: Vec<(usize, serde_json::Value)> = groups
        .into_iter()
        .map(|(during, (ms, first, last))| {
            let over = ms.iter().filter(|m| **m > goal_ms).count();
            let seconds = last.duration_since(first).unwrap_or_default().as_secs_f64();
            let p99 = Latencies {
                ms: ms.clone(),
                ..Latencies::default()
            }
            .pct(0.99);
            let v = json!({"during": during, "seconds": (seconds * 10.0).round() / 10.0,
                           "transactions": ms.len(), "over_goal": over,
                           "over_goal_pct": (over as f64 * 1000.0 / ms.len() as f64).round() / 10.0,
                           "p99_ms": (p99 * 100.0).round() / 100.0});
            (over, v)
        })
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.0));
    out.into_iter().map(|(_, v)| v).collect()
}

/// The events pgshift wrote to an `--events` file, one JSON object a line.
fn read_events(path: &std::path::Path) -> std::io::Result<Vec<serde_json::Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// (time, phase) from pgshift's events: phase changes, and the cutover's commit.
fn phase_times(log: &[serde_json::Value]) -> Vec<(std::time::SystemTime, String)> {
    let mut out: Vec<(std::time::SystemTime, String)> = log
        .iter()
        .filter_map(|e| {
            let t = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
            match e["event"].as_str()? {
                "phase" => Some((t, e["phase"].as_str()?.to_string())),
                // The event is written after the commit: the lock was held just before it.
                "cutover" => Some((t, "cutover".to_string())),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

/// (start, end, description) of each step from pgshift's `step` events,
/// which are written when a step ends and carry its duration.
fn step_times(
    log: &[serde_json::Value],
) -> Vec<(std::time::SystemTime, std::time::SystemTime, String)> {
    log.iter()
        .filter(|e| e["event"] == "step")
        .filter_map(|e| {
            let end = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
            let start = end - Duration::from_millis(e["ms"].as_u64()?);
            Some((start, end, e["step"].as_str()?.to_string()))
        })
        .collect()
}

/// What the way's numbers take from pgshift's event log.
#[derive(Default)]
struct FromEvents {
    backfill_rows_per_s: Option<f64>,
    cutover_lock_ms: Option<f64>,
    cutover_statements_ms: Option<f64>,
    cutover_lock_wait_ms: Option<f64>,
    calm_waited_ms: Option<f64>,
}

fn parse_events(events: &[serde_json::Value], rows: i64, change: Change) -> FromEvents {
    let time = |phase: &str| {
        events
            .iter()
            .find(|e| e["event"] == "phase" && e["phase"] == phase)
            .and_then(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
    };
    let backfill_rows_per_s = match (time("backfilling"), time("validating")) {
        // scripts + archived (rows/2) + script_runs (2 × rows)
        (Some(a), Some(b)) => b
            .duration_since(a)
            .ok()
            .map(|d| change.converted_rows(rows) / d.as_secs_f64()),
        _ => None,
    };
    let cutover = events.iter().find(|e| e["event"] == "cutover");
    FromEvents {
        backfill_rows_per_s,
        cutover_lock_ms: cutover.and_then(|e| e["lock_ms"].as_f64()),
        cutover_statements_ms: cutover.and_then(|e| e["statements_ms"].as_f64()),
        cutover_lock_wait_ms: cutover.and_then(|e| e["lock_wait_ms"].as_f64()),
        calm_waited_ms: events
            .iter()
            .find(|e| e["event"] == "calm")
            .and_then(|e| e["waited_ms"].as_f64()),
    }
}

async fn baseline(primary: &Cluster, db: &str, args: &Args) -> Result<Latencies, Error> {
    let load = Load::start(
        &primary.url(db),
        args.rate,
        args.clients,
        args.rows,
        args.change,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(args.baseline_secs)).await;
    Ok(load.stop().await)
}

/// Starts every way from the same quiet state: `CREATE DATABASE` has just
/// written the whole copy to the WAL, so checkpoint now (rather than in the
/// middle of the next way) and let the replica replay all of it.
async fn settle(primary: &Cluster, replica: &Cluster) -> Result<(), Error> {
    let p = connect(&primary.url("postgres")).await?;
    p.batch_execute("CHECKPOINT").await?;
    let lsn: String = p
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let r = connect(&replica.url("postgres")).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let caught_up: bool = r
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await?
            .get(0);
        if caught_up {
            break;
        }
        if Instant::now() > deadline {
            return Err("the replica did not catch up within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.batch_execute("CHECKPOINT").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// The middle value; of an even count, the mean of the two middle ones
/// (two repetitions gave the larger before).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let bin = std::env::var("PGSHIFT_BIN").unwrap_or_else(|_| "target/release/pgshift".into());
    let jsonb_dir = tempfile::tempdir()?;
    let jsonb_path = jsonb_dir
        .path()
        .join(format!("{}.sql", Change::Jsonb.name()));
    std::fs::write(&jsonb_path, MIGRATION_JSONB)?;
    let jsonb_path = jsonb_path.display().to_string();
    let events_path = jsonb_dir
        .path()
        .join(format!("{}.sql", Change::Partitioned.name()));
    std::fs::write(&events_path, MIGRATION_PARTITIONED)?;
    let events_path = events_path.display().to_string();
    let migration = match args.change {
        Change::Bigint => concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/0001_scripts_id_bigint.sql"
        ),
        Change::Jsonb => jsonb_path.as_str(),
        Change::Partitioned => events_path.as_str(),
    };
    eprintln!(
        "bench: {} rows, {} repetition(s), load {} tx/s on {} clients",
        args.rows, args.reps, args.rate, args.clients
    );
    if !args.default_args.is_empty() {
        eprintln!(
            "bench: pgshift-default runs with {}",
            args.default_args.join(" ")
        );
    }
    let options = ClusterOptions {
        fsync: true,
        extra_conf: server_conf(&args),
        ..ClusterOptions::default()
    };
    for line in &args.server_conf {
        eprintln!("bench: server runs with {line}");
    }
    let primary = Cluster::start_with(options)?;
    let replica = primary.start_replica()?;
    primary.create_database("bench_template")?;
    let template = connect(&primary.url("bench_template")).await?;
    let t = Instant::now();
    if args.change == Change::Partitioned {
        // The incident's tables stay small: the load is on `events`.
        incident::load(&template, 1000).await?;
        template
            .batch_execute(&partitioned_schema(args.rows))
            .await?;
    } else {
        incident::load(&template, args.rows).await?;
    }
    // As tables are in production, vacuumed and all-visible (index-only
    // scans, and the plan of the foreign key's validation, depend on it).
    // Right after the load a snapshot elsewhere (the replica's feedback,
    // autovacuum's ANALYZE) can still need the rows as not yet visible to
    // all: vacuum again until the pages are all-visible.
    let mut visible = 0.0;
    for _ in 0..20 {
        template.batch_execute("VACUUM ANALYZE").await?;
        visible = template
            .query_one(
                "SELECT min(relallvisible::float8 / greatest(relpages, 1)) FROM pg_class
                 WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace AND relpages > 0",
                &[],
            )
            .await?
            .get::<_, Option<f64>>(0)
            .unwrap_or(1.0);
        if visible >= 0.99 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "bench: tables {:.0}% all-visible after VACUUM",
        visible * 100.0
    );
    drop(template);
    eprintln!("bench: loaded in {:.1} s", t.elapsed().as_secs_f64());

    let ways: Vec<&str> = args.ways.iter().map(String::as_str).collect();
    let mut results: Vec<Way> = Vec::new();
    // The baseline is measured before each repetition's first way, on that
    // way's fresh copy: one short window on a noisy machine misleads.
    let mut bases: Vec<Latencies> = Vec::new();
    for rep in 0..args.reps {
        let mut order: Vec<&str> = ways.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for way in order {
            let db = format!("bench_{}_{rep}", way.replace('-', "_"));
            primary.psql(
                "postgres",
                &format!("CREATE DATABASE {db} TEMPLATE bench_template"),
            )?;
            settle(&primary, &replica).await?;
            if bases.len() == rep {
                bases.push(baseline(&primary, &db, &args).await?);
            }
            eprintln!("bench: rep {rep}: {way}");
            let goal_ms = 3.0 * bases[rep].pct(0.99);
            let r = run_way(
                way, &primary, &replica, &db, &args, &bin, migration, goal_ms,
            )
            .await?;
            eprintln!(
                "bench:   {:.1} s, p99 {:.1} ms (reads {:.1}, writes {:.1}), max {:.1} ms, failed {}",
                r.seconds, r.p99_ms, r.read_p99_ms, r.write_p99_ms, r.max_ms, r.failed
            );
            eprintln!(
                "bench:   database {:.0} MB before, {:.0} MB after{}",
                r.database_mb[0],
                r.database_mb[1],
                r.finalized_mb
                    .map(|mb| format!(", {mb:.0} MB after finalize"))
                    .unwrap_or_default()
            );
            for t in r.tail.iter().take(4) {
                eprintln!(
                    "bench:     {} over {goal_ms:.1} ms of {} ({:.1}%), p99 {:.1} ms, during `{}` ({:.1} s)",
                    t["over_goal"], t["transactions"], t["over_goal_pct"], t["p99_ms"].as_f64().unwrap_or(0.0),
                    t["during"].as_str().unwrap_or(""), t["seconds"].as_f64().unwrap_or(0.0)
                );
            }
            results.push(r);
            primary.psql("postgres", &format!("DROP DATABASE {db}"))?;
        }
    }

    let med = |way: &str, f: &dyn Fn(&Way) -> f64| {
        median(results.iter().filter(|r| r.way == way).map(f).collect())
    };
    let blocking_s = med("blocking", &|r| r.seconds);
    println!(
        "## pgshift benchmark: {}, {} rows, {} repetition(s), medians\n",
        args.change.name(),
        args.rows,
        args.reps
    );
    let base_p50 = median(bases.iter().map(|b| b.pct(0.5)).collect());
    let base_p99 = median(bases.iter().map(|b| b.pct(0.99)).collect());
    let base_max = median(bases.iter().map(|b| b.max()).collect());
    let base_reads = median(bases.iter().map(|b| b.pct_of(false, 0.99)).collect());
    let base_writes = median(bases.iter().map(|b| b.pct_of(true, 0.99)).collect());
    // A table is only comparable with one from the same server settings.
    println!(
        "Server (primary and replica): fsync on, {}. pgshift-default flags: {}; -alt flags: {}.\n",
        server_conf(&args).join(", "),
        shown(&args.default_args),
        shown(&args.alt_args)
    );
    println!("Load: {} tx/s on {} clients (reads by id through the table and the view, updates, inserts). Baseline without migration (median of one {} s window per repetition): p50 {:.2} ms, p99 {:.2} ms (reads {:.2}, writes {:.2}), max {:.1} ms.\n",
        args.rate, args.clients, args.baseline_secs, base_p50, base_p99, base_reads, base_writes, base_max);
    println!("| way | wall s | ratio to blocking | backfill rows/s | app p50 ms | app p99 ms | app max ms | app max around cutover ms | failed tx | cutover lock ms | peak replica lag s | pgshift peak RSS MB | WAL MB |");
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &way in &ways {
        let opt = |f: &dyn Fn(&Way) -> Option<f64>| {
            let v: Vec<f64> = results
                .iter()
                .filter(|r| r.way == way)
                .filter_map(f)
                .collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", median(v))
            }
        };
        println!(
            "| {way} | {:.1} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.0} | {} | {:.2} | {} | {:.0} |",
            med(way, &|r| r.seconds),
            // Without a blocking run there is nothing to compare with.
            if ways.contains(&"blocking") {
                format!("{:.2}", med(way, &|r| r.seconds) / blocking_s)
            } else {
                "-".to_string()
            },
            opt(&|r| r.backfill_rows_per_s),
            med(way, &|r| r.p50_ms),
            med(way, &|r| r.p99_ms),
            med(way, &|r| r.max_ms),
            opt(&|r| r.cutover_stall_ms),
            med(way, &|r| r.failed as f64),
            opt(&|r| r.cutover_lock_ms),
            med(way, &|r| r.peak_replica_lag_s),
            opt(&|r| r.peak_rss_mb),
            med(way, &|r| r.wal_bytes as f64) / 1e6,
        );
    }
    let extra = |f: &dyn Fn(&Way) -> Option<f64>| {
        let v: Vec<f64> = results
            .iter()
            .filter(|r| r.way == "pgshift-default")
            .filter_map(f)
            .collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", median(v))
        }
    };
    println!();
    for &way in &ways {
        let finalized: Vec<f64> = results
            .iter()
            .filter(|r| r.way == way)
            .filter_map(|r| r.finalized_mb)
            .collect();
        println!(
            "- {way}: database {:.0} MB before, {:.0} MB after{}; buffers written by checkpoints {:.0} MB, the background writer {:.0} MB, backends {:.0} MB",
            med(way, &|r| r.database_mb[0]),
            med(way, &|r| r.database_mb[1]),
            if finalized.is_empty() {
                String::new()
            } else {
                format!(", {:.0} MB after finalize", median(finalized))
            },
            med(way, &|r| r.buffers_written_mb[0]),
            med(way, &|r| r.buffers_written_mb[1]),
            med(way, &|r| r.buffers_written_mb[2]),
        );
    }
    // Only the update engine's default way measures these.
    if results.iter().any(|r| r.way == "pgshift-default") {
        println!(
            "\npgshift-default: rollback after cutover held its locks {} ms; {}% of the backfill's updates to scripts were HOT.",
            extra(&|r| r.rollback_lock_ms),
            extra(&|r| r.hot_update_pct)
        );
    }
    for r in &results {
        for e in &r.errors {
            println!("- {}: the application saw: {e}", r.way);
        }
        if let (Some(all), Some(before)) = (r.cutover_lock_ms, r.cutover_statements_ms) {
            println!(
                "- {}: cutover transaction {all:.0} ms, of which {before:.0} ms before COMMIT ({:.0} ms to get the locks, after waiting {:.0} ms for calm commits); the transactions overlapping it waited at most {:.1} ms, those of the second after it at most {:.1} ms",
                r.way,
                r.cutover_lock_wait_ms.unwrap_or(0.0),
                r.calm_waited_ms.unwrap_or(0.0),
                r.cutover_overlap_ms.unwrap_or(0.0),
                r.after_cutover_ms.unwrap_or(0.0)
            );
        }
        if let Some(w) = &r.worst_during {
            let mut kinds: Vec<(String, usize)> = Vec::new();
            for k in r.slowest.iter().filter_map(|t| t["kind"].as_str()) {
                match kinds.iter_mut().find(|(n, _)| n == k) {
                    Some((_, c)) => *c += 1,
                    None => kinds.push((k.to_string(), 1)),
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, c)| format!("{c} {k}")).collect();
            println!(
                "- {}: worst application latency {:.1} ms, during `{w}`; the ten slowest: {}",
                r.way,
                r.max_ms,
                kinds.join(", ")
            );
        }
    }
    let json = json!({"rows": args.rows, "reps": args.reps, "rate": args.rate,
        "server_conf": server_conf(&args), "default_args": args.default_args,
        "alt_args": args.alt_args,
        "baseline": {"p50_ms": base_p50, "p99_ms": base_p99, "max_ms": base_max,
                     "read_p99_ms": base_reads, "write_p99_ms": base_writes,
                     "p99_ms_each": bases.iter().map(|b| b.pct(0.99)).collect::<Vec<_>>()},
        "runs": results});
    let path = std::env::temp_dir().join("pgshift-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nAll runs: {}", path.display());
    Ok(())
}
