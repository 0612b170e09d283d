//! The `sigil` binary as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::guests::guest;

fn sigil(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .env("SIGIL_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn call_renders_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let md = write(dir.path(), "markdown.wasm", &guest("markdown"));
    let o = sigil(
        &[
            "call",
            &md,
            "render",
            "--data",
            r##"{"markdown": "# Hello, *Sigil*"}"##,
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["html"], "<h1>Hello, <em>Sigil</em></h1>\n");
    // Second run: from the compiled cache, same answer.
    let o2 = sigil(
        &[
            "call",
            &md,
            "render",
            "--data",
            r##"{"markdown": "# Hello, *Sigil*"}"##,
        ],
        &cache,
    );
    assert_eq!(o2.stdout, o.stdout);
    assert!(
        std::fs::read_dir(&cache).unwrap().count() >= 2,
        "key + entry"
    );
}

#[test]
fn call_with_raw_bytes_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let echo = write(dir.path(), "echo.wasm", &guest("echo"));
    let o = sigil(
        &["call", &echo, "echo", "--raw", "--data", "plain text"],
        &dir.path().join("c"),
    );
    assert_eq!(text(&o.stdout), "plain text\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["call", &echo, "greet", "--no-cache"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"name": "stdin"}"#)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("stdin"), "{}", text(&o.stdout));
}

#[test]
fn refused_and_failed_calls_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut tampered = guest("markdown");
    let last = tampered.len() - 200;
    tampered[last] ^= 0x55;
    let bad = write(dir.path(), "bad.wasm", &tampered);
    let o = sigil(&["call", &bad, "render", "--data", "{}"], &cache);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));

    let unsigned = write(
        dir.path(),
        "unsigned.wasm",
        &sigil_claims::strip_jwt_sections(&guest("echo")).unwrap(),
    );
    let o = sigil(&["call", &unsigned, "echo"], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not signed"),
        "{}",
        text(&o.stderr)
    );

    let hostile = write(dir.path(), "hostile.wasm", &guest("hostile"));
    let o = sigil(&["call", &hostile, "spin", "--deadline", "50ms"], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("deadline exceeded"),
        "{}",
        text(&o.stderr)
    );

    let stranger = sigil_claims::keys::generate(sigil_claims::KeyKind::Account).public_key();
    let o = sigil(&["call", &hostile, "ok", "--issuer", &stranger], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not among the allowed issuers"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let echo = write(dir.path(), "echo.wasm", &guest("echo"));
    let o = sigil(&["call", &echo, "greet", "--data", "{not json"], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not valid JSON"));
    let o = sigil(&["call", "/nonexistent.wasm", "x"], &cache);
    assert_eq!(o.status.code(), Some(2));
    let o = sigil(&["call"], &cache);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn inspect_shows_the_claims() {
    let dir = tempfile::tempdir().unwrap();
    let md = write(dir.path(), "markdown.wasm", &guest("markdown"));
    let o = sigil(&["inspect", &md], &dir.path().join("c"));
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.contains("markdown") && out.contains("(none)") && out.contains("valid"),
        "{out}"
    );
}

#[test]
fn workflow_run_refuses_bad_specs_and_inputs_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cyclic = write(
        dir.path(),
        "cyclic.yaml",
        b"version: 1\nname: c\nsteps:\n  - { name: a, actor: x, operation: o, depends: [b] }\n  - { name: b, actor: x, operation: o, depends: [a] }\n",
    );
    let o = sigil(&["workflow", "run", &cyclic], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cycle: a -> b -> a"),
        "{}",
        text(&o.stderr)
    );

    let ok = write(
        dir.path(),
        "ok.yaml",
        b"version: 1\nname: ok\ninputs: { n: {} }\nsteps:\n  - { name: a, actor: x, operation: o }\n",
    );
    let o = sigil(&["workflow", "run", &ok, "--input", "n"], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("write it as NAME=VALUE"),
        "{}",
        text(&o.stderr)
    );

    let missing = write(
        dir.path(),
        "missing.yaml",
        b"version: 1\nname: m\nsteps:\n  - { name: a, actor: nowhere.wasm, operation: o }\n",
    );
    let o = sigil(&["workflow", "run", &missing], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cannot read actor"),
        "{}",
        text(&o.stderr)
    );

    // Status of an in-process run cannot be asked from another process.
    let o = sigil(&["workflow", "status", "abc"], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--nats"), "{}", text(&o.stderr));
}
