//! The pg_catalog queries that fill a [`Catalog`], all in one place.

use std::collections::{BTreeSet, VecDeque};

use tokio_postgres::Client;

use super::*;
use crate::error::{Error, Result};
use crate::migration::TableName;
use crate::names;

/// Finds the table a migration names, through `search_path` when unqualified.
/// The privileges an ACL grants (`PRIVILEGE grantee [WITH GRANT OPTION]`),
/// the owner's own left out when `owner` is given: SQL for a catalog query.
macro_rules! grants {
    ($acl:literal) => {
        concat!(
            "ARRAY(SELECT x.privilege_type || ' ' || ",
            "CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END || ",
            "CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END ",
            "FROM aclexplode(", $acl, ") x)"
        )
    };
    ($acl:literal, $owner:literal) => {
        concat!(
            "ARRAY(SELECT x.privilege_type || ' ' || ",
            "CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END || ",
            "CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END ",
            "FROM aclexplode(", $acl, ") x WHERE x.grantee <> ", $owner, ")"
        )
    };
}

pub async fn resolve_table(client: &Client, table: &TableName) -> Result<u32> {
    let regclass = match &table.schema {
        Some(schema) => names::qualified(schema, &table.name),
        None => names::quote(&table.name),
    };
    let row = client
        .query_one(
            "SELECT c.oid, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&regclass],
        )
        .await;
    match row {
        Ok(row) => {
            let kind: String = row.get(1);
            if kind == "r" || kind == "p" {
                Ok(row.get(0))
            } else {
                Err(Error::Unsupported {
                    what: format!("{table}"),
                    reason: format!("it is not a table (relkind {kind})"),
                })
            }
        }
        Err(e) if e.code().is_none() => Err(Error::UnknownTable {
            table: table.to_string(),
        }),
        Err(e) => Err(Error::db(format!("could not look up table {table}"))(e)),
    }
}

/// Loads `roots`, every table that references them by foreign key
/// (transitively), and the views that depend on their columns.
pub async fn load(client: &Client, roots: &[u32]) -> Result<Catalog> {
    let settings = format!(
        "SELECT current_setting('server_version_num')::int,
                current_setting('full_page_writes')::bool,
                pg_size_bytes(current_setting('max_wal_size')),
                current_setting('checkpoint_completion_target')::float8,
                (SELECT setting::int8 FROM pg_settings WHERE name = 'checkpoint_timeout'),
                coalesce((SELECT reset_val FROM pg_settings WHERE name = 'wal_compression'), 'off'),
                ARRAY({})",
        crate::connection::SETTABLE_WAL_COMPRESSION
    );
    let row = client.query_one(&settings, &[]).await.map_err(Error::db(
        "could not read the server version and WAL settings",
    ))?;
    let server_version: i32 = row.get(0);
    let wal = WalSettings {
        full_page_writes: row.get(1),
        max_wal_size_bytes: row.get(2),
        checkpoint_completion_target: row.get(3),
        checkpoint_timeout_secs: row.get(4),
        server_compression: row.get(5),
        compression_methods: row.get(6),
    };
    let mut catalog = Catalog {
        server_version,
        wal,
        ..Catalog::default()
    };
    let mut queue: VecDeque<u32> = roots.iter().copied().collect();
    let mut seen = BTreeSet::new();
    while let Some(oid) = queue.pop_front() {
        if !seen.insert(oid) {
            continue;
        }
        let mut table = load_table(client, oid).await?;
        if table.kind == "p" {
            table.partitions = load_partitions(client, oid).await?;
            let row = client
                .query_one(
                    "SELECT pg_get_partkeydef($1),
                            ARRAY(SELECT DISTINCT a.attname::text
                                  FROM pg_partition_tree($1::oid::regclass) t
                                  JOIN pg_partitioned_table pt ON pt.partrelid = t.relid
                                  JOIN pg_attribute a ON a.attrelid = t.relid
                                                     AND a.attnum = ANY (pt.partattrs::int2[])
                                  ORDER BY 1),
                            EXISTS (SELECT 1 FROM pg_partition_tree($1::oid::regclass) t
                                    JOIN pg_partitioned_table pt ON pt.partrelid = t.relid
                                    WHERE 0 = ANY (pt.partattrs::int2[]))",
                    &[&oid],
                )
                .await
                .map_err(Error::db(format!(
                    "could not read the partition key of table oid {oid}"
                )))?;
            table.partition_key = row.get(0);
            table.partition_columns = row.get(1);
            table.partition_expressions = row.get(2);
            // A partitioned table has no storage of its own: its leaves'.
            for p in &table.partitions {
                table.estimated_rows += p.estimated_rows;
                table.total_bytes += p.total_bytes;
                table.heap_bytes += p.heap_bytes;
            }
        }
        queue.extend(table.referenced_by.iter().map(|fk| fk.table));
        catalog.tables.push(table);
    }
    catalog.views = load_views(client, &seen).await?;
    catalog.slots = replication_slots(client).await?;
    Ok(catalog)
}

