//! `wasmcloud:keyvalue`: keys holding values, counters, lists and sets.
//!
//! Keys are UTF-8 strings; values, list items and set members are bytes (MessagePack
//! `bin`), so an actor stores text, JSON or its own encoding alike. A counter is a key
//! whose value is the decimal ASCII form of an `i64` (`b"42"`), as Redis keeps it: a
//! counter can be read with [`OP_GET`] and set with [`OP_SET`]. Each kind of value lives
//! under its own keys: a list operation on a key that holds a plain value (or a set) is an
//! error, and so is [`OP_INCREMENT`] on a value that is not a decimal integer.
//!
//! The provider scopes keys to the calling actor: two actors never see each other's keys.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The contract ID an actor's claims must grant to use a key-value store.
pub const CONTRACT_ID: &str = "wasmcloud:keyvalue";

/// Reads a value. Request: [`Get`]. Response: [`GetResponse`].
pub const OP_GET: &str = "Get";
/// Writes a value, optionally expiring. Request: [`Set`]. Response: empty.
pub const OP_SET: &str = "Set";
/// Deletes a key of any kind. Request: [`Delete`]. Response: [`DeleteResponse`].
pub const OP_DELETE: &str = "Delete";
/// Tells whether a key exists. Request: [`Exists`]. Response: [`ExistsResponse`].
pub const OP_EXISTS: &str = "Exists";
/// Adds to a counter. Request: [`Increment`]. Response: [`IncrementResponse`].
pub const OP_INCREMENT: &str = "Increment";
/// Appends an item to a list. Request: [`ListAdd`]. Response: [`ListAddResponse`].
pub const OP_LIST_ADD: &str = "ListAdd";
/// Reads a slice of a list. Request: [`ListRange`]. Response: [`ListRangeResponse`].
pub const OP_LIST_RANGE: &str = "ListRange";
/// Removes every occurrence of an item from a list. Request: [`ListDelete`]. Response:
/// [`ListDeleteResponse`].
pub const OP_LIST_DELETE: &str = "ListDelete";
/// Adds a member to a set. Request: [`SetAdd`]. Response: [`SetAddResponse`].
pub const OP_SET_ADD: &str = "SetAdd";
/// Removes a member from a set. Request: [`SetRemove`]. Response: [`SetRemoveResponse`].
pub const OP_SET_REMOVE: &str = "SetRemove";
/// Lists a set's members. Request: [`SetMembers`]. Response: [`SetMembersResponse`].
pub const OP_SET_MEMBERS: &str = "SetMembers";
/// Tells whether a set holds a member. Request: [`SetContains`]. Response:
/// [`SetContainsResponse`].
pub const OP_SET_CONTAINS: &str = "SetContains";

/// The response of [`OP_GET`]: the value, or nil when the key does not exist.
pub type GetResponse = Option<ByteBuf>;
/// The response of [`OP_DELETE`]: whether the key existed.
pub type DeleteResponse = bool;
/// The response of [`OP_EXISTS`]: whether the key exists.
pub type ExistsResponse = bool;
/// The response of [`OP_INCREMENT`]: the counter's value after the increment.
pub type IncrementResponse = i64;
/// The response of [`OP_LIST_ADD`]: the list's length after the append.
pub type ListAddResponse = u64;
/// The response of [`OP_LIST_RANGE`]: the items, in list order (empty for a missing key).
pub type ListRangeResponse = Vec<ByteBuf>;
/// The response of [`OP_LIST_DELETE`]: how many items were removed.
pub type ListDeleteResponse = u64;
/// The response of [`OP_SET_ADD`]: `true` if the member was not in the set before.
pub type SetAddResponse = bool;
/// The response of [`OP_SET_REMOVE`]: `true` if the member was in the set.
pub type SetRemoveResponse = bool;
/// The response of [`OP_SET_MEMBERS`]: the members, in no particular order.
pub type SetMembersResponse = Vec<ByteBuf>;
/// The response of [`OP_SET_CONTAINS`]: whether the member is in the set.
pub type SetContainsResponse = bool;

/// The request of [`OP_GET`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Get {
    /// The key to read.
    pub key: String,
}

/// The request of [`OP_SET`]; it replaces any value (and any expiry) the key had.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Set {
    /// The key to write.
    pub key: String,
    /// The new value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Seconds until the key expires and is deleted; nil (or absent) keeps it forever.
    /// Zero is an error.
    pub ttl_seconds: Option<u32>,
}

/// The request of [`OP_DELETE`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Delete {
    /// The key to delete, whatever it holds.
    pub key: String,
}

/// The request of [`OP_EXISTS`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Exists {
    /// The key to look for.
    pub key: String,
}

/// The request of [`OP_INCREMENT`]; a missing key counts as 0, and overflow is an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Increment {
    /// The counter's key.
    pub key: String,
    /// The amount to add; negative to decrement.
    pub delta: i64,
}

/// The request of [`OP_LIST_ADD`]; a missing key starts an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListAdd {
    /// The list's key.
    pub key: String,
    /// The item to append at the end.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The request of [`OP_LIST_RANGE`]. Indexes count from 0 at the head, or from -1 at the
