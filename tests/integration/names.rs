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
    client
        .query(
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
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
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
