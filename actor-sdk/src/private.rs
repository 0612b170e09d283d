//! What the `actor!` macro expands to. Not a public API: it may change in any release.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, HandlerResult, contracts};

/// The shape of a registered operation handler (waPC's handler signature).
pub type Handler = fn(&[u8]) -> HandlerResult<Vec<u8>>;

/// MessagePack nil: what a typed handler decodes from an empty payload, so handlers
/// taking `()` or an `Option` can be invoked with no payload at all.
const NIL: &[u8] = &[0xc0];

/// Runs a typed handler: decodes the request, calls `handler`, encodes its response.
pub fn typed<Req, Resp, E, F>(operation: &str, payload: &[u8], handler: F) -> HandlerResult<Vec<u8>>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(Req) -> Result<Resp, E>,
{
    let wire = if payload.is_empty() { NIL } else { payload };
    let request = contracts::decode(wire).map_err(|reason| Error::InvalidRequest {
        operation: operation.to_owned(),
        reason,
    })?;
    let response = handler(request).map_err(Into::into)?;
    let encoded = contracts::encode(&response).map_err(|reason| Error::InvalidResponse {
        operation: operation.to_owned(),
        reason,
    })?;
    Ok(encoded)
}

/// Runs a raw handler: bytes in, bytes out.
pub fn raw<R, E, F>(payload: &[u8], handler: F) -> HandlerResult<Vec<u8>>
where
    R: Into<Vec<u8>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(&[u8]) -> Result<R, E>,
{
    handler(payload).map(Into::into).map_err(Into::into)
}

/// The body of `wapc_init`: installs the panic hook, then registers every operation.
#[cfg(target_arch = "wasm32")]
pub fn init(operations: &[(&str, Handler)]) {
    crate::install_panic_hook();
    for &(operation, handler) in operations {
        wapc_guest::register_function(operation, handler);
    }
}

/// What `log!` expands to: a log line whose failure is ignored.
#[cfg(target_arch = "wasm32")]
pub fn log(level: contracts::logging::Level, args: std::fmt::Arguments<'_>) {
    let text = match args.as_str() {
        Some(text) => std::borrow::Cow::Borrowed(text),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    // A log line must never fail the invocation that writes it.
    let _ = crate::logging::write(level, &text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Greet {
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Greeting {
        message: String,
    }

    fn greet(request: Greet) -> HandlerResult<Greeting> {
        if request.name.is_empty() {
            return Err("a name is required".into());
        }
        Ok(Greeting {
            message: format!("hello {}", request.name),
        })
    }

    fn count(request: Option<u32>) -> Result<u32, Error> {
        Ok(request.unwrap_or(0) + 1)
    }

    fn echo(payload: &[u8]) -> HandlerResult<Vec<u8>> {
        Ok(payload.to_vec())
    }

    fn shout(payload: &[u8]) -> Result<String, String> {
        match std::str::from_utf8(payload) {
            Ok(text) => Ok(text.to_uppercase()),
            Err(_) => Err("not UTF-8".to_owned()),
        }
    }

    #[derive(Serialize)]
    struct GreetWire<'a> {
        name: &'a str,
    }

    #[test]
    fn typed_decodes_calls_and_encodes() {
        let payload = contracts::encode(&GreetWire { name: "ada" }).unwrap();
        let response = typed("greet", &payload, greet).unwrap();
        let greeting: Greeting = contracts::decode(&response).unwrap();
        assert_eq!(greeting.message, "hello ada");
    }

    #[test]
    fn typed_names_the_operation_when_the_request_does_not_decode() {
        let err = typed("greet", b"\xc1garbage", greet).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("invalid request for operation `greet`: "),
            "{text}"
        );
        let err = typed("greet", &contracts::encode(&42u8).unwrap(), greet).unwrap_err();
        assert!(err.to_string().contains("`greet`"), "{err}");
    }

    #[test]
    fn typed_passes_the_handler_error_through() {
        let payload = contracts::encode(&GreetWire { name: "" }).unwrap();
        let err = typed("greet", &payload, greet).unwrap_err();
        assert_eq!(err.to_string(), "a name is required");
    }

    #[test]
    fn typed_reads_an_empty_payload_as_nil() {
        let response = typed("count", &[], count).unwrap();
        assert_eq!(contracts::decode::<u32>(&response).unwrap(), 1);
        let response = typed("count", &contracts::encode(&Some(41u32)).unwrap(), count).unwrap();
        assert_eq!(contracts::decode::<u32>(&response).unwrap(), 42);
        let err = typed("greet", &[], greet).unwrap_err();
        assert!(err.to_string().contains("`greet`"), "{err}");
    }

    #[test]
    fn raw_passes_bytes_through() {
        assert_eq!(raw(b"\x00\xffabc", echo).unwrap(), b"\x00\xffabc");
        assert_eq!(raw(b"hi", shout).unwrap(), b"HI");
        assert_eq!(raw(b"\xff", shout).unwrap_err().to_string(), "not UTF-8");
    }

    #[test]
    fn the_macro_builds_a_table_of_handlers() {
        const OPERATIONS: &[(&str, Handler)] = &crate::__actor_operations!([]
            "echo" => raw echo,
            "greet" => greet,
            "count" => self::count,
        );
        let names: Vec<&str> = OPERATIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["echo", "greet", "count"]);
        assert_eq!((OPERATIONS[0].1)(b"x").unwrap(), b"x");
        let err = (OPERATIONS[1].1)(b"\xc1").unwrap_err();
        assert!(err.to_string().contains("`greet`"), "{err}");
        assert_eq!((OPERATIONS[2].1)(&[]).unwrap(), [0x01]);
    }
}
