//! The column swap: the cutover transaction, and the building blocks it
//! shares with the rollback after it (the opening that locks everything and
//! detaches the views, triggers and foreign keys, then per column the
//! rename, default, NOT NULL, sequence or identity, and the key constraints
//! and indexes).

use super::*;

/// cutover: one short transaction that swaps names and re-attaches everything.
pub fn cutover(plan: &Plan, mark_phase: &str) -> Step {
    let mut s: Vec<String> = Vec::new();
    let tables = locked_tables(plan);
    detach(&mut s, plan, &tables, |t| &t.sync_trigger, Guarded::Cutover);
    // Under the lock, no write can bring a value that does not convert
    // between this check and the swap.
    for t in &plan.tables {
        if let Some(query) = misfit_query(t) {
            s.push(format!(
                "DO $pgshift$\nDECLARE pgshift_key text; pgshift_why text;\nBEGIN\n  \
                 SELECT * INTO pgshift_key, pgshift_why FROM ({query}) q;\n  \
                 IF pgshift_key IS NOT NULL THEN\n    \
                 RAISE EXCEPTION USING ERRCODE = 'data_exception', MESSAGE = format('the row of %s with %s does not convert to the new type: %s', {}, pgshift_key, pgshift_why);\n  \
                 END IF;\nEND\n$pgshift$",
                literal(&t.display())
            ));
        }
    }
    for t in &plan.tables {
        for ix in &t.indexes {
            match &ix.constraint {
                Some((name, _)) => s.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    t.qualified(),
                    quote(name)
                )),
                None => s.push(format!(
                    "ALTER INDEX {} RENAME TO {}",
                    qualified(&t.schema, &ix.name),
                    quote(&ix.retired)
                )),
            }
        }
        for chk in &t.checks {
            s.push(format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                t.qualified(),
                quote(&chk.name)
            ));
        }
    }
    for (ti, t) in plan.tables.iter().enumerate() {
        for (ci, c) in t.columns.iter().enumerate() {
            swap_column(
                &mut s,
                t,
                c,
                &format!("pgshift.seq_{ti}_{ci}"),
                Direction::Forward,
            );
        }
    }
    for t in &plan.tables {
        for ix in &t.indexes {
            match &ix.constraint {
                Some((name, kind)) => s.push(add_key_constraint(t, ix, name, kind, &ix.shadow)),
                None => s.push(format!(
                    "ALTER INDEX {} RENAME TO {}",
                    qualified(&t.schema, &ix.shadow),
                    quote(&ix.name)
                )),
            }
            s.extend(named_index_marks(t, ix));
        }
        for chk in &t.checks {
            s.push(format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                t.qualified(),
                quote(&chk.shadow),
                quote(&chk.name)
            ));
        }
    }
    for fk in &plan.foreign_keys {
        s.push(format!(
            "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
            fk.table,
            quote(&fk.shadow),
            quote(&fk.name)
        ));
    }
    if plan.tables.iter().any(converts) {
        s.extend(crate::catalog::rehearse::apply_settings(
            &plan.conversion_settings,
        ));
    }
    for t in &plan.tables {
        let copies = reverse_copies(t);
        s.extend(sync::create(
            t,
            &t.reverse_function,
            &t.reverse_trigger,
            &copies,
            None,
        ));
    }
    push_views(&mut s, plan);
    s.push(mark_phase.to_string());
    let sql = s.join(";\n");
    step(
        "cutover",
        format!(
            "one transaction: lock {}, swap columns, sequences, keys, foreign keys and {} view{}; reverse sync keeps the old columns current for rollback",
            tables.join(", "),
            plan.views.len(),
            if plan.views.len() == 1 { "" } else { "s" }
        ),
        sql,
        ACCESS_EXCLUSIVE,
        Action::Transaction { statements: s },
    )
}

/// Every table a cutover (or its reverse) locks: the widened tables and the
/// tables declaring rebuilt foreign keys.
pub fn locked_tables(plan: &Plan) -> Vec<String> {
    let mut tables: Vec<String> = plan.tables.iter().map(|t| t.qualified()).collect();
    for fk in &plan.foreign_keys {
        if !tables.contains(&fk.table) {
            tables.push(fk.table.clone());
        }
    }
    tables
}

