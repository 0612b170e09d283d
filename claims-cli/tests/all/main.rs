//! Integration tests of `sigil-claims`: one binary, one module per topic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod cli;
mod common;
mod interop;
mod keys;
mod props;
mod provider;
mod verify;
