//! Modules from OCI registries: `oci://` references, credentials, pulling into a
//! content-addressed cache, and pushing.
//!
//! The registry is never trusted: every blob is checked against its digest before it is
//! used, and a pulled module is loaded exactly like a file, so its signed claims decide
//! whether it runs. The protocol itself (the distribution API, the `WWW-Authenticate`
//! token dance) is `oci-client`'s, the maintained successor of the `oci-distribution` crate
//! that wasmCloud and Krustlet used; what is here is the layout, the trust and the cache.

mod auth;
mod cache;
mod reference;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
};
use oci_client::secrets::RegistryAuth;

pub use auth::RegistrySettings;
pub use cache::{BlobCache, sha256_digest};
pub use reference::{ModuleRef, SCHEME};

/// The layer media type Sigil pushes: the waPC-era wasmCloud actor layout.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The config media type Sigil pushes (wasmCloud's actor archive config).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasmcloud.actor.archive.config";
/// Layer media types accepted on pull: Sigil's and wasmCloud's, `wasm-to-oci`'s, and the
/// plain OCI layer type that the Argo Wasm executor plugin also accepts (a raw module
/// pushed by `oras push` without a media type).
pub const ACCEPTED_LAYER_TYPES: &[&str] = &[
    LAYER_MEDIA_TYPE,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.oci.image.layer.v1.tar",
];
/// The default largest module a host pulls, in bytes.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;

/// Annotation keys Sigil writes on the manifest (besides the OCI standard title, version
/// and creation time).
pub mod annotations {
    /// The module's public key (claims `sub`).
    pub const SUBJECT: &str = "dev.sigil.module.subject";
    /// The signing account (claims `iss`).
    pub const ISSUER: &str = "dev.sigil.module.issuer";
    /// The module's revision (claims `rev`).
    pub const REVISION: &str = "dev.sigil.module.rev";
    /// The module's name (claims `name`).
    pub const NAME: &str = "dev.sigil.module.name";
    /// The module's version (claims `ver`).
    pub const VERSION: &str = "dev.sigil.module.ver";
}

/// Why a module could not be pulled or pushed. Each names the reference (or the registry)
/// and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The reference cannot be parsed.
    #[error("{reference:?} is not a module reference: {reason}")]
    Reference {
        /// As written.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A floating tag without permission.
    #[error(
        "{reference} names {what}, which changes whenever someone pushes; pin a version tag or \
         a digest (@sha256:...), or allow it with allow_latest = true (host.toml) or \
         --allow-latest"
    )]
    Latest {
        /// The reference.
        reference: String,
        /// `the tag latest` or `no tag`.
        what: String,
    },
    /// Credentials could not be read.
    #[error("credentials for registry {registry}: {reason}")]
    Credentials {
        /// The registry host.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry did not answer (down, wrong address, TLS failure).
    #[error("{reference}: registry {registry} cannot be reached: {reason}. {hint}")]
    Unreachable {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The transport's error.
        reason: String,
        /// What to check.
        hint: String,
    },
    /// The registry refused the credentials, or wants some.
    #[error(
        "{reference}: registry {registry} refused access with credentials from {source_}; {hint}"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// Where the credentials came from.
        source_: String,
        /// What to do.
        hint: String,
    },
    /// No such repository.
    #[error(
        "{reference}: registry {registry} has no repository {repository}; check the name, or \
         push the module first (sigil push FILE {reference})"
    )]
    UnknownRepository {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
    },
    /// No such tag or digest in the repository.
    #[error(
        "{reference}: repository {repository} has no {what}; check it, or push the module first \
         (sigil push FILE {reference})"
    )]
    UnknownManifest {
        /// The reference.
        reference: String,
        /// The repository.
        repository: String,
        /// `tag X` or `manifest sha256:...`.
        what: String,
    },
    /// Bytes that do not hash to the digest they were asked for.
    #[error(
        "{reference}: the registry sent a {what} whose SHA-256 is {actual}, not its digest \
         {expected}; refused (the registry or something between is corrupting or altering \
         content)"
    )]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// `manifest` or `module layer`.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A manifest that holds no module.
    #[error("{reference}: {reason}")]
    NotAModule {
        /// The reference.
        reference: String,
        /// What the manifest holds instead.
        reason: String,
    },
    /// A module over the size limit.
    #[error(
        "{reference}: the module is {size} bytes, over this host's limit of {limit} bytes; \
         raise max_module_size if it is expected"
    )]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The module is not signed, or its claims do not verify (on push).
    #[error("{file}: refused to push: {reason}; sign it first (sigil-claims sign, or sigil build)")]
    Unsigned {
        /// The file pushed.
        file: String,
        /// Why its claims fail.
        reason: String,
    },
    /// The registry answered with an error not covered above.
    #[error("{reference}: registry {registry}: {reason}")]
    Registry {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// Its answer.
        reason: String,
    },
    /// The cache directory or a CA file cannot be used.
    #[error("{0}")]
    Local(String),
}