/// tail; both ends are inclusive and clamped to the list (`0, -1` is the whole list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListRange {
    /// The list's key.
    pub key: String,
    /// The index of the first item to return.
    pub start: i64,
    /// The index of the last item to return.
    pub stop: i64,
}

impl Default for ListRange {
    /// The whole list of an empty key: `start = 0`, `stop = -1`.
    fn default() -> Self {
        Self {
            key: String::new(),
            start: 0,
            stop: -1,
        }
    }
}

/// The request of [`OP_LIST_DELETE`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListDelete {
    /// The list's key.
    pub key: String,
    /// The item to remove, compared byte for byte.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The request of [`OP_SET_ADD`]; a missing key starts an empty set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetAdd {
    /// The set's key.
    pub key: String,
    /// The member to add.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The request of [`OP_SET_REMOVE`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetRemove {
    /// The set's key.
    pub key: String,
    /// The member to remove.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The request of [`OP_SET_MEMBERS`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetMembers {
    /// The set's key.
    pub key: String,
}

/// The request of [`OP_SET_CONTAINS`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetContains {
    /// The set's key.
    pub key: String,
    /// The member to look for.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, contains_bin, round_trip};
    use crate::contracts::{decode, encode};

    fn key() -> String {
        "user:42".to_owned()
    }

    #[test]
    fn requests_round_trip() {
        round_trip(&Get { key: key() });
        round_trip(&Set {
            key: key(),
            value: b"alice".to_vec(),
            ttl_seconds: Some(60),
        });
        round_trip(&Set::default());
        round_trip(&Delete { key: key() });
        round_trip(&Exists { key: key() });
        round_trip(&Increment {
            key: key(),
            delta: -3,
        });
        round_trip(&ListAdd {
            key: key(),
            value: vec![0, 1, 2],
        });
        round_trip(&ListRange {
            key: key(),
            start: 2,
            stop: -2,
        });
        round_trip(&ListDelete {
            key: key(),
            value: vec![9],
        });
        round_trip(&SetAdd {
            key: key(),
            value: b"red".to_vec(),
        });
        round_trip(&SetRemove {
            key: key(),
            value: b"red".to_vec(),
        });
        round_trip(&SetMembers { key: key() });
        round_trip(&SetContains {
            key: key(),
            value: b"blue".to_vec(),
        });
    }

    #[test]
    fn responses_round_trip() {
        round_trip::<GetResponse>(&Some(ByteBuf::from(b"v".to_vec())));
        round_trip::<GetResponse>(&None);
        round_trip::<DeleteResponse>(&true);
        round_trip::<ExistsResponse>(&false);
        round_trip::<IncrementResponse>(&i64::MIN);
        round_trip::<ListAddResponse>(&3);
        round_trip::<ListRangeResponse>(&vec![ByteBuf::from(vec![1]), ByteBuf::new()]);
        round_trip::<ListDeleteResponse>(&0);
        round_trip::<SetAddResponse>(&true);
        round_trip::<SetRemoveResponse>(&false);
        round_trip::<SetMembersResponse>(&vec![ByteBuf::from(b"m".to_vec())]);
        round_trip::<SetContainsResponse>(&true);
    }

    #[test]
    fn values_are_msgpack_bin() {
        let value = b"\x00\x01binary".to_vec();
        let set = Set {
            key: key(),
            value: value.clone(),
            ttl_seconds: None,
        };
        assert!(contains_bin(&encode(&set).unwrap(), &value));
        let got: GetResponse = Some(ByteBuf::from(value.clone()));
        assert_eq!(encode(&got).unwrap()[0], 0xc4);
        let range: ListRangeResponse = vec![ByteBuf::from(value.clone())];
        assert!(contains_bin(&encode(&range).unwrap(), &value));
        let add = SetAdd {
            key: key(),
            value: value.clone(),
        };
        assert!(contains_bin(&encode(&add).unwrap(), &value));
    }

    #[test]
    fn values_sent_as_arrays_of_integers_are_accepted() {
        #[derive(Serialize)]
        struct LooseSet {
            key: String,
            value: Vec<u8>, // no serde_bytes: an array of integers
        }
        let loose = LooseSet {
            key: key(),
            value: vec![1, 2, 3],
        };
        let wire = encode(&loose).unwrap();
        assert!(!contains_bin(&wire, &[1, 2, 3]));
        assert_eq!(decode::<Set>(&wire).unwrap().value, [1, 2, 3]);
    }

    #[test]
    fn missing_key_in_get_response_is_nil() {
        assert_eq!(encode::<GetResponse>(&None).unwrap(), [0xc0]);
    }

    #[test]
    fn absent_fields_take_their_defaults() {
        let set: Set = decode(&encode(&Get { key: key() }).unwrap()).unwrap();
        assert_eq!(set.ttl_seconds, None);
        assert!(set.value.is_empty());
        let range: ListRange = decode(&encode(&Get { key: key() }).unwrap()).unwrap();
        assert_eq!((range.start, range.stop), (0, -1));
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<Get>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<Set>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<Increment>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<ListRange>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<SetAdd>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<GetResponse>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<ListRangeResponse>(garbage).is_err(), "{garbage:?}");
        }
    }
}
