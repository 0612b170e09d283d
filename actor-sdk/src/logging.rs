//! Log lines through the host (`wasmcloud:builtin:logging`).
//!
//! ```ignore
//! sigil_actor::logging::info("cache warmed")?;
//! sigil_actor::log!(debug, "{} entries", entries.len()); // ignores a failure to log
//! ```

use crate::Result;
use crate::contracts::logging::{CONTRACT_ID, OP_WRITE_LOG, WriteLog};
use crate::host::{DEFAULT_LINK, call_unit};

pub use crate::contracts::logging::Level;

/// Writes `text` to the host's log at `level`.
///
/// # Errors
/// [`Error::HostCall`](crate::Error::HostCall) when the actor's claims do not grant
/// logging or the host cannot write the line.
pub fn write(level: Level, text: &str) -> Result<()> {
    call_unit(
        DEFAULT_LINK,
        CONTRACT_ID,
        OP_WRITE_LOG,
        &WriteLog::new(level, text),
    )
}

/// Writes `text` at [`Level::Trace`]; see [`write()`].
///
/// # Errors
/// As [`write()`].
pub fn trace(text: &str) -> Result<()> {
    write(Level::Trace, text)
}

/// Writes `text` at [`Level::Debug`]; see [`write()`].
///
/// # Errors
/// As [`write()`].
pub fn debug(text: &str) -> Result<()> {
    write(Level::Debug, text)
}

/// Writes `text` at [`Level::Info`]; see [`write()`].
///
/// # Errors
/// As [`write()`].
pub fn info(text: &str) -> Result<()> {
    write(Level::Info, text)
}

/// Writes `text` at [`Level::Warn`]; see [`write()`].
///
/// # Errors
/// As [`write()`].
pub fn warn(text: &str) -> Result<()> {
    write(Level::Warn, text)
}

/// Writes `text` at [`Level::Error`]; see [`write()`].
///
/// # Errors
/// As [`write()`].
pub fn error(text: &str) -> Result<()> {
    write(Level::Error, text)
}
