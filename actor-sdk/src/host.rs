//! Calls from the actor to its host, on top of the waPC guest runtime.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, contracts};

/// The link name a capability client uses unless told otherwise.
pub const DEFAULT_LINK: &str = "default";

/// Calls `operation` of `contract_id` through link `link`, with a MessagePack request and
/// response: the typed form of [`host_call`](crate::host_call), for any contract.
///
/// # Errors
/// [`Error::EncodeRequest`] when `request` does not encode, [`Error::HostCall`] when the
/// host refuses or the provider fails, [`Error::UnexpectedResponse`] when the response is
/// not a `Resp`.
pub fn call<Req, Resp>(
    link: &str,
    contract_id: &str,
    operation: &str,
    request: &Req,
) -> Result<Resp>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let payload = encode_request(contract_id, operation, request)?;
    let response = call_raw(link, contract_id, operation, &payload)?;
    decode_response(contract_id, operation, &response)
}

/// Like [`call`], for operations that answer with an empty payload.
pub(crate) fn call_unit<Req>(
    link: &str,
    contract_id: &str,
    operation: &str,
    request: &Req,
) -> Result<()>
where
    Req: Serialize + ?Sized,
{
    let payload = encode_request(contract_id, operation, request)?;
    // The contract says the response is empty; whatever a provider sends is not ours to use.
    call_raw(link, contract_id, operation, &payload).map(drop)
}

/// Sends a payload to the host as is and returns its response payload.
pub(crate) fn call_raw(
    link: &str,
    contract_id: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>> {
    wapc_guest::host_call(link, contract_id, operation, payload).map_err(|error| {
        // wapc-guest renders the host's error text behind a fixed prefix.
        let text = error.to_string();
        let message = match text.strip_prefix("Host error: ") {
            Some(message) => message.to_owned(),
            None => text,
        };
        Error::HostCall {
            link: link.to_owned(),
            contract_id: contract_id.to_owned(),
            operation: operation.to_owned(),
            message,
        }
    })
}

fn encode_request<Req: Serialize + ?Sized>(
    contract_id: &str,
    operation: &str,
    request: &Req,
) -> Result<Vec<u8>> {
    contracts::encode(request).map_err(|reason| Error::EncodeRequest {
        contract_id: contract_id.to_owned(),
        operation: operation.to_owned(),
        reason,
    })
}

/// Decodes a host call's response as the contract's response type.
pub(crate) fn decode_response<Resp: DeserializeOwned>(
    contract_id: &str,
    operation: &str,
    response: &[u8],
) -> Result<Resp> {
    contracts::decode(response).map_err(|reason| Error::UnexpectedResponse {
        contract_id: contract_id.to_owned(),
        operation: operation.to_owned(),
        reason: reason.to_string(),
    })
}

/// Reports panics to the host: the hook sends `panicked at <file>:<line>: <message>` as
/// the invocation's guest error, then the panic aborts, which traps the guest.
///
/// [`actor!`](crate::actor) installs it; an actor that registers its own handlers with
/// [`register_function`](crate::register_function) calls this from its `wapc_init`.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload_as_str()
            .unwrap_or("a panic payload that is not text");
        let text = match info.location() {
            Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
            None => format!("panicked: {message}"),
        };
        guest_error(&text);
    }));
}

/// Sets the current invocation's error (the waPC `__guest_error` import).
fn guest_error(message: &str) {
    // SAFETY: the host copies `len` bytes from `ptr` before returning; `message` outlives
    // the call. The declaration matches the one in wapc-guest.
    #[allow(unsafe_code)]
    unsafe {
        ffi::__guest_error(message.as_ptr(), message.len());
    }
}

#[allow(unsafe_code)]
mod ffi {
    #[link(wasm_import_module = "wapc")]
    unsafe extern "C" {
        /// Hands the host the current invocation's error text.
        pub(super) fn __guest_error(ptr: *const u8, len: usize);
    }
}
