//! The `httpclient` providers.
