//! Every rule with an example that must trigger it and one that must not.
//! The failing example's rendered report is snapshotted, after asserting it
//! holds at least one finding of that rule, so an empty snapshot cannot pass.

use super::*;
use crate::output::Report;
use crate::report::LintReport;

/// (rule, SQL that violates it, SQL that does not)
const CASES: &[(&str, &str, &str)] = &[
    (
        "add-required-column",
        "ALTER TABLE scripts ADD COLUMN kind text NOT NULL;",
        "ALTER TABLE scripts ADD COLUMN kind text NOT NULL DEFAULT 'sql';",
    ),
    (
        "blocking-index-build",
        "CREATE INDEX scripts_name_idx ON scripts (name);",
        "CREATE INDEX CONCURRENTLY scripts_name_idx ON scripts (name);",
    ),
    (
        "blocking-index-drop",
        "DROP INDEX scripts_name_idx;",
        "DROP INDEX CONCURRENTLY IF EXISTS scripts_name_idx;",
    ),
    (
        "blocking-reindex",
        "REINDEX INDEX scripts_name_idx;",
        "REINDEX (VERBOSE, CONCURRENTLY) INDEX scripts_name_idx;",
    ),
    (
        "column-type-rewrite",
        "ALTER TABLE scripts ALTER COLUMN name TYPE varchar(200);",
        "ALTER TABLE scripts ALTER COLUMN name SET DEFAULT 'x';",
    ),
    (
        "concurrently-in-transaction",
        "BEGIN;\nDROP INDEX CONCURRENTLY i;\nCOMMIT;",
        "DROP INDEX CONCURRENTLY i;",
    ),
    (
        "constraint-without-not-valid",
        "ALTER TABLE runs ADD CONSTRAINT runs_script_fk FOREIGN KEY (script_id) REFERENCES scripts (id);",
        "ALTER TABLE runs ADD CONSTRAINT runs_script_fk FOREIGN KEY (script_id) REFERENCES scripts (id) NOT VALID;\nALTER TABLE runs VALIDATE CONSTRAINT runs_script_fk;",
    ),
    (
        "drop-column",
        "ALTER TABLE scripts DROP COLUMN body;",
        "ALTER TABLE scripts ADD COLUMN body2 text;",
    ),
    (
        "drop-schema",
        "DROP SCHEMA archive CASCADE;",
        "CREATE SCHEMA IF NOT EXISTS archive;",
    ),
    (
        "drop-table",
        "DROP TABLE old_scripts;",
        "DROP VIEW old_scripts_view;",
    ),
    (
        "integer-foreign-key",
        "CREATE TABLE runs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, script_id integer REFERENCES scripts (id));",
        "CREATE TABLE runs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, script_id bigint REFERENCES scripts (id));",
    ),
    (
        "integer-primary-key",
        "CREATE TABLE jobs (id serial PRIMARY KEY, at timestamptz);",
        "CREATE TABLE jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz);",
    ),
    (
        "lock-held-during-slow-work",
        "BEGIN;\nALTER TABLE scripts ADD COLUMN kind text;\nUPDATE scripts SET kind = 'sql' WHERE id < 1000000;\nCOMMIT;",
        "BEGIN;\nUPDATE scripts SET name = lower(name) WHERE id < 1000;\nALTER TABLE scripts ADD COLUMN kind text;\nCOMMIT;",
    ),
    (
        "lock-table",
        "BEGIN;\nLOCK TABLE scripts IN ACCESS EXCLUSIVE MODE;\nCOMMIT;",
        "BEGIN;\nLOCK TABLE scripts IN ROW EXCLUSIVE MODE;\nCOMMIT;",
    ),
    (
        "missing-lock-timeout",
        "ALTER TABLE scripts ADD COLUMN note text;",
        "SET lock_timeout = '2s';\nALTER TABLE scripts ADD COLUMN note text;",
    ),
    (
        "missing-statement-timeout",
        "SET lock_timeout = '2s';\nALTER TABLE scripts ALTER COLUMN name SET NOT NULL;",
        "SET lock_timeout = '2s';\nSET statement_timeout = '5min';\nALTER TABLE scripts ALTER COLUMN name SET NOT NULL;",
    ),
    (
        "prefer-identity",
        "CREATE TABLE tags (id bigserial PRIMARY KEY);",
        "CREATE TABLE tags (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
    ),
    (
        "prefer-jsonb",
        "ALTER TABLE scripts ADD COLUMN meta json;",
        "ALTER TABLE scripts ADD COLUMN meta jsonb;",
    ),
    (
        "prefer-text-over-char",
        "ALTER TABLE scripts ADD COLUMN code char(3);",
        "ALTER TABLE scripts ADD COLUMN code text CHECK (char_length(code) <= 3) NOT VALID;",
    ),
    (
        "prefer-text-over-varchar",
        "CREATE TABLE tags (id bigint PRIMARY KEY, name varchar(40));",
        "CREATE TABLE tags (id bigint PRIMARY KEY, name text, CHECK (char_length(name) <= 40));",
    ),
    (
        "prefer-timestamptz",
        "ALTER TABLE scripts ADD COLUMN seen_at timestamp;",
        "ALTER TABLE scripts ADD COLUMN seen_at timestamptz;",
    ),
    (
        "rename",
        "ALTER TABLE scripts RENAME COLUMN name TO title;",
        "ALTER TABLE scripts ADD COLUMN title text;",
    ),
    (
        "set-not-null",
        "ALTER TABLE scripts ALTER COLUMN name SET NOT NULL;",
        "ALTER TABLE scripts ADD CONSTRAINT name_nn CHECK (name IS NOT NULL) NOT VALID;\nALTER TABLE scripts VALIDATE CONSTRAINT name_nn;\nALTER TABLE scripts ALTER COLUMN name SET NOT NULL;",
    ),
    (
        "table-rewrite",
        "VACUUM (FULL, ANALYZE) scripts;",
        "VACUUM (ANALYZE) scripts;",
    ),
    (
        "truncate",
        "TRUNCATE scripts;",
        "DELETE FROM scripts WHERE id < 1000;",
    ),
    (
        "unique-constraint-lock",
        "ALTER TABLE scripts ADD CONSTRAINT scripts_name_key UNIQUE (name);",
        "CREATE UNIQUE INDEX CONCURRENTLY scripts_name_key ON scripts (name);\nALTER TABLE scripts ADD CONSTRAINT scripts_name_key UNIQUE USING INDEX scripts_name_key;",
    ),
    (
        "unparsed-statement",
        "ALTER TABLE scripts ADD COLUMN;",
        "ALTER SEQUENCE scripts_id_seq AS bigint;",
    ),
    (
        "volatile-default",
        "ALTER TABLE scripts ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE scripts ADD COLUMN added timestamptz DEFAULT now();",
    ),
    (
        "whole-table-write",
        "UPDATE scripts SET kind = 'sql';",
        "UPDATE scripts SET kind = 'sql' WHERE id BETWEEN 1 AND 5000;",
    ),
];

