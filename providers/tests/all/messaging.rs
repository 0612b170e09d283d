//! Tests of the messaging providers.
