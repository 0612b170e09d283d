//! `wasmcloud:blobstore`: containers of named objects (buckets of files).
//!
//! Objects move in [`Chunk`]s, so neither side holds more than one chunk of a large
//! object in a single message. To write an object, send [`OP_PUT_OBJECT`] once per chunk,
//! in order: the chunk at offset 0 starts the object (replacing any object of that name),
//! each following chunk starts where the previous one ended, and the chunk marked
//! `is_last` completes it. Readers see the previous object (or none) until then. To read,
//! send [`OP_GET_OBJECT`] from offset 0, then again from the end of each chunk received,
//! until a chunk is marked `is_last`: a provider may answer with less than was asked for.
//!
//! The provider scopes containers to the calling actor's link (for example under a bucket
//! or directory root of the link's configuration).

use serde::{Deserialize, Serialize};

/// The contract ID an actor's claims must grant to use a blob store.
pub const CONTRACT_ID: &str = "wasmcloud:blobstore";

/// Creates a container; creating one that exists succeeds. Request: [`CreateContainer`].
/// Response: empty.
pub const OP_CREATE_CONTAINER: &str = "CreateContainer";
/// Removes a container and every object in it; removing a missing one succeeds. Request:
/// [`RemoveContainer`]. Response: empty.
pub const OP_REMOVE_CONTAINER: &str = "RemoveContainer";
/// Tells whether a container exists. Request: [`ContainerExists`]. Response:
/// [`ContainerExistsResponse`].
pub const OP_CONTAINER_EXISTS: &str = "ContainerExists";
/// Lists one page of a container's objects. Request: [`ListObjects`]. Response:
/// [`ObjectList`].
pub const OP_LIST_OBJECTS: &str = "ListObjects";
/// Writes one chunk of an object. Request: [`PutObject`]. Response: empty.
pub const OP_PUT_OBJECT: &str = "PutObject";
/// Reads one chunk of an object; a missing object is an error. Request: [`GetObject`].
/// Response: [`Chunk`].
pub const OP_GET_OBJECT: &str = "GetObject";
/// Removes an object. Request: [`RemoveObject`]. Response: [`RemoveObjectResponse`].
pub const OP_REMOVE_OBJECT: &str = "RemoveObject";
/// Reads an object's metadata. Request: [`GetObjectInfo`]. Response:
/// [`GetObjectInfoResponse`].
pub const OP_GET_OBJECT_INFO: &str = "GetObjectInfo";

/// The response of [`OP_CONTAINER_EXISTS`]: whether the container exists.
pub type ContainerExistsResponse = bool;
/// The response of [`OP_REMOVE_OBJECT`]: whether the object existed.
pub type RemoveObjectResponse = bool;
/// The response of [`OP_GET_OBJECT_INFO`]: the metadata, or nil when there is no such
/// object.
pub type GetObjectInfoResponse = Option<ObjectMetadata>;

/// The request of [`OP_CREATE_CONTAINER`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateContainer {
    /// The container's name.
    pub container: String,
}

/// The request of [`OP_REMOVE_CONTAINER`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoveContainer {
    /// The container's name.
    pub container: String,
}

/// The request of [`OP_CONTAINER_EXISTS`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerExists {
    /// The container's name.
    pub container: String,
}

/// The request of [`OP_LIST_OBJECTS`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListObjects {
    /// The container to list.
    pub container: String,
    /// Only list objects whose names start with this.
    pub prefix: Option<String>,
    /// Where to resume: the `continuation` of the previous page; nil for the first page.
    pub continuation: Option<String>,
    /// The most objects to return in this page; nil lets the provider choose.
    pub max_items: Option<u32>,
}

/// The response of [`OP_LIST_OBJECTS`]: one page of objects, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectList {
    /// The objects in this page.
    pub objects: Vec<ObjectMetadata>,
    /// The token to pass as [`ListObjects::continuation`] for the next page; nil when this
    /// is the last page.
    pub continuation: Option<String>,
}

/// What a blob store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectMetadata {
    /// The container holding the object.
    pub container: String,
    /// The object's name.
    pub object: String,
    /// The object's size in bytes.
    pub size: u64,
    /// The media type given when the object was written, if any.
    pub content_type: Option<String>,
    /// When the object was last written, in milliseconds since the Unix epoch, if known.
    pub last_modified_ms: Option<u64>,
}

