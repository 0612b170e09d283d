//! What the benchmarks share.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::{Path, PathBuf};

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the example actors for wasm32 (cached under `target/guests`) and signs them with
/// a key in `keys`; returns the signed module of each name asked for, in order.
pub(crate) fn example_actors(keys: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    use sigil_claims::KeyStore;
    use sigil_host::build::{BuildOptions, build};
    let target = repo().join("target").join("guests");
    let mut opts = BuildOptions::new(KeyStore::new(keys));
    opts.target_dir = Some(target.clone());
    opts.out_dir = Some(target.join(format!("signed-bench-{}", std::process::id())));
    opts.quiet = true;
    let built = build(&repo().join("examples"), &opts).expect("build the example actors");
    names
        .iter()
        .map(|name| {
            let b = built.iter().find(|b| b.name == *name).expect(name);
            std::fs::read(&b.path).unwrap()
        })
        .collect()
}

/// The smallest waPC echo there is, in WAT, signed as `name`: what the host costs with no
/// guest runtime.
pub(crate) fn wat_echo(name: &str) -> Vec<u8> {
    let wasm = wat::parse_str(
        r#"(module
          (import "wapc" "__guest_request" (func $req (param i32 i32)))
          (import "wapc" "__guest_response" (func $resp (param i32 i32)))
          (memory (export "memory") 1)
          (func (export "__guest_call") (param $op i32) (param $len i32) (result i32)
            (call $req (i32.const 0) (i32.const 1024))
            (call $resp (i32.const 1024) (local.get $len))
            (i32.const 1)))"#,
    )
    .unwrap();
    let account = sigil_claims::keys::generate(sigil_claims::KeyKind::Account);
    let subject = sigil_claims::keys::generate(sigil_claims::KeyKind::Module).public_key();
    let spec = sigil_claims::ActorSpec {
        name: name.into(),
        ..Default::default()
    };
    sigil_claims::sign_module(&wasm, &spec, &account, &subject)
        .unwrap()
        .bytes
}
