//! Partitioned tables (issue 29): the copy engine takes the whole tree,
//! leaf by leaf, under writes that move rows between partitions; the result
//! must be what the blocking `ALTER` makes of a control copy that saw the
//! same writes, with every partition, bound and index keeping its name.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::Client;

use crate::support::*;

/// Range by month, a default partition, and March sub-partitioned by list
/// of `kind` (with a default of its own); a partitioned index, a foreign
/// key that points at the tree, and a view over it. `events_control` is a
/// plain table with the same rows.
const SCHEMA: &str = "
    CREATE TABLE events (
        id int NOT NULL,
        created_at date NOT NULL,
        kind text NOT NULL,
        payload text,
        PRIMARY KEY (id, created_at, kind)
    ) PARTITION BY RANGE (created_at);
    CREATE TABLE events_2024_01 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
    CREATE TABLE events_2024_02 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
    CREATE TABLE events_2024_03 PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')
        PARTITION BY LIST (kind);
    CREATE TABLE events_2024_03_a PARTITION OF events_2024_03 FOR VALUES IN ('a');
    CREATE TABLE events_2024_03_rest PARTITION OF events_2024_03 DEFAULT;
    CREATE TABLE events_other PARTITION OF events DEFAULT;
    CREATE INDEX events_kind ON events (kind);
    COMMENT ON TABLE events_2024_02 IS 'February';
    COMMENT ON INDEX events_kind IS 'by kind';
    COMMENT ON CONSTRAINT events_pkey ON events IS 'the key';
    CREATE TABLE event_notes (
        id int PRIMARY KEY,
        event_id int NOT NULL,
        event_at date NOT NULL,
        event_kind text NOT NULL,
        FOREIGN KEY (event_id, event_at, event_kind) REFERENCES events (id, created_at, kind) ON DELETE CASCADE
    );
    CREATE VIEW event_kinds AS SELECT id, kind FROM events;
    INSERT INTO events
    SELECT g, date '2024-01-01' + (g % 150), CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END, format('{\"n\": %s}', g)
    FROM generate_series(1, 20000) g;
    INSERT INTO event_notes SELECT id, id, created_at, kind FROM events WHERE id <= 500;
    CREATE TABLE events_control AS SELECT * FROM events;
    ALTER TABLE events_control ADD PRIMARY KEY (id, created_at, kind);
    ANALYZE;
";

/// Every member of the `events` tree with its bound, and every index and
/// key constraint on them, by name: what must look the same after cutover.
async fn tree(client: &Client) -> Vec<String> {
    texts(
        client,
        "SELECT format('%s %s %s', c.relname, c.relkind, coalesce(pg_get_expr(c.relpartbound, c.oid), 'root'))
           FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
         UNION ALL
         SELECT format('index %s on %s%s', ic.relname, c.relname, CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END)
           FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
           JOIN pg_index i ON i.indrelid = c.oid JOIN pg_class ic ON ic.oid = i.indexrelid
         UNION ALL
         SELECT format('constraint %s on %s', k.conname, c.relname)
           FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
           JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype IN ('p', 'u', 'f')
         ORDER BY 1",
    )
    .await
}

/// The same change to `events` and its control, in one transaction:
/// inserts into every partition, updates that move rows to another month
/// or another list partition, deletes.
fn mirrored_write(i: i64) -> String {
    // Rows the notes reference (ids up to 500) keep their keys.
    let k = (i * 7) % 19_000 + 1001;
    let write = match i % 4 {
        0 => format!(
            "INSERT INTO {{t}} VALUES ({}, date '2024-01-01' + {}, '{}', '{{\"w\": {i}}}')",
            100_000 + i,
            i % 160,
            if i % 3 == 0 { "a" } else { "b" }
        ),
        // To the next month (or out of the ranges, into the default).
        1 => format!(
            "UPDATE {{t}} SET created_at = created_at + 29, payload = '[{i}]' WHERE id = {k}"
        ),
        // To the other list partition of March, or none.
        2 => format!(
            "UPDATE {{t}} SET kind = CASE kind WHEN 'a' THEN 'b' ELSE 'a' END WHERE id = {k}"
        ),
        _ => format!("DELETE FROM {{t}} WHERE id = {}", (i * 13) % 20_000 + 501),
    };
    [
        write.replace("{t}", "events"),
        write.replace("{t}", "events_control"),
    ]
    .join(";\n")
}

