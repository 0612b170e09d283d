//! Building actor crates for `wasm32-unknown-unknown` and signing them in one step.
//!
//! An actor crate says what it is in its manifest:
//!
//! ```toml
//! [package.metadata.sigil]
//! name = "counter"            # defaults to the package name
//! caps = ["keyvalue", "logging"]
//! tags = ["example"]
//! call_alias = "counter"
//! rev = 3
//! ```
//!
//! A binary crate with the same section is a WASI step (a command module, see
//! `docs/wasi-steps.md`): it is built for `wasm32-wasip1` and signed the same way.
//!
//! The version is the package's. [`build`] adds the rustup target if it is missing, runs
//! cargo with a small actor stack (so a call's stack and early heap stay in the memory the
//! engine keeps resident between instances), and signs each cdylib with the issuer key (by
//! default the key store's `default` account, created on first use) and a module key named
//! after the actor (created on first use, so rebuilds keep the actor's identity).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sigil_claims::{ActorSpec, KeyKind, KeySource, KeyStore, keys};

/// The target actors are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";
/// The target WASI steps are built for.
pub const WASI_TARGET: &str = "wasm32-wasip1";
/// Default linear-memory stack of an actor built here, in bytes.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;

/// What can go wrong building and signing actors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A tool could not be run.
    #[error("cannot run `{tool}`: {source} (is the Rust toolchain installed and on PATH?)")]
    Tool {
        /// The program.
        tool: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (when captured).
        stderr: String,
    },
    /// `cargo metadata` printed something unexpected.
    #[error("cannot read cargo metadata for {}: {message}", path.display())]
    Metadata {
        /// The manifest.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// `[package.metadata.sigil]` is invalid.
    #[error("invalid [package.metadata.sigil] in {}: {message}", manifest.display())]
    Manifest {
        /// The manifest.
        manifest: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// No actor crate (a cdylib) was found.
    #[error("no actor crate (a package with a cdylib target) under {}", path.display())]
    NoActors {
        /// Where we looked.
        path: PathBuf,
    },
    /// Signing failed.
    #[error("cannot sign {actor}: {source}")]
    Sign {
        /// The actor.
        actor: String,
        /// The claims error.
        #[source]
        source: sigil_claims::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where signed modules go; default `build/` in the workspace root.
    pub out_dir: Option<PathBuf>,
    /// The signing account; default the key store's `default` account.
    pub issuer: Option<KeySource>,
    /// The key store for default and module keys.
    pub keys: KeyStore,
    /// Linear-memory stack size of the actors, in bytes.
    pub stack_size: usize,
    /// Cargo's target directory; default the workspace's own.
    pub target_dir: Option<PathBuf>,
    /// Pass `--locked` to cargo.
    pub locked: bool,
    /// Capture cargo's output instead of letting it print (for tests).
    pub quiet: bool,
}

impl BuildOptions {
    /// Defaults with the given key store.
    pub fn new(keys: KeyStore) -> Self {
        BuildOptions {
            out_dir: None,
            issuer: None,
            keys,
            stack_size: DEFAULT_STACK_SIZE,
            target_dir: None,
            locked: false,
            quiet: false,
        }
    }
}

/// One built, signed actor.
#[derive(Debug, Clone)]
pub struct BuiltActor {
    /// The cargo package.
    pub package: String,
    /// The actor's name in its claims.
    pub name: String,
    /// The signed module.
    pub path: PathBuf,
    /// The module public key.
    pub subject: String,
    /// The issuer public key.
    pub issuer: String,
    /// Size of the signed module in bytes.
    pub size: usize,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    target_directory: PathBuf,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    crate_types: Vec<String>,
}

/// `[package.metadata.sigil]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorManifest {
    name: Option<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    call_alias: Option<String>,
    rev: Option<i32>,
}

/// Builds and signs every actor crate at `path` (a crate, or a workspace of them).
pub fn build(path: &Path, opts: &BuildOptions) -> Result<Vec<BuiltActor>, BuildError> {
    let manifest = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_path_buf()
    };
    let meta = metadata(&manifest)?;
    let manifest_canon = manifest.canonicalize().unwrap_or(manifest.clone());
    let only_this = meta
        .packages
        .iter()
        .any(|p| p.manifest_path == manifest_canon);
    // Actors are cdylibs; WASI steps are binaries that declare [package.metadata.sigil].
    let actors: Vec<(&Package, &Target, &str)> = meta
        .packages
        .iter()
        .filter(|p| !only_this || p.manifest_path == manifest_canon)
        .filter_map(|p| {
            let cdylib = p
                .targets
                .iter()
                .find(|t| t.crate_types.iter().any(|c| c == "cdylib"))
                .map(|t| (p, t, TARGET));
            let declared = p
                .metadata
                .as_ref()
                .is_some_and(|m| m.get("sigil").is_some());
            cdylib.or_else(|| {
                p.targets
                    .iter()
                    .find(|t| declared && t.crate_types.iter().any(|c| c == "bin"))
                    .map(|t| (p, t, WASI_TARGET))
            })
        })
        .collect();
    if actors.is_empty() {
        return Err(BuildError::NoActors {
            path: path.to_path_buf(),
        });
    }

    let target_dir = opts.target_dir.clone().unwrap_or(meta.target_directory);
    for target in [TARGET, WASI_TARGET] {
        let packages: Vec<&str> = actors
            .iter()
            .filter(|(_, _, t)| *t == target)
            .map(|(p, _, _)| p.name.as_str())
            .collect();
        if packages.is_empty() {
            continue;
        }
        ensure_target(target, opts.quiet)?;
        let mut cargo = Command::new(cargo_bin());
        cargo
            .args(["build", "--release", "--target", target, "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir);
        if opts.locked {
            cargo.arg("--locked");
        }
        for p in packages {
            cargo.args(["-p", p]);
        }
        let flags_var = "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS";
        if target == TARGET && std::env::var_os(flags_var).is_none() {
            cargo.env(
                flags_var,
                format!("-C link-arg=-zstack-size={}", opts.stack_size),
            );
        }
        run(&mut cargo, opts.quiet)?;
    }

    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| meta.workspace_root.join("build"));
    std::fs::create_dir_all(&out_dir).map_err(|e| BuildError::Io {
        path: out_dir.clone(),
        source: e,
    })?;
    let issuer = match &opts.issuer {
        Some(src) => src
            .load(&opts.keys, KeyKind::Account, "the issuer")
            .map_err(|e| sign_err("(issuer)", e))?,
        None => {
            opts.keys
                .load_or_generate(KeyKind::Account, "default")
                .map_err(|e| sign_err("(issuer)", e))?
                .0
        }
    };

    let mut built = Vec::new();
    for (package, target, triple) in actors {
        let spec_meta = actor_manifest(package)?;
        let name = spec_meta
            .name
            .clone()
            .unwrap_or_else(|| package.name.clone());
        // A cdylib's file name has `_` for `-`; a binary's keeps its name.
        let file = if triple == TARGET {
            target.name.replace('-', "_")
        } else {
            target.name.clone()
        };
        let wasm_path = target_dir
            .join(triple)
            .join("release")
            .join(format!("{file}.wasm"));
        let module = std::fs::read(&wasm_path).map_err(|e| BuildError::Io {
            path: wasm_path.clone(),
            source: e,
        })?;
        let (subject, _) = opts
            .keys
            .load_or_generate(KeyKind::Module, &keys::name_from(&name))
            .map_err(|e| sign_err(&name, e))?;
        let spec = ActorSpec {
            name: name.clone(),
            caps: spec_meta.caps,
            tags: spec_meta.tags,
            rev: spec_meta.rev,
            ver: Some(package.version.clone()),
            call_alias: spec_meta.call_alias,
            not_before: None,
            expires: None,
        };
        let signed = sigil_claims::sign_module(&module, &spec, &issuer, &subject.public_key())
            .map_err(|e| sign_err(&name, e))?;
        let path = out_dir.join(format!("{}.wasm", keys::name_from(&name)));
        write_atomic(&path, &signed.bytes)?;
        built.push(BuiltActor {
            package: package.name.clone(),
            name,
            size: signed.bytes.len(),
            path,
            subject: subject.public_key(),
            issuer: issuer.public_key(),
        });
    }
    Ok(built)
}

fn sign_err(actor: &str, source: sigil_claims::Error) -> BuildError {
    BuildError::Sign {
        actor: actor.to_string(),
        source,
    }
}

fn actor_manifest(p: &Package) -> Result<ActorManifest, BuildError> {
    let Some(section) = p.metadata.as_ref().and_then(|m| m.get("sigil")) else {
        return Ok(ActorManifest::default());
    };
    serde_json::from_value(section.clone()).map_err(|e| BuildError::Manifest {
        manifest: p.manifest_path.clone(),
        message: e.to_string(),
    })
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cmd: &mut Command, quiet: bool) -> Result<(), BuildError> {
    let command = describe(cmd);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let tool = || program.clone();
    if quiet {
        let out = cmd.output().map_err(|e| BuildError::Tool {
            tool: tool(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(BuildError::Failed {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        return Ok(());
    }
    let status = cmd.status().map_err(|e| BuildError::Tool {
        tool: tool(),
        source: e,
    })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command,
            status,
            stderr: String::new(),
        });
    }
    Ok(())
}

/// Adds a wasm32 target with rustup if it is not installed (no-op without rustup).
fn ensure_target(target: &str, quiet: bool) -> Result<(), BuildError> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    run(
        Command::new("rustup").args(["target", "add", target]),
        quiet,
    )
}

fn metadata(manifest: &Path) -> Result<Metadata, BuildError> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--manifest-path",
    ])
    .arg(manifest);
    let out = cmd.output().map_err(|e| BuildError::Tool {
        tool: "cargo".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(BuildError::Failed {
            command: describe(&cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| BuildError::Metadata {
        path: manifest.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(format!("wasm.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            BuildError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        })
}
