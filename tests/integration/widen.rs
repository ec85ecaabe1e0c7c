//! The online int4 -> int8 conversion end to end, under concurrent writes.

use std::time::Duration;

use crate::support::*;

const SCRIPTS_ID: &str = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n";

async fn one_string(client: &tokio_postgres::Client, sql: &str) -> String {
    one(client, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_widens_the_key_and_everything_that_depends_on_it_under_writes() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0001_scripts_id", SCRIPTS_ID);

    let writer = Writer::start(&url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = pgshift(&url, &["apply", &path, "--batch-size", "1000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = writer.ops.load(std::sync::atomic::Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "apply failed: {}\n{}", run.stdout, run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(ops > 50, "the writer made only {ops} writes");

    // Types, keys, constraints, indexes, view and sequence are all bigint and intact.
    let types = one_string(&client, "SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attrelid::regclass::text, attname)
        FROM pg_attribute WHERE attname IN ('id', 'script_id') AND attrelid IN ('scripts'::regclass, 'script_runs'::regclass, 'all_scripts'::regclass)").await;
    assert_eq!(types, "all_scripts.id bigint, script_runs.id bigint, script_runs.script_id bigint, scripts.id bigint");
    let pk = one_string(&client, "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'scripts'::regclass AND contype = 'p'").await;
    assert_eq!(pk, "scripts_pkey PRIMARY KEY (id)");
    let fk = client
        .query_one("SELECT conname::text, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conrelid = 'script_runs'::regclass AND contype = 'f'", &[])
        .await
        .unwrap();
    assert_eq!(fk.get::<_, String>(0), "script_runs_script_id_fkey");
    assert_eq!(
        fk.get::<_, String>(1),
        "FOREIGN KEY (script_id) REFERENCES scripts(id) ON DELETE CASCADE"
    );
    assert!(fk.get::<_, bool>(2), "the rebuilt foreign key is validated");
    let ix = one_string(
        &client,
        "SELECT pg_get_indexdef('script_runs_script_id_idx'::regclass)",
    )
    .await;
    assert_eq!(
        ix,
        "CREATE INDEX script_runs_script_id_idx ON public.script_runs USING btree (script_id)"
    );
    let seq = one_string(&client, "SELECT data_type::text || ' ' || max_value FROM pg_sequences WHERE sequencename = 'scripts_id_seq'").await;
    assert_eq!(seq, "bigint 9223372036854775807");
    let owner = one_string(&client, "SELECT pg_get_serial_sequence('scripts', 'id')").await;
    assert_eq!(owner, "public.scripts_id_seq");
    // NOT NULL and defaults as before: the shadow's placeholder default is gone.
    let columns = one_string(&client, "SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), 'no default'), ', ' ORDER BY attrelid::regclass::text)
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE (attrelid, attname) IN (('scripts'::regclass, 'id'), ('script_runs'::regclass, 'script_id'))").await;
    assert_eq!(
        columns,
        "script_runs.script_id true no default, scripts.id true nextval('scripts_id_seq'::regclass)"
    );
    let err = client
        .execute("INSERT INTO script_runs (status) VALUES ('no script')", &[])
        .await
        .expect_err("a run without a script is refused as before");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::NOT_NULL_VIOLATION)
    );

    // No write was lost or changed.
    assert_matches_control(&client).await;

    // Keys above 2^31 now work end to end.
    client
        .batch_execute("SELECT setval('scripts_id_seq', 2147483648)")
        .await
        .unwrap();
    let id: i64 = client
        .query_one(
            "INSERT INTO scripts (account_id, name) VALUES (1, 'big') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 2147483649);
    client
        .execute(
            "INSERT INTO script_runs (script_id, status) VALUES ($1, 'ok')",
            &[&id],
        )
        .await
        .unwrap();
    let via_view: i64 = client
        .query_one("SELECT count(*) FROM all_scripts WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(via_view, 1);

    let status = pgshift(&url, &["--format", "json", "status"]).await;
    let json: serde_json::Value =
        serde_json::from_str(&status.stdout).expect("status is one JSON document");
    assert_eq!(json["migrations"][0]["phase"], "cut_over");
    assert_eq!(json["migrations"][0]["name"], "0001_scripts_id");

    let fin = pgshift(&url, &["finalize", "0001_scripts_id", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_backfill_then_resume_finishes_correctly() {
    let (cluster, client) = incident_primary(30_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0002_kill", SCRIPTS_ID);
    let writer = Writer::start(&url).await;

    let mut child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--batch-size",
            "100",
            "--max-connections",
            "3",
        ])
        .spawn()
        .unwrap();
    // Two workers on disjoint key ranges of script_runs (60,000 rows), both under way.
    let reached = wait_until(
        &client,
        "SELECT count(*) = 2 FROM pgshift.backfill WHERE rows_done >= 500 AND NOT done",
        Duration::from_secs(60),
    )
    .await;
    assert!(reached, "the parallel backfill never got going");
    child.kill().await.unwrap(); // SIGKILL: no cleanup at all

    let phase = one_string(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "backfilling");
    let resumed = pgshift(
        &url,
        &[
            "resume",
            &path,
            "--batch-size",
            "2000",
            "--max-connections",
            "3",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(resumed.code, 0, "resume failed: {}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let phase = one_string(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "cut_over");
    assert_matches_control(&client).await;
    let t = one_string(&client, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'script_runs'::regclass AND attname = 'script_id'").await;
    assert_eq!(t, "bigint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_keys_referenced_by_two_tables_keep_identity_and_both_foreign_keys() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id int GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT BY 5) PRIMARY KEY, name text UNIQUE);
             CREATE TABLE users (id bigserial PRIMARY KEY, account_id int REFERENCES accounts (id));
             CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id int NOT NULL
                 REFERENCES accounts (id) ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED,
                 CHECK (account_id > 0));
             INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 3000) g;
             INSERT INTO users (account_id) SELECT id FROM accounts;
             INSERT INTO invoices (account_id) SELECT id FROM accounts WHERE id % 2 = 0;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0003_accounts",
        "alter table public.ACCOUNTS alter column ID set data type int8;",
    );
    let plan = pgshift(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let cols: Vec<String> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["columns"].as_array().unwrap().iter().map(move |c| {
                format!(
                    "{}.{}",
                    t["table"].as_str().unwrap(),
                    c["column"].as_str().unwrap()
                )
            })
        })
        .collect();
    assert_eq!(
        cols,
        vec!["accounts.id", "invoices.account_id", "users.account_id"]
    );
    assert!(json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["phase"].is_string()
            && s["sql"].is_string()
            && s["lock"].is_string()
            && s["blocking"].is_boolean()));
    // The time estimate follows apply's pacing flags: the defaults pace the
    // backfill by commit latency, which is far slower than full speed.
    assert_eq!(json["backfill_paced"], true);
    let speed =
        |json: &serde_json::Value| json["estimated_backfill_rows_per_second"].as_f64().unwrap();
    let full = pgshift(
        &url,
        &[
            "--format",
            "json",
            "plan",
            &path,
            "--max-commit-latency",
            "0",
        ],
    )
    .await;
    let full: serde_json::Value = serde_json::from_str(&full.stdout).expect(&full.stderr);
    assert_eq!(full["backfill_paced"], false);
    assert!(speed(&full) > 5.0 * speed(&json), "{full} {json}");
    let capped = pgshift(&url, &["plan", &path, "--max-rows-per-second", "900"]).await;
    assert!(
        capped
            .stdout
            .contains("at 900 rows/s (--max-rows-per-second)"),
        "{}",
        capped.stdout
    );

    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let identity = one_string(&client, "SELECT attidentity::text || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'id'").await;
    assert_eq!(identity, "a bigint");
    // The identity continues where it was (3000 rows from 10 by 5: last 15005).
    let next: i64 = client
        .query_one(
            "INSERT INTO accounts (name) VALUES ('next') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 15010);
    let fks = one_string(&client, "SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated, '; ' ORDER BY conrelid::regclass::text, conname)
        FROM pg_constraint WHERE contype IN ('f', 'c') AND connamespace = 'public'::regnamespace").await;
    assert_eq!(
        fks,
        "invoices invoices_account_id_check CHECK ((account_id > 0)) true; \
         invoices invoices_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id) ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED true; \
         users users_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id) true"
    );
    let unique = one_string(
        &client,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'accounts_name_key'",
    )
    .await;
    assert_eq!(unique, "UNIQUE (name)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cutover_then_rollback_leaves_the_schema_exactly_as_before() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0004_rb", SCRIPTS_ID);
    let writer = Writer::start(&url).await;
    let run = pgshift(&url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        one_string(&client, "SELECT phase FROM pgshift.migrations").await,
        "ready"
    );
    let rb = pgshift(&url, &["rollback", "0004_rb"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    let again = pgshift(&url, &["rollback", "0004_rb"]).await;
    assert_eq!(again.code, 0, "rollback is idempotent: {}", again.stderr);
    let errors = writer.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        schema_dump(&client).await.replace("function pgshift.", ""),
        before
    );
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_matches_control(&client).await;
    // After a rollback, apply can start again.
    let rerun = pgshift(&url, &["apply", &path]).await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_online_is_refused_with_exit_2_and_nothing_changes() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE plain (id int PRIMARY KEY, v int);
             CREATE TABLE gen (id int PRIMARY KEY, twice int GENERATED ALWAYS AS (id * 2) STORED);",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let before = schema_dump(&client).await;

    let (_d1, partitioned) = migration("p", "ALTER TABLE events ALTER COLUMN id TYPE bigint;");
    let run = pgshift(&url, &["apply", &partitioned]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("partitioned"), "{}", run.stderr);

    let (_d2, generated) = migration("g", "ALTER TABLE gen ALTER COLUMN id TYPE bigint;");
    let run = pgshift(&url, &["plan", &generated]).await;
    assert_eq!(run.code, 2);
    assert!(run.stdout.contains("generated column"), "{}", run.stdout);

    let (_d3, missing) = migration("m", "-- first\nALTER TABLE plain ALTER COLUMN v TYPE bigint;\nALTER TABLE nope ALTER COLUMN id TYPE bigint;");
    let run = pgshift(&url, &["apply", &missing]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("m.sql:3: table nope does not exist"),
        "{}",
        run.stderr
    );

    let (_d4, column) = migration("c", "ALTER TABLE plain ALTER COLUMN nope TYPE bigint;");
    let run = pgshift(&url, &["apply", &column]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("column nope does not exist in table plain"),
        "{}",
        run.stderr
    );

    assert_eq!(
        schema_dump(&client).await,
        before,
        "a refused migration changed the database"
    );
    let state: bool = client
        .query_one("SELECT to_regclass('pgshift.migrations') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        state,
        "a refused migration must not even create the state schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_refused_on_resume() {
    let (cluster, _client) = incident_primary(1_000).await;
    let url = cluster.url("app");
    let (_dir, path) = apply_to_ready(&url, "0005_changed", SCRIPTS_ID).await;
    std::fs::write(
        &path,
        "ALTER TABLE scripts ALTER COLUMN account_id TYPE bigint;",
    )
    .unwrap();
    let run = pgshift(&url, &["cutover", &path]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("0005_changed was started from a file with checksum"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_during_backfill_then_resume_finishes_correctly() {
    let (mut cluster, _client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0006_restart", SCRIPTS_ID);
    let child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--batch-size",
            "100",
            "--max-rows-per-second",
            "5000",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let probe = connect(&url).await;
    assert!(
        wait_until(
            &probe,
            "SELECT EXISTS (SELECT 1 FROM pgshift.backfill WHERE rows_done >= 2000)",
            Duration::from_secs(30)
        )
        .await,
        "the backfill never got going"
    );
    drop(probe);
    // Crash (immediate shutdown, no checkpoint) and come back.
    // Kept alive to the end of the test: dropping it stops the server.
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(true).expect("restart");
        cluster
    })
    .await
    .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a lost connection is a runtime failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));

    let client = connect(&url).await;
    let resumed = pgshift(&url, &["resume", "0006_restart"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        one_string(&client, "SELECT phase FROM pgshift.migrations").await,
        "cut_over"
    );
    assert_matches_control(&client).await;
    let differing: i64 = client
        .query_one(
            "SELECT count(*) FROM scripts WHERE pgshift_old_id IS DISTINCT FROM id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_are_refused_unless_rebuilt_on_request() {
    let (cluster, client) = incident_primary(5_000).await;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW runs_per_script AS SELECT script_id, count(*) AS runs FROM script_runs GROUP BY script_id;
             CREATE UNIQUE INDEX runs_per_script_key ON runs_per_script (script_id);
             COMMENT ON MATERIALIZED VIEW runs_per_script IS 'nightly report';",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration("0007_matview", SCRIPTS_ID);
    let run = pgshift(&url, &["plan", &path]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("materialized view runs_per_script")
            && run.stdout.contains("--rebuild-matviews"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("about 5000 rows") || run.stdout.contains("rows)"),
        "{}",
        run.stdout
    );

    let run = pgshift(&url, &["apply", &path, "--rebuild-matviews"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = client
        .query_one(
            "SELECT format_type(a.atttypid, a.atttypmod), c.relispopulated, obj_description(c.oid, 'pg_class'),
                    (SELECT count(*) FROM pg_index WHERE indrelid = c.oid)
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'script_id'
             WHERE c.relname = 'runs_per_script'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "bigint",
        "the matview reads the new column"
    );
    assert!(row.get::<_, bool>(1), "and is populated");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("nightly report")
    );
    assert_eq!(row.get::<_, i64>(3), 1, "its index is back");
    let total: i64 = client
        .query_one("SELECT sum(runs)::int8 FROM runs_per_script", &[])
        .await
        .unwrap()
        .get(0);
    let runs: i64 = client
        .query_one("SELECT count(*) FROM script_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_privileges_comment_and_statistics_target_survive_the_cutover() {
    let (cluster, client) = incident_primary(2_000).await;
    client
        .batch_execute(
            "CREATE ROLE reporting;
             GRANT SELECT (id, name) ON scripts TO reporting;
             COMMENT ON COLUMN scripts.id IS 'the key';
             ALTER TABLE scripts ALTER COLUMN id SET STATISTICS 500;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration("0008_acl", SCRIPTS_ID);
    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = client
        .query_one(
            "SELECT has_column_privilege('reporting', 'scripts', 'id', 'SELECT'),
                    col_description('scripts'::regclass, attnum), attstattarget::int4, format_type(atttypid, atttypmod)
             FROM pg_attribute WHERE attrelid = 'scripts'::regclass AND attname = 'id'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "reporting can still read scripts.id");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("the key"));
    assert_eq!(row.get::<_, i32>(2), 500);
    assert_eq!(row.get::<_, String>(3), "bigint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_behind_the_sync_trigger_is_caught_and_backfilled_again() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 20000) g;
             CREATE TABLE tags (id int PRIMARY KEY, item_id int NOT NULL REFERENCES items (id));
             INSERT INTO tags SELECT g, 10000 + g FROM generate_series(1, 5000) g;
             ANALYZE items; ANALYZE tags;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0009_verify",
        "ALTER TABLE items ALTER COLUMN id TYPE bigint;\n",
    );
    let child = pgshift_command(&url)
        .args(["apply", &path])
        .args(["--batch-size", "500", "--max-rows-per-second", "5000"])
        .args(["--max-connections", "3"])
        .env("RUST_LOG", "pgshift=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_until(
        &client,
        "SELECT coalesce(bool_or(rows_done >= 1000 AND NOT done), false) FROM pgshift.backfill
         WHERE table_oid = 'items'::regclass",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        started,
        "the backfill of items never got past its first rows"
    );
    // What an owner can do: change a row that was already copied, with the
    // triggers off. (Sessions in replica mode, such as a logical replication
    // apply worker, no longer get past the sync: its triggers fire ALWAYS.)
    client
        .batch_execute(
            "BEGIN; ALTER TABLE items DISABLE TRIGGER USER;
             UPDATE items SET id = -5 WHERE id = 5;
             ALTER TABLE items ENABLE TRIGGER USER; COMMIT;",
        )
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("1 rows of items differ after the backfill; backfilling again"),
        "{stderr}"
    );
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM items WHERE id = -5), (SELECT count(*) FROM items WHERE id = 5),
                    (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                     WHERE attrelid = 'items'::regclass AND attname = 'id')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "the changed row keeps its new key");
    assert_eq!(row.get::<_, i64>(1), 0, "the stale copy of the key is gone");
    assert_eq!(row.get::<_, String>(2), "bigint");
}

/// WAL records written by `sql`, an UPDATE, measured by EXPLAIN (ANALYZE, WAL).
async fn wal_records(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let row = client
        .query_one(&format!("EXPLAIN (ANALYZE, WAL, FORMAT JSON) {sql}"), &[])
        .await
        .unwrap();
    let plan: serde_json::Value = row.get(0);
    plan[0]["Plan"]["WAL Records"].as_i64().unwrap()
}

/// The sync triggers copy a changed column without making every other
/// update lock its row first, as a BEFORE UPDATE row trigger would (one
/// more WAL record per row, for the backfill and for the application).
/// Changes are copied before cutover and back after it (for rollback),
/// also for a role that may update the column but not read the table, and
/// for a column named like a PL/pgSQL variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_triggers_copy_changes_without_locking_every_updated_row() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, found int NOT NULL, note text) WITH (fillfactor = 100);
             INSERT INTO items SELECT g, g, 'n' FROM generate_series(1, 4000) g;
             ANALYZE items;
             CREATE ROLE writer;
             GRANT UPDATE (found) ON items TO writer;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, _path) = apply_to_ready(
        &url,
        "0020_found",
        "ALTER TABLE items ALTER COLUMN found TYPE bigint;\n",
    )
    .await;
    let shadow = one_string(
        &client,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'items'::regclass
         AND attname LIKE 'pgshift\\_%' AND NOT attisdropped",
    )
    .await;
    // Same layout for both tables (packed, full pages), same indexes.
    client.batch_execute("VACUUM FULL items").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE control WITH (fillfactor = 100) AS SELECT id, found, note FROM items;
             ALTER TABLE control ADD PRIMARY KEY (id);
             CHECKPOINT;",
        )
        .await
        .unwrap();
    let with_triggers = wal_records(&client, "UPDATE items SET note = 'x'").await;
    let without = wal_records(&client, "UPDATE control SET note = 'x'").await;
    assert!(
        with_triggers <= without + without / 20,
        "the sync triggers added WAL records to updates that do not touch the column: \
         {with_triggers} against {without} for 4000 rows"
    );

    let differ = format!(
        "SELECT count(*) FROM items WHERE {} IS DISTINCT FROM found",
        pgshift::names::quote(&shadow)
    );
    client
        .batch_execute(
            "SET ROLE writer; UPDATE items SET found = 7; RESET ROLE;
             UPDATE items SET found = -found WHERE id <= 10;",
        )
        .await
        .unwrap();
    let n: i64 = client.query_one(&differ, &[]).await.unwrap().get(0);
    assert_eq!(
        n, 0,
        "the shadow column follows every change before cutover"
    );

    let run = pgshift(&url, &["cutover", "0020_found"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute(
            "SET ROLE writer; UPDATE items SET found = 3000000000; UPDATE items SET found = 9; RESET ROLE;
             UPDATE items SET found = 11 WHERE id = 1;",
        )
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0020_found"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE found = 9), count(*) FILTER (WHERE id = 1 AND found = 11),
                    (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                     WHERE attrelid = 'items'::regclass AND attname = 'found')
             FROM items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        3999,
        "writes after cutover survive rollback"
    );
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, String>(2), "integer");
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

/// The backfill assigns one column of each index to itself (so no btree
/// tries bottom-up deletion on every full page), but never a column that
/// cannot be assigned or whose assignment someone would notice: an identity
/// ALWAYS key, a generated column or what it is computed from, a column
/// watched by a trigger's `UPDATE OF`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_assigns_indexed_columns_to_themselves_only_where_harmless() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE things (
                 id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 code int NOT NULL,
                 twice int GENERATED ALWAYS AS (code * 2) STORED,
                 tagged int,
                 plain int);
             CREATE INDEX ON things (twice);
             CREATE INDEX ON things (code);
             CREATE INDEX ON things (tagged);
             CREATE INDEX ON things (plain, code);
             CREATE INDEX ON things ((plain + 1));
             CREATE TABLE audit (n int);
             CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
                 $$BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END$$;
             CREATE TRIGGER audit AFTER UPDATE OF tagged ON things FOR EACH ROW EXECUTE FUNCTION audit();
             INSERT INTO things (code, tagged, plain) SELECT g, g, g FROM generate_series(1, 5000) g;
             ANALYZE things;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0021_things",
        "ALTER TABLE things ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift_logging(
        &url,
        &["apply", &path, "--batch-size", "1000"],
        "pgshift=debug",
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("things: each batch also assigns [plain] to themselves"),
        "{}",
        run.stderr
    );
    let audited: i64 = client
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 0, "the user's UPDATE OF trigger never fired");
    let wrong: i64 = client
        .query_one(
            "SELECT count(*) FROM things WHERE twice <> code * 2 OR plain <> code OR tagged <> code",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
}

/// For each backfill step of a plan (JSON), whether it goes in two passes.
fn two_passes(plan: &serde_json::Value) -> Vec<bool> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["description"].as_str().unwrap())
        .filter(|d| d.starts_with("copy "))
        .map(|d| d.contains("in two passes"))
        .collect()
}

/// `plan` as JSON with two backfill workers and `--two-pass-above above`.
async fn two_pass_plan(url: &str, path: &str, above: &str) -> serde_json::Value {
    let run = pgshift(
        url,
        &[
            "plan",
            "--format",
            "json",
            path,
            "--max-connections",
            "3",
            "--two-pass-above",
            above,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// `plan` estimates the WAL of the whole migration up to `ready` from the
/// catalog (rows, heap, indexes, full_page_writes); checked against the WAL
/// the server wrote, with full-page writes on and a checkpoint just before,
/// as on a production server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_estimates_the_wal_the_migration_writes() {
    let (cluster, client) = incident_primary(50_000).await;
    let url = cluster.url("app");
    client
        .batch_execute("ALTER SYSTEM SET full_page_writes = on")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0001_keys",
        "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n\
         ALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift(&url, &["plan", "--format", "json", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let estimate = plan["estimated_wal_bytes"].as_i64().unwrap();
    assert!(plan["estimated_full_page_bytes"].as_i64().unwrap() > 0);
    // With apply's tuning flags, plan shows the backfill apply would run.
    assert_eq!(two_passes(&plan), [false, false, false]);
    let tuned = two_pass_plan(&url, &path, "20000").await;
    // scripts: two ranges of 25,000 rows; archived_scripts: one of 25,000
    // (too small to split); script_runs: two of 50,000.
    assert_eq!(two_passes(&tuned), [true, true, true]);
    let split = two_pass_plan(&url, &path, "30000").await;
    assert_eq!(two_passes(&split), [false, false, true]);

    client.batch_execute("CHECKPOINT").await.unwrap();
    let position = || async {
        client
            .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = position().await;
    let run = pgshift(&url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let written = (position().await - before) as f64;
    let ratio = written / estimate as f64;
    assert!(
        (0.85..1.15).contains(&ratio),
        "estimated {estimate} bytes of WAL, the server wrote {written} ({ratio:.2}×)"
    );
}

/// Starts `command` (`apply`, `resume`) slowly enough to be killed
/// mid-backfill, in two passes.
fn slow_two_pass(command: &str, url: &str, path: &str) -> tokio::process::Child {
    pgshift_command(url)
        .args(["-q", command, path])
        .args(["--batch-size", "100", "--max-connections", "3"])
        .args(["--max-rows-per-second", "20000", "--two-pass-above", "1000"])
        .spawn()
        .unwrap()
}

/// Runs [`slow_two_pass`] until `sql` holds, then kills it (SIGKILL).
async fn kill_two_pass_when(
    (command, url, path): (&str, &str, &str),
    client: &tokio_postgres::Client,
    sql: &str,
    never: &str,
) {
    let mut child = slow_two_pass(command, url, path);
    let reached = wait_until(client, sql, Duration::from_secs(90)).await;
    child.kill().await.unwrap();
    assert!(reached, "{never}");
}

/// A crash in either pass of a two-pass backfill, under application writes,
/// resumes to the same rows: the even-key pass resumes where it stopped, and
/// its end (which starts the full pass from the part's beginning) is
/// checkpointed with its last batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_pass_backfill_killed_in_either_pass_resumes_correctly() {
    let (cluster, client) = incident_primary(30_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0011_two_pass", SCRIPTS_ID);
    let writer = Writer::start(&url).await;

    // SIGKILL while the even-key pass is under way in both parts, then
    // again once a part is into its full pass.
    kill_two_pass_when(
        ("apply", &url, &path),
        &client,
        "SELECT count(*) = 2 FROM pgshift.backfill WHERE pass = 0 AND rows_done >= 300",
        "two parts never got under way in their even-key pass",
    )
    .await;
    kill_two_pass_when(
        ("resume", &url, &path),
        &client,
        "SELECT count(*) >= 1 FROM pgshift.backfill WHERE pass = 2 AND NOT done AND cursor IS NOT NULL",
        "no part got into its second pass",
    )
    .await;

    let resumed = pgshift(&url, &["resume", &path, "--max-connections", "3"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(resumed.code, 0, "resume failed: {}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    // The verification's second backfill would hide rows the passes missed.
    assert!(
        !resumed.stderr.contains("differ after the backfill"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        one_string(&client, "SELECT phase FROM pgshift.migrations").await,
        "cut_over"
    );
    assert_matches_control(&client).await;
    let progress = one_string(
        &client,
        "SELECT (sum(rows_done) <= sum(rows_total) + 200)::text FROM pgshift.backfill",
    )
    .await;
    assert_eq!(progress, "true", "each pass counts half of its rows");
}

/// Fillfactor 100: a one-pass backfill moves every row to another page;
/// in two passes most of the second fits where the first pass's dead
/// versions were pruned (no replica here holds the horizon back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_full_pages_the_second_backfill_pass_is_mostly_hot() {
    let mut hot_updates = Vec::new();
    for two_pass_above in ["1000", "1000000"] {
        let (cluster, client) = primary().await;
        client
            .batch_execute(
                "CREATE TABLE events (id int PRIMARY KEY, kind int NOT NULL, note text);
                 CREATE INDEX ON events (kind);
                 INSERT INTO events SELECT g, g % 7, 'event ' || g FROM generate_series(1, 40000) g;",
            )
            .await
            .unwrap();
        client.batch_execute("VACUUM ANALYZE events").await.unwrap();
        let (_dir, path) = migration(
            "0012_hot",
            "ALTER TABLE events ALTER COLUMN id TYPE bigint;\n",
        );
        let run = pgshift(
            &cluster.url("app"),
            &[
                "apply",
                &path,
                "--no-cutover",
                "--two-pass-above",
                two_pass_above,
            ],
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        // pgshift's sessions report their counts as they exit, which can
        // come after pgshift itself has.
        wait_until(
            &client,
            "SELECT n_tup_upd >= 40000 FROM pg_stat_user_tables WHERE relname = 'events'",
            Duration::from_secs(10),
        )
        .await;
        let row = client
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'events'",
                &[],
            )
            .await
            .unwrap();
        let (updates, hot): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(updates, 40_000, "each row updated once");
        hot_updates.push(hot);
    }
    let (two, one) = (hot_updates[0], hot_updates[1]);
    assert!(
        two >= 12_000 && one < 2_000,
        "HOT backfill updates of 40,000: {two} in two passes, {one} in one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_sessions_in_replica_mode_reach_the_new_columns() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    let (_dir, path) = apply_to_ready(&url, "0009_replica_role", SCRIPTS_ID).await;
    // What a logical replication apply worker does: ordinary triggers do
    // not fire in this mode; a new row would reach the cutover with the
    // placeholder 0 in its new id.
    client
        .batch_execute(
            "SET session_replication_role = replica;
             WITH s AS (INSERT INTO scripts (account_id, name) VALUES (9, 'from a subscription') RETURNING id, account_id, name)
             INSERT INTO scripts_control SELECT id, account_id, name FROM s;
             RESET session_replication_role;",
        )
        .await
        .unwrap();
    let cut = pgshift(&url, &["cutover", &path]).await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    assert_matches_control(&client).await;
}

/// What the rebuilt indexes must carry: comments, the CLUSTER mark, the
/// replica identity, a deferrable key; and the column its options.
async fn index_marks(client: &tokio_postgres::Client) -> String {
    one_string(
        client,
        "SELECT concat_ws(' | ',
            (SELECT string_agg(c.relname || '=' || obj_description(c.oid, 'pg_class'), ',' ORDER BY c.relname)
             FROM pg_class c WHERE c.relkind = 'i' AND obj_description(c.oid, 'pg_class') IS NOT NULL
               AND c.relname NOT LIKE 'pgshift%'),
            (SELECT string_agg(conname || '=' || obj_description(oid, 'pg_constraint'), ',') FROM pg_constraint
             WHERE obj_description(oid, 'pg_constraint') IS NOT NULL),
            (SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indisclustered),
            (SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indisreplident),
            (SELECT string_agg(conname || ':' || condeferrable || condeferred, ',') FROM pg_constraint WHERE condeferrable),
            (SELECT array_to_string(attoptions, ',') FROM pg_attribute WHERE attrelid = 'scripts'::regclass AND attname = 'id'))",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_indexes_keep_comments_cluster_mark_replica_identity_and_deferrability() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "COMMENT ON INDEX script_runs_script_id_idx IS 'runs by script';
             COMMENT ON CONSTRAINT scripts_pkey ON scripts IS 'the key';
             ALTER TABLE scripts CLUSTER ON scripts_pkey;
             ALTER TABLE scripts ALTER COLUMN id SET (n_distinct = -1);
             ALTER TABLE scripts REPLICA IDENTITY USING INDEX scripts_pkey;
             ALTER TABLE archived_scripts DROP CONSTRAINT archived_scripts_pkey,
                 ADD CONSTRAINT archived_scripts_pkey PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;",
        )
        .await
        .unwrap();
    let before = index_marks(&client).await;
    assert_eq!(
        before,
        "script_runs_script_id_idx=runs by script | scripts_pkey=the key | scripts_pkey | scripts_pkey \
         | archived_scripts_pkey:truetrue | n_distinct=-1"
    );
    let (_dir, path) = migration(
        "0130_marks",
        "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\nALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(index_marks(&client).await, before);
    let rb = pgshift(&url, &["rollback", "0130_marks"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(index_marks(&client).await, before);
}
