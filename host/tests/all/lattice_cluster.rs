//! Many machines, simulated on one: a three-node NATS cluster on loopback with JetStream
//! keeping three copies of the steps and the run state, `sigil up` hosts connected to
//! different nodes, and a node killed mid-run without the run losing anything.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_host::up::workflows::NoRunner;
use sigil_host::workflow::jetstream::{JetStreamBackend, JetStreamOptions};
use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig};
use sigil_host::workflow::spec::Workflow;
use sigil_host::workflow::state::{RunStatus, StepStatus};

use crate::providers::{Server, spare_port, wait_for_port};
use crate::workflow::routes;

/// The name of the test's own connection, told apart from the hosts' in `/connz`.
const CLIENT_NAME: &str = "lattice-test";

/// One node of the cluster: its ports and, while it runs, its process.
struct Node {
    name: String,
    client: u16,
    route: u16,
    monitor: u16,
    process: Option<Server>,
}

impl Node {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client)
    }

    /// The names of the client connections the node serves (empty for unnamed ones).
    fn connections(&self) -> Vec<String> {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return Vec::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["connections"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Starts three clustered nodes with JetStream, each storing under `dir`.
fn start_cluster(dir: &Path) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node {
            name: format!("n{i}"),
            client: spare_port(),
            route: spare_port(),
            monitor: spare_port(),
            process: None,
        })
        .collect();
    let route_urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.route))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let others: Vec<&str> = route_urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| u.as_str())
            .collect();
        let log = std::fs::File::create(dir.join(format!("{}.log", node.name))).unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-n", &node.name])
            .args(["-p", &node.client.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .arg("-sd")
            .arg(dir.join(&node.name))
            .args(["--cluster_name", "sigil-test"])
            .args(["-cluster", &route_urls[i]])
            .args(["-routes", &others.join(",")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed");
        node.process = Some(Server(child));
    }
    for node in &nodes {
        wait_for_port(node.client);
    }
    nodes
}

/// The URL list of a host near `first`: its own node, then the others.
fn urls_from(nodes: &[Node], first: usize) -> String {
    let mut urls = vec![nodes[first].url()];
    urls.extend(
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, n)| n.url()),
    );
    urls.join(",")
}

/// Prints the end of each log when the test fails, then leaves the files to the tempdir.
struct Logs(Vec<PathBuf>);

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- {} ---\n{tail}", path.display());
        }
    }
}

use crate::workflow_hosts::start_host;

const WORKFLOW: &str = r#"
version: 1
name: lattice
steps:
  - { name: a, actor: probe, operation: spin, input: 0 }
  - { name: b1, actor: probe, operation: spin, depends: [a], input: 1 }
  - { name: b2, actor: probe, operation: spin, depends: [a], input: 2 }
  - { name: b3, actor: probe, operation: spin, depends: [a], input: 3 }
  - { name: b4, actor: probe, operation: spin, depends: [a], input: 4 }
  - { name: b5, actor: probe, operation: spin, depends: [a], input: 5 }
  - { name: b6, actor: probe, operation: spin, depends: [a], input: 6 }
  - name: c
    actor: probe
    operation: spin
    depends: [b1, b2, b3, b4, b5, b6]
    input: ["${{ steps.a.output }}", "${{ steps.b1.output }}", "${{ steps.b2.output }}", "${{ steps.b3.output }}", "${{ steps.b4.output }}", "${{ steps.b5.output }}", "${{ steps.b6.output }}"]
  - { name: d, actor: probe, operation: echo, depends: [c], input: { all: "${{ steps.c.output }}" } }
