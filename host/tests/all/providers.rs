//! Signed actors reaching real servers through providers and links: the counter over HTTP
//! on Redis, isolation between actors, allowlists, refused links, and a backend that goes
//! down and comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_host::up::{Builtins, Runtime, create_provider};
use sigil_host::{EngineConfig, Limits};
use sigil_providers::httpserver::HttpServer;
use sigil_providers::{LinkConfig, LinkDefinition, Provider};

use crate::common::sign;
use crate::guests::guest;

pub const PROBE_CAPS: &[&str] = &[
    "keyvalue",
    "messaging",
    "blobstore",
    "httpclient",
    "httpserver",
    "actor",
];

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn runtime() -> Arc<Runtime> {
    let engine = EngineConfig {
        limits: Limits {
            deadline: Duration::from_secs(5),
            ..Limits::default()
        },
        max_instances: 16,
        ..EngineConfig::default()
    };
    Runtime::new(engine, sigil_claims::Policy::new()).unwrap()
}

pub async fn provider(rt: &Runtime, name: &str, kind: &str, config: LinkConfig) {
    let p = create_provider(kind, &config, &Builtins::default()).unwrap();
    rt.add_provider(name, p).await.unwrap();
}

pub async fn link(rt: &Runtime, actor: &str, contract: &str, provider: &str, config: LinkConfig) {
    rt.add_link(&LinkDefinition {
        actor: actor.to_string(),
        contract_id: sigil_host::up::config::contract_id(contract),
        link_name: "default".to_string(),
        provider: provider.to_string(),
        config,
    })
    .await
    .unwrap();
}

/// Invokes with a JSON request, answers the decoded JSON response or the error text.
pub async fn call(
    rt: &Runtime,
    actor: &str,
    op: &str,
    request: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let payload = rmp_serde::to_vec_named(&request).unwrap();
    let reply = rt
        .invoke(actor, op, payload)
        .await
        .map_err(|e| e.to_string())?;
    if reply.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(rmp_serde::from_slice(&reply).unwrap())
}

/// A plain HTTP/1.1 request without a body; answers the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with_body(addr, method, path, "")
}

/// An HTTP/1.1 request with a JSON body; answers the status and the body.
pub fn http_with_body(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_request(addr, method, path, &[], body)
}

