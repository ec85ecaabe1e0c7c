//! Every rule with an example that must trigger it and one that must not.
//! The failing example's rendered report is snapshotted, after asserting it
//! holds at least one finding of that rule, so an empty snapshot cannot pass.

use super::*;
use crate::output::Report;
use crate::report::LintReport;

/// (rule, SQL that violates it, SQL that does not)
const CASES: &[(&str, &str, &str)] = &[
    (
        "blocking-index-build",
        "CREATE INDEX scripts_name_idx ON scripts (name);",
        "CREATE INDEX CONCURRENTLY scripts_name_idx ON scripts (name);",
    ),
    (
        "column-type-rewrite",
        "ALTER TABLE scripts ALTER COLUMN name TYPE varchar(200);",
        "ALTER TABLE scripts ALTER COLUMN name SET DEFAULT 'x';",
    ),
    (
        "concurrently-in-transaction",
        "BEGIN;\nCREATE INDEX CONCURRENTLY i ON scripts (name);\nCOMMIT;",
        "CREATE INDEX CONCURRENTLY i ON scripts (name);",
    ),
    (
        "constraint-without-not-valid",
        "ALTER TABLE runs ADD CONSTRAINT runs_script_fk FOREIGN KEY (script_id) REFERENCES scripts (id);",
        "ALTER TABLE runs ADD CONSTRAINT runs_script_fk FOREIGN KEY (script_id) REFERENCES scripts (id) NOT VALID;\nALTER TABLE runs VALIDATE CONSTRAINT runs_script_fk;",
    ),
    ("drop-column", "ALTER TABLE scripts DROP COLUMN body;", "ALTER TABLE scripts ADD COLUMN body2 text;"),
    ("drop-table", "DROP TABLE old_scripts;", "DROP VIEW old_scripts_view;"),
    (
        "integer-primary-key",
        "CREATE TABLE events (id serial PRIMARY KEY, at timestamptz);",
        "CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz);",
    ),
    (
        "missing-lock-timeout",
        "ALTER TABLE scripts ADD COLUMN note text;",
        "SET lock_timeout = '2s';\nALTER TABLE scripts ADD COLUMN note text;",
    ),
    (
        "rename",
        "ALTER TABLE scripts RENAME COLUMN name TO title;",
        "ALTER TABLE scripts ADD COLUMN title text;",
    ),
    (
        "set-not-null",
        "ALTER TABLE scripts ALTER COLUMN name SET NOT NULL;",
        "ALTER TABLE scripts ADD CONSTRAINT name_nn CHECK (name IS NOT NULL) NOT VALID;",
    ),
    ("truncate", "TRUNCATE scripts;", "DELETE FROM scripts WHERE id < 1000;"),
    (
        "unique-constraint-lock",
        "ALTER TABLE scripts ADD CONSTRAINT scripts_name_key UNIQUE (name);",
        "CREATE UNIQUE INDEX CONCURRENTLY scripts_name_key ON scripts (name);",
    ),
    ("unparsed-statement", "ALTER SEQUENCE scripts_id_seq AS bigint;", "SELECT setval('scripts_id_seq', 10);"),
    (
        "volatile-default",
        "ALTER TABLE scripts ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE scripts ADD COLUMN added timestamptz DEFAULT now();",
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
        },
    };
    assert!(lint("m.sql", sql, &config).unwrap().is_empty());
}

#[test]
fn findings_carry_the_statement_line_and_json_shape() {
    let found = run("SET lock_timeout = '1s';\n\n\nCREATE INDEX i ON scripts (name);");
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

#[test]
fn a_type_change_with_collate_is_read_not_reported_unparsed() {
    let sql = "SET lock_timeout = '2s';\nALTER TABLE scripts ALTER COLUMN name TYPE text COLLATE \"C\" USING name COLLATE \"C\";";
    let rules: Vec<&str> = run(sql).iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["column-type-rewrite"]);
}
