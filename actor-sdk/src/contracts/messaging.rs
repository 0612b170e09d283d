//! `wasmcloud:messaging`: publish-subscribe and request-reply messaging.
//!
//! Subjects are dot-separated tokens, as in NATS (`orders.created`). The provider
//! delivers a message on a subject the actor's link subscribes to by invoking the actor's
//! [`OP_HANDLE_MESSAGE`] operation with a [`Message`], and it checks every subject an
//! actor publishes to against the link's allowlist.

use serde::{Deserialize, Serialize};

/// The contract ID an actor's claims must grant to publish or receive messages.
pub const CONTRACT_ID: &str = "wasmcloud:messaging";

/// Publishes a message, without waiting for anyone. Request: [`Publish`]. Response:
/// empty.
pub const OP_PUBLISH: &str = "Publish";

/// Publishes a message and waits for one reply. Request: [`Request`]. Response:
/// [`Message`] (the reply). No reply within the timeout, or no subscriber at all, is an
/// error.
pub const OP_REQUEST: &str = "Request";

/// The operation an actor exports to receive messages: the provider calls it with a
/// [`Message`], and the actor answers with an empty payload. To reply, the actor
/// publishes to the message's `reply_to` subject.
pub const OP_HANDLE_MESSAGE: &str = "HandleMessage";

/// The request of [`OP_PUBLISH`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Publish {
    /// The subject to publish on.
    pub subject: String,
    /// Where a receiver should send its reply, if the sender wants one.
    pub reply_to: Option<String>,
    /// The message's payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The request of [`OP_REQUEST`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// The subject to send the request on.
    pub subject: String,
    /// The request's payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// How long to wait for the reply, in milliseconds; 0 (or absent) means the provider's
    /// default. The provider may also cap it.
    pub timeout_ms: u32,
}

/// A message: what [`OP_HANDLE_MESSAGE`] delivers, and the reply to [`OP_REQUEST`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Message {
    /// The subject the message was published on.
    pub subject: String,
    /// Where the sender waits for a reply, if it asked for one.
    pub reply_to: Option<String>,
    /// The message's payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::tests::{GARBAGE, contains_bin, round_trip};
    use crate::contracts::{decode, encode};

    #[test]
    fn requests_and_messages_round_trip() {
        round_trip(&Publish {
            subject: "orders.created".to_owned(),
            reply_to: Some("_INBOX.1".to_owned()),
            body: b"{\"id\":1}".to_vec(),
        });
        round_trip(&Publish::default());
        round_trip(&Request {
            subject: "prices.get".to_owned(),
            body: vec![0xff, 0x00],
            timeout_ms: 250,
        });
        round_trip(&Message {
            subject: "orders.created".to_owned(),
            reply_to: None,
            body: Vec::new(),
        });
    }

    #[test]
    fn bodies_are_msgpack_bin() {
        let body = vec![0u8, 1, 2, 3, 250];
        let publish = Publish {
            subject: "a".to_owned(),
            reply_to: None,
            body: body.clone(),
        };
        assert!(contains_bin(&encode(&publish).unwrap(), &body));
        let request = Request {
            subject: "a".to_owned(),
            body: body.clone(),
            timeout_ms: 0,
        };
        assert!(contains_bin(&encode(&request).unwrap(), &body));
        let message = Message {
            subject: "a".to_owned(),
            reply_to: None,
            body: body.clone(),
        };
        assert!(contains_bin(&encode(&message).unwrap(), &body));
    }

    #[test]
    fn a_request_without_timeout_uses_the_default() {
        let wire = encode(&Publish {
            subject: "s".to_owned(),
            ..Publish::default()
        })
        .unwrap();
        assert_eq!(decode::<Request>(&wire).unwrap().timeout_ms, 0);
    }

    #[test]
    fn garbage_does_not_decode() {
        for garbage in GARBAGE {
            assert!(decode::<Publish>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<Request>(garbage).is_err(), "{garbage:?}");
            assert!(decode::<Message>(garbage).is_err(), "{garbage:?}");
        }
    }
}
