//! Workflow semantics on the in-process backend: a DAG with parallel branches, retries,
//! failure policies, timeouts, cancellation and duplicate deliveries. Steps are the WAT
//! probe actor (its `echo` answers the request, so a step's output is its input).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sigil_host::Limits;
use sigil_host::workflow::backend::{StepMessage, StepQueue};
use sigil_host::workflow::memory::MemoryBackend;
use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig};
use sigil_host::workflow::spec::Workflow;
use sigil_host::workflow::state::{RunState, RunStatus, StepStatus};

use crate::common::*;

struct Fixture {
    scheduler: Arc<Scheduler>,
    backend: MemoryBackend,
}

async fn fixture(deadline: Duration) -> Fixture {
    let host = host_with(Limits {
        deadline,
        ..test_limits()
    });
    host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    let backend = MemoryBackend::new();
    let scheduler = Scheduler::new(
        Arc::new(backend.clone()),
        Arc::new(backend.clone()),
        Arc::new(host),
        SchedulerConfig {
            host: "test-host".into(),
            ..SchedulerConfig::default()
        },
    );
    scheduler.serve("name.probe").await.unwrap();
    Fixture { scheduler, backend }
}

/// Every step of `workflow` routed to the probe actor, by name.
pub(crate) fn routes(workflow: &Workflow) -> HashMap<String, String> {
    workflow
        .spec
        .steps
        .iter()
        .map(|s| (s.name.clone(), "name.probe".to_string()))
        .collect()
}

