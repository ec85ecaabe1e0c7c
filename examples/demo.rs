//! The demo behind `scripts/demo`: starts a throwaway primary and streaming
//! replica, loads the incident schema, runs an application load (writes,
//! and reads through the union view), widens `scripts.id` online with the
//! pgshift binary, printing the plan and what the application saw, then
//! changes `body` from text to jsonb online and rolls that back in one step.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift::testkit::{incident, Cluster};
use tokio_postgres::NoTls;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let rows: i64 = std::env::args()
        .skip_while(|a| a != "--rows")
        .nth(1)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(200_000);
    // pgshift's default, `auto`, takes the copy-and-swap engine for the
    // incident's tables; `--engine update` shows the shadow columns instead.
    let engine: String = std::env::args()
        .skip_while(|a| a != "--engine")
        .nth(1)
        .unwrap_or_else(|| "auto".into());
    let bin = std::env::var("PGSHIFT_BIN").unwrap_or_else(|_| "target/debug/pgshift".into());
    let migration = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0001_scripts_id_bigint.sql"
    );

    section("1. A throwaway primary and a streaming replica");
    let primary = Cluster::start()?;
    primary.create_database("app")?;
    let replica = primary.start_replica()?;
    let url = primary.url("app");
    println!("primary: {url}\nreplica: {}", replica.url("app"));

    section(&format!("2. The incident schema with {rows} scripts"));
    let client = connect(&url).await?;
    incident::load(&client, rows).await?;
    incident::set_scripts_sequence(&client, rows + 1).await?;
    println!("scripts.id is integer; script_runs.script_id references it; all_scripts unions it with archived_scripts");

    section("3. The plan (pgshift plan)");
    run(&bin, &url, &["plan", migration, "--engine", &engine]).await?;

    section("3b. Would the plans of the real queries regress? (pgshift check, rehearsed in a rolled-back transaction)");
    let dir = tempfile::tempdir()?;
    let naive = dir.path().join("incident_naive.sql");
    std::fs::write(&naive, "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n")?;
    let queries = dir.path().join("workload.sql");
    std::fs::write(
        &queries,
        "SELECT name FROM all_scripts WHERE id = $1;\nSELECT name FROM scripts WHERE id = $1;\n",
    )?;
    let q = queries.to_str().unwrap_or_default();
    println!("-- the migration of the incident, scripts.id alone: the union view regresses");
    run_expecting(
        &bin,
        &url,
        &[
            "--replica-url",
            &url,
            "check",
            naive.to_str().unwrap_or_default(),
            "--queries",
            q,
        ],
        1,
    )
    .await?;
    println!("-- this repository's migration, widening archived_scripts.id too: no regression");
    run_expecting(
        &bin,
        &url,
        &["--replica-url", &url, "check", migration, "--queries", q],
        0,
    )
    .await?;

    section("4. Application load: writes, and reads by id through the view");
    let load = Load::start(&url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = load.reset_max();
    println!(
        "baseline: worst read {baseline:?}, worst write {:?}",
        load.reset_write_max()
    );

    section("5. Online migration (pgshift apply)");
    let started = Instant::now();
    run(&bin, &url, &["apply", migration, "--engine", &engine]).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (reads, writes, errors) = load.stop().await;
    let sorted = load_stats(&reads);
    let p99 = sorted
        .get(sorted.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "apply took {:.1} s; meanwhile the application made {writes} writes and {} reads by id through all_scripts, with {} errors",
        took.as_secs_f64(),
        sorted.len(),
        errors.len(),
    );
    println!(
        "reads: p99 {p99:?}, worst {:?}; worst write {:?} (includes the cutover's lock)",
        load_max(&sorted),
        Duration::from_micros(WRITE_MAX.load(Ordering::SeqCst))
    );
    for e in errors.iter().take(3) {
        println!("  error: {e}");
    }

    section("6. Afterwards");
    for row in client
        .query(
            "SELECT attrelid::regclass::text, attname::text, format_type(atttypid, atttypmod)
             FROM pg_attribute WHERE attname IN ('id', 'script_id') AND NOT attisdropped
               AND attrelid IN ('scripts'::regclass, 'script_runs'::regclass, 'archived_scripts'::regclass, 'all_scripts'::regclass)
             ORDER BY 1, 2",
            &[],
        )
        .await?
    {
        println!("{}.{}: {}", row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2));
    }
    client
        .batch_execute("SELECT setval('scripts_id_seq', 2147483647)")
        .await?;
    let id: i64 = client
        .query_one(
            "INSERT INTO scripts (account_id, name) VALUES (1, 'past int4') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    println!("inserted a script with id {id} (past the int4 limit)");
    let standby = connect(&replica.url("app")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: i64 = standby
            .query_one("SELECT count(*) FROM scripts WHERE id = $1", &[&id])
            .await?
            .get(0);
        if seen == 1 || Instant::now() > deadline {
            println!("replica has it: {}", seen == 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run(&bin, &url, &["status"]).await?;

    // `auto` takes the copy engine for the incident's tables.
    section(if engine == "update" {
        "7. Finalize (drops the old columns; irreversible)"
    } else {
        "7. Finalize (drops the original tables; irreversible)"
    });
    run(&bin, &url, &["finalize", "0001_scripts_id_bigint", "--yes"]).await?;

    section(
        "8. Any type change: body text -> jsonb on both tables of the view, under the same load",
    );
    let body = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0002_scripts_body_jsonb.sql"
    );
    run(&bin, &url, &["plan", body, "--engine", &engine]).await?;
    // The application writes JSON text, which both types take: a write that
    // is not JSON fails after cutover, as after the blocking ALTER.
    let load = Load::start(&url).await?;
    let started = Instant::now();
    run(&bin, &url, &["apply", body, "--engine", &engine]).await?;
    let took = started.elapsed();
    // A write after cutover: the rollback below keeps it, converted back.
    let after: i64 = client
        .query_one(
            "INSERT INTO scripts (account_id, name, body) VALUES (1, 'after cutover', '{\"steps\": 3}') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    let (reads, writes, errors) = load.stop().await;
    println!(
        "apply took {:.1} s; the application made {writes} writes and {} reads meanwhile, with {} errors; worst read {:?}",
        took.as_secs_f64(),
        reads.len(),
        errors.len(),
        load_max(&load_stats(&reads))
    );
    for e in errors.iter().take(3) {
        println!("  error: {e}");
    }
    print_body_types(&client).await?;
    let total: i64 = client
        .query_one("SELECT count(*) FROM scripts", &[])
        .await?
        .get(0);

    section("9. One-step rollback after cutover (pgshift rollback): every write kept");
    run(&bin, &url, &["rollback", "0002_scripts_body_jsonb"]).await?;
    print_body_types(&client).await?;
    let (back, kept): (i64, Option<String>) = client
        .query_one(
            "SELECT (SELECT count(*) FROM scripts), (SELECT body FROM scripts WHERE id = $1)",
            &[&after],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))?;
    println!(
        "scripts has {back} rows, as before the rollback ({total}); script {after}, written after cutover, has body {}",
        kept.as_deref().unwrap_or("NULL")
    );
    println!("\ndone; the clusters are removed on exit");
    Ok(())
}

async fn print_body_types(client: &tokio_postgres::Client) -> Result<(), Error> {
    for row in client
        .query(
            "SELECT attrelid::regclass::text, format_type(atttypid, atttypmod)
             FROM pg_attribute WHERE attname = 'body' AND NOT attisdropped
               AND attrelid IN ('scripts'::regclass, 'archived_scripts'::regclass, 'all_scripts'::regclass)
             ORDER BY 1",
            &[],
        )
        .await?
    {
        println!("{}.body: {}", row.get::<_, String>(0), row.get::<_, String>(1));
    }
    Ok(())
}

/// The server's message, not tokio-postgres's bare "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{}: {}", d.code().code(), d.message()))
        .unwrap_or_else(|| e.to_string())
}

static WRITE_MAX: AtomicU64 = AtomicU64::new(0);

fn section(title: &str) {
    println!("\n=== {title} ===");
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn run(bin: &str, url: &str, args: &[&str]) -> Result<(), Error> {
    println!("$ pgshift {}", args.join(" "));
    let status = tokio::process::Command::new(bin)
        .arg("--database-url")
        .arg(url)
        .args(args)
        .status()
        .await?;
    if !status.success() {
        return Err(format!("pgshift {} exited with {status}", args[0]).into());
    }
    Ok(())
}

/// Runs pgshift and checks its exit code (the demo shows refusals too).
async fn run_expecting(bin: &str, url: &str, args: &[&str], code: i32) -> Result<(), Error> {
    println!("$ pgshift {}", args.join(" "));
    let status = tokio::process::Command::new(bin)
        .arg("--database-url")
        .arg(url)
        .args(args)
        .status()
        .await?;
    if status.code() != Some(code) {
        return Err(format!("pgshift {} exited with {status}, expected {code}", args[0]).into());
    }
    println!("(exit {code})");
    Ok(())
}

fn load_stats(reads: &[Duration]) -> Vec<Duration> {
    let mut v = reads.to_vec();
    v.sort();
    v
}

fn load_max(sorted: &[Duration]) -> Duration {
    sorted.last().copied().unwrap_or_default()
}

/// What a load task saw: read latencies, writes made, errors.
type LoadResult = (Vec<Duration>, u64, Vec<String>);

/// The application: one writer and one reader.
struct Load {
    stop: Arc<AtomicBool>,
    read_max: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
}

impl Load {
    async fn start(url: &str) -> Result<Load, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let read_max = Arc::new(AtomicU64::new(0));
        let writer = connect(url).await?;
        let reader = connect(url).await?;
        let s = stop.clone();
        let w = tokio::spawn(async move {
            let mut n = 0u64;
            let mut errors = Vec::new();
            let mut i: i64 = 0;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let t = Instant::now();
                let r = if i % 2 == 0 {
                    writer
                        .execute(
                            "INSERT INTO scripts (account_id, name, body) VALUES (1, 'live', '{\"steps\": 1}')",
                            &[],
                        )
                        .await
                } else {
                    writer.execute("INSERT INTO script_runs (script_id, status) VALUES ((SELECT max(id) FROM scripts), 'ok')", &[]).await
                };
                WRITE_MAX.fetch_max(t.elapsed().as_micros() as u64, Ordering::SeqCst);
                match r {
                    Ok(_) => n += 1,
                    Err(e) => errors.push(describe(&e)),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (Vec::new(), n, errors)
        });
        let (s, m) = (stop.clone(), read_max.clone());
        let r = tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            let mut i: i32 = 0;
            while !s.load(Ordering::SeqCst) {
                i = (i + 7919) % 100_000 + 1;
                let t = Instant::now();
                match reader
                    .query("SELECT name FROM all_scripts WHERE id = $1::int", &[&i])
                    .await
                {
                    Ok(_) => {
                        let d = t.elapsed();
                        m.fetch_max(d.as_micros() as u64, Ordering::SeqCst);
                        lat.push(d);
                    }
                    Err(e) => errors.push(describe(&e)),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (lat, 0, errors)
        });
        Ok(Load {
            stop,
            read_max,
            tasks: vec![w, r],
        })
    }

    fn reset_max(&self) -> Duration {
        Duration::from_micros(self.read_max.swap(0, Ordering::SeqCst))
    }

    fn reset_write_max(&self) -> Duration {
        Duration::from_micros(WRITE_MAX.swap(0, Ordering::SeqCst))
    }

    /// Stops the load and returns (read latencies, writes, errors).
    async fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut reads = Vec::new();
        let mut writes = 0;
        let mut errors = Vec::new();
        for task in self.tasks {
            if let Ok((lat, n, errs)) = task.await {
                reads.extend(lat);
                writes += n;
                errors.extend(errs);
            }
        }
        (reads, writes, errors)
    }
}
