//! Offline lint of migration files for CI: no database needed.
//!
//! Each statement is parsed by Postgres's own parser (pg_query, libpg_query
//! of Postgres 18: docs/lint.md says why not sqlparser); every rule in
//! [`rules`] looks at its parse tree with a little context (inside a
//! transaction block? was `lock_timeout` set? was the table created in this
//! same file? which lock does the transaction hold?). Severity is a policy:
//! `pgshift.toml` sets it per rule (`[lint.severity] rule = "warning"`,
//! `"error"` or `"off"`; `[lint] disable = [...]` too), and a
//! `-- pgshift:ignore rule-name` comment silences one statement.

pub mod rules;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::migration::split_statements;
pub use rules::{Severity, RULES};

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub path: String,
    pub line: u64,
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub suggestion: String,
    /// The statement's first source line, for the caret display.
    #[serde(skip)]
    pub source_line: String,
}

/// `pgshift.toml`.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub lint: LintConfig,
}

#[derive(Debug, Default, Deserialize)]
pub struct LintConfig {
    /// Rule names not to report.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Per-rule severity instead of the rule's default.
    #[serde(default)]
    pub severity: std::collections::BTreeMap<String, Level>,
}

/// A rule's level in `[lint.severity]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Off,
}

impl Config {
    /// The severity `rule` reports at, or None when it is off.
    pub fn severity(&self, rule: &rules::Rule) -> Option<Severity> {
        if self.lint.disable.iter().any(|d| d == rule.name) {
            return None;
        }
        match self.lint.severity.get(rule.name) {
            Some(Level::Off) => None,
            Some(Level::Error) => Some(Severity::Error),
            Some(Level::Warning) => Some(Severity::Warning),
            None => Some(rule.severity),
        }
    }
}

