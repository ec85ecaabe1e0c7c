//! Events for people watching: one JSON line per event to a file or
//! stderr, and an optional hook command fed each event on stdin, so a status
//! page or chat channel hears about a pause the minute it starts.

use std::io::Write;
use std::process::Stdio;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::error::{Error, Result};

#[derive(Default)]
pub struct Events {
    /// Where JSON lines go (`--events`).
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    /// Shell command run per event (`--on-event`).
    hook: Option<String>,
    migration: String,
}

impl Events {
    pub fn new(migration: &str, path: Option<&str>, hook: Option<&str>) -> Result<Events> {
        let sink: Option<Box<dyn Write + Send>> = match path {
            None => None,
            Some("-") => Some(Box::new(std::io::stderr())),
            Some(p) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| Error::Write {
                        path: p.into(),
                        source,
                    })?,
            )),
        };
        Ok(Events {
            sink: sink.map(Mutex::new),
            hook: hook.map(str::to_string),
            migration: migration.to_string(),
        })
    }

    /// Records `event` with extra `fields` (an object).
    pub fn emit(&self, event: &str, fields: Value) {
        let mut record = json!({
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "migration": self.migration,
            "event": event,
        });
        if let (Some(obj), Value::Object(extra)) = (record.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let line = record.to_string();
        if let Some(sink) = &self.sink {
            if let Ok(mut w) = sink.lock() {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
        if let Some(cmd) = &self.hook {
            // The event is handed over before emit returns (a line of JSON fits
            // in a pipe's buffer), so even the last events of a run reach the
            // hook when pgshift exits right after; a thread reaps the child, so
            // a slow hook never slows the migration.
            let child = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn();
            match child {
                Ok(mut child) => {
                    if let Some(mut stdin) = child.stdin.take() {
                        // One JSON line, newline included: `cat >> file` collects them.
                        let _ = stdin.write_all(format!("{line}\n").as_bytes());
                    }
                    std::thread::spawn(move || {
                        let _ = child.wait();
                    });
                }
                Err(e) => tracing::warn!("--on-event hook could not start: {e}"),
            }
        }
    }
}
