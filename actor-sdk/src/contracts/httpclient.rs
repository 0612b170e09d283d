//! `wasmcloud:httpclient`: outgoing HTTP requests.
//!
//! The provider sends the request only to hosts the actor's link allows. Any status the
//! server answers with, `404` or `500` included, is a successful call; failing to get an
//! answer at all (a refused host, DNS, TLS, a connection error, the timeout) is an error.

use serde::{Deserialize, Serialize};

pub use super::httpserver::{Headers, HttpResponse, header};

/// The contract ID an actor's claims must grant to send HTTP requests.
pub const CONTRACT_ID: &str = "wasmcloud:httpclient";

/// Sends one HTTP request and waits for the whole response. Request: [`Request`].
/// Response: [`HttpResponse`].
pub const OP_REQUEST: &str = "Request";

/// The request of [`OP_REQUEST`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// The method in upper case; absent means `GET`.
    pub method: String,
    /// The absolute URL, with scheme and host (`https://api.example.com/v1/items?page=2`).
    pub url: String,
    /// The request's header fields.
    pub headers: Headers,
    /// The request's body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// How long to wait for the whole response, in milliseconds; nil means the provider's
    /// default. The provider may also cap it.
    pub timeout_ms: Option<u32>,
}

impl Default for Request {
    /// A `GET` of no URL, with no headers, body or timeout.
    fn default() -> Self {
        Self::new("GET", "")
    }
}

impl Request {
    /// A request of `method` for `url`, with no headers, body or timeout.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Headers::new(),
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).with_body(body)
    }

    /// This request with header `name: value` added after the others.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This request with its body replaced by `body`.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// This request with a timeout of `timeout_ms` milliseconds.
    #[must_use]
    pub fn with_timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, contains_bin, round_trip};
    use crate::contracts::{decode, encode};

    #[test]
    fn request_and_response_round_trip() {
        round_trip(
            &Request::post("https://api.example.com/v1/items", b"{}".to_vec())
                .with_header("content-type", "application/json")
                .with_timeout_ms(5_000),
        );
        round_trip(&Request::default());
        round_trip(&HttpResponse::new(503).with_header("retry-after", "3"));
    }

    #[test]
    fn bodies_are_msgpack_bin() {
        let request = Request::post("http://x", vec![1u8, 2, 3]);
        assert!(contains_bin(&encode(&request).unwrap(), &[1, 2, 3]));
    }

    #[test]
    fn a_request_without_method_is_a_get() {
        #[derive(Serialize)]
        struct UrlOnly {
            url: String,
        }
        let wire = encode(&UrlOnly {
            url: "http://x".to_owned(),
        })
        .unwrap();
        assert_eq!(decode::<Request>(&wire).unwrap(), Request::get("http://x"));
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<Request>(garbage).is_err(), "{garbage:?}");
        }
    }
}
