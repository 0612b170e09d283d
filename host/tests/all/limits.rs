//! Each limit ends the invocation with its own error, and the host keeps serving.

use std::time::{Duration, Instant};

use sigil_host::{InvocationError, Limits};

use crate::common::*;

fn still_serves(host: &sigil_host::Host, actor: &sigil_host::Actor) {
    assert_eq!(host.invoke(actor, "echo", b"ok").unwrap(), b"ok");
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let host = host_with(Limits {
        deadline: Duration::from_millis(100),
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let started = Instant::now();
    match host.invoke(&actor, "loop", b"") {
        Err(InvocationError::DeadlineExceeded { limit }) => {
            assert_eq!(limit, Duration::from_millis(100))
        }
        other => panic!("{other:?}"),
    }
    // Stopped promptly (generous bound: CI machines are slow and busy).
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serves(&host, &actor);
}

#[test]
fn fuel_runs_out() {
    let host = host_with(Limits {
        fuel: Some(1_000_000),
        deadline: Duration::from_secs(30),
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&actor, "loop", b""),
        Err(InvocationError::FuelExhausted { limit: 1_000_000 })
    ));
    still_serves(&host, &actor);
}

#[test]
fn memory_bomb_hits_the_ceiling() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    match host.invoke(&actor, "grow", b"") {
        Err(InvocationError::MemoryLimitExceeded { requested, limit }) => {
            assert_eq!(limit, 8 << 20);
            assert!(requested > limit);
        }
        other => panic!("{other:?}"),
    }
    still_serves(&host, &actor);
}

#[test]
fn stack_overflow() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&actor, "recurse", b""),
        Err(InvocationError::StackOverflow)
    ));
    still_serves(&host, &actor);
}

#[test]
fn trap() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    match host.invoke(&actor, "trap", b"") {
        Err(InvocationError::Trap { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    still_serves(&host, &actor);
}

#[test]
fn panic_message_is_reported() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    match host.invoke(&actor, "panic", b"") {
        Err(InvocationError::Panicked { message }) => assert_eq!(message, "boom"),
        other => panic!("{other:?}"),
    }
    still_serves(&host, &actor);
}

#[test]
fn oversized_response() {
    let host = host_with(Limits {
        max_response: 1000,
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&actor, "Big", &4096u32.to_le_bytes()),
        Err(InvocationError::ResponseTooLarge {
            size: 4096,
            limit: 1000
        })
    ));
    assert_eq!(
        host.invoke(&actor, "Big", &1000u32.to_le_bytes())
            .unwrap()
            .len(),
        1000
    );
    still_serves(&host, &actor);
}

#[test]
fn oversized_request() {
    let host = host_with(Limits {
        max_request: 100,
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&actor, "echo", &[0u8; 101]),
        Err(InvocationError::RequestTooLarge {
            size: 101,
            limit: 100
        })
    ));
    still_serves(&host, &actor);
}

#[test]
fn a_runaway_actor_does_not_stop_the_others() {
    let host = std::sync::Arc::new(host_with(Limits {
        deadline: Duration::from_millis(300),
        ..test_limits()
    }));
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (host, actor) = (host.clone(), actor.clone());
            std::thread::spawn(move || host.invoke(&actor, "loop", b""))
        })
        .collect();
    // Meanwhile, others are served.
    for _ in 0..50 {
        still_serves(&host, &actor);
    }
    for s in spinners {
        assert!(matches!(
            s.join().unwrap(),
            Err(InvocationError::DeadlineExceeded { .. })
        ));
    }
}
