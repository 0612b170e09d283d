//! A key-value store (`wasmcloud:keyvalue`); see [`contracts::keyvalue`](crate::contracts::keyvalue)
//! for what each operation means.
//!
//! ```ignore
//! use sigil_actor::keyvalue::KeyValue;
//!
//! let kv = KeyValue::default();              // link "default"
//! kv.set("greeting", "hello")?;
//! let visits = kv.increment("visits", 1)?;
//! let sessions = KeyValue::link("sessions");  // another store, bound by the operator
//! sessions.set_with_ttl("token:abc", b"user-42", 3600)?;
//! ```

use serde_bytes::ByteBuf;

use crate::contracts::keyvalue::{self as kv, CONTRACT_ID};
use crate::host::{DEFAULT_LINK, call, call_unit};
use crate::{Error, Result};

/// A client for the key-value store bound to one of the actor's links.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyValue {
    link: String,
}

impl Default for KeyValue {
    /// The store on the `default` link.
    fn default() -> Self {
        Self::link(DEFAULT_LINK)
    }
}

impl KeyValue {
    /// The store on the `default` link.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store on link `name`.
    pub fn link(name: impl Into<String>) -> Self {
        Self { link: name.into() }
    }

    /// The link this client calls through.
    pub fn link_name(&self) -> &str {
        &self.link
    }

    fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        request: &Req,
    ) -> Result<Resp> {
        call(&self.link, CONTRACT_ID, operation, request)
    }

    /// The value of `key`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::HostCall`] when the host or the store refuses (the actor's claims do not
    /// grant `wasmcloud:keyvalue`, the link is not bound, the store is unreachable).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let value: kv::GetResponse = self.call(
            kv::OP_GET,
            &kv::Get {
                key: key.to_owned(),
            },
        )?;
        Ok(value.map(ByteBuf::into_vec))
    }

    /// The value of `key` as text, or `None` when it does not exist.
    ///
    /// # Errors
    /// As [`KeyValue::get`], and [`Error::NotUtf8`] when the value is not UTF-8.
    pub fn get_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::NotUtf8 {
                    key: key.to_owned(),
                }),
        }
    }

    /// Sets `key` to `value`, with no expiry.
    ///
    /// # Errors
    /// As [`KeyValue::get`].
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.set_request(key, value.as_ref(), None)
    }

    /// Sets `key` to `value`, deleted after `ttl_seconds` (which must not be 0).
    ///
    /// # Errors
    /// As [`KeyValue::get`].
    pub fn set_with_ttl(&self, key: &str, value: impl AsRef<[u8]>, ttl_seconds: u32) -> Result<()> {
        self.set_request(key, value.as_ref(), Some(ttl_seconds))
    }

    fn set_request(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<()> {
        let request = kv::Set {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl_seconds,
        };
        call_unit(&self.link, CONTRACT_ID, kv::OP_SET, &request)
    }

    /// Deletes `key`, whatever it holds; `true` if it existed.
    ///
    /// # Errors
    /// As [`KeyValue::get`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.call(
            kv::OP_DELETE,
            &kv::Delete {
                key: key.to_owned(),
            },
        )
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// As [`KeyValue::get`].
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.call(
            kv::OP_EXISTS,
            &kv::Exists {
                key: key.to_owned(),
            },
        )
    }

    /// Adds `delta` to the counter at `key` (a missing key counts as 0) and returns the new
    /// value.
    ///
    /// # Errors
    /// As [`KeyValue::get`]; also when the value is not a decimal integer, or on overflow.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let request = kv::Increment {
            key: key.to_owned(),
            delta,
        };
        self.call(kv::OP_INCREMENT, &request)
    }

    /// Appends `value` to the list at `key` and returns the list's new length.
    ///
    /// # Errors
    /// As [`KeyValue::get`]; also when `key` holds something other than a list.
    pub fn list_add(&self, key: &str, value: impl AsRef<[u8]>) -> Result<u64> {
        let request = kv::ListAdd {
            key: key.to_owned(),
            value: value.as_ref().to_vec(),
        };
        self.call(kv::OP_LIST_ADD, &request)
    }

    /// The items of the list at `key` from index `start` to `stop`, both inclusive; a
    /// negative index counts from the end (`0, -1` is the whole list).
    ///
    /// # Errors
    /// As [`KeyValue::list_add`].
    pub fn list_range(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>> {
        let request = kv::ListRange {
            key: key.to_owned(),
            start,
            stop,
        };
        let items: kv::ListRangeResponse = self.call(kv::OP_LIST_RANGE, &request)?;
        Ok(items.into_iter().map(ByteBuf::into_vec).collect())
    }

    /// Removes every item equal to `value` from the list at `key`; returns how many.
    ///
    /// # Errors
    /// As [`KeyValue::list_add`].
    pub fn list_delete(&self, key: &str, value: impl AsRef<[u8]>) -> Result<u64> {
        let request = kv::ListDelete {
            key: key.to_owned(),
            value: value.as_ref().to_vec(),
        };
        self.call(kv::OP_LIST_DELETE, &request)
    }

    /// Adds `member` to the set at `key`; `true` if it was not there before.
    ///
    /// # Errors
    /// As [`KeyValue::get`]; also when `key` holds something other than a set.
    pub fn set_add(&self, key: &str, member: impl AsRef<[u8]>) -> Result<bool> {
        let request = kv::SetAdd {
            key: key.to_owned(),
            value: member.as_ref().to_vec(),
        };
        self.call(kv::OP_SET_ADD, &request)
    }

    /// Removes `member` from the set at `key`; `true` if it was there.
    ///
    /// # Errors
    /// As [`KeyValue::set_add`].
    pub fn set_remove(&self, key: &str, member: impl AsRef<[u8]>) -> Result<bool> {
        let request = kv::SetRemove {
            key: key.to_owned(),
            value: member.as_ref().to_vec(),
        };
        self.call(kv::OP_SET_REMOVE, &request)
    }

    /// The members of the set at `key`, in no particular order (empty if it does not exist).
    ///
    /// # Errors
    /// As [`KeyValue::set_add`].
    pub fn set_members(&self, key: &str) -> Result<Vec<Vec<u8>>> {
        let request = kv::SetMembers {
            key: key.to_owned(),
        };
        let members: kv::SetMembersResponse = self.call(kv::OP_SET_MEMBERS, &request)?;
        Ok(members.into_iter().map(ByteBuf::into_vec).collect())
    }

    /// Whether the set at `key` holds `member`.
    ///
    /// # Errors
    /// As [`KeyValue::set_add`].
    pub fn set_contains(&self, key: &str, member: impl AsRef<[u8]>) -> Result<bool> {
        let request = kv::SetContains {
            key: key.to_owned(),
            value: member.as_ref().to_vec(),
        };
        self.call(kv::OP_SET_CONTAINS, &request)
    }
}
