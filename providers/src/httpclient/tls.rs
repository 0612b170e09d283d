//! TLS for outgoing connections: rustls on the `ring` crypto provider, with the operating
//! system's trust store. The provider is passed explicitly, so nothing depends on (or sets)
//! a process-wide rustls default.

use std::sync::Arc;

use rustls_platform_verifier::BuilderVerifierExt;

use crate::ProviderError;

/// A rustls client configuration that verifies servers against the platform's trust store
/// and offers HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn client_config() -> Result<rustls::ClientConfig, ProviderError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| ProviderError::Config(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A `reqwest` client builder that uses [`client_config`] for TLS.
pub(crate) fn reqwest_builder() -> Result<reqwest::ClientBuilder, ProviderError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config()?))
}
