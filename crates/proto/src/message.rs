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
    /// The message this one replies to (same conversation); clients show it as a quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    /// The root of the thread this message belongs to (same conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<Seq>,
    /// Who the message mentions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Mentions>,
    /// When the body was last edited (ms since the epoch); the server keeps the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// Reactions, aggregated per key, most used first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
    /// For a thread root: how many replies it has and the newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    /// When the message was pinned in its conversation, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<i64>,
}

impl Message {
    /// A message with the given envelope and no relations or aggregated state, as a new
    /// message starts out.
    pub fn new(
        conversation_id: ConversationId,
        seq: Seq,
        id: MessageId,
        sender: (UserId, DeviceId),
        client_msg_id: String,
        ts: i64,
        body: MessageBody,
    ) -> Message {
        Message {
            conversation_id,
            seq,
            id,
            sender_id: sender.0,
            sender_device_id: sender.1,
            client_msg_id,
            ts,
            body,
            reply_to: None,
            thread_root: None,
            mentions: None,
            edited_at: None,
            reactions: Vec::new(),
            thread: None,
            pinned_at: None,
        }
    }
}

/// What a new message refers to, chosen by its sender: the `reply_to`, `thread_root` and
/// `mentions` fields of the `send` frame and of `SendMessageRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    pub reply_to: Option<Seq>,
    pub thread_root: Option<Seq>,
    pub mentions: Option<Mentions>,
}

/// The users a message mentions. Mentioned users get a mention count and a higher-priority
/// notification; `all` mentions every member and needs the `mention_all` permission in groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mentions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// One reaction key on a message and who used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReactionCount {
    /// The reaction, usually one emoji.
    pub key: String,
    pub count: u32,
    /// The first users who reacted with this key (at most 20; the full list is at
    /// `GET /api/v1/conversations/{id}/messages/{seq}/reactions`).
    pub users: Vec<UserId>,
}

/// The replies under a thread root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadSummary {
    pub replies: u32,
    pub last_seq: Seq,
    pub last_ts: i64,
}

/// One message inside a `forward` body: a copy of the original as it was when forwarded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForwardedMessage {
    /// Where the original is. The sender names it; the server checks the sender may read it
    /// and fills in the rest.
    pub conversation_id: ConversationId,
    pub seq: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<MessageBody>>,
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
    /// A tombstone: the content was removed (recalled by its sender, removed by a moderator,
    /// or with its sender's deleted account). The envelope keeps its place in the order.
    Deleted {},
    /// Text in the Markdown subset of docs/protocol.md ("Rich messages"): emphasis, code, links,
    /// lists and quotes. Clients render it without HTML, so it can never inject markup.
    Markdown { text: String },
    /// A place on the map.
    Location {
        latitude: f64,
        longitude: f64,
        /// The place's name or address; empty for none.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
    },
    /// A contact card: another user the sender recommends.
    Contact { user_id: UserId },
    /// One or several messages forwarded from conversations the sender can read, as one
    /// bundle (at most 100).
    Forward { messages: Vec<ForwardedMessage> },
    /// Replaces the body of the sender's own message at `target`, which must be of the same
    /// kind (text, markdown, location or custom) and inside the edit window. The target then
    /// carries the new body and `edited_at`; the old bodies stay in the edit history.
    Edit { target: Seq, body: Box<MessageBody> },
    /// Deletes the message at `target` for everyone: its body becomes a tombstone and its
    /// content leaves storage and search. Senders recall their own messages inside the recall
    /// window; group moderators recall any member's message at any time.
    Recall { target: Seq },
    /// Adds (or with `remove`, takes back) the sender's reaction `key` on the message at
    /// `target`. Reacting twice with the same key is harmless.
    Reaction {
        target: Seq,
        key: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
    /// Pins (or with `unpin`, unpins) the message at `target` in the conversation.
    Pin {
        target: Seq,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unpin: bool,
    },
}

/// What a recipient needs to open an end-to-end-encrypted attachment (scheme
/// `tidings.file.v1`, docs/protocol.md 16.3). Clients put it inside an end-to-end-encrypted
/// message; it never reaches the server in the clear, and the server never reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileKey {
    /// `tidings.file.v1`.
    pub scheme: String,
    /// The AES-256 key, base64.
    pub key: String,
    /// 8 random bytes, base64; the first part of every chunk's nonce.
    pub nonce_prefix: String,
    /// Plaintext bytes per chunk (65536 in this version).
    pub chunk_bytes: u32,
    /// SHA-256 of the plaintext, base64; checked after decryption.
    pub plaintext_sha256: String,
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
            MessageBody::Markdown { .. } => "markdown",
            MessageBody::Location { .. } => "location",
            MessageBody::Contact { .. } => "contact",
            MessageBody::Forward { .. } => "forward",
            MessageBody::Edit { .. } => "edit",
            MessageBody::Recall { .. } => "recall",
            MessageBody::Reaction { .. } => "reaction",
            MessageBody::Pin { .. } => "pin",
        }
    }

    /// For bodies that act on another message (edit, recall, reaction, pin), that message's
    /// sequence. Such messages change their target instead of adding content: they do not
    /// count as unread and are never a conversation's "last message".
    pub fn target(&self) -> Option<Seq> {
        match self {
            MessageBody::Edit { target, .. }
            | MessageBody::Recall { target }
            | MessageBody::Reaction { target, .. }
            | MessageBody::Pin { target, .. } => Some(*target),
            _ => None,
        }
    }

    /// The searchable text of the body, if it has any.
    pub fn text(&self) -> Option<&str> {
        match self {
            MessageBody::Text { text } | MessageBody::Markdown { text } => Some(text),
            MessageBody::Location { name, .. } if !name.is_empty() => Some(name),
            MessageBody::File { name, .. } if !name.is_empty() => Some(name),
            _ => None,
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