/// The opening of a swap (either way): every lock up front, in one
/// statement (no lock upgrades midway, and lock_timeout bounds the whole
/// wait); then the views, the sync triggers and the foreign keys go.
///
/// Views come first in the lock list, dependents first: a query on a view
/// locks the view, then its tables. Locking the tables first and the view
/// later (to drop it) would deadlock with such a query.
pub(super) fn detach(
    s: &mut Vec<String>,
    plan: &Plan,
    tables: &[String],
    trigger: impl Fn(&TablePlan) -> &String,
    guarded: Guarded,
) {
    let relations: Vec<String> = plan
        .views
        .iter()
        .rev()
        // LOCK TABLE refuses materialized views; DROP takes their lock.
        .filter(|v| !v.materialized)
        .map(|v| v.qualified())
        .chain(tables.iter().cloned())
        .collect();
    s.push(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        relations.join(", ")
    ));
    let ours: Vec<(String, String)> = plan
        .tables
        .iter()
        .flat_map(|t| sync::trigger_names(trigger(t)).map(|n| (t.qualified(), n)))
        .collect();
    s.push(assert_triggers_always(plan, &ours, guarded));
    drop_views(s, plan);
    for t in &plan.tables {
        s.extend(sync::drop_triggers(t, trigger(t)));
    }
    for fk in &plan.foreign_keys {
        s.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            fk.table,
            quote(&fk.name)
        ));
    }
}

/// Which way a column swap goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Cutover: the bigint shadow column takes the name.
    Forward,
    /// Rollback after cutover: the retired original takes its name back.
    Back,
}

/// Swaps the column that has `c.name` for the one taking it, with its
/// default, NOT NULL and sequence or identity.
pub(super) fn swap_column(
    s: &mut Vec<String>,
    t: &TablePlan,
    c: &ColumnPlan,
    setting: &str,
    direction: Direction,
) {
    let table = t.qualified();
    // Where the column leaving the name parks, which one takes it, and the
    // validated check that gives the incoming one NOT NULL without a scan.
    let (parked, incoming, check) = match direction {
        Direction::Forward => (&c.retired, &c.shadow, c.not_null_check.clone()),
        Direction::Back => (&c.shadow, &c.retired, revert::not_null_check(t, c)),
    };
    // A shadow column added NOT NULL (with the placeholder default) comes in
    // NOT NULL already.
    let incoming_not_null = direction == Direction::Forward && c.shadow_not_null;
    let identity = c.sequence.as_ref().filter(|q| !q.identity.is_empty());
    if let Some(seq) = identity {
        detach_identity(s, &table, &c.name, seq, setting);
    }
    if c.default.is_some() {
        s.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {} DROP DEFAULT",
            quote(&c.name)
        ));
    }
    if incoming_not_null {
        s.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {} DROP DEFAULT",
            quote(incoming)
        ));
    }
    s.push(format!(
        "ALTER TABLE {table} RENAME COLUMN {} TO {}",
        quote(&c.name),
        quote(parked)
    ));
    s.push(format!(
        "ALTER TABLE {table} RENAME COLUMN {} TO {}",
        quote(incoming),
        quote(&c.name)
    ));
    if c.not_null {
        // The parked column is no longer filled with every value (the reverse
        // trigger writes NULL for values that no longer fit; after a rollback
        // nothing fills it until the cleanup drops it): it may not stay NOT NULL.
        s.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
            quote(parked)
        ));
        if let Some(original) = c.not_null_name.as_deref() {
            // Postgres 18: the incoming column is NOT NULL already (a
            // validated NOT NULL, or a shadow added NOT NULL) and SET NOT NULL
            // finds it; a plan begun by a pgshift that proved it with a CHECK
            // gets it from the check, without a scan. It then takes the name
            // the parked column's constraint just freed.
            s.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL",
                quote(&c.name)
            ));
            s.push(super::rename_not_null(t, &c.name, original));
            s.push(format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {}",
                quote(&check)
            ));
        } else if !incoming_not_null {
            s.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL",
                quote(&c.name)
            ));
            s.push(format!(
                "ALTER TABLE {table} DROP CONSTRAINT {}",
                quote(&check)
            ));
        }
    }
    // A converted column's default, as Postgres converted it for the new type.
    let default = match (&c.conversion, direction) {
        (Some(conv), Direction::Forward) => conv.default.as_ref().or(c.default.as_ref()),
        _ => c.default.as_ref(),
    };
    if let Some(default) = default {
        s.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {default}",
            quote(&c.name)
        ));
    }
    if let Some(seq) = &c.sequence {
        let (sequence_type, max) = match direction {
            Direction::Forward => ("bigint".to_string(), seq.max),
            // Back to the old type, and to its maximum if the plan raised it.
            Direction::Back => (
                seq.data_type.clone(),
                if seq.max == i64::MAX {
                    c.range().1
                } else {
                    seq.max
                },
            ),
        };
        attach_sequence(s, &table, &c.name, seq, &sequence_type, max, setting);
    }
}

