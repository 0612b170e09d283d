//! Traces exported to a real OTLP/HTTP receiver started by the test, which decodes each
//! export with the protocol's own generated types: a request that carries a W3C
//! `traceparent` continues that trace through the HTTP server, the actor's invocation and
//! its key-value call; a sampling ratio of 0 exports nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::guests::guest;
use crate::providers::{Server, http_request, spare_port, wait_for_port};

/// An OTLP/HTTP receiver on a spare port: every span it was sent, with its service name.
struct Receiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = spans.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = request.uri().path().to_string();
                                let body = match request.into_body().collect().await {
                                    Ok(b) => b.to_bytes(),
                                    Err(_) => Bytes::new(),
                                };
                                let status = match (
                                    path.as_str(),
                                    ExportTraceServiceRequest::decode(body),
                                ) {
                                    ("/v1/traces", Ok(export)) => {
                                        let mut kept = kept.lock().unwrap();
                                        for resource in export.resource_spans {
                                            let service = resource
                                                .resource
                                                .iter()
                                                .flat_map(|r| &r.attributes)
                                                .find(|a| a.key == "service.name")
                                                .and_then(|a| a.value.as_ref())
                                                .map(|v| format!("{:?}", v.value))
                                                .unwrap_or_default();
                                            for scope in resource.scope_spans {
                                                for span in scope.spans {
                                                    kept.push((service.clone(), span));
                                                }
                                            }
                                        }
                                        200
                                    }
                                    _ => 400,
                                };
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .map_err(|e| e.to_string())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            address,
            spans,
            _runtime: runtime,
        }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                Some(s.clone())
            }
            Some(other) => Some(format!("{other:?}")),
            None => None,
        })
}

/// `sigil up` with the probe answering HTTP on a spare port and counting in memory, and
/// `[telemetry]` pointing at `receiver`.
fn traced_host(dir: &std::path::Path, receiver: &Receiver, ratio: f64) -> (Server, SocketAddr) {
    std::fs::write(dir.join("probe.wasm"), guest("probe")).unwrap();
    let http = spare_port();
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
name = "traced"
admin_address = "off"

[telemetry]
endpoint = "http://{}"
service_name = "sigil-test"
sample_ratio = {ratio}

[[actors]]
path = "probe.wasm"

[[providers]]
name = "http"
kind = "httpserver"

[[providers]]
name = "kv"
kind = "keyvalue-memory"

[[providers]]
name = "web"
kind = "httpclient"

[[links]]
actor = "probe"
contract = "httpclient"
provider = "web"
config = {{ allow = ["127.0.0.1"] }}

[[links]]
actor = "probe"
contract = "httpserver"
provider = "http"
config = {{ address = "127.0.0.1:{http}" }}

[[links]]
actor = "probe"
contract = "keyvalue"
provider = "kv"
"#,
            receiver.address
        ),
    )
    .unwrap();
    // Export each batch at once rather than every 5 s.
    let server =
        crate::workflow_http::sigil_up_with(dir, &config, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    wait_for_port(http);
    (server, ([127, 0, 0, 1], http).into())
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn a_request_in_a_trace_continues_it_through_the_actor_and_its_provider() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (_host, http) = traced_host(dir.path(), &receiver, 1.0);
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (status, body) = http_request(
        http,
        "GET",
        "/kv/visits",
        &[("traceparent", &traceparent)],
        "",
    );
    assert_eq!((status, body.as_str()), (200, "1"));

    let began = Instant::now();
    let spans = loop {
        let spans = receiver.spans();
        if spans
            .iter()
            .any(|(_, s)| s.name == "provider.call" || s.name.starts_with("wasmcloud:keyvalue"))
            || began.elapsed() > Duration::from_secs(15)
        {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let find = |pred: &dyn Fn(&Span) -> bool| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| pred(s))
            .unwrap_or_else(|| panic!("no such span among {names:?}"))
    };
    let server =
        find(&|s| s.name == "GET" && attribute(s, "url.path").as_deref() == Some("/kv/visits"));
    let invoke = find(&|s| s.name == "invoke");
    let call = find(&|s| attribute(s, "sigil.capability").as_deref() == Some("wasmcloud:keyvalue"));
    for s in [server, invoke, call] {
        assert_eq!(hex(&s.trace_id), TRACE, "{} is in another trace", s.name);
    }
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT,
        "the server span continues the caller's"
    );
    assert_eq!(server.kind, 2, "server kind");
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        invoke.parent_span_id, server.span_id,
        "the invocation is the request's child"
    );
    assert_eq!(
        call.parent_span_id, invoke.span_id,
        "the key-value call is the invocation's child"
    );
    assert_eq!(call.kind, 3, "client kind");
    assert!(
        spans
            .iter()
            .all(|(service, _)| service.contains("sigil-test"))
    );
}

#[test]
fn a_sampling_ratio_of_zero_exports_nothing() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (_host, http) = traced_host(dir.path(), &receiver, 0.0);
    for _ in 0..5 {
        assert_eq!(http_request(http, "GET", "/kv/visits", &[], "").0, 200);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
}

#[test]
fn bad_telemetry_settings_are_refused_with_their_line_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[host]\nadmin_address = \"off\"\n\n[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 2\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("host.toml:4: [telemetry]: sample_ratio = 2 is out of range; use 0 to 1"),
        "{said}"
    );

    std::fs::write(&config, "[host]\nadmin_address = \"off\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("is not an http:// or https:// URL"), "{said}");
}
