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

use crate::catalog::rehearse::CONVERSION_SETTINGS;
use crate::names::{bounded, literal, qualified, quote, STATE_SCHEMA};
use crate::plan::TablePlan;

/// One column copy: `target` takes the value of `source`, narrowed to
/// `range` when given (values outside become NULL), or converted.
pub(super) struct Copy<'a> {
    pub target: &'a str,
    pub source: &'a str,
    pub range: Option<(i64, i64)>,
    pub convert: Option<Convert>,
}

/// A type change's conversion, run on the row being written.
pub(super) struct Convert {
    /// Over the row's columns (the `USING` expression, the way back, or the
    /// column itself); its value is assigned to `to_type` as the blocking
    /// `ALTER` assigns it.
    pub expr: String,
    /// The target's type, with its length or precision.
    pub to_type: String,
    /// The columns `expr` reads: an update of any of them converts again.
    pub reads: Vec<String>,
}

impl Copy<'_> {
    fn value(&self, source: &str) -> String {
        match self.range {
            None => source.to_string(),
            Some((lo, hi)) => format!("CASE WHEN {source} BETWEEN {lo} AND {hi} THEN {source} END"),
        }
    }

    /// The columns whose update makes this copy run again.
    fn reads(&self) -> Vec<String> {
        match &self.convert {
            Some(c) => c.reads.clone(),
            None => vec![self.source.to_string()],
        }
    }
}

/// `expr` evaluated over `row` (a row of `t`), so that its column names,
/// qualified by the table's name or not, read the row's values.
pub(super) fn over_row(t: &TablePlan, expr: &str, row: &str) -> String {
    format!(
        "(SELECT {expr} FROM (SELECT {row}.*) AS {})",
        quote(&t.name)
    )
}

/// `target := <conversion>`, a value that does not convert leaving NULL
/// (the write goes through: verification finds the row before cutover and
/// names it, as the copy engine's replays do).
fn converted_into(
    t: &TablePlan,
    target: &str,
    c: &Convert,
    row: &str,
    note: Option<&str>,
) -> String {
    let note = note
        .map(|f| {
            let keys: Vec<String> = t
                .key
                .iter()
                .map(|k| format!("{row}.{}::text", quote(&k.name)))
                .collect();
            format!("    PERFORM {}(ARRAY[{}]);\n", func(f), keys.join(", "))
        })
        .unwrap_or_default();
    format!(
        "  BEGIN\n    {target} := {};\n  EXCEPTION WHEN OTHERS THEN\n    {target} := NULL;\n{note}  END;\n",
        over_row(t, &c.expr, row)
    )
}

/// Where the forward sync notes the keys of rows whose value did not
/// convert (the cutover looks them up again: see [`misfit_query`]).
pub(super) struct MisfitLog {
    pub table: String,
    pub note: String,
}

impl MisfitLog {
    pub fn of(t: &TablePlan) -> MisfitLog {
        MisfitLog {
            table: bounded(&format!("{}_misfits", t.sync_function)),
            note: bounded(&format!("{}_note", t.sync_function)),
        }
    }

    /// The log and the function that writes it: SECURITY DEFINER, so that
    /// an application role needs no privilege on pgshift's schema.
    pub fn create(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (keys text[] NOT NULL, noted timestamptz NOT NULL DEFAULT now())",
                func(&self.table)
            ),
            format!(
                "CREATE OR REPLACE FUNCTION {}(pgshift_keys text[]) RETURNS void LANGUAGE sql SECURITY DEFINER \
                 SET search_path = pg_catalog, pg_temp AS $pgshift$INSERT INTO {} (keys) VALUES (pgshift_keys)$pgshift$",
                func(&self.note),
                func(&self.table)
            ),
        ]
    }

    pub fn drop(&self) -> Vec<String> {
        vec![
            format!("DROP FUNCTION IF EXISTS {}(text[])", func(&self.note)),
            format!("DROP TABLE IF EXISTS {}", func(&self.table)),
        ]
    }
}

/// The first row the forward sync noted whose value still does not convert
/// (or whose shadow is still NULL when it converts): its key as `col =
/// value, …` and the reason. Reads only the noted rows.
/// `check` is the check function's call on the row (pending).
pub(super) fn misfit_query(t: &TablePlan, check: &str) -> String {
    let log = MisfitLog::of(t);
    let name = quote(&t.name);
    let on: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "{name}.{} = l.keys[{}]::{}",
                quote(&k.name),
                i + 1,
                k.type_name
            )
        })
        .collect();
    format!(
        "SELECT {}, {check} FROM {} l JOIN ONLY {} ON {} WHERE {check} IS NOT NULL LIMIT 1",
        t.key_text(Some(&name)),
        func(&log.table),
        t.qualified(),
        on.join(" AND "),
    )
}

/// The name of the update half of a trigger or function.
fn update_half(name: &str) -> String {
    bounded(&format!("{name}_upd"))
}

fn func(name: &str) -> String {
    qualified(STATE_SCHEMA, name)
}

/// A conversion runs with the settings the plan fixed, in the application's
/// sessions too: the transaction creating the function sets them first, and
/// `FROM CURRENT` keeps them (see `rehearse::conversion_settings`).
fn conversion_settings() -> String {
    CONVERSION_SETTINGS
        .iter()
        .map(|s| format!(" SET {} FROM CURRENT", quote(s)))
        .collect()
}

