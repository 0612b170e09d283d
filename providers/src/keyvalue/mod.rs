//! The `wasmcloud:keyvalue` providers: keys holding values, counters, lists and sets.
//!
//! Two backends serve the same contract with the same behaviour:
//!
//! - [`MemoryKeyValue`] (kind `memory`) keeps everything in the host's memory: no server,
//!   nothing survives a restart. Provider config: `max_bytes` (default `64MiB`), the total
//!   size of keys and values it holds (with a small per-key and per-item overhead); a
//!   write that would go past it fails and names the limit. Expired keys are invisible at
//!   once and purged lazily (when touched, or when the store is full).
//! - [`RedisKeyValue`] (kind `redis`) keeps keys on a Redis server. Provider config: `url`
//!   (default `redis://127.0.0.1:6379`; `rediss://` for TLS is not built in),
//!   `connect_timeout` and `response_timeout` (default `2s` each, at most `1h`). It
//!   connects on first use and reconnects by itself, so the host starts while Redis is
//!   down; every call made while Redis is unreachable fails within those two timeouts
//!   (at once if the connection is refused) as "backend unavailable", naming the address,
//!   the provider reports itself unhealthy, and calls work again as soon as Redis is back.
//!   Values, lists and sets are Redis strings, lists and sets; `Set` with a TTL is
//!   `SET .. EX`, `Increment` is `INCRBY`, `ListRange` is `LRANGE`, `ListDelete` is
//!   `LREM key 0`.
//!
//! Link config: `prefix` (optional), and no other key.
//!
//! **Isolation.** Every key an actor names is stored as the link's prefix followed by the
//! key, unchanged: the prefix is the link's `prefix` if set, otherwise the actor's public
//! key and a colon (`MABC...XYZ:`). Keys are opaque strings, never parsed, so an actor
//! cannot name a key outside its prefix, and two actors without a `prefix` never see each
//! other's keys. Two links that set the same `prefix` share their keys on purpose; end a
//! prefix with a separator (`orders:`) so that it is not the start of another link's
//! prefix. Keys must be 1 to 1024 bytes long.

use async_trait::async_trait;
use serde_bytes::ByteBuf;
use sigil_actor::contracts::keyvalue as kv;

use crate::{Invocation, Link, LinkTable, ProviderError, encode};

mod memory;
mod redis_store;

pub use memory::MemoryKeyValue;
pub use redis_store::RedisKeyValue;

/// The longest key an actor may name, in bytes (the prefix is not counted).
const MAX_KEY_BYTES: usize = 1024;

/// The link config keys of both backends.
const LINK_KEYS: &[&str] = &["prefix"];

/// Why a backend could not carry out an operation; [`dispatch`] words it for the actor
/// with the key the actor named (never the prefixed one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum KvError {
    /// The key holds another kind of value than the operation works on.
    WrongKind,
    /// `Increment` of a value that is not a decimal `i64`.
    NotInteger,
    /// `Increment` past the range of `i64`.
    Overflow,
    /// The memory store would grow past its `max_bytes`.
    Full {
        /// The limit.
        max_bytes: u64,
    },
    /// The backend cannot be reached; the call may work later.
    Unavailable(String),
    /// The backend refused the command for another reason.
    Failed(String),
}

