//! The two swaps of the copy engine, one transaction each: the cutover
//! (the copies take the tables' names) and the rollback after it (the
//! originals take them back). They are the same operation with the roles
//! of the two tables exchanged, so they are written once.

use super::*;
use crate::names::qualified;
use crate::ops::views::{drop_views, push_views};
use crate::ops::widen_integer::{attach_sequence, detach_identity};
use crate::plan::copy::{CopyIndex, CopyPartitionIndex, CopyTable};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Cutover: original out, copy in.
    Forward,
    /// Rollback after cutover: copy out, original in.
    Back,
}

/// Every relation a swap locks, in the order it locks them: views first
/// (dependents first: a query on a view locks the view, then its tables),
/// then the tables going out and coming in, then the tables declaring the
/// foreign keys that move.
fn relations(plan: &Plan, way: Way) -> Vec<String> {
    let mut out: Vec<String> = plan
        .views
        .iter()
        .rev()
        .filter(|v| !v.materialized)
        .map(|v| v.qualified())
        .collect();
    for t in tables(plan) {
        out.push(t.qualified());
        out.push(match way {
            Way::Forward => t.qualified_new(),
            Way::Back => t.qualified_old(),
        });
    }
    with_declaring_tables(plan, out)
}

/// The tables a cutover locks (for the blocker check and autovacuum).
pub fn locked_tables(plan: &Plan) -> Vec<String> {
    with_declaring_tables(plan, tables(plan).iter().map(|t| t.qualified()).collect())
}

/// `out` and then every table declaring a foreign key that moves.
fn with_declaring_tables(plan: &Plan, mut out: Vec<String>) -> Vec<String> {
    for fk in plan.copy.iter().flat_map(|c| &c.foreign_keys) {
        if !out.contains(&fk.table) {
            out.push(fk.table.clone());
        }
    }
    out
}

/// Renames an index, or for a key constraint the constraint: they share
/// the name, and renaming the constraint renames both.
fn rename_index(
    s: &mut Vec<String>,
    schema: &str,
    table: &str,
    is_constraint: bool,
    from: &str,
    to: &str,
) {
    if is_constraint {
        s.push(format!(
            "ALTER TABLE {table} RENAME CONSTRAINT {} TO {}",
            quote(from),
            quote(to)
        ));
    } else {
        s.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            qualified(schema, from),
            quote(to)
        ));
    }
}

/// Partitions attached or detached while the migration ran are refused
/// here, under the swap's lock: the other tree does not have them (nor
/// their rows, for an attached one). The swap fails and changes nothing.
fn assert_same_partitions(plan: &Plan, t: &CopyTable, way: Way) -> String {
    let remedy = match way {
        Way::Forward => format!(
            "roll back with `pgshift rollback {}`, attach or detach, and apply again",
            plan.migration
        ),
        Way::Back => {
            "undo the attach or detach made since cutover, and run the rollback again".to_string()
        }
    };
    let mut planned: Vec<String> = t
        .partitions
        .iter()
        .map(|p| format!("{}.{}", p.schema, p.name))
        .collect();
    planned.sort();
    format!(
        "DO $pgshift$\nDECLARE found text;\nBEGIN\n  \
         SELECT string_agg(n.nspname || '.' || c.relname, ', ' ORDER BY n.nspname || '.' || c.relname) INTO found\n  \
         FROM pg_partition_tree({root}::regclass) p JOIN pg_class c ON c.oid = p.relid\n  \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.level > 0;\n  \
         IF found IS DISTINCT FROM {expected} THEN RAISE EXCEPTION 'the partitions of % changed while migration % ran (now: %; planned: %): \
         pgshift does not follow partitions attached or detached after it started. Nothing was changed: %', \
         {display}, {name}, found, {expected}, {remedy}; END IF;\nEND\n$pgshift$",
        root = literal(&t.qualified()),
        expected = literal(&planned.join(", ")),
        display = literal(&t.display()),
        name = literal(&plan.migration),
        remedy = literal(&remedy),
    )
}

