//! Frames of the native WebSocket protocol: JSON text frames tagged by `type`.
//!
//! Requests from the client carry an `id` (any string the client picks); the server answers
//! each with exactly one response frame carrying the same `id`, or an `error` frame with it.
//! Server events (`message`, `receipt`, `typing`, `presence`, `conversation`, `contact`) carry no
//! `id`.

use crate::contacts::{ContactEvent, ContactsSnapshot};
use crate::error::ErrorCode;
use crate::ids::{ConversationId, DeviceId, Seq, UserId};
use crate::message::{Message, MessageBody};
use crate::rest::Conversation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol that selects this version of the protocol.
pub const SUBPROTOCOL: &str = "tidings.v1";

/// A frame sent by the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticates the connection with an OAuth access token. Must be the first frame; may be
    /// sent again later with a fresh token to extend the session without reconnecting.
    Auth { id: String, token: String },
    /// Sends a message. Answered by `ack` once the message is durably stored.
    Send {
        id: String,
        conversation_id: ConversationId,
        /// Client-chosen idempotency key (1 to 64 bytes of UTF-8 without control characters); a retry with the same key
        /// returns the original `ack`.
        client_msg_id: String,
        body: MessageBody,
        /// Replies to the message at this sequence (same conversation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
        /// Posts into the thread under the message at this sequence (same conversation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_root: Option<Seq>,
        /// Users (or with `all`, every member) the message mentions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mentions: Option<crate::Mentions>,
    },
    /// Asks for everything missed since the given cursors. The server streams `conversation`
    /// and `message` events in per-conversation order, then answers `sync_done`.
    Sync {
        id: String,
        /// The highest sequence the client holds per conversation. Conversations the user
        /// belongs to but that are not listed are treated as cursor 0.
        #[serde(default)]
        cursors: Vec<Cursor>,
        /// When set, at most this many of the newest missed messages are sent per conversation,
        /// preceded by a `gap` event; older ones can be paged with `history`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_per_conversation: Option<u32>,
        /// The `version` of the last contacts snapshot the client holds (0 for none). When the
        /// server's is newer, a `contacts` snapshot is sent before `sync_done`; when omitted,
        /// contacts are left out of the sync.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contacts_version: Option<u64>,
    },
    /// Pages backwards through a conversation's history.
    History {
        id: String,
        conversation_id: ConversationId,
        /// Return messages strictly before this sequence; omit for the newest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Moves the caller's delivered or read marker forward (it never moves back).
    Receipt {
        id: String,
        conversation_id: ConversationId,
        receipt: ReceiptKind,
        seq: Seq,
    },
    /// Tells the other members the caller is typing (or stopped). Ephemeral, never stored.
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation_id: ConversationId,
        typing: bool,
    },
    /// Asks for the presence of users who share a conversation with the caller.
    PresenceQuery { id: String, user_ids: Vec<UserId> },
    /// Application-level keepalive; answered by `pong`.
    Ping { id: String },
    /// Says whether the app is in the foreground (`active`) or in the background. A device
    /// in the background still gets push notifications while connected. Connections start
    /// active.
    SetActivity {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        active: bool,
    },
    /// Calls the other member of a direct conversation (see docs/calls.md). Answered by
    /// `call_started`; every online device of the callee gets a `call` event `invite`.
    CallInvite {
        id: String,
        conversation_id: ConversationId,
        /// The caller's SDP offer.
        sdp: String,
        /// Whether the caller starts with video (otherwise audio only).
        #[serde(default)]
        video: bool,
    },
    /// Acts on a call: ringing, accept, decline, cancel, hang up, ICE candidates,
    /// renegotiation. Answered by `ok` (when `id` is given) or `error`.
    CallSignal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        call_id: crate::call::CallId,
        signal: crate::call::CallSignal,
    },
    /// Hands an ephemeral signal to one live device: one of the caller's own, or a device of
    /// a user the caller may message directly (docs/protocol.md 5.9). Never stored: answered
    /// by `ok` once it is on its way to the device's connections, or by `error` (`not_found`
    /// when the device has no live connection).
    DeviceSignal {
        id: String,
        to_user: UserId,
        to_device: DeviceId,
        /// What the payload is, chosen by the applications that exchange it (1 to 64 bytes of
        /// visible ASCII; `xmpp.iq` is an XMPP IQ stanza, as the XMPP gateway sends them).
        kind: String,
        /// Opaque to the server, at most `limits.max_device_signal_bytes` as JSON.
        payload: serde_json::Value,
    },
}

