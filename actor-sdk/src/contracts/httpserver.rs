//! `wasmcloud:httpserver`: HTTP requests delivered to an actor.
//!
//! The provider listens on the address of the actor's link, turns each request into an
//! [`HttpRequest`], invokes the actor's [`OP_HANDLE_REQUEST`] operation and writes the
//! [`HttpResponse`] it answers with. An error from the actor becomes a `500` response, and
//! a timeout a `504`.

use serde::{Deserialize, Serialize};

/// The contract ID an actor's claims must grant to receive HTTP requests.
pub const CONTRACT_ID: &str = "wasmcloud:httpserver";

/// The operation an actor exports to serve HTTP: request [`HttpRequest`], response
/// [`HttpResponse`].
pub const OP_HANDLE_REQUEST: &str = "HandleRequest";

/// HTTP header fields as `(name, value)` pairs, in the order they were sent. A name may
/// repeat (such as `set-cookie`); names are matched without regard to case.
pub type Headers = Vec<(String, String)>;

/// The value of the first header named `name` (ignoring case), if any.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// An HTTP request, as the actor receives it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpRequest {
    /// The method in upper case: `GET`, `POST`, ...
    pub method: String,
    /// The path, percent-encoded as it was sent, without the query (`/items/42`).
    pub path: String,
    /// The query string without the leading `?` (`a=1&b=2`); empty when there is none.
    pub query: String,
    /// The request's header fields; names are lower case.
    pub headers: Headers,
    /// The request's body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of the first header named `name` (ignoring case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// An HTTP response: what an actor answers to [`OP_HANDLE_REQUEST`], and what an
/// outgoing request through `wasmcloud:httpclient` receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpResponse {
    /// The status code; absent means `200`.
    pub status: u16,
    /// The response's header fields.
    pub headers: Headers,
    /// The response's body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Default for HttpResponse {
    /// An empty `200 OK`.
    fn default() -> Self {
        Self::new(200)
    }
}

impl HttpResponse {
    /// An empty response with status `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A `200 OK` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200).with_body(body)
    }

    /// An empty `404 Not Found`.
    pub fn not_found() -> Self {
        Self::new(404)
    }

    /// This response with header `name: value` added after the others.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This response with its body replaced by `body`.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header named `name` (ignoring case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, contains_bin, round_trip};
    use crate::contracts::{decode, encode};

    fn request() -> HttpRequest {
        HttpRequest {
            method: "POST".to_owned(),
            path: "/items/42".to_owned(),
            query: "verbose=1".to_owned(),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-tag".to_owned(), "a".to_owned()),
                ("x-tag".to_owned(), "b".to_owned()),
            ],
            body: b"{\"n\":1}".to_vec(),
        }
    }

    #[test]
    fn request_and_response_round_trip() {
        round_trip(&request());
        round_trip(&HttpRequest::default());
        round_trip(
            &HttpResponse::ok("hello")
                .with_header("content-type", "text/plain")
                .with_header("set-cookie", "a=1")
                .with_header("set-cookie", "b=2"),
        );
        round_trip(&HttpResponse::not_found());
    }

    #[test]
    fn bodies_are_msgpack_bin() {
        let request = request();
        assert!(contains_bin(&encode(&request).unwrap(), &request.body));
        let response = HttpResponse::ok(vec![0u8, 159, 146, 150]);
        assert!(contains_bin(&encode(&response).unwrap(), &response.body));
    }

    #[test]
    fn a_response_without_status_is_200() {
        #[derive(Serialize)]
        struct BodyOnly {
            #[serde(with = "serde_bytes")]
            body: Vec<u8>,
        }
        let wire = encode(&BodyOnly {
            body: b"x".to_vec(),
        })
        .unwrap();
        let response: HttpResponse = decode(&wire).unwrap();
        assert_eq!(response, HttpResponse::ok("x"));
    }

    #[test]
    fn headers_match_without_regard_to_case() {
        let request = request();
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert_eq!(request.header("X-TAG"), Some("a"));
        assert_eq!(request.header("accept"), None);
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<HttpRequest>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<HttpResponse>(garbage).is_err(), "{garbage:?}");
        }
    }
}
