//! Runs started over HTTP: the admin API's `/v1/runs`, and the Argo executor plugin
//! endpoint answering requests shaped like Argo's.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::guests::guest;
use crate::providers::{Server, http_request, spare_port, wait_for_port};

pub(crate) const TOKEN: &str = "argo-test-token";

struct Host {
    _server: Server,
    admin: SocketAddr,
    argo: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start() -> Host {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("probe.wasm"),
        sign(&probe(), "probe", &[]).bytes,
    )
    .unwrap();
    let (admin, argo) = (spare_port(), spare_port());
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
name = "plugin-host"
admin_address = "127.0.0.1:{admin}"
admin_token = "admin-secret"

[limits]
deadline = "7s"

[argo]
address = "127.0.0.1:{argo}"
token = "{TOKEN}"

[[actors]]
path = "probe.wasm"
"#
        ),
    )
    .unwrap();
    let server = sigil_up(dir.path(), &config);
    wait_for_port(admin);
    wait_for_port(argo);
    Host {
        _server: server,
        admin: ([127, 0, 0, 1], admin).into(),
        argo: ([127, 0, 0, 1], argo).into(),
        _dir: dir,
    }
}

/// `sigil up` on `config`, with its module cache in `dir`.
pub(crate) fn sigil_up(dir: &std::path::Path, config: &std::path::Path) -> Server {
    sigil_up_with(dir, config, &[])
}

