//! The copy-and-swap engine (`--engine copy`): the incident migration under
//! live writes, rollback from either side of the cutover, and what it refuses.

use std::time::Duration;

use crate::support::*;

const MIGRATION: &str = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\nALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;\n";

/// The schema with the widened columns' types written as before, so a dump
/// after cutover can be compared with one from before.
fn as_before(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("function pgshift."))
        .map(|l| {
            l.replace("column scripts.id bigint", "column scripts.id integer")
                .replace(
                    "column script_runs.script_id bigint",
                    "column script_runs.script_id integer",
                )
                .replace(
                    "column archived_scripts.id bigint",
                    "column archived_scripts.id integer",
                )
                .replace(
                    "column all_scripts.id bigint",
                    "column all_scripts.id integer",
                )
                .replace(
                    "scripts_id_seq bigint max 9223372036854775807",
                    "scripts_id_seq integer max 2147483647",
                )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn user_schema(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("function pgshift."))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_cuts_over_under_writes_and_loses_nothing() {
    let (cluster, client) = incident_primary(40_000).await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "ALTER TABLE scripts SET (fillfactor = 90);
             CREATE ROLE reporting; GRANT SELECT ON scripts TO reporting; GRANT SELECT (status) ON script_runs TO reporting;
             COMMENT ON TABLE scripts IS 'the scripts';",
        )
        .await
        .unwrap();
    let before = schema_dump(&client).await;
    let (dir, path) = migration("0100_copy", MIGRATION);
    let events = dir.path().join("events.jsonl");

    let writer = Writer::start(&url).await;
    let run = pgshift(
        &url,
        &[
            "apply",
            &path,
            "--engine",
            "copy",
            "--events",
            events.to_str().unwrap(),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = writer.ops.load(std::sync::atomic::Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(
        ops > 50,
        "the writer wrote during the migration ({ops} writes)"
    );
    let kinds = event_kinds(&events);
    assert!(kinds.contains(&"replayed".to_string()), "{kinds:?}");

    // Every write made during the copy reached the new tables.
    assert_matches_control(&client).await;
    // The originals stay until finalize, following every write.
    let retired: i64 = one(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgshift\\_old\\_%' AND relkind = 'r'",
    )
    .await;
    assert_eq!(retired, 3);
    let unvalidated: i64 = one(
        &client,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated",
    )
    .await;
    assert_eq!(unvalidated, 0, "apply validates the foreign key it moved");
    // The copies were vacuumed before the swap: ANALYZE alone left none of
    // their pages marked all-visible.
    let visible: f64 = one(
        &client,
        "SELECT relallvisible::float8 / greatest(relpages, 1) FROM pg_class WHERE oid = 'script_runs'::regclass",
    )
    .await;
    assert!(visible > 0.5, "{visible} of the pages all-visible");
    let owner: String = one(
        &client,
        "SELECT d.refobjid::regclass::text || '.' || a.attname FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.objid = 'scripts_id_seq'::regclass AND d.deptype = 'a'",
    )
    .await;
    assert_eq!(owner, "scripts.id");
    let carried: (Option<String>, Vec<String>, String, String) = {
        let r = client
            .query_one(
                "SELECT obj_description('scripts'::regclass, 'pg_class'), (SELECT reloptions FROM pg_class WHERE oid = 'scripts'::regclass)::text[],
                        has_table_privilege('reporting', 'scripts', 'SELECT')::text,
                        has_column_privilege('reporting', 'script_runs', 'status', 'SELECT')::text",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        carried,
        (
            Some("the scripts".into()),
            vec!["fillfactor=90".into()],
            "true".into(),
            "true".into()
        )
    );
    // Keys above 2^31 work through the table, the foreign key and the view.
    client
        .batch_execute("SELECT setval('scripts_id_seq', 2147483648)")
        .await
        .unwrap();
    let id: i64 = one(
        &client,
        "INSERT INTO scripts (account_id) VALUES (1) RETURNING id",
    )
    .await;
    client
        .execute("INSERT INTO script_runs (script_id) VALUES ($1)", &[&id])
        .await
        .unwrap();
    let err = client
        .execute("INSERT INTO script_runs (script_id) VALUES (-5)", &[])
        .await
        .expect_err("the foreign key holds on the copy");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );
    let via_view: i64 = client
        .query_one("SELECT count(*) FROM all_scripts WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(via_view, 1);

    let refused = pgshift(&url, &["finalize", "0100_copy"]).await;
    assert_ne!(refused.code, 0, "finalize asks first");
    assert!(
        refused
            .stderr
            .contains("table pgshift_old_scripts (the original of scripts)"),
        "{}",
        refused.stderr
    );
    let fin = pgshift(&url, &["finalize", "0100_copy", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    // The same schema, with bigint keys: indexes, constraints (validated),
    // the view, the sequence and its owner all moved to the copies.
    assert_eq!(as_before(&schema_dump(&client).await), user_schema(&before));
    let logs: i64 = one(&client, "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgshift'::regnamespace AND relname LIKE 'copy\\_%'").await;
    assert_eq!(logs, 0, "finalize drops the change logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_rollback_after_cutover_replays_every_write_onto_the_originals() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let (dir, path) = migration("0101_copy_rb", MIGRATION);

    let writer = Writer::start(&url).await;
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Writes to the copies after cutover, then the rollback under writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = dir.path().join("rollback.jsonl");
    let rb = pgshift(
        &url,
        &[
            "--format",
            "json",
            "rollback",
            "0101_copy_rb",
            "--events",
            events.to_str().unwrap(),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = writer.stop().await;
    assert_eq!(rb.code, 0, "{}\n{}", rb.stdout, rb.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let json: serde_json::Value = serde_json::from_str(&rb.stdout).unwrap();
    assert_eq!(json["phase"], "rolled_back");
    // The writes since cutover were replayed before the swap's lock, not under it.
    let caught_up: i64 = read_events(&events)
        .iter()
        .filter(|e| {
            e["event"] == "replayed" && e["step"].as_str().unwrap_or("").contains("since cutover")
        })
        .map(|e| e["keys"].as_i64().unwrap_or(0))
        .sum();
    assert!(caught_up > 0, "no catch-up replay before the swap back");

    assert_matches_control(&client).await;
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_rollback_before_cutover_leaves_the_tables_as_they_were() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0102_copy_ready", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy", "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let copies: i64 = one(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgshift\\_new\\_%' AND relkind = 'r'",
    )
    .await;
    assert_eq!(copies, 3, "one copy per table, ready for cutover");
    let truncate = client
        .batch_execute("TRUNCATE archived_scripts")
        .await
        .expect_err("a TRUNCATE during the copy is refused");
    assert!(
        truncate.to_string().contains("0102_copy_ready")
            || format!("{truncate:?}").contains("0102_copy_ready"),
        "{truncate:?}"
    );
    let rb = pgshift(&url, &["rollback", "0102_copy_ready"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_matches_control(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_refuses_what_it_cannot_move_and_names_it_and_auto_the_default_takes_update_then(
) {
    let (cluster, client) = incident_primary(100).await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "ALTER TABLE archived_scripts ADD CONSTRAINT no_twins EXCLUDE USING btree (name WITH =);",
        )
        .await
        .unwrap();
    let (_dir, path) = migration("0103_copy_refused", MIGRATION);
    let plan = pgshift(
        &url,
        &["--format", "json", "plan", &path, "--engine", "copy"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect(&plan.stderr);
    assert_eq!(json["engine"], "copy");
    let blockers = json["blockers"].as_array().unwrap();
    assert!(
        blockers
            .iter()
            .any(|b| b["object"] == "constraint no_twins on archived_scripts"
                && b["reason"].as_str().unwrap().contains("copy engine")),
        "{blockers:?}"
    );
    assert_ne!(plan.code, 0);
    // The update engine takes the same migration, and auto says why it does.
    let plan = pgshift(&url, &["plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = pgshift(
        &url,
        &["--format", "json", "plan", &path, "--engine", "auto"],
    )
    .await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect(&plan.stderr);
    assert_eq!(json["engine"], "update");
    let why = json["warnings"][0].as_str().unwrap();
    assert!(
        why.starts_with("--engine auto chose the update engine")
            && why.contains("constraint no_twins on archived_scripts"),
        "{why}"
    );
    // auto is the default: without --engine, the same plan and reason.
    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect(&plan.stderr);
    assert_eq!(json["engine"], "update");
    assert_eq!(json["warnings"][0].as_str().unwrap(), why);
    // ...and the copy engine once the table it refused is fine for it.
    client
        .batch_execute("ALTER TABLE archived_scripts DROP CONSTRAINT no_twins")
        .await
        .unwrap();
    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect(&plan.stderr);
    assert_eq!(json["engine"], "copy", "{}", json["warnings"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_kill_nine_during_the_copy_then_resume_copies_each_row_once() {
    let (cluster, client) = incident_primary(30_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0104_copy_kill", MIGRATION);
    let writer = Writer::start(&url).await;
    let mut child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--engine",
            "copy",
            "--batch-size",
            "100",
            "--max-connections",
            "3",
        ])
        .spawn()
        .unwrap();
    let reached = wait_until(
        &client,
        "SELECT count(*) = 2 FROM pgshift.backfill WHERE rows_done >= 500 AND NOT done",
        Duration::from_secs(60),
    )
    .await;
    assert!(reached, "the parallel copy never got going");
    child.kill().await.unwrap(); // SIGKILL: no cleanup at all
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
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
    // A row copied twice would fail the primary key's build.
    assert_eq!(resumed.code, 0, "resume failed: {}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_control(&client).await;
    let t: String = one(&client, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'script_runs'::regclass AND attname = 'script_id'").await;
    assert_eq!(t, "bigint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_plan_gate_reads_the_copies_on_a_hot_standby() {
    let (cluster, client) = incident_primary(100_000).await;
    let replica = cluster.start_replica().unwrap();
    let url = cluster.url("app");
    let standby_url = replica.url("app");
    let (dir, path) = migration(
        "0105_copy_gate",
        "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n",
    );
    let queries = dir.path().join("workload.sql");
    std::fs::write(
        &queries,
        "SELECT name FROM all_scripts WHERE id = $1;\nSELECT name, body FROM scripts WHERE id = $1;\n",
    )
    .unwrap();
    let q = queries.to_str().unwrap();
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &standby_url,
            "--format",
            "json",
            "apply",
            &path,
            "--engine",
            "copy",
            "--queries",
            q,
        ],
    )
    .await;
    // The incident: the union view over a bigint copy and an int4 sibling
    // loses its index scans, and the gate stops at ready.
    assert_eq!(run.code, 1, "the gate stops the cutover: {}", run.stderr);
    assert!(
        run.stderr.contains("stopped at ready: 1 of 2 queries"),
        "{}",
        run.stderr
    );
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "ready");
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &standby_url,
            "--format",
            "json",
            "check",
            "0105_copy_gate",
            "--queries",
            q,
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stderr);
    let after = serde_json::to_string(&json["queries"][1]["after"]["plan"]).unwrap();
    assert!(
        after.contains("pgshift_new_scripts_pkey"),
        "the lookup is explained on the copy, through its own index: {after}"
    );
    let rb = pgshift(&url, &["rollback", "0105_copy_gate"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_captures_writes_of_sessions_in_replica_mode() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0106_copy_replica_role", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy", "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // What a logical replication apply worker does: ordinary triggers do
    // not fire in this mode, the capture must.
    client
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE scripts SET name = 'from a subscription' WHERE id = 10;
             UPDATE scripts_control SET name = 'from a subscription' WHERE id = 10;
             DELETE FROM script_runs WHERE id = 20;
             DELETE FROM runs_control WHERE id = 20;
             RESET session_replication_role;",
        )
        .await
        .unwrap();
    let cut = pgshift(&url, &["cutover", "0106_copy_replica_role"]).await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    assert_matches_control(&client).await;
    let name: String = one(&client, "SELECT name FROM scripts WHERE id = 10").await;
    assert_eq!(name, "from a subscription");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_rebinds_functions_whose_body_reads_the_table() {
    let (cluster, client) = incident_primary(100).await;
    let url = cluster.url("app");
    // Bound to the table itself, not its name; a view on it stays.
    client
        .batch_execute(
            "CREATE FUNCTION script_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM scripts; END;
             CREATE VIEW script_total AS SELECT script_count() AS n;",
        )
        .await
        .unwrap();
    let (_dir, path) = migration("0107_copy_atomic", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute("INSERT INTO scripts (account_id) VALUES (1)")
        .await
        .unwrap();
    let counts: (i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT n FROM script_total), (SELECT count(*) FROM scripts)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        counts.0, counts.1,
        "the function reads the table that has the name"
    );
    let fin = pgshift(&url, &["finalize", "0107_copy_atomic", "--yes"]).await;
    assert_eq!(
        fin.code, 0,
        "nothing holds on to the originals: {}",
        fin.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_kill_nine_during_validation_then_resume_finishes_correctly() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    // A unique index too: its build (and duplicate search) runs again on resume.
    client
        .batch_execute("CREATE UNIQUE INDEX scripts_name_key ON scripts (name)")
        .await
        .unwrap();
    let (_dir, path) = migration("0108_copy_kill_validating", MIGRATION);
    let writer = Writer::start(&url).await;
    // The hook gets each event on stdin; its parent is pgshift. Killed right
    // after the copy of scripts got its primary key, with other indexes
    // built or building and no replay done.
    let status = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--engine",
            "copy",
            "--max-connections",
            "3",
            "--on-event",
            "grep -q 'primary key of pgshift_new_scripts' && kill -9 $PPID",
        ])
        .status()
        .await
        .unwrap();
    assert!(!status.success(), "pgshift was killed");
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "validating");

    let resumed = pgshift(&url, &["resume", &path, "--max-connections", "3"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(resumed.code, 0, "resume failed: {}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_control(&client).await;
    let unvalidated: i64 = one(
        &client,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated",
    )
    .await;
    assert_eq!(unvalidated, 0);
    let unique: bool = one(
        &client,
        "SELECT indisunique AND indisvalid FROM pg_index WHERE indexrelid = 'scripts_name_key'::regclass",
    )
    .await;
    assert!(unique, "the copy's unique index took the name");
}

/// Accounts whose unique values move between rows: a deferrable unique
/// constraint and a partial expression index, kept in step with a control.
const ACCOUNTS: &str = "
    CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL, handle text,
                           CONSTRAINT accounts_email_key UNIQUE (email) DEFERRABLE);
    CREATE UNIQUE INDEX accounts_handle_key ON accounts (lower(handle)) WHERE handle IS NOT NULL;
    INSERT INTO accounts (email, handle)
        SELECT 'user' || g || '@example.com', CASE WHEN g % 3 <> 0 THEN 'Handle' || g END
        FROM generate_series(1, 20000) g;
    CREATE TABLE accounts_control AS SELECT * FROM accounts;
    -- Rows a and b trade their email and handle, in three updates.
    CREATE FUNCTION swap_accounts(a int8, b int8) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE ea text; eb text; ha text; hb text;
    BEGIN
      SELECT email, handle INTO ea, ha FROM accounts WHERE id = a;
      SELECT email, handle INTO eb, hb FROM accounts WHERE id = b;
      UPDATE accounts SET email = 'moving' || a, handle = NULL WHERE id = a;
      UPDATE accounts SET email = ea, handle = ha WHERE id = b;
      UPDATE accounts SET email = eb, handle = hb WHERE id = a;
      UPDATE accounts_control SET email = eb, handle = hb WHERE id = a;
      UPDATE accounts_control SET email = ea, handle = ha WHERE id = b;
    END $$;";

/// Swaps between the first and the last quarter of the keys, and inserts.
const ACCOUNT_WRITES: &[&str] = &[
    "SELECT swap_accounts(1 + $1::int8 * 7919 % 5000, 15001 + $1::int8 * 104729 % 5000)",
    "SELECT swap_accounts(1 + $1::int8 * 7919 % 5000, 15001 + $1::int8 * 104729 % 5000)",
    "WITH n AS (INSERT INTO accounts (email, handle) SELECT u || '@example.com', 'New' || u FROM gen_random_uuid() u WHERE $1::int8 > 0 RETURNING *)
     INSERT INTO accounts_control SELECT * FROM n",
];

async fn assert_accounts_match_control(client: &tokio_postgres::Client) {
    let digest = |table: &str| {
        format!("SELECT md5(string_agg(id || ':' || email || ':' || coalesce(handle, '-'), ',' ORDER BY id)) FROM {table}")
    };
    let accounts: String = one(client, &digest("accounts")).await;
    let control: String = one(client, &digest("accounts_control")).await;
    assert_eq!(accounts, control, "accounts differ from the control copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_keeps_unique_values_that_move_between_rows_during_the_copy_and_the_replays() {
    let (cluster, client) = primary().await;
    let url = cluster.url("app");
    client.batch_execute(ACCOUNTS).await.unwrap();
    let before = schema_dump(&client).await;
    let (_dir, path) = migration(
        "0109_copy_unique",
        "ALTER TABLE accounts ALTER COLUMN id TYPE bigint;\n",
    );
    let writer = Writer::start_with(&url, ACCOUNT_WRITES).await;
    let apply = {
        let (url, path) = (url.clone(), path.clone());
        tokio::spawn(async move {
            pgshift(
                &url,
                &[
                    "apply",
                    &path,
                    "--engine",
                    "copy",
                    "--no-cutover",
                    "--batch-size",
                    "200",
                    "--max-rows-per-second",
                    "8000",
                ],
            )
            .await
        })
    };
    // Row 1 is in the copy and row 20000 is at least 25 batches away: the
    // value row 1 hands to row 20000 now reaches the copy a second time.
    let in_window = wait_until(
        &client,
        "SELECT EXISTS (SELECT 1 FROM pgshift_new_accounts WHERE id = 1)
            AND NOT EXISTS (SELECT 1 FROM pgshift_new_accounts WHERE id > 15000)",
        Duration::from_secs(60),
    )
    .await;
    assert!(in_window, "the copy was never between rows 1 and 15000");
    client
        .batch_execute("SELECT swap_accounts(1, 20000)")
        .await
        .unwrap();
    let copied_late: bool = one(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM pgshift_new_accounts WHERE id > 15000)",
    )
    .await;
    assert!(copied_late, "the swap came before row 20000 was copied");
    let run = apply.await.unwrap();
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");

    // Ready for cutover, no other writer, the log drained. Rows 2 and 19999 trade values: the
    // log holds 2, 19999, 2. A round of one key brings row 2 to the copy with
    // row 19999's old values, which the copy's row 19999 still holds.
    let replay: String = one(
        &client,
        "SELECT 'pgshift.' || proname FROM pg_proc WHERE proname LIKE 'copy\\_replay\\_%' AND proname NOT LIKE '%back%'",
    )
    .await;
    one::<i64>(&client, &format!("SELECT {replay}(NULL)")).await;
    client
        .batch_execute("SELECT swap_accounts(2, 19999)")
        .await
        .unwrap();
    let taken: i64 = one(&client, &format!("SELECT {replay}(1)")).await;
    assert_eq!(taken, 1);
    let evicted: bool = one(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM pgshift_new_accounts WHERE id = 19999)",
    )
    .await;
    assert!(evicted, "row 19999 left the copy for the next round");

    let writer = Writer::start_with(&url, ACCOUNT_WRITES).await;
    let cut = pgshift(&url, &["cutover", "0109_copy_unique"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_accounts_match_control(&client).await;

    let fin = pgshift(&url, &["finalize", "0109_copy_unique", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    // The same constraint (still deferrable) and partial index, bigint keys.
    let after = schema_dump(&client)
        .await
        .replace("column accounts.id bigint", "column accounts.id integer")
        .replace(
            "accounts_id_seq bigint max 9223372036854775807",
            "accounts_id_seq integer max 2147483647",
        );
    assert_eq!(user_schema(&after), user_schema(&before));
    assert!(before.contains("UNIQUE (email) DEFERRABLE"), "{before}");
}

/// Tickets keyed by an identity that is widened, and their events keyed by
/// a bigint identity that is not (the table is copied for its foreign key).
const TICKETS: &str = "
    -- Columns named like the replay's variables once were.
    CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 3 CACHE 5) PRIMARY KEY, title text,
                          total numeric DEFAULT 1, n int DEFAULT 2, batch int, keys int[]);
    CREATE TABLE ticket_events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                ticket_id int NOT NULL REFERENCES tickets (id));
    INSERT INTO tickets (title) SELECT 't' || g FROM generate_series(1, 20000) g;
    INSERT INTO ticket_events (ticket_id) SELECT id FROM tickets WHERE id % 2 = 0;";

const TICKET_WRITES: &[&str] = &[
    "INSERT INTO tickets (title) SELECT 'w' || $1::int8",
    "INSERT INTO ticket_events (ticket_id) SELECT max(id) FROM tickets WHERE $1::int8 > 0",
    "UPDATE tickets SET title = 'u' || $1::int8 WHERE id = (SELECT max(id) FROM tickets)",
];

/// Every id an identity handed out is above what the table holds, and each
/// identity is where its sequence options say.
async fn assert_identities_continue(client: &tokio_postgres::Client) {
    for (table, step) in [("tickets", 3i64), ("ticket_events", 1)] {
        let max: i64 = one(client, &format!("SELECT max(id)::int8 FROM {table}")).await;
        let insert = if table == "tickets" {
            "INSERT INTO tickets (title) VALUES ('after') RETURNING id::int8"
        } else {
            "INSERT INTO ticket_events (ticket_id) SELECT max(id) FROM tickets RETURNING id::int8"
        };
        let id: i64 = one(client, insert).await;
        assert!(
            id > max,
            "{table}: the identity gave {id}, the table holds up to {max}"
        );
        if step == 3 {
            assert_eq!((id - 100) % 3, 0, "{table}: START 100 INCREMENT 3 kept");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_moves_identity_columns_there_and_back() {
    let (cluster, client) = primary().await;
    let url = cluster.url("app");
    client.batch_execute(TICKETS).await.unwrap();
    let before = schema_dump(&client).await;
    let digest = "SELECT md5(string_agg(id || ':' || title, ',' ORDER BY id)) || md5((SELECT string_agg(id || ':' || ticket_id, ',' ORDER BY id) FROM ticket_events)) FROM tickets";
    let (_dir, path) = migration(
        "0110_copy_identity",
        "ALTER TABLE tickets ALTER COLUMN id TYPE bigint;\n",
    );
    let plan = pgshift(&url, &["plan", &path, "--engine", "copy"]).await;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);

    let writer = Writer::start_with(&url, TICKET_WRITES).await;
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let column: String = one(
        &client,
        "SELECT format_type(atttypid, atttypmod) || ' ' || attidentity::text FROM pg_attribute
         WHERE attrelid = 'tickets'::regclass AND attname = 'id'",
    )
    .await;
    assert_eq!(
        column, "bigint a",
        "the copy has the column, and the identity"
    );
    let sequence: (String, i64) = {
        let r = client
            .query_one(
                "SELECT data_type::text, max_value FROM pg_sequences WHERE sequencename = 'tickets_id_seq'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(sequence, ("bigint".to_string(), i64::MAX));
    assert_identities_continue(&client).await;

    // Back: the identity returns to the original, past every id given since.
    let data = one::<String>(&client, digest).await;
    let rb = pgshift(&url, &["rollback", "0110_copy_identity"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(one::<String>(&client, digest).await, data);
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_identities_continue(&client).await;

    // Forward for good: finalize drops the originals, the identities stay.
    let (_dir, path) = migration(
        "0111_copy_identity_final",
        "ALTER TABLE tickets ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift(&url, &["apply", &path, "--engine", "auto"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let engine: String = one(
        &client,
        "SELECT plan->>'engine' FROM pgshift.migrations WHERE name = '0111_copy_identity_final'",
    )
    .await;
    assert_eq!(
        engine, "copy",
        "auto takes the copy engine for these tables"
    );
    let fin = pgshift(&url, &["finalize", "0111_copy_identity_final", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_identities_continue(&client).await;
    let after = schema_dump(&client)
        .await
        .replace("column tickets.id bigint", "column tickets.id integer")
        .replace(
            "column ticket_events.ticket_id bigint",
            "column ticket_events.ticket_id integer",
        )
        .replace(
            "tickets_id_seq bigint max 9223372036854775807",
            "tickets_id_seq integer max 2147483647",
        );
    assert_eq!(user_schema(&after), user_schema(&before));
}

/// The incident tables' own triggers: an audit row per insert, a stamp on
/// update, one disabled, one that fires for replicas too.
const TRIGGERS: &str = "
    CREATE TABLE script_audit (script_id bigint NOT NULL);
    CREATE FUNCTION audit_script() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO script_audit VALUES (NEW.id); RETURN NULL; END $$;
    CREATE FUNCTION touch_script() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.body := 'touched ' || NEW.name; RETURN NEW; END $$;
    CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'disabled trigger fired'; END $$;
    CREATE TRIGGER audit_insert AFTER INSERT ON scripts FOR EACH ROW EXECUTE FUNCTION audit_script();
    CREATE TRIGGER touch_update BEFORE UPDATE OF name ON scripts FOR EACH ROW EXECUTE FUNCTION touch_script();
    CREATE TRIGGER dormant BEFORE DELETE ON script_runs FOR EACH ROW EXECUTE FUNCTION refuse();
    ALTER TABLE script_runs DISABLE TRIGGER dormant;
    CREATE TRIGGER always_audit AFTER INSERT ON archived_scripts FOR EACH ROW EXECUTE FUNCTION audit_script();
    ALTER TABLE archived_scripts ENABLE ALWAYS TRIGGER always_audit;
    CREATE FUNCTION check_run() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER check_runs AFTER INSERT ON script_runs DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION check_run();";

/// Triggers fired once per application write (none for the copy's inserts
/// and replays), stamps carried over, and each trigger where it was.
async fn assert_triggers_fired_once(client: &tokio_postgres::Client, states: &str) {
    let added: i64 = one(
        client,
        "SELECT (SELECT count(*) FROM scripts_control) - 20000",
    )
    .await;
    let audited: (i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*), count(DISTINCT script_id) FROM script_audit",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(added > 0);
    assert_eq!(audited, (added, added), "one audit row per inserted script");
    let unstamped: i64 = one(
        client,
        "SELECT count(*) FROM scripts WHERE name LIKE 'u%' AND body IS DISTINCT FROM 'touched ' || name",
    )
    .await;
    assert_eq!(unstamped, 0);
    assert_eq!(trigger_states(client).await, states);
}

async fn trigger_states(client: &tokio_postgres::Client) -> String {
    one(
        client,
        "SELECT string_agg(tgrelid::regclass || '.' || tgname || ':' || tgenabled::text, ' ' ORDER BY tgname)
         FROM pg_trigger WHERE NOT tgisinternal AND tgname NOT LIKE 'pgshift%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_moves_the_tables_triggers_and_fires_them_once_per_write() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    client.batch_execute(TRIGGERS).await.unwrap();
    let before = schema_dump(&client).await;
    let states = trigger_states(&client).await;
    assert_eq!(
        states,
        "archived_scripts.always_audit:A scripts.audit_insert:O script_runs.check_runs:O script_runs.dormant:D scripts.touch_update:O"
    );
    let (_dir, path) = migration("0112_copy_triggers", MIGRATION);

    let writer = Writer::start(&url).await;
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_control(&client).await;
    assert_triggers_fired_once(&client, &states).await;

    let writer = Writer::start(&url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rb = pgshift(&url, &["rollback", "0112_copy_triggers"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = writer.stop().await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_control(&client).await;
    assert_triggers_fired_once(&client, &states).await;
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );
}

/// What the incident tables carry besides rows and indexes: row security
/// (forced) with a policy, replica identities, an index comment, a NOT VALID
/// check that old rows break, a TOAST table's storage option.
const CARRIED: &str = "
    CREATE POLICY ok_runs ON script_runs AS PERMISSIVE FOR SELECT TO reader USING (status = 'ok');
    ALTER TABLE script_runs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
    ALTER TABLE archived_scripts REPLICA IDENTITY FULL;
    ALTER TABLE scripts REPLICA IDENTITY USING INDEX scripts_pkey;
    COMMENT ON INDEX scripts_pkey IS 'the key';
    ALTER TABLE scripts SET (toast.autovacuum_vacuum_scale_factor = 0.05);
    GRANT SELECT ON script_runs TO reader;
    UPDATE script_runs SET status = 'failed' WHERE id % 4 = 0;
    UPDATE scripts SET account_id = 0 WHERE id % 100 = 0;
    UPDATE scripts_control SET account_id = 0 WHERE id % 100 = 0;
    ALTER TABLE scripts ADD CONSTRAINT nonzero_account CHECK (account_id <> 0) NOT VALID;
    CREATE STATISTICS script_stats (dependencies) ON account_id, name FROM scripts;
    ALTER STATISTICS script_stats SET STATISTICS 500;
    COMMENT ON STATISTICS script_stats IS 'stats';
    COMMENT ON CONSTRAINT scripts_pkey ON scripts IS 'pk';
    COMMENT ON CONSTRAINT script_runs_script_id_fkey ON script_runs IS 'fk';
    ALTER TABLE scripts ALTER COLUMN account_id SET (n_distinct = 1000);
    ALTER TABLE scripts CLUSTER ON scripts_account_id_idx;";

async fn carried(client: &tokio_postgres::Client) -> String {
    one(
        client,
        "SELECT concat_ws(' | ',
            (SELECT string_agg(tablename || ':' || policyname || ':' || cmd || ':' || array_to_string(roles, ',') || ':' || qual, ',') FROM pg_policies WHERE tablename NOT LIKE 'pgshift%'),
            (SELECT string_agg(relname || ':' || relrowsecurity || relforcerowsecurity || ':' || relreplident::text, ',' ORDER BY relname)
             FROM pg_class WHERE relname IN ('scripts', 'script_runs', 'archived_scripts')),
            (SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indisreplident AND indexrelid::regclass::text NOT LIKE 'pgshift%'),
            obj_description('scripts_pkey'::regclass, 'pg_class'),
            (SELECT string_agg(conrelid::regclass || '.' || pg_get_constraintdef(oid), ',') FROM pg_constraint
             WHERE contype = 'c' AND conrelid <> 0 AND conrelid::regclass::text NOT LIKE 'pgshift%'),
            (SELECT array_to_string(t.reloptions, ',') FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.relname = 'scripts'),
            (SELECT string_agg(stxrelid::regclass || '.' || stxname || ':' || array_to_string(stxkind, '') || ':' || stxstattarget
                               || ':' || obj_description(oid, 'pg_statistic_ext'), ',')
             FROM pg_statistic_ext WHERE stxname NOT LIKE 'pgshift%'),
            (SELECT string_agg(conrelid::regclass || '.' || conname || '=' || obj_description(oid, 'pg_constraint'), ',' ORDER BY conname)
             FROM pg_constraint WHERE obj_description(oid, 'pg_constraint') IS NOT NULL AND conname NOT LIKE 'pgshift%'),
            (SELECT string_agg(attname || array_to_string(attoptions, ''), ',') FROM pg_attribute
             WHERE attrelid = 'scripts'::regclass AND attoptions IS NOT NULL),
            (SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index
             WHERE indisclustered AND indexrelid::regclass::text NOT LIKE 'pgshift%'))",
    )
    .await
}

/// How many rows of script_runs role `reader` sees.
async fn reader_sees(client: &tokio_postgres::Client) -> String {
    let rows = client
        .simple_query("SET ROLE reader; SELECT count(*) FROM script_runs")
        .await
        .unwrap();
    client.batch_execute("RESET ROLE").await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_carries_row_security_replica_identity_and_index_comments() {
    let (cluster, client) = incident_primary(10_000).await;
    let url = cluster.url("app");
    client
        .batch_execute(&format!("CREATE ROLE reader; {CARRIED}"))
        .await
        .unwrap();
    let before = carried(&client).await;
    assert_eq!(
        before,
        "script_runs:ok_runs:SELECT:reader:(status = 'ok'::text) \
         | archived_scripts:falsefalse:f,script_runs:truetrue:d,scripts:falsefalse:i | scripts_pkey | the key \
         | scripts.CHECK ((account_id <> 0)) NOT VALID | autovacuum_vacuum_scale_factor=0.05 \
         | scripts.script_stats:f:500:stats | script_runs.script_runs_script_id_fkey=fk,scripts.scripts_pkey=pk \
         | account_idn_distinct=1000 | scripts_account_id_idx"
    );
    let before_visible = reader_sees(&client).await;
    let (_dir, path) = migration("0113_copy_carried", MIGRATION);

    let writer = Writer::start(&url).await;
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    // pgshift's session saw every row, the reader what the policy shows.
    assert_matches_control(&client).await;
    assert_eq!(carried(&client).await, before);
    let ok: i64 = one(
        &client,
        "SELECT count(*) FROM script_runs WHERE status = 'ok'",
    )
    .await;
    assert_eq!(reader_sees(&client).await, ok.to_string());
    assert_ne!(before_visible, "0");

    let rb = pgshift(&url, &["rollback", "0113_copy_carried"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(carried(&client).await, before);
    assert_matches_control(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_refuses_a_table_whose_row_security_applies_to_pgshifts_role() {
    let (cluster, client) = incident_primary(100).await;
    client
        .batch_execute(
            "CREATE ROLE migrator LOGIN;
             ALTER TABLE script_runs OWNER TO migrator;
             ALTER TABLE script_runs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;",
        )
        .await
        .unwrap();
    let (_dir, path) = migration("0114_copy_rls", MIGRATION);
    let plan = |user: &'static str| {
        let url = cluster.url("app").replace("postgres@", &format!("{user}@"));
        let path = path.clone();
        async move {
            pgshift(
                &url,
                &["--format", "json", "plan", &path, "--engine", "copy"],
            )
            .await
        }
    };
    // The owner is subject to its forced policies: it would copy no row.
    let run = plan("migrator").await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stderr);
    let blockers = json["blockers"].as_array().unwrap();
    assert!(
        blockers.iter().any(|b| b["object"] == "table script_runs"
            && b["remedy"].as_str().unwrap().contains("BYPASSRLS")),
        "{blockers:?}"
    );
    assert_ne!(run.code, 0);
    // A superuser reads every row.
    let run = plan("postgres").await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_status_names_foreign_keys_left_unvalidated_and_finalize_validates_them() {
    let (cluster, client) = incident_primary(2_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0115_copy_unvalidated", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let status = |url: String| async move {
        let run = pgshift(
            &url,
            &["--format", "json", "status", "0115_copy_unvalidated"],
        )
        .await;
        let json: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stderr);
        json["migrations"][0]["unvalidated_foreign_keys"].clone()
    };
    assert_eq!(status(url.clone()).await, serde_json::json!([]));
    // As if the validation after the swap had been interrupted.
    client
        .batch_execute(
            "ALTER TABLE script_runs DROP CONSTRAINT script_runs_script_id_fkey,
                 ADD CONSTRAINT script_runs_script_id_fkey FOREIGN KEY (script_id) REFERENCES scripts (id) NOT VALID",
        )
        .await
        .unwrap();
    let pending = status(url.clone()).await;
    assert_eq!(
        pending,
        serde_json::json!(["script_runs_script_id_fkey on \"public\".\"script_runs\""])
    );
    let text = pgshift(&url, &["status"]).await;
    assert!(
        text.stdout
            .contains("not validated yet (finalize validates): script_runs_script_id_fkey"),
        "{}",
        text.stdout
    );
    let fin = pgshift(&url, &["finalize", "0115_copy_unvalidated", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    let unvalidated: i64 = one(
        &client,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated",
    )
    .await;
    assert_eq!(unvalidated, 0);
}

/// A join table keyed by (script_id, tag): copied for its foreign key to
/// scripts, with a composite key of a widened and a text column.
const TAGS: &str = "
    CREATE TABLE script_tags (script_id int NOT NULL REFERENCES scripts (id) ON DELETE CASCADE, tag text NOT NULL,
                              note text, PRIMARY KEY (script_id, tag));
    INSERT INTO script_tags SELECT id, t, 'n' FROM scripts, unnest(ARRAY['a', 'b']) t WHERE id % 3 = 0;
    CREATE TABLE tags_control AS SELECT * FROM script_tags;";

/// Tag writes, mirrored: inserts, notes changed, keys changed (a tag
/// renamed), deletes; each key on the rows most recently tagged.
const TAG_WRITES: &[&str] = &[
    "WITH i AS (INSERT INTO script_tags SELECT id, 't' || $1::int8, 'n' FROM scripts WHERE id = (SELECT max(id) FROM scripts) - $1::int8 % 40 RETURNING *)
     INSERT INTO tags_control SELECT * FROM i",
    "WITH u AS (UPDATE script_tags SET note = 'u' || $1::int8 WHERE (script_id, tag) = (SELECT script_id, tag FROM script_tags ORDER BY script_id DESC, tag LIMIT 1 OFFSET $1::int8 % 7) RETURNING *)
     UPDATE tags_control c SET note = u.note FROM u WHERE (c.script_id, c.tag) = (u.script_id, u.tag)",
    "WITH old AS (SELECT script_id, tag FROM script_tags ORDER BY script_id DESC, tag LIMIT 1 OFFSET $1::int8 % 5),
          u AS (UPDATE script_tags s SET tag = s.tag || 'r' FROM old WHERE (s.script_id, s.tag) = (old.script_id, old.tag) RETURNING s.script_id, old.tag AS was, s.tag)
     UPDATE tags_control c SET tag = u.tag FROM u WHERE (c.script_id, c.tag) = (u.script_id, u.was)",
    "WITH d AS (DELETE FROM script_tags WHERE (script_id, tag) = (SELECT script_id, tag FROM script_tags ORDER BY script_id DESC, tag LIMIT 1 OFFSET $1::int8 % 9) RETURNING *)
     DELETE FROM tags_control c USING d WHERE (c.script_id, c.tag) = (d.script_id, d.tag)",
];

async fn assert_tags_match_control(client: &tokio_postgres::Client) {
    let digest = |table: &str| {
        format!("SELECT md5(string_agg(script_id || ':' || tag || ':' || coalesce(note, '-'), ',' ORDER BY script_id, tag)) FROM {table}")
    };
    let tags: String = one(client, &digest("script_tags")).await;
    let control: String = one(client, &digest("tags_control")).await;
    assert_eq!(tags, control, "script_tags differ from the control copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_moves_a_table_with_a_composite_key_under_writes_there_and_back() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    client.batch_execute(TAGS).await.unwrap();
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0116_copy_composite", MIGRATION);
    let plan = pgshift(
        &url,
        &["--format", "json", "plan", &path, "--engine", "copy"],
    )
    .await;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let tables: Vec<&str> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["table"].as_str())
        .collect();
    assert!(tables.contains(&"script_tags"), "{tables:?}");

    let writer = Writer::start(&url).await;
    let tagger = Writer::start_with(&url, TAG_WRITES).await;
    let run = pgshift(
        &url,
        &["apply", &path, "--engine", "copy", "--batch-size", "500"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag_writes = tagger.ops.load(std::sync::atomic::Ordering::SeqCst);
    let mut errors = writer.stop().await;
    errors.extend(tagger.stop().await);
    assert!(
        tag_writes > 50,
        "{tag_writes} tag writes during the migration"
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_control(&client).await;
    assert_tags_match_control(&client).await;
    let key_type: String = one(
        &client,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'script_tags'::regclass AND attname = 'script_id'",
    )
    .await;
    assert_eq!(key_type, "bigint");

    let tagger = Writer::start_with(&url, TAG_WRITES).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rb = pgshift(&url, &["rollback", "0116_copy_composite"]).await;
    let errors = tagger.stop().await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_tags_match_control(&client).await;
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

/// Routines on the incident's row type: a set-returning function, one that
/// takes a row, one that takes an array of rows, a procedure.
const ROUTINES: &str = "
    CREATE ROLE reader;
    CREATE FUNCTION busy_scripts() RETURNS SETOF scripts LANGUAGE sql STABLE AS 'SELECT * FROM scripts WHERE account_id = 7';
    REVOKE ALL ON FUNCTION busy_scripts() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION busy_scripts() TO reader;
    CREATE FUNCTION script_label(s scripts) RETURNS text LANGUAGE sql AS 'SELECT s.name || ''#'' || s.id';
    COMMENT ON FUNCTION script_label(scripts) IS 'label';
    CREATE FUNCTION first_id(a scripts[]) RETURNS text LANGUAGE sql AS 'SELECT (a[1]).id::text';
    CREATE PROCEDURE rename_script(s scripts) LANGUAGE sql AS 'UPDATE scripts SET name = s.name || ''!'' WHERE id = s.id';";

async fn routines_work(client: &tokio_postgres::Client) -> String {
    client
        .batch_execute("DO $$ DECLARE r scripts; BEGIN SELECT * INTO r FROM scripts WHERE id = 1; CALL rename_script(r); END $$")
        .await
        .unwrap();
    one(
        client,
        "SELECT concat_ws(' | ',
            (SELECT count(*) || ':' || min(pg_typeof(id)::text) FROM busy_scripts()),
            (SELECT script_label(s) FROM scripts s WHERE id = 1),
            first_id(ARRAY(SELECT s FROM scripts s ORDER BY id LIMIT 2)),
            has_function_privilege('reader', 'busy_scripts()', 'EXECUTE')::text,
            has_function_privilege('public', 'busy_scripts()', 'EXECUTE')::text,
            obj_description('script_label(scripts)'::regprocedure, 'pg_proc'))",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_makes_routines_on_the_row_type_again_on_each_swap() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    client.batch_execute(ROUTINES).await.unwrap();
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0117_copy_routines", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        routines_work(&client).await,
        "5:bigint | script 1!#1 | 1 | true | false | label"
    );
    let rb = pgshift(&url, &["rollback", "0117_copy_routines"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(
        routines_work(&client).await,
        "5:integer | script 1!!#1 | 1 | true | false | label"
    );
    assert_eq!(
        user_schema(&schema_dump(&client).await),
        user_schema(&before)
    );

    // Forward for good: the originals drop, nothing of them is left behind.
    let (_dir, path) = migration("0118_copy_routines_final", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fin = pgshift(&url, &["finalize", "0118_copy_routines_final", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());

    // A routine something else depends on cannot be dropped: refused.
    client
        .batch_execute("CREATE VIEW busy AS SELECT * FROM busy_scripts()")
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0119_copy_routines_refused",
        "ALTER TABLE scripts ALTER COLUMN account_id TYPE bigint;\n",
    );
    let plan = pgshift(
        &url,
        &["--format", "json", "plan", &path, "--engine", "copy"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect(&plan.stderr);
    let blockers = json["blockers"].as_array().unwrap();
    assert!(
        blockers
            .iter()
            .any(|b| b["object"] == "function busy_scripts() (uses the row type of scripts)"),
        "{blockers:?}"
    );
}

/// Where each of archived_scripts' relations lives, and whether it is logged.
async fn placement(client: &tokio_postgres::Client) -> String {
    one(
        client,
        "SELECT string_agg(c.relname || ':' || coalesce(t.spcname, 'default') || ':' || c.relpersistence::text, ',' ORDER BY c.relname)
         FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
         WHERE c.relname IN ('archived_scripts', 'archived_scripts_pkey', 'scripts', 'scripts_account_id_idx')",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_keep_tables_and_indexes_in_their_tablespaces_and_unlogged_tables_unlogged() {
    let (cluster, client) = incident_primary(5_000).await;
    let url = cluster.url("app");
    let dir = cluster.server_dir("fast").unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE fast LOCATION '{}'",
            dir.display()
        ))
        .await
        .unwrap();
    client
        .batch_execute(
            "ALTER TABLE archived_scripts SET TABLESPACE fast;
             ALTER INDEX archived_scripts_pkey SET TABLESPACE fast;
             ALTER INDEX scripts_account_id_idx SET TABLESPACE fast;
             ALTER TABLE archived_scripts SET UNLOGGED;",
        )
        .await
        .unwrap();
    let before = placement(&client).await;
    assert_eq!(
        before,
        "archived_scripts:fast:u,archived_scripts_pkey:fast:u,scripts:default:p,scripts_account_id_idx:fast:p"
    );
    // The update engine rebuilds the key's index: in the same tablespace.
    let (_d1, path) = migration("0120_update_tablespace", MIGRATION);
    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(placement(&client).await, before);
    // The copy engine makes new tables and indexes: the same again.
    let (_d2, path) = migration(
        "0121_copy_tablespace",
        "ALTER TABLE archived_scripts ALTER COLUMN account_id TYPE bigint;\nALTER TABLE scripts ALTER COLUMN account_id TYPE bigint;\n",
    );
    let run = pgshift(&url, &["apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(placement(&client).await, before);
    let rb = pgshift(&url, &["rollback", "0121_copy_tablespace"]).await;
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(placement(&client).await, before);
}

/// A key written many times during the copy fills the log with entries of
/// few keys. The replays go on while the log holds a full batch: stopping
/// at the first round that took fewer keys than a batch (10 keys out of
/// 10,000 entries here) left the rest to the cutover's lock, which at 10M
/// rows then held its locks 826 ms instead of about 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_replays_until_the_log_is_short_even_when_keys_repeat() {
    let (cluster, client) = incident_primary(3_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0120_copy_repeats", MIGRATION);
    let child = pgshift_command(&url)
        .args(["-q", "apply", &path, "--no-cutover"])
        .args(["--engine", "copy", "--batch-size", "100"])
        .args(["--max-rows-per-second", "1000", "--max-commit-latency", "0"])
        .spawn()
        .unwrap();
    assert!(
        wait_until(
            &client,
            "SELECT phase = 'backfilling' FROM pgshift.migrations",
            Duration::from_secs(30)
        )
        .await
    );
    // 30,000 log entries of 10 keys, in one transaction.
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..3000 LOOP UPDATE scripts SET name = name WHERE id <= 10; END LOOP; END $$",
        )
        .await
        .unwrap();
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(
        phase, "backfilling",
        "the writes came too late for the test"
    );
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "apply failed");
    let logs: Vec<String> = client
        .query(
            "SELECT format('%I.%I', nspname, relname) FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace
             WHERE nspname = 'pgshift' AND relkind = 'r' AND relname LIKE 'copy\\_log\\_%' AND relname NOT LIKE 'copy\\_log\\_back\\_%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // scripts, archived_scripts, and script_runs for its foreign key's column.
    assert_eq!(logs.len(), 3, "{logs:?}");
    for log in logs {
        let left: i64 = one(&client, &format!("SELECT count(*) FROM {log}")).await;
        assert!(
            left < 10_000,
            "{log} still holds {left} entries at ready: the replay stopped early"
        );
    }
    let run = pgshift(&url, &["cutover", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let renamed: i64 = one(&client, "SELECT count(*) FROM scripts WHERE id <= 10").await;
    assert_eq!(renamed, 10);
}

/// The catch-up before the cutover replays until the log is nearly empty,
/// not until it holds less than a round: at 10M rows that rule left 6,200
/// entries to the cutover's lock, which it then held 570 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_catches_up_until_the_cutover_has_milliseconds_left() {
    let (cluster, client) = incident_primary(3_000).await;
    let url = cluster.url("app");
    let (dir, path) = migration("0121_copy_catch_up", MIGRATION);
    let run = pgshift(&url, &["apply", &path, "--engine", "copy", "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // 15,000 entries in the log of scripts while it waits at ready: more
    // than one round of 10,000, less than two.
    client
        .batch_execute("DO $$ BEGIN FOR i IN 1..5 LOOP UPDATE scripts SET name = name || '.'; END LOOP; END $$")
        .await
        .unwrap();
    let events = dir.path().join("cutover.jsonl");
    let cut = pgshift(
        &url,
        &[
            "cutover",
            "0121_copy_catch_up",
            "--events",
            events.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    let catch_up = read_events(&events)
        .into_iter()
        .find(|e| {
            e["event"] == "replayed"
                && e["step"] == "replay the rows written in scripts before cutover"
        })
        .expect("a catch-up replay of scripts before the cutover");
    let left = catch_up["left"]
        .as_i64()
        .expect("the event says what it left");
    assert!(
        left <= pgshift::ops::copy_swap::LEFT_FOR_THE_LOCK,
        "{left} entries left to the cutover's lock: {catch_up}"
    );
    let dots: i64 = one(
        &client,
        "SELECT count(*) FROM scripts WHERE name LIKE '%.....'",
    )
    .await;
    assert_eq!(dots, 3_000, "every update reached the copy");
}

/// Each batch of the copy marks the rows of the batch before it committed
/// while their pages are still dirty (see `backfill::hint_sql`): the first
/// read of a copy after a checkpoint does not write it all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_batches_leave_the_copied_rows_marked_committed() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0121_copy_hint_bits", MIGRATION);
    let child = pgshift_command(&url)
        .args([
            "-q",
            "apply",
            &path,
            "--engine",
            "copy",
            "--batch-size",
            "200",
        ])
        // Slow enough that the pause lands while the other tables are
        // copied (a CI run once saw them all copied first).
        .args(["--max-rows-per-second", "3000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Paused once the copy of scripts is done and the next table's began:
    // nothing has read the copy of scripts but the batches themselves.
    let next_table = wait_until(
        &client,
        "SELECT bool_and(done) FILTER (WHERE table_oid = 'scripts'::regclass)
                AND bool_or(rows_done > 0) FILTER (WHERE table_oid <> 'scripts'::regclass)
         FROM pgshift.backfill",
        Duration::from_secs(60),
    )
    .await;
    assert!(next_table, "the copy of scripts did not finish");
    let pause = pgshift(&url, &["pause", "0121_copy_hint_bits"]).await;
    assert_eq!(pause.code, 0, "{}", pause.stderr);
    assert!(
        wait_until(
            &client,
            "SELECT paused FROM pgshift.migrations",
            Duration::from_secs(10)
        )
        .await
    );
    client
        .batch_execute("CHECKPOINT; SET max_parallel_workers_per_gather = 0")
        .await
        .unwrap();
    let pages: i64 = one(
        &client,
        "SELECT pg_relation_size('pgshift_new_scripts') / current_setting('block_size')::int8",
    )
    .await;
    let plan: serde_json::Value = client
        .query_one(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT count(*) FROM pgshift_new_scripts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let dirtied = plan[0]["Plan"]["Shared Dirtied Blocks"].as_i64().unwrap();

    let go_on = pgshift(&url, &["resume", "0121_copy_hint_bits"]).await;
    assert_eq!(go_on.code, 0, "{}", go_on.stderr);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pages > 100, "a copy of {pages} pages proves little");
    // The last batch's pages (about 3 of 200 rows) had no batch after them.
    assert!(
        dirtied * 10 < pages,
        "the first read after a checkpoint dirtied {dirtied} of the copy's {pages} pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_splits_a_table_into_even_parts_from_fresh_statistics_or_by_offsets() {
    let (cluster, client) = primary().await;
    let url = cluster.url("app");
    // Half of each table deleted: `stale`'s histogram still spans the
    // deleted keys (cutting there would leave one worker every row),
    // `fresh` was analyzed again since.
    client
        .batch_execute(
            "CREATE TABLE fresh (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             CREATE TABLE stale (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             INSERT INTO fresh SELECT g, 'v' FROM generate_series(1, 100000) g;
             INSERT INTO stale SELECT g, 'v' FROM generate_series(1, 100000) g;
             ANALYZE fresh, stale;
             DELETE FROM fresh WHERE id <= 50000;
             DELETE FROM stale WHERE id <= 50000;",
        )
        .await
        .unwrap();
    // Alone: VACUUM refuses a transaction block.
    for sql in ["VACUUM fresh, stale", "ANALYZE fresh"] {
        client.batch_execute(sql).await.unwrap();
    }
    // The deletes' counts reach the statistics when the session goes idle.
    assert!(
        wait_until(
            &client,
            "SELECT n_mod_since_analyze >= 50000 FROM pg_stat_user_tables WHERE relname = 'stale'",
            Duration::from_secs(30),
        )
        .await
    );
    let (_dir, path) = migration(
        "0130_even_parts",
        "ALTER TABLE fresh ALTER COLUMN id TYPE bigint;\nALTER TABLE stale ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift(
        &url,
        &[
            "-q",
            "apply",
            &path,
            "--engine",
            "copy",
            "--max-connections",
            "3",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts: Vec<(String, i64)> = client
        .query(
            "SELECT table_oid::regclass::text, rows_done FROM pgshift.backfill ORDER BY 1, part",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(parts.len(), 4, "{parts:?}");
    for (table, rows) in &parts {
        assert!(
            (20_000..=30_000).contains(rows),
            "{table}: a part of {rows} of 50000 rows: {parts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_engine_validates_a_foreign_key_by_its_index_when_the_referencing_table_has_one() {
    // auto_explain writes the plan of the validation's own query (nested
    // in VALIDATE CONSTRAINT) to the server log.
    let (cluster, client) = primary_with(pgshift::testkit::ClusterOptions {
        extra_conf: vec![
            "session_preload_libraries = 'auto_explain'".into(),
            "auto_explain.log_min_duration = 0".into(),
            "auto_explain.log_nested_statements = on".into(),
        ],
        ..pgshift::testkit::ClusterOptions::default()
    })
    .await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY, body text);
             CREATE TABLE indexed (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent);
             CREATE INDEX indexed_parent_id ON indexed (parent_id);
             CREATE TABLE unindexed (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent);
             INSERT INTO parent SELECT g, 'b' || g FROM generate_series(1, 50000) g;
             INSERT INTO indexed SELECT g, 1 + g % 50000 FROM generate_series(1, 100000) g;
             INSERT INTO unindexed SELECT g, 1 + g % 50000 FROM generate_series(1, 100000) g;",
        )
        .await
        .unwrap();
    // All-visible, as a table long in use is: a VACUUM right after the load
    // may find a snapshot (autovacuum's ANALYZE) that still needs the rows.
    let mut visible = false;
    for _ in 0..50 {
        client.batch_execute("VACUUM ANALYZE").await.unwrap();
        visible = one(
            &client,
            "SELECT bool_and(relallvisible = relpages) FROM pg_class WHERE relname IN ('indexed', 'unindexed')",
        )
        .await;
        if visible {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(visible, "the tables never became all-visible");
    let (_dir, path) = migration(
        "0131_fk_merge",
        "ALTER TABLE parent ALTER COLUMN body TYPE jsonb USING jsonb_build_object('text', body);\n",
    );
    let run = pgshift(&url, &["-q", "apply", &path, "--engine", "copy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let validated: bool = one(
        &client,
        "SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'",
    )
    .await;
    assert!(validated);
    // The plan logged right after each validation's query text.
    let log = cluster.log();
    let plan_of = |table: &str| {
        let marker =
            format!("Query Text: SELECT fk.\"parent_id\" FROM ONLY \"public\".\"{table}\" fk");
        let at = log
            .rfind(&marker)
            .unwrap_or_else(|| panic!("no validation of {table} in the log:\n{log}"));
        log[at..]
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(
        plan_of("indexed").starts_with("Merge Anti Join"),
        "{}\n{log}",
        plan_of("indexed")
    );
    // Without an index leading with the column, the planner's choice stands.
    assert!(
        !plan_of("unindexed").starts_with("Merge Anti Join"),
        "{}",
        plan_of("unindexed")
    );
}
