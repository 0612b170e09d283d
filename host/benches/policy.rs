//! What policy control adds to a capability call, side by side in one run: no policy, a
//! typical Rego policy with its decisions cached, and the same policy evaluated on every
//! call. Measured twice: a whole invocation of a WAT actor making one key-value call (to a
//! provider that answers at once), and the invocation decision alone.
//!
//! Run: `cargo bench -p sigil-host --bench policy`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sigil_host::policy::rego::RegoPolicy;
use sigil_host::policy::{
    Caching, Decision, DecisionFuture, DecisionPoint, Enforcer, HostInfo, PolicyDecider,
};
use sigil_host::{ActorIdentity, EngineConfig, Host, HostCall, ProviderDispatch};

/// A provider that answers every call with nothing, at once.
struct Instant0;

impl ProviderDispatch for Instant0 {
    fn dispatch(&self, _: &ActorIdentity, _: &HostCall<'_>) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
}

/// The same decider with caching turned off: every call is evaluated.
struct Uncached(Arc<RegoPolicy>);

impl PolicyDecider for Uncached {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn decide<'a>(
        &'a self,
        point: DecisionPoint,
        input: &'a serde_json::Value,
    ) -> DecisionFuture<'a> {
        self.0.decide(point, input)
    }
    fn decide_blocking(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision {
        self.0.decide_blocking(point, input)
    }
    fn caching(&self) -> Caching {
        Caching::Never
    }
}

/// A guest that makes one `wasmcloud:keyvalue` `Set` call with its payload as the body.
fn caller() -> Vec<u8> {
    let wasm = wat::parse_str(
        r#"(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "default")
  (data (i32.const 0x110) "wasmcloud:keyvalue")
  (data (i32.const 0x130) "Set")
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $guest_request (i32.const 0x1000) (i32.const 0x2000))
    (drop (call $host_call (i32.const 0x100) (i32.const 7) (i32.const 0x110) (i32.const 18)
                           (i32.const 0x130) (i32.const 3) (i32.const 0x2000) (local.get $len)))
    (call $guest_response (i32.const 0x2000) (i32.const 0))
    (i32.const 1)))"#,
    )
    .unwrap();
    let account = sigil_claims::keys::generate(sigil_claims::KeyKind::Account);
    let subject = sigil_claims::keys::generate(sigil_claims::KeyKind::Module).public_key();
    let spec = sigil_claims::ActorSpec {
        name: "counter".into(),
        caps: vec!["keyvalue".into()],
        ..Default::default()
    };
    sigil_claims::sign_module(&wasm, &spec, &account, &subject)
        .unwrap()
        .bytes
}

/// The typical policy: the key-value and payload-size examples together.
fn typical() -> Arc<RegoPolicy> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    Arc::new(
        RegoPolicy::load(&[
            dir.join("kv-no-delete.rego"),
            dir.join("payload-limits.rego"),
        ])
        .unwrap(),
    )
}

fn host(decider: Option<Arc<dyn PolicyDecider>>) -> Host {
    let mut builder = Host::builder()
        .engine_config(EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        })
        .providers(Arc::new(Instant0));
    if let Some(d) = decider {
        builder = builder.enforcer(Enforcer::new(d, HostInfo::default()));
    }
    builder.build().unwrap()
}

fn benches(c: &mut Criterion) {
    let module = caller();
    let payload = vec![0x5au8; 100];
    let policy = typical();
    let setups: [(&str, Option<Arc<dyn PolicyDecider>>); 3] = [
        ("no-policy", None),
        ("rego-cached", Some(policy.clone())),
        ("rego-uncached", Some(Arc::new(Uncached(policy.clone())))),
    ];

    let mut g = c.benchmark_group("policy/invoke");
    g.throughput(Throughput::Elements(1));
    for (name, decider) in &setups {
        let host = host(decider.clone());
        let actor = host.load_actor(module.clone()).unwrap();
        host.invoke(&actor, "call", &payload).unwrap();
        g.bench_function(*name, |b| {
            b.iter(|| host.invoke(&actor, "call", &payload).unwrap())
        });
    }
    g.finish();

    // The decision alone, as the gate asks it for one call.
    let identity = ActorIdentity {
        subject: "MBENCHACTOR".into(),
        name: "counter".into(),
        issuer: "ABENCHACCOUNT".into(),
        capabilities: ["wasmcloud:keyvalue".to_string()].into_iter().collect(),
    };
    let call = HostCall {
        binding: "default",
        namespace: "wasmcloud:keyvalue",
        operation: "Set",
        payload: &payload,
        deadline: Instant::now() + Duration::from_secs(3600),
    };
    let mut g = c.benchmark_group("policy/decision");
    g.throughput(Throughput::Elements(1));
    for (name, decider) in setups.iter().skip(1) {
        let enforcer = Enforcer::new(decider.clone().unwrap(), HostInfo::default());
        let guard = enforcer.guard(&identity, &[]);
        guard.check(&call).unwrap();
        g.bench_function(*name, |b| b.iter(|| guard.check(&call).unwrap()));
    }
    g.finish();
}

criterion_group!(policy, benches);
criterion_main!(policy);
