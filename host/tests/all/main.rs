//! Integration tests of the host: the waPC ABI, the capability gate, limits, loading,
//! the compiled-module cache and pre-initialization. Guests are written in WAT here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod abi;
mod actor_calls;
mod admin_api;
mod asynchronous;
mod cache;
mod cli;
mod common;
mod control;
mod dashboard;
mod gate;
mod guests;
mod lattice_cluster;
mod limits;
mod load;
#[path = "../support/padding.rs"]
mod padding;
mod plugin;
mod plugin_python;
mod policy;
mod providers;
mod registry;
mod registry_lattice;
mod rust_actors;
mod snapshot;
mod telemetry;
mod up;
mod wasi;
mod workflow;
mod workflow_hosts;
mod workflow_http;
mod workflow_jetstream;
