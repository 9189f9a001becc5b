//! The IM topic scheme (`tidings/v1/...`, see docs/mqtt.md): turns a publication into a frame
//! of the native protocol for the connection's core session, and reads back what the session
//! answers. Nothing here decides anything; the core session and policy do.

use serde::Deserialize;
use tidings_proto::ws::{ClientFrame, ReceiptKind};
use tidings_proto::{ConversationId, MessageBody, Seq};

/// Every IM topic starts with this.
pub const PREFIX: &str = "tidings/";
/// The topic a device subscribes to for everything the native protocol would deliver.
pub const EVENTS: &str = "tidings/v1/me/events";
/// A will on this topic is accepted: the device's presence goes offline when it is lost.
pub const PRESENCE: &str = "tidings/v1/me/presence";
/// Any native request frame (sync, history, receipts, presence queries); answers arrive on
/// the events topic.
pub const REQUESTS: &str = "tidings/v1/me/requests";
/// Request ids the gateway uses for itself start with this; clients may not use it.
pub const INTERNAL_ID: &str = "mqtt:";

/// Why a publication on an IM topic was refused before reaching the core.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such IM topic (or not one a device may publish to).
    UnknownTopic,
    /// The payload is not what the topic takes.
    BadPayload(String),
}

/// A publication turned into a native request. `id` is filled in by the caller.
#[derive(Debug)]
pub enum Request {
    /// A message to send; acknowledged (PUBACK) after the commit.
    Send {
        conversation_id: ConversationId,
        client_msg_id: String,
        body: MessageBody,
        reply_to: Option<Seq>,
        thread_root: Option<Seq>,
        mentions: Option<tidings_proto::Mentions>,
    },
    /// A typing indicator; nothing waits for it.
    Typing {
        conversation_id: ConversationId,
        typing: bool,
    },
    /// A read marker; acknowledged once stored.
    Read {
        conversation_id: ConversationId,
        seq: Seq,
    },
    /// A frame of the native protocol, answered on the events topic.
    Native(ClientFrame),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendPayload {
    client_msg_id: String,
    body: MessageBody,
    #[serde(default)]
    reply_to: Option<Seq>,
    #[serde(default)]
    thread_root: Option<Seq>,
    #[serde(default)]
    mentions: Option<tidings_proto::Mentions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingPayload {
    typing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadPayload {
    seq: Seq,
}

fn json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Refusal> {
    serde_json::from_slice(payload).map_err(|e| {
        // serde's messages name fields and types, never server internals.
        Refusal::BadPayload(e.to_string())
    })
}

/// Turns a publication on `topic` (which starts with [`PREFIX`]) into a request.
pub fn route(topic: &str, payload: &[u8]) -> Result<Request, Refusal> {
    if topic == REQUESTS {
        let frame: ClientFrame = json(payload)?;
        if matches!(frame, ClientFrame::Auth { .. }) {
            return Err(Refusal::BadPayload(
                "authentication happens in CONNECT".into(),
            ));
        }
        if frame
            .request_id()
            .is_some_and(|id| id.starts_with(INTERNAL_ID))
        {
            return Err(Refusal::BadPayload(format!(
                "request ids starting with `{INTERNAL_ID}` are reserved"
            )));
        }
        return Ok(Request::Native(frame));
    }
    let Some(rest) = topic.strip_prefix("tidings/v1/conversations/") else {
        return Err(Refusal::UnknownTopic);
    };
    let Some((id, what)) = rest.split_once('/') else {
        return Err(Refusal::UnknownTopic);
    };
    let conversation_id = ConversationId(id.parse().map_err(|_| Refusal::UnknownTopic)?);
    match what {
        "messages" => {
            let p: SendPayload = json(payload)?;
            Ok(Request::Send {
                conversation_id,
                client_msg_id: p.client_msg_id,
                body: p.body,
                reply_to: p.reply_to,
                thread_root: p.thread_root,
                mentions: p.mentions,
            })
        }
        "typing" => {
            let p: TypingPayload = json(payload)?;
            Ok(Request::Typing {
                conversation_id,
                typing: p.typing,
            })
        }
        "read" => {
            let p: ReadPayload = json(payload)?;
            Ok(Request::Read {
                conversation_id,
                seq: p.seq,
            })
        }
        _ => Err(Refusal::UnknownTopic),
    }
}

impl Request {
    /// The native frame for this request, with `id` as its request id where it takes one.
    pub fn into_frame(self, id: Option<String>) -> ClientFrame {
        match self {
            Request::Send {
                conversation_id,
                client_msg_id,
                body,
                reply_to,
                thread_root,
                mentions,
            } => ClientFrame::Send {
                id: id.unwrap_or_default(),
                conversation_id,
                client_msg_id,
                body,
                reply_to,
                thread_root,
                mentions,
            },
            Request::Typing {
                conversation_id,
                typing,
            } => ClientFrame::Typing {
                id: None,
                conversation_id,
                typing,
            },
            Request::Read {
                conversation_id,
                seq,
            } => ClientFrame::Receipt {
                id: id.unwrap_or_default(),
                conversation_id,
                receipt: ReceiptKind::Read,
                seq,
            },
            Request::Native(frame) => frame,
        }
    }

    /// Whether the PUBACK waits for the core's answer (a commit or a stored marker).
    pub fn waits(&self) -> bool {
        matches!(self, Request::Send { .. } | Request::Read { .. })
    }
}

/// The few fields of a server frame the gateway looks at.
#[derive(Deserialize)]
pub struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(default, borrow)]
    pub id: Option<&'a str>,
    #[serde(default)]
    pub code: Option<tidings_proto::ErrorCode>,
    /// Of an `ack`: where the device's own message landed.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    #[serde(default)]
    pub seq: Option<Seq>,
}

#[derive(Deserialize)]
struct PeekMessage {
    conversation_id: ConversationId,
    seq: Seq,
}

#[derive(Deserialize)]
struct PeekMessageFrame {
    message: PeekMessage,
}

/// Reads the fields the gateway needs from a frame the session wrote. Frames come from the
/// server's own serializer, so a failure here is a bug, reported as `None`.
pub fn peek(text: &str) -> Option<Peek<'_>> {
    serde_json::from_str(text).ok()
}

