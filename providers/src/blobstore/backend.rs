//! The two backends behind one [`ObjectStore`]: S3 (any S3-compatible server) and a local
//! directory, and how their failures read to an actor.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::client::{ClientOptions, HttpConnector, HttpErrorKind};
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use sigil_actor::contracts::blobstore::CONTRACT_ID;

use crate::httpclient::{error_chain, tls};
use crate::{LinkConfig, ProviderError};

/// The provider configuration keys both backends read.
pub(crate) const COMMON_KEYS: &[&str] = &["upload_timeout"];

/// An object store and what the provider needs to know about it.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The store; paths are relative to the bucket or directory.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `s3` or `fs`.
    pub(crate) kind: &'static str,
    /// Where the objects live, for messages (`S3 bucket b at http://...`).
    pub(crate) location: String,
    /// Whether listings come in name order (S3 does; directory walks do not).
    pub(crate) sorted_listing: bool,
    /// Whether the store keeps an object's media type.
    pub(crate) keeps_content_type: bool,
}

/// How S3 requests are sent: our own `reqwest` client (TLS on `ring`), with the timeouts
/// and HTTP policy of the provider's configuration.
#[derive(Debug)]
struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

impl Backend {
    /// An S3 backend configured by `config` (see the module documentation for the keys).
    pub(crate) fn s3(config: &LinkConfig) -> Result<Self, ProviderError> {
        let mut known = vec![
            "endpoint",
            "region",
            "bucket",
            "access_key_id",
            "secret_access_key",
            "path_style",
            "allow_http",
            "connect_timeout",
            "request_timeout",
        ];
        known.extend_from_slice(COMMON_KEYS);
        config.only(&known)?;
        let bucket = config.require("bucket")?;
        let region = config.get("region").unwrap_or("us-east-1");
        let endpoint = config.get("endpoint");
        if let Some(endpoint) = endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ProviderError::Config(format!(
                "`endpoint` = {endpoint:?} must be an http:// or https:// URL"
            )));
        }
        let plain_http = endpoint.is_some_and(|e| e.starts_with("http://"));
        let allow_http = config.flag("allow_http", plain_http)?;
        if plain_http && !allow_http {
            return Err(ProviderError::Config(format!(
                "`endpoint` {:?} is plain HTTP but `allow_http` is false",
                endpoint.unwrap_or_default()
            )));
        }
        let path_style = config.flag("path_style", true)?;
        let connect_timeout = config.duration("connect_timeout", Duration::from_secs(2))?;
        let request_timeout = config.duration("request_timeout", Duration::from_secs(30))?;
        let client = tls::reqwest_builder()?
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .https_only(!allow_http)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .user_agent(format!("sigil-blobstore/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build the S3 client: {e}")))?;
        // Few, quick retries: a server that is down must fail the call promptly.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_virtual_hosted_style_request(!path_style)
            .with_allow_http(allow_http)
            .with_retry(retry)
            .with_http_connector(Connector(client));
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (config.get("access_key_id"), config.get("secret_access_key")) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
            (None, None) => builder = builder.with_skip_signature(true),
            _ => {
                return Err(ProviderError::Config(
                    "set both `access_key_id` and `secret_access_key`, or neither (unsigned \
                     requests)"
                        .to_string(),
                ));
            }
        }
        let store = builder
            .build()
            .map_err(|e| ProviderError::Config(format!("S3: {e}")))?;
        Ok(Backend {
            store: Arc::new(store),
            kind: "s3",
            location: format!(
                "S3 bucket `{bucket}` at {}",
                endpoint.unwrap_or("the AWS endpoint")
            ),
            sorted_listing: true,
            keeps_content_type: true,
        })
    }

    /// A local directory backend configured by `config` (key `root`).
    pub(crate) fn fs(config: &LinkConfig) -> Result<Self, ProviderError> {
        let mut known = vec!["root"];
        known.extend_from_slice(COMMON_KEYS);
        config.only(&known)?;
        let root = config.require("root")?;
        std::fs::create_dir_all(root).map_err(|e| {
            ProviderError::Config(format!("`root`: cannot create directory {root:?}: {e}"))
        })?;
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| ProviderError::Config(format!("`root` {root:?}: {e}")))?;
        Ok(Backend {
            store: Arc::new(store),
            kind: "fs",
            location: format!("directory {root:?}"),
            sorted_listing: false,
            keeps_content_type: false,
        })
    }

    /// An actor-facing error for a failure of the store during `what`.
    pub(crate) fn error(&self, what: &str, error: &object_store::Error) -> ProviderError {
        if is_unreachable(error) {
            return ProviderError::unavailable(
                CONTRACT_ID,
                format!(
                    "{} is unreachable ({what}): {}",
                    self.location,
                    error_chain(error)
                ),
            );
        }
        match error {
            object_store::Error::InvalidPath { .. } => ProviderError::Denied(format!(
                "{what}: the {} backend cannot store this name: {}",
                self.kind,
                error_chain(error)
            )),
            _ => ProviderError::Failed(format!(
                "{what} failed in {}: {}",
                self.location,
                error_chain(error)
            )),
        }
    }
}

/// True when `error` says the server could not be reached or did not answer in time: the
/// call may succeed later.
fn is_unreachable(error: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>()
            && matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            )
        {
            return true;
        }
        if let Some(http) = e.downcast_ref::<reqwest::Error>()
            && (http.is_connect() || http.is_timeout())
        {
            return true;
        }
        next = e.source();
    }
    false
}
