//! The `keyvalue` providers.
