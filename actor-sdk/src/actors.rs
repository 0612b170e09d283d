//! Calls to other actors (`sigil:actor`), by public key, call alias or name, on this
//! host or anywhere on the lattice.
//!
//! ```no_run
//! # fn main() -> sigil_actor::Result<()> {
//! // Ask the actor with call alias `pricing` for a quote.
//! let quote: u64 = sigil_actor::actors::call("pricing", "quote", &("widget", 3))?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::contracts::actor::CONTRACT_ID;
use crate::host;

/// Calls `operation` on the actor `target` with a MessagePack request; decodes its
/// MessagePack response.
///
/// # Errors
/// [`Error::HostCall`](crate::Error::HostCall) when the caller's claims lack
/// `sigil:actor`, no host runs `target`, the target fails, or calls nest too deep.
pub fn call<Req, Resp>(target: &str, operation: &str, request: &Req) -> Result<Resp>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    host::call(target, CONTRACT_ID, operation, request)
}

/// Calls `operation` on the actor `target` with `payload` as is; answers its response
/// bytes.
///
/// # Errors
/// As [`call`].
pub fn call_raw(target: &str, operation: &str, payload: &[u8]) -> Result<Vec<u8>> {
    host::call_raw(target, CONTRACT_ID, operation, payload)
}
