//! The SQL of the capture: the triggers that log the keys of rows written,
//! the functions that replay them onto the other table, and the trigger
//! that refuses TRUNCATE while it runs.

use crate::catalog::rehearse::CONVERSION_SETTINGS;
use crate::names::{literal, quote};
use crate::plan::copy::{CopyTable, Direction};
use crate::plan::Plan;

fn columns(t: &CopyTable) -> String {
    t.columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The function a capture trigger runs: the key of every row written goes
/// to `log` (both keys when an update changes it). SECURITY DEFINER: the
/// application's roles have no rights on pgshift's schema.
pub(super) fn capture_function(t: &CopyTable, function: &str, log: &str) -> String {
    let logged = t.log_columns().join(", ");
    let row = |rec: &str| {
        t.key_columns()
            .iter()
            .map(|k| format!("{rec}.{}", quote(&k.name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (old, new) = (row("OLD"), row("NEW"));
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS $pgshift$\nBEGIN\n  \
         IF TG_OP <> 'INSERT' THEN INSERT INTO {log} ({logged}) VALUES ({old}); END IF;\n  \
         IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND ROW({new}) IS DISTINCT FROM ROW({old})) THEN\n    \
         INSERT INTO {log} ({logged}) VALUES ({new});\n  END IF;\n  RETURN NULL;\nEND\n$pgshift$"
    )
}

/// The rows whose key is among the replay's keys (`pgshift_keys_0`, `pgshift_keys_1`, …:
/// one array per key column, in step); in the target, among the keys
/// converted to its type (`pgshift_targets_0`) when the key's type changes.
fn among_keys(t: &CopyTable, in_target: bool) -> String {
    let keys = t.key_columns();
    let array = |i: usize| {
        if in_target && keys[i].conversion.is_some() {
            format!("pgshift_targets_{i}")
        } else {
            format!("pgshift_keys_{i}")
        }
    };
    if let [k] = keys.as_slice() {
        return format!("{} = ANY ({})", quote(&k.name), array(0));
    }
    let names: Vec<String> = keys.iter().map(|k| quote(&k.name)).collect();
    let arrays: Vec<String> = (0..keys.len()).map(array).collect();
    format!(
        "({}) IN (SELECT * FROM unnest({}))",
        names.join(", "),
        arrays.join(", ")
    )
}

/// `expr` (which reads the key by its column name) evaluated on `value`,
/// cast to `ty` when given (a bare column's value is converted by the
/// assignment, which a comparison does not do).
pub(crate) fn key_expression(
    t: &CopyTable,
    column: &str,
    expr: &str,
    value: &str,
    ty: Option<&str>,
) -> String {
    let expr = match ty {
        Some(ty) => format!("CAST({expr} AS {ty})"),
        None => expr.to_string(),
    };
    format!(
        "(SELECT {expr} FROM (SELECT {value}) AS {}({}))",
        quote(&t.name),
        quote(column)
    )
}

/// For a key whose type changes: the logged keys converted into the
/// target's type, as an assignment converts them (so a value too long for
/// a `varchar(n)` fails rather than being cut). A key that does not
/// convert is in no row of the target: it is left out, one by one, after
/// the whole array failed.
fn convert_keys(t: &CopyTable, way: Direction) -> String {
    let mut out = String::new();
    for (i, k) in t.key_columns().iter().enumerate() {
        let Some(expr) = k.to_target(way) else {
            continue;
        };
        let all = format!(
            "ARRAY(SELECT {expr} FROM unnest(pgshift_keys_{i}) AS {}({}))",
            quote(&t.name),
            quote(&k.name)
        );
        let one = key_expression(t, &k.name, expr, &format!("pgshift_key_{i}"), None);
        out.push_str(&format!(
            "  BEGIN\n    pgshift_targets_{i} := {all};\n  EXCEPTION WHEN OTHERS THEN\n    \
             pgshift_targets_{i} := '{{}}';\n    FOREACH pgshift_key_{i} IN ARRAY pgshift_keys_{i} LOOP\n      \
             BEGIN\n        pgshift_target_{i} := {one};\n        \
             pgshift_targets_{i} := pgshift_targets_{i} || pgshift_target_{i};\n      \
             EXCEPTION WHEN OTHERS THEN NULL;\n      END;\n    END LOOP;\n  END;\n  "
        ));
    }
    out
}

/// `replay(batch)`: takes up to `batch` keys from `log`, and makes
/// `target`'s rows of those keys what `source`'s are now; with NULL, takes
/// every key until the log is empty (the swaps call it so, under their
/// lock). Returns how many keys it took.
///
/// With unique indexes other than the key, the fresh rows evict the rows
/// of other keys they collide with, whose keys go back to the log: such a
/// row is out of date (the source holds the value once), and the next
/// round brings it back as it is now (see `UniqueKey`).
///
/// Its variables are prefixed: plpgsql refuses a statement where a name is
/// both a variable and a column, and tables have columns named `total`.
pub(super) fn replay_function(
    t: &CopyTable,
    function: &str,
    log: &str,
    source: &str,
    target: &str,
    way: Direction,
) -> String {
    let cols = columns(t);
    let values = t.select_list(way);
    let keys = t.key_columns();
    let key_list = t.key_list();
    let logged = t.log_columns().join(", ");
    let among = among_keys(t, false);
    let among_target = among_keys(t, true);
    let collisions: Vec<String> = t
        .indexes
        .iter()
        .filter_map(|ix| ix.unique.as_ref())
        .map(|u| {
            format!(
                "({})",
                u.collides_with(
                    &t.converted_rows("fresh", way)
                        .unwrap_or_else(|| "fresh".into())
                )
            )
        })
        .collect();
    let insert = if collisions.is_empty() {
        format!(
            "INSERT INTO {target} ({cols}) SELECT {values} FROM {}{source} WHERE {among};",
            t.only()
        )
    } else {
        // One statement, so the evictions and the insert read the source at
        // one snapshot; the insert's condition runs the eviction first.
        format!(
            "WITH fresh AS MATERIALIZED (SELECT * FROM {only}{source} WHERE {among}),\n    \
             evicted AS (DELETE FROM {target} WHERE {} RETURNING {key_list}),\n    \
             relogged AS (INSERT INTO {log} ({logged}) SELECT {key_list} FROM evicted RETURNING 1)\n  \
             INSERT INTO {target} ({cols}) SELECT {values} FROM fresh WHERE (SELECT count(*) FROM relogged) >= 0;",
            collisions.join(" OR "),
            only = t.only()
        )
    };
    let declare: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut d = format!("  pgshift_keys_{i} {}[];\n", k.log_type_of(way));
            if k.conversion.is_some() {
                d.push_str(&format!(
                    "  pgshift_key_{i} {};\n  pgshift_targets_{i} {ty}[];\n  pgshift_target_{i} {ty};\n",
                    k.log_type_of(way),
                    ty = k.target_type(way)
                ));
            }
            d
        })
        .collect();
    let arrays: Vec<String> = t
        .log_columns()
        .iter()
        .map(|c| format!("array_agg({c})"))
        .collect();
    let into: Vec<String> = (0..keys.len())
        .map(|i| format!("pgshift_keys_{i}"))
        .collect();
    // A conversion runs with the settings the plan fixed (the transaction
    // that creates the function sets them first: see `conversion_settings`);
    // without one, nothing in the function depends on the search path.
    let settings = if t.conversions.is_empty() {
        "SET search_path = pg_catalog, pg_temp".to_string()
    } else {
        CONVERSION_SETTINGS
            .iter()
            .map(|s| format!("SET {} FROM CURRENT", quote(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "CREATE OR REPLACE FUNCTION {function}(pgshift_batch bigint) RETURNS bigint LANGUAGE plpgsql \
         {settings} AS $pgshift$\nDECLARE\n{declare}  pgshift_n bigint;\n  pgshift_total bigint := 0;\nBEGIN\n  \
         LOOP\n  \
         WITH taken AS (DELETE FROM {log} WHERE seq IN (SELECT seq FROM {log} ORDER BY seq LIMIT pgshift_batch) RETURNING {logged})\n  \
         SELECT {}, count(*) INTO {}, pgshift_n FROM (SELECT DISTINCT {logged} FROM taken) distinct_keys;\n  \
         EXIT WHEN pgshift_n = 0;\n{}  \
         DELETE FROM {target} WHERE {among_target};\n  \
         {insert}\n  \
         pgshift_total := pgshift_total + pgshift_n;\n  \
         EXIT WHEN pgshift_batch IS NOT NULL;\n  \
         END LOOP;\n  \
         RETURN pgshift_total;\nEND\n$pgshift$",
        arrays.join(", "),
        into.join(", "),
        convert_keys(t, way)
    )
}

/// The trigger that refuses TRUNCATE while a capture runs: it would empty
/// one table and not the other, and the log cannot record it.
pub(super) fn refuse_truncate_function(plan: &Plan, t: &CopyTable) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$\nBEGIN\n  \
         RAISE EXCEPTION 'pgshift migration % is copying %: TRUNCATE would not reach the copy', {}, TG_TABLE_NAME\n    \
         USING HINT = {};\nEND\n$pgshift$",
        t.refuse_truncate,
        literal(&plan.migration),
        literal(&format!(
            "finish the migration, or roll it back with `pgshift rollback {}`",
            plan.migration
        ))
    )
}

/// Statements that make the capture triggers on `table` (either direction).
///
/// `ENABLE ALWAYS`: an ordinary trigger does not fire for sessions with
/// `session_replication_role = replica`, such as a logical replication
/// apply worker or a restore with triggers disabled; their writes would be
/// missing from the copy.
///
/// On a partitioned table the row trigger is cloned onto every partition
/// (enabled there too, for servers where the ALTER does not recurse); a
/// statement trigger is not, and a partition can be truncated alone.
pub(super) fn attach_capture(t: &CopyTable, table: &str, function: &str) -> Vec<String> {
    let mut s = vec![
        format!(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()",
            quote(&t.trigger)
        ),
        format!(
            "ALTER TABLE {table} ENABLE ALWAYS TRIGGER {}",
            quote(&t.trigger)
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            quote(&t.truncate_trigger),
            t.refuse_truncate
        ),
        format!(
            "ALTER TABLE {table} ENABLE ALWAYS TRIGGER {}",
            quote(&t.truncate_trigger)
        ),
    ];
    for p in &t.partitions {
        let part = p.qualified();
        s.push(format!(
            "ALTER TABLE {part} ENABLE ALWAYS TRIGGER {}",
            quote(&t.trigger)
        ));
        s.push(format!(
            "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {part} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            quote(&t.truncate_trigger),
            t.refuse_truncate
        ));
        s.push(format!(
            "ALTER TABLE {part} ENABLE ALWAYS TRIGGER {}",
            quote(&t.truncate_trigger)
        ));
    }
    s
}

/// (The row trigger's clones on partitions go with it; the statement
/// triggers on partitions are dropped one by one.)
pub(super) fn detach_capture(t: &CopyTable, table: &str) -> Vec<String> {
    let mut s: Vec<String> = [&t.trigger, &t.truncate_trigger]
        .iter()
        .map(|name| format!("DROP TRIGGER IF EXISTS {} ON {table}", quote(name)))
        .collect();
    for p in &t.partitions {
        s.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            quote(&t.truncate_trigger),
            p.qualified()
        ));
    }
    s
}
