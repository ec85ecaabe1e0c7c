//! Rollback after cutover: the original columns come back with every write.

use std::time::Duration;

use crate::support::*;

const MIGRATION: &str = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\nALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cutover_keeps_every_write_and_restores_the_schema() {
    let (cluster, client) = incident_primary(20_000).await;
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    let (_dir, path) = migration("0010_rb_cut", MIGRATION);

    let writer = Writer::start(&url).await;
    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Inserts, updates and deletes after cutover, then roll back under writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rb = pgshift(&url, &["--format", "json", "rollback", "0010_rb_cut"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = writer.stop().await;
    assert_eq!(rb.code, 0, "{}\n{}", rb.stdout, rb.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let json: serde_json::Value = serde_json::from_str(&rb.stdout).unwrap();
    assert_eq!(json["phase"], "rolled_back");

    assert_matches_control(&client).await;
    let after = schema_dump(&client).await;
    // pgshift's state functions are not part of the user's schema.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("function pgshift."))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    // The sequence kept counting past the rows written during the migration.
    let id: i32 = client
        .query_one(
            "INSERT INTO scripts (account_id) VALUES (1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let max: i32 = client
        .query_one("SELECT max(id) FROM scripts_control", &[])
        .await
        .unwrap()
        .get(0);
    assert!(id > max);
    let again = pgshift(&url, &["rollback", "0010_rb_cut"]).await;
    assert_eq!(
        again.code, 0,
        "a second rollback is harmless: {}",
        again.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_refuses_when_new_ids_no_longer_fit_and_changes_nothing() {
    let (cluster, client) = incident_primary(2_000).await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0011_misfit", MIGRATION);
    let run = pgshift(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute("SELECT setval('scripts_id_seq', 2147483650); INSERT INTO scripts (account_id) VALUES (1);")
        .await
        .unwrap();
    let before = schema_dump(&client).await;
    let rb = pgshift(&url, &["rollback", "0011_misfit"]).await;
    assert_eq!(rb.code, 1, "{}", rb.stderr);
    assert!(
        rb.stderr
            .contains("1 rows of scripts.id hold values that do not fit"),
        "{}",
        rb.stderr
    );
    assert!(rb.stderr.contains("2147483651"), "{}", rb.stderr);
    assert_eq!(schema_dump(&client).await, before);
    let phase: String = client
        .query_one("SELECT phase FROM pgshift.migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "cut_over");
}