/// A piece of an object's content, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Chunk {
    /// The container holding the object.
    pub container: String,
    /// The object's name.
    pub object: String,
    /// Where `bytes` start within the object.
    pub offset: u64,
    /// The content.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// `true` when `bytes` reach the end of the object (when writing: this chunk completes
    /// the object).
    pub is_last: bool,
}

/// The request of [`OP_PUT_OBJECT`]: one chunk of an object being written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PutObject {
    /// The chunk to write; it names the container and the object.
    pub chunk: Chunk,
    /// The object's media type, read from the chunk at offset 0 only.
    pub content_type: Option<String>,
}

/// The request of [`OP_GET_OBJECT`]: a range of an object's content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GetObject {
    /// The container holding the object.
    pub container: String,
    /// The object's name.
    pub object: String,
    /// The first byte to read; at or past the end gives an empty last chunk.
    pub offset: u64,
    /// The most bytes to read from `offset`; nil reads to the end of the object.
    pub length: Option<u64>,
}

/// The request of [`OP_REMOVE_OBJECT`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoveObject {
    /// The container holding the object.
    pub container: String,
    /// The object's name.
    pub object: String,
}

/// The request of [`OP_GET_OBJECT_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GetObjectInfo {
    /// The container holding the object.
    pub container: String,
    /// The object's name.
    pub object: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, contains_bin, round_trip};
    use crate::contracts::{decode, encode};

    fn metadata() -> ObjectMetadata {
        ObjectMetadata {
            container: "photos".to_owned(),
            object: "2024/cat.jpg".to_owned(),
            size: 1 << 33,
            content_type: Some("image/jpeg".to_owned()),
            last_modified_ms: Some(1_700_000_000_000),
        }
    }

    fn chunk() -> Chunk {
        Chunk {
            container: "photos".to_owned(),
            object: "2024/cat.jpg".to_owned(),
            offset: 1 << 20,
            bytes: vec![0xff, 0xd8, 0xff, 0xe0],
            is_last: true,
        }
    }

    #[test]
    fn requests_round_trip() {
        let container = || "photos".to_owned();
        round_trip(&CreateContainer {
            container: container(),
        });
        round_trip(&RemoveContainer {
            container: container(),
        });
        round_trip(&ContainerExists {
            container: container(),
        });
        round_trip(&ListObjects {
            container: container(),
            prefix: Some("2024/".to_owned()),
            continuation: Some("opaque".to_owned()),
            max_items: Some(100),
        });
        round_trip(&ListObjects::default());
        round_trip(&PutObject {
            chunk: chunk(),
            content_type: Some("image/jpeg".to_owned()),
        });
        round_trip(&GetObject {
            container: container(),
            object: "a".to_owned(),
            offset: 10,
            length: Some(20),
        });
        round_trip(&RemoveObject {
            container: container(),
            object: "a".to_owned(),
        });
        round_trip(&GetObjectInfo {
            container: container(),
            object: "a".to_owned(),
        });
    }

    #[test]
    fn responses_round_trip() {
        round_trip(&ObjectList {
            objects: vec![metadata(), ObjectMetadata::default()],
            continuation: None,
        });
        round_trip(&chunk());
        round_trip::<ContainerExistsResponse>(&true);
        round_trip::<RemoveObjectResponse>(&false);
        round_trip::<GetObjectInfoResponse>(&Some(metadata()));
        round_trip::<GetObjectInfoResponse>(&None);
    }

    #[test]
    fn chunk_bytes_are_msgpack_bin() {
        let chunk = chunk();
        assert!(contains_bin(&encode(&chunk).unwrap(), &chunk.bytes));
        let put = PutObject {
            chunk: chunk.clone(),
            content_type: None,
        };
        assert!(contains_bin(&encode(&put).unwrap(), &chunk.bytes));
        let big = Chunk {
            bytes: vec![7; 70_000],
            ..Chunk::default()
        };
        let wire = encode(&big).unwrap();
        assert!(
            wire.len() < 70_100,
            "a 70 kB chunk took {} bytes",
            wire.len()
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<ListObjects>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<ObjectList>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<PutObject>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<GetObject>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<Chunk>(garbage).is_err(), "{garbage:?}");
            assert!(
                decode::<GetObjectInfoResponse>(garbage).is_err(),
                "{garbage:?}"
            );
        }
    }
}
