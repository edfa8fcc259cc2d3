//! Black-box tests: each starts the real server (both listeners on port 0) on a fresh
//! store, and talks to it over HTTP. Every test runs twice, on SQLite and on PostgreSQL.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod admin;
mod audit;
mod checkpoint;
mod cli_keys;
mod console;
mod edge;
mod group_commit;
mod ledger;
mod limits;
mod metrics;
mod openapi;
mod process;
mod public;
mod refresh;
mod snapshots;
mod widget_js;