fn run(sql: &str) -> Vec<Finding> {
    lint("m.sql", sql, &Config::default()).unwrap()
}

#[test]
fn every_rule_has_a_case() {
    for rule in RULES {
        assert!(
            CASES.iter().any(|(name, _, _)| *name == rule.name),
            "no test case for {}",
            rule.name
        );
    }
}

#[test]
fn each_rule_flags_its_failing_example_and_not_its_passing_one() {
    for (rule, bad, good) in CASES {
        let found = run(bad);
        assert!(
            found.iter().any(|f| f.rule == *rule),
            "{rule} missed:\n{bad}\nfound: {:?}",
            found.iter().map(|f| f.rule).collect::<Vec<_>>()
        );
        let clean = run(good);
        assert!(
            !clean.iter().any(|f| f.rule == *rule),
            "{rule} flagged the safe form:\n{good}"
        );
        let report = LintReport {
            findings: found.into_iter().filter(|f| f.rule == *rule).collect(),
            files: 1,
        };
        let mut text = Vec::new();
        report.text(&mut text).unwrap();
        insta::assert_snapshot!(rule.to_string(), String::from_utf8(text).unwrap());
    }
}

#[test]
fn new_tables_are_not_held_to_live_table_rules() {
    let sql = "SET lock_timeout = '2s';\nCREATE TABLE t (id bigint PRIMARY KEY, v int);\nCREATE INDEX t_v ON t (v);\nALTER TABLE t ALTER COLUMN v SET NOT NULL;";
    assert!(
        run(sql).is_empty(),
        "{:?}",
        run(sql).iter().map(|f| f.rule).collect::<Vec<_>>()
    );
}

