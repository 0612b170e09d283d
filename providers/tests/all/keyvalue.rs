//! Tests of the key-value providers: every operation on the memory and Redis backends
//! (the same test body for both), isolation between actors, and Redis going away and
//! coming back. Redis tests use the shared server on 127.0.0.1:6379 with unique keys, and
//! their own `redis-server` processes for the fault tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use sigil_actor::contracts::keyvalue::*;
use sigil_actor::contracts::{decode, encode};
use sigil_providers::keyvalue::{MemoryKeyValue, RedisKeyValue};
use sigil_providers::{
    ActorIdentity, Health, Invocation, LinkConfig, NoActors, Provider, ProviderError,
};

use crate::support::{ChildGuard, actor, deadline, link, spare_port, unique, wait_for_port};

/// Calls `op` as `who` and returns the raw response.
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

/// Calls `op` as `who` and decodes the response.
async fn call<T: DeserializeOwned>(
    p: &dyn Provider,
    who: &ActorIdentity,
    op: &str,
    request: &impl Serialize,
) -> Result<T, ProviderError> {
    raw(p, who, op, request)
        .await
        .map(|bytes| decode(&bytes).unwrap())
}

fn key(k: &str) -> Get {
    Get { key: k.to_string() }
}

async fn get(p: &dyn Provider, who: &ActorIdentity, k: &str) -> Option<Vec<u8>> {
    call::<GetResponse>(p, who, OP_GET, &key(k))
        .await
        .unwrap()
        .map(ByteBuf::into_vec)
}

async fn set(p: &dyn Provider, who: &ActorIdentity, k: &str, v: &[u8]) {
    let empty = raw(
        p,
        who,
        OP_SET,
        &Set {
            key: k.to_string(),
            value: v.to_vec(),
            ttl_seconds: None,
        },
    )
    .await
    .unwrap();
    assert!(empty.is_empty(), "Set answers with an empty payload");
}

fn bin(v: &[u8]) -> ByteBuf {
    ByteBuf::from(v.to_vec())
}

