//! The `messaging` providers.
