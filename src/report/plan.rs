//! The plan report: tables, steps with their SQL and locks, warnings, blockers.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::ops::{self, Step};
use crate::output::Report;
use crate::plan::{Engine, Plan};
use crate::state;

pub struct PlanReport {
    pub plan: Plan,
    pub steps: Vec<Step>,
}

impl PlanReport {
    pub fn new(plan: Plan) -> PlanReport {
        let mut steps = ops::expand(&plan);
        steps.extend(ops::backfill(&plan));
        steps.extend(ops::validate(&plan));
        steps.push(ops::cutover(&plan, &state::cutover_marker(&plan.migration)));
        steps.extend(ops::after_cutover(&plan));
        steps.extend(ops::finalize(&plan));
        PlanReport { plan, steps }
    }

    fn estimate_secs(&self) -> f64 {
        self.plan.estimated_backfill_secs()
    }

    /// What the estimated speed rests on, when it is not full speed.
    fn pace_note(&self) -> &'static str {
        let pace = self.plan.pace;
        if pace.capped(self.plan.engine) {
            " (--max-rows-per-second)"
        } else if pace.paced {
            " (paced by --max-commit-latency: the speed of a slow disk; \
             `--max-commit-latency 0 --flush-wal-every 0` runs at full speed)"
        } else {
            ""
        }
    }

    /// What the WAL volume means for replicas, the archive and checkpoints.
    fn wal_line(&self) -> String {
        let e = &self.plan.wal;
        let pages = if e.full_page_bytes > 0 {
            format!(", {} of it whole pages", super::bytes(e.full_page_bytes))
        } else {
            String::new()
        };
        let checkpoints = match e.checkpoints {
            0 => format!(
                "max_wal_size ({} MB) starts no checkpoint on its account",
                e.max_wal_size_bytes >> 20
            ),
            n => format!(
                "with max_wal_size {} MB it starts about {n} checkpoint{} during the migration, and the \
                 application's commits slow down while one runs",
                e.max_wal_size_bytes >> 20,
                if n == 1 { "" } else { "s" }
            ),
        };
        format!(
            "about {}{pages}: every replica replays it and the WAL archive keeps it; {checkpoints}",
            super::bytes(e.bytes)
        )
    }

    fn column_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.plan.tables {
            for c in &t.columns {
                let mut line = format!(
                    "{}.{}: {} → bigint ({})",
                    t.display(),
                    c.name,
                    c.from_type,
                    c.reason
                );
                if let Some(seq) = &c.sequence {
                    let kind = if seq.identity.is_empty() {
                        "sequence"
                    } else {
                        "identity sequence"
                    };
                    line.push_str(&format!(
                        "; {kind} {} {} → bigint, at {}",
                        seq.name,
                        seq.data_type,
                        seq.last_value
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "unused".into())
                    ));
                }
                out.push(line);
            }
        }
        out
    }
}