async fn range(
    p: &dyn Provider,
    who: &ActorIdentity,
    k: &str,
    start: i64,
    stop: i64,
) -> Vec<ByteBuf> {
    call(
        p,
        who,
        OP_LIST_RANGE,
        &ListRange {
            key: k.to_string(),
            start,
            stop,
        },
    )
    .await
    .unwrap()
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

fn assert_invalid(result: Result<impl std::fmt::Debug, ProviderError>) {
    assert!(
        matches!(result, Err(ProviderError::InvalidRequest { .. })),
        "expected InvalidRequest, got {result:?}"
    );
}

fn redis_url() -> String {
    "redis://127.0.0.1:6379".to_string()
}

fn memory() -> Arc<dyn Provider> {
    Arc::new(MemoryKeyValue::from_config(&LinkConfig::new()).unwrap())
}

fn redis() -> Arc<dyn Provider> {
    Arc::new(RedisKeyValue::from_config(&LinkConfig::new().with("url", redis_url())).unwrap())
}

/// A fresh actor (unique public key) linked to `p` with `config`.
async fn linked(p: &dyn Provider, tag: &str, config: LinkConfig) -> Arc<ActorIdentity> {
    let who = actor(&unique(tag), &[CONTRACT_ID]);
    p.link_added(&link(&who, CONTRACT_ID, config))
        .await
        .unwrap();
    who
}

/// Every operation of the contract, with its edge cases.
async fn exercise(p: Arc<dyn Provider>) {
    let p = p.as_ref();
    p.start(Arc::new(NoActors)).await.unwrap();
    let a = linked(p, "kv", LinkConfig::new()).await;

    // Get, Set, Exists, Delete.
    assert_eq!(get(p, &a, "k").await, None);
    assert!(
        !call::<ExistsResponse>(p, &a, OP_EXISTS, &key("k"))
            .await
            .unwrap()
    );
    set(p, &a, "k", b"v").await;
    assert_eq!(get(p, &a, "k").await.as_deref(), Some(&b"v"[..]));
    assert!(
        call::<ExistsResponse>(p, &a, OP_EXISTS, &key("k"))
            .await
            .unwrap()
    );
    let binary = [0u8, 255, 1, 0, 7];
    set(p, &a, "bin", &binary).await;
    assert_eq!(get(p, &a, "bin").await.as_deref(), Some(&binary[..]));
    set(p, &a, "empty", b"").await;
    assert_eq!(get(p, &a, "empty").await.as_deref(), Some(&b""[..]));
    assert!(
        call::<DeleteResponse>(p, &a, OP_DELETE, &key("bin"))
            .await
            .unwrap()
    );
    assert!(
        !call::<DeleteResponse>(p, &a, OP_DELETE, &key("bin"))
            .await
            .unwrap()
    );
    assert_eq!(get(p, &a, "bin").await, None);
    // The Get response is a bare nil for a missing key, bare bin otherwise.
    assert_eq!(raw(p, &a, OP_GET, &key("bin")).await.unwrap(), [0xc0]);
    assert_eq!(
        raw(p, &a, OP_GET, &key("k")).await.unwrap(),
        [0xc4, 1, b'v']
    );

    // TTLs: visible until they expire, then gone; a plain Set clears the expiry.
    let with_ttl = |k: &str, ttl| Set {
        key: k.to_string(),
        value: b"soon gone".to_vec(),
        ttl_seconds: Some(ttl),
    };
    raw(p, &a, OP_SET, &with_ttl("ttl", 2)).await.unwrap();
    raw(p, &a, OP_SET, &with_ttl("kept", 1)).await.unwrap();
    set(p, &a, "kept", b"forever").await;
    assert!(get(p, &a, "ttl").await.is_some());
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(get(p, &a, "ttl").await, None);
    assert!(
        !call::<ExistsResponse>(p, &a, OP_EXISTS, &key("ttl"))
            .await
            .unwrap()
    );
    assert_eq!(get(p, &a, "kept").await.as_deref(), Some(&b"forever"[..]));
    assert_invalid(raw(p, &a, OP_SET, &with_ttl("zero", 0)).await);

    // Counters.
    let inc = |k: &str, delta| Increment {
        key: k.to_string(),
        delta,
    };
    assert_eq!(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("n", 5))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("n", -7))
            .await
            .unwrap(),
        -2
    );
    assert_eq!(get(p, &a, "n").await.as_deref(), Some(&b"-2"[..]));
    set(p, &a, "n", b"41").await;
    assert_eq!(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("n", 1))
            .await
            .unwrap(),
        42
    );
    assert_failed(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("k", 1)).await,
        "does not hold a decimal integer",
    );
    set(p, &a, "spaced", b" 1").await;
    assert_failed(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("spaced", 1)).await,
        "decimal integer",
    );
    set(p, &a, "max", i64::MAX.to_string().as_bytes()).await;
    assert_failed(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("max", 1)).await,
        "range of a 64-bit",
    );
    assert_eq!(
        get(p, &a, "max").await,
        Some(i64::MAX.to_string().into_bytes())
    );

    // Lists: append at the tail, LRANGE indexes, remove every equal item.
    let add = |k: &str, v: &[u8]| ListAdd {
        key: k.to_string(),
        value: v.to_vec(),
    };
    for (i, item) in [&b"a"[..], b"b", b"c", b"b"].iter().enumerate() {
        let len: ListAddResponse = call(p, &a, OP_LIST_ADD, &add("l", item)).await.unwrap();
        assert_eq!(len, i as u64 + 1);
    }
    assert_eq!(
        range(p, &a, "l", 0, -1).await,
        [bin(b"a"), bin(b"b"), bin(b"c"), bin(b"b")]
    );
    assert_eq!(range(p, &a, "l", 1, 2).await, [bin(b"b"), bin(b"c")]);
    assert_eq!(range(p, &a, "l", -2, -1).await, [bin(b"c"), bin(b"b")]);
    assert_eq!(range(p, &a, "l", -100, 100).await.len(), 4);
    assert!(range(p, &a, "l", 2, 1).await.is_empty());
    assert!(range(p, &a, "l", 4, 10).await.is_empty());
    assert!(range(p, &a, "missing", 0, -1).await.is_empty());
    // Absent start and stop mean the whole list.
    let whole: ListRangeResponse = call(p, &a, OP_LIST_RANGE, &key("l")).await.unwrap();
    assert_eq!(whole.len(), 4);
    let del = |k: &str, v: &[u8]| ListDelete {
        key: k.to_string(),
        value: v.to_vec(),
    };
    assert_eq!(
        call::<ListDeleteResponse>(p, &a, OP_LIST_DELETE, &del("l", b"b"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        call::<ListDeleteResponse>(p, &a, OP_LIST_DELETE, &del("l", b"z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        call::<ListDeleteResponse>(p, &a, OP_LIST_DELETE, &del("nolist", b"z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(range(p, &a, "l", 0, -1).await, [bin(b"a"), bin(b"c")]);

    // Sets.
    let member = |k: &str, v: &[u8]| SetAdd {
        key: k.to_string(),
        value: v.to_vec(),
    };
    let contains = |k: &str, v: &[u8]| SetContains {
        key: k.to_string(),
        value: v.to_vec(),
    };
    let remove = |k: &str, v: &[u8]| SetRemove {
        key: k.to_string(),
        value: v.to_vec(),
    };
    assert!(
        call::<SetAddResponse>(p, &a, OP_SET_ADD, &member("s", b"x"))
            .await
            .unwrap()
    );
    assert!(
        !call::<SetAddResponse>(p, &a, OP_SET_ADD, &member("s", b"x"))
            .await
            .unwrap()
    );
    assert!(
        call::<SetAddResponse>(p, &a, OP_SET_ADD, &member("s", b"y"))
            .await
            .unwrap()
    );
    let mut members: SetMembersResponse = call(p, &a, OP_SET_MEMBERS, &key("s")).await.unwrap();
    members.sort();
    assert_eq!(members, [bin(b"x"), bin(b"y")]);
    assert!(
        call::<SetContainsResponse>(p, &a, OP_SET_CONTAINS, &contains("s", b"x"))
            .await
            .unwrap()
    );
    assert!(
        !call::<SetContainsResponse>(p, &a, OP_SET_CONTAINS, &contains("s", b"z"))
            .await
            .unwrap()
    );
    assert!(
        !call::<SetContainsResponse>(p, &a, OP_SET_CONTAINS, &contains("noset", b"z"))
            .await
            .unwrap()
    );
    assert!(
        call::<SetRemoveResponse>(p, &a, OP_SET_REMOVE, &remove("s", b"x"))
            .await
            .unwrap()
    );
    assert!(
        !call::<SetRemoveResponse>(p, &a, OP_SET_REMOVE, &remove("s", b"x"))
            .await
            .unwrap()
    );
    let members: SetMembersResponse = call(p, &a, OP_SET_MEMBERS, &key("s")).await.unwrap();
    assert_eq!(members, [bin(b"y")]);
    assert!(
        call::<SetMembersResponse>(p, &a, OP_SET_MEMBERS, &key("noset"))
            .await
            .unwrap()
            .is_empty()
    );

    // A key holds one kind of thing; using it as another is an error naming the key.
    assert_failed(
        call::<GetResponse>(p, &a, OP_GET, &key("l")).await,
        "`l` holds another kind",
    );
    assert_failed(
        call::<ListAddResponse>(p, &a, OP_LIST_ADD, &add("k", b"1")).await,
        "needs a list",
    );
    assert_failed(
        call::<ListAddResponse>(p, &a, OP_LIST_ADD, &add("s", b"1")).await,
        "needs a list",
    );
    assert_failed(
        call::<ListRangeResponse>(p, &a, OP_LIST_RANGE, &key("k")).await,
        "needs a list",
    );
    assert_failed(
        call::<SetAddResponse>(p, &a, OP_SET_ADD, &member("l", b"1")).await,
        "needs a set",
    );
    assert_failed(
        call::<SetMembersResponse>(p, &a, OP_SET_MEMBERS, &key("k")).await,
        "needs a set",
    );
    assert_failed(
        call::<IncrementResponse>(p, &a, OP_INCREMENT, &inc("l", 1)).await,
        "holds another kind",
    );
    // Delete and Exists take any kind, and Set replaces whatever was there.
    assert!(
        call::<ExistsResponse>(p, &a, OP_EXISTS, &key("l"))
            .await
            .unwrap()
    );
    assert!(
        call::<DeleteResponse>(p, &a, OP_DELETE, &key("l"))
            .await
            .unwrap()
    );
    assert!(
        !call::<ExistsResponse>(p, &a, OP_EXISTS, &key("l"))
            .await
            .unwrap()
    );
    set(p, &a, "s", b"plain now").await;
    assert_eq!(get(p, &a, "s").await.as_deref(), Some(&b"plain now"[..]));
    // A list emptied by ListDelete no longer exists, as in Redis.
    call::<ListAddResponse>(p, &a, OP_LIST_ADD, &add("l2", b"only"))
        .await
        .unwrap();
    call::<ListDeleteResponse>(p, &a, OP_LIST_DELETE, &del("l2", b"only"))
        .await
        .unwrap();
    assert!(
        !call::<ExistsResponse>(p, &a, OP_EXISTS, &key("l2"))
            .await
            .unwrap()
    );

    // Keys: 1 to 1024 bytes.
    assert_invalid(raw(p, &a, OP_GET, &key("")).await);
    assert_invalid(raw(p, &a, OP_GET, &key(&"k".repeat(1025))).await);
    set(p, &a, &"k".repeat(1024), b"long").await;
    assert_eq!(
        get(p, &a, &"k".repeat(1024)).await.as_deref(),
        Some(&b"long"[..])
    );

    // Garbage, unknown operations, unlinked actors.
    let garbage = p
        .invoke(Invocation {
            actor: &a,
            link_name: "default",
            operation: OP_GET,
            payload: &[0xc1],
            deadline: deadline(5),
        })
        .await;
    assert_invalid(garbage);
    assert!(matches!(
        raw(p, &a, "Frobnicate", &key("k")).await,
        Err(ProviderError::UnknownOperation { .. })
    ));
    let stranger = actor(&unique("stranger"), &[CONTRACT_ID]);
    assert!(matches!(
        raw(p, &stranger, OP_GET, &key("k")).await,
        Err(ProviderError::NotLinked { .. })
    ));
    p.link_removed(&link(&a, CONTRACT_ID, LinkConfig::new()))
        .await;
    assert!(matches!(
        raw(p, &a, OP_GET, &key("k")).await,
        Err(ProviderError::NotLinked { .. })
    ));

    // Link config: `prefix` only.
    let typo = actor(&unique("typo"), &[CONTRACT_ID]);
    let refused = p
        .link_added(&link(
            &typo,
            CONTRACT_ID,
            LinkConfig::new().with("prefx", "x:"),
        ))
        .await;
    assert!(
        matches!(&refused, Err(ProviderError::Config(m)) if m.contains("prefx")),
        "{refused:?}"
    );
    assert!(p.health().await.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_memory() {
    exercise(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_redis() {
    exercise(redis()).await;
}

/// Actors never see each other's keys; links that set the same `prefix` share theirs.
async fn isolation(p: Arc<dyn Provider>) {
    let p = p.as_ref();
    let a = linked(p, "alice", LinkConfig::new()).await;
    let b = linked(p, "bob", LinkConfig::new()).await;
    set(p, &a, "shared-name", b"alice's").await;
    set(p, &b, "shared-name", b"bob's").await;
    assert_eq!(
        get(p, &a, "shared-name").await.as_deref(),
        Some(&b"alice's"[..])
    );
    assert_eq!(
        get(p, &b, "shared-name").await.as_deref(),
        Some(&b"bob's"[..])
    );
    set(p, &b, "bobs-only", b"secret").await;
    assert_eq!(get(p, &a, "bobs-only").await, None);
    assert!(
        !call::<ExistsResponse>(p, &a, OP_EXISTS, &key("bobs-only"))
            .await
            .unwrap()
    );
    assert!(
        !call::<DeleteResponse>(p, &a, OP_DELETE, &key("bobs-only"))
            .await
            .unwrap()
    );
    assert_eq!(
        get(p, &b, "bobs-only").await.as_deref(),
        Some(&b"secret"[..])
    );
    // A key spelling out B's prefix is still a key under A's own prefix.
    let spelled = format!("{}:bobs-only", b.subject);
    assert_eq!(get(p, &a, &spelled).await, None);
    for sneaky in ["../bobs-only", "*", "bobs-*", ":bobs-only"] {
        assert_eq!(get(p, &a, sneaky).await, None, "{sneaky}");
    }
    // Lists and sets are scoped the same way.
    let add = ListAdd {
        key: "queue".into(),
        value: b"job".to_vec(),
    };
    call::<ListAddResponse>(p, &b, OP_LIST_ADD, &add)
        .await
        .unwrap();
    assert!(range(p, &a, "queue", 0, -1).await.is_empty());

    // With `prefix`: two links on one prefix share keys; another prefix, and the default
    // one, do not see them.
    let team = unique("team");
    let shared = LinkConfig::new().with("prefix", format!("{team}:"));
    let c = linked(p, "carol", shared.clone()).await;
    let d = linked(p, "dave", shared).await;
    let e = linked(
        p,
        "eve",
        LinkConfig::new().with("prefix", format!("{team}-other:")),
    )
    .await;
    set(p, &c, "plan", b"team plan").await;
    assert_eq!(get(p, &d, "plan").await.as_deref(), Some(&b"team plan"[..]));
    assert_eq!(get(p, &e, "plan").await, None);
    assert_eq!(get(p, &a, "plan").await, None);
    assert_eq!(get(p, &c, "shared-name").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_isolated_in_memory() {
    isolation(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_isolated_on_redis() {
    isolation(redis()).await;
    // What Redis holds: the actor's key behind its public key, or behind `prefix`.
    let p = redis();
    let a = linked(p.as_ref(), "raw", LinkConfig::new()).await;
    let prefix = unique("pfx");
    let b = linked(
        p.as_ref(),
        "raw",
        LinkConfig::new().with("prefix", format!("{prefix}/")),
    )
    .await;
    set(p.as_ref(), &a, "k", b"1").await;
    set(p.as_ref(), &b, "k", b"2").await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{}:k", a.subject))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&b"1"[..]));
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{prefix}/k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&b"2"[..]));
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:k", a.subject))
        .arg(format!("{prefix}/k"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_is_bounded() {
    let p = MemoryKeyValue::from_config(&LinkConfig::new().with("max_bytes", "4KiB")).unwrap();
    let a = linked(&p, "big", LinkConfig::new()).await;
    set(&p, &a, "one", &[1; 2000]).await;
    let refused = raw(
        &p,
        &a,
        OP_SET,
        &Set {
            key: "two".into(),
            value: vec![2; 3000],
            ttl_seconds: None,
        },
    )
    .await;
    assert_failed(refused, "max_bytes");
    assert_eq!(get(&p, &a, "two").await, None);
    let grow = ListAdd {
        key: "list".into(),
        value: vec![3; 3000],
    };
    assert_failed(
        call::<ListAddResponse>(&p, &a, OP_LIST_ADD, &grow).await,
        "is full",
    );
    // Deleting makes room again.
    assert!(
        call::<DeleteResponse>(&p, &a, OP_DELETE, &key("one"))
            .await
            .unwrap()
    );
    assert_eq!(p.used_bytes(), 0);
    set(&p, &a, "two", &[2; 3000]).await;
    assert!(p.used_bytes() > 3000 && p.used_bytes() <= 4096);
    // Expired keys stop counting once the store needs the room.
    let short = Set {
        key: "short".into(),
        value: vec![4; 3000],
        ttl_seconds: Some(1),
    };
    assert!(
        call::<DeleteResponse>(&p, &a, OP_DELETE, &key("two"))
            .await
            .unwrap()
    );
    raw(&p, &a, OP_SET, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    set(&p, &a, "after", &[5; 3000]).await;
}

#[test]
fn provider_config_is_checked() {
    for bad in [
        LinkConfig::new().with("max_bytes", "lots"),
        LinkConfig::new().with("max_bytes", "0"),
        LinkConfig::new().with("url", "redis://x"),
    ] {
        assert!(
            matches!(
                MemoryKeyValue::from_config(&bad),
                Err(ProviderError::Config(_))
            ),
            "{bad:?}"
        );
    }
    for bad in [
        LinkConfig::new().with("url", "http://127.0.0.1:6379"),
        LinkConfig::new().with("connect_timeout", "soon"),
        LinkConfig::new().with("response_timeout", "0s"),
        LinkConfig::new().with("response_timeout", "2h"),
        LinkConfig::new().with("url", "rediss://127.0.0.1:6379"),
        LinkConfig::new().with("max_bytes", "1MiB"),
    ] {
        assert!(
            matches!(
                RedisKeyValue::from_config(&bad),
                Err(ProviderError::Config(_))
            ),
            "{bad:?}"
        );
    }
    let p = RedisKeyValue::from_config(
        &LinkConfig::new().with("url", "redis://:secret@127.0.0.1:6390/2"),
    )
    .unwrap();
    assert_eq!(p.address(), "127.0.0.1:6390");
    assert_eq!(p.kind(), "redis");
    assert_eq!(
        MemoryKeyValue::from_config(&LinkConfig::new())
            .unwrap()
            .kind(),
        "memory"
    );
}

/// A private `redis-server` on `port`, without persistence.
fn start_redis(port: u16) -> ChildGuard {
    let server = ChildGuard::spawn(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(std::env::temp_dir()),
    );
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    server
}

fn private_redis(port: u16) -> RedisKeyValue {
    RedisKeyValue::from_config(
        &LinkConfig::new()
            .with("url", format!("redis://127.0.0.1:{port}"))
            .with("connect_timeout", "1s")
            .with("response_timeout", "1s"),
    )
    .unwrap()
}

/// Retries `Set`+`Get` until it works, for up to `limit`; how long it took.
async fn until_it_works(
    p: &dyn Provider,
    who: &ActorIdentity,
    value: &[u8],
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let request = Set {
            key: "k".into(),
            value: value.to_vec(),
            ttl_seconds: None,
        };
        if raw(p, who, OP_SET, &request).await.is_ok() {
            assert_eq!(get(p, who, "k").await.as_deref(), Some(value));
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "redis calls still fail after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that a call fails promptly with a clear "unavailable" error naming redis and
/// its address; returns how long it took.
async fn assert_unavailable(p: &dyn Provider, who: &ActorIdentity, port: u16) -> Duration {
    let started = Instant::now();
    let result = raw(p, who, OP_GET, &key("k")).await;
    let took = started.elapsed();
    match &result {
        Err(e @ ProviderError::Unavailable { message, .. }) => {
            assert!(message.contains("redis"), "{e}");
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{e}");
            assert!(
                e.to_string()
                    .contains("wasmcloud:keyvalue backend unavailable"),
                "{e}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(4), "the call took {took:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_and_coming_back() {
    let port = spare_port();
    let mut server = start_redis(port);
    let p = private_redis(port);
    p.start(Arc::new(NoActors)).await.unwrap();
    assert!(p.health().await.is_healthy());
    let a = linked(&p, "fault", LinkConfig::new()).await;
    set(&p, &a, "k", b"before").await;
    assert_eq!(get(&p, &a, "k").await.as_deref(), Some(&b"before"[..]));

    server.kill();
    let first = assert_unavailable(&p, &a, port).await;
    let second = assert_unavailable(&p, &a, port).await;
    assert!(matches!(p.health().await, Health::Unhealthy(why) if why.contains("redis")));

    let _server = start_redis(port);
    let recovered = until_it_works(&p, &a, b"after", Duration::from_secs(10)).await;
    assert!(p.health().await.is_healthy());
    eprintln!(
        "redis down: calls failed in {first:?} and {second:?}; working again {recovered:?} after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start() {
    let port = spare_port();
    let p = private_redis(port);
    let started = Instant::now();
    p.start(Arc::new(NoActors)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "start took {:?}",
        started.elapsed()
    );
    assert!(matches!(p.health().await, Health::Unhealthy(_)));
    let a = linked(&p, "late", LinkConfig::new()).await;
    assert_unavailable(&p, &a, port).await;

    let _server = start_redis(port);
    let recovered = until_it_works(&p, &a, b"works", Duration::from_secs(10)).await;
    eprintln!("redis appeared: calls work {recovered:?} later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_increment_says_it_may_have_been_applied() {
    // The reported case: Redis paused, a counter increment gives up after the response
    // timeout, and once Redis runs again the increment turns out applied. The error the
    // actor reads must say that this can happen.
    let port = spare_port();
    let server = start_redis(port);
    let p = private_redis(port);
    let a = linked(&p, "counter", LinkConfig::new()).await;
    let bump = Increment {
        key: "hits".into(),
        delta: 1,
    };
    assert_eq!(call::<i64>(&p, &a, OP_INCREMENT, &bump).await.unwrap(), 1);

    server.signal("STOP");
    let result = raw(&p, &a, OP_INCREMENT, &bump).await;
    server.signal("CONT");
    let e = result.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("may or may not have been applied")
            && text.contains("retry it only if it is idempotent"),
        "{text}"
    );

    // Whether it was is the backend's business: here Redis ran it when it woke up.
    until_it_works(&p, &a, b"thawed", Duration::from_secs(10)).await;
    let hits = call::<Option<ByteBuf>>(&p, &a, OP_GET, &key("hits"))
        .await
        .unwrap()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    assert!(
        matches!(hits.as_deref(), Some("1" | "2")),
        "the counter is {hits:?}"
    );
    eprintln!("after the timed-out increment the counter is {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_stops_answering() {
    let port = spare_port();
    let server = start_redis(port);
    let p = private_redis(port);
    let a = linked(&p, "frozen", LinkConfig::new()).await;
    set(&p, &a, "k", b"before").await;

    // A frozen server keeps the connection open but never answers: calls give up after
    // the response timeout instead of hanging.
    server.signal("STOP");
    let started = Instant::now();
    let result = raw(&p, &a, OP_GET, &key("k")).await;
    let took = started.elapsed();
    assert!(
        matches!(&result, Err(ProviderError::Unavailable { message, .. }) if message.contains("redis")),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(3), "the call took {took:?}");

    server.signal("CONT");
    let recovered = until_it_works(&p, &a, b"thawed", Duration::from_secs(10)).await;
    eprintln!("redis frozen: call gave up after {took:?}; working {recovered:?} after it thawed");
}
