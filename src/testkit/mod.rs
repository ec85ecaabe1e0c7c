//! Throwaway Postgres clusters for tests, the demo and benchmarks.
//!
//! Real servers, never mocks: each [`Cluster`] is an `initdb` in a temp dir
//! on a free loopback port, stopped when dropped (also when a test panics).

mod cluster;
pub mod incident;

pub use cluster::{postgres_bin_dir, Cluster, ClusterOptions};
