//! Widening integer keys to bigint online: shadow column, sync trigger,
//! batched backfill, concurrent indexes, validated constraints, and a
//! cutover transaction that only renames and re-attaches.
//!
//! Every step is safe to run again after a crash (`IF NOT EXISTS`,
//! `CREATE OR REPLACE`, or a `skip_if` catalog check), which is what makes
//! `resume` and `rollback` work from any point.

mod abort;
pub mod revert;
mod swap;
mod sync;

use super::*;
use crate::names::{literal, qualified, quote};
use crate::ops::views::{drop_views, push_views};
use crate::plan::{ColumnPlan, IndexPlan, Plan, SequencePlan, TablePlan};
pub use abort::abort;
use swap::{add_key_constraint, detach, drop_columns, named_index_marks, swap_column, Direction};
pub(in crate::ops) use swap::{attach_sequence, detach_identity};
pub use swap::{cutover, locked_tables};

fn constraint_exists(table: &TablePlan, name: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {}::regclass AND conname = {})",
        literal(&table.qualified()),
        literal(name)
    )
}

fn fk_exists(table: &str, name: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {}::regclass AND conname = {})",
        literal(table),
        literal(name)
    )
}

/// expand: shadow columns and the triggers that keep them in sync.
pub fn expand(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in &plan.tables {
        let adds: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "ADD COLUMN IF NOT EXISTS {} {}{}",
                    quote(&c.shadow),
                    match &c.conversion {
                        Some(conv) => match &conv.collation {
                            Some(collation) => format!("{} COLLATE {collation}", conv.to_type),
                            None => conv.to_type.clone(),
                        },
                        None => "bigint".to_string(),
                    },
                    if c.shadow_not_null {
                        " NOT NULL DEFAULT 0"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let how = if t.columns.iter().any(|c| c.shadow_not_null) {
            "NOT NULL with a constant default until cutover: a catalog change, no rewrite, no scan"
        } else {
            "no default: a catalog change, no rewrite"
        };
        steps.push(step(
            "expanding",
            format!(
                "add shadow column{} to {} ({how})",
                if t.columns.len() > 1 { "s" } else { "" },
                t.display()
            ),
            format!("ALTER TABLE {} {}", t.qualified(), adds.join(", ")),
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
        // Privileges, comment, statistics target and options belong to the
        // column, not its name: give them to the shadow column now, or they
        // stay behind.
        let mut carry = Vec::new();
        for c in &t.columns {
            for p in &c.privileges {
                carry.push(crate::sqltext::grant(p, Some(&c.shadow), &t.qualified()));
            }
            if let Some(comment) = &c.comment {
                carry.push(format!(
                    "COMMENT ON COLUMN {}.{} IS {}",
                    t.qualified(),
                    quote(&c.shadow),
                    literal(comment)
                ));
            }
            if c.statistics > 0 {
                carry.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET STATISTICS {}",
                    t.qualified(),
                    quote(&c.shadow),
                    c.statistics
                ));
            }
            if !c.options.is_empty() {
                carry.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET ({})",
                    t.qualified(),
                    quote(&c.shadow),
                    c.options.join(", ")
                ));
            }
        }
        if !carry.is_empty() {
            steps.push(step(
                "expanding",
                format!("give the shadow column{} of {} the old column's privileges, comment and statistics target", if t.columns.len() > 1 { "s" } else { "" }, t.display()),
                carry.join(";\n"),
                SHARE_UPDATE_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            ));
        }
        let copies = forward_copies(t);
        let log = sync::MisfitLog::of(t);
        let note = converts(t).then_some(log.note.as_str());
        let mut sql = sync::create(t, &t.sync_function, &t.sync_trigger, &copies, note);
        let triggers = sql.split_off(2);
        if converts(t) {
            let mut first = crate::catalog::rehearse::apply_settings(&plan.conversion_settings);
            first.extend(log.create());
            sql.splice(0..0, first);
            sql.push(sync::check_function(t, &check_function(t), &copies));
        }
        steps.push(step(
            "expanding",
            format!("create the sync functions of {}", t.display()),
            sql.join(";\n"),
            NONE,
            Action::Ddl { skip_if: None },
        ));
        steps.push(step(
            "expanding",
            format!(
                "sync triggers on {}: copy on INSERT, and after an UPDATE that changes {}; the backfill's own updates fire neither",
                t.display(),
                old_columns(t)
            ),
            triggers.join(";\n"),
            SHARE_ROW_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
    }
    steps
}

/// Whether `t` has a type change other than an integer widening.
pub(crate) fn converts(t: &TablePlan) -> bool {
    t.columns.iter().any(|c| c.conversion.is_some())
}

/// The function that checks a converted row (see [`sync::check_function`]).
fn check_function(t: &TablePlan) -> String {
    crate::names::bounded(&format!("{}_chk", t.sync_function))
}

/// A call of the check function on `row` (a row of `t`, named by the
/// table's name in a query over it): `pending` as the function says.
pub(crate) fn check_call(t: &TablePlan, row: &str, pending: bool) -> String {
    format!(
        "{}({row}, {pending})",
        qualified(crate::names::STATE_SCHEMA, &check_function(t))
    )
}

/// What a conversion leaves in pgshift's schema besides the sync: the
/// check function, the misfit log and its function (idempotent drops).
pub(crate) fn conversion_drops(t: &TablePlan) -> Vec<String> {
    if !converts(t) {
        return Vec::new();
    }
    std::iter::once(sync::drop_check_function(t, &check_function(t)))
        .chain(sync::MisfitLog::of(t).drop())
        .collect()
}

/// The first noted row of `t` whose value does not convert (see
/// [`sync::misfit_query`]); None when `t` converts nothing.
pub fn misfit_query(t: &TablePlan) -> Option<String> {
    converts(t).then(|| sync::misfit_query(t, &check_call(t, &quote(&t.name), true)))
}

/// The columns `expr` reads, or `column` when it cannot be read.
fn reads(expr: &str, column: &str) -> Vec<String> {
    match crate::plan::columns_used(expr) {
        Some(used) if !used.is_empty() => used,
        _ => vec![column.to_string()],
    }
}

/// Before cutover each shadow column follows its column, converted for a
/// type change.
fn forward_copies(t: &TablePlan) -> Vec<sync::Copy<'_>> {
    t.columns
        .iter()
        .map(|c| sync::Copy {
            target: &c.shadow,
            source: &c.name,
            range: None,
            convert: c.conversion.as_ref().map(|conv| sync::Convert {
                expr: conv.forward.clone(),
                to_type: conv.to_type.clone(),
                reads: reads(&conv.forward, &c.name),
            }),
        })
        .collect()
}