async fn run_to_end(f: &Fixture, yaml: &str, inputs: Value) -> RunState {
    let workflow = Workflow::from_yaml(yaml).unwrap();
    let inputs: BTreeMap<String, Value> = serde_json::from_value(inputs).unwrap();
    let id = f
        .scheduler
        .submit(&workflow, inputs, &routes(&workflow))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), f.scheduler.wait(&id, |_| {}))
        .await
        .expect("the run did not end")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_runs_with_parallel_branches_and_outputs_flow() {
    let f = fixture(Duration::from_secs(5)).await;
    let run = run_to_end(
        &f,
        r#"
version: 1
name: diamond
inputs: { word: {}, n: { default: 2 } }
steps:
  - { name: a, actor: probe, operation: echo, input: { word: "${{ inputs.word }}", n: "${{ inputs.n }}" } }
  - { name: b, actor: probe, operation: echo, depends: [a], input: { from_a: "${{ steps.a.output.word }}" } }
  - { name: c, actor: probe, operation: echo, depends: [a], input: [ "${{ steps.a.output.n }}", 3 ] }
  - { name: d, actor: probe, operation: echo, depends: [b, c], input: "${{ steps.b.output.from_a }}-${{ steps.c.output[1] }} in ${{ workflow.name }}" }
outputs: { last: "${{ steps.d.output }}", c: "${{ steps.c.output }}" }
"#,
        json!({"word": "hi"}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(
        run.outputs,
        Some(json!({"last": "hi-3 in diamond", "c": [2, 3]}))
    );
    for (name, s) in &run.steps {
        assert_eq!(s.status, StepStatus::Succeeded, "{name}");
        assert_eq!((s.attempts, s.failures), (1, 0), "{name}");
        assert_eq!(s.host.as_deref(), Some("test-host"));
        assert!(s.started_ms.is_some() && s.finished_ms.is_some());
    }
    // b and c each started after a finished; d after both.
    let t = |n: &str, started: bool| {
        let s = &run.steps[n];
        if started { s.started_ms } else { s.finished_ms }.unwrap()
    };
    assert!(t("b", true) >= t("a", false) && t("c", true) >= t("a", false));
    assert!(t("d", true) >= t("b", false) && t("d", true) >= t("c", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_then_fails_the_run_with_its_error() {
    let f = fixture(Duration::from_secs(5)).await;
    let run = run_to_end(
        &f,
        r#"
version: 1
name: flaky
steps:
  - { name: first, actor: probe, operation: echo }
  - { name: broken, actor: probe, operation: fail, depends: [first], retry: { limit: 2, backoff: 10ms } }
  - { name: after, actor: probe, operation: echo, depends: [broken] }
"#,
        json!({}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("step broken failed: actor returned an error: it failed"),
        "{run:#?}"
    );
    let broken = &run.steps["broken"];
    assert_eq!(broken.status, StepStatus::Failed);
    assert_eq!((broken.attempts, broken.failures), (3, 3));
    assert_eq!(run.steps["after"].status, StepStatus::Cancelled);
    assert_eq!(run.steps["first"].status, StepStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_continue_lets_dependents_read_the_error() {
    let f = fixture(Duration::from_secs(5)).await;
    let run = run_to_end(
        &f,
        r#"
version: 1
name: tolerant
steps:
  - { name: broken, actor: probe, operation: fail, on_failure: continue }
  - { name: report, actor: probe, operation: echo, depends: [broken], input: { error: "${{ steps.broken.error }}" } }
outputs: "${{ steps.report.output.error }}"
"#,
        json!({}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(
        run.outputs,
        Some(json!("actor returned an error: it failed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_ends_the_attempt() {
    let f = fixture(Duration::from_secs(20)).await;
    let run = run_to_end(
        &f,
        r#"
version: 1
name: slow
steps:
  - { name: spin, actor: probe, operation: loop, timeout: 200ms }
"#,
        json!({}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Failed);
    let spin = &run.steps["spin"];
    assert!(
        spin.error
            .as_deref()
            .unwrap()
            .contains("timed out after 200ms"),
        "{spin:?}"
    );
    let took = spin.finished_ms.unwrap() - spin.started_ms.unwrap();
    assert!(
        took < 10_000,
        "the timeout did not stop the step ({took} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_what_has_not_started() {
    let f = fixture(Duration::from_secs(3)).await;
    let workflow = Workflow::from_yaml(
        r#"
version: 1
name: long
steps:
  - { name: spin, actor: probe, operation: loop }
  - { name: after, actor: probe, operation: echo, depends: [spin] }
"#,
    )
    .unwrap();
    let id = f
        .scheduler
        .submit(&workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap();
    // Wait until the spin step runs, then cancel.
    loop {
        let run = f.scheduler.status(&id).await.unwrap();
        if run.steps["spin"].status == StepStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = f.scheduler.cancel(&id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.steps["after"].status, StepStatus::Cancelled);
    let run = tokio::time::timeout(Duration::from_secs(30), f.scheduler.wait(&id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.steps["after"].status, StepStatus::Cancelled);
    assert_eq!(run.steps["after"].attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_does_not_run_a_finished_step_again() {
    let f = fixture(Duration::from_secs(5)).await;
    let run = run_to_end(
        &f,
        "version: 1\nname: once\nsteps:\n  - { name: only, actor: probe, operation: next }\n",
        json!({}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Succeeded);
    // The same step again, under another message ID (past deduplication).
    let again = StepMessage {
        run: run.id.clone(),
        step: "only".into(),
    };
    f.backend
        .publish("name.probe", &again, "another-id")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = f.scheduler.status(&run.id).await.unwrap();
    assert_eq!(after.steps["only"].attempts, 1);
    assert_eq!(after, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_queued_before_its_run_is_stored_runs_once_the_run_appears() {
    // Over the network a run's first steps are queued before the run is stored; a host
    // that gets such a message first must wait for the run, not drop the step.
    let f = fixture(Duration::from_secs(5)).await;
    let workflow = Workflow::from_yaml(
        "version: 1\nname: late\nsteps:\n  - { name: only, actor: probe, operation: next }\n",
    )
    .unwrap();
    let early = StepMessage {
        run: "late-run".into(),
        step: "only".into(),
    };
    f.backend
        .publish("name.probe", &early, "late-run.only")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.scheduler.status("late-run").await.is_err());
    // Stored now (its own publish of the step is a duplicate and dropped).
    let created = f
        .scheduler
        .submit_as("late-run", &workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap();
    assert!(created);
    let run = tokio::time::timeout(
        Duration::from_secs(20),
        f.scheduler.wait("late-run", |_| {}),
    )
    .await
    .expect("the early message was lost")
    .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.steps["only"].attempts, 1);
    // Submitting again under the same ID starts nothing.
    assert!(
        !f.scheduler
            .submit_as("late-run", &workflow, BTreeMap::new(), &routes(&workflow))
            .await
            .unwrap()
    );
}

/// Waiting is woken by the store's notice of each change of the run, never by a timer. The
/// clock is paused and only moves when every task is idle on a timer, so a wait that polled
/// (read, sleep, read again) would return with the clock moved on; one woken by the change
/// returns with the clock where it started.
#[tokio::test(start_paused = true)]
async fn wait_is_woken_by_each_change_of_the_run_not_by_a_timer() {
    let f = fixture(Duration::from_secs(5)).await;
    for yaml in [
        "version: 1\nname: one\nsteps:\n  - { name: only, actor: probe, operation: echo, input: 1 }\n",
        "version: 1\nname: two\nsteps:\n  - { name: a, actor: probe, operation: echo, input: 1 }\n  - { name: b, actor: probe, operation: echo, depends: [a], input: \"${{ steps.a.output }}\" }\n",
    ] {
        let workflow = Workflow::from_yaml(yaml).unwrap();
        let started = tokio::time::Instant::now();
        let id = f
            .scheduler
            .submit(&workflow, BTreeMap::new(), &routes(&workflow))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let run = f
            .scheduler
            .wait(&id, |run| {
                seen.push(
                    run.steps
                        .values()
                        .filter(|s| s.status == StepStatus::Succeeded)
                        .count(),
                )
            })
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
        assert_eq!(
            tokio::time::Instant::now(),
            started,
            "wait for run {} returned only after the clock moved: it slept on a timer",
            workflow.spec.name
        );
        // The first state seen has no step done; the last has all of them.
        assert_eq!(seen.first(), Some(&0), "{seen:?}");
        assert_eq!(seen.last(), Some(&workflow.spec.steps.len()), "{seen:?}");
    }
    // A run changed by someone else wakes a waiter the same way: its step is routed where
    // a consumer is attached but never takes anything (so the route counts as served and
    // the run is accepted), so it stays queued until the run is cancelled.
    let workflow = Workflow::from_yaml(
        "version: 1\nname: idle\nsteps:\n  - { name: only, actor: probe, operation: echo }\n",
    )
    .unwrap();
    let _idle_consumer = f.backend.consume("name.unserved").await.unwrap();
    let unserved = [("only".to_string(), "name.unserved".to_string())].into();
    let id = f
        .scheduler
        .submit(&workflow, BTreeMap::new(), &unserved)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let waiter = tokio::spawn({
        let scheduler = f.scheduler.clone();
        let id = id.clone();
        async move { scheduler.wait(&id, |_| {}).await }
    });
    // Let the waiter read the run and park.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished());
    f.scheduler.cancel(&id).await.unwrap();
    let run = waiter.await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled, "{run:#?}");
    assert_eq!(tokio::time::Instant::now(), started);
    // An unknown run is refused at once.
    let err = f.scheduler.wait("no-such-run", |_| {}).await.unwrap_err();
    assert_eq!(err.to_string(), "no run no-such-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_before_anything_runs() {
    let f = fixture(Duration::from_secs(5)).await;
    let workflow = Workflow::from_yaml(
        "version: 1\nname: needs\ninputs: { doc: {} }\nsteps:\n  - { name: a, actor: probe, operation: echo }\n",
    )
    .unwrap();
    let err = f
        .scheduler
        .submit(&workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"doc\" is required"), "{err}");
    let err = f
        .scheduler
        .submit(
            &workflow,
            [("doc".into(), json!(1)), ("extra".into(), json!(2))].into(),
            &routes(&workflow),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no input \"extra\""), "{err}");
    assert!(f.scheduler.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_actor_nobody_serves_any_more_fails_after_the_wait() {
    // One backend, two schedulers: `main` runs the probe and watches for steps no one
    // serves; `other` runs the actor of step `b`, and stops once the run is accepted.
    let backend = MemoryBackend::new();
    // Room for the spinning step on a loaded machine.
    let host = host_with(Limits {
        deadline: Duration::from_secs(10),
        ..test_limits()
    });
    host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    host.load_actor(sign(&probe(), "other", &[]).bytes).unwrap();
    let host = Arc::new(host);
    let scheduler = |name: &str| {
        Scheduler::new(
            Arc::new(backend.clone()),
            Arc::new(backend.clone()),
            host.clone(),
            SchedulerConfig {
                host: name.into(),
                no_host_timeout: Duration::from_millis(300),
                ..SchedulerConfig::default()
            },
        )
    };
    let main = scheduler("main");
    main.serve("name.probe").await.unwrap();
    main.watch_unserved();
    let other = scheduler("other");
    other.serve("name.other").await.unwrap();

    let workflow = Workflow::from_yaml(
        r#"
version: 1
name: gone
steps:
  - { name: a, actor: probe, operation: spin, input: 1 }
  - { name: b, actor: other, operation: echo, depends: [a], on_failure: continue }
  - { name: c, actor: probe, operation: echo, depends: [b], input: "${{ steps.b.error }}" }
outputs: "${{ steps.c.output }}"
"#,
    )
    .unwrap();
    let routes: HashMap<String, String> = [
        ("a".to_string(), "name.probe".to_string()),
        ("b".to_string(), "name.other".to_string()),
        ("c".to_string(), "name.probe".to_string()),
    ]
    .into();
    let id = main
        .submit(&workflow, BTreeMap::new(), &routes)
        .await
        .unwrap();
    other.stop();

    let run = tokio::time::timeout(Duration::from_secs(30), main.wait(&id, |_| {}))
        .await
        .expect("the run waited for a step no one serves")
        .unwrap();
    let expected = "no host runs actor other: the step waited 300ms (no_host_timeout) with no \
                    host serving route name.other; start a host that loads it, then submit \
                    the run again";
    // `on_failure: continue`: the run goes on, and the next step reads the error.
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.steps["b"].status, StepStatus::Failed);
    assert_eq!(run.steps["b"].error.as_deref(), Some(expected));
    assert_eq!(run.outputs, Some(json!(expected)));

    // Now the submitter knows no one serves `other`: refused, and nothing stored.
    let err = main
        .submit(&workflow, BTreeMap::new(), &routes)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "step \"b\": no host runs actor other; start a host that loads it (or fix the \
         step's actor), then submit the run again"
    );
    assert_eq!(main.list().await.unwrap().len(), 1);
}
