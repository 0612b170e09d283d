//! The `httpserver` providers.
