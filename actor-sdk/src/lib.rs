//! Write Sigil actors in Rust.
//!
//! An actor is a WebAssembly module that exports operations over the waPC protocol and
//! reaches the world only through the capabilities its signed claims grant. This crate
//! gives an actor its operations ([`actor!`]), typed clients for each capability
//! (`logging`, `numbergen`, `keyvalue::KeyValue`, `messaging::Messaging`,
//! `blobstore::BlobStore`, `httpclient::HttpClient`) and the wire types shared with the
//! host and providers ([`contracts`]).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sigil_actor::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! sigil_actor::actor! {
//!     "greet" => greet,     // typed: MessagePack request -> handler -> MessagePack response
//!     "echo" => raw echo,   // raw: bytes in, bytes out
//! }
//!
//! fn greet(req: Greet) -> HandlerResult<Greeting> {
//!     Ok(Greeting { message: format!("hello {}", req.name) })
//! }
//!
//! fn echo(payload: &[u8]) -> HandlerResult<Vec<u8>> {
//!     Ok(payload.to_vec())
//! }
//! # fn main() {
//! #     let greeting = greet(Greet { name: "ada".to_owned() }).unwrap();
//! #     assert_eq!(greeting.message, "hello ada");
//! # }
//! ```
//!
//! Build the actor as a `cdylib` for `wasm32-unknown-unknown`, then sign it. The guest
//! runtime is [`wapc-guest`](https://docs.rs/wapc-guest), so an actor built with this
//! crate also runs on any other waPC host.
//!
//! # Targets
//! [`contracts`], [`Error`] and [`HandlerResult`] compile everywhere: the host and the
//! providers use them. Everything that talks to a host (the capability clients,
//! `host_call`, the panic hook) exists only when compiling for `wasm32`; elsewhere
//! [`actor!`] still type-checks every handler, so an actor's logic can be unit-tested
//! natively. Run `cargo doc --target wasm32-unknown-unknown` to read the guest API.
//!
//! # Links
//! Every capability client calls through a link name (the waPC `binding`), `default`
//! unless the client was made with `link("name")`. The operator binds each of the actor's
//! link names to a provider and its configuration.
//!
//! # Errors and panics
//! A handler's error becomes the invocation's error, as text. A request that does not
//! decode is refused with `invalid request for operation `op`: ...` before the handler
//! runs. A panic is reported to the host as `panicked at file:line: message`, then the
//! guest traps; the host reports it as `actor panicked: ...`.
//!
//! # Deriving serde traits
//! The derive macros in [`prelude`] expand to code that names the `serde` crate, so add
//! `serde` to the actor's dependencies (or put `#[serde(crate = "sigil_actor::serde")]`
//! on each type).

pub mod contracts;
mod error;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

#[cfg(target_arch = "wasm32")]
pub mod actors;
#[cfg(target_arch = "wasm32")]
pub mod blobstore;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
pub mod httpclient;
#[cfg(target_arch = "wasm32")]
pub mod keyvalue;
#[cfg(target_arch = "wasm32")]
pub mod logging;
#[cfg(target_arch = "wasm32")]
pub mod messaging;
#[cfg(target_arch = "wasm32")]
pub mod numbergen;

pub use error::{Error, Result};
#[cfg(target_arch = "wasm32")]
pub use host::{DEFAULT_LINK, call, install_panic_hook};
pub use serde;
#[cfg(target_arch = "wasm32")]
pub use wapc_guest::{console_log, host_call, register_function};

/// What an operation handler returns; any error type converts into its error with `?`.
///
/// The same type as `wapc_guest::HandlerResult`.
pub type HandlerResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Everything an actor usually needs, for `use sigil_actor::prelude::*`.
pub mod prelude {
    pub use crate::HandlerResult;
    pub use crate::actor;
    pub use crate::contracts::httpserver::{HttpRequest, HttpResponse};
    pub use crate::contracts::messaging::Message;
    pub use serde::{Deserialize, Serialize};

    #[cfg(target_arch = "wasm32")]
    pub use crate::{
        blobstore::BlobStore, host_call, httpclient::HttpClient, keyvalue::KeyValue, logging,
        messaging::Messaging, numbergen,
    };
}

