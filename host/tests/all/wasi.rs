//! WASI step modules: the Argo Wasm plugin's file contract, the sandbox, and every way a
//! step can end, with a module built from Rust source for wasm32-wasip1.

use serde_json::{Value, json};
use sigil_host::{Host, InvocationError};

use crate::common::{host_with, test_limits};
use crate::guests::guest;

fn step_host() -> Host {
    host_with(test_limits())
}

fn run(host: &Host, input: Value) -> Result<Value, InvocationError> {
    let actor = host.load_actor(guest("wasi-step")).unwrap();
    assert!(actor.is_wasi());
    let payload = rmp_serde::to_vec_named(&input).unwrap();
    host.invoke(&actor, "greet-flow", &payload)
        .map(|out| rmp_serde::from_slice(&out).unwrap())
}

#[test]
fn a_wasi_step_reads_its_parameters_and_answers_its_outputs() {
    let host = step_host();
    let out = run(&host, json!({"name": "Sigil"})).unwrap();
    assert_eq!(
        out,
        json!({"greeting": "Hello, Sigil!", "workflow": "greet-flow"})
    );
    // A fresh instance and a fresh /work each time.
    let out = run(&host, json!({"name": "again"})).unwrap();
    assert_eq!(out["greeting"], "Hello, again!");
}

#[test]
fn the_plugin_documents_pass_through_unchanged_under_the_plugin_operation() {
    let host = step_host();
    let actor = host.load_actor(guest("wasi-step")).unwrap();
    let invocation = json!({
        "workflow_name": "hello-n7nbj",
        "plugin_options": [{"name": "colour", "value": "blue"}],
        "parameters": [{"name": "name", "value": "Argo"}],
        "artifacts": [],
    });
    let out = host
        .invoke(
            &actor,
            sigil_host::wasi::PLUGIN_OPERATION,
            &rmp_serde::to_vec_named(&invocation).unwrap(),
        )
        .unwrap();
    let result: Value = rmp_serde::from_slice(&out).unwrap();
    assert_eq!(result["phase"], "Succeeded");
    assert_eq!(result["message"], "greeted Argo (1 options)");
    assert_eq!(
        result["outputs"]["parameters"],
        json!([{"name": "greeting", "value": "Hello, Argo!"},
               {"name": "workflow", "value": "hello-n7nbj"}])
    );
}

#[test]
fn every_way_a_step_ends_is_reported() {
    let host = step_host();
    let err = |mode: &str| run(&host, json!({"mode": mode})).unwrap_err().to_string();

    assert_eq!(
        err("fail"),
        "actor returned an error: the step failed on purpose"
    );
    assert_eq!(
        err("exit"),
        "the module exited with code 3; its stderr ends: something went wrong"
    );
    let trap = err("trap");
    assert!(trap.starts_with("actor trapped"), "{trap}");
    assert_eq!(
        err("loop"),
        "deadline exceeded: the actor ran longer than its 500ms limit"
    );
    // A short sleep is a sleep; a long one is a wait the deadline interrupts.
    let started = std::time::Instant::now();
    assert_eq!(
        run(&host, json!({"sleep_ms": 200, "name": "late"})).unwrap()["greeting"],
        "Hello, late!"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(
        run(&host, json!({"sleep_ms": 60_000}))
            .unwrap_err()
            .to_string(),
        "deadline exceeded: the actor ran longer than its 500ms limit"
    );
    let bomb = err("bomb");
    assert!(
        bomb.contains("memory") && bomb.contains("8388608"),
        "{bomb}"
    );
    assert_eq!(
        err("silent"),
        "the step's result is unusable: the module exited with code 0 without writing \
         /work/result.json"
    );
    // Output past the cap is dropped, not fatal.
    assert_eq!(run(&host, json!({"mode": "chatty"})).unwrap(), json!({}));
}

#[test]
fn a_step_reaches_only_its_own_work_directory() {
    let host = step_host();
    let seen = |mode: &str| {
        run(&host, json!({"mode": mode})).unwrap()["seen"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let escape = seen("escape");
    assert!(
        !escape.contains("read"),
        "a file outside /work was readable: {escape}"
    );
    assert!(escape.starts_with("outside: "), "{escape}");
    assert_eq!(seen("env"), "vars: 0; args: [\"wasi-step\"]");
    let socket = seen("socket");
    assert!(!socket.contains("connected"), "{socket}");
}

#[test]
fn an_unsigned_or_foreign_import_wasi_module_is_refused() {
    let host = step_host();
    let unsigned = sigil_claims::strip_jwt_sections(&guest("wasi-step")).unwrap();
    let e = host.load_actor(unsigned).unwrap_err().to_string();
    assert!(e.contains("not signed"), "{e}");

    // A command module importing something beyond WASI preview 1.
    let wasm = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
             (import "env" "launch" (func))
             (memory (export "memory") 1)
             (func (export "_start")))"#,
    )
    .unwrap();
    let signed = crate::common::sign(&wasm, "odd", &[]);
    let e = host.load_actor(signed.bytes).unwrap_err().to_string();
    assert_eq!(
        e,
        "module imports `env.launch`, which Sigil does not provide to WASI modules: a WASI \
         step may import only `wasi_snapshot_preview1` and `wasi_experimental_http` functions \
         (build for wasm32-wasip1)"
    );

    // One that asks for more memory up front than the limit (a 16 MiB stack, say).
    let wasm = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
             (memory (export "memory") 258)
             (func (export "_start")))"#,
    )
    .unwrap();
    let e = host
        .load_actor(crate::common::sign(&wasm, "big", &[]).bytes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("16908288") && e.contains("raise limits.max_memory"),
        "{e}"
    );
}

