//! A blob-store step: `store` writes a document into a container (creating the container
//! when needed) and answers where it went; `fetch` reads one back; `list` lists a
//! container. The actor names only containers and objects: the provider decides where
//! they live (a directory or an S3 bucket) and keeps them under this actor's own root.
//!
//! ```text
//! sigil call ... store '{"container": "reports", "object": "today.html", "body": "<h1>hi</h1>"}'
//! ```

use sigil_actor::prelude::*;

sigil_actor::actor! {
    "store" => store,
    "fetch" => fetch,
    "list" => list,
}

/// The request of `store`.
#[derive(Debug, Deserialize)]
struct Store {
    /// The container (created if missing).
    container: String,
    /// The object name.
    object: String,
    /// The content, as text.
    #[serde(default)]
    body: String,
    /// Its media type.
    #[serde(default)]
    content_type: Option<String>,
}

/// What `store` answers.
#[derive(Debug, Serialize, PartialEq)]
struct Stored {
    /// The container.
    container: String,
    /// The object.
    object: String,
    /// Bytes written.
    size: u64,
}

/// The request of `fetch` and `list`.
#[derive(Debug, Deserialize)]
struct Locate {
    /// The container.
    container: String,
    /// The object (`fetch`) or a name prefix (`list`).
    #[serde(default)]
    object: String,
}

/// What `fetch` answers.
#[derive(Debug, Serialize)]
struct Fetched {
    /// The content, as text (lossy for binary content).
    body: String,
    /// Its size in bytes.
    size: u64,
}

/// Stores a document.
fn store(request: Store) -> HandlerResult<Stored> {
    blobs::put(
        &request.container,
        &request.object,
        request.body.as_bytes(),
        request.content_type.as_deref(),
    )?;
    Ok(Stored {
        size: request.body.len() as u64,
        container: request.container,
        object: request.object,
    })
}

/// Reads a document back.
fn fetch(request: Locate) -> HandlerResult<Fetched> {
    let bytes = blobs::get(&request.container, &request.object)?;
    Ok(Fetched {
        size: bytes.len() as u64,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Lists the objects of a container whose names start with `object`.
fn list(request: Locate) -> HandlerResult<Vec<String>> {
    blobs::list(&request.container, &request.object)
}

#[cfg(target_arch = "wasm32")]
mod blobs {
    use sigil_actor::HandlerResult;
    use sigil_actor::prelude::BlobStore;

    pub(crate) fn put(
        container: &str,
        object: &str,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> HandlerResult<()> {
        let store = BlobStore::new();
        if !store.container_exists(container)? {
            store.create_container(container)?;
        }
        Ok(store.put_object(container, object, bytes, content_type)?)
    }

    pub(crate) fn get(container: &str, object: &str) -> HandlerResult<Vec<u8>> {
        Ok(BlobStore::new().get_object(container, object)?)
    }

    pub(crate) fn list(container: &str, prefix: &str) -> HandlerResult<Vec<String>> {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        let objects = BlobStore::new().list_objects(container, prefix)?;
        Ok(objects.into_iter().map(|o| o.object).collect())
    }
}

/// Off wasm32 there is no host: the logic above is unit-tested against this stand-in.
#[cfg(not(target_arch = "wasm32"))]
mod blobs {
    use sigil_actor::HandlerResult;

    pub(crate) fn put(_: &str, _: &str, _: &[u8], _: Option<&str>) -> HandlerResult<()> {
        Ok(())
    }

    pub(crate) fn get(_: &str, _: &str) -> HandlerResult<Vec<u8>> {
        Ok(b"stand-in".to_vec())
    }

    pub(crate) fn list(_: &str, _: &str) -> HandlerResult<Vec<String>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_reports_the_size() {
        let stored = store(Store {
            container: "c".into(),
            object: "o.txt".into(),
            body: "hello".into(),
            content_type: None,
        })
        .unwrap();
        assert_eq!(
            stored,
            Stored {
                container: "c".into(),
                object: "o.txt".into(),
                size: 5
            }
        );
    }
}
