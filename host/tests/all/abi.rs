//! The waPC ABI: requests in, responses and errors out, bad pointers refused.

use sigil_host::InvocationError;

use crate::common::*;

#[test]
fn echo_round_trip() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    for payload in [&b""[..], b"x", &[7u8; 4096][..]] {
        assert_eq!(host.invoke(&actor, "echo", payload).unwrap(), payload);
    }
}

#[test]
fn guest_error_is_reported() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    match host.invoke(&actor, "fail", b"") {
        Err(InvocationError::Guest { message }) => assert_eq!(message, "it failed"),
        other => panic!("{other:?}"),
    }
    match host.invoke(&actor, "zzz-unknown", b"") {
        Err(InvocationError::Guest { message }) => assert_eq!(message, "zzz-unknown"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_pointer_ends_only_that_invocation() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    match host.invoke(&actor, "badptr", b"") {
        Err(InvocationError::BadGuestPointer {
            function,
            ptr,
            len,
            memory_size,
        }) => {
            assert_eq!(function, "__guest_response");
            assert_eq!((ptr, len), (0x7fff_0000, 1000));
            assert_eq!(memory_size, 2 * 65536);
        }
        other => panic!("{other:?}"),
    }
    // The same actor keeps serving.
    assert_eq!(
        host.invoke(&actor, "echo", b"still here").unwrap(),
        b"still here"
    );
}

#[test]
fn length_beyond_memory_is_a_bad_pointer() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let n = (3 * 65536u32).to_le_bytes();
    assert!(matches!(
        host.invoke(&actor, "Big", &n),
        Err(InvocationError::BadGuestPointer {
            function: "__guest_response",
            ..
        })
    ));
}

#[test]
fn protocol_violation() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert!(matches!(
        host.invoke(&actor, "x", b""),
        Err(InvocationError::Protocol { .. })
    ));
}

#[test]
fn fresh_instance_per_invocation() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    for _ in 0..5 {
        assert_eq!(host.invoke(&actor, "n", b"").unwrap(), 1u32.to_le_bytes());
    }
    // A live instance keeps its state between calls (and is opt-in).
    let mut live = host
        .engine()
        .instantiate(actor.template().unwrap(), actor.gate().clone())
        .unwrap();
    for i in 1..=3u32 {
        assert_eq!(live.call("n", b"").unwrap(), i.to_le_bytes());
    }
    // A trap retires it.
    assert!(live.call("t", b"").is_err());
    assert!(matches!(
        live.call("n", b""),
        Err(InvocationError::Instantiate { .. })
    ));
}

#[test]
fn many_threads_share_one_host() {
    let host = std::sync::Arc::new(host());
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (host, actor) = (host.clone(), actor.clone());
            std::thread::spawn(move || {
                for i in 0..200 {
                    let msg = format!("{t}-{i}");
                    assert_eq!(
                        host.invoke(&actor, "echo", msg.as_bytes()).unwrap(),
                        msg.as_bytes()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
