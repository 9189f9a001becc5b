//! The message envelope: what the server assigns (sequence, id, time) around what the client sent (body).

use crate::ids::{ConversationId, DeviceId, MessageId, Seq, UserId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stored message as every member sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    pub conversation_id: ConversationId,
    /// Position in the conversation, gap-free from 1; the order every member sees.
    pub seq: Seq,
    pub id: MessageId,
    pub sender_id: UserId,
    pub sender_device_id: DeviceId,
    /// The sender's idempotency key; retrying a send with the same key never stores a second copy.
    pub client_msg_id: String,
    /// Server time of the commit, in milliseconds since the Unix epoch.
    pub ts: i64,
    pub body: MessageBody,
}

/// What a message carries. The `kind` tag makes the body extensible: clients must show
/// kinds they do not know as "unsupported message" rather than fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageBody {
    /// Plain text (UTF-8).
    Text { text: String },
    /// An end-to-end-encrypted payload the server stores and relays without reading.
    Encrypted {
        /// The client-side scheme, for example `m.megolm.v1.aes-sha2` or `tidings.e2e.v1`.
        algorithm: String,
        /// Opaque ciphertext, base64-encoded by the client.
        ciphertext: String,
        /// The sending device's session or key id, so the recipient can pick the right key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
    },
    /// Application-defined JSON for bots and integrations; `app` namespaces the payload.
    Custom {
        app: String,
        data: serde_json::Value,
    },
    /// A tombstone: the content was removed (by a moderator, or with its sender's deleted
    /// account). The envelope keeps its place in the conversation's order.
    Deleted {},
}

impl MessageBody {
    /// The `kind` tag as stored beside the body, so queries can filter without parsing JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::Text { .. } => "text",
            MessageBody::Encrypted { .. } => "encrypted",
            MessageBody::Custom { .. } => "custom",
            MessageBody::Deleted {} => "deleted",
        }
    }
}
