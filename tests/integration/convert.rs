//! Column type changes other than integer widenings (issue 27): each one
//! applied online under concurrent writes must leave exactly what the
//! blocking `ALTER` leaves on a control copy that saw the same writes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::Client;

use crate::support::*;

/// Every example of the issue on `items`, and a widening mixed with a
/// catalog-only change on `tags` (which then goes through the copy too).
const CHANGES: &str = "\
ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb, ALTER COLUMN happened TYPE timestamptz, ALTER COLUMN title TYPE varchar(20);
ALTER TABLE items ALTER COLUMN price TYPE numeric(12,2), ALTER COLUMN amount SET DATA TYPE numeric(14,4);
ALTER TABLE items ALTER COLUMN feeling TYPE mood USING feeling::mood, ALTER COLUMN state TYPE text,
    ALTER COLUMN qty TYPE text, ALTER COLUMN ref TYPE uuid USING ref::uuid;
ALTER TABLE tags ALTER COLUMN id TYPE bigint, ALTER COLUMN label TYPE text;
";

const SCHEMA: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad', 'meh');
    CREATE TABLE items (
        id bigint PRIMARY KEY,
        body text,
        happened timestamp,
        title varchar(100) NOT NULL DEFAULT 'untitled',
        price int,
        amount numeric(10,2),
        feeling text,
        state mood,
        qty int,
        ref text
    );
    CREATE INDEX items_title ON items (title);
    CREATE UNIQUE INDEX items_ref ON items (ref);
    COMMENT ON COLUMN items.body IS 'the payload';
    INSERT INTO items
    SELECT g, format('{\"n\": %s, \"tags\": [\"a\", \"b\"]}', g), '2024-01-01'::timestamp + g * interval '37 minutes',
           't' || g, g, g / 7.0, CASE WHEN g % 2 = 0 THEN 'happy' ELSE 'sad' END, 'meh', g * 3,
           format('00000000-0000-0000-0000-%s', lpad(g::text, 12, '0'))
    FROM generate_series(1, 20000) g;
    CREATE TABLE tags (id int PRIMARY KEY, label varchar(50));
    INSERT INTO tags SELECT g, 'label ' || g FROM generate_series(1, 2000) g;
    CREATE TABLE items_control AS SELECT * FROM items;
    ALTER TABLE items_control ADD PRIMARY KEY (id);
    CREATE TABLE tags_control AS SELECT * FROM tags;
    ALTER TABLE tags_control ADD PRIMARY KEY (id);
    ANALYZE;
";

/// A primary whose database converts timestamps in a zone other than UTC,
/// with the schema above, and a client on it (which has that zone too).
async fn typed_primary() -> (pgshift::testkit::Cluster, Client) {
    let (cluster, client) = primary().await;
    client
        .batch_execute("ALTER DATABASE app SET timezone TO 'Asia/Kolkata'")
        .await
        .unwrap();
    drop(client);
    let client = connect(&cluster.url("app")).await;
    client.batch_execute(SCHEMA).await.unwrap();
    (cluster, client)
}

/// The same rows written into a table and its control copy in one
/// transaction. Values written after cutover take the new type directly, so
/// they fit both (an amount of 2 decimals, say): the control copy keeps the
/// old types until the end.
fn mirrored_write(i: i64) -> String {
    let k = (i * 7) % 20_000 + 1;
    let gone = (i * 13) % 20_000 + 1;
    let write = match i % 3 {
        0 => format!(
            "INSERT INTO {{t}} (id, body, happened, title, price, amount, feeling, state, qty, ref) VALUES ({id}, '{{\"w\": {i}}}', '2024-03-10 01:{m:02}:00', 'w{i}', '{i}', '{i}.25', \
             'sad', 'meh', '{i}', '00000000-0000-0000-0001-{i:012}')",
            id = 1_000_000 + i,
            m = i % 60
        ),
        1 => format!(
            "UPDATE {{t}} SET body = '[{i}, null]', title = 'u{i}', price = '{i}', happened = '2024-06-01 12:00', \
             feeling = 'happy', state = 'sad' WHERE id = {k}"
        ),
        _ => format!("DELETE FROM {{t}} WHERE id = {gone}"),
    };
    let tag = format!(
        "UPDATE {{t}} SET label = 'seen {i}' WHERE id = {}",
        i % 2000 + 1
    );
    [
        write.replace("{t}", "items"),
        write.replace("{t}", "items_control"),
        tag.replace("{t}", "tags"),
        tag.replace("{t}", "tags_control"),
    ]
    .join(";\n")
}

/// Column names and types of `table`, in order.
async fn types(client: &Client, table: &str) -> String {
    types_ordered(client, table, "attnum").await
}

async fn types_ordered(client: &Client, table: &str, order: &str) -> String {
    one(
        client,
        &format!(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY {order})
               FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
        ),
    )
    .await
}

