//! The plan-check report: which queries regressed, why, and both plans.

use std::io::{self, Write};

use serde_json::Value;

use crate::output::Report;
use crate::plancheck::{diff, CheckResult, Method, QueryCheck};

pub struct CheckReport(pub CheckResult);

fn method(m: Method) -> &'static str {
    match m {
        Method::Shadow => "shadow (hot standby: queries rewritten to the shadow columns)",
        Method::Rehearsal => {
            "rehearsal (writable clone: the blocking ALTER inside a rolled-back transaction)"
        }
    }
}

fn plan_lines(q: &QueryCheck, after: bool) -> Vec<String> {
    let e = if after { &q.after } else { &q.before };
    e.as_ref()
        .map(|e| diff::render(&e.plan))
        .unwrap_or_else(|| vec!["(not explained)".into()])
}

impl Report for CheckReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "Plan check, method: {}", method(self.0.method))?;
        for (i, q) in self.0.queries.iter().enumerate() {
            let verdict = match (&q.skipped, q.regressed) {
                (Some(why), _) => format!("SKIPPED ({why})"),
                (None, true) => "REGRESSED".into(),
                (None, false) => "ok".into(),
            };
            writeln!(
                w,
                "\n{}. {verdict}: {}",
                i + 1,
                q.sql.split_whitespace().collect::<Vec<_>>().join(" ")
            )?;
            for r in &q.reasons {
                writeln!(w, "   - {r}")?;
            }
            if let Some(s) = &q.suggestion {
                writeln!(w, "   suggestion: {s}")?;
            }
            if q.regressed {
                let (b, a) = (plan_lines(q, false), plan_lines(q, true));
                let width = b
                    .iter()
                    .map(|l| l.chars().count())
                    .max()
                    .unwrap_or(0)
                    .clamp(20, 80);
                writeln!(w, "   {:<width$} | after", "before")?;
                for k in 0..b.len().max(a.len()) {
                    let left: String = b
                        .get(k)
                        .map(|s| s.chars().take(width).collect())
                        .unwrap_or_default();
                    writeln!(
                        w,
                        "   {left:<width$} | {}",
                        a.get(k).map(String::as_str).unwrap_or("")
                    )?;
                }
            }
        }
        writeln!(
            w,
            "\n{} of {} queries regressed.",
            self.0.regressions,
            self.0.queries.len()
        )
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "## pgshift plan check\n\nMethod: {}.\n",
            method(self.0.method)
        )?;
        writeln!(
            w,
            "**{} of {} queries regressed.**\n",
            self.0.regressions,
            self.0.queries.len()
        )?;
        for q in &self.0.queries {
            let mark = if q.regressed {
                "❌"
            } else if q.skipped.is_some() {
                "⏭"
            } else {
                "✅"
            };
            writeln!(
                w,
                "### {mark} `{}`\n",
                q.sql
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace('`', "'")
            )?;
            if let Some(why) = &q.skipped {
                writeln!(w, "Skipped: {why}\n")?;
            }
            for r in &q.reasons {
                writeln!(w, "- {r}")?;
            }
            if let Some(s) = &q.suggestion {
                writeln!(w, "\n> {s}")?;
            }
            if q.regressed {
                writeln!(w, "\n<table><tr><th>before</th><th>after</th></tr><tr><td>\n\n```\n{}\n```\n\n</td><td>\n\n```\n{}\n```\n\n</td></tr></table>\n",
                    plan_lines(q, false).join("\n"), plan_lines(q, true).join("\n"))?;
            }
        }
        Ok(())
    }

    fn json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }
}
