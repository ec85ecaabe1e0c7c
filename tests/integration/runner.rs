//! A folder of ordinary migrations, each statement in its online form, on a
//! table under writes, with no lock held long enough to queue the application.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const FILES: &[(&str, &str)] = &[
    ("0001_index.sql", "CREATE INDEX accounts_name_idx ON accounts (name);"),
    ("0002_fk.sql", "ALTER TABLE orders ADD CONSTRAINT orders_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id);"),
    ("0003_not_null.sql", "ALTER TABLE orders ALTER COLUMN note SET NOT NULL;"),
    ("0004_unique.sql", "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email);"),
    ("0005_token.sql", "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();\nCREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz DEFAULT now());"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_applies_online_under_writes_and_records_each_file() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, name text, email text);
             INSERT INTO accounts SELECT g, 'a' || g, 'a' || g || '@example.com' FROM generate_series(1, 50000) g;
             CREATE TABLE orders (id bigserial PRIMARY KEY, account_id bigint, note text);
             INSERT INTO orders (account_id, note) SELECT 1 + g % 50000, 'n' FROM generate_series(1, 100000) g;",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in FILES {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    let folder = dir.path().to_str().unwrap().to_string();

    // The plan shows the online forms.
    let plan = pgshift(&url, &["plan", &format!("{folder}/0003_not_null.sql")]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("CHECK (note IS NOT NULL) NOT VALID"),
        "{}",
        plan.stdout
    );

    // A prober writes to both tables and records its longest wait.
    let worst = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = connect(&url).await;
    let (w, s) = (worst.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut i: i64 = 0;
        while !s.load(Ordering::SeqCst) {
            i += 1;
            let t = Instant::now();
            prober
                .execute(
                    "UPDATE orders SET note = 'p' WHERE id = $1",
                    &[&(1 + i % 100_000)],
                )
                .await
                .unwrap();
            prober
                .execute(
                    "INSERT INTO orders (account_id, note) VALUES ($1, 'p')",
                    &[&(1 + i % 50_000)],
                )
                .await
                .unwrap();
            w.fetch_max(t.elapsed().as_millis() as u64, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let run = pgshift(&url, &["apply", &folder, "--lock-timeout", "300ms"]).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let worst = worst.load(Ordering::SeqCst);
    assert!(worst < 300 + 500, "the application waited {worst} ms");

    let q = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(
        q("SELECT pg_get_indexdef('accounts_name_idx'::regclass)").await,
        "CREATE INDEX accounts_name_idx ON public.accounts USING btree (name)"
    );
    assert_eq!(
        q("SELECT pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint WHERE conname = 'orders_account_fk'").await,
        "FOREIGN KEY (account_id) REFERENCES accounts(id) true"
    );
    assert_eq!(q("SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'note'").await, "true");
    assert_eq!(q("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'accounts_email_key'").await, "UNIQUE (email)");
    let nulls: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE token IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0, "every row got its own token");
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT token) - count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 0, "the volatile default was evaluated per row");
    assert_eq!(leftovers(&client).await, Vec::<String>::new());

    let status = pgshift(&url, &["--format", "json", "status", &folder]).await;
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let states: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied"; 5]);

    // Running it again does nothing; a changed applied file is refused with exit 2.
    let again = pgshift(&url, &["apply", &folder]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("nothing pending"), "{}", again.stdout);
    std::fs::write(
        dir.path().join("0001_index.sql"),
        "CREATE INDEX accounts_email_idx ON accounts (email);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("0006_more.sql"),
        "ALTER TABLE audit ADD COLUMN who text;",
    )
    .unwrap();
    let changed = pgshift(&url, &["apply", &folder]).await;
    assert_eq!(changed.code, 2, "{}", changed.stderr);
    assert!(
        changed
            .stderr
            .contains("0001_index.sql was applied but has changed"),
        "{}",
        changed.stderr
    );
    let who: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'audit'::regclass AND attname = 'who')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!who, "nothing ran when one file was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_would_rewrite_or_cannot_be_parsed_are_refused_with_file_and_line() {
    let (cluster, _client) = primary().await;
    let url = cluster.url("app");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001.sql"),
        "CREATE TABLE t (id bigint PRIMARY KEY, v int);\n\nALTER TABLE t ALTER COLUMN v TYPE text;",
    )
    .unwrap();
    let run = pgshift(&url, &["apply", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("0001.sql:3") && run.stderr.contains("rewrites the table"),
        "{}",
        run.stderr
    );
    std::fs::write(
        dir.path().join("0001.sql"),
        "CREATE TABLE t (id bigint PRIMARY KEY, v int);\nALTER SEQUENCE t_seq AS bigint;",
    )
    .unwrap();
    let run = pgshift(&url, &["apply", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("0001.sql:2") && run.stderr.contains("--allow-unparsed"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_its_own_transaction_runs_as_written_and_atomically() {
    let (cluster, client) = primary().await;
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v int)")
        .await
        .unwrap();
    let url = cluster.url("app");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap().to_string();
    // The second statement fails: nothing of the file may stay.
    std::fs::write(
        dir.path().join("0001.sql"),
        "BEGIN;\nALTER TABLE t ADD COLUMN w int;\nALTER TABLE t ADD COLUMN v int;\nCOMMIT;\n",
    )
    .unwrap();
    let run = pgshift(&url, &["apply", &folder]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let w: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'w')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!w, "the failed transaction left a column behind");
    std::fs::write(
        dir.path().join("0001.sql"),
        "BEGIN;\nALTER TABLE t ADD COLUMN w int;\nCREATE INDEX t_w ON t (w);\nCOMMIT;\n",
    )
    .unwrap();
    let plan = pgshift(&url, &["plan", &format!("{folder}/0001.sql")]).await;
    assert!(
        plan.stdout.contains("explicit transaction"),
        "{}",
        plan.stdout
    );
    let run = pgshift(&url, &["apply", &folder]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ix: bool = client
        .query_one("SELECT to_regclass('t_w') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ix);
    std::fs::write(
        dir.path().join("0002.sql"),
        "BEGIN;\nCREATE INDEX CONCURRENTLY t_v ON t (v);\nCOMMIT;\n",
    )
    .unwrap();
    let run = pgshift(&url, &["apply", &folder]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("0002.sql:2") && run.stderr.contains("CONCURRENTLY cannot run inside"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_ordinary_file_applies_through_the_runner() {
    let (cluster, client) = primary().await;
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;")
        .await
        .unwrap();
    let url = cluster.url("app");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("0001_index.sql");
    std::fs::write(&file, "CREATE INDEX t_v ON t (v);").unwrap();
    let path = file.to_str().unwrap();
    let run = pgshift(&url, &["apply", path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let valid: bool = client
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_v'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(valid, "built concurrently and valid");
    let again = pgshift(&url, &["apply", path]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("nothing pending"), "{}", again.stdout);
}
