//! Provider plugins on the real NATS: a built-in provider run as its own process
//! (`sigil provider run`), reached by signed actors through a host; forged, unsigned,
//! altered and replayed invocations refused; impostors and foreign issuers refused; and a
//! plugin killed and restarted.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use sigil_claims::{KeyKind, KeyPair, Policy, ProviderSpec, issue_provider_token, keys};
use sigil_host::up::Runtime;
use sigil_providers::LinkConfig;
use sigil_providers::plugin::wire::{
    self, Envelope, HEADER_ERROR, HEADER_INVOCATION, RequestKind, Subjects, WIRE_VERSION, WireActor,
};
use sigil_providers::plugin::{Lattice, RemoteProvider};

use crate::common::sign;
use crate::guests::guest;
use crate::providers::{PROBE_CAPS, call, http, link, runtime, spare_port, unique, wait_for_port};

pub(crate) const NATS: &str = "nats://127.0.0.1:4222";

/// A plugin's identity: its key, its issuer, and its claims.
pub(crate) struct Identity {
    pub(crate) key: KeyPair,
    pub(crate) claims: String,
    pub(crate) issuer: KeyPair,
}

pub(crate) fn identity(capid: &str) -> Identity {
    let issuer = keys::generate(KeyKind::Account);
    let key = keys::generate(KeyKind::Service);
    let spec = ProviderSpec {
        name: "kv plugin".into(),
        capid: capid.into(),
        vendor: "Sigil".into(),
        ..ProviderSpec::default()
    };
    let claims = issue_provider_token(&spec, &issuer, &key.public_key()).unwrap();
    Identity {
        key,
        claims,
        issuer,
    }
}

/// A plugin process, killed when dropped.
pub(crate) struct Plugin(pub(crate) Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_plugin(lattice: &str, who: &Identity, cluster: &KeyPair) -> Plugin {
    let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["provider", "run", "keyvalue-memory"])
        .env("SIGIL_NATS_URL", NATS)
        .env("SIGIL_LATTICE", lattice)
        .env("SIGIL_PROVIDER_SEED", who.key.seed().unwrap())
        .env("SIGIL_PROVIDER_CLAIMS", &who.claims)
        .env("SIGIL_CLUSTER_ISSUERS", cluster.public_key())
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Plugin(child)
}

