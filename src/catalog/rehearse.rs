//! Rehearsing a table's column type changes on an empty copy of it, in a
//! transaction that is always rolled back, so that Postgres itself says what
//! the blocking `ALTER` would do: the canonical new type, whether it rewrites
//! the table or rebuilds an index (or is a catalog-only change), and whether
//! it can be done at all (an unknown type, a `USING` that does not resolve,
//! an index or CHECK that cannot exist on the new type, a default with no
//! cast). An empty table decides all of that exactly as the real one would
//! (`ATColumnChangeRequiresRewrite` looks at the expression, not the rows),
//! and costs no lock on the real table beyond `ACCESS SHARE` for `LIKE`.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{Rehearsal, RehearsedColumn, RehearsedView, View};
use crate::error::{Error, Result};
use crate::migration::TypeChange;
use crate::names::{literal, qualified, quote};

/// The settings a conversion can depend on (`timestamp` → `timestamptz` on
/// `TimeZone`, text → date on `DateStyle`, unqualified names on
/// `search_path`, …): read from pgshift's session, which starts with the
/// database's and role's defaults, as the user's session running the
/// blocking `ALTER` would.
pub const CONVERSION_SETTINGS: [&str; 7] = [
    "search_path",
    "TimeZone",
    "DateStyle",
    "IntervalStyle",
    "extra_float_digits",
    "bytea_output",
    "lc_monetary",
];

pub async fn conversion_settings(client: &Client) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for name in CONVERSION_SETTINGS {
        let row = client
            .query_one("SELECT current_setting($1)", &[&name])
            .await
            .map_err(Error::db(format!("could not read the setting {name}")))?;
        out.push((name.to_string(), row.get(0)));
    }
    Ok(out)
}

/// `SELECT set_config(…)` of each setting, local to the transaction: run
/// before a conversion (or before `CREATE FUNCTION … SET … FROM CURRENT`).
pub fn apply_settings(settings: &[(String, String)]) -> Vec<String> {
    settings
        .iter()
        .map(|(name, value)| {
            format!(
                "SELECT pg_catalog.set_config({}, {}, true)",
                literal(name),
                literal(value)
            )
        })
        .collect()
}

/// [`apply_settings`] as one string to append to a batch of statements
/// (each after a `; `).
pub fn settings_suffix(settings: &[(String, String)]) -> String {
    apply_settings(settings)
        .iter()
        .map(|s| format!("; {s}"))
        .collect()
}

/// One table's changes: (column, current type, change).
pub struct TableChanges<'a> {
    pub oid: u32,
    pub schema: &'a str,
    pub name: &'a str,
    pub columns: Vec<(String, String, TypeChange)>,
}

/// The `ALTER COLUMN … TYPE …` clause of one change.
pub fn alter_clause(
    column: &str,
    type_text: &str,
    collate: Option<&str>,
    using: Option<&str>,
) -> String {
    let mut s = format!("ALTER COLUMN {} TYPE {type_text}", quote(column));
    if let Some(c) = collate {
        s.push_str(&format!(" COLLATE {c}"));
    }
    if let Some(u) = using {
        s.push_str(&format!(" USING {u}"));
    }
    s
}

/// Rehearses every table's changes, then `views` (in creation order), in
/// one transaction that is rolled back. Each table's copy takes the table's
/// own name in `pg_temp`, which Postgres searches first for relations: the
/// views' definitions, re-created as temporary views, then read the copies
/// with their new types, as they will read the real tables after cutover.
pub async fn rehearse(
    client: &Client,
    tables: &[TableChanges<'_>],
    views: &[&View],
) -> Result<(Vec<Rehearsal>, Vec<RehearsedView>)> {
    let context = "could not rehearse the type changes";
    client
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '30s'")
        .await
        .map_err(Error::db(context))?;
    let outcome = rehearse_in(client, tables, views).await;
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(Error::db(context))?;
    outcome.map_err(Error::db(context))
}

/// The relfilenodes of a scratch table and of its indexes.
async fn files(
    client: &Client,
    scratch: &str,
) -> std::result::Result<(u32, Vec<u32>), tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT c.relfilenode, ARRAY(SELECT i.relfilenode FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                 WHERE x.indrelid = c.oid) FROM pg_class c WHERE c.oid = {}::regclass",
                literal(scratch)
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A statement under a savepoint: Postgres's message when it fails with an
/// error about the input (not a lost connection or a timeout).
async fn attempt(
    client: &Client,
    sql: &str,
) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT pgshift_attempt").await?;
    match client.batch_execute(sql).await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT pgshift_attempt")
                .await?;
            Ok(None)
        }
        Err(e) => match e.as_db_error() {
            Some(db)
                if e.code() != Some(&SqlState::QUERY_CANCELED)
                    && e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) =>
            {
                let message = db.message().to_string();
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT pgshift_attempt")
                    .await?;
                Ok(Some(message))
            }
            _ => Err(e),
        },
    }
}