fn swap(plan: &Plan, way: Way, mark_phase: &str) -> Vec<String> {
    let mut s = vec![format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        relations(plan, way).join(", ")
    )];
    let ours: Vec<(String, String)> = tables(plan)
        .iter()
        .flat_map(|t| {
            std::iter::once(t.qualified())
                .chain(t.partitions.iter().map(|p| p.qualified()))
                .flat_map(|table| {
                    [&t.trigger, &t.truncate_trigger].map(|n| (table.clone(), n.clone()))
                })
        })
        .collect();
    s.push(assert_triggers_always(
        plan,
        &ours,
        match way {
            Way::Forward => Guarded::Cutover,
            Way::Back => Guarded::Rollback,
        },
    ));
    for t in tables(plan).iter().filter(|t| t.partitioned) {
        s.push(assert_same_partitions(plan, t, way));
    }
    // Routines made again are not checked against the new types here, as
    // pg_dump's restore does not: a body that no longer fits fails when
    // it is called, as it would after the blocking ALTER, not the swap.
    if tables(plan).iter().any(|t| !t.routines.is_empty()) {
        s.push("SET LOCAL check_function_bodies = off".into());
    }
    // The last writes, under the lock: nobody can add more.
    for t in tables(plan) {
        let replay = match way {
            Way::Forward => &t.replay_forward,
            Way::Back => &t.replay_back,
        };
        s.push(format!("SELECT {replay}(NULL)"));
    }
    drop_views(&mut s, plan);
    for t in tables(plan) {
        s.extend(detach_capture(t, &t.qualified()));
        // The table's own triggers leave with the name and come back on the
        // table that takes it, below.
        for trg in &t.triggers {
            s.push(format!(
                "DROP TRIGGER {} ON {}",
                quote(&trg.name),
                t.qualified()
            ));
        }
    }
    let fks = plan.copy.iter().flat_map(|c| &c.foreign_keys);
    for fk in fks.clone() {
        s.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            fk.table,
            quote(&fk.name)
        ));
    }
    // Routines on the row type: their signatures name the type of the
    // table that has the name now, before the renames. A routine on two of
    // the tables' types is one routine.
    let routines = || {
        let mut seen: Vec<&str> = Vec::new();
        tables(plan)
            .iter()
            .flat_map(|t| &t.routines)
            .filter(move |r| {
                let new = !seen.contains(&r.signature.as_str());
                seen.push(&r.signature);
                new
            })
    };
    for r in routines().filter(|r| r.drop) {
        s.push(format!("DROP ROUTINE {}", r.signature));
    }
    // Out first: its names must be free before the incoming table takes them.
    for t in tables(plan) {
        let (parked, parked_table): (fn(&CopyIndex) -> String, &String) = match way {
            Way::Forward => (|ix| ix.old_name.clone(), &t.old_name),
            Way::Back => (|ix| ix.new_name.clone(), &t.new_name),
        };
        for ix in &t.indexes {
            rename_index(
                &mut s,
                &t.schema,
                &t.qualified(),
                ix.constraint.is_some(),
                &ix.name,
                &parked(ix),
            );
        }
        for x in &t.statistics {
            let parked = match way {
                Way::Forward => &x.old_name,
                Way::Back => &x.new_name,
            };
            s.push(format!(
                "ALTER STATISTICS {} RENAME TO {}",
                qualified(&x.schema, &x.name),
                quote(parked)
            ));
        }
        s.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            t.qualified(),
            quote(parked_table)
        ));
        for p in &t.partitions {
            let (parked_part, parked_index): (&String, fn(&CopyPartitionIndex) -> &String) =
                match way {
                    Way::Forward => (&p.old_name, |ix| &ix.old_name),
                    Way::Back => (&p.new_name, |ix| &ix.new_name),
                };
            for ix in &p.indexes {
                rename_index(
                    &mut s,
                    &p.schema,
                    &p.qualified(),
                    ix.constraint.is_some(),
                    &ix.name,
                    parked_index(ix),
                );
            }
            s.push(format!(
                "ALTER TABLE {} RENAME TO {}",
                p.qualified(),
                quote(parked_part)
            ));
        }
    }
    for t in tables(plan) {
        let (incoming_table, incoming): (String, fn(&CopyIndex) -> String) = match way {
            Way::Forward => (t.qualified_new(), |ix| ix.new_name.clone()),
            Way::Back => (t.qualified_old(), |ix| ix.old_name.clone()),
        };
        for ix in &t.indexes {
            rename_index(
                &mut s,
                &t.schema,
                &incoming_table,
                ix.constraint.is_some(),
                &incoming(ix),
                &ix.name,
            );
        }
        for x in &t.statistics {
            let incoming = match way {
                Way::Forward => &x.new_name,
                Way::Back => &x.old_name,
            };
            s.push(format!(
                "ALTER STATISTICS {} RENAME TO {}",
                qualified(&x.schema, incoming),
                quote(&x.name)
            ));
        }
        s.push(format!(
            "ALTER TABLE {incoming_table} RENAME TO {}",
            quote(&t.name)
        ));
        for p in &t.partitions {
            let (incoming_part, incoming_index): (String, fn(&CopyPartitionIndex) -> &String) =
                match way {
                    Way::Forward => (p.qualified_new(), |ix| &ix.new_name),
                    Way::Back => (p.qualified_old(), |ix| &ix.old_name),
                };
            for ix in &p.indexes {
                rename_index(
                    &mut s,
                    &p.schema,
                    &incoming_part,
                    ix.constraint.is_some(),
                    incoming_index(ix),
                    &ix.name,
                );
            }
            s.push(format!(
                "ALTER TABLE {incoming_part} RENAME TO {}",
                quote(&p.name)
            ));
            if way == Way::Forward && p.pause_autovacuum {
                s.push(format!(
                    "ALTER TABLE {} RESET (autovacuum_enabled)",
                    p.qualified()
                ));
            }
        }
        for trg in &t.triggers {
            s.extend(trg.create.iter().cloned());
        }
        // The original kept its own; the copy gets them now, unscanned.
        if way == Way::Forward {
            for (name, definition) in &t.not_valid_checks {
                s.push(format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
                    t.qualified(),
                    quote(name)
                ));
            }
        }
        if way == Way::Forward && t.pause_autovacuum {
            s.push(format!(
                "ALTER TABLE {} RESET (autovacuum_enabled)",
                t.qualified()
            ));
        }
    }
    // Sequences follow the table that now has the name; a widened serial
    // changes type with its column. An identity leaves the table going out
    // (DROP IDENTITY drops its sequence, so where it stood is kept in a
    // setting) and is made again, same name and options, on the one coming in.
    for (ti, t) in tables(plan).iter().enumerate() {
        let outgoing = match way {
            Way::Forward => t.qualified_old(),
            Way::Back => t.qualified_new(),
        };
        let widened = plan.table(t.oid).into_iter().flat_map(|tp| {
            tp.columns.iter().filter_map(move |c| {
                let seq = c.sequence.as_ref()?;
                let (sequence_type, max) = match way {
                    Way::Forward => ("bigint".to_string(), seq.max),
                    Way::Back => (
                        seq.data_type.clone(),
                        if seq.max == i64::MAX {
                            c.range().1
                        } else {
                            seq.max
                        },
                    ),
                };
                Some((&c.name, seq, sequence_type, max))
            })
        });
        let kept = t
            .owned_sequences
            .iter()
            .map(|(column, seq)| (column, seq, seq.data_type.clone(), seq.max));
        for (si, (column, seq, sequence_type, max)) in widened.chain(kept).enumerate() {
            let setting = format!("pgshift.seq_{ti}_{si}");
            if !seq.identity.is_empty() {
                detach_identity(&mut s, &outgoing, column, seq, &setting);
            }
            attach_sequence(
                &mut s,
                &t.qualified(),
                column,
                seq,
                &sequence_type,
                max,
                &setting,
            );
        }
    }
    // Once every table has its new name: a body may read several of them.
    for r in routines() {
        s.extend(r.create.iter().cloned());
    }
    for fk in fks {
        s.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            fk.table,
            quote(&fk.name),
            fk.definition
        ));
        if let Some(comment) = &fk.comment {
            s.push(format!(
                "COMMENT ON CONSTRAINT {} ON {} IS {}",
                quote(&fk.name),
                fk.table,
                literal(comment)
            ));
        }
    }
    push_views(&mut s, plan);
    if way == Way::Forward {
        for t in tables(plan) {
            s.extend(attach_capture(t, &t.qualified(), &t.capture_back));
        }
    }
    s.push(mark_phase.to_string());
    s
}

