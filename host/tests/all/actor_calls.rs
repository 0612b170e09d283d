//! Actor-to-actor calls (`sigil:actor`): on one host without NATS, across two hosts on the
//! real NATS by call alias and by public key, errors carried back, cycles cut off, the
//! claim required, and forged calls from the lattice refused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sigil_claims::{ActorSpec, KeyKind, KeyPair, keys, sign_module};
use sigil_host::up::Runtime;
use sigil_providers::LinkConfig;
use sigil_providers::plugin::Lattice;
use sigil_providers::plugin::wire;

use crate::common::sign;
use crate::guests::guest;
use crate::providers::{PROBE_CAPS, call, link, provider, runtime, unique};

const NATS: &str = "nats://127.0.0.1:4222";

/// The probe, signed as `name` with every probe capability and an optional call alias;
/// answers the module and its public key.
pub(crate) fn probe(name: &str, alias: Option<&str>) -> (Vec<u8>, String) {
    let account = keys::generate(KeyKind::Account);
    let subject = keys::generate(KeyKind::Module).public_key();
    let spec = ActorSpec {
        name: name.into(),
        caps: PROBE_CAPS.iter().map(|c| c.to_string()).collect(),
        call_alias: alias.map(str::to_string),
        ..Default::default()
    };
    let signed = sign_module(&guest("probe"), &spec, &account, &subject).unwrap();
    (signed.bytes, subject)
}

/// A host with the given probes, each linked to its own in-memory key-value store.
async fn host(probes: Vec<(Vec<u8>, &str)>) -> Arc<Runtime> {
    let rt = runtime();
    provider(&rt, "kv", "keyvalue-memory", LinkConfig::new()).await;
    for (bytes, name) in probes {
        rt.load_actor(bytes).await.unwrap();
        link(&rt, name, "keyvalue", "kv", LinkConfig::new()).await;
    }
    rt
}

fn cluster_copy(cluster: &KeyPair) -> KeyPair {
    KeyPair::from_seed(&cluster.seed().unwrap()).unwrap()
}

async fn join(rt: &Runtime, lattice: &str, cluster: &KeyPair) {
    let l = Lattice::new(
        NATS,
        lattice,
        cluster_copy(cluster),
        sigil_claims::Policy::new(),
    );
    rt.join_lattice(l, &[]).await.unwrap();
}