impl ClientFrame {
    /// The request id, when the frame has one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Auth { id, .. }
            | ClientFrame::Send { id, .. }
            | ClientFrame::Sync { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Receipt { id, .. }
            | ClientFrame::PresenceQuery { id, .. }
            | ClientFrame::Ping { id } => Some(id),
            ClientFrame::CallInvite { id, .. } | ClientFrame::DeviceSignal { id, .. } => Some(id),
            ClientFrame::Typing { id, .. }
            | ClientFrame::SetActivity { id, .. }
            | ClientFrame::CallSignal { id, .. } => id.as_deref(),
        }
    }

    /// The frame's `type` tag as on the wire, for traces and logs (it says nothing of the
    /// frame's content).
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::History { .. } => "history",
            ClientFrame::Receipt { .. } => "receipt",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::PresenceQuery { .. } => "presence_query",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::SetActivity { .. } => "set_activity",
            ClientFrame::CallInvite { .. } => "call_invite",
            ClientFrame::CallSignal { .. } => "call_signal",
            ClientFrame::DeviceSignal { .. } => "device_signal",
        }
    }
}

/// A client's position in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cursor {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    /// For direct conversations, the other user's read marker as the client last saw it. When
    /// the server's is further along, the sync sends the conversation's header even without
    /// new messages, so read receipts made while the client was away reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_read_seq: Option<Seq>,
}

/// Which marker a receipt moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// Whether a user has a connected device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// When the user's last device disconnected, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

/// One device in a group's room (XMPP Multi-User Chat occupants, docs/xmpp.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Occupant {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The name the device goes by in the room, unique per user there.
    pub nick: String,
    /// Its availability in the room, from its latest room presence; none: simply available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<OccupantShow>,
    /// The status text of its latest room presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// How available an occupant says it is in a room (XMPP `<show/>`); without one it is simply
/// available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OccupantShow {
    Away,
    Chat,
    Dnd,
    /// Away for a long time.
    Xa,
}

impl OccupantShow {
    /// The name, as on the wire (and as XMPP's `<show/>` spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            OccupantShow::Away => "away",
            OccupantShow::Chat => "chat",
            OccupantShow::Dnd => "dnd",
            OccupantShow::Xa => "xa",
        }
    }

    /// The availability a name stands for; anything else is none (plain availability).
    pub fn parse(name: &str) -> Option<OccupantShow> {
        match name {
            "away" => Some(OccupantShow::Away),
            "chat" => Some(OccupantShow::Chat),
            "dnd" => Some(OccupantShow::Dnd),
            "xa" => Some(OccupantShow::Xa),
            _ => None,
        }
    }
}

