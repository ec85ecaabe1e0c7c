//! Every object the user had comes out of a migration under its own name,
//! with its comment: after apply + finalize and after a rollback, with both
//! engines, on every Postgres version (18 names NOT NULL constraints too).

use crate::support::*;

const MIGRATION: &str = "ALTER TABLE script_runs ALTER COLUMN script_id TYPE bigint;
ALTER TABLE scripts ALTER COLUMN id TYPE bigint;
ALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;
";

/// Names (and comments) of the constraints, indexes, triggers, sequences,
/// views and columns of schema public.
async fn names(client: &tokio_postgres::Client) -> Vec<String> {
    texts(
        client,
        "SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || contype::text
                    || coalesce(' -- ' || obj_description(oid, 'pg_constraint'), '')
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'relation ' || relkind::text || ' ' || relname || coalesce(' -- ' || obj_description(oid, 'pg_class'), '')
               FROM pg_class WHERE relnamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'column ' || attrelid::regclass || '.' || attname || coalesce(' -- ' || col_description(attrelid, attnum), '')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
             ORDER BY 1",
    )
    .await
}

async fn with_comments(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "COMMENT ON TABLE scripts IS 'every script';
             COMMENT ON COLUMN scripts.id IS 'the key';
             COMMENT ON CONSTRAINT scripts_pkey ON scripts IS 'the primary key';
             COMMENT ON INDEX scripts_account_id_idx IS 'lookups by account';
             ALTER TABLE scripts ADD CONSTRAINT scripts_name_present CHECK (name IS NOT NULL) NOT VALID;",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_engine_keeps_every_name_through_finalize_and_rollback() {
    keeps_every_name("update").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_engine_keeps_every_name_through_finalize_and_rollback() {
    keeps_every_name("copy").await;
}

async fn keeps_every_name(engine: &str) {
    {
        for end in ["finalize", "rollback"] {
            let (cluster, client) = incident_primary(2_000).await;
            with_comments(&client).await;
            let url = cluster.url("app");
            let before = names(&client).await;
            let name = format!("0300_names_{engine}_{end}");
            let (_dir, path) = migration(&name, MIGRATION);
            let run = pgshift(&url, &["apply", &path, "--engine", engine]).await;
            assert_eq!(run.code, 0, "{engine}: {}", run.stderr);
            // From cutover on, not only after finalize: the NOT NULL
            // constraints (Postgres 18 names them) carry their names.
            let applied = names(&client).await;
            let not_null: Vec<&String> = before
                .iter()
                .filter(|n| n.starts_with("constraint ") && n.ends_with(" n"))
                .filter(|n| !applied.contains(n))
                .collect();
            assert!(
                not_null.is_empty(),
                "{engine} after apply: lost {not_null:#?}"
            );
            let run = match end {
                "finalize" => pgshift(&url, &["finalize", &name, "--yes"]).await,
                _ => pgshift(&url, &["rollback", &name]).await,
            };
            assert_eq!(run.code, 0, "{engine} {end}: {}", run.stderr);
            let after = names(&client).await;
            let lost: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
            let gained: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
            assert!(
                lost.is_empty() && gained.is_empty(),
                "{engine} then {end}: lost {lost:#?}, gained {gained:#?}"
            );
        }
    }
}

/// The table's constraints (name, validated, definition), its columns'
/// generation kind and default: what NOT VALID constraints and generated
/// columns must come out of a migration with.
async fn constraints_and_columns(client: &tokio_postgres::Client) -> Vec<String> {
    texts(
        client,
        "SELECT conname || ' ' || convalidated || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid = 'things'::regclass
             UNION ALL
             SELECT attname || ' generated=' || attgenerated::text || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = 'things'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'note'
             ORDER BY 1",
    )
    .await
}

/// Regression: Postgres checks a NOT VALID constraint on every updated row,
/// so the update engine's backfill stopped at a row that broke one; and on
/// 18 `LIKE` made a NOT VALID NOT NULL valid on the copy, whose first batch
/// then failed on a NULL. On 18 also a virtual generated column and a
/// `uuidv7()` default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_valid_constraints_stay_not_valid_and_generated_columns_stay_generated() {
    let (cluster, client) = primary().await;
    let pg18 = cluster.major() >= 18;
    client
        .batch_execute(&format!(
            "CREATE TABLE things (
                 id int PRIMARY KEY,
                 code int,
                 twice int GENERATED ALWAYS AS (code * 2) {},
                 u uuid DEFAULT {},
                 note text);
             INSERT INTO things (id, code, note)
                 SELECT g, CASE WHEN g % 100 = 0 THEN NULL WHEN g % 97 = 0 THEN -g ELSE g END, 'n' || g
                 FROM generate_series(1, 3000) g;
             ALTER TABLE things ADD CONSTRAINT things_code_positive CHECK (code > 0) NOT VALID;
             {}",
            if pg18 { "VIRTUAL" } else { "STORED" },
            if pg18 { "uuidv7()" } else { "gen_random_uuid()" },
            if pg18 {
                "ALTER TABLE things ADD CONSTRAINT things_code_present NOT NULL code NOT VALID;"
            } else {
                ""
            }
        ))
        .await
        .unwrap();
    let url = cluster.url("app");
    let before = constraints_and_columns(&client).await;
    assert!(
        before
            .iter()
            .any(|c| c.starts_with("things_code_positive false")),
        "{before:#?}"
    );
    let (_dir, path) = migration(
        "0301_things",
        "ALTER TABLE things ALTER COLUMN id TYPE bigint;\nALTER TABLE things ALTER COLUMN note TYPE varchar(40);\n",
    );

    // The update engine warns, and stops at the first row that breaks one,
    // naming it; nothing is lost and a rollback undoes it.
    let (_widen_dir, widen) = migration(
        "0302_things_id",
        "ALTER TABLE things ALTER COLUMN id TYPE bigint;\n",
    );
    let run = pgshift(&url, &["plan", &widen, "--engine", "update"]).await;
    assert!(
        run.stdout.contains("things_code_positive on things")
            && run
                .stdout
                .contains("the update engine's backfill updates every row"),
        "{}",
        run.stdout
    );
    let run = pgshift(&url, &["apply", "--engine", "update", &widen]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("a row of things breaks the NOT VALID constraint things_code_positive")
            && run.stderr.contains("Failing row contains (97, -97"),
        "{}",
        run.stderr
    );
    let run = pgshift(&url, &["rollback", "0302_things_id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        constraints_and_columns(&client).await,
        before,
        "after the update engine's rollback"
    );

    for end in ["rollback", "finalize"] {
        // auto: the copy engine
        let run = pgshift_default_engine(&url, &["apply", &path]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            constraints_and_columns(&client).await,
            before,
            "after apply"
        );
        // The constraints hold for new rows, as before.
        let refused = client
            .execute("INSERT INTO things (id, code) VALUES (5000, -5)", &[])
            .await;
        assert!(
            refused.is_err(),
            "a row breaking the NOT VALID check went in"
        );
        client
            .execute(
                &format!(
                    "INSERT INTO things (id, code) VALUES ({}, 7)",
                    if end == "rollback" { 6001 } else { 6002 }
                ),
                &[],
            )
            .await
            .unwrap();
        let run = match end {
            "finalize" => pgshift(&url, &["finalize", "0301_things", "--yes"]).await,
            _ => pgshift(&url, &["rollback", "0301_things"]).await,
        };
        assert_eq!(run.code, 0, "{end}: {}", run.stderr);
        assert_eq!(
            constraints_and_columns(&client).await,
            before,
            "after {end}"
        );
    }
    let (kept, broken, generated): (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE id IN (6001, 6002)), count(*) FILTER (WHERE code <= 0 OR code IS NULL),
                        count(*) FILTER (WHERE twice = code * 2)
                   FROM things",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(kept, 2, "the writes after each cutover are kept");
    assert_eq!(
        broken,
        30 + 30,
        "the rows that break the NOT VALID constraints are kept as they were"
    );
    assert_eq!(generated, 3000 - 30 + 2);
}
