//! Capabilities the host serves itself: logging (to `tracing`) and number generation.

use sigil_actor::contracts::{self, logging, numbergen};

use super::ActorIdentity;
use crate::engine::HostCall;

/// Longest log line kept; the rest is cut (actors cannot flood the host's log).
const MAX_LOG_LINE: usize = 16 * 1024;

pub(super) fn logging(actor: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
    if call.operation != logging::OP_WRITE_LOG {
        return Err(unknown_op(logging::CONTRACT_ID, call.operation));
    }
    let entry: logging::WriteLog = contracts::decode(call.payload)
        .map_err(|e| format!("invalid {} payload: {e}", logging::OP_WRITE_LOG))?;
    let text = truncate(&entry.text, MAX_LOG_LINE);
    let name = actor.name.as_str();
    match entry.level.as_str() {
        "trace" => tracing::trace!(target: "sigil::actor", actor = name, "{text}"),
        "debug" => tracing::debug!(target: "sigil::actor", actor = name, "{text}"),
        "info" => tracing::info!(target: "sigil::actor", actor = name, "{text}"),
        "warn" => tracing::warn!(target: "sigil::actor", actor = name, "{text}"),
        "error" => tracing::error!(target: "sigil::actor", actor = name, "{text}"),
        other => {
            return Err(format!(
                "unknown log level {other:?}: use trace, debug, info, warn or error"
            ));
        }
    }
    Ok(Vec::new())
}

pub(super) fn numbergen(call: &HostCall<'_>) -> Result<Vec<u8>, String> {
    let encoded = match call.operation {
        numbergen::OP_GENERATE_GUID => contracts::encode(&uuid::Uuid::new_v4().to_string()),
        numbergen::OP_RANDOM_32 => contracts::encode(&rand::random::<u32>()),
        numbergen::OP_RANDOM_IN_RANGE => {
            let range: numbergen::RandomInRange = contracts::decode(call.payload)
                .map_err(|e| format!("invalid {} payload: {e}", numbergen::OP_RANDOM_IN_RANGE))?;
            if range.min > range.max {
                return Err(format!(
                    "RandomInRange: min {} is greater than max {}",
                    range.min, range.max
                ));
            }
            contracts::encode(&rand::Rng::gen_range(
                &mut rand::thread_rng(),
                range.min..=range.max,
            ))
        }
        other => return Err(unknown_op(numbergen::CONTRACT_ID, other)),
    };
    encoded.map_err(|e| format!("cannot encode the response: {e}"))
}

fn unknown_op(contract: &str, op: &str) -> String {
    format!("{contract} has no operation {op:?}")
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
