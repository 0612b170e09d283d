//! Starting an actor from an OCI registry on loopback (resolve the tag, pull, check the
//! digest, verify the claims, compile) against starting it from the digest cache (no
//! network), for the ~100 KiB echo actor and a 5 MiB module.
//!
//! Run: `cargo bench -p sigil-host --bench registry`. It starts its own registry (the CNCF
//! `distribution` registry that `.ci/docker-registry` finds, or unpacks from Debian's
//! package without root) on a spare loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/padding.rs"]
mod padding;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_host::oci::{ModuleRef, Registry, RegistryOptions};
use sigil_host::{EngineConfig, Host};

/// `module` without its claims, with a custom section of `size` incompressible bytes
/// added, signed again: a module of about that size that compiles like the original.
fn padded(module: &[u8], size: usize) -> Vec<u8> {
    let mut wasm = sigil_claims::strip_jwt_sections(module).unwrap();
    padding::pad(&mut wasm, size);
    let account = sigil_claims::keys::generate(sigil_claims::KeyKind::Account);
    let subject = sigil_claims::keys::generate(sigil_claims::KeyKind::Module).public_key();
    let spec = sigil_claims::ActorSpec {
        name: "big".into(),
        ..Default::default()
    };
    sigil_claims::sign_module(&wasm, &spec, &account, &subject)
        .unwrap()
        .bytes
}

fn registry(host: &str, cache: Option<&std::path::Path>) -> Arc<Registry> {
    Registry::new(RegistryOptions {
        insecure: vec![host.to_string()],
        cache_dir: cache.map(|c| c.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let keys = tempfile::tempdir().unwrap();
    let echo = common::example_actors(keys.path(), &["echo"]).remove(0);
    let big = padded(&echo, 5 << 20);
    let local = common::start_registry();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pusher = registry(&local.host, None);
    let mut modules = Vec::new();
    for (name, bytes) in [("echo", &echo), ("big-5mib", &big)] {
        let tag = ModuleRef::parse(&format!("oci://{}/bench/{name}:1", local.host)).unwrap();
        let pushed = rt.block_on(pusher.push(bytes, name, &tag)).unwrap();
        eprintln!("{name}: {} bytes, {}", bytes.len(), pushed.pinned);
        modules.push((name, tag, pushed.pinned));
    }
    // The engine compiles every start (no compiled-module cache): what is compared is
    // where the bytes come from.
    let host = Host::builder()
        .engine_config(EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let start = |registry: &Arc<Registry>, reference: &ModuleRef| {
        let pulled = rt.block_on(registry.pull(reference)).unwrap();
        let actor = host.load_actor(pulled.module).unwrap();
        host.remove_actor(actor.subject());
        pulled.from_cache
    };

    // Where the bytes come from, and their checks: resolve, pull, digests, claims.
    let mut g = c.benchmark_group("pull");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    for (name, tag, pinned) in &modules {
        g.bench_function(format!("registry/{name}"), |b| {
            b.iter(|| {
                let cold = registry(&local.host, None);
                let pulled = rt.block_on(cold.pull(tag)).unwrap();
                sigil_claims::verify(&pulled.module, &sigil_claims::Policy::new()).unwrap();
            })
        });
        let cache = tempfile::tempdir().unwrap();
        let warm = registry(&local.host, Some(cache.path()));
        rt.block_on(warm.pull(pinned)).unwrap();
        g.bench_function(format!("cache/{name}"), |b| {
            b.iter(|| {
                let pulled = rt.block_on(warm.pull(pinned)).unwrap();
                assert!(pulled.from_cache);
                sigil_claims::verify(&pulled.module, &sigil_claims::Policy::new()).unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("start");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, tag, pinned) in &modules {
        g.bench_function(format!("registry/{name}"), |b| {
            b.iter(|| {
                // A new client and no cache: resolve, pull, check, verify, compile.
                let cold = registry(&local.host, None);
                assert!(!start(&cold, tag));
            })
        });
        let cache = tempfile::tempdir().unwrap();
        let warm = registry(&local.host, Some(cache.path()));
        start(&warm, pinned);
        g.bench_function(format!("cache/{name}"), |b| {
            b.iter(|| assert!(start(&warm, pinned)))
        });
    }
    g.finish();
}

criterion_group!(registry_benches, benches);
criterion_main!(registry_benches);
