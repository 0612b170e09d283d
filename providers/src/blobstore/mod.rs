//! The `wasmcloud:blobstore` provider: containers of named objects, on S3 or in a local
//! directory.
//!
//! [`BlobStore`] is one implementation over two backends of the `object_store` crate: kind
//! `s3` ([`BlobStore::s3_from_config`]: any S3-compatible server, path-style by default)
//! and kind `fs` ([`BlobStore::fs_from_config`]: a directory on this machine). Both behave
//! the same, except that the `fs` backend does not keep media types (`content_type` is
//! always nil there) and cannot store an object under a name that another object uses as a
//! directory (`a` and `a/b`).
//!
//! **Provider configuration, kind `s3`**
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `bucket` | required | The bucket holding every link's objects. |
//! | `endpoint` | AWS | The server's URL, e.g. `http://127.0.0.1:9000`. |
//! | `region` | `us-east-1` | The signing region. |
//! | `access_key_id`, `secret_access_key` | unsigned requests | Static credentials; set both or neither. |
//! | `path_style` | `true` | `endpoint/bucket/key` addressing (`false`: virtual-hosted, `bucket.endpoint/key`). |
//! | `allow_http` | `true` for an `http://` endpoint, else `false` | Whether plain HTTP may be used. |
//! | `connect_timeout` | `2s` | How long connecting to the server may take. |
//! | `request_timeout` | `30s` | How long one request may take. |
//! | `upload_timeout` | `5m` | See the link key of that name. |
//!
//! A request is retried at most twice, within 5 seconds, so that a server that is down
//! fails the call promptly with an `unavailable` error (and [`Provider::health`] reports
//! it); calls work again as soon as the server is back.
//!
//! **Provider configuration, kind `fs`**: `root`, the directory holding every link's objects
//! (created if missing), and `upload_timeout` as above.
//!
//! **Link configuration**
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `root` | the actor's public key | The prefix (a relative path, validated like an object name) under which the link's containers live. |
//! | `max_object_bytes` | `1GiB` | The largest object the actor may write. |
//! | `max_chunk_bytes` | `1MiB` | The most bytes one `GetObject` answers with (readers ask again for the rest). |
//! | `upload_timeout` | the provider's | How long a chunked upload may wait for its next chunk before it is abandoned. |
//!
//! **Isolation.** Every path lives under the link's root: `<root>/<container>/<object>`
//! in the bucket or directory. The root is the link's `root` key, else the actor's public
//! key, so that by default no two actors share anything, even with equal container and
//! object names. Container names are 1 to 63 bytes of `a-z`, `0-9`, `.`, `_`, `-` (not
//! `.` or `..`). Object names are 1 to 1024 bytes, relative, `/`-separated, with no empty,
//! `.` or `..` segment, no backslash and no control character. Anything else is refused
//! with a `denied` error before the backend is touched, so no name reaches outside the
//! link's root. A container exists when its marker object `.sigil-container` does
//! (written by `CreateContainer`, hidden from listings, not a name an actor may use).
//!
//! **Chunked writes.** A `PutObject` chunk at offset 0 marked `is_last` is a plain write.
//! Otherwise the chunk at offset 0 opens an upload session for (actor, link, container,
//! object), replacing any open one; each following chunk must start where the previous
//! ended (else the call fails naming the expected and the given offset), and the chunk
//! marked `is_last` completes the object. Chunks are buffered up to 5 MiB and sent as the
//! parts of a multipart upload, so the provider holds at most about 5 MiB plus one chunk
//! per session. Readers see the previous object until the upload completes. A session
//! with no chunk for `upload_timeout` is aborted, as are a link's sessions when the link
//! is removed and a container's when it is removed.

mod backend;
mod names;
mod staging;

