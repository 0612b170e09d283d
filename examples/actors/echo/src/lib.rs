//! The smallest Sigil actor: `echo` returns its payload, `greet` says hello by name.
//!
//! ```text
//! sigil call echo echo 'any bytes'
//! sigil call echo greet '{"name": "ada"}'   # MessagePack {name} -> {message}
//! ```

use serde::{Deserialize, Serialize};
use sigil_actor::prelude::*;

sigil_actor::actor! {
    "echo" => raw echo,
    "greet" => greet,
}

/// The request of `greet`.
#[derive(Debug, Deserialize)]
struct Greet {
    /// Who to greet.
    name: String,
}

/// The response of `greet`.
#[derive(Debug, Serialize)]
struct Greeting {
    /// The greeting.
    message: String,
}

/// Returns the payload unchanged.
fn echo(payload: &[u8]) -> HandlerResult<Vec<u8>> {
    Ok(payload.to_vec())
}

/// Greets `name`.
fn greet(request: Greet) -> HandlerResult<Greeting> {
    Ok(Greeting {
        message: format!("hello {}", request.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_the_payload() {
        assert_eq!(echo(b"\x00abc").unwrap(), b"\x00abc");
    }

    #[test]
    fn greet_says_hello() {
        let greeting = greet(Greet {
            name: "ada".to_owned(),
        })
        .unwrap();
        assert_eq!(greeting.message, "hello ada");
    }
}
