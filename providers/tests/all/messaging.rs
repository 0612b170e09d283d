//! Tests of the messaging providers: the same test body on the in-process bus and on the
//! shared NATS server (127.0.0.1:4222, unique subjects per test), delivery to actors
//! through a recording `ActorInvoker`, and NATS going away and coming back (a private
//! `nats-server` process).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use sigil_actor::contracts::messaging::*;
use sigil_actor::contracts::{decode, encode};
use sigil_providers::messaging::{Bus, BusMessaging, NatsMessaging};
use sigil_providers::{
    ActorIdentity, ActorInvoker, Health, Invocation, LinkConfig, Provider, ProviderError,
};

use crate::support::{ChildGuard, actor, deadline, link, spare_port, unique, wait_for_port};

/// The host as the tests see it: records every delivery, per actor, and can take a
/// while to handle each.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<HashMap<String, VecDeque<(String, Message)>>>,
    delay: Mutex<Duration>,
    running: AtomicUsize,
    peak: AtomicUsize,
    finished: AtomicUsize,
}

#[async_trait]
impl ActorInvoker for Recorder {
    async fn invoke_actor(
        &self,
        actor: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let message: Message = decode(&payload).map_err(|e| e.to_string())?;
        self.delivered
            .lock()
            .unwrap()
            .entry(actor.to_string())
            .or_default()
            .push_back((operation.to_string(), message));
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    }
}

impl Recorder {
    /// The next message delivered to `who`, waiting up to `within`.
    async fn next(&self, who: &ActorIdentity, within: Duration) -> Option<Message> {
        let started = Instant::now();
        loop {
            let next = self
                .delivered
                .lock()
                .unwrap()
                .get_mut(&who.subject)
                .and_then(VecDeque::pop_front);
            if let Some((operation, message)) = next {
                assert_eq!(operation, OP_HANDLE_MESSAGE);
                return Some(message);
            }
            if started.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn expect(&self, who: &ActorIdentity) -> Message {
        self.next(who, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("nothing delivered to {}", who.name))
    }

    async fn expect_none(&self, who: &ActorIdentity, within: Duration) {
        if let Some(m) = self.next(who, within).await {
            panic!("{} should have received nothing, got {m:?}", who.name);
        }
    }

    fn count(&self, who: &ActorIdentity) -> usize {
        self.delivered
            .lock()
            .unwrap()
            .get(&who.subject)
            .map_or(0, VecDeque::len)
    }
}

async fn raw(
    p: &dyn Provider,
    who: &ActorIdentity,
    op: &str,
    request: &impl Serialize,
) -> Result<Vec<u8>, ProviderError> {
    let payload = encode(request).unwrap();
    p.invoke(Invocation {
        actor: who,
        link_name: "default",
        operation: op,
        payload: &payload,
        deadline: deadline(10),
    })
    .await
}

async fn publish(
    p: &dyn Provider,
    who: &ActorIdentity,
    subject: &str,
    body: &[u8],
) -> Result<(), ProviderError> {
    let request = Publish {
        subject: subject.to_string(),
        reply_to: None,
        body: body.to_vec(),
    };
    let response = raw(p, who, OP_PUBLISH, &request).await?;
    assert!(response.is_empty(), "Publish answers with an empty payload");
    Ok(())
}

async fn request(
    p: &dyn Provider,
    who: &ActorIdentity,
    subject: &str,
    body: &[u8],
    timeout_ms: u32,
) -> Result<Message, ProviderError> {
    let request = Request {
        subject: subject.to_string(),
        body: body.to_vec(),
        timeout_ms,
    };
    raw(p, who, OP_REQUEST, &request)
        .await
        .map(|reply| decode(&reply).unwrap())
}

async fn linked(p: &dyn Provider, tag: &str, config: LinkConfig) -> Arc<ActorIdentity> {
    let who = actor(&unique(tag), &[CONTRACT_ID]);
    p.link_added(&link(&who, CONTRACT_ID, config))
        .await
        .unwrap();
    who
}

fn assert_denied(result: Result<impl std::fmt::Debug, ProviderError>, needles: &[&str]) {
    match result {
        Err(ProviderError::Denied(message)) => {
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{message:?} should say {needle:?}"
                );
            }
        }
        other => panic!("expected Denied, got {other:?}"),
    }
}

