//! The control interface on the real NATS: inventory, actors started, scaled and stopped,
//! links added and removed, events, unsigned requests refused, and a live update under
//! load that loses no invocation and refuses a lower revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use sigil_claims::{ActorSpec, KeyKind, KeyPair, keys, sign_module};
use sigil_host::up::Runtime;
use sigil_host::up::control::{
    Command, ControlClient, ControlServer, host_subject, hosts_subject, link,
};
use sigil_providers::LinkConfig;
use sigil_providers::plugin::{Lattice, wire};

use crate::common::sign;
use crate::guests::guest;
use crate::plugin::{COMMON_CHANGES, Change, outcome, send, tamper};
use crate::providers::{PROBE_CAPS, call, provider, runtime, unique};

const NATS: &str = "nats://127.0.0.1:4222";
const WAIT: Duration = Duration::from_secs(5);

fn copy(k: &KeyPair) -> KeyPair {
    KeyPair::from_seed(&k.seed().unwrap()).unwrap()
}

/// A host on `lattice` serving the control interface.
async fn host(lattice: &str, cluster: &KeyPair, name: &str) -> (Arc<Runtime>, ControlServer) {
    let rt = runtime();
    provider(&rt, "kv", "keyvalue-memory", LinkConfig::new()).await;
    let l = Lattice::new(NATS, lattice, copy(cluster), sigil_claims::Policy::new());
    rt.join_lattice(l.clone(), &[]).await.unwrap();
    let labels = BTreeMap::from([("zone".to_string(), "test".to_string())]);
    let control =
        ControlServer::start(rt.clone(), l, &[], name, labels, Duration::from_millis(200))
            .await
            .unwrap();
    (rt, control)
}

