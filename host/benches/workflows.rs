//! Workflow step dispatch: latency from submitting a one-step run to its result being
//! stored (p50, p99), and throughput in steps per second, with 1, 2 and 3 hosts on NATS
//! JetStream and on the in-process backend; and, for comparison, a native process spawned
//! per step (the floor under a container per step). Then the Argo executor plugin's
//! request path: one-step `plugin.sigil` requests for the `markdown` example actor, a new
//! run each, answered once the run has ended, embedded and on JetStream.
//!
//! "Hosts" here are schedulers with their own NATS connection in one process (the machine
//! has two cores either way). Needs NATS with JetStream on 127.0.0.1:4222.
//! Run: `cargo bench -p sigil-host --bench workflows`. `SIGIL_BENCH_ONLY=WORD` measures only
//! the parts whose label (`steps/embedded`, `steps/jetstream`, `steps/process`,
//! `argo/embedded`, `argo/jetstream`) contains WORD.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use sigil_host::up::argo::serve_argo;
use sigil_host::workflow::jetstream::{JetStreamBackend, JetStreamOptions};
use sigil_host::workflow::memory::MemoryBackend;
use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig, StepEvent};
use sigil_host::workflow::spec::Workflow;
use sigil_host::workflow::state::StepStatus;
use sigil_host::{EngineConfig, Host};

const NATS: &str = "nats://127.0.0.1:4222";
/// Runs in flight during the throughput measurement.
const IN_FLIGHT: usize = 256;

/// A cluster of `hosts` schedulers serving the echo actor, and one that submits.
struct Cluster {
    submitter: Arc<Scheduler>,
    hosts: Vec<Arc<Scheduler>>,
    names: Option<(String, String)>,
}

impl Cluster {
    async fn new(hosts: usize, jetstream: bool, runner: Arc<Host>) -> Cluster {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let options = JetStreamOptions {
            stream: format!("BENCH_STEPS_{id}"),
            bucket: format!("BENCH_RUNS_{id}"),
            subject_prefix: format!("bench.{id}"),
            ..JetStreamOptions::default()
        };
        let memory = MemoryBackend::new();
        let mut schedulers = Vec::new();
        for i in 0..=hosts {
            let (store, queue) = backend(jetstream, &memory, &options).await;
            schedulers.push(Scheduler::new(
                store,
                queue,
                runner.clone(),
                SchedulerConfig {
                    host: format!("h{i}"),
                    max_concurrent: 64,
                    ..SchedulerConfig::default()
                },
            ));
        }
        let submitter = schedulers.remove(0);
        for h in &schedulers {
            h.serve("name.echo").await.unwrap();
        }
        Cluster {
            submitter,
            hosts: schedulers,
            names: jetstream.then(|| (options.stream.clone(), format!("KV_{}", options.bucket))),
        }
    }

    fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<StepEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for h in &self.hosts {
            let mut events = h.events();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(e) = events.recv().await {
                    if tx.send(e).is_err() {
                        break;
                    }
                }
            });
        }
        rx
    }

    async fn close(self) {
        for h in &self.hosts {
            h.stop();
        }
        if let Some((stream, kv)) = self.names {
            let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
            let _ = js.delete_stream(&stream).await;
            let _ = js.delete_stream(&kv).await;
        }
    }
}

fn one_step() -> (Workflow, HashMap<String, String>) {
    let w = Workflow::from_yaml(
        "version: 1\nname: one\nsteps:\n  - { name: s, actor: echo, operation: echo, input: { n: 1 } }\n",
    )
    .unwrap();
    (w, [("s".to_string(), "name.echo".to_string())].into())
}

/// Submits runs one at a time; answers each one's time from submit to stored result.
async fn latencies(cluster: &Cluster, count: usize) -> Vec<Duration> {
    let (w, routes) = one_step();
    let mut events = cluster.events();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let id = cluster
            .submitter
            .submit(&w, BTreeMap::new(), &routes)
            .await
            .unwrap();
        loop {
            let e = events.recv().await.unwrap();
            if e.run == id && e.status == StepStatus::Succeeded {
                break;
            }
        }
        out.push(started.elapsed());
    }
    out
}

