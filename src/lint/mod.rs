//! Offline lint of migration files for CI: no database needed.
//!
//! Each statement is parsed with sqlparser when it can be; every rule in
//! [`rules`] looks at it with a little context (inside a transaction block?
//! was `lock_timeout` set? was the table created in this same file?).
//! Rules can be disabled in `pgshift.toml` (`[lint] disable = [...]`) or for
//! one statement with a `-- pgshift:ignore rule-name` comment.

pub mod rules;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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
        for name in &config.lint.disable {
            if !RULES.iter().any(|r| r.name == name) {
                return Err(Error::Usage(format!(
                    "{}: unknown lint rule {name:?} in [lint] disable (rules: {})",
                    path.display(),
                    RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(config)
    }
}

/// The .sql files named by `paths` (directories: their .sql files in lexical order).
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
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
    let statements = split_statements(sql).map_err(|(line, message)| Error::Parse {
        file: path.to_string(),
        line,
        message,
    })?;
    let lines: Vec<&str> = sql.lines().collect();
    let mut findings = Vec::new();
    let mut in_transaction = false;
    let mut lock_timeout_set = false;
    let mut created: Vec<String> = Vec::new();
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

        // sqlparser rejects `TYPE t COLLATE c`: parse the statement without it.
        let parseable = crate::migration::type_clauses(&raw.text)
            .map(|(stripped, _)| stripped)
            .unwrap_or_else(|_| raw.text.clone());
        let parsed: Option<Statement> = Parser::parse_sql(&PostgreSqlDialect {}, &parseable)
            .ok()
            .and_then(|mut v| (v.len() == 1).then(|| v.remove(0)));
        let words: Vec<String> = raw
            .text
            .split_whitespace()
            .take(3)
            .map(|w| w.to_lowercase())
            .collect();
        let ctx = rules::Context {
            statement: parsed.as_ref(),
            text: &raw.text,
            in_transaction,
            created_here: &created,
            lock_timeout_set,
        };
        for rule in RULES {
            if config.lint.disable.iter().any(|d| d == rule.name)
                || ignored.iter().any(|i| i == rule.name)
            {
                continue;
            }
            for hit in (rule.check)(&ctx) {
                findings.push(Finding {
                    path: path.to_string(),
                    line: raw.line,
                    rule: rule.name,
                    severity: rule.severity,
                    message: hit.message,
                    suggestion: hit.suggestion,
                    source_line: lines
                        .get(start - 1)
                        .map(|l| l.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        // Context for the statements that follow.
        match words.first().map(String::as_str) {
            Some("begin") | Some("start") => in_transaction = true,
            Some("commit") | Some("end") | Some("rollback") | Some("abort") => {
                in_transaction = false
            }
            _ => {}
        }
        let sets_lock_timeout = words.first().is_some_and(|w| w == "set")
            && words.iter().skip(1).any(|w| w.starts_with("lock_timeout"));
        lock_timeout_set |= sets_lock_timeout;
        if let Some(Statement::CreateTable(ct)) = &parsed {
            created.push(rules::last(&ct.name));
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests;
