//! widget-auth: the backend an embeddable chat widget talks to before it opens its
//! realtime connection. Modules follow the data's way (see DESIGN.md): `app` starts
//! everything; `http` is the edge; `sessions` and `tokens` decide and mint; `commands`,
//! `store`, `ledger` and `feed` write and read the events; `audit`, `chain` and
//! `checkpoint` answer auditors; `cli` is the binary's commands.

pub mod app;
pub mod audit;
pub mod chain;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod feed;
pub mod http;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod sessions;
pub mod snapshot;
pub mod snapshotting;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
