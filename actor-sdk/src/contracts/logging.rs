//! `wasmcloud:builtin:logging`: structured log lines from an actor to the host's log.

use serde::{Deserialize, Serialize};

/// The contract ID an actor's claims must grant to write logs.
pub const CONTRACT_ID: &str = "wasmcloud:builtin:logging";

/// Writes one log line. Request: [`WriteLog`]. Response: empty.
pub const OP_WRITE_LOG: &str = "WriteLog";

/// The request of [`OP_WRITE_LOG`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteLog {
    /// One of `trace`, `debug`, `info`, `warn`, `error` (see [`Level`]).
    pub level: String,
    /// The text of the line, as the actor wrote it.
    pub text: String,
}

impl WriteLog {
    /// A log line of `text` at `level`.
    pub fn new(level: Level, text: impl Into<String>) -> Self {
        Self {
            level: level.as_str().to_owned(),
            text: text.into(),
        }
    }
}

/// The severity of a log line, from the most verbose to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the actor recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Every level, from [`Level::Trace`] to [`Level::Error`].
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The name used on the wire: `trace`, `debug`, `info`, `warn` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level with wire name `name` (exactly as [`Level::as_str`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == name)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, round_trip};
    use crate::contracts::{decode, encode};

    #[test]
    fn write_log_round_trips() {
        round_trip(&WriteLog::new(Level::Warn, "disk almost full"));
        round_trip(&WriteLog::default());
    }

    #[test]
    fn write_log_wire_form_is_a_map_of_level_and_text() {
        let wire = encode(&WriteLog::new(Level::Info, "hi")).unwrap();
        let expected = [
            &[0x82, 0xa5][..],
            b"level",
            &[0xa4],
            b"info",
            &[0xa4],
            b"text",
            &[0xa2],
            b"hi",
        ]
        .concat();
        assert_eq!(wire, expected);
    }

    #[test]
    fn level_names_round_trip() {
        for level in Level::ALL {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            assert_eq!(level.to_string(), level.as_str());
        }
        assert_eq!(Level::from_name("INFO"), None);
        assert_eq!(Level::from_name("fatal"), None);
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<WriteLog>(garbage).is_err(), "{garbage:?}");
        }
    }
}
