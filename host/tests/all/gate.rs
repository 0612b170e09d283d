//! The capability gate: claims first, before built-ins and providers.

use sigil_actor::contracts::{self, numbergen};
use sigil_host::InvocationError;

use crate::common::*;

#[test]
fn undeclared_capability_is_refused_and_nothing_is_dispatched() {
    let (host, recorder) = host_with_recorder();
    let signed = sign(&probe(), "probe", &["logging"]);
    let actor = host.load_actor(signed.bytes).unwrap();
    match host.invoke(&actor, "hostcall", b"wasmcloud:keyvalue") {
        Err(InvocationError::Guest { message }) => {
            assert!(
                message.contains("capability wasmcloud:keyvalue denied"),
                "{message}"
            );
            assert!(message.contains("probe"), "names the actor: {message}");
            assert!(
                message.contains(&signed.subject),
                "names the key: {message}"
            );
            assert!(
                message.contains("--cap keyvalue"),
                "says the fix: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        recorder.calls.lock().unwrap().is_empty(),
        "no provider saw it"
    );
    let stats = actor.gate().stats();
    assert_eq!(stats.denied.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn granted_capability_reaches_the_provider_with_the_actor_identity() {
    let (host, recorder) = host_with_recorder();
    let signed = sign(&probe(), "probe", &["keyvalue"]);
    let actor = host.load_actor(signed.bytes).unwrap();
    let reply = host
        .invoke(&actor, "hostcall", b"wasmcloud:keyvalue")
        .unwrap();
    assert_eq!(reply, b"provided Op");
    let calls = recorder.calls.lock().unwrap();
    assert_eq!(
        calls.as_slice(),
        [(
            signed.subject.clone(),
            "wasmcloud:keyvalue".to_string(),
            "default".to_string()
        )]
    );
}

#[test]
fn built_ins_need_claims_too() {
    let host = host();
    let without = host.load_actor(sign(&probe(), "plain", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&without, "hostcall", b"wasmcloud:builtin:numbergen"),
        Err(InvocationError::Guest { message }) if message.contains("denied")
    ));
    let with = host
        .load_actor(sign(&probe(), "rng", &["numbergen"]).bytes)
        .unwrap();
    // The probe sends operation "Op", which numbergen does not have: the gate let it through
    // and the built-in answered.
    assert!(matches!(
        host.invoke(&with, "hostcall", b"wasmcloud:builtin:numbergen"),
        Err(InvocationError::Guest { message }) if message.contains("no operation \"Op\"")
    ));
}

#[test]
fn no_provider_linked_is_a_clear_error() {
    let host = host();
    let actor = host
        .load_actor(sign(&probe(), "probe", &["blobstore"]).bytes)
        .unwrap();
    assert!(matches!(
        host.invoke(&actor, "hostcall", b"wasmcloud:blobstore"),
        Err(InvocationError::Guest { message }) if message.contains("no provider is linked for wasmcloud:blobstore")
    ));
}

#[test]
fn numbergen_and_logging_built_ins() {
    use sigil_actor::contracts::logging;
    use sigil_host::{HostCall, HostCallHandler};
    let host = host();
    let actor = host
        .load_actor(sign(&probe(), "probe", &["numbergen", "logging"]).bytes)
        .unwrap();
    let call = |ns: &str, op: &str, payload: Vec<u8>| {
        actor.gate().host_call(&HostCall {
            binding: "default",
            namespace: ns,
            operation: op,
            payload: &payload,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(1),
        })
    };
    let guid: String = contracts::decode(
        &call(numbergen::CONTRACT_ID, numbergen::OP_GENERATE_GUID, vec![]).unwrap(),
    )
    .unwrap();
    assert_eq!(uuid_shape(&guid), [8, 4, 4, 4, 12], "{guid}");
    let range = contracts::encode(&numbergen::RandomInRange { min: 7, max: 9 }).unwrap();
    for _ in 0..20 {
        let n: u32 = contracts::decode(
            &call(
                numbergen::CONTRACT_ID,
                numbergen::OP_RANDOM_IN_RANGE,
                range.clone(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!((7..=9).contains(&n));
    }
    let inverted = contracts::encode(&numbergen::RandomInRange { min: 9, max: 7 }).unwrap();
    assert!(
        call(
            numbergen::CONTRACT_ID,
            numbergen::OP_RANDOM_IN_RANGE,
            inverted
        )
        .is_err()
    );
    let _: u32 =
        contracts::decode(&call(numbergen::CONTRACT_ID, numbergen::OP_RANDOM_32, vec![]).unwrap())
            .unwrap();

    let entry = contracts::encode(&logging::WriteLog {
        level: "info".into(),
        text: "hello".into(),
    })
    .unwrap();
    assert_eq!(
        call(logging::CONTRACT_ID, logging::OP_WRITE_LOG, entry).unwrap(),
        b""
    );
    let bad_level = contracts::encode(&logging::WriteLog {
        level: "loud".into(),
        text: "x".into(),
    })
    .unwrap();
    assert!(
        call(logging::CONTRACT_ID, logging::OP_WRITE_LOG, bad_level)
            .unwrap_err()
            .contains("unknown log level")
    );
    assert!(
        call(
            logging::CONTRACT_ID,
            logging::OP_WRITE_LOG,
            b"\xc1 garbage".to_vec()
        )
        .unwrap_err()
        .contains("invalid WriteLog payload")
    );
}

fn uuid_shape(s: &str) -> Vec<usize> {
    s.split('-').map(str::len).collect()
}

#[test]
fn console_output_goes_to_the_log_and_is_bounded() {
    let host = host_with(sigil_host::Limits {
        max_log_bytes: 8,
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    // Longer than the budget: cut, not an error.
    assert_eq!(
        host.invoke(&actor, "c", b"hello, console output").unwrap(),
        b""
    );
}