async fn operator(lattice: &str, cluster: &KeyPair) -> ControlClient {
    let client = async_nats::connect(NATS).await.unwrap();
    ControlClient::new(client, lattice, copy(cluster), &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_hosts_and_starts_links_scales_and_stops_actors() {
    let lattice = unique("control");
    let cluster = keys::generate(KeyKind::Cluster);
    let (rt_a, control_a) = host(&lattice, &cluster, "host-a").await;
    let (rt_b, control_b) = host(&lattice, &cluster, "host-b").await;
    let ops = operator(&lattice, &cluster).await;
    let mut events = Box::pin(ops.events().await.unwrap());

    let hosts = ops.hosts(Duration::from_millis(700)).await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["host-a", "host-b"]);
    assert_eq!(hosts[0].labels["zone"], "test");
    assert_eq!(hosts[0].providers[0].contract, "wasmcloud:keyvalue");
    assert!(hosts[0].actors.is_empty());
    let a = control_a.id().to_string();

    // Start the probe on host A, link it, use it.
    let probe = sign(&guest("probe"), "probe", PROBE_CAPS);
    let started = ops
        .command(
            &a,
            &Command::StartActor { reference: None },
            probe.bytes.clone(),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(started["subject"], probe.subject.as_str());
    let again = ops
        .command(
            &a,
            &Command::StartActor { reference: None },
            probe.bytes.clone(),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(again.contains("runs on this host already"), "{again}");
    let kv = link("probe", "keyvalue", "kv", LinkConfig::new());
    ops.command(&a, &Command::PutLink { link: kv }, Vec::new(), WAIT)
        .await
        .unwrap();
    let set = serde_json::json!({"key": "k", "value": "v"});
    call(&rt_a, "probe", "kv_set", set).await.unwrap();

    // Scale it, and see it all in the inventory.
    let scale = Command::ScaleActor {
        actor: "probe".into(),
        max_concurrent: 2,
    };
    ops.command(&a, &scale, Vec::new(), WAIT).await.unwrap();
    let hosts = ops.hosts(Duration::from_millis(700)).await.unwrap();
    let on_a = hosts.iter().find(|h| h.id == a).unwrap();
    assert_eq!(on_a.actors.len(), 1);
    assert_eq!(on_a.actors[0].max_concurrent, Some(2));
    assert_eq!(on_a.links.len(), 1);
    assert!(hosts.iter().find(|h| h.id != a).unwrap().actors.is_empty());

    // A link to a provider the host lacks is refused with the host's reason.
    let bad = link("probe", "blobstore", "nope", LinkConfig::new());
    let err = ops
        .command(&a, &Command::PutLink { link: bad }, Vec::new(), WAIT)
        .await
        .unwrap_err();
    assert!(err.contains("nope"), "{err}");

    // Unlink, then stop.
    let unlink = Command::DelLink {
        actor: "probe".into(),
        contract: "keyvalue".into(),
        name: "default".into(),
    };
    ops.command(&a, &unlink, Vec::new(), WAIT).await.unwrap();
    let err = call(&rt_a, "probe", "kv_get", serde_json::json!({"key": "k"}))
        .await
        .unwrap_err();
    assert!(
        err.contains("no link") || err.contains("not linked"),
        "{err}"
    );
    let stop = Command::StopActor {
        actor: "probe".into(),
    };
    ops.command(&a, &stop, Vec::new(), WAIT).await.unwrap();
    assert!(rt_a.host().actor("probe").is_none());
    let err = ops.command(&a, &stop, Vec::new(), WAIT).await.unwrap_err();
    assert!(err.contains("no actor probe"), "{err}");

    // Each change was announced, and heartbeats come from both hosts.
    let mut seen = Vec::new();
    let mut beats = std::collections::HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(e)) = tokio::time::timeout_at(until, events.next()).await {
        if e.kind == "heartbeat" {
            beats.insert(e.host_name.clone());
        } else if e.host == a {
            seen.push(e.kind.clone());
        }
        if beats.len() == 2 && seen.len() >= 5 {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "actor_started",
            "link_added",
            "actor_scaled",
            "link_removed",
            "actor_stopped"
        ]
    );
    assert_eq!(beats.len(), 2, "{beats:?}");

    // Without the cluster seed, nothing.
    let stranger = ControlClient::new(
        async_nats::connect(NATS).await.unwrap(),
        &lattice,
        keys::generate(KeyKind::Cluster),
        &[],
    )
    .unwrap();
    assert!(
        stranger
            .hosts(Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty()
    );
    let err = stranger
        .command(
            &a,
            &Command::StartActor { reference: None },
            probe.bytes,
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("not signed by a trusted host") || err.contains("trusted"),
        "{err}"
    );
    assert!(rt_a.host().actor("probe").is_none());

    control_a.stop().await;
    control_b.stop().await;
    rt_a.shutdown(Duration::from_secs(5)).await;
    rt_b.shutdown(Duration::from_secs(5)).await;
}

/// An actor that spins a little, then answers its version: `v1` or `v2`.
fn versioned(account: &KeyPair, subject: &str, rev: i32) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (import "wapc" "__guest_request" (func $req (param i32 i32)))
          (import "wapc" "__guest_response" (func $resp (param i32 i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "v{rev}")
          (func (export "__guest_call") (param $op i32) (param $len i32) (result i32)
            (local $n i32)
            (call $req (i32.const 0) (i32.const 1024))
            (loop $spin
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $spin (i32.lt_u (local.get $n) (i32.const 200000))))
            (call $resp (i32.const 16) (i32.const 2))
            (i32.const 1)))"#
    );
    let spec = ActorSpec {
        name: "versioned".into(),
        rev: Some(rev),
        ver: Some(format!("{rev}.0.0")),
        ..Default::default()
    };
    sign_module(&wat::parse_str(wat).unwrap(), &spec, account, subject)
        .unwrap()
        .bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_update_under_load_loses_no_invocation_and_a_lower_revision_is_refused() {
    let lattice = unique("control");
    let cluster = keys::generate(KeyKind::Cluster);
    let (rt, control) = host(&lattice, &cluster, "host-u").await;
    let ops = operator(&lattice, &cluster).await;
    let id = control.id().to_string();
    let account = keys::generate(KeyKind::Account);
    let subject = keys::generate(KeyKind::Module).public_key();
    ops.command(
        &id,
        &Command::StartActor { reference: None },
        versioned(&account, &subject, 1),
        WAIT,
    )
    .await
    .unwrap();

    // Eight callers invoke without pause while the update happens.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (rt, stop, failures) = (rt.clone(), stop.clone(), failures.clone());
        callers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match rt.invoke("versioned", "run", Vec::new()).await {
                    Ok(bytes) => answers.push(String::from_utf8(bytes).unwrap()),
                    Err(e) => {
                        eprintln!("lost: {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let updated = ops
        .command(
            &id,
            &Command::UpdateActor { reference: None },
            versioned(&account, &subject, 2),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(updated["rev"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for c in callers {
        all.push(c.await.unwrap());
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    let total: usize = all.iter().map(Vec::len).sum();
    assert!(total > 50, "only {total} invocations ran");
    for answers in &all {
        // Each caller saw v1, then v2, and never v1 again once v2 answered.
        let first_v2 = answers.iter().position(|a| a == "v2").expect("v2 answered");
        assert!(answers[..first_v2].iter().all(|a| a == "v1"));
        assert!(answers[first_v2..].iter().all(|a| a == "v2"), "{answers:?}");
    }

    // Back to revision 1, or the same revision again: refused, and v2 keeps running.
    for rev in [1, 2] {
        let err = ops
            .command(
                &id,
                &Command::UpdateActor { reference: None },
                versioned(&account, &subject, rev),
                WAIT,
            )
            .await
            .unwrap_err();
        assert!(
            err.contains("not newer than the running revision 2"),
            "{err}"
        );
    }
    // Another actor's module is not an update of this one.
    let stranger = keys::generate(KeyKind::Module).public_key();
    let err = ops
        .command(
            &id,
            &Command::UpdateActor { reference: None },
            versioned(&account, &stranger, 3),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(err.contains("not running on this host"), "{err}");
    assert_eq!(
        rt.invoke("versioned", "run", Vec::new()).await.unwrap(),
        b"v2"
    );
    control.stop().await;
    rt.shutdown(Duration::from_secs(5)).await;
}

/// Two `sigil up` hosts and a provider plugin process on one NATS: an actor on host A
/// counts through the plugin and calls an actor on host B; the CLI lists both hosts.
#[test]
fn two_hosts_a_plugin_process_and_the_cli_make_one_lattice() {
    use std::process::Command as Process;

    use crate::actor_calls::probe;
    use crate::plugin::{identity, start_plugin};
    use crate::providers::{http, spare_port, wait_for_port};

    let dir = tempfile::tempdir().unwrap();
    let lattice = unique("lattice");
    let cluster = keys::generate(KeyKind::Cluster);
    let seed = dir.path().join("cluster.nk");
    std::fs::write(&seed, cluster.seed().unwrap()).unwrap();
    let who = identity("keyvalue");
    let _plugin = start_plugin(&lattice, &who, &cluster);
    std::fs::write(dir.path().join("probe-a.wasm"), probe("probe-a", None).0).unwrap();
    std::fs::write(
        dir.path().join("probe-b.wasm"),
        probe("probe-b", Some("keeper")).0,
    )
    .unwrap();
    let port = spare_port();
    let common = |name: &str| {
        format!(
            "[host]\nname = \"{name}\"\nadmin_address = \"off\"\nlabels = {{ role = \"{name}\" }}\n\n\
             [lattice]\nnats = \"{NATS}\"\nname = \"{lattice}\"\ncluster_seed_file = \"cluster.nk\"\n\
             heartbeat = \"1s\"\n"
        )
    };
    let a = format!(
        r#"{}
[[actors]]
path = "probe-a.wasm"

[[providers]]
name = "http"
kind = "httpserver"

[[providers]]
name = "kv"
kind = "plugin"
config = {{ key = "{}", contract = "keyvalue" }}

[[links]]
actor = "probe-a"
contract = "httpserver"
provider = "http"
config = {{ address = "127.0.0.1:{port}" }}

[[links]]
actor = "probe-a"
contract = "keyvalue"
provider = "kv"
"#,
        common("host-a"),
        who.key.public_key()
    );
    let b = format!(
        r#"{}
[[actors]]
path = "probe-b.wasm"

[[providers]]
name = "kv"
kind = "keyvalue-memory"

[[links]]
actor = "probe-b"
contract = "keyvalue"
provider = "kv"
"#,
        common("host-b")
    );
    let up = |file: &str, text: &str| {
        let config = dir.path().join(file);
        std::fs::write(&config, text).unwrap();
        crate::workflow_http::sigil_up(dir.path(), &config)
    };
    let host_b = up("b.toml", &b);
    let _host_a = up("a.toml", &a);
    wait_for_port(port);
    let at = ([127, 0, 0, 1], port).into();
    let eventually = |path: &str| {
        let started = std::time::Instant::now();
        loop {
            let answer = http(at, "GET", path);
            if answer.0 == 200 || started.elapsed() > Duration::from_secs(15) {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Through the plugin process.
    assert_eq!(eventually("/kv/visits"), (200, "1".to_string()));
    assert_eq!(http(at, "GET", "/kv/visits"), (200, "2".to_string()));
    // To the actor on host B, by its call alias.
    assert_eq!(
        eventually("/call/keeper/k/hello"),
        (200, "stored".to_string())
    );
    assert_eq!(
        http(at, "GET", "/call/keeper/k"),
        (200, "hello".to_string())
    );

    // The operator's view.
    let out = Process::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "lattice",
            "hosts",
            "--json",
            "--wait",
            "1s",
            "--lattice",
            &lattice,
        ])
        .arg("--cluster-seed-file")
        .arg(&seed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["host-a", "host-b"]);
    assert_eq!(hosts[0]["actors"][0]["name"], "probe-a");
    assert_eq!(hosts[1]["actors"][0]["call_alias"], "keeper");
    assert_eq!(hosts[1]["labels"]["role"], "host-b");

    // Host B goes away: the call fails with the reason, host A keeps serving.
    drop(host_b);
    let started = std::time::Instant::now();
    let gone = loop {
        let answer = http(at, "GET", "/call/keeper/k");
        if answer.0 != 200 || started.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(gone.0, 500, "{gone:?}");
    assert_eq!(http(at, "GET", "/kv/visits"), (200, "3".to_string()));
}

/// A command envelope for `host` on `lattice`, signed with `cluster` as an operator's
/// client signs it; `edit` may change it first.
fn command_token(
    cluster: &KeyPair,
    lattice: &str,
    host: &str,
    command: &Command,
    edit: impl FnOnce(&mut wire::Envelope),
) -> String {
    let mut envelope = wire::Envelope {
        v: wire::WIRE_VERSION,
        kind: wire::RequestKind::Control,
        actor: wire::WireActor {
            subject: String::new(),
            name: "operator".into(),
            issuer: String::new(),
            caps: Vec::new(),
        },
        contract: "sigil:control".into(),
        link: host.to_string(),
        operation: command.name().to_string(),
        hash: wire::body_hash(b""),
        deadline_ms: wire::now_ms() + 5000,
        depth: 0,
        lattice: lattice.to_string(),
        subject: host_subject(lattice, host),
        command: Some(serde_json::to_value(command).unwrap()),
    };
    edit(&mut envelope);
    wire::sign_envelope(cluster, host, envelope).unwrap().0
}

fn with_token(token: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::HEADER_INVOCATION, token);
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_replayed_control_request_is_refused_and_changes_nothing() {
    let lattice = unique("ctlsig");
    let cluster = keys::generate(KeyKind::Cluster);
    let (rt_a, control_a) = host(&lattice, &cluster, "host-a").await;
    let (rt_b, control_b) = host(&lattice, &cluster, "host-b").await;
    let (a, b) = (control_a.id().to_string(), control_b.id().to_string());
    let ops = operator(&lattice, &cluster).await;
    let probe = sign(&guest("probe"), "probe", PROBE_CAPS);
    ops.command(
        &b,
        &Command::StartActor { reference: None },
        probe.bytes.clone(),
        WAIT,
    )
    .await
    .unwrap();
    let scale = |n| Command::ScaleActor {
        actor: "probe".into(),
        max_concurrent: n,
    };
    ops.command(&b, &scale(7), Vec::new(), WAIT).await.unwrap();
    let client = async_nats::connect(NATS).await.unwrap();
    let ask = |subject: String, headers: async_nats::HeaderMap, body: &'static [u8]| {
        let client = client.clone();
        async move { outcome(&send(&client, subject, headers, body).await) }
    };
    let refused = |(kind, text): (Option<String>, String), expected: &str, what: &str| {
        assert_eq!(kind.as_deref(), Some("refused"), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    };

    // The reported case: `scale --host B probe 7` sent to a lattice no host serves,
    // captured there, and re-sent to host B with another command in a header.
    let idle = unique("ctlidle");
    let mut captured = client.subscribe(host_subject(&idle, &b)).await.unwrap();
    // The server has the subscription before anything is sent to it.
    sigil_providers::plugin::wire::settle(&client)
        .await
        .unwrap();
    let ops_idle = operator(&idle, &cluster).await;
    let short = Duration::from_millis(300);
    let _ = ops_idle.command(&b, &scale(7), Vec::new(), short).await;
    let captured = captured.next().await.unwrap();
    let mut headers = captured.headers.clone().unwrap();
    let three = r#"{"command":"scale-actor","actor":"probe","max_concurrent":3}"#;
    headers.insert("Sigil-Command", three);
    let answer = ask(host_subject(&lattice, &b), headers, b"").await;
    refused(answer, "another lattice", "the captured request");
    assert_eq!(rt_b.actor_scale(&probe.subject), Some(7));

    // A genuine request passes; the command it carries is the signed one, whatever a
    // header says.
    let token = command_token(&cluster, &lattice, &b, &scale(5), |_| {});
    let mut headers = with_token(&token);
    headers.insert("Sigil-Command", three);
    let (kind, text) = ask(host_subject(&lattice, &b), headers, b"").await;
    assert_eq!(kind, None, "{text}");
    assert_eq!(rt_b.actor_scale(&probe.subject), Some(5));
    // Replayed to host B, to host A, to the inventory subject: refused.
    refused(
        ask(host_subject(&lattice, &b), with_token(&token), b"").await,
        "a replay",
        "replay",
    );
    refused(
        ask(host_subject(&lattice, &a), with_token(&token), b"").await,
        "meant for",
        "another host",
    );
    refused(
        ask(hosts_subject(&lattice), with_token(&token), b"").await,
        "meant for",
        "the inventory subject",
    );

    // Each part of an otherwise genuine request changed: the signature fails.
    let command: &[Change] = &[
        ("command kind", |c| {
            c["sigil"]["command"]["command"] = "stop-actor".into()
        }),
        ("command's actor", |c| {
            c["sigil"]["command"]["actor"] = "someone".into()
        }),
        ("command's limit", |c| {
            c["sigil"]["command"]["max_concurrent"] = 3.into()
        }),
        ("command removed", |c| {
            c["sigil"].as_object_mut().unwrap().remove("command");
        }),
        ("kind", |c| c["sigil"]["kind"] = "invoke".into()),
    ];
    for (what, change) in COMMON_CHANGES.iter().chain(command) {
        let token = command_token(&cluster, &lattice, &b, &scale(3), |_| {});
        let token = tamper(&token, change);
        let answer = ask(host_subject(&lattice, &b), with_token(&token), b"").await;
        refused(answer, "does not verify", what);
    }
    // The body, the subject and the lattice, each changed before signing.
    let token = command_token(&cluster, &lattice, &b, &scale(3), |_| {});
    let answer = ask(host_subject(&lattice, &b), with_token(&token), b"module").await;
    refused(answer, "altered", "body");
    let token = command_token(&cluster, &lattice, &b, &scale(3), |e| {
        e.subject = hosts_subject(&lattice);
    });
    let answer = ask(host_subject(&lattice, &b), with_token(&token), b"").await;
    refused(answer, "another subject", "subject");
    let token = command_token(&cluster, &lattice, &b, &scale(3), |e| {
        e.lattice = "elsewhere".into();
    });
    let answer = ask(host_subject(&lattice, &b), with_token(&token), b"").await;
    refused(answer, "another lattice", "lattice");
    // A signed envelope without a command does nothing.
    let token = command_token(&cluster, &lattice, &b, &scale(3), |e| e.command = None);
    let (kind, text) = ask(host_subject(&lattice, &b), with_token(&token), b"").await;
    assert_eq!(kind.as_deref(), Some("failed"), "{text}");
    assert!(text.contains("names no command"), "{text}");
    assert_eq!(rt_b.actor_scale(&probe.subject), Some(5));
    assert_eq!(rt_a.actor_scale(&probe.subject), None);

    control_a.stop().await;
    control_b.stop().await;
    rt_a.shutdown(Duration::from_secs(5)).await;
    rt_b.shutdown(Duration::from_secs(5)).await;
}