#[test]
fn an_unchanged_plugin_wasm_template_runs_a_module_from_a_registry() {
    use crate::providers::{spare_port, wait_for_port};
    use crate::registry::RegistryServer;
    use crate::workflow_http::{TOKEN, argo_request, execute_on, sigil_up};

    let registry = RegistryServer::plain();
    let dir = tempfile::tempdir().unwrap();
    let reference = push_wasi_step(&registry, dir.path());

    let argo = spare_port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nadmin_address = \"off\"\n\n[argo]\naddress = \"127.0.0.1:{argo}\"\n\
             token = \"{TOKEN}\"\nhttp_provider = \"web\"\nhttp_allow = [\"127.0.0.1\"]\n\n\
             [[providers]]\nname = \"web\"\nkind = \"httpclient\"\n\n\
             [[registries]]\nhost = \"{}\"\ninsecure = true\n",
            registry.host
        ),
    )
    .unwrap();
    let _host = sigil_up(dir.path(), &config);
    wait_for_port(argo);
    let at = ([127, 0, 0, 1], argo).into();

    // The template exactly as the Argo Wasm plugin's users write it.
    let template = |name: &str, oci: &str| {
        json!({
            "name": "greet",
            "inputs": { "parameters": [
                { "name": "name", "value": name },
                { "name": "mode", "value": if name == "fail" { "fail" } else { "greet" } },
            ] },
            "outputs": {},
            "metadata": {},
            "plugin": { "wasm": {
                "module": { "oci": oci },
                "permissions": { "http": { "allowed_hosts": ["https://example.com"] } },
                "colour": "blue",
            } },
        })
    };
    let (status, answer) = execute_on(
        at,
        Some(TOKEN),
        &argo_request("uid-wasm-1", template("Argo", &reference)),
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "node": {
            "phase": "Succeeded",
            "message": "greeted Argo (1 options)",
            "outputs": {
                "parameters": [
                    { "name": "greeting", "value": "Hello, Argo!" },
                    { "name": "workflow", "value": "hello-abc12" },
                ],
                "artifacts": [],
            },
        } })
    );
    // The module's own Failed phase is the node's.
    let (_, answer) = execute_on(
        at,
        Some(TOKEN),
        &argo_request("uid-wasm-2", template("fail", &reference)),
    );
    assert_eq!(
        answer,
        json!({ "node": { "phase": "Failed", "message": "the step failed on purpose" } })
    );
    // HTTP through wasi_experimental_http: to a host both the template and the
    // operator's http_allow list, and to no other.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in upstream.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\
                  connection: close\r\n\r\nhello",
            );
        }
    });
    let fetch = |uid: &str, allowed: &[&str]| {
        let mut t = template("x", &reference);
        t["inputs"]["parameters"] = json!([
            { "name": "mode", "value": "http" },
            { "name": "url", "value": format!("http://{up}/") },
        ]);
        t["plugin"]["wasm"]["permissions"]["http"]["allowed_hosts"] = json!(allowed);
        execute_on(at, Some(TOKEN), &argo_request(uid, t)).1["node"]["outputs"]["parameters"]
            .clone()
    };
    let got = fetch("uid-wasm-http-1", &["http://127.0.0.1"]);
    assert_eq!(got[0], json!({"name": "status", "value": 200}), "{got}");
    assert_eq!(got[1], json!({"name": "body", "value": "hello"}));
    assert_eq!(
        fetch("uid-wasm-http-2", &["https://example.com"]),
        json!([{"name": "error", "value": 7}])
    );

    // A registry the host does not list is refused.
    let (_, answer) = execute_on(
        at,
        Some(TOKEN),
        &argo_request("uid-wasm-3", template("x", "registry.invalid:5000/x:1")),
    );
    assert_eq!(answer["node"]["phase"], "Failed");
    let message = answer["node"]["message"].as_str().unwrap();
    assert!(
        message.contains("registry registry.invalid:5000 is not one this host lists"),
        "{message}"
    );
}

