//! nkeys key pairs: the kinds Sigil uses, seed files in a key directory, and where keys load from.
//!
//! A key pair is an Ed25519 key encoded the NATS way: public keys start with a letter naming
//! their kind (`A` account, `M` module, `V` service/provider, `O` operator, `N` server), seeds
//! start with `S` and the same letter. Seeds are secrets: this module writes them only to
//! files of mode 0600 in a directory of mode 0700, refuses to read a seed file that others can
//! read, and never prints or logs one.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nkeys::{KeyPair, KeyPairType};

use crate::error::{Error, Result};

/// Environment variable naming the key directory.
pub const KEYS_DIR_ENV: &str = "SIGIL_KEYS";

/// The kinds of nkeys Sigil uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyKind {
    /// Issues (signs) actor modules and provider tokens. Prefix `A`.
    Account,
    /// The identity of one actor module. Prefix `M`.
    Module,
    /// The identity of a capability provider (service). Prefix `V`.
    Service,
    /// Vouches for accounts. Prefix `O`.
    Operator,
    /// The identity of a host (server). Prefix `N`.
    Server,
    /// Signs a lattice's requests to provider plugins; shared by its hosts. Prefix `C`.
    Cluster,
}

impl KeyKind {
    /// Every kind, in display order.
    pub const ALL: [KeyKind; 6] = [
        KeyKind::Account,
        KeyKind::Module,
        KeyKind::Service,
        KeyKind::Operator,
        KeyKind::Server,
        KeyKind::Cluster,
    ];

    /// The letter public keys of this kind start with.
    pub fn prefix(self) -> char {
        match self {
            KeyKind::Account => 'A',
            KeyKind::Module => 'M',
            KeyKind::Service => 'V',
            KeyKind::Operator => 'O',
            KeyKind::Server => 'N',
            KeyKind::Cluster => 'C',
        }
    }

    /// The lower-case name used in file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Account => "account",
            KeyKind::Module => "module",
            KeyKind::Service => "service",
            KeyKind::Operator => "operator",
            KeyKind::Server => "server",
            KeyKind::Cluster => "cluster",
        }
    }

    /// The kind of a public key, judged by its prefix and checksum; `None` if it is not a
    /// valid public key of a kind Sigil uses.
    pub fn of_public_key(key: &str) -> Option<KeyKind> {
        let (prefix, _) = nkeys::from_public_key(key).ok()?;
        Self::from_nkeys(&KeyPairType::from(prefix))
    }

    fn from_nkeys(t: &KeyPairType) -> Option<KeyKind> {
        match t {
            KeyPairType::Account => Some(KeyKind::Account),
            KeyPairType::Module => Some(KeyKind::Module),
            KeyPairType::Service => Some(KeyKind::Service),
            KeyPairType::Operator => Some(KeyKind::Operator),
            KeyPairType::Server => Some(KeyKind::Server),
            KeyPairType::Cluster => Some(KeyKind::Cluster),
            _ => None,
        }
    }

    fn to_nkeys(self) -> KeyPairType {
        match self {
            KeyKind::Account => KeyPairType::Account,
            KeyKind::Module => KeyPairType::Module,
            KeyKind::Service => KeyPairType::Service,
            KeyKind::Operator => KeyPairType::Operator,
            KeyKind::Server => KeyPairType::Server,
            KeyKind::Cluster => KeyPairType::Cluster,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "account" | "a" => Ok(KeyKind::Account),
            "module" | "actor" | "m" => Ok(KeyKind::Module),
            "service" | "provider" | "v" => Ok(KeyKind::Service),
            "operator" | "o" => Ok(KeyKind::Operator),
            "server" | "host" | "n" => Ok(KeyKind::Server),
            "cluster" | "c" => Ok(KeyKind::Cluster),
            _ => Err(Error::InvalidKey {
                reason: format!(
                    "unknown key kind {s:?}; expected one of account, module, service, operator, server, cluster"
                ),
            }),
        }
    }
}

/// Generates a new key pair of the given kind.
pub fn generate(kind: KeyKind) -> KeyPair {
    KeyPair::new(kind.to_nkeys())
}

/// The kind of a key pair (seeded or public-only), if Sigil uses that kind.
pub fn kind_of(kp: &KeyPair) -> Option<KeyKind> {
    KeyKind::from_nkeys(&kp.key_pair_type())
}

