//! Renderers of what pgshift reports: plans, run results, status. Each is a
//! [`Report`](crate::output::Report) with text, markdown and JSON forms.

mod audit;
mod check;
mod lint;
mod plan;
mod runner;
mod status;

pub use audit::AuditReport;
pub use check::CheckReport;
pub use lint::LintReport;
pub use plan::PlanReport;
pub use runner::RunnerPlanReport;
pub use status::{FolderReport, RunReport, StatusReport};

/// `12.3 MB`-style sizes.
pub fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.0} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}
