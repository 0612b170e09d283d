//! Tests of the keyvalue providers.
