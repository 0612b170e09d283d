//! The admin API of a real `sigil up`: its OpenAPI document checked against the live
//! endpoint by schemathesis (property-based requests from the document itself), the
//! server-sent event streams, and the token on every change.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{probe, sign};
use crate::providers::{Server, http_request, spare_port, wait_for_port};

const TOKEN: &str = "admin-api-token";

/// A workflow of the probe: `first` echoes, `second` echoes what `first` answered, and
/// `broken` (which only the second workflow has) fails.
const SPEC: &str = r#"
version: 1
name: pair
description: Two echoes.
inputs:
  word: { description: What to echo. }
steps:
  - { name: first, actor: probe, operation: echo, input: { said: "${{ inputs.word }}" } }
  - { name: second, actor: probe, operation: echo, depends: [first], input: "${{ steps.first.output }}" }
outputs: "${{ steps.second.output }}"
"#;

pub(crate) struct AdminHost {
    pub _server: Server,
    pub admin: SocketAddr,
    pub _dir: tempfile::TempDir,
}

/// `sigil up` with the probe actor, the `pair` workflow offered by name, and the admin
/// endpoint with a token.
pub(crate) fn start_admin_host() -> AdminHost {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("probe.wasm"),
        sign(&probe(), "probe", &[]).bytes,
    )
    .unwrap();
    std::fs::write(dir.path().join("pair.yaml"), SPEC).unwrap();
    let admin = spare_port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nname = \"api-host\"\nlabels = {{ zone = \"a\" }}\n\
             admin_address = \"127.0.0.1:{admin}\"\nadmin_token = \"{TOKEN}\"\n\n\
             [workflows]\nspecs = [\"pair.yaml\"]\n\n[[actors]]\npath = \"probe.wasm\"\n"
        ),
    )
    .unwrap();
    let server = crate::workflow_http::sigil_up(dir.path(), &config);
    wait_for_port(admin);
    AdminHost {
        _server: server,
        admin: ([127, 0, 0, 1], admin).into(),
        _dir: dir,
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Reads server-sent events from `path` until `until` says stop (or 20 s pass); answers
/// the `(event, data)` pairs read.
fn read_events(
    admin: SocketAddr,
    path: &str,
    mut until: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {admin}\r\naccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = Vec::new();
    let mut event = String::new();
    let began = Instant::now();
    let mut line = String::new();
    while began.elapsed() < Duration::from_secs(20) {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            let stop = until(&event, &value);
            seen.push((event.clone(), value));
            if stop {
                break;
            }
        }
    }
    seen
}

