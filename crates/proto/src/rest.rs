//! Request and response bodies of the REST API (`/api/v1/...`, `/oauth/...`).

use crate::error::ErrorCode;
use crate::ids::{ConversationId, DeviceId, Seq, UserId};
use crate::message::{Message, MessageBody};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An RFC 9457 problem document, served as `application/problem+json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:tidings:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable code, the same one WebSocket error frames carry.
    pub code: ErrorCode,
    /// With `rate_limited`: milliseconds to wait before trying again (the `Retry-After` header
    /// says the same in whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:tidings:problem:{}", code.as_str()),
            title: code.as_str().replace('_', " "),
            status: code.http_status(),
            detail: Some(detail.into()),
            code,
            retry_after_ms: None,
        }
    }
}

/// `POST /api/v1/accounts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 32 characters: lowercase letters, digits, `_`, `.` and `-`, starting with a letter.
    pub username: String,
    /// 10 to 1024 characters.
    pub password: String,
    /// Required when registration is invite-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_code: Option<String>,
}

/// A user account as its owner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    pub user_id: UserId,
    pub username: String,
    pub created_at: i64,
}

/// Another user, as shown in member lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserSummary {
    pub user_id: UserId,
    pub username: String,
}

/// RFC 6749 section 5.1 successful token response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Absent when none is issued (the client credentials grant, RFC 6749 section 4.4.3).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh_token: String,
    pub scope: String,
    /// The device this sign-in created or continued (a Tidings extension).
    pub device_id: DeviceId,
    pub user_id: UserId,
}

/// RFC 6749 section 5.2 error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`; for the device code grant (RFC 8628
    /// section 3.5) also `authorization_pending`, `slow_down`, `access_denied` and
    /// `expired_token`.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// One signed-in device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    pub device_id: DeviceId,
    pub name: String,
    pub created_at: i64,
    pub last_active_at: i64,
    /// True for the device making the request.
    pub current: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

/// `POST /api/v1/account/password`: signs out every other device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /api/v1/conversations/direct`: returns the one direct conversation with that user,
/// creating it on first use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDirectRequest {
    pub user_id: UserId,
}

/// `POST /api/v1/conversations`: creates a group with the caller as owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub title: String,
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// `POST /api/v1/conversations/{id}/members`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembersRequest {
    pub members: Vec<UserId>,
}

/// The answer to adding members: users whose privacy settings let the caller add them were
/// added; the others were sent an invitation they may accept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddMembersResult {
    pub added: Vec<UserId>,
    pub invited: Vec<UserId>,
}

/// The lowest role allowed to do something in a group.
pub type MinRole = Role;

/// Who may do what in a group: for each power, the lowest role that has it. The owner sets
/// these; transferring ownership, dissolving the group and changing these settings are the
/// owner's alone. Acting on another member (removing, muting, banning, changing their role)
/// also needs a role above theirs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GroupPermissions {
    /// Add members, and create and revoke invite links.
    pub invite: MinRole,
    /// Approve or decline join requests.
    pub approve_joins: MinRole,
    pub remove_members: MinRole,
    /// Mute and unmute members.
    pub mute_members: MinRole,
    /// Ban and unban users.
    pub ban_members: MinRole,
    /// Change the title, avatar, description, announcement and whether joining needs approval.
    pub edit_info: MinRole,
    pub pin_messages: MinRole,
    /// Delete other members' messages.
    pub delete_messages: MinRole,
    /// Make members admins or admins members.
    pub change_roles: MinRole,
    /// Mention everyone (`@all`), which notifies every member.
    pub mention_all: MinRole,
}

impl Default for GroupPermissions {
    fn default() -> Self {
        GroupPermissions {
            invite: Role::Member,
            approve_joins: Role::Admin,
            remove_members: Role::Admin,
            mute_members: Role::Admin,
            ban_members: Role::Admin,
            edit_info: Role::Admin,
            pin_messages: Role::Admin,
            delete_messages: Role::Admin,
            change_roles: Role::Owner,
            mention_all: Role::Admin,
        }
    }
}

/// A group's information and settings, as its members see them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupInfo {
    pub conversation_id: ConversationId,
    pub title: String,
    pub description: String,
    /// The id of an image file, readable by every user; empty when unset.
    pub avatar: String,
    pub announcement: String,
    /// Whether joining by link needs an admin's approval.
    pub join_approval: bool,
    pub permissions: GroupPermissions,
    pub member_count: u32,
    /// The caller's role.
    pub role: Role,
}

/// `PATCH /api/v1/conversations/{id}/group`: fields left out keep their value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    /// 1 to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Up to 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The id of an image file the caller may read; empty clears it. Once set, every
    /// signed-in user may download the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_approval: Option<bool>,
}

/// `PUT /api/v1/conversations/{id}/members/{user_id}/mute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    /// How long the member cannot post, in seconds (1 second to 366 days).
    pub duration_secs: u64,
}