/// The replication slots that retain WAL, most first. A slot whose WAL was
/// already removed (`wal_status` lost) retains nothing and is left out.
pub async fn replication_slots(client: &Client) -> Result<Vec<ReplicationSlot>> {
    let rows = client
        .query(
            "SELECT slot_name::text, slot_type, active,
                    GREATEST((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                   ELSE pg_current_wal_lsn() END - restart_lsn)::int8, 0),
                    safe_wal_size
             FROM pg_replication_slots
             WHERE restart_lsn IS NOT NULL
             ORDER BY 4 DESC, 1",
            &[],
        )
        .await
        .map_err(Error::db("could not read the replication slots"))?;
    Ok(rows
        .iter()
        .map(|r| ReplicationSlot {
            name: r.get(0),
            kind: r.get(1),
            active: r.get(2),
            retained_bytes: r.get(3),
            safe_wal_bytes: r.get(4),
        })
        .collect())
}

async fn load_table(client: &Client, oid: u32) -> Result<Table> {
    let ctx = |what: &str| format!("could not read the {what} of table oid {oid}");
    let row = client
        .query_one(
            concat!(
                "SELECT n.nspname, c.relname, c.relkind::text, c.relispartition,
                    -- partitions are in pg_inherits too: only inheritance counts here
                    c.relkind <> 'p' AND NOT c.relispartition
                      AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid),
                    ARRAY(SELECT p.pubname::text FROM pg_publication p
                          WHERE p.puballtables
                             OR EXISTS (SELECT 1 FROM pg_publication_rel r
                                        WHERE r.prpubid = p.oid AND r.prrelid = c.oid)),
                    ARRAY(SELECT r.rulename::text FROM pg_rewrite r
                          WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'),
                    GREATEST(c.reltuples, 0)::int8,
                    pg_total_relation_size(c.oid),
                    COALESCE((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                              WHERE o LIKE 'fillfactor=%'), 100),
                    pg_relation_size(c.oid),
                    pg_get_userbyid(c.relowner)::text,
                    ", grants!("c.relacl", "c.relowner"), ",
                    obj_description(c.oid, 'pg_class'),
                    COALESCE(c.reloptions, '{}'),
                    c.relrowsecurity,
                    c.relreplident::text,
                    -- Routines come with their definitions below.
                    ARRAY(SELECT DISTINCT format('%s %s', pg_describe_object(d.classid, d.objid, d.objsubid), d.deptype)
                          FROM pg_depend d
                          WHERE d.refclassid = 'pg_type'::regclass
                            AND d.refobjid IN (c.reltype, (SELECT typarray FROM pg_type WHERE oid = c.reltype))
                            AND NOT (d.classid = 'pg_class'::regclass AND d.objid = c.oid)
                            AND NOT (d.classid = 'pg_type'::regclass)
                            AND d.classid <> 'pg_proc'::regclass),
                    c.relforcerowsecurity,
                    row_security_active(c.oid),
                    COALESCE((SELECT t.reloptions FROM pg_class t WHERE t.oid = c.reltoastrelid), '{}'),
                    c.relpersistence::text,
                    (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1"),
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("definition")))?;
    let mut table = Table {
        oid,
        schema: row.get(0),
        name: row.get(1),
        kind: row.get(2),
        is_partition: row.get(3),
        has_inheritance: row.get(4),
        publications: row.get(5),
        rules: row.get(6),
        estimated_rows: row.get(7),
        total_bytes: row.get(8),
        fillfactor: row.get(9),
        heap_bytes: row.get(10),
        owner: row.get(11),
        grants: row.get(12),
        comment: row.get(13),
        reloptions: row.get(14),
        row_security: row.get(15),
        replica_identity: row.get(16),
        rowtype_users: row.get(17),
        force_row_security: row.get(18),
        row_security_applies: row.get(19),
        toast_reloptions: row.get(20),
        persistence: row.get(21),
        tablespace: row.get(22),
        policies: Vec::new(),
        rowtype_routines: Vec::new(),
        body_routines: Vec::new(),
        statistics: Vec::new(),
        columns: Vec::new(),
        indexes: Vec::new(),
        constraints: Vec::new(),
        referenced_by: Vec::new(),
        triggers: Vec::new(),
        column_dependents: Vec::new(),
        partitions: Vec::new(),
        partition_key: None,
        partition_columns: Vec::new(),
        partition_expressions: false,
    };

    for row in client
        .query(
            concat!(
                "SELECT a.attnum, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated <> '',
                    (SELECT dep.objid FROM pg_depend dep JOIN pg_class s ON s.oid = dep.objid
                     WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
                       AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum
                       AND dep.deptype IN ('a', 'i') AND s.relkind = 'S' LIMIT 1),
                    ", grants!("a.attacl"), ",
                    col_description(a.attrelid, a.attnum),
                    COALESCE(a.attstattarget::int4, -1)::int2,
                    COALESCE(a.attoptions, '{}'),
                    (SELECT k.conname::text FROM pg_constraint k
                      WHERE k.conrelid = a.attrelid AND k.contype = 'n' AND k.conkey = ARRAY[a.attnum])
             FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum"),
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("columns")))?
    {
        let seq_oid: Option<u32> = row.get(7);
        let sequence = match seq_oid {
            Some(seq) => Some(load_sequence(client, seq).await?),
            None => None,
        };
        table.columns.push(Column {
            attnum: row.get(0),
            name: row.get(1),
            type_name: row.get(2),
            not_null: row.get(3),
            default: row.get(4),
            identity: row.get(5),
            generated: row.get(6),
            sequence,
            privileges: row.get(8),
            comment: row.get(9),
            statistics: row.get(10),
            options: row.get(11),
            not_null_name: row.get(12),
        });
    }

    for row in client
        .query(
            "SELECT i.indexrelid, ic.relname::text, pg_get_indexdef(i.indexrelid),
                    i.indisprimary, i.indisunique, i.indisvalid,
                    (SELECT con.conname::text FROM pg_constraint con
                     WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                       AND con.contype IN ('p', 'u', 'x') LIMIT 1),
                    ARRAY(SELECT DISTINCT k FROM (
                              SELECT unnest(i.indkey::int2[]) AS k
                              UNION
                              SELECT dep.refobjsubid::int2 FROM pg_depend dep
                              WHERE dep.classid = 'pg_class'::regclass AND dep.objid = i.indexrelid
                                AND dep.refclassid = 'pg_class'::regclass
                                AND dep.refobjid = i.indrelid AND dep.refobjsubid > 0) ks
                          WHERE k > 0 ORDER BY k),
                    pg_relation_size(i.indexrelid),
                    ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                          FROM generate_series(1, i.indnkeyatts::int) k ORDER BY k),
                    pg_get_expr(i.indpred, i.indrelid, true),
                    -- a column of Postgres 15 on: read by name, so older servers give false
                    COALESCE((to_jsonb(i) ->> 'indnullsnotdistinct')::bool, false),
                    obj_description(i.indexrelid, 'pg_class'),
                    i.indisreplident,
                    (SELECT spcname::text FROM pg_tablespace WHERE oid = ic.reltablespace),
                    i.indisclustered
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = $1
             ORDER BY ic.relname",
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("indexes")))?
    {
        table.indexes.push(Index {
            oid: row.get(0),
            name: row.get(1),
            definition: row.get(2),
            is_primary: row.get(3),
            is_unique: row.get(4),
            is_valid: row.get(5),
            constraint: row.get(6),
            columns: row.get(7),
            bytes: row.get(8),
            keys: row.get(9),
            predicate: row.get(10),
            nulls_not_distinct: row.get(11),
            comment: row.get(12),
            replica_identity: row.get(13),
            tablespace: row.get(14),
            clustered: row.get(15),
        });
    }

    let constraint_sql =
        "SELECT con.conname::text, con.contype::text, pg_get_constraintdef(con.oid),
                con.conrelid, COALESCE(con.conkey, '{}'), NULLIF(con.confrelid, 0),
                COALESCE(con.confkey, '{}'), con.convalidated,
                (SELECT relname::text FROM pg_class WHERE oid = NULLIF(con.conindid, 0)),
                con.condeferrable, con.condeferred, obj_description(con.oid, 'pg_constraint')
         FROM pg_constraint con WHERE ";
    for (filter, into_referenced) in [
        // Not the clones Postgres keeps of a constraint for each partition
        // (conparentid): they come and go with the constraint.
        (
            "con.conrelid = $1 AND con.conparentid = 0 ORDER BY con.conname",
            false,
        ),
        (
            "con.confrelid = $1 AND con.contype = 'f' AND con.conparentid = 0 ORDER BY con.conname",
            true,
        ),
    ] {
        for row in client
            .query(&format!("{constraint_sql}{filter}"), &[&oid])
            .await
            .map_err(Error::db(ctx("constraints")))?
        {
            let c = Constraint {
                name: row.get(0),
                kind: row.get(1),
                definition: row.get(2),
                table: row.get(3),
                columns: row.get(4),
                ref_table: row.get(5),
                ref_columns: row.get(6),
                validated: row.get(7),
                index: row.get(8),
                deferrable: row.get(9),
                initially_deferred: row.get(10),
                comment: row.get(11),
            };
            if into_referenced {
                table.referenced_by.push(c);
            } else {
                table.constraints.push(c);
            }
        }
    }

    for row in client
        .query(
            "SELECT t.tgname::text, t.tgisinternal, t.tgattr::int2[],
                    quote_ident(pn.nspname) || '.' || quote_ident(p.proname), COALESCE(p.prosrc, ''),
                    pg_get_triggerdef(t.oid), t.tgenabled::text
             FROM pg_trigger t
             JOIN pg_proc p ON p.oid = t.tgfoid
             JOIN pg_namespace pn ON pn.oid = p.pronamespace
             WHERE t.tgrelid = $1 ORDER BY t.tgname",
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("triggers")))?
    {
        table.triggers.push(Trigger {
            name: row.get(0),
            internal: row.get(1),
            columns: row.get(2),
            function: row.get(3),
            function_source: row.get(4),
            definition: row.get(5),
            enabled: row.get(6),
        });
    }

    // Routines on the row type (arguments, result), and routines whose
    // SQL-standard body reads the table.
    table.rowtype_routines = load_routines(
        client,
        "SELECT d.objid FROM pg_depend d JOIN pg_class c ON c.oid = $1
         WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_type'::regclass
           AND d.refobjid IN (c.reltype, (SELECT typarray FROM pg_type WHERE oid = c.reltype))",
        oid,
    )
    .await
    .map_err(Error::db(ctx("routines that use its row type")))?;
    table.body_routines = load_routines(
        client,
        "SELECT d.objid FROM pg_depend d
         WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1",
        oid,
    )
    .await
    .map_err(Error::db(ctx("routines that read it")))?;

    for row in client
        .query(
            "SELECT n.nspname::text, s.stxname::text, array_to_string(s.stxkind, ''),
                    pg_get_statisticsobjdef_columns(s.oid), COALESCE(s.stxstattarget::int4, -1),
                    obj_description(s.oid, 'pg_statistic_ext')
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
             WHERE s.stxrelid = $1 ORDER BY s.stxname",
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("extended statistics")))?
    {
        table.statistics.push(ExtendedStatistics {
            schema: row.get(0),
            name: row.get(1),
            kinds: row.get(2),
            columns: row.get(3),
            target: row.get(4),
            comment: row.get(5),
        });
    }

    for row in client
        .query(
            "SELECT p.policyname::text, p.permissive, p.cmd, p.roles::text[], p.qual, p.with_check
             FROM pg_policies p JOIN pg_class c ON c.relname = p.tablename
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = p.schemaname
             WHERE c.oid = $1 ORDER BY p.policyname",
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("row security policies")))?
    {
        table.policies.push(Policy {
            name: row.get(0),
            kind: row.get(1),
            command: row.get(2),
            roles: row.get(3),
            using: row.get(4),
            check: row.get(5),
        });
    }

    for row in client
        .query(
            "SELECT d.refobjsubid::int2, d.classid::regclass::text, d.objid,
                    pg_describe_object(d.classid, d.objid, d.objsubid),
                    CASE d.classid
                      WHEN 'pg_rewrite'::regclass THEN
                        (SELECT r.ev_class::regclass::text || ':' || c.relkind::text
                         FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
                      WHEN 'pg_class'::regclass THEN
                        (SELECT c.relkind::text FROM pg_class c WHERE c.oid = d.objid)
                      WHEN 'pg_attrdef'::regclass THEN
                        (SELECT ad.adnum::text FROM pg_attrdef ad WHERE ad.oid = d.objid)
                      ELSE '' END
             FROM pg_depend d
             WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid > 0
               AND d.deptype <> 'i'
             ORDER BY 1, 2, 3",
            &[&oid],
        )
        .await
        .map_err(Error::db(ctx("dependent objects")))?
    {
        table.column_dependents.push(Dependent {
            attnum: row.get(0),
            catalog: row.get(1),
            objid: row.get(2),
            description: row.get(3),
            detail: row.get::<_, Option<String>>(4).unwrap_or_default(),
        });
    }
    Ok(table)
}