#[test]
fn inline_ignores_and_config_disable_rules() {
    let sql = "SET lock_timeout = '2s';\n-- pgshift:ignore drop-column\nALTER TABLE scripts DROP COLUMN body;\nALTER TABLE scripts DROP COLUMN name;";
    let found = run(sql);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 4);
    let config = Config {
        lint: LintConfig {
            disable: vec!["drop-column".into()],
            ..Default::default()
        },
    };
    assert!(lint("m.sql", sql, &config).unwrap().is_empty());
    // Severity is a policy: down to a warning (exit 0), or off.
    let config: Config = toml::from_str("[lint.severity]\ndrop-column = \"warning\"").unwrap();
    let found = lint("m.sql", sql, &config).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].severity, Severity::Warning);
    let config: Config =
        toml::from_str("[lint.severity]\ndrop-column = \"off\"\nprefer-jsonb = \"error\"").unwrap();
    assert!(lint("m.sql", sql, &config).unwrap().is_empty());
    let found = lint(
        "m.sql",
        "SET lock_timeout = '1s';\nALTER TABLE t ADD COLUMN j json;",
        &config,
    )
    .unwrap();
    assert_eq!(found[0].severity, Severity::Error);
}

#[test]
fn findings_carry_the_statement_line_and_json_shape() {
    let found = run("SET lock_timeout = '1s';\nSET statement_timeout = '1h';\n\nCREATE INDEX i ON scripts (name);");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 4);
    let json = LintReport {
        findings: found,
        files: 1,
    }
    .json();
    let f = &json["findings"][0];
    for key in ["path", "line", "rule", "severity", "message", "suggestion"] {
        assert!(!f[key].is_null(), "missing {key}");
    }
    assert_eq!(f["severity"], "error");
}

#[test]
fn the_safe_forms_pgshift_generates_pass_lint() {
    // Zero false positives on pgshift's own online forms.
    let plan_sql = "SET lock_timeout = '2s';
ALTER TABLE \"public\".\"scripts\" ADD COLUMN IF NOT EXISTS \"pgshift_new_id\" bigint;
CREATE UNIQUE INDEX CONCURRENTLY \"pgshift_new_scripts_pkey\" ON public.scripts USING btree (\"pgshift_new_id\");
ALTER TABLE \"public\".\"scripts\" ADD CONSTRAINT \"pgshift_nn_scripts_id\" CHECK (\"pgshift_new_id\" IS NOT NULL) NOT VALID;
ALTER TABLE \"public\".\"scripts\" VALIDATE CONSTRAINT \"pgshift_nn_scripts_id\";
ALTER TABLE \"public\".\"script_runs\" ADD CONSTRAINT \"pgshift_new_fk\" FOREIGN KEY (\"pgshift_new_script_id\") REFERENCES scripts(\"pgshift_new_id\") ON DELETE CASCADE NOT VALID;
ALTER TABLE \"public\".\"script_runs\" VALIDATE CONSTRAINT \"pgshift_new_fk\";
ANALYZE \"public\".\"scripts\" (\"pgshift_new_id\");";
    let found = run(plan_sql);
    assert!(
        found.is_empty(),
        "{:?}",
        found.iter().map(|f| (f.line, f.rule)).collect::<Vec<_>>()
    );
}

