//! Planning from hand-built catalog snapshots: no database involved.

use super::*;
use crate::catalog::{Catalog, Column, Constraint, Index, Sequence, Table, Trigger, View};

fn column(attnum: i16, name: &str, type_name: &str) -> Column {
    Column {
        attnum,
        name: name.into(),
        type_name: type_name.into(),
        not_null: true,
        default: None,
        identity: String::new(),
        generated: false,
        sequence: None,
        privileges: vec![],
        comment: None,
        statistics: -1,
        options: vec![],
        not_null_name: None,
    }
}

fn table(oid: u32, name: &str, columns: Vec<Column>) -> Table {
    Table {
        oid,
        schema: "public".into(),
        name: name.into(),
        kind: "r".into(),
        is_partition: false,
        has_inheritance: false,
        publications: vec![],
        rules: vec![],
        estimated_rows: 1000,
        total_bytes: 1 << 20,
        heap_bytes: 1 << 19,
        fillfactor: 100,
        owner: "app".into(),
        grants: vec![],
        comment: None,
        reloptions: vec![],
        row_security: false,
        force_row_security: false,
        row_security_applies: false,
        policies: vec![],
        toast_reloptions: vec![],
        persistence: "p".into(),
        tablespace: None,
        statistics: vec![],
        replica_identity: "d".into(),
        rowtype_users: vec![],
        rowtype_routines: vec![],
        body_routines: vec![],
        columns,
        indexes: vec![],
        constraints: vec![],
        referenced_by: vec![],
        triggers: vec![],
        column_dependents: vec![],
        partitions: vec![],
        partition_key: None,
        partition_columns: vec![],
        partition_expressions: false,
    }
}

fn pk(table: u32, name: &str, columns: Vec<i16>) -> Constraint {
    Constraint {
        name: name.into(),
        kind: "p".into(),
        definition: "PRIMARY KEY (id)".into(),
        table,
        columns,
        ref_table: None,
        ref_columns: vec![],
        validated: true,
        index: Some(name.into()),
        deferrable: false,
        initially_deferred: false,
        comment: None,
    }
}

/// scripts(id serial pk) <- script_runs(script_id int fk), and a union view.
pub(crate) fn incident() -> Catalog {
    let mut scripts = table(
        1,
        "scripts",
        vec![column(1, "id", "integer"), column(2, "name", "text")],
    );
    scripts.columns[0].default = Some("nextval('scripts_id_seq'::regclass)".into());
    scripts.columns[0].sequence = Some(Sequence {
        schema: "public".into(),
        name: "scripts_id_seq".into(),
        data_type: "integer".into(),
        start: 1,
        increment: 1,
        min: 1,
        max: i32::MAX as i64,
        cache: 1,
        cycle: false,
        last_value: Some(2_000_000_000),
    });
    scripts.constraints.push(pk(1, "scripts_pkey", vec![1]));
    scripts.indexes.push(Index {
        oid: 11,
        name: "scripts_pkey".into(),
        definition: "CREATE UNIQUE INDEX scripts_pkey ON public.scripts USING btree (id)".into(),
        is_primary: true,
        is_unique: true,
        is_valid: true,
        constraint: Some("scripts_pkey".into()),
        columns: vec![1],
        bytes: 100,
        keys: vec![],
        predicate: None,
        nulls_not_distinct: false,
        comment: None,
        replica_identity: false,
        tablespace: None,
        clustered: false,
    });
    let fk = Constraint {
        name: "script_runs_script_id_fkey".into(),
        kind: "f".into(),
        definition: "FOREIGN KEY (script_id) REFERENCES scripts(id) ON DELETE CASCADE".into(),
        table: 2,
        columns: vec![2],
        ref_table: Some(1),
        ref_columns: vec![1],
        validated: true,
        index: Some("scripts_pkey".into()),
        deferrable: false,
        initially_deferred: false,
        comment: None,
    };
    scripts.referenced_by.push(fk.clone());
    let mut runs = table(
        2,
        "script_runs",
        vec![column(1, "id", "bigint"), column(2, "script_id", "integer")],
    );
    runs.constraints.push(pk(2, "script_runs_pkey", vec![1]));
    runs.constraints.push(fk);
    let archived = table(3, "archived_scripts", vec![column(1, "id", "integer")]);
    let view = View {
        oid: 20,
        schema: "public".into(),
        name: "all_scripts".into(),
        kind: "v".into(),
        definition: " SELECT scripts.id FROM scripts UNION ALL SELECT archived_scripts.id FROM archived_scripts;".into(),
        options: vec![],
        owner: "app".into(),
        grants: vec!["GRANT SELECT ON public.all_scripts TO reporting".into()],
        comment: None,
        table_columns: vec![(1, 1), (3, 1)],
        depends_on_views: vec![],
        has_triggers_or_rules: false,
        estimated_rows: 0,
        indexes: vec![],
    };
    Catalog {
        tables: vec![scripts, runs, archived],
        views: vec![view],
        server_version: 150000,
        wal: Default::default(),
        slots: vec![],
        rehearsals: vec![],
        conversion_settings: vec![],
        rehearsed_views: vec![],
    }
}

