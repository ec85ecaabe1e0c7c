//! The copy-and-swap engine: a copy of each table with the new column types,
//! filled without row locks while a trigger logs the keys the application
//! changes; the log is replayed onto the copy, and the cutover replays the
//! rest and swaps the tables' names in one short transaction. From cutover
//! to finalize the same capture runs the other way, so a rollback replays
//! every write made since onto the original and swaps back: nothing is lost.
//!
//! Ordering that correctness rests on:
//! - The capture trigger exists before the copy's first snapshot. Creating
//!   it waits for every transaction writing the table, and every later
//!   write logs its key; so a row is either in the copy's snapshot with its
//!   last change, or its key is in the log.
//! - Nothing is replayed while the copy runs: a replayed row would be
//!   copied a second time by a later batch. Replays start once the copy is
//!   done and the primary key is built.
//! - A replay deletes the log rows it takes and reads the source after
//!   that, in a later statement: a write committed in between is read, and
//!   its log row stays for the next round.
//! - A unique index other than the key is built after every row holding a
//!   value twice left the copy for the log, and each replay evicts what its
//!   fresh rows collide with (see `UniqueKey`).
//!
//! Every step can run again after a crash (`IF NOT EXISTS`, `OR REPLACE`,
//! `skip_if`), and each batch of the copy commits with its cursor.

mod capture;
mod swap;

pub(crate) use capture::key_expression;
use capture::{
    attach_capture, capture_function, detach_capture, refuse_truncate_function, replay_function,
};
pub use swap::{cutover, locked_tables, swap_back};

use super::*;
use crate::names::{literal, qualified, quote};
use crate::plan::copy::{CopyTable, Direction};
use crate::plan::Plan;

/// Log entries one replay round takes.
pub const REPLAY_BATCH: i64 = 10_000;

/// Log entries the catch-up before a swap may leave to the swap, which
/// replays them under its lock: about 10 ms of replay. Stopping at "less
/// than a round" instead left 6,200 entries to a 10M cutover, which held
/// its lock 570 ms (about 90 µs an entry).
pub const LEFT_FOR_THE_LOCK: i64 = 100;

/// `autovacuum_vacuum_cost_delay`'s default: how a paced migration paces
/// its VACUUM of the copies.
const AUTOVACUUM_COST_DELAY_MS: u32 = 2;

fn tables(plan: &Plan) -> &[CopyTable] {
    plan.copy.as_ref().map_or(&[], |c| c.tables.as_slice())
}

fn constraint_exists(table: &str, name: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass({}) AND conname = {})",
        literal(table),
        literal(name)
    )
}

/// A step that runs `statements` in one transaction.
fn transaction(
    phase: &'static str,
    description: String,
    lock: &'static str,
    statements: Vec<String>,
) -> Step {
    step(
        phase,
        description,
        statements.join(";\n"),
        lock,
        Action::Transaction { statements },
    )
}

/// expand: the empty copies, the logs, the capture triggers.
pub fn expand(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in tables(plan) {
        steps.push(transaction(
            "expanding",
            format!(
                "create {} as an empty copy of {} with the new column types, its owner, privileges, comments and storage options",
                t.new_name,
                t.display()
            ),
            NONE,
            t.create.clone(),
        ));
        let mut s = Vec::new();
        for (log, way) in [
            (&t.log_forward, Direction::Forward),
            (&t.log_back, Direction::Back),
        ] {
            let columns: Vec<String> = t
                .key_columns()
                .iter()
                .zip(t.log_columns())
                .map(|(k, c)| format!("{c} {} NOT NULL", k.log_type_of(way)))
                .collect();
            s.push(format!(
                "CREATE TABLE IF NOT EXISTS {log} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {})",
                columns.join(", ")
            ));
        }
        s.push(capture_function(t, &t.capture_forward, &t.log_forward));
        s.push(capture_function(t, &t.capture_back, &t.log_back));
        // Dropped first: OR REPLACE cannot rename a parameter, and no
        // object depends on a replay function.
        for f in [&t.replay_forward, &t.replay_back] {
            s.push(format!("DROP FUNCTION IF EXISTS {f}(bigint)"));
        }
        if !t.conversions.is_empty() {
            s.extend(crate::catalog::rehearse::apply_settings(
                &plan.conversion_settings,
            ));
        }
        s.push(replay_function(
            t,
            &t.replay_forward,
            &t.log_forward,
            &t.qualified(),
            &t.qualified_new(),
            Direction::Forward,
        ));
        s.push(replay_function(
            t,
            &t.replay_back,
            &t.log_back,
            &t.qualified(),
            &t.qualified_old(),
            Direction::Back,
        ));
        s.push(refuse_truncate_function(plan, t));
        steps.push(transaction(
            "expanding",
            format!(
                "create the change logs and the capture and replay functions of {}",
                t.display()
            ),
            NONE,
            s,
        ));
        let s = attach_capture(t, &t.qualified(), &t.capture_forward);
        steps.push(transaction(
            "expanding",
            format!(
                "capture the keys of rows written in {} from now on (a trigger; creating it waits for the transactions writing the table)",
                t.display()
            ),
            SHARE_ROW_EXCLUSIVE,
            s,
        ));
    }
    steps
}

