//! `sigil up` as an operator runs it: a real process, a configuration file, the admin
//! endpoint, links changed while it runs, and a graceful drain on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::guests::guest;
use crate::providers::{
    Server, http_request, http_with_body as request, spare_port, wait_for_port,
};

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
fn bad_workflow_specs_and_artifact_stores_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["up", "--check", "--config"])
            .arg(&config)
            .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let head = "[host]\nadmin_address = \"off\"\n\n[workflows]\n";
    // A spec file that is not there.
    let said = check(&format!("{head}specs = [\"none.yaml\"]\n"));
    assert!(
        said.contains("host.toml:5:") && said.contains("none.yaml"),
        "{said}"
    );
    // Two specs of one name: runs are started by name.
    let spec = "version: 1\nname: same\nsteps:\n  - { name: a, actor: probe, operation: echo }\n";
    std::fs::write(dir.path().join("a.yaml"), spec).unwrap();
    std::fs::write(dir.path().join("b.yaml"), spec).unwrap();
    let said = check(&format!("{head}specs = [\"a.yaml\", \"b.yaml\"]\n"));
    assert!(
        said.contains("names workflow \"same\", as") && said.contains("each needs its own"),
        "{said}"
    );
    // An artifact store of a kind there is none of.
    let said = check(&format!("{head}artifacts = {{ kind = \"ftp\" }}\n"));
    assert!(
        said.contains("[workflows.artifacts] needs kind = \"s3\""),
        "{said}"
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
    // Link it while the host runs: a change needs the admin token, which the host made
    // (none is configured) and wrote, private, to its cache directory.
    let link = r#"{"actor": "probe", "contract_id": "keyvalue", "provider": "kv"}"#;
    let (status, said) = request(admin, "PUT", "/v1/links", link);
    assert_eq!(status, 401, "{said}");
    assert!(said.contains("Authorization: Bearer"), "{said}");
    let token_file = dir.path().join("cache/test-host.admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let change =
        |method: &str, path: &str, body: &str| http_request(admin, method, path, &auth, body);
    assert_eq!(change("PUT", "/v1/links", link).0, 201);
    assert_eq!(change("PUT", "/v1/links", link).0, 409);
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
        401
    );
    assert_eq!(
        change("DELETE", "/v1/links/probe/keyvalue/default", "").0,
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

/// Runs `sigil up` (with `--check` when `check`) on `config`: exit code, stdout, stderr.
fn up(config: &std::path::Path, check: bool) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command.arg("up");
    if check {
        command.arg("--check");
    }
    let dir = config.parent().unwrap();
    let out = command
        .arg("--config")
        .arg(config)
        .env("SIGIL_CACHE_DIR", dir.join("cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of `config` that starts with `start`.
fn line_of(config: &std::path::Path, start: &str) -> usize {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .position(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?}"))
        + 1
}

/// A configuration of the probe actor with an HTTP server link on `http`, the admin
/// endpoint on `admin`, a memory key-value store, and `extra` appended.
fn probe_config(dir: &std::path::Path, admin: u16, http: u16, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("probe.wasm"), guest("probe")).unwrap();
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"[host]
admin_address = "127.0.0.1:{admin}"

[[actors]]
path = "probe.wasm"

[[providers]]
name = "http"
kind = "httpserver"

[[providers]]
name = "kv"
kind = "keyvalue-memory"

[providers.config]
max_bytes = "1MiB"

[[links]]
actor = "probe"
contract = "httpserver"
provider = "http"
config = {{ address = "127.0.0.1:{http}" }}

[[links]]
actor = "probe"
contract = "keyvalue"
provider = "kv"
{extra}"#
        ),
    )
    .unwrap();
    config
}

#[test]
fn check_binds_nothing_so_it_runs_beside_the_host_and_still_reports_errors() {
    // The reported case: the ports of the configuration are taken (here by the test's
    // own listeners, as by the running host), and `--check` failed with "Address already
    // in use".
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (admin_port, http_port) = (
        admin.local_addr().unwrap().port(),
        http.local_addr().unwrap().port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = probe_config(dir.path(), admin_port, http_port, "");
    let (code, stdout, stderr) = up(&config, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("ok (1 actors, 2 providers, 2 links)"),
        "{stdout}"
    );

    // The same ports make a real start fail, naming the line of the key at fault.
    refused_at(
        &config,
        false,
        "config = { address",
        "Address already in use",
    );
    let config = probe_config(dir.path(), admin_port, spare_port(), "");
    refused_at(
        &config,
        false,
        "admin_address",
        "cannot serve the admin endpoint",
    );

    // Real errors are still found: a link setting the provider does not read (at its own
    // line), an HTTP address that is not one, a backend that does not answer.
    let config = probe_config(
        dir.path(),
        admin_port,
        http_port,
        "\n[links.config]\nprefix = \"p:\"\nprefixx = \"q:\"\n",
    );
    refused_at(&config, true, "prefixx", "unknown key `prefixx`");

    let config = probe_config(dir.path(), admin_port, 0, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0\"", "nowhere\"");
    std::fs::write(&config, text).unwrap();
    refused_at(&config, true, "config = { address", "nowhere");

    // Two links of the same name: a start refuses the second, and so does a check,
    // although it applies neither.
    let config = probe_config(
        dir.path(),
        admin_port,
        http_port,
        "\n[[links]]\nactor = \"probe\"\ncontract = \"keyvalue\"\nprovider = \"kv\"\n",
    );
    let (code, _, stderr) = up(&config, true);
    assert_eq!(code, Some(2), "{stderr}");
    let second = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[links]]")
        .map(|(i, _)| i + 1)
        .nth(2)
        .unwrap();
    assert!(
        stderr.contains(&format!("host.toml:{second}:"))
            && stderr.contains("already has a link `default` to wasmcloud:keyvalue"),
        "{stderr}"
    );

    let redis_port = spare_port();
    let config = probe_config(
        dir.path(),
        admin_port,
        http_port,
        &format!(
            "\n[[providers]]\nname = \"redis\"\nkind = \"keyvalue-redis\"\n\n[providers.config]\n\
             url = \"redis://127.0.0.1:{redis_port}\"\nconnect_timeout = \"500ms\"\n"
        ),
    );
    let (code, _, stderr) = up(&config, true);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("provider \"redis\" (keyvalue-redis): its backend does not answer"),
        "{stderr}"
    );
    drop((admin, http));
}

#[test]
fn a_provider_config_error_names_the_line_of_its_key() {
    // The reported case named the [[providers]] header's line.
    let dir = tempfile::tempdir().unwrap();
    let config = probe_config(dir.path(), spare_port(), spare_port(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_bytes = \"1MiB\"",
        "max_bytes = \"1MiB\"\nmax_byte = \"2MiB\"",
    );
    std::fs::write(&config, text).unwrap();
    refused_at(&config, true, "max_byte =", "unknown key `max_byte`");
}

/// `sigil up` (with `--check` when `check`) on `config` exits 2 with an error at the line
/// that holds `marker`, saying `text`.
fn refused_at(config: &std::path::Path, check: bool, marker: &str, text: &str) {
    let (code, _, stderr) = up(config, check);
    assert_eq!(code, Some(2), "{stderr}");
    let at = format!("host.toml:{}:", line_of(config, marker));
    assert!(stderr.contains(&at) && stderr.contains(text), "{stderr}");
}
