//! Policy control: the example Rego policies (each allowing and denying), the order of
//! authority (claims first), bad policies at start and at reload, cached decisions
//! dropped on reload, workflow steps in the input, the decision service on a real NATS
//! (allow, deny, silence, nonsense), and a host started from a configuration file whose
//! Rego file denies a call with the policy's reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sigil_actor::contracts::keyvalue;
use sigil_claims::{ActorSpec, KeyKind, keys, sign_module};
use sigil_host::policy::rego::{RegoError, RegoPolicy};
use sigil_host::policy::service::PolicyService;
use sigil_host::policy::{
    Decision, DecisionPoint, Enforcer, HostInfo, PolicyDecider, WORKFLOW_STEP, WorkflowStep,
};
use sigil_host::up::{HostConfig, Runtime, RuntimeLinkError};
use sigil_host::{Host, InvocationError, LoadError};
use sigil_providers::{LinkConfig, LinkDefinition};

use crate::common::{IMPORTS, Recorder, config, sign, test_limits};

const NATS: &str = "nats://127.0.0.1:4222";

/// A guest that makes one host call of the caller's choosing. Payload: three length bytes
/// (link, contract, operation), those three strings, then the call's body. It answers
/// the provider's response, or fails with the host error. An operation starting with `k`
/// (`kvset`, for workflow steps) makes a key-value `Set` with the payload as its body.
fn caller() -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  {IMPORTS}
  (memory (export "memory") 4)
  (data (i32.const 0x100) "default")
  (data (i32.const 0x110) "wasmcloud:keyvalue")
  (data (i32.const 0x130) "Set")
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (local $l i32) (local $n i32) (local $o i32) (local $body i32) (local $r i32)
    (call $guest_request (i32.const 0x1000) (i32.const 0x2000))
    (if (i32.eq (i32.load8_u (i32.const 0x1000)) (i32.const 0x6b)) (then
      (if (call $host_call (i32.const 0x100) (i32.const 7) (i32.const 0x110) (i32.const 18)
                           (i32.const 0x130) (i32.const 3) (i32.const 0x2000) (local.get $len))
        (then
          (call $guest_response (i32.const 0x2000) (i32.const 0))
          (return (i32.const 1))))
      (local.set $r (call $host_error_len))
      (call $host_error (i32.const 0x30000))
      (call $guest_error (i32.const 0x30000) (local.get $r))
      (return (i32.const 0))))
    (local.set $l (i32.load8_u (i32.const 0x2000)))
    (local.set $n (i32.load8_u (i32.const 0x2001)))
    (local.set $o (i32.load8_u (i32.const 0x2002)))
    (local.set $body (i32.add (i32.const 0x2003)
      (i32.add (local.get $l) (i32.add (local.get $n) (local.get $o)))))
    (if (call $host_call
          (i32.const 0x2003) (local.get $l)
          (i32.add (i32.const 0x2003) (local.get $l)) (local.get $n)
          (i32.add (i32.const 0x2003) (i32.add (local.get $l) (local.get $n))) (local.get $o)
          (local.get $body)
          (i32.sub (local.get $len) (i32.sub (local.get $body) (i32.const 0x2000))))
      (then
        (local.set $r (call $host_response_len))
        (call $host_response (i32.const 0x30000))
        (call $guest_response (i32.const 0x30000) (local.get $r))
        (return (i32.const 1))))
    (local.set $r (call $host_error_len))
    (call $host_error (i32.const 0x30000))
    (call $guest_error (i32.const 0x30000) (local.get $r))
    (i32.const 0)))"#
    ))
    .unwrap()
}

/// The caller's payload for one host call.
fn host_call(link: &str, contract: &str, operation: &str, body: &[u8]) -> Vec<u8> {
    let mut p = vec![
        link.len() as u8,
        contract.len() as u8,
        operation.len() as u8,
    ];
    p.extend_from_slice(link.as_bytes());
    p.extend_from_slice(contract.as_bytes());
    p.extend_from_slice(operation.as_bytes());
    p.extend_from_slice(body);
    p
}

