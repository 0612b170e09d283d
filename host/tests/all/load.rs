//! Loading: only verified modules, and clear errors for modules that cannot run.

use sigil_claims::Policy;
use sigil_host::{Host, InvocationError, LoadError};

use crate::common::*;

#[test]
fn unsigned_modules_never_load() {
    let host = host();
    assert!(matches!(
        host.load_actor(probe()),
        Err(LoadError::Claims(sigil_claims::Error::NoJwtSection))
    ));
}

#[test]
fn tampered_modules_never_load() {
    let host = host();
    let mut bytes = sign(&probe(), "probe", &[]).bytes;
    let at = bytes.windows(4).position(|w| w == b"boom").unwrap();
    bytes[at] = b'z';
    assert!(matches!(
        host.load_actor(bytes),
        Err(LoadError::Claims(sigil_claims::Error::HashMismatch { .. }))
    ));
}

#[test]
fn the_host_policy_applies() {
    let signed = sign(&probe(), "probe", &[]);
    let stranger = sigil_claims::keys::generate(sigil_claims::KeyKind::Account);
    let host = Host::builder()
        .engine_config(config(test_limits()))
        .policy(Policy::new().allow_issuer(stranger.public_key()))
        .build()
        .unwrap();
    assert!(matches!(
        host.load_actor(signed.bytes.clone()),
        Err(LoadError::Claims(
            sigil_claims::Error::IssuerNotAllowed { .. }
        ))
    ));
    let host = Host::builder()
        .engine_config(config(test_limits()))
        .policy(Policy::new().allow_issuer(signed.account.public_key()))
        .build()
        .unwrap();
    let actor = host.load_actor(signed.bytes).unwrap();
    assert_eq!(host.actor("probe").unwrap().subject(), actor.subject());
    assert_eq!(host.actor(&signed.subject).unwrap().name(), "probe");
}

#[test]
fn malformed_wasm_with_a_valid_signature() {
    // Structurally a module (so it can be signed), but the function body is garbage.
    let bad = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x0a\x05\x01\x03\0\xff\x0b";
    let host = host();
    assert!(matches!(
        host.load_actor(sign(bad, "bad", &[]).bytes),
        Err(LoadError::Compile { .. })
    ));
}

#[test]
fn an_import_the_host_does_not_provide() {
    let wat = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#;
    let host = host();
    match host.load_actor(sign(&wat::parse_str(wat).unwrap(), "wasi", &[]).bytes) {
        Err(LoadError::UnsupportedImport { module, name, kind }) => {
            assert_eq!(
                (module.as_str(), name.as_str(), kind.as_str()),
                ("wasi_snapshot_preview1", "fd_write", "function")
            );
        }
        other => panic!("{other:?}"),
    }
    let wat = r#"(module
        (import "wapc" "__host_call" (func (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#;
    match host.load_actor(sign(&wat::parse_str(wat).unwrap(), "sig", &[]).bytes) {
        Err(LoadError::ImportSignature {
            name,
            found,
            expected,
        }) => {
            assert_eq!(name, "__host_call");
            assert_eq!(found, "(i32) -> i32");
            assert!(expected.starts_with("(i32, i32, i32, i32"));
        }
        other => panic!("{other:?}"),
    }
    let wat = r#"(module
        (import "env" "memory" (memory 1))
        (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#;
    assert!(matches!(
        host.load_actor(sign(&wat::parse_str(wat).unwrap(), "mem", &[]).bytes),
        Err(LoadError::UnsupportedImport { kind, .. }) if kind == "memory"
    ));
}

#[test]
fn missing_exports() {
    let host = host();
    let no_call = r#"(module (memory (export "memory") 1))"#;
    assert!(matches!(
        host.load_actor(sign(&wat::parse_str(no_call).unwrap(), "x", &[]).bytes),
        Err(LoadError::MissingExport { .. })
    ));
    let no_memory =
        r#"(module (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#;
    assert!(matches!(
        host.load_actor(sign(&wat::parse_str(no_memory).unwrap(), "x", &[]).bytes),
        Err(LoadError::MissingExport { what, .. }) if what.contains("memory")
    ));
}

#[test]
fn too_much_initial_memory() {
    let wat = r#"(module
        (memory (export "memory") 1000)
        (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#;
    let err = host()
        .load_actor(sign(&wat::parse_str(wat).unwrap(), "fat", &[]).bytes)
        .unwrap_err();
    assert!(
        matches!(err, LoadError::MemoryTooLarge { requested, limit } if requested == 1000 * 65536 && limit == 8 << 20),
        "{err:?}"
    );
}

#[test]
fn start_function_side_effects_stay_in_their_instance() {
    // The start function bumps the counter and logs; every invocation sees exactly one bump.
    let start = r#"
      (data (i32.const 0x400) "started")
      (func $start
        (i32.store (i32.const 0x100) (i32.add (i32.load (i32.const 0x100)) (i32.const 1)))
        (call $console_log (i32.const 0x400) (i32.const 7)))
      (start $start)"#;
    let host = host();
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(start)).unwrap(), "start", &[]).bytes)
        .unwrap();
    for _ in 0..3 {
        // The start bump plus this call's bump.
        assert_eq!(host.invoke(&actor, "n", b"").unwrap(), 2u32.to_le_bytes());
    }
}

#[test]
fn start_function_host_calls_pass_the_gate() {
    // A start function that tries to reach keyvalue before any invocation: refused by the
    // gate (the call returns 0), so it records the failure at 0x100.
    let start = r#"
      (data (i32.const 0x400) "wasmcloud:keyvalue")
      (func $start
        (i32.store (i32.const 0x100)
          (call $host_call (i32.const 0x320) (i32.const 7) (i32.const 0x400) (i32.const 18)
                           (i32.const 0x330) (i32.const 2) (i32.const 0) (i32.const 0))))
      (start $start)"#;
    let (host, recorder) = host_with_recorder();
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(start)).unwrap(), "sneaky", &[]).bytes)
        .unwrap();
    // The counter holds the host-call result (0 = refused) and "n" adds one.
    assert_eq!(host.invoke(&actor, "n", b"").unwrap(), 1u32.to_le_bytes());
    assert!(recorder.calls.lock().unwrap().is_empty());
}

#[test]
fn start_function_that_never_ends_or_traps() {
    let host = host_with(sigil_host::Limits {
        deadline: std::time::Duration::from_millis(100),
        ..test_limits()
    });
    let spin = r#"(func $start (loop $l (br $l))) (start $start)"#;
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(spin)).unwrap(), "spin", &[]).bytes)
        .unwrap();
    assert!(matches!(
        host.invoke(&actor, "echo", b""),
        Err(InvocationError::DeadlineExceeded { .. })
    ));
    let trap = r#"(func $start unreachable) (start $start)"#;
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(trap)).unwrap(), "trap", &[]).bytes)
        .unwrap();
    assert!(matches!(
        host.invoke(&actor, "echo", b""),
        Err(InvocationError::Trap {
            phase: sigil_host::engine::Phase::Start,
            ..
        })
    ));
}
