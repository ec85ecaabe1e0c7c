//! Integration tests against real Postgres clusters started per test.

mod harness;
mod support;
