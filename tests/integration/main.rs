//! Integration tests against real Postgres clusters started per test.

mod cli;
mod harness;
mod rollback;
mod support;
mod widen;
