//! The triggers that keep one column in step with another: before cutover
//! the bigint shadow follows the old column; from cutover to finalize the
//! retired column follows the new one, so a rollback loses no write.
//!
//! Inserts are copied by a `BEFORE INSERT` trigger. Updates are copied by an
//! `AFTER UPDATE OF <column>` trigger that updates the row again by its key,
//! and only when the column changed (keys rarely do). Why not one
//! `BEFORE INSERT OR UPDATE OF` trigger: any `BEFORE UPDATE` row trigger,
//! even one limited to other columns, makes Postgres lock each row before
//! updating it (`GetTupleForTrigger`). That is one more WAL record for every
//! row the backfill writes and for every update the application makes;
//! measured on 500k rows: 11% more WAL and 8–10% more time.

use crate::names::{bounded, qualified, quote, STATE_SCHEMA};
use crate::plan::TablePlan;

/// One column copy: `target` takes the value of `source`, narrowed to
/// `range` when given (values outside become NULL).
pub(super) struct Copy<'a> {
    pub target: &'a str,
    pub source: &'a str,
    pub range: Option<(i64, i64)>,
}

impl Copy<'_> {
    fn value(&self, source: &str) -> String {
        match self.range {
            None => source.to_string(),
            Some((lo, hi)) => format!("CASE WHEN {source} BETWEEN {lo} AND {hi} THEN {source} END"),
        }
    }
}

/// The name of the update half of a trigger or function.
fn update_half(name: &str) -> String {
    bounded(&format!("{name}_upd"))
}

fn func(name: &str) -> String {
    qualified(STATE_SCHEMA, name)
}

/// The functions and triggers of one sync, as statements to run in one
/// transaction (so no write slips between the two halves).
pub(super) fn create(t: &TablePlan, function: &str, trigger: &str, copies: &[Copy]) -> Vec<String> {
    let on_insert: String = copies
        .iter()
        .map(|c| {
            format!(
                "  NEW.{} := {};\n",
                quote(c.target),
                c.value(&format!("NEW.{}", quote(c.source)))
            )
        })
        .collect();
    // Columns are qualified by an alias so that none can be read as a
    // PL/pgSQL variable (a column named `found` would be ambiguous).
    let row = "pgshift_row";
    let sets: Vec<String> = copies
        .iter()
        .map(|c| {
            format!(
                "{} = {}",
                quote(c.target),
                c.value(&format!("{row}.{}", quote(c.source)))
            )
        })
        .collect();
    let by_key: Vec<String> = t
        .key
        .iter()
        .map(|k| format!("{row}.{k} = NEW.{k}", k = quote(&k.name)))
        .collect();
    let changed: Vec<String> = copies
        .iter()
        .map(|c| format!("OLD.{s} IS DISTINCT FROM NEW.{s}", s = quote(c.source)))
        .collect();
    let sources: Vec<String> = copies.iter().map(|c| quote(c.source)).collect();
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$\nBEGIN\n{on_insert}  RETURN NEW;\nEND\n$pgshift$",
            func(function)
        ),
        // SECURITY DEFINER: a role allowed to update the key may lack SELECT
        // or row-level-security access to the row it just wrote.
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgshift$\nBEGIN\n  UPDATE ONLY {} AS {row} SET {} WHERE {};\n  RETURN NULL;\nEND\n$pgshift$",
            func(&update_half(function)),
            t.qualified(),
            sets.join(", "),
            by_key.join(" AND ")
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            quote(trigger),
            t.qualified(),
            func(function)
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({}) EXECUTE FUNCTION {}()",
            quote(&update_half(trigger)),
            sources.join(", "),
            t.qualified(),
            changed.join(" OR "),
            func(&update_half(function))
        ),
        // An ordinary trigger does not fire for sessions with
        // `session_replication_role = replica` (a logical replication apply
        // worker, a restore with triggers disabled): their rows would reach
        // the cutover with the placeholder in the new column.
        format!(
            "ALTER TABLE {} ENABLE ALWAYS TRIGGER {}",
            t.qualified(),
            quote(trigger)
        ),
        format!(
            "ALTER TABLE {} ENABLE ALWAYS TRIGGER {}",
            t.qualified(),
            quote(&update_half(trigger))
        ),
    ]
}

/// Both triggers of a sync.
pub(super) fn trigger_names(trigger: &str) -> [String; 2] {
    [trigger.to_string(), update_half(trigger)]
}

/// Drops both triggers of a sync (idempotent).
pub(super) fn drop_triggers(t: &TablePlan, trigger: &str) -> Vec<String> {
    [trigger.to_string(), update_half(trigger)]
        .iter()
        .map(|name| {
            format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(name),
                t.qualified()
            )
        })
        .collect()
}

/// Drops both functions of a sync (idempotent; after its triggers).
pub(super) fn drop_functions(function: &str) -> Vec<String> {
    [function.to_string(), update_half(function)]
        .iter()
        .map(|name| format!("DROP FUNCTION IF EXISTS {}()", func(name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_half_is_after_update_of_the_source_and_only_when_it_changed() {
        let plan = crate::plan::tests::plan(&crate::plan::tests::incident(), &[(1, "id")]);
        let t = &plan.tables[0];
        let c = &t.columns[0];
        let copies = [Copy {
            target: &c.shadow,
            source: &c.name,
            range: None,
        }];
        let sql = create(t, &t.sync_function, &t.sync_trigger, &copies);
        assert_eq!(sql.len(), 6);
        assert!(
            sql[4].contains("ENABLE ALWAYS TRIGGER") && sql[5].contains("ENABLE ALWAYS TRIGGER")
        );
        assert!(sql[2].contains("BEFORE INSERT ON"), "{}", sql[2]);
        assert!(!sql.iter().any(|s| s.contains("BEFORE INSERT OR UPDATE")));
        assert!(
            sql[3].contains(&format!(
                "AFTER UPDATE OF \"{}\" ON {} FOR EACH ROW WHEN (OLD.\"{n}\" IS DISTINCT FROM NEW.\"{n}\")",
                c.name,
                t.qualified(),
                n = c.name
            )),
            "{}",
            sql[3]
        );
        let key = quote(&t.key[0].name);
        assert!(
            sql[1].contains(&format!("WHERE pgshift_row.{key} = NEW.{key}")),
            "{}",
            sql[1]
        );
    }

    #[test]
    fn narrowed_copies_become_null_outside_the_range() {
        let plan = crate::plan::tests::plan(&crate::plan::tests::incident(), &[(1, "id")]);
        let t = &plan.tables[0];
        let copies = [Copy {
            target: "old",
            source: "id",
            range: Some((-2147483648, 2147483647)),
        }];
        let sql = create(t, "f", "t", &copies);
        assert!(sql[0].contains(
            "NEW.\"old\" := CASE WHEN NEW.\"id\" BETWEEN -2147483648 AND 2147483647 THEN NEW.\"id\" END"
        ));
        assert!(sql[1].contains("SET \"old\" = CASE WHEN pgshift_row.\"id\" BETWEEN"));
    }

    #[test]
    fn long_names_keep_distinct_halves() {
        let long = "x".repeat(63);
        assert_ne!(update_half(&long), long);
        assert!(update_half(&long).len() <= 63);
    }
}