async fn rehearse_in(
    client: &Client,
    tables: &[TableChanges<'_>],
    views: &[&View],
) -> std::result::Result<(Vec<Rehearsal>, Vec<RehearsedView>), tokio_postgres::Error> {
    let mut out = Vec::new();
    for (i, changes) in tables.iter().enumerate() {
        // The table's own name, unless two tables of the migration share it.
        let shadows = tables.iter().filter(|t| t.name == changes.name).count() == 1;
        let name = if shadows {
            changes.name.to_string()
        } else {
            format!("pgshift_rehearsal_{i}")
        };
        out.push(rehearse_table(client, changes, &name, i).await?);
    }
    let mut rehearsed_views = Vec::new();
    for v in views {
        let error = attempt(
            client,
            &format!(
                "CREATE TEMP VIEW {} AS {}",
                quote(&v.name),
                v.definition.trim_end_matches(';')
            ),
        )
        .await?;
        rehearsed_views.push(RehearsedView { oid: v.oid, error });
    }
    Ok((out, rehearsed_views))
}

async fn rehearse_table(
    client: &Client,
    changes: &TableChanges<'_>,
    name: &str,
    i: usize,
) -> std::result::Result<Rehearsal, tokio_postgres::Error> {
    let mut out = Rehearsal {
        table: changes.oid,
        ..Rehearsal::default()
    };
    let table = qualified(changes.schema, changes.name);
    let scratch = format!("pg_temp.{}", quote(name));
    let back = format!("pg_temp.pgshift_rehearsal_back_{i}");
    // The copy to change, and the table as it is, to insert values
    // converted back into: the swap back's replays assign them alike.
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE {} (LIKE {table} INCLUDING ALL); \
             CREATE TEMP TABLE pgshift_rehearsal_back_{i} (LIKE {table})",
            quote(name)
        ))
        .await?;
    let (table_before, indexes_before) = files(client, &scratch).await?;
    let clauses: Vec<String> = changes
        .columns
        .iter()
        .map(|(c, _, ch)| {
            alter_clause(c, &ch.type_text, ch.collate.as_deref(), ch.using.as_deref())
        })
        .collect();
    let alter = format!("ALTER TABLE {scratch} {}", clauses.join(", "));
    if let Some(message) = attempt(client, &alter).await? {
        out.error = Some(message);
        return Ok(out);
    }
    let (table_after, indexes_after) = files(client, &scratch).await?;
    out.rewrites = table_after != table_before;
    out.rebuilt_indexes = indexes_after
        .iter()
        .filter(|f| !indexes_before.contains(f))
        .count() as i32;
    for (column, old_type, change) in &changes.columns {
        let row = client
            .query_one(
                &format!(
                    "SELECT format_type(a.atttypid, a.atttypmod),
                            CASE WHEN a.attcollation <> t.typcollation THEN
                                 (SELECT quote_ident(n.nspname) || '.' || quote_ident(l.collname)
                                    FROM pg_collation l JOIN pg_namespace n ON n.oid = l.collnamespace
                                   WHERE l.oid = a.attcollation) END,
                            (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                              WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum)
                       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                      WHERE a.attrelid = {}::regclass AND a.attname = $1",
                    literal(&scratch)
                ),
                &[column],
            )
            .await?;
        let (back_expr, back_error) =
            way_back(client, &scratch, &back, column, old_type, change).await?;
        out.columns.push(RehearsedColumn {
            name: column.clone(),
            new_type: row.get(0),
            collation: row.get(1),
            default: row.get(2),
            back: back_expr,
            back_error,
        });
    }
    Ok(out)
}

/// How a value written after cutover converts back to `old_type` for a
/// rollback: the annotation's expression, else the value itself where
/// Postgres assigns it (an assignment cast), else an explicit cast. An
/// explicit cast to a length-limited type truncates without a word, so it
/// casts to the unlimited type and the assignment checks the length.
async fn way_back(
    client: &Client,
    scratch: &str,
    back: &str,
    column: &str,
    old_type: &str,
    change: &TypeChange,
) -> std::result::Result<(Option<String>, Option<String>), tokio_postgres::Error> {
    let insert = |expr: &str| {
        format!(
            "INSERT INTO {back} ({}) SELECT {expr} FROM {scratch}",
            quote(column)
        )
    };
    if let Some(down) = &change.down {
        let expr = format!("({down})");
        return Ok(match attempt(client, &insert(&expr)).await? {
            None => (Some(expr), None),
            Some(e) => (
                None,
                Some(format!(
                    "the pgshift:down expression does not convert back: {e}"
                )),
            ),
        });
    }
    let plain = quote(column);
    let first = match attempt(client, &insert(&plain)).await? {
        None => return Ok((Some(plain), None)),
        Some(e) => e,
    };
    let cast = format!("CAST({plain} AS {})", unlimited(old_type));
    Ok(match attempt(client, &insert(&cast)).await? {
        None => (Some(cast), None),
        Some(_) => (None, Some(first)),
    })
}

/// `old_type` without the length limit an explicit cast would truncate to.
fn unlimited(old_type: &str) -> &str {
    for base in ["character varying", "character", "bit varying", "bit"] {
        if let Some(rest) = old_type.strip_prefix(base) {
            if rest.starts_with('(') && !rest.contains('[') {
                return if base == "character" { "bpchar" } else { base };
            }
        }
    }
    old_type
}

#[cfg(test)]
mod tests {
    #[test]
    fn explicit_casts_back_keep_no_length_limit() {
        assert_eq!(
            super::unlimited("character varying(20)"),
            "character varying"
        );
        assert_eq!(super::unlimited("character(3)"), "bpchar");
        assert_eq!(super::unlimited("bit varying(8)"), "bit varying");
        assert_eq!(super::unlimited("numeric(10,2)"), "numeric(10,2)");
        assert_eq!(
            super::unlimited("character varying(20)[]"),
            "character varying(20)[]"
        );
    }
}
