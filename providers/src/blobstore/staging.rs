//! A staging area the host itself moves objects through: artifacts handed between a
//! workflow engine (Argo's artifact repository) and actors, which see them through their
//! own blob-store links. The bytes move inside the store (a server-side copy on S3); they
//! never pass through an actor, and an actor never gets the store's credentials.

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::backend::Backend;
use super::names::{MARKER, check_container, check_object, check_root};
use crate::{LinkConfig, ProviderError};

/// The default of `link_root`: where staged containers live.
pub const DEFAULT_LINK_ROOT: &str = "artifacts";

/// A blob store (S3 or a directory) with the link root under which actors see staged
/// objects: `<link_root>/<container>/<object>`, as a blob-store link with
/// `root = <link_root>` on the same store addresses them.
#[derive(Debug)]
pub struct StagingArea {
    backend: Backend,
    link_root: String,
    bucket: Option<String>,
}

impl StagingArea {
    /// Opens a staging area: `kind` is `s3` (the S3 provider's keys) or `fs` (key `root`,
    /// the directory); key `link_root` (default `artifacts`) is the link root actors use.
    pub fn open(kind: &str, config: &LinkConfig) -> Result<Self, ProviderError> {
        let link_root = config
            .get("link_root")
            .unwrap_or(DEFAULT_LINK_ROOT)
            .to_string();
        check_root(&link_root)
            .map_err(|e| ProviderError::Config(e.to_string().replace("`root`", "`link_root`")))?;
        let rest: LinkConfig = config
            .0
            .iter()
            .filter(|(k, _)| *k != "link_root")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (backend, bucket) = match kind {
            "s3" => (Backend::s3(&rest)?, rest.get("bucket").map(str::to_string)),
            "fs" => (Backend::fs(&rest)?, None),
            other => {
                return Err(ProviderError::Config(format!(
                    "unknown store kind `{other}`; use `s3` or `fs`"
                )));
            }
        };
        Ok(StagingArea {
            backend,
            link_root,
            bucket,
        })
    }

    /// The link root under which actors see staged containers.
    pub fn link_root(&self) -> &str {
        &self.link_root
    }

    /// The S3 bucket, when the store is S3.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// Where the objects live, for messages.
    pub fn location(&self) -> &str {
        &self.backend.location
    }

    fn staged(&self, container: &str, object: &str) -> Result<Path, ProviderError> {
        check_container(container)?;
        check_object(object)?;
        Path::parse(format!("{}/{container}/{object}", self.link_root))
            .map_err(|e| ProviderError::Denied(format!("{container}/{object}: {e}")))
    }

    fn key(key: &str) -> Result<Path, ProviderError> {
        check_object(key).map_err(|e| ProviderError::Denied(format!("artifact key: {e}")))?;
        Path::parse(key).map_err(|e| ProviderError::Denied(format!("artifact key {key:?}: {e}")))
    }

    /// Creates `container` under the link root (idempotent), so that actors may read and
    /// write objects in it.
    pub async fn create_container(&self, container: &str) -> Result<(), ProviderError> {
        check_container(container)?;
        let marker = Path::parse(format!("{}/{container}/{MARKER}", self.link_root))
            .map_err(|e| ProviderError::Denied(format!("{container}: {e}")))?;
        let what = format!("creating staging container `{container}`");
        match self.backend.store.head(&marker).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => self
                .backend
                .store
                .put(&marker, Vec::new().into())
                .await
                .map(|_| ())
                .map_err(|e| self.backend.error(&what, &e)),
            Err(e) => Err(self.backend.error(&what, &e)),
        }
    }

    /// Copies the object at `key` (relative to the bucket or directory) to `object` of
    /// staged `container`; answers its size. A missing source is a `NotFound`-style
    /// failure naming the key.
    pub async fn stage_in(
        &self,
        key: &str,
        container: &str,
        object: &str,
    ) -> Result<u64, ProviderError> {
        let (from, to) = (Self::key(key)?, self.staged(container, object)?);
        self.copy(&from, &to, &format!("artifact `{key}`")).await
    }

    /// Copies `object` of staged `container` to `key`; answers its size. A missing object
    /// fails naming the container and object the actor should have written.
    pub async fn stage_out(
        &self,
        container: &str,
        object: &str,
        key: &str,
    ) -> Result<u64, ProviderError> {
        let (from, to) = (self.staged(container, object)?, Self::key(key)?);
        self.copy(
            &from,
            &to,
            &format!("object `{object}` of container `{container}`"),
        )
        .await
    }

    async fn copy(&self, from: &Path, to: &Path, what: &str) -> Result<u64, ProviderError> {
        let store = &self.backend.store;
        let size = match store.head(from).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ProviderError::Failed(format!(
                    "{what} does not exist in {}",
                    self.backend.location
                )));
            }
            Err(e) => return Err(self.backend.error(&format!("reading {what}"), &e)),
        };
        if from != to {
            store
                .copy(from, to)
                .await
                .map_err(|e| self.backend.error(&format!("copying {what}"), &e))?;
        }
        Ok(size)
    }

    /// Streams the object at `key` (relative to the bucket or directory) into `to`;
    /// answers its size. A missing object fails naming the key.
    pub async fn download(
        &self,
        key: &str,
        to: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ProviderError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let path = Self::key(key)?;
        let what = format!("artifact `{key}`");
        let result = match self.backend.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ProviderError::Failed(format!(
                    "{what} does not exist in {}",
                    self.backend.location
                )));
            }
            Err(e) => return Err(self.backend.error(&format!("reading {what}"), &e)),
        };
        let mut chunks = result.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.backend.error(&format!("reading {what}"), &e))?;
            to.write_all(&chunk)
                .await
                .map_err(|e| ProviderError::Failed(format!("writing {what} down: {e}")))?;
            size += chunk.len() as u64;
        }
        to.flush()
            .await
            .map_err(|e| ProviderError::Failed(format!("writing {what} down: {e}")))?;
        Ok(size)
    }

    /// Streams `from` to the object at `key` (in parts when it is large: object_store's
    /// buffered writer turns into a multipart upload past its buffer); answers its size.
    pub async fn upload(
        &self,
        from: &mut (impl tokio::io::AsyncRead + Unpin),
        key: &str,
    ) -> Result<u64, ProviderError> {
        use tokio::io::AsyncWriteExt;
        let path = Self::key(key)?;
        let what = format!("artifact `{key}`");
        let mut writer = object_store::buffered::BufWriter::new(self.backend.store.clone(), path);
        let copied = tokio::io::copy(from, &mut writer).await;
        let size = match copied {
            Ok(size) => size,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(ProviderError::Failed(format!("uploading {what}: {e}")));
            }
        };
        writer.shutdown().await.map_err(|e| {
            ProviderError::Failed(format!(
                "uploading {what} to {}: {e}",
                self.backend.location
            ))
        })?;
        Ok(size)
    }

    /// Reads a whole object at `key`, for tests and tools.
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, ProviderError> {
        let path = Self::key(key)?;
        let result = self
            .backend
            .store
            .get(&path)
            .await
            .map_err(|e| self.backend.error(&format!("reading `{key}`"), &e))?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.backend.error(&format!("reading `{key}`"), &e))?;
        Ok(bytes.to_vec())
    }

    /// Writes a whole object at `key`, for tests and tools.
    pub async fn write(&self, key: &str, bytes: Vec<u8>) -> Result<(), ProviderError> {
        let path = Self::key(key)?;
        self.backend
            .store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.backend.error(&format!("writing `{key}`"), &e))
    }
}
