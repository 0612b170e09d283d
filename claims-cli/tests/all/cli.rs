//! The `sigil-claims` binary as a user runs it: output, files and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::echo_module;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sigil-claims"));
        c.args(args)
            .env("SIGIL_KEYS", self.path("keys"))
            .env_remove("HOME");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn module(&self) -> PathBuf {
        let p = self.path("echo.wasm");
        std::fs::write(&p, echo_module()).unwrap();
        p
    }

    fn sign(&self, extra: &[&str]) -> PathBuf {
        let input = self.module();
        let out = self.path("echo.signed.wasm");
        let mut args = vec![
            "sign",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--name",
            "echo",
            "--cap",
            "keyvalue",
            "--cap",
            "wasmcloud:messaging",
            "--tag",
            "demo",
            "--ver",
            "0.1.0",
            "--rev",
            "3",
        ];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keys_gen_prints_the_public_key_and_never_the_seed() {
    let env = Env::new();
    let o = env.run(&["keys", "gen", "account", "--name", "ops"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.trim().starts_with('A'), "{out}");
    let seed = std::fs::read_to_string(env.path("keys/ops_account.nk")).unwrap();
    assert!(seed.starts_with("SA"));
    assert!(!out.contains(seed.trim()), "seed leaked: {out}");

    let o = env.run(&["keys", "gen", "module", "--name", "m", "--show-seed"]);
    assert!(stdout(&o).contains("SM"), "explicitly asked for");

    let o = env.run(&["keys", "list"]);
    let out = stdout(&o);
    assert!(out.contains("account") && out.contains("ops") && out.contains("module"));
    assert!(!out.contains(seed.trim()), "seed leaked: {out}");

    let o = env.run(&["keys", "gen", "account", "--name", "ops"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exists already"));
}

#[test]
fn sign_then_inspect_then_verify() {
    let env = Env::new();
    let signed = env.sign(&[]);
    // Default keys were generated on first use.
    assert!(env.path("keys/default_account.nk").exists());
    assert!(env.path("keys/echo_module.nk").exists());

    let o = env.run(&["inspect", s(&signed)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "echo",
        "wasmcloud:keyvalue (Key-value store)",
        "wasmcloud:messaging (Messaging)",
        "(matches)",
        "valid",
        "0.1.0",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    let o = env.run(&["inspect", s(&signed), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["wascap"]["caps"][0], "wasmcloud:keyvalue");
    assert_eq!(v["claims"]["wascap"]["rev"], 3);

    let o = env.run(&["verify", s(&signed)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok: echo"));

    // Re-signing keeps the module identity (same stored module key).
    let first = serde_json::from_slice::<serde_json::Value>(&o.stdout).ok();
    assert!(first.is_none());
    let sub1 = v["claims"]["sub"].clone();
    let signed2 = env.sign(&["--tag", "second"]);
    let o = env.run(&["inspect", s(&signed2), "--json"]);
    let v2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v2["claims"]["sub"], sub1);
}

#[test]
fn verify_failures_exit_1_with_the_reason() {
    let env = Env::new();
    let signed = env.sign(&[]);
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'y';
    let tampered = env.path("tampered.wasm");
    std::fs::write(&tampered, &bytes).unwrap();
    let o = env.run(&["verify", s(&tampered)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("module hash mismatch"),
        "{}",
        stderr(&o)
    );

    let o = env.run(&["verify", s(&tampered), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);

    // Not from an allowed issuer.
    let other = stdout(&env.run(&["keys", "gen", "account", "--name", "other"]));
    let o = env.run(&["verify", s(&signed), "--issuer", other.trim()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not among the allowed issuers"));

    // Unsigned.
    let o = env.run(&["verify", s(&env.module())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not signed"));

    // Required capability missing.
    let o = env.run(&["verify", s(&signed), "--require-cap", "blobstore"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wasmcloud:blobstore"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let env = Env::new();
    let o = env.run(&["verify", s(&env.path("missing.wasm"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.wasm"));

    let o = env.run(&["sign"]);
    assert_eq!(o.status.code(), Some(2));

    let o = env.run(&["verify", s(&env.module()), "--issuer", "not-a-key"]);
    assert_eq!(o.status.code(), Some(2));

    let input = env.module();
    let o = env.run(&[
        "sign",
        s(&input),
        "-o",
        s(&env.path("x.wasm")),
        "--name",
        "x",
        "--cap",
        "teleport",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("teleport"));

    let o = env.run(&[
        "sign",
        s(&input),
        "-o",
        s(&env.path("x.wasm")),
        "--name",
        "x",
        "--expires-in",
        "soon",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn seeds_come_from_files_or_the_environment_never_the_command_line() {
    let env = Env::new();
    let out = stdout(&env.run(&["keys", "gen", "account", "--name", "ci", "--show-seed"]));
    let mut lines = out.lines();
    let public = lines.next().unwrap().to_string();
    let seed = lines.next().unwrap().to_string();
    let input = env.module();
    let output = env.path("signed.wasm");

    // From the environment.
    let o = env
        .cmd(&[
            "sign",
            s(&input),
            "-o",
            s(&output),
            "--name",
            "e",
            "--issuer",
            "env:CI_SEED",
        ])
        .env("CI_SEED", &seed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["verify", s(&output), "--issuer", &public]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // From a seed file path.
    let key_file = env.path("keys/ci_account.nk");
    let o = env.run(&[
        "sign",
        s(&input),
        "-o",
        s(&output),
        "--name",
        "e",
        "--issuer",
        s(&key_file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A seed pasted on the command line is refused, and not echoed.
    let o = env.run(&[
        "sign",
        s(&input),
        "-o",
        s(&output),
        "--name",
        "e",
        "--issuer",
        &seed,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains(&seed));
}

#[test]
fn provider_tokens_from_the_cli() {
    let env = Env::new();
    let bin = env.path("provider-bin");
    std::fs::write(&bin, b"not really a binary").unwrap();
    let token_file = env.path("kv.jwt");
    let o = env.run(&[
        "token",
        "provider",
        "--name",
        "kv",
        "--capid",
        "keyvalue",
        "--vendor",
        "Redis",
        "--binary",
        &format!("x86_64-unknown-linux-gnu={}", s(&bin)),
        "-o",
        s(&token_file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["verify", s(&token_file)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.run(&["inspect", s(&token_file)]);
    let out = stdout(&o);
    assert!(out.contains("wasmcloud:keyvalue") && out.contains("x86_64-unknown-linux-gnu"));
    assert!(env.path("keys/kv_service.nk").exists());
}