pub use staging::{DEFAULT_LINK_ROOT, StagingArea};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, MultipartUpload, ObjectMeta, PutMultipartOptions,
    PutOptions, PutPayload,
};
use sigil_actor::contracts::blobstore::{
    CONTRACT_ID, Chunk, ContainerExists, CreateContainer, GetObject, GetObjectInfo, ListObjects,
    OP_CONTAINER_EXISTS, OP_CREATE_CONTAINER, OP_GET_OBJECT, OP_GET_OBJECT_INFO, OP_LIST_OBJECTS,
    OP_PUT_OBJECT, OP_REMOVE_CONTAINER, OP_REMOVE_OBJECT, ObjectList, ObjectMetadata, PutObject,
    RemoveContainer, RemoveObject,
};

use crate::{
    ActorInvoker, Health, Invocation, Link, LinkConfig, LinkTable, Provider, ProviderError, encode,
};
use backend::Backend;
use names::{MARKER, check_container, check_object, check_root};

/// The default of `upload_timeout`.
const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The default of the link key `max_object_bytes`.
const DEFAULT_MAX_OBJECT: u64 = 1 << 30;
/// The default of the link key `max_chunk_bytes`.
const DEFAULT_MAX_CHUNK: u64 = 1 << 20;
/// The size of the parts of a multipart upload (S3's minimum, except for the last part).
const PART_SIZE: usize = 5 << 20;
/// The most objects in one listing page.
const MAX_PAGE: u32 = 1000;
/// How often abandoned uploads are looked for, once the provider is started.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long aborting an upload may take before it is given up.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// An object being written in chunks.
#[derive(Debug)]
struct Upload {
    /// Bytes received so far: where the next chunk must start.
    received: u64,
    /// Received bytes not yet sent as a part.
    buffer: Vec<u8>,
    /// The multipart upload, once the first part is sent.
    multipart: Option<Box<dyn MultipartUpload>>,
    /// The media type of the chunk at offset 0.
    content_type: Option<String>,
    /// When the last chunk arrived.
    touched: Instant,
    /// Completed or aborted: no more chunks.
    done: bool,
}

impl Upload {
    async fn abort(&mut self) {
        self.done = true;
        self.buffer = Vec::new();
        if let Some(mut multipart) = self.multipart.take() {
            match tokio::time::timeout(ABORT_TIMEOUT, multipart.abort()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot abort a multipart upload"),
                Err(_) => tracing::warn!("aborting a multipart upload timed out"),
            }
        }
    }
}

type SharedUpload = Arc<tokio::sync::Mutex<Upload>>;

/// What a link configured, and its open uploads.
#[derive(Debug)]
struct LinkState {
    root: Path,
    max_object_bytes: u64,
    max_chunk_bytes: u64,
    upload_timeout: Duration,
    /// Open uploads by (container, object).
    uploads: Mutex<HashMap<(String, String), SharedUpload>>,
}

