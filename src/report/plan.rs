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
    /// What `--scan-values` found.
    pub values: Option<crate::backfill::scan::ValueCheck>,
}

impl PlanReport {
    pub fn new(plan: Plan) -> PlanReport {
        if !plan.in_place.is_empty() {
            let steps = ops::in_place(&plan);
            return PlanReport {
                plan,
                steps,
                values: None,
            };
        }
        let mut steps = ops::expand(&plan);
        steps.extend(ops::backfill(&plan));
        steps.extend(ops::validate(&plan));
        steps.push(ops::cutover(&plan, &state::cutover_marker(&plan.migration)));
        steps.extend(ops::after_cutover(&plan));
        steps.extend(ops::finalize(&plan));
        PlanReport {
            plan,
            steps,
            values: None,
        }
    }

    /// The leaves of a partitioned table the copy engine copies, one by one.
    fn leaves(&self, table: u32) -> impl Iterator<Item = &crate::plan::copy::CopyPartition> {
        self.plan
            .copy
            .iter()
            .flat_map(|c| &c.tables)
            .filter(move |c| c.oid == table)
            .flat_map(|c| c.leaves())
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
                    "{}.{}: {} → {} ({})",
                    t.display(),
                    c.name,
                    c.from_type,
                    to_type(c),
                    c.reason
                );
                if let Some(conv) = &c.conversion {
                    if let Some(collation) = &conv.collation {
                        line.push_str(&format!("; collation {collation}"));
                    }
                    line.push_str(&format!("; each value converts as {}", conv.forward));
                    match (&conv.back, &conv.back_error) {
                        (Some(back), _) => {
                            line.push_str(&format!("; back (rollback after cutover) as {back}"))
                        }
                        (None, Some(e)) => {
                            line.push_str(&format!("; no way back after cutover ({e})"))
                        }
                        (None, None) => {}
                    }
                }
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

    /// The settings conversions run with, when there are conversions.
    fn settings_line(&self) -> Option<String> {
        if self.plan.conversion_settings.is_empty() {
            return None;
        }
        let set: Vec<String> = self
            .plan
            .conversion_settings
            .iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        Some(format!(
            "conversions run with {} (the database's and role's defaults, as the blocking ALTER would in a new session)",
            set.join(", ")
        ))
    }

    /// What `--scan-values` found, when it ran.
    fn values_line(&self) -> Option<String> {
        let v = self.values.as_ref()?;
        Some(match v.misfits.as_slice() {
            [] => format!(
                "{} rows read and converted: every value converts",
                v.rows_read
            ),
            misfits => misfits
                .iter()
                .map(|m| {
                    format!(
                        "the row of {} with {} does not convert: {}",
                        m.table, m.key, m.reason
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    fn in_place_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let p = &self.plan;
        writeln!(w, "Migration {} (catalog-only type changes)", p.migration)?;
        writeln!(
            w,
            "Postgres changes these types in its catalog alone: no table rewrite, no index rebuilt, no copy."
        )?;
        writeln!(w)?;
        writeln!(w, "Steps:")?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(w, "{:>3}. [{}] {}", i + 1, s.phase, s.description)?;
            writeln!(
                w,
                "     lock: {} (blocks traffic for milliseconds, under lock_timeout)",
                s.lock
            )?;
            writeln!(w, "     | {}", s.sql)?;
        }
        writeln!(w)?;
        writeln!(w, "Warnings:")?;
        for warning in &p.warnings {
            writeln!(w, "  - {warning}")?;
        }
        Ok(())
    }
}

fn to_type(c: &crate::plan::ColumnPlan) -> &str {
    c.conversion
        .as_ref()
        .map_or("bigint", |v| v.to_type.as_str())
}

impl Report for PlanReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        let p = &self.plan;
        if !p.in_place.is_empty() {
            return self.in_place_text(w);
        }
        let converts = p
            .tables
            .iter()
            .any(|t| t.columns.iter().any(|c| c.conversion.is_some()));
        writeln!(
            w,
            "Migration {} (online: {})",
            p.migration,
            if converts {
                "column type changes"
            } else {
                "int → bigint"
            }
        )?;
        writeln!(
            w,
            "Engine: {}",
            match p.engine {
                Engine::Update =>
                    "update (shadow columns of the new types filled in place by batched UPDATEs)",
                Engine::Copy =>
                    "copy (a copy of each table with the new column types, swapped in at cutover)",
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
            for leaf in self.leaves(t.oid) {
                writeln!(
                    w,
                    "    partition {} ~{} rows, {}, about {:.0} s",
                    leaf.display(),
                    leaf.estimated_rows,
                    super::bytes(leaf.total_bytes),
                    p.pace.backfill_secs(leaf.estimated_rows, p.engine).ceil()
                )?;
            }
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
        if let Some(line) = self.settings_line() {
            writeln!(w, "Settings: {line}")?;
        }
        if let Some(line) = self.values_line() {
            writeln!(w, "Values: {line}")?;
        }
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
            for leaf in self.leaves(t.oid) {
                writeln!(
                    w,
                    "| `{}` (partition) | {} | {} |",
                    leaf.display(),
                    leaf.estimated_rows,
                    super::bytes(leaf.total_bytes)
                )?;
            }
        }
        writeln!(w)?;
        for line in self.column_lines() {
            writeln!(w, "- {line}")?;
        }
        writeln!(w, "- WAL: {}", self.wal_line())?;
        if let Some(line) = self.settings_line() {
            writeln!(w, "- Settings: {line}")?;
        }
        if let Some(line) = self.values_line() {
            writeln!(w, "- Values: {line}")?;
        }
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
                "partitions": self.leaves(t.oid).map(|leaf| json!({
                    "partition": leaf.display(),
                    "parent": leaf.parent,
                    "estimated_rows": leaf.estimated_rows,
                    "total_bytes": leaf.total_bytes,
                    "estimated_backfill_seconds": p.pace.backfill_secs(leaf.estimated_rows, p.engine).ceil(),
                })).collect::<Vec<_>>(),
                "columns": t.columns.iter().map(|c| json!({
                    "column": c.name, "from": c.from_type, "to": to_type(c), "reason": c.reason,
                    "sequence": c.sequence.as_ref().map(|s| s.name.clone()),
                    "using": c.conversion.as_ref().and_then(|v| v.using.clone()),
                    "collation": c.conversion.as_ref().and_then(|v| v.collation.clone()),
                    "back": c.conversion.as_ref().and_then(|v| v.back.clone()),
                    "rollback_after_cutover": c.conversion.as_ref().is_none_or(|v| v.back.is_some()),
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
            "catalog_only": !p.in_place.is_empty(),
            "value_check": self.values,
            "conversion_settings": p.conversion_settings.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        })
    }
}