/// `PUT /api/v1/conversations/{id}/bans/{user_id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// Up to 200 characters, shown to the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One banned user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BannedUser {
    pub user_id: UserId,
    pub username: String,
    pub banned_by: UserId,
    pub since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/v1/conversations/{id}/bans`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BanList {
    pub users: Vec<BannedUser>,
}

/// `PUT /api/v1/conversations/{id}/members/{user_id}/role`: `admin` or `member` (ownership
/// moves only by transfer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: Role,
}

/// `POST /api/v1/conversations/{id}/transfer`: the caller (the owner) becomes an admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnershipRequest {
    pub user_id: UserId,
}

/// `POST /api/v1/conversations/{id}/invite-links`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInviteLinkRequest {
    /// Seconds until the link stops working; omit for a link that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// How many users may join with it; omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

/// An invite link of a group. The code is shown once, when the link is made; the server keeps
/// only its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InviteLink {
    pub id: i64,
    pub conversation_id: ConversationId,
    /// Only in the answer to creating the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub created_by: UserId,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
}

/// `GET /api/v1/conversations/{id}/invite-links`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InviteLinkList {
    pub links: Vec<InviteLink>,
}

/// `POST /api/v1/groups/preview` and `POST /api/v1/groups/join`: the code travels in the body
/// so it stays out of URLs and access logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinGroupRequest {
    pub code: String,
    /// For groups that need approval: a note to the admins (up to 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What someone holding an invite link sees before joining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupPreview {
    pub conversation_id: ConversationId,
    pub title: String,
    pub description: String,
    pub member_count: u32,
    pub join_approval: bool,
}

/// Whether a join took effect or awaits approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinStatus {
    Joined,
    Requested,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JoinGroupResult {
    pub conversation_id: ConversationId,
    pub status: JoinStatus,
}

/// A pending request to join a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JoinRequest {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub username: String,
    pub message: String,
    pub created_at: i64,
}

/// `GET /api/v1/conversations/{id}/join-requests`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JoinRequestList {
    pub requests: Vec<JoinRequest>,
}

/// An invitation to a group, waiting for the invited user to accept or decline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupInvitation {
    pub conversation_id: ConversationId,
    pub title: String,
    pub inviter: UserSummary,
    pub created_at: i64,
}

/// `GET /api/v1/group-invitations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupInvitationList {
    pub invitations: Vec<GroupInvitation>,
}

/// Whether a conversation is between exactly two users or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// A member's role in a conversation. Roles are ranked owner > admin > member; in direct
/// conversations both users are members.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    // Declared from lowest to highest so the derived order is the rank.
    Member,
    Admin,
    Owner,
}

/// A member and their markers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user_id: UserId,
    pub username: String,
    pub role: Role,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
    /// While set and in the future (ms since the epoch), the member cannot post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<i64>,
}

/// A conversation as one member sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    /// The group title; for direct conversations, empty (clients show the peer's name).
    pub title: String,
    pub created_at: i64,
    /// The newest sequence in the conversation (0 when empty).
    pub last_seq: Seq,
    /// The caller's read marker.
    pub read_seq: Seq,
    /// Messages from others after the caller's read marker (edits, reactions, recalls and
    /// pins do not count).
    pub unread: u64,
    /// Of those, the ones that mention the caller (by name or with `all`).
    #[serde(default)]
    pub mentions: u64,
    /// The caller's own settings for the conversation.
    #[serde(default)]
    pub settings: ConversationSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
    /// For direct conversations, the other user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<UserSummary>,
    /// For direct conversations, how far the other user has received messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_delivered_seq: Option<Seq>,
    /// For direct conversations, how far the other user has read (the "seen" mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_read_seq: Option<Seq>,
    pub member_count: u32,
}

/// When a member wants to be notified of new messages in a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    /// Every message.
    #[default]
    All,
    /// Only messages that mention the member (the usual choice for busy groups).
    Mentions,
    /// Never (muted). Calls still ring unless the caller is blocked.
    None,
}

/// A member's own settings for a conversation, the same on every device of theirs. Changes
/// reach the member's other devices live (`conversation_settings`) and on sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationSettings {
    pub notify: NotifyLevel,
    /// Pinned conversations sort first, by when they were pinned (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<i64>,
    #[serde(default)]
    pub archived: bool,
    /// Marked unread by hand; cleared when the read marker next moves.
    #[serde(default)]
    pub marked_unread: bool,
}

/// `PATCH /api/v1/conversations/{id}/settings`: the fields to change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateConversationSettingsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_unread: Option<bool>,
}

/// `GET`/`PUT /api/v1/conversations/{id}/retention`: a group's own retention. The server's
/// policy applies on top, so a group can keep messages for less time, never more.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetentionPolicy {
    /// Delete messages older than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    /// Delete all but the newest this many messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
}

/// A thread as the caller sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadView {
    /// The root message, with its `thread` summary.
    pub root: Message,
    /// Replies from others after the caller's read position in the thread.
    pub unread: u64,
    /// The caller's read position in the thread (0 when never read).
    pub read_seq: Seq,
}

/// `GET /api/v1/conversations/{id}/threads`: most recently active first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadList {
    pub threads: Vec<ThreadView>,
}

/// `POST /api/v1/conversations/{id}/threads/{root}/read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadReadRequest {
    pub seq: Seq,
}