/// backfill: one step per table, or per leaf of a partitioned table (its
/// own keyset batches and checkpoints); the copy takes no row locks.
pub fn backfill(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in tables(plan) {
        let Some(tp) = plan.table(t.oid) else {
            continue;
        };
        if !t.partitioned {
            steps.push(step(
                "backfilling",
                format!(
                    "copy the rows of {} into {} in keyset batches (about {} rows), reading without row locks",
                    t.display(),
                    t.new_name,
                    tp.estimated_rows
                ),
                crate::backfill::copy_sql(tp, t, true),
                NONE,
                Action::Backfill { table: t.oid },
            ));
            continue;
        }
        // A lane per leaf: leaves are copied in parallel, a connection
        // each within the budget (a leaf in one range).
        for leaf in t.leaves() {
            let Some((ltp, lt)) = plan.leaf(leaf.oid) else {
                continue;
            };
            steps.push(on_lane(leaf.oid, step(
                "backfilling",
                format!(
                    "copy the rows of partition {} of {} into {} in keyset batches (about {} rows), reading without row locks",
                    leaf.display(),
                    t.display(),
                    leaf.new_name,
                    leaf.estimated_rows
                ),
                crate::backfill::copy_sql(&ltp, &lt, true),
                NONE,
                Action::Backfill { table: leaf.oid },
            )));
        }
    }
    steps
}