/// Runs `total` one-step runs with `IN_FLIGHT` at once; answers the time taken.
async fn throughput(cluster: &Cluster, total: u64) -> Duration {
    let (w, routes) = one_step();
    let (w, routes) = (Arc::new(w), Arc::new(routes));
    let mut events = cluster.events();
    let started = Instant::now();
    let submitter = cluster.submitter.clone();
    let total_usize = usize::try_from(total).unwrap();
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let feeder = {
        let permits = permits.clone();
        tokio::spawn(async move {
            for _ in 0..total_usize {
                permits.acquire().await.unwrap().forget();
                let (s, w, r) = (submitter.clone(), w.clone(), routes.clone());
                tokio::spawn(async move {
                    s.submit(&w, BTreeMap::new(), &r).await.unwrap();
                });
            }
        })
    };
    let mut done = 0;
    while done < total_usize {
        let e = events.recv().await.unwrap();
        if e.status == StepStatus::Succeeded {
            done += 1;
            permits.add_permits(1);
        }
    }
    feeder.await.unwrap();
    started.elapsed()
}

const ARGO_TOKEN: &str = "bench-token";

/// The Argo executor plugin endpoint of one host running the markdown actor, on one
/// backend, and a kept-alive HTTP/1.1 connection to it.
struct ArgoEndpoint {
    scheduler: Arc<Scheduler>,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    server: sigil_providers::httpserver::ServerHandle,
    names: Option<(String, String)>,
    requests: u64,
}