/// The marks of `ix`, given to the index that has its name now (a rebuilt
/// index has none of them).
pub(super) fn named_index_marks(t: &TablePlan, ix: &IndexPlan) -> Vec<String> {
    index_marks(
        &t.schema,
        &t.qualified(),
        &ix.name,
        ix.constraint.as_ref().map(|(name, _)| name.as_str()),
        &ix.marks,
    )
}

/// `ADD CONSTRAINT … USING INDEX`, deferrable as the original was.
pub(super) fn add_key_constraint(
    t: &TablePlan,
    ix: &IndexPlan,
    name: &str,
    kind: &str,
    index: &str,
) -> String {
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}{}",
        t.qualified(),
        quote(name),
        if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
        quote(index),
        ix.marks.deferrable
    )
}

/// DROP IDENTITY drops the identity's sequence: remember where it stood
/// (in a transaction-local setting) so [`attach_sequence`] can put it back.
pub(in crate::ops) fn detach_identity(
    s: &mut Vec<String>,
    table: &str,
    column: &str,
    seq: &SequencePlan,
    setting: &str,
) {
    s.push(format!(
        "SELECT set_config({}, (SELECT last_value || ',' || is_called FROM {}), true)",
        literal(setting),
        seq.qualified()
    ));
    s.push(format!(
        "ALTER TABLE {table} ALTER COLUMN {} DROP IDENTITY",
        quote(column)
    ));
}

/// Gives `column` its sequence: a serial's sequence changes type and owner;
/// an identity is re-created under the same name, same options, at the
/// value [`detach_identity`] remembered.
pub(in crate::ops) fn attach_sequence(
    s: &mut Vec<String>,
    table: &str,
    column: &str,
    seq: &SequencePlan,
    sequence_type: &str,
    max: i64,
    setting: &str,
) {
    if seq.identity.is_empty() {
        if seq.data_type != "bigint" {
            s.push(format!(
                "ALTER SEQUENCE {} AS {sequence_type}",
                seq.qualified()
            ));
        }
        s.push(format!(
            "ALTER SEQUENCE {} OWNED BY {table}.{}",
            seq.qualified(),
            quote(column)
        ));
        return;
    }
    s.push(format!(
        "ALTER TABLE {table} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY (SEQUENCE NAME {} INCREMENT BY {} MINVALUE {} MAXVALUE {max} START WITH {} CACHE {} {})",
        quote(column),
        if seq.identity == "a" { "ALWAYS" } else { "BY DEFAULT" },
        seq.qualified(),
        seq.increment,
        seq.min,
        seq.start,
        seq.cache,
        if seq.cycle { "CYCLE" } else { "NO CYCLE" }
    ));
    s.push(format!(
        "SELECT setval({}::regclass, split_part(current_setting({st}), ',', 1)::bigint, split_part(current_setting({st}), ',', 2)::boolean)",
        literal(&seq.qualified()),
        st = literal(setting)
    ));
}

/// `ALTER TABLE t DROP COLUMN IF EXISTS …` for the columns `pick` names.
pub(super) fn drop_columns(t: &TablePlan, pick: impl Fn(&ColumnPlan) -> &str) -> String {
    let drops: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("DROP COLUMN IF EXISTS {}", quote(pick(c))))
        .collect();
    format!("ALTER TABLE {} {}", t.qualified(), drops.join(", "))
}