impl RegistryError {
    /// Whether the module itself was refused (its bytes, size or signature), rather than
    /// the registry being unreachable or the request being wrong.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RegistryError::DigestMismatch { .. }
                | RegistryError::NotAModule { .. }
                | RegistryError::TooLarge { .. }
                | RegistryError::Unsigned { .. }
        )
    }
}

/// How this process reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Per-registry settings (`[[registries]]`).
    pub registries: Vec<RegistrySettings>,
    /// Further hosts reached over plain HTTP (`SIGIL_REGISTRY_INSECURE`,
    /// `--insecure-registry`).
    pub insecure: Vec<String>,
    /// Run references with the tag `latest` or none.
    pub allow_latest: bool,
    /// The on-disk cache of pulled modules (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// The largest module pulled, in bytes.
    pub max_module_size: u64,
    /// The Docker `config.json` to read credentials from.
    pub docker_config: Option<PathBuf>,
    /// How long to wait for a registry to accept a connection.
    pub connect_timeout: Duration,
    /// How long to wait between reads from a registry.
    pub read_timeout: Duration,
    /// How long a tag's resolution (and its module) is reused without asking the registry
    /// again, for the many requests that name one tag (Argo templates); zero asks every
    /// time. A command that starts a module on many hosts pins the digest instead.
    pub tag_ttl: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            registries: Vec::new(),
            insecure: Vec::new(),
            allow_latest: false,
            cache_dir: None,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            docker_config: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            tag_ttl: Duration::from_secs(30),
        }
    }
}

impl RegistryOptions {
    /// Adds what the environment says: `SIGIL_REGISTRY_INSECURE` (comma-separated hosts),
    /// `SIGIL_REGISTRY_CA_FILE` (for the registry named by `SIGIL_REGISTRY`), and the
    /// Docker configuration (`$DOCKER_CONFIG`, else `~/.docker`).
    pub fn with_env(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok();
        if let Some(list) = var("SIGIL_REGISTRY_INSECURE") {
            self.insecure.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            );
        }
        if let (Some(host), Some(ca)) = (
            var("SIGIL_REGISTRY").filter(|v| !v.is_empty()),
            var("SIGIL_REGISTRY_CA_FILE").filter(|v| !v.is_empty()),
        ) {
            match self.registries.iter_mut().find(|r| r.host == host) {
                Some(r) if r.ca_file.is_none() => r.ca_file = Some(ca.into()),
                Some(_) => {}
                None => self.registries.push(RegistrySettings {
                    host,
                    ca_file: Some(ca.into()),
                    ..Default::default()
                }),
            }
        }
        if self.docker_config.is_none() {
            self.docker_config = auth::docker_config_path(var);
        }
        self
    }

    fn settings(&self, host: &str) -> Option<&RegistrySettings> {
        self.registries.iter().find(|r| r.host == host)
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.settings(host).is_some_and(|r| r.insecure) || self.insecure.iter().any(|h| h == host)
    }

    /// Whether `host` is one this process was configured for (listed in `[[registries]]`
    /// or as insecure): what a request from the network may make a host pull from.
    pub fn knows(&self, host: &str) -> bool {
        self.settings(host).is_some() || self.insecure.iter().any(|h| h == host)
    }
}

/// A module pulled from a registry (or from the cache).
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference as asked.
    pub reference: ModuleRef,
    /// The reference pinned to the manifest's digest: what runs.
    pub pinned: ModuleRef,
    /// The manifest's digest.
    pub digest: String,
    /// The module's bytes (its SHA-256 checked against the layer's digest).
    pub module: Arc<[u8]>,
    /// Whether it came from the on-disk cache without asking the registry.
    pub from_cache: bool,
}

