//! Random numbers and UUIDs from the host (`wasmcloud:builtin:numbergen`).
//!
//! A guest has no entropy of its own; these draw from the host's.

use crate::Result;
use crate::contracts::numbergen::{
    CONTRACT_ID, GenerateGuidResponse, OP_GENERATE_GUID, OP_RANDOM_32, OP_RANDOM_IN_RANGE,
    Random32Response, RandomInRange, RandomInRangeResponse,
};
use crate::host::{DEFAULT_LINK, call, call_raw, decode_response};

/// A random (version 4) UUID, hyphenated: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
///
/// # Errors
/// [`Error::HostCall`](crate::Error::HostCall) when the actor's claims do not grant
/// numbergen.
pub fn guid() -> Result<String> {
    let response = call_raw(DEFAULT_LINK, CONTRACT_ID, OP_GENERATE_GUID, &[])?;
    decode_response::<GenerateGuidResponse>(CONTRACT_ID, OP_GENERATE_GUID, &response)
}

/// A uniformly random `u32`.
///
/// # Errors
/// As [`guid`].
pub fn random_u32() -> Result<u32> {
    let response = call_raw(DEFAULT_LINK, CONTRACT_ID, OP_RANDOM_32, &[])?;
    decode_response::<Random32Response>(CONTRACT_ID, OP_RANDOM_32, &response)
}

/// A uniformly random `u32` with `min <= n <= max`.
///
/// # Errors
/// As [`guid`]; also when `min > max`.
pub fn random_in_range(min: u32, max: u32) -> Result<u32> {
    call::<_, RandomInRangeResponse>(
        DEFAULT_LINK,
        CONTRACT_ID,
        OP_RANDOM_IN_RANGE,
        &RandomInRange { min, max },
    )
}