impl Config {
    /// Reads `pgshift.toml` from the current directory, if there is one.
    pub fn load(path: &Path) -> Result<Config> {
        if !path.exists() {
            return Ok(Config::default());
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Parse {
            file: path.display().to_string(),
            line: e
                .span()
                .map(|s| text[..s.start].lines().count() as u64)
                .unwrap_or(1)
                .max(1),
            message: e.message().to_string(),
        })?;
        let named = config
            .lint
            .disable
            .iter()
            .map(|n| (n, "[lint] disable"))
            .chain(config.lint.severity.keys().map(|n| (n, "[lint.severity]")));
        for (name, section) in named {
            if !RULES.iter().any(|r| r.name == name) {
                return Err(Error::Usage(format!(
                    "{}: unknown lint rule {name:?} in {section} (rules: {})",
                    path.display(),
                    RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(config)
    }
}

/// The .sql files named by `paths` (directories: their .sql files in
/// lexical order; glob patterns such as `db/**/*.sql`: the files they
/// match, in lexical order). `-` (standard input) stays as it is.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let text = p.to_string_lossy();
        if text == "-" {
            out.push(p.clone());
        } else if !p.exists() && text.contains(['*', '?', '[']) {
            let pattern = glob::glob(&text)
                .map_err(|e| Error::Usage(format!("bad file pattern {text:?}: {e}")))?;
            let mut found: Vec<PathBuf> = pattern
                .filter_map(|f| f.ok())
                .filter(|f| f.is_file())
                .collect();
            if found.is_empty() {
                return Err(Error::MigrationNotFound { path: p.clone() });
            }
            found.sort();
            out.extend(found);
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| Error::Read {
                    path: p.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "sql"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::MigrationNotFound { path: p.clone() });
        }
    }
    Ok(out)
}

/// Lints one file's text.
pub fn lint(path: &str, sql: &str, config: &Config) -> Result<Vec<Finding>> {
    let statements = statements(path, sql)?;
    let lines: Vec<&str> = sql.lines().collect();
    let mut findings = Vec::new();
    let mut state = FileState::default();
    let mut previous_end: usize = 0;
    for raw in &statements {
        let start = raw.line as usize;
        let end = start + raw.text.lines().count().max(1) - 1;
        // `-- pgshift:ignore a, b` on the lines before the statement or within it.
        let ignored: Vec<String> = lines[previous_end.min(lines.len())..end.min(lines.len())]
            .iter()
            .filter_map(|l| l.split("pgshift:ignore").nth(1))
            .flat_map(|rest| {
                rest.split([',', ' '])
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        previous_end = end;

        // Postgres's own parser: what it takes is what the server runs.
        let parsed = pg_query::parse(raw.text, 0);
        let (node, parse_error) = match &parsed {
            Ok(p) => (
                p.protobuf
                    .stmts
                    .first()
                    .and_then(|s| s.stmt.as_ref())
                    .and_then(|n| n.node.as_ref()),
                None,
            ),
            Err(e) => (None, Some(parse_message(e))),
        };
        let ctx = rules::Context {
            statement: node,
            parse_error: parse_error.as_deref(),
            text: raw.text,
            in_transaction: state.in_transaction,
            created_here: &state.created,
            lock_timeout_set: state.lock_timeout_set,
            statement_timeout_set: state.statement_timeout_set,
            lock_held: state.lock_held.as_ref(),
            not_null_proven: &state.not_null_proven,
        };
        for rule in RULES {
            if ignored.iter().any(|i| i == rule.name) {
                continue;
            }
            let Some(severity) = config.severity(rule) else {
                continue;
            };
            for hit in (rule.check)(&ctx) {
                findings.push(Finding {
                    path: path.to_string(),
                    line: raw.line,
                    rule: rule.name,
                    severity,
                    message: hit.message,
                    suggestion: hit.suggestion,
                    source_line: lines
                        .get(start - 1)
                        .map(|l| l.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        let held = rules::blocking_lock(&ctx);
        if let Some(stmt) = node {
            state.follow(stmt, raw.line, held);
        }
    }
    Ok(findings)
}

/// One statement of a file: the line of its first token, and its text.
struct Statement<'a> {
    line: u64,
    text: &'a str,
}

/// The file's statements, split by Postgres's own scanner (what psql and
/// the server would see: dollar quotes, nested comments, operators that a
/// younger tokenizer does not know).
fn statements<'a>(path: &str, sql: &'a str) -> Result<Vec<Statement<'a>>> {
    use pg_query::protobuf::Token;
    let pieces = match pg_query::split_with_scanner(sql) {
        Ok(p) => p,
        Err(e) => {
            // Our splitter names the line of an unterminated quote.
            split_statements(sql).map_err(|(line, message)| Error::Parse {
                file: path.to_string(),
                line,
                message,
            })?;
            return Err(Error::Parse {
                file: path.to_string(),
                line: 1,
                message: parse_message(&e),
            });
        }
    };
    let mut out = Vec::new();
    // Lines counted once, forward: the pieces come in order.
    let (mut counted, mut line) = (0usize, 1u64);
    for piece in pieces {
        let offset = piece.as_ptr() as usize - sql.as_ptr() as usize;
        // Where the statement starts: its first token that is not a comment.
        let first = pg_query::scan(piece).ok().and_then(|s| {
            s.tokens
                .iter()
                .find(|t| t.token != Token::SqlComment as i32 && t.token != Token::CComment as i32)
                .map(|t| t.start as usize)
        });
        let Some(start) = first else { continue };
        line += sql[counted..offset + start].matches('\n').count() as u64;
        counted = offset + start;
        out.push(Statement {
            line,
            text: piece[start..].trim_end(),
        });
    }
    Ok(out)
}

/// Postgres's error without the library's prefix.
fn parse_message(e: &pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) => m.clone(),
        other => other.to_string(),
    }
}

/// What the statements so far tell the rules about the ones that follow.
#[derive(Default)]
struct FileState {
    in_transaction: bool,
    lock_timeout_set: bool,
    statement_timeout_set: bool,
    created: Vec<String>,
    lock_held: Option<(u64, String)>,
    /// CHECK (col IS NOT NULL) constraints: (table, name, column, validated).
    not_null_checks: Vec<(String, String, String, bool)>,
    not_null_proven: Vec<(String, String)>,
}

impl FileState {
    fn follow(&mut self, stmt: &pg_query::NodeEnum, line: u64, held: Option<String>) {
        use pg_query::protobuf::{AlterTableType, TransactionStmtKind as K};
        use pg_query::NodeEnum;
        match stmt {
            NodeEnum::TransactionStmt(t) => {
                if t.kind == K::TransStmtBegin as i32 || t.kind == K::TransStmtStart as i32 {
                    self.in_transaction = true;
                } else if [
                    K::TransStmtCommit,
                    K::TransStmtRollback,
                    K::TransStmtPrepare,
                ]
                .iter()
                .any(|k| *k as i32 == t.kind)
                {
                    self.in_transaction = false;
                    self.lock_held = None;
                }
            }
            NodeEnum::VariableSetStmt(v) => match v.name.as_str() {
                "lock_timeout" => self.lock_timeout_set = true,
                "statement_timeout" => self.statement_timeout_set = true,
                _ => {}
            },
            NodeEnum::CreateStmt(c) => self.created.push(rules::relation(c.relation.as_ref())),
            _ => {}
        }
        if let Some((table, cmds)) = rules::alter_table(stmt) {
            for c in cmds {
                if rules::is(c, AlterTableType::AtAddConstraint) {
                    if let Some(NodeEnum::Constraint(k)) =
                        c.def.as_ref().and_then(|d| d.node.as_ref())
                    {
                        if let Some(column) = rules::not_null_check_column(k) {
                            self.not_null_checks.push((
                                table.clone(),
                                k.conname.clone(),
                                column,
                                !k.skip_validation,
                            ));
                        }
                    }
                } else if rules::is(c, AlterTableType::AtValidateConstraint) {
                    for check in self.not_null_checks.iter_mut() {
                        if check.0 == table && check.1 == c.name {
                            check.3 = true;
                        }
                    }
                }
            }
            self.not_null_proven = self
                .not_null_checks
                .iter()
                .filter(|c| c.3)
                .map(|c| (c.0.clone(), c.2.clone()))
                .collect();
        }
        if self.in_transaction && self.lock_held.is_none() {
            self.lock_held = held.map(|t| (line, t));
        }
    }
}

#[cfg(test)]
mod tests;