/// The routines whose oids `which` selects (given the table's oid as $1).
async fn load_routines(
    client: &Client,
    which: &str,
    oid: u32,
) -> std::result::Result<Vec<Routine>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                concat!(
                "SELECT p.oid::regprocedure::text, pg_describe_object('pg_proc'::regclass, p.oid, 0), p.prokind::text,
                        CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
                        pg_get_userbyid(p.proowner)::text, p.proacl IS NOT NULL,
                        ", grants!("p.proacl", "p.proowner"), ",
                        obj_description(p.oid, 'pg_proc'),
                        EXISTS (SELECT 1 FROM pg_depend u WHERE u.refclassid = 'pg_proc'::regclass AND u.refobjid = p.oid),
                        EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'),
                        pg_has_role(p.proowner, 'USAGE')
                 FROM pg_proc p WHERE p.oid IN ({which}) ORDER BY 1"),
                which = which
            ),
            &[&oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Routine {
            signature: row.get(0),
            description: row.get(1),
            kind: row.get(2),
            definition: row.get(3),
            owner: row.get(4),
            explicit_privileges: row.get(5),
            grants: row.get(6),
            comment: row.get(7),
            has_dependents: row.get(8),
            in_extension: row.get(9),
            replaceable: row.get(10),
        })
        .collect())
}

