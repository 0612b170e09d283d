//! Providers under load, side by side in one run:
//!
//! - HTTP requests per second through an actor (the HTTP server provider invoking a signed
//!   actor) against the same handler in plain Rust on the same HTTP stack;
//! - key-value operations per second through an actor (an invocation that makes one
//!   `Increment` host call to the Redis provider) against the same `INCR` made directly
//!   with the `redis` crate.
//!
//! - the same key-value call through a provider plugin: `sigil provider run
//!   keyvalue-redis` as its own process, reached over NATS with signed envelopes.
//!
//! Both sides run with the same number of requests in flight (16), on the same runtime.
//! Needs Redis on 127.0.0.1:6379 and NATS on 127.0.0.1:4222.
//! Run: `cargo bench -p sigil-host --bench providers`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use sigil_claims::KeyStore;
use sigil_host::build::{BuildOptions, build};
use sigil_host::up::{Builtins, Runtime, create_provider};
use sigil_host::{EngineConfig, Limits};
use sigil_providers::httpserver::{
    HttpRequest, HttpResponse, HttpServer, ServerLimits, handler_fn, serve,
};
use sigil_providers::plugin::{Lattice, RemoteProvider};
use sigil_providers::{LinkConfig, LinkDefinition, Provider};

const IN_FLIGHT: usize = 16;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds and signs the test actors once; returns the probe actor.
fn probe(keys: &Path) -> Vec<u8> {
    let target = repo().join("target").join("guests");
    let mut opts = BuildOptions::new(KeyStore::new(keys));
    opts.target_dir = Some(target.clone());
    opts.out_dir = Some(target.join("signed-bench"));
    opts.quiet = true;
    let built = build(&repo().join("tests/actors"), &opts).expect("build the test actors");
    let b = built.iter().find(|b| b.name == "probe").expect("probe");
    std::fs::read(&b.path).unwrap()
}

