//! What a copy carries from its table besides the rows, each piece as the
//! statements that make it on the copy (or at the swaps), or as a blocker
//! that names what the copy engine cannot move yet.

use super::{
    CopyIndex, CopyKey, CopyRoutine, CopyStatistics, CopyTrigger, Direction, KeyConversion,
    UniqueKey,
};
use crate::catalog::Table;
use crate::names::{self, literal, qualified, quote};
use crate::plan::{Blocker, IndexMarks, TablePlan};
use crate::sqltext::{self, Spanned};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

const USE_UPDATE: &str = "use --engine update";

pub(super) fn refuse(blockers: &mut Vec<Blocker>, object: String, reason: &str, remedy: &str) {
    blockers.push(Blocker {
        object,
        reason: reason.to_string(),
        remedy: remedy.to_string(),
    });
}

/// The primary key, column by column. The logs keep keys of the types every
/// schema has (their functions run with search_path pg_catalog).
pub(super) fn keys(t: &Table, tp: &TablePlan, blockers: &mut Vec<Blocker>) -> Vec<CopyKey> {
    let keys: Vec<CopyKey> = tp
        .key
        .iter()
        .map(|k| {
            let changed = tp.columns.iter().find(|c| c.name == k.name);
            let conversion = changed.and_then(|c| c.conversion.as_ref()).and_then(|v| {
                Some(KeyConversion {
                    new_type: v.to_type.clone(),
                    forward: v.forward.clone(),
                    back: v.back.clone()?,
                })
            });
            CopyKey {
                name: k.name.clone(),
                log_type: match (changed, &conversion) {
                    (Some(_), None) => "bigint".into(),
                    _ => k.type_name.clone(),
                },
                conversion,
            }
        })
        .collect();
    if keys.is_empty() {
        refuse(
            blockers,
            format!("table {}", t.display()),
            "the copy engine needs a primary key",
            USE_UPDATE,
        );
    }
    for (k, ty) in keys
        .iter()
        .flat_map(|k| [Direction::Forward, Direction::Back].map(|way| (k, k.log_type_of(way))))
    {
        if !is_builtin_type(ty) {
            refuse(
                blockers,
                format!("column {}.{}", t.display(), k.name),
                &format!(
                    "the copy engine logs primary keys of built-in types only; {ty} is not one"
                ),
                USE_UPDATE,
            );
            break;
        }
    }
    keys
}

/// The table's own triggers (constraint triggers too), made again on
/// whichever table takes the name.
pub(super) fn triggers(t: &Table, blockers: &mut Vec<Blocker>) -> Vec<CopyTrigger> {
    let mut out = Vec::new();
    for trg in t
        .triggers
        .iter()
        .filter(|g| !g.internal && !g.name.starts_with(names::PREFIX))
    {
        let object = format!("trigger {} on {}", trg.name, t.display());
        let Some(create) = retarget_trigger(&trg.definition, &t.qualified()) else {
            refuse(
                blockers,
                object,
                "its definition could not be read",
                USE_UPDATE,
            );
            continue;
        };
        let enable = match trg.enabled.as_str() {
            "D" => "DISABLE TRIGGER",
            "R" => "ENABLE REPLICA TRIGGER",
            "A" => "ENABLE ALWAYS TRIGGER",
            _ => "",
        };
        let mut statements = vec![create];
        if !enable.is_empty() {
            statements.push(format!(
                "ALTER TABLE {} {enable} {}",
                t.qualified(),
                quote(&trg.name)
            ));
        }
        out.push(CopyTrigger {
            name: trg.name.clone(),
            create: statements,
        });
    }
    out
}