fn kv(operation: &str, body: &[u8]) -> Vec<u8> {
    host_call("default", keyvalue::CONTRACT_ID, operation, body)
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rego(name: &str, text: &str) -> Arc<RegoPolicy> {
    Arc::new(RegoPolicy::from_sources(vec![(name.to_string(), text.to_string())]).unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> HostInfo {
    HostInfo {
        name: "test-host".into(),
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A host whose providers are a [`Recorder`], under `decider`.
fn host_under(decider: Arc<dyn PolicyDecider>, host: HostInfo) -> (Host, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let host = Host::builder()
        .engine_config(config(test_limits()))
        .providers(recorder.clone())
        .enforcer(Enforcer::new(decider, host))
        .build()
        .unwrap();
    (host, recorder)
}

fn guest_error(result: Result<Vec<u8>, InvocationError>) -> String {
    match result {
        Err(InvocationError::Guest { message }) => message,
        other => panic!("expected a guest error, got {other:?}"),
    }
}

fn denied_start(result: Result<Arc<sigil_host::Actor>, LoadError>) -> String {
    match result {
        Err(e @ LoadError::Denied(_)) => e.to_string(),
        other => panic!("expected a policy denial, got {other:?}"),
    }
}

#[test]
fn allowed_issuers_example_starts_only_the_named_issuers() {
    let trusted = keys::generate(KeyKind::Account);
    let text = example("allowed-issuers.rego").replace(
        "ACCOUNTKEYOFTHEPLATFORMTEAMGOESHEREXXXXXXXXXXXXXXXXXXXXXX",
        &trusted.public_key(),
    );
    let (host, _) = host_under(rego("allowed-issuers.rego", &text), labels(&[]));

    let subject = keys::generate(KeyKind::Module).public_key();
    let spec = ActorSpec {
        name: "ours".into(),
        ..Default::default()
    };
    let ours = sign_module(&caller(), &spec, &trusted, &subject).unwrap();
    host.load_actor(ours.bytes).unwrap();

    let stranger = sign(&caller(), "theirs", &[]);
    let message = denied_start(host.load_actor(stranger.bytes));
    assert!(
        message.contains("starting actor theirs")
            && message.contains(&stranger.account.public_key())
            && message.contains("not an allowed issuer on this host"),
        "{message}"
    );
    assert!(
        host.actor("theirs").is_none(),
        "a denied actor is not loaded"
    );
}

#[test]
fn kv_no_delete_example_denies_destructive_operations_to_one_actor() {
    let (host, recorder) = host_under(
        rego("kv-no-delete.rego", &example("kv-no-delete.rego")),
        labels(&[]),
    );
    let counter = host
        .load_actor(sign(&caller(), "counter", &["keyvalue"]).bytes)
        .unwrap();
    let other = host
        .load_actor(sign(&caller(), "other", &["keyvalue"]).bytes)
        .unwrap();

    // Reads and writes go through.
    assert_eq!(
        host.invoke(&counter, "call", &kv("Set", b"x")).unwrap(),
        b"provided Set"
    );
    for op in ["Delete", "ListDelete", "SetRemove"] {
        let message = guest_error(host.invoke(&counter, "call", &kv(op, b"x")));
        assert!(
            message.contains(&format!("counter may not {op} keys"))
                && message.contains("denied by policy")
                && message.contains(counter.subject()),
            "{message}"
        );
    }
    // Another actor may delete.
    assert_eq!(
        host.invoke(&other, "call", &kv("Delete", b"x")).unwrap(),
        b"provided Delete"
    );
    let calls = recorder.calls.lock().unwrap();
    assert_eq!(
        calls.len(),
        2,
        "no denied call reached a provider: {calls:?}"
    );
    let stats = counter.gate().stats();
    assert_eq!(stats.policy_denied.load(Ordering::Relaxed), 3);
    assert_eq!(stats.denied.load(Ordering::Relaxed), 0);
}

#[test]
fn require_tag_example_keeps_actors_to_their_hosts() {
    let policy = rego("require-tag.rego", &example("require-tag.rego"));
    let (payments, _) = host_under(policy.clone(), labels(&[("require_tag", "payments")]));
    let (anywhere, _) = host_under(policy, labels(&[("zone", "a")]));

    let account = keys::generate(KeyKind::Account);
    let signed = |name: &str, tags: &[&str]| {
        let spec = ActorSpec {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let subject = keys::generate(KeyKind::Module).public_key();
        sign_module(&caller(), &spec, &account, &subject)
            .unwrap()
            .bytes
    };
    payments
        .load_actor(signed("billing", &["payments", "eu"]))
        .unwrap();
    let message = denied_start(payments.load_actor(signed("blog", &["web"])));
    assert!(
        message.contains("this host runs only actors tagged \"payments\""),
        "{message}"
    );
    // A host without the label starts it.
    anywhere.load_actor(signed("blog", &["web"])).unwrap();
}

#[test]
fn payload_limits_example_limits_each_capability() {
    let (host, recorder) = host_under(
        rego("payload-limits.rego", &example("payload-limits.rego")),
        labels(&[]),
    );
    let actor = host
        .load_actor(sign(&caller(), "writer", &["keyvalue", "messaging"]).bytes)
        .unwrap();
    let at_limit = vec![7u8; 65536];
    let over = vec![7u8; 65537];
    assert_eq!(
        host.invoke(&actor, "call", &kv("Set", &at_limit)).unwrap(),
        b"provided Set"
    );
    let message = guest_error(host.invoke(&actor, "call", &kv("Set", &over)));
    assert!(
        message.contains(
            "a wasmcloud:keyvalue request of 65537 bytes is over this host's limit of 65536"
        ),
        "{message}"
    );
    // The same size is fine for a capability with a higher limit, and the size that was
    // allowed before is still allowed (cached answers are per size for this policy).
    let publish = host_call("default", "wasmcloud:messaging", "Publish", &over);
    assert_eq!(
        host.invoke(&actor, "call", &publish).unwrap(),
        b"provided Publish"
    );
    assert_eq!(
        host.invoke(&actor, "call", &kv("Set", &at_limit)).unwrap(),
        b"provided Set"
    );
    assert!(guest_error(host.invoke(&actor, "call", &kv("Set", &over))).contains("over"));
    assert_eq!(recorder.calls.lock().unwrap().len(), 3);
}

#[test]
fn the_claims_come_first_and_a_policy_cannot_grant_what_they_lack() {
    // A policy that denies everything with its own reason, and one that denies nothing.
    let everything = rego(
        "all.rego",
        "package sigil.invoke\n\ndeny contains \"nothing goes\" if true\n",
    );
    let nothing = rego(
        "none.rego",
        "package sigil.invoke\n\ndeny contains \"never\" if false\n",
    );
    for (decider, claims_message) in [(everything, true), (nothing, true)] {
        let (host, recorder) = host_under(decider, labels(&[]));
        let actor = host
            .load_actor(sign(&caller(), "plain", &["logging"]).bytes)
            .unwrap();
        let message = guest_error(host.invoke(&actor, "call", &kv("Get", b"k")));
        assert_eq!(
            message.contains("capability wasmcloud:keyvalue denied"),
            claims_message,
            "{message}"
        );
        assert!(
            !message.contains("policy"),
            "the claims answered: {message}"
        );
        assert!(recorder.calls.lock().unwrap().is_empty());
        let stats = actor.gate().stats();
        assert_eq!(stats.denied.load(Ordering::Relaxed), 1);
        assert_eq!(stats.policy_denied.load(Ordering::Relaxed), 0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

const DENY_SET: &str =
    "package sigil.invoke\n\ndeny contains \"no writes today\" if input.operation == \"Set\"\n";
const DENY_GET: &str =
    "package sigil.invoke\n\ndeny contains \"no reads today\" if input.operation == \"Get\"\n";
const BROKEN: &str = "package sigil.invoke\n\ndeny contains \"x\" if {\n  input.operation ==\n}\n";

#[test]
fn a_bad_policy_at_reload_keeps_the_last_good_one_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.rego");
    write(&file, DENY_SET);
    let policy = Arc::new(RegoPolicy::load(std::slice::from_ref(&file)).unwrap());
    let input = |op: &str| serde_json::json!({"operation": op});
    assert_eq!(
        policy.decide_blocking(DecisionPoint::Invoke, &input("Set")),
        Decision::Deny("no writes today".into())
    );
    let generation = policy.status().generation;

    write(&file, BROKEN);
    match policy.reload() {
        Err(RegoError::Invalid { path, line, .. }) => {
            assert_eq!((path, line), (file.clone(), 5));
        }
        other => panic!("{other:?}"),
    }
    let status = policy.status();
    assert_eq!(status.generation, generation, "the old policy is in force");
    let said = status.last_error.unwrap();
    assert!(said.contains("host.rego:5"), "{said}");
    assert_eq!(
        policy.decide_blocking(DecisionPoint::Invoke, &input("Set")),
        Decision::Deny("no writes today".into())
    );

    // Fixed: the new policy is in force and the error is gone.
    write(&file, DENY_GET);
    assert!(policy.reload().unwrap());
    assert!(policy.status().last_error.is_none());
    assert!(policy.status().generation > generation);
    assert!(
        policy
            .decide_blocking(DecisionPoint::Invoke, &input("Set"))
            .is_allow()
    );
    assert_eq!(
        policy.decide_blocking(DecisionPoint::Invoke, &input("Get")),
        Decision::Deny("no reads today".into())
    );
}

#[test]
fn reload_drops_cached_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.rego");
    write(&file, DENY_GET);
    let policy = Arc::new(RegoPolicy::load(std::slice::from_ref(&file)).unwrap());
    let (host, _) = host_under(policy.clone(), labels(&[]));
    let actor = host
        .load_actor(sign(&caller(), "cached", &["keyvalue"]).bytes)
        .unwrap();
    // Decided, then answered from the cache.
    for _ in 0..3 {
        assert_eq!(
            host.invoke(&actor, "call", &kv("Set", b"v")).unwrap(),
            b"provided Set"
        );
    }
    write(&file, DENY_SET);
    assert!(policy.reload().unwrap());
    let message = guest_error(host.invoke(&actor, "call", &kv("Set", b"v")));
    assert!(message.contains("no writes today"), "{message}");
    assert_eq!(
        host.invoke(&actor, "call", &kv("Get", b"v")).unwrap(),
        b"provided Get"
    );
}

#[test]
fn the_watcher_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.rego");
    write(&file, DENY_GET);
    let policy = Arc::new(RegoPolicy::load(std::slice::from_ref(&file)).unwrap());
    policy.watch(Duration::from_millis(20)).unwrap();
    let input = serde_json::json!({"operation": "Set"});
    assert!(
        policy
            .decide_blocking(DecisionPoint::Invoke, &input)
            .is_allow()
    );
    let first = policy.status().generation;

    write(&file, BROKEN);
    let reported = wait_for(|| policy.status().last_error.is_some());
    assert!(reported, "the watcher reports the broken file");
    assert_eq!(policy.status().generation, first);

    write(&file, DENY_SET);
    assert!(
        wait_for(|| policy.status().generation > first),
        "the watcher picks up the fix"
    );
    assert_eq!(
        policy.decide_blocking(DecisionPoint::Invoke, &input),
        Decision::Deny("no writes today".into())
    );
}

/// Polls `done` until it holds; gives up (false) after a generous while.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < give_up {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_steps_are_in_the_input_and_in_the_cache_key() {
    let policy = rego(
        "steps.rego",
        "package sigil.invoke\n\ndeny contains msg if {\n  input.workflow.step == \"cleanup\"\n  \
         msg := sprintf(\"step %s of run %s may not write\", [input.workflow.step, input.workflow.run])\n}\n",
    );
    let (host, _) = host_under(policy, labels(&[]));
    let actor = host
        .load_actor(sign(&caller(), "stepper", &["keyvalue"]).bytes)
        .unwrap();
    let step = |run: &str, step: &str| WorkflowStep {
        run: run.into(),
        step: step.into(),
    };
    let set = kv("Set", b"v");
    // Outside any workflow, and in another step: allowed (the first answer is cached).
    host.invoke_async(&actor, "call", &set).await.unwrap();
    WORKFLOW_STEP
        .scope(step("r1", "load"), host.invoke_async(&actor, "call", &set))
        .await
        .unwrap();
    let denied = WORKFLOW_STEP
        .scope(
            step("r1", "cleanup"),
            host.invoke_async(&actor, "call", &set),
        )
        .await;
    let message = guest_error(denied);
    assert!(
        message.contains("step cleanup of run r1 may not write"),
        "{message}"
    );
    // Same step of another run: decided for that run, not taken from r1's answer.
    let message = guest_error(
        WORKFLOW_STEP
            .scope(
                step("r2", "cleanup"),
                host.invoke_async(&actor, "call", &set),
            )
            .await,
    );
    assert!(message.contains("of run r2"), "{message}");
    host.invoke_async(&actor, "call", &set).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_tells_the_policy_which_run_and_step_calls() {
    use sigil_host::workflow::memory::MemoryBackend;
    use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig};
    use sigil_host::workflow::spec::Workflow;
    use sigil_host::workflow::state::{RunStatus, StepStatus};

    let policy = rego(
        "steps.rego",
        "package sigil.invoke\n\ndeny contains msg if {\n  input.workflow.step == \"purge\"\n  \
         msg := sprintf(\"step %s of run %s may not write\", [input.workflow.step, input.workflow.run])\n}\n",
    );
    let (host, recorder) = host_under(policy, labels(&[]));
    host.load_actor(sign(&caller(), "writer", &["keyvalue"]).bytes)
        .unwrap();
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
    scheduler.serve("name.writer").await.unwrap();
    let workflow = Workflow::from_yaml(
        r#"
version: 1
name: tidy
steps:
  - { name: load, actor: writer, operation: kvset, input: "data" }
  - { name: purge, actor: writer, operation: kvset, depends: [load], input: "data" }
"#,
    )
    .unwrap();
    let routes = ["load", "purge"]
        .iter()
        .map(|s| (s.to_string(), "name.writer".to_string()))
        .collect();
    let id = scheduler
        .submit(&workflow, BTreeMap::new(), &routes)
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(30), scheduler.wait(&id, |_| {}))
        .await
        .expect("the run did not end")
        .unwrap();
    assert_eq!(run.steps["load"].status, StepStatus::Succeeded);
    assert_eq!(run.steps["purge"].status, StepStatus::Failed);
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains(&format!("step purge of run {id} may not write")),
        "{error}"
    );
    // Only the allowed step's call reached the provider.
    assert_eq!(recorder.calls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_decisions_see_config_keys_and_come_after_the_claims() {
    let policy = rego(
        "links.rego",
        "package sigil.link\n\ndeny contains msg if {\n  \"password\" in input.config_keys\n  \
         msg := sprintf(\"link %s of %s: put secrets in the provider, not in links\", [input.contract_id, input.actor.name])\n}\n",
    );
    let runtime = Runtime::with_enforcer(
        config(test_limits()),
        sigil_claims::Policy::new(),
        Some(Enforcer::new(policy, labels(&[]))),
    )
    .unwrap();
    runtime
        .load_actor(sign(&caller(), "linked", &["keyvalue"]).bytes)
        .await
        .unwrap();
    for (name, kind) in [("kv", "keyvalue-memory"), ("bus", "messaging-bus")] {
        let provider =
            sigil_host::up::create_provider(kind, &LinkConfig::new(), &Default::default()).unwrap();
        runtime.add_provider(name, provider).await.unwrap();
    }
    let link = |contract: &str, provider: &str, config: LinkConfig| LinkDefinition {
        actor: "linked".into(),
        contract_id: contract.into(),
        link_name: "default".into(),
        provider: provider.into(),
        config,
    };
    let with_secret = link(
        keyvalue::CONTRACT_ID,
        "kv",
        LinkConfig::new().with("password", "hunter2"),
    );
    match runtime.add_link(&with_secret).await {
        Err(e @ RuntimeLinkError::Denied(_)) => {
            let message = e.to_string();
            assert!(
                message.contains("put secrets in the provider") && !message.contains("hunter2"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without claims the claims answer, whatever the policy says.
    let unclaimed = link(
        "wasmcloud:messaging",
        "bus",
        LinkConfig::new().with("password", "x"),
    );
    let message = runtime.add_link(&unclaimed).await.unwrap_err().to_string();
    assert!(message.contains("no signed claim"), "{message}");
    runtime
        .add_link(&link(keyvalue::CONTRACT_ID, "kv", LinkConfig::new()))
        .await
        .unwrap();
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// A decision service on a unique subject: answers every request with `answer(request)`,
/// or not at all when it returns `None`. Hands back the requests it saw.
async fn decision_service(
    answer: impl Fn(&serde_json::Value) -> Option<Vec<u8>> + Send + 'static,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let subject = format!("sigil.test.policy.{}", uuid::Uuid::new_v4().simple());
    let client = async_nats::connect(NATS).await.unwrap();
    let mut requests = client.subscribe(subject.clone()).await.unwrap();
    // The server has the subscription before anything is sent to it.
    sigil_providers::plugin::wire::settle(&client)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let request: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            let reply = answer(&request);
            let _ = tx.send(request);
            if let (Some(reply), Some(to)) = (reply, message.reply) {
                let _ = client.publish(to, reply.into()).await;
            }
        }
    });
    (subject, rx)
}

async fn service_host(subject: &str) -> (Host, Arc<Recorder>) {
    let service = PolicyService::connect(NATS, subject, Duration::from_millis(300))
        .await
        .unwrap();
    host_under(Arc::new(service), labels(&[("zone", "z1")]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_service_allows_and_sees_the_documented_request() {
    let (subject, mut requests) = decision_service(|_| Some(br#"{"allow": true}"#.to_vec())).await;
    let (host, recorder) = service_host(&subject).await;
    let actor = host
        .load_actor(sign(&caller(), "asker", &["keyvalue"]).bytes)
        .unwrap();
    let start = requests.recv().await.unwrap();
    assert_eq!(start["point"], "start");
    assert_eq!(start["input"]["actor"]["name"], "asker");
    assert_eq!(start["input"]["host"]["labels"]["zone"], "z1");

    let reply = host
        .invoke_async(&actor, "call", &kv("Set", b"12345"))
        .await
        .unwrap();
    assert_eq!(reply, b"provided Set");
    let invoke = requests.recv().await.unwrap();
    assert_eq!(invoke["point"], "invoke");
    let input = &invoke["input"];
    assert_eq!(input["actor"]["subject"], actor.subject());
    assert_eq!(input["contract_id"], "wasmcloud:keyvalue");
    assert_eq!(input["link_name"], "default");
    assert_eq!(input["operation"], "Set");
    assert_eq!(input["payload_size"], 5);
    assert!(input["workflow"].is_null());
    assert_eq!(recorder.calls.lock().unwrap().len(), 1);

    // A synchronous invocation asks the service too (on a blocking thread).
    let host = Arc::new(host);
    let (h, a) = (host.clone(), actor.clone());
    let reply = tokio::task::spawn_blocking(move || h.invoke(&a, "call", &kv("Get", b"k")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"provided Get");
    assert_eq!(requests.recv().await.unwrap()["input"]["operation"], "Get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_service_answers_are_reused_only_when_configured() {
    let (subject, mut requests) = decision_service(|_| Some(br#"{"allow": true}"#.to_vec())).await;
    let count_invokes = |requests: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>| {
        let mut n = 0;
        while let Ok(r) = requests.try_recv() {
            n += usize::from(r["point"] == "invoke");
        }
        n
    };
    for (cache, expected) in [(Duration::ZERO, 4), (Duration::from_secs(3600), 2)] {
        let service = PolicyService::connect(NATS, subject.as_str(), Duration::from_secs(5))
            .await
            .unwrap()
            .cache_for(cache);
        let (host, _) = host_under(Arc::new(service), labels(&[]));
        let actor = host
            .load_actor(sign(&caller(), "asker", &["keyvalue"]).bytes)
            .unwrap();
        for op in ["Get", "Get", "Get", "Set"] {
            host.invoke_async(&actor, "call", &kv(op, b"k"))
                .await
                .unwrap();
        }
        // The service's answers have all been received, so its log of requests is complete.
        assert_eq!(count_invokes(&mut requests), expected, "cache {cache:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_service_denies_with_its_reason() {
    let (subject, _requests) = decision_service(|request| {
        let deny = request["point"] == "invoke" && request["input"]["operation"] == "Delete";
        Some(if deny {
            br#"{"allow": false, "reason": "deletes need a change ticket"}"#.to_vec()
        } else {
            br#"{"allow": true}"#.to_vec()
        })
    })
    .await;
    let (host, recorder) = service_host(&subject).await;
    let actor = host
        .load_actor(sign(&caller(), "asker", &["keyvalue"]).bytes)
        .unwrap();
    let message = guest_error(host.invoke_async(&actor, "call", &kv("Delete", b"k")).await);
    assert!(
        message.contains("deletes need a change ticket") && message.contains("denied by policy"),
        "{message}"
    );
    assert!(recorder.calls.lock().unwrap().is_empty());
    host.invoke_async(&actor, "call", &kv("Get", b"k"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_service_fails_closed() {
    // Nobody listens.
    let subject = format!("sigil.test.nobody.{}", uuid::Uuid::new_v4().simple());
    let (host, _) = service_host(&subject).await;
    let message = denied_start(host.load_actor(sign(&caller(), "lonely", &[]).bytes));
    assert!(
        message.contains("no policy service listens") && message.contains("failing closed"),
        "{message}"
    );

    // A service that starts are fine with, but never answers about calls.
    let (subject, _r) = decision_service(|request| {
        (request["point"] == "start").then(|| br#"{"allow": true}"#.to_vec())
    })
    .await;
    let (host, recorder) = service_host(&subject).await;
    let actor = host
        .load_actor(sign(&caller(), "ignored", &["keyvalue"]).bytes)
        .unwrap();
    let message = guest_error(host.invoke_async(&actor, "call", &kv("Get", b"k")).await);
    assert!(
        message.contains("did not answer the invoke decision within 300ms"),
        "{message}"
    );
    assert!(recorder.calls.lock().unwrap().is_empty());

    // A service that answers nonsense.
    let (subject, _r) = decision_service(|request| {
        Some(if request["point"] == "start" {
            br#"{"allow": true}"#.to_vec()
        } else {
            b"yes please".to_vec()
        })
    })
    .await;
    let (host, _) = service_host(&subject).await;
    let actor = host
        .load_actor(sign(&caller(), "confused", &["keyvalue"]).bytes)
        .unwrap();
    let message = guest_error(host.invoke_async(&actor, "call", &kv("Get", b"k")).await);
    assert!(message.contains("not a decision"), "{message}");
}

fn host_toml(dir: &Path, policy_lines: &str) -> PathBuf {
    let path = dir.join("host.toml");
    write(
        &path,
        &format!(
            r#"
[host]
admin_address = "off"
drain_timeout = "2s"

[policy]
{policy_lines}

[[actors]]
path = "counter.wasm"

[[providers]]
name = "kv"
kind = "keyvalue-memory"

[[links]]
actor = "counter"
contract = "keyvalue"
provider = "kv"
"#
        ),
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_from_its_configuration_denies_a_call_with_the_policy_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    write(
        &dir.path().join("policies/kv-no-delete.rego"),
        &example("kv-no-delete.rego"),
    );
    std::fs::write(
        dir.path().join("counter.wasm"),
        sign(&caller(), "counter", &["keyvalue"]).bytes,
    )
    .unwrap();
    let path = host_toml(dir.path(), "rego = [\"policies/kv-no-delete.rego\"]");
    let config = HostConfig::load(&path).unwrap();
    let running = sigil_host::up::start(&config).await.unwrap();
    let rt = &running.runtime;

    let set = rmp_serde::to_vec_named(&keyvalue::Set {
        key: "k".into(),
        value: b"v".to_vec(),
        ttl_seconds: None,
    })
    .unwrap();
    rt.invoke("counter", "call", kv("Set", &set)).await.unwrap();
    let delete = rmp_serde::to_vec_named(&keyvalue::Delete { key: "k".into() }).unwrap();
    let message = rt
        .invoke("counter", "call", kv("Delete", &delete))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("wasmcloud:keyvalue Delete (link `default`) denied by policy")
            && message.contains("counter may not Delete keys"),
        "{message}"
    );
    // The key is still there.
    let get = rmp_serde::to_vec_named(&keyvalue::Get { key: "k".into() }).unwrap();
    let value: keyvalue::GetResponse =
        rmp_serde::from_slice(&rt.invoke("counter", "call", kv("Get", &get)).await.unwrap())
            .unwrap();
    assert_eq!(value.unwrap().as_slice(), b"v");
    running.shutdown().await;
}

/// `sigil up --check --config FILE`: the exit code and what it wrote to stderr.
fn check_config(config: &Path, cache: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(config)
        .env("SIGIL_CACHE_DIR", cache)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_package_without_deny_is_refused_naming_its_file_and_package_line() {
    // The reported case: two files, the second declares sigil.invoke but no `deny`. The
    // error named only the configuration, at line 0.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pol")).unwrap();
    write(
        &dir.path().join("pol/start.rego"),
        "package sigil.start\n\ndeny contains \"never\" if false\n",
    );
    write(
        &dir.path().join("pol/nodeny.rego"),
        "# operations the counter may use\npackage sigil.invoke\n\nallowed_ops := {\"Get\"}\n",
    );
    std::fs::write(
        dir.path().join("counter.wasm"),
        sign(&caller(), "counter", &["keyvalue"]).bytes,
    )
    .unwrap();
    let config = host_toml(
        dir.path(),
        "rego = [\"pol/start.rego\", \"pol/nodeny.rego\"]",
    );
    let (code, stderr) = check_config(&config, &dir.path().join("cache"));
    assert_eq!(code, Some(2), "{stderr}");
    let at = format!("{}:2:", dir.path().join("pol/nodeny.rego").display());
    assert!(
        stderr.contains(&at) && stderr.contains("`package sigil.invoke` defines no `deny` rule"),
        "{stderr}"
    );
    assert!(!stderr.contains(":0:"), "{stderr}");
}

#[test]
fn an_unreachable_policy_service_names_its_key_and_line() {
    // The reported case printed `host.toml:0:`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("counter.wasm"),
        sign(&caller(), "counter", &["keyvalue"]).bytes,
    )
    .unwrap();
    let port = crate::providers::spare_port();
    let config = host_toml(
        dir.path(),
        &format!(
            "\n[policy.service]\nsubject = \"sigil.policy.none\"\nnats = \"nats://127.0.0.1:{port}\"\n"
        ),
    );
    let (code, stderr) = check_config(&config, &dir.path().join("cache"));
    assert_eq!(code, Some(2), "{stderr}");
    // [policy] is at line 6 of host_toml; the service's nats key four lines later.
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text.lines().position(|l| l.starts_with("nats = ")).unwrap() + 1;
    let at = format!("{}:{line}: [policy.service] nats = ", config.display());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(!stderr.contains(":0:"), "{stderr}");
}

#[test]
fn a_bad_policy_file_stops_the_host_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("broken.rego"), BROKEN);
    std::fs::write(
        dir.path().join("counter.wasm"),
        sign(&caller(), "counter", &["keyvalue"]).bytes,
    )
    .unwrap();
    let config = host_toml(dir.path(), "rego = [\"broken.rego\"]");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = format!("{}:5:", dir.path().join("broken.rego").display());
    assert!(
        stderr.contains(&at) && stderr.contains("does not compile"),
        "{stderr}"
    );

    // A file that is not there names itself too.
    let config = host_toml(dir.path(), "rego = [\"missing.rego\"]");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.rego"), "{stderr}");
}