/// `events` holds exactly what `events_control` holds, row for row and
/// column type for column type.
async fn assert_matches_control(client: &Client) {
    let types = |table: &'static str| {
        format!(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
               FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    };
    let (events, control): (String, String) = (
        one(client, &types("events")).await,
        one(client, &types("events_control")).await,
    );
    assert_eq!(events, control);
    let diff = texts(
        client,
        "(SELECT 'only in events ' || t::text FROM events t EXCEPT SELECT 'only in events ' || c::text FROM events_control c)
         UNION ALL (SELECT 'only in control ' || c::text FROM events_control c EXCEPT SELECT 'only in control ' || t::text FROM events t)
         ORDER BY 1 LIMIT 10",
    )
    .await;
    assert!(diff.is_empty(), "events differ from the control: {diff:#?}");
    let counts: (i64, i64) = (
        one(client, "SELECT count(*) FROM events").await,
        one(client, "SELECT count(*) FROM events_control").await,
    );
    assert_eq!(counts.0, counts.1);
    // Each row in the partition its key says (the copy routes nothing).
    let misplaced: i64 = one(
        client,
        "SELECT count(*) FROM events WHERE tableoid <> (CASE
             WHEN created_at >= '2024-04-01' OR created_at < '2024-01-01' THEN 'events_other'
             WHEN created_at >= '2024-03-01' THEN CASE kind WHEN 'a' THEN 'events_2024_03_a' ELSE 'events_2024_03_rest' END
             WHEN created_at >= '2024-02-01' THEN 'events_2024_02' ELSE 'events_2024_01' END)::regclass",
    )
    .await;
    assert_eq!(misplaced, 0);
}

