//! The one printer all output goes through.
//!
//! Reports go to stdout in the chosen format (JSON is always one document);
//! logs, progress bars and questions go to stderr, so `--format json | jq`
//! always works. Progress bars are drawn only on a terminal and never while
//! verbose logs would tear them.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::cli::Format;

/// Something the CLI reports: it knows how to render itself in each format.
pub trait Report {
    fn text(&self, w: &mut dyn Write) -> io::Result<()>;
    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        self.text(w)
    }
    fn json(&self) -> Value;
}

#[derive(Debug, Clone)]
pub struct Printer {
    format: Format,
    quiet: bool,
    verbose: bool,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: bool) -> Printer {
        Printer {
            format,
            quiet,
            verbose,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes a report to stdout in the chosen format.
    pub fn report(&self, report: &dyn Report) -> io::Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        match self.format {
            Format::Text | Format::Github | Format::Sarif => report.text(&mut out)?,
            Format::Markdown => report.markdown(&mut out)?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &report.json())?;
                writeln!(out)?;
            }
        }
        out.flush()
    }

    /// Writes raw text to stdout (formats a [`Report`] does not know, like GitHub annotations).
    pub fn raw(&self, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        write(&mut out)?;
        out.flush()
    }

    /// A human note on stderr (what is happening), unless quiet.
    pub fn note(&self, message: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", message.as_ref());
        }
    }

    /// Asks a yes/no question on the terminal; false when stdin is not a terminal.
    pub fn confirm(&self, question: &str) -> bool {
        if !io::stdin().is_terminal() {
            return false;
        }
        eprint!("{question} [y/N] ");
        let _ = io::stderr().flush();
        let mut answer = String::new();
        if io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    }

    /// Progress of `total` units (rows): a bar on a terminal, log lines otherwise.
    pub fn progress(&self, label: &str, total: u64, done: u64) -> Progress {
        let bar = if !self.quiet && !self.verbose && io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>20} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar.set_position(done);
            Some(bar)
        } else {
            None
        };
        Progress {
            bar,
            label: label.to_string(),
            total,
            done,
            started: Instant::now(),
            started_at: done,
            last_log: Instant::now(),
        }
    }
}

/// A running progress indicator; see [`Printer::progress`].
pub struct Progress {
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    /// When and where this run started, for the rate in log lines.
    started: Instant,
    started_at: u64,
    /// Log lines are rate-limited to one every few seconds.
    last_log: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(
                "{}: {}/{} rows ({:.0} rows/s)",
                self.label,
                self.done,
                self.total,
                self.rate()
            );
        }
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (self.done - self.started_at) as f64 / secs
    }

    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!(
            "{}: {} rows in {:.1}s ({:.0} rows/s)",
            self.label,
            self.done - self.started_at,
            self.started.elapsed().as_secs_f64(),
            self.rate()
        );
    }
}