/// Routines bound to the table rather than to its name, made again at each
/// swap from their definitions so they bind to the table coming in:
/// - those whose arguments or result use its row type are dropped (before
///   the renames) and created again with their owner, privileges, comment;
/// - those whose SQL-standard body (`BEGIN ATOMIC`) reads it are replaced
///   in place (`OR REPLACE` keeps all that, and their dependents).
pub(super) fn routines(t: &Table, blockers: &mut Vec<Blocker>) -> Vec<CopyRoutine> {
    let mut out = Vec::new();
    for (r, on_rowtype) in t.rowtype_routines.iter().map(|r| (r, true)).chain(
        t.body_routines
            .iter()
            .filter(|b| {
                !t.rowtype_routines
                    .iter()
                    .any(|r| r.signature == b.signature)
            })
            .map(|r| (r, false)),
    ) {
        let object = if on_rowtype {
            format!("{} (uses the row type of {})", r.description, t.display())
        } else {
            format!("{} (reads {})", r.description, t.display())
        };
        let refused = match &r.definition {
            _ if !matches!(r.kind.as_str(), "f" | "p") => {
                Some("only functions and procedures are made again on the copy")
            }
            _ if r.in_extension => Some("it belongs to an extension"),
            _ if on_rowtype && r.has_dependents => Some(
                "other objects depend on it, so it cannot be dropped and made again on the copy's row type",
            ),
            _ if !r.replaceable => Some(
                "this session is not a member of its owner role, so it cannot make it again",
            ),
            None => Some("its definition could not be read"),
            Some(_) => None,
        };
        if let Some(reason) = refused {
            refuse(blockers, object, reason, USE_UPDATE);
            continue;
        }
        let mut create = vec![r.definition.clone().unwrap_or_default()];
        if on_rowtype {
            let routine = format!("ROUTINE {}", r.signature);
            create.push(format!("ALTER {routine} OWNER TO {}", quote(&r.owner)));
            if r.explicit_privileges {
                create.push(format!("REVOKE ALL ON {routine} FROM PUBLIC"));
                for g in &r.grants {
                    create.push(sqltext::grant(g, None, &routine));
                }
            }
            if let Some(comment) = &r.comment {
                create.push(format!("COMMENT ON {routine} IS {}", literal(comment)));
            }
        }
        out.push(CopyRoutine {
            signature: r.signature.clone(),
            drop: on_rowtype,
            create,
        });
    }
    out
}

/// What the copy engine cannot move, besides keys, triggers and indexes.
pub(super) fn refusals(t: &Table, blockers: &mut Vec<Blocker>) {
    let object = format!("table {}", t.display());
    if t.row_security_applies {
        refuse(
            blockers,
            object.clone(),
            "row security applies to this session, so the copy would hold only the rows its policies show",
            "run pgshift as the table's owner (without FORCE ROW LEVEL SECURITY), a superuser, or a role with BYPASSRLS",
        );
    }
    if t.replica_identity == "i" && !t.indexes.iter().any(|ix| ix.replica_identity) {
        refuse(
            blockers,
            object,
            "its replica identity names an index that could not be found",
            USE_UPDATE,
        );
    }
    for user in &t.rowtype_users {
        refuse(
            blockers,
            format!("{user} (uses the row type of {})", t.display()),
            "it would keep the original table's row type after the swap",
            USE_UPDATE,
        );
    }
    for c in t.constraints.iter().filter(|c| c.kind == "x") {
        refuse(
            blockers,
            format!("constraint {} on {}", c.name, t.display()),
            "the copy engine does not rebuild exclusion constraints yet",
            USE_UPDATE,
        );
    }
}

/// The copy's indexes, the primary key first (the replays look rows up by it).
pub(super) fn indexes(t: &Table, new_table: &str, blockers: &mut Vec<Blocker>) -> Vec<CopyIndex> {
    let mut out = Vec::new();
    for ix in &t.indexes {
        let object = format!("index {} on {}", ix.name, t.display());
        if !ix.is_valid {
            refuse(
                blockers,
                object,
                "it is invalid (a failed concurrent build)",
                "drop it or REINDEX it before the migration",
            );
            continue;
        }
        let unique = ix.is_unique && !ix.is_primary;
        // Comparing whole rows of keys with `IN` treats NULLs as distinct,
        // which is what the copy's duplicate check and eviction rely on.
        if unique && ix.nulls_not_distinct {
            refuse(
                blockers,
                object,
                "the copy engine does not check NULLS NOT DISTINCT unique indexes yet",
                USE_UPDATE,
            );
            continue;
        }
        if unique && ix.keys.is_empty() {
            refuse(
                blockers,
                object,
                "its key columns could not be read",
                USE_UPDATE,
            );
            continue;
        }
        // On a partitioned table: the index alone, valid once each
        // partition's is attached (see `partitions`).
        let (new_ix, create_sql) = index_on_copy(
            &ix.name,
            &ix.definition,
            ix.tablespace.as_deref(),
            new_table,
            t.kind == "p",
        );
        let Some(create_sql) = create_sql else {
            refuse(
                blockers,
                object,
                "its definition could not be read",
                USE_UPDATE,
            );
            continue;
        };
        let backs = ix.constraint.as_ref().and_then(|name| {
            t.constraints
                .iter()
                .find(|c| &c.name == name && matches!(c.kind.as_str(), "p" | "u"))
        });
        out.push(CopyIndex {
            name: ix.name.clone(),
            new_name: new_ix,
            old_name: names::shadow("old", &ix.name),
            create_sql,
            constraint: backs.map(|c| c.kind.clone()),
            constraint_definition: backs
                .filter(|_| t.kind == "p")
                .map(|c| c.definition.clone()),
            marks: IndexMarks::of(ix, backs),
            unique: unique.then(|| UniqueKey {
                keys: ix.keys.clone(),
                predicate: ix.predicate.clone(),
            }),
        });
    }
    out.sort_by_key(|i| i.constraint.as_deref() != Some("p"));
    out
}