/// Pushes the test WASI step to `registry` as `argo/greet:1`; answers its reference.
fn push_wasi_step(registry: &crate::registry::RegistryServer, dir: &std::path::Path) -> String {
    let module = dir.join("greet.wasm");
    std::fs::write(&module, guest("wasi-step")).unwrap();
    let reference = format!("{}/argo/greet:1", registry.host);
    let pushed = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["push"])
        .arg(&module)
        .args([
            &format!("oci://{reference}"),
            "--insecure-registry",
            &registry.host,
        ])
        .env_remove("SIGIL_REGISTRY_INSECURE")
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{pushed:?}");
    reference
}

#[test]
fn a_plugin_wasm_templates_artifacts_move_through_s3() {
    use crate::providers::{spare_port, wait_for_port};
    use crate::registry::RegistryServer;
    use crate::workflow_http::{TOKEN, argo_request, execute_on, s3_bucket, s3_store, sigil_up};

    let registry = RegistryServer::plain();
    let dir = tempfile::tempdir().unwrap();
    let reference = push_wasi_step(&registry, dir.path());
    let (endpoint, bucket) = s3_bucket("wasi");
    let store = s3_store(&endpoint, &bucket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // What an earlier Argo step left in the artifact repository: a document, and a
    // 3 MiB one that crosses the upload's part size.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    rt.block_on(store.write("wf-1/producer/doc.txt", b"hello artifact".to_vec()))
        .unwrap();
    rt.block_on(store.write("wf-1/producer/big.bin", big.clone()))
        .unwrap();

    let argo = spare_port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nadmin_address = \"off\"\n\n[argo]\naddress = \"127.0.0.1:{argo}\"\n\
             token = \"{TOKEN}\"\nartifacts = {{ kind = \"s3\", endpoint = \"{endpoint}\", \
             bucket = \"{bucket}\", access_key_id = \"test\", secret_access_key = \"test\" }}\n\n\
             [[registries]]\nhost = \"{}\"\ninsecure = true\n",
            registry.host
        ),
    )
    .unwrap();
    let _host = sigil_up(dir.path(), &config);
    wait_for_port(argo);
    let at = ([127, 0, 0, 1], argo).into();

    // As Argo sends a template with input artifacts: the module copies each from
    // /work/artifacts-in/<path> to /work/artifacts-out/<path> and lists it as an output.
    let template = |artifacts: Value| {
        json!({
            "name": "copy",
            "inputs": {
                "parameters": [{ "name": "name", "value": "files" }],
                "artifacts": artifacts,
            },
            "outputs": {},
            "metadata": {},
            "plugin": { "wasm": { "module": { "oci": reference } } },
        })
    };
    let (status, answer) = execute_on(
        at,
        Some(TOKEN),
        &argo_request(
            "uid-art-1",
            template(json!([
                { "name": "doc", "path": "/docs/doc.txt", "s3": { "key": "wf-1/producer/doc.txt" } },
                { "name": "big", "path": "big.bin", "s3": { "key": "wf-1/producer/big.bin" } },
            ])),
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["node"]["phase"], "Succeeded", "{answer}");
    let outputs = answer["node"]["outputs"]["artifacts"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "{answer}");
    let mut read = Vec::new();
    for (output, name) in outputs.iter().zip(["doc", "big"]) {
        assert_eq!(output["name"], name);
        let key = output["s3"]["key"].as_str().unwrap();
        assert!(key.starts_with("hello-abc12/argo-"), "{key}");
        assert!(key.ends_with(&format!("/{name}")), "{key}");
        read.push(rt.block_on(store.read(key)).unwrap());
    }
    assert_eq!(read[0], b"hello artifact");
    assert!(read[1] == big, "the 3 MiB artifact came back changed");

    // Refusals, each naming the artifact: a missing object, an artifact of another
    // bucket, one without an S3 key, and a path out of the artifacts directory.
    let refused = |uid: &str, artifacts: Value| {
        let (_, answer) = execute_on(at, Some(TOKEN), &argo_request(uid, template(artifacts)));
        assert_eq!(answer["node"]["phase"], "Failed", "{answer}");
        answer["node"]["message"].as_str().unwrap().to_string()
    };
    let message = refused(
        "uid-art-2",
        json!([{ "name": "doc", "path": "d", "s3": { "key": "wf-1/none.txt" } }]),
    );
    assert!(
        message.contains("input artifact `doc`") && message.contains("does not exist"),
        "{message}"
    );
    let message = refused(
        "uid-art-3",
        json!([{ "name": "doc", "path": "d", "s3": { "bucket": "other", "key": "k" } }]),
    );
    assert!(message.contains("bucket `other`"), "{message}");
    let message = refused("uid-art-4", json!([{ "name": "doc", "path": "d" }]));
    assert!(message.contains("S3 artifacts"), "{message}");
    let message = refused(
        "uid-art-5",
        json!([{ "name": "doc", "path": "../../etc/x", "s3": { "key": "wf-1/producer/doc.txt" } }]),
    );
    assert!(
        message.contains("artifact `doc`") && message.contains("`..` segments"),
        "{message}"
    );
}

