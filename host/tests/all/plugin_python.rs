//! The key-value provider plugin written in Python (`examples/plugins/python`), reached by
//! signed actors through a host: the plugin wire format is language-neutral. Its keys are
//! kept apart per actor, its errors reach the actor, unsigned and altered invocations are
//! refused with signed refusals, and it stops cleanly on SIGTERM. Needs only `python3`: the
//! plugin's packages are installed into the tests' own environment (`target/py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use sigil_claims::{KeyPair, Policy};
use sigil_providers::LinkConfig;
use sigil_providers::plugin::wire::{
    self, ErrorKind, HEADER_ERROR, HEADER_RESPONSE, LinkMessage, RequestKind, Subjects,
};

use crate::plugin::raw_message as request;
use crate::plugin::{NATS, Plugin, Setup, envelope, identity, raw_invoke, setup, wait_ready};
use crate::providers::{call, link};

const SCRIPT: &str = "examples/plugins/python/kv_plugin.py";
const REQUIREMENTS: &str = "examples/plugins/python/requirements.txt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python that runs the plugin: the tests' own environment (`target/py`), which
/// `.ci/python-tools` makes from `REQUIREMENTS` on first use. Fails, never skips, when it
/// cannot be made.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = repo().join(".ci/python-tools");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} could not make the Python environment with {REQUIREMENTS} (its error is above)",
            script.display()
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/python")
    })
}

/// `python examples/plugins/python/kv_plugin.py` in the tests' Python environment, from
/// the repository root, configured like any plugin through the environment.
fn start_python_plugin(s: &Setup) -> Plugin {
    let child = Command::new(python())
        .arg(SCRIPT)
        .current_dir(repo())
        .env("SIGIL_NATS_URL", NATS)
        .env("SIGIL_LATTICE", &s.lattice)
        .env("SIGIL_PROVIDER_SEED", s.who.key.seed().unwrap())
        .env("SIGIL_PROVIDER_CLAIMS", &s.who.claims)
        .env("SIGIL_CLUSTER_ISSUERS", s.cluster.public_key())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} {SCRIPT}: {e}", python().display()));
    Plugin(child)
}

