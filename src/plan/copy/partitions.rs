//! Partitioned tables under the copy engine: the copy is a partitioned
//! table with the same tree (each partition made `PARTITION OF` the copy of
//! its parent, with the same bound), filled leaf by leaf; its indexes are
//! built on each leaf and attached to the partitioned indexes above them,
//! as `pg_dump` restores them; the cutover renames every member of both
//! trees, so each partition and index keeps its name.
//!
//! The capture needs nothing more: a row trigger on the root is cloned onto
//! every partition (an UPDATE that moves a row logs its old key as a DELETE
//! and its new one as an INSERT), and the replays read and write the roots.

use serde::{Deserialize, Serialize};

use super::carried::{self, refuse};
use super::unique::UniqueKey;
use crate::catalog::{Partition, Table};
use crate::names::{self, literal, qualified, quote};
use crate::plan::{Blocker, TablePlan};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyPartition {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub new_name: String,
    pub old_name: String,
    /// A leaf holds rows (and is copied); otherwise it is partitioned itself.
    pub leaf: bool,
    /// The parent's name (the root's, or a partition's), for the plan.
    pub parent: String,
    pub estimated_rows: i64,
    pub total_bytes: i64,
    /// `CREATE TABLE <new_name> PARTITION OF <the parent's copy> <bound> …`,
    /// its owner, privileges and comment.
    pub create: Vec<String>,
    pub indexes: Vec<CopyPartitionIndex>,
    pub pause_autovacuum: bool,
}

impl CopyPartition {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
    pub fn qualified_new(&self) -> String {
        qualified(&self.schema, &self.new_name)
    }
    pub fn qualified_old(&self) -> String {
        qualified(&self.schema, &self.old_name)
    }
    pub fn display(&self) -> String {
        names::display(&self.schema, &self.name)
    }
}

/// An index of a partition, made on the partition's copy under `new_name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyPartitionIndex {
    pub name: String,
    pub new_name: String,
    pub old_name: String,
    /// On a leaf: the build. On a partitioned partition: `CREATE INDEX … ON
    /// ONLY` (an index that is valid once every child is attached); None
    /// when a constraint makes it (`constraint_sql`).
    pub create_sql: Option<String>,
    /// `p` or `u` when it backs that constraint (named like the index).
    pub constraint: Option<String>,
    /// On a leaf `ADD CONSTRAINT … USING INDEX`; on a partitioned partition
    /// `ALTER TABLE ONLY … ADD CONSTRAINT <definition>`.
    pub constraint_sql: Option<String>,
    /// The copy's name of the partitioned index it attaches to, qualified.
    pub attach_to: Option<String>,
    /// A unique index other than the primary key (see `UniqueKey`).
    pub unique: Option<UniqueKey>,
}

