//! Tests of the httpserver providers.