/// The cutover: the copies take the tables' names. The original tables
/// stay (renamed) and follow every write through the reverse capture.
pub fn cutover(plan: &Plan, mark_phase: &str) -> Step {
    let s = swap(plan, Way::Forward, mark_phase);
    let fks = plan.copy.as_ref().map_or(0, |c| c.foreign_keys.len());
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let triggers: usize = tables(plan).iter().map(|t| t.triggers.len()).sum();
    let routines: usize = tables(plan).iter().map(|t| t.routines.len()).sum();
    let mut also = String::new();
    if triggers > 0 {
        also.push_str(&format!(", move {}", count(triggers, "trigger")));
    }
    if routines > 0 {
        also.push_str(&format!(", make {} again", count(routines, "routine")));
    }
    step(
        "cutover",
        format!(
            "one transaction: lock {}, replay the last writes, swap each table for its copy, move {}, sequences and {}{also}; \
             the originals then follow every write, for rollback",
            locked_tables(plan).join(", "),
            count(fks, "foreign key"),
            count(plan.views.len(), "view"),
        ),
        s.join(";\n"),
        ACCESS_EXCLUSIVE,
        Action::Transaction { statements: s },
    )
}

/// Rollback after cutover: the writes made since are replayed onto the
/// originals, which take their names back.
pub fn swap_back(plan: &Plan, mark_phase: &str) -> Step {
    let s = swap(plan, Way::Back, mark_phase);
    step(
        "rollback",
        "one transaction: replay the writes made since cutover onto the original tables and swap them back".into(),
        s.join(";\n"),
        ACCESS_EXCLUSIVE,
        Action::Transaction { statements: s },
    )
}