/// validate: the copies' indexes (plain builds: nobody else uses the
/// copies), their key constraints, a replay of the log, statistics.
///
/// Two stages. First every index build, each in a lane of its own (a
/// table's unique ones share one, see below), so a table's indexes build
/// side by side within the connection budget rather than one after
/// another; the partitioned indexes are made from their leaves' after that.
/// Then, per table once its builds are done, the key constraints (ACCESS
/// EXCLUSIVE on the copy: not taken while another lane still builds on
/// it), the replay and the vacuum, beside other tables' builds.
pub fn validate(plan: &Plan) -> Vec<Step> {
    let mut builds = Vec::new();
    let mut partitioned_made = Vec::new();
    let mut finish = Vec::new();
    for t in tables(plan) {
        let lane = |mut s: Step| {
            s.lane = Some(Lane {
                table: t.oid,
                strand: 0,
                stage: 1,
            });
            s
        };
        if t.partitioned {
            let (leaves, made): (Vec<Step>, Vec<Step>) = partitioned_indexes(t)
                .into_iter()
                .partition(|s| s.lane.is_some());
            builds.extend(leaves);
            partitioned_made.extend(made);
        }
        for (i, ix) in t.indexes.iter().enumerate().filter(|_| !t.partitioned) {
            // Unique builds share the table's first strand: one that meets a
            // duplicate deletes rows from the copy, which waits for the
            // other builds' SHARE lock; two doing so at once could deadlock.
            let strand = Lane {
                table: t.oid,
                strand: if ix.unique.is_some() { 0 } else { i as u32 + 1 },
                stage: 0,
            };
            let build_lane = |mut s: Step| {
                s.lane = Some(strand);
                s
            };
            // No parallel workers: a build with two of them on each lane
            // takes every core from the application (the benchmark's
            // slowest transactions, up to 346 ms at 10M, all fell in the
            // index builds), and the lanes already build tables in parallel.
            let serial = "SET LOCAL max_parallel_maintenance_workers = 0".to_string();
            // What the index carries besides its definition: once built, or
            // for a key once its constraint is attached.
            let marks = |constraint: Option<&str>| {
                index_marks(
                    &t.schema,
                    &t.qualified_new(),
                    &ix.new_name,
                    constraint,
                    &ix.marks,
                )
            };
            let after = if ix.constraint.is_none() {
                marks(None)
            } else {
                Vec::new()
            };
            // A unique index's build fails on a value the copy holds twice
            // (see UniqueKey): then, and only then, the rows of such values
            // go back to the log and the build runs again. Only this
            // table's replays write the copy, and they come after every
            // build, so nothing brings a duplicate back in between. The
            // delete may wait for another lane's build, and only ours lock
            // the copy: no lock_timeout for it.
            let build = match &ix.unique {
                None => ix.create_sql.clone(),
                Some(u) => format!(
                    "DO $pgshift$\nBEGIN\n  {create};\nEXCEPTION WHEN unique_violation THEN\n  \
                     PERFORM pg_catalog.set_config('lock_timeout', '0', true);\n  \
                     WITH duplicates AS (DELETE FROM {copy} WHERE ({keys}) IN ({}) RETURNING {keys})\n  \
                     INSERT INTO {} ({}) SELECT {keys} FROM duplicates;\n  {create};\nEND\n$pgshift$",
                    u.duplicates(&t.qualified_new(), &t.key_columns().iter().map(|k| quote(&k.name)).collect::<Vec<_>>()),
                    t.log_forward,
                    t.log_columns().join(", "),
                    create = ix.create_sql,
                    copy = t.qualified_new(),
                    keys = t.key_list(),
                ),
            };
            builds.push(build_lane(step(
                "validating",
                format!(
                    "build {}index {} on {} (for {})",
                    if ix.unique.is_some() { "unique " } else { "" },
                    ix.new_name,
                    t.new_name,
                    ix.name
                ),
                std::iter::once(format!("{serial};\n{build}"))
                    .chain(after)
                    .collect::<Vec<_>>()
                    .join(";\n"),
                NONE,
                Action::Ddl { skip_if: None },
            )));
            if let Some(kind) = &ix.constraint {
                finish.push(lane(step(
                    "validating",
                    format!(
                        "make index {} the {} of {} (catalog change)",
                        ix.new_name,
                        if kind == "p" {
                            "primary key"
                        } else {
                            "unique constraint"
                        },
                        t.new_name
                    ),
                    std::iter::once(format!(
                        "ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}{}",
                        t.qualified_new(),
                        quote(&ix.new_name),
                        if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
                        quote(&ix.new_name),
                        ix.marks.deferrable
                    ))
                    .chain(marks(Some(&ix.new_name)))
                    .collect::<Vec<_>>()
                    .join(";\n"),
                    NONE,
                    Action::Ddl {
                        skip_if: Some(constraint_exists(&t.qualified_new(), &ix.new_name)),
                    },
                )));
            }
        }
        finish.push(lane(step(
            "validating",
            format!("replay the rows written in {} during the copy", t.display()),
            format!("SELECT {}({REPLAY_BATCH})", t.replay_forward),
            NONE,
            Action::Replay {
                function: t.replay_forward.clone(),
                log: t.log_forward.clone(),
            },
        )));
        // VACUUM, not ANALYZE alone: it marks the copy's pages all-visible,
        // so index-only scans skip the heap from the first query after the
        // swap (ANALYZE would record 0 pages all-visible, and plans would
        // weigh that), and autovacuum, on again at cutover, finds the copy's
        // inserts already done instead of vacuuming the whole table then.
        // Paced as autovacuum is while the copy was paced.
        finish.push(lane(step(
            "validating",
            format!(
                "vacuum {} (its pages marked all-visible) and collect statistics",
                t.new_name
            ),
            format!("VACUUM (ANALYZE) {}", t.qualified_new()),
            NONE,
            Action::Vacuum {
                cost_delay_ms: if plan.pace.paced {
                    AUTOVACUUM_COST_DELAY_MS
                } else {
                    0
                },
            },
        )));
    }
    builds.extend(partitioned_made);
    builds.extend(finish);
    builds
}

