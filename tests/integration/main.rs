//! Integration tests against real Postgres clusters started per test.

mod audit;
mod check;
mod cli;
mod convert;
mod copy;
mod guards;
mod harness;
mod names;
mod partitions;
mod rollback;
mod runner;
mod support;
mod widen;