/// Sends `total` GET requests over `IN_FLIGHT` keep-alive connections; returns the time.
async fn http_load(addr: std::net::SocketAddr, total: u64) -> Duration {
    let per = total.div_ceil(IN_FLIGHT as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..per {
                let req = hyper::Request::get("/hello")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let res = sender.send_request(req).await.unwrap();
                assert_eq!(res.status(), 200);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"/hello");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// Runs `op` `total` times with `in_flight` at once; returns the time.
async fn concurrent<F, Fut>(in_flight: usize, total: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = total.div_ceil(in_flight as u64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    op().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn benches(c: &mut Criterion) {
    let keys = tempfile::tempdir().unwrap();
    let probe = probe(keys.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (through_plugin, plugin) = plugin_runtime(&rt, probe.clone());

    let (runtime, actor_addr, plain_addr) = rt.block_on(async {
        let engine = EngineConfig {
            limits: Limits {
                deadline: Duration::from_secs(10),
                ..Limits::default()
            },
            ..EngineConfig::default()
        };
        let runtime = Runtime::new(engine, sigil_claims::Policy::new()).unwrap();
        let actor = runtime.load_actor(probe).await.unwrap();
        let http = Arc::new(HttpServer::from_config(&LinkConfig::new()).unwrap());
        runtime
            .add_provider("http", http.clone() as Arc<dyn Provider>)
            .await
            .unwrap();
        let redis =
            create_provider("keyvalue-redis", &LinkConfig::new(), &Builtins::default()).unwrap();
        runtime.add_provider("redis", redis).await.unwrap();
        for (contract, provider, config) in [
            (
                "wasmcloud:httpserver",
                "http",
                LinkConfig::new().with("address", "127.0.0.1:0"),
            ),
            (
                "wasmcloud:keyvalue",
                "redis",
                LinkConfig::new().with("prefix", "sigil-bench:actor:"),
            ),
        ] {
            runtime
                .add_link(&LinkDefinition {
                    actor: "probe".into(),
                    contract_id: contract.into(),
                    link_name: "default".into(),
                    provider: provider.into(),
                    config,
                })
                .await
                .unwrap();
        }
        let actor_addr = http.bound_address(actor.subject(), "default").unwrap();

        // The same handler in plain Rust, served by the same code.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = serve(
            listener,
            handler_fn(|req: HttpRequest| async move { HttpResponse::ok(req.path.into_bytes()) }),
            ServerLimits::default(),
        )
        .await
        .unwrap();
        let plain_addr = plain.local_addr();
        std::mem::forget(plain);
        (runtime, actor_addr, plain_addr)
    });

    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("plain_rust_handler", |b| {
        b.iter_custom(|n| rt.block_on(http_load(plain_addr, n)))
    });
    group.bench_function("through_actor", |b| {
        b.iter_custom(|n| rt.block_on(http_load(actor_addr, n)))
    });
    group.finish();

    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let direct = rt
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap();
    let incr = rmp_serde::to_vec_named(&serde_json::json!({"key": "n"})).unwrap();
    // With 16 in flight the direct side pipelines on its multiplexed connection; with one,
    // each side waits for every answer, so the difference is the cost the actor adds.
    for (group_name, in_flight) in [
        ("keyvalue_incr", IN_FLIGHT),
        ("keyvalue_incr_one_at_a_time", 1),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(8));
        group.bench_function("redis_crate_direct", |b| {
            b.iter_custom(|n| {
                let con = direct.clone();
                rt.block_on(concurrent(in_flight, n, move || {
                    let mut con = con.clone();
                    async move {
                        let _: i64 = redis::cmd("INCRBY")
                            .arg("sigil-bench:direct:n")
                            .arg(1)
                            .query_async(&mut con)
                            .await
                            .unwrap();
                    }
                }))
            })
        });
        for (name, host) in [
            ("through_actor", &runtime),
            ("through_actor_and_plugin", &through_plugin),
        ] {
            group.bench_function(name, |b| {
                b.iter_custom(|n| {
                    let runtime = host.clone();
                    let incr = incr.clone();
                    rt.block_on(concurrent(in_flight, n, move || {
                        let runtime = runtime.clone();
                        let incr = incr.clone();
                        async move {
                            runtime.invoke("probe", "kv_incr", incr).await.unwrap();
                        }
                    }))
                })
            });
        }
        group.finish();
    }
    rt.block_on(runtime.shutdown(Duration::from_secs(5)));
    rt.block_on(through_plugin.shutdown(Duration::from_secs(5)));
    let mut plugin = plugin;
    let _ = plugin.kill();
    let _ = plugin.wait();
}

/// A key-value plugin process (`sigil provider run keyvalue-redis`) and a runtime whose
/// probe actor reaches it over the lattice.
fn plugin_runtime(
    rt: &tokio::runtime::Runtime,
    probe: Vec<u8>,
) -> (Arc<Runtime>, std::process::Child) {
    use sigil_claims::{KeyKind, ProviderSpec, issue_provider_token, keys};
    let lattice = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let issuer = keys::generate(KeyKind::Account);
    let key = keys::generate(KeyKind::Service);
    let cluster = keys::generate(KeyKind::Cluster);
    let spec = ProviderSpec {
        name: "kv".into(),
        capid: "keyvalue".into(),
        vendor: "bench".into(),
        ..ProviderSpec::default()
    };
    let claims = issue_provider_token(&spec, &issuer, &key.public_key()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["provider", "run", "keyvalue-redis"])
        .env("SIGIL_LATTICE", &lattice)
        .env("SIGIL_PROVIDER_SEED", key.seed().unwrap())
        .env("SIGIL_PROVIDER_CLAIMS", &claims)
        .env("SIGIL_CLUSTER_ISSUERS", cluster.public_key())
        .env("SIGIL_LOG", "warn")
        .spawn()
        .unwrap();
    let runtime = rt.block_on(async {
        let engine = EngineConfig {
            limits: Limits {
                deadline: Duration::from_secs(10),
                ..Limits::default()
            },
            ..EngineConfig::default()
        };
        let runtime = Runtime::new(engine, sigil_claims::Policy::new()).unwrap();
        runtime.load_actor(probe).await.unwrap();
        let lattice = Lattice::new(
            "nats://127.0.0.1:4222",
            &lattice,
            cluster,
            sigil_claims::Policy::new(),
        );
        let remote = RemoteProvider::new(
            lattice,
            &key.public_key(),
            "wasmcloud:keyvalue",
            Duration::from_secs(5),
        )
        .unwrap();
        runtime
            .add_provider("plugin", Arc::new(remote))
            .await
            .unwrap();
        // The plugin process may still be starting: retry the link until it answers.
        let started = Instant::now();
        let definition = LinkDefinition {
            actor: "probe".into(),
            contract_id: "wasmcloud:keyvalue".into(),
            link_name: "default".into(),
            provider: "plugin".into(),
            config: LinkConfig::new().with("prefix", "sigil-bench:plugin:"),
        };
        runtime.add_link(&definition).await.unwrap();
        let incr = rmp_serde::to_vec_named(&serde_json::json!({"key": "n"})).unwrap();
        while runtime
            .invoke("probe", "kv_incr", incr.clone())
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the plugin never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runtime
    });
    (runtime, child)
}

criterion_group!(providers, benches);
criterion_main!(providers);