/// Decodes a seed string (`S...`) into a key pair, checking its kind when one is expected.
/// The error never contains the seed.
pub fn from_seed(seed: &str, expected: Option<KeyKind>, role: &'static str) -> Result<KeyPair> {
    let kp = KeyPair::from_seed(seed.trim()).map_err(|e| Error::InvalidKey {
        reason: format!("{role}: not a valid nkeys seed ({e})"),
    })?;
    check_kind(&kp, expected, role)?;
    Ok(kp)
}

/// Checks that a public key string is a valid key of the expected kind.
pub fn parse_public_key(key: &str, expected: KeyKind, role: &'static str) -> Result<String> {
    match KeyKind::of_public_key(key) {
        Some(kind) if kind == expected => Ok(key.to_string()),
        Some(kind) => Err(Error::WrongKeyKind {
            role,
            expected,
            found: format!("the {kind} key {key}"),
        }),
        None => Err(Error::InvalidKey {
            reason: format!("{role}: {key:?} is not a valid nkeys public key"),
        }),
    }
}

fn check_kind(kp: &KeyPair, expected: Option<KeyKind>, role: &'static str) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    if kind_of(kp) == Some(expected) {
        Ok(())
    } else {
        Err(Error::WrongKeyKind {
            role,
            expected,
            found: format!("the key {}", kp.public_key()),
        })
    }
}

/// Reads a seed file, refusing one that other users can read, and checks its kind.
pub fn load_seed_file(
    path: &Path,
    expected: Option<KeyKind>,
    role: &'static str,
) -> Result<KeyPair> {
    check_private(path)?;
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // A seed file holds the seed on its first non-empty line; wash and nsc write it that way.
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    from_seed(seed, expected, role).map_err(|e| match e {
        Error::InvalidKey { reason } => Error::InvalidKey {
            reason: format!("{reason} in {}", path.display()),
        },
        other => other,
    })
}

/// Reads a seed from an environment variable and checks its kind.
pub fn load_seed_env(var: &str, expected: Option<KeyKind>, role: &'static str) -> Result<KeyPair> {
    let seed = std::env::var(var).map_err(|_| Error::MissingSeedVariable {
        var: var.to_string(),
    })?;
    from_seed(&seed, expected, role)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureSeedFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

/// Where a key pair comes from, as written on a command line or in a config file.
///
/// * `env:NAME` — the seed is in the environment variable `NAME`;
/// * a path (it contains `/` or ends in `.nk`) — a seed file;
/// * anything else — the name of a key in the key directory (`NAME_<kind>.nk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A seed file.
    File(PathBuf),
    /// An environment variable holding a seed.
    Env(String),
    /// A named key in the key store.
    Stored(String),
}

impl FromStr for KeySource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() {
                return Err(Error::InvalidKey {
                    reason: "`env:` needs a variable name, e.g. env:SIGIL_ISSUER_SEED".into(),
                });
            }
            return Ok(KeySource::Env(var.to_string()));
        }
        if s.starts_with('S') && nkeys::decode_seed(s).is_ok() {
            return Err(Error::InvalidKey {
                reason: "a seed was given on the command line, where other users can read it; \
                         put it in a file (mode 0600) or in an environment variable (env:NAME)"
                    .into(),
            });
        }
        if s.contains(std::path::MAIN_SEPARATOR) || s.contains('/') || s.ends_with(".nk") {
            return Ok(KeySource::File(PathBuf::from(s)));
        }
        if s.is_empty() {
            return Err(Error::InvalidKey {
                reason: "empty key source".into(),
            });
        }
        Ok(KeySource::Stored(s.to_string()))
    }
}

impl KeySource {
    /// Loads the key pair, checking that it is of the expected kind.
    pub fn load(&self, store: &KeyStore, kind: KeyKind, role: &'static str) -> Result<KeyPair> {
        match self {
            KeySource::File(path) => load_seed_file(path, Some(kind), role),
            KeySource::Env(var) => load_seed_env(var, Some(kind), role),
            KeySource::Stored(name) => store.load(kind, name),
        }
    }
}

/// A key directory holding seed files named `<name>_<kind>.nk`.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

/// One key found in a [`KeyStore`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredKey {
    /// The key's name (the file name without `_<kind>.nk`).
    pub name: String,
    /// The key's kind.
    #[serde(serialize_with = "ser_kind")]
    pub kind: KeyKind,
    /// The public key.
    pub public_key: String,
    /// The seed file.
    pub path: PathBuf,
}

