//! A waPC actor that knows nothing of Sigil: it uses only the public `wapc-guest` crate,
//! so it shows that an actor written for any waPC host runs on Sigil unchanged.
//!
//! - `echo`: returns its payload.
//! - `call`: takes a MessagePack map `{binding, namespace, operation, payload (bin)}`,
//!   makes that host call, and returns the host's response bytes; the host's error
//!   becomes this operation's error.

use serde::Deserialize;
use wapc_guest::prelude::*;

/// Registers the operations.
#[unsafe(no_mangle)]
pub fn wapc_init() {
    register_function("echo", echo);
    register_function("call", call);
}

fn echo(payload: &[u8]) -> CallResult {
    Ok(payload.to_vec())
}

/// The request of `call`: one host call to make.
#[derive(Debug, Deserialize)]
struct HostCall {
    binding: String,
    namespace: String,
    operation: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

fn call(payload: &[u8]) -> CallResult {
    let request: HostCall = rmp_serde::from_slice(payload)
        .map_err(|error| format!("invalid request for operation `call`: {error}"))?;
    host_call(
        &request.binding,
        &request.namespace,
        &request.operation,
        &request.payload,
    )
}
