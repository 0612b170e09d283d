//! WASI steps, side by side in one run: a WASI step that reads its input, computes a
//! little and writes its result (fresh instance, fresh `/work`), a waPC step doing the
//! same round trip, and a native process doing it; then a `plugin.wasm` Argo request
//! through `sigil up`'s endpoint, with the module from a registry on loopback.
//!
//! Run: `cargo bench -p sigil-host --bench wasi`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sigil_host::{EngineConfig, Host};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn steps(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let keys = tempfile::tempdir().unwrap();
    let wasi = common::built_actors("tests/actors", keys.path(), &["wasi-step"]).remove(0);
    let echo = common::example_actors(keys.path(), &["echo"]).remove(0);
    let host = Host::builder()
        .engine_config(EngineConfig::default())
        .build()
        .unwrap();
    let wasi = host.load_actor(wasi).unwrap();
    let echo = host.load_actor(echo).unwrap();
    let payload = rmp_serde::to_vec_named(&serde_json::json!({"name": "bench"})).unwrap();
    let out = rt
        .block_on(host.invoke_async(&wasi, "bench", &payload))
        .unwrap();
    let out: serde_json::Value = rmp_serde::from_slice(&out).unwrap();
    assert_eq!(out["greeting"], "Hello, bench!");

    // The native peer: a process that reads an input file and writes a result file.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"parameters":[{"name":"name","value":"bench"}]}"#,
    )
    .unwrap();
    let result = dir.path().join("result.json");

    let mut g = c.benchmark_group("step");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.bench_function("wasi/fresh-instance-and-work-dir", |b| {
        b.iter(|| {
            rt.block_on(host.invoke_async(&wasi, "bench", &payload))
                .unwrap()
        })
    });
    g.bench_function("wapc/echo-fresh-instance", |b| {
        b.iter(|| {
            rt.block_on(host.invoke_async(&echo, "echo", &payload))
                .unwrap()
        })
    });
    g.bench_function("process/cp-spawn", |b| {
        b.iter(|| {
            let status = Command::new("cp")
                .arg(&input)
                .arg(&result)
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        })
    });
    g.finish();
}

fn argo(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let registry = common::start_registry();
    let keys = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("step.wasm");
    std::fs::write(
        &module,
        common::built_actors("tests/actors", keys.path(), &["wasi-step"]).remove(0),
    )
    .unwrap();
    let reference = format!("{}/bench/wasi-step:1", registry.host);
    let sigil = env!("CARGO_BIN_EXE_sigil");
    let pushed = Command::new(sigil)
        .arg("push")
        .arg(&module)
        .args([
            &format!("oci://{reference}"),
            "--insecure-registry",
            &registry.host,
        ])
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{pushed:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nadmin_address = \"off\"\n\n[argo]\naddress = \"127.0.0.1:{port}\"\n\
             token = \"bench\"\n\n[[registries]]\nhost = \"{}\"\ninsecure = true\n",
            registry.host
        ),
    )
    .unwrap();
    let mut up = Command::new(sigil)
        .args(["up", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut sender = rt.block_on(common::http1(([127, 0, 0, 1], port).into()));
    let mut count = 0u64;
    let mut execute = |rt: &tokio::runtime::Runtime| {
        count += 1;
        let body = serde_json::json!({
            "workflow": { "metadata": { "name": "bench", "uid": format!("uid-{count}") } },
            "template": {
                "name": "greet",
                "inputs": { "parameters": [ { "name": "name", "value": "bench" } ] },
                "plugin": { "wasm": { "module": { "oci": reference } } },
            },
        })
        .to_string();
        rt.block_on(async {
            let request = hyper::Request::post("/api/v1/template.execute")
                .header("host", "127.0.0.1")
                .header("authorization", "Bearer bench")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["node"]["phase"], "Succeeded", "{answer}");
        })
    };
    let started = Instant::now();
    execute(rt);
    eprintln!(
        "argo plugin.wasm: first request (pull, verify, compile, run): {:?}",
        started.elapsed()
    );
    for _ in 0..20 {
        execute(rt);
    }
    let mut lat: Vec<Duration> = (0..300)
        .map(|_| {
            let t = Instant::now();
            execute(rt);
            t.elapsed()
        })
        .collect();
    lat.sort();
    eprintln!(
        "argo plugin.wasm: one-step request, new run each: p50 {:?} p99 {:?} (300 sequential)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let mut g = c.benchmark_group("argo");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("plugin-wasm/embedded", |b| b.iter(|| execute(rt)));
    g.finish();
    let _ = up.kill();
    let _ = up.wait();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    steps(c, &rt);
    argo(c, &rt);
}

criterion_group!(wasi_benches, benches);
criterion_main!(wasi_benches);