fn ser_kind<S: serde::Serializer>(k: &KeyKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

impl KeyStore {
    /// A store in the given directory (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyStore { dir: dir.into() }
    }

    /// The default store: `$SIGIL_KEYS`, else `~/.sigil/keys`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os(KEYS_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::new(dir));
        }
        let home = std::env::home_dir().ok_or(Error::NoKeyDirectory)?;
        Ok(Self::new(home.join(".sigil").join("keys")))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seed file path of the key `name` of `kind`.
    pub fn path_of(&self, kind: KeyKind, name: &str) -> PathBuf {
        self.dir.join(format!("{name}_{}.nk", kind.name()))
    }

    /// Generates a key and writes its seed file; fails if that key exists already.
    pub fn generate(&self, kind: KeyKind, name: &str) -> Result<(KeyPair, PathBuf)> {
        validate_name(name)?;
        let kp = generate(kind);
        let path = self.path_of(kind, name);
        let seed = kp.seed().map_err(|e| Error::InvalidKey {
            reason: format!("cannot encode the new seed: {e}"),
        })?;
        self.write_seed(&path, &seed)?;
        Ok((kp, path))
    }

    /// Loads the key `name` of `kind`.
    pub fn load(&self, kind: KeyKind, name: &str) -> Result<KeyPair> {
        validate_name(name)?;
        let path = self.path_of(kind, name);
        if !path.exists() {
            return Err(Error::KeyNotFound {
                kind,
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        }
        load_seed_file(&path, Some(kind), "the stored key")
    }

    /// Loads the key `name` of `kind`, generating it first if it does not exist.
    /// The flag is true when the key was generated.
    pub fn load_or_generate(&self, kind: KeyKind, name: &str) -> Result<(KeyPair, bool)> {
        match self.load(kind, name) {
            Ok(kp) => Ok((kp, false)),
            Err(Error::KeyNotFound { .. }) => match self.generate(kind, name) {
                Ok((kp, _)) => Ok((kp, true)),
                // Another process created it between our two steps: use theirs.
                Err(Error::KeyExists { .. }) => Ok((self.load(kind, name)?, false)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Every key in the store, sorted by kind then name. Files that are not seed files of a
    /// known kind are skipped; a directory that does not exist holds no keys.
    pub fn list(&self) -> Result<Vec<StoredKey>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|f| f.strip_suffix(".nk")) else {
                continue;
            };
            let Some((name, kind)) = stem
                .rsplit_once('_')
                .and_then(|(n, k)| Some((n, k.parse::<KeyKind>().ok()?)))
            else {
                continue;
            };
            let path = entry.path();
            let kp = load_seed_file(&path, Some(kind), "the stored key")?;
            keys.push(StoredKey {
                name: name.to_string(),
                kind,
                public_key: kp.public_key(),
                path,
            });
        }
        keys.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(keys)
    }

    fn ensure_dir(&self) -> Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))
    }

    /// Writes a seed atomically and without clobbering: a private temporary file, then a
    /// hard link to the final name (which fails if that name exists).
    fn write_seed(&self, path: &Path, seed: &str) -> Result<()> {
        self.ensure_dir()?;
        if path.exists() {
            return Err(Error::KeyExists {
                path: path.to_path_buf(),
            });
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut file = opts.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
            file.write_all(seed.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::KeyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    Error::io(path, e)
                }
            })
        })();
        let _ = fs::remove_file(&tmp);
        result
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey {
            reason: format!(
                "key name {name:?} must be 1-128 characters of letters, digits, '-', '_' or '.', \
                 not starting with '.'"
            ),
        })
    }
}

/// A file-name-safe key name derived from a module name (`My Echo` -> `my_echo`).
pub fn name_from(label: &str) -> String {
    let mut out: String = label
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push_str("module");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_nkeys() {
        for kind in KeyKind::ALL {
            let kp = generate(kind);
            assert!(kp.public_key().starts_with(kind.prefix()), "{kind}");
            assert_eq!(KeyKind::of_public_key(&kp.public_key()), Some(kind));
            assert_eq!(kind_of(&kp), Some(kind));
        }
    }

    #[test]
    fn key_source_parsing() {
        assert_eq!(
            "env:X".parse::<KeySource>().unwrap(),
            KeySource::Env("X".into())
        );
        assert_eq!(
            "./a.nk".parse::<KeySource>().unwrap(),
            KeySource::File("./a.nk".into())
        );
        assert_eq!(
            "dev".parse::<KeySource>().unwrap(),
            KeySource::Stored("dev".into())
        );
        let seed = generate(KeyKind::Account).seed().unwrap();
        assert!(matches!(
            seed.parse::<KeySource>(),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(name_from("My Echo!"), "my_echo_");
        assert_eq!(name_from("  "), "module");
        assert!(validate_name("../x").is_err());
        assert!(validate_name(".hidden").is_err());
    }
}