/// An HTTP/1.1 request with extra headers and a JSON body; answers the status and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         {extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A child process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn redis_server(port: u16) -> Server {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    wait_for_port(port);
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_answers_over_http_and_counts_in_redis() {
    let rt = runtime();
    let counter = rt.load_actor(guest("counter")).await.unwrap();
    let http = Arc::new(HttpServer::from_config(&LinkConfig::new()).unwrap());
    rt.add_provider("http", http.clone() as Arc<dyn Provider>)
        .await
        .unwrap();
    provider(&rt, "kv", "keyvalue-redis", LinkConfig::new()).await;
    let prefix = unique("counter-test") + ":";
    link(
        &rt,
        "counter",
        "httpserver",
        "http",
        LinkConfig::new().with("address", "127.0.0.1:0"),
    )
    .await;
    link(
        &rt,
        "counter",
        "keyvalue",
        "kv",
        LinkConfig::new().with("prefix", prefix.clone()),
    )
    .await;
    let addr = http.bound_address(counter.subject(), "default").unwrap();

    let answers = tokio::task::spawn_blocking(move || {
        let mut answers: Vec<_> = (1..=3)
            .map(|_| self::http(addr, "POST", "/visits"))
            .collect();
        answers.push(self::http(addr, "GET", "/visits"));
        answers.push(self::http(addr, "GET", "/Nope"));
        answers
    })
    .await
    .unwrap();
    assert_eq!(
        answers[0],
        (200, r#"{"counter":"visits","count":1}"#.to_string())
    );
    assert_eq!(
        answers[2],
        (200, r#"{"counter":"visits","count":3}"#.to_string())
    );
    assert_eq!(
        answers[3],
        (200, r#"{"counter":"visits","count":3}"#.to_string())
    );
    assert_eq!(answers[4].0, 400);

    // The count is really in Redis, under the link's prefix.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let stored: String = redis::cmd("GET")
        .arg(format!("{prefix}counter:visits"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored, "3");
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}counter:visits"))
        .query_async(&mut con)
        .await
        .unwrap();
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_cannot_reach_each_others_keys_or_objects() {
    let rt = runtime();
    let probe = guest("probe");
    let a = sign(&probe, "probe-a", PROBE_CAPS);
    let b = sign(&probe, "probe-b", PROBE_CAPS);
    rt.load_actor(a.bytes).await.unwrap();
    rt.load_actor(b.bytes).await.unwrap();
    provider(&rt, "kv", "keyvalue-redis", LinkConfig::new()).await;
    let dir = tempfile::tempdir().unwrap();
    provider(
        &rt,
        "blobs",
        "blobstore-fs",
        LinkConfig::new().with("root", dir.path().display().to_string()),
    )
    .await;
    for actor in ["probe-a", "probe-b"] {
        link(&rt, actor, "keyvalue", "kv", LinkConfig::new()).await;
        link(&rt, actor, "blobstore", "blobs", LinkConfig::new()).await;
    }
    let key = unique("secret");
    let set = serde_json::json!({"key": key, "value": "a's"});
    call(&rt, "probe-a", "kv_set", set).await.unwrap();
    let get = serde_json::json!({"key": key});
    assert_eq!(
        call(&rt, "probe-a", "kv_get", get.clone()).await.unwrap(),
        "a's"
    );
    assert_eq!(
        call(&rt, "probe-b", "kv_get", get.clone()).await.unwrap(),
        serde_json::Value::Null
    );
    call(
        &rt,
        "probe-b",
        "kv_set",
        serde_json::json!({"key": key, "value": "b's"}),
    )
    .await
    .unwrap();
    assert_eq!(call(&rt, "probe-a", "kv_get", get).await.unwrap(), "a's");

    let put = serde_json::json!({"container": "docs", "object": "plan.txt", "body": "a's plan"});
    call(&rt, "probe-a", "blob_put", put.clone()).await.unwrap();
    assert_eq!(
        call(&rt, "probe-a", "blob_get", put.clone()).await.unwrap(),
        "a's plan"
    );
    let err = call(&rt, "probe-b", "blob_get", put).await.unwrap_err();
    assert!(err.contains("docs") || err.contains("not"), "{err}");
    // Traversal out of the root is refused.
    let escape = serde_json::json!({"container": "docs", "object": "../../etc/passwd"});
    let err = call(&rt, "probe-a", "blob_get", escape).await.unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");

    // Clean up the Redis keys (each actor's keys live under its own public key).
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for subject in [&a.subject, &b.subject] {
        let _: () = redis::cmd("DEL")
            .arg(format!("{subject}:{key}"))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_need_a_claim_and_calls_need_a_link() {
    let rt = runtime();
    rt.load_actor(guest("counter")).await.unwrap();
    rt.load_actor(guest("probe")).await.unwrap();
    provider(&rt, "bus", "messaging-bus", LinkConfig::new()).await;
    let err = rt
        .add_link(&LinkDefinition {
            actor: "counter".into(),
            contract_id: "wasmcloud:messaging".into(),
            link_name: "default".into(),
            provider: "bus".into(),
            config: LinkConfig::new(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signed claim"), "{err}");

    let err = call(&rt, "probe", "kv_get", serde_json::json!({"key": "k"}))
        .await
        .unwrap_err();
    assert!(
        err.contains("no link `default`") && err.contains("wasmcloud:keyvalue"),
        "{err}"
    );
    rt.shutdown(Duration::from_secs(5)).await;
}

/// A server on a spare loopback port that answers every request with `response` (a whole
/// HTTP/1.1 response) and closes.
pub async fn upstream(response: &'static [u8]) -> std::net::SocketAddr {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = upstream.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(response).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_client_reaches_only_allowed_hosts() {
    let allowed =
        upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
            .await;
    let rt = runtime();
    rt.load_actor(guest("probe")).await.unwrap();
    provider(&rt, "web", "httpclient", LinkConfig::new()).await;
    link(
        &rt,
        "probe",
        "httpclient",
        "web",
        LinkConfig::new().with("allow", allowed.to_string()),
    )
    .await;

    let ok = call(
        &rt,
        "probe",
        "fetch",
        serde_json::json!({"url": format!("http://{allowed}/x")}),
    )
    .await
    .unwrap();
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["body"], "upstream");
    let other = format!("http://127.0.0.1:{}/x", spare_port());
    let err = call(&rt, "probe", "fetch", serde_json::json!({"url": other}))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_on_nats_checks_subjects_and_delivers_subscriptions() {
    let rt = runtime();
    rt.load_actor(guest("probe")).await.unwrap();
    provider(&rt, "nats", "messaging-nats", LinkConfig::new()).await;
    provider(&rt, "kv", "keyvalue-memory", LinkConfig::new()).await;
    let base = unique("probe");
    link(
        &rt,
        "probe",
        "messaging",
        "nats",
        LinkConfig::new()
            .with("publish", format!("{base}.out.>"))
            .with("subscribe", format!("{base}.in")),
    )
    .await;
    link(&rt, "probe", "keyvalue", "kv", LinkConfig::new()).await;

    let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
    let mut sub = client.subscribe(format!("{base}.out.>")).await.unwrap();
    // The server has the subscription before anything is sent to it.
    sigil_providers::plugin::wire::settle(&client)
        .await
        .unwrap();
    call(
        &rt,
        "probe",
        "publish",
        serde_json::json!({"subject": format!("{base}.out.a"), "body": "hi"}),
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"hi");

    let err = call(
        &rt,
        "probe",
        "publish",
        serde_json::json!({"subject": format!("{base}.secret"), "body": "x"}),
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");

    // A request on the subscribed subject reaches HandleMessage, which replies.
    let reply = client
        .request(format!("{base}.in"), "ping".into())
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"ping");
    let last = call(
        &rt,
        "probe",
        "kv_get",
        serde_json::json!({"key": "last-message"}),
    )
    .await
    .unwrap();
    assert_eq!(last, "ping");
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_goes_away_gives_clear_errors_and_then_works_again() {
    let port = spare_port();
    let server = redis_server(port);
    let rt = runtime();
    rt.load_actor(guest("probe")).await.unwrap();
    rt.load_actor(guest("echo")).await.unwrap();
    provider(
        &rt,
        "kv",
        "keyvalue-redis",
        LinkConfig::new().with("url", format!("redis://127.0.0.1:{port}")),
    )
    .await;
    link(&rt, "probe", "keyvalue", "kv", LinkConfig::new()).await;
    let incr = serde_json::json!({"key": "n"});
    assert_eq!(
        call(&rt, "probe", "kv_incr", incr.clone()).await.unwrap(),
        1
    );

    drop(server);
    let started = Instant::now();
    let err = call(&rt, "probe", "kv_incr", incr.clone())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_lowercase().contains("unavailable"), "{err}");
    // The host is still up: other actors run.
    assert_eq!(
        rt.invoke("echo", "echo", b"still here".to_vec())
            .await
            .unwrap(),
        b"still here"
    );

    let _server = redis_server(port);
    let started = Instant::now();
    loop {
        match call(&rt, "probe", "kv_incr", incr.clone()).await {
            // A fresh server: the count starts again.
            Ok(n) => {
                assert_eq!(n, 1);
                break;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "still failing: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rt.shutdown(Duration::from_secs(5)).await;
}