/// Declares an actor's operations and exports the waPC entry point that registers them.
///
/// Each entry maps an operation name to a handler function:
/// - `"op" => handler`: `handler` takes any `T: Deserialize` and returns
///   `Result<U, E>` with `U: Serialize` (usually [`HandlerResult<U>`]). The request is
///   decoded from MessagePack (an empty payload reads as nil, so `()` and `Option<T>`
///   handlers can be invoked with nothing) and the response encoded to MessagePack.
/// - `"op" => raw handler`: `handler` takes `&[u8]` and returns `Result<B, E>` with
///   `B: Into<Vec<u8>>` (`Vec<u8>`, `String`, ...); the bytes pass through unchanged.
///
/// In both cases `E` is any error convertible into `Box<dyn Error + Send + Sync>`, and
/// its text becomes the invocation's error.
///
/// On `wasm32` the macro defines `wapc_init`, which installs the SDK's panic hook (see
/// `install_panic_hook`) and registers every operation with the guest runtime. Use it
/// once per actor crate.
///
/// ```
/// # use sigil_actor::HandlerResult;
/// sigil_actor::actor! {
///     "add" => add,
///     "reverse" => raw reverse,
/// }
///
/// fn add((a, b): (i64, i64)) -> HandlerResult<i64> {
///     a.checked_add(b).ok_or_else(|| "overflow".into())
/// }
///
/// fn reverse(payload: &[u8]) -> HandlerResult<Vec<u8>> {
///     Ok(payload.iter().rev().copied().collect())
/// }
/// # fn main() { assert_eq!(add((2, 3)).unwrap(), 5); }
/// ```
#[macro_export]
macro_rules! actor {
    ($($operations:tt)*) => {
        #[doc(hidden)]
        #[allow(dead_code)]
        const __SIGIL_ACTOR_OPERATIONS: &[(&str, $crate::__private::Handler)] =
            &$crate::__actor_operations!([] $($operations)*);

        /// The waPC entry point: registers this actor's operations with the guest runtime.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn wapc_init() {
            $crate::__private::init(__SIGIL_ACTOR_OPERATIONS);
        }
    };
}

/// Builds the `actor!` table: `[(name, handler), ...]`, one entry at a time.
#[doc(hidden)]
#[macro_export]
macro_rules! __actor_operations {
    ([$($done:tt)*]) => {
        [$($done)*]
    };
    ([$($done:tt)*] $op:literal => raw $handler:path $(, $($rest:tt)*)?) => {
        $crate::__actor_operations!(
            [
                $($done)*
                (
                    $op,
                    (|payload: &[u8]| $crate::__private::raw(payload, $handler))
                        as $crate::__private::Handler,
                ),
            ]
            $($($rest)*)?
        )
    };
    ([$($done:tt)*] $op:literal => $handler:path $(, $($rest:tt)*)?) => {
        $crate::__actor_operations!(
            [
                $($done)*
                (
                    $op,
                    (|payload: &[u8]| $crate::__private::typed($op, payload, $handler))
                        as $crate::__private::Handler,
                ),
            ]
            $($($rest)*)?
        )
    };
}

/// Writes a formatted log line through the host; a failure to log is ignored.
///
/// The first argument is the level: `trace`, `debug`, `info`, `warn` or `error`. Use the
/// functions in `logging` to see whether the line was written.
///
/// ```ignore
/// sigil_actor::log!(info, "rendered {} bytes for {}", html.len(), path);
/// ```
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! log {
    (trace, $($arg:tt)+) => {
        $crate::__private::log($crate::logging::Level::Trace, ::std::format_args!($($arg)+))
    };
    (debug, $($arg:tt)+) => {
        $crate::__private::log($crate::logging::Level::Debug, ::std::format_args!($($arg)+))
    };
    (info, $($arg:tt)+) => {
        $crate::__private::log($crate::logging::Level::Info, ::std::format_args!($($arg)+))
    };
    (warn, $($arg:tt)+) => {
        $crate::__private::log($crate::logging::Level::Warn, ::std::format_args!($($arg)+))
    };
    (error, $($arg:tt)+) => {
        $crate::__private::log($crate::logging::Level::Error, ::std::format_args!($($arg)+))
    };
}
