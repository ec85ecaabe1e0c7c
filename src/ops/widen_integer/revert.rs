//! Rollback after cutover: put the original integer columns back, losing no
//! write made since (the reverse trigger kept them current), then drop the
//! bigint columns.
//!
//! Like the forward path, the slow parts run first without blocking
//! (unique indexes built concurrently on the old columns, constraints added
//! NOT VALID and validated), and one short transaction swaps back.

use super::*;
use crate::names::shadow;
use crate::ops::views::push_views;

/// Rewrites SQL that names shadow columns so it names the retired ones.
fn on_retired(plan: &Plan, sql: &str) -> String {
    let mut out = sql.to_string();
    for t in &plan.tables {
        for c in &t.columns {
            out = out.replace(&quote(&c.shadow), &quote(&c.retired));
        }
    }
    out
}

/// Per widened column: (table, column, query returning the count and the
/// smallest key of rows whose value no longer fits the old type).
pub fn misfits(plan: &Plan) -> Vec<(String, String, String)> {
    plan.tables
        .iter()
        .flat_map(|t| {
            t.columns.iter().map(move |c| {
                // A converted value has no order to speak of: the row's key.
                let first = if c.conversion.is_some() {
                    format!("min({})", t.key_text(None))
                } else {
                    format!("min({})::text", quote(&c.name))
                };
                (
                    t.display(),
                    c.name.clone(),
                    format!(
                        "SELECT count(*), {first} FROM {} WHERE {old} IS NULL AND {new} IS NOT NULL",
                        t.qualified(),
                        new = quote(&c.name),
                        old = quote(&c.retired)
                    ),
                )
            })
        })
        .collect()
}

/// Non-blocking preparation: unique indexes, NOT NULL checks, checks and
/// foreign keys on the retired columns.
pub fn prepare(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in &plan.tables {
        for ix in t.indexes.iter().filter(|ix| ix.constraint.is_some()) {
            let name = shadow("rb", &ix.name);
            let sql =
                on_retired(plan, &ix.create_sql).replacen(&quote(&ix.shadow), &quote(&name), 1);
            steps.push(step(
                "rollback",
                format!(
                    "build the unique index of {} on the old column again, concurrently",
                    ix.name
                ),
                sql,
                SHARE_UPDATE_EXCLUSIVE,
                Action::BuildIndex {
                    schema: t.schema.clone(),
                    index: name,
                },
            ));
        }
    }
    for t in &plan.tables {
        for c in t.columns.iter().filter(|c| c.not_null) {
            let check = not_null_check(t, c);
            steps.push(step(
                "rollback",
                format!(
                    "NOT NULL of the old {}.{} as a NOT VALID {}",
                    t.display(),
                    c.name,
                    if c.named_not_null() {
                        "constraint"
                    } else {
                        "check"
                    }
                ),
                super::add_not_null_proof(&t.qualified(), &check, &c.retired, c.named_not_null()),
                ACCESS_EXCLUSIVE,
                Action::Ddl {
                    skip_if: Some(constraint_exists(t, &check)),
                },
            ));
            steps.push(validate_step(&t.qualified(), &check));
        }
        for chk in &t.checks {
            let name = shadow("rb", &chk.name);
            steps.push(step(
                "rollback",
                format!("check {} on the old column again", chk.name),
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                    t.qualified(),
                    quote(&name),
                    on_retired(plan, &chk.definition)
                ),
                ACCESS_EXCLUSIVE,
                Action::Ddl {
                    skip_if: Some(constraint_exists(t, &name)),
                },
            ));
            steps.push(validate_step(&t.qualified(), &name));
        }
    }
    for fk in &plan.foreign_keys {
        let name = shadow("rb", &fk.name);
        steps.push(step(
            "rollback",
            format!("foreign key {} on the old columns again", fk.name),
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                fk.table,
                quote(&name),
                on_retired(plan, &fk.definition)
            ),
            SHARE_ROW_EXCLUSIVE,
            Action::Ddl {
                skip_if: Some(fk_exists(&fk.table, &name)),
            },
        ));
        if fk.was_validated {
            steps.push(validate_step(&fk.table, &name));
        }
    }
    steps
}

/// The swap-back transaction; it marks the phase itself.
pub fn swap_back(plan: &Plan, mark_phase: &str) -> Step {
    let mut s: Vec<String> = Vec::new();
    let tables = locked_tables(plan);
    detach(
        &mut s,
        plan,
        &tables,
        |t| &t.reverse_trigger,
        Guarded::Rollback,
    );
    for t in &plan.tables {
        for ix in &t.indexes {
            match &ix.constraint {
                Some((name, _)) => s.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    t.qualified(),
                    quote(name)
                )),
                None => {
                    s.push(format!(
                        "ALTER INDEX {} RENAME TO {}",
                        qualified(&t.schema, &ix.name),
                        quote(&ix.shadow)
                    ));
                    s.push(format!(
                        "ALTER INDEX {} RENAME TO {}",
                        qualified(&t.schema, &ix.retired),
                        quote(&ix.name)
                    ));
                }
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
                Direction::Back,
            );
        }
    }
    for t in &plan.tables {
        for ix in &t.indexes {
            if let Some((name, kind)) = &ix.constraint {
                s.push(add_key_constraint(
                    t,
                    ix,
                    name,
                    kind,
                    &shadow("rb", &ix.name),
                ));
            }
            s.extend(named_index_marks(t, ix));
        }
        for chk in &t.checks {
            s.push(format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                t.qualified(),
                quote(&shadow("rb", &chk.name)),
                quote(&chk.name)
            ));
        }
    }
    for fk in &plan.foreign_keys {
        s.push(format!(
            "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
            fk.table,
            quote(&shadow("rb", &fk.name)),
            quote(&fk.name)
        ));
    }
    push_views(&mut s, plan);
    s.push(mark_phase.to_string());
    step(
        "rollback",
        format!("one transaction: lock {}, swap the original columns back with their keys, sequences and views", tables.join(", ")),
        s.join(";\n"),
        ACCESS_EXCLUSIVE,
        Action::Transaction { statements: s },
    )
}

/// The `NOT VALID` constraint (a CHECK, or the NOT NULL itself on
/// Postgres 18) that gives the original column NOT NULL back without a scan.
pub(super) fn not_null_check(t: &TablePlan, c: &ColumnPlan) -> String {
    shadow("rbnn", &format!("{}_{}", t.name, c.name))
}

/// After the swap: drop the bigint columns (their indexes go with them)
/// and pgshift's functions. Idempotent.
pub fn cleanup(plan: &Plan) -> Vec<Step> {
    plan.tables
        .iter()
        .map(|t| {
            let n = t.columns.len();
            let drop_sql = drop_columns(t, |c| &c.shadow);
            step(
                "rollback",
                format!(
                    "drop the new column{} of {} and pgshift's functions",
                    if n > 1 { "s" } else { "" },
                    t.display()
                ),
                std::iter::once(drop_sql)
                    .chain(super::sync::drop_functions(&t.reverse_function))
                    .chain(super::sync::drop_functions(&t.sync_function))
                    .chain(super::conversion_drops(t))
                    .collect::<Vec<_>>()
                    .join("; "),
                ACCESS_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            )
        })
        .collect()
}