fn call_request(target: &str, operation: &str, key: &str, value: &str) -> serde_json::Value {
    json!({"target": target, "operation": operation, "key": key, "value": value})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_call_each_other_on_one_host_without_a_lattice() {
    let (a, _) = probe("probe-a", None);
    let (b, b_key) = probe("probe-b", Some("keeper"));
    let rt = host(vec![(a, "probe-a"), (b, "probe-b")]).await;

    // By name, by call alias and by public key: each reaches probe-b, whose own
    // key-value space holds the result.
    for (target, value) in [
        ("probe-b", "one"),
        ("keeper", "two"),
        (b_key.as_str(), "three"),
    ] {
        let set = call_request(target, "kv_set", "k", value);
        call(&rt, "probe-a", "call", set).await.unwrap();
        let got = call(&rt, "probe-b", "kv_get", json!({"key": "k"}))
            .await
            .unwrap();
        assert_eq!(got, value, "{target}");
    }
    // The callee's answer comes back to the caller.
    let get = call_request("keeper", "kv_get", "k", "");
    assert_eq!(call(&rt, "probe-a", "call", get).await.unwrap(), "three");
    // ... and so do its errors.
    let incr = call_request("keeper", "kv_incr", "k", "");
    let err = call(&rt, "probe-a", "call", incr).await.unwrap_err();
    assert!(err.contains("actor keeper"), "{err}");
    // An actor that is nowhere.
    let err = call(
        &rt,
        "probe-a",
        "call",
        call_request("nobody", "kv_get", "k", ""),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no actor nobody runs on this host"), "{err}");
    // An actor calling itself forever is cut off at the depth limit.
    let cycle = call_request("probe-a", "call", "", "");
    let err = call(&rt, "probe-a", "call", cycle).await.unwrap_err();
    assert!(err.contains("nest 9 deep"), "{err}");
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_on_one_host_calls_an_actor_on_another_over_the_lattice() {
    let lattice = unique("calls");
    let cluster = keys::generate(KeyKind::Cluster);
    let (a, _) = probe("probe-a", None);
    let (b, b_key) = probe("probe-b", Some("keeper"));
    let host_a = host(vec![(a, "probe-a")]).await;
    let host_b = host(vec![(b, "probe-b")]).await;
    join(&host_a, &lattice, &cluster).await;
    join(&host_b, &lattice, &cluster).await;

    for (target, value) in [("keeper", "by alias"), (b_key.as_str(), "by key")] {
        let set = call_request(target, "kv_set", "k", value);
        call(&host_a, "probe-a", "call", set).await.unwrap();
        let got = call(&host_b, "probe-b", "kv_get", json!({"key": "k"}))
            .await
            .unwrap();
        assert_eq!(got, value, "{target}");
    }
    let get = call_request("keeper", "kv_get", "k", "");
    assert_eq!(
        call(&host_a, "probe-a", "call", get).await.unwrap(),
        "by key"
    );
    let incr = call_request("keeper", "kv_incr", "k", "");
    let err = call(&host_a, "probe-a", "call", incr).await.unwrap_err();
    assert!(err.contains("actor keeper"), "{err}");
    let err = call(
        &host_a,
        "probe-a",
        "call",
        call_request("nobody", "kv_get", "k", ""),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("no actor nobody runs on this host or on any host of lattice"),
        "{err}"
    );
    // A cycle across hosts is cut off too: the depth travels in the signed envelope.
    let cycle = call_request("keeper", "call", "", "");
    let err = call(&host_a, "probe-a", "call", cycle).await.unwrap_err();
    assert!(err.contains("deep, more than 8"), "{err}");

    // A host that leaves stops taking calls: the lattice has no one else to ask.
    host_b.shutdown(Duration::from_secs(5)).await;
    let err = call(
        &host_a,
        "probe-a",
        "call",
        call_request("keeper", "kv_get", "k", ""),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no actor keeper"), "{err}");
    host_a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_the_claim_and_forged_calls_from_the_lattice_are_refused() {
    let lattice = unique("calls");
    let cluster = keys::generate(KeyKind::Cluster);
    // Signed without `actor`: the gate refuses before anything is routed.
    let caps: Vec<&str> = PROBE_CAPS
        .iter()
        .copied()
        .filter(|c| *c != "actor")
        .collect();
    let plain = sign(&guest("probe"), "plain", &caps);
    let (b, _) = probe("probe-b", Some("keeper"));
    let rt = host(vec![(plain.bytes, "plain"), (b, "probe-b")]).await;
    join(&rt, &lattice, &cluster).await;
    let err = call(
        &rt,
        "plain",
        "call",
        call_request("keeper", "kv_get", "k", ""),
    )
    .await
    .unwrap_err();
    assert!(err.contains("capability sigil:actor denied"), "{err}");

    let client = async_nats::connect(NATS).await.unwrap();
    let subject = wire::actor_subject(&lattice, "keeper");
    let body = rmp_serde::to_vec_named(&json!({"key": "k"})).unwrap();
    let ask = |token: Option<String>| {
        let (client, subject, body) = (client.clone(), subject.clone(), body.clone());
        async move { crate::plugin::raw_request(&client, subject, token.as_deref(), &body).await }
    };
    let (kind, text) = ask(None).await;
    assert_eq!(kind.as_deref(), Some("refused"), "{text}");
    assert!(text.contains("no Sigil-Invocation envelope"), "{text}");

    let envelope = |body: &[u8]| wire::Envelope {
        v: wire::WIRE_VERSION,
        kind: wire::RequestKind::ActorCall,
        actor: wire::WireActor {
            subject: keys::generate(KeyKind::Module).public_key(),
            name: "mallory".into(),
            issuer: keys::generate(KeyKind::Account).public_key(),
            caps: vec!["sigil:actor".into()],
        },
        contract: "sigil:actor".into(),
        link: "keeper".into(),
        operation: "kv_get".into(),
        hash: wire::body_hash(body),
        deadline_ms: wire::now_ms() + 5000,
        depth: 1,
        lattice: lattice.clone(),
        subject: subject.clone(),
        command: None,
    };
    let stranger = keys::generate(KeyKind::Cluster);
    let (token, _) = wire::sign_envelope(&stranger, "keeper", envelope(&body)).unwrap();
    let (kind, text) = ask(Some(token)).await;
    assert_eq!(kind.as_deref(), Some("refused"), "{text}");
    assert!(text.contains("not a trusted host cluster key"), "{text}");

    // A genuine envelope is served, once.
    let (token, _) = wire::sign_envelope(&cluster, "keeper", envelope(&body)).unwrap();
    let (kind, text) = ask(Some(token.clone())).await;
    assert_eq!(kind, None, "{text}");
    let (kind, text) = ask(Some(token)).await;
    assert_eq!(kind.as_deref(), Some("refused"), "{text}");
    assert!(text.contains("replay"), "{text}");
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_an_actor_call_is_signed_and_a_changed_one_is_refused() {
    use crate::plugin::{COMMON_CHANGES, Change, outcome, send, tamper};

    let lattice = unique("callsig");
    let cluster = keys::generate(KeyKind::Cluster);
    let (b, key_b) = probe("probe-b", Some("keeper"));
    let rt = host(vec![(b, "probe-b")]).await;
    join(&rt, &lattice, &cluster).await;
    let client = async_nats::connect(NATS).await.unwrap();
    let keeper = wire::actor_subject(&lattice, "keeper");
    let body = rmp_serde::to_vec_named(&json!({"key": "k"})).unwrap();
    let token = |edit: fn(&mut wire::Envelope)| {
        let mut envelope = wire::Envelope {
            v: wire::WIRE_VERSION,
            kind: wire::RequestKind::ActorCall,
            actor: wire::WireActor {
                subject: keys::generate(KeyKind::Module).public_key(),
                name: "caller".into(),
                issuer: keys::generate(KeyKind::Account).public_key(),
                caps: vec!["sigil:actor".into()],
            },
            contract: "sigil:actor".into(),
            link: "keeper".into(),
            operation: "kv_get".into(),
            hash: wire::body_hash(&body),
            deadline_ms: wire::now_ms() + 5000,
            depth: 1,
            lattice: lattice.clone(),
            subject: keeper.clone(),
            command: None,
        };
        edit(&mut envelope);
        wire::sign_envelope(&cluster, "keeper", envelope).unwrap()
    };
    let ask = |subject: String, token: String, body: Vec<u8>| {
        let client = client.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(wire::HEADER_INVOCATION, token.as_str());
            send(&client, subject, headers, &body).await
        }
    };
    let refused = |answer: async_nats::Message, expected: &str, what: &str| {
        let (kind, text) = outcome(&answer);
        assert_eq!(kind.as_deref(), Some("refused"), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    };

    // A genuine call is served, and its answer opens for it only, unchanged.
    let (genuine, jti) = token(|_| {});
    let answer = ask(keeper.clone(), genuine, body.clone()).await;
    let open = |m: &async_nats::Message, jti: &str| {
        wire::open_answer(m, jti, |_| Ok(&cluster)).map(|a| a.is_ok())
    };
    assert_eq!(open(&answer, &jti), Ok(true), "{:?}", outcome(&answer));
    assert!(open(&answer, "another").is_err());
    let mut altered = answer.clone();
    altered.payload = rmp_serde::to_vec(&"forged").unwrap().into();
    let e = open(&altered, &jti).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");

    // Each part changed after signing: the target, the operation, the caller, the depth ...
    let call: &[Change] = &[
        ("target", |c| c["sigil"]["link"] = "probe-b".into()),
        ("depth", |c| c["sigil"]["depth"] = 8.into()),
        ("contract", |c| {
            c["sigil"]["contract"] = "sigil:control".into()
        }),
        ("kind", |c| c["sigil"]["kind"] = "invoke".into()),
    ];
    for (what, change) in COMMON_CHANGES.iter().chain(call) {
        let (genuine, _) = token(|_| {});
        let answer = ask(keeper.clone(), tamper(&genuine, change), body.clone()).await;
        refused(answer, "does not verify", what);
    }
    // ... the payload, the target's subject, the lattice, the subject signed.
    let (genuine, _) = token(|_| {});
    let other = rmp_serde::to_vec_named(&json!({"key": "other"})).unwrap();
    refused(
        ask(keeper.clone(), genuine, other).await,
        "altered",
        "payload",
    );
    let (genuine, _) = token(|_| {});
    let by_key = wire::actor_subject(&lattice, &key_b);
    refused(
        ask(by_key, genuine, body.clone()).await,
        "meant for",
        "target",
    );
    let (elsewhere, _) = token(|e| e.lattice = "elsewhere".into());
    refused(
        ask(keeper.clone(), elsewhere, body.clone()).await,
        "another lattice",
        "lattice",
    );
    let (misdirected, _) = token(|e| e.subject.push_str("-x"));
    refused(
        ask(keeper.clone(), misdirected, body.clone()).await,
        "another subject",
        "subject",
    );
    rt.shutdown(Duration::from_secs(5)).await;
}
