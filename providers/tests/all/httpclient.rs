//! Tests of the httpclient providers.
