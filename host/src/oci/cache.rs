//! The content-addressed cache of pulled manifests and modules.
//!
//! `blobs/sha256/HEX` holds a manifest or a module whose SHA-256 is `HEX`; `tags/REGISTRY/
//! REPOSITORY/TAG` holds the manifest digest a tag last resolved to (read only when the
//! registry cannot be reached). Every read checks the bytes against their digest, so a
//! corrupted or tampered entry is dropped and pulled again, never used. The directory is
//! private to its user (0700), like the compiled-module cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The `sha256:HEX` digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The hexadecimal part of a `sha256:HEX` digest, when it is one.
fn hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The on-disk cache.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// A cache in `dir`, created private when missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        create_private_dir(&dir.join("blobs").join("sha256"))?;
        create_private_dir(&dir.join("tags"))?;
        Ok(BlobCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.dir.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    /// The blob with this digest, when cached and intact. A blob whose bytes do not hash to
    /// its name is removed.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(
                path = %path.display(),
                "cached blob does not match its digest; removed, it will be pulled again"
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores `bytes` under their digest (which the caller has checked).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.blob_path(digest).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{digest} is not a sha256 digest"),
            )
        })?;
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    fn tag_path(&self, key: &str) -> PathBuf {
        self.dir.join("tags").join(key)
    }

    /// Records that a tag resolved to `digest`.
    pub fn put_tag(&self, key: &str, digest: &str) -> std::io::Result<()> {
        let path = self.tag_path(key);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        write_atomic(&path, digest.as_bytes())
    }

    /// The digest a tag last resolved to.
    pub fn tag(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.tag_path(key)).ok()?;
        let digest = text.trim();
        hex_of(digest).map(|_| digest.to_string())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes through a private temporary file renamed into place, so a reader sees the whole
/// file or none.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_checked_on_every_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(&dir.path().join("oci")).unwrap();
        let digest = sha256_digest(b"module");
        assert_eq!(
            digest,
            "sha256:120970d812836f19888625587a4606a5ad23cef31c8684e601771552548fc6b9"
        );
        assert!(cache.get(&digest).is_none());
        cache.put(&digest, b"module").unwrap();
        assert_eq!(cache.get(&digest).as_deref(), Some(&b"module"[..]));
        // Tampered on disk: dropped, not used.
        let path = cache.blob_path(&digest).unwrap();
        std::fs::write(&path, b"evil").unwrap();
        assert!(cache.get(&digest).is_none());
        assert!(!path.exists());
        assert!(cache.put("md5:00", b"x").is_err());
        cache.put_tag("r_5000/echo/1", &digest).unwrap();
        assert_eq!(cache.tag("r_5000/echo/1"), Some(digest));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
