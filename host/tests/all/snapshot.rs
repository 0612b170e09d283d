//! Pre-initialization: `wapc_init` runs once at load, and its result is in every instance.

use sigil_host::{EngineConfig, Host};

use crate::common::*;

fn host_snapshot(snapshot: bool) -> Host {
    Host::builder()
        .engine_config(EngineConfig {
            snapshot,
            ..config(test_limits())
        })
        .build()
        .unwrap()
}

#[test]
fn init_runs_once_per_template_or_once_per_instance() {
    let module = wat::parse_str(probe_wat(WAPC_INIT)).unwrap();
    let signed = sign(&module, "init", &[]);
    for snapshot in [true, false] {
        let host = host_snapshot(snapshot);
        let actor = host.load_actor(signed.bytes.clone()).unwrap();
        assert_eq!(actor.template_info().snapshot, snapshot);
        for _ in 0..3 {
            assert_eq!(host.invoke(&actor, "i", b"").unwrap(), 42u32.to_le_bytes());
            assert_eq!(host.invoke(&actor, "n", b"").unwrap(), 1u32.to_le_bytes());
        }
    }
}

#[test]
fn init_that_calls_the_host_is_not_snapshotted() {
    let init = r#"(data (i32.const 0x400) "hi")
      (func (export "wapc_init")
        (call $console_log (i32.const 0x400) (i32.const 2))
        (i32.store (i32.const 0x200) (i32.const 42)))"#;
    let host = host_snapshot(true);
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(init)).unwrap(), "chatty", &[]).bytes)
        .unwrap();
    assert!(!actor.template_info().snapshot);
    assert_eq!(host.invoke(&actor, "i", b"").unwrap(), 42u32.to_le_bytes());
}

#[test]
fn init_that_traps_fails_each_invocation_clearly() {
    let init = r#"(func (export "wapc_init") unreachable)"#;
    let host = host_snapshot(true);
    let actor = host
        .load_actor(sign(&wat::parse_str(probe_wat(init)).unwrap(), "broken", &[]).bytes)
        .unwrap();
    assert!(!actor.template_info().snapshot);
    match host.invoke(&actor, "echo", b"") {
        Err(sigil_host::InvocationError::Trap { phase, .. }) => {
            assert_eq!(phase, sigil_host::engine::Phase::Init("wapc_init"))
        }
        other => panic!("{other:?}"),
    }
}
