//! Workflows across real `sigil up` processes that share a NATS server: hosts split the
//! steps, a host killed mid-step loses nothing, a trigger message starts a run, the CLI
//! follows runs, and a NATS server restarted mid-run does not lose the run.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_host::up::workflows::NoRunner;
use sigil_host::workflow::jetstream::{JetStreamBackend, JetStreamOptions};
use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig};
use sigil_host::workflow::spec::Workflow;
use sigil_host::workflow::state::{RunState, RunStatus, StepStatus};

use crate::common::*;
use crate::providers::{Server, http_request, spare_port, wait_for_port};
use crate::workflow::routes;
use sigil_host::workflow::routes::resolve_remote_routes;

const NATS: &str = "nats://127.0.0.1:4222";

/// Unique stream, bucket and subject names, so tests never share state.
pub(crate) struct Names {
    stream: String,
    bucket: String,
    prefix: String,
}

impl Names {
    pub(crate) fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Names {
            stream: format!("T_STEPS_{id}"),
            bucket: format!("T_RUNS_{id}"),
            prefix: format!("t.{id}.steps"),
        }
    }

    pub(crate) fn section(&self, nats: &str, ack_wait: &str) -> String {
        format!(
            "[workflows]\nnats = \"{nats}\"\nstream = \"{}\"\nbucket = \"{}\"\nsubject_prefix = \"{}\"\nack_wait = \"{ack_wait}\"\nmax_concurrent = 1\n",
            self.stream, self.bucket, self.prefix
        )
    }

    fn options(&self) -> JetStreamOptions {
        JetStreamOptions {
            stream: self.stream.clone(),
            bucket: self.bucket.clone(),
            subject_prefix: self.prefix.clone(),
            ..JetStreamOptions::default()
        }
    }

    /// Deletes the test's streams (best effort).
    pub(crate) async fn clean(&self, nats: &str) {
        if let Ok(client) = async_nats::connect(nats).await {
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(&self.stream).await;
            let _ = js.delete_stream(format!("KV_{}", self.bucket)).await;
        }
    }
}

/// Writes the signed probe and a host configuration; starts `sigil up` (its log in
/// `dir/<name>.log`) and waits for it.
/// The admin token of the hosts [`start_host`] starts.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";

pub(crate) fn start_host(dir: &Path, name: &str, extra: &str) -> Server {
    let probe = dir.join("probe.wasm");
    if !probe.exists() {
        std::fs::write(&probe, sign(&probe_wasm(), "probe", &[]).bytes).unwrap();
    }
    let admin = spare_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[host]\nname = \"{name}\"\nadmin_address = \"127.0.0.1:{admin}\"\nadmin_token = \"{ADMIN_TOKEN}\"\ndrain_timeout = \"2s\"\n\n[[actors]]\npath = \"probe.wasm\"\n\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.join("cache"))
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_for_port(admin);
    server
}

/// The admin address of a host started by [`start_host`] in `dir`.
fn admin_of(dir: &Path, name: &str) -> std::net::SocketAddr {
    let config = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
    let line = config
        .lines()
        .find_map(|l| l.strip_prefix("admin_address = "))
        .unwrap();
    line.trim_matches('"').parse().unwrap()
}

fn probe_wasm() -> Vec<u8> {
    probe()
}

pub(crate) async fn client(names: &Names, nats: &str) -> Arc<Scheduler> {
    let backend = JetStreamBackend::connect(nats, names.options())
        .await
        .unwrap();
    Scheduler::new(
        Arc::new(backend.clone()),
        Arc::new(backend),
        Arc::new(NoRunner),
        SchedulerConfig::default(),
    )
}

pub(crate) async fn wait_end(scheduler: &Scheduler, id: &str, limit: Duration) -> RunState {
    tokio::time::timeout(limit, scheduler.wait(id, |_| {}))
        .await
        .unwrap_or_else(|_| panic!("run {id} did not end within {limit:?}"))
        .unwrap()
}

