//! Integration tests of the built-in providers, against real servers on loopback.

mod blobstore;
mod httpclient;
mod httpserver;
mod keyvalue;
mod messaging;
mod support;
