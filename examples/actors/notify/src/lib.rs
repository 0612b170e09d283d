//! A notification step: `notify` publishes a short text on a subject and answers what it
//! sent. Which subjects it may use is the operator's choice (the link's `publish`
//! allowlist), not the actor's.
//!
//! ```text
//! sigil call ... notify '{"subject": "site.published", "text": "index.html is live"}'
//! ```

use sigil_actor::prelude::*;

sigil_actor::actor! {
    "notify" => notify,
}

/// The request of `notify`.
#[derive(Debug, Deserialize)]
struct Notify {
    /// Where to publish.
    subject: String,
    /// What to say.
    text: String,
}

/// What `notify` answers.
#[derive(Debug, Serialize, PartialEq)]
struct Sent {
    /// The subject it published on.
    subject: String,
    /// The bytes it sent.
    bytes: usize,
}

/// Publishes the text.
fn notify(request: Notify) -> HandlerResult<Sent> {
    if request.subject.is_empty() {
        return Err("`subject` is empty".into());
    }
    send(&request.subject, request.text.as_bytes())?;
    Ok(Sent {
        bytes: request.text.len(),
        subject: request.subject,
    })
}

#[cfg(target_arch = "wasm32")]
fn send(subject: &str, body: &[u8]) -> HandlerResult<()> {
    Ok(Messaging::new().publish(subject, body)?)
}

#[cfg(not(target_arch = "wasm32"))]
fn send(_: &str, _: &[u8]) -> HandlerResult<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_what_it_sent() {
        let sent = notify(Notify {
            subject: "site.published".into(),
            text: "hello".into(),
        })
        .unwrap();
        assert_eq!(
            sent,
            Sent {
                subject: "site.published".into(),
                bytes: 5
            }
        );
        assert!(
            notify(Notify {
                subject: String::new(),
                text: "x".into()
            })
            .is_err()
        );
    }
}