async fn load_sequence(client: &Client, oid: u32) -> Result<Sequence> {
    let row = client
        .query_one(
            "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart,
                    s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, ps.last_value
             FROM pg_sequence s
             JOIN pg_class c ON c.oid = s.seqrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
             WHERE s.seqrelid = $1",
            &[&oid],
        )
        .await
        .map_err(Error::db(format!("could not read sequence oid {oid}")))?;
    Ok(Sequence {
        schema: row.get(0),
        name: row.get(1),
        data_type: row.get(2),
        start: row.get(3),
        increment: row.get(4),
        min: row.get(5),
        max: row.get(6),
        cache: row.get(7),
        cycle: row.get(8),
        last_value: row.get(9),
    })
}

/// Views over the given tables' columns, and views over those views.
async fn load_views(client: &Client, tables: &BTreeSet<u32>) -> Result<Vec<View>> {
    let table_oids: Vec<u32> = tables.iter().copied().collect();
    let rows = client
        .query(
            "WITH RECURSIVE deps(view_oid) AS (
                 SELECT DISTINCT r.ev_class
                 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjid = ANY($1) AND d.refobjsubid > 0 AND r.ev_class <> d.refobjid
               UNION
                 SELECT r.ev_class
                 FROM deps JOIN pg_depend d ON d.refobjid = deps.view_oid
                   AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                 JOIN pg_rewrite r ON r.oid = d.objid
                 WHERE r.ev_class <> deps.view_oid
             )
             SELECT c.oid, n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid, true),
                    COALESCE(c.reloptions, '{}'), pg_get_userbyid(c.relowner)::text,
                    ARRAY(SELECT format('GRANT %s ON %I.%I TO %s%s', a.privilege_type, n.nspname, c.relname,
                                        CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                             ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                          FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner),
                    obj_description(c.oid, 'pg_class'),
                    ARRAY(SELECT DISTINCT d.refobjid FROM pg_depend d
                          JOIN pg_rewrite r ON r.oid = d.objid
                          JOIN pg_class rc ON rc.oid = d.refobjid AND rc.relkind IN ('v', 'm')
                          WHERE r.ev_class = c.oid AND d.classid = 'pg_rewrite'::regclass
                            AND d.refobjid <> c.oid),
                    EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid)
                      OR EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'),
                    GREATEST(c.reltuples, 0)::int8,
                    ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
                          WHERE i.indrelid = c.oid ORDER BY i.indexrelid)
             FROM deps JOIN pg_class c ON c.oid = deps.view_oid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm')
             ORDER BY c.oid",
            &[&table_oids],
        )
        .await
        .map_err(Error::db("could not read dependent views"))?;
    let mut views = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        // Which (table, column) pairs the view reads: one more query keeps pairs exact.
        let pairs = client
            .query(
                "SELECT DISTINCT d.refobjid, d.refobjsubid::int2
                 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                 WHERE r.ev_class = $1 AND d.classid = 'pg_rewrite'::regclass
                   AND d.refobjid = ANY($2) AND d.refobjsubid > 0",
                &[&oid, &table_oids],
            )
            .await
            .map_err(Error::db("could not read view dependencies"))?
            .into_iter()
            .map(|r| (r.get::<_, u32>(0), r.get::<_, i16>(1)))
            .collect();
        views.push(View {
            oid,
            schema: row.get(1),
            name: row.get(2),
            kind: row.get(3),
            definition: row.get(4),
            options: row.get(5),
            owner: row.get(6),
            grants: row.get(7),
            comment: row.get(8),
            table_columns: pairs,
            depends_on_views: row.get(9),
            has_triggers_or_rules: row.get(10),
            estimated_rows: row.get(11),
            indexes: row.get(12),
        });
    }
    Ok(views)
}

