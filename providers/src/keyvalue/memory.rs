//! The in-memory key-value backend.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sigil_actor::contracts::keyvalue as kv;

use super::{Backend, KvError, Scope, dispatch, lrange_bounds, parse_counter};
use crate::{Invocation, Link, LinkConfig, LinkTable, Provider, ProviderError};

/// The default of `max_bytes`.
const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// What a key costs besides its name and content, for `max_bytes`.
const KEY_OVERHEAD: u64 = 64;
/// What a list item or set member costs besides its bytes.
const ITEM_OVERHEAD: u64 = 16;

/// A `wasmcloud:keyvalue` provider that keeps keys in the host's memory, bounded by
/// `max_bytes`.
#[derive(Debug)]
pub struct MemoryKeyValue {
    links: LinkTable<Scope>,
    store: Mutex<Store>,
}

impl MemoryKeyValue {
    /// Reads the provider config: `max_bytes` (default `64MiB`).
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&["max_bytes"])?;
        let max_bytes = config.bytes("max_bytes", DEFAULT_MAX_BYTES)?;
        if max_bytes == 0 {
            return Err(ProviderError::Config(
                "`max_bytes` must be positive".to_string(),
            ));
        }
        Ok(MemoryKeyValue {
            links: LinkTable::new(kv::CONTRACT_ID),
            store: Mutex::new(Store {
                entries: HashMap::new(),
                used: 0,
                max_bytes,
            }),
        })
    }

    /// How many bytes the store counts against `max_bytes` now (expired keys not yet purged
    /// included).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
enum Data {
    Value(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Set(HashSet<Vec<u8>>),
}

#[derive(Debug)]
struct Entry {
    data: Data,
    expires: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What `data` stored under `key` costs.
fn cost(key: &str, data: &Data) -> u64 {
    let content = match data {
        Data::Value(v) => len64(v.len()),
        Data::List(items) => items.iter().map(|i| len64(i.len()) + ITEM_OVERHEAD).sum(),
        Data::Set(members) => members.iter().map(|m| len64(m.len()) + ITEM_OVERHEAD).sum(),
    };
    len64(key.len()) + KEY_OVERHEAD + content
}

#[derive(Debug)]
struct Store {
    entries: HashMap<String, Entry>,
    used: u64,
    max_bytes: u64,
}

impl Store {
    /// The live entry of `key`; an expired one is purged on the way.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = Instant::now();
        if self.entries.get(key).is_some_and(|e| e.expired(now)) {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.used = self.used.saturating_sub(cost(key, &entry.data));
        Some(entry)
    }

    /// Makes room for an entry growing from `old` to `new` bytes, purging expired keys if
    /// need be, and accounts for it.
    fn reserve(&mut self, old: u64, new: u64) -> Result<(), KvError> {
        if new > old {
            let grow = new - old;
            if self.used.saturating_add(grow) > self.max_bytes {
                self.purge_expired();
            }
            if self.used.saturating_add(grow) > self.max_bytes {
                return Err(KvError::Full {
                    max_bytes: self.max_bytes,
                });
            }
            self.used += grow;
        } else {
            self.used = self.used.saturating_sub(old - new);
        }
        Ok(())
    }

    fn purge_expired(&mut self) {
        let now = Instant::now();
        let mut freed = 0;
        self.entries.retain(|key, entry| {
            let keep = !entry.expired(now);
            if !keep {
                freed += cost(key, &entry.data);
            }
            keep
        });
        self.used = self.used.saturating_sub(freed);
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self.live(key).map(|e| &e.data) {
            None => Ok(None),
            Some(Data::Value(v)) => Ok(Some(v.clone())),
            Some(_) => Err(KvError::WrongKind),
        }
    }