#[test]
fn a_sigil_workflow_feeds_a_wasi_steps_outputs_to_an_actor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greet.wasm"), guest("wasi-step")).unwrap();
    std::fs::write(dir.path().join("echo.wasm"), guest("echo")).unwrap();
    std::fs::write(
        dir.path().join("host.toml"),
        "[host]\nadmin_address = \"off\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flow.yaml"),
        r#"
version: 1
name: wasi-flow
inputs: { who: {} }
steps:
  - name: greet
    actor: greet.wasm
    operation: greet-flow
    input: { name: "${{ inputs.who }}" }
  - name: echo
    actor: echo.wasm
    operation: echo
    depends: [greet]
    input: "${{ steps.greet.output.greeting }}"
outputs:
  greeting: "${{ steps.echo.output }}"
  workflow: "${{ steps.greet.output.workflow }}"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(dir.path())
        .args(["workflow", "run", "flow.yaml", "--config", "host.toml"])
        .args(["--input", "who=Sigil", "--json"])
        .env("SIGIL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        state["outputs"],
        json!({"greeting": "Hello, Sigil!", "workflow": "greet-flow"}),
        "{state}"
    );
}

#[test]
fn a_c_step_built_with_zig_runs_under_the_same_contract() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("c-step.wasm");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/wasi/c-step.c");
    let built = std::process::Command::new(crate::plugin_python::python())
        .args(["-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-s"])
        // A 64 KiB stack, as for actors, instead of the toolchain's 16 MiB.
        .args(["-Wl,-z,stack-size=65536", "-o"])
        .arg(&wasm)
        .arg(&source)
        .output()
        .unwrap();
    assert!(built.status.success(), "zig cc: {built:?}");
    let signed = crate::common::sign(&std::fs::read(&wasm).unwrap(), "c-step", &[]);
    let host = step_host();
    let actor = host.load_actor(signed.bytes).unwrap();
    assert!(actor.is_wasi());
    let call = |input: Value| {
        host.invoke(&actor, "c-flow", &rmp_serde::to_vec_named(&input).unwrap())
            .map(|out| rmp_serde::from_slice::<Value>(&out).unwrap())
    };
    let out = call(json!({"who": "C"})).unwrap();
    assert!(out["input_bytes"].as_u64().unwrap() > 20, "{out}");
    assert_eq!(out["program"], "c-step");
    assert_eq!(out["home"], "unset");
    assert_eq!(out["outside"], "refused");
    assert_eq!(
        call(json!({"mode": "fail"})).unwrap_err().to_string(),
        "the module exited with code 2; its stderr ends: asked to fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_step_killed_with_its_host_is_completed_by_another() {
    use sigil_host::workflow::state::{RunStatus, StepStatus};

    use crate::plugin::NATS;
    use crate::workflow_hosts::{Names, client, start_host, wait_end};

    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wasi-step.wasm"), guest("wasi-step")).unwrap();
    let extra = format!(
        "[[actors]]\npath = \"wasi-step.wasm\"\n\n{}",
        names.section(NATS, "2s")
    );
    let mut hosts: std::collections::BTreeMap<String, crate::providers::Server> = ["w1", "w2"]
        .iter()
        .map(|n| (n.to_string(), start_host(dir.path(), n, &extra)))
        .collect();
    let scheduler = client(&names, NATS).await;
    let workflow = sigil_host::workflow::spec::Workflow::from_yaml(
        r#"
version: 1
name: slow-wasi
steps:
  - { name: slow, actor: wasi-step, operation: slow-flow, input: { name: survivor, sleep_ms: 5000 } }
outputs: "${{ steps.slow.output }}"
"#,
    )
    .unwrap();
    let id = scheduler
        .submit(
            &workflow,
            Default::default(),
            &sigil_host::workflow::routes::resolve_remote_routes(&workflow, None)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let victim = loop {
        let run = scheduler.status(&id).await.unwrap();
        if let Some(s) = run.steps.values().find(|s| s.status == StepStatus::Running)
            && let Some(h) = &s.host
        {
            break h.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no step started: {run:#?}\nw1: {}\nw2: {}",
            std::fs::read_to_string(dir.path().join("w1.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("w2.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    drop(hosts.remove(&victim)); // SIGKILL, mid-step
    let run = wait_end(&scheduler, &id, std::time::Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(
        run.outputs,
        Some(json!({"greeting": "Hello, survivor!", "workflow": "slow-flow"}))
    );
    let step = &run.steps["slow"];
    assert!(step.attempts >= 2, "{step:?}");
    assert_ne!(step.host.as_deref(), Some(victim.as_str()));
    drop(hosts);
    names.clean(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_steps_reach_over_http_only_what_the_link_and_the_template_allow() {
    use sigil_providers::LinkConfig;

    use crate::providers::{call, link, provider, runtime, spare_port};

    let allowed = crate::providers::upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\
          connection: close\r\n\r\nupstream",
    )
    .await;
    let rt = runtime();
    rt.load_actor(guest("wasi-step")).await.unwrap();
    provider(&rt, "web", "httpclient", LinkConfig::new()).await;
    link(
        &rt,
        "wasi-step",
        "httpclient",
        "web",
        LinkConfig::new().with("allow", allowed.to_string()),
    )
    .await;
    let url = format!("http://{allowed}/x");

    // A Sigil step: the link's allowlist decides.
    let ok = call(
        &rt,
        "wasi-step",
        "flow",
        json!({"mode": "http", "url": url}),
    )
    .await
    .unwrap();
    assert_eq!(
        ok,
        json!({"status": 200, "body": "upstream", "content_type": "text/plain"})
    );
    let other = format!("http://127.0.0.1:{}/x", spare_port());
    let refused = call(
        &rt,
        "wasi-step",
        "flow",
        json!({"mode": "http", "url": other}),
    )
    .await
    .unwrap();
    assert_eq!(refused, json!({"error": 7}), "destination_not_allowed");

    // A plugin template: its allowed_hosts too (none listed: no HTTP, as in the plugin).
    let plugin = |hosts: Option<Vec<&str>>| {
        let mut request = json!({
            "workflow_name": "w",
            "parameters": [{"name": "mode", "value": "http"}, {"name": "url", "value": url}],
        });
        if let Some(h) = hosts {
            request[sigil_host::wasi::ALLOWED_HOSTS_KEY] = json!(h);
        }
        let rt = rt.clone();
        async move {
            let out = rt
                .invoke(
                    "wasi-step",
                    sigil_host::wasi::PLUGIN_OPERATION,
                    rmp_serde::to_vec_named(&request).unwrap(),
                )
                .await
                .unwrap();
            rmp_serde::from_slice::<Value>(&out).unwrap()["outputs"]["parameters"].clone()
        }
    };
    let granted = plugin(Some(vec!["http://127.0.0.1"])).await;
    assert_eq!(granted[0], json!({"name": "status", "value": 200}));
    for hosts in [Some(vec!["https://example.com"]), Some(vec![]), None] {
        assert_eq!(plugin(hosts).await, json!([{"name": "error", "value": 7}]));
    }
    rt.shutdown(std::time::Duration::from_secs(5)).await;
}
