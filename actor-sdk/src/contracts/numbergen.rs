//! `wasmcloud:builtin:numbergen`: random numbers and UUIDs from the host.
//!
//! The host draws from its operating system's random source, which a guest cannot reach.

use serde::{Deserialize, Serialize};

/// The contract ID an actor's claims must grant to draw random numbers.
pub const CONTRACT_ID: &str = "wasmcloud:builtin:numbergen";

/// A random (version 4) UUID. Request: empty. Response: [`GenerateGuidResponse`].
pub const OP_GENERATE_GUID: &str = "GenerateGuid";

/// A random `u32`. Request: empty. Response: [`Random32Response`].
pub const OP_RANDOM_32: &str = "Random32";

/// A random `u32` in an inclusive range. Request: [`RandomInRange`]. Response:
/// [`RandomInRangeResponse`].
pub const OP_RANDOM_IN_RANGE: &str = "RandomInRange";

/// The response of [`OP_GENERATE_GUID`]: a UUID v4 in hyphenated lower-case hex.
pub type GenerateGuidResponse = String;

/// The response of [`OP_RANDOM_32`]: a uniformly drawn `u32`.
pub type Random32Response = u32;

/// The response of [`OP_RANDOM_IN_RANGE`]: a uniformly drawn `u32` with `min <= n <= max`.
pub type RandomInRangeResponse = u32;

/// The request of [`OP_RANDOM_IN_RANGE`]; `min > max` is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RandomInRange {
    /// The smallest value that may be drawn.
    pub min: u32,
    /// The largest value that may be drawn.
    pub max: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, round_trip};
    use crate::contracts::{decode, encode};

    #[test]
    fn requests_and_responses_round_trip() {
        round_trip(&RandomInRange {
            min: 0,
            max: u32::MAX,
        });
        round_trip::<GenerateGuidResponse>(&"0b3e3f3c-5d6a-4c1e-9f1a-2b3c4d5e6f70".to_owned());
        round_trip::<Random32Response>(&u32::MAX);
    }

    #[test]
    fn responses_are_bare_values() {
        assert_eq!(encode::<Random32Response>(&7).unwrap(), [0x07]);
        assert_eq!(
            encode::<RandomInRangeResponse>(&70_000).unwrap(),
            [0xce, 0x00, 0x01, 0x11, 0x70]
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<RandomInRange>(garbage).is_err(), "{garbage:?}");
        }
        assert!(decode::<RandomInRange>(&encode(&(1u32,)).unwrap()).is_err());
    }
}