    fn set(&mut self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let old = self.live(key).map_or(0, |e| cost(key, &e.data));
        let data = Data::Value(value);
        self.reserve(old, cost(key, &data))?;
        // A TTL too far out to represent never expires.
        let expires = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        self.entries
            .insert(key.to_string(), Entry { data, expires });
        Ok(())
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64, KvError> {
        let (current, old, expires) = match self.live(key) {
            None => (0, 0, None),
            Some(Entry {
                data: Data::Value(v),
                expires,
            }) => {
                let n = parse_counter(v).ok_or(KvError::NotInteger)?;
                (
                    n,
                    len64(key.len()) + KEY_OVERHEAD + len64(v.len()),
                    *expires,
                )
            }
            Some(_) => return Err(KvError::WrongKind),
        };
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        let data = Data::Value(next.to_string().into_bytes());
        self.reserve(old, cost(key, &data))?;
        // Like INCRBY, an increment keeps the key's expiry.
        self.entries
            .insert(key.to_string(), Entry { data, expires });
        Ok(next)
    }

    fn list_add(&mut self, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        let item = len64(value.len()) + ITEM_OVERHEAD;
        match self.live(key).map(|e| &e.data) {
            None => {
                let data = Data::List(VecDeque::from([value]));
                self.reserve(0, cost(key, &data))?;
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        data,
                        expires: None,
                    },
                );
                Ok(1)
            }
            Some(Data::List(_)) => {
                self.reserve(0, item)?;
                match self.entries.get_mut(key).map(|e| &mut e.data) {
                    Some(Data::List(items)) => {
                        items.push_back(value);
                        Ok(len64(items.len()))
                    }
                    _ => Err(KvError::WrongKind),
                }
            }
            Some(_) => Err(KvError::WrongKind),
        }
    }

    fn list_range(&mut self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, KvError> {
        match self.live(key).map(|e| &e.data) {
            None => Ok(Vec::new()),
            Some(Data::List(items)) => Ok(match lrange_bounds(items.len(), start, stop) {
                Some((first, last)) => items.range(first..=last).cloned().collect(),
                None => Vec::new(),
            }),
            Some(_) => Err(KvError::WrongKind),
        }
    }

    fn list_delete(&mut self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        let (removed, empty) = match self.live(key).map(|e| &mut e.data) {
            None => return Ok(0),
            Some(Data::List(items)) => {
                let before = items.len();
                items.retain(|i| i.as_slice() != value);
                (before - items.len(), items.is_empty())
            }
            Some(_) => return Err(KvError::WrongKind),
        };
        let freed = len64(removed) * (len64(value.len()) + ITEM_OVERHEAD);
        self.used = self.used.saturating_sub(freed);
        if empty {
            // Like Redis, a list that becomes empty no longer exists.
            self.remove(key);
        }
        Ok(len64(removed))
    }

    fn set_add(&mut self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        let item = len64(value.len()) + ITEM_OVERHEAD;
        match self.live(key).map(|e| &e.data) {
            None => {
                let data = Data::Set(HashSet::from([value]));
                self.reserve(0, cost(key, &data))?;
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        data,
                        expires: None,
                    },
                );
                Ok(true)
            }
            Some(Data::Set(members)) => {
                if members.contains(&value) {
                    return Ok(false);
                }
                self.reserve(0, item)?;
                match self.entries.get_mut(key).map(|e| &mut e.data) {
                    Some(Data::Set(members)) => Ok(members.insert(value)),
                    _ => Err(KvError::WrongKind),
                }
            }
            Some(_) => Err(KvError::WrongKind),
        }
    }

    fn set_remove(&mut self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        let (removed, empty) = match self.live(key).map(|e| &mut e.data) {
            None => return Ok(false),
            Some(Data::Set(members)) => (members.remove(value), members.is_empty()),
            Some(_) => return Err(KvError::WrongKind),
        };
        if removed {
            self.used = self.used.saturating_sub(len64(value.len()) + ITEM_OVERHEAD);
        }
        if empty {
            self.remove(key);
        }
        Ok(removed)
    }

