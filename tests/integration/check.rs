//! The query-plan regression check: the union-view incident is caught by
//! both methods, plain lookups and joins on the key are not flagged.

use std::time::Duration;

use crate::support::*;

const WORKLOAD: &str = "
SELECT name FROM all_scripts WHERE id = $1;
SELECT name, body FROM scripts WHERE id = $1;
SELECT s.name, r.status FROM scripts s JOIN script_runs r ON r.script_id = s.id WHERE s.id = $1;
";
const ONLY_SCRIPTS: &str = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n";

fn verdicts(json: &serde_json::Value) -> Vec<bool> {
    json["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["regressed"].as_bool().unwrap())
        .collect()
}

/// `pgshift check` of `migration` as JSON, on the standby once it has
/// replayed the migration's `ready`.
async fn check_on_standby(url: &str, standby_url: &str, migration: &str, queries: &str) -> Run {
    let standby = connect(standby_url).await;
    assert!(
        wait_until(
            &standby,
            "SELECT phase = 'ready' FROM pgshift.migrations",
            Duration::from_secs(30)
        )
        .await
    );
    pgshift(
        url,
        &[
            "--replica-url",
            standby_url,
            "--format",
            "json",
            "check",
            migration,
            "--queries",
            queries,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsal_on_a_writable_clone_flags_the_union_view_and_leaves_nothing_behind() {
    let (cluster, client) = incident_primary(100_000).await;
    let url = cluster.url("app");
    let (dir, path) = migration("0030_check", ONLY_SCRIPTS);
    let queries = dir.path().join("workload.sql");
    std::fs::write(&queries, WORKLOAD).unwrap();
    let before = schema_dump(&client).await;

    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &url,
            "--format",
            "json",
            "check",
            &path,
            "--queries",
            queries.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["method"], "rehearsal");
    assert_eq!(verdicts(&json), [true, false, false], "{}", run.stdout);
    assert_eq!(json["regressions"], 1);
    let reasons = json["queries"][0]["reasons"].to_string();
    assert!(
        reasons.contains("archived_scripts: an index scan became a sequential scan"),
        "{reasons}"
    );
    assert!(json["queries"][0]["suggestion"]
        .as_str()
        .unwrap()
        .contains("archived_scripts"));
    assert_eq!(
        schema_dump(&client).await,
        before,
        "the rehearsal left something behind"
    );

    let md = pgshift(
        &url,
        &[
            "--replica-url",
            &url,
            "--format",
            "markdown",
            "check",
            &path,
            "--queries",
            queries.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(md.code, 1);
    assert!(
        md.stdout.contains("<th>before</th><th>after</th>"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains("Index Scan using archived_scripts_pkey on archived_scripts"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("Seq Scan on archived_scripts"),
        "{}",
        md.stdout
    );

    // Custom plans, with values sampled from the compared columns, see it too.
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &url,
            "--format",
            "json",
            "check",
            &path,
            "--queries",
            queries.to_str().unwrap(),
            "--custom-plans",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(verdicts(&json), [true, false, false], "{}", run.stdout);
    let before = serde_json::to_string(&json["queries"][1]["before"]["plan"]).unwrap();
    assert!(
        !before.contains("$1") && before.contains("Index Cond"),
        "a custom plan has the sampled value: {before}"
    );

    // Widening the sibling too makes the same workload pass.
    let (_d2, both) = migration("0031_both", "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\nALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;");
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &url,
            "--format",
            "json",
            "check",
            &both,
            "--queries",
            queries.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_hot_standby_the_shadow_method_flags_it_and_apply_stops_at_ready() {
    let (cluster, client) = incident_primary(100_000).await;
    let replica = cluster.start_replica().unwrap();
    let url = cluster.url("app");
    let standby_url = replica.url("app");
    let (dir, path) = migration("0032_gate", ONLY_SCRIPTS);
    let queries = dir.path().join("workload.sql");
    std::fs::write(&queries, WORKLOAD).unwrap();
    let q = queries.to_str().unwrap();

    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &standby_url,
            "apply",
            &path,
            "--queries",
            q,
        ],
    )
    .await;
    assert_eq!(run.code, 1, "the gate stops the cutover: {}", run.stderr);
    assert!(
        run.stderr.contains("stopped at ready: 1 of 3 queries"),
        "{}\n{}",
        run.stderr,
        run.stdout
    );
    assert!(run.stdout.contains("REGRESSED"), "{}", run.stdout);
    let phase: String = client
        .query_one("SELECT phase FROM pgshift.migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "ready");

    let run = check_on_standby(&url, &standby_url, "0032_gate", q).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["method"], "shadow");
    assert_eq!(verdicts(&json), [true, false, false], "{}", run.stdout);
    let after = serde_json::to_string(&json["queries"][1]["after"]["plan"]).unwrap();
    assert!(
        after.contains("pgshift_new_scripts_pkey"),
        "the rewritten lookup uses the shadow index: {after}"
    );

    // cutover runs the check again, and --accept-plan-changes overrides it.
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &standby_url,
            "cutover",
            "0032_gate",
            "--queries",
            q,
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = pgshift(
        &url,
        &[
            "--replica-url",
            &standby_url,
            "cutover",
            "0032_gate",
            "--queries",
            q,
            "--accept-plan-changes",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_hot_standby_the_shadow_method_plans_the_update_engines_converted_columns_through_their_new_indexes(
) {
    let (cluster, client) = incident_primary(50_000).await;
    client
        .batch_execute(
            "CREATE INDEX scripts_created_at_idx ON scripts (created_at); ANALYZE scripts",
        )
        .await
        .unwrap();
    let replica = cluster.start_replica().unwrap();
    let url = cluster.url("app");
    let standby_url = replica.url("app");
    let (dir, path) = migration(
        "0033_gate_convert",
        "ALTER TABLE scripts ALTER COLUMN created_at TYPE timestamp;\n",
    );
    let queries = dir.path().join("workload.sql");
    // A lookup by key, and a range on the converted column with a value of
    // the old type (timestamp against timestamptz: one operator family, so
    // the new column's index still serves it).
    std::fs::write(
        &queries,
        "SELECT name FROM scripts WHERE id = $1;\nSELECT id FROM scripts WHERE created_at > now() - interval '1 second';\n",
    )
    .unwrap();
    let q = queries.to_str().unwrap();
    let run = pgshift(&url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = check_on_standby(&url, &standby_url, "0033_gate_convert", q).await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stderr);
    assert_eq!(json["method"], "shadow", "{}", run.stdout);
    assert_eq!(verdicts(&json), [false, false], "{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Planned on the shadow column of the new type, through its own index.
    let after = serde_json::to_string(&json["queries"][1]["after"]["plan"]).unwrap();
    assert!(
        after.contains("pgshift_new_scripts_created_at_idx")
            && after.contains("pgshift_new_created_at >"),
        "{after}"
    );
}
