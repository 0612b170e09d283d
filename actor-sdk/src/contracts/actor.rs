//! Calls to other actors (`sigil:actor`).
//!
//! The link name of the host call is the target: an actor's public key (`M...`), its
//! call alias (from its signed claims), or its name. The operation and the payload are
//! the target's own; the response is the target's response. The host serves the call
//! from an actor on the same host when it has one, otherwise from whichever host of the
//! lattice runs the target.

/// The contract ID an actor's claims must grant to call other actors.
pub const CONTRACT_ID: &str = "sigil:actor";

/// How deep calls may nest (an actor calling an actor calling ...) before the host
/// refuses: a guard against call cycles.
pub const MAX_DEPTH: u32 = 8;