pub(crate) fn plan(catalog: &Catalog, requests: &[(u32, &str)]) -> Plan {
    let requests: Vec<Request> = requests
        .iter()
        .map(|(t, c)| Request {
            table: *t,
            column: c.to_string(),
            change: None,
        })
        .collect();
    build("m", "abc", &requests, catalog, Options::default()).unwrap()
}

#[test]
fn widening_a_key_widens_the_columns_that_reference_it() {
    let p = plan(&incident(), &[(1, "id")]);
    let cols: Vec<(String, String, String)> = p
        .tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(move |c| (t.name.clone(), c.name.clone(), c.reason.clone()))
        })
        .collect();
    assert_eq!(
        cols,
        vec![
            ("scripts".into(), "id".into(), "requested".into()),
            (
                "script_runs".into(),
                "script_id".into(),
                "references scripts.id (script_runs_script_id_fkey)".into()
            ),
        ]
    );
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    // The sequence goes to the bigint maximum, since it was at the int4 maximum.
    assert_eq!(
        p.tables[0].columns[0].sequence.as_ref().unwrap().max,
        i64::MAX
    );
    // The foreign key is rebuilt on both new columns, keeping its action.
    assert_eq!(
        p.foreign_keys[0].definition,
        "FOREIGN KEY (\"pgshift_new_script_id\") REFERENCES scripts(\"pgshift_new_id\") ON DELETE CASCADE"
    );
    assert_eq!(
        p.tables[0].indexes[0].create_sql,
        "CREATE UNIQUE INDEX CONCURRENTLY \"pgshift_new_scripts_pkey\" ON public.scripts USING btree (\"pgshift_new_id\")"
    );
    assert_eq!(p.views.len(), 1);
    assert_eq!(p.views[0].grants.len(), 1);
}

#[test]
fn the_update_engine_warns_that_the_new_column_comes_last_and_the_copy_engine_keeps_the_order() {
    let p = plan(&incident(), &[(1, "id")]);
    assert_eq!(p.engine, crate::plan::Engine::Update);
    let order: Vec<&String> = p
        .warnings
        .iter()
        .filter(|w| w.contains("INSERT without a column list"))
        .collect();
    assert_eq!(order.len(), 1, "{:?}", p.warnings);
    assert!(
        order[0].contains("scripts.id is the table's last column and the old one keeps its place as pgshift_old_id"),
        "{}",
        order[0]
    );
    assert!(
        order[0].contains("script_runs.script_id is"),
        "{}",
        order[0]
    );
    let copy = copy_plan(&incident(), &[(1, "id")]);
    assert!(
        !copy
            .warnings
            .iter()
            .any(|w| w.contains("INSERT without a column list")),
        "{:?}",
        copy.warnings
    );
}

