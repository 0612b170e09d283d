//! The JetStream workflow backend against the NATS server at 127.0.0.1:4222: compare-and-set
//! run state, idempotent setup by a second host, work shared between consumers of a route,
//! deduplication by message ID, redelivery after a negative acknowledgement or a missed ack
//! wait, messages that are not step messages, and watches of one key. Every test has its own stream, subjects
//! and bucket, deleted when it ends.

use std::time::Duration;

use bytes::Bytes;
use sigil_host::workflow::backend::{
    BackendError, Delivery, Entry, KeyWatch, RunStore, StepMessage, StepQueue, StepStream,
};
use sigil_host::workflow::jetstream::{JetStreamBackend, JetStreamOptions};
use tokio::time::timeout;

const URL: &str = "127.0.0.1:4222";

/// The longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

/// How long to watch for something that should not happen.
const QUIET: Duration = Duration::from_secs(1);

const ROUTE: &str = "key.MABCDEF";

/// Options naming a stream, subjects and bucket of this test alone.
fn options(ack_wait: Duration) -> JetStreamOptions {
    let id = uuid::Uuid::new_v4().simple().to_string();
    JetStreamOptions {
        stream: format!("TEST_STEPS_{id}"),
        subject_prefix: format!("test{id}.steps"),
        bucket: format!("TEST_RUNS_{id}"),
        ack_wait,
        ..JetStreamOptions::default()
    }
}

/// Deletes the test's stream and bucket when dropped, even when the test panics.
struct Cleanup(JetStreamOptions);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let options = self.0.clone();
        // A thread of its own: dropping may happen inside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(Ok(client)) = timeout(WAIT, async_nats::connect(URL)).await else {
                    return;
                };
                let jetstream = async_nats::jetstream::new(client);
                let _ = timeout(WAIT, jetstream.delete_stream(&options.stream)).await;
                let bucket = format!("KV_{}", options.bucket);
                let _ = timeout(WAIT, jetstream.delete_stream(&bucket)).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn connect(options: &JetStreamOptions) -> JetStreamBackend {
    timeout(WAIT, JetStreamBackend::connect(URL, options.clone()))
        .await
        .expect("connecting timed out")
        .expect("connecting")
}

async fn consume(backend: &JetStreamBackend, route: &str) -> Box<dyn StepStream> {
    timeout(WAIT, backend.consume(route))
        .await
        .expect("consume timed out")
        .expect("consume")
}

fn step(run: &str, step: &str) -> StepMessage {
    StepMessage {
        run: run.to_string(),
        step: step.to_string(),
    }
}

async fn publish(backend: &JetStreamBackend, route: &str, message: &StepMessage, id: &str) {
    timeout(WAIT, backend.publish(route, message, id))
        .await
        .expect("publish timed out")
        .expect("publish");
}

/// The next delivery of `stream`, failing after [`WAIT`].
async fn next(stream: &mut Box<dyn StepStream>) -> Box<dyn Delivery> {
    timeout(WAIT, stream.next())
        .await
        .expect("no delivery in time")
        .expect("the stream ended")
        .expect("a delivery error")
}

/// Fails when `stream` delivers anything within [`QUIET`].
async fn assert_quiet(stream: &mut Box<dyn StepStream>) {
    if let Ok(delivery) = timeout(QUIET, stream.next()).await {
        let delivery = delivery.map(|delivery| delivery.map(|d| d.message().clone()));
        panic!("unexpected delivery: {delivery:?}");
    }
}

