//! Containers of objects (`wasmcloud:blobstore`); see
//! [`contracts::blobstore`](crate::contracts::blobstore) for the chunking rules.
//!
//! ```ignore
//! use sigil_actor::blobstore::BlobStore;
//!
//! let blobs = BlobStore::default();
//! blobs.create_container("reports")?;
//! blobs.put_object("reports", "2024/q1.csv", &csv, Some("text/csv"))?;
//! let header = blobs.get_object_range("reports", "2024/q1.csv", 0, 128)?;
//! for object in blobs.list_objects("reports", Some("2024/"))? {
//!     // object.object, object.size, ...
//! }
//! ```

use crate::contracts::blobstore::{self as blob, CONTRACT_ID, Chunk, ObjectMetadata};
use crate::host::{DEFAULT_LINK, call, call_unit};
use crate::{Error, Result};

/// How many bytes [`BlobStore::put_object`] sends per chunk unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;

/// A client for the blob store bound to one of the actor's links.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobStore {
    link: String,
    chunk_size: usize,
}

impl Default for BlobStore {
    /// The blob store on the `default` link.
    fn default() -> Self {
        Self::link(DEFAULT_LINK)
    }
}

impl BlobStore {
    /// The blob store on the `default` link.
    pub fn new() -> Self {
        Self::default()
    }