/// A partitioned index of the copy's tree: made on its table alone, its
/// children attached, then its marks.
struct PartitionedIndex {
    table: String,
    schema: String,
    name: String,
    /// `CREATE INDEX … ON ONLY …`, unless a constraint makes it.
    create: Option<String>,
    /// `ALTER TABLE ONLY … ADD CONSTRAINT …`.
    constraint_sql: Option<String>,
    marks: Vec<String>,
}

fn on_lane(table: u32, mut s: Step) -> Step {
    s.lane = Some(Lane::table(table));
    s
}

/// A partitioned copy's indexes, as `pg_dump` restores them: each leaf's
/// built on the leaf (unique ones as for a plain copy, see `UniqueKey`) and
/// made its key constraint, the leaves in parallel (a lane each); then,
/// from the bottom of the tree up, each partitioned index made on its table
/// alone and every child's attached to it, which makes it valid.
fn partitioned_indexes(t: &CopyTable) -> Vec<Step> {
    let serial = "SET LOCAL max_parallel_maintenance_workers = 0";
    let mut steps = Vec::new();
    for p in t.leaves() {
        for ix in &p.indexes {
            let Some(create) = &ix.create_sql else {
                continue;
            };
            let build = match &ix.unique {
                None => create.clone(),
                Some(u) => format!(
                    "DO $pgshift$\nBEGIN\n  {create};\nEXCEPTION WHEN unique_violation THEN\n  \
                     WITH duplicates AS (DELETE FROM {copy} WHERE ({keys}) IN ({}) RETURNING {keys})\n  \
                     INSERT INTO {} ({}) SELECT {keys} FROM duplicates;\n  {create};\nEND\n$pgshift$",
                    u.duplicates(
                        &p.qualified_new(),
                        &t.key_columns().iter().map(|k| quote(&k.name)).collect::<Vec<_>>()
                    ),
                    t.log_forward,
                    t.log_columns().join(", "),
                    copy = p.qualified_new(),
                    keys = t.key_list(),
                ),
            };
            steps.push(on_lane(
                p.oid,
                step(
                    "validating",
                    format!(
                        "build index {} on {} (for {})",
                        ix.new_name, p.new_name, ix.name
                    ),
                    format!("{serial};\n{build}"),
                    NONE,
                    Action::Ddl { skip_if: None },
                ),
            ));
            if let Some(sql) = &ix.constraint_sql {
                steps.push(on_lane(
                    p.oid,
                    step(
                        "validating",
                        format!(
                            "make index {} the key of {} (catalog change)",
                            ix.new_name, p.new_name
                        ),
                        sql.clone(),
                        NONE,
                        Action::Ddl {
                            skip_if: Some(constraint_exists(&p.qualified_new(), &ix.new_name)),
                        },
                    ),
                ));
            }
        }
    }
    // The partitioned members, children before parents: the root last.
    let mut partitioned: Vec<PartitionedIndex> = t
        .partitions
        .iter()
        .filter(|p| !p.leaf)
        .flat_map(|p| {
            p.indexes.iter().map(|ix| PartitionedIndex {
                table: p.qualified_new(),
                schema: p.schema.clone(),
                name: ix.new_name.clone(),
                create: ix.create_sql.clone(),
                constraint_sql: ix.constraint_sql.clone(),
                marks: Vec::new(),
            })
        })
        .collect();
    partitioned.reverse();
    partitioned.extend(t.indexes.iter().map(|ix| {
        let constraint_sql = match (&ix.constraint, &ix.constraint_definition) {
            (Some(_), Some(definition)) => Some(format!(
                "ALTER TABLE ONLY {} ADD CONSTRAINT {} {definition}",
                t.qualified_new(),
                quote(&ix.new_name)
            )),
            _ => None,
        };
        PartitionedIndex {
            table: t.qualified_new(),
            schema: t.schema.clone(),
            name: ix.new_name.clone(),
            create: constraint_sql.is_none().then(|| ix.create_sql.clone()),
            marks: index_marks(
                &t.schema,
                &t.qualified_new(),
                &ix.new_name,
                constraint_sql.as_ref().map(|_| ix.new_name.as_str()),
                &ix.marks,
            ),
            constraint_sql,
        }
    }));
    for PartitionedIndex {
        table,
        schema,
        name,
        create,
        constraint_sql,
        marks,
    } in partitioned
    {
        let index = qualified(&schema, &name);
        let mut s = vec![serial.to_string()];
        let skip_if = match (&create, &constraint_sql) {
            (_, Some(sql)) => {
                s.push(sql.clone());
                Some(constraint_exists(&table, &name))
            }
            (Some(sql), None) => {
                s.push(sql.clone());
                None
            }
            (None, None) => continue,
        };
        // Its children: an index of each partition right below.
        for p in &t.partitions {
            for ix in p
                .indexes
                .iter()
                .filter(|ix| ix.attach_to.as_deref() == Some(index.as_str()))
            {
                s.push(format!(
                    "ALTER INDEX {index} ATTACH PARTITION {}",
                    qualified(&p.schema, &ix.new_name)
                ));
            }
        }
        // Its comments (what the root's index carries besides its definition).
        s.extend(marks);
        steps.push(step(
            "validating",
            format!(
                "make partitioned index {name} on {table} from its partitions' (catalog change)"
            ),
            s.join(";\n"),
            NONE,
            Action::Ddl { skip_if },
        ));
    }
    steps
}