/// The copy of each partition of `t` (parents before their children), or
/// blockers for what the copy engine does not carry.
pub(super) fn plan(
    t: &Table,
    tp: &TablePlan,
    new_root: &str,
    server_version: i32,
    blockers: &mut Vec<Blocker>,
) -> Vec<CopyPartition> {
    let object = format!("table {}", t.display());
    // A partition key column is widened (every bound converts exactly, and
    // integers hash alike at any width); other changes to it are refused
    // where the conversion is planned (`convert`).
    if t.partition_expressions && !tp.columns.is_empty() {
        refuse(
            blockers,
            object.clone(),
            "its partition key has an expression, which pgshift does not check against the changed columns",
            "convert the tree by hand (a new partitioned table, then ATTACH)",
        );
    }
    // NOT VALID foreign keys on partitioned tables came with Postgres 18:
    // before it, the swap would have to validate the key under its lock.
    if server_version < 180000 {
        for fk in t.constraints.iter().filter(|c| c.kind == "f") {
            refuse(
                blockers,
                format!("foreign key {} on {}", fk.name, t.display()),
                "before Postgres 18 a foreign key on a partitioned table cannot be added NOT VALID, so the cutover \
                 would check every row under its lock",
                "drop the foreign key before the migration and add it again after cutover, or upgrade to Postgres 18",
            );
        }
    }
    let new_of = |oid: u32| -> Option<String> {
        if oid == t.oid {
            return Some(new_root.to_string());
        }
        let p = t.partitions.iter().find(|p| p.oid == oid)?;
        Some(qualified(&p.schema, &names::shadow("new", &p.name)))
    };
    // The copy's name of each partitioned index, by the original's oid.
    let index_new_name = |oid: u32| -> Option<String> {
        if let Some(ix) = t.indexes.iter().find(|ix| ix.oid == oid) {
            return Some(qualified(&t.schema, &names::shadow("new", &ix.name)));
        }
        t.partitions.iter().find_map(|p| {
            p.indexes
                .iter()
                .find(|ix| ix.oid == oid)
                .map(|ix| qualified(&p.schema, &names::shadow("new", &ix.name)))
        })
    };
    let unique_of = |oid: u32| -> Option<UniqueKey> {
        let mut at = oid;
        // Up the tree to the root's index, whose keys the replays compare.
        loop {
            if let Some(ix) = t.indexes.iter().find(|ix| ix.oid == at) {
                return (ix.is_unique && !ix.is_primary).then(|| UniqueKey {
                    keys: ix.keys.clone(),
                    predicate: ix.predicate.clone(),
                });
            }
            at = t
                .partitions
                .iter()
                .flat_map(|p| &p.indexes)
                .find(|ix| ix.oid == at)?
                .parent?;
        }
    };
    let mut out = Vec::new();
    for p in &t.partitions {
        let part = format!("partition {}", names::display(&p.schema, &p.name));
        if p.kind == "f" {
            refuse(
                blockers,
                part.clone(),
                "it is a foreign table, whose rows live on another server",
                "detach it before the migration and attach it again after",
            );
            continue;
        }
        for own in &p.own_objects {
            refuse(
                blockers,
                format!("{own} on {part}"),
                "it belongs to this partition alone, and the copy engine carries what partitions inherit from their \
                 parent only",
                "define it on the partitioned table instead, or drop it before the migration and make it again after",
            );
        }
        let Some(parent_new) = new_of(p.parent) else {
            refuse(
                blockers,
                part,
                "its parent was not read",
                "run the plan again",
            );
            continue;
        };
        let new_name = names::shadow("new", &p.name);
        let new_table = qualified(&p.schema, &new_name);
        let leaf = p.kind == "r";
        let mut indexes = Vec::new();
        for ix in &p.indexes {
            let object = format!("index {} on {part}", ix.name);
            if !ix.is_valid {
                refuse(
                    blockers,
                    object,
                    "it is invalid (a failed build, or a partitioned index missing a partition's)",
                    "drop it or REINDEX it before the migration",
                );
                continue;
            }
            let attach_to = match ix.parent {
                Some(parent) => match index_new_name(parent) {
                    Some(n) => Some(n),
                    None => {
                        refuse(
                            blockers,
                            object,
                            "its parent index was not read",
                            "run the plan again",
                        );
                        continue;
                    }
                },
                None => None,
            };
            let unique = ix.parent.and_then(unique_of);
            if ix.is_unique && ix.constraint.as_deref() != Some("p") && ix.parent.is_none() {
                refuse(
                    blockers,
                    object,
                    "a unique index on one partition alone: the copy engine checks unique keys across the tree only",
                    "drop it before the migration and make it again after, or define it on the partitioned table",
                );
                continue;
            }
            let (ix_new, create_sql) = carried::index_on_copy(
                &ix.name,
                &ix.definition,
                ix.tablespace.as_deref(),
                &new_table,
                !leaf,
            );
            let Some(create_sql) = create_sql else {
                refuse(
                    blockers,
                    object,
                    "its definition could not be read",
                    "run the plan again",
                );
                continue;
            };
            let (create_sql, constraint_sql) = match (&ix.constraint, &ix.constraint_definition) {
                (Some(kind), _) if leaf => (
                    Some(create_sql),
                    Some(format!(
                        "ALTER TABLE {new_table} ADD CONSTRAINT {} {} USING INDEX {}",
                        quote(&ix_new),
                        if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
                        quote(&ix_new)
                    )),
                ),
                (Some(_), Some(definition)) => (
                    None,
                    Some(format!(
                        "ALTER TABLE ONLY {new_table} ADD CONSTRAINT {} {definition}",
                        quote(&ix_new)
                    )),
                ),
                _ => (Some(create_sql), None),
            };
            indexes.push(CopyPartitionIndex {
                name: ix.name.clone(),
                new_name: ix_new.clone(),
                old_name: names::shadow("old", &ix.name),
                create_sql,
                constraint: ix.constraint.clone(),
                constraint_sql,
                attach_to,
                unique,
            });
        }
        let pause_autovacuum = leaf
            && !p
                .reloptions
                .iter()
                .any(|o| o.starts_with("autovacuum_enabled="));
        out.push(CopyPartition {
            oid: p.oid,
            schema: p.schema.clone(),
            name: p.name.clone(),
            new_name: new_name.clone(),
            old_name: names::shadow("old", &p.name),
            leaf,
            parent: if p.parent == t.oid {
                t.display()
            } else {
                t.partitions
                    .iter()
                    .find(|q| q.oid == p.parent)
                    .map(|q| names::display(&q.schema, &q.name))
                    .unwrap_or_default()
            },
            estimated_rows: p.estimated_rows,
            total_bytes: p.total_bytes,
            create: create_partition(p, &new_table, &parent_new, pause_autovacuum),
            indexes,
            pause_autovacuum,
        });
    }
    out
}

/// The partition's copy: `PARTITION OF` the parent's copy with the same
/// bound (it takes the copy's column types), and what it has of its own.
fn create_partition(
    p: &Partition,
    new_table: &str,
    parent_new: &str,
    pause_autovacuum: bool,
) -> Vec<String> {
    let mut options = p.reloptions.clone();
    if pause_autovacuum {
        options.push("autovacuum_enabled = false".into());
    }
    let mut create = vec![format!(
        "CREATE {}TABLE IF NOT EXISTS {new_table} PARTITION OF {parent_new} {}{}{}",
        if p.persistence == "u" {
            "UNLOGGED "
        } else {
            ""
        },
        p.bound,
        p.partition_key
            .as_ref()
            .map(|k| format!(" PARTITION BY {k}"))
            .unwrap_or_default(),
        carried::storage_clause(&options, p.tablespace.as_deref())
    )];
    create.extend(carried::owner_and_grants(new_table, &p.owner, &p.grants));
    if let Some(comment) = &p.comment {
        create.push(format!(
            "COMMENT ON TABLE {new_table} IS {}",
            literal(comment)
        ));
    }
    create
}
