//! The wire contracts between actors, the host and capability providers.
//!
//! Every payload is MessagePack. Structs are encoded as maps keyed by field name, so a
//! peer can add a field without breaking an older one (unknown fields are ignored, and
//! missing fields take their defaults where a struct says `#[serde(default)]`). Byte
//! payloads (bodies, values, chunks) are MessagePack `bin`, never arrays of integers.
//!
//! There is one module per capability. Each names its contract ID (the capability an
//! actor's signed claims must grant), its operations (`OP_*`, the waPC operation names)
//! and the request and response types. A request type is named after its operation; an
//! operation that answers with nothing answers with an empty payload.
//!
//! ```
//! use sigil_actor::contracts::{self, numbergen::RandomInRange};
//!
//! let wire = contracts::encode(&RandomInRange { min: 1, max: 6 })?;
//! let back: RandomInRange = contracts::decode(&wire)?;
//! assert_eq!(back, RandomInRange { min: 1, max: 6 });
//!
//! // Garbage is an error, never a panic.
//! assert!(contracts::decode::<RandomInRange>(&[0xc1, 0x00]).is_err());
//! # Ok::<(), contracts::CodecError>(())
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod actor;
pub mod blobstore;
pub mod httpclient;
pub mod httpserver;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod numbergen;

pub use serde_bytes::ByteBuf;

/// Why a value could not be encoded to, or decoded from, MessagePack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded (a serializer error, such as a map with non-string
    /// keys in a type that asked for that to fail).
    #[error("cannot encode as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not MessagePack of the expected shape.
    #[error("cannot decode MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The bytes hold one complete value followed by more bytes.
    #[error("cannot decode MessagePack: {trailing} unexpected bytes after the value")]
    TrailingBytes {
        /// How many bytes were left over.
        trailing: usize,
    },
}

/// Encodes `value` as MessagePack with structs as maps keyed by field name.
///
/// # Errors
/// [`CodecError::Encode`] when the value's `Serialize` implementation fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// How deeply arrays and maps may nest in a decoded value. Decoding recurses once per
/// level, and payloads come from the other side of a trust boundary: the limit keeps a
/// hostile payload from overflowing the stack of a guest (which may have only tens of
/// KiB) or of a provider's thread. Contract types nest a few levels deep.
pub const MAX_DEPTH: usize = 128;

/// Decodes one MessagePack value of type `T` that must span all of `bytes`.
///
/// # Errors
/// [`CodecError::Decode`] when the bytes are not a `T` (or nest deeper than
/// [`MAX_DEPTH`]), and [`CodecError::TrailingBytes`] when a `T` is followed by anything
/// else.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut rest = bytes;
    let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
    deserializer.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut deserializer)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CodecError::TrailingBytes {
            trailing: rest.len(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;
    use std::fmt::Debug;

    /// Encodes `value`, decodes it back, and checks nothing was lost.
    pub(crate) fn round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let wire = encode(value).unwrap();
        let back: T = decode(&wire).unwrap();
        assert_eq!(&back, value, "round trip of {value:?}");
    }

    /// `true` when `wire` holds `bytes` as a MessagePack bin (not an array of integers).
    pub(crate) fn contains_bin(wire: &[u8], bytes: &[u8]) -> bool {
        let mut needle = match u8::try_from(bytes.len()) {
            Ok(len) => vec![0xc4, len],
            Err(_) => {
                let len = u16::try_from(bytes.len()).unwrap();
                let [hi, lo] = len.to_be_bytes();
                vec![0xc5, hi, lo]
            }
        };
        needle.extend_from_slice(bytes);
        wire.windows(needle.len()).any(|window| window == needle)
    }

    /// Inputs that must fail to decode as any contract struct.
    pub(crate) const GARBAGE: &[&[u8]] = &[
        &[],
        &[0xc1],                   // "never used" marker
        &[0xff, 0xff, 0xff],       // negative fixints, not a map
        &[0x81, 0xa3, b'k', b'e'], // map cut short inside a key
        &[0xdf, 0xff, 0xff, 0xff, 0xff],
        &[0xc4, 0x10, 1, 2], // bin claiming more bytes than there are
        b"not msgpack at all",
    ];

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn structs_encode_as_maps_keyed_by_field_name() {
        let wire = encode(&Point { x: 1, y: -2 }).unwrap();
        assert_eq!(wire, [0x82, 0xa1, b'x', 0x01, 0xa1, b'y', 0xfe]);
    }

    #[test]
    fn decode_accepts_fields_in_any_order() {
        let wire = [0x82, 0xa1, b'y', 0x02, 0xa1, b'x', 0x01];
        assert_eq!(decode::<Point>(&wire).unwrap(), Point { x: 1, y: 2 });
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut wire = encode(&7u32).unwrap();
        wire.extend_from_slice(&[0x01, 0x02]);
        let err = decode::<u32>(&wire).unwrap_err();
        assert!(
            matches!(err, CodecError::TrailingBytes { trailing: 2 }),
            "{err}"
        );
    }

    #[test]
    fn decode_of_garbage_is_an_error() {
        for garbage in GARBAGE {
            assert!(decode::<Point>(garbage).is_err(), "{garbage:?}");
        }
    }

    /// `depth` nested one-element arrays around a nil: `[[[...nil...]]]`.
    fn nested(depth: usize) -> Vec<u8> {
        let mut wire = vec![0x91; depth];
        wire.push(0xc0);
        wire
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let wire = nested(100_000);
        assert!(decode::<Point>(&wire).is_err());
        assert!(decode::<serde::de::IgnoredAny>(&wire).is_err());
        // An unknown field is skipped, not trusted: its depth is limited too.
        let mut map = vec![0x83, 0xa1, b'x', 0x01, 0xa1, b'y', 0x02, 0xa1, b'z'];
        map.extend_from_slice(&wire);
        assert!(decode::<Point>(&map).is_err());
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        assert!(decode::<serde::de::IgnoredAny>(&nested(MAX_DEPTH - 1)).is_ok());
        assert!(decode::<serde::de::IgnoredAny>(&nested(MAX_DEPTH + 1)).is_err());
    }
}
