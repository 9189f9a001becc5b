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
    /// Something that happened to a group, written by the server (never sent by clients). The
    /// message's `sender_id` is who did it.
    System {
        /// Boxed: events are rare, and inline they would make every message larger.
        event: Box<SystemEvent>,
    },
    /// A file uploaded through `/api/v1/uploads/` (see docs/protocol.md, "Files"). Sending it
    /// shares the file with the conversation's members, who may then download it from
    /// `/api/v1/files/{file_id}`. The server fills `size`, `content_type`, `width` and `height`
    /// from the stored file (sniffed from its bytes), whatever the client wrote.
    File {
        /// The id the finished upload became (32 lowercase hex characters).
        file_id: String,
        /// The name to show; empty for none.
        #[serde(default)]
        name: String,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        content_type: String,
        /// Pixel size of an image, so clients can lay it out before loading it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
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
            MessageBody::System { .. } => "system",
            MessageBody::Deleted {} => "deleted",
            MessageBody::File { .. } => "file",
        }
    }
}

/// How a user came to join a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinMethod {
    /// With an invite link, in a group that needs no approval.
    Link,
    /// A join request was approved (the message's sender is the approver).
    Request,
    /// The user accepted an invitation.
    Invitation,
}

/// An event in a group's timeline. Events are ordinary messages (kind `system`), so they arrive
/// live and on sync, in order with everything else. The message's sender is the actor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SystemEvent {
    /// The sender added these users.
    MembersAdded {
        users: Vec<UserId>,
    },
    /// `user` joined (by link, approved request or accepted invitation).
    MemberJoined {
        user: UserId,
        via: JoinMethod,
    },
    /// The sender left.
    MemberLeft {},
    /// The sender removed `user`.
    MemberRemoved {
        user: UserId,
    },
    /// The sender banned `user` (removing them if they were a member).
    MemberBanned {
        user: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    MemberUnbanned {
        user: UserId,
    },
    /// The sender muted `user` until `until` (ms since the epoch).
    MemberMuted {
        user: UserId,
        until: i64,
    },
    MemberUnmuted {
        user: UserId,
    },
    /// The sender gave `user` this role.
    RoleChanged {
        user: UserId,
        role: crate::rest::Role,
    },
    /// The sender handed ownership to `user` and became an admin.
    OwnershipTransferred {
        user: UserId,
    },
    /// The sender changed the group's information; only changed fields are present.
    InfoChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        announcement: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_approval: Option<bool>,
    },
    /// The owner changed who may do what.
    PermissionsChanged {
        permissions: crate::rest::GroupPermissions,
    },
    /// The sender removed the message at `seq` (its body is now a tombstone).
    MessageDeleted {
        seq: Seq,
    },
    /// The owner dissolved the group; nobody is a member any more.
    GroupDissolved {},
}