async fn ack(delivery: Box<dyn Delivery>) {
    timeout(WAIT, delivery.ack())
        .await
        .expect("ack timed out")
        .expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_compare_and_set() {
    let options = options(Duration::from_secs(30));
    let _cleanup = Cleanup(options.clone());
    let store = connect(&options).await;

    assert_eq!(store.get("run.a").await.unwrap(), None);
    assert_eq!(store.keys().await.unwrap(), Vec::<String>::new());

    let first = store
        .create("run.a", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(
        store.get("run.a").await.unwrap(),
        Some(Entry {
            value: Bytes::from_static(b"one"),
            revision: first,
        })
    );

    let second = store
        .update("run.a", Bytes::from_static(b"two"), first)
        .await
        .unwrap();
    assert!(second > first, "{second} after {first}");
    assert_eq!(
        store.get("run.a").await.unwrap(),
        Some(Entry {
            value: Bytes::from_static(b"two"),
            revision: second,
        })
    );

    let conflict = BackendError::Conflict {
        key: "run.a".to_string(),
    };
    assert_eq!(
        store
            .update("run.a", Bytes::from_static(b"stale"), first)
            .await,
        Err(conflict.clone())
    );
    assert_eq!(
        store.create("run.a", Bytes::from_static(b"again")).await,
        Err(conflict)
    );
    assert_eq!(
        store
            .update("run.missing", Bytes::from_static(b"x"), second)
            .await,
        Err(BackendError::Conflict {
            key: "run.missing".to_string(),
        })
    );
    assert_eq!(
        store.get("run.a").await.unwrap().unwrap().value,
        &b"two"[..]
    );

    store
        .create("run.b", Bytes::from_static(b"bee"))
        .await
        .unwrap();
    let mut keys = store.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["run.a", "run.b"]);

    // A second host sets up the same stream and bucket, and shares the data.
    let other = connect(&options).await;
    assert_eq!(
        other.get("run.a").await.unwrap(),
        Some(Entry {
            value: Bytes::from_static(b"two"),
            revision: second,
        })
    );
    let third = other
        .update("run.a", Bytes::from_static(b"three"), second)
        .await
        .unwrap();
    assert_eq!(
        store
            .update("run.a", Bytes::from_static(b"lost"), second)
            .await,
        Err(BackendError::Conflict {
            key: "run.a".to_string(),
        })
    );
    assert_eq!(store.get("run.a").await.unwrap().unwrap().revision, third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_shares_a_route_between_consumers() {
    let options = options(Duration::from_secs(30));
    let _cleanup = Cleanup(options.clone());
    let one = connect(&options).await;
    let two = connect(&options).await;

    let sent: Vec<StepMessage> = (0..3).map(|i| step("run.q", &format!("s{i}"))).collect();
    for (i, message) in sent.iter().enumerate() {
        publish(&one, ROUTE, message, &format!("id-{i}")).await;
    }
    // Another route's message is not delivered here.
    publish(&one, "name.other", &step("run.o", "o"), "id-other").await;

    let mut first = consume(&one, ROUTE).await;
    let mut second = consume(&two, ROUTE).await;
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let delivery = timeout(WAIT, async {
            tokio::select! {
                delivery = first.next() => delivery,
                delivery = second.next() => delivery,
            }
        })
        .await
        .expect("no delivery in time")
        .expect("a stream ended")
        .expect("a delivery error");
        assert_eq!(delivery.delivered(), 1);
        received.push(delivery.message().clone());
        ack(delivery).await;
    }
    received.sort_by(|a, b| a.step.cmp(&b.step));
    assert_eq!(received, sent);

    let more = timeout(QUIET, async {
        tokio::select! {
            delivery = first.next() => delivery,
            delivery = second.next() => delivery,
        }
    })
    .await;
    assert!(more.is_err(), "a message was delivered twice");

    // The other route still holds its message.
    let mut other = consume(&two, "name.other").await;
    let delivery = next(&mut other).await;
    assert_eq!(delivery.message(), &step("run.o", "o"));
    ack(delivery).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_drops_duplicate_ids() {
    let options = options(Duration::from_secs(30));
    let _cleanup = Cleanup(options.clone());
    let backend = connect(&options).await;

    let message = step("run.d", "only");
    publish(&backend, ROUTE, &message, "run.d/only/1").await;
    publish(&backend, ROUTE, &message, "run.d/only/1").await;
    publish(&backend, ROUTE, &message, "run.d/only/2").await;

    let mut stream = consume(&backend, ROUTE).await;
    for _ in 0..2 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.message(), &message);
        assert_eq!(delivery.delivered(), 1);
        ack(delivery).await;
    }
    assert_quiet(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redelivers_after_nak_and_ack_wait() {
    let options = options(Duration::from_secs(1));
    let _cleanup = Cleanup(options.clone());
    let one = connect(&options).await;
    let two = connect(&options).await;
    let message = step("run.r", "retry");
    publish(&one, ROUTE, &message, "run.r/retry/1").await;

    let mut first = consume(&one, ROUTE).await;
    let delivery = next(&mut first).await;
    assert_eq!(delivery.message(), &message);
    assert_eq!(delivery.delivered(), 1);
    timeout(WAIT, delivery.nak(Duration::from_millis(300)))
        .await
        .unwrap()
        .unwrap();

    let delivery = next(&mut first).await;
    assert_eq!(delivery.message(), &message);
    assert_eq!(delivery.delivered(), 2);

    // Its consumer dies without acknowledging: another one gets it after the ack wait.
    drop(delivery);
    drop(first);
    let mut second = consume(&two, ROUTE).await;
    let delivery = next(&mut second).await;
    assert_eq!(delivery.message(), &message);
    assert!(delivery.delivered() >= 3, "{}", delivery.delivered());
    ack(delivery).await;
    tokio::time::sleep(options.ack_wait).await;
    assert_quiet(&mut second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_in_progress_holds_a_message() {
    let options = options(Duration::from_secs(1));
    let _cleanup = Cleanup(options.clone());
    let one = connect(&options).await;
    let two = connect(&options).await;
    let message = step("run.p", "slow");
    publish(&one, ROUTE, &message, "run.p/slow/1").await;

    let mut first = consume(&one, ROUTE).await;
    let delivery = next(&mut first).await;
    let mut second = consume(&two, ROUTE).await;
    // Three ack waits of work, reported as in progress: nobody gets the message meanwhile.
    let watch = async {
        tokio::select! {
            delivery = first.next() => delivery,
            delivery = second.next() => delivery,
        }
    };
    let work = async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            timeout(WAIT, delivery.in_progress())
                .await
                .unwrap()
                .unwrap();
        }
    };
    tokio::select! {
        redelivered = watch => {
            let redelivered = redelivered.map(|d| d.map(|d| d.message().clone()));
            panic!("redelivered while in progress: {redelivered:?}");
        }
        () = work => {}
    }
    assert_eq!(delivery.delivered(), 1);
    ack(delivery).await;
    tokio::time::sleep(options.ack_wait).await;
    assert_quiet(&mut first).await;
    assert_quiet(&mut second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_skips_invalid_messages() {
    let options = options(Duration::from_secs(1));
    let _cleanup = Cleanup(options.clone());
    let backend = connect(&options).await;

    let jetstream = async_nats::jetstream::new(backend.client().clone());
    let subject = format!("{}.{ROUTE}", options.subject_prefix);
    for garbage in ["not json", "{\"run\":\"r\"}", ""] {
        jetstream
            .publish(subject.clone(), garbage.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let message = step("run.g", "good");
    publish(&backend, ROUTE, &message, "run.g/good/1").await;

    let mut stream = consume(&backend, ROUTE).await;
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.message(), &message);
    assert_eq!(delivery.delivered(), 1);
    ack(delivery).await;
    // The invalid messages were terminated, not left to come back after the ack wait.
    tokio::time::sleep(options.ack_wait).await;
    assert_quiet(&mut stream).await;

    // And the work queue let go of all of them.
    let mut steps = jetstream.get_stream(&options.stream).await.unwrap();
    let messages = steps.info().await.unwrap().state.messages;
    assert_eq!(messages, 0);
}

async fn changed(watch: &mut Box<dyn KeyWatch>) -> Option<Entry> {
    timeout(WAIT, watch.changed())
        .await
        .expect("the watch saw no change")
        .expect("watching")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reports_every_change_of_its_key_from_its_start() {
    let options = options(Duration::from_secs(30));
    let _cleanup = Cleanup(options.clone());
    let store = connect(&options).await;
    let other = connect(&options).await;
    let first = store
        .create("run.w", Bytes::from_static(b"one"))
        .await
        .unwrap();

    // Set up before the changes, read after them: nothing made in between is missed.
    let mut watch = timeout(WAIT, store.watch("run.w"))
        .await
        .expect("watch timed out")
        .expect("watch");
    let second = other
        .update("run.w", Bytes::from_static(b"two"), first)
        .await
        .unwrap();
    other
        .create("run.elsewhere", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let third = other
        .update("run.w", Bytes::from_static(b"three"), second)
        .await
        .unwrap();
    // Each change comes with its value and revision; the value before the watch does not,
    // nor does another key.
    assert_eq!(
        changed(&mut watch).await,
        Some(Entry {
            value: Bytes::from_static(b"two"),
            revision: second,
        })
    );
    assert_eq!(
        changed(&mut watch).await,
        Some(Entry {
            value: Bytes::from_static(b"three"),
            revision: third,
        })
    );
    assert!(
        timeout(QUIET, watch.changed()).await.is_err(),
        "a change of another key woke the watch"
    );
    // A key not stored yet can be watched: its creation is its first change.
    let mut fresh = store.watch("run.later").await.unwrap();
    let created = other
        .create("run.later", Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(changed(&mut fresh).await.unwrap().revision, created);
}
