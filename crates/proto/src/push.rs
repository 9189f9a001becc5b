//! Push notifications on the wire: device subscriptions, a user's notification settings, the
//! VAPID key clients subscribe with, and the payload a device receives.

use crate::ids::{ConversationId, DeviceId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a device receives pushes. One subscription per device; registering again replaces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum PushSubscription {
    /// A Web Push subscription (RFC 8030), as `PushSubscription.toJSON()` gives it in a browser,
    /// or from a UnifiedPush distributor.
    WebPush {
        /// The push service URL (`https://`).
        endpoint: String,
        /// The browser's P-256 public key, uncompressed, base64url without padding.
        p256dh: String,
        /// The 16-byte authentication secret, base64url without padding.
        auth: String,
    },
    /// A Firebase Cloud Messaging registration token.
    Fcm { token: String },
    /// An Apple Push Notification service device token (hex).
    Apns { token: String },
}

/// `GET /api/v1/push/subscriptions`: one entry per device of the caller that has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushSubscriptionInfo {
    pub device_id: DeviceId,
    pub subscription: PushSubscription,
    /// When it was registered, ms since the epoch.
    pub created_at: i64,
}

/// The caller's subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushSubscriptionList {
    pub subscriptions: Vec<PushSubscriptionInfo>,
}

/// `GET /api/v1/push/vapid`: the application server key for `PushManager.subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VapidKey {
    /// The uncompressed P-256 public key, base64url without padding.
    pub public_key: String,
}

/// A user's notification settings, the same for all their devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushSettings {
    /// No pushes at all except incoming calls.
    #[serde(default)]
    pub muted: bool,
    /// Pushes say only "new message": no sender, conversation title or preview.
    #[serde(default)]
    pub privacy: bool,
    /// Do-not-disturb hours, in `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnd: Option<DndWindow>,
    /// An IANA time zone name such as `Europe/Paris`; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Daily quiet hours as minutes after local midnight. `start > end` spans midnight
/// (22:00 to 07:00 is `{start: 1320, end: 420}`); `start == end` is never quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DndWindow {
    pub start: u16,
    pub end: u16,
}

/// What a push is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    Message,
    Mention,
    FriendRequest,
    Call,
}

/// The JSON a device receives (encrypted for Web Push). Pushes about one conversation share a
/// collapse key, so a burst shows as one notification whose `count` grows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushPayload {
    pub kind: PushKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// The sender's display name; absent in privacy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The group's title; absent for direct conversations and in privacy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The start of the text; absent in privacy mode and for end-to-end-encrypted messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// How many events this notification stands for (a burst collapsed into one).
    pub count: u32,
    /// The user's unread messages over all conversations, for the app badge.
    pub badge: u64,
    /// When the newest event happened, ms since the epoch.
    pub ts: i64,
}