async fn partitioned_primary() -> (pgshift::testkit::Cluster, Client) {
    let (cluster, client) = primary().await;
    client.batch_execute(SCHEMA).await.unwrap();
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_is_copied_leaf_by_leaf_and_matches_the_blocking_alter() {
    let (cluster, client) = partitioned_primary().await;
    let url = cluster.url("app");
    let before = tree(&client).await;
    let sql = "ALTER TABLE events ALTER COLUMN id TYPE bigint, ALTER COLUMN payload TYPE jsonb USING payload::jsonb;\n";
    let (_dir, path) = migration("0300_events", sql);

    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["engine"], "copy", "{}", plan.stdout);
    let text = pgshift_default_engine(&url, &["plan", &path]).await;
    for leaf in [
        "events_2024_01",
        "events_2024_03_a",
        "events_2024_03_rest",
        "events_other",
    ] {
        assert!(
            text.stdout.contains(&format!("partition {leaf} ")),
            "{}",
            text.stdout
        );
    }

    let writer = Mirror::start(&url, mirrored_write).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = pgshift_default_engine(&url, &["apply", &path, "--batch-size", "1000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = writer.ops.load(Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(ops > 50, "the writer barely ran ({ops} transactions)");
    assert!(
        run.stderr.contains("partition events_2024_03_a of events"),
        "each leaf is copied in its own step: {}",
        run.stderr
    );

    // Same tree, same names, every index valid; the key that points at it
    // follows the new table (event_notes.event_id widened with it).
    assert_eq!(tree(&client).await, before);
    client
        .batch_execute(
            "ALTER TABLE events_control ALTER COLUMN id TYPE bigint, ALTER COLUMN payload TYPE jsonb USING payload::jsonb",
        )
        .await
        .unwrap();
    assert_matches_control(&client).await;
    let fk: String = one(
        &client,
        "SELECT confrelid::regclass::text || ' ' || convalidated FROM pg_constraint WHERE conrelid = 'event_notes'::regclass AND contype = 'f' AND conparentid = 0",
    )
    .await;
    assert_eq!(fk, "events true");
    let note_type: String = one(&client, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'event_notes'::regclass AND attname = 'event_id'").await;
    assert_eq!(note_type, "bigint");
    let comment: Option<String> = one(
        &client,
        "SELECT obj_description('events_2024_02'::regclass, 'pg_class')",
    )
    .await;
    assert_eq!(comment.as_deref(), Some("February"));
    let comments = texts(
        &client,
        "SELECT obj_description('events_kind'::regclass, 'pg_class')
         UNION ALL SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = 'events_pkey'",
    )
    .await;
    assert_eq!(comments, ["by kind", "the key"]);
    let viewed: i64 = one(&client, "SELECT count(*) FROM event_kinds WHERE id < 100").await;
    assert!(viewed > 0);
    // A write after cutover lands in its partition of the new tree.
    client
        .batch_execute("INSERT INTO events VALUES (3000000000, '2024-02-10', 'a', '{}')")
        .await
        .unwrap();
    let at: String = one(
        &client,
        "SELECT tableoid::regclass::text FROM events WHERE id = 3000000000",
    )
    .await;
    assert_eq!(at, "events_2024_02");

    let fin = pgshift(&url, &["finalize", "0300_events", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_eq!(tree(&client).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_hash_partitioned_table_after_cutover_keeps_every_write() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE sessions (id int NOT NULL, account int NOT NULL, seen int, PRIMARY KEY (id, account))
                 PARTITION BY HASH (account);
             CREATE TABLE sessions_0 PARTITION OF sessions FOR VALUES WITH (MODULUS 3, REMAINDER 0);
             CREATE TABLE sessions_1 PARTITION OF sessions FOR VALUES WITH (MODULUS 3, REMAINDER 1);
             CREATE TABLE sessions_2 PARTITION OF sessions FOR VALUES WITH (MODULUS 3, REMAINDER 2);
             INSERT INTO sessions SELECT g, g % 97, 0 FROM generate_series(1, 5000) g;
             ANALYZE sessions;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0301_sessions",
        "ALTER TABLE sessions ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let widened: String = one(&client, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'sessions_1'::regclass AND attname = 'id'").await;
    assert_eq!(widened, "bigint");

    // Writes after cutover: an insert, an update that moves a row to
    // another partition, a delete.
    client
        .batch_execute(
            "INSERT INTO sessions VALUES (90000, 5, 1);
             UPDATE sessions SET account = account + 1, seen = 2 WHERE id = 10;
             DELETE FROM sessions WHERE id = 20;",
        )
        .await
        .unwrap();
    let expected: String = one(
        &client,
        "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM sessions s",
    )
    .await;

    let back = pgshift(&url, &["rollback", "0301_sessions"]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    let types = texts(
        &client,
        "SELECT c.relname || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_partition_tree('sessions') t
           JOIN pg_class c ON c.oid = t.relid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id' ORDER BY 1",
    )
    .await;
    assert_eq!(
        types,
        [
            "sessions integer",
            "sessions_0 integer",
            "sessions_1 integer",
            "sessions_2 integer"
        ]
    );
    let got: String = one(
        &client,
        "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM sessions s",
    )
    .await;
    assert_eq!(got, expected, "the writes made after cutover are kept");
    let moved: String = one(
        &client,
        "SELECT seen || ' ' || account FROM sessions WHERE id = 10",
    )
    .await;
    assert_eq!(moved, "2 11");
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_copy_of_a_tree_cannot_carry_is_refused_with_exit_2_and_nothing_changes() {
    let (cluster, client) = partitioned_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER only_january BEFORE INSERT ON events_2024_01 FOR EACH ROW EXECUTE FUNCTION touch();",
        )
        .await
        .unwrap();
    let before = schema_dump(&client).await;
    for (sql, expected) in [
        (
            "ALTER TABLE events ALTER COLUMN id TYPE bigint;\n",
            "trigger only_january on partition events_2024_01",
        ),
        (
            "ALTER TABLE events ALTER COLUMN kind TYPE varchar(10);\n",
            "partition key",
        ),
        (
            "ALTER TABLE events_2024_02 ALTER COLUMN id TYPE bigint;\n",
            "it is a partition",
        ),
    ] {
        let (_dir, path) = migration("0302_refused", sql);
        let run = pgshift_default_engine(&url, &["apply", &path]).await;
        assert_eq!(run.code, 2, "{sql}: {}", run.stderr);
        let plan = pgshift_default_engine(&url, &["plan", &path]).await;
        assert!(plan.stdout.contains(expected), "{sql}: {}", plan.stdout);
    }
    assert_eq!(schema_dump(&client).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_while_copying_a_leaf_then_resume_copies_each_row_once() {
    let (cluster, client) = partitioned_primary().await;
    let url = cluster.url("app");
    let sql = "ALTER TABLE events ALTER COLUMN id TYPE bigint, ALTER COLUMN payload TYPE jsonb USING payload::jsonb;\n";
    let (_dir, path) = migration("0303_kill", sql);
    let writer = Mirror::start(&url, mirrored_write).await;
    kill_apply_mid_copy(&client, &url, &path, "200", 600).await;
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "backfilling");
    let resumed = pgshift(&url, &["resume", "0303_kill", "--batch-size", "5000"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    // A row copied twice would fail its leaf's primary key build.
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    client
        .batch_execute(
            "ALTER TABLE events_control ALTER COLUMN id TYPE bigint, ALTER COLUMN payload TYPE jsonb USING payload::jsonb",
        )
        .await
        .unwrap();
    assert_matches_control(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_attached_during_the_migration_stops_the_cutover_and_rollback_still_works() {
    let (cluster, client) = partitioned_primary().await;
    let url = cluster.url("app");
    let before = tree(&client).await;
    let (_dir, path) = migration(
        "0304_attach",
        "ALTER TABLE events ALTER COLUMN id TYPE bigint;\n",
    );
    let ready = pgshift_default_engine(&url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(ready.code, 0, "{}", ready.stderr);
    client
        .batch_execute(
            "CREATE TABLE events_2023 (LIKE events INCLUDING DEFAULTS);
             INSERT INTO events_2023 VALUES (7000000, '2023-06-01', 'b', '{}');
             ALTER TABLE events ATTACH PARTITION events_2023 FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');",
        )
        .await
        .unwrap();
    let cut = pgshift(&url, &["cutover", "0304_attach"]).await;
    assert_eq!(cut.code, 3, "{}", cut.stderr);
    assert!(
        cut.stderr.contains("the partitions of events changed")
            && cut.stderr.contains("public.events_2023"),
        "{}",
        cut.stderr
    );
    let id_type: String = one(&client, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'id'").await;
    assert_eq!(id_type, "integer", "nothing was swapped");
    let back = pgshift(&url, &["rollback", "0304_attach"]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    client
        .batch_execute("ALTER TABLE events DETACH PARTITION events_2023")
        .await
        .unwrap();
    assert_eq!(tree(&client).await, before);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_declared_by_a_partitioned_table_moves_on_18_and_is_refused_before() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY);
             INSERT INTO accounts SELECT generate_series(1, 50);
             CREATE TABLE visits (id int NOT NULL, account_id int NOT NULL REFERENCES accounts, at date NOT NULL,
                                  PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE visits_2024 PARTITION OF visits FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             INSERT INTO visits SELECT g, g % 50 + 1, date '2024-01-01' + g % 700 FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let version: i32 = one(&client, "SELECT current_setting('server_version_num')::int").await;
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0305_visits",
        "ALTER TABLE visits ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    if version < 180000 {
        assert_eq!(run.code, 2, "{}", run.stderr);
        let plan = pgshift_default_engine(&url, &["plan", &path]).await;
        assert!(
            plan.stdout.contains("before Postgres 18"),
            "{}",
            plan.stdout
        );
        return;
    }
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fk = texts(
        &client,
        "SELECT conrelid::regclass || ' ' || confrelid::regclass || ' ' || convalidated FROM pg_constraint
          WHERE contype = 'f' AND conparentid = 0 AND connamespace = 'public'::regnamespace ORDER BY 1",
    )
    .await;
    assert_eq!(fk, ["visits accounts true"]);
    let refused = client
        .batch_execute("INSERT INTO visits VALUES (5000, 999, '2025-03-01')")
        .await;
    assert!(refused.is_err(), "the key holds on the new tree");
}

/// The same write to `ledger` and its control: new ids in every range,
/// amounts changed, rows deleted.
fn ledger_write(i: i64) -> String {
    let write = match i % 3 {
        // New ids in the hashed low range (below 1), the high range, the default.
        0 => format!(
            "INSERT INTO {{t}} VALUES ({}, {i})",
            [-i, 50_000 + i, 500_000 + i][(i % 9 / 3) as usize]
        ),
        1 => format!(
            "UPDATE {{t}} SET amount = amount + 1 WHERE id = {}",
            (i * 7) % 30_000 + 1
        ),
        _ => format!("DELETE FROM {{t}} WHERE id = {}", (i * 11) % 30_000 + 1),
    };
    [
        write.replace("{t}", "ledger"),
        write.replace("{t}", "ledger_control"),
    ]
    .join(";\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_key_itself_widens_with_every_bound_and_hash_partition_kept() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE ledger (id int PRIMARY KEY, amount int) PARTITION BY RANGE (id);
             CREATE TABLE ledger_low PARTITION OF ledger FOR VALUES FROM (MINVALUE) TO (10000) PARTITION BY HASH (id);
             CREATE TABLE ledger_low_0 PARTITION OF ledger_low FOR VALUES WITH (MODULUS 2, REMAINDER 0);
             CREATE TABLE ledger_low_1 PARTITION OF ledger_low FOR VALUES WITH (MODULUS 2, REMAINDER 1);
             CREATE TABLE ledger_high PARTITION OF ledger FOR VALUES FROM (10000) TO (100000);
             CREATE TABLE ledger_rest PARTITION OF ledger DEFAULT;
             INSERT INTO ledger SELECT g, g FROM generate_series(1, 30000) g;
             CREATE TABLE ledger_control AS SELECT * FROM ledger;
             ANALYZE;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0306_ledger",
        "ALTER TABLE ledger ALTER COLUMN id TYPE bigint;\n",
    );
    let writer = Mirror::start(&url, ledger_write).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = pgshift_default_engine(
        &url,
        &["apply", &path, "--batch-size", "2000", "--no-cutover"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cut = pgshift(&url, &["cutover", "0306_ledger"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let bounds = texts(
        &client,
        "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_partition_tree('ledger') t
           JOIN pg_class c ON c.oid = t.relid WHERE t.level > 0 ORDER BY 1",
    )
    .await;
    assert_eq!(
        bounds,
        [
            "ledger_high FOR VALUES FROM ('10000') TO ('100000')",
            "ledger_low FOR VALUES FROM (MINVALUE) TO ('10000')",
            "ledger_low_0 FOR VALUES WITH (modulus 2, remainder 0)",
            "ledger_low_1 FOR VALUES WITH (modulus 2, remainder 1)",
            "ledger_rest DEFAULT",
        ]
    );
    client
        .batch_execute("ALTER TABLE ledger_control ALTER COLUMN id TYPE bigint")
        .await
        .unwrap();
    let diff = texts(
        &client,
        "(SELECT l::text FROM ledger l EXCEPT SELECT c::text FROM ledger_control c)
         UNION ALL (SELECT c::text FROM ledger_control c EXCEPT SELECT l::text FROM ledger l) LIMIT 5",
    )
    .await;
    assert!(diff.is_empty(), "{diff:?}");
    // Each row where routing puts it now: the copy wrote each leaf's rows
    // into the same leaf's copy, so a hash that differed at the new width
    // would show here.
    let misrouted: i64 = one(
        &client,
        "SELECT count(*) FROM ledger WHERE id < 10000 AND NOT satisfies_hash_partition(
             'ledger_low'::regclass, 2, CASE tableoid WHEN 'ledger_low_0'::regclass THEN 0 ELSE 1 END, id)",
    )
    .await;
    assert_eq!(misrouted, 0);
    let big: i64 = 5_000_000_000;
    client
        .execute("INSERT INTO ledger VALUES ($1, 1)", &[&big])
        .await
        .unwrap();
    let at: String = one(
        &client,
        "SELECT tableoid::regclass::text FROM ledger WHERE id = 5000000000",
    )
    .await;
    assert_eq!(at, "ledger_rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_key_and_an_index_of_one_leaf_move_with_the_tree_and_rollback_mid_copy_leaves_nothing(
) {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE jobs (id serial, at date NOT NULL, state text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE jobs_2024 PARTITION OF jobs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE jobs_2025 PARTITION OF jobs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             CREATE INDEX jobs_2024_state ON jobs_2024 (state);
             INSERT INTO jobs (at, state) SELECT date '2024-01-01' + g % 700, 'queued' FROM generate_series(1, 20000) g;
             ANALYZE;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let shape = "SELECT c.relname || ' ' || ic.relname FROM pg_partition_tree('jobs') t JOIN pg_class c ON c.oid = t.relid
                   JOIN pg_index i ON i.indrelid = c.oid JOIN pg_class ic ON ic.oid = i.indexrelid ORDER BY 1";
    let indexes = texts(&client, shape).await;
    assert!(
        indexes.contains(&"jobs_2024 jobs_2024_state".to_string()),
        "{indexes:?}"
    );
    let sql = "ALTER TABLE jobs ALTER COLUMN id TYPE bigint;\n";

    // Rolled back in the middle of the copy: nothing of pgshift's is left.
    let (_dir, path) = migration("0307_jobs", sql);
    kill_apply_mid_copy(&client, &url, &path, "100", 300).await;
    let back = pgshift(&url, &["rollback", "0307_jobs"]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert_eq!(schema_dump(&client).await, before);
    assert_eq!(texts(&client, shape).await, indexes);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());

    // Then all the way: the serial's sequence is widened with its column and
    // still fills it; the index of one leaf is there under its name.
    let (_dir, path) = migration("0308_jobs", sql);
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(texts(&client, shape).await, indexes);
    let seq: String = one(
        &client,
        "SELECT data_type::text FROM pg_sequences WHERE sequencename = 'jobs_id_seq'",
    )
    .await;
    assert_eq!(seq, "bigint");
    client
        .batch_execute("SELECT setval('jobs_id_seq', 3000000000); INSERT INTO jobs (at, state) VALUES ('2025-05-05', 'late')")
        .await
        .unwrap();
    let id: i64 = one(&client, "SELECT id FROM jobs WHERE state = 'late'").await;
    assert_eq!(id, 3_000_000_001);
    let fin = pgshift(&url, &["finalize", "0308_jobs", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_key_of_a_partitioned_table_keeps_its_identity_where_postgres_has_one() {
    let (cluster, client) = primary().await;
    let version: i32 = one(&client, "SELECT current_setting('server_version_num')::int").await;
    // Identity columns on partitioned tables came with Postgres 17.
    if version < 170000 {
        return;
    }
    client
        .batch_execute(
            "CREATE TABLE tickets (id int GENERATED BY DEFAULT AS IDENTITY, at date NOT NULL, PRIMARY KEY (id, at))
                 PARTITION BY RANGE (at);
             CREATE TABLE tickets_2024 PARTITION OF tickets FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE tickets_2025 PARTITION OF tickets FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             INSERT INTO tickets (at) SELECT date '2024-01-01' + g % 700 FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration(
        "0309_tickets",
        "ALTER TABLE tickets ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let identity = texts(
        &client,
        "SELECT c.relname || ' ' || a.attidentity::text || ' ' || format_type(a.atttypid, a.atttypmod)
           FROM pg_partition_tree('tickets') t JOIN pg_class c ON c.oid = t.relid
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id' ORDER BY 1",
    )
    .await;
    assert_eq!(
        identity,
        [
            "tickets d bigint",
            "tickets_2024 d bigint",
            "tickets_2025 d bigint"
        ]
    );
    // The identity goes on from where it stood, on the root and on a partition.
    client
        .batch_execute(
            "INSERT INTO tickets (at) VALUES ('2025-02-02'); INSERT INTO tickets_2024 (at) VALUES ('2024-02-02');",
        )
        .await
        .unwrap();
    let ids = texts(
        &client,
        "SELECT id::text FROM tickets WHERE id > 2000 ORDER BY 1",
    )
    .await;
    assert_eq!(ids, ["2001", "2002"]);
}