/// Statements sqlparser rejects, all valid Postgres: each reaches the rules
/// (the regression the switch to Postgres's parser fixed).
#[test]
fn statements_sqlparser_rejected_are_read_and_checked() {
    for (sql, rule) in [
        ("SET lock_timeout = '1s';\nDROP INDEX CONCURRENTLY IF EXISTS a, b;", None),
        ("SET lock_timeout = '1s';\nREINDEX TABLE scripts;", Some("blocking-reindex")),
        ("SET lock_timeout = '1s';\nVACUUM FULL scripts;", Some("table-rewrite")),
        ("SET lock_timeout = '1s';\nALTER SEQUENCE s OWNED BY scripts.id;", None),
        ("SET lock_timeout = '1s';\nCLUSTER scripts USING scripts_pkey;", Some("table-rewrite")),
        ("SET lock_timeout = '1s';\nALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0);", Some("constraint-without-not-valid")),
        ("DO $$BEGIN PERFORM 1; END$$;", None),
        ("SET lock_timeout = '1s';\nALTER TABLE scripts ADD COLUMN n bigint GENERATED ALWAYS AS (id * 2) STORED;", Some("table-rewrite")),
        ("SET lock_timeout = '1s';\nALTER TABLE scripts ADD COLUMN n bigserial;", Some("volatile-default")),
    ] {
        let rules: Vec<&str> = run(sql).iter().map(|f| f.rule).collect();
        assert!(!rules.contains(&"unparsed-statement"), "{sql}: {rules:?}");
        match rule {
            Some(r) => assert!(rules.contains(&r), "{sql}: {rules:?}"),
            None => assert!(rules.is_empty(), "{sql}: {rules:?}"),
        }
    }
}

/// Regression: the file was split by a tokenizer that rejected the
/// operator `|>` (Postgres's regression test drop_operator.sql), so lint
/// refused a valid file with exit 2. Postgres's scanner splits it now.
#[test]
fn files_are_split_by_postgres_scanner() {
    let sql = "-- operators\nCREATE OPERATOR |> (PROCEDURE = int8gt, LEFTARG = bigint, RIGHTARG = bigint);\n\n/* a comment */ SET lock_timeout = '1s';\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nTRUNCATE t; -- the end\n";
    let found = run(sql);
    assert_eq!(
        found.iter().map(|f| (f.line, f.rule)).collect::<Vec<_>>(),
        vec![(6, "truncate")]
    );
}

#[test]
fn unparsed_statements_carry_postgres_reason() {
    let found = run("SELECT 1;\nALTER TABLE scripts ADD COLUMN;");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 2);
    assert!(
        found[0]
            .message
            .contains("Postgres rejects this statement: syntax error at end of input"),
        "{}",
        found[0].message
    );
}

#[test]
fn sarif_names_every_rule_and_places_each_result() {
    let found = run("CREATE INDEX i ON scripts (name);\nTRUNCATE scripts;");
    let n = found.len();
    assert!(n >= 2);
    let report = LintReport {
        findings: found,
        files: 1,
    };
    let mut out = Vec::new();
    report.sarif(&mut out).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["version"], "2.1.0");
    let run = &doc["runs"][0];
    assert_eq!(
        run["tool"]["driver"]["rules"].as_array().unwrap().len(),
        RULES.len()
    );
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), n, "{results:#?}");
    let truncate = results.iter().find(|r| r["ruleId"] == "truncate").unwrap();
    assert_eq!(truncate["level"], "error");
    assert_eq!(
        truncate["locations"][0]["physicalLocation"]["region"]["startLine"],
        2
    );
    assert_eq!(
        truncate["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "m.sql"
    );
    let index = truncate["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "truncate");
}

#[test]
fn a_type_change_with_collate_is_read_not_reported_unparsed() {
    let sql = "SET lock_timeout = '2s';\nSET statement_timeout = '1h';\nALTER TABLE scripts ALTER COLUMN name TYPE text COLLATE \"C\" USING name COLLATE \"C\";";
    let rules: Vec<&str> = run(sql).iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["column-type-rewrite"]);
}
