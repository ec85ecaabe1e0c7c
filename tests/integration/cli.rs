//! The CLI contract: help, exit codes, connection errors.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn help_lists_only_built_commands_and_the_global_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .env("PGSHIFT_ENGINE", ENGINE)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--database-url",
        "--replica-url",
        "--format",
        "--verbose",
        "--quiet",
    ] {
        assert!(help.contains(flag), "missing {flag}:\n{help}");
    }
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "lint",
            "plan",
            "check",
            "apply",
            "status",
            "resume",
            "cutover",
            "rollback",
            "finalize",
            "pause",
            "audit",
            "completions",
            "man",
            "help"
        ]
    );
    insta::assert_snapshot!("help", help);
}

#[test]
fn version_names_the_commit_and_completions_and_man_page_come_from_the_cli() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let version = run(&["--version"]);
    assert!(
        version.starts_with(&format!("pgshift {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // Built from this checkout: its commit (`-modified` after it when the
    // checkout had uncommitted changes).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Ok(head) = head {
        if head.status.success() {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert!(
                version.contains(&head),
                "{version} is not built from {head}"
            );
        }
    }
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("_pgshift()") && bash.contains("--scan-values"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef pgshift"), "{zsh}");
    let man = run(&["man"]);
    assert!(
        man.contains(".TH pgshift") && man.contains("rollback"),
        "{man}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_exit_3_in_seconds_naming_host_and_port_without_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://alice:s3cret-pw@127.0.0.1:{port}/app");
    let started = Instant::now();
    let run = pgshift(&url, &["status"]).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cret-pw") && !run.stdout.contains("s3cret-pw"));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepts TCP connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let url = format!("postgres://bob:hunter2@127.0.0.1:{port}/app?connect_timeout=1");
    let started = Instant::now();
    let run = pgshift(&url, &["status"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"));
    hold.abort();
}

#[tokio::test]
async fn input_errors_are_exit_2() {
    let run = pgshift(
        "postgres://x@127.0.0.1:1/db",
        &["plan", "/nonexistent/0001.sql"],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/0001.sql does not exist"),
        "{}",
        run.stderr
    );
    let (_dir, path) = migration(
        "bad",
        "ALTER TABLE t ALTER COLUMN c TYPE bigint;\nALTER TABLE t ALTR;\n",
    );
    let run = pgshift("postgres://x@127.0.0.1:1/db", &["plan", &path]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("bad.sql:2: could not parse"),
        "{}",
        run.stderr
    );
    let run = pgshift("postgres://x@127.0.0.1:1/db?sslmode=bogus", &["status"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn lint_reports_per_file_and_line_and_exits_1_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001_ok.sql"),
        "SET lock_timeout = '2s';\nCREATE INDEX CONCURRENTLY i ON t (c);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("0002_bad.sql"),
        "SET lock_timeout = '2s';\nSET statement_timeout = '1h';\nCREATE INDEX i2 ON t (c);\nALTER TABLE t DROP COLUMN d;\n",
    )
    .unwrap();
    let lint = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .env("PGSHIFT_ENGINE", ENGINE)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = lint(&["--format", "json", "lint", "."]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, u64, String)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "./0002_bad.sql".to_string(),
                3,
                "blocking-index-build".to_string()
            ),
            ("./0002_bad.sql".to_string(), 4, "drop-column".to_string())
        ]
    );
    let out = lint(&["--format", "github", "lint", "0002_bad.sql"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("::error file=0002_bad.sql,line=3,title=pgshift blocking-index-build::"),
        "{text}"
    );
    assert!(
        text.contains("::error file=0002_bad.sql,line=4,title=pgshift drop-column::"),
        "{text}"
    );
    // SARIF for code scanning; standard input; glob patterns.
    let out = lint(&["--format", "sarif", "lint", "0002_bad.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 2);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .current_dir(dir.path())
        .args(["--format", "json", "lint", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"SET lock_timeout = '1s';\nTRUNCATE t;\n",
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["findings"][0]["path"], "stdin");
    assert_eq!(json["findings"][0]["line"], 2);
    assert_eq!(json["findings"][0]["rule"], "truncate");
    let out = lint(&["--format", "json", "lint", "000[1]_*.sql"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lint(&["lint", "9*.sql"]).status.code(),
        Some(2),
        "a pattern that matches nothing"
    );
    assert_eq!(lint(&["lint", "0001_ok.sql"]).status.code(), Some(0));
    std::fs::write(
        dir.path().join("pgshift.toml"),
        "[lint]\ndisable = [\"blocking-index-build\"]\n[lint.severity]\ndrop-column = \"warning\"\n",
    )
    .unwrap();
    assert_eq!(
        lint(&["lint", "0002_bad.sql"]).status.code(),
        Some(0),
        "only a warning left"
    );
    std::fs::write(
        dir.path().join("pgshift.toml"),
        "[lint]\ndisable = [\"no-such-rule\"]\n",
    )
    .unwrap();
    let out = lint(&["lint", "0002_bad.sql"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown lint rule \"no-such-rule\""));
    assert_eq!(lint(&["lint", "missing.sql"]).status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    // A server that rejects unencrypted connections, with a self-signed certificate.
    let options = pgshift::testkit::ClusterOptions {
        tls_only: true,
        ..Default::default()
    };
    let cluster =
        tokio::task::spawn_blocking(move || pgshift::testkit::Cluster::start_with(options))
            .await
            .unwrap()
            .expect("start a TLS-only primary");
    let base = cluster.url("postgres");
    let run = pgshift(&format!("{base}?sslmode=disable"), &["status"]).await;
    assert_eq!(
        run.code, 3,
        "plain connections are rejected: {}",
        run.stderr
    );
    let run = pgshift(&format!("{base}?sslmode=require"), &["status"]).await;
    assert_eq!(
        run.code, 0,
        "require encrypts without checking identity: {}",
        run.stderr
    );
    let run = pgshift(
        &format!(
            "host=127.0.0.1 port={} user=postgres sslmode=prefer",
            cluster.port()
        ),
        &["status"],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "key=value strings and prefer work: {}",
        run.stderr
    );
    let run = pgshift(&format!("{base}?sslmode=verify-full"), &["status"]).await;
    assert_eq!(
        run.code, 3,
        "a self-signed certificate is not trusted: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("127.0.0.1:{}", cluster.port())),
        "{}",
        run.stderr
    );
}