const FAN_OUT: &str = r#"
version: 1
name: fan-out
steps:
  - { name: s1, actor: probe, operation: spin, input: { i: 1 } }
  - { name: s2, actor: probe, operation: spin, input: { i: 2 } }
  - { name: s3, actor: probe, operation: spin, input: { i: 3 } }
  - { name: s4, actor: probe, operation: spin, input: { i: 4 } }
  - { name: s5, actor: probe, operation: spin, input: { i: 5 } }
  - { name: s6, actor: probe, operation: spin, input: { i: 6 } }
  - name: join
    actor: probe
    operation: echo
    depends: [s1, s2, s3, s4, s5, s6]
    input: ["${{ steps.s1.output.i }}", "${{ steps.s2.output.i }}", "${{ steps.s3.output.i }}", "${{ steps.s4.output.i }}", "${{ steps.s5.output.i }}", "${{ steps.s6.output.i }}"]
outputs: "${{ steps.join.output }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_steps_and_a_killed_host_loses_nothing() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let section = names.section(NATS, "2s");
    let mut hosts: BTreeMap<String, Server> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| (n.to_string(), start_host(dir.path(), n, &section)))
        .collect();
    let scheduler = client(&names, NATS).await;
    let workflow = Workflow::from_yaml(FAN_OUT).unwrap();
    let id = scheduler
        .submit(&workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap();

    // Kill the host of the first running step, mid-step.
    let started = Instant::now();
    let (victim, victim_step) = loop {
        let run = scheduler.status(&id).await.unwrap();
        if let Some((step, s)) = run
            .steps
            .iter()
            .find(|(_, s)| s.status == StepStatus::Running && s.host.is_some())
        {
            break (s.host.clone().unwrap(), step.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no step started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(hosts.remove(&victim)); // SIGKILL

    let run = wait_end(&scheduler, &id, Duration::from_secs(120)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.outputs, Some(json!([1, 2, 3, 4, 5, 6])));
    let mut used = HashSet::new();
    for (name, s) in &run.steps {
        assert_eq!(s.status, StepStatus::Succeeded, "{name}");
        assert_eq!(s.failures, 0, "{name}");
        used.insert(s.host.clone().unwrap());
    }
    let taken_over = &run.steps[&victim_step];
    assert!(taken_over.attempts >= 2, "{taken_over:?}");
    assert_ne!(taken_over.host.as_deref(), Some(victim.as_str()));
    assert!(used.len() >= 2, "one host ran everything: {used:?}");

    // The CLI reads the same run over NATS.
    let client_config = dir.path().join("client.toml");
    std::fs::write(&client_config, &section).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["workflow", "status", &id, "--json", "--config"])
        .arg(&client_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["steps"]["join"]["output"], json!([1, 2, 3, 4, 5, 6]));
    drop(hosts);
    names.clean(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_message_starts_a_run_and_the_cli_waits_for_one() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("t.{}.start", uuid::Uuid::new_v4().simple());
    let spec = dir.path().join("greet.yaml");
    std::fs::write(
        &spec,
        r#"
version: 1
name: greet
inputs: { word: {} }
steps:
  - { name: first, actor: probe, operation: echo, input: { said: "${{ inputs.word }}" } }
  - { name: second, actor: probe, operation: echo, depends: [first], input: "${{ steps.first.output.said }}!" }
outputs: "${{ steps.second.output }}"
"#,
    )
    .unwrap();
    let section = format!(
        "{}\n[[workflows.triggers]]\nsubject = \"{subject}\"\nworkflow = \"greet.yaml\"\n",
        names.section(NATS, "5s")
    );
    let _host = start_host(dir.path(), "trig", &section);
    let nats = async_nats::connect(NATS).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        nats.request(subject.clone(), r#"{"word": "hello"}"#.into()),
    )
    .await
    .unwrap()
    .unwrap();
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    let id = answer["run"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let scheduler = client(&names, NATS).await;
    let run = wait_end(&scheduler, id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.outputs, Some(json!("hello!")));

    // A message that is not a JSON object of inputs is refused with the reason.
    let reply = nats
        .request(subject.clone(), "not json".into())
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{answer}"
    );

    // A failing step is retried by the hosts, then fails the run with its error.
    let flaky = Workflow::from_yaml(
        "version: 1\nname: flaky\nsteps:\n  - { name: ok, actor: probe, operation: echo }\n  - { name: broken, actor: probe, operation: fail, depends: [ok], retry: { limit: 2, backoff: 50ms } }\n  - { name: never, actor: probe, operation: echo, depends: [broken] }\n",
    )
    .unwrap();
    let id = scheduler
        .submit(&flaky, BTreeMap::new(), &routes(&flaky))
        .await
        .unwrap();
    let run = wait_end(&scheduler, &id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("step broken failed: actor returned an error: it failed")
    );
    let broken = &run.steps["broken"];
    assert_eq!((broken.attempts, broken.failures), (3, 3), "{broken:?}");
    assert_eq!(run.steps["never"].status, StepStatus::Cancelled);

    // The CLI submits to the hosts and follows the run to its end.
    let client_config = dir.path().join("client.toml");
    std::fs::write(&client_config, names.section(NATS, "5s")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["workflow", "run"])
        .arg(&spec)
        .args(["--input", "word=again", "--wait", "--json", "--config"])
        .arg(&client_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["outputs"], json!("again!"));
    names.clean(NATS).await;
}

/// A NATS server of our own with JetStream, on a spare port, storing in `dir`.
fn nats_server(port: u16, dir: &Path) -> Server {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server must be installed");
    wait_for_port(port);
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_nats_restart() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let store: PathBuf = dir.path().join("jetstream");
    let port = spare_port();
    let url = format!("nats://127.0.0.1:{port}");
    let nats = nats_server(port, &store);
    let _host = start_host(dir.path(), "solo", &names.section(&url, "3s"));
    let scheduler = client(&names, &url).await;
    let workflow = Workflow::from_yaml(
        r#"
version: 1
name: chain
steps:
  - { name: a, actor: probe, operation: spin, input: 1 }
  - { name: b, actor: probe, operation: spin, depends: [a], input: 2 }
  - { name: c, actor: probe, operation: spin, depends: [b], input: 3 }
  - { name: d, actor: probe, operation: echo, depends: [c], input: ["${{ steps.a.output }}", "${{ steps.b.output }}", "${{ steps.c.output }}"] }
outputs: "${{ steps.d.output }}"
"#,
    )
    .unwrap();
    let id = scheduler
        .submit(&workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap();
    // Once the first step is running, stop the server for a while.
    let started = Instant::now();
    while scheduler.status(&id).await.unwrap().steps["a"].status != StepStatus::Running {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "step a never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(nats);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _nats = nats_server(port, &store);

    let run = wait_end(&scheduler, &id, Duration::from_secs(120)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.outputs, Some(json!([1, 2, 3])));
    for (name, s) in &run.steps {
        assert_eq!(s.status, StepStatus::Succeeded, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_sharing_a_trigger_start_one_run_per_message() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("t.{}.start", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.path().join("once.yaml"),
        "version: 1\nname: once\ninputs: { n: {} }\nsteps:\n  - { name: a, actor: probe, operation: echo, input: \"${{ inputs.n }}\" }\noutputs: \"${{ steps.a.output }}\"\n",
    )
    .unwrap();
    let section = format!(
        "{}\n[[workflows.triggers]]\nsubject = \"{subject}\"\nworkflow = \"once.yaml\"\n",
        names.section(NATS, "5s")
    );
    let _hosts: Vec<Server> = ["t1", "t2", "t3"]
        .iter()
        .map(|n| start_host(dir.path(), n, &section))
        .collect();
    let nats = async_nats::connect(NATS).await.unwrap();
    let scheduler = client(&names, NATS).await;
    let mut replied = Vec::new();
    for n in 0..4 {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            nats.request(subject.clone(), format!(r#"{{"n": {n}}}"#).into()),
        )
        .await
        .unwrap()
        .unwrap();
        let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
        let id = answer["run"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string();
        // The run the requester was told about is the one that runs.
        let run = wait_end(&scheduler, &id, Duration::from_secs(30)).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
        assert_eq!(run.outputs, Some(json!(n)));
        replied.push(id);
    }
    // Give a second run of any message time to show up, then count them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, runs) = tokio::task::spawn_blocking({
        let admin = admin_of(dir.path(), "t2");
        move || http_request(admin, "GET", "/v1/runs", &[], "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{runs}");
    let runs: Vec<Value> = serde_json::from_str(&runs).unwrap();
    let mut ids: Vec<String> = runs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    replied.sort();
    assert_eq!(ids, replied, "one message, one run: {runs:#?}");
    names.clean(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_no_host_serves_fails_after_the_wait_and_is_refused_at_submit() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("other.wasm"),
        sign(&probe_wasm(), "other", &[]).bytes,
    )
    .unwrap();
    let section = format!("{}no_host_timeout = \"1s\"\n", names.section(NATS, "2s"));
    // `busy` runs the probe, one step at a time; `other` runs the actor the last step names.
    let busy = start_host(dir.path(), "busy", &section);
    let other = start_host(
        dir.path(),
        "other",
        &format!("[[actors]]\npath = \"other.wasm\"\n\n{section}"),
    );
    let scheduler = client(&names, NATS).await;
    let workflow = Workflow::from_yaml(
        r#"
version: 1
name: orphaned
steps:
  - { name: s1, actor: probe, operation: spin, input: 1 }
  - { name: s2, actor: probe, operation: spin, input: 2 }
  - { name: s3, actor: probe, operation: spin, input: 3 }
  - { name: last, actor: other, operation: echo, depends: [s1, s2, s3] }
"#,
    )
    .unwrap();
    let routes = resolve_remote_routes(&workflow, None).await.unwrap();
    let id = scheduler
        .submit(&workflow, BTreeMap::new(), &routes)
        .await
        .unwrap();
    // The only host of `other` goes away before the last step is queued.
    drop(other);

    let run = wait_end(&scheduler, &id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    // The spin steps queued behind a busy host for longer than the wait, and still ran.
    for step in ["s1", "s2", "s3"] {
        let s = &run.steps[step];
        assert_eq!(s.status, StepStatus::Succeeded, "{step}: {s:?}");
        assert_eq!(s.failures, 0, "{step}: {s:?}");
    }
    let last = &run.steps["last"];
    assert_eq!(last.status, StepStatus::Failed, "{last:?}");
    assert_eq!(last.attempts, 0, "{last:?}");
    let expected = "no host runs actor other: the step waited 1s (no_host_timeout) with no \
                    host serving route name.other; start a host that loads it, then submit \
                    the run again";
    assert_eq!(last.error.as_deref(), Some(expected));
    assert_eq!(
        run.error.as_deref(),
        Some(format!("step last failed: {expected}").as_str())
    );

    // Now that no host runs `other`, a run naming it is refused at submit, by a
    // submitter on the same NATS server and over the admin API of a host.
    let err = scheduler
        .submit(&workflow, BTreeMap::new(), &routes)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "step \"last\": no host runs actor other; start a host that loads it (or fix the \
         step's actor), then submit the run again"
    );
    let body = json!({ "workflow": { "version": 1, "name": "orphaned", "steps": [
        { "name": "only", "actor": "other", "operation": "echo" } ] } })
    .to_string();
    let admin = admin_of(dir.path(), "busy");
    let (status, why) = tokio::task::spawn_blocking(move || {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        http_request(
            admin,
            "POST",
            "/v1/runs",
            &[("authorization", &bearer)],
            &body,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 409, "{why}");
    assert!(
        why.contains("step \"only\": no host runs actor other;"),
        "{why}"
    );
    // The refused runs were not stored.
    assert_eq!(scheduler.list().await.unwrap().len(), 1);
    drop(busy);
    names.clean(NATS).await;
}