/// The functions and triggers of one sync, as statements to run in one
/// transaction (so no write slips between the two halves). With a
/// conversion, the transaction must have set the plan's conversion
/// settings first.
///
/// `note`: the function that notes a row whose value does not convert (the
/// forward sync); the reverse sync leaves NULL and the rollback's check
/// finds it.
pub(super) fn create(
    t: &TablePlan,
    function: &str,
    trigger: &str,
    copies: &[Copy],
    note: Option<&str>,
) -> Vec<String> {
    let converts = copies.iter().any(|c| c.convert.is_some());
    // Column names in a conversion are the table's, never PL/pgSQL's.
    let (settings, conflict) = if converts {
        (conversion_settings(), "#variable_conflict use_column\n")
    } else {
        (String::new(), "")
    };
    let on_insert: String = copies
        .iter()
        .map(|c| {
            let target = format!("NEW.{}", quote(c.target));
            match &c.convert {
                Some(conv) => converted_into(t, &target, conv, "NEW", note),
                None => format!(
                    "  {target} := {};\n",
                    c.value(&format!("NEW.{}", quote(c.source)))
                ),
            }
        })
        .collect();
    // Columns are qualified by an alias so that none can be read as a
    // PL/pgSQL variable (a column named `found` would be ambiguous).
    let row = "pgshift_row";
    let mut declare = String::new();
    let mut compute = String::new();
    let sets: Vec<String> = copies
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.convert {
            Some(conv) => {
                let var = format!("pgshift_v{i}");
                declare.push_str(&format!("  {var} {};\n", conv.to_type));
                compute.push_str(&converted_into(t, &var, conv, "NEW", note));
                format!("{} = {var}", quote(c.target))
            }
            None => format!(
                "{} = {}",
                quote(c.target),
                c.value(&format!("{row}.{}", quote(c.source)))
            ),
        })
        .collect();
    let by_key: Vec<String> = t
        .key
        .iter()
        .map(|k| format!("{row}.{k} = NEW.{k}", k = quote(&k.name)))
        .collect();
    let mut sources: Vec<String> = Vec::new();
    for c in copies {
        for r in c.reads() {
            if !sources.contains(&r) {
                sources.push(r);
            }
        }
    }
    // A read column may have a type without an equality operator (json,
    // point): converting copies compare texts.
    let changed: Vec<String> = sources
        .iter()
        .map(|s| {
            if converts {
                format!("OLD.{s}::text IS DISTINCT FROM NEW.{s}::text", s = quote(s))
            } else {
                format!("OLD.{s} IS DISTINCT FROM NEW.{s}", s = quote(s))
            }
        })
        .collect();
    let sources: Vec<String> = sources.iter().map(|s| quote(s)).collect();
    let definer_settings = if converts {
        settings.clone()
    } else {
        " SET search_path = pg_catalog, pg_temp".to_string()
    };
    let declare = if declare.is_empty() {
        String::new()
    } else {
        format!("DECLARE\n{declare}")
    };
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql{settings} AS $pgshift$\n{conflict}BEGIN\n{on_insert}  RETURN NEW;\nEND\n$pgshift$",
            func(function)
        ),
        // SECURITY DEFINER: a role allowed to update the key may lack SELECT
        // or row-level-security access to the row it just wrote.
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER{definer_settings} AS $pgshift$\n{conflict}{declare}BEGIN\n{compute}  UPDATE ONLY {} AS {row} SET {} WHERE {};\n  RETURN NULL;\nEND\n$pgshift$",
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

/// The function that says, for one row of `t`, why a converted column's
/// shadow is wrong: `<column>: <Postgres's reason>` when its value does not
/// convert, `missed` when the shadow is NULL but the value converts to
/// something (a write the sync did not see), NULL when all is well. With
/// `pending` false it only tries every conversion (the search for the row
/// that stopped a backfill batch). Created with the conversion settings set.
pub(super) fn check_function(t: &TablePlan, name: &str, copies: &[Copy]) -> String {
    let mut declare = String::new();
    let mut body = String::new();
    for (i, c) in copies.iter().enumerate() {
        let Some(conv) = &c.convert else { continue };
        let var = format!("pgshift_v{i}");
        declare.push_str(&format!("  {var} {};\n", conv.to_type));
        body.push_str(&format!(
            "  IF NOT pgshift_pending OR pgshift_r.{target} IS NULL THEN\n    BEGIN\n      {var} := {};\n    \
             EXCEPTION WHEN OTHERS THEN\n      RETURN {} || ': ' || SQLERRM;\n    END;\n    \
             IF pgshift_pending AND {var} IS NOT NULL THEN\n      RETURN 'missed';\n    END IF;\n  END IF;\n",
            over_row(t, &conv.expr, "pgshift_r"),
            literal(c.source),
            target = quote(c.target),
        ));
    }
    format!(
        "CREATE OR REPLACE FUNCTION {}(pgshift_r {}, pgshift_pending boolean) RETURNS text LANGUAGE plpgsql{} AS $pgshift$\n\
         #variable_conflict use_column\nDECLARE\n{declare}BEGIN\n{body}  RETURN NULL;\nEND\n$pgshift$",
        func(name),
        t.qualified(),
        conversion_settings()
    )
}

/// Drops the check function of `name` (idempotent).
pub(super) fn drop_check_function(t: &TablePlan, name: &str) -> String {
    format!(
        "DROP FUNCTION IF EXISTS {}({}, boolean)",
        func(name),
        t.qualified()
    )
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
            convert: None,
        }];
        let sql = create(t, &t.sync_function, &t.sync_trigger, &copies, None);
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
            convert: None,
        }];
        let sql = create(t, "f", "t", &copies, None);
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
