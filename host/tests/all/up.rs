//! `sigil up` as an operator runs it: a real process, a configuration file, the admin
//! endpoint, links changed while it runs, and a graceful drain on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::guests::guest;
use crate::providers::{Server, http_with_body as request, spare_port, wait_for_port};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

#[test]
fn a_bad_configuration_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[host]\nadmin_address = \"off\"\ndrain_timeout = \"a while\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("host.toml:3:"), "{stderr}");
    assert!(stderr.contains("not a duration"), "{stderr}");

    // An actor that is not there names its line and the fix.
    std::fs::write(
        &config,
        "[host]\nadmin_address = \"off\"\n\n[[actors]]\npath = \"missing.wasm\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("host.toml:4:") && stderr.contains("missing.wasm"),
        "{stderr}"
    );
}

#[test]
fn up_serves_health_metrics_and_links_and_drains_on_sigterm() {
    // An upstream that answers slowly, so a request is in flight when SIGTERM comes.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in upstream.incoming() {
            let Ok(mut s) = stream else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(Duration::from_millis(1500));
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                );
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.wasm"), guest("probe")).unwrap();
    let (admin_port, http_port) = (spare_port(), spare_port());
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
name = "test-host"
labels = {{ zone = "test" }}
admin_address = "127.0.0.1:{admin_port}"
drain_timeout = "10s"

[[actors]]
path = "probe.wasm"

[[providers]]
name = "http"
kind = "httpserver"

[[providers]]
name = "web"
kind = "httpclient"

[[providers]]
name = "kv"
kind = "keyvalue-memory"

[[links]]
actor = "probe"
contract = "httpserver"
provider = "http"
config = {{ address = "127.0.0.1:{http_port}" }}

[[links]]
actor = "probe"
contract = "httpclient"
provider = "web"
config = {{ allow = ["{upstream_addr}"] }}
"#
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--config"])
        .arg(&config)
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut host = Server(child);
    wait_for_port(admin_port);
    let admin = addr(admin_port);
    let http = addr(http_port);

    assert_eq!(
        request(admin, "GET", "/healthz", ""),
        (200, "ok\n".to_string())
    );
    let (status, body) = request(admin, "GET", "/readyz", "");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["host"], "test-host");
    assert_eq!(ready["labels"]["zone"], "test");
    assert_eq!(ready["actors"][0]["name"], "probe");

    // No key-value link yet: a clear error, as a 5xx.
    let (status, _) = request(http, "GET", "/kv/visits", "");
    assert!(status >= 500, "{status}");
    // Link it while the host runs.
    let link = r#"{"actor": "probe", "contract_id": "keyvalue", "provider": "kv"}"#;
    assert_eq!(request(admin, "PUT", "/v1/links", link).0, 201);
    assert_eq!(request(admin, "PUT", "/v1/links", link).0, 409);
    assert_eq!(
        request(http, "GET", "/kv/visits", ""),
        (200, "1".to_string())
    );
    assert_eq!(
        request(http, "GET", "/kv/visits", ""),
        (200, "2".to_string())
    );
    let (_, links) = request(admin, "GET", "/v1/links", "");
    assert!(links.contains("wasmcloud:keyvalue"), "{links}");
    assert_eq!(
        request(admin, "DELETE", "/v1/links/probe/keyvalue/default", "").0,
        200
    );
    assert!(request(http, "GET", "/kv/visits", "").0 >= 500);

    let (_, metrics) = request(admin, "GET", "/metrics", "");
    assert!(
        metrics.contains(
            r#"sigil_invocations_total{actor="probe",operation="HandleRequest",outcome="Ok"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sigil_invocation_duration_seconds_bucket"),
        "{metrics}"
    );

    // A slow request in flight, then SIGTERM: it completes, and the host exits cleanly.
    let slow = std::thread::spawn(move || {
        request(
            http,
            "GET",
            &format!("/fetch?http://{upstream_addr}/slow"),
            "",
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let pid = host.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    assert_eq!(slow.join().unwrap(), (200, "slow".to_string()));
    let status = loop {
        if let Some(status) = host.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the host did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    host.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("draining") && log.contains("host stopped"),
        "{log}"
    );
    assert!(
        TcpStream::connect(http).is_err(),
        "the HTTP port is still open"
    );
}