/// What a push left in the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: String,
    /// The reference pinned to that digest.
    pub pinned: ModuleRef,
    /// The module layer's digest.
    pub layer_digest: String,
}

/// The manifest media types asked for: OCI and Docker v2 schema 2 image manifests, and
/// the index types (so that an index is reported as one, not as a missing tag).
const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

type PullFuture = Shared<BoxFuture<'static, Result<Pulled, RegistryError>>>;

/// Pulls and pushes modules; one per process, shared.
pub struct Registry {
    options: RegistryOptions,
    cache: Option<BlobCache>,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
    inflight: Mutex<HashMap<ModuleRef, PullFuture>>,
    /// Recent pulls by tag, reused for `tag_ttl`.
    recent: Mutex<HashMap<ModuleRef, (std::time::Instant, Pulled)>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The parts of a manifest Sigil reads (image manifests of OCI and Docker v2 schema 2 have
/// the same shape; an index has `manifests` instead of `layers`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    #[serde(default)]
    manifests: Option<Vec<serde_json::Value>>,
}

impl Registry {
    /// A registry client with these options; opens the cache directory.
    pub fn new(options: RegistryOptions) -> Result<Arc<Self>, RegistryError> {
        let cache = match &options.cache_dir {
            Some(dir) => Some(BlobCache::open(dir).map_err(|e| {
                RegistryError::Local(format!(
                    "cannot use {} as the module cache: {e}",
                    dir.display()
                ))
            })?),
            None => None,
        };
        Ok(Arc::new(Registry {
            options,
            cache,
            clients: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }))
    }

    /// The options this client was made with.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// Refuses a floating reference (tag `latest` or none) unless allowed.
    pub fn check_pinning(&self, reference: &ModuleRef) -> Result<(), RegistryError> {
        if reference.floats() && !self.options.allow_latest {
            return Err(RegistryError::Latest {
                reference: reference.to_string(),
                what: match reference.tag() {
                    Some(_) => "the tag latest".into(),
                    None => "no tag".into(),
                },
            });
        }
        Ok(())
    }

    fn client(&self, host: &str) -> Result<Arc<oci_client::Client>, RegistryError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        // oci-client builds its own reqwest client, which takes rustls's process-wide
        // provider: ring, as everywhere else in Sigil.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = self.options.settings(host).and_then(|r| r.ca_file.as_ref()) {
            let data = std::fs::read(ca).map_err(|e| {
                RegistryError::Local(format!(
                    "registry {host}: cannot read its ca_file {}: {e}",
                    ca.display()
                ))
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if self.options.is_insecure(host) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            platform_resolver: None,
            connect_timeout: Some(self.options.connect_timeout),
            read_timeout: Some(self.options.read_timeout),
            user_agent: concat!("sigil/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Arc::new(oci_client::Client::try_from(config).map_err(|e| {
            RegistryError::Local(format!("registry {host}: cannot make a client: {e}"))
        })?);
        clients.insert(host.to_string(), client.clone());
        Ok(client)
    }

    fn credentials(&self, host: &str) -> Result<auth::Credentials, RegistryError> {
        auth::resolve(
            host,
            self.options.settings(host),
            self.options.docker_config.as_deref(),
            |k| std::env::var(k).ok(),
        )
    }

    /// Pulls the module `reference` names: resolves a tag to its manifest digest once, reads
    /// the module from the cache when the digest is there, and checks every byte against its
    /// digest. Concurrent pulls of one reference share one transfer. The module's claims
    /// are not checked here: load it as any module, and its claims decide.
    pub async fn pull(self: &Arc<Self>, reference: &ModuleRef) -> Result<Pulled, RegistryError> {
        self.check_pinning(reference)?;
        let ttl = self.options.tag_ttl;
        let by_tag = reference.digest().is_none() && !ttl.is_zero();
        if by_tag
            && let Some((at, p)) = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(reference)
            && at.elapsed() < ttl
        {
            let mut p = p.clone();
            p.from_cache = true;
            return Ok(p);
        }
        let pulled = self.pull_shared(reference).await?;
        if by_tag {
            let mut recent = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.retain(|_, (at, _)| at.elapsed() < ttl);
            if recent.len() < 256 {
                recent.insert(
                    reference.clone(),
                    (std::time::Instant::now(), pulled.clone()),
                );
            }
        }
        Ok(pulled)
    }

