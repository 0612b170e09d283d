//! Tests of the httpclient providers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sigil_actor::contracts::httpclient::{CONTRACT_ID, HttpResponse, OP_REQUEST, Request};
use sigil_actor::contracts::{decode, encode};
use sigil_providers::httpclient::HttpClient;
use sigil_providers::{ActorIdentity, Invocation, LinkConfig, Provider, ProviderError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{actor, deadline, link, spare_port};

/// A tiny HTTP/1.1 server on loopback that counts the connections it accepts.
struct TestServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        TestServer { port, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Serves one request: `/echo` (body, method and `x-test` header echoed), `/status/<n>`,
/// `/redirect?to=<url>`, `/big` (1000 bytes with a length), `/big-chunked` (1000 bytes,
/// chunked), `/slow` (answers after 3 s).
async fn serve(mut stream: TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let response: Vec<u8> = match path {
        "/echo" => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\nx-method: {method}\r\nx-got-header: {}\r\n\r\n",
                body.len(),
                header("x-test").unwrap_or_default()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        }
        "/redirect" => {
            let to = query.strip_prefix("to=").unwrap_or_default();
            format!("HTTP/1.1 302 Found\r\nconnection: close\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
                .into_bytes()
        }
        "/big" => {
            let mut r =
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1000\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'x'; 1000]);
            r
        }
        "/big-chunked" => {
            let mut r =
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
                    .to_vec();
            for _ in 0..10 {
                r.extend_from_slice(b"64\r\n");
                r.extend_from_slice(&[b'y'; 100]);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec()
        }
        p if p.starts_with("/status/") => {
            let code = p.trim_start_matches("/status/");
            format!(
                "HTTP/1.1 {code} Whatever\r\nconnection: close\r\ncontent-length: 4\r\n\r\noops"
            )
            .into_bytes()
        }
        _ => b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

async fn provider(actor: &Arc<ActorIdentity>, config: LinkConfig) -> HttpClient {
    let provider = HttpClient::from_config(&LinkConfig::new()).unwrap();
    provider
        .link_added(&link(actor, CONTRACT_ID, config))
        .await
        .unwrap();
    provider
}

async fn send(
    provider: &HttpClient,
    actor: &ActorIdentity,
    request: &Request,
) -> Result<HttpResponse, ProviderError> {
    let payload = encode(request).unwrap();
    let out = provider
        .invoke(Invocation {
            actor,
            link_name: "default",
            operation: OP_REQUEST,
            payload: &payload,
            deadline: deadline(30),
        })
        .await?;
    Ok(decode(&out).unwrap())
}

fn allow(value: &str) -> LinkConfig {
    LinkConfig::new().with("allow", value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_round_trips() {
    let server = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(&a, allow(&format!("127.0.0.1:{}", server.port))).await;

    let request =
        Request::post(server.url("/echo"), b"ping".to_vec()).with_header("x-test", "hello");
    let response = send(&p, &a, &request).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ping");
    assert_eq!(response.header("x-method"), Some("POST"));
    assert_eq!(response.header("x-got-header"), Some("hello"));

    let response = send(
        &p,
        &a,
        &Request::new("PUT", server.url("/echo")).with_body("x"),
    )
    .await
    .unwrap();
    assert_eq!(response.header("x-method"), Some("PUT"));

    // Any status is an answer.
    let response = send(&p, &a, &Request::get(server.url("/status/418")))
        .await
        .unwrap();
    assert_eq!(response.status, 418);
    assert_eq!(response.body, b"oops");
    // A method left empty is a GET.
    let response = send(&p, &a, &Request::new("", server.url("/echo")))
        .await
        .unwrap();
    assert_eq!(response.header("x-method"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_the_allowlist_are_refused_without_a_connection() {
    let allowed = TestServer::start().await;
    let other = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(
        &a,
        allow(&format!("127.0.0.1:{}, *.example.com", allowed.port)),
    )
    .await;

    for url in [
        other.url("/echo"),
        format!("http://localhost:{}/echo", other.port),
        format!("http://localhost:{}/echo", allowed.port),
        "http://example.com/".to_string(),
        "https://evil.test/".to_string(),
    ] {
        let err = send(&p, &a, &Request::get(&url)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Denied(_)), "{url}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("is not allowed by the link's allowlist"),
            "{text}"
        );
        assert!(
            text.contains(&format!("127.0.0.1:{}", allowed.port)),
            "{text}"
        );
    }
    let err = send(&p, &a, &Request::get(other.url("/echo")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", other.port)), "{err}");
    assert_eq!(other.connections(), 0, "a refused host was contacted");
    assert_eq!(allowed.connections(), 0, "a refused request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_without_allow_refuses_everything() {
    let server = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(&a, LinkConfig::new()).await;
    let err = send(&p, &a, &Request::get(server.url("/echo")))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Denied(_)), "{err}");
    assert!(err.to_string().contains("no `allow` key"), "{err}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let allowed = TestServer::start().await;
    let other = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(&a, allow(&format!("127.0.0.1:{}", allowed.port))).await;

    // Within the allowlist: followed (a 302 turns a POST into a GET).
    let to = allowed.url("/echo");
    let response = send(
        &p,
        &a,
        &Request::post(allowed.url(&format!("/redirect?to={to}")), "x"),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-method"), Some("GET"));

    // Outside it: refused, and the other host never sees a connection.
    let to = other.url("/echo");
    let err = send(
        &p,
        &a,
        &Request::get(allowed.url(&format!("/redirect?to={to}"))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProviderError::Denied(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("redirect"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", other.port)),
        "{text}"
    );
    assert!(text.contains("was not followed"), "{text}");
    assert_eq!(other.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_limits_are_refused() {
    let server = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let config = allow(&format!("127.0.0.1:{}", server.port))
        .with("max_response_bytes", "999")
        .with("max_request_bytes", "10");
    let p = provider(&a, config).await;
    for path in ["/big", "/big-chunked"] {
        let err = send(&p, &a, &Request::get(server.url(path)))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Denied(_)), "{path}: {err}");
        assert!(
            err.to_string().contains("max_response_bytes (999 bytes)"),
            "{err}"
        );
    }
    let err = send(&p, &a, &Request::post(server.url("/echo"), vec![0u8; 11]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_request_bytes"), "{err}");
    let ok = send(&p, &a, &Request::post(server.url("/echo"), vec![7u8; 10]))
        .await
        .unwrap();
    assert_eq!(ok.body, vec![7u8; 10]);

    // Exactly at the limit is fine.
    let p = provider(
        &a,
        allow(&format!("127.0.0.1:{}", server.port)).with("max_response_bytes", "1000"),
    )
    .await;
    assert_eq!(
        send(&p, &a, &Request::get(server.url("/big-chunked")))
            .await
            .unwrap()
            .body
            .len(),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_honoured() {
    let server = TestServer::start().await;
    let a = actor("fetcher", &[CONTRACT_ID]);
    let hostport = format!("127.0.0.1:{}", server.port);

    let p = provider(&a, allow(&hostport).with("timeout", "500ms")).await;
    let started = Instant::now();
    let err = send(&p, &a, &Request::get(server.url("/slow")))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.to_string().contains(&hostport), "{err}");
    // The server may have acted on the request: the text says so.
    assert!(
        err.to_string()
            .ends_with("may or may not have been applied, so retry it only if it is idempotent"),
        "{err}"
    );

    // An actor may shorten the link's timeout, not lengthen it.
    let p = provider(&a, allow(&hostport)).await;
    let started = Instant::now();
    let err = send(
        &p,
        &a,
        &Request::get(server.url("/slow")).with_timeout_ms(300),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("timed out"), "{err}");

    let p = provider(&a, allow(&hostport).with("timeout", "300ms")).await;
    let started = Instant::now();
    send(
        &p,
        &a,
        &Request::get(server.url("/slow")).with_timeout_ms(60_000),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_clear_error() {
    let port = spare_port();
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(&a, allow(&format!("127.0.0.1:{port}"))).await;
    let err = send(&p, &a, &Request::get(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_configs_are_refused() {
    let a = actor("fetcher", &[CONTRACT_ID]);
    let p = provider(&a, allow("*")).await;
    for request in [
        Request::get("not a url"),
        Request::get("/relative"),
        Request::get("ftp://example.com/file"),
        Request::get("file:///etc/passwd"),
        Request::new("BAD METHOD", "http://example.com/"),
        Request::get("http://example.com/").with_header("bad header", "x"),
        Request::get("http://example.com/").with_header("x-ok", "bad\nvalue"),
    ] {
        let err = send(&p, &a, &request).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidRequest { .. }),
            "{request:?}: {err}"
        );
    }
    let payload = encode(&Request::get("http://example.com/")).unwrap();
    let err = p
        .invoke(Invocation {
            actor: &a,
            link_name: "default",
            operation: "Fetch",
            payload: &payload,
            deadline: deadline(5),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::UnknownOperation { .. }),
        "{err}"
    );

    let p = HttpClient::from_config(&LinkConfig::new()).unwrap();
    for config in [
        LinkConfig::new().with("alow", "example.com"),
        allow("http://example.com"),
        allow("example.com:http"),
        allow("example.com").with("timeout", "soon"),
    ] {
        let err = p
            .link_added(&link(&a, CONTRACT_ID, config.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)), "{config:?}: {err}");
    }
    assert!(HttpClient::from_config(&LinkConfig::new().with("agent", "x")).is_err());
    assert_eq!(p.kind(), "http");
    assert_eq!(p.contract_id(), CONTRACT_ID);
}
