//! Workflows: multi-step runs whose every step is a signed actor, dispatched as messages so
//! that any number of hosts share the work.

pub mod backend;
pub mod jetstream;
pub mod memory;
pub mod routes;
pub mod scheduler;
pub mod spec;
pub mod state;