    /// One transfer for concurrent pulls of a reference.
    async fn pull_shared(self: &Arc<Self>, reference: &ModuleRef) -> Result<Pulled, RegistryError> {
        let shared = {
            let mut inflight = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(f) = inflight.get(reference) {
                f.clone()
            } else {
                let this = self.clone();
                let r = reference.clone();
                let f = async move {
                    let out = this.pull_once(&r).await;
                    this.inflight
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&r);
                    out
                }
                .boxed()
                .shared();
                inflight.insert(reference.clone(), f.clone());
                f
            }
        };
        shared.await
    }

    /// Resolves a tag to the digest of its manifest (checking that the manifest holds a
    /// module), without pulling the module: what a command that many hosts will pull sends
    /// them, so that all run the same bytes. A reference with a digest is returned as is.
    pub async fn resolve(&self, reference: &ModuleRef) -> Result<ModuleRef, RegistryError> {
        self.check_pinning(reference)?;
        if reference.digest().is_some() {
            return Ok(reference.clone());
        }
        let host = reference.registry();
        let client = self.client(host)?;
        let creds = self.credentials(host)?;
        let (body, _) = match client
            .pull_manifest_raw(reference.oci(), &creds.auth, &MANIFEST_TYPES)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                let err = self.classify(reference, &creds, e);
                return Err(match err {
                    RegistryError::UnknownManifest { .. } => {
                        self.unknown_repository_or(reference, &client, &creds, err)
                            .await
                    }
                    err => err,
                });
            }
        };
        self.module_layer(reference, &body)?;
        Ok(reference.pinned(&sha256_digest(&body)))
    }

    /// A module from the cache by manifest digest, when both the manifest and its module
    /// are there and intact.
    fn cached(&self, reference: &ModuleRef, digest: &str) -> Option<Pulled> {
        let cache = self.cache.as_ref()?;
        let manifest = cache.get(digest)?;
        let layer = self.module_layer(reference, &manifest).ok()?;
        let module = cache.get(&layer.digest)?;
        Some(Pulled {
            reference: reference.clone(),
            pinned: reference.pinned(digest),
            digest: digest.to_string(),
            module: module.into(),
            from_cache: true,
        })
    }

    async fn pull_once(&self, reference: &ModuleRef) -> Result<Pulled, RegistryError> {
        if let Some(digest) = reference.digest()
            && let Some(p) = self.cached(reference, digest)
        {
            tracing::debug!(%reference, "module from the cache");
            return Ok(p);
        }
        let host = reference.registry();
        let client = self.client(host)?;
        let creds = self.credentials(host)?;
        let body = match client
            .pull_manifest_raw(reference.oci(), &creds.auth, &MANIFEST_TYPES)
            .await
        {
            Ok((body, _)) => body,
            Err(e) => {
                let mut err = self.classify(reference, &creds, e);
                if let RegistryError::UnknownManifest { .. } = err {
                    err = self
                        .unknown_repository_or(reference, &client, &creds, err)
                        .await;
                }
                // A registry that is down does not stop a module already pulled: the tag's
                // last digest in the cache still starts.
                if let RegistryError::Unreachable { .. } = err
                    && let Some(cache) = &self.cache
                    && let Some(key) = reference.tag_key()
                    && let Some(digest) = cache.tag(&key)
                    && let Some(p) = self.cached(reference, &digest)
                {
                    tracing::warn!(
                        %reference, digest,
                        error = %err,
                        "registry unreachable; starting the digest this tag last resolved to, \
                         from the cache"
                    );
                    return Ok(p);
                }
                return Err(err);
            }
        };
        let digest = sha256_digest(&body);
        if let Some(want) = reference.digest()
            && want != digest
        {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest".into(),
                expected: want.to_string(),
                actual: digest,
            });
        }
        let layer = self.module_layer(reference, &body)?;
        let module = match self.cache.as_ref().and_then(|c| c.get(&layer.digest)) {
            Some(m) => m,
            None => self.pull_layer(&client, reference, &layer, &creds).await?,
        };
        if let Some(cache) = &self.cache {
            let stored = cache
                .put(&layer.digest, &module)
                .and_then(|()| cache.put(&digest, &body))
                .and_then(|()| match reference.tag_key() {
                    Some(key) => cache.put_tag(&key, &digest),
                    None => Ok(()),
                });
            if let Err(e) = stored {
                tracing::warn!(%reference, cache = %cache.dir().display(), error = %e,
                    "cannot store the pulled module in the cache");
            }
        }
        tracing::info!(%reference, digest, size = module.len(), "module pulled");
        Ok(Pulled {
            reference: reference.clone(),
            pinned: reference.pinned(&digest),
            digest,
            module: module.into(),
            from_cache: false,
        })
    }

    /// The one module layer of a manifest.
    fn module_layer(
        &self,
        reference: &ModuleRef,
        manifest: &[u8],
    ) -> Result<OciDescriptor, RegistryError> {
        let not = |reason: String| RegistryError::NotAModule {
            reference: reference.to_string(),
            reason,
        };
        let doc: ManifestDoc = serde_json::from_slice(manifest)
            .map_err(|e| not(format!("its manifest is not valid JSON: {e}")))?;
        if doc.manifests.is_some() {
            return Err(not(format!(
                "it names an image index ({}), not one module's manifest; name the module's \
                 own manifest by its digest",
                doc.media_type.as_deref().unwrap_or("no media type")
            )));
        }
        let mut wasm = doc
            .layers
            .iter()
            .filter(|l| ACCEPTED_LAYER_TYPES.contains(&l.media_type.as_str()));
        let layer = match (wasm.next(), wasm.next()) {
            (Some(l), None) => l.clone(),
            (None, _) => {
                let found: Vec<&str> = doc.layers.iter().map(|l| l.media_type.as_str()).collect();
                return Err(not(format!(
                    "its manifest has no WebAssembly layer (found: {}); a module's layer has \
                     the media type {}",
                    if found.is_empty() {
                        "no layers".to_string()
                    } else {
                        found.join(", ")
                    },
                    ACCEPTED_LAYER_TYPES.join(" or ")
                )));
            }
            (Some(_), Some(_)) => {
                return Err(not(
                    "its manifest has more than one WebAssembly layer; a module image has one"
                        .into(),
                ));
            }
        };
        let limit = self.options.max_module_size;
        if u64::try_from(layer.size).unwrap_or(u64::MAX) > limit {
            return Err(RegistryError::TooLarge {
                reference: reference.to_string(),
                size: u64::try_from(layer.size).unwrap_or(u64::MAX),
                limit,
            });
        }
        Ok(layer)
    }

    async fn pull_layer(
        &self,
        client: &oci_client::Client,
        reference: &ModuleRef,
        layer: &OciDescriptor,
        creds: &auth::Credentials,
    ) -> Result<Vec<u8>, RegistryError> {
        let limit = self.options.max_module_size;
        let mut stream = client
            .pull_blob_stream(reference.oci(), layer)
            .await
            .map_err(|e| self.classify(reference, creds, e))?;
        let mut module = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0).min(1 << 26));
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // The client hashes the layer as it streams and reports a mismatch as the
                // stream's last item, after every byte has arrived: not a broken
                // transfer (which "try again" would not mend), but bytes to refuse, as
                // the check below does with both digests.
                Err(e) if e.get_ref().is_some_and(|inner| inner.is::<DigestError>()) => break,
                Err(e) => {
                    return Err(RegistryError::Unreachable {
                        reference: reference.to_string(),
                        registry: reference.registry().to_string(),
                        reason: format!("the module's transfer broke off: {e}"),
                        hint: "try again".into(),
                    });
                }
            };
            module.extend_from_slice(&chunk);
            if module.len() as u64 > limit {
                return Err(RegistryError::TooLarge {
                    reference: reference.to_string(),
                    size: module.len() as u64,
                    limit,
                });
            }
        }
        let actual = sha256_digest(&module);
        if actual != layer.digest {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                what: "module layer".into(),
                expected: layer.digest.clone(),
                actual,
            });
        }
        if !module.starts_with(b"\0asm") {
            return Err(RegistryError::NotAModule {
                reference: reference.to_string(),
                reason: format!(
                    "its {} layer is not a WebAssembly module (it does not start with \\0asm); \
                     push the .wasm file itself as the layer",
                    layer.media_type
                ),
            });
        }
        Ok(module)
    }

    fn classify(
        &self,
        reference: &ModuleRef,
        creds: &auth::Credentials,
        e: OciDistributionError,
    ) -> RegistryError {
        let registry = reference.registry().to_string();
        let unauthorized = || RegistryError::Unauthorized {
            reference: reference.to_string(),
            registry: registry.clone(),
            source_: creds.source.clone(),
            hint: if matches!(creds.auth, RegistryAuth::Anonymous) {
                "give credentials in a [[registries]] entry of host.toml, in \
                 SIGIL_REGISTRY_USER and SIGIL_REGISTRY_PASSWORD, or with docker login"
                    .into()
            } else {
                "check the user name and password (or token), and that they may read this \
                 repository"
                    .into()
            },
        };
        match e {
            OciDistributionError::RequestError(e) => {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason.push_str(": ");
                    reason.push_str(&s.to_string());
                    source = s.source();
                }
                let hint = if self.options.is_insecure(reference.registry()) {
                    "check the address and that the registry runs (it is reached over plain \
                     HTTP, as listed insecure)"
                } else if reason.contains("certificate") || reason.contains("tls") {
                    "if it uses a private certificate authority, give it as ca_file in its \
                     [[registries]] entry (or SIGIL_REGISTRY_CA_FILE)"
                } else {
                    "check the address and that the registry runs; a registry that speaks \
                     plain HTTP must be listed as insecure ([[registries]] insecure = true, \
                     SIGIL_REGISTRY_INSECURE or --insecure-registry)"
                };
                RegistryError::Unreachable {
                    reference: reference.to_string(),
                    registry,
                    reason,
                    hint: hint.into(),
                }
            }
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => unauthorized(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.contains(&&OciErrorCode::NameUnknown) {
                    RegistryError::UnknownRepository {
                        reference: reference.to_string(),
                        registry,
                        repository: reference.repository().to_string(),
                    }
                } else if codes.contains(&&OciErrorCode::ManifestUnknown) {
                    self.unknown_manifest(reference)
                } else if codes.contains(&&OciErrorCode::Unauthorized)
                    || codes.contains(&&OciErrorCode::Denied)
                {
                    unauthorized()
                } else {
                    RegistryError::Registry {
                        reference: reference.to_string(),
                        registry,
                        reason: envelope.to_string(),
                    }
                }
            }
            OciDistributionError::ServerError { code: 401, .. }
            | OciDistributionError::ServerError { code: 403, .. } => unauthorized(),
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => {
                self.unknown_manifest(reference)
            }
            // A manifest whose bytes do not hash to the digest asked for (or, for a tag, to
            // the digest the registry announced): the two digests, not the client's
            // sentence, go in the message.
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => RegistryError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest".into(),
                expected,
                actual,
            },
            other => RegistryError::Registry {
                reference: reference.to_string(),
                registry,
                reason: other.to_string(),
            },
        }
    }

    /// A registry answers an unknown tag and an unknown repository alike for a manifest
    /// (`distribution` says MANIFEST_UNKNOWN for both); its tag list tells them apart.
    async fn unknown_repository_or(
        &self,
        reference: &ModuleRef,
        client: &oci_client::Client,
        creds: &auth::Credentials,
        err: RegistryError,
    ) -> RegistryError {
        match client
            .list_tags(reference.oci(), &creds.auth, Some(1), None)
            .await
        {
            Err(e) => match self.classify(reference, creds, e) {
                e @ RegistryError::UnknownRepository { .. } => e,
                _ => err,
            },
            Ok(_) => err,
        }
    }

    fn unknown_manifest(&self, reference: &ModuleRef) -> RegistryError {
        RegistryError::UnknownManifest {
            reference: reference.to_string(),
            repository: reference.repository().to_string(),
            what: match (reference.digest(), reference.tag()) {
                (Some(d), _) => format!("manifest {d}"),
                (None, Some(t)) => format!("tag {t}"),
                (None, None) => "tag latest".into(),
            },
        }
    }

    /// Pushes a signed module as an OCI image: one layer of [`LAYER_MEDIA_TYPE`], config
    /// [`CONFIG_MEDIA_TYPE`], annotations from its claims. `file` names the module in
    /// errors. A module that is unsigned or whose claims do not verify is refused.
    pub async fn push(
        &self,
        module: &[u8],
        file: &str,
        reference: &ModuleRef,
    ) -> Result<Pushed, RegistryError> {
        let claims = sigil_claims::verify(module, &sigil_claims::Policy::new()).map_err(|e| {
            RegistryError::Unsigned {
                file: file.to_string(),
                reason: e.to_string(),
            }
        })?;
        if reference.digest().is_some() {
            return Err(RegistryError::Reference {
                reference: reference.to_string(),
                reason: "push to a tag (oci://REGISTRY/REPOSITORY:TAG); the digest comes from \
                         the content"
                    .into(),
            });
        }
        let host = reference.registry();
        let client = self.client(host)?;
        let creds = self.credentials(host)?;
        client
            .store_auth_if_needed(reference.oci().resolve_registry(), &creds.auth)
            .await;

        let layer_digest = sha256_digest(module);
        let config = serde_json::to_vec(&serde_json::json!({
            "name": claims.name(),
            "subject": claims.subject(),
            "issuer": claims.issuer(),
            "rev": claims.rev(),
            "ver": claims.ver(),
            "caps": claims.capabilities(),
        }))
        .map_err(|e| RegistryError::Local(e.to_string()))?;
        let config_digest = sha256_digest(&config);

        let mut notes = std::collections::BTreeMap::new();
        notes.insert(
            annotations::SUBJECT.to_string(),
            claims.subject().to_string(),
        );
        notes.insert(annotations::ISSUER.to_string(), claims.issuer().to_string());
        if let Some(name) = claims.name() {
            notes.insert(annotations::NAME.to_string(), name.to_string());
            notes.insert(
                "org.opencontainers.image.title".to_string(),
                name.to_string(),
            );
        }
        if let Some(ver) = claims.ver() {
            notes.insert(annotations::VERSION.to_string(), ver.to_string());
            notes.insert(
                "org.opencontainers.image.version".to_string(),
                ver.to_string(),
            );
        }
        if let Some(rev) = claims.rev() {
            notes.insert(annotations::REVISION.to_string(), rev.to_string());
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": layer_digest,
                "size": module.len(),
                "annotations": {
                    "org.opencontainers.image.title": format!(
                        "{}.wasm", claims.name().unwrap_or("module")
                    ),
                },
            }],
            "annotations": notes,
        });
        let body =
            serde_json::to_vec(&manifest).map_err(|e| RegistryError::Local(e.to_string()))?;
        let digest = sha256_digest(&body);
        let oci = reference.oci();
        let fail = |e| self.classify(reference, &creds, e);
        client
            .push_blob(oci, module.to_vec(), &layer_digest)
            .await
            .map_err(fail)?;
        client
            .push_blob(oci, config, &config_digest)
            .await
            .map_err(fail)?;
        client
            .push_manifest_raw(
                oci,
                body.clone(),
                reqwest::header::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .map_err(fail)?;
        if let Some(cache) = &self.cache {
            let _ = cache.put(&layer_digest, module);
            let _ = cache.put(&digest, &body);
        }
        tracing::info!(%reference, digest, "module pushed");
        Ok(Pushed {
            pinned: reference.pinned(&digest),
            digest,
            layer_digest,
        })
    }
}

