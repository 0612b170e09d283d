//! Tests of the blobstore providers, on a local directory and on a real S3-compatible
//! server (`moto_server` from the tests' own Python environment; `.ci/start-s3` starts one,
//! `SIGIL_TEST_S3` names it).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_actor::contracts::blobstore::*;
use sigil_actor::contracts::{decode, encode};
use sigil_providers::blobstore::BlobStore;
use sigil_providers::{ActorIdentity, Invocation, Link, LinkConfig, Provider, ProviderError};

use crate::support::{actor, deadline, link, python_tools, spare_port, wait_for_port};

const MIB: usize = 1 << 20;

/// The S3 endpoint of the shared test server. Without `SIGIL_TEST_S3`, the default server
/// is started (once, with `.ci/start-s3`) when nothing answers on 127.0.0.1:9000, so that
/// `cargo test` works on a machine that has never run CI.
fn s3_endpoint() -> String {
    if let Ok(endpoint) = std::env::var("SIGIL_TEST_S3") {
        return endpoint;
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 9000).into();
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_err()
        {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/start-s3");
            let status = std::process::Command::new("bash").arg(script).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "no S3 server on 127.0.0.1:9000, and .ci/start-s3 could not start one"
            );
        }
    });
    "http://127.0.0.1:9000".to_string()
}

/// A bucket name no other test uses.
fn unique_bucket(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sigil-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Creates `bucket` on the server at `endpoint` (moto accepts unsigned requests), with a
/// plain HTTP/1.1 `PUT /<bucket>`.
async fn create_bucket(endpoint: &str, bucket: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the S3 server at {endpoint} ({e}); run .ci/start-s3 first")
        });
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {}",
        response.lines().next().unwrap_or_default()
    );
}

fn s3_config(endpoint: &str, bucket: &str) -> LinkConfig {
    LinkConfig::new()
        .with("endpoint", endpoint)
        .with("bucket", bucket)
        .with("access_key_id", "test")
        .with("secret_access_key", "test")
}

/// A provider on a new bucket of the shared S3 server.
async fn s3_store() -> BlobStore {
    let endpoint = s3_endpoint();
    let bucket = unique_bucket("t");
    create_bucket(&endpoint, &bucket).await;
    BlobStore::s3_from_config(&s3_config(&endpoint, &bucket)).unwrap()
}

/// A provider on `root` (a directory that need not exist yet).
fn fs_store(root: &Path) -> BlobStore {
    BlobStore::fs_from_config(&LinkConfig::new().with("root", root.to_str().unwrap())).unwrap()
}

/// An actor with a linked blob store.
struct Caller {
    actor: Arc<ActorIdentity>,
    link: Link,
}

impl Caller {
    async fn new(store: &BlobStore, name: &str, config: LinkConfig) -> Caller {
        let actor = actor(name, &[CONTRACT_ID]);
        let link = link(&actor, CONTRACT_ID, config);
        store.link_added(&link).await.unwrap();
        Caller { actor, link }
    }

    async fn raw(
        &self,
        store: &BlobStore,
        op: &str,
        request: &impl Serialize,
    ) -> Result<Vec<u8>, ProviderError> {
        let payload = encode(request).unwrap();
        store
            .invoke(Invocation {
                actor: &self.actor,
                link_name: "default",
                operation: op,
                payload: &payload,
                deadline: deadline(60),
            })
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        store: &BlobStore,
        op: &str,
        request: &impl Serialize,
    ) -> Result<T, ProviderError> {
        self.raw(store, op, request)
            .await
            .map(|out| decode(&out).unwrap())
    }

    async fn create(&self, s: &BlobStore, container: &str) -> Result<(), ProviderError> {
        let request = CreateContainer {
            container: container.into(),
        };
        self.raw(s, OP_CREATE_CONTAINER, &request).await.map(drop)
    }

    async fn exists(&self, s: &BlobStore, container: &str) -> Result<bool, ProviderError> {
        let request = ContainerExists {
            container: container.into(),
        };
        self.call(s, OP_CONTAINER_EXISTS, &request).await
    }

