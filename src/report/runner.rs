//! The plan of an ordinary migration file: each statement and the online form it runs as.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::output::Report;
use crate::runner::{Action, Planned};

pub struct RunnerPlanReport {
    pub migration: String,
    pub statements: Vec<Planned>,
}

fn action_sql(a: &Action) -> String {
    match a {
        Action::Ddl(sql) => sql.clone(),
        Action::BuildIndex { sql, .. } => sql.clone(),
        Action::Transaction(statements) => format!("BEGIN;\n{};\nCOMMIT", statements.join(";\n")),
        Action::Backfill { table, column, expr } => format!(
            "UPDATE {table} SET {column} = {expr} WHERE ctid >= '(p,0)' AND ctid < '(p+256,0)' AND {column} IS NULL  -- per range of heap pages"
        ),
    }
}

fn lock_of(a: &Action) -> (&'static str, bool) {
    match a {
        Action::BuildIndex { .. } => ("SHARE UPDATE EXCLUSIVE", false),
        Action::Backfill { .. } => ("ROW EXCLUSIVE", false),
        Action::Transaction(_) => (
            "as the statements take, held to COMMIT (under lock_timeout)",
            true,
        ),
        Action::Ddl(sql) if sql.to_uppercase().contains("VALIDATE CONSTRAINT") => {
            ("SHARE UPDATE EXCLUSIVE", false)
        }
        Action::Ddl(_) => ("ACCESS EXCLUSIVE (brief, under lock_timeout)", true),
    }
}

impl Report for RunnerPlanReport {
    fn text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "Migration {} ({} statements)",
            self.migration,
            self.statements.len()
        )?;
        for p in &self.statements {
            writeln!(
                w,
                "\nline {}: {}",
                p.line,
                p.original.split_whitespace().collect::<Vec<_>>().join(" ")
            )?;
            if let Some(r) = p.rewrite {
                writeln!(w, "  runs online: {r}")?;
            }
            for a in &p.actions {
                let (lock, _) = lock_of(a);
                writeln!(w, "  - {}  [{lock}]", action_sql(a))?;
            }
        }
        Ok(())
    }

    fn json(&self) -> Value {
        json!({
            "migration": self.migration,
            "steps": self.statements.iter().flat_map(|p| p.actions.iter().map(move |a| {
                let (lock, blocking) = lock_of(a);
                json!({"phase": "apply", "line": p.line, "description": p.rewrite.unwrap_or("as written"),
                       "sql": action_sql(a), "lock": lock, "blocking": blocking})
            })).collect::<Vec<_>>(),
            "warnings": [],
        })
    }
}