    /// The blob store on link `name`.
    pub fn link(name: impl Into<String>) -> Self {
        Self {
            link: name.into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// This client, writing objects in chunks of at most `bytes` (at least 1).
    #[must_use]
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// The link this client calls through.
    pub fn link_name(&self) -> &str {
        &self.link
    }

    /// Creates `container`; it is not an error if it exists.
    ///
    /// # Errors
    /// [`Error::HostCall`] when the host or the store refuses (the claims do not grant
    /// `wasmcloud:blobstore`, the link is not bound, the name is not valid there).
    pub fn create_container(&self, container: &str) -> Result<()> {
        let request = blob::CreateContainer {
            container: container.to_owned(),
        };
        call_unit(&self.link, CONTRACT_ID, blob::OP_CREATE_CONTAINER, &request)
    }

    /// Removes `container` and every object in it; it is not an error if it is missing.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`].
    pub fn remove_container(&self, container: &str) -> Result<()> {
        let request = blob::RemoveContainer {
            container: container.to_owned(),
        };
        call_unit(&self.link, CONTRACT_ID, blob::OP_REMOVE_CONTAINER, &request)
    }

    /// Whether `container` exists.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`].
    pub fn container_exists(&self, container: &str) -> Result<bool> {
        let request = blob::ContainerExists {
            container: container.to_owned(),
        };
        call(&self.link, CONTRACT_ID, blob::OP_CONTAINER_EXISTS, &request)
    }

    /// Every object in `container` whose name starts with `prefix` (all with `None`), in
    /// name order, following the pages to the end.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`]; also when the container does not exist.
    pub fn list_objects(
        &self,
        container: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<ObjectMetadata>> {
        let mut request = blob::ListObjects {
            container: container.to_owned(),
            prefix: prefix.map(str::to_owned),
            continuation: None,
            max_items: None,
        };
        let mut objects = Vec::new();
        loop {
            let page = self.list_objects_page(&request)?;
            objects.extend(page.objects);
            match page.continuation {
                None => return Ok(objects),
                Some(token) if request.continuation.as_ref() == Some(&token) => {
                    return Err(self.unexpected(
                        blob::OP_LIST_OBJECTS,
                        format!("the provider returned continuation `{token}` twice in a row"),
                    ));
                }
                Some(token) => request.continuation = Some(token),
            }
        }
    }

    /// One page of a listing, as the contract defines it.
    ///
    /// # Errors
    /// As [`BlobStore::list_objects`].
    pub fn list_objects_page(&self, request: &blob::ListObjects) -> Result<blob::ObjectList> {
        call(&self.link, CONTRACT_ID, blob::OP_LIST_OBJECTS, request)
    }

    /// Writes `bytes` as object `object` of `container`, replacing any object of that
    /// name, in chunks of the client's chunk size.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`]; also when the container does not exist. A
    /// failure part way leaves the previous object (or none).
    pub fn put_object(
        &self,
        container: &str,
        object: &str,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<()> {
        let mut offset = 0;
        loop {
            let end = bytes.len().min(offset + self.chunk_size);
            let piece = bytes.get(offset..end).unwrap_or_default();
            let request = blob::PutObject {
                chunk: Chunk {
                    container: container.to_owned(),
                    object: object.to_owned(),
                    offset: offset as u64,
                    bytes: piece.to_vec(),
                    is_last: end == bytes.len(),
                },
                content_type: if offset == 0 {
                    content_type.map(str::to_owned)
                } else {
                    None
                },
            };
            call_unit(&self.link, CONTRACT_ID, blob::OP_PUT_OBJECT, &request)?;
            if end == bytes.len() {
                return Ok(());
            }
            offset = end;
        }
    }

    /// The whole content of object `object` of `container`.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`]; also when the object does not exist, or the
    /// provider breaks the chunking rules.
    pub fn get_object(&self, container: &str, object: &str) -> Result<Vec<u8>> {
        self.read(container, object, 0, None)
    }

    /// Up to `length` bytes of object `object` of `container`, from byte `offset`: fewer
    /// when the object ends first, none when `offset` is at or past its end.
    ///
    /// # Errors
    /// As [`BlobStore::get_object`].
    pub fn get_object_range(
        &self,
        container: &str,
        object: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.read(container, object, offset, Some(length))
    }

    fn read(
        &self,
        container: &str,
        object: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>> {
        let mut content = Vec::new();
        let mut request = blob::GetObject {
            container: container.to_owned(),
            object: object.to_owned(),
            offset,
            length,
        };
        loop {
            if request.length == Some(0) {
                return Ok(content);
            }
            let chunk: Chunk = call(&self.link, CONTRACT_ID, blob::OP_GET_OBJECT, &request)?;
            if chunk.offset != request.offset {
                return Err(self.unexpected(
                    blob::OP_GET_OBJECT,
                    format!(
                        "asked for offset {}, got a chunk at {}",
                        request.offset, chunk.offset
                    ),
                ));
            }
            let received = chunk.bytes.len() as u64;
            if let Some(wanted) = request.length {
                if received > wanted {
                    return Err(self.unexpected(
                        blob::OP_GET_OBJECT,
                        format!("asked for {wanted} bytes, got {received}"),
                    ));
                }
                request.length = Some(wanted - received);
            }
            content.extend_from_slice(&chunk.bytes);
            if chunk.is_last {
                return Ok(content);
            }
            if received == 0 {
                return Err(self.unexpected(
                    blob::OP_GET_OBJECT,
                    format!(
                        "an empty chunk at offset {} that is not the last",
                        chunk.offset
                    ),
                ));
            }
            request.offset += received;
        }
    }

    /// Removes object `object` of `container`; `true` if it existed.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`].
    pub fn remove_object(&self, container: &str, object: &str) -> Result<bool> {
        let request = blob::RemoveObject {
            container: container.to_owned(),
            object: object.to_owned(),
        };
        call(&self.link, CONTRACT_ID, blob::OP_REMOVE_OBJECT, &request)
    }

    /// The metadata of object `object` of `container`, or `None` when it does not exist.
    ///
    /// # Errors
    /// As [`BlobStore::create_container`].
    pub fn object_info(&self, container: &str, object: &str) -> Result<Option<ObjectMetadata>> {
        let request = blob::GetObjectInfo {
            container: container.to_owned(),
            object: object.to_owned(),
        };
        call(&self.link, CONTRACT_ID, blob::OP_GET_OBJECT_INFO, &request)
    }

    fn unexpected(&self, operation: &str, reason: String) -> Error {
        Error::UnexpectedResponse {
            contract_id: CONTRACT_ID.to_owned(),
            operation: operation.to_owned(),
            reason,
        }
    }
}
