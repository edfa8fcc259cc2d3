//! Black-box tests: each starts the real server (both listeners on port 0) on a fresh
//! store, and talks to it over HTTP. Every test runs twice, on SQLite and on PostgreSQL.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod admin;
mod audit;
mod checkpoint;
mod group_commit;
mod process;
mod public;
