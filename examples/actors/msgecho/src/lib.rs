//! A messaging echo: every message on the subjects its link subscribes to is answered on
//! the message's `reply_to` with the same body; a message without `reply_to` is
//! republished on `echo.<subject>` (which the link's `publish` allowlist must allow).
//!
//! ```text
//! nats request demo.echo 'hello'   # -> hello
//! ```

use sigil_actor::prelude::*;

sigil_actor::actor! {
    "HandleMessage" => handle_message,
}

/// Where the echo of `message` goes.
fn destination(message: &Message) -> String {
    match &message.reply_to {
        Some(reply) if !reply.is_empty() => reply.clone(),
        _ => format!("echo.{}", message.subject),
    }
}

/// Echoes one message.
fn handle_message(message: Message) -> HandlerResult<()> {
    let to = destination(&message);
    send(&to, &message.body)
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
    fn replies_where_asked() {
        let mut m = Message {
            subject: "demo.echo".into(),
            reply_to: Some("_INBOX.1".into()),
            body: b"hi".to_vec(),
        };
        assert_eq!(destination(&m), "_INBOX.1");
        m.reply_to = None;
        assert_eq!(destination(&m), "echo.demo.echo");
    }
}
