//! Actor-to-actor calls: one actor calling another on the same host, and on another host
//! over NATS (signed envelopes both ways), against invoking the callee directly.
//!
//! Each measured invocation runs the caller (the probe's `call`), which calls the target's
//! `kv_get` on an in-memory key-value store. "Hosts" are two runtimes in one process,
//! each with its own NATS connection. Needs NATS on 127.0.0.1:4222.
//! Run: `cargo bench -p sigil-host --bench lattice`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_claims::{ActorSpec, KeyKind, KeyPair, KeyStore, keys, sign_module};
use sigil_host::build::{BuildOptions, build};
use sigil_host::up::{Builtins, Runtime, create_provider};
use sigil_host::{EngineConfig, Limits};
use sigil_providers::plugin::Lattice;
use sigil_providers::{LinkConfig, LinkDefinition};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The probe test actor, built once, signed as `name` with `actor` and `keyvalue`.
fn probe(keys_dir: &Path, name: &str, alias: Option<&str>) -> Vec<u8> {
    let target = repo().join("target").join("guests");
    let mut opts = BuildOptions::new(KeyStore::new(keys_dir));
    opts.target_dir = Some(target.clone());
    opts.out_dir = Some(target.join("signed-bench"));
    opts.quiet = true;
    let built = build(&repo().join("tests/actors"), &opts).expect("build the test actors");
    let b = built.iter().find(|b| b.name == "probe").expect("probe");
    let wasm = std::fs::read(&b.path).unwrap();
    let spec = ActorSpec {
        name: name.into(),
        caps: vec!["actor".into(), "keyvalue".into()],
        call_alias: alias.map(str::to_string),
        ..Default::default()
    };
    let account = keys::generate(KeyKind::Account);
    let subject = keys::generate(KeyKind::Module).public_key();
    sign_module(&wasm, &spec, &account, &subject).unwrap().bytes
}

async fn runtime(actors: Vec<(Vec<u8>, &str)>, lattice: &str, cluster: &KeyPair) -> Arc<Runtime> {
    let engine = EngineConfig {
        limits: Limits {
            deadline: Duration::from_secs(10),
            ..Limits::default()
        },
        ..EngineConfig::default()
    };
    let rt = Runtime::new(engine, sigil_claims::Policy::new()).unwrap();
    let kv = create_provider("keyvalue-memory", &LinkConfig::new(), &Builtins::default()).unwrap();
    rt.add_provider("kv", kv).await.unwrap();
    for (bytes, name) in actors {
        rt.load_actor(bytes).await.unwrap();
        rt.add_link(&LinkDefinition {
            actor: name.into(),
            contract_id: "wasmcloud:keyvalue".into(),
            link_name: "default".into(),
            provider: "kv".into(),
            config: LinkConfig::new(),
        })
        .await
        .unwrap();
    }
    let seed = cluster.seed().unwrap();
    let l = Lattice::new(
        "nats://127.0.0.1:4222",
        lattice,
        KeyPair::from_seed(&seed).unwrap(),
        sigil_claims::Policy::new(),
    );
    rt.join_lattice(l, &[]).await.unwrap();
    rt
}

fn benches(c: &mut Criterion) {
    let keys_dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let lattice = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let cluster = keys::generate(KeyKind::Cluster);
    let caller = probe(keys_dir.path(), "caller", None);
    let local = probe(keys_dir.path(), "local", Some("local"));
    let remote = probe(keys_dir.path(), "remote", Some("remote"));
    let (host_a, host_b) = rt.block_on(async {
        let a = runtime(
            vec![(caller, "caller"), (local, "local")],
            &lattice,
            &cluster,
        )
        .await;
        let b = runtime(vec![(remote, "remote")], &lattice, &cluster).await;
        (a, b)
    });
    let call = |target: &str| {
        rmp_serde::to_vec_named(&serde_json::json!({
            "target": target, "operation": "kv_get", "key": "k", "value": ""
        }))
        .unwrap()
    };
    let get = rmp_serde::to_vec_named(&serde_json::json!({"key": "k"})).unwrap();

    let mut group = c.benchmark_group("actor_calls");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("callee_invoked_directly", |b| {
        b.iter(|| {
            rt.block_on(host_a.invoke("local", "kv_get", get.clone()))
                .unwrap()
        })
    });
    let to_local = call("local");
    group.bench_function("caller_then_callee_on_the_same_host", |b| {
        b.iter(|| {
            rt.block_on(host_a.invoke("caller", "call", to_local.clone()))
                .unwrap()
        })
    });
    let to_remote = call("remote");
    group.bench_function("caller_then_callee_on_another_host", |b| {
        b.iter(|| {
            rt.block_on(host_a.invoke("caller", "call", to_remote.clone()))
                .unwrap()
        })
    });
    group.finish();
    rt.block_on(host_a.shutdown(Duration::from_secs(5)));
    rt.block_on(host_b.shutdown(Duration::from_secs(5)));
}

criterion_group!(lattice, benches);
criterion_main!(lattice);