/// A frame sent by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated until `expires_at` (ms since the epoch).
    AuthOk {
        id: String,
        user_id: UserId,
        device_id: DeviceId,
        expires_at: i64,
    },
    /// The message is durably stored with this sequence; `duplicate` is true when the
    /// `client_msg_id` had been seen before and this is the original ack.
    Ack {
        id: String,
        conversation_id: ConversationId,
        seq: Seq,
        message_id: crate::ids::MessageId,
        ts: i64,
        duplicate: bool,
    },
    /// A generic success answer for requests with nothing else to say.
    Ok {
        id: String,
    },
    /// A request failed, or (without `id`) the connection is about to close.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
        /// With `rate_limited`: milliseconds to wait before trying again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A new message, live or during sync.
    Message {
        message: Message,
    },
    /// During sync with `limit_per_conversation`: messages `from_seq..=to_seq` were skipped.
    Gap {
        conversation_id: ConversationId,
        from_seq: Seq,
        to_seq: Seq,
    },
    /// The state of a conversation the user belongs to (sent during sync for every conversation
    /// with news, and live when the user joins a conversation).
    Conversation {
        conversation: Conversation,
    },
    /// Sync finished: every message up to the server's position at the time is sent.
    SyncDone {
        id: String,
        conversations: u32,
        messages: u64,
    },
    /// A page of history, oldest first.
    History {
        id: String,
        messages: Vec<Message>,
        has_more: bool,
    },
    /// A member moved a marker.
    Receipt {
        conversation_id: ConversationId,
        user_id: UserId,
        receipt: ReceiptKind,
        seq: Seq,
    },
    /// A member started or stopped typing.
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        typing: bool,
    },
    /// A user who shares a conversation came online or went offline.
    Presence {
        presence: Presence,
    },
    /// The answer to `presence_query`.
    PresenceList {
        id: String,
        users: Vec<Presence>,
    },
    Pong {
        id: String,
    },
    /// The user was invited to a group (their privacy settings asked for an invitation).
    GroupInvitation {
        invitation: crate::rest::GroupInvitation,
    },
    /// Someone asked to join a group the user may approve joins of.
    JoinRequest {
        request: crate::rest::JoinRequest,
    },
    /// A change to the user's friends or friend requests. `version` is the user's contacts
    /// version after the change: a client holding `version - 1` may adopt it; otherwise it
    /// keeps its own and the next sync sends a snapshot.
    Contact {
        event: ContactEvent,
        version: u64,
    },
    /// The user deleted a message for themselves (on this or another device): show it as a
    /// tombstone from now on.
    MessageHidden {
        conversation_id: ConversationId,
        seq: Seq,
    },
    /// The user changed their settings for a conversation (on this or another device).
    ConversationSettings {
        conversation_id: ConversationId,
        settings: crate::rest::ConversationSettings,
    },
    /// During sync: the user's friends and pending requests, when they changed since the
    /// client's `contacts_version`.
    Contacts {
        contacts: ContactsSnapshot,
    },
    /// The answer to `call_invite`. With `busy`, the callee (or the caller) was already in a
    /// call: nothing rang and the call is over (it is recorded as a busy call).
    CallStarted {
        id: String,
        call_id: crate::call::CallId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
    /// Something happened in a call the user takes part in (or is being called to).
    Call {
        call_id: crate::call::CallId,
        conversation_id: ConversationId,
        /// Who caused the event (for `missed`, the caller).
        user_id: UserId,
        /// The device that caused it, when a device did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<DeviceId>,
        event: crate::call::CallEvent,
    },
    /// A `device_signal` another device (of this user or of someone else) addressed to this
    /// device.
    DeviceSignal {
        from_user: UserId,
        from_device: DeviceId,
        kind: String,
        payload: serde_json::Value,
    },
    /// A stored XML item (PEP nodes, private storage, roster details of the XMPP gateway) was
    /// written or deleted. Sent to the owner's devices, and for the nodes friends may read
    /// (the avatar and the nickname) to the owner's friends as well; the item is read with the
    /// gateway's calls.
    UserXml {
        /// Whose item it is.
        user_id: UserId,
        node: String,
        item_id: String,
        /// `true`: the item was deleted.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    /// The user blocked (`blocked`) or unblocked someone, on this or another device. Sent to
    /// the user's own devices, so each can keep its block list current.
    Blocked {
        user_id: UserId,
        blocked: bool,
    },
    /// A user's profile (display name, status text or avatar) changed. Sent to the user's
    /// own devices and to their friends, who may show it at once instead of on next read.
    ProfileChanged {
        user_id: UserId,
    },
    /// Who is in a group's room changed: a device entered it under a nick, took another
    /// nick, or left. Sent to the other devices in the room (XMPP Multi-User Chat occupants).
    Occupant {
        conversation_id: ConversationId,
        occupant: Occupant,
        /// Set when the device changed its nick: the nick it had.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_nick: Option<String>,
        /// `false`: the device left the room.
        present: bool,
        /// What the occupant said with the change (a presence status, also when leaving), or
        /// the reason given for a kick, if anything. While present, `occupant` carries its
        /// latest show and status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Set when a moderator took the device out of the room (a kick): who did. The member
        /// stays a member and may enter again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kicked_by: Option<UserId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input the fuzzer found (docs/FUZZING.md): numbers in custom payloads must survive a
    /// decode, encode, decode cycle exactly.
    #[test]
    fn custom_floats_round_trip_exactly() {
        let text = include_str!("../../../fuzz/regressions/client_frame/custom-float-3e50.json");
        let frame: ClientFrame = serde_json::from_str(text).unwrap();
        let again: ClientFrame =
            serde_json::from_str(&serde_json::to_string(&frame).unwrap()).unwrap();
        assert_eq!(frame, again);
        let ClientFrame::Send { body, .. } = &frame else {
            panic!("a send frame")
        };
        let MessageBody::Custom { data, .. } = body else {
            panic!("a custom body")
        };
        assert_eq!(data["a"][2].as_f64(), Some(-3e50));
    }
}
