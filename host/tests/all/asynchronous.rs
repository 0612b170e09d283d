//! Asynchronous invocations: the same results and limits as synchronous ones, host calls
//! that await without blocking the executor, and a runaway guest that yields its worker.

use std::sync::Arc;
use std::time::Duration;

use sigil_host::{
    ActorIdentity, Host, HostCall, HostCallFuture, InvocationError, Limits, ProviderDispatch,
};

use crate::common::*;

/// A single-threaded runtime: whatever runs concurrently on it does so only because the
/// invocations yield.
fn single_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Answers every provider call after all `parties` calls have arrived: it completes only if
/// the invocations waiting on it are suspended at the same time.
struct Rendezvous {
    barrier: tokio::sync::Barrier,
}

impl ProviderDispatch for Rendezvous {
    fn dispatch(&self, _: &ActorIdentity, _: &HostCall<'_>) -> Result<Vec<u8>, String> {
        Err("this provider only answers asynchronous invocations".into())
    }

    fn dispatch_async<'a>(
        &'a self,
        _actor: &'a ActorIdentity,
        call: HostCall<'a>,
    ) -> HostCallFuture<'a> {
        Box::pin(async move {
            self.barrier.wait().await;
            Ok(format!("met at {}", call.operation).into_bytes())
        })
    }
}

fn host_with_provider(limits: Limits, provider: Arc<dyn ProviderDispatch>) -> Host {
    Host::builder()
        .engine_config(config(limits))
        .providers(provider)
        .build()
        .unwrap()
}

#[test]
fn results_and_errors_match_the_synchronous_path() {
    let host = host();
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    single_thread().block_on(async {
        assert_eq!(
            host.invoke_async(&actor, "echo", b"hello").await.unwrap(),
            b"hello"
        );
        assert!(matches!(
            host.invoke_async(&actor, "fail", b"").await,
            Err(InvocationError::Guest { message }) if message == "it failed"
        ));
        assert!(matches!(
            host.invoke_async(&actor, "panic", b"").await,
            Err(InvocationError::Panicked { message }) if message == "boom"
        ));
        assert!(matches!(
            host.invoke_async(&actor, "grow", b"").await,
            Err(InvocationError::MemoryLimitExceeded { .. })
        ));
        assert!(matches!(
            host.invoke_async(&actor, "recurse", b"").await,
            Err(InvocationError::StackOverflow)
        ));
        assert!(matches!(
            host.invoke_async(&actor, "bad", b"").await,
            Err(InvocationError::BadGuestPointer { .. })
        ));
        // Fresh instances: nothing survives from one invocation to the next.
        for _ in 0..3 {
            assert_eq!(
                host.invoke_async(&actor, "next", b"").await.unwrap(),
                1u32.to_le_bytes()
            );
        }
    });
}

#[test]
fn the_gate_refuses_before_any_provider_is_polled() {
    let provider = Arc::new(Rendezvous {
        // Never released: a call that reached it would hang (and the deadline would say so).
        barrier: tokio::sync::Barrier::new(1000),
    });
    let host = host_with_provider(test_limits(), provider);
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let result = single_thread().block_on(host.invoke_async(&actor, "host", b"wasmcloud:keyvalue"));
    match result {
        Err(InvocationError::Guest { message }) => {
            assert!(
                message.contains("capability wasmcloud:keyvalue denied"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_calls_await_without_blocking_the_executor() {
    const PARTIES: usize = 4;
    let provider = Arc::new(Rendezvous {
        barrier: tokio::sync::Barrier::new(PARTIES),
    });
    let host = host_with_provider(test_limits(), provider);
    let actor = host
        .load_actor(sign(&probe(), "probe", &["wasmcloud:keyvalue"]).bytes)
        .unwrap();
    // On one thread, the calls can only meet if each invocation suspends in its host call.
    let results = single_thread().block_on(async {
        let calls = (0..PARTIES).map(|_| host.invoke_async(&actor, "host", b"wasmcloud:keyvalue"));
        tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(calls))
            .await
            .expect("the invocations blocked the executor")
    });
    for r in results {
        assert_eq!(r.unwrap(), b"met at Op");
    }
}

#[test]
fn a_runaway_guest_yields_its_worker_and_still_hits_the_deadline() {
    let host = host_with(Limits {
        deadline: Duration::from_millis(400),
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    single_thread().block_on(async {
        let spinner = host.invoke_async(&actor, "loop", b"");
        let others = async {
            // These run between the spinner's slices on the same thread.
            for _ in 0..20 {
                assert_eq!(
                    host.invoke_async(&actor, "echo", b"ok").await.unwrap(),
                    b"ok"
                );
                tokio::task::yield_now().await;
            }
            std::time::Instant::now()
        };
        let ((spun, spun_at), others_done_at) =
            tokio::join!(async { (spinner.await, std::time::Instant::now()) }, others);
        assert!(
            matches!(spun, Err(InvocationError::DeadlineExceeded { .. })),
            "{spun:?}"
        );
        assert!(
            others_done_at < spun_at,
            "the other invocations waited for the runaway one"
        );
    });
}

#[test]
fn fuel_still_runs_out() {
    let host = host_with(Limits {
        fuel: Some(1_000_000),
        deadline: Duration::from_secs(30),
        ..test_limits()
    });
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let result = single_thread().block_on(host.invoke_async(&actor, "loop", b""));
    assert!(matches!(
        result,
        Err(InvocationError::FuelExhausted { limit: 1_000_000 })
    ));
}