outputs: "${{ steps.d.output }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_outlives_a_killed_node_of_a_three_node_cluster() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path());
    let _logs = Logs(
        ["n1", "n2", "n3", "h1", "h2", "h3"]
            .iter()
            .map(|n| dir.path().join(format!("{n}.log")))
            .collect(),
    );
    let options = JetStreamOptions {
        replicas: 3,
        ..JetStreamOptions::default()
    };

    // The cluster is ready once JetStream has a meta leader that knows every peer: until
    // then creating a stream of three replicas fails, or is not answered at all (hence the
    // short timeout of these attempts).
    let all: Vec<String> = nodes.iter().map(Node::url).collect();
    let client = async_nats::ConnectOptions::new()
        .name(CLIENT_NAME)
        .connect(all)
        .await
        .unwrap();
    let probe = JetStreamOptions {
        request_timeout: Duration::from_secs(1),
        ..options.clone()
    };
    loop {
        match JetStreamBackend::from_client(client.clone(), probe.clone()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    began.elapsed() < Duration::from_secs(30),
                    "the NATS cluster did not form with a JetStream leader within 30s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let backend = JetStreamBackend::from_client(client, options)
        .await
        .unwrap();
    let ready = began.elapsed();

    let mut hosts = Vec::new();
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        let section = format!(
            "[workflows]\nnats = \"{}\"\nreplicas = 3\nack_wait = \"5s\"\nmax_concurrent = 1\n",
            urls_from(&nodes, i)
        );
        hosts.push(start_host(dir.path(), name, &section));
    }
    let hosts_up = began.elapsed();

    let scheduler = Scheduler::new(
        Arc::new(backend.clone()),
        Arc::new(backend),
        Arc::new(NoRunner),
        SchedulerConfig::default(),
    );
    let workflow = Workflow::from_yaml(WORKFLOW).unwrap();
    let id = scheduler
        .submit(&workflow, BTreeMap::new(), &routes(&workflow))
        .await
        .unwrap();

    // Mid-run: the first step done, the fan-out running.
    let submitted = Instant::now();
    loop {
        let run = scheduler.status(&id).await.unwrap();
        if run.steps["a"].status == StepStatus::Succeeded
            && run
                .steps
                .values()
                .any(|s| s.status == StepStatus::Running && s.host.is_some())
        {
            break;
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(30),
            "the run never got to its fan-out: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Kill the node serving the most hosts (the client library picks a random server of
    // the list, so which one is known only now).
    let served: Vec<usize> = nodes
        .iter()
        .map(|n| {
            n.connections()
                .iter()
                .filter(|name| name.as_str() != CLIENT_NAME)
                .count()
        })
        .collect();
    let victim = (0..nodes.len())
        .max_by_key(|&i| (served[i], std::cmp::Reverse(i)))
        .unwrap();
    let served = served[victim];
    let killed_at = began.elapsed();
    drop(nodes[victim].process.take()); // SIGKILL

    // Alone the run ends 1–20 s after the kill (steps of hosts on the killed node wait
    // for their reconnection or redelivery); under a loaded suite it once took over 45 s.
    // The claim here is that it ends, not how fast: the bound only stops a hang.
    let run =
        match tokio::time::timeout(Duration::from_secs(120), scheduler.wait(&id, |_| {})).await {
            Ok(run) => run.unwrap(),
            Err(_) => {
                let now = tokio::time::timeout(Duration::from_secs(5), scheduler.status(&id)).await;
                panic!("run {id} did not end within 120s of the kill; it is now: {now:#?}")
            }
        };
    eprintln!(
        "cluster ready after {ready:?}, hosts up after {hosts_up:?}, {} (serving {served} \
         hosts) killed after {killed_at:?}, run over after {:?}; attempts: {:?}",
        nodes[victim].name,
        began.elapsed(),
        run.steps
            .iter()
            .map(|(n, s)| (n.as_str(), s.attempts))
            .collect::<Vec<_>>(),
    );
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.outputs, Some(json!({ "all": [0, 1, 2, 3, 4, 5, 6] })));
    for (name, s) in &run.steps {
        assert_eq!(s.status, StepStatus::Succeeded, "{name}: {s:?}");
        assert_eq!(s.failures, 0, "{name}: {s:?}");
        assert!(s.host.is_some(), "{name}: {s:?}");
    }
    assert_eq!(run.steps.len(), 9);
    drop(hosts);
}
