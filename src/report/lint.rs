//! Lint findings: text with the source line and a caret, JSON, GitHub
//! workflow annotations, SARIF 2.1.0 for code scanning, markdown.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::lint::{Finding, Severity};
use crate::output::Report;

pub struct LintReport {
    pub findings: Vec<Finding>,
    pub files: usize,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// GitHub Actions workflow commands, one per finding.
    pub fn github(&self, w: &mut dyn Write) -> io::Result<()> {
        for f in &self.findings {
            let level = if f.severity == Severity::Error {
                "error"
            } else {
                "warning"
            };
            // Workflow commands end at a newline; '%' must be escaped first.
            let esc = |s: &str| {
                s.replace('%', "%25")
                    .replace('\r', "%0D")
                    .replace('\n', "%0A")
            };
            writeln!(
                w,
                "::{level} file={},line={},title=pgshift {}::{} Suggestion: {}",
                f.path,
                f.line,
                f.rule,
                esc(&f.message),
                esc(&f.suggestion)
            )?;
        }
        Ok(())
    }
}

impl LintReport {
    /// SARIF 2.1.0: one run, every rule in the driver, one result per finding.
    pub fn sarif(&self, w: &mut dyn Write) -> io::Result<()> {
        let rules: Vec<Value> = crate::lint::RULES
            .iter()
            .map(|r| {
                json!({
                    "id": r.name,
                    "shortDescription": { "text": r.summary },
                    "defaultConfiguration": { "level": level(r.severity) },
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "ruleId": f.rule,
                    "ruleIndex": crate::lint::RULES.iter().position(|r| r.name == f.rule),
                    "level": level(f.severity),
                    "message": { "text": format!("{} Suggestion: {}", f.message, f.suggestion) },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": { "uri": f.path },
                            "region": { "startLine": f.line },
                        }
                    }],
                })
            })
            .collect();
        let doc = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "pgshift",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "results": results,
            }],
        });
        serde_json::to_writer_pretty(&mut *w, &doc)?;
        writeln!(w)
    }
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

impl Report for LintReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        for f in &self.findings {
            let level = if f.severity == Severity::Error {
                "error"
            } else {
                "warning"
            };
            writeln!(
                w,
                "{}:{}: {level}[{}]: {}",
                f.path, f.line, f.rule, f.message
            )?;
            let gutter = f.line.to_string().len();
            let indent = f.source_line.len() - f.source_line.trim_start().len();
            writeln!(w, "{:gutter$} |", "")?;
            writeln!(w, "{} | {}", f.line, f.source_line)?;
            writeln!(w, "{:gutter$} | {}^", "", " ".repeat(indent))?;
            writeln!(w, "{:gutter$} = help: {}", "", f.suggestion)?;
            writeln!(w)?;
        }
        writeln!(
            w,
            "{} file{} checked: {} error{}, {} warning{}",
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.errors(),
            if self.errors() == 1 { "" } else { "s" },
            self.findings.len() - self.errors(),
            if self.findings.len() - self.errors() == 1 {
                ""
            } else {
                "s"
            }
        )
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "| file | line | severity | rule | finding | suggestion |"
        )?;
        writeln!(w, "| --- | ---: | --- | --- | --- | --- |")?;
        for f in &self.findings {
            writeln!(
                w,
                "| `{}` | {} | {:?} | `{}` | {} | {} |",
                f.path,
                f.line,
                f.severity,
                f.rule,
                f.message.replace('|', "\\|"),
                f.suggestion.replace('|', "\\|")
            )?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        json!({ "findings": self.findings })
    }
}