/// After either swap: validate the foreign keys it added NOT VALID.
pub fn after_swap(plan: &Plan) -> Vec<Step> {
    let Some(copy) = &plan.copy else {
        return Vec::new();
    };
    copy.foreign_keys
        .iter()
        .filter(|fk| fk.validated)
        .map(|fk| {
            step(
                "validating",
                format!("validate foreign key {} on {}", fk.name, fk.table),
                format!(
                    "{};\nALTER TABLE {} VALIDATE CONSTRAINT {}",
                    merge_when_indexed(&fk.table, &fk.name),
                    fk.table,
                    quote(&fk.name)
                ),
                SHARE_UPDATE_EXCLUSIVE,
                Action::Ddl {
                    skip_if: Some(format!(
                        "SELECT NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass({}) AND conname = {} AND NOT convalidated)",
                        literal(&fk.table),
                        literal(&fk.name)
                    )),
                },
            )
        })
        .collect()
}

/// The validation is one anti-join of the referencing table to the
/// referenced one's key, which the planner costs about the same as a hash
/// join or as a merge join of the two indexes read in order, and often
/// takes the hash. Where an index leads with the referencing column and the
/// table is nearly all-visible, the merge join wins by far: in the 5M-row
/// bench the hash join took 6.1 s (8 batches), the merge join 2.2–2.9 s on
/// the same data. Set for this statement's transaction only.
fn merge_when_indexed(table: &str, constraint: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config('enable_hashjoin', 'off', true)
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
WHERE c.conrelid = to_regclass({}) AND c.conname = {} AND cardinality(c.conkey) = 1
  AND r.relpages > 0 AND r.relallvisible >= 0.9 * r.relpages
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_catalog.pg_am am ON am.oid = ic.relam
              WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
                AND am.amname = 'btree' AND i.indkey[0] = c.conkey[1])",
        literal(table),
        literal(constraint)
    )
}

