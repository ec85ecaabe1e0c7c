//! pgshift: zero-downtime schema changes for live PostgreSQL databases.
//!
//! The map of the crate:
//! - [`cli`]: the command-line contract (commands, flags); [`commands`] runs them.
//! - [`error`]: typed errors and the exit-code contract.
//! - [`connection`]: connection strings, TLS, per-session safety settings.
//! - [`output`]: the one printer (text, JSON, markdown, progress bars).
//! - [`migration`]: reading migration files into intents.
//! - [`names`]: identifier quoting and shadow-object names.
//! - [`testkit`]: throwaway Postgres clusters for tests, the demo and benchmarks.

pub mod cli;
pub mod connection;
pub mod error;
pub mod migration;
pub mod names;
pub mod output;
pub mod testkit;

pub use error::{Error, ExitCode, Result};