/// NOT VALID checks, and on Postgres 18 NOT VALID NOT NULLs (name,
/// definition): the copy's old rows may break them (and `LIKE` makes a NOT
/// NULL valid), so they come off the copy and are added again, NOT VALID,
/// at cutover.
pub(super) fn not_valid_checks(t: &Table) -> Vec<(String, String)> {
    t.constraints
        .iter()
        .filter(|c| matches!(c.kind.as_str(), "c" | "n") && !c.validated)
        .map(|c| (c.name.clone(), c.definition.clone()))
        .collect()
}

/// The statements that make the empty copy with everything the table has
/// but its indexes, foreign keys, triggers and rows, and the copy's
/// extended statistics. Each can run again (expand does, on resume).
pub(super) fn create_table(
    t: &Table,
    new_table: &str,
    alters: &[String],
    pause_autovacuum: bool,
) -> (Vec<String>, Vec<CopyStatistics>) {
    let mut options = t.reloptions.clone();
    if pause_autovacuum {
        options.push("autovacuum_enabled = false".into());
    }
    options.extend(t.toast_reloptions.iter().map(|o| format!("toast.{o}")));
    const INCLUDING: &str =
        "INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE \
                             INCLUDING COMMENTS INCLUDING COMPRESSION";
    let partition_by = t
        .partition_key
        .as_ref()
        .filter(|_| t.kind == "p")
        .map(|k| format!(" PARTITION BY {k}"))
        .unwrap_or_default();
    let mut create = Vec::new();
    // A partitioned copy is partitioned the same way (its partitions come
    // after the column changes, which they inherit). Postgres changes no
    // partition key column's type, so its copy is made `LIKE` an empty
    // template that took the changes first.
    let like = if partition_by.is_empty() || alters.is_empty() {
        t.qualified()
    } else {
        let template = qualified("pgshift", &names::shadow("tmpl", &t.name));
        create.push(format!(
            "CREATE TABLE IF NOT EXISTS {template} (LIKE {} {INCLUDING})",
            t.qualified()
        ));
        create.push(format!("ALTER TABLE {template} {}", alters.join(", ")));
        template
    };
    // LIKE takes neither the table's persistence nor its tablespace.
    create.push(format!(
        "CREATE {}TABLE IF NOT EXISTS {new_table} (LIKE {like} {INCLUDING}){partition_by}{}",
        if t.persistence == "u" {
            "UNLOGGED "
        } else {
            ""
        },
        storage_clause(&options, t.tablespace.as_deref())
    ));
    if like != t.qualified() {
        create.push(format!("DROP TABLE IF EXISTS {like}"));
    } else if !alters.is_empty() {
        create.push(format!("ALTER TABLE {new_table} {}", alters.join(", ")));
    }
    create.extend(owner_and_grants(new_table, &t.owner, &t.grants));
    for c in &t.columns {
        for p in &c.privileges {
            create.push(sqltext::grant(p, Some(&c.name), new_table));
        }
        if c.statistics >= 0 {
            create.push(format!(
                "ALTER TABLE {new_table} ALTER COLUMN {} SET STATISTICS {}",
                quote(&c.name),
                c.statistics
            ));
        }
        if !c.options.is_empty() {
            create.push(format!(
                "ALTER TABLE {new_table} ALTER COLUMN {} SET ({})",
                quote(&c.name),
                c.options.join(", ")
            ));
        }
    }
    if let Some(comment) = &t.comment {
        create.push(format!(
            "COMMENT ON TABLE {new_table} IS {}",
            literal(comment)
        ));
    }
    // Row security is on for the copy from the start: pgshift's session
    // reads and writes past it (it is refused when it would not).
    for p in &t.policies {
        create.push(format!(
            "DROP POLICY IF EXISTS {} ON {new_table}",
            quote(&p.name)
        ));
        create.push(sqltext::create_policy(p, new_table));
    }
    if t.row_security {
        create.push(format!("ALTER TABLE {new_table} ENABLE ROW LEVEL SECURITY"));
    }
    if t.force_row_security {
        create.push(format!("ALTER TABLE {new_table} FORCE ROW LEVEL SECURITY"));
    }
    let statistics = extended_statistics(t, new_table, &mut create);
    for (name, _) in not_valid_checks(t) {
        create.push(format!(
            "ALTER TABLE {new_table} DROP CONSTRAINT IF EXISTS {}",
            quote(&name)
        ));
    }
    // USING INDEX waits for the index (see CopyIndex::replica_identity).
    match t.replica_identity.as_str() {
        "f" => create.push(format!("ALTER TABLE {new_table} REPLICA IDENTITY FULL")),
        "n" => create.push(format!("ALTER TABLE {new_table} REPLICA IDENTITY NOTHING")),
        _ => {}
    }
    (create, statistics)
}

