//! Invocation costs, side by side in one run: Sigil's engine, the public `wapc` host crate
//! (wasmtime-provider) on the same actor, and spawning a native process.
//!
//! Run: `cargo bench -p sigil-host --bench invoke`. The first run builds the example actors
//! for wasm32 (into target/guests).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

#[path = "common/mod.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sigil_claims::Policy;
use sigil_host::{Actor, EngineConfig, Host, NoProviders};

fn unsigned_echo(signed: &[u8]) -> Vec<u8> {
    sigil_claims::strip_jwt_sections(signed).unwrap()
}

fn benches(c: &mut Criterion) {
    let keys = tempfile::tempdir().unwrap();
    let [echo, markdown]: [Vec<u8>; 2] = common::example_actors(keys.path(), &["echo", "markdown"])
        .try_into()
        .unwrap();
    eprintln!(
        "echo actor: {} bytes signed; markdown actor: {} bytes signed",
        echo.len(),
        markdown.len()
    );
    let payload = vec![0x5au8; 100];

    let config = EngineConfig {
        max_instances: 64,
        ..EngineConfig::default()
    };
    let host = Host::builder()
        .engine_config(config.clone())
        .build()
        .unwrap();
    let actor = host.load_actor(echo.clone()).unwrap();
    assert!(actor.template_info().snapshot, "echo is pre-initialized");

    let no_snapshot = Host::builder()
        .engine_config(EngineConfig {
            snapshot: false,
            ..config.clone()
        })
        .build()
        .unwrap();
    let actor_plain = no_snapshot.load_actor(echo.clone()).unwrap();

    // The peer: the public wapc host with the wasmtime provider, on the same module.
    let peer_module = unsigned_echo(&echo);
    let peer_pre = wasmtime_provider::WasmtimeEngineProviderBuilder::new()
        .module_bytes(&peer_module)
        .build_pre()
        .unwrap();
    let peer_warm = wapc::WapcHost::new(Box::new(peer_pre.rehydrate(None).unwrap()), None).unwrap();
    assert_eq!(peer_warm.call("echo", &payload).unwrap(), payload);

    let mut g = c.benchmark_group("invoke");
    g.throughput(Throughput::Elements(1));

    let mut live = host
        .engine()
        .instantiate(actor.template().unwrap(), actor.gate().clone())
        .unwrap();
    g.bench_function("warm/sigil", |b| {
        b.iter(|| live.call("echo", &payload).unwrap())
    });
    let wat_actor = host.load_actor(common::wat_echo("wat-echo")).unwrap();
    let mut wat_live = host
        .engine()
        .instantiate(wat_actor.template().unwrap(), wat_actor.gate().clone())
        .unwrap();
    g.bench_function("warm/sigil-wat-echo", |b| {
        b.iter(|| wat_live.call("echo", &payload).unwrap())
    });
    g.bench_function("fresh/sigil-wat-echo", |b| {
        b.iter(|| host.invoke(&wat_actor, "echo", &payload).unwrap())
    });
    g.bench_function("warm/wapc", |b| {
        b.iter(|| peer_warm.call("echo", &payload).unwrap())
    });
    g.bench_function("fresh/sigil", |b| {
        b.iter(|| host.invoke(&actor, "echo", &payload).unwrap())
    });
    // The same on the asynchronous path a running host uses (`block_on` of a
    // single-threaded runtime included).
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("fresh/sigil-async", |b| {
        b.iter(|| {
            single
                .block_on(host.invoke_async(&actor, "echo", &payload))
                .unwrap()
        })
    });
    g.bench_function("fresh/sigil-no-snapshot", |b| {
        b.iter(|| no_snapshot.invoke(&actor_plain, "echo", &payload).unwrap())
    });
    g.bench_function("fresh/wapc", |b| {
        b.iter(|| {
            let h = wapc::WapcHost::new(Box::new(peer_pre.rehydrate(None).unwrap()), None).unwrap();
            h.call("echo", &payload).unwrap()
        })
    });
    g.bench_function("spawn/bin-true", |b| {
        b.iter(|| std::process::Command::new("/bin/true").status().unwrap())
    });
    g.finish();

    // A realistic step: render a README-sized Markdown document in a fresh instance.
    let md_actor = host.load_actor(markdown.clone()).unwrap();
    let doc = std::fs::read_to_string(common::repo().join("docs").join("claims.md")).unwrap();
    let request = rmp_serde::to_vec_named(&serde_json::json!({ "markdown": doc })).unwrap();
    let mut g = c.benchmark_group("step");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("markdown/fresh", |b| {
        b.iter(|| host.invoke(&md_actor, "render", &request).unwrap())
    });
    g.finish();

    // Cold start: verify + compile (+ pre-initialize), without and with the compiled cache.
    let mut g = c.benchmark_group("cold");
    g.sample_size(10);
    let policy = Policy::new();
    let plain_engine = sigil_host::Engine::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cached_engine = sigil_host::Engine::new(EngineConfig {
        max_instances: 4,
        cache_dir: Some(cache_dir.path().join("cache")),
        ..EngineConfig::default()
    })
    .unwrap();
    for (name, module) in [("echo", &echo), ("markdown", &markdown)] {
        let bytes: Arc<[u8]> = module.as_slice().into();
        g.bench_function(format!("{name}/compile"), |b| {
            b.iter(|| {
                Actor::load(&plain_engine, bytes.clone(), &policy, Arc::new(NoProviders)).unwrap()
            })
        });
        // Fill the cache, then measure loads from it.
        Actor::load(
            &cached_engine,
            bytes.clone(),
            &policy,
            Arc::new(NoProviders),
        )
        .unwrap();
        g.bench_function(format!("{name}/cache+first-call"), |b| {
            b.iter(|| {
                let a = Actor::load(
                    &cached_engine,
                    bytes.clone(),
                    &policy,
                    Arc::new(NoProviders),
                )
                .unwrap();
                cached_engine
                    .invoke(
                        a.template().unwrap(),
                        a.gate().clone(),
                        "does-not-exist",
                        b"",
                    )
                    .unwrap_err()
            })
        });
        g.bench_function(format!("{name}/cache"), |b| {
            b.iter(|| {
                let a = Actor::load(
                    &cached_engine,
                    bytes.clone(),
                    &policy,
                    Arc::new(NoProviders),
                )
                .unwrap();
                assert!(a.template_info().from_cache);
                a
            })
        });
    }
    g.finish();
}

criterion_group!(invoke, benches);
criterion_main!(invoke);
