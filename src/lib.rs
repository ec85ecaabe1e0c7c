//! pgshift: zero-downtime schema changes for live PostgreSQL databases.
//!
//! The map of the crate:
//! - [`cli`]: the command-line contract (commands, flags); [`commands`] runs them.
//! - [`error`]: typed errors and the exit-code contract.
//! - [`connection`]: connection strings, TLS, per-session safety settings.
//! - [`output`]: the one printer (text, JSON, markdown, progress bars).
//! - [`lint`]: offline rules for migration files (one file per rule).
//! - [`migration`]: reading migration files into intents.
//! - [`catalog`]: a snapshot of the live schema, from pg_catalog.
//! - [`plan`]: intents + catalog -> what to widen, rebuild, or refuse.
//! - [`ops`]: the steps of each online operation, forward and back.
//! - [`execute`]: the phase runner, lock-timeout retries; [`backfill`]: keyset batches.
//! - [`guard`]: connection budget, replica lag, blocking sessions; [`events`]: JSON-line events.
//! - [`state`]: persisted migration state in the `pgshift` schema.
//! - [`audit`]: integer keys near exhaustion, and their forecasts.
//! - [`plancheck`]: query-plan regression check (shadow rewrite or rehearsal).
//! - [`runner`]: a folder of ordinary SQL migrations, each statement in its online form.
//! - [`report`]: text, JSON and markdown renderings.
//! - [`sqltext`]: token-level renames inside Postgres-generated SQL.
//! - [`names`]: identifier quoting and shadow-object names.
//! - [`testkit`]: throwaway Postgres clusters for tests, the demo and benchmarks.

pub mod audit;
pub mod backfill;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod connection;
pub mod error;
pub mod events;
pub mod execute;
pub mod guard;
pub mod hint_bits;
pub mod lint;
pub mod migration;
pub mod names;
pub mod ops;
pub mod output;
pub mod plan;
pub mod plancheck;
pub mod report;
pub mod runner;
pub mod sqltext;
pub mod state;
pub mod testkit;

pub use error::{Error, ExitCode, Result};