/// From cutover on each retired column follows the new one: narrowed back
/// to the old integer type, or converted back (NULL where a value does not
/// convert, or where there is no way back: a rollback then refuses).
fn reverse_copies(t: &TablePlan) -> Vec<sync::Copy<'_>> {
    t.columns
        .iter()
        .map(|c| sync::Copy {
            target: &c.retired,
            source: &c.name,
            range: c.conversion.is_none().then(|| c.range()),
            convert: c.conversion.as_ref().map(|conv| {
                let expr = conv.back.clone().unwrap_or_else(|| "NULL".to_string());
                sync::Convert {
                    reads: reads(&expr, &c.name),
                    expr,
                    to_type: c.from_type.clone(),
                }
            }),
        })
        .collect()
}

fn old_columns(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// backfill: one step per table.
pub fn backfill(plan: &Plan) -> Vec<Step> {
    plan.tables
        .iter()
        .map(|t| {
            let passes = if t.backfill_passes == 2 {
                ", in two passes over each worker's key range: even keys first, then the rest, \
                 whose new versions mostly fit where the first pass's old ones were pruned (HOT)"
            } else {
                ""
            };
            step(
                "backfilling",
                format!(
                    "copy {} into the shadow column{} in keyset batches (about {} rows){passes}",
                    t.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if t.columns.len() > 1 { "s" } else { "" },
                    t.estimated_rows
                ),
                crate::backfill::batch_sql(t, true),
                ROW_EXCLUSIVE,
                Action::Backfill { table: t.oid },
            )
        })
        .collect()
}

/// validate: a verification pass, indexes, constraints, statistics.
///
/// Three stages, so that no step waits for a lock behind one of our own
/// long steps (a waiting ACCESS EXCLUSIVE request queues the application
/// behind it): first the long scans that block nobody, each table in its
/// own lane (verification, concurrent index builds); then, one by one, the
/// catalog-only `ADD … NOT VALID` statements that take brief strong locks;
/// then the validations and statistics, again per table in parallel (a
/// foreign key validates in the lane of its referencing table: it only takes
/// ROW SHARE on the referenced one).
pub fn validate(plan: &Plan) -> Vec<Step> {
    let in_lane = |oid: u32, mut s: Step| {
        s.lane = Some(Lane::table(oid));
        s
    };
    let mut scans = Vec::new();
    let mut brief = Vec::new();
    let mut checks = Vec::new();
    for t in &plan.tables {
        // `ENABLE TRIGGER USER` brings the sync back as an ordinary trigger,
        // after `DISABLE TRIGGER USER` let writes past it: ALWAYS again,
        // then the verification below finds what it missed. After this, the
        // cutover refuses a sync that is not ALWAYS.
        let names = sync::trigger_names(&t.sync_trigger);
        scans.push(in_lane(
            t.oid,
            step(
                "validating",
                format!(
                    "make the sync triggers of {} fire ALWAYS again if an owner re-enabled them as ordinary triggers",
                    t.display()
                ),
                names
                    .iter()
                    .map(|n| format!("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}", t.qualified(), quote(n)))
                    .collect::<Vec<_>>()
                    .join(";\n"),
                SHARE_ROW_EXCLUSIVE,
                Action::Ddl {
                    skip_if: Some(format!(
                        "SELECT count(*) = 2 FROM pg_trigger WHERE tgrelid = {}::regclass AND tgname IN ({}, {}) AND tgenabled = 'A'",
                        literal(&t.qualified()),
                        literal(&names[0]),
                        literal(&names[1])
                    )),
                },
            ),
        ));
        scans.push(in_lane(
            t.oid,
            step(
                "validating",
                format!(
                    "verify no row of {} has new IS DISTINCT FROM old",
                    t.display()
                ),
                format!(
                    "SELECT count(*) FROM {} WHERE {}",
                    t.qualified(),
                    differs(t)
                ),
                NONE,
                Action::Verify { table: t.oid },
            ),
        ));
        for ix in &t.indexes {
            scans.push(in_lane(
                t.oid,
                step(
                    "validating",
                    format!(
                        "build index {} concurrently on the shadow column (becomes {} at cutover)",
                        ix.shadow, ix.name
                    ),
                    ix.create_sql.clone(),
                    SHARE_UPDATE_EXCLUSIVE,
                    Action::BuildIndex {
                        schema: t.schema.clone(),
                        index: ix.shadow.clone(),
                    },
                ),
            ));
        }
        for c in t
            .columns
            .iter()
            .filter(|c| c.not_null && !c.shadow_not_null)
        {
            brief.push(step(
                "validating",
                if c.named_not_null() {
                    format!("NOT NULL of {}.{} added NOT VALID (validated without blocking writes, renamed at cutover)", t.display(), c.name)
                } else {
                    format!("NOT NULL of {}.{} as a NOT VALID check (makes SET NOT NULL at cutover instant)", t.display(), c.name)
                },
                add_not_null_proof(&t.qualified(), &c.not_null_check, &c.shadow, c.named_not_null()),
                ACCESS_EXCLUSIVE,
                Action::Ddl { skip_if: Some(constraint_exists(t, &c.not_null_check)) },
            ));
            checks.push(in_lane(
                t.oid,
                validate_step(&t.qualified(), &c.not_null_check),
            ));
        }
        for chk in &t.checks {
            brief.push(step(
                "validating",
                format!("rebuild check {} on the shadow column", chk.name),
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                    t.qualified(),
                    quote(&chk.shadow),
                    chk.definition
                ),
                ACCESS_EXCLUSIVE,
                Action::Ddl {
                    skip_if: Some(constraint_exists(t, &chk.shadow)),
                },
            ));
            checks.push(in_lane(t.oid, validate_step(&t.qualified(), &chk.shadow)));
        }
    }
    for fk in &plan.foreign_keys {
        brief.push(step(
            "validating",
            format!(
                "rebuild foreign key {} on the new columns (references {}), same actions and deferrability",
                fk.name, fk.referenced_table
            ),
            format!("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID", fk.table, quote(&fk.shadow), fk.definition),
            SHARE_ROW_EXCLUSIVE,
            Action::Ddl { skip_if: Some(fk_exists(&fk.table, &fk.shadow)) },
        ));
        if fk.was_validated {
            let validate = validate_step(&fk.table, &fk.shadow);
            // Its own lane when the referencing table is not being widened.
            checks.push(in_lane(fk.table_oid, validate));
        }
    }
    for t in &plan.tables {
        let shadows: Vec<String> = t.columns.iter().map(|c| quote(&c.shadow)).collect();
        checks.push(in_lane(
            t.oid,
            step(
                "validating",
                format!(
                    "statistics for the shadow column{} of {}",
                    if shadows.len() > 1 { "s" } else { "" },
                    t.display()
                ),
                format!("ANALYZE {} ({})", t.qualified(), shadows.join(", ")),
                SHARE_UPDATE_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            ),
        ));
    }
    scans.extend(brief);
    scans.extend(checks);
    scans
}

