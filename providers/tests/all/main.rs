//! Integration tests of the built-in providers, against real servers on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod blobstore;
mod httpclient;
mod httpserver;
mod keyvalue;
mod messaging;
mod support;
