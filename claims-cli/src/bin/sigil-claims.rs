//! `sigil-claims`: keys, signing, inspection and verification of Sigil actor modules.
//!
//! Exit codes: 0 success, 1 verification failed (the module or token is not acceptable),
//! 2 usage, key or I/O error.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use sigil_claims::{
    ActorSpec, Error as ClaimsError, KeyKind, KeySource, KeyStore, Policy, ProviderSpec, caps,
    display, jwt, keys, provider,
};

/// Keys, signing and verification of Sigil actor modules.
#[derive(Parser, Debug)]
#[command(name = "sigil-claims", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 ok, 1 verification failed, 2 usage, key or I/O error.")]
struct Cli {
    /// Key directory (default: $SIGIL_KEYS, else ~/.sigil/keys).
    #[arg(long, global = true, value_name = "DIR")]
    keys: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate and list nkeys key pairs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign a WebAssembly module, embedding its claims (replaces any earlier signature).
    Sign(SignArgs),
    /// Show the claims of a signed module or a provider token.
    Inspect(InspectArgs),
    /// Verify a signed module or a provider token; exit code 1 if it is not acceptable.
    Verify(VerifyArgs),
    /// Issue tokens that do not live inside a module.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Generate a key pair and store its seed (mode 0600) in the key directory.
    Gen {
        /// Kind of key: account, module, service (provider), operator, server or cluster.
        kind: KeyKind,
        /// Name of the key (the file is NAME_KIND.nk).
        #[arg(long, default_value = "default")]
        name: String,
        /// Also print the seed (a secret) on standard output.
        #[arg(long)]
        show_seed: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys in the key directory (public keys only).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct SignArgs {
    /// The module to sign.
    input: PathBuf,
    /// Where to write the signed module.
    #[arg(short, long)]
    output: PathBuf,
    /// The actor's name.
    #[arg(long)]
    name: String,
    /// A capability to grant (repeat). Aliases: keyvalue, messaging, blobstore, httpserver,
    /// httpclient, logging, numbergen; or a contract ID like wasmcloud:keyvalue.
    #[arg(short = 'c', long = "cap", value_name = "CAP")]
    caps: Vec<String>,
    /// A tag (repeat).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Revision number.
    #[arg(long)]
    rev: Option<i32>,
    /// Version string.
    #[arg(long)]
    ver: Option<String>,
    /// A call alias other actors may use.
    #[arg(long)]
    call_alias: Option<String>,
    /// Validity period from now, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires_in: Option<Duration>,
    /// Not valid before: a duration from now (2h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    not_before: Option<SystemTime>,
    /// The signing account key: a seed file path, env:VAR, or a key name in the key directory.
    /// Default: the stored account key `default` (generated on first use).
    #[arg(long, value_name = "KEY")]
    issuer: Option<String>,
    /// The module key: a seed file path, env:VAR, or a key name. Default: a stored module key
    /// named after --name (generated on first use), so re-signing keeps the module's identity.
    #[arg(long, value_name = "KEY")]
    subject: Option<String>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A signed .wasm module, or a file holding a provider token.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print the raw token too.
    #[arg(long)]
    jwt: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// A signed .wasm module, or a file holding a provider token.
    file: PathBuf,
    /// Accept only this issuer (repeat). Default: any issuer.
    #[arg(long = "issuer", value_name = "ACCOUNT_KEY")]
    issuers: Vec<String>,
    /// Refuse this subject key or token id (repeat).
    #[arg(long = "revoked", value_name = "KEY_OR_JTI")]
    revoked: Vec<String>,
    /// Require this capability (repeat).
    #[arg(long = "require-cap", value_name = "CAP")]
    required_caps: Vec<String>,
    /// Accept legacy (pre-revision 3) tokens whose module hash cannot be checked.
    #[arg(long)]
    allow_legacy_hash: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a signed provider token (for provider plugins).
    Provider(ProviderArgs),
}

#[derive(Args, Debug)]
struct ProviderArgs {
    /// The provider's name.
    #[arg(long)]
    name: String,
    /// The contract ID (or alias) the provider serves.
    #[arg(long)]
    capid: String,
    /// The vendor.
    #[arg(long)]
    vendor: String,
    /// Revision number.
    #[arg(long)]
    rev: Option<i32>,
    /// Version string.
    #[arg(long)]
    ver: Option<String>,
    /// A provider binary for a target: TRIPLE=PATH (repeat); its hash is signed.
    #[arg(long = "binary", value_name = "TRIPLE=PATH")]
    binaries: Vec<String>,
    /// Validity period from now, e.g. 90d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires_in: Option<Duration>,
    /// The signing account key (seed file, env:VAR or key name). Default: stored `default`.
    #[arg(long, value_name = "KEY")]
    issuer: Option<String>,
    /// The provider's service key (seed file, env:VAR or key name). Default: a stored
    /// service key named after --name.
    #[arg(long, value_name = "KEY")]
    subject: Option<String>,
    /// Write the token here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30d, 12h, 90m)"))
}

fn parse_when(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let d = parse_duration(s).map_err(|_| {
        format!("{s:?} is neither a duration (2h) nor an RFC 3339 time (2026-01-31T12:00:00Z)")
    })?;
    Ok(SystemTime::now() + d)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            let verification = err
                .chain()
                .find_map(|e| e.downcast_ref::<ClaimsError>())
                .is_some_and(ClaimsError::is_verification_failure);
            ExitCode::from(if verification { 1 } else { 2 })
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let store = match &cli.keys {
        Some(dir) => KeyStore::new(dir),
        None => KeyStore::from_env()?,
    };
    match cli.command {
        Command::Keys(KeysCommand::Gen {
            kind,
            name,
            show_seed,
            json,
        }) => keys_gen(&store, kind, &name, show_seed, json),
        Command::Keys(KeysCommand::List { json }) => keys_list(&store, json),
        Command::Sign(args) => sign(&store, args),
        Command::Inspect(args) => inspect(args),
        Command::Verify(args) => verify(args),
        Command::Token(TokenCommand::Provider(args)) => provider_token(&store, args),
    }
}

fn keys_gen(
    store: &KeyStore,
    kind: KeyKind,
    name: &str,
    show: bool,
    json: bool,
) -> Result<ExitCode> {
    let (kp, path) = store.generate(kind, name)?;
    let seed = if show { Some(kp.seed()?) } else { None };
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            kind: &'a str,
            name: &'a str,
            public_key: String,
            path: &'a Path,
            #[serde(skip_serializing_if = "Option::is_none")]
            seed: Option<String>,
        }
        print_json(&Out {
            kind: kind.name(),
            name,
            public_key: kp.public_key(),
            path: &path,
            seed,
        })?;
    } else {
        println!("{}", kp.public_key());
        eprintln!("{kind} key {name:?} written to {}", path.display());
        if let Some(seed) = seed {
            println!("{seed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys_list(store: &KeyStore, json: bool) -> Result<ExitCode> {
    let list = store.list()?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("no keys in {}", store.dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    let width = list.iter().map(|k| k.name.len()).max().unwrap_or(4).max(4);
    println!("{:<8}  {:<width$}  PUBLIC KEY", "KIND", "NAME");
    for k in &list {
        println!("{:<8}  {:<width$}  {}", k.kind.name(), k.name, k.public_key);
    }
    Ok(ExitCode::SUCCESS)
}

fn load_key(
    store: &KeyStore,
    source: Option<&str>,
    kind: KeyKind,
    default_name: &str,
    role: &'static str,
) -> Result<sigil_claims::KeyPair> {
    match source {
        // Parsed here rather than by clap, whose errors would echo a mistakenly pasted seed.
        Some(src) => Ok(src.parse::<KeySource>()?.load(store, kind, role)?),
        None => {
            let (kp, generated) = store.load_or_generate(kind, default_name)?;
            if generated {
                eprintln!(
                    "generated {kind} key {default_name:?} ({}) in {}",
                    kp.public_key(),
                    store.dir().display()
                );
            }
            Ok(kp)
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sign(store: &KeyStore, a: SignArgs) -> Result<ExitCode> {
    let module = read(&a.input)?;
    let issuer = load_key(
        store,
        a.issuer.as_deref(),
        KeyKind::Account,
        "default",
        "the issuer",
    )?;
    let subject = load_key(
        store,
        a.subject.as_deref(),
        KeyKind::Module,
        &keys::name_from(&a.name),
        "the subject",
    )?;
    let now = SystemTime::now();
    let spec = ActorSpec {
        name: a.name,
        caps: a.caps,
        tags: a.tags,
        rev: a.rev,
        ver: a.ver,
        call_alias: a.call_alias,
        not_before: a.not_before.map(unix),
        expires: a.expires_in.map(|d| unix(now + d)),
    };
    let signed = sigil_claims::sign_module(&module, &spec, &issuer, &subject.public_key())
        .with_context(|| format!("cannot sign {}", a.input.display()))?;
    write_atomic(&a.output, &signed.bytes)?;
    eprintln!(
        "signed {} as {} (module {}, issuer {}) -> {}",
        a.input.display(),
        spec.name,
        subject.public_key(),
        issuer.public_key(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes through a temporary file in the same directory and renames it into place, so a
/// reader never sees half a module.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!(e).context(format!("cannot write {}", path.display()))
    })
}

fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

fn build_policy(a: &VerifyArgs) -> Result<Policy> {
    let mut policy = Policy::new().allow_legacy_hash(a.allow_legacy_hash);
    for issuer in &a.issuers {
        keys::parse_public_key(issuer, KeyKind::Account, "--issuer")?;
        policy = policy.allow_issuer(issuer.clone());
    }
    for r in &a.revoked {
        policy = if KeyKind::of_public_key(r).is_some() {
            policy.revoke_subject(r.clone())
        } else {
            policy.revoke_token_id(r.clone())
        };
    }
    for c in &a.required_caps {
        policy = policy.require_capability(caps::parse_capability(c)?);
    }
    Ok(policy)
}

#[derive(Serialize)]
struct VerifyReport<'a> {
    valid: bool,
    file: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let bytes = read(&a.file)?;
    let policy = build_policy(&a)?;
    let outcome = if is_wasm(&bytes) {
        sigil_claims::verify(&bytes, &policy).map(|c| {
            (
                c.subject().to_string(),
                c.issuer().to_string(),
                c.name().map(str::to_string),
            )
        })
    } else {
        let token = String::from_utf8_lossy(&bytes);
        sigil_claims::verify_provider_token(&token, &policy).map(|c| {
            (
                c.subject().to_string(),
                c.issuer().to_string(),
                c.metadata().name.clone(),
            )
        })
    };
    match outcome {
        Ok((subject, issuer, name)) => {
            if a.json {
                print_json(&VerifyReport {
                    valid: true,
                    file: &a.file,
                    error: None,
                    subject: Some(subject),
                    issuer: Some(issuer),
                })?;
            } else {
                println!(
                    "ok: {} ({}) signed by {issuer}",
                    name.as_deref().unwrap_or("unnamed"),
                    subject
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if a.json && e.is_verification_failure() => {
            print_json(&VerifyReport {
                valid: false,
                file: &a.file,
                error: Some(e.to_string()),
                subject: None,
                issuer: None,
            })?;
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(anyhow!(e).context(format!("{} failed verification", a.file.display()))),
    }
}

fn inspect(a: InspectArgs) -> Result<ExitCode> {
    let bytes = read(&a.file)?;
    let policy = Policy::new();
    if !is_wasm(&bytes) {
        return inspect_provider(&String::from_utf8_lossy(&bytes), &a, &policy);
    }
    let ins = sigil_claims::inspect(&bytes, &policy)
        .with_context(|| format!("cannot inspect {}", a.file.display()))?;
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            kind: &'static str,
            section: &'a str,
            claims: &'a sigil_claims::Claims<sigil_claims::ActorMetadata>,
            computed_hash: &'a str,
            valid: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            jwt: Option<&'a str>,
        }
        print_json(&Out {
            kind: "actor",
            section: &ins.section,
            claims: &ins.claims,
            computed_hash: &ins.computed_hash,
            valid: ins.verification.is_ok(),
            error: ins.verification.as_ref().err().map(ToString::to_string),
            jwt: a.jwt.then_some(ins.jwt.as_str()),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        display::format_rows(
            &display::actor_rows(&ins, a.jwt),
            std::io::stdout().is_terminal()
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect_provider(token: &str, a: &InspectArgs, policy: &Policy) -> Result<ExitCode> {
    let claims = jwt::decode_unverified::<sigil_claims::ProviderMetadata>(token.trim())
        .with_context(|| {
            format!(
                "{} is neither a WebAssembly module nor a provider token",
                a.file.display()
            )
        })?;
    let verification = sigil_claims::verify_provider_token(token, policy);
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            kind: &'static str,
            claims: &'a sigil_claims::Claims<sigil_claims::ProviderMetadata>,
            valid: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        }
        print_json(&Out {
            kind: "provider",
            claims: &claims,
            valid: verification.is_ok(),
            error: verification.as_ref().err().map(ToString::to_string),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        display::format_rows(
            &display::provider_rows(&claims, &verification),
            std::io::stdout().is_terminal()
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn provider_token(store: &KeyStore, a: ProviderArgs) -> Result<ExitCode> {
    let issuer = load_key(
        store,
        a.issuer.as_deref(),
        KeyKind::Account,
        "default",
        "the issuer",
    )?;
    let subject = load_key(
        store,
        a.subject.as_deref(),
        KeyKind::Service,
        &keys::name_from(&a.name),
        "the provider subject",
    )?;
    let mut target_hashes = BTreeMap::new();
    for b in &a.binaries {
        let (triple, path) = b
            .split_once('=')
            .ok_or_else(|| anyhow!("--binary {b:?}: expected TRIPLE=PATH"))?;
        if triple.is_empty() {
            bail!("--binary {b:?}: the target triple is empty");
        }
        target_hashes.insert(
            triple.to_string(),
            provider::binary_hash(&read(Path::new(path))?),
        );
    }
    let spec = ProviderSpec {
        name: a.name,
        capid: a.capid,
        vendor: a.vendor,
        rev: a.rev,
        ver: a.ver,
        target_hashes,
        config_schema: None,
        not_before: None,
        expires: a.expires_in.map(|d| unix(SystemTime::now() + d)),
    };
    let token = sigil_claims::issue_provider_token(&spec, &issuer, &subject.public_key())?;
    match &a.output {
        Some(path) => {
            write_atomic(path, format!("{token}\n").as_bytes())?;
            eprintln!(
                "provider token for {} written to {}",
                subject.public_key(),
                path.display()
            );
        }
        None => println!("{token}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
