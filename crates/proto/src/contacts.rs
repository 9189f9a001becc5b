//! Friends, friend requests and privacy settings: REST bodies and the live `contact` events.
//!
//! Kept apart from [`crate::rest`] so the contacts feature reads as one piece: what a client
//! lists (`/api/v1/friends`, `/api/v1/friend-requests`), what it sends, what it is told live
//! ([`ContactEvent`]) and what it receives on sync ([`ContactsSnapshot`]).

use crate::ids::UserId;
use crate::rest::UserSummary;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest note a friend request may carry, in characters.
pub const MAX_FRIEND_NOTE_CHARS: usize = 200;

/// One of the caller's friends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Friend {
    pub user_id: UserId,
    pub username: String,
    /// When the friendship began, in milliseconds since the Unix epoch.
    pub since: i64,
}

/// `GET /api/v1/friends`, in user id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FriendList {
    pub friends: Vec<Friend>,
}

/// A pending friend request from one user to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequest {
    pub from: UserSummary,
    pub to: UserSummary,
    /// What the sender wrote with the request (up to 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the request was sent, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// `GET /api/v1/friend-requests`: requests to the caller and from the caller, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestList {
    pub incoming: Vec<FriendRequest>,
    pub outgoing: Vec<FriendRequest>,
}

/// `POST /api/v1/friend-requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFriendRequest {
    pub user_id: UserId,
    /// Up to 200 characters, no control characters other than line breaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `POST /api/v1/friend-requests` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FriendRequestOutcome {
    /// The request is pending until the other user answers it.
    Sent,
    /// The other user had already asked the caller, so the two are friends now.
    BecameFriends,
}

/// The answer to `POST /api/v1/friend-requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestResult {
    pub outcome: FriendRequestOutcome,
}

/// Who may open a direct conversation with the user and write in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectMessages {
    #[default]
    Everyone,
    Friends,
}

/// Who may see the user's presence and last-seen time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Everyone,
    Friends,
    Nobody,
}

/// Who may add the user to a group directly; anyone else can only invite them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupAdds {
    #[default]
    Everyone,
    Friends,
    Nobody,
}

/// A user's privacy settings (`GET /api/v1/privacy`). Everything is open by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PrivacySettings {
    pub direct_messages: DirectMessages,
    pub presence: Visibility,
    pub group_adds: GroupAdds,
}

/// `PATCH /api/v1/privacy`: fields left out keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrivacyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_messages: Option<DirectMessages>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Visibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_adds: Option<GroupAdds>,
}

/// A change to the user's friends or friend requests, sent live to every device of both users
/// involved (in the `contact` frame).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ContactEvent {
    /// Someone asked the user to be friends.
    RequestReceived { request: FriendRequest },
    /// The user (from one of their devices) asked someone to be friends.
    RequestSent { request: FriendRequest },
    /// A request between the user and `friend` was accepted (or both had asked each other):
    /// they are friends now.
    RequestAccepted { friend: Friend },
    /// The request from `from` to `to` was declined by `to`.
    RequestDeclined { from: UserId, to: UserId },
    /// The request from `from` to `to` was withdrawn by `from`.
    RequestCancelled { from: UserId, to: UserId },
    /// The user and `user_id` are no longer friends.
    FriendRemoved { user_id: UserId },
}

/// Everything a user's contacts hold, sent during `sync` when the client's `contacts_version`
/// is older than the server's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContactsSnapshot {
    /// Grows with every change to the user's friends or requests; send it back in the next
    /// `sync` to receive a snapshot only when something changed.
    pub version: u64,
    pub friends: Vec<Friend>,
    pub incoming: Vec<FriendRequest>,
    pub outgoing: Vec<FriendRequest>,
}