fn assert_failed(result: Result<impl std::fmt::Debug, ProviderError>, needle: &str) {
    match result {
        Err(ProviderError::Failed(message)) => {
            assert!(
                message.contains(needle),
                "{message:?} should say {needle:?}"
            )
        }
        other => panic!("expected a Failed error saying {needle:?}, got {other:?}"),
    }
}

fn bus_provider() -> Arc<dyn Provider> {
    Arc::new(BusMessaging::from_config(&LinkConfig::new()).unwrap())
}

fn nats_provider() -> Arc<dyn Provider> {
    Arc::new(
        NatsMessaging::from_config(&LinkConfig::new().with("url", "nats://127.0.0.1:4222"))
            .unwrap(),
    )
}

/// The contract's behaviour, the same on every backend.
async fn exercise(p: Arc<dyn Provider>) {
    let host = Arc::new(Recorder::default());
    p.start(host.clone()).await.unwrap();
    assert!(p.health().await.is_healthy());
    let root = unique("t");
    let s = |rest: &str| format!("{root}.{rest}");

    let sender = linked(
        p.as_ref(),
        "sender",
        LinkConfig::new().with(
            "publish",
            format!(
                "{}, {}, {}, nobody.{root}",
                s("allowed.>"),
                s("svc"),
                s("jobs.>")
            ),
        ),
    )
    .await;
    let receiver = linked(
        p.as_ref(),
        "receiver",
        LinkConfig::new().with("subscribe", s("allowed.*")),
    )
    .await;
    let spy = linked(
        p.as_ref(),
        "spy",
        LinkConfig::new()
            .with("subscribe", s(">"))
            .with("max_concurrent", "1"),
    )
    .await;

    // A publish on an allowed subject reaches the subscribers.
    publish(p.as_ref(), &sender, &s("allowed.one"), b"hello")
        .await
        .unwrap();
    let got = host.expect(&receiver).await;
    assert_eq!(
        got,
        Message {
            subject: s("allowed.one"),
            reply_to: None,
            body: b"hello".to_vec()
        }
    );
    assert_eq!(host.expect(&spy).await.subject, s("allowed.one"));

    // A subject outside the allowlist is refused, and nothing is sent.
    let refused = publish(p.as_ref(), &sender, &s("secret"), b"leak").await;
    assert_denied(refused, &[&s("secret"), &s("allowed.>"), "allowlist"]);
    // Without `publish`, an actor publishes nowhere.
    let mute = publish(p.as_ref(), &receiver, &s("allowed.two"), b"x").await;
    assert_denied(mute, &["may publish nowhere"]);
    assert_denied(
        request(p.as_ref(), &sender, &s("secret"), b"?", 100).await,
        &[&s("secret")],
    );
    publish(p.as_ref(), &sender, &s("allowed.two"), b"2")
        .await
        .unwrap();
    assert_eq!(host.expect(&spy).await.subject, s("allowed.two"));
    assert_eq!(host.expect(&receiver).await.subject, s("allowed.two"));

    // Wildcards: `*` is one token, `>` any number.
    publish(p.as_ref(), &sender, &s("allowed.deep.er"), b"3")
        .await
        .unwrap();
    assert_eq!(host.expect(&spy).await.subject, s("allowed.deep.er"));
    host.expect_none(&receiver, Duration::from_millis(200))
        .await;

    // Invalid subjects are invalid requests.
    for bad in [String::new(), s("a..b"), s("allowed.*"), s("allowed.>")] {
        let result = publish(p.as_ref(), &sender, &bad, b"").await;
        assert!(
            matches!(result, Err(ProviderError::InvalidRequest { .. })),
            "{bad:?}: {result:?}"
        );
    }
    // A Publish's own reply_to must be a subject of the link.
    let with_reply = |reply: &str| Publish {
        subject: s("allowed.r"),
        reply_to: Some(reply.to_string()),
        body: Vec::new(),
    };
    raw(
        p.as_ref(),
        &sender,
        OP_PUBLISH,
        &with_reply(&s("allowed.back")),
    )
    .await
    .unwrap();
    assert_eq!(
        host.expect(&receiver).await.reply_to.as_deref(),
        Some(s("allowed.back").as_str())
    );
    assert_eq!(host.expect(&spy).await.subject, s("allowed.r"));
    assert_denied(
        raw(
            p.as_ref(),
            &sender,
            OP_PUBLISH,
            &with_reply("elsewhere.inbox"),
        )
        .await,
        &["elsewhere.inbox"],
    );

    // Request and reply: the responder replies by publishing to the delivered reply_to,
    // which its link allows once, though it is in no allowlist.
    let responder = linked(
        p.as_ref(),
        "responder",
        LinkConfig::new().with("subscribe", s("svc")),
    )
    .await;
    let asking = {
        let (p, sender, subject) = (p.clone(), sender.clone(), s("svc"));
        tokio::spawn(async move { request(p.as_ref(), &sender, &subject, b"ping", 3000).await })
    };
    let question = host.expect(&responder).await;
    assert_eq!(question.body, b"ping");
    let reply_to = question.reply_to.expect("a request carries reply_to");
    publish(p.as_ref(), &responder, &reply_to, b"pong")
        .await
        .unwrap();
    let answer = asking.await.unwrap().unwrap();
    assert_eq!(answer.body, b"pong");
    assert_eq!(answer.subject, reply_to);
    // Only once, and only subjects it was given.
    assert_denied(
        publish(p.as_ref(), &responder, &reply_to, b"again").await,
        &[&reply_to],
    );
    assert_denied(
        publish(p.as_ref(), &responder, "_INBOX.made.up", b"x").await,
        &["_INBOX.made.up"],
    );
    // The spy saw the request, so it may reply too; another link's allowance is its own.
    let spied = host.expect(&spy).await;
    assert_eq!(spied.reply_to.as_deref(), Some(reply_to.as_str()));

    // No reply in time, and nobody listening.
    let started = Instant::now();
    // The responder got it, and may act on it: the text says so.
    assert_failed(
        request(p.as_ref(), &sender, &s("svc"), b"slow", 300).await,
        "no reply within 300ms; the request may or may not have been handled, so retry it \
         only if its handling is idempotent",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    host.expect(&responder).await;
    host.expect(&spy).await;
    let started = Instant::now();
    assert_failed(
        request(p.as_ref(), &sender, &format!("nobody.{root}"), b"?", 3000).await,
        "no responders",
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Queue groups: each message goes to one member of the group.
    let group = LinkConfig::new().with("subscribe", format!("{}|workers", s("jobs.*")));
    let w1 = linked(p.as_ref(), "w1", group.clone()).await;
    let w2 = linked(p.as_ref(), "w2", group).await;
    for i in 0..20 {
        publish(p.as_ref(), &sender, &s("jobs.x"), format!("{i}").as_bytes())
            .await
            .unwrap();
    }
    for _ in 0..20 {
        host.expect(&spy).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.count(&w1) + host.count(&w2) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (n1, n2) = (host.count(&w1), host.count(&w2));
    assert_eq!(n1 + n2, 20, "w1 got {n1}, w2 got {n2}");
    assert!(n1 > 0 && n2 > 0, "w1 got {n1}, w2 got {n2}");

    // Removing a link unsubscribes it.
    p.link_removed(&link(&receiver, CONTRACT_ID, LinkConfig::new()))
        .await;
    publish(p.as_ref(), &sender, &s("allowed.three"), b"3")
        .await
        .unwrap();
    assert_eq!(host.expect(&spy).await.subject, s("allowed.three"));
    host.expect_none(&receiver, Duration::from_millis(200))
        .await;
    assert!(matches!(
        publish(p.as_ref(), &receiver, &s("allowed.x"), b"").await,
        Err(ProviderError::NotLinked { .. })
    ));

    // Unknown operations; link configuration is checked when the link is added.
    assert!(matches!(
        raw(p.as_ref(), &sender, "Subscribe", &Publish::default()).await,
        Err(ProviderError::UnknownOperation { .. })
    ));
    for bad in [
        LinkConfig::new().with("subscribe", "a.>.b"),
        LinkConfig::new().with("subscribe", "a|"),
        LinkConfig::new().with("publish", "a b"),
        LinkConfig::new().with("max_concurrent", "0"),
        LinkConfig::new().with("subscibe", "a"),
    ] {
        let who = actor(&unique("bad"), &[CONTRACT_ID]);
        let result = p.link_added(&link(&who, CONTRACT_ID, bad.clone())).await;
        assert!(
            matches!(result, Err(ProviderError::Config(_))),
            "{bad:?}: {result:?}"
        );
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_on_the_bus() {
    exercise(bus_provider()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_on_nats() {
    exercise(nats_provider()).await;
}

/// Deliveries to one link run at most `max_concurrent` at once, and `quiesce` waits for
/// those in flight while actors can still publish.
async fn concurrency_and_drain(p: Arc<dyn Provider>) {
    let host = Arc::new(Recorder::default());
    *host.delay.lock().unwrap() = Duration::from_millis(300);
    p.start(host.clone()).await.unwrap();
    let root = unique("c");
    let worker = linked(
        p.as_ref(),
        "worker",
        LinkConfig::new()
            .with("subscribe", format!("{root}.work"))
            .with("publish", format!("{root}.done"))
            .with("max_concurrent", "2"),
    )
    .await;
    let sender = linked(
        p.as_ref(),
        "sender",
        LinkConfig::new().with("publish", format!("{root}.work")),
    )
    .await;
    for _ in 0..6 {
        publish(p.as_ref(), &sender, &format!("{root}.work"), b"job")
            .await
            .unwrap();
    }
    let started = Instant::now();
    while host.finished.load(Ordering::SeqCst) < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "deliveries stalled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(host.peak.load(Ordering::SeqCst), 2, "max_concurrent = 2");
    // 6 deliveries of 300 ms, two at a time.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // Graceful drain: quiesce returns once the deliveries in flight are done, and the
    // actor can still publish meanwhile; nothing is delivered after it.
    for _ in 0..2 {
        publish(p.as_ref(), &sender, &format!("{root}.work"), b"late")
            .await
            .unwrap();
    }
    while host.running.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let draining = Instant::now();
    p.quiesce().await;
    assert_eq!(
        host.finished.load(Ordering::SeqCst),
        8,
        "quiesce waited for deliveries"
    );
    assert!(draining.elapsed() < Duration::from_secs(2));
    publish(
        p.as_ref(),
        &worker,
        &format!("{root}.done"),
        b"still serving",
    )
    .await
    .unwrap();
    publish(p.as_ref(), &sender, &format!("{root}.work"), b"too late")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        host.finished.load(Ordering::SeqCst),
        8,
        "no delivery after quiesce"
    );
    p.stop().await;
    assert!(matches!(
        publish(p.as_ref(), &worker, &format!("{root}.done"), b"").await,
        Err(ProviderError::NotLinked { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_drain_on_the_bus() {
    concurrency_and_drain(bus_provider()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_drain_on_nats() {
    concurrency_and_drain(nats_provider()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_deliveries_in_flight() {
    let p = bus_provider();
    let host = Arc::new(Recorder::default());
    *host.delay.lock().unwrap() = Duration::from_millis(400);
    p.start(host.clone()).await.unwrap();
    let worker = linked(
        p.as_ref(),
        "w",
        LinkConfig::new().with("subscribe", "jobs.>"),
    )
    .await;
    let sender = linked(p.as_ref(), "s", LinkConfig::new().with("publish", "jobs.>")).await;
    for i in 0..3 {
        publish(p.as_ref(), &sender, &format!("jobs.{i}"), b"")
            .await
            .unwrap();
    }
    host.expect(&worker).await;
    while host.running.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    p.stop().await;
    assert_eq!(host.finished.load(Ordering::SeqCst), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_is_shared_with_the_host() {
    let bus = Bus::new();
    let p = BusMessaging::with_bus(bus.clone(), &LinkConfig::new()).unwrap();
    let host = Arc::new(Recorder::default());
    p.start(host.clone()).await.unwrap();
    let a = linked(
        &p,
        "a",
        LinkConfig::new()
            .with("subscribe", "events.*")
            .with("publish", "out.>"),
    )
    .await;
    // The host publishes on the bus; the actor receives it.
    assert_eq!(bus.publish("events.created", None, "e1").unwrap(), 1);
    assert_eq!(host.expect(&a).await.body, b"e1");
    // The actor publishes; a subscriber of the host receives it.
    let mut out = bus.subscribe("out.>", None).unwrap();
    publish(&p, &a, "out.x.y", b"o1").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.subject.as_str(), &got.body[..]),
        ("out.x.y", &b"o1"[..])
    );
    // A host-side request answered by an actor.
    let asking = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.request("events.question", "?", Duration::from_secs(2))
                .await
        })
    };
    let question = host.expect(&a).await;
    publish(&p, &a, question.reply_to.as_deref().unwrap(), b"!")
        .await
        .unwrap();
    assert_eq!(asking.await.unwrap().unwrap().body, "!");
    assert_eq!(p.bus().subscriptions(), bus.subscriptions());
    p.stop().await;
    assert_eq!(
        bus.subscriptions(),
        1,
        "only the host's own subscription is left"
    );
}

#[test]
fn provider_config_is_checked() {
    for bad in [
        LinkConfig::new().with("url", "nats://x"),
        LinkConfig::new().with("request_timeout", "0s"),
        LinkConfig::new().with("request_timeout", "soon"),
    ] {
        assert!(
            matches!(
                BusMessaging::from_config(&bad),
                Err(ProviderError::Config(_))
            ),
            "{bad:?}"
        );
    }
    for bad in [
        LinkConfig::new().with("url", "http://[::1"),
        LinkConfig::new().with("connect_timeout", "0ms"),
        LinkConfig::new().with("request_timeout", "2h"),
        LinkConfig::new().with("max_bytes", "1"),
    ] {
        assert!(
            matches!(
                NatsMessaging::from_config(&bad),
                Err(ProviderError::Config(_))
            ),
            "{bad:?}"
        );
    }
    let p = NatsMessaging::from_config(
        &LinkConfig::new().with("url", "nats://user:secret@127.0.0.1:4333"),
    )
    .unwrap();
    assert_eq!(p.address(), "127.0.0.1:4333");
    assert_eq!(p.kind(), "nats");
    assert_eq!(bus_provider().kind(), "bus");
}

/// A private `nats-server` on `port`.
fn start_nats(port: u16) -> ChildGuard {
    let server = ChildGuard::spawn(std::process::Command::new("/usr/sbin/nats-server").args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    server
}

fn private_nats(port: u16) -> Arc<dyn Provider> {
    Arc::new(
        NatsMessaging::from_config(
            &LinkConfig::new()
                .with("url", format!("nats://127.0.0.1:{port}"))
                .with("connect_timeout", "1s")
                .with("request_timeout", "1s"),
        )
        .unwrap(),
    )
}

/// Asserts that Publish and Request fail promptly, naming NATS and its address.
async fn assert_unavailable(p: &dyn Provider, who: &ActorIdentity, subject: &str, port: u16) {
    for op in [OP_PUBLISH, OP_REQUEST] {
        let started = Instant::now();
        let result = match op {
            OP_PUBLISH => publish(p, who, subject, b"lost").await.map(|_| ()),
            _ => request(p, who, subject, b"?", 500).await.map(|_| ()),
        };
        let took = started.elapsed();
        match &result {
            Err(e @ ProviderError::Unavailable { message, .. }) => {
                assert!(message.contains("NATS"), "{e}");
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{e}");
            }
            other => panic!("{op}: expected Unavailable, got {other:?}"),
        }
        assert!(took < Duration::from_millis(1500), "{op} took {took:?}");
    }
}

/// Publishes until it works, for up to `limit`; how long it took.
async fn until_published(
    p: &dyn Provider,
    who: &ActorIdentity,
    subject: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    while publish(p, who, subject, b"back").await.is_err() {
        assert!(
            started.elapsed() < limit,
            "publishing still fails after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_going_away_and_coming_back() {
    let port = spare_port();
    let mut server = start_nats(port);
    let p = private_nats(port);
    let host = Arc::new(Recorder::default());
    p.start(host.clone()).await.unwrap();
    let subject = "fault.event";
    let receiver = linked(
        p.as_ref(),
        "rx",
        LinkConfig::new().with("subscribe", "fault.*"),
    )
    .await;
    let sender = linked(
        p.as_ref(),
        "tx",
        LinkConfig::new().with("publish", "fault.>"),
    )
    .await;
    publish(p.as_ref(), &sender, subject, b"before")
        .await
        .unwrap();
    assert_eq!(host.expect(&receiver).await.body, b"before");

    server.kill();
    // The client notices the closed connection at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_unavailable(p.as_ref(), &sender, subject, port).await;
    assert!(matches!(p.health().await, Health::Unhealthy(why) if why.contains("NATS")));

    let _server = start_nats(port);
    let recovered = until_published(p.as_ref(), &sender, subject, Duration::from_secs(10)).await;
    // The subscription made before the restart delivers again.
    assert_eq!(host.expect(&receiver).await.body, b"back");
    assert!(p.health().await.is_healthy());
    eprintln!("nats restarted: publishing works again {recovered:?} after restart");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_start() {
    let port = spare_port();
    let p = private_nats(port);
    let host = Arc::new(Recorder::default());
    let started = Instant::now();
    p.start(host.clone()).await.unwrap();
    let receiver = linked(
        p.as_ref(),
        "rx",
        LinkConfig::new().with("subscribe", "late.*"),
    )
    .await;
    let sender = linked(
        p.as_ref(),
        "tx",
        LinkConfig::new().with("publish", "late.>"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!p.health().await.is_healthy());
    assert_unavailable(p.as_ref(), &sender, "late.event", port).await;

    let _server = start_nats(port);
    let recovered =
        until_published(p.as_ref(), &sender, "late.event", Duration::from_secs(10)).await;
    assert_eq!(host.expect(&receiver).await.body, b"back");
    eprintln!("nats appeared: publishing works {recovered:?} later");
    p.stop().await;
}

/// A rough figure: sequential publishes through the provider (each confirmed by the
/// server on NATS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate() {
    for p in [bus_provider(), nats_provider()] {
        let sender = linked(
            p.as_ref(),
            "rate",
            LinkConfig::new().with("publish", "rate.>"),
        )
        .await;
        let subject = format!("rate.{}", unique("r"));
        let n = 2000;
        let started = Instant::now();
        for _ in 0..n {
            publish(p.as_ref(), &sender, &subject, &[0; 128])
                .await
                .unwrap();
        }
        let took = started.elapsed();
        eprintln!(
            "{}: {n} publishes of 128 bytes in {took:?} ({:.0}/s)",
            p.kind(),
            n as f64 / took.as_secs_f64()
        );
    }
}
