//! Publish-subscribe messaging (`wasmcloud:messaging`); see
//! [`contracts::messaging`](crate::contracts::messaging).
//!
//! To receive messages, export [`OP_HANDLE_MESSAGE`](crate::contracts::messaging::OP_HANDLE_MESSAGE):
//!
//! ```ignore
//! use sigil_actor::prelude::*;
//!
//! sigil_actor::actor! { "HandleMessage" => handle_message }
//!
//! fn handle_message(msg: Message) -> HandlerResult<()> {
//!     if let Some(reply_to) = &msg.reply_to {
//!         Messaging::default().publish(reply_to, &msg.body)?;
//!     }
//!     Ok(())
//! }
//! ```

use std::time::Duration;

use crate::Result;
use crate::contracts::messaging::{self as msg, CONTRACT_ID, Message};
use crate::host::{DEFAULT_LINK, call, call_unit};

/// A client for the message broker bound to one of the actor's links.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Messaging {
    link: String,
}

impl Default for Messaging {
    /// The broker on the `default` link.
    fn default() -> Self {
        Self::link(DEFAULT_LINK)
    }
}

impl Messaging {
    /// The broker on the `default` link.
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker on link `name`.
    pub fn link(name: impl Into<String>) -> Self {
        Self { link: name.into() }
    }

    /// The link this client calls through.
    pub fn link_name(&self) -> &str {
        &self.link
    }

    /// Publishes `body` on `subject`.
    ///
    /// # Errors
    /// [`Error::HostCall`](crate::Error::HostCall) when the host or the broker refuses
    /// (the claims do not grant `wasmcloud:messaging`, the link is not bound, the subject
    /// is not allowed).
    pub fn publish(&self, subject: &str, body: impl AsRef<[u8]>) -> Result<()> {
        self.publish_request(subject, None, body.as_ref())
    }

    /// Publishes `body` on `subject`, asking receivers to reply on `reply_to`.
    ///
    /// # Errors
    /// As [`Messaging::publish`].
    pub fn publish_with_reply(
        &self,
        subject: &str,
        reply_to: &str,
        body: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.publish_request(subject, Some(reply_to), body.as_ref())
    }

    fn publish_request(&self, subject: &str, reply_to: Option<&str>, body: &[u8]) -> Result<()> {
        let request = msg::Publish {
            subject: subject.to_owned(),
            reply_to: reply_to.map(str::to_owned),
            body: body.to_vec(),
        };
        call_unit(&self.link, CONTRACT_ID, msg::OP_PUBLISH, &request)
    }

    /// Sends `body` on `subject` and waits up to `timeout` for one reply. A zero timeout
    /// uses the provider's default; timeouts are whole milliseconds, at most `u32::MAX`.
    ///
    /// # Errors
    /// As [`Messaging::publish`]; also when no reply came in time.
    pub fn request(
        &self,
        subject: &str,
        body: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Message> {
        let request = msg::Request {
            subject: subject.to_owned(),
            body: body.as_ref().to_vec(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        call(&self.link, CONTRACT_ID, msg::OP_REQUEST, &request)
    }
}
