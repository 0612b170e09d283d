//! The SDK's error type.

use crate::contracts::CodecError;

/// What can go wrong between an actor, the SDK and the host.
///
/// Every variant names the operation (and for host calls the contract and link) it is
/// about, and its message says so: the waPC protocol carries errors as text, so the text
/// is what the caller sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request payload did not decode as the type the operation's handler takes.
    #[error("invalid request for operation `{operation}`: {reason}")]
    InvalidRequest {
        /// The operation invoked.
        operation: String,
        /// Why the payload did not decode.
        reason: CodecError,
    },
    /// A handler's response could not be encoded.
    #[error("cannot encode the response of operation `{operation}`: {reason}")]
    InvalidResponse {
        /// The operation invoked.
        operation: String,
        /// Why the response did not encode.
        reason: CodecError,
    },
    /// A host call's request could not be encoded.
    #[error("cannot encode the request for {contract_id} `{operation}`: {reason}")]
    EncodeRequest {
        /// The contract called.
        contract_id: String,
        /// The operation called.
        operation: String,
        /// Why the request did not encode.
        reason: CodecError,
    },
    /// The host answered a host call with an error: the capability is not granted, no
    /// link is defined, or the provider failed.
    #[error("{contract_id} `{operation}` on link `{link}` failed: {message}")]
    HostCall {
        /// The link name (the waPC binding) the call went through.
        link: String,
        /// The contract called.
        contract_id: String,
        /// The operation called.
        operation: String,
        /// The host's error text.
        message: String,
    },
    /// The host answered a host call with something its contract does not allow.
    #[error("unexpected response from {contract_id} `{operation}`: {reason}")]
    UnexpectedResponse {
        /// The contract called.
        contract_id: String,
        /// The operation called.
        operation: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A value read as text is not UTF-8.
    #[error("the value of key `{key}` is not valid UTF-8")]
    NotUtf8 {
        /// The key that was read.
        key: String,
    },
}

/// A `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
