//! Actors built from Rust: waPC interoperability both ways, the Markdown step, and every
//! way the hostile actor misbehaves.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sigil_actor::contracts::{self, logging};
use sigil_claims::caps;
use sigil_host::{HostCall, HostCallHandler, InvocationError, Limits};

use crate::common::*;
use crate::guests::guest;

#[derive(Serialize)]
struct Forward<'a> {
    binding: &'a str,
    namespace: &'a str,
    operation: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

#[test]
fn a_wapc_guest_actor_runs_on_sigil_unchanged() {
    let (host, recorder) = host_with_recorder();
    let actor = host.load_actor(guest("wapc-echo")).unwrap();
    assert_eq!(
        host.invoke(&actor, "echo", b"hi there").unwrap(),
        b"hi there"
    );

    // Its claims grant logging: the host call goes through to the built-in.
    let entry = contracts::encode(&logging::WriteLog {
        level: "info".into(),
        text: "from wapc-guest".into(),
    })
    .unwrap();
    let forward = |namespace: &str, operation: &str, payload: &[u8]| {
        rmp_serde::to_vec_named(&Forward {
            binding: "default",
            namespace,
            operation,
            payload,
        })
        .unwrap()
    };
    let req = forward(logging::CONTRACT_ID, logging::OP_WRITE_LOG, &entry);
    assert_eq!(host.invoke(&actor, "call", &req).unwrap(), b"");

    // Not keyvalue: the guest gets the gate's message through wapc-guest's host_call error.
    let req = forward(caps::KEY_VALUE, "Get", b"");
    match host.invoke(&actor, "call", &req) {
        Err(InvocationError::Guest { message }) => {
            assert!(
                message.contains("capability wasmcloud:keyvalue denied"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(recorder.calls.lock().unwrap().is_empty());
}

#[test]
fn a_sigil_actor_runs_on_the_public_wapc_host() {
    let module = sigil_claims::strip_jwt_sections(&guest("hostile")).unwrap();
    type Seen = Vec<(String, String, String, Vec<u8>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    let callback = move |_id: u64, binding: &str, ns: &str, op: &str, payload: &[u8]| {
        record
            .lock()
            .unwrap()
            .push((binding.into(), ns.into(), op.into(), payload.to_vec()));
        Ok(Vec::new())
    };
    let engine = wasmtime_provider::WasmtimeEngineProviderBuilder::new()
        .module_bytes(&module)
        .build()
        .unwrap();
    let host = wapc::WapcHost::new(Box::new(engine), Some(Box::new(callback))).unwrap();
    assert_eq!(host.call("ok", b"").unwrap(), b"fine");
    host.call("log", b"").unwrap();
    let seen = seen.lock().unwrap();
    let (binding, ns, op, payload) = &seen[0];
    assert_eq!(
        (binding.as_str(), ns.as_str(), op.as_str()),
        ("default", logging::CONTRACT_ID, logging::OP_WRITE_LOG)
    );
    let entry: logging::WriteLog = contracts::decode(payload).unwrap();
    assert_eq!(entry.text, "hello from hostile");

    // The echo example's typed handler, too.
    let echo = sigil_claims::strip_jwt_sections(&guest("echo")).unwrap();
    let engine = wasmtime_provider::WasmtimeEngineProviderBuilder::new()
        .module_bytes(&echo)
        .build()
        .unwrap();
    let host = wapc::WapcHost::new(Box::new(engine), None).unwrap();
    assert_eq!(host.call("echo", b"abc").unwrap(), b"abc");
    let req = rmp_serde::to_vec_named(&serde_json::json!({"name": "wapc"})).unwrap();
    let reply: serde_json::Value =
        rmp_serde::from_slice(&host.call("greet", &req).unwrap()).unwrap();
    assert!(reply.to_string().contains("wapc"), "{reply}");
}

#[derive(Deserialize)]
struct Rendered {
    html: String,
}

#[test]
fn the_markdown_step_renders_and_can_reach_nothing() {
    let (host, recorder) = host_with_recorder();
    let actor = host.load_actor(guest("markdown")).unwrap();
    assert!(actor.claims().capabilities().is_empty());
    let req = rmp_serde::to_vec_named(&serde_json::json!({
        "markdown": "# Sigil\n\nSigned *actors*, not containers.\n\n- one\n- two\n"
    }))
    .unwrap();
    let out: Rendered =
        rmp_serde::from_slice(&host.invoke(&actor, "render", &req).unwrap()).unwrap();
    assert!(out.html.contains("<h1>Sigil</h1>"), "{}", out.html);
    assert!(out.html.contains("<em>actors</em>"));
    assert!(out.html.contains("<li>two</li>"));
    assert!(recorder.calls.lock().unwrap().is_empty());

    // Whatever it asked for, the gate would refuse: it holds no capability at all.
    for (_, contract, _) in caps::WELL_KNOWN {
        let refused = actor.gate().host_call(&HostCall {
            binding: "default",
            namespace: contract,
            operation: "Anything",
            payload: b"",
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(1),
        });
        assert!(refused.unwrap_err().contains("denied"), "{contract}");
    }
    assert!(recorder.calls.lock().unwrap().is_empty());

    // A bad request is the actor's clear error, not a crash.
    match host.invoke(&actor, "render", b"\xc1") {
        Err(InvocationError::Guest { message }) => assert!(message.contains("render"), "{message}"),
        other => panic!("{other:?}"),
    }
}

fn hostile_host(limits: Limits) -> (sigil_host::Host, Arc<sigil_host::Actor>) {
    let host = host_with(limits);
    let actor = host.load_actor(guest("hostile")).unwrap();
    (host, actor)
}

fn rust_limits() -> Limits {
    Limits {
        max_memory: 32 << 20,
        ..test_limits()
    }
}

fn still_ok(host: &sigil_host::Host, actor: &sigil_host::Actor) {
    assert_eq!(host.invoke(actor, "ok", b"").unwrap(), b"fine");
}

#[test]
fn hostile_panic() {
    let (host, actor) = hostile_host(rust_limits());
    match host.invoke(&actor, "panic", b"") {
        Err(InvocationError::Panicked { message }) => {
            assert!(message.contains("boom"), "{message}");
            assert!(message.contains("panicked at"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    still_ok(&host, &actor);
}

#[test]
fn hostile_spin() {
    let (host, actor) = hostile_host(rust_limits());
    assert!(matches!(
        host.invoke(&actor, "spin", b""),
        Err(InvocationError::DeadlineExceeded { .. })
    ));
    still_ok(&host, &actor);
}

#[test]
fn hostile_alloc_bomb() {
    let (host, actor) = hostile_host(rust_limits());
    assert!(matches!(
        host.invoke(&actor, "alloc_bomb", b""),
        Err(InvocationError::MemoryLimitExceeded { limit, .. }) if limit == 32 << 20
    ));
    still_ok(&host, &actor);
}

#[test]
fn hostile_recursion() {
    let (host, actor) = hostile_host(rust_limits());
    let err = host.invoke(&actor, "recurse", b"").unwrap_err();
    assert!(matches!(err, InvocationError::StackOverflow), "{err:?}");
    still_ok(&host, &actor);
}

#[test]
fn hostile_big_response() {
    let (host, actor) = hostile_host(rust_limits());
    let n = (2u32 << 20).to_le_bytes();
    assert!(matches!(
        host.invoke(&actor, "big_response", &n),
        Err(InvocationError::ResponseTooLarge { size, limit }) if size == 2 << 20 && limit == 1 << 20
    ));
    still_ok(&host, &actor);
}

#[test]
fn hostile_undeclared_capability() {
    let (host, actor) = hostile_host(rust_limits());
    let seen = String::from_utf8(host.invoke(&actor, "call_undeclared", b"").unwrap()).unwrap();
    assert!(
        seen.contains("capability wasmcloud:keyvalue denied"),
        "{seen}"
    );
    assert!(seen.contains("hostile"), "{seen}");
}

#[test]
fn granted_built_ins_work_from_rust() {
    let (host, actor) = hostile_host(rust_limits());
    assert_eq!(host.invoke(&actor, "log", b"").unwrap(), b"");
    let guid = String::from_utf8(host.invoke(&actor, "guid", b"").unwrap()).unwrap();
    assert_eq!(guid.len(), 36, "{guid}");
}

#[test]
fn gate_counts_refusals_not_successes_only() {
    let (host, actor) = hostile_host(rust_limits());
    host.invoke(&actor, "call_undeclared", b"").unwrap();
    host.invoke(&actor, "log", b"").unwrap();
    let s = actor.gate().stats();
    assert_eq!(s.denied.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.allowed.load(std::sync::atomic::Ordering::Relaxed), 1);
}
