//! The audit report: keys sorted by urgency.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::audit::KeyUsage;
use crate::output::Report;

pub struct AuditReport {
    pub columns: Vec<KeyUsage>,
    pub threshold: f64,
    /// How days_left was estimated.
    pub estimate: String,
    /// Migration files written (`--write-migrations`).
    pub written: Vec<String>,
}

impl AuditReport {
    pub fn at_risk(&self) -> usize {
        self.columns
            .iter()
            .filter(|k| k.used_pct > self.threshold)
            .count()
    }
}

fn days(k: &KeyUsage) -> String {
    match k.days_left {
        Some(d) if d < 1.0 => format!("{:.1} h", d * 24.0),
        Some(d) => format!("{d:.0}"),
        None => "-".into(),
    }
}

impl Report for AuditReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.columns.is_empty() {
            return writeln!(w, "No integer keys to audit.");
        }
        writeln!(
            w,
            "{:<4} {:<36} {:<9} {:>20} {:>8} {:>10}  referenced by",
            "", "column", "type", "last value", "used %", "days left"
        )?;
        for k in &self.columns {
            let flag = if k.used_pct > self.threshold {
                "RISK"
            } else {
                ""
            };
            writeln!(
                w,
                "{flag:<4} {:<36} {:<9} {:>20} {:>8.2} {:>10}  {}",
                format!("{}.{}", k.table, k.column),
                k.type_name,
                k.last_value
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                k.used_pct,
                days(k),
                k.referenced_by.join(", ")
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{} of {} past {}%. Days left: {}.",
            self.at_risk(),
            self.columns.len(),
            self.threshold,
            self.estimate
        )?;
        for path in &self.written {
            writeln!(w, "wrote {path}")?;
        }
        Ok(())
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "| | column | type | sequence | last value | max | used % | days left | referenced by |")?;
        writeln!(
            w,
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"
        )?;
        for k in &self.columns {
            writeln!(
                w,
                "| {} | `{}.{}` | {} | {} | {} | {} | {:.2} | {} | {} |",
                if k.used_pct > self.threshold {
                    "⚠"
                } else {
                    ""
                },
                k.table,
                k.column,
                k.type_name,
                k.sequence.clone().unwrap_or_default(),
                k.last_value.map(|v| v.to_string()).unwrap_or_default(),
                k.max_value,
                k.used_pct,
                days(k),
                k.referenced_by.join(", ")
            )?;
        }
        writeln!(
            w,
            "\n{} of {} past {}%. Days left: {}.",
            self.at_risk(),
            self.columns.len(),
            self.threshold,
            self.estimate
        )
    }

    fn json(&self) -> Value {
        json!({
            "columns": self.columns,
            "threshold": self.threshold,
            "at_risk": self.at_risk(),
            "estimate": self.estimate,
            "written": self.written,
        })
    }
}
