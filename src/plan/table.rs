//! A table's plan under the update engine: its shadow columns, the indexes
//! and checks rebuilt on them, the foreign keys that follow them, and what
//! pgshift must refuse.

use std::collections::{BTreeMap, HashMap};

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use super::*;
use crate::catalog::{Catalog, Table};
use crate::names::{self, PREFIX};
use crate::sqltext;

fn renames(table: &Table, cols: &BTreeMap<i16, String>) -> HashMap<String, String> {
    cols.keys()
        .filter_map(|&a| table.column_by_num(a))
        .map(|c| (c.name.clone(), names::shadow("new", &c.name)))
        .collect()
}

pub(super) fn plan_table(
    migration: &str,
    t: &Table,
    cols: &BTreeMap<i16, String>,
    engine: super::Engine,
    blockers: &mut Vec<Blocker>,
) -> TablePlan {
    let object = format!("table {}", t.display());
    let mut block = |object: String, reason: String, remedy: &str| {
        blockers.push(Blocker {
            object,
            reason,
            remedy: remedy.to_string(),
        })
    };
    if t.is_partition {
        block(
            object.clone(),
            "it is a partition: its columns are its partitioned table's".into(),
            "change the column on the partitioned table at the root of its tree (the copy engine takes the whole tree)",
        );
    }
    if t.kind == "p" && engine == super::Engine::Update {
        block(
            object.clone(),
            "the update engine does not take partitioned tables".into(),
            "use --engine copy (or auto, the default), which copies the tree partition by partition",
        );
    }
    if t.has_inheritance {
        block(
            object.clone(),
            "it has inheritance parents or children".into(),
            "convert the inheritance hierarchy by hand; pgshift cannot keep every member in sync",
        );
    }
    if !t.publications.is_empty() {
        block(object.clone(), format!("it is published for logical replication ({})", t.publications.join(", ")),
              "remove it from the publication during the migration, or add the shadow column on subscribers first");
    }
    for rule in &t.rules {
        block(
            format!("rule {rule} on {}", t.display()),
            "rules rewrite queries against the column by name".into(),
            "drop the rule before the migration and recreate it after cutover",
        );
    }

    let key: Vec<KeyColumn> = match t.primary_key() {
        Some(pk) => pk
            .columns
            .iter()
            .filter_map(|&a| t.column_by_num(a))
            .map(|c| KeyColumn {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
            })
            .collect(),
        None => {
            block(
                object.clone(),
                "it has no primary key".into(),
                "add a primary key first: the backfill walks the table in primary-key order",
            );
            Vec::new()
        }
    };

    let mut columns = Vec::new();
    for (&attnum, reason) in cols {
        let Some(c) = t.column_by_num(attnum) else {
            continue;
        };
        if c.generated {
            block(format!("column {}.{}", t.display(), c.name), "it is a generated column".into(),
                  "generated columns cannot be synced by trigger; drop and re-add it with a blocking ALTER");
        }
        let sequence = c.sequence.as_ref().map(|s| {
            let old_type_max = if s.data_type == "smallint" {
                i16::MAX as i64
            } else {
                i32::MAX as i64
            };
            let max = if s.max == old_type_max {
                i64::MAX
            } else {
                s.max
            };
            SequencePlan::from_catalog(s, &c.identity, max)
        });
        columns.push(ColumnPlan {
            name: c.name.clone(),
            shadow: names::shadow("new", &c.name),
            retired: names::shadow("old", &c.name),
            from_type: c.type_name.clone(),
            not_null: c.not_null,
            not_null_check: names::shadow("nn", &format!("{}_{}", t.name, c.name)),
            shadow_not_null: c.not_null,
            default: if c.is_identity() {
                None
            } else {
                c.default.clone()
            },
            sequence,
            reason: reason.clone(),
            privileges: c.privileges.clone(),
            comment: c.comment.clone(),
            statistics: c.statistics,
            options: c.options.clone(),
            conversion: None,
            not_null_name: c.not_null_name.clone(),
        });
    }

    let map = renames(t, cols);
    let touches = |attnums: &[i16]| attnums.iter().any(|a| cols.contains_key(a));

    let mut indexes = Vec::new();
    for ix in t.indexes.iter().filter(|ix| touches(&ix.columns)) {
        if !ix.is_valid {
            block(format!("index {}", ix.name), "it is invalid (a failed concurrent build)".into(),
                  "drop it (DROP INDEX CONCURRENTLY) or rebuild it (REINDEX INDEX CONCURRENTLY) first");
            continue;
        }
        let backs = ix
            .constraint
            .as_ref()
            .and_then(|name| t.constraints.iter().find(|c| &c.name == name));
        let constraint = backs.map(|c| (c.name.clone(), c.kind.clone()));
        let marks = super::IndexMarks::of(ix, backs);
        if matches!(&constraint, Some((_, k)) if k == "x") {
            block(
                format!("constraint {} on {}", ix.name, t.display()),
                "exclusion constraints are not rebuilt online yet".into(),
                "drop the exclusion constraint before the migration and re-add it after",
            );
            continue;
        }
        let shadow = names::shadow("new", &ix.name);
        // In the original's tablespace: pg_get_indexdef leaves it out.
        let sql = index_sql(&ix.definition, &shadow, &map)
            .and_then(|sql| sqltext::in_tablespace(sql, ix.tablespace.as_deref()));
        match sql {
            Some(create_sql) => indexes.push(IndexPlan {
                name: ix.name.clone(),
                shadow,
                retired: names::shadow("old", &ix.name),
                create_sql,
                constraint,
                bytes: ix.bytes,
                marks,
            }),
            None => block(
                format!("index {}", ix.name),
                format!("pgshift could not read its definition: {}", ix.definition),
                "drop it before the migration and recreate it after",
            ),
        }
    }

    let mut checks = Vec::new();
    for c in t
        .constraints
        .iter()
        .filter(|c| c.kind == "c" && touches(&c.columns))
    {
        let def = c.definition.trim_end_matches(" NOT VALID");
        match sqltext::rename_columns(def, 0, &map) {
            Ok(definition) => checks.push(CheckPlan {
                name: c.name.clone(),
                shadow: names::shadow("new", &c.name),
                definition,
            }),
            Err(e) => block(
                format!("constraint {} on {}", c.name, t.display()),
                format!("its definition did not tokenize: {e}"),
                "drop it before the migration and re-add it after",
            ),
        }
    }
    for c in t
        .constraints
        .iter()
        .filter(|c| c.kind == "x" && touches(&c.columns))
    {
        if !indexes
            .iter()
            .any(|i| i.name == c.index.clone().unwrap_or_default())
        {
            block(
                format!("constraint {} on {}", c.name, t.display()),
                "exclusion constraints are not rebuilt online yet".into(),
                "drop the exclusion constraint before the migration and re-add it after",
            );
        }
    }

    let widened_names: Vec<&str> = cols
        .keys()
        .filter_map(|&a| t.column_by_num(a))
        .map(|c| c.name.as_str())
        .collect();
    // The update engine's backfill fires the table's triggers on every row
    // and hands them the shadow column; the copy engine moves them to the
    // copy at cutover, where they see the bigint column and nothing else.
    for trg in t
        .triggers
        .iter()
        .filter(|g| !g.internal && !g.name.starts_with(PREFIX))
        .filter(|_| engine == super::Engine::Update)
    {
        let by_column = touches(&trg.columns);
        let by_name = widened_names
            .iter()
            .find(|n| sqltext::mentions_identifier(&trg.function_source, n));
        if by_column || by_name.is_some() {
            block(format!("trigger {} on {}", trg.name, t.display()),
                  format!("its function {} uses a widened column by name", trg.function),
                  "check the function works with bigint and the shadow column, disable the trigger during the migration, or drop and recreate it after cutover");
        }
    }
    for dep in t
        .column_dependents
        .iter()
        .filter(|d| cols.contains_key(&d.attnum))
    {
        let handled = match dep.catalog.as_str() {
            "pg_class" => matches!(dep.detail.as_str(), "i" | "I" | "S"),
            "pg_constraint" | "pg_trigger" => true,
            // A column's own default depends on it; another column's default
            // (a generated column) does not come along.
            "pg_attrdef" => dep.detail == dep.attnum.to_string(),
            "pg_rewrite" => dep.detail.ends_with(":v") || dep.detail.ends_with(":m"),
            _ => false,
        };
        if !handled {
            let remedy = match dep.catalog.as_str() {
                "pg_attrdef" => "a generated column uses it: drop the generated column and re-add it after finalize",
                "pg_statistic_ext" => "drop the extended statistics and recreate them after cutover",
                "pg_policy" => "drop the row-level security policy during the migration and recreate it after cutover",
                "pg_rewrite" => "drop the rule before the migration and recreate it after cutover",
                _ => "drop it before the migration and recreate it after cutover",
            };
            block(
                dep.description.clone(),
                "it depends on a widened column and pgshift does not rebuild it".into(),
                remedy,
            );
        }
    }

    let sync_base = format!(
        "{}_{}",
        t.name,
        names::hex8(&format!("{migration}/{}", t.oid))
    );
    TablePlan {
        oid: t.oid,
        schema: t.schema.clone(),
        name: t.name.clone(),
        estimated_rows: t.estimated_rows,
        total_bytes: t.total_bytes,
        key,
        columns,
        indexes,
        checks,
        sync_function: names::shadow("sync", &sync_base),
        sync_trigger: names::shadow("sync", &t.name),
        reverse_function: names::shadow("rsync", &sync_base),
        reverse_trigger: names::shadow("rsync", &t.name),
        backfill_passes: 1,
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY <shadow> ON …` with columns renamed.
fn index_sql(definition: &str, shadow: &str, map: &HashMap<String, String>) -> Option<String> {
    let tokens = sqltext::tokenize(definition).ok()?;
    let on = tokens.iter().position(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::ON && w.quote_style.is_none()))?;
    let unique = tokens[..on]
        .iter()
        .any(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::UNIQUE));
    let from = sqltext::index_columns_start(definition)?;
    let renamed = sqltext::rename_columns(definition, from, map).ok()?;
    let rest = &renamed[tokens[on].start..];
    Some(format!(
        "CREATE {}INDEX CONCURRENTLY {} {}",
        if unique { "UNIQUE " } else { "" },
        names::quote(shadow),
        rest
    ))
}

pub(super) fn plan_foreign_keys(
    catalog: &Catalog,
    widen: &BTreeMap<u32, BTreeMap<i16, String>>,
    blockers: &mut Vec<Blocker>,
) -> Vec<ForeignKeyPlan> {
    let mut out = Vec::new();
    for child in &catalog.tables {
        for fk in child.constraints.iter().filter(|c| c.kind == "f") {
            let Some(parent_oid) = fk.ref_table else {
                continue;
            };
            let child_cols = widen.get(&child.oid);
            let parent_cols = widen.get(&parent_oid);
            let child_hit =
                child_cols.is_some_and(|c| fk.columns.iter().any(|a| c.contains_key(a)));
            let parent_hit =
                parent_cols.is_some_and(|c| fk.ref_columns.iter().any(|a| c.contains_key(a)));
            if !child_hit && !parent_hit {
                continue;
            }
            let Some(parent) = catalog.table(parent_oid) else {
                continue;
            };
            let empty = BTreeMap::new();
            let child_map = renames(child, child_cols.unwrap_or(&empty));
            let parent_map = renames(parent, parent_cols.unwrap_or(&empty));
            let def = fk.definition.trim_end_matches(" NOT VALID");
            match sqltext::rename_in_foreign_key(def, &child_map, &parent_map) {
                Ok(definition) => out.push(ForeignKeyPlan {
                    name: fk.name.clone(),
                    shadow: names::shadow("new", &fk.name),
                    table: child.qualified(),
                    table_oid: child.oid,
                    referenced_table: parent.display(),
                    definition,
                    was_validated: fk.validated,
                }),
                Err(e) => blockers.push(Blocker {
                    object: format!("foreign key {} on {}", fk.name, child.display()),
                    reason: format!("its definition did not tokenize: {e}"),
                    remedy: "drop it before the migration and re-add it after".into(),
                }),
            }
        }
    }
    out
}