/// What a backend stores, under keys that already carry the link's prefix.
#[async_trait]
trait Backend: Send + Sync + 'static {
    /// The value of `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Replaces `key` with a plain value, expiring after `ttl_seconds` if given.
    async fn set(&self, key: &str, value: Vec<u8>, ttl_seconds: Option<u32>)
    -> Result<(), KvError>;
    /// Deletes `key`; whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, KvError>;
    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> Result<bool, KvError>;
    /// Adds `delta` to the counter `key` (missing = 0); the new value.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Appends to the list `key`; its new length.
    async fn list_add(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError>;
    /// The items `start..=stop` of the list `key` (LRANGE indexes).
    async fn list_range(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, KvError>;
    /// Removes every item equal to `value`; how many.
    async fn list_delete(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError>;
    /// Adds a member; whether it is new.
    async fn set_add(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError>;
    /// Removes a member; whether it was there.
    async fn set_remove(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError>;
    /// The members of the set `key`.
    async fn set_members(&self, key: &str) -> Result<Vec<Vec<u8>>, KvError>;
    /// Whether the set `key` holds `value`.
    async fn set_contains(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError>;
}

/// What a link configured: the prefix of its keys.
#[derive(Debug)]
struct Scope {
    prefix: String,
}

/// Reads a link's configuration: `prefix`, or the actor's public key and a colon.
fn scope_of(link: &Link) -> Result<Scope, ProviderError> {
    link.config.only(LINK_KEYS)?;
    let prefix = match link.config.get("prefix") {
        Some(prefix) if prefix.len() > MAX_KEY_BYTES => {
            return Err(ProviderError::Config(format!(
                "`prefix` is {} bytes long; at most {MAX_KEY_BYTES}",
                prefix.len()
            )));
        }
        Some(prefix) => prefix.to_string(),
        None => format!("{}:", link.actor.subject),
    };
    Ok(Scope { prefix })
}

/// Registers a link's scope in `links` after validating its configuration.
fn add_link(links: &LinkTable<Scope>, link: &Link) -> Result<(), ProviderError> {
    let scope = scope_of(link)?;
    links.insert(link, scope);
    Ok(())
}

/// The full key for `key` in `scope`, after checking the key.
fn scoped(scope: &Scope, operation: &str, key: &str) -> Result<String, ProviderError> {
    if key.is_empty() {
        return Err(ProviderError::invalid(operation, "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ProviderError::invalid(
            operation,
            format!(
                "the key is {} bytes long; at most {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    let mut full = String::with_capacity(scope.prefix.len() + key.len());
    full.push_str(&scope.prefix);
    full.push_str(key);
    Ok(full)
}

/// What kind of value an operation works on, for wrong-kind errors.
fn kind_needed(operation: &str) -> &'static str {
    match operation {
        kv::OP_LIST_ADD | kv::OP_LIST_RANGE | kv::OP_LIST_DELETE => "a list",
        kv::OP_SET_ADD | kv::OP_SET_REMOVE | kv::OP_SET_MEMBERS | kv::OP_SET_CONTAINS => "a set",
        kv::OP_INCREMENT => "a counter (a plain value)",
        _ => "a plain value",
    }
}

/// Words a backend error for the actor, naming the key it used.
fn word(error: KvError, operation: &str, key: &str) -> ProviderError {
    match error {
        KvError::WrongKind => ProviderError::Failed(format!(
            "{operation}: key `{key}` holds another kind of value; {operation} needs {}",
            kind_needed(operation)
        )),
        KvError::NotInteger => ProviderError::Failed(format!(
            "{operation}: key `{key}` does not hold a decimal integer, so it cannot be incremented"
        )),
        KvError::Overflow => ProviderError::Failed(format!(
            "{operation}: key `{key}` would go past the range of a 64-bit signed integer"
        )),
        KvError::Full { max_bytes } => ProviderError::Failed(format!(
            "{operation}: the key-value store is full: writing key `{key}` would exceed its \
             max_bytes of {max_bytes} bytes; delete keys or raise `max_bytes`"
        )),
        KvError::Unavailable(message) => ProviderError::unavailable(kv::CONTRACT_ID, message),
        KvError::Failed(message) => ProviderError::Failed(format!("{operation}: {message}")),
    }
}

/// Bytes as a MessagePack `bin` list.
fn bins(items: Vec<Vec<u8>>) -> Vec<ByteBuf> {
    items.into_iter().map(ByteBuf::from).collect()
}

/// Decodes one call, runs it on `backend` under the caller's link scope, and encodes the
/// response: the one place where the contract's operations are interpreted.
async fn dispatch<B: Backend>(
    backend: &B,
    links: &LinkTable<Scope>,
    call: Invocation<'_>,
) -> Result<Vec<u8>, ProviderError> {
    let scope = links.get(call.actor, call.link_name)?;
    let op = call.operation;
    match op {
        kv::OP_GET => {
            let req: kv::Get = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let value = backend.get(&key).await.map_err(|e| word(e, op, &req.key))?;
            encode::<kv::GetResponse>(&value.map(ByteBuf::from))
        }
        kv::OP_SET => {
            let req: kv::Set = call.decode()?;
            if req.ttl_seconds == Some(0) {
                return Err(ProviderError::invalid(
                    op,
                    "ttl_seconds is 0; give a positive number of seconds, or nil to keep the key",
                ));
            }
            let key = scoped(&scope, op, &req.key)?;
            backend
                .set(&key, req.value, req.ttl_seconds)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            Ok(Vec::new())
        }
        kv::OP_DELETE => {
            let req: kv::Delete = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let existed = backend
                .delete(&key)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::DeleteResponse>(&existed)
        }
        kv::OP_EXISTS => {
            let req: kv::Exists = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let exists = backend
                .exists(&key)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::ExistsResponse>(&exists)
        }
        kv::OP_INCREMENT => {
            let req: kv::Increment = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let value = backend
                .increment(&key, req.delta)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::IncrementResponse>(&value)
        }
        kv::OP_LIST_ADD => {
            let req: kv::ListAdd = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let len = backend
                .list_add(&key, req.value)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::ListAddResponse>(&len)
        }
        kv::OP_LIST_RANGE => {
            let req: kv::ListRange = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let items = backend
                .list_range(&key, req.start, req.stop)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::ListRangeResponse>(&bins(items))
        }
        kv::OP_LIST_DELETE => {
            let req: kv::ListDelete = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let removed = backend
                .list_delete(&key, req.value)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::ListDeleteResponse>(&removed)
        }
        kv::OP_SET_ADD => {
            let req: kv::SetAdd = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let added = backend
                .set_add(&key, req.value)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::SetAddResponse>(&added)
        }
        kv::OP_SET_REMOVE => {
            let req: kv::SetRemove = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let removed = backend
                .set_remove(&key, req.value)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::SetRemoveResponse>(&removed)
        }
        kv::OP_SET_MEMBERS => {
            let req: kv::SetMembers = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let members = backend
                .set_members(&key)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::SetMembersResponse>(&bins(members))
        }
        kv::OP_SET_CONTAINS => {
            let req: kv::SetContains = call.decode()?;
            let key = scoped(&scope, op, &req.key)?;
            let contains = backend
                .set_contains(&key, req.value)
                .await
                .map_err(|e| word(e, op, &req.key))?;
            encode::<kv::SetContainsResponse>(&contains)
        }
        other => Err(ProviderError::unknown_operation(kv::CONTRACT_ID, other)),
    }
}

/// Parses a counter the way Redis does: the canonical decimal form of an `i64` (no sign
/// `+`, no leading zeros, no spaces).
fn parse_counter(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let n: i64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

/// The items `start..=stop` of a list of `len` items, with LRANGE's clamping: negative
/// indexes count from the tail, and a range that selects nothing is empty.
fn lrange_bounds(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).ok()?;
    let start = if start < 0 {
        start.saturating_add(len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop.saturating_add(len)
    } else {
        stop.min(len - 1)
    };
    if len == 0 || start > stop || start >= len || stop < 0 {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_like_redis() {
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"-7"), Some(-7));
        assert_eq!(parse_counter(b"0"), Some(0));
        assert_eq!(parse_counter(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_counter(b"+1"), None);
        assert_eq!(parse_counter(b"01"), None);
        assert_eq!(parse_counter(b" 1"), None);
        assert_eq!(parse_counter(b""), None);
        assert_eq!(parse_counter(b"1.5"), None);
        assert_eq!(parse_counter(b"9223372036854775808"), None);
    }

    #[test]
    fn list_ranges_clamp_like_lrange() {
        assert_eq!(lrange_bounds(5, 0, -1), Some((0, 4)));
        assert_eq!(lrange_bounds(5, 1, 2), Some((1, 2)));
        assert_eq!(lrange_bounds(5, -2, -1), Some((3, 4)));
        assert_eq!(lrange_bounds(5, -100, 100), Some((0, 4)));
        assert_eq!(lrange_bounds(5, 3, 1), None);
        assert_eq!(lrange_bounds(5, 5, 10), None);
        assert_eq!(lrange_bounds(5, 0, -6), None);
        assert_eq!(lrange_bounds(0, 0, -1), None);
        assert_eq!(lrange_bounds(5, i64::MIN, i64::MAX), Some((0, 4)));
    }
}
