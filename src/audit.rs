//! `pgshift audit`: integer keys close to the end of their type, and how
//! soon they get there.
//!
//! Keys fed by a sequence (serial or identity) are read from the sequence;
//! integer columns without one are read from their index (`max()` on a
//! leading btree column costs one index probe). Growth comes from sampling
//! (`--sample`) or from readings earlier runs recorded (`--record`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::names::quote;

/// One key and how close it is to its limit.
#[derive(Debug, Clone, Serialize)]
pub struct KeyUsage {
    pub table: String,
    pub column: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// The feeding sequence, if any.
    pub sequence: Option<String>,
    /// The sequence's last value, or the column's max when there is no sequence.
    pub last_value: Option<i64>,
    /// The first value that will not fit: the smaller of the type's and the sequence's maximum.
    pub max_value: i64,
    pub used_pct: f64,
    pub days_left: Option<f64>,
    /// Columns whose foreign key references this one (they widen with it).
    pub referenced_by: Vec<String>,
    /// What limits it, for the reader.
    pub note: String,
    #[serde(skip)]
    pub schema: String,
    #[serde(skip)]
    pub table_name: String,
    /// Values per second, when known.
    #[serde(skip)]
    pub rate: Option<f64>,
}

fn type_max(type_name: &str) -> i64 {
    match type_name {
        "smallint" => i16::MAX as i64,
        "integer" => i32::MAX as i64,
        _ => i64::MAX,
    }
}

/// Reads every sequence-fed integer key and every indexed integer column
/// near its limit (`threshold` percent) from the catalog.
pub async fn scan(client: &Client, threshold: f64) -> Result<Vec<KeyUsage>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    quote_ident(sn.nspname) || '.' || quote_ident(s.relname), format_type(sq.seqtypid, NULL),
                    sq.seqmax, sq.seqincrement, ps.last_value, c.oid, a.attnum
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
                  AND d.refobjsubid = a.attnum AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_sequence sq ON sq.seqrelid = s.oid
             LEFT JOIN pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
             WHERE a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) AND NOT a.attisdropped
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(Error::db("could not read sequence-fed columns"))?;
    let mut out = Vec::new();
    for r in rows {
        let (schema, table, column, type_name): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (sequence, seq_type, seq_max, increment, last): (
            String,
            String,
            i64,
            i64,
            Option<i64>,
        ) = (r.get(4), r.get(5), r.get(6), r.get(7), r.get(8));
        if increment <= 0 {
            continue; // descending sequences run toward their minimum; out of scope
        }
        let column_max = type_max(&type_name);
        if column_max == i64::MAX && type_max(&seq_type) == i64::MAX {
            continue; // bigint fed by bigint: nothing to audit
        }
        let max_value = column_max.min(seq_max);
        let note = if seq_max < column_max && type_max(&seq_type) < column_max {
            format!("sequence declared AS {seq_type} feeds a {type_name} column")
        } else if seq_max < column_max {
            format!("sequence MAXVALUE {seq_max}")
        } else {
            format!("{type_name} maximum")
        };
        let used = last.unwrap_or(0).max(0) as f64 / max_value as f64 * 100.0;
        out.push(KeyUsage {
            referenced_by: referencing(client, r.get(9), r.get(10)).await?,
            table: crate::names::display(&schema, &table),
            column,
            type_name,
            sequence: Some(sequence),
            last_value: last,
            max_value,
            used_pct: (used * 100.0).round() / 100.0,
            days_left: None,
            note,
            schema,
            table_name: table,
            rate: None,
        });
    }
    out.extend(indexed_columns(client, threshold).await?);
    Ok(out)
}