impl LinkState {
    fn new(link: &Link, default_upload_timeout: Duration) -> Result<Self, ProviderError> {
        let config = &link.config;
        config.only(&[
            "root",
            "max_object_bytes",
            "max_chunk_bytes",
            "upload_timeout",
        ])?;
        let root = match config.get("root") {
            Some(root) => {
                check_root(root)?;
                root.to_string()
            }
            None => link.actor.subject.clone(),
        };
        let root = Path::parse(&root).map_err(|e| {
            ProviderError::Config(format!("`root` {root:?} is not a valid prefix: {e}"))
        })?;
        if root.parts_count() == 0 {
            return Err(ProviderError::Config(
                "the link's root is empty; set `root`".to_string(),
            ));
        }
        let max_chunk_bytes = config.bytes("max_chunk_bytes", DEFAULT_MAX_CHUNK)?;
        if max_chunk_bytes == 0 {
            return Err(ProviderError::Config(
                "`max_chunk_bytes` must be positive".to_string(),
            ));
        }
        Ok(LinkState {
            root,
            max_object_bytes: config.bytes("max_object_bytes", DEFAULT_MAX_OBJECT)?,
            max_chunk_bytes,
            upload_timeout: config.duration("upload_timeout", default_upload_timeout)?,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SharedUpload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of container `container` (a checked name).
    fn container(&self, container: &str) -> Result<Path, ProviderError> {
        join(&self.root, container)
    }

    /// The path of object `object` (a checked name) of `container`.
    fn object(&self, container: &str, object: &str) -> Result<Path, ProviderError> {
        join(&self.container(container)?, object)
    }

    /// The container's marker object.
    fn marker(&self, container: &str) -> Result<Path, ProviderError> {
        join(&self.container(container)?, MARKER)
    }

    /// Removes and returns the uploads matching `filter`, which sees each key and the
    /// upload (`None` while a chunk of it is being written).
    fn take_uploads(
        &self,
        filter: impl Fn(&(String, String), Option<&Upload>) -> bool,
    ) -> Vec<SharedUpload> {
        let mut uploads = self.uploads();
        let mut taken = Vec::new();
        uploads.retain(|key, upload| {
            let take = match upload.try_lock() {
                Ok(guard) => filter(key, Some(&guard)),
                Err(_) => filter(key, None),
            };
            if take {
                taken.push(upload.clone());
            }
            !take
        });
        taken
    }

    /// Removes and returns every upload.
    fn take_all(&self) -> Vec<SharedUpload> {
        self.take_uploads(|_, _| true)
    }

    /// Removes and returns the uploads with no chunk for `upload_timeout` (not those in
    /// use).
    fn take_stale(&self, now: Instant) -> Vec<SharedUpload> {
        let timeout = self.upload_timeout;
        self.take_uploads(|_, upload| {
            upload.is_some_and(|u| now.saturating_duration_since(u.touched) > timeout)
        })
    }
}

/// Aborts `uploads`.
async fn abort_all(uploads: Vec<SharedUpload>) {
    for upload in uploads {
        upload.lock().await.abort().await;
    }
}

/// `base/rel`, where `rel` is a checked name.
fn join(base: &Path, rel: &str) -> Result<Path, ProviderError> {
    Path::parse(format!("{base}/{rel}"))
        .map_err(|e| ProviderError::Denied(format!("the name {rel:?} is not allowed: {e}")))
}

fn no_container(container: &str) -> ProviderError {
    ProviderError::Failed(format!(
        "container `{container}` does not exist; create it with CreateContainer first"
    ))
}

fn no_object(container: &str, object: &str) -> ProviderError {
    ProviderError::Failed(format!(
        "object `{object}` does not exist in container `{container}`"
    ))
}

fn metadata(container: &str, object: &str, meta: &ObjectMeta) -> ObjectMetadata {
    ObjectMetadata {
        container: container.to_string(),
        object: object.to_string(),
        size: meta.size,
        content_type: None,
        last_modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).ok(),
    }
}

fn head() -> GetOptions {
    GetOptions {
        head: true,
        ..GetOptions::default()
    }
}

/// The shared state of a [`BlobStore`] (shared with its background sweeper).
#[derive(Debug)]
struct Inner {
    backend: Backend,
    upload_timeout: Duration,
    links: LinkTable<LinkState>,
    started: AtomicBool,
    stop: tokio::sync::Notify,
}

/// The blob store provider (`wasmcloud:blobstore`, kind `s3` or `fs`).
#[derive(Debug)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

impl BlobStore {
    /// The kind of a provider on S3.
    pub const KIND_S3: &'static str = "s3";
    /// The kind of a provider on a local directory.
    pub const KIND_FS: &'static str = "fs";

    /// A provider on an S3-compatible server, configured by `config` (keys `endpoint`,
    /// `region`, `bucket`, `access_key_id`, `secret_access_key`, `path_style`,
    /// `allow_http`, `connect_timeout`, `request_timeout`, `upload_timeout`).
    pub fn s3_from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        Self::new(Backend::s3(config)?, config)
    }

    /// A provider on a local directory, configured by `config` (keys `root`,
    /// `upload_timeout`).
    pub fn fs_from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        Self::new(Backend::fs(config)?, config)
    }

