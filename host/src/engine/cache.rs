//! On-disk cache of compiled actors, so a restarted host starts an actor without compiling.
//!
//! `Module::deserialize` trusts its input completely: loading a compiled artifact is running
//! native code. So the cache directory must belong to the host's user and be closed to
//! everyone else (0700), each entry is written atomically (temporary file, then rename), and
//! each entry carries a BLAKE3 keyed hash (a MAC) under a 32-byte key that only this host's
//! user can read. An entry whose MAC does not match is deleted and recompiled, never loaded.
//! BLAKE3's keyed mode is used rather than HMAC-SHA256 because it is a MAC by design and
//! several times faster, which matters on the cold-start path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SIGILC02";
/// Flag byte, MAC, magic.
const TRAILER: usize = 1 + 32 + MAGIC.len();
const KEY_FILE: &str = "cache.key";

/// A compiled-module cache in one private directory.
#[derive(Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl ModuleCache {
    /// Opens (creating if needed) a cache directory, refusing one other users can reach.
    pub(crate) fn open(dir: &Path) -> Result<Self, String> {
        create_private_dir(dir)?;
        check_private(dir, 0o077)?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The cache directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The entry stored under `name`, if present and authentic: its flag byte and the open
    /// file, whose first `len` bytes are the payload. A forged or corrupted entry is removed.
    ///
    /// The file is returned open (not re-opened by path) so that what the caller maps is
    /// the very file that was authenticated; entries are only ever replaced by rename, never
    /// rewritten in place.
    pub(crate) fn get(&self, name: &str) -> Option<(u8, fs::File, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path(name);
        let mut file = fs::File::open(&path).ok()?;
        let authentic = (|| -> std::io::Result<Option<(u8, u64)>> {
            let len = file.metadata()?.len();
            let Some(payload_len) = len.checked_sub(TRAILER as u64) else {
                return Ok(None);
            };
            let mut trailer = [0u8; TRAILER];
            file.seek(SeekFrom::Start(payload_len))?;
            file.read_exact(&mut trailer)?;
            let (flag, rest) = (trailer[0], &trailer[1..]);
            let (mac, magic) = rest.split_at(32);
            if magic != MAGIC {
                return Ok(None);
            }
            let payload_len_usize =
                usize::try_from(payload_len).map_err(|_| std::io::ErrorKind::InvalidData)?;
            // SAFETY: a read-only private mapping of a file in our private cache directory.
            // Entries are replaced by rename and never modified in place, so the mapped
            // bytes do not change while they are hashed. Mapping instead of reading saves a
            // copy and fresh pages on the cold-start path.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file)? };
            let payload = map
                .get(..payload_len_usize)
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            let mut hasher = self.hasher(name);
            hasher.update(payload);
            hasher.update(&[flag]);
            let mut stored = [0u8; 32];
            stored.copy_from_slice(mac);
            // `blake3::Hash` compares in constant time.
            let ok = hasher.finalize() == blake3::Hash::from_bytes(stored);
            file.seek(SeekFrom::Start(0))?;
            Ok(ok.then_some((flag, payload_len)))
        })();
        match authentic {
            Ok(Some((flag, len))) => Some((flag, file, len)),
            Ok(None) | Err(_) => {
                tracing::warn!(path = %path.display(), "compiled-module cache entry failed its MAC check; removing it and recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    fn hasher(&self, name: &str) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h
    }

    /// Stores `payload` and a flag byte under `name`, atomically. The payload comes first
    /// (a compiled artifact is mapped from offset 0), then a trailer: flag, MAC, magic.
    pub(crate) fn put(&self, name: &str, flag: u8, payload: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut hasher = self.hasher(name);
        hasher.update(payload);
        hasher.update(&[flag]);
        let result = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(payload)?;
            file.write_all(&[flag])?;
            file.write_all(hasher.finalize().as_bytes())?;
            file.write_all(MAGIC)?;
            file.sync_data()?;
            fs::rename(&tmp, self.path(name))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create cache directory {}: {e}", dir.display()))
}

#[cfg(unix)]
fn check_private(path: &Path, forbidden_bits: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        fs::symlink_metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this host's user (uid {me})",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & forbidden_bits != 0 {
        return Err(format!(
            "{} has mode {mode:o}; other users could plant compiled code there (chmod {:o} {})",
            path.display(),
            mode & !forbidden_bits,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _forbidden_bits: u32) -> Result<(), String> {
    Ok(())
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    let read = |path: &Path| -> Result<[u8; 32], String> {
        check_private(path, 0o077)?;
        let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        bytes
            .try_into()
            .map_err(|_| format!("{} is not a 32-byte key", path.display()))
    };
    if path.exists() {
        return read(path);
    }
    let key: [u8; 32] = rand::random();
    match private_file(path) {
        Ok(mut f) => {
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        // Another host process created it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(&dir.path().join("c")).unwrap();
        let read = |c: &ModuleCache, name: &str| {
            use std::io::Read;
            c.get(name).map(|(flag, mut f, len)| {
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                v.truncate(len as usize);
                (flag, v)
            })
        };
        cache.put("m", 1, b"compiled code").unwrap();
        assert_eq!(read(&cache, "m").unwrap(), (1, b"compiled code".to_vec()));
        // Same bytes under another name do not authenticate.
        fs::copy(cache.path("m"), cache.path("other")).unwrap();
        assert!(read(&cache, "other").is_none());
        assert!(!cache.path("other").exists(), "forged entry removed");
        // Flip one payload byte.
        let mut bytes = fs::read(cache.path("m")).unwrap();
        bytes[0] ^= 1;
        fs::write(cache.path("m"), &bytes).unwrap();
        assert!(read(&cache, "m").is_none());
        // The flag is authenticated too.
        cache.put("m", 1, b"x").unwrap();
        let mut bytes = fs::read(cache.path("m")).unwrap();
        bytes[1] = 0;
        fs::write(cache.path("m"), &bytes).unwrap();
        assert!(read(&cache, "m").is_none());
        // A new handle on the same directory reuses the key.
        cache.put("m", 0, b"again").unwrap();
        let reopened = ModuleCache::open(&dir.path().join("c")).unwrap();
        assert_eq!(read(&reopened, "m").unwrap(), (0, b"again".to_vec()));
        // Truncated entries are refused.
        fs::write(cache.path("m"), b"short").unwrap();
        assert!(read(&reopened, "m").is_none());
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ModuleCache::open(&open).unwrap_err();
        assert!(err.contains("other users"), "{err}");
    }
}