#[test]
fn a_union_with_an_unwidened_sibling_is_warned_about_and_widening_both_silences_it() {
    let p = plan(&incident(), &[(1, "id")]);
    let union: Vec<&String> = p
        .warnings
        .iter()
        .filter(|w| w.contains("UNION ALL"))
        .collect();
    assert_eq!(union.len(), 1, "{:?}", p.warnings);
    assert!(union[0].contains("all_scripts") && union[0].contains("archived_scripts"));

    let p = plan(&incident(), &[(1, "id"), (3, "id")]);
    assert!(
        p.warnings.iter().all(|w| !w.contains("UNION")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_trigger_that_uses_the_column_blocks_with_a_remedy() {
    let mut catalog = incident();
    catalog.tables[0].triggers.push(Trigger {
        name: "audit".into(),
        internal: false,
        columns: vec![],
        function: "public.audit_fn".into(),
        function_source: "BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END".into(),
        definition:
            "CREATE TRIGGER audit AFTER INSERT ON scripts FOR EACH ROW EXECUTE FUNCTION audit_fn()"
                .into(),
        enabled: "O".into(),
    });
    let p = plan(&catalog, &[(1, "id")]);
    assert_eq!(p.blockers.len(), 1);
    assert_eq!(p.blockers[0].object, "trigger audit on scripts");
    assert!(!p.blockers[0].remedy.is_empty());
    // The copy engine's copy and replays never fire it: it moves at cutover.
    let p = copy_plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let cutover = crate::ops::cutover(&p, "SELECT 1");
    assert!(
        cutover.description.contains(", move 1 trigger;"),
        "{}",
        cutover.description
    );
    let moved = &p.copy.as_ref().unwrap().tables[0].triggers;
    assert_eq!(
        moved[0].create,
        vec!["CREATE TRIGGER audit AFTER INSERT ON \"public\".\"scripts\" FOR EACH ROW EXECUTE FUNCTION audit_fn()"]
    );
}

#[test]
fn tables_without_a_primary_key_or_partitioned_are_blocked_and_bigint_is_a_no_op() {
    let mut catalog = incident();
    catalog.tables[2].kind = "p".into();
    let p = plan(&catalog, &[(3, "id"), (2, "id")]);
    let objects: Vec<&str> = p.blockers.iter().map(|b| b.object.as_str()).collect();
    assert!(objects.contains(&"table archived_scripts"), "{objects:?}");
    assert!(objects.contains(&"column script_runs.id"), "{objects:?}");
    assert!(p
        .blockers
        .iter()
        .any(|b| b.reason == "it has no primary key"));

    let err = build(
        "m",
        "abc",
        &[Request {
            table: 1,
            column: "nope".into(),
            change: None,
        }],
        &incident(),
        Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "column nope does not exist in table scripts"
    );
}

fn checkpoint_warning(p: &Plan) -> &str {
    p.warnings
        .iter()
        .find(|w| w.contains("checkpoint"))
        .expect("a checkpoint warning")
}

#[test]
fn checkpoints_during_the_migration_are_a_warning_with_the_setting_to_raise() {
    let mut catalog = incident();
    for t in &mut catalog.tables {
        t.estimated_rows = 5_000_000;
        t.heap_bytes = 600_000_000;
    }
    catalog.wal.max_wal_size_bytes = 1 << 30;
    let p = plan(&catalog, &[(1, "id")]);
    assert!(p.wal.checkpoints >= 1);
    let gb = p.wal.advised_max_wal_size_bytes >> 30;
    let warning = checkpoint_warning(&p);
    assert!(
        warning.contains(&format!("ALTER SYSTEM SET max_wal_size = '{gb}GB'"))
            && warning.contains("max_wal_size 1024 MB"),
        "{warning}"
    );
    assert!(!warning.contains("checkpoint_timeout"), "{warning}");

    // Room enough for the WAL, but the backfill outlasts checkpoint_timeout.
    catalog.wal.max_wal_size_bytes = p.wal.advised_max_wal_size_bytes;
    catalog.wal.checkpoint_timeout_secs = 30;
    let p = plan(&catalog, &[(1, "id")]);
    let warning = checkpoint_warning(&p);
    assert!(
        warning.contains("checkpoint_timeout (30 s)")
            && !warning.contains("ALTER SYSTEM SET max_wal_size"),
        "{warning}"
    );

    // Small tables: no warning.
    let p = plan(&incident(), &[(1, "id")]);
    assert!(
        p.warnings.iter().all(|w| !w.contains("checkpoint")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn slots_without_a_consumer_or_near_invalidation_are_warned_about() {
    use crate::catalog::ReplicationSlot;
    let slot = |name: &str, kind: &str, active: bool, safe: Option<i64>| ReplicationSlot {
        name: name.into(),
        kind: kind.into(),
        active,
        retained_bytes: 3 << 20,
        safe_wal_bytes: safe,
    };
    let mut catalog = incident();
    catalog.slots = vec![
        slot("gone", "logical", false, None),
        slot("standby", "physical", true, Some(1 << 20)),
        slot("healthy", "physical", true, None),
        slot("capped", "physical", false, Some(1 << 20)),
    ];
    let p = plan(&catalog, &[(1, "id")]);
    let about = |name: &str| -> Vec<&String> {
        p.warnings
            .iter()
            .filter(|w| w.contains(&format!("replication slot \"{name}\"")))
            .collect()
    };
    let gone = about("gone");
    assert_eq!(gone.len(), 1, "{:?}", p.warnings);
    assert!(
        gone[0].contains("(logical, no consumer connected) retains 3 MB"),
        "{}",
        gone[0]
    );
    assert!(
        gone[0].contains("SELECT pg_drop_replication_slot('gone');"),
        "{}",
        gone[0]
    );
    assert!(!gone[0].contains("invalidate"), "{}", gone[0]);
    let standby = about("standby");
    assert_eq!(standby.len(), 1);
    assert!(
        standby[0].contains("would invalidate it (its standby would need a new base backup)"),
        "{}",
        standby[0]
    );
    assert!(about("healthy").is_empty(), "{:?}", p.warnings);
    let capped = about("capped");
    assert!(
        capped[0].contains("no consumer connected") && capped[0].contains("invalidate"),
        "{}",
        capped[0]
    );
    for w in &p.warnings {
        assert!(!w.contains("  "), "a gap in the text: {w}");
    }
    assert_eq!(p.replication_slots.len(), 4);
}

fn copy_plan(catalog: &Catalog, cols: &[(u32, &str)]) -> Plan {
    let requests: Vec<Request> = cols
        .iter()
        .map(|(t, c)| Request {
            table: *t,
            column: c.to_string(),
            change: None,
        })
        .collect();
    let options = Options {
        engine: crate::plan::EngineChoice::Copy,
        ..Options::default()
    };
    build("m", "abc", &requests, catalog, options).unwrap()
}

#[test]
fn the_copy_engine_moves_every_foreign_key_and_view_of_its_tables() {
    let mut catalog = incident();
    // A view over a column that is not widened still reads the old table.
    catalog.views.push(View {
        oid: 21,
        name: "script_names".into(),
        definition: " SELECT scripts.name FROM scripts;".into(),
        table_columns: vec![(1, 2)],
        ..catalog.views[0].clone()
    });
    let p = copy_plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    assert_eq!(p.engine, crate::plan::Engine::Copy);
    assert!(
        p.foreign_keys.is_empty(),
        "the update engine's rebuilds are not used"
    );
    let copy = p.copy.as_ref().unwrap();
    let names: Vec<(&str, &str, &str)> = copy
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.new_name.as_str(), t.old_name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("scripts", "pgshift_new_scripts", "pgshift_old_scripts"),
            (
                "script_runs",
                "pgshift_new_script_runs",
                "pgshift_old_script_runs"
            ),
        ]
    );
    // Declared by one copied table, pointing at another: listed once.
    assert_eq!(copy.foreign_keys.len(), 1);
    assert_eq!(copy.foreign_keys[0].table, "\"public\".\"script_runs\"");
    assert_eq!(
        copy.foreign_keys[0].definition,
        "FOREIGN KEY (script_id) REFERENCES scripts(id) ON DELETE CASCADE"
    );
    let views: Vec<&str> = p.views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(views, vec!["all_scripts", "script_names"]);
    // The copy gets bigint columns, and its primary key is built first.
    let scripts = &copy.tables[0];
    assert!(
        scripts.create[1].ends_with("ALTER COLUMN \"id\" TYPE bigint"),
        "{:?}",
        scripts.create
    );
    // Autovacuum waits for the cutover: it would vacuum the growing copy again and again.
    assert!(
        scripts.create[0].ends_with("WITH (autovacuum_enabled = false)"),
        "{:?}",
        scripts.create
    );
    assert!(scripts.pause_autovacuum);
    assert_eq!(scripts.indexes[0].constraint.as_deref(), Some("p"));
    assert_eq!(
        scripts.indexes[0].create_sql,
        "CREATE UNIQUE INDEX IF NOT EXISTS \"pgshift_new_scripts_pkey\" ON \"public\".\"pgshift_new_scripts\" USING btree (id)"
    );
}

#[test]
fn the_copy_engines_index_builds_run_side_by_side_then_each_tables_constraints_and_replay() {
    let mut catalog = incident();
    let key = catalog.tables[0].indexes[0].clone();
    catalog.tables[0].indexes.push(Index {
        oid: 14,
        name: "scripts_account_id_idx".into(),
        definition:
            "CREATE INDEX scripts_account_id_idx ON public.scripts USING btree (account_id)".into(),
        is_primary: false,
        is_unique: false,
        constraint: None,
        columns: vec![2],
        keys: vec!["account_id".into()],
        ..key
    });
    let p = copy_plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let steps = crate::ops::copy_swap::validate(&p);
    let lanes: Vec<(&str, u32, u32, u32)> = steps
        .iter()
        .map(|s| {
            let l = s
                .lane
                .expect("every validate step of a plain copy is on a lane");
            let what = s
                .description
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            (
                match what.as_str() {
                    "build index" => "build",
                    "make index" => "constraint",
                    "replay the" => "replay",
                    _ => "vacuum",
                },
                l.table,
                l.strand,
                l.stage,
            )
        })
        .collect();
    // Each of scripts' indexes on a strand of its own in the first stage,
    // then each table's constraint, replay and vacuum on its own lane.
    assert_eq!(
        lanes,
        vec![
            ("build", 1, 1, 0),
            ("build", 1, 2, 0),
            ("constraint", 1, 0, 1),
            ("replay", 1, 0, 1),
            ("vacuum", 1, 0, 1),
            ("replay", 2, 0, 1),
            ("vacuum", 2, 0, 1),
        ]
    );
}

#[test]
fn the_copy_engine_refuses_what_it_does_not_move_yet() {
    let mut catalog = incident();
    catalog.tables[0].constraints.push(Constraint {
        kind: "x".into(),
        definition: "EXCLUDE USING btree (name WITH =)".into(),
        ..pk(1, "no_twins", vec![2])
    });
    catalog.tables[1].row_security = true;
    catalog.tables[1].row_security_applies = true;
    catalog.tables[1].rowtype_users = vec!["function public.f(script_runs) n".into()];
    catalog.tables[1].body_routines = vec![crate::catalog::Routine {
        signature: "public.g()".into(),
        description: "function public.g()".into(),
        kind: "a".into(),
        definition: None,
        owner: "app".into(),
        explicit_privileges: false,
        grants: vec![],
        comment: None,
        has_dependents: false,
        in_extension: false,
        replaceable: true,
    }];
    let p = copy_plan(&catalog, &[(1, "id")]);
    let objects: Vec<&str> = p.blockers.iter().map(|b| b.object.as_str()).collect();
    assert_eq!(
        objects,
        vec![
            "constraint no_twins on scripts",
            "function public.g() (reads script_runs)",
            "table script_runs",
            "function public.f(script_runs) n (uses the row type of script_runs)"
        ]
    );
    assert!(p
        .blockers
        .iter()
        .all(|b| b.remedy.contains("--engine update") || b.remedy.contains("BYPASSRLS")));
    // The update engine takes the same tables.
    let p = plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
}

#[test]
fn the_copy_engine_estimates_the_rewrites_wal_and_asks_for_the_disk() {
    let mut catalog = incident();
    for t in &mut catalog.tables {
        t.estimated_rows = 1_000_000;
        t.heap_bytes = 60 << 20;
        t.total_bytes = 90 << 20;
    }
    let update = plan(&catalog, &[(1, "id")]);
    let copy = copy_plan(&catalog, &[(1, "id")]);
    let size: i64 = copy.tables.iter().map(|t| t.total_bytes).sum();
    // The copy writes each table about once (heap inserts, index pages
    // logged whole by the builds); the update engine several times over.
    assert_eq!(copy.wal.bytes, size);
    assert!(
        update.wal.bytes > 2 * copy.wal.bytes,
        "{} vs {}",
        update.wal.bytes,
        copy.wal.bytes
    );
    assert!(
        copy.warnings
            .iter()
            .any(|w| w.contains("free disk") && w.contains("188.7 MB")),
        "{:?}",
        copy.warnings
    );
    assert!(!update.warnings.iter().any(|w| w.contains("copies need")));
    // The update engine's plan says the copy engine could take these tables...
    assert!(update
        .warnings
        .iter()
        .any(|w| w.starts_with("--engine copy can take these tables")));
    // ...and says nothing of it when one of them could not go.
    catalog.tables[1].row_security_applies = true;
    let update = plan(&catalog, &[(1, "id")]);
    assert!(!update
        .warnings
        .iter()
        .any(|w| w.starts_with("--engine copy")));
}

#[test]
fn the_copy_engine_moves_unique_indexes_with_their_collision_checks() {
    let mut catalog = incident();
    let unique = |oid, name: &str, keys: Vec<&str>, predicate: Option<&str>| Index {
        oid,
        name: name.into(),
        definition: format!("CREATE UNIQUE INDEX {name} ON public.scripts USING btree (name)"),
        is_primary: false,
        is_unique: true,
        is_valid: true,
        constraint: None,
        columns: vec![2],
        bytes: 100,
        keys: keys.into_iter().map(String::from).collect(),
        predicate: predicate.map(String::from),
        nulls_not_distinct: false,
        comment: None,
        replica_identity: false,
        tablespace: None,
        clustered: false,
    };
    catalog.tables[0]
        .indexes
        .push(unique(12, "scripts_name_key", vec!["name"], None));
    catalog.tables[0].indexes.push(unique(
        13,
        "scripts_live_name",
        vec!["lower(name)", "id % 10"],
        Some("name IS NOT NULL"),
    ));
    catalog.tables[0].constraints.push(Constraint {
        kind: "u".into(),
        deferrable: true,
        initially_deferred: true,
        ..pk(1, "scripts_name_key", vec![2])
    });
    catalog.tables[0].indexes[1].constraint = Some("scripts_name_key".into());
    let p = copy_plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let scripts = &p.copy.as_ref().unwrap().tables[0];
    let named = |n: &str| scripts.indexes.iter().find(|i| i.name == n).unwrap();
    assert_eq!(named("scripts_pkey").unique, None, "the key needs no check");
    assert_eq!(
        named("scripts_name_key").marks.deferrable,
        " DEFERRABLE INITIALLY DEFERRED"
    );
    let live = named("scripts_live_name").unique.as_ref().unwrap();
    assert_eq!(
        live.collides_with("fresh"),
        "(name IS NOT NULL) AND ((lower(name)), (id % 10)) IN (SELECT (lower(name)), (id % 10) FROM fresh WHERE (name IS NOT NULL))"
    );
    assert_eq!(
        live.duplicates("t", &["id".to_string()]),
        "SELECT unnest(array_agg(id)) FROM t WHERE (name IS NOT NULL) AND (lower(name)) IS NOT NULL AND (id % 10) IS NOT NULL \
         GROUP BY (lower(name)), (id % 10) HAVING count(*) > 1"
    );
    // The replays evict what the fresh rows collide with, in either direction.
    let steps = crate::ops::expand(&p);
    let functions = steps
        .iter()
        .find(|s| s.description.starts_with("create the change logs"))
        .unwrap();
    assert_eq!(
        functions.sql.matches("evicted AS (DELETE FROM").count(),
        2,
        "{}",
        functions.sql
    );

    // The build sends duplicates to the log only when it meets one.
    let builds: Vec<_> = crate::ops::validate(&p)
        .into_iter()
        .filter(|s| s.description.starts_with("build"))
        .map(|s| s.sql.contains("EXCEPTION WHEN unique_violation"))
        .collect();
    assert_eq!(builds, vec![false, true, true]);

    // NULLS NOT DISTINCT would need another comparison: refused, by name.
    catalog.tables[0].indexes[2].nulls_not_distinct = true;
    let p = copy_plan(&catalog, &[(1, "id")]);
    let objects: Vec<&str> = p.blockers.iter().map(|b| b.object.as_str()).collect();
    assert_eq!(objects, vec!["index scripts_live_name on scripts"]);
}

#[test]
fn engine_auto_takes_the_copy_engine_when_it_can_and_says_why_not_when_it_cannot() {
    let mut catalog = incident();
    let auto = |catalog: &Catalog| {
        let requests = [Request {
            table: 1,
            column: "id".into(),
            change: None,
        }];
        let options = Options {
            engine: crate::plan::EngineChoice::Auto,
            ..Options::default()
        };
        build("m", "abc", &requests, catalog, options).unwrap()
    };
    let p = auto(&catalog);
    assert_eq!(p.engine, crate::plan::Engine::Copy);
    assert!(p.copy.is_some());
    assert!(p.warnings[0].starts_with("--engine auto chose the copy engine"));

    catalog.tables[1].row_security = true;
    catalog.tables[1].row_security_applies = true;
    let p = auto(&catalog);
    assert_eq!(p.engine, crate::plan::Engine::Update);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    assert_eq!(
        p.warnings[0],
        "--engine auto chose the update engine, since the copy engine refuses table script_runs: \
         row security applies to this session, so the copy would hold only the rows its policies show"
    );
}

#[test]
fn the_copy_engine_logs_composite_keys_column_by_column() {
    let mut catalog = incident();
    // script_runs keyed by (script_id, id): a widened and a kept column.
    catalog.tables[1].constraints[0] = pk(2, "script_runs_pkey", vec![2, 1]);
    let p = copy_plan(&catalog, &[(1, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let runs = &p.copy.as_ref().unwrap().tables[1];
    assert_eq!(
        runs.key_columns()
            .iter()
            .map(|k| format!("{} {}", k.name, k.log_type))
            .collect::<Vec<_>>(),
        vec!["script_id bigint", "id bigint"]
    );
    let steps = crate::ops::expand(&p);
    let sql: String = steps.iter().map(|s| s.sql.clone()).collect();
    assert!(sql.contains("(seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key bigint NOT NULL, key_1 bigint NOT NULL)"));
    assert!(sql.contains(
        "ROW(NEW.\"script_id\", NEW.\"id\") IS DISTINCT FROM ROW(OLD.\"script_id\", OLD.\"id\")"
    ));
    assert!(sql.contains(
        "(\"script_id\", \"id\") IN (SELECT * FROM unnest(pgshift_keys_0, pgshift_keys_1))"
    ));

    // A key of a type outside pg_catalog cannot go in the logs.
    catalog.tables[1].columns[0].type_name = "app.ticket_id".into();
    let p = copy_plan(&catalog, &[(1, "id")]);
    let objects: Vec<&str> = p.blockers.iter().map(|b| b.object.as_str()).collect();
    assert_eq!(objects, vec!["column script_runs.id"]);
}

/// `events (id int, at date)` partitioned by range of `at`: a leaf, and a
/// partition sub-partitioned by list with one leaf; the primary key's
/// index on every level, attached to the one above.
fn partitioned() -> Catalog {
    use crate::catalog::{Partition, PartitionIndex};
    let mut catalog = incident();
    let mut events = table(
        7,
        "events",
        vec![column(1, "id", "integer"), column(2, "at", "date")],
    );
    events.kind = "p".into();
    events.partition_key = Some("RANGE (at)".into());
    events.partition_columns = vec!["at".into()];
    let mut key = pk(7, "events_pkey", vec![1, 2]);
    key.definition = "PRIMARY KEY (id, at)".into();
    events.constraints.push(key);
    events.indexes.push(Index {
        oid: 70,
        name: "events_pkey".into(),
        definition: "CREATE UNIQUE INDEX events_pkey ON ONLY public.events USING btree (id, at)"
            .into(),
        is_primary: true,
        is_unique: true,
        is_valid: true,
        constraint: Some("events_pkey".into()),
        columns: vec![1, 2],
        bytes: 0,
        keys: vec![],
        predicate: None,
        nulls_not_distinct: false,
        comment: None,
        replica_identity: false,
        tablespace: None,
        clustered: false,
    });
    let partition =
        |oid: u32, name: &str, parent: u32, kind: &str, bound: &str, index: (u32, u32)| Partition {
            oid,
            schema: "public".into(),
            name: name.into(),
            parent,
            kind: kind.into(),
            bound: bound.into(),
            partition_key: (kind == "p").then(|| "LIST (id)".into()),
            estimated_rows: 1000,
            total_bytes: 65536,
            heap_bytes: 40960,
            owner: "app".into(),
            grants: vec![],
            comment: None,
            reloptions: vec![],
            tablespace: None,
            persistence: "p".into(),
            indexes: vec![PartitionIndex {
                oid: index.0,
                name: format!("{name}_pkey"),
                definition: format!(
                    "CREATE UNIQUE INDEX {name}_pkey ON {}public.{name} USING btree (id, at)",
                    if kind == "p" { "ONLY " } else { "" }
                ),
                parent: Some(index.1),
                constraint: Some("p".into()),
                constraint_definition: Some("PRIMARY KEY (id, at)".into()),
                is_unique: true,
                is_valid: true,
                tablespace: None,
            }],
            own_objects: vec![],
        };
    events.partitions = vec![
        partition(
            71,
            "events_2024",
            7,
            "r",
            "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
            (710, 70),
        ),
        partition(
            72,
            "events_2025",
            7,
            "p",
            "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
            (720, 70),
        ),
        partition(
            73,
            "events_2025_low",
            72,
            "r",
            "FOR VALUES IN (1, 2, 3)",
            (730, 720),
        ),
    ];
    catalog.tables.push(events);
    catalog
}

#[test]
fn a_partitioned_table_is_copied_as_a_tree_of_the_same_shape() {
    let p = copy_plan(&partitioned(), &[(7, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let t = &p.copy.as_ref().unwrap().tables[0];
    assert!(t.partitioned);
    assert_eq!(t.only(), "");
    // The root's copy is partitioned the same way; each partition's copy is
    // made PARTITION OF its parent's copy, parents first.
    let create = t.create.join("\n");
    assert!(
        create.contains("(LIKE \"public\".\"events\" INCLUDING DEFAULTS"),
        "{create}"
    );
    assert!(
        create.contains("INCLUDING COMPRESSION) PARTITION BY RANGE (at)\n"),
        "{create}"
    );
    let low = create.find("\"pgshift_new_events_2025_low\" PARTITION OF \"public\".\"pgshift_new_events_2025\" FOR VALUES IN (1, 2, 3) WITH (autovacuum_enabled = false)").expect(&create);
    let mid = create.find("\"pgshift_new_events_2025\" PARTITION OF \"public\".\"pgshift_new_events\" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY LIST (id)\n").expect(&create);
    assert!(mid < low);
    // Leaves only are copied, each in its own step.
    let steps = crate::ops::copy_swap::backfill(&p);
    let copied: Vec<&str> = steps.iter().map(|s| s.description.as_str()).collect();
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied[0].starts_with(
        "copy the rows of partition events_2024 of events into pgshift_new_events_2024"
    ));
    assert!(
        steps[1]
            .sql
            .contains("FROM ONLY \"public\".\"events_2025_low\""),
        "{}",
        steps[1].sql
    );
    // Each on its own lane: the leaves are copied in parallel.
    assert_eq!(
        steps
            .iter()
            .map(|s| s.lane.map(|l| l.table))
            .collect::<Vec<_>>(),
        [Some(71), Some(73)]
    );
    // Indexes bottom-up: the leaves', then the sub-partition's (its child
    // attached), then the root's (both children attached).
    let validate: Vec<String> = crate::ops::copy_swap::validate(&p)
        .iter()
        .map(|s| s.sql.clone())
        .collect();
    let at = |needle: &str| {
        validate
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {validate:#?}"))
    };
    let sub = at("ALTER TABLE ONLY \"public\".\"pgshift_new_events_2025\" ADD CONSTRAINT \"pgshift_new_events_2025_pkey\" PRIMARY KEY (id, at)");
    let root = at("ALTER TABLE ONLY \"public\".\"pgshift_new_events\" ADD CONSTRAINT \"pgshift_new_events_pkey\" PRIMARY KEY (id, at)");
    let leaf = at("ADD CONSTRAINT \"pgshift_new_events_2025_low_pkey\" PRIMARY KEY USING INDEX");
    assert!(leaf < sub && sub < root, "{validate:#?}");
    assert!(validate[sub].contains("ALTER INDEX \"public\".\"pgshift_new_events_2025_pkey\" ATTACH PARTITION \"public\".\"pgshift_new_events_2025_low_pkey\""));
    assert!(validate[root].contains("ATTACH PARTITION \"public\".\"pgshift_new_events_2024_pkey\""));
    assert!(validate[root].contains("ATTACH PARTITION \"public\".\"pgshift_new_events_2025_pkey\""));
    // The cutover renames every partition of both trees and checks the tree.
    let cutover = crate::ops::copy_swap::cutover(&p, "SELECT 1");
    for rename in [
        "ALTER TABLE \"public\".\"events_2025_low\" RENAME TO \"pgshift_old_events_2025_low\"",
        "ALTER TABLE \"public\".\"pgshift_new_events_2025_low\" RENAME TO \"events_2025_low\"",
        "ALTER TABLE \"public\".\"events_2024\" RENAME CONSTRAINT \"events_2024_pkey\" TO \"pgshift_old_events_2024_pkey\"",
        "FROM pg_partition_tree('\"public\".\"events\"'::regclass)",
    ] {
        assert!(cutover.sql.contains(rename), "{rename}: {}", cutover.sql);
    }
}

#[test]
fn what_a_partition_has_of_its_own_is_refused_and_a_partition_key_widens_through_a_template() {
    let mut catalog = partitioned();
    catalog.tables.last_mut().unwrap().partitions[0].own_objects = vec!["trigger audit".into()];
    let p = copy_plan(&catalog, &[(7, "id")]);
    let found: Vec<String> = p
        .blockers
        .iter()
        .map(|b| format!("{}: {}", b.object, b.reason))
        .collect();
    assert!(
        found.iter().any(|b| b.starts_with(
            "trigger audit on partition events_2024: it belongs to this partition alone"
        )),
        "{found:#?}"
    );
    // A partition key column widens: its copy is made like a template that
    // took the change, since Postgres changes no partition key's type.
    let mut catalog = partitioned();
    let events = catalog.tables.last_mut().unwrap();
    events.partition_key = Some("RANGE (id)".into());
    events.partition_columns = vec!["id".into()];
    let p = copy_plan(&catalog, &[(7, "id")]);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let create = &p.copy.as_ref().unwrap().tables[0].create;
    assert_eq!(
        create[..4],
        [
            "CREATE TABLE IF NOT EXISTS \"pgshift\".\"pgshift_tmpl_events\" (LIKE \"public\".\"events\" INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING COMPRESSION)",
            "ALTER TABLE \"pgshift\".\"pgshift_tmpl_events\" ALTER COLUMN \"id\" TYPE bigint",
            "CREATE TABLE IF NOT EXISTS \"public\".\"pgshift_new_events\" (LIKE \"pgshift\".\"pgshift_tmpl_events\" INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING COMPRESSION) PARTITION BY RANGE (id)",
            "DROP TABLE IF EXISTS \"pgshift\".\"pgshift_tmpl_events\"",
        ]
    );
    // The update engine does not take the tree.
    let p = plan(&partitioned(), &[(7, "id")]);
    assert!(
        p.blockers
            .iter()
            .any(|b| b.reason == "the update engine does not take partitioned tables"),
        "{:?}",
        p.blockers
    );
}
