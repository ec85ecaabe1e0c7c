//! `status` and the result of a run.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::output::Report;
use crate::state::Migration;

pub struct StatusReport {
    pub migrations: Vec<Migration>,
}

fn backfill_totals(m: &Migration) -> (i64, i64) {
    m.backfill.iter().fold((0, 0), |(d, t), b| {
        (d + b.rows_done, t + b.rows_total.max(b.rows_done))
    })
}

impl Report for StatusReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.migrations.is_empty() {
            return writeln!(w, "No migrations recorded on this database.");
        }
        writeln!(
            w,
            "{:<32} {:<12} {:>24}  {:<20}  note",
            "migration", "phase", "backfill", "updated"
        )?;
        for m in &self.migrations {
            let (done, total) = backfill_totals(m);
            let backfill = if total > 0 {
                format!(
                    "{done}/{total} ({:.0}%)",
                    100.0 * done as f64 / total as f64
                )
            } else {
                "-".into()
            };
            let note = match (&m.last_error, m.paused) {
                (Some(e), _) => format!("last error: {e}"),
                (None, true) => format!("paused: {}", m.pause_reason.clone().unwrap_or_default()),
                _ if !m.unvalidated.is_empty() => format!(
                    "not validated yet (finalize validates): {}",
                    m.unvalidated.join(", ")
                ),
                _ => String::new(),
            };
            writeln!(
                w,
                "{:<32} {:<12} {:>24}  {:<20}  {note}",
                m.name,
                m.phase.as_str(),
                backfill,
                m.updated_at
            )?;
        }
        Ok(())
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "| migration | phase | backfill | started | updated |")?;
        writeln!(w, "| --- | --- | ---: | --- | --- |")?;
        for m in &self.migrations {
            let (done, total) = backfill_totals(m);
            writeln!(
                w,
                "| `{}` | {} | {done}/{total} | {} | {} |",
                m.name,
                m.phase.as_str(),
                m.started_at,
                m.updated_at
            )?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        json!({
            "migrations": self.migrations.iter().map(|m| {
                let (done, total) = backfill_totals(m);
                json!({
                    "name": m.name,
                    "phase": m.phase.as_str(),
                    "backfill": {"rows_done": done, "rows_total": total, "tables": m.backfill},
                    "started_at": m.started_at,
                    "updated_at": m.updated_at,
                    "paused": m.paused,
                    "pause_reason": m.pause_reason,
                    "last_error": m.last_error,
                    "unvalidated_foreign_keys": m.unvalidated,
                })
            }).collect::<Vec<_>>()
        })
    }
}

/// What a run command (apply, resume, cutover, rollback, finalize) did.
pub struct RunReport {
    pub migration: String,
    pub command: &'static str,
    pub phase: String,
    pub seconds: f64,
    pub message: String,
}

impl Report for RunReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "{}: {} ({:.1} s)",
            self.migration, self.message, self.seconds
        )
    }

    fn json(&self) -> Value {
        json!({
            "migration": self.migration,
            "command": self.command,
            "phase": self.phase,
            "seconds": self.seconds,
            "message": self.message,
        })
    }
}

/// `status DIR`: the folder's files, applied and pending, with the in-flight migrations.
pub struct FolderReport {
    pub files: Vec<crate::runner::FileState>,
    pub migrations: Vec<Migration>,
}

impl Report for FolderReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "{:<40} {:<9} {:>10}  applied at", "file", "state", "ms")?;
        for f in &self.files {
            writeln!(
                w,
                "{:<40} {:<9} {:>10}  {}",
                f.name,
                f.state,
                f.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                f.applied_at.clone().unwrap_or_default()
            )?;
        }
        if !self.migrations.is_empty() {
            writeln!(w)?;
            StatusReport {
                migrations: self.migrations.clone(),
            }
            .text(w)?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        let mut v = StatusReport {
            migrations: self.migrations.clone(),
        }
        .json();
        v["files"] = serde_json::to_value(&self.files).unwrap_or(Value::Null);
        v
    }
}