/// A copy's owner and table privileges, as the original's.
pub(super) fn owner_and_grants(new_table: &str, owner: &str, grants: &[String]) -> Vec<String> {
    let mut s = Vec::new();
    if !owner.is_empty() {
        s.push(format!("ALTER TABLE {new_table} OWNER TO {}", quote(owner)));
    }
    s.extend(grants.iter().map(|g| sqltext::grant(g, None, new_table)));
    s
}

/// ` WITH (options) TABLESPACE ts`, each part when there is one.
pub(super) fn storage_clause(options: &[String], tablespace: Option<&str>) -> String {
    let mut out = String::new();
    if !options.is_empty() {
        out.push_str(&format!(" WITH ({})", options.join(", ")));
    }
    if let Some(ts) = tablespace {
        out.push_str(&format!(" TABLESPACE {}", quote(ts)));
    }
    out
}

/// Made here rather than by LIKE, which names them itself: under pgshift's
/// names, so the swap can give each the original's.
fn extended_statistics(
    t: &Table,
    new_table: &str,
    create: &mut Vec<String>,
) -> Vec<CopyStatistics> {
    let mut out = Vec::new();
    for x in &t.statistics {
        let new_name = names::shadow("new", &x.name);
        let target = qualified(&x.schema, &new_name);
        let kinds: Vec<&str> = x
            .kinds
            .chars()
            .filter_map(|k| match k {
                'd' => Some("ndistinct"),
                'f' => Some("dependencies"),
                'm' => Some("mcv"),
                _ => None,
            })
            .collect();
        create.push(format!(
            "CREATE STATISTICS IF NOT EXISTS {target}{} ON {} FROM {new_table}",
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            x.columns
        ));
        if x.target >= 0 {
            create.push(format!(
                "ALTER STATISTICS {target} SET STATISTICS {}",
                x.target
            ));
        }
        if let Some(comment) = &x.comment {
            create.push(format!(
                "COMMENT ON STATISTICS {target} IS {}",
                literal(comment)
            ));
        }
        out.push(CopyStatistics {
            schema: x.schema.clone(),
            name: x.name.clone(),
            new_name,
            old_name: names::shadow("old", &x.name),
        });
    }
    out
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS <name> ON <table> USING …` from the
/// original's `pg_get_indexdef`, keeping everything from `USING` on.
/// The copy's version of index `name`: its name, and its `CREATE INDEX`
/// on `new_table` (`ONLY` it, for a partitioned one) in the original's
/// tablespace; None when the definition could not be read.
pub(super) fn index_on_copy(
    name: &str,
    definition: &str,
    tablespace: Option<&str>,
    new_table: &str,
    only: bool,
) -> (String, Option<String>) {
    let new_name = names::shadow("new", name);
    let target = if only {
        format!("ONLY {new_table}")
    } else {
        new_table.to_string()
    };
    let sql = copy_index_sql(definition, &new_name, &target)
        .and_then(|sql| sqltext::in_tablespace(sql, tablespace));
    (new_name, sql)
}

fn copy_index_sql(definition: &str, name: &str, table: &str) -> Option<String> {
    let tokens = sqltext::tokenize(definition).ok()?;
    let is_word = |t: &sqltext::Spanned, k: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let on = tokens.iter().position(|t| is_word(t, Keyword::ON))?;
    let unique = tokens[..on].iter().any(|t| is_word(t, Keyword::UNIQUE));
    let using = on
        + tokens[on..]
            .iter()
            .position(|t| is_word(t, Keyword::USING))?;
    Some(format!(
        "CREATE {}INDEX IF NOT EXISTS {} ON {table} {}",
        if unique { "UNIQUE " } else { "" },
        quote(name),
        &definition[tokens[using].start..]
    ))
}

/// A type of `pg_catalog` by the name `format_type` gives it.
fn is_builtin_type(name: &str) -> bool {
    let base = name.split('(').next().unwrap_or(name).trim();
    matches!(
        base,
        "smallint"
            | "integer"
            | "bigint"
            | "numeric"
            | "text"
            | "character varying"
            | "character"
            | "uuid"
            | "date"
            | "timestamp without time zone"
            | "timestamp with time zone"
            | "boolean"
            | "bytea"
    )
}

/// `pg_get_triggerdef` with the table after `ON` written as `table`: the
/// definition names it as the session's search_path sees it.
fn retarget_trigger(definition: &str, table: &str) -> Option<String> {
    let tokens = sqltext::tokenize(definition).ok()?;
    let on = tokens.iter().position(
        |t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::ON && w.quote_style.is_none()),
    )?;
    let mut rest = tokens[on + 1..]
        .iter()
        .skip_while(|t| matches!(t.token, Token::Whitespace(_)));
    let mut end = match rest.next()? {
        t @ Spanned {
            token: Token::Word(_),
            ..
        } => t.end,
        _ => return None,
    };
    // `schema.table`
    let mut rest = rest.peekable();
    if matches!(rest.peek().map(|t| &t.token), Some(Token::Period)) {
        rest.next();
        match rest.next()? {
            t @ Spanned {
                token: Token::Word(_),
                ..
            } => end = t.end,
            _ => return None,
        }
    }
    Some(format!(
        "{}ON {table}{}",
        &definition[..tokens[on].start],
        &definition[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_definitions_name_the_table_as_given() {
        let t = "\"public\".\"scripts\"";
        assert_eq!(
            retarget_trigger(
                "CREATE TRIGGER touch BEFORE UPDATE OF \"on\", name ON scripts FOR EACH ROW WHEN ((old.* IS DISTINCT FROM new.*)) EXECUTE FUNCTION touch()",
                t
            )
            .unwrap(),
            "CREATE TRIGGER touch BEFORE UPDATE OF \"on\", name ON \"public\".\"scripts\" FOR EACH ROW WHEN ((old.* IS DISTINCT FROM new.*)) EXECUTE FUNCTION touch()"
        );
        assert_eq!(
            retarget_trigger(
                "CREATE TRIGGER audit AFTER INSERT ON app.\"Scripts\" REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION app.audit()",
                t
            )
            .unwrap(),
            "CREATE TRIGGER audit AFTER INSERT ON \"public\".\"scripts\" REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION app.audit()"
        );
        assert_eq!(retarget_trigger("CREATE TRIGGER x", t), None);
    }

    #[test]
    fn index_definitions_move_to_the_copy() {
        let sql = copy_index_sql(
            "CREATE UNIQUE INDEX scripts_pkey ON public.scripts USING btree (id) WHERE (id > 0)",
            "pgshift_new_scripts_pkey",
            "\"public\".\"pgshift_new_scripts\"",
        )
        .unwrap();
        assert_eq!(
            sql,
            "CREATE UNIQUE INDEX IF NOT EXISTS \"pgshift_new_scripts_pkey\" ON \"public\".\"pgshift_new_scripts\" USING btree (id) WHERE (id > 0)"
        );
        // A quoted name that reads like a keyword is not where the table ends.
        let sql = copy_index_sql(
            "CREATE INDEX \"using\" ON public.\"on using\" USING hash (name)",
            "n",
            "t",
        )
        .unwrap();
        assert_eq!(
            sql,
            "CREATE INDEX IF NOT EXISTS \"n\" ON t USING hash (name)"
        );
    }
}