/// The partition tree under `root`, parents before their children, each with
/// its bound, storage, owner, privileges, indexes, and what it has of its
/// own that a copy would not carry.
async fn load_partitions(client: &Client, root: u32) -> Result<Vec<Partition>> {
    let ctx =
        |what: &str| format!("could not read the {what} of the partitions of table oid {root}");
    let rows = client
        .query(
            concat!(
                "SELECT c.oid, n.nspname::text, c.relname::text, t.parentrelid::oid, c.relkind::text,
                    pg_get_expr(c.relpartbound, c.oid),
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                    GREATEST(c.reltuples, 0)::int8,
                    pg_total_relation_size(c.oid), pg_relation_size(c.oid),
                    pg_get_userbyid(c.relowner)::text,
                    ", grants!("c.relacl", "c.relowner"), ",
                    obj_description(c.oid, 'pg_class'),
                    COALESCE(c.reloptions, '{}'),
                    (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace),
                    c.relpersistence::text,
                    ARRAY(
                      SELECT format('trigger %s', g.tgname) FROM pg_trigger g
                       WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgparentid = 0
                      UNION ALL
                      SELECT format('constraint %s', k.conname) FROM pg_constraint k
                       WHERE k.conrelid = c.oid AND k.conparentid = 0
                         AND (k.contype IN ('p', 'u', 'f', 'x') OR (k.contype = 'c' AND k.conislocal))
                      UNION ALL
                      SELECT DISTINCT format('view %s', v.oid::regclass) FROM pg_depend d
                        JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
                       WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                         AND d.refobjid = c.oid AND v.oid <> c.oid
                      UNION ALL
                      SELECT format('rule %s', r.rulename) FROM pg_rewrite r
                       WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'
                      UNION ALL
                      SELECT format('row security policy %s', p.polname) FROM pg_policy p WHERE p.polrelid = c.oid
                      UNION ALL
                      SELECT 'row level security' WHERE c.relrowsecurity
                      UNION ALL
                      SELECT format('statistics %s', s.stxname) FROM pg_statistic_ext s WHERE s.stxrelid = c.oid
                      UNION ALL
                      SELECT format('publication %s', p.pubname) FROM pg_publication_rel pr
                        JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = c.oid)
             FROM pg_partition_tree($1::oid::regclass) t
             JOIN pg_class c ON c.oid = t.relid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE t.level > 0
             ORDER BY t.level, c.relname"),
            &[&root],
        )
        .await
        .map_err(Error::db(ctx("tree")))?;
    let mut out = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        let indexes = client
            .query(
                "SELECT i.indexrelid, ic.relname::text, pg_get_indexdef(i.indexrelid),
                        (SELECT h.inhparent FROM pg_inherits h WHERE h.inhrelid = i.indexrelid),
                        k.contype::text, pg_get_constraintdef(k.oid), i.indisunique, i.indisvalid,
                        (SELECT spcname::text FROM pg_tablespace WHERE oid = ic.reltablespace)
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                 LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                          AND k.contype IN ('p', 'u')
                 WHERE i.indrelid = $1
                 ORDER BY ic.relname",
                &[&oid],
            )
            .await
            .map_err(Error::db(ctx("indexes")))?
            .iter()
            .map(|r| PartitionIndex {
                oid: r.get(0),
                name: r.get(1),
                definition: r.get(2),
                parent: r.get(3),
                constraint: r.get(4),
                constraint_definition: r.get(5),
                is_unique: r.get(6),
                is_valid: r.get(7),
                tablespace: r.get(8),
            })
            .collect();
        out.push(Partition {
            oid,
            schema: row.get(1),
            name: row.get(2),
            parent: row.get(3),
            kind: row.get(4),
            bound: row.get(5),
            partition_key: row.get(6),
            estimated_rows: row.get(7),
            total_bytes: row.get(8),
            heap_bytes: row.get(9),
            owner: row.get(10),
            grants: row.get(11),
            comment: row.get(12),
            reloptions: row.get(13),
            tablespace: row.get(14),
            persistence: row.get(15),
            own_objects: row.get(16),
            indexes,
        });
    }
    Ok(out)
}