/// The logs and functions, once no trigger uses them.
fn drop_machinery(t: &CopyTable) -> Vec<String> {
    let mut s = Vec::new();
    for f in [&t.capture_forward, &t.capture_back, &t.refuse_truncate] {
        s.push(format!("DROP FUNCTION IF EXISTS {f}()"));
    }
    for f in [&t.replay_forward, &t.replay_back] {
        s.push(format!("DROP FUNCTION IF EXISTS {f}(bigint)"));
    }
    for log in [&t.log_forward, &t.log_back] {
        s.push(format!("DROP TABLE IF EXISTS {log}"));
    }
    s
}

/// The capture triggers come off the tables that hold the names.
fn stop_capture(plan: &Plan, phase: &'static str) -> Vec<Step> {
    tables(plan)
        .iter()
        .map(|t| {
            transaction(
                phase,
                format!("stop capturing writes to {}", t.display()),
                // DROP TRIGGER takes ACCESS EXCLUSIVE (CREATE TRIGGER only
                // SHARE ROW EXCLUSIVE): a brief lock, under lock_timeout.
                ACCESS_EXCLUSIVE,
                detach_capture(t, &t.qualified()),
            )
        })
        .collect()
}

/// finalize: the foreign keys validated, then the originals dropped.
pub fn finalize(plan: &Plan) -> Vec<Step> {
    let mut steps = after_swap(plan);
    steps.extend(stop_capture(plan, "finalize"));
    // No CASCADE: anything still attached to an original is a reason to stop.
    for t in tables(plan) {
        steps.push(step(
            "finalize",
            format!("drop the original of {}, now {}", t.display(), t.old_name),
            format!("DROP TABLE IF EXISTS {}", t.qualified_old()),
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
    }
    for t in tables(plan) {
        let s = drop_machinery(t);
        steps.push(transaction(
            "finalize",
            format!("drop the change logs of {}", t.display()),
            NONE,
            s,
        ));
    }
    steps
}

/// rollback before cutover: the capture goes first, then the copies.
pub fn abort(plan: &Plan) -> Vec<Step> {
    let mut steps = stop_capture(plan, "rollback");
    steps.extend(cleanup(plan));
    steps
}

/// After a rollback (either kind): the copies, logs and functions go.
pub fn cleanup(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in tables(plan) {
        let mut s = vec![format!("DROP TABLE IF EXISTS {}", t.qualified_new())];
        s.extend(drop_machinery(t));
        steps.push(transaction(
            "rollback",
            format!("drop {} and the change logs of {}", t.new_name, t.display()),
            ACCESS_EXCLUSIVE,
            s,
        ));
    }
    steps
}

/// Per converted primary key: (table, column, query returning the count
/// and the smallest of the original's keys that do not come back as they
/// were when converted and converted back). The replays after cutover find
/// the original's rows by the key converted back: such a row would be
/// missed, and a rollback would leave it beside its newer version.
pub fn key_round_trips(plan: &Plan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in tables(plan) {
        for k in t.key_columns() {
            let Some(c) = &k.conversion else { continue };
            let key = format!("o.{}", quote(&k.name));
            let there = key_expression(t, &k.name, &c.forward, &key, Some(&c.new_type));
            let back = key_expression(t, &k.name, &c.back, &there, Some(&k.log_type));
            out.push((
                t.display(),
                k.name.clone(),
                format!(
                    "SELECT count(*), min({key}::text) FROM {}{} AS o WHERE {back} IS DISTINCT FROM {key}",
                    t.only(),
                    t.qualified_old()
                ),
            ));
        }
    }
    out
}

/// Per widened column: (table, column, query returning the count and the
/// smallest of the values written since cutover that the old type cannot
/// hold); the swap back would fail on them. (A converted column's values
/// convert back in the replays, whose failure changes nothing.)
pub fn misfits(plan: &Plan) -> Vec<(String, String, String)> {
    plan.tables
        .iter()
        .flat_map(|t| {
            t.columns.iter().filter(|c| c.conversion.is_none()).map(move |c| {
                let (lo, hi) = c.range();
                (
                    t.display(),
                    c.name.clone(),
                    format!(
                        "SELECT count(*), min({col})::text FROM {} WHERE {col} NOT BETWEEN {lo} AND {hi}",
                        t.qualified(),
                        col = quote(&c.name)
                    ),
                )
            })
        })
        .collect()
}
