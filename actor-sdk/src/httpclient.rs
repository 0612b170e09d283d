//! Outgoing HTTP requests (`wasmcloud:httpclient`); see
//! [`contracts::httpclient`](crate::contracts::httpclient).
//!
//! ```ignore
//! use sigil_actor::httpclient::{HttpClient, Request};
//!
//! let client = HttpClient::default();
//! let page = client.get("https://example.com/")?;
//! let created = client.request(
//!     &Request::post("https://api.example.com/items", br#"{"name":"x"}"#.to_vec())
//!         .with_header("content-type", "application/json")
//!         .with_timeout_ms(2_000),
//! )?;
//! if created.status != 201 { /* ... */ }
//! ```

use crate::Result;
use crate::contracts::httpclient::{CONTRACT_ID, OP_REQUEST};
use crate::host::{DEFAULT_LINK, call};

pub use crate::contracts::httpclient::{HttpResponse, Request};

/// A client for the HTTP egress bound to one of the actor's links.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpClient {
    link: String,
}

impl Default for HttpClient {
    /// The HTTP client on the `default` link.
    fn default() -> Self {
        Self::link(DEFAULT_LINK)
    }
}

impl HttpClient {
    /// The HTTP client on the `default` link.
    pub fn new() -> Self {
        Self::default()
    }

    /// The HTTP client on link `name`.
    pub fn link(name: impl Into<String>) -> Self {
        Self { link: name.into() }
    }

    /// The link this client calls through.
    pub fn link_name(&self) -> &str {
        &self.link
    }

    /// Sends `request` and returns the response, whatever its status.
    ///
    /// # Errors
    /// [`Error::HostCall`](crate::Error::HostCall) when no response came: the claims do
    /// not grant `wasmcloud:httpclient`, the link does not allow the host, or the
    /// connection failed or timed out.
    pub fn request(&self, request: &Request) -> Result<HttpResponse> {
        call(&self.link, CONTRACT_ID, OP_REQUEST, request)
    }

    /// Sends a `GET` of `url`.
    ///
    /// # Errors
    /// As [`HttpClient::request`].
    pub fn get(&self, url: &str) -> Result<HttpResponse> {
        self.request(&Request::get(url))
    }

    /// Sends a `POST` of `body` to `url`.
    ///
    /// # Errors
    /// As [`HttpClient::request`].
    pub fn post(&self, url: &str, body: impl Into<Vec<u8>>) -> Result<HttpResponse> {
        self.request(&Request::post(url, body))
    }
}