/// A digest of every row of `table`, the columns `cols` as Postgres prints them.
async fn rows(client: &Client, table: &str, cols: &str) -> String {
    one(
        client,
        &format!("SELECT md5(string_agg(ROW({cols})::text, E'\\n' ORDER BY id)) FROM {table} t"),
    )
    .await
}

/// Runs the blocking `ALTER`s of `CHANGES` on the control copies, in a
/// session with the same settings, and asserts each table now holds what
/// its control holds: column types, and every row as Postgres prints it.
async fn assert_matches_the_blocking_alter(client: &Client) {
    assert_matches(client, false).await
}

/// The same, column by column by name: the update engine adds the new
/// columns at the end of the table, so their order differs.
async fn assert_matches_by_name(client: &Client) {
    assert_matches(client, true).await
}

async fn assert_matches(client: &Client, by_name: bool) {
    let control = CHANGES
        .replace("TABLE items ", "TABLE items_control ")
        .replace("TABLE tags ", "TABLE tags_control ");
    client.batch_execute(&control).await.unwrap();
    for (table, control) in [("items", "items_control"), ("tags", "tags_control")] {
        let order = if by_name { "attname" } else { "attnum" };
        assert_eq!(
            types_ordered(client, table, order).await,
            types_ordered(client, control, order).await
        );
        // The control's columns, in the control's order.
        let cols: String = one(
            client,
            &format!(
                "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                  WHERE attrelid = '{control}'::regclass AND attnum > 0 AND NOT attisdropped"
            ),
        )
        .await;
        let diff = client
            .query(
                &format!(
                    "(SELECT 'only in {table}', ROW({cols})::text FROM {table} EXCEPT SELECT 'only in {table}', ROW({cols})::text FROM {control})
                     UNION ALL (SELECT 'only in {control}', ROW({cols})::text FROM {control} EXCEPT SELECT 'only in {control}', ROW({cols})::text FROM {table})
                     ORDER BY 2 LIMIT 10"
                ),
                &[],
            )
            .await
            .unwrap();
        let diff: Vec<String> = diff
            .iter()
            .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        assert!(
            diff.is_empty(),
            "{table} differs from its control: {diff:#?}"
        );
        assert_eq!(
            rows(client, table, &cols).await,
            rows(client, control, &cols).await,
            "{table} differs from what the blocking ALTER made of {control}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_type_change_matches_the_blocking_alter_row_for_row() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0200_types", CHANGES);
    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["engine"], "copy", "{}", plan.stdout);
    assert_eq!(json["catalog_only"], false);
    let settings = json["conversion_settings"].to_string();
    assert!(settings.contains("Asia/Kolkata"), "{settings}");

    let writer = Mirror::start(&url, mirrored_write).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = pgshift_default_engine(&url, &["apply", &path, "--batch-size", "2000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = writer.ops.load(Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(ops > 50, "the writer barely ran ({ops} transactions)");

    // The blocking ALTER on the control copies, in a session with the same zone.
    assert_matches_the_blocking_alter(&client).await;
    let comment: Option<String> =
        one(&client, "SELECT col_description('items'::regclass, 2)").await;
    assert_eq!(comment.as_deref(), Some("the payload"));
    let default: String = one(
        &client,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'items'::regclass AND adnum = 4",
    )
    .await;
    assert_eq!(default, "'untitled'::character varying");

    let fin = pgshift(&url, &["finalize", "0200_types", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_only_changes_run_as_the_plain_alter_with_no_copy() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute("CREATE TABLE notes (id int PRIMARY KEY, short varchar(10), body varchar(40), n numeric(10,2));
                        INSERT INTO notes SELECT g, 's', 'b', g FROM generate_series(1, 1000) g;")
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0201_in_place",
        "ALTER TABLE notes ALTER COLUMN short TYPE varchar(200), ALTER COLUMN body TYPE text, ALTER COLUMN n TYPE numeric;\n",
    );
    let before: u32 = one(
        &client,
        "SELECT relfilenode FROM pg_class WHERE relname = 'notes'",
    )
    .await;
    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["catalog_only"], true, "{}", plan.stdout);
    let text = pgshift_default_engine(&url, &["plan", &path]).await;
    assert!(text.stdout.contains("catalog-only"), "{}", text.stdout);

    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("in place"), "{}", run.stdout);
    let after: u32 = one(
        &client,
        "SELECT relfilenode FROM pg_class WHERE relname = 'notes'",
    )
    .await;
    assert_eq!(before, after, "a catalog-only change rewrote the table");
    assert_eq!(
        types(&client, "notes").await,
        "id integer, short character varying(200), body text, n numeric"
    );
    let recorded: i64 = one(
        &client,
        "SELECT count(*) FROM pgshift.applied WHERE name = '0201_in_place'",
    )
    .await;
    assert_eq!(recorded, 1);
    // Nothing of the copy engine was made.
    let migrations: i64 = one(&client, "SELECT count(*) FROM pgshift.migrations").await;
    assert_eq!(migrations, 0);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_convert_is_named_by_key_before_cutover() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute("UPDATE items SET body = 'not json' WHERE id = 12345")
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0202_misfit",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb;\n",
    );
    // `plan --scan-values` finds it up front, reading every row.
    let scan =
        pgshift_default_engine(&url, &["--format", "json", "plan", &path, "--scan-values"]).await;
    assert_eq!(scan.code, 1, "{}", scan.stderr);
    let json: serde_json::Value = serde_json::from_str(&scan.stdout).unwrap();
    assert_eq!(
        json["value_check"]["misfits"][0]["key"], "id = 12345",
        "{}",
        scan.stdout
    );
    assert_eq!(
        json["value_check"]["rows_read"], 10000,
        "the batch before the misfit's"
    );
    let run = pgshift_default_engine(&url, &["apply", &path, "--batch-size", "1000"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("items with id = 12345")
            && run.stderr.contains("invalid input syntax for type json"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items").await.contains("body text"));

    // Fixed, it resumes; a bad value written after the copy is named by the
    // replay before the cutover swaps anything.
    client
        .batch_execute("UPDATE items SET body = '{}' WHERE id = 12345")
        .await
        .unwrap();
    let scan = pgshift_default_engine(&url, &["plan", &path, "--scan-values"]).await;
    assert_eq!(scan.code, 0, "{}", scan.stderr);
    assert!(
        scan.stdout.contains("20000 rows read and converted"),
        "{}",
        scan.stdout
    );
    let run = pgshift(&url, &["resume", "0202_misfit", "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute("UPDATE items SET body = '{broken' WHERE id = 777")
        .await
        .unwrap();
    let run = pgshift(&url, &["cutover", "0202_misfit"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("items with id = 777"), "{}", run.stderr);
    assert!(types(&client, "items").await.contains("body text"));

    let run = pgshift(&url, &["rollback", "0202_misfit"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cutover_converts_writes_back_or_refuses_without_a_way_back() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    // jsonb → text has a cast back: a write made after cutover comes back.
    let (_dir, path) = migration(
        "0203_back",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute(
            "UPDATE items SET body = '{\"after\": true}' WHERE id = 5;
                        INSERT INTO items (id, body, title) VALUES (99999999, '[1, 2]', 'late')",
        )
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0203_back"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(types(&client, "items").await.contains("body text"));
    let five: String = one(&client, "SELECT body FROM items WHERE id = 5").await;
    assert_eq!(five, "{\"after\": true}");
    let late: String = one(&client, "SELECT body FROM items WHERE id = 99999999").await;
    assert_eq!(late, "[1, 2]");

    // A value written after cutover that does not convert back stops the
    // rollback before it swaps anything; fixed, the rollback goes through.
    let (_dir, qty) = migration(
        "0206_qty_text",
        "ALTER TABLE items ALTER COLUMN qty TYPE text;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &qty]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute("UPDATE items SET qty = 'a dozen' WHERE id = 8")
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0206_qty_text"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("items with id = 8 (written after cutover) does not convert back"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items").await.contains("qty text"));
    client
        .batch_execute("UPDATE items SET qty = '12' WHERE id = 8")
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0206_qty_text"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let eight: i32 = one(&client, "SELECT qty FROM items WHERE id = 8").await;
    assert_eq!(eight, 12);

    // integer → interval has no cast back: the plan says so, and rollback
    // after cutover refuses and changes nothing.
    let (_dir2, path2) = migration(
        "0204_no_way_back",
        "ALTER TABLE items ALTER COLUMN qty TYPE interval USING make_interval(secs => qty);\n",
    );
    let plan = pgshift_default_engine(&url, &["plan", &path2]).await;
    assert!(plan.stdout.contains("no way back"), "{}", plan.stdout);
    let run = pgshift_default_engine(&url, &["apply", &path2]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = pgshift(&url, &["rollback", "0204_no_way_back"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no way to convert back"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items").await.contains("qty interval"));

    // Kept: finalize drops the original (a table takes one migration at a time).
    let run = pgshift(&url, &["finalize", "0204_no_way_back", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // With a pgshift:down annotation, the same change rolls back.
    let (_dir3, path3) = migration(
        "0205_down",
        "-- pgshift:down USING extract(epoch FROM price)::int\n\
         ALTER TABLE items ALTER COLUMN price TYPE interval USING make_interval(secs => price);\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &path3]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    client
        .batch_execute("UPDATE items SET price = interval '42 seconds' WHERE id = 6")
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0205_down"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let six: i32 = one(&client, "SELECT price FROM items WHERE id = 6").await;
    assert_eq!(six, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_pgshift_or_postgres_refuse_exit_2_and_change_nothing() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute("CREATE VIEW item_titles AS SELECT id, upper(feeling) AS loud FROM items")
        .await
        .unwrap();
    let before = schema_dump(&client).await;
    for (name, sql, says) in [
        (
            "0210_unknown",
            "ALTER TABLE items ALTER COLUMN body TYPE nosuchtype;",
            "nosuchtype",
        ),
        (
            "0211_no_cast",
            "ALTER TABLE items ALTER COLUMN happened TYPE integer;",
            "cannot be cast automatically",
        ),
        (
            "0212_view",
            "ALTER TABLE items ALTER COLUMN feeling TYPE integer USING length(feeling);",
            "its definition does not hold on the new column types: function upper(integer) does not exist",
        ),
        (
            "0216_default",
            "ALTER TABLE items ALTER COLUMN title TYPE integer USING length(title);",
            "default for column \"title\" cannot be cast automatically to type integer",
        ),
        (
            "0213_key",
            "ALTER TABLE items ALTER COLUMN id TYPE text;",
            "primary key",
        ),
        (
            "0214_using",
            "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING no_such_column::jsonb;",
            "no_such_column",
        ),
    ] {
        let (_dir, path) = migration(name, &format!("{sql}\n"));
        let run = pgshift_default_engine(&url, &["apply", &path]).await;
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        let plan = pgshift_default_engine(&url, &["plan", &path]).await;
        assert!(plan.stdout.contains(says), "{name}: {}", plan.stdout);
    }
    // The update engine converts a primary key only when widening
    // integers, and says which engine does.
    let (_dir, path) = migration(
        "0215_update",
        "ALTER TABLE items ALTER COLUMN id TYPE numeric(20,0);\n",
    );
    let run = pgshift(&url, &["apply", &path, "--engine", "update"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("update engine converts a primary key only when widening integers"),
        "{}",
        run.stderr
    );
    assert_eq!(
        schema_dump(&client).await,
        before,
        "a refused migration changed the schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_of_a_foreign_key_change_together_or_not_at_all() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, code text NOT NULL UNIQUE);
             CREATE TABLE orders (id int PRIMARY KEY, account_code text REFERENCES accounts (code) ON DELETE CASCADE);
             INSERT INTO accounts SELECT g, format('00000000-0000-0000-0000-%s', lpad(g::text, 12, '0')) FROM generate_series(1, 500) g;
             INSERT INTO orders SELECT g, (SELECT code FROM accounts WHERE id = g % 500 + 1) FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let (_dir, one_side) = migration(
        "0220_one_side",
        "ALTER TABLE accounts ALTER COLUMN code TYPE uuid USING code::uuid;\n",
    );
    let run = pgshift_default_engine(&url, &["plan", &one_side]).await;
    assert!(
        run.stdout.contains("orders_account_code_fkey")
            && run
                .stdout
                .contains("orders.account_code does not change to uuid"),
        "{}",
        run.stdout
    );
    let (_dir, both) = migration(
        "0221_both_sides",
        "ALTER TABLE accounts ALTER COLUMN code TYPE uuid USING code::uuid;\n\
         ALTER TABLE orders ALTER COLUMN account_code TYPE uuid USING account_code::uuid;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &both]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fk: String = one(
        &client,
        "SELECT pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint WHERE conname = 'orders_account_code_fkey'",
    )
    .await;
    assert_eq!(
        fk,
        "FOREIGN KEY (account_code) REFERENCES accounts(code) ON DELETE CASCADE true"
    );
    // The key holds on the new types: a cascade reaches the orders.
    client
        .batch_execute("DELETE FROM accounts WHERE id = 1")
        .await
        .unwrap();
    let orphans: i64 = one(
        &client,
        "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.code = o.account_code)",
    )
    .await;
    assert_eq!(orphans, 0);
    assert!(types(&client, "orders").await.contains("account_code uuid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_a_converting_copy_then_resume_converts_each_row_once() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0222_kill", CHANGES);
    let writer = Mirror::start(&url, mirrored_write).await;
    kill_apply_mid_copy(&client, &url, &path, "200", 1000).await;
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "backfilling");
    let resumed = pgshift(&url, &["resume", "0222_kill", "--batch-size", "5000"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    // A row copied twice would fail the primary key's build.
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert_matches_the_blocking_alter(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_changed_column_are_made_again_on_the_new_type_when_they_hold() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "CREATE TABLE archived_items (id bigint PRIMARY KEY, body text);
             INSERT INTO archived_items SELECT g, '{}' FROM generate_series(1, 100) g;
             CREATE VIEW all_bodies AS SELECT id, body FROM items UNION ALL SELECT id, body FROM archived_items;
             CREATE VIEW short_titles AS SELECT id, title FROM items WHERE id < 10;
             GRANT SELECT ON all_bodies TO PUBLIC;",
        )
        .await
        .unwrap();
    // One side of the union alone: the view would not hold, as Postgres says.
    let (_dir, one_branch) = migration(
        "0230_one_branch",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb;\n",
    );
    let plan = pgshift_default_engine(&url, &["plan", &one_branch]).await;
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("view all_bodies") && plan.stdout.contains("UNION types"),
        "{}",
        plan.stdout
    );
    // Both branches, and a catalog-only change under a view (which the plain
    // ALTER refuses): through the copy, with the views made again.
    let (_dir, both) = migration(
        "0231_both_branches",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb, ALTER COLUMN title TYPE varchar(200);\n\
         ALTER TABLE archived_items ALTER COLUMN body TYPE jsonb USING body::jsonb;\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &both]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(types(&client, "all_bodies").await.contains("body jsonb"));
    assert!(types(&client, "short_titles")
        .await
        .contains("title character varying(200)"));
    let n: i64 = one(
        &client,
        "SELECT count(*) FROM all_bodies WHERE body = '{}'::jsonb",
    )
    .await;
    assert_eq!(n, 100);
    let granted: bool = one(
        &client,
        "SELECT has_table_privilege('public', 'all_bodies', 'SELECT')",
    )
    .await;
    assert!(granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_check_flags_a_query_that_loses_its_index_on_the_new_type() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute("CREATE INDEX items_body ON items (body); ANALYZE items;")
        .await
        .unwrap();
    let (dir, path) = migration(
        "0240_check",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb;\n",
    );
    // On text, `body::text` is the column itself and reads the index; on
    // jsonb it is a cast of every row's value.
    let queries = dir.path().join("workload.sql");
    std::fs::write(
        &queries,
        "SELECT id FROM items WHERE body::text = $1;\nSELECT body FROM items WHERE id = $1;\n",
    )
    .unwrap();
    let before = schema_dump(&client).await;
    let run = pgshift_default_engine(
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
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["method"], "rehearsal");
    let regressed: Vec<bool> = json["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["regressed"].as_bool().unwrap())
        .collect();
    assert_eq!(regressed, [true, false], "{}", run.stdout);
    assert_eq!(
        schema_dump(&client).await,
        before,
        "the rehearsal left something behind"
    );
}

/// Regression: a second migration on a table whose first one was cut over
/// but not finalized copied the whole table, then failed at its cutover
/// ("relation pgshift_old_…_pkey already exists"). It is refused at plan
/// time now, naming the first and what to run; after finalize it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_another_migration_has_not_finished_with_is_refused_up_front() {
    let (cluster, client) = incident_primary(2_000).await;
    let url = cluster.url("app");
    let (_d1, first) = migration(
        "0401_status",
        "ALTER TABLE script_runs ALTER COLUMN status TYPE jsonb USING to_jsonb(status);\n",
    );
    let run = pgshift_default_engine(&url, &["apply", &first]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (_d2, second) = migration(
        "0402_status_back",
        "ALTER TABLE script_runs ALTER COLUMN status TYPE varchar(200) USING status #>> '{}';\n",
    );
    let before = schema_dump(&client).await;
    let run = pgshift_default_engine(&url, &["apply", &second]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("table script_runs: migration 0401_status is cut over on it"),
        "{}",
        run.stderr
    );
    let run = pgshift_default_engine(&url, &["--format", "json", "plan", &second]).await;
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let remedy = plan["blockers"][0]["remedy"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        remedy.contains("pgshift finalize 0401_status"),
        "{}",
        run.stdout
    );
    assert_eq!(
        schema_dump(&client).await,
        before,
        "the refusal changed nothing"
    );

    let run = pgshift_default_engine(&url, &["finalize", "0401_status", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = pgshift_default_engine(&url, &["apply", &second]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let t = types(&client, "script_runs").await;
    assert!(t.contains("status character varying(200)"), "{t}");
}

/// `devices.id` is a uuid stored as text (its primary key), referenced by
/// `pings.device_id`; the control copies see the same writes.
const KEYED: &str = "
    CREATE TABLE devices (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE pings (id int PRIMARY KEY, device_id text NOT NULL REFERENCES devices (id) ON DELETE CASCADE, at int);
    INSERT INTO devices SELECT format('00000000-0000-0000-0000-%s', lpad(g::text, 12, '0')), 'd' || g FROM generate_series(1, 5000) g;
    INSERT INTO pings SELECT g, format('00000000-0000-0000-0000-%s', lpad((g % 5000 + 1)::text, 12, '0')), g FROM generate_series(1, 10000) g;
    CREATE TABLE devices_control AS SELECT * FROM devices;
    CREATE TABLE pings_control AS SELECT * FROM pings;
    ANALYZE;
";

const KEY_CHANGE: &str = "\
ALTER TABLE devices ALTER COLUMN id TYPE uuid USING id::uuid;
ALTER TABLE pings ALTER COLUMN device_id TYPE uuid USING device_id::uuid;
";

/// Inserts, renames and deletes of devices (the key's rows come and go:
/// the replays find each by its key converted), pings of them, both
/// mirrored into the controls.
fn keyed_write(i: i64) -> String {
    let device = |n: i64| format!("00000000-0000-0000-0000-{n:012}");
    let write = match i % 4 {
        0 => format!(
            "INSERT INTO {{d}} VALUES ('{}', 'new {i}')",
            device(100_000 + i)
        ),
        1 => format!(
            "UPDATE {{d}} SET name = 'renamed {i}' WHERE id = '{}'",
            device(i % 5000 + 1)
        ),
        2 => format!(
            "DELETE FROM {{d}} WHERE id = '{}'",
            device((i * 7) % 5000 + 1)
        ),
        _ => format!(
            "INSERT INTO {{p}} SELECT {}, id, {i} FROM {{d}} ORDER BY name LIMIT 1",
            100_000 + i
        ),
    };
    let mirrored = |d: &str, p: &str| write.replace("{d}", d).replace("{p}", p);
    // The control's pings of deleted devices go with them, as the cascade takes the real ones.
    let cascade = if i % 4 == 2 {
        format!(
            "DELETE FROM pings_control WHERE device_id = '{}'",
            device((i * 7) % 5000 + 1)
        )
    } else {
        "SELECT 1".into()
    };
    [
        mirrored("devices", "pings"),
        mirrored("devices_control", "pings_control"),
        cascade,
    ]
    .join(";\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_stored_as_text_becomes_uuid_online_and_rolls_back_with_every_write() {
    let (cluster, client) = primary().await;
    client.batch_execute(KEYED).await.unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration("0230_device_uuid", KEY_CHANGE);
    let writer = Mirror::start(&url, keyed_write).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = pgshift_default_engine(&url, &["apply", &path, "--batch-size", "500"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ops = writer.ops.load(Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(ops > 40, "the writer barely ran ({ops} transactions)");

    client
        .batch_execute(
            &KEY_CHANGE
                .replace("devices ", "devices_control ")
                .replace("pings ", "pings_control "),
        )
        .await
        .unwrap();
    for (table, control) in [("devices", "devices_control"), ("pings", "pings_control")] {
        assert_eq!(types(&client, table).await, types(&client, control).await);
        let diff = texts(
            &client,
            &format!(
                "(SELECT t::text FROM {table} t EXCEPT SELECT c::text FROM {control} c)
                 UNION ALL (SELECT c::text FROM {control} c EXCEPT SELECT t::text FROM {table} t) LIMIT 5"
            ),
        )
        .await;
        assert!(
            diff.is_empty(),
            "{table} differs from what the blocking ALTER made: {diff:?}"
        );
    }
    let key: String = one(
        &client,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'devices'::regclass AND contype = 'p'",
    )
    .await;
    assert_eq!(key, "PRIMARY KEY (id)");

    // After cutover: a new device, a renamed one, a deleted one (its pings
    // go with it); the rollback brings each back to the text key.
    client
        .batch_execute(
            "INSERT INTO devices VALUES ('00000000-0000-0000-0000-00000009abcd', 'after');
             UPDATE devices SET name = 'renamed after' WHERE id = '00000000-0000-0000-0000-000000000011';
             DELETE FROM devices WHERE id = '00000000-0000-0000-0000-000000000012';",
        )
        .await
        .unwrap();
    let expected = texts(
        &client,
        "SELECT id::text || ' ' || name FROM devices ORDER BY 1",
    )
    .await;
    let back = pgshift(&url, &["rollback", "0230_device_uuid"]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert!(types(&client, "devices").await.contains("id text"));
    assert_eq!(
        texts(&client, "SELECT id || ' ' || name FROM devices ORDER BY 1").await,
        expected,
        "every write made after cutover is kept"
    );
    let orphans: i64 = one(
        &client,
        "SELECT count(*) FROM pings p WHERE NOT EXISTS (SELECT FROM devices d WHERE d.id = p.device_id)",
    )
    .await;
    assert_eq!(orphans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_refuses_what_its_replays_cannot_convert_both_ways() {
    let (cluster, client) = primary().await;
    client
        .batch_execute(
            "CREATE TABLE codes (code text PRIMARY KEY, region text NOT NULL, label text UNIQUE);
             CREATE TABLE pairs (a int, b int, PRIMARY KEY (a, b));
             CREATE TABLE spans (id int PRIMARY KEY, n int);
             INSERT INTO codes VALUES ('1', 'eu', 'one');",
        )
        .await
        .unwrap();
    let url = cluster.url("app");
    let before = schema_dump(&client).await;
    for (sql, expected) in [
        (
            "ALTER TABLE codes ALTER COLUMN code TYPE int USING (code || region)::int;\n",
            "its USING expression reads other columns (code, region)",
        ),
        (
            "ALTER TABLE codes ALTER COLUMN code TYPE int USING code::int;\n",
            "another unique index (codes_label_key)",
        ),
        (
            "ALTER TABLE pairs ALTER COLUMN a TYPE numeric;\n",
            "one-column primary keys only",
        ),
        (
            "ALTER TABLE spans ALTER COLUMN id TYPE interval USING make_interval(secs => id);\n",
            "there is no way back to its old type",
        ),
    ] {
        let (_dir, path) = migration("0231_refused", sql);
        let plan = pgshift_default_engine(&url, &["plan", &path]).await;
        assert_eq!(plan.code, 2, "{sql}: {}", plan.stdout);
        assert!(plan.stdout.contains(expected), "{sql}: {}", plan.stdout);
    }
    assert_eq!(schema_dump(&client).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_convert_stops_the_cutover_by_name_unless_its_row_is_gone() {
    let (cluster, client) = primary().await;
    client.batch_execute(KEYED).await.unwrap();
    let url = cluster.url("app");
    let (_dir, path) = migration("0232_device_keys", KEY_CHANGE);
    let ready = pgshift_default_engine(&url, &["apply", &path, "--no-cutover"]).await;
    assert_eq!(ready.code, 0, "{}", ready.stderr);
    // A row whose key does not convert, gone again before cutover: the
    // blocking ALTER would not see it either. Another that stays.
    client
        .batch_execute(
            "INSERT INTO devices VALUES ('gone soon', 'x');
             DELETE FROM devices WHERE id = 'gone soon';
             INSERT INTO devices VALUES ('not-a-uuid', 'y');",
        )
        .await
        .unwrap();
    let cut = pgshift(&url, &["cutover", "0232_device_keys"]).await;
    assert_eq!(cut.code, 1, "{}", cut.stderr);
    assert!(
        cut.stderr.contains("id = not-a-uuid") && !cut.stderr.contains("gone soon"),
        "{}",
        cut.stderr
    );
    assert!(
        types(&client, "devices").await.contains("id text"),
        "nothing was swapped"
    );
    client
        .batch_execute("DELETE FROM devices WHERE id = 'not-a-uuid'")
        .await
        .unwrap();
    let cut = pgshift(&url, &["cutover", "0232_device_keys"]).await;
    assert_eq!(cut.code, 0, "{}", cut.stderr);
    assert!(types(&client, "devices").await.contains("id uuid"));
    let count: i64 = one(&client, "SELECT count(*) FROM devices").await;
    assert_eq!(count, 5000);
}

/// The update engine (shadow columns in the table itself) runs the same
/// changes: each shadow filled with the conversion by the backfill and the
/// sync, the indexes rebuilt concurrently on it, the default converted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_engine_converts_every_kind_in_place_matching_the_blocking_alter() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0220_types_in_place", CHANGES);
    let plan = pgshift(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["engine"], "update", "{}", plan.stdout);
    assert_eq!(json["blockers"], serde_json::json!([]), "{}", plan.stdout);
    let oid: u32 = one(&client, "SELECT 'items'::regclass::oid").await;

    let writer = Mirror::start(&url, mirrored_write).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = pgshift(&url, &["apply", &path, "--batch-size", "2000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = writer.ops.load(Ordering::SeqCst);
    let errors = writer.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(ops > 50, "the writer barely ran ({ops} transactions)");

    // The same table, its columns changed in place.
    let after: u32 = one(&client, "SELECT 'items'::regclass::oid").await;
    assert_eq!(oid, after);
    let comment: Option<String> = one(
        &client,
        "SELECT col_description('items'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'body'))",
    )
    .await;
    assert_eq!(comment.as_deref(), Some("the payload"));
    let default: String = one(
        &client,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
          WHERE d.adrelid = 'items'::regclass AND a.attname = 'title'",
    )
    .await;
    assert_eq!(default, "'untitled'::character varying");
    let indexes: String = one(
        &client,
        "SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = 'items'::regclass",
    )
    .await;
    assert!(
        indexes.contains("CREATE UNIQUE INDEX items_ref ON public.items USING btree (ref)")
            && indexes.contains("CREATE INDEX items_title ON public.items USING btree (title)"),
        "{indexes}"
    );

    let fin = pgshift(&url, &["finalize", "0220_types_in_place", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    assert_matches_by_name(&client).await;
    let logs = misfit_logs(&client).await;
    assert_eq!(logs, 0, "the misfit log outlived finalize");
}

/// Under the update engine a value that does not convert is named by key
/// wherever it comes from: the backfill, or a write the sync saw after the
/// verification (the sync lets the write through and notes its key; the
/// cutover looks the noted rows up again). Rollback after cutover brings
/// every write back converted, or refuses by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_engine_names_values_that_do_not_convert_either_way() {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    client
        .batch_execute("UPDATE items SET body = 'not json' WHERE id = 12345")
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0230_misfit_in_place",
        "ALTER TABLE items ALTER COLUMN body TYPE jsonb USING body::jsonb, ALTER COLUMN qty TYPE text;\n",
    );
    let run = pgshift(&url, &["apply", &path, "--batch-size", "1000"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("items with id = 12345")
            && run.stderr.contains("invalid input syntax for type json"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items")
        .await
        .starts_with("id bigint, body text"));

    client
        .batch_execute("UPDATE items SET body = '{}' WHERE id = 12345")
        .await
        .unwrap();
    let run = pgshift(&url, &["resume", "0230_misfit_in_place", "--no-cutover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Written after the verification: the write goes through, the cutover
    // stops by name and swaps nothing.
    client
        .batch_execute("UPDATE items SET body = '{broken' WHERE id = 777")
        .await
        .unwrap();
    let run = pgshift(&url, &["cutover", "0230_misfit_in_place"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("items with id = 777")
            && run.stderr.contains("invalid input syntax for type json"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items")
        .await
        .starts_with("id bigint, body text"));
    client
        .batch_execute("UPDATE items SET body = '[777]' WHERE id = 777")
        .await
        .unwrap();
    let run = pgshift(&url, &["cutover", "0230_misfit_in_place"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let body: String = one(&client, "SELECT body::text FROM items WHERE id = 777").await;
    assert_eq!(body, "[777]");

    // After cutover: writes come back converted; one that does not stops
    // the rollback by key, and nothing changes until it is fixed.
    client
        .batch_execute(
            "UPDATE items SET body = '{\"after\": true}' WHERE id = 5;
             INSERT INTO items (id, body, title, qty) VALUES (99999999, '[1, 2]', 'late', '7');
             UPDATE items SET qty = 'a dozen' WHERE id = 8",
        )
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0230_misfit_in_place"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("items.qty") && run.stderr.contains("the row with id = 8"),
        "{}",
        run.stderr
    );
    assert!(types(&client, "items").await.contains("body jsonb"));
    client
        .batch_execute("UPDATE items SET qty = '12' WHERE id = 8")
        .await
        .unwrap();
    let run = pgshift(&url, &["rollback", "0230_misfit_in_place"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(types(&client, "items")
        .await
        .starts_with("id bigint, body text"));
    let five: String = one(&client, "SELECT body FROM items WHERE id = 5").await;
    assert_eq!(five, "{\"after\": true}");
    let late: (String, i32) = {
        let r = client
            .query_one("SELECT body, qty FROM items WHERE id = 99999999", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(late, ("[1, 2]".to_string(), 7));
    let eight: i32 = one(&client, "SELECT qty FROM items WHERE id = 8").await;
    assert_eq!(eight, 12);
    assert_eq!(leftovers(&client).await, Vec::<String>::new());
    let logs = misfit_logs(&client).await;
    assert_eq!(logs, 0, "the misfit log outlived the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_engine_killed_in_a_converting_backfill_resumes_to_what_the_blocking_alter_makes(
) {
    let (cluster, client) = typed_primary().await;
    let url = cluster.url("app");
    let (_dir, path) = migration("0231_kill_in_place", CHANGES);
    let writer = Mirror::start(&url, mirrored_write).await;
    kill_apply_mid_backfill(&client, &url, &path, "200", 1000, Some("update")).await;
    let phase: String = one(&client, "SELECT phase FROM pgshift.migrations").await;
    assert_eq!(phase, "backfilling");
    let resumed = pgshift(
        &url,
        &["resume", "0231_kill_in_place", "--batch-size", "5000"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = writer.stop().await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    let fin = pgshift(&url, &["finalize", "0231_kill_in_place", "--yes"]).await;
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_matches_by_name(&client).await;
}

/// pgshift's misfit logs (the update engine's), which nothing may leave behind.
async fn misfit_logs(client: &Client) -> i64 {
    one(
        client,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgshift'::regnamespace AND relname LIKE '%misfits'",
    )
    .await
}

/// `auto` takes the update engine for a type change on a table the copy
/// engine refuses (an exclusion constraint), and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_converts_in_place_a_table_the_copy_engine_refuses() {
    let (cluster, client) = primary().await;
    let url = cluster.url("app");
    client
        .batch_execute(
            "CREATE TABLE slots (id int PRIMARY KEY, during tsrange NOT NULL, note text NOT NULL,
                                 EXCLUDE USING gist (during WITH &&));
             INSERT INTO slots SELECT g, tsrange('2024-01-01'::timestamp + g * interval '1 hour',
                                                 '2024-01-01'::timestamp + (g + 1) * interval '1 hour'), 'slot ' || g
               FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let (_dir, path) = migration(
        "0232_auto_in_place",
        "ALTER TABLE slots ALTER COLUMN note TYPE jsonb USING to_jsonb(note);\n",
    );
    let plan = pgshift_default_engine(&url, &["--format", "json", "plan", &path]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["engine"], "update", "{}", plan.stdout);
    let first = json["warnings"][0].as_str().unwrap_or_default();
    assert!(
        first.contains("chose the update engine") && first.contains("exclusion"),
        "{first}"
    );
    let run = pgshift_default_engine(&url, &["apply", &path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let note: String = one(&client, "SELECT note::text FROM slots WHERE id = 42").await;
    assert_eq!(note, "\"slot 42\"");
    let not_null: bool = one(
        &client,
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'slots'::regclass AND attname = 'note'",
    )
    .await;
    assert!(not_null);
    // The exclusion constraint was never touched.
    let clash = client
        .batch_execute("INSERT INTO slots VALUES (9999, tsrange('2024-01-01 05:30', '2024-01-01 06:30'), '{}')")
        .await;
    assert!(clash.is_err(), "the exclusion constraint no longer holds");
}