    async fn remove_container(&self, s: &BlobStore, container: &str) -> Result<(), ProviderError> {
        let request = RemoveContainer {
            container: container.into(),
        };
        self.raw(s, OP_REMOVE_CONTAINER, &request).await.map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    async fn chunk(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
        offset: usize,
        bytes: &[u8],
        is_last: bool,
        content_type: Option<&str>,
    ) -> Result<(), ProviderError> {
        let request = PutObject {
            chunk: Chunk {
                container: container.into(),
                object: object.into(),
                offset: offset as u64,
                bytes: bytes.to_vec(),
                is_last,
            },
            content_type: content_type.map(str::to_string),
        };
        self.raw(s, OP_PUT_OBJECT, &request).await.map(drop)
    }

    async fn put(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
        bytes: &[u8],
    ) -> Result<(), ProviderError> {
        self.chunk(s, container, object, 0, bytes, true, None).await
    }

    async fn get_range(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Chunk, ProviderError> {
        let request = GetObject {
            container: container.into(),
            object: object.into(),
            offset,
            length,
        };
        self.call(s, OP_GET_OBJECT, &request).await
    }

    /// The whole object, read chunk by chunk as the SDK does.
    async fn get(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut content = Vec::new();
        loop {
            let chunk = self
                .get_range(s, container, object, content.len() as u64, None)
                .await?;
            assert_eq!(chunk.offset, content.len() as u64);
            assert!(
                chunk.is_last || !chunk.bytes.is_empty(),
                "an empty chunk that is not the last"
            );
            content.extend_from_slice(&chunk.bytes);
            if chunk.is_last {
                return Ok(content);
            }
        }
    }

    async fn info(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
    ) -> Result<Option<ObjectMetadata>, ProviderError> {
        let request = GetObjectInfo {
            container: container.into(),
            object: object.into(),
        };
        self.call(s, OP_GET_OBJECT_INFO, &request).await
    }

    async fn remove(
        &self,
        s: &BlobStore,
        container: &str,
        object: &str,
    ) -> Result<bool, ProviderError> {
        let request = RemoveObject {
            container: container.into(),
            object: object.into(),
        };
        self.call(s, OP_REMOVE_OBJECT, &request).await
    }

    async fn list_page(
        &self,
        s: &BlobStore,
        container: &str,
        prefix: Option<&str>,
        continuation: Option<String>,
        max_items: Option<u32>,
    ) -> Result<ObjectList, ProviderError> {
        let request = ListObjects {
            container: container.into(),
            prefix: prefix.map(str::to_string),
            continuation,
            max_items,
        };
        self.call(s, OP_LIST_OBJECTS, &request).await
    }

    /// Every name in `container` with `prefix`, page by page, with the page sizes.
    async fn list_all(
        &self,
        s: &BlobStore,
        container: &str,
        prefix: Option<&str>,
        max_items: Option<u32>,
    ) -> (Vec<String>, Vec<usize>) {
        let mut names = Vec::new();
        let mut pages = Vec::new();
        let mut continuation = None;
        loop {
            let page = self
                .list_page(s, container, prefix, continuation, max_items)
                .await
                .unwrap();
            pages.push(page.objects.len());
            names.extend(page.objects.into_iter().map(|o| o.object));
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => return (names, pages),
            }
        }
    }
}

/// Bytes that differ at every offset that matters (so misplaced ranges show).
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

fn assert_denied(result: Result<impl std::fmt::Debug, ProviderError>, needle: &str) {
    match result {
        Err(ProviderError::Denied(text)) => {
            assert!(text.contains(needle), "{text:?} lacks {needle:?}")
        }
        other => panic!("expected a denial mentioning {needle:?}, got {other:?}"),
    }
}

/// Every operation, on whichever backend `store` uses.
async fn exercise(store: BlobStore) {
    let s = &store;
    let kind = s.kind();
    let a = Caller::new(s, "alice", LinkConfig::new()).await;

    // Containers.
    assert!(!a.exists(s, "photos").await.unwrap());
    let err = a.put(s, "photos", "x", b"1").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("container `photos` does not exist"),
        "{err}"
    );
    a.create(s, "photos").await.unwrap();
    a.create(s, "photos").await.unwrap();
    assert!(a.exists(s, "photos").await.unwrap());