/// [`sigil_up`] with more environment variables (trace export is never turned on by the
/// environment the tests run in).
pub(crate) fn sigil_up_with(
    dir: &std::path::Path,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["up", "--config"])
            .arg(config)
            .env("SIGIL_CACHE_DIR", dir.join("cache"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// An executor plugin request as Argo sends it.
pub(crate) fn argo_request(uid: &str, template: Value) -> String {
    json!({
        "workflow": { "metadata": { "name": "hello-abc12", "namespace": "argo", "uid": uid } },
        "template": template,
    })
    .to_string()
}

fn execute(host: &Host, token: Option<&str>, body: &str) -> (u16, Value) {
    execute_on(host.argo, token, body)
}

pub(crate) fn execute_on(argo: SocketAddr, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let (status, text) = http_request(argo, "POST", "/api/v1/template.execute", &headers, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn the_argo_plugin_runs_sigil_templates_idempotently_and_requires_the_token() {
    let host = start();
    let echo = json!({
        "name": "say",
        "inputs": { "parameters": [ { "name": "message", "value": "hi from argo" } ] },
        "plugin": { "sigil": { "actor": "probe", "operation": "echo",
                               "input": { "said": "${{ inputs.message }}" } } }
    });
    let body = argo_request("uid-1", echo.clone());

    // Without the token, or with a wrong one: refused.
    assert_eq!(execute(&host, None, &body).0, 403);
    assert_eq!(execute(&host, Some("wrong"), &body).0, 403);

    // Not a Sigil template: an empty answer.
    let other = argo_request(
        "uid-1",
        json!({ "name": "other", "plugin": { "slack": {} } }),
    );
    assert_eq!(execute(&host, Some(TOKEN), &other), (200, json!({})));

    // A one-step template: its outputs come back as parameters.
    let (status, first) = execute(&host, Some(TOKEN), &body);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["node"]["phase"], "Succeeded", "{first}");
    assert_eq!(
        first["node"]["outputs"]["parameters"],
        json!([{ "name": "said", "value": "hi from argo" }])
    );
    // Argo retries: the same node finds the same run, which ran once.
    let (_, again) = execute(&host, Some(TOKEN), &body);
    assert_eq!(again["node"]["message"], first["node"]["message"]);
    let (_, runs) = http_request(host.admin, "GET", "/v1/runs", &[], "");
    let runs: Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");

    // A whole workflow, inline.
    let flow = json!({
        "name": "pipeline",
        "inputs": { "parameters": [ { "name": "word", "value": "x" } ] },
        "plugin": { "sigil": { "workflow": "version: 1\nname: inline\ninputs: { word: {} }\nsteps:\n  - { name: a, actor: probe, operation: echo, input: \"${{ inputs.word }}${{ inputs.word }}\" }\n  - { name: b, actor: probe, operation: echo, depends: [a], input: { doubled: \"${{ steps.a.output }}\" } }\noutputs: \"${{ steps.b.output }}\"\n" } }
    });
    let (_, answer) = execute(&host, Some(TOKEN), &argo_request("uid-2", flow));
    assert_eq!(answer["node"]["phase"], "Succeeded", "{answer}");
    assert_eq!(
        answer["node"]["outputs"]["parameters"],
        json!([{ "name": "doubled", "value": "xx" }])
    );

    // A long step: answered as Running with a requeue, well within Argo's timeout, then
    // as Failed with the step's error once its deadline passes.
    let slow = json!({
        "name": "spin-forever",
        "plugin": { "sigil": { "actor": "probe", "operation": "loop" } }
    });
    let body = argo_request("uid-3", slow);
    let asked = Instant::now();
    let (_, running) = execute(&host, Some(TOKEN), &body);
    assert!(asked.elapsed() < Duration::from_secs(20));
    assert_eq!(running["node"]["phase"], "Running", "{running}");
    assert_eq!(running["requeue"], "2s");
    let ended = loop {
        std::thread::sleep(Duration::from_millis(500));
        let (_, n) = execute(&host, Some(TOKEN), &body);
        if n["node"]["phase"] != "Running" {
            break n;
        }
        assert!(asked.elapsed() < Duration::from_secs(60), "{n}");
    };
    assert_eq!(ended["node"]["phase"], "Failed");
    assert!(
        ended["node"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{ended}"
    );

    // A template whose plugin section names a file is refused: Argo may not make the host
    // read files.
    let file = json!({
        "name": "sneaky",
        "plugin": { "sigil": { "actor": "/etc/passwd.wasm", "operation": "x" } }
    });
    let (_, refused) = execute(&host, Some(TOKEN), &argo_request("uid-4", file));
    assert_eq!(refused["node"]["phase"], "Failed");
    assert!(
        refused["node"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot refer to files")
    );
}

#[test]
fn the_admin_api_starts_follows_and_cancels_runs() {
    let host = start();
    let auth = [("authorization", "Bearer admin-secret")];
    let spec = "version: 1\nname: api\ninputs: { n: {} }\nsteps:\n  - { name: a, actor: probe, operation: echo, input: { n: \"${{ inputs.n }}\" } }\noutputs: \"${{ steps.a.output.n }}\"\n";
    let body = json!({ "workflow": spec, "inputs": { "n": 7 } }).to_string();
    assert_eq!(
        http_request(host.admin, "POST", "/v1/runs", &[], &body).0,
        401
    );
    let (status, created) = http_request(host.admin, "POST", "/v1/runs", &auth, &body);
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<Value>(&created).unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let state = loop {
        let (_, s) = http_request(host.admin, "GET", &format!("/v1/runs/{id}"), &[], "");
        let s: Value = serde_json::from_str(&s).unwrap();
        if s["status"] != "running" {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["outputs"], 7);

    // A long run, cancelled.
    let body = json!({ "workflow": { "version": 1, "name": "long", "steps": [
        { "name": "spin", "actor": "probe", "operation": "loop" },
        { "name": "after", "actor": "probe", "operation": "echo", "depends": ["spin"] } ] } })
    .to_string();
    let (_, created) = http_request(host.admin, "POST", "/v1/runs", &auth, &body);
    let id = serde_json::from_str::<Value>(&created).unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, cancelled) =
        http_request(host.admin, "DELETE", &format!("/v1/runs/{id}"), &auth, "");
    assert_eq!(status, 200);
    let cancelled: Value = serde_json::from_str(&cancelled).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["steps"]["after"]["status"], "cancelled");

    // Bad specs are refused with the reason.
    let bad = json!({ "workflow": "version: 1\nname: bad\nsteps: []\n" }).to_string();
    let (status, why) = http_request(host.admin, "POST", "/v1/runs", &auth, &bad);
    assert_eq!(status, 400);
    assert!(why.contains("at least one step"), "{why}");
    assert_eq!(
        http_request(host.admin, "GET", "/v1/runs/nope", &[], "").0,
        404
    );
}

/// The staging area of `bucket` on the test S3 server, as the host opens it.
pub(crate) fn s3_store(endpoint: &str, bucket: &str) -> sigil_providers::blobstore::StagingArea {
    let config = sigil_providers::LinkConfig::new()
        .with("endpoint", endpoint)
        .with("bucket", bucket)
        .with("access_key_id", "test")
        .with("secret_access_key", "test");
    sigil_providers::blobstore::StagingArea::open("s3", &config).unwrap()
}

/// The shared S3 test server (moto on 127.0.0.1:9000, started with `.ci/start-s3` when
/// nothing answers there), with a new bucket: its endpoint and the bucket.
pub(crate) fn s3_bucket(tag: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr: SocketAddr = ([127, 0, 0, 1], 9000).into();
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/start-s3");
        let status = Command::new("bash").arg(script).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot start the S3 server"
        );
    }
    let bucket = format!("sigil-{tag}-{}", uuid::Uuid::new_v4().simple());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nhost: 127.0.0.1:9000\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    ("http://127.0.0.1:9000".into(), bucket)
}

#[test]
fn argo_artifacts_move_through_the_blob_store() {
    let (endpoint, bucket) = s3_bucket("argo");
    let s3 = format!(
        r#"endpoint = "{endpoint}", bucket = "{bucket}", access_key_id = "test", secret_access_key = "test""#
    );
    let store = s3_store(&endpoint, &bucket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // What an earlier Argo step left in the artifact repository.
    rt.block_on(store.write("wf-1/producer/doc.txt", b"hello artifact".to_vec()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blobstep.wasm"), guest("blobstep")).unwrap();
    let argo = spare_port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
admin_address = "off"

[argo]
address = "127.0.0.1:{argo}"
token = "{TOKEN}"
artifacts = {{ kind = "s3", link_root = "argo-staging", {s3} }}

[[actors]]
path = "blobstep.wasm"

[[providers]]
name = "s3"
kind = "blobstore-s3"
config = {{ {s3} }}

[[links]]
actor = "blobstep"
contract = "blobstore"
provider = "s3"
config = {{ root = "argo-staging" }}
"#
        ),
    )
    .unwrap();
    let _server = sigil_up(dir.path(), &config);
    wait_for_port(argo);
    let argo: SocketAddr = ([127, 0, 0, 1], argo).into();

    // Read the input artifact, write the output artifact: both through the actor's own
    // blob-store link; the plugin copies them in and out of the staging container.
    let spec = "version: 1\nname: copy\ninputs: { doc: {}, report: {} }\nsteps:\n  \
        - { name: read, actor: blobstep, operation: fetch, input: \"${{ inputs.doc }}\" }\n  \
        - { name: write, actor: blobstep, operation: store, depends: [read], input: { container: \"${{ inputs.report.container }}\", object: \"${{ inputs.report.object }}\", body: \"seen: ${{ steps.read.output.body }}\" } }\n\
        outputs: { size: \"${{ steps.write.output.size }}\" }\n";
    let template = |outputs: Value, spec: &str| {
        json!({
            "name": "copy",
            "inputs": { "artifacts": [ { "name": "doc", "path": "/tmp/doc",
                                         "s3": { "key": "wf-1/producer/doc.txt" } } ] },
            "outputs": { "artifacts": outputs },
            "plugin": { "sigil": { "workflow": spec } }
        })
    };
    let body = argo_request(
        "uid-art-1",
        template(
            json!([{ "name": "report", "path": "/tmp/report", "s3": { "key": "wf-1/copy/report.txt" } }]),
            spec,
        ),
    );
    let (status, answer) = execute_on(argo, Some(TOKEN), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["node"]["phase"], "Succeeded", "{answer}");
    assert_eq!(
        answer["node"]["outputs"]["artifacts"],
        json!([{ "name": "report", "s3": { "key": "wf-1/copy/report.txt" }, "archive": { "none": {} } }])
    );
    assert_eq!(
        rt.block_on(store.read("wf-1/copy/report.txt")).unwrap(),
        b"seen: hello artifact"
    );
    // Asked again (Argo retries), the same answer: the copy is idempotent.
    let (_, again) = execute_on(argo, Some(TOKEN), &body);
    assert_eq!(again["node"]["outputs"], answer["node"]["outputs"]);

    // An output artifact the steps never wrote fails the node, saying where to write it.
    let lazy = "version: 1\nname: lazy\ninputs: { doc: {}, report: {} }\nsteps:\n  \
        - { name: read, actor: blobstep, operation: fetch, input: \"${{ inputs.doc }}\" }\n";
    let (_, missing) = execute_on(
        argo,
        Some(TOKEN),
        &argo_request(
            "uid-art-2",
            template(
                json!([{ "name": "report", "s3": { "key": "x/report.txt" } }]),
                lazy,
            ),
        ),
    );
    assert_eq!(missing["node"]["phase"], "Failed", "{missing}");
    let message = missing["node"]["message"].as_str().unwrap();
    assert!(
        message.contains("output artifact `report`") && message.contains("PutObject"),
        "{message}"
    );

    // An input artifact that is not there fails before anything runs.
    let gone = json!({
        "name": "gone",
        "inputs": { "artifacts": [ { "name": "doc", "s3": { "key": "wf-1/nothing.txt" } } ] },
        "plugin": { "sigil": { "actor": "blobstep", "operation": "fetch", "input": "${{ inputs.doc }}" } }
    });
    let (_, gone) = execute_on(argo, Some(TOKEN), &argo_request("uid-art-3", gone));
    assert_eq!(gone["node"]["phase"], "Failed", "{gone}");
    let message = gone["node"]["message"].as_str().unwrap();
    assert!(
        message.contains("wf-1/nothing.txt") && message.contains("does not exist"),
        "{message}"
    );

    // An artifact in another bucket is refused: the plugin moves bytes only within its own
    // store.
    let foreign = json!({
        "name": "foreign",
        "inputs": { "artifacts": [ { "name": "doc", "s3": { "bucket": "elsewhere", "key": "k" } } ] },
        "plugin": { "sigil": { "actor": "blobstep", "operation": "fetch", "input": "${{ inputs.doc }}" } }
    });
    let (_, foreign) = execute_on(argo, Some(TOKEN), &argo_request("uid-art-4", foreign));
    assert!(
        foreign["node"]["message"]
            .as_str()
            .unwrap()
            .contains("bucket `elsewhere`"),
        "{foreign}"
    );
}

#[test]
fn a_run_naming_an_actor_no_host_runs_is_refused_at_submit() {
    // The embedded host knows its own actors: a step naming another is refused before
    // anything is stored, naming the step and the actor, instead of waiting forever.
    let host = start();
    let auth = [("authorization", "Bearer admin-secret")];
    let body = json!({ "workflow": { "version": 1, "name": "orphan", "steps": [
        { "name": "first", "actor": "probe", "operation": "echo" },
        { "name": "second", "actor": "nobody", "operation": "echo", "depends": ["first"] } ] } })
    .to_string();
    let (status, why) = http_request(host.admin, "POST", "/v1/runs", &auth, &body);
    assert_eq!(status, 409, "{why}");
    assert_eq!(
        why.trim(),
        "step \"second\": no host runs actor nobody; start a host that loads it (or fix the \
         step's actor), then submit the run again"
    );
    // By public key too.
    let key = sign(&probe(), "elsewhere", &[]).subject;
    let body = json!({ "workflow": { "version": 1, "name": "orphan", "steps": [
        { "name": "only", "actor": key, "operation": "echo" } ] } })
    .to_string();
    let (status, why) = http_request(host.admin, "POST", "/v1/runs", &auth, &body);
    assert_eq!(status, 409, "{why}");
    assert!(
        why.contains(&format!("step \"only\": no host runs actor {key};")),
        "{why}"
    );
    // Nothing was stored.
    let (status, runs) = http_request(host.admin, "GET", "/v1/runs", &[], "");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&runs).unwrap(), json!([]));
}