/// Where a `message` frame's message sits (the field `message` is a string in `error`
/// frames, so it is read only for message frames).
pub fn message_position(text: &str) -> Option<(ConversationId, Seq)> {
    let frame: PeekMessageFrame = serde_json::from_str(text).ok()?;
    Some((frame.message.conversation_id, frame.message.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_become_requests() {
        let send = route(
            "tidings/v1/conversations/12/messages",
            br#"{"client_msg_id":"c1","body":{"kind":"text","text":"hi"}}"#,
        )
        .unwrap();
        assert!(matches!(
            send,
            Request::Send {
                conversation_id: ConversationId(12),
                ..
            }
        ));
        assert!(send.waits());
        let typing = route("tidings/v1/conversations/12/typing", br#"{"typing":true}"#).unwrap();
        assert!(!typing.waits());
        assert!(matches!(
            route("tidings/v1/conversations/12/read", br#"{"seq":4}"#),
            Ok(Request::Read { seq: 4, .. })
        ));
        assert!(matches!(
            route(REQUESTS, br#"{"type":"ping","id":"p"}"#),
            Ok(Request::Native(ClientFrame::Ping { .. }))
        ));
    }

    #[test]
    fn peeks_read_errors_acks_and_message_positions() {
        let error = r#"{"type":"error","id":"mqtt:1","code":"forbidden","message":"no"}"#;
        let p = peek(error).unwrap();
        assert_eq!((p.kind, p.id), ("error", Some("mqtt:1")));
        assert_eq!(p.code, Some(tidings_proto::ErrorCode::Forbidden));
        let ack = r#"{"type":"ack","id":"mqtt:2","conversation_id":3,"seq":9,"message_id":1,"ts":0,"duplicate":false}"#;
        let p = peek(ack).unwrap();
        assert_eq!(
            (p.conversation_id, p.seq),
            (Some(ConversationId(3)), Some(9))
        );
        let message =
            r#"{"type":"message","message":{"id":5,"conversation_id":3,"seq":10,"sender_id":1}}"#;
        assert_eq!(peek(message).unwrap().kind, "message");
        assert_eq!(message_position(message), Some((ConversationId(3), 10)));
    }

    #[test]
    fn wrong_topics_and_payloads_are_refused() {
        assert_eq!(
            route("tidings/v1/conversations/x/messages", b"{}").unwrap_err(),
            Refusal::UnknownTopic
        );
        assert_eq!(route(EVENTS, b"{}").unwrap_err(), Refusal::UnknownTopic);
        assert!(matches!(
            route("tidings/v1/conversations/1/messages", b"hello"),
            Err(Refusal::BadPayload(_))
        ));
        assert!(matches!(
            route(REQUESTS, br#"{"type":"auth","id":"a","token":"t"}"#),
            Err(Refusal::BadPayload(_))
        ));
        assert!(matches!(
            route(REQUESTS, br#"{"type":"ping","id":"mqtt:1"}"#),
            Err(Refusal::BadPayload(_))
        ));
    }
}