/// The rows whose shadow columns are wrong, for the verification: `new IS
/// DISTINCT FROM old` for an integer widening; for a conversion, a shadow
/// that differs from the converted value, or a NULL shadow whose value does
/// not convert or converts to something (the check function says which).
pub fn differs(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| match &c.conversion {
            None => format!("{} IS DISTINCT FROM {}", quote(&c.shadow), quote(&c.name)),
            Some(conv) => format!(
                "CASE WHEN {shadow} IS NULL THEN {} IS NOT NULL \
                 ELSE {shadow}::text IS DISTINCT FROM (CAST({} AS {}))::text END",
                check_call(t, &quote(&t.name), true),
                conv.forward,
                conv.to_type,
                shadow = quote(&c.shadow),
            ),
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The rows a backfill batch still has to write: for a conversion, those
/// whose shadow is NULL (a converted shadow is kept current by the sync; a
/// NULL one is written again, which costs a rewrite of rows whose value
/// converts to NULL and nothing else).
pub fn pending(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| match &c.conversion {
            None => format!("{} IS DISTINCT FROM {}", quote(&c.shadow), quote(&c.name)),
            Some(_) => format!("{} IS NULL", quote(&c.shadow)),
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The `NOT VALID` constraint that proves `column` NOT NULL once validated:
/// on Postgres 18 the NOT NULL itself (`named`), before that a CHECK that
/// lets `SET NOT NULL` skip its scan.
fn add_not_null_proof(table: &str, name: &str, column: &str, named: bool) -> String {
    if named {
        format!(
            "ALTER TABLE {table} ADD CONSTRAINT {} NOT NULL {} NOT VALID",
            quote(name),
            quote(column)
        )
    } else {
        format!(
            "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
            quote(name),
            quote(column)
        )
    }
}

fn validate_step(table: &str, constraint: &str) -> Step {
    step(
        "validating",
        format!("validate {constraint} (scans without blocking writes)"),
        format!(
            "ALTER TABLE {table} VALIDATE CONSTRAINT {}",
            quote(constraint)
        ),
        SHARE_UPDATE_EXCLUSIVE,
        Action::Ddl { skip_if: None },
    )
}

/// finalize: drop the retired columns (and their indexes) and the reverse sync.
pub fn finalize(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in &plan.tables {
        steps.push(step(
            "finalize",
            format!("drop the reverse sync of {}", t.display()),
            sync::drop_triggers(t, &t.reverse_trigger)
                .into_iter()
                .chain(sync::drop_functions(&t.reverse_function))
                .chain(sync::drop_functions(&t.sync_function))
                .chain(conversion_drops(t))
                .collect::<Vec<_>>()
                .join("; "),
            // DROP TRIGGER takes ACCESS EXCLUSIVE, briefly.
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
        let n = t.columns.len();
        let drop_sql = drop_columns(t, |c| &c.retired);
        steps.push(step(
            "finalize",
            format!(
                "drop the retired column{} of {} (catalog change; their indexes go with them)",
                if n > 1 { "s" } else { "" },
                t.display()
            ),
            drop_sql,
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
        let renames: Vec<String> = t
            .columns
            .iter()
            .filter_map(|c| Some(rename_not_null(t, &c.name, c.not_null_name.as_deref()?)))
            .collect();
        if !renames.is_empty() {
            steps.push(step(
                "finalize",
                format!(
                    "give the NOT NULL constraints of {} their original names (Postgres 18 named the new columns' after them)",
                    t.display()
                ),
                renames.join(";\n"),
                ACCESS_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            ));
        }
    }
    steps
}

/// Renames `column`'s NOT NULL constraint to `name` unless it has it: the
/// shadow column's was named after the shadow (`…_pgshift_new_id_not_null`)
/// when it was added, and the original's name is free once finalize
/// dropped the retired column. Idempotent.
pub(super) fn rename_not_null(t: &crate::plan::TablePlan, column: &str, name: &str) -> String {
    let table = literal(&t.qualified());
    format!(
        "DO $pgshift$DECLARE current name; BEGIN\n  \
         SELECT k.conname INTO current FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND k.conkey = ARRAY[a.attnum]\n   \
          WHERE k.conrelid = {table}::regclass AND k.contype = 'n' AND a.attname = {col};\n  \
         IF current IS NOT NULL AND current <> {name_lit} THEN\n    \
         EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', {table}::regclass, current, {name_lit});\n  \
         END IF;\nEND$pgshift$",
        col = literal(column),
        name_lit = literal(name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{incident, plan};

    fn sql_of(steps: &[Step]) -> String {
        steps
            .iter()
            .map(|s| s.sql.as_str())
            .collect::<Vec<_>>()
            .join(";\n")
    }

    #[test]
    fn not_null_shadow_columns_need_no_check_and_lose_their_placeholder_default_at_cutover() {
        let p = plan(&incident(), &[(1, "id")]);
        let expand = sql_of(&expand(&p));
        assert!(
            expand
                .contains("ADD COLUMN IF NOT EXISTS \"pgshift_new_id\" bigint NOT NULL DEFAULT 0"),
            "{expand}"
        );
        let validate = sql_of(&validate(&p));
        assert!(!validate.contains("IS NOT NULL"), "{validate}");
        assert!(!validate.contains("pgshift_nn_"), "{validate}");
        let cutover = cutover(&p, "SELECT 1").sql;
        assert!(
            cutover.contains(
                "ALTER TABLE \"public\".\"scripts\" ALTER COLUMN \"pgshift_new_id\" DROP DEFAULT"
            ),
            "{cutover}"
        );
        assert!(
            cutover.contains("ALTER TABLE \"public\".\"script_runs\" ALTER COLUMN \"pgshift_new_script_id\" DROP DEFAULT"),
            "{cutover}"
        );
        assert!(!cutover.contains("SET NOT NULL"), "{cutover}");
        assert!(!cutover.contains("pgshift_nn_"), "{cutover}");
        // The serial's own default comes back after the placeholder went.
        let dropped = cutover.find("\"pgshift_new_id\" DROP DEFAULT").unwrap();
        let set = cutover.find("SET DEFAULT nextval").unwrap();
        assert!(dropped < set, "{cutover}");
        assert!(!sql_of(&abort(&p)).contains("pgshift_nn_"));
    }

    /// The plan shows the lock each step takes: DROP TRIGGER takes ACCESS
    /// EXCLUSIVE in Postgres 15, not CREATE TRIGGER's SHARE ROW EXCLUSIVE.
    #[test]
    fn steps_that_drop_triggers_say_they_take_access_exclusive() {
        let p = plan(&incident(), &[(1, "id")]);
        let steps: Vec<Step> = finalize(&p).into_iter().chain(abort(&p)).collect();
        let drops: Vec<&Step> = steps
            .iter()
            .filter(|s| s.sql.contains("DROP TRIGGER"))
            .collect();
        assert!(
            drops.len() >= 2,
            "finalize and abort drop the sync triggers"
        );
        for s in drops {
            assert_eq!(s.lock, ACCESS_EXCLUSIVE, "{}", s.description);
        }
    }

    #[test]
    fn the_backfill_step_says_when_it_goes_in_two_passes() {
        let mut p = plan(&incident(), &[(1, "id")]);
        p.tables[0].backfill_passes = 2;
        let steps = backfill(&p);
        assert!(
            steps[0].description.ends_with(
                "in two passes over each worker's key range: even keys first, then the rest, \
                 whose new versions mostly fit where the first pass's old ones were pruned (HOT)"
            ),
            "{}",
            steps[0].description
        );
        assert!(
            !steps[1].description.contains("two passes"),
            "{}",
            steps[1].description
        );
    }

    #[test]
    fn plans_made_with_nullable_shadow_columns_keep_their_not_null_check() {
        let mut p = plan(&incident(), &[(1, "id")]);
        for t in &mut p.tables {
            for c in &mut t.columns {
                c.shadow_not_null = false;
            }
        }
        let expand = sql_of(&expand(&p));

        assert!(!expand.contains("DEFAULT 0"), "{expand}");
        let validate = sql_of(&validate(&p));
        assert!(
            validate.contains("CHECK (\"pgshift_new_id\" IS NOT NULL) NOT VALID"),
            "{validate}"
        );
        assert!(
            validate.contains("VALIDATE CONSTRAINT \"pgshift_nn_scripts_id\""),
            "{validate}"
        );
        let cutover = cutover(&p, "SELECT 1").sql;
        assert!(
            cutover.contains("ALTER COLUMN \"id\" SET NOT NULL"),
            "{cutover}"
        );
        assert!(
            cutover.contains("DROP CONSTRAINT \"pgshift_nn_scripts_id\""),
            "{cutover}"
        );
        assert!(
            !cutover.contains("\"pgshift_new_id\" DROP DEFAULT"),
            "{cutover}"
        );
        assert!(sql_of(&abort(&p)).contains("DROP CONSTRAINT IF EXISTS \"pgshift_nn_scripts_id\""));
    }

    #[test]
    fn on_postgres_18_the_not_null_is_added_not_valid_and_renamed_at_cutover() {
        let mut p = plan(&incident(), &[(1, "id")]);
        for t in &mut p.tables {
            for c in &mut t.columns {
                c.shadow_not_null = false;
                c.not_null_name = Some(format!("{}_{}_not_null", t.name, c.name));
            }
        }
        let validate = sql_of(&validate(&p));
        assert!(
            validate.contains(
                "ADD CONSTRAINT \"pgshift_nn_scripts_id\" NOT NULL \"pgshift_new_id\" NOT VALID"
            ),
            "{validate}"
        );
        assert!(
            !validate.contains("CHECK (\"pgshift_new_id\""),
            "{validate}"
        );
        let cutover = cutover(&p, "SELECT 1").sql;
        // The parked column's constraint goes first, so its name is free.
        let dropped = cutover
            .find("ALTER COLUMN \"pgshift_old_id\" DROP NOT NULL")
            .expect(&cutover);
        let renamed = cutover.find("'scripts_id_not_null'").expect(&cutover);
        assert!(dropped < renamed, "{cutover}");
        assert!(
            cutover.contains("DROP CONSTRAINT IF EXISTS \"pgshift_nn_scripts_id\""),
            "{cutover}"
        );
        let prepare = sql_of(&revert::prepare(&p));
        assert!(
            prepare.contains("NOT NULL \"pgshift_old_id\" NOT VALID"),
            "{prepare}"
        );
    }
}