    fn set_members(&mut self, key: &str) -> Result<Vec<Vec<u8>>, KvError> {
        match self.live(key).map(|e| &e.data) {
            None => Ok(Vec::new()),
            Some(Data::Set(members)) => Ok(members.iter().cloned().collect()),
            Some(_) => Err(KvError::WrongKind),
        }
    }

    fn set_contains(&mut self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        match self.live(key).map(|e| &e.data) {
            None => Ok(false),
            Some(Data::Set(members)) => Ok(members.contains(value)),
            Some(_) => Err(KvError::WrongKind),
        }
    }
}

#[async_trait]
impl Backend for MemoryKeyValue {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.lock().get(key)
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), KvError> {
        let ttl = ttl_seconds.map(|s| Duration::from_secs(u64::from(s)));
        self.lock().set(key, value, ttl)
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let mut store = self.lock();
        Ok(store.live(key).is_some() && store.remove(key).is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().live(key).is_some())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.lock().increment(key, delta)
    }

    async fn list_add(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        self.lock().list_add(key, value)
    }

    async fn list_range(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, KvError> {
        self.lock().list_range(key, start, stop)
    }

    async fn list_delete(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        self.lock().list_delete(key, &value)
    }

    async fn set_add(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        self.lock().set_add(key, value)
    }

    async fn set_remove(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        self.lock().set_remove(key, &value)
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Vec<u8>>, KvError> {
        self.lock().set_members(key)
    }

    async fn set_contains(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        self.lock().set_contains(key, &value)
    }
}

#[async_trait]
impl Provider for MemoryKeyValue {
    fn contract_id(&self) -> &'static str {
        kv::CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        super::add_link(&self.links, link)
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        super::scope_of(link).map(drop)
    }

    async fn link_removed(&self, link: &Link) {
        self.links.remove(link);
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        dispatch(self, &self.links, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_bytes: u64) -> Store {
        Store {
            entries: HashMap::new(),
            used: 0,
            max_bytes,
        }
    }

    #[test]
    fn accounting_follows_every_write() {
        let mut s = store(1 << 20);
        s.set("a", b"12345".to_vec(), None).unwrap();
        assert_eq!(s.used, 1 + KEY_OVERHEAD + 5);
        s.set("a", b"1".to_vec(), None).unwrap();
        assert_eq!(s.used, 1 + KEY_OVERHEAD + 1);
        s.increment("a", 99).unwrap();
        assert_eq!(s.used, 1 + KEY_OVERHEAD + 3);
        s.list_add("l", b"xy".to_vec()).unwrap();
        s.list_add("l", b"xy".to_vec()).unwrap();
        s.list_add("l", b"z".to_vec()).unwrap();
        assert_eq!(s.list_delete("l", b"xy").unwrap(), 2);
        s.set_add("s", b"m".to_vec()).unwrap();
        s.set_add("s", b"m".to_vec()).unwrap();
        let expected: u64 = s.entries.iter().map(|(k, e)| cost(k, &e.data)).sum();
        assert_eq!(s.used, expected);
        s.set_remove("s", b"m").unwrap();
        s.list_delete("l", b"z").unwrap();
        assert!(!s.entries.contains_key("s") && !s.entries.contains_key("l"));
        s.remove("a");
        assert_eq!(s.used, 0);
    }

    #[test]
    fn full_store_refuses_writes_but_reclaims_expired_keys() {
        let mut s = store(KEY_OVERHEAD + 101);
        s.set("k", vec![0; 100], Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // The expired key is purged to make room.
        s.set("j", vec![0; 100], None).unwrap();
        assert_eq!(
            s.set("i", vec![0; 1], None),
            Err(KvError::Full {
                max_bytes: KEY_OVERHEAD + 101
            })
        );
        assert_eq!(s.get("j").unwrap().map(|v| v.len()), Some(100));
    }
}