#[test]
fn the_admin_api_answers_as_its_openapi_document_says() {
    let host = start_admin_host();
    let (status, doc) = http_request(host.admin, "GET", "/v1/openapi.json", &[], "");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    for path in [
        "/healthz",
        "/v1/status",
        "/v1/hosts",
        "/v1/actors",
        "/v1/links",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/graph",
        "/v1/runs/{id}/events",
        "/v1/workflows/{name}/runs",
        "/v1/denials",
        "/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    // A run exists, so that the operations on one have something to find.
    let auth = bearer();
    let (status, started) = http_request(
        host.admin,
        "POST",
        "/v1/workflows/pair/runs",
        &[("authorization", &auth)],
        r#"{"inputs": {"word": "hi"}}"#,
    );
    assert_eq!(status, 201, "{started}");

    let python = crate::plugin_python::python();
    let schemathesis = python.with_file_name("schemathesis");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis");
    let out = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://{}/v1/openapi.json", host.admin))
        .args(["--header", &format!("Authorization: {auth}")])
        // Every check but one: a request can fit the schema and still be refused with 400
        // for what no JSON Schema says (a link to a contract its provider does not serve,
        // an input the workflow does not have, a spec whose steps depend in a cycle).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // The event streams do not end, by design; they have their own test below.
        .args(["--exclude-path-regex", "events$"])
        // DELETE /v1/runs/{id} cancels and keeps the run; POST .../cancel is documented.
        .arg("--exclude-deprecated")
        .args(["--max-examples", "40", "--workers", "1", "--seed", "7"])
        .args(["--request-timeout", "10"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the API differs from its document:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host is still well after it all.
    assert_eq!(http_request(host.admin, "GET", "/healthz", &[], "").0, 200);
}

#[test]
fn changes_need_the_token_and_are_streamed_as_events() {
    let host = start_admin_host();
    let admin = host.admin;
    let auth = bearer();
    let headers = [("authorization", auth.as_str())];

    // Reads are open; changes need the token, and a wrong one is as good as none.
    assert_eq!(http_request(admin, "GET", "/v1/actors", &[], "").0, 200);
    for (method, path, body) in [
        ("POST", "/v1/workflows/pair/runs", "{}"),
        ("POST", "/v1/runs", "{}"),
        ("DELETE", "/v1/runs/x", ""),
        ("POST", "/v1/runs/x/cancel", ""),
        ("POST", "/v1/actors/probe/scale", r#"{"max_concurrent": 2}"#),
        ("DELETE", "/v1/actors/probe", ""),
        ("PUT", "/v1/links", "{}"),
    ] {
        let (status, said) = http_request(admin, method, path, &[], body);
        assert_eq!(status, 401, "{method} {path}: {said}");
        let wrong = [("authorization", "Bearer nope")];
        assert_eq!(http_request(admin, method, path, &wrong, body).0, 401);
    }

    // The actor with its verified claims.
    let (_, actors) = http_request(admin, "GET", "/v1/actors", &[], "");
    let actors: Value = serde_json::from_str(&actors).unwrap();
    let probe = &actors[0];
    assert_eq!(probe["name"], "probe");
    assert!(probe["issuer"].as_str().unwrap().starts_with('A'));
    assert_eq!(probe["kind"], "actor");
    assert!(probe["module"].as_str().unwrap().ends_with("probe.wasm"));
    let (_, hosts) = http_request(admin, "GET", "/v1/hosts", &[], "");
    let hosts: Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts[0]["name"], "api-host");
    assert_eq!(hosts[0]["labels"]["zone"], "a");

    // The global stream sees a change made here, then the steps of a run.
    // (The run's steps may finish before the endpoint says it started it: read both.)
    let events = std::thread::spawn(move || {
        let (mut ended, mut started) = (false, false);
        read_events(admin, "/v1/events", move |event, data| {
            ended |= event == "step" && data["run_status"] == "succeeded";
            started |= event == "run";
            ended && started
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, scaled) = http_request(
        admin,
        "POST",
        "/v1/actors/probe/scale",
        &headers,
        r#"{"max_concurrent": 3}"#,
    );
    assert_eq!(status, 200, "{scaled}");
    let scaled: Value = serde_json::from_str(&scaled).unwrap();
    assert_eq!(scaled["max_concurrent"], 3);
    let (status, started) = http_request(
        admin,
        "POST",
        "/v1/workflows/pair/runs",
        &headers,
        r#"{"inputs": {"word": "hello"}}"#,
    );
    assert_eq!(status, 201, "{started}");
    let run = serde_json::from_str::<Value>(&started).unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = events.join().unwrap();
    let kinds: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert!(
        seen.iter()
            .any(|(e, d)| e == "host" && d["kind"] == "actor_scaled"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(e, d)| e == "run" && d["run"] == run),
        "{kinds:?}"
    );
    let steps: Vec<&Value> = seen
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(steps.len(), 2, "{seen:?}");
    assert_eq!(steps[0]["step"], "first");
    assert_eq!(steps[1]["step"], "second");

    // A run's own stream gives its whole state, then `end`.
    let states = read_events(admin, &format!("/v1/runs/{run}/events"), |event, _| {
        event == "end"
    });
    let (last, state) = states.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["outputs"], json!({ "said": "hello" }));

    // The graph, and a step with its input.
    let (_, graph) = http_request(admin, "GET", &format!("/v1/runs/{run}/graph"), &[], "");
    let graph: Value = serde_json::from_str(&graph).unwrap();
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(
        graph["edges"][0],
        json!({ "from": "first", "to": "second" })
    );
    let (_, step) = http_request(
        admin,
        "GET",
        &format!("/v1/runs/{run}/steps/second"),
        &[],
        "",
    );
    let step: Value = serde_json::from_str(&step).unwrap();
    assert_eq!(step["input"], json!({ "said": "hello" }));
    assert_eq!(step["state"]["attempts"], 1);

    // Paging and filters; the total is in a header the list does not hide.
    let (status, list) = http_request(admin, "GET", "/v1/runs?status=succeeded&limit=1", &[], "");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], run);
    let (status, why) = http_request(admin, "GET", "/v1/runs?limit=0", &[], "");
    assert_eq!(status, 400);
    assert!(why.contains("limit = 0 is out of range"), "{why}");
    let (status, why) = http_request(admin, "GET", "/v1/runs?status=sleeping", &[], "");
    assert_eq!(status, 400);
    assert!(why.contains("filter with status"), "{why}");

    // A workflow that is not offered, with those that are.
    let (status, why) = http_request(admin, "POST", "/v1/workflows/none/runs", &headers, "{}");
    assert_eq!(status, 404);
    assert!(why.contains("offered: pair"), "{why}");
    // An unknown field is refused, naming it.
    let (status, why) = http_request(
        admin,
        "POST",
        "/v1/workflows/pair/runs",
        &headers,
        r#"{"input": {}}"#,
    );
    assert_eq!(status, 400);
    assert!(why.contains("unknown field `input`"), "{why}");

    // Stopping the actor: gone from the inventory.
    assert_eq!(
        http_request(admin, "DELETE", "/v1/actors/probe", &headers, "").0,
        200
    );
    let (_, actors) = http_request(admin, "GET", "/v1/actors", &[], "");
    assert_eq!(actors.trim(), "[]");
    assert_eq!(
        http_request(admin, "DELETE", "/v1/actors/probe", &headers, "").0,
        404
    );
}

#[test]
fn on_a_lattice_the_admin_api_shows_every_host_and_their_events() {
    use sigil_claims::{KeyKind, keys};

    let dir = tempfile::tempdir().unwrap();
    let lattice = crate::providers::unique("dash");
    let cluster = keys::generate(KeyKind::Cluster);
    std::fs::write(dir.path().join("cluster.nk"), cluster.seed().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("probe-a.wasm"),
        crate::actor_calls::probe("probe-a", None).0,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("probe-b.wasm"),
        crate::actor_calls::probe("probe-b", None).0,
    )
    .unwrap();
    let admin = spare_port();
    let config = |name: &str, admin: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "[host]\nname = \"{name}\"\nadmin_address = \"{admin}\"\nadmin_token = \"{TOKEN}\"\n\
                 labels = {{ role = \"{name}\" }}\n\n[lattice]\nnats = \"{}\"\nname = \"{lattice}\"\n\
                 cluster_seed_file = \"cluster.nk\"\nheartbeat = \"1s\"\n\n[[actors]]\npath = \"probe-{}.wasm\"\n",
                crate::plugin::NATS,
                &name[name.len() - 1..],
            ),
        )
        .unwrap();
        crate::workflow_http::sigil_up(dir.path(), &file)
    };
    let _b = config("host-b", "off");
    let _a = config("host-a", &format!("127.0.0.1:{admin}"));
    wait_for_port(admin);
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();

    // Both hosts, this one first, with the other's actor and its claims.
    let began = Instant::now();
    let hosts = loop {
        let (_, hosts) = http_request(admin, "GET", "/v1/hosts", &[], "");
        let hosts: Value = serde_json::from_str(&hosts).unwrap();
        if hosts.as_array().is_some_and(|h| h.len() == 2)
            || began.elapsed() > Duration::from_secs(15)
        {
            break hosts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{hosts:#}");
    assert_eq!(hosts[0]["name"], "host-a");
    assert!(hosts[0]["id"].as_str().unwrap().starts_with('N'));
    let b = &hosts[1];
    assert_eq!(b["name"], "host-b");
    assert_eq!(b["labels"]["role"], "host-b");
    assert_eq!(b["actors"][0]["name"], "probe-b");
    assert!(b["actors"][0]["issuer"].as_str().unwrap().starts_with('A'));
    assert!(!b["actors"][0]["caps"].as_array().unwrap().is_empty());

    // The other host's heartbeats arrive on this host's event stream.
    let seen = read_events(admin, "/v1/events", |event, data| {
        event == "lattice" && data["host_name"] == "host-b" && data["kind"] == "heartbeat"
    });
    assert!(
        seen.iter()
            .any(|(e, d)| e == "lattice" && d["host_name"] == "host-b"),
        "{seen:?}"
    );
}
