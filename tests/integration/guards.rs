//! Guards: connection budget, lifeline rollback on a full server, lock
//! safety at cutover, replica-lag throttling, events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift::testkit::{incident, ClusterOptions};

use crate::support::*;

const SCRIPTS_ID: &str = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n";

fn small_server() -> ClusterOptions {
    ClusterOptions {
        max_connections: 20,
        ..ClusterOptions::default()
    }
}

/// Opens connections as role `app` until the server refuses; returns them.
async fn fill_slots(url_for_app: &str, at_most: usize) -> Vec<tokio_postgres::Client> {
    let mut held = Vec::new();
    for _ in 0..at_most {
        match tokio_postgres::connect(url_for_app, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                held.push(client);
            }
            Err(_) => break,
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_without_connection_headroom_and_changes_nothing() {
    let (cluster, client) = primary_with(small_server()).await;
    incident::load(&client, 1000).await.unwrap();
    client.batch_execute("CREATE ROLE app LOGIN").await.unwrap();
    let before = schema_dump(&client).await;
    // 20 slots, 3 reserved: leave 5 free, pgshift needs 1 more and keeps 5.
    let in_use: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let idle = fill_slots(
        &cluster.url("app").replace("postgres@", "app@"),
        (17 - in_use - 5) as usize,
    )
    .await;
    let (_dir, path) = migration("0020_budget", SCRIPTS_ID);
    let run = pgshift(&cluster.url("app"), &["apply", &path]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("not enough connection headroom: max_connections 20, reserved 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("leaves at least 5 free"),
        "{}",
        run.stderr
    );
    assert_eq!(schema_dump(&client).await, before);
    let state: bool = client
        .query_one("SELECT to_regclass('pgshift.migrations') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(state, "nothing was created");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pgshift_rolls_back_through_its_lifeline_when_the_server_is_full() {
    let (cluster, client) = primary_with(small_server()).await;
    incident::load(&client, 20_000).await.unwrap();
    client.batch_execute("CREATE ROLE app LOGIN").await.unwrap();
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0021_full", SCRIPTS_ID);
    let events = tempfile::NamedTempFile::new().unwrap();
    let child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--batch-size",
            "100",
            "--max-rows-per-second",
            "2000",
        ])
        .args(["--events", events.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(
            &client,
            "SELECT EXISTS (SELECT 1 FROM pgshift.backfill WHERE rows_done > 0)",
            Duration::from_secs(30)
        )
        .await,
        "the backfill never started"
    );
    // Take every slot an ordinary role can have.
    let held = fill_slots(&url.replace("postgres@", "app@"), 40).await;
    let refused =
        tokio_postgres::connect(&url.replace("postgres@", "app@"), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "the server still had free slots");
    // The backfill notices and pauses.
    assert!(
        wait_until(&client, "SELECT paused AND pause_reason LIKE 'only % free connection slots%' FROM pgshift.migrations", Duration::from_secs(10)).await,
        "the backfill did not pause for headroom"
    );
    // A superuser (reserved slot) asks for the rollback; the running process does it.
    let rb = pgshift(&url, &["rollback", "0021_full"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back on request"));
    drop(held);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("function pgshift."))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&schema_dump(&client).await), strip(&before));
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    let kinds = event_kinds(events.path());
    assert!(
        kinds.contains(&"phase".to_string())
            && kinds.contains(&"paused".to_string())
            && kinds.contains(&"rolled_back".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_makes_cutover_give_up_naming_it_while_readers_never_queue_long() {
    let (cluster, client) = incident_primary(2_000).await;
    let url = cluster.url("app");
    let (_dir, _path) = apply_to_ready(&url, "0022_blocked", SCRIPTS_ID).await;

    // A session sits in an open transaction that read the table.
    let blocker = connect(&url).await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM scripts;")
        .await
        .unwrap();
    let blocker_pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // A reader keeps querying and records its worst wait.
    let worst = Arc::new(AtomicU64::new(0));
    let reader = connect(&url).await;
    let (w, stop) = (
        worst.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let s = stop.clone();
    let task = tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            let t = Instant::now();
            reader
                .query("SELECT name FROM scripts WHERE id = 7", &[])
                .await
                .unwrap();
            w.fetch_max(t.elapsed().as_millis() as u64, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let run = pgshift(
        &url,
        &[
            "cutover",
            "0022_blocked",
            "--lock-timeout",
            "200ms",
            "--lock-retries",
            "2",
        ],
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("pid {blocker_pid}")),
        "{}",
        run.stderr
    );
    let worst = worst.load(Ordering::SeqCst);
    assert!(
        worst < 200 + 250,
        "a reader waited {worst} ms behind the cutover's lock request"
    );
    assert_eq!(
        client
            .query_one("SELECT phase FROM pgshift.migrations", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "ready"
    );
    // Once the blocker is gone, the cutover goes through.
    blocker.batch_execute("COMMIT").await.unwrap();
    let run = pgshift(&url, &["cutover", "0022_blocked"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A streaming replica of `cluster` that has caught up (`caught_up` holds
/// on it), with its replay then paused.
async fn standby_paused_after(
    cluster: &pgshift::testkit::Cluster,
    caught_up: &str,
) -> (pgshift::testkit::Cluster, tokio_postgres::Client) {
    let replica = cluster.start_replica().unwrap();
    let standby = connect(&replica.url("app")).await;
    assert!(wait_until(&standby, caught_up, Duration::from_secs(30)).await);
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    (replica, standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_pauses_the_backfill_until_replay_resumes() {
    let (cluster, client) = incident_primary(20_000).await;
    let (replica, standby) =
        standby_paused_after(&cluster, "SELECT count(*) > 0 FROM scripts_control").await;
    let url = cluster.url("app");

    let (_dir, path) = migration("0023_lag", SCRIPTS_ID);
    let child = pgshift_command(&url)
        .args(["--replica-url", &replica.url("app"), "-q", "apply", &path])
        .args([
            "--max-replica-lag",
            "1s",
            "--batch-size",
            "200",
            "--max-rows-per-second",
            "4000",
            "--accept-plan-changes",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(
            &client,
            "SELECT paused AND pause_reason LIKE 'replica replay lag%' FROM pgshift.migrations",
            Duration::from_secs(30)
        )
        .await,
        "the backfill did not pause for replica lag"
    );
    backfill_holds_still(&client, "while the replica lagged").await;

    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    finishes_cut_over(child, &client).await;
}

/// Rows done by the backfill do not move for a while; returns how many.
async fn backfill_holds_still(client: &tokio_postgres::Client, while_what: &str) -> i64 {
    let done = "SELECT sum(rows_done)::int8 FROM pgshift.backfill";
    let before: i64 = client.query_one(done, &[]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after: i64 = client.query_one(done, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "the backfill went on {while_what}");
    before
}

/// `apply` exits 0 with the migration cut over.
async fn finishes_cut_over(child: tokio::process::Child, client: &tokio_postgres::Client) {
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phase: String = client
        .query_one("SELECT phase FROM pgshift.migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "cut_over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_slot_without_a_consumer_pauses_the_backfill_until_it_is_dropped() {
    let (cluster, client) = incident_primary(20_000).await;
    client
        .batch_execute("SELECT pg_create_physical_replication_slot('stale_standby', true)")
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration("0025_slot", SCRIPTS_ID);

    let plan = pgshift(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["replication_slots"][0]["name"], "stale_standby");
    assert_eq!(json["replication_slots"][0]["active"], false);
    let warned = json["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("replication slot \"stale_standby\" (physical, no consumer connected)")
    });
    assert!(warned, "no warning about the slot: {}", json["warnings"]);

    let child = pgshift_command(&url)
        .args(["-q", "apply", &path])
        .args(["--max-slot-wal-mb", "1", "--batch-size", "200"])
        .args(["--max-rows-per-second", "4000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(
            &client,
            "SELECT coalesce(bool_or(paused AND pause_reason LIKE 'replication slot \"stale_standby\" (physical, no consumer connected) retains % MB of WAL, over 1 MB%SELECT pg_drop_replication_slot(''stale_standby'');' AND pause_reason NOT LIKE '%  %'), false)
             FROM pgshift.migrations",
            Duration::from_secs(30)
        )
        .await,
        "the backfill did not pause for the slot"
    );
    let done = backfill_holds_still(&client, "past the slot's limit").await;
    assert!(done < 20_000, "it paused only at the end");

    client
        .batch_execute("SELECT pg_drop_replication_slot('stale_standby')")
        .await
        .unwrap();
    finishes_cut_over(child, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_by_command_and_by_signal_with_events_and_a_hook() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let (dir, path) = migration("0024_pause", SCRIPTS_ID);
    let events = dir.path().join("events.jsonl");
    let hooked = dir.path().join("hook.jsonl");
    let child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--batch-size",
            "200",
            "--max-rows-per-second",
            "4000",
        ])
        .arg("--events")
        .arg(&events)
        .arg("--on-event")
        // Each event arrives as one line: one append per hook, so hooks
        // running at the same time never interleave inside a line.
        .arg(format!("cat >> '{}'", hooked.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    assert!(
        wait_until(
            &client,
            "SELECT EXISTS (SELECT 1 FROM pgshift.backfill WHERE rows_done > 0)",
            Duration::from_secs(30)
        )
        .await
    );

    // From another terminal.
    let run = pgshift(&url, &["pause", "0024_pause"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        wait_until(
            &client,
            "SELECT paused AND pause_reason LIKE 'pause requested%' FROM pgshift.migrations",
            Duration::from_secs(10)
        )
        .await
    );
    let before = sum_rows(&client).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sum_rows(&client).await,
        before,
        "the backfill went on while paused"
    );
    let status = pgshift(&url, &["status"]).await;
    assert!(
        status.stdout.contains("paused: pause requested"),
        "{}",
        status.stdout
    );
    let run = pgshift(&url, &["resume", "0024_pause"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("asked to continue"), "{}", run.stdout);
    assert!(
        wait_until(
            &client,
            "SELECT NOT paused FROM pgshift.migrations",
            Duration::from_secs(10)
        )
        .await
    );

    // By signal.
    // SAFETY: kill(2) on a child process we started; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let paused = wait_until(
        &client,
        "SELECT paused AND pause_reason LIKE 'paused by SIGUSR1%' FROM pgshift.migrations",
        Duration::from_secs(10),
    )
    .await;
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    assert!(paused, "SIGUSR1 did not pause the backfill");

    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = event_kinds(&events);
    for kind in ["phase", "paused", "resumed", "cutover"] {
        assert!(
            logged.iter().any(|k| k == kind),
            "no {kind} event in {logged:?}"
        );
    }
    // One part_done per key range that was checkpointed.
    let mut finished: Vec<(String, i64)> = read_events(&events)
        .iter()
        .filter(|e| e["event"] == "part_done")
        .map(|e| {
            assert!(e["seconds"].as_f64().unwrap() > 0.0, "{e}");
            (
                e["table"].as_str().unwrap().to_string(),
                e["part"].as_i64().unwrap(),
            )
        })
        .collect();
    finished.sort();
    let parts: Vec<(String, i64)> = client
        .query(
            "SELECT table_oid::regclass::text, part::int8 FROM pgshift.backfill ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(finished, parts);
    // The hook runs asynchronously: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooked = event_kinds(&hooked);
    assert!(
        hooked.iter().any(|k| k == "paused") && hooked.iter().any(|k| k == "cutover"),
        "{hooked:?}"
    );
}

async fn sum_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT sum(rows_done)::int8 FROM pgshift.backfill", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autovacuum_on_a_table_is_cancelled_before_the_cutover_asks_for_its_lock() {
    let (cluster, client) = primary_with(ClusterOptions {
        extra_conf: vec!["autovacuum_naptime = 1".into()],
        ..ClusterOptions::default()
    })
    .await;
    incident::load(&client, 20_000).await.unwrap();
    let url = cluster.url("app");
    let (_dir, _path) = apply_to_ready(&url, "0023_autovacuum", SCRIPTS_ID).await;

    // An autovacuum that crawls: it holds its lock on scripts for minutes.
    client
        .batch_execute(
            "ALTER TABLE scripts SET (autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1,
                                      autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);
             UPDATE scripts SET name = name;",
        )
        .await
        .unwrap();
    let vacuuming = wait_until(
        &client,
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE backend_type = 'autovacuum worker' AND query LIKE '%scripts%'",
        Duration::from_secs(60),
    )
    .await;
    assert!(vacuuming, "autovacuum never started on scripts");

    // A bystander mid-statement: only autovacuum may be cancelled.
    let bystander = connect(&url).await;
    let sleeping = tokio::spawn(async move {
        bystander
            .batch_execute("SELECT pg_sleep(3)")
            .await
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let run = pgshift(
        &url,
        &[
            "cutover",
            "0023_autovacuum",
            "--events",
            events.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A cutover on its own measures the commit latency for its wait alone.
    assert!(
        run.stderr
            .contains("the cutover locks once commits are under")
            && !run.stderr.contains("before the backfill"),
        "{}",
        run.stderr
    );
    let events = read_events(&events);
    assert!(
        events.iter().any(|e| e["event"] == "autovacuum_cancelled"),
        "{events:?}"
    );
    let cutover = events
        .iter()
        .find(|e| e["event"] == "cutover")
        .expect("a cutover event");
    let lock_ms = cutover["lock_ms"].as_u64().unwrap();
    let before_commit = cutover["statements_ms"].as_u64().unwrap();
    assert!(before_commit <= lock_ms, "{cutover}");
    assert!(
        lock_ms < 500,
        "the cutover held its locks {lock_ms} ms (an autovacuum wait is 1 s)"
    );
    assert_eq!(
        sleeping.await.unwrap(),
        Ok(()),
        "the bystander was cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cutover_locks_only_once_commits_are_fast_again() {
    // commit_delay makes every flushing commit sleep 100 ms before its
    // flush (with fsync on, and commit_siblings 0: whatever else runs).
    let (cluster, client) = primary_with(ClusterOptions {
        fsync: true,
        extra_conf: vec!["commit_siblings = 0".into()],
        ..ClusterOptions::default()
    })
    .await;
    incident::load(&client, 2_000).await.unwrap();
    let url = cluster.url("app");
    let (_dir, _path) = apply_to_ready(&url, "0030_calm", SCRIPTS_ID).await;
    for sql in [
        "ALTER SYSTEM SET commit_delay = 100000",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The disk calms down 1.5 s into the cutover's wait.
    let calming = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for sql in ["ALTER SYSTEM RESET commit_delay", "SELECT pg_reload_conf()"] {
            client.batch_execute(sql).await.unwrap();
        }
        client
    });
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let run = pgshift(
        &url,
        &[
            "cutover",
            "0030_calm",
            "--max-commit-latency",
            "20ms",
            "--events",
            events.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let client = calming.await.unwrap();
    let events = read_events(&events);
    let calm = events
        .iter()
        .find(|e| e["event"] == "calm")
        .expect("a calm event");
    assert_eq!(calm["calm"], true, "{calm}");
    assert!(calm["slowest_ms"].as_f64().unwrap() >= 90.0, "{calm}");
    let waited = calm["waited_ms"].as_u64().unwrap();
    assert!(
        (1000..5000).contains(&waited),
        "the cutover waited {waited} ms for calm commits: {calm}"
    );
    let cutover = events
        .iter()
        .position(|e| e["event"] == "cutover")
        .expect("a cutover event");
    assert!(
        events.iter().position(|e| e["event"] == "calm").unwrap() < cutover,
        "the wait comes before the lock"
    );
    let cutover = &events[cutover];
    assert!(
        cutover["lock_wait_ms"].as_u64().unwrap() <= cutover["statements_ms"].as_u64().unwrap(),
        "{cutover}"
    );
    let id_type: String = one(
        &client,
        "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'scripts'::regclass AND attname = 'id'",
    )
    .await;
    assert_eq!(id_type, "bigint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_at_cutover_costs_pgshift_a_retry_and_never_the_application() {
    let (cluster, client) = incident_primary(2_000).await;
    let url = cluster.url("app");
    let (_dir, _path) = apply_to_ready(&url, "0025_deadlock", SCRIPTS_ID).await;

    // The application holds script_runs, so the cutover gets its first
    // locks and waits there ...
    let app = connect(&url).await;
    app.batch_execute("BEGIN; SELECT count(*) FROM script_runs;")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let events_arg = events.to_str().unwrap().to_string();
    let cutover = tokio::spawn(async move {
        pgshift(
            &url,
            &[
                "cutover",
                "0025_deadlock",
                "--lock-timeout",
                "10s",
                "--events",
                &events_arg,
            ],
        )
        .await
    });
    assert!(
        wait_until(
            &client,
            "SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND relation = 'script_runs'::regclass",
            Duration::from_secs(10)
        )
        .await,
        "the cutover never waited for script_runs"
    );
    // ... then the application reads scripts, which the cutover holds.
    let read = app.query_one("SELECT count(*) FROM scripts", &[]).await;
    assert!(read.is_ok(), "the application lost the deadlock: {read:?}");
    app.batch_execute("COMMIT").await.unwrap();

    let run = cutover.await.unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let kinds = event_kinds(&events);
    assert!(kinds.iter().any(|k| k == "retry"), "{kinds:?}");
    assert_eq!(
        client
            .query_one("SELECT phase FROM pgshift.migrations", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "cut_over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superuser_sessions_get_a_short_deadlock_timeout_and_others_keep_the_servers() {
    let (cluster, client) = primary().await;
    client.batch_execute("CREATE ROLE app LOGIN").await.unwrap();
    let show = |url: String| async move {
        let target = pgshift::connection::Target::parse(&url, "--database-url").unwrap();
        let session = target.connect("pgshift test").await.unwrap();
        session
            .query_one("SHOW deadlock_timeout", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(show(cluster.url("app")).await, "100ms");
    assert_eq!(
        show(cluster.url("app").replace("postgres@", "app@")).await,
        "1s",
        "a non-superuser keeps the server's value, and connects without error"
    );
}

/// pgshift's own sessions compress the full pages they write to the WAL
/// (an index build writes every page of the index): the same build writes
/// less WAL from a pgshift session than from a plain one, less still with
/// the method for paced work, and a non-superuser keeps the server's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgshift_sessions_compress_the_wal_of_their_index_builds() {
    use pgshift::connection::{Target, WalCompression};
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE ROLE app LOGIN;
             CREATE TABLE runs AS SELECT g::int8 AS id FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    let connect = |url: String, method: WalCompression| async move {
        let target = Target::parse(&url, "--database-url").unwrap();
        target
            .with_wal_compression(method)
            .connect("pgshift test")
            .await
            .unwrap()
    };
    let url = cluster.url("app");
    let methods: Vec<String> = one(
        &client,
        "SELECT ARRAY(SELECT m FROM pg_settings, unnest(enumvals) m WHERE name = 'wal_compression' AND m IN ('lz4', 'zstd'))",
    )
    .await;
    if methods.is_empty() {
        // A server built without lz4 and zstd (the npm registry's): the
        // sessions keep the server's setting rather than pglz's CPU cost.
        let session = connect(url.clone(), WalCompression::Small).await;
        let setting: String = session
            .query_one("SHOW wal_compression", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(setting, "off");
        return;
    }
    let plain = wal_of_index_build(&client, "plain").await;
    let fast = connect(url.clone(), WalCompression::Fast).await;
    let fast = wal_of_index_build(&fast, "fast").await;
    let small = connect(url.clone(), WalCompression::Small).await;
    let small = wal_of_index_build(&small, "small").await;
    let figures = format!("WAL bytes of the build: plain {plain}, fast {fast}, small {small}");
    assert!((fast as f64) < 0.75 * plain as f64, "{figures}");
    assert!((small as f64) < 0.75 * fast as f64, "{figures}");
    let other = connect(url.replace("postgres@", "app@"), WalCompression::Small).await;
    let setting: String = other
        .query_one("SHOW wal_compression", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "off", "a non-superuser keeps the server's value");
}

/// The WAL bytes that `CREATE INDEX name ON runs (id)` writes from `session`.
async fn wal_of_index_build(session: &tokio_postgres::Client, name: &str) -> i64 {
    let lsn = "SELECT pg_current_wal_insert_lsn()::text";
    let before: String = session.query_one(lsn, &[]).await.unwrap().get(0);
    session
        .batch_execute(&format!("CREATE INDEX {name} ON runs (id)"))
        .await
        .unwrap();
    let bytes = format!("SELECT (pg_current_wal_insert_lsn() - '{before}')::int8");
    session
        .query_one(&bytes, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

/// Runs `pgshift apply PATH --no-cutover EXTRA…` and samples `value` (an
/// int8 expression) from outside every `every` while the migration `name`
/// is in `backfilling`: (when, value) pairs.
async fn sample_during_backfill(
    url: &str,
    client: &tokio_postgres::Client,
    (name, path): (&str, &str),
    extra: &[&str],
    value: &str,
    every: Duration,
) -> Vec<(Instant, i64)> {
    let child = pgshift_command(url)
        .args(["-q", "apply", path, "--no-cutover"])
        .args(extra)
        .spawn()
        .unwrap();
    let sql = format!("SELECT phase, ({value})::int8 FROM pgshift.migrations WHERE name = $1");
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let row = client.query_opt(&sql, &[&name]).await.ok().flatten();
        match row.as_ref().map(|r| r.get::<_, String>(0)) {
            Some(p) if p == "backfilling" => samples.push((Instant::now(), row.unwrap().get(1))),
            Some(p) if p != "expanding" => break,
            _ => {}
        }
        tokio::time::sleep(every).await;
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "apply failed");
    samples
}

/// `--max-wal-mb-per-second` holds the server's WAL rate while the backfill
/// runs: polled from outside, the WAL written during `backfilling` grows no
/// faster than the cap (uncapped, this backfill writes its megabytes in a
/// fraction of a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_cap_holds_the_servers_wal_rate_during_the_backfill() {
    let (cluster, client) = incident_primary(3_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0031_wal_cap", SCRIPTS_ID);
    let window = sample_during_backfill(
        &url,
        &client,
        ("0031_wal_cap", &path),
        &["--max-wal-mb-per-second", "1", "--max-commit-latency", "0"],
        "pg_current_wal_insert_lsn() - '0/0'",
        Duration::from_millis(50),
    )
    .await;
    let (first, last) = (window.first().unwrap(), window.last().unwrap());
    let bytes = (last.1 - first.1) as f64;
    let seconds = last.0.duration_since(first.0).as_secs_f64();
    assert!(
        bytes > 1_500_000.0,
        "the window saw only {bytes} bytes of WAL: too short to judge the cap"
    );
    let rate = bytes / seconds;
    assert!(
        rate < 1_500_000.0,
        "{bytes} bytes of WAL in {seconds:.2} s ({rate:.0} B/s) under a 1 MB/s cap"
    );
}

/// Unflushed WAL sampled from outside every 5 ms while the backfill runs
/// with 1 s batches: the median of the samples, in bytes, and the events.
async fn unflushed_wal_during_backfill(flush_every: &str) -> (i64, Vec<serde_json::Value>) {
    let (cluster, client) = incident_primary(60_000).await;
    let url = cluster.url("app");
    let (dir, path) = migration("0032_flush", SCRIPTS_ID);
    let events = dir.path().join("events.jsonl");
    let mut samples: Vec<i64> = sample_during_backfill(
        &url,
        &client,
        ("0032_flush", &path),
        &[
            "--batch-target",
            "1s",
            "--max-batch",
            "200000",
            "--max-commit-latency",
            "0",
            "--flush-wal-every",
            flush_every,
            "--events",
            events.to_str().unwrap(),
        ],
        "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn())",
        Duration::from_millis(5),
    )
    .await
    .into_iter()
    .map(|(_, bytes)| bytes)
    .collect();
    assert!(samples.len() >= 20, "only {} samples", samples.len());
    samples.sort_unstable();
    (samples[samples.len() / 2], read_events(&events))
}

/// The `wal_flushes` event of `phase`, as (looked, flushed).
fn wal_flushes(events: &[serde_json::Value], phase: &str) -> Option<(u64, u64)> {
    events
        .iter()
        .find(|e| e["event"] == "wal_flushes" && e["phase"] == phase)
        .map(|e| {
            (
                e["looked"].as_u64().unwrap(),
                e["flushed"].as_u64().unwrap(),
            )
        })
}

/// The WAL writer flushes only every 200 ms, so a long batch leaves
/// megabytes of WAL unflushed that the next application commit waits for;
/// the lifeline's flushes keep that backlog small. How small depends on how
/// fast the machine takes the writes: CI, under the whole suite's load, once
/// saw the 90th percentile only 2.8 times lower (9 times on an idle
/// machine). So both ways run at the same time, on two clusters, under the
/// same load, and the check is on the median.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_the_wal_keeps_the_backlog_an_application_commit_waits_for_small() {
    let ((without, quiet), (with, events)) = tokio::join!(
        unflushed_wal_during_backfill("0"),
        unflushed_wal_during_backfill("10ms")
    );
    assert_eq!(
        wal_flushes(&quiet, "backfilling"),
        None,
        "flushed when told not to"
    );
    let (looked, flushed) = wal_flushes(&events, "backfilling").expect("a wal_flushes event");
    assert!(
        flushed >= 1 && flushed <= looked,
        "the flusher looked {looked} times and flushed {flushed} during the backfill"
    );
    assert!(
        with * 2 < without,
        "median of unflushed WAL: {with} bytes flushing every 10 ms, {without} without"
    );
}

/// Without `--replica-url`, lag comes from `pg_stat_replication`. A WAL
/// archiver (`pg_receivewal`, as Barman streams) replays nothing, yet shows
/// a `replay_lag` of up to its status interval: it must not hold the
/// backfill. A standby whose replay stops still must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_counts_standbys_that_replay_and_not_wal_archivers() {
    let (cluster, client) = primary().await;
    client
        .batch_execute("CREATE TABLE junk (x int)")
        .await
        .unwrap();
    let archive = tempfile::tempdir().unwrap();
    // Debian's pg_receivewal streams from its own major version and older.
    let Some(tool) = cluster.streaming_client("pg_receivewal") else {
        eprintln!(
            "skipped: no pg_receivewal here streams from Postgres {} (the npm registry's binaries ship none)",
            cluster.major()
        );
        return;
    };
    let mut receiver = std::process::Command::new(tool);
    receiver
        .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
        .args(["-U", "postgres", "-s", "2", "-D"])
        .arg(archive.path());
    let mut receiver = receiver.spawn().unwrap();

    // Writes until the archiver's replay_lag reads over a second.
    let mut seen: f64 = 0.0;
    let mut guarded: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen <= 1.0 && Instant::now() < deadline {
        client
            .batch_execute("INSERT INTO junk SELECT generate_series(1, 20000)")
            .await
            .unwrap();
        let (raw, guard) = lag_readings(&client, "true").await;
        seen = seen.max(raw);
        guarded = guarded.max(guard);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(
        seen > 1.0,
        "pg_receivewal's replay_lag never passed 1 s ({seen:.2} s)"
    );
    assert_eq!(guarded, 0.0, "the guard counted the WAL archiver");

    // A standby that stops replaying is counted.
    let (_replica, _standby) =
        standby_paused_after(&cluster, "SELECT count(*) >= 0 FROM junk").await;
    let mut lag: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while lag <= 1.0 && Instant::now() < deadline {
        client
            .batch_execute("INSERT INTO junk SELECT generate_series(1, 1000)")
            .await
            .unwrap();
        lag = pgshift::guard::replica_lag(&client, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        lag > 1.0,
        "a standby that stopped replaying showed {lag:.2} s of lag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_subscriber_falling_behind_counts_as_retained_wal_not_as_replica_lag() {
    let (publisher, client) = primary_with(ClusterOptions {
        extra_conf: vec!["wal_level = logical".into()],
        ..ClusterOptions::default()
    })
    .await;
    client
        .batch_execute(
            "CREATE TABLE events (id int PRIMARY KEY, note text);
             CREATE PUBLICATION events_pub FOR TABLE events;",
        )
        .await
        .unwrap();
    // The subscriber applies each row slowly, as a busy CDC consumer confirms late.
    let (_subscriber, sub) = primary().await;
    sub.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, note text);
         CREATE FUNCTION slow_apply() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END$$;
         CREATE TRIGGER slow_apply BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_apply();
         ALTER TABLE events ENABLE ALWAYS TRIGGER slow_apply;",
    )
    .await
    .unwrap();
    sub.batch_execute(&format!(
        "CREATE SUBSCRIPTION events_sub CONNECTION '{}' PUBLICATION events_pub",
        publisher.url("app")
    ))
    .await
    .unwrap();

    let mut seen: f64 = 0.0;
    let mut guarded: f64 = 0.0;
    let mut id = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen <= 1.0 && Instant::now() < deadline {
        id += 1;
        client
            .execute("INSERT INTO events VALUES ($1, 'e')", &[&id])
            .await
            .unwrap();
        let (raw, guard) = lag_readings(&client, "application_name = 'events_sub'").await;
        seen = seen.max(raw);
        guarded = guarded.max(guard);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen > 1.0,
        "the subscriber's replay_lag never passed 1 s ({seen:.2} s)"
    );
    assert_eq!(
        guarded, 0.0,
        "the time-lag guard counted the logical subscriber"
    );
    // What it holds back is watched in bytes instead.
    let slots = pgshift::catalog::replication_slots(&client).await.unwrap();
    let slot = slots
        .iter()
        .find(|s| s.name == "events_sub")
        .expect("the subscription's slot");
    assert_eq!((slot.kind.as_str(), slot.active), ("logical", true));
    assert!(slot.retained_bytes > 0, "{slot:?}");
    sub.batch_execute("ALTER SUBSCRIPTION events_sub DISABLE")
        .await
        .unwrap();
}

/// The worst raw `replay_lag` of the walsenders `which` picks, and what the
/// guard reads (without a replica connection).
async fn lag_readings(client: &tokio_postgres::Client, which: &str) -> (f64, f64) {
    let raw: f64 = client
        .query_one(
            &format!(
                "SELECT COALESCE(max(EXTRACT(EPOCH FROM replay_lag)), 0)::float8 FROM pg_stat_replication WHERE {which}"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let guarded = pgshift::guard::replica_lag(client, None).await.unwrap();
    (raw, guarded)
}

/// `--max-commit-latency 3x` measures the commit latency before the first
/// batch and backs off once commits get slower than three times that. The
/// commits are made slow from outside after the baseline: `commit_delay`
/// (with `commit_siblings = 0`) sleeps 30 ms before every WAL flush, on a
/// server with fsync on (without it the delay is skipped). Both signals
/// see it: the probe, and the lifeline's timed WAL flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_slower_than_a_multiple_of_the_baseline_make_the_backfill_back_off() {
    let (cluster, client) = primary_with(ClusterOptions {
        fsync: true,
        ..ClusterOptions::default()
    })
    .await;
    incident::load(&client, 3_000).await.unwrap();
    let url = cluster.url("app");
    let (dir, path) = migration("0036_baseline", SCRIPTS_ID);
    let events = dir.path().join("events.jsonl");
    let child = pgshift_command(&url)
        .args(["-q", "apply", &path, "--no-cutover"])
        .args(["--batch-size", "200", "--max-rows-per-second", "3000"])
        .args(["--max-commit-latency", "3x", "--events"])
        .arg(&events)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let baseline = loop {
        let found = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "commit_baseline");
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no commit_baseline event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (base_ms, limit_ms) = (
        baseline["baseline_ms"].as_f64().unwrap(),
        baseline["limit_ms"].as_f64().unwrap(),
    );
    assert!(
        base_ms > 0.0 && (limit_ms - (3.0 * base_ms).max(1.0)).abs() < 0.2,
        "{baseline}"
    );
    for sql in [
        "ALTER SYSTEM SET commit_delay = 30000",
        "ALTER SYSTEM SET commit_siblings = 0",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    // Once the duty cycle is down to a quarter, commits get fast again, so
    // the test does not wait out a throttled backfill.
    let backoffs = |events: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "backing_off")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !backoffs(&events)
        .iter()
        .any(|b| b["duty"].as_f64().unwrap() <= 0.25)
    {
        assert!(
            Instant::now() < deadline,
            "the duty cycle never went below a quarter with 30 ms commits: {:?}",
            backoffs(&events)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for sql in ["ALTER SYSTEM RESET commit_delay", "SELECT pg_reload_conf()"] {
        client.batch_execute(sql).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "apply failed");
    // A probe over the limit, or one of the lifeline's WAL flushes (every
    // 10 ms by default) over three times it. The events round both to a
    // tenth of a millisecond: a 1.34 ms probe over a 1.28 ms limit reads
    // 1.3 against 1.3 (seen once, on Postgres 17), so half a tenth is slack.
    let rounding = 0.05;
    for b in &backoffs(&events) {
        let slow = match (b["commit_ms"].as_f64(), b["flush_ms"].as_f64()) {
            (Some(ms), None) => ms > limit_ms - rounding,
            (None, Some(ms)) => ms > 3.0 * (limit_ms - rounding),
            _ => false,
        };
        assert!(slow, "{b}");
    }
}