impl Report for PlanReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        let p = &self.plan;
        writeln!(w, "Migration {} (online: int → bigint)", p.migration)?;
        writeln!(
            w,
            "Engine: {}",
            match p.engine {
                Engine::Update =>
                    "update (bigint shadow columns filled in place by batched UPDATEs)",
                Engine::Copy =>
                    "copy (a copy of each table with bigint columns, swapped in at cutover)",
            }
        )?;
        writeln!(w)?;
        writeln!(w, "Tables:")?;
        for t in &p.tables {
            writeln!(
                w,
                "  {:<24} ~{} rows, {}",
                t.display(),
                t.estimated_rows,
                super::bytes(t.total_bytes)
            )?;
        }
        writeln!(w, "Columns:")?;
        for line in self.column_lines() {
            writeln!(w, "  {line}")?;
        }
        writeln!(
            w,
            "Backfill: ~{} rows, about {:.0} s at {:.0} rows/s{}",
            p.estimated_rows(),
            self.estimate_secs().ceil(),
            p.estimated_rows_per_sec(),
            self.pace_note()
        )?;
        writeln!(w, "WAL: {}", self.wal_line())?;
        writeln!(w)?;
        writeln!(w, "Steps:")?;
        for (i, s) in self.steps.iter().enumerate() {
            let blocking = if s.blocking {
                "blocks traffic briefly, under lock_timeout"
            } else {
                "does not block reads or writes"
            };
            writeln!(w, "{:>3}. [{}] {}", i + 1, s.phase, s.description)?;
            writeln!(w, "     lock: {} ({blocking})", s.lock)?;
            for line in s.sql.lines() {
                writeln!(w, "     | {line}")?;
            }
        }
        if !p.warnings.is_empty() {
            writeln!(w)?;
            writeln!(w, "Warnings:")?;
            for warning in &p.warnings {
                writeln!(w, "  - {warning}")?;
            }
        }
        if !p.blockers.is_empty() {
            writeln!(w)?;
            writeln!(w, "Cannot run online ({}):", p.blockers.len())?;
            for b in &p.blockers {
                writeln!(
                    w,
                    "  - {}: {}. What to do: {}",
                    b.object, b.reason, b.remedy
                )?;
            }
        }
        Ok(())
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        let p = &self.plan;
        writeln!(w, "## pgshift plan: `{}`", p.migration)?;
        writeln!(w)?;
        writeln!(w, "| table | rows (est.) | size |")?;
        writeln!(w, "| --- | ---: | ---: |")?;
        for t in &p.tables {
            writeln!(
                w,
                "| `{}` | {} | {} |",
                t.display(),
                t.estimated_rows,
                super::bytes(t.total_bytes)
            )?;
        }
        writeln!(w)?;
        for line in self.column_lines() {
            writeln!(w, "- {line}")?;
        }
        writeln!(w, "- WAL: {}", self.wal_line())?;
        writeln!(w)?;
        writeln!(w, "| # | phase | step | lock | blocks traffic |")?;
        writeln!(w, "| ---: | --- | --- | --- | --- |")?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                i + 1,
                s.phase,
                s.description.replace('|', "\\|"),
                s.lock,
                if s.blocking { "briefly" } else { "no" }
            )?;
        }
        if !p.warnings.is_empty() {
            writeln!(w, "\n### Warnings\n")?;
            for warning in &p.warnings {
                writeln!(w, "- {warning}")?;
            }
        }
        if !p.blockers.is_empty() {
            writeln!(w, "\n### Cannot run online\n")?;
            for b in &p.blockers {
                writeln!(w, "- **{}**: {}. {}", b.object, b.reason, b.remedy)?;
            }
        }
        writeln!(w, "\n<details><summary>SQL</summary>\n\n```sql")?;
        for s in &self.steps {
            writeln!(w, "-- {}\n{};\n", s.description, s.sql)?;
        }
        writeln!(w, "```\n</details>")
    }

    fn json(&self) -> Value {
        let p = &self.plan;
        json!({
            "migration": p.migration,
            "engine": p.engine.as_str(),
            "steps": self.steps,
            "warnings": p.warnings,
            "blockers": p.blockers,
            "tables": p.tables.iter().map(|t| json!({
                "table": t.display(),
                "estimated_rows": t.estimated_rows,
                "total_bytes": t.total_bytes,
                "columns": t.columns.iter().map(|c| json!({
                    "column": c.name, "from": c.from_type, "to": "bigint", "reason": c.reason,
                    "sequence": c.sequence.as_ref().map(|s| s.name.clone()),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "views": p.views.iter().map(|v| format!("{}.{}", v.schema, v.name)).collect::<Vec<_>>(),
            "estimated_backfill_seconds": self.estimate_secs().ceil(),
            "estimated_backfill_rows_per_second": p.estimated_rows_per_sec(),
            "backfill_paced": p.pace.paced,
            "estimated_wal_bytes": p.wal.bytes,
            "estimated_full_page_bytes": p.wal.full_page_bytes,
            "estimated_checkpoints": p.wal.checkpoints,
            "max_wal_size_bytes": p.wal.max_wal_size_bytes,
            "advised_max_wal_size_bytes": p.wal.advised_max_wal_size_bytes,
            "estimated_timed_checkpoints": p.wal.timed_checkpoints,
            "replication_slots": p.replication_slots,
        })
    }
}