    fn new(backend: Backend, config: &LinkConfig) -> Result<Self, ProviderError> {
        Ok(BlobStore {
            inner: Arc::new(Inner {
                backend,
                upload_timeout: config.duration("upload_timeout", DEFAULT_UPLOAD_TIMEOUT)?,
                links: LinkTable::new(CONTRACT_ID),
                started: AtomicBool::new(false),
                stop: tokio::sync::Notify::new(),
            }),
        })
    }
}

impl Inner {
    fn store(&self) -> &dyn object_store::ObjectStore {
        self.backend.store.as_ref()
    }

    fn error(&self, what: &str, error: &object_store::Error) -> ProviderError {
        self.backend.error(what, error)
    }

    async fn exists(&self, path: &Path, what: &str) -> Result<Option<ObjectMeta>, ProviderError> {
        match self.store().get_opts(path, head()).await {
            Ok(result) => Ok(Some(result.meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(what, &e)),
        }
    }

    async fn container_exists(
        &self,
        link: &LinkState,
        container: &str,
    ) -> Result<bool, ProviderError> {
        let marker = link.marker(container)?;
        let what = format!("looking up container `{container}`");
        Ok(self.exists(&marker, &what).await?.is_some())
    }

    async fn require_container(
        &self,
        link: &LinkState,
        container: &str,
    ) -> Result<(), ProviderError> {
        if self.container_exists(link, container).await? {
            Ok(())
        } else {
            Err(no_container(container))
        }
    }

    /// The error for an object that was not found: its container's, or its own.
    async fn missing(&self, link: &LinkState, container: &str, object: &str) -> ProviderError {
        match self.container_exists(link, container).await {
            Ok(true) => no_object(container, object),
            Ok(false) => no_container(container),
            Err(e) => e,
        }
    }

    async fn delete(&self, path: &Path) -> Result<bool, object_store::Error> {
        let location = path.clone();
        let mut results = self
            .store()
            .delete_stream(futures::stream::once(async move { Ok(location) }).boxed());
        let mut existed = true;
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => existed = false,
                Err(e) => return Err(e),
            }
        }
        Ok(existed)
    }

    async fn write(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        content_type: Option<&str>,
        what: &str,
    ) -> Result<(), ProviderError> {
        let options = PutOptions {
            attributes: self.attributes(content_type),
            ..PutOptions::default()
        };
        self.store()
            .put_opts(path, PutPayload::from(bytes), options)
            .await
            .map(|_| ())
            .map_err(|e| self.error(what, &e))
    }

    fn attributes(&self, content_type: Option<&str>) -> Attributes {
        match content_type {
            Some(ct) if self.backend.keeps_content_type => {
                Attributes::from_iter([(Attribute::ContentType, ct.to_string())])
            }
            _ => Attributes::new(),
        }
    }

    async fn create_container(
        &self,
        link: &LinkState,
        request: CreateContainer,
    ) -> Result<(), ProviderError> {
        check_container(&request.container)?;
        let marker = link.marker(&request.container)?;
        let what = format!("creating container `{}`", request.container);
        if self.exists(&marker, &what).await?.is_none() {
            self.write(&marker, Vec::new(), None, &what).await?;
        }
        Ok(())
    }

    async fn remove_container(
        &self,
        link: &LinkState,
        request: RemoveContainer,
    ) -> Result<(), ProviderError> {
        let container = request.container;
        check_container(&container)?;
        let uploads = link.take_uploads(|(c, _), _| *c == container);
        abort_all(uploads).await;
        let what = format!("removing container `{container}`");
        let base = link.container(&container)?;
        let marker = link.marker(&container)?;
        let mut paths = Vec::new();
        let mut listing = self.store().list(Some(&base));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error(&what, &e))?;
            if meta.location != marker {
                paths.push(meta.location);
            }
        }
        // The marker goes last: a removal cut short leaves the container, not orphans.
        let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut deleted = self.store().delete_stream(stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(&what, &e)),
            }
        }
        self.delete(&marker)
            .await
            .map_err(|e| self.error(&what, &e))?;
        Ok(())
    }

    async fn list_objects(
        &self,
        link: &LinkState,
        request: ListObjects,
    ) -> Result<ObjectList, ProviderError> {
        let container = request.container;
        check_container(&container)?;
        let max: u32 = match request.max_items {
            None => MAX_PAGE,
            Some(0) => {
                return Err(ProviderError::invalid(
                    OP_LIST_OBJECTS,
                    "`max_items` must be at least 1",
                ));
            }
            Some(n) => n.min(MAX_PAGE),
        };
        let max = max as usize;
        if let Some(token) = &request.continuation
            && check_object(token).is_err()
        {
            return Err(ProviderError::invalid(
                OP_LIST_OBJECTS,
                "`continuation` is not a token this provider returned",
            ));
        }
        self.require_container(link, &container).await?;
        let base = link.container(&container)?;
        let prefix = request.prefix.unwrap_or_default();
        // List only under the prefix's directory, when it has one.
        let list_root = prefix
            .rfind('/')
            .and_then(|i| prefix.get(..i))
            .filter(|dir| check_object(dir).is_ok())
            .and_then(|dir| join(&base, dir).ok())
            .unwrap_or_else(|| base.clone());
        // Start after the continuation, or just before the first name with the prefix.
        let mut offset = request
            .continuation
            .as_deref()
            .and_then(|token| join(&base, token).ok());
        if let Some((last, _)) = prefix.char_indices().last()
            && let Some(before) = prefix.get(..last).filter(|b| !b.is_empty())
            && let Ok(path) = Path::parse(format!("{base}/{before}"))
            && offset.as_ref().is_none_or(|o| path > *o)
        {
            offset = Some(path);
        }
        let mut listing = match &offset {
            Some(offset) => self.store().list_with_offset(Some(&list_root), offset),
            None => self.store().list(Some(&list_root)),
        };
        let what = format!("listing container `{container}`");
        let base_prefix = format!("{base}/");
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error(&what, &e))?;
            let Some(name) = meta.location.as_ref().strip_prefix(&base_prefix) else {
                continue;
            };
            if name == MARKER
                || request
                    .continuation
                    .as_deref()
                    .is_some_and(|token| name <= token)
            {
                continue;
            }
            if !name.starts_with(&prefix) {
                if self.backend.sorted_listing && name > prefix.as_str() {
                    break; // past every name with the prefix
                }
                continue;
            }
            objects.push(metadata(&container, name, &meta));
            if self.backend.sorted_listing && objects.len() > max {
                break;
            }
        }
        drop(listing);
        if !self.backend.sorted_listing {
            objects.sort_by(|a, b| a.object.cmp(&b.object));
        }
        let continuation = if objects.len() > max {
            objects.truncate(max);
            objects.last().map(|o| o.object.clone())
        } else {
            None
        };
        Ok(ObjectList {
            objects,
            continuation,
        })
    }

    async fn get_object(
        &self,
        link: &LinkState,
        request: GetObject,
    ) -> Result<Chunk, ProviderError> {
        check_container(&request.container)?;
        check_object(&request.object)?;
        let path = link.object(&request.container, &request.object)?;
        let what = format!(
            "reading object `{}` of container `{}`",
            request.object, request.container
        );
        let want = request.length.unwrap_or(u64::MAX).min(link.max_chunk_bytes);
        let chunk = |bytes: Vec<u8>, is_last: bool| Chunk {
            container: request.container.clone(),
            object: request.object.clone(),
            offset: request.offset,
            bytes,
            is_last,
        };
        if want == 0 {
            return match self.exists(&path, &what).await? {
                Some(meta) => Ok(chunk(Vec::new(), request.offset >= meta.size)),
                None => Err(self
                    .missing(link, &request.container, &request.object)
                    .await),
            };
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(
                request.offset..request.offset.saturating_add(want),
            )),
            ..GetOptions::default()
        };
        match self.store().get_opts(&path, options).await {
            Ok(result) => {
                let is_last = result.range.end >= result.meta.size;
                let bytes = result.bytes().await.map_err(|e| self.error(&what, &e))?;
                Ok(chunk(bytes.to_vec(), is_last))
            }
            Err(object_store::Error::NotFound { .. }) => Err(self
                .missing(link, &request.container, &request.object)
                .await),
            Err(e) => {
                let error = self.error(&what, &e);
                if error.is_unavailable() {
                    return Err(error);
                }
                // Most likely the range starts at or past the end (an empty object
                // included): look at the object's size.
                match self.exists(&path, &what).await? {
                    Some(meta) if request.offset >= meta.size => Ok(chunk(Vec::new(), true)),
                    Some(_) => Err(error),
                    None => Err(self
                        .missing(link, &request.container, &request.object)
                        .await),
                }
            }
        }
    }

    async fn get_object_info(
        &self,
        link: &LinkState,
        request: GetObjectInfo,
    ) -> Result<Option<ObjectMetadata>, ProviderError> {
        check_container(&request.container)?;
        check_object(&request.object)?;
        let path = link.object(&request.container, &request.object)?;
        match self.store().get_opts(&path, head()).await {
            Ok(result) => {
                let mut info = metadata(&request.container, &request.object, &result.meta);
                info.content_type = result
                    .attributes
                    .get(&Attribute::ContentType)
                    .map(|v| v.as_ref().to_string());
                Ok(Some(info))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(
                &format!(
                    "reading the metadata of object `{}` of container `{}`",
                    request.object, request.container
                ),
                &e,
            )),
        }
    }

    async fn remove_object(
        &self,
        link: &LinkState,
        request: RemoveObject,
    ) -> Result<bool, ProviderError> {
        check_container(&request.container)?;
        check_object(&request.object)?;
        let path = link.object(&request.container, &request.object)?;
        let what = format!(
            "removing object `{}` of container `{}`",
            request.object, request.container
        );
        // S3 does not tell whether a deleted object existed: ask first.
        if self.exists(&path, &what).await?.is_none() {
            return Ok(false);
        }
        self.delete(&path).await.map_err(|e| self.error(&what, &e))
    }

    async fn put_object(
        &self,
        link: &Arc<LinkState>,
        request: PutObject,
    ) -> Result<(), ProviderError> {
        let chunk = request.chunk;
        check_container(&chunk.container)?;
        check_object(&chunk.object)?;
        self.sweep_later(link);
        let path = link.object(&chunk.container, &chunk.object)?;
        let what = format!(
            "writing object `{}` of container `{}`",
            chunk.object, chunk.container
        );
        let key = (chunk.container.clone(), chunk.object.clone());
        let too_large = || {
            ProviderError::Denied(format!(
                "object `{}` would be larger than the link's max_object_bytes ({} bytes)",
                chunk.object, link.max_object_bytes
            ))
        };
        let length = chunk.bytes.len() as u64;

        if chunk.offset == 0 {
            // A new object: any upload of the same name in progress is abandoned.
            let previous = link.uploads().remove(&key);
            if let Some(previous) = previous {
                previous.lock().await.abort().await;
            }
            self.require_container(link, &chunk.container).await?;
            if length > link.max_object_bytes {
                return Err(too_large());
            }
            if chunk.is_last {
                return self
                    .write(&path, chunk.bytes, request.content_type.as_deref(), &what)
                    .await;
            }
            let upload = Arc::new(tokio::sync::Mutex::new(Upload {
                received: length,
                buffer: chunk.bytes,
                multipart: None,
                content_type: request.content_type,
                touched: Instant::now(),
                done: false,
            }));
            let replaced = link.uploads().insert(key, upload.clone());
            if let Some(replaced) = replaced {
                replaced.lock().await.abort().await;
            }
            // A first chunk of 5 MiB or more starts the multipart upload now.
            let mut guard = upload.lock().await;
            return self
                .flush(link, &upload, &mut guard, &path, &what, false)
                .await;
        }

        let not_open = || {
            ProviderError::invalid(
                OP_PUT_OBJECT,
                format!(
                    "no upload of object `{}` of container `{}` is in progress (it was not \
                     started, it completed, or it failed or was abandoned); send the chunk at \
                     offset 0 first",
                    chunk.object, chunk.container
                ),
            )
        };
        let upload = link.uploads().get(&key).cloned().ok_or_else(not_open)?;
        let mut guard = upload.lock().await;
        if guard.done {
            return Err(not_open());
        }
        if guard.touched.elapsed() > link.upload_timeout {
            self.forget(link, &key, &upload);
            guard.abort().await;
            return Err(ProviderError::invalid(
                OP_PUT_OBJECT,
                format!(
                    "the upload of object `{}` was abandoned: no chunk for more than {:?} \
                     (upload_timeout); start again at offset 0",
                    chunk.object, link.upload_timeout
                ),
            ));
        }
        if chunk.offset != guard.received {
            return Err(ProviderError::invalid(
                OP_PUT_OBJECT,
                format!(
                    "chunks must arrive in order: expected offset {}, got offset {}",
                    guard.received, chunk.offset
                ),
            ));
        }
        if guard.received.saturating_add(length) > link.max_object_bytes {
            self.forget(link, &key, &upload);
            guard.abort().await;
            return Err(too_large());
        }
        guard.received += length;
        guard.touched = Instant::now();
        guard.buffer.extend_from_slice(&chunk.bytes);
        self.flush(link, &upload, &mut guard, &path, &what, chunk.is_last)
            .await
    }

    /// Sends what an upload buffered: full parts, and everything when `last` (completing
    /// the object). A failure aborts the upload.
    async fn flush(
        &self,
        link: &LinkState,
        shared: &SharedUpload,
        upload: &mut Upload,
        path: &Path,
        what: &str,
        last: bool,
    ) -> Result<(), ProviderError> {
        let result = self.send_parts(upload, path, what, last).await;
        if result.is_err() || last {
            if result.is_err() {
                upload.abort().await;
            }
            upload.done = true;
            let mut uploads = link.uploads();
            uploads.retain(|_, u| !Arc::ptr_eq(u, shared));
        }
        result
    }

    async fn send_parts(
        &self,
        upload: &mut Upload,
        path: &Path,
        what: &str,
        last: bool,
    ) -> Result<(), ProviderError> {
        if last && upload.multipart.is_none() {
            // Small enough for one write.
            let bytes = std::mem::take(&mut upload.buffer);
            let content_type = upload.content_type.clone();
            return self.write(path, bytes, content_type.as_deref(), what).await;
        }
        if upload.buffer.len() >= PART_SIZE && upload.multipart.is_none() {
            let options = PutMultipartOptions {
                attributes: self.attributes(upload.content_type.as_deref()),
                ..PutMultipartOptions::default()
            };
            let multipart = self
                .store()
                .put_multipart_opts(path, options)
                .await
                .map_err(|e| self.error(what, &e))?;
            upload.multipart = Some(multipart);
        }
        let Some(multipart) = upload.multipart.as_mut() else {
            return Ok(()); // still buffering the first part
        };
        while upload.buffer.len() >= PART_SIZE || (last && !upload.buffer.is_empty()) {
            let rest = if upload.buffer.len() > PART_SIZE {
                upload.buffer.split_off(PART_SIZE)
            } else {
                Vec::new()
            };
            let part = std::mem::replace(&mut upload.buffer, rest);
            multipart
                .put_part(PutPayload::from(Bytes::from(part)))
                .await
                .map_err(|e| self.error(what, &e))?;
        }
        if last {
            multipart
                .complete()
                .await
                .map_err(|e| self.error(what, &e))?;
            upload.multipart = None;
        }
        Ok(())
    }

    /// Removes `upload` from the link's open uploads, if it is still the one under `key`.
    fn forget(&self, link: &LinkState, key: &(String, String), upload: &SharedUpload) {
        let mut uploads = link.uploads();
        if uploads.get(key).is_some_and(|u| Arc::ptr_eq(u, upload)) {
            uploads.remove(key);
        }
    }

    /// Aborts the link's abandoned uploads in the background.
    fn sweep_later(&self, link: &LinkState) {
        let stale = link.take_stale(Instant::now());
        if !stale.is_empty() {
            tokio::spawn(abort_all(stale));
        }
    }

    async fn sweep(&self) {
        let now = Instant::now();
        for link in self.links.all() {
            abort_all(link.take_stale(now)).await;
        }
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        let link = self.links.get(call.actor, call.link_name)?;
        match call.operation {
            OP_CREATE_CONTAINER => {
                self.create_container(&link, call.decode()?).await?;
                Ok(Vec::new())
            }
            OP_REMOVE_CONTAINER => {
                self.remove_container(&link, call.decode()?).await?;
                Ok(Vec::new())
            }
            OP_CONTAINER_EXISTS => {
                let request: ContainerExists = call.decode()?;
                check_container(&request.container)?;
                encode(&self.container_exists(&link, &request.container).await?)
            }
            OP_LIST_OBJECTS => encode(&self.list_objects(&link, call.decode()?).await?),
            OP_PUT_OBJECT => {
                self.put_object(&link, call.decode()?).await?;
                Ok(Vec::new())
            }
            OP_GET_OBJECT => encode(&self.get_object(&link, call.decode()?).await?),
            OP_REMOVE_OBJECT => encode(&self.remove_object(&link, call.decode()?).await?),
            OP_GET_OBJECT_INFO => encode(&self.get_object_info(&link, call.decode()?).await?),
            other => Err(ProviderError::unknown_operation(CONTRACT_ID, other)),
        }
    }

    async fn health(&self) -> Health {
        let probe = Path::from("sigil-health-probe");
        let check = self.store().list_with_delimiter(Some(&probe));
        match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
            Ok(Ok(_)) => Health::Healthy,
            Ok(Err(e)) => Health::Unhealthy(self.error("health check", &e).to_string()),
            Err(_) => Health::Unhealthy(format!(
                "{} did not answer within {HEALTH_TIMEOUT:?}",
                self.backend.location
            )),
        }
    }
}

#[async_trait]
impl Provider for BlobStore {
    fn contract_id(&self) -> &'static str {
        CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        self.inner.backend.kind
    }

    async fn start(&self, _host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                tokio::select! {
                    _ = inner.stop.notified() => return,
                    _ = tokio::time::sleep(SWEEP_EVERY) => inner.sweep().await,
                }
            }
        });
        Ok(())
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        let state = LinkState::new(link, self.inner.upload_timeout)?;
        if let Some(previous) = self.inner.links.insert(link, state) {
            abort_all(previous.take_all()).await;
        }
        Ok(())
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        LinkState::new(link, self.inner.upload_timeout).map(drop)
    }

    async fn link_removed(&self, link: &Link) {
        if let Some(state) = self.inner.links.remove(link) {
            abort_all(state.take_all()).await;
        }
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        self.inner.invoke(call).await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn stop(&self) {
        self.inner.stop.notify_one();
        for state in self.inner.links.drain() {
            abort_all(state.take_all()).await;
        }
    }
}