/// Waits until the plugin answers identity challenges.
pub(crate) async fn wait_ready(client: &async_nats::Client, lattice: &str, key: &str) {
    let subject = Subjects::new(lattice, key).identify();
    let started = Instant::now();
    loop {
        let asked = client
            .send_request(
                subject.clone(),
                async_nats::Request::new()
                    .payload(br#"{"nonce":"ready?"}"#.to_vec().into())
                    .timeout(Some(Duration::from_millis(500))),
            )
            .await;
        if asked.is_ok() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the plugin never answered on {subject}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) struct Setup {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) lattice: String,
    pub(crate) cluster: KeyPair,
    pub(crate) who: Identity,
    pub(crate) client: async_nats::Client,
}

/// A host with a probe actor linked to the key-value plugin `who` (not started yet).
pub(crate) async fn setup(who: Identity, policy: Policy) -> Setup {
    let rt = runtime();
    let lattice = unique("plugins");
    let cluster = keys::generate(KeyKind::Cluster);
    let host_side = Lattice::new(
        NATS,
        &lattice,
        KeyPair::from_seed(&cluster.seed().unwrap()).unwrap(),
        policy,
    );
    let remote = RemoteProvider::new(
        host_side,
        &who.key.public_key(),
        "wasmcloud:keyvalue",
        Duration::from_secs(2),
    )
    .unwrap();
    rt.add_provider("kv", Arc::new(remote)).await.unwrap();
    let probe = guest("probe");
    rt.load_actor(sign(&probe, "probe-a", PROBE_CAPS).bytes)
        .await
        .unwrap();
    rt.load_actor(sign(&probe, "probe-b", PROBE_CAPS).bytes)
        .await
        .unwrap();
    let client = async_nats::connect(NATS).await.unwrap();
    Setup {
        rt,
        lattice,
        cluster,
        who,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_actors_use_a_key_value_plugin_process_each_in_its_own_space() {
    let who = identity("keyvalue");
    let s = setup(who, Policy::new()).await;
    let _plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    for actor in ["probe-a", "probe-b"] {
        link(&s.rt, actor, "keyvalue", "kv", LinkConfig::new()).await;
    }

    let set = serde_json::json!({"key": "greeting", "value": "hello from a"});
    call(&s.rt, "probe-a", "kv_set", set).await.unwrap();
    let get = serde_json::json!({"key": "greeting"});
    assert_eq!(
        call(&s.rt, "probe-a", "kv_get", get.clone()).await.unwrap(),
        "hello from a"
    );
    // The plugin scopes keys to the calling actor named in the signed envelope.
    assert_eq!(
        call(&s.rt, "probe-b", "kv_get", get).await.unwrap(),
        serde_json::Value::Null
    );
    // The plugin's own errors reach the actor.
    let incr = serde_json::json!({"key": "greeting", "by": 1});
    let err = call(&s.rt, "probe-a", "kv_incr", incr).await.unwrap_err();
    assert!(err.contains("integer") || err.contains("number"), "{err}");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

/// Sends a raw request to the plugin's invoke subject; answers the error kind and text.
pub(crate) async fn raw_invoke(
    client: &async_nats::Client,
    subjects: &Subjects,
    token: Option<&str>,
    body: &[u8],
) -> (Option<String>, String) {
    raw_request(client, subjects.invoke(), token, body).await
}

/// Sends a raw request, with an envelope `token` if given, to `subject`; answers the
/// whole reply.
pub(crate) async fn raw_message(
    client: &async_nats::Client,
    subject: String,
    token: Option<&str>,
    body: &[u8],
) -> async_nats::Message {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert(HEADER_INVOCATION, t);
    }
    send(client, subject, headers, body).await
}

/// [`raw_message`], answering the error kind and text.
pub(crate) async fn raw_request(
    client: &async_nats::Client,
    subject: String,
    token: Option<&str>,
    body: &[u8],
) -> (Option<String>, String) {
    let answer = raw_message(client, subject, token, body).await;
    let kind = answer
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_ERROR))
        .map(|v| v.as_str().to_string());
    (kind, String::from_utf8_lossy(&answer.payload).into_owned())
}

/// A genuine-looking invocation envelope for `body`, in `lattice`, sent to `subject`.
pub(crate) fn envelope(lattice: &str, subject: String, body: &[u8]) -> Envelope {
    Envelope {
        v: WIRE_VERSION,
        kind: RequestKind::Invoke,
        actor: WireActor {
            subject: keys::generate(KeyKind::Module).public_key(),
            name: "mallory".into(),
            issuer: keys::generate(KeyKind::Account).public_key(),
            caps: vec!["wasmcloud:keyvalue".into()],
        },
        contract: "wasmcloud:keyvalue".into(),
        link: "default".into(),
        operation: "Get".into(),
        hash: wire::body_hash(body),
        deadline_ms: wire::now_ms() + 5000,
        depth: 0,
        lattice: lattice.to_string(),
        subject,
        command: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_altered_and_replayed_invocations_are_refused() {
    let who = identity("keyvalue");
    let s = setup(who, Policy::new()).await;
    let _plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    let me = s.who.key.public_key();
    wait_ready(&s.client, &s.lattice, &me).await;
    let subjects = Subjects::new(&s.lattice, &me);
    let body = rmp_serde::to_vec_named(&serde_json::json!({"key": "k"})).unwrap();

    // No envelope at all.
    let (kind, text) = raw_invoke(&s.client, &subjects, None, &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("no Sigil-Invocation envelope"), "{text}");

    // Signed by a cluster key the plugin does not trust.
    let stranger = keys::generate(KeyKind::Cluster);
    let (token, _) = wire::sign_envelope(
        &stranger,
        &me,
        envelope(&s.lattice, subjects.invoke(), &body),
    )
    .unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("not a trusted host cluster key"), "{text}");

    // A trusted envelope whose signature was tampered with.
    let (token, _) = wire::sign_envelope(
        &s.cluster,
        &me,
        envelope(&s.lattice, subjects.invoke(), &body),
    )
    .unwrap();
    // One character inside the signature (the last one also carries padding bits).
    let mut forged = token.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&forged), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("does not verify"), "{text}");

    // A trusted envelope with another body.
    let other = rmp_serde::to_vec_named(&serde_json::json!({"key": "other"})).unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &other).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("altered"), "{text}");

    // The genuine envelope is accepted once (no link exists for that actor) ...
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("unknown-link"), "{text}");
    // ... and refused when replayed.
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("replay"), "{text}");

    // An envelope meant for another plugin.
    let elsewhere = keys::generate(KeyKind::Service).public_key();
    let (token, _) = wire::sign_envelope(
        &s.cluster,
        &elsewhere,
        envelope(&s.lattice, subjects.invoke(), &body),
    )
    .unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("meant for"), "{text}");

    // An expired one.
    let mut old = envelope(&s.lattice, subjects.invoke(), &body);
    old.deadline_ms = wire::now_ms() - 120_000;
    let (token, _) = wire::sign_envelope(&s.cluster, &me, old).unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("expired"), "{text}");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_from_a_foreign_issuer_or_an_impostor_is_refused() {
    // The host allows one issuer; the plugin's claims come from another.
    let who = identity("keyvalue");
    let trusted = keys::generate(KeyKind::Account);
    let s = setup(who, Policy::new().allow_issuer(trusted.public_key())).await;
    let _plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    link(&s.rt, "probe-a", "keyvalue", "kv", LinkConfig::new()).await;
    let get = serde_json::json!({"key": "k"});
    let err = call(&s.rt, "probe-a", "kv_get", get.clone())
        .await
        .unwrap_err();
    assert!(err.contains("refused") && err.contains("issuer"), "{err}");
    assert!(err.contains(&s.who.issuer.public_key()), "{err}");
    s.rt.shutdown(Duration::from_secs(5)).await;

    // An impostor: it shows the real plugin's claims but cannot sign with its key.
    let real = identity("keyvalue");
    let s = setup(
        Identity {
            key: KeyPair::from_seed(&real.key.seed().unwrap()).unwrap(),
            claims: real.claims.clone(),
            issuer: KeyPair::from_seed(&real.issuer.seed().unwrap()).unwrap(),
        },
        Policy::new(),
    )
    .await;
    let impostor = keys::generate(KeyKind::Service);
    let subject = Subjects::new(&s.lattice, &real.key.public_key()).identify();
    let mut challenges = s.client.subscribe(subject).await.unwrap();
    let client = s.client.clone();
    let claims = real.claims.clone();
    let responder = tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(m) = challenges.next().await {
            let request: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let nonce = request["nonce"].as_str().unwrap().to_string();
            let sig = impostor
                .sign(wire::identify_input(&nonce).as_bytes())
                .unwrap();
            let answer = serde_json::json!({
                "version": WIRE_VERSION,
                "claims": claims,
                "signature": data_encoding::BASE64URL_NOPAD.encode(&sig),
                "instance": "fake",
            });
            if let Some(reply) = m.reply {
                client
                    .publish(reply, serde_json::to_vec(&answer).unwrap().into())
                    .await
                    .unwrap();
            }
        }
    });
    link(&s.rt, "probe-a", "keyvalue", "kv", LinkConfig::new()).await;
    let err = call(&s.rt, "probe-a", "kv_get", get).await.unwrap_err();
    assert!(err.contains("impostor"), "{err}");
    responder.abort();
    s.rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_gives_clear_errors_and_serves_again_when_restarted() {
    let who = identity("keyvalue");
    let s = setup(who, Policy::new()).await;
    let plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    link(&s.rt, "probe-a", "keyvalue", "kv", LinkConfig::new()).await;
    let set = serde_json::json!({"key": "k", "value": "v"});
    call(&s.rt, "probe-a", "kv_set", set.clone()).await.unwrap();

    drop(plugin); // SIGKILL
    gone(
        &s.client,
        &Subjects::new(&s.lattice, &s.who.key.public_key()),
    )
    .await;
    let get = serde_json::json!({"key": "k"});
    let err = call(&s.rt, "probe-a", "kv_get", get.clone())
        .await
        .unwrap_err();
    assert!(
        err.contains("not running") && err.contains(&s.who.key.public_key()),
        "{err}"
    );
    // Still down: the same clear error, quickly (no one to wait for).
    let started = Instant::now();
    let err = call(&s.rt, "probe-a", "kv_get", get.clone())
        .await
        .unwrap_err();
    assert!(err.contains("not running"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Restarted (its memory is gone): the host proves it again, sends the link, and the
    // actor is served.
    let _plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    let started = Instant::now();
    loop {
        match call(&s.rt, "probe-a", "kv_set", set.clone()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(10), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(call(&s.rt, "probe-a", "kv_get", get).await.unwrap(), "v");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn sigil_up_reaches_the_plugin_its_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter.wasm"), guest("counter")).unwrap();
    let who = identity("keyvalue");
    let cluster = keys::generate(KeyKind::Cluster);
    std::fs::write(dir.path().join("cluster.nk"), cluster.seed().unwrap()).unwrap();
    let lattice = unique("up-plugins");
    let _plugin = start_plugin(&lattice, &who, &cluster);
    let http_port = spare_port();
    let config = dir.path().join("host.toml");
    let provider = format!(
        r#"
[[providers]]
name = "kv"
kind = "plugin"
config = {{ key = "{}", contract = "keyvalue" }}
"#,
        who.key.public_key()
    );
    let rest = format!(
        r#"
[[actors]]
path = "counter.wasm"

[[providers]]
name = "http"
kind = "httpserver"
{provider}
[[links]]
actor = "counter"
contract = "httpserver"
provider = "http"
config = {{ address = "127.0.0.1:{http_port}" }}

[[links]]
actor = "counter"
contract = "keyvalue"
provider = "kv"
"#
    );

    // A plugin needs the lattice.
    std::fs::write(&config, format!("[host]\nadmin_address = \"off\"\n{rest}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["up", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[lattice]"), "{stderr}");

    std::fs::write(
        &config,
        format!(
            "[host]\nadmin_address = \"off\"\n\n[lattice]\nnats = \"{NATS}\"\nname = \"{lattice}\"\n\
             cluster_seed_file = \"cluster.nk\"\n{rest}"
        ),
    )
    .unwrap();
    let _host = crate::workflow_http::sigil_up(dir.path(), &config);
    wait_for_port(http_port);
    let addr = ([127, 0, 0, 1], http_port).into();
    let started = Instant::now();
    // The plugin may be verified a moment after the host starts serving HTTP.
    let first = loop {
        let answer = http(addr, "POST", "/visits");
        if answer.0 == 200 || started.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        first,
        (200, r#"{"counter":"visits","count":1}"#.to_string())
    );
    assert_eq!(
        http(addr, "POST", "/visits"),
        (200, r#"{"counter":"visits","count":2}"#.to_string())
    );
}

#[test]
fn a_plugin_with_missing_or_mismatched_identity_refuses_to_start() {
    let run = |env: &[(&str, String)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
        cmd.args(["provider", "run"]).args(args);
        for var in [
            "SIGIL_PROVIDER_SEED",
            "SIGIL_PROVIDER_SEED_FILE",
            "SIGIL_PROVIDER_CLAIMS",
            "SIGIL_CLUSTER_ISSUERS",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[], &["keyvalue-memory"]);
    assert!(err.contains("SIGIL_PROVIDER_SEED"), "{err}");
    let err = run(&[], &["keyvalue-memory", "--config", "prefix"]);
    assert!(err.contains("not KEY=VALUE"), "{err}");
    let err = run(&[], &["plugin"]);
    assert!(err.contains("built-in kind"), "{err}");

    // Claims for another key, or for another contract.
    let who = identity("keyvalue");
    let other = keys::generate(KeyKind::Service);
    let cluster = keys::generate(KeyKind::Cluster).public_key();
    let env = |seed: String, claims: &str| {
        vec![
            ("SIGIL_PROVIDER_SEED", seed),
            ("SIGIL_PROVIDER_CLAIMS", claims.to_string()),
            ("SIGIL_CLUSTER_ISSUERS", cluster.clone()),
        ]
    };
    let err = run(
        &env(other.seed().unwrap(), &who.claims),
        &["keyvalue-memory"],
    );
    assert!(err.contains("the provider claims are for"), "{err}");
    let blobs = identity("blobstore");
    let err = run(
        &env(blobs.key.seed().unwrap(), &blobs.claims),
        &["keyvalue-memory"],
    );
    assert!(err.contains("wasmcloud:blobstore"), "{err}");
    // A trusted host key that is not a cluster key.
    let mut bad = env(who.key.seed().unwrap(), &who.claims);
    bad[2].1 = keys::generate(KeyKind::Account).public_key();
    let err = run(&bad, &["keyvalue-memory"]);
    assert!(err.contains("not a cluster public key"), "{err}");
}

/// `token` with its claims changed by `change`, and its signature kept as it was.
pub(crate) fn tamper(token: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    use data_encoding::BASE64URL_NOPAD;
    let parts: Vec<&str> = token.split('.').collect();
    let decoded = BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    change(&mut claims);
    let claims = BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims).unwrap());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

/// A change to one signed claim of an envelope, named for the assertion messages.
pub(crate) type Change = (&'static str, fn(&mut serde_json::Value));

/// The claims of an envelope that every receiver relies on, each changed.
pub(crate) const COMMON_CHANGES: &[Change] = &[
    ("addressee", |c| c["sub"] = "VSOMEONEELSE".into()),
    ("request ID", |c| c["jti"] = "0123456789abcdef".into()),
    ("lattice", |c| c["sigil"]["lattice"] = "elsewhere".into()),
    ("subject", |c| {
        c["sigil"]["subject"] = "sigil.elsewhere.x".into()
    }),
    ("body hash", |c| {
        c["sigil"]["hash"] = wire::body_hash(b"other").into()
    }),
    ("deadline", |c| {
        c["sigil"]["deadline_ms"] = (wire::now_ms() + 3_600_000).into()
    }),
    ("operation", |c| c["sigil"]["operation"] = "Delete".into()),
    ("caller", |c| {
        c["sigil"]["actor"]["subject"] = "MSOMEONEELSE".into()
    }),
    ("caller's capabilities", |c| {
        c["sigil"]["actor"]["caps"] = serde_json::json!(["x:y"])
    }),
];

/// Sends `body` to `subject` with `headers`; answers the whole reply.
pub(crate) async fn send(
    client: &async_nats::Client,
    subject: String,
    headers: HeaderMap,
    body: &[u8],
) -> async_nats::Message {
    client
        .send_request(
            subject,
            async_nats::Request::new()
                .headers(headers)
                .payload(body.to_vec().into())
                .timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap()
}

/// The error kind and text of an answer.
pub(crate) fn outcome(answer: &async_nats::Message) -> (Option<String>, String) {
    let kind = answer
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_ERROR))
        .map(|v| v.as_str().to_string());
    (kind, String::from_utf8_lossy(&answer.payload).into_owned())
}

/// Checks, against the running plugin of `s` (in Rust or Python), that a change to anything
/// an invocation's receiver acts on is refused, and that its answers bind their request,
/// their body and their error kind.
pub(crate) async fn check_plugin_signatures(s: &Setup) {
    let me = s.who.key.public_key();
    let subjects = Subjects::new(&s.lattice, &me);
    let body = rmp_serde::to_vec_named(&serde_json::json!({"key": "k"})).unwrap();
    let sign = |e: Envelope| wire::sign_envelope(&s.cluster, &me, e).unwrap();
    let fresh = || sign(envelope(&s.lattice, subjects.invoke(), &body));
    let refused = |(kind, text): (Option<String>, String), expected: &str, what: &str| {
        assert_eq!(kind.as_deref(), Some("refused"), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    };

    // Each claim changed in a genuine envelope: its signature no longer verifies.
    let link: &[Change] = &[
        ("link name", |c| c["sigil"]["link"] = "other".into()),
        ("contract", |c| {
            c["sigil"]["contract"] = "wasmcloud:blobstore".into()
        }),
        ("kind", |c| c["sigil"]["kind"] = "link.put".into()),
    ];
    for (what, change) in COMMON_CHANGES.iter().chain(link) {
        let (token, _) = fresh();
        let token = tamper(&token, change);
        let answer = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
        refused(answer, "does not verify", what);
    }
    // A genuine envelope with another payload.
    let (token, _) = fresh();
    let answer = raw_invoke(&s.client, &subjects, Some(&token), b"\x80").await;
    refused(answer, "altered", "payload");
    // Genuine envelopes sent elsewhere: from another lattice, for another subject, or on
    // the subject of another kind of request.
    let other = Subjects::new("elsewhere", &me);
    let (token, _) = sign(envelope("elsewhere", other.invoke(), &body));
    let answer = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    refused(answer, "another lattice", "lattice");
    let (token, _) = sign(envelope(&s.lattice, subjects.health(), &body));
    let answer = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    refused(answer, "another subject", "subject");
    let (token, _) = fresh();
    let answer = raw_request(&s.client, subjects.link_put(), Some(&token), &body).await;
    refused(answer, "request, not", "kind");

    // Answers: a genuine one opens for its own request only, and not once changed.
    let key = KeyPair::from_public_key(&me).unwrap();
    let open = |m: &async_nats::Message, jti: &str| {
        wire::open_answer(m, jti, |_| Ok(&key)).map(|a| a.map_err(|(kind, _)| kind.as_str()))
    };
    let (token, jti) = fresh();
    let answer = raw_message(&s.client, subjects.invoke(), Some(&token), &body).await;
    assert_eq!(open(&answer, &jti), Ok(Err("unknown-link")));
    let (_, other_jti) = fresh();
    let e = open(&answer, &other_jti).unwrap_err();
    assert!(e.contains("does not verify"), "another request: {e}");
    let mut altered = answer.clone();
    altered.payload = "all is well".into();
    let e = open(&altered, &jti).unwrap_err();
    assert!(e.contains("does not verify"), "altered body: {e}");
    for (kind, expected) in [
        (Some("failed"), "does not verify"),
        (Some("refused"), "does not verify"),
        (None, "does not verify"),
        (Some("ok"), "names no error kind"),
    ] {
        let mut altered = answer.clone();
        let mut headers = HeaderMap::new();
        for (name, values) in answer.headers.iter().flat_map(|h| h.iter()) {
            if name.to_string() != HEADER_ERROR {
                for v in values {
                    headers.append(name.clone(), v.clone());
                }
            }
        }
        if let Some(kind) = kind {
            headers.insert(HEADER_ERROR, kind);
        }
        altered.headers = Some(headers);
        let e = open(&altered, &jti).unwrap_err();
        assert!(e.contains(expected), "error header {kind:?}: {e}");
    }
    // A refusal is signed for the request it refuses, and opens for that one only.
    let (token, jti) = fresh();
    let refusal = raw_message(&s.client, subjects.invoke(), Some(&token), b"\x80").await;
    assert_eq!(open(&refusal, &jti), Ok(Err("refused")));
    assert!(open(&refusal, &other_jti).is_err());
    assert!(open(&refusal, "").is_err());
    // An identity challenge shaped like an answer does not get an answer signed.
    let (_, jti) = fresh();
    let nonce = wire::response_input(&jti, b"forged", None);
    let challenge = serde_json::to_vec(&serde_json::json!({ "nonce": nonce })).unwrap();
    let reply = send(&s.client, subjects.identify(), HeaderMap::new(), &challenge).await;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let signature = reply["signature"].as_str().unwrap();
    assert!(wire::verify_response(&key, &jti, b"forged", None, Some(signature)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_a_plugin_acts_on_is_signed_and_answers_bind_their_request() {
    let s = setup(identity("keyvalue"), Policy::new()).await;
    let _plugin = start_plugin(&s.lattice, &s.who, &s.cluster);
    let me = s.who.key.public_key();
    wait_ready(&s.client, &s.lattice, &me).await;
    check_plugin_signatures(&s).await;

    // Two envelopes on one request: which one counts would be up to the reader.
    let subjects = Subjects::new(&s.lattice, &me);
    let body = rmp_serde::to_vec_named(&serde_json::json!({"key": "k"})).unwrap();
    let (token, _) = wire::sign_envelope(
        &s.cluster,
        &me,
        envelope(&s.lattice, subjects.invoke(), &body),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.append(HEADER_INVOCATION, token.as_str());
    headers.append(HEADER_INVOCATION, token.as_str());
    let answer = send(&s.client, subjects.invoke(), headers, &body).await;
    let (kind, text) = outcome(&answer);
    assert_eq!(kind.as_deref(), Some("refused"), "{text}");
    assert!(text.contains("2 Sigil-Invocation headers"), "{text}");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

/// Waits until the NATS server has noticed that a killed plugin's connection is gone
/// (it learns so only when it reads the closed socket): until then a request can still
/// be routed to the dead connection and time out instead of finding no responder.
async fn gone(client: &async_nats::Client, subjects: &Subjects) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let asked = client
            .send_request(
                subjects.health(),
                async_nats::Request::new().timeout(Some(Duration::from_millis(200))),
            )
            .await;
        match asked {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return,
            _ if Instant::now() > deadline => panic!("the killed plugin still has subscribers"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