impl ArgoEndpoint {
    async fn new(jetstream: bool, runner: Arc<Host>) -> ArgoEndpoint {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let options = JetStreamOptions {
            stream: format!("BENCH_ARGO_STEPS_{id}"),
            bucket: format!("BENCH_ARGO_RUNS_{id}"),
            subject_prefix: format!("bench.argo.{id}"),
            ..JetStreamOptions::default()
        };
        let (store, queue) = backend(jetstream, &MemoryBackend::new(), &options).await;
        let scheduler = Scheduler::new(store, queue, runner, SchedulerConfig::default());
        scheduler.serve("name.markdown").await.unwrap();
        let server = serve_argo(
            scheduler.clone(),
            None,
            ARGO_TOKEN.into(),
            None,
            None,
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let sender = common::http1(server.local_addr()).await;
        ArgoEndpoint {
            scheduler,
            sender,
            server,
            names: jetstream.then(|| (options.stream.clone(), format!("KV_{}", options.bucket))),
            requests: 0,
        }
    }

    /// One `template.execute` request for a one-step markdown template; a new Argo
    /// workflow uid (so a new run) unless `uid` is given. Answers the node's phase.
    async fn execute(&mut self, uid: Option<&str>) -> String {
        self.requests += 1;
        let uid = uid.map_or_else(|| format!("uid-{}", self.requests), str::to_string);
        let body = serde_json::json!({
            "workflow": { "metadata": { "name": "bench", "namespace": "argo", "uid": uid } },
            "template": {
                "name": "render",
                "inputs": { "parameters": [ { "name": "markdown", "value": "# Hello, *Sigil*" } ] },
                "plugin": { "sigil": { "actor": "markdown", "operation": "render" } },
            },
        })
        .to_string();
        let request = hyper::Request::post("/api/v1/template.execute")
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {ARGO_TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        answer["node"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `count` requests, each a new run; answers each one's time.
    async fn latencies(&mut self, count: usize) -> Vec<Duration> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let phase = self.execute(None).await;
            out.push(started.elapsed());
            assert_eq!(phase, "Succeeded");
        }
        out
    }

    async fn close(self) {
        self.scheduler.stop();
        drop(self.sender);
        self.server.shutdown(Duration::from_secs(1)).await;
        if let Some((stream, kv)) = self.names {
            let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
            let _ = js.delete_stream(&stream).await;
            let _ = js.delete_stream(&kv).await;
        }
    }
}

/// The Argo request path: latency of one-step requests, each a new run, and of a request
/// repeated once its run has ended.
fn argo_requests(c: &mut Criterion, rt: &tokio::runtime::Runtime, only: Option<&str>) {
    let wanted = |label: &str| only.is_none_or(|o| label.contains(o));
    if !wanted("argo/embedded") && !wanted("argo/jetstream") {
        return;
    }
    let host = Host::builder()
        .engine_config(EngineConfig::default())
        .build()
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let markdown = common::example_actors(keys.path(), &["markdown"]).remove(0);
    host.load_actor(markdown).unwrap();
    let runner = Arc::new(host);
    let mut group = c.benchmark_group("argo_requests");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (backend, jetstream) in [("embedded", false), ("jetstream", true)] {
        if !wanted(&format!("argo/{backend}")) {
            continue;
        }
        let mut endpoint = rt.block_on(ArgoEndpoint::new(jetstream, runner.clone()));
        // Warm up: the first run stores the spec, connections settle.
        rt.block_on(endpoint.latencies(20));
        let mut lat = rt.block_on(endpoint.latencies(300));
        lat.sort();
        let repeated = rt.block_on(async {
            let mut out = Vec::new();
            for _ in 0..100 {
                let started = Instant::now();
                assert_eq!(endpoint.execute(Some("uid-1")).await, "Succeeded");
                out.push(started.elapsed());
            }
            out.sort();
            out
        });
        eprintln!(
            "argo {backend}: one-step request, new run each: p50 {:?} p99 {:?} (300 sequential); repeated (run ended): p50 {:?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&repeated, 0.5),
        );
        group.bench_function(format!("{backend}/one_step_new_run"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        endpoint.execute(None).await;
                    }
                    started.elapsed()
                })
            })
        });
        rt.block_on(endpoint.close());
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = Host::builder()
        .engine_config(EngineConfig::default())
        .build()
        .unwrap();
    host.load_actor(common::wat_echo("echo")).unwrap();
    let runner = Arc::new(host);

    // `SIGIL_BENCH_STEPS=N`: run N one-step runs once per embedded cluster size, print
    // steps per second and stop (for `perf stat` and A/B runs of two builds).
    if let Some(n) = std::env::var("SIGIL_BENCH_STEPS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        for hosts in 1..=3 {
            let cluster = rt.block_on(Cluster::new(hosts, false, runner.clone()));
            let took = rt.block_on(throughput(&cluster, n));
            eprintln!(
                "embedded {hosts} host(s): {n} steps in {took:?}: {:.0} steps/s",
                n as f64 / took.as_secs_f64()
            );
            rt.block_on(cluster.close());
        }
        return;
    }
    let only = std::env::var("SIGIL_BENCH_ONLY").ok();
    let wanted = |label: &str| only.as_deref().is_none_or(|o| label.contains(o));
    let mut group = c.benchmark_group("workflow_steps");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (backend, jetstream) in [("embedded", false), ("jetstream", true)] {
        if !wanted(&format!("steps/{backend}")) {
            continue;
        }
        for hosts in 1..=3 {
            let cluster = rt.block_on(Cluster::new(hosts, jetstream, runner.clone()));
            let mut lat = rt.block_on(latencies(&cluster, 400));
            lat.sort();
            eprintln!(
                "latency {backend} {hosts} host(s): p50 {:?} p99 {:?} (400 sequential one-step runs)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
            group.bench_function(format!("{backend}/{hosts}_hosts"), |b| {
                b.iter_custom(|n| rt.block_on(throughput(&cluster, n)))
            });
            rt.block_on(cluster.close());
        }
    }
    // The floor under a container per step: a native process per step.
    if wanted("steps/process") {
        group.bench_function("process_spawn_per_step", |b| {
            b.iter(|| {
                let status = std::process::Command::new("/bin/true").status().unwrap();
                assert!(status.success());
            })
        });
    }
    group.finish();
    argo_requests(c, &rt, only.as_deref());
}

criterion_group!(workflows, benches);
criterion_main!(workflows);

/// A host's run store and step queue: a new connection to JetStream with `options`, or
/// the shared in-process `memory`.
async fn backend(
    jetstream: bool,
    memory: &MemoryBackend,
    options: &JetStreamOptions,
) -> (
    Arc<dyn sigil_host::workflow::backend::RunStore>,
    Arc<dyn sigil_host::workflow::backend::StepQueue>,
) {
    if jetstream {
        let b = JetStreamBackend::connect(NATS, options.clone())
            .await
            .unwrap();
        (Arc::new(b.clone()), Arc::new(b))
    } else {
        (Arc::new(memory.clone()), Arc::new(memory.clone()))
    }
}