/// Where a module comes from: a file on this host, or a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSource {
    /// A `.wasm` file.
    File(PathBuf),
    /// An `oci://` reference.
    Oci(ModuleRef),
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::File(p) => write!(f, "{}", p.display()),
            ModuleSource::Oci(r) => write!(f, "{r}"),
        }
    }
}

impl ModuleSource {
    /// An `oci://` reference, or else a file path (relative paths against `base`).
    pub fn parse(text: &str, base: &std::path::Path) -> Result<Self, RegistryError> {
        if ModuleRef::is_reference(text) {
            Ok(ModuleSource::Oci(ModuleRef::parse(text)?))
        } else {
            Ok(ModuleSource::File(base.join(text)))
        }
    }
}

/// A module's bytes and where they came from, as the host reports it (a file's path, or
/// the reference pinned to its digest).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The module.
    pub bytes: Arc<[u8]>,
    /// The file path, or the `oci://...@sha256:...` reference that was pulled.
    pub origin: String,
}

impl Registry {
    /// Reads a file or pulls a reference.
    pub async fn fetch(self: &Arc<Self>, source: &ModuleSource) -> Result<Fetched, RegistryError> {
        match source {
            ModuleSource::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    RegistryError::Local(format!("cannot read {}: {e}", path.display()))
                })?;
                Ok(Fetched {
                    bytes: bytes.into(),
                    origin: path.display().to_string(),
                })
            }
            ModuleSource::Oci(reference) => {
                let pulled = self.pull(reference).await?;
                Ok(Fetched {
                    bytes: pulled.module,
                    origin: pulled.pinned.to_string(),
                })
            }
        }
    }
}
