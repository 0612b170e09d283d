//! Actors written in Rust, built for wasm32 and signed by the host's own build step: the
//! examples, a plain `wapc-guest` actor, and a hostile one. Built once per test run into
//! target/guests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sigil_claims::KeyStore;
use sigil_host::build::{BuildOptions, build};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Signed guest modules by actor name: echo, markdown, wapc-echo, hostile.
pub fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target = repo().join("target").join("guests");
        let mut opts = BuildOptions::new(KeyStore::new(target.join("keys")));
        opts.target_dir = Some(target.clone());
        opts.out_dir = Some(target.join("signed-tests"));
        opts.quiet = true;
        opts.locked = true;
        let mut all = HashMap::new();
        for dir in ["examples", "tests/actors"] {
            for b in build(&repo().join(dir), &opts)
                .unwrap_or_else(|e| panic!("building the guests in {dir}: {e}"))
            {
                all.insert(b.name, b.path);
            }
        }
        all
    });
    let path = built
        .get(name)
        .unwrap_or_else(|| panic!("no guest named {name}"));
    std::fs::read(path).unwrap()
}