/// One version of an edited message's body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageVersion {
    /// When this version was written (the message's time for the first one).
    pub ts: i64,
    pub editor_id: UserId,
    pub body: MessageBody,
}

/// `GET /api/v1/conversations/{id}/messages/{seq}/edits`: every version, oldest first; the
/// last one is the current body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EditHistory {
    pub versions: Vec<MessageVersion>,
}

/// Who reacted with one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reactors {
    pub key: String,
    pub users: Vec<UserId>,
}

/// `GET /api/v1/conversations/{id}/messages/{seq}/reactions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReactionList {
    pub reactions: Vec<Reactors>,
}

/// `GET /api/v1/conversations/{id}/pins`: pinned messages, most recently pinned first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PinnedMessages {
    pub messages: Vec<Message>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
}

/// `POST /api/v1/conversations/{id}/messages`: the REST twin of the `send` frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub client_msg_id: String,
    pub body: MessageBody,
    /// Replies to the message at this sequence (same conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    /// Posts into the thread under the message at this sequence (same conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<Seq>,
    /// Users (or with `all`, every member) the message mentions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<crate::Mentions>,
}

impl SendMessageRequest {
    pub fn relations(&self) -> crate::Relations {
        crate::Relations {
            reply_to: self.reply_to,
            thread_root: self.thread_root,
            mentions: self.mentions.clone(),
        }
    }
}

/// The REST twin of the `ack` frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendAck {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub message_id: crate::ids::MessageId,
    pub ts: i64,
    pub duplicate: bool,
}

/// A page of history, oldest first; `has_more` tells whether older messages exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// What a user shows of themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Profile {
    pub user_id: UserId,
    pub username: String,
    /// Empty when never set (clients show the username).
    pub display_name: String,
    pub status_text: String,
    /// The avatar: the id of an image file (download or thumbnail it from
    /// `/api/v1/files/{id}`); empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub avatar: String,
}

/// `PATCH /api/v1/profile`: fields left out keep their value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    /// Up to 64 characters; empty clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Up to 140 characters; empty clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// The id of an image file the caller may read (uploaded with tus); empty clears it. Once
    /// set, every signed-in user may download the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// `GET /api/v1/users?q=`: users whose username or display name starts with `q`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserSearchResults {
    pub users: Vec<Profile>,
}

/// One entry of the caller's block list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BlockedUser {
    pub user_id: UserId,
    pub username: String,
    /// When the block was made, in milliseconds since the Unix epoch.
    pub since: i64,
}

/// `GET /api/v1/blocks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BlockList {
    pub users: Vec<BlockedUser>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok`, or `unavailable` with a 503 status.
    pub status: String,
    pub version: String,
}

/// `GET /api/v1/search`: full-text search over every conversation the caller can read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// 1 to 100 characters. Words match case-insensitively as prefixes; Chinese, Japanese and
    /// Korean text matches as substrings.
    pub q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<UserId>,
    /// Only messages sent at or after this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only messages sent before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// 1 to 50; default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Hits to skip: the `next_offset` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    pub message: Message,
    /// Relevance, higher is better; comparable only within one answer.
    pub score: f64,
}

/// The answer to a search, best hits first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Present when there may be more hits: pass it as `offset` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
}

/// An account as administrators see it (`/api/v1/admin/users`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdminUser {
    pub user_id: UserId,
    pub username: String,
    pub created_at: i64,
    /// Holds the server administrator role.
    pub is_admin: bool,
    /// Suspended: cannot sign in until reactivated.
    pub suspended: bool,
    /// Deleted: can never sign in again; the username stays reserved.
    pub deleted: bool,
}

/// `GET /api/v1/admin/users`: a page in user id order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdminUserList {
    pub users: Vec<AdminUser>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<UserId>,
}

/// Whether an audited action was carried out or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Done,
    Refused,
}

/// One entry of the tamper-evident audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Gap-free and ascending.
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Who acted; absent for the server itself, an operator at the command line, or a client
    /// that was not signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// A stable dotted name, e.g. `sign_in.failure`, `user.suspend`, `token.reuse`.
    pub kind: String,
    pub outcome: AuditOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_user: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// The client's network address, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Further facts (never secrets).
    pub detail: serde_json::Value,
    /// Hex SHA-256 of the entry before; `hash` chains this entry to it.
    pub prev_hash: String,
    pub hash: String,
}

/// `GET /api/v1/admin/audit`: a page in id order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// `POST /api/v1/files/{file_id}/link`: a short-lived URL that serves the file without a bearer
/// token, for `<img src>` and other places that cannot send headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLink {
    /// A path with a signature in its query, relative to the server's root.
    pub url: String,
    /// When the link stops working (ms since the epoch).
    pub expires_at: i64,
}

/// `GET /api/v1/conversations/{id}/messages/{seq}/readers`: who has read a message, derived
/// from the members' read and delivered markers (nothing is stored per message and member).
/// The sender and members who joined after the message was sent are left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageReaders {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    /// Read it.
    pub read: Vec<UserSummary>,
    /// Received it on a device but not read it yet.
    pub delivered: Vec<UserSummary>,
    /// Neither.
    pub unread: Vec<UserSummary>,
}