async fn referencing(client: &Client, table: u32, attnum: i16) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT con.conrelid::regclass::text || '.' || a.attname
             FROM pg_constraint con
             JOIN LATERAL unnest(con.confkey, con.conkey) AS k(parent, child) ON true
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.child
             WHERE con.contype = 'f' AND con.confrelid = $1 AND k.parent = $2
             ORDER BY 1",
            &[&table, &attnum],
        )
        .await
        .map_err(Error::db("could not read referencing columns"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Integer columns without a sequence that lead a valid btree index, read
/// with one `max()` each, kept when past `threshold` percent.
async fn indexed_columns(client: &Client, threshold: f64) -> Result<Vec<KeyUsage>> {
    let rows = client
        .query(
            "SELECT DISTINCT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), c.oid, a.attnum
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid AND c.relkind = 'r'
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
             WHERE i.indisvalid AND a.atttypid IN ('int2'::regtype, 'int4'::regtype)
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                               WHERE d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i'))
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(Error::db("could not read indexed integer columns"))?;
    let mut out = Vec::new();
    for r in rows {
        let (schema, table, column, type_name): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let sql = format!(
            "SELECT max({})::int8 FROM {}.{}",
            quote(&column),
            quote(&schema),
            quote(&table)
        );
        let max: Option<i64> = client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(Error::db(format!(
                "could not read max({column}) of {table}"
            )))?
            .get(0);
        let max_value = type_max(&type_name);
        let used = max.unwrap_or(0).max(0) as f64 / max_value as f64 * 100.0;
        if used < threshold {
            continue;
        }
        out.push(KeyUsage {
            referenced_by: referencing(client, r.get(4), r.get(5)).await?,
            table: crate::names::display(&schema, &table),
            column,
            type_name: type_name.clone(),
            sequence: None,
            last_value: max,
            max_value,
            used_pct: (used * 100.0).round() / 100.0,
            days_left: None,
            note: format!("no sequence; {type_name} maximum, read from its index"),
            schema,
            table_name: table,
            rate: None,
        });
    }
    Ok(out)
}

/// Reads the current last_value of each sequence.
pub async fn read_sequences(client: &Client, keys: &[KeyUsage]) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for seq in keys.iter().filter_map(|k| k.sequence.as_ref()) {
        let row = client
            .query_one(
                "SELECT COALESCE(last_value, 0) FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename) = $1",
                &[seq],
            )
            .await
            .map_err(Error::db(format!("could not read sequence {seq}")))?;
        out.insert(seq.clone(), row.get(0));
    }
    Ok(out)
}

/// How the growth rate was estimated, for the report.
pub enum Growth {
    Sampled(Duration),
    History,
    Unknown,
}

/// Fills `days_left` from a sample: values before, values after `window`.
pub fn apply_sample(
    keys: &mut [KeyUsage],
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    window: Duration,
) {
    for k in keys.iter_mut() {
        let Some(seq) = &k.sequence else { continue };
        if let (Some(a), Some(b)) = (before.get(seq), after.get(seq)) {
            k.last_value = Some(*b);
            k.used_pct = ((*b).max(0) as f64 / k.max_value as f64 * 10_000.0).round() / 100.0;
            set_rate(k, (b - a) as f64 / window.as_secs_f64().max(1e-3));
        }
    }
}

fn set_rate(k: &mut KeyUsage, per_second: f64) {
    k.rate = Some(per_second);
    if per_second > 0.0 {
        let left = (k.max_value - k.last_value.unwrap_or(0)) as f64;
        k.days_left = Some(((left / per_second / 86_400.0) * 10.0).round() / 10.0);
    }
}

const READINGS_SQL: &str = "CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.audit_readings (
    taken_at   timestamptz NOT NULL DEFAULT now(),
    sequence   text NOT NULL,
    last_value bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_readings_sequence ON pgshift.audit_readings (sequence, taken_at);";

/// Stores this run's readings for later forecasts.
pub async fn record(client: &Client, keys: &[KeyUsage]) -> Result<()> {
    client
        .batch_execute(READINGS_SQL)
        .await
        .map_err(Error::db("could not create pgshift.audit_readings"))?;
    for k in keys {
        if let (Some(seq), Some(v)) = (&k.sequence, k.last_value) {
            client
                .execute(
                    "INSERT INTO pgshift.audit_readings (sequence, last_value) VALUES ($1, $2)",
                    &[seq, &v],
                )
                .await
                .map_err(Error::db("could not record an audit reading"))?;
        }
    }
    Ok(())
}

/// Forecasts from the oldest recorded reading of each sequence; true when any was used.
pub async fn apply_history(client: &Client, keys: &mut [KeyUsage]) -> Result<bool> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgshift.audit_readings') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("could not look for audit history"))?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let mut used = false;
    for k in keys.iter_mut() {
        let (Some(seq), Some(now)) = (k.sequence.clone(), k.last_value) else {
            continue;
        };
        let row = client
            .query_opt(
                "SELECT last_value, EXTRACT(EPOCH FROM now() - taken_at)::float8 FROM pgshift.audit_readings
                 WHERE sequence = $1 AND taken_at < now() - interval '1 second' ORDER BY taken_at LIMIT 1",
                &[&seq],
            )
            .await
            .map_err(Error::db("could not read audit history"))?;
        if let Some(r) = row {
            let (then, secs): (i64, f64) = (r.get(0), r.get(1));
            set_rate(k, (now - then) as f64 / secs.max(1e-3));
            used = true;
        }
    }
    Ok(used)
}

/// Most urgent first: fewest days left, then highest use.
pub fn sort_by_urgency(keys: &mut [KeyUsage]) {
    keys.sort_by(|a, b| {
        let da = a.days_left.unwrap_or(f64::INFINITY);
        let db = b.days_left.unwrap_or(f64::INFINITY);
        da.total_cmp(&db)
            .then(b.used_pct.total_cmp(&a.used_pct))
            .then(a.table.cmp(&b.table))
    });
}

/// The migration that widens `k` (pgshift widens its referencing columns with it).
pub fn migration_sql(k: &KeyUsage) -> String {
    let mut sql = format!(
        "-- Written by `pgshift audit`: {}.{} is at {:.2}% of its range ({}).\n",
        k.table, k.column, k.used_pct, k.note
    );
    if !k.referenced_by.is_empty() {
        sql.push_str(&format!(
            "-- pgshift also widens the columns that reference it: {}.\n",
            k.referenced_by.join(", ")
        ));
    }
    sql.push_str(&format!(
        "ALTER TABLE {}.{} ALTER COLUMN {} TYPE bigint;\n",
        quote(&k.schema),
        quote(&k.table_name),
        quote(&k.column)
    ));
    sql
}
