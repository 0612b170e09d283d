//! An HTTP counter behind the HTTP server provider, counting in key-value storage.
//!
//! ```text
//! curl -X POST http://127.0.0.1:8080/visits   # {"counter":"visits","count":1}
//! curl http://127.0.0.1:8080/visits           # {"counter":"visits","count":1} (read only)
//! curl -X DELETE http://127.0.0.1:8080/visits # {"counter":"visits","count":0}
//! ```
//!
//! `POST` (or `PUT`) increments, `GET` reads, `DELETE` resets; the path names the counter
//! (`/` is `hits`). The actor holds no socket and no connection: the HTTP server provider
//! hands it each request, and the key-value provider keeps its keys apart from every other
//! actor's.

use sigil_actor::prelude::*;

sigil_actor::actor! {
    "HandleRequest" => handle_request,
}

/// Answers one HTTP request.
fn handle_request(request: HttpRequest) -> HandlerResult<HttpResponse> {
    let Some(name) = counter_name(&request.path) else {
        return Ok(json(
            400,
            "{\"error\":\"a counter name is 1 to 64 of a-z, 0-9, - and _\"}".to_string(),
        ));
    };
    let count = match request.method.as_str() {
        "POST" | "PUT" => store::increment(name)?,
        "GET" | "HEAD" => store::read(name)?,
        "DELETE" => {
            store::reset(name)?;
            0
        }
        _ => {
            return Ok(
                json(405, "{\"error\":\"use GET, POST or DELETE\"}".to_string())
                    .with_header("allow", "GET, POST, PUT, DELETE"),
            );
        }
    };
    Ok(json(
        200,
        format!("{{\"counter\":\"{name}\",\"count\":{count}}}"),
    ))
}

/// The counter a path names: `/` is `hits`; otherwise one safe segment.
fn counter_name(path: &str) -> Option<&str> {
    let name = path.trim_matches('/');
    if name.is_empty() {
        return Some("hits");
    }
    let valid = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    valid.then_some(name)
}

fn json(status: u16, body: String) -> HttpResponse {
    HttpResponse::new(status)
        .with_header("content-type", "application/json")
        .with_body(body)
}

#[cfg(target_arch = "wasm32")]
mod store {
    use sigil_actor::HandlerResult;
    use sigil_actor::prelude::KeyValue;

    fn key(name: &str) -> String {
        format!("counter:{name}")
    }

    pub(crate) fn increment(name: &str) -> HandlerResult<i64> {
        Ok(KeyValue::new().increment(&key(name), 1)?)
    }

    pub(crate) fn read(name: &str) -> HandlerResult<i64> {
        let value = KeyValue::new().get_string(&key(name))?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub(crate) fn reset(name: &str) -> HandlerResult<()> {
        KeyValue::new().delete(&key(name))?;
        Ok(())
    }
}

/// Off wasm32 there is no host: the logic above is unit-tested against this stand-in.
#[cfg(not(target_arch = "wasm32"))]
mod store {
    use sigil_actor::HandlerResult;

    pub(crate) fn increment(_: &str) -> HandlerResult<i64> {
        Ok(1)
    }

    pub(crate) fn read(_: &str) -> HandlerResult<i64> {
        Ok(0)
    }

    pub(crate) fn reset(_: &str) -> HandlerResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(counter_name("/"), Some("hits"));
        assert_eq!(counter_name("/visits"), Some("visits"));
        assert_eq!(counter_name("/a/b"), None);
        assert_eq!(counter_name("/Visits"), None);
        assert_eq!(counter_name("/../x"), None);
    }

    #[test]
    fn answers() {
        let mut request = HttpRequest {
            method: "POST".into(),
            path: "/visits".into(),
            ..HttpRequest::default()
        };
        let response = handle_request(request.clone()).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, br#"{"counter":"visits","count":1}"#);
        request.method = "PATCH".into();
        assert_eq!(handle_request(request).unwrap().status, 405);
    }
}