fn header(answer: &async_nats::Message, name: &str) -> Option<String> {
    answer
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_actors_use_the_python_key_value_plugin_each_in_its_own_space() {
    let s = setup(identity("keyvalue"), Policy::new()).await;
    let _plugin = start_python_plugin(&s);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    for actor in ["probe-a", "probe-b"] {
        link(&s.rt, actor, "keyvalue", "kv", LinkConfig::new()).await;
    }

    // The same key name, one value per actor.
    for (actor, value) in [("probe-a", "hello from a"), ("probe-b", "hello from b")] {
        let set = json!({"key": "greeting", "value": value});
        call(&s.rt, actor, "kv_set", set).await.unwrap();
    }
    let get = json!({"key": "greeting"});
    for (actor, value) in [("probe-a", "hello from a"), ("probe-b", "hello from b")] {
        assert_eq!(
            call(&s.rt, actor, "kv_get", get.clone()).await.unwrap(),
            value
        );
    }
    // A key only one actor wrote is invisible to the other.
    let set = json!({"key": "only-a", "value": "secret"});
    call(&s.rt, "probe-a", "kv_set", set).await.unwrap();
    let get = json!({"key": "only-a"});
    assert_eq!(
        call(&s.rt, "probe-b", "kv_get", get).await.unwrap(),
        serde_json::Value::Null
    );

    // Counters, each actor its own.
    let incr = json!({"key": "visits"});
    for (actor, expected) in [("probe-a", 1), ("probe-a", 2), ("probe-b", 1)] {
        let n = call(&s.rt, actor, "kv_incr", incr.clone()).await.unwrap();
        assert_eq!(n, json!(expected), "{actor}");
    }
    // The plugin's own error reaches the actor (through the host's signature check).
    let incr = json!({"key": "greeting"});
    let err = call(&s.rt, "probe-a", "kv_incr", incr).await.unwrap_err();
    assert!(err.contains("integer") && err.contains("greeting"), "{err}");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_refuses_unsigned_and_altered_invocations_and_stops_on_sigterm() {
    let s = setup(identity("keyvalue"), Policy::new()).await;
    let mut plugin = start_python_plugin(&s);
    let me = s.who.key.public_key();
    wait_ready(&s.client, &s.lattice, &me).await;
    let subjects = Subjects::new(&s.lattice, &me);
    let plugin_key = KeyPair::from_public_key(&me).unwrap();
    let body = rmp_serde::to_vec_named(&json!({"key": "k"})).unwrap();

    // No envelope at all: refused, with a refusal signed for no envelope.
    let (kind, text) = raw_invoke(&s.client, &subjects, None, &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("no Sigil-Invocation envelope"), "{text}");
    let answer = request(&s.client, subjects.invoke(), None, &body).await;
    wire::verify_response(
        &plugin_key,
        "",
        &answer.payload,
        Some(ErrorKind::Refused),
        header(&answer, HEADER_RESPONSE).as_deref(),
    )
    .unwrap();

    // A genuine envelope with a tampered body.
    let (token, jti) = wire::sign_envelope(
        &s.cluster,
        &me,
        envelope(&s.lattice, subjects.invoke(), &body),
    )
    .unwrap();
    let tampered = rmp_serde::to_vec_named(&json!({"key": "someone else's"})).unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &tampered).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("altered"), "{text}");

    // With its own body it passes (the plugin has no link for that actor: a signed
    // unknown-link answer for that envelope), and it cannot be replayed.
    let answer = request(&s.client, subjects.invoke(), Some(&token), &body).await;
    assert_eq!(
        header(&answer, HEADER_ERROR).as_deref(),
        Some("unknown-link")
    );
    wire::verify_response(
        &plugin_key,
        &jti,
        &answer.payload,
        Some(ErrorKind::UnknownLink),
        header(&answer, HEADER_RESPONSE).as_deref(),
    )
    .unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("refused"));
    assert!(text.contains("replay"), "{text}");

    // A link sent by hand, then an operation the contract does not have.
    let call_env = {
        let mut e = envelope(&s.lattice, subjects.invoke(), &body);
        e.operation = "Frobnicate".into();
        e
    };
    let message = LinkMessage {
        actor: call_env.actor.clone(),
        contract: "wasmcloud:keyvalue".into(),
        link: call_env.link.clone(),
        provider: "kv".into(),
        config: Default::default(),
    };
    let link_body = serde_json::to_vec(&message).unwrap();
    let mut link_env = envelope(&s.lattice, subjects.link_put(), &link_body);
    link_env.kind = RequestKind::LinkPut;
    link_env.actor = call_env.actor.clone();
    link_env.operation = String::new();
    let (token, jti) = wire::sign_envelope(&s.cluster, &me, link_env).unwrap();
    let answer = request(&s.client, subjects.link_put(), Some(&token), &link_body).await;
    assert_eq!(header(&answer, HEADER_ERROR), None);
    wire::verify_response(
        &plugin_key,
        &jti,
        &answer.payload,
        None,
        header(&answer, HEADER_RESPONSE).as_deref(),
    )
    .unwrap();
    let (token, _) = wire::sign_envelope(&s.cluster, &me, call_env).unwrap();
    let (kind, text) = raw_invoke(&s.client, &subjects, Some(&token), &body).await;
    assert_eq!(kind.as_deref(), Some("failed"));
    assert!(text.contains("Frobnicate"), "{text}");

    // SIGTERM: it drains and exits with success.
    let pid = plugin.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = plugin.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the plugin did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    s.rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_refuses_every_changed_field_and_binds_its_answers() {
    let s = setup(identity("keyvalue"), Policy::new()).await;
    let _plugin = start_python_plugin(&s);
    wait_ready(&s.client, &s.lattice, &s.who.key.public_key()).await;
    crate::plugin::check_plugin_signatures(&s).await;
    s.rt.shutdown(Duration::from_secs(5)).await;
}
