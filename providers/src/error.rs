//! What can go wrong in a provider, worded for the actor (or operator) who reads it.

use std::time::Duration;

/// A provider's failure. Its `Display` text is what the calling actor receives as the
/// host call's error, so each variant says what happened and, where it can, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// No link of this name binds the actor to this contract.
    #[error(
        "no link `{link_name}` binds actor {actor} to {contract_id}; declare one in the host \
         configuration"
    )]
    NotLinked {
        /// The calling actor (name and key).
        actor: String,
        /// The contract it asked for.
        contract_id: String,
        /// The link name it used.
        link_name: String,
    },
    /// The provider does not implement this operation.
    #[error("{contract_id} has no operation `{operation}`")]
    UnknownOperation {
        /// The contract.
        contract_id: String,
        /// The operation asked for.
        operation: String,
    },
    /// The request payload could not be decoded, or its values are invalid.
    #[error("invalid {operation} request: {reason}")]
    InvalidRequest {
        /// The operation.
        operation: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The link's configuration forbids this (an allowlist, a path outside the root).
    #[error("denied: {0}")]
    Denied(String),
    /// The backing service failed, is unreachable or did not answer in time; the call may
    /// succeed later. The operation may or may not have been applied (a request can reach
    /// the backend and its answer be lost), and the text says so.
    #[error(
        "{contract_id} backend unavailable: {message}; the operation may or may not have \
         been applied, so retry it only if it is idempotent"
    )]
    Unavailable {
        /// The contract.
        contract_id: String,
        /// What the backend said, or why it could not be reached.
        message: String,
    },
    /// The backing service answered with an error about this request.
    #[error("{0}")]
    Failed(String),
    /// The call did not finish within its deadline; it may or may not have been applied,
    /// and the text says so.
    #[error(
        "{contract_id} call `{operation}` timed out after {elapsed:?}; it may or may not \
         have been applied, so retry it only if it is idempotent"
    )]
    Timeout {
        /// The contract.
        contract_id: String,
        /// The operation.
        operation: String,
        /// How long it ran before it was abandoned.
        elapsed: Duration,
    },
    /// A link or provider configuration value is missing or invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// An [`ProviderError::InvalidRequest`] for `operation`.
    pub fn invalid(operation: &str, reason: impl std::fmt::Display) -> Self {
        ProviderError::InvalidRequest {
            operation: operation.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An [`ProviderError::Unavailable`] for `contract_id`.
    pub fn unavailable(contract_id: &str, message: impl std::fmt::Display) -> Self {
        ProviderError::Unavailable {
            contract_id: contract_id.to_string(),
            message: message.to_string(),
        }
    }

    /// An [`ProviderError::UnknownOperation`].
    pub fn unknown_operation(contract_id: &str, operation: &str) -> Self {
        ProviderError::UnknownOperation {
            contract_id: contract_id.to_string(),
            operation: operation.to_string(),
        }
    }

    /// True for failures of the backing service (worth retrying later), as opposed to
    /// failures of the request itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable { .. } | ProviderError::Timeout { .. }
        )
    }
}