    // A plain put and get, and the metadata.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    a.chunk(
        s,
        "photos",
        "2024/cat.txt",
        0,
        b"hello, world",
        true,
        Some("text/plain"),
    )
    .await
    .unwrap();
    assert_eq!(
        a.get(s, "photos", "2024/cat.txt").await.unwrap(),
        b"hello, world"
    );
    let info = a.info(s, "photos", "2024/cat.txt").await.unwrap().unwrap();
    assert_eq!(
        (info.container.as_str(), info.object.as_str(), info.size),
        ("photos", "2024/cat.txt", 12)
    );
    let modified = info.last_modified_ms.unwrap();
    assert!(
        modified + 5_000 >= before,
        "last modified {modified}, before {before}"
    );
    if kind == "s3" {
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    } else {
        assert_eq!(info.content_type, None);
    }
    assert_eq!(a.info(s, "photos", "nope").await.unwrap(), None);
    let err = a.get(s, "photos", "nope").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("object `nope` does not exist in container `photos`"),
        "{err}"
    );
    let err = a.get(s, "videos", "nope").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("container `videos` does not exist"),
        "{err}"
    );

    // Ranged reads.
    let c = a
        .get_range(s, "photos", "2024/cat.txt", 2, Some(3))
        .await
        .unwrap();
    assert_eq!(
        (c.bytes.as_slice(), c.offset, c.is_last),
        (&b"llo"[..], 2, false)
    );
    let c = a
        .get_range(s, "photos", "2024/cat.txt", 7, None)
        .await
        .unwrap();
    assert_eq!((c.bytes.as_slice(), c.is_last), (&b"world"[..], true));
    let c = a
        .get_range(s, "photos", "2024/cat.txt", 7, Some(5))
        .await
        .unwrap();
    assert_eq!((c.bytes.as_slice(), c.is_last), (&b"world"[..], true));
    let c = a
        .get_range(s, "photos", "2024/cat.txt", 7, Some(100))
        .await
        .unwrap();
    assert_eq!((c.bytes.as_slice(), c.is_last), (&b"world"[..], true));
    for offset in [12, 13, 1000] {
        let c = a
            .get_range(s, "photos", "2024/cat.txt", offset, None)
            .await
            .unwrap();
        assert!(
            c.bytes.is_empty() && c.is_last && c.offset == offset,
            "{c:?}"
        );
    }
    let c = a
        .get_range(s, "photos", "2024/cat.txt", 0, Some(0))
        .await
        .unwrap();
    assert!(c.bytes.is_empty() && !c.is_last, "{c:?}");

    // An empty object, and replacing an object.
    a.put(s, "photos", "empty", b"").await.unwrap();
    assert_eq!(a.get(s, "photos", "empty").await.unwrap(), b"");
    assert_eq!(a.info(s, "photos", "empty").await.unwrap().unwrap().size, 0);
    a.put(s, "photos", "2024/cat.txt", b"meow").await.unwrap();
    assert_eq!(a.get(s, "photos", "2024/cat.txt").await.unwrap(), b"meow");

    // Removing objects.
    assert!(a.remove(s, "photos", "empty").await.unwrap());
    assert!(!a.remove(s, "photos", "empty").await.unwrap());
    assert_eq!(a.info(s, "photos", "empty").await.unwrap(), None);

    // A chunked put of more than 5 MiB in 1 MiB chunks: a multipart upload.
    let big = pattern(6 * MIB + 12_345);
    let chunks: Vec<&[u8]> = big.chunks(MIB).collect();
    for (i, piece) in chunks.iter().enumerate() {
        let last = i == chunks.len() - 1;
        if last {
            // Readers do not see the object before its last chunk.
            assert_eq!(a.info(s, "photos", "big.bin").await.unwrap(), None);
        }
        a.chunk(
            s,
            "photos",
            "big.bin",
            i * MIB,
            piece,
            last,
            Some("application/octet-stream"),
        )
        .await
        .unwrap();
    }
    let info = a.info(s, "photos", "big.bin").await.unwrap().unwrap();
    assert_eq!(info.size, big.len() as u64);
    if kind == "s3" {
        assert_eq!(
            info.content_type.as_deref(),
            Some("application/octet-stream")
        );
    }
    // Read back in chunks (the provider answers with at most 1 MiB at a time).
    let c = a.get_range(s, "photos", "big.bin", 0, None).await.unwrap();
    assert_eq!(c.bytes.len(), MIB);
    assert!(!c.is_last);
    assert_eq!(a.get(s, "photos", "big.bin").await.unwrap(), big);
    // Ranges across the first part boundary and at the end.
    let at = 5 * MIB - 10;
    let c = a
        .get_range(s, "photos", "big.bin", at as u64, Some(20))
        .await
        .unwrap();
    assert_eq!(c.bytes, &big[at..at + 20]);
    let at = big.len() - 7;
    let c = a
        .get_range(s, "photos", "big.bin", at as u64, Some(100))
        .await
        .unwrap();
    assert_eq!((c.bytes.as_slice(), c.is_last), (&big[at..], true));

    // Replacing it with a chunked write: the old object stays until the new one completes.
    let small = pattern(3 * MIB);
    a.chunk(s, "photos", "big.bin", 0, &small[..MIB], false, None)
        .await
        .unwrap();
    assert_eq!(
        a.info(s, "photos", "big.bin").await.unwrap().unwrap().size,
        big.len() as u64
    );
    // Out of order: refused, naming what was expected.
    let err = a
        .chunk(
            s,
            "photos",
            "big.bin",
            2 * MIB,
            &small[2 * MIB..],
            true,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("expected offset 1048576, got offset 2097152"),
        "{err}"
    );
    // The session survives a refused chunk.
    a.chunk(
        s,
        "photos",
        "big.bin",
        MIB,
        &small[MIB..2 * MIB],
        false,
        None,
    )
    .await
    .unwrap();
    a.chunk(
        s,
        "photos",
        "big.bin",
        2 * MIB,
        &small[2 * MIB..],
        true,
        None,
    )
    .await
    .unwrap();
    assert_eq!(a.get(s, "photos", "big.bin").await.unwrap(), small);
    // A chunk with no upload open.
    let err = a
        .chunk(s, "photos", "big.bin", MIB, b"x", true, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no upload of object `big.bin`"),
        "{err}"
    );
    // Restarting at offset 0 replaces an open upload.
    a.chunk(s, "photos", "restart", 0, b"abc", false, None)
        .await
        .unwrap();
    a.chunk(s, "photos", "restart", 0, b"xyz", false, None)
        .await
        .unwrap();
    a.chunk(s, "photos", "restart", 3, b"!", true, None)
        .await
        .unwrap();
    assert_eq!(a.get(s, "photos", "restart").await.unwrap(), b"xyz!");

    // Listing: name order, prefixes, pages; the container marker stays hidden.
    a.create(s, "list").await.unwrap();
    let names = ["a/1", "a/2", "a/3", "ab", "b/1", "c", "a/sub/x"];
    for name in names {
        a.put(s, "list", name, name.as_bytes()).await.unwrap();
    }
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    let page = a.list_page(s, "list", None, None, None).await.unwrap();
    assert_eq!(page.continuation, None);
    let listed: Vec<&str> = page.objects.iter().map(|o| o.object.as_str()).collect();
    assert_eq!(listed, sorted);
    let first = &page.objects[0];
    assert_eq!((first.container.as_str(), first.size), ("list", 3));
    assert!(first.last_modified_ms.is_some());
    assert_eq!(
        a.list_all(s, "list", None, Some(2)).await,
        (sorted.clone(), vec![2, 2, 2, 1])
    );
    assert_eq!(
        a.list_all(s, "list", Some("a/"), Some(2)).await,
        (
            vec!["a/1".into(), "a/2".into(), "a/3".into(), "a/sub/x".into()],
            vec![2, 2]
        )
    );
    assert_eq!(
        a.list_all(s, "list", Some("a"), Some(3)).await.0,
        vec!["a/1", "a/2", "a/3", "a/sub/x", "ab"]
    );
    assert_eq!(
        a.list_all(s, "list", Some("a/s"), None).await.0,
        vec!["a/sub/x"]
    );
    assert_eq!(a.list_all(s, "list", Some("b"), None).await.0, vec!["b/1"]);
    assert!(a.list_all(s, "list", Some("zzz"), None).await.0.is_empty());
    assert!(a.list_all(s, "list", Some("../"), None).await.0.is_empty());
    let err = a
        .list_page(s, "list", None, None, Some(0))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest { .. }), "{err}");
    let err = a
        .list_page(s, "nothing", None, None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("container `nothing` does not exist"),
        "{err}"
    );

    // Removing a container removes its objects; removing a missing one succeeds.
    a.remove_container(s, "list").await.unwrap();
    assert!(!a.exists(s, "list").await.unwrap());
    assert!(a.list_page(s, "list", None, None, None).await.is_err());
    assert_eq!(a.info(s, "list", "a/1").await.unwrap(), None);
    a.remove_container(s, "list").await.unwrap();
    a.create(s, "list").await.unwrap();
    assert!(a.list_all(s, "list", None, None).await.0.is_empty());

    // The link's size limit, for plain and chunked writes.
    let small_link =
        Caller::new(s, "bob", LinkConfig::new().with("max_object_bytes", "1KiB")).await;
    small_link.create(s, "c").await.unwrap();
    small_link.put(s, "c", "ok", &[1; 1024]).await.unwrap();
    assert_denied(
        small_link.put(s, "c", "big", &[1; 1025]).await,
        "max_object_bytes",
    );
    small_link
        .chunk(s, "c", "big", 0, &[1; 1000], false, None)
        .await
        .unwrap();
    assert_denied(
        small_link
            .chunk(s, "c", "big", 1000, &[1; 25], true, None)
            .await,
        "max_object_bytes",
    );
    assert_eq!(small_link.info(s, "c", "big").await.unwrap(), None);

    // Unknown operations and keys.
    let err = a
        .raw(s, "Rename", &CreateContainer::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::UnknownOperation { .. }),
        "{err}"
    );
    let bad = link(
        &actor("carol", &[CONTRACT_ID]),
        CONTRACT_ID,
        LinkConfig::new().with("roots", "x"),
    );
    assert!(matches!(
        s.link_added(&bad).await,
        Err(ProviderError::Config(_))
    ));
    let bad = link(
        &actor("carol", &[CONTRACT_ID]),
        CONTRACT_ID,
        LinkConfig::new().with("root", "../x"),
    );
    assert!(matches!(
        s.link_added(&bad).await,
        Err(ProviderError::Config(_))
    ));

    assert!(s.health().await.is_healthy());
    s.link_removed(&a.link).await;
    let err = a.exists(s, "photos").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotLinked { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir.path().join("blobs"));
    assert_eq!(store.kind(), "fs");
    exercise(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_s3() {
    let store = s3_store().await;
    assert_eq!(store.kind(), "s3");
    exercise(store).await;
}

/// Two actors with the same container and object names see only their own; no name gets
/// outside the link's root.
async fn isolation(store: BlobStore) {
    let s = &store;
    let a = Caller::new(s, "alice", LinkConfig::new()).await;
    let b = Caller::new(s, "bob", LinkConfig::new()).await;
    let rooted = Caller::new(s, "carol", LinkConfig::new().with("root", "tenants/carol")).await;
    for (caller, content) in [(&a, "alice's"), (&b, "bob's"), (&rooted, "carol's")] {
        caller.create(s, "shared").await.unwrap();
        caller
            .put(s, "shared", "secret.txt", content.as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(a.get(s, "shared", "secret.txt").await.unwrap(), b"alice's");
    assert_eq!(b.get(s, "shared", "secret.txt").await.unwrap(), b"bob's");
    assert_eq!(
        rooted.get(s, "shared", "secret.txt").await.unwrap(),
        b"carol's"
    );
    a.put(s, "shared", "only-alice", b"x").await.unwrap();
    assert_eq!(
        a.list_all(s, "shared", None, None).await.0,
        vec!["only-alice", "secret.txt"]
    );
    assert_eq!(
        b.list_all(s, "shared", None, None).await.0,
        vec!["secret.txt"]
    );
    assert_eq!(b.info(s, "shared", "only-alice").await.unwrap(), None);
    assert!(!b.remove(s, "shared", "only-alice").await.unwrap());
    assert!(a.remove(s, "shared", "secret.txt").await.unwrap());
    assert_eq!(b.get(s, "shared", "secret.txt").await.unwrap(), b"bob's");
    a.remove_container(s, "shared").await.unwrap();
    assert!(b.exists(s, "shared").await.unwrap());
    assert_eq!(b.get(s, "shared", "secret.txt").await.unwrap(), b"bob's");

    // Names that try to leave the container or the root are refused before any I/O.
    let bad_objects = [
        ("../secret.txt", "path traversal"),
        ("../../MBOB/shared/secret.txt", "path traversal"),
        ("a/../../b", "path traversal"),
        ("a/./b", "path traversal"),
        (".", "path traversal"),
        ("..", "path traversal"),
        ("/etc/passwd", "path traversal"),
        ("/MBOB/shared/secret.txt", "path traversal"),
        ("..\\secret.txt", "path traversal"),
        ("a\\b", "path traversal"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty"),
        ("a\nb", "control characters"),
        (".sigil-container", "reserved"),
    ];
    for (object, why) in bad_objects {
        assert_denied(a.put(s, "shared", object, b"x").await, why);
        assert_denied(
            a.chunk(s, "shared", object, 0, b"x", false, None).await,
            why,
        );
        assert_denied(a.get_range(s, "shared", object, 0, None).await, why);
        assert_denied(a.info(s, "shared", object).await, why);
        assert_denied(a.remove(s, "shared", object).await, why);
    }
    let bad_containers = [
        ("..", "path traversal"),
        (".", "path traversal"),
        ("../MBOB", "path traversal"),
        ("a/b", "path traversal"),
        ("..\\x", "path traversal"),
        ("", "empty"),
        ("Shared", "lower-case"),
        ("x y", "lower-case"),
    ];
    for (container, why) in bad_containers {
        assert_denied(a.create(s, container).await, why);
        assert_denied(a.exists(s, container).await, why);
        assert_denied(a.remove_container(s, container).await, why);
        assert_denied(a.list_page(s, container, None, None, None).await, why);
        assert_denied(a.put(s, container, "x", b"x").await, why);
        assert_denied(a.get_range(s, container, "x", 0, None).await, why);
    }
    // Bob's object is untouched.
    assert_eq!(b.get(s, "shared", "secret.txt").await.unwrap(), b"bob's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_isolated_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    isolation(fs_store(&root)).await;
    // Nothing was created outside the root, and inside it only under each link's root.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec!["blobs"]);
    let mut inside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    inside.sort();
    assert_eq!(inside, vec!["MALICE", "MBOB", "tenants"]);
    fn files(dir: &Path, out: &mut Vec<String>, base: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out, base);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut all = Vec::new();
    files(&root, &mut all, &root);
    all.sort();
    assert_eq!(
        all,
        vec![
            "MBOB/shared/.sigil-container",
            "MBOB/shared/secret.txt",
            "tenants/carol/shared/.sigil-container",
            "tenants/carol/shared/secret.txt",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_isolated_on_s3() {
    isolation(s3_store().await).await;
}

/// A `moto_server` of this test's own, in a process group of its own.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(port: u16) -> Moto {
        use std::os::unix::process::CommandExt;
        let moto = python_tools().join("bin/moto_server");
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto.display()));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
        );
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_s3_server_fails_calls_promptly_and_recovery_needs_no_restart() {
    let port = spare_port();
    let mut moto = Moto::start(port);
    let endpoint = moto.endpoint();
    create_bucket(&endpoint, "fault").await;
    let store = BlobStore::s3_from_config(&s3_config(&endpoint, "fault")).unwrap();
    let s = &store;
    let a = Caller::new(s, "alice", LinkConfig::new()).await;
    a.create(s, "c").await.unwrap();
    a.put(s, "c", "o", b"before").await.unwrap();
    assert_eq!(a.get(s, "c", "o").await.unwrap(), b"before");
    assert!(s.health().await.is_healthy());

    moto.kill();
    let started = Instant::now();
    let err = a.get(s, "c", "o").await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "the call took {took:?}");
    assert!(err.is_unavailable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("may or may not have been applied"), "{text}");
    assert!(
        text.contains("unreachable") && text.contains(&endpoint),
        "{text}"
    );
    let started = Instant::now();
    assert_denied_or_unavailable(a.put(s, "c", "o2", b"x").await);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    match s.health().await {
        sigil_providers::Health::Unhealthy(why) => assert!(why.contains("unreachable"), "{why}"),
        healthy => panic!("health is {healthy:?} with the server down"),
    }

    // The server comes back (empty: moto keeps nothing), and so do the calls.
    let _moto = Moto::start(port);
    create_bucket(&endpoint, "fault").await;
    assert!(s.health().await.is_healthy());
    a.create(s, "c").await.unwrap();
    a.put(s, "c", "o", b"after").await.unwrap();
    assert_eq!(a.get(s, "c", "o").await.unwrap(), b"after");
}

fn assert_denied_or_unavailable(result: Result<(), ProviderError>) {
    match result {
        Err(e) if e.is_unavailable() => {}
        other => panic!("expected an unavailable error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_and_unlinked_uploads_are_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = fs_store(&root);
    store
        .start(Arc::new(sigil_providers::NoActors))
        .await
        .unwrap();
    let s = &store;
    let a = Caller::new(
        s,
        "alice",
        LinkConfig::new().with("upload_timeout", "300ms"),
    )
    .await;
    a.create(s, "c").await.unwrap();
    // Past 5 MiB, so that a multipart upload (a staging file on disk) exists.
    let data = pattern(6 * MIB);
    a.chunk(s, "c", "o", 0, &data[..6 * MIB - 1], false, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = a
        .chunk(s, "c", "o", 6 * MIB - 1, &data[6 * MIB - 1..], true, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no upload of object `o`"), "{err}");
    assert_eq!(a.info(s, "c", "o").await.unwrap(), None);
    // The staging file went with the upload.
    let staged: Vec<_> = std::fs::read_dir(root.join("MALICE/c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".sigil-container")
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Removing the link aborts its uploads too.
    a.chunk(s, "c", "p", 0, &data, false, None).await.unwrap();
    s.link_removed(&a.link).await;
    let staged: Vec<_> = std::fs::read_dir(root.join("MALICE/c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".sigil-container")
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    s.link_added(&a.link).await.unwrap();
    let err = a
        .chunk(s, "c", "p", 6 * MIB, b"x", true, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no upload"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provider_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for config in [
        LinkConfig::new(),
        LinkConfig::new().with("root", root).with("bucket", "b"),
        LinkConfig::new()
            .with("root", root)
            .with("upload_timeout", "forever"),
    ] {
        let err = BlobStore::fs_from_config(&config).unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)), "{config:?}: {err}");
    }
    for config in [
        LinkConfig::new(),
        LinkConfig::new().with("bucket", "b").with("root", "x"),
        LinkConfig::new()
            .with("bucket", "b")
            .with("access_key_id", "only-one"),
        LinkConfig::new()
            .with("bucket", "b")
            .with("endpoint", "ftp://x"),
        LinkConfig::new()
            .with("bucket", "b")
            .with("endpoint", "http://127.0.0.1:9000")
            .with("allow_http", "false"),
        LinkConfig::new()
            .with("bucket", "b")
            .with("path_style", "yes"),
    ] {
        let err = BlobStore::s3_from_config(&config).unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)), "{config:?}: {err}");
    }
}
