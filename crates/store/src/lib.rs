//! The `Store` trait: everything Tidings keeps durably, behind one interface.
//!
//! The domain core reaches storage only through [`Store`]. Each backend (SQLite today,
//! PostgreSQL next) implements it and must pass the shared suite in [`conformance`]
//! (feature `conformance`), so the core can rely on the contract written here, not on a backend.
//!
//! # Contract highlights
//! - [`Store::append_messages`] commits a whole batch in one durable transaction (group commit)
//!   and returns only after the data is on disk. Sequence numbers are per conversation,
//!   start at 1, and are gap-free and strictly increasing in commit order.
//! - Appends are idempotent on `(conversation_id, sender_id, client_msg_id)`: a retry returns the
//!   stored message with `duplicate = true` and stores nothing.
//! - Appending moves the sender's delivered and read markers to the new sequence (one's own
//!   message is read), so unread counts never include one's own messages.
//! - Messages whose body acts on another message (edit, recall, reaction, pin; see
//!   [`MessageBody::target`]) apply their effect to the target in the same transaction as their
//!   own append: the target's body, edit history, reactions, pin and search entry change
//!   together with the event that announces it. Such messages are not counted as unread and
//!   are never a conversation's last message.
//! - Markers (delivered, read) only move forward and never past the conversation's last sequence.
//! - Refresh tokens are stored hashed; a rotated token presented again revokes its device.
//! - Methods that take a [`NewAudit`] append it to the audit log in the same transaction as their
//!   change: an audited action and its entry commit together or not at all. Entries are
//!   numbered gap-free and hash-chained (see [`audit`]).

use async_trait::async_trait;
use tidings_proto::contacts::PrivacySettings;
use tidings_proto::rest::{
    ConversationKind, ConversationSettings, GroupPermissions, Role,
    UpdateConversationSettingsRequest,
};
use tidings_proto::ws::ReceiptKind;
use tidings_proto::{ConversationId, DeviceId, Message, MessageBody, Relations, Seq, UserId};

pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod meta;
pub mod mqtt;
pub mod oauth;
pub mod push;
pub mod rooms;
pub mod search;
pub mod twofactor;
pub mod userxml;

pub use audit::{AuditCheckpoint, AuditFilter, AuditRecord, CheckpointSigner};
pub use mqtt::{MqttRetainedRecord, MqttSessionRecord};
pub use oauth::{
    AuthorizationCodeRecord, BotBinding, DeviceAuthorizationRecord, DeviceAuthorizationState,
    DeviceGrant, OAuthClientRecord,
};
pub use push::{NewPushJob, OutboxItem, PushJob, PushJobKey, PushSubscriptionRecord};
pub use rooms::{OccupantRecord, Occupied, RoomRecord};
pub use twofactor::TwoFactorRecord;
pub use userxml::UserXmlRecord;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated; the string names which one (e.g. `username`).
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// The referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// The backend failed (I/O, corruption, connection loss). The message is for logs only.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    /// Lowercase, unique.
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: i64,
    /// Suspended by an administrator (or deleted): cannot sign in or refresh.
    pub disabled: bool,
    /// A server administrator (the role is read from here on every admin request).
    pub is_admin: bool,
    /// When the account was deleted; a deleted account keeps its row (and its username, so
    /// nobody can take the name over in old conversations) but can never sign in again.
    pub deleted_at: Option<i64>,
}

/// A signed-in device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: i64,
    pub last_active_at: i64,
    /// Set when the device was signed out; its tokens are then worthless.
    pub revoked_at: Option<i64>,
}

/// A refresh token to store. Only the SHA-256 of the token is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub token_hash: [u8; 32],
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The result of presenting a refresh token for rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The old token is now used and the new one stored; the device is still signed in.
    Rotated {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// The token had already been used: the device and all its tokens are now revoked.
    ReuseDetected {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// Unknown, expired, or belonging to a revoked device.
    Invalid,
}

/// A stored conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: String,
    pub created_at: i64,
    pub last_seq: Seq,
}

/// A member of a conversation with their markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub username: String,
    pub role: Role,
    pub joined_at: i64,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
    /// The member cannot post before this time (ms since the epoch); `None` when never muted.
    pub muted_until: Option<i64>,
}

/// The other member of a direct conversation, with their markers (the "seen" of a 1:1 chat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub user_id: UserId,
    pub username: String,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
}

/// One conversation as seen by one member: for the conversation list and for sync.
#[derive(Clone, Debug, PartialEq)]
pub struct UserConversation {
    pub conversation: ConversationRecord,
    pub me: MemberRecord,
    /// Messages from other senders after `me.read_seq`, not counting messages that act on
    /// other messages (edits, reactions, recalls, pins).
    pub unread: u64,
    /// Of the unread messages, those that mention the member or everyone.
    pub mentions: u64,
    /// The member's own settings for the conversation.
    pub settings: ConversationSettings,
    /// The newest message that is not an edit, reaction, recall or pin (0 for none).
    pub last_message_seq: Seq,
    pub member_count: u32,
    /// For direct conversations, the other member and their markers.
    pub peer: Option<Peer>,
}

/// A message to append. The store assigns `seq`, `id` and keeps `ts` as given.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub sender_device_id: DeviceId,
    pub client_msg_id: String,
    pub ts: i64,
    pub body: MessageBody,
    /// Reply, thread and mentions, already checked by the core.
    pub relations: Relations,
}

/// A thread as one member sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadRecord {
    /// The root message, with its `thread` summary.
    pub root: Message,
    /// Replies from others after the member's read position in the thread.
    pub unread: u64,
    /// The member's read position in the thread (0 when never read).
    pub read_seq: Seq,
}

/// One version of a message's body in its edit history.
#[derive(Clone, Debug, PartialEq)]
pub struct EditRecord {
    /// When this version was written.
    pub ts: i64,
    pub editor_id: UserId,
    pub body: MessageBody,
}

/// What the retention task may delete from one conversation: messages older than
/// `before_ts`, and all but the newest `keep_last`. `None` leaves that rule out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prune {
    pub before_ts: Option<i64>,
    pub keep_last: Option<u64>,
}

/// A conversation's own retention policy. It can only shorten what the server keeps: the
/// server-wide policy applies to every conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete messages older than this (milliseconds).
    pub max_age_ms: Option<i64>,
    /// Delete all but the newest this many messages.
    pub keep_last: Option<u64>,
}

/// The result of appending one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    pub message: Message,
    /// True when the `client_msg_id` was already stored and `message` is the original.
    pub duplicate: bool,
}

/// An invitation code that lets someone register while registration is invite-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvite {
    pub code_hash: [u8; 32],
    pub created_at: i64,
    pub expires_at: i64,
    pub uses: u32,
}

/// An entry of a user's block list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub user_id: UserId,
    pub username: String,
    pub since: i64,
}

/// What a user shows of themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRecord {
    pub user_id: UserId,
    pub username: String,
    /// Empty when never set.
    pub display_name: String,
    pub status_text: String,
    /// The avatar's file id; empty for none.
    pub avatar: String,
}

/// A group with its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRecord {
    pub conversation: ConversationRecord,
    pub description: String,
    pub avatar: String,
    pub announcement: String,
    pub join_approval: bool,
    pub permissions: GroupPermissions,
    pub member_count: u32,
}

/// A change to a group's membership or settings. [`Store::change_group`] applies it together
/// with the system message that tells the group, so the timeline and the state never disagree.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupChange {
    /// Adds users as members (existing members are skipped).
    AddMembers {
        users: Vec<UserId>,
    },
    /// `NotFound` if `user` is not a member.
    RemoveMember {
        user: UserId,
    },
    /// Records the ban (replacing an earlier one) and removes `user` if a member.
    Ban {
        user: UserId,
        by: UserId,
        reason: Option<String>,
    },
    /// `NotFound` if `user` was not banned.
    Unban {
        user: UserId,
    },
    /// Sets or (with `None`) lifts a mute. `NotFound` if `user` is not a member.
    Mute {
        user: UserId,
        until: Option<i64>,
    },
    /// `NotFound` if `user` is not a member; `Conflict("role")` for [`Role::Owner`] (ownership
    /// moves only by transfer).
    SetRole {
        user: UserId,
        role: Role,
    },
    /// `from` becomes an admin and `to` the owner. `NotFound` if `to` is not a member.
    TransferOwnership {
        from: UserId,
        to: UserId,
    },
    /// Replaces the fields that are `Some`.
    UpdateInfo {
        title: Option<String>,
        description: Option<String>,
        avatar: Option<String>,
        announcement: Option<String>,
        join_approval: Option<bool>,
    },
    SetPermissions(GroupPermissions),
    /// Replaces the body of the message at `seq` with the `deleted` tombstone. `NotFound` if
    /// there is no such message, or it is a system message.
    DeleteMessage {
        seq: Seq,
    },
    /// Removes every member, invite link, join request and invitation; history is kept.
    Dissolve,
    /// Joins with an invite link, using one of its uses. `NotFound` if the link is not of this
    /// group, revoked, expired (at the event's time) or used up; `Conflict("banned")` if the user
    /// is banned.
    JoinByLink {
        user: UserId,
        link_id: i64,
    },
    /// Consumes the user's invitation and adds them. `NotFound` without an invitation;
    /// `Conflict("banned")` if banned.
    AcceptInvitation {
        user: UserId,
    },
    /// Changes nothing: records an event for a change made elsewhere (an account deletion
    /// that already removed the member, say).
    Notice,
    /// Consumes the user's join request and adds them. `NotFound` without a request;
    /// `Conflict("banned")` if banned.
    ApproveJoinRequest {
        user: UserId,
    },
}

/// What [`Store::change_group`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupChanged {
    /// The stored system message.
    pub event: Message,
    /// Users who became members.
    pub added: Vec<UserId>,
    /// Users who stopped being members.
    pub removed: Vec<UserId>,
}

/// One banned user of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRecord {
    pub user_id: UserId,
    pub username: String,
    pub banned_by: UserId,
    pub since: i64,
    pub reason: Option<String>,
}

/// An invite link to store; only the SHA-256 of its code is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInviteLink {
    pub conversation_id: ConversationId,
    pub code_hash: [u8; 32],
    pub created_by: UserId,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<u32>,
}

/// A stored invite link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteLinkRecord {
    pub id: i64,
    pub conversation_id: ConversationId,
    pub created_by: UserId,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
}

impl InviteLinkRecord {
    /// Whether someone may join with the link at `now`.
    pub fn usable(&self, now: i64) -> bool {
        !self.revoked
            && self.expires_at.is_none_or(|at| now < at)
            && self.max_uses.is_none_or(|max| self.uses < max)
    }
}

/// A pending request to join a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequestRecord {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub username: String,
    pub message: String,
    pub created_at: i64,
}

/// A pending invitation to a group, as the invited user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInvitationRecord {
    pub conversation_id: ConversationId,
    pub title: String,
    pub inviter_id: UserId,
    pub inviter_username: String,
    pub created_at: i64,
}

/// A full-text search over the messages one user can read.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    /// What the user typed (see [`search::parse_query`]).
    pub text: String,
    pub conversation: Option<ConversationId>,
    pub sender: Option<UserId>,
    /// Only messages with `ts >= since`.
    pub since: Option<i64>,
    /// Only messages with `ts < until`.
    pub until: Option<i64>,
    pub limit: u32,
    /// Hits to skip (for the next page).
    pub offset: u32,
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub message: Message,
    /// Relevance; higher is better. Comparable only within one result list.
    pub score: f64,
}

/// One of a user's friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendRecord {
    pub user_id: UserId,
    pub username: String,
    pub since: i64,
}

/// A pending friend request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendRequestRecord {
    pub from: UserId,
    pub from_username: String,
    pub to: UserId,
    pub to_username: String,
    pub note: Option<String>,
    pub created_at: i64,
}

/// What [`Store::send_friend_request`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FriendRequestSent {
    /// The request is stored and pending.
    Pending,
    /// The other user had a pending request to the sender: it was consumed and the two are
    /// friends now.
    BecameFriends,
}

/// Whether an audited action was carried out or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    Done,
    Refused,
}

/// An entry to append to the audit log. The store numbers it and chains its hash to the entry
/// before it; a mutating method that takes one writes it in the same transaction as its change.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Who acted; `None` for the server itself or a client that is not signed in.
    pub actor: Option<UserId>,
    /// What happened: a stable dotted name such as `sign_in.failure` or `group.ban`.
    pub kind: String,
    pub outcome: AuditOutcome,
    /// The user acted upon, if any.
    pub target_user: Option<UserId>,
    /// The conversation acted in, if any.
    pub conversation: Option<ConversationId>,
    /// The client's network address, where known.
    pub address: Option<String>,
    /// Further facts, as a JSON object (never secrets).
    pub detail: serde_json::Value,
}

/// An account's link to an identity at an external OpenID Connect provider: the provider's
/// `issuer` and the `subject` it gives the person (never an e-mail address, which providers let
/// people change and reuse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The configured provider id the link was made through (for display).
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// Milliseconds since the Unix epoch.
    pub linked_at: i64,
}

/// What deleting an account touched, so the core can announce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedAccount {
    /// Devices signed out by the deletion.
    pub devices: Vec<DeviceId>,
    /// Conversations the account was removed from.
    pub conversations: Vec<ConversationId>,
    /// Messages replaced by the `deleted` tombstone (0 when messages are kept).
    pub messages_removed: u64,
}

/// What an upload becomes (tus concatenation extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadKind {
    /// An ordinary upload: a file once complete.
    Single,
    /// A part of a parallel upload; never a file by itself, consumed by a final upload.
    Partial,
    /// The concatenation of partial uploads, listed in `UploadRecord::parts`.
    Final,
}

/// Where a live call stands. Finished calls leave the `calls` table (their record is the
/// `call` message in the conversation), so only these two states are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// Invited, nobody accepted yet.
    Ringing,
    /// A callee device accepted.
    Active,
}

/// A live call between a caller's device and a callee (whose accepting device is known once
/// the call is active).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// 32 lowercase hex characters.
    pub id: String,
    /// The direct conversation the call belongs to (where its record is written).
    pub conversation_id: ConversationId,
    pub caller_id: UserId,
    pub caller_device: DeviceId,
    pub callee_id: UserId,
    /// The callee's device that accepted; `None` while ringing.
    pub callee_device: Option<DeviceId>,
    pub video: bool,
    pub state: CallState,
    pub created_at: i64,
    /// When a ringing call becomes a missed call (ms since the epoch).
    pub ring_deadline: i64,
    /// When the callee accepted.
    pub answered_at: Option<i64>,
}

/// An upload in progress (or just completed). Ids are 32 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub owner: UserId,
    /// Declared total size in bytes (creation-defer-length is not supported).
    pub length: u64,
    /// Bytes received and stored so far.
    pub offset: u64,
    pub kind: UploadKind,
    /// For a final upload: the partial uploads it concatenates, in order.
    pub parts: Vec<String>,
    /// The `Upload-Metadata` header as the client sent it (validated), echoed on HEAD.
    pub metadata: String,
    /// The file name from the metadata (`filename` or `name`), empty when none was given.
    pub name: String,
    pub created_at: i64,
    /// After this time (ms since the epoch) an incomplete upload is removed with its bytes.
    pub expires_at: i64,
    /// Set once the upload is complete and its file exists.
    pub file_id: Option<String>,
}

/// A stored file: a named reference to content-addressed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// 32 lowercase hex characters.
    pub id: String,
    pub owner: UserId,
    /// SHA-256 of the content; the bytes are stored once per distinct value.
    pub sha256: [u8; 32],
    pub size: u64,
    /// Sniffed from the bytes, never taken from the client.
    pub content_type: String,
    pub name: String,
    pub created_at: i64,
    /// Pixel size, for images whose header gives it.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The SCRAM (RFC 5802) verifiers of a password for one hash function, stored beside the
/// argon2 hash so SASL SCRAM can authenticate without the password crossing the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    /// The hash function, as SASL names it: `SHA-1` or `SHA-256`.
    pub algorithm: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
    /// The argon2 PHC string of the password these were derived from. A credential whose
    /// `password_hash` is not the user's current one is stale (the password changed by a path
    /// that did not refresh it) and must not be used.
    pub password_hash: String,
}

/// Durable state of Tidings. Every method is a single atomic operation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip to the backend, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    // --- Accounts -------------------------------------------------------------------------

    /// Creates a user. `Conflict("username")` if the name is taken.
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> StoreResult<UserRecord>;
    /// Creates a user only if the invite exists, is unexpired and has uses left, consuming one
    /// use in the same transaction. `NotFound` if the invite is not usable.
    async fn create_user_with_invite(
        &self,
        username: &str,
        password_hash: &str,
        invite_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<UserRecord>;
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>>;
    /// Users with ids in `ids` (unknown ids are skipped), in id order.
    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>>;
    /// Users in id order after `after`, at most `limit`.
    async fn list_users(&self, after: Option<UserId>, limit: u32) -> StoreResult<Vec<UserRecord>>;
    async fn set_password_hash(&self, user: UserId, password_hash: &str) -> StoreResult<()>;
    /// Replaces every SCRAM credential of `user` with `credentials` (one per algorithm).
    /// `NotFound` for unknown users.
    async fn set_scram_credentials(
        &self,
        user: UserId,
        credentials: Vec<ScramCredential>,
    ) -> StoreResult<()>;
    /// The SCRAM credential of `user` for `algorithm`, if one is stored (stale or not).
    async fn scram_credential(
        &self,
        user: UserId,
        algorithm: &str,
    ) -> StoreResult<Option<ScramCredential>>;
    /// The sync cursors stored for `device`: per conversation, the highest sequence the device
    /// was handed. `None` for a device whose cursors were never started (never advanced, not
    /// even with an empty list).
    async fn device_cursors(
        &self,
        device: DeviceId,
    ) -> StoreResult<Option<Vec<(ConversationId, Seq)>>>;
    /// Starts the cursors of `device` if needed and moves them forward to `cursors` (a cursor
    /// never moves back; conversations not listed keep theirs). `NotFound` for unknown devices.
    async fn advance_device_cursors(
        &self,
        device: DeviceId,
        cursors: Vec<(ConversationId, Seq)>,
    ) -> StoreResult<()>;
    /// Sets a new password hash and signs out every device but `keep`, writing `audit`, all in
    /// one transaction. Returns the signed-out devices. `NotFound` for unknown users.
    async fn replace_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep: Option<DeviceId>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>>;
    /// Users (suspended and deleted ones too) whose username starts with `prefix` (lowercased
    /// by the store; empty matches all), in id order after `after`, at most `limit`.
    async fn find_users(
        &self,
        prefix: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>>;
    /// Suspends (signing out every device) or reactivates an account, writing `audit` in the
    /// same transaction. Returns the devices signed out. `NotFound` for unknown or deleted users.
    async fn set_suspended(
        &self,
        user: UserId,
        suspended: bool,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>>;
    /// Grants or revokes the administrator role, writing `audit` in the same transaction.
    /// Returns whether the role changed. `NotFound` for unknown or deleted users.
    async fn set_admin(&self, user: UserId, is_admin: bool, audit: NewAudit) -> StoreResult<bool>;
    /// Deletes an account in one transaction: marks it deleted and suspended, drops its admin
    /// role, signs out every device, removes it from every conversation, clears its profile,
    /// stored XML, last-seen time, two-factor enrolment and links to external identities (so the person
    /// may start afresh), and, with
    /// `remove_messages`, replaces the body of every message it sent in those conversations with
    /// the `deleted` tombstone (envelopes keep their sequence). Writes `audit`.
    /// `NotFound` for unknown or already deleted users.
    async fn delete_user(
        &self,
        user: UserId,
        now: i64,
        remove_messages: bool,
        audit: NewAudit,
    ) -> StoreResult<DeletedAccount>;
    async fn create_invite(&self, invite: NewInvite) -> StoreResult<()>;

    // --- External identities (OpenID Connect sign-in) -------------------------------------

    /// The account linked to the external identity (`issuer`, `subject`), if any.
    async fn external_identity_user(
        &self,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>>;
    /// Links `link` to `user`, writing `audit` in the same transaction.
    /// `Conflict("external_identity")` if that identity is linked already (to anyone);
    /// `NotFound` for unknown or deleted users.
    async fn link_external_identity(
        &self,
        user: UserId,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<()>;
    /// Creates a user and links `link` to it in one transaction, writing `audit` with the new
    /// account as its actor and target.
    /// `Conflict("username")` or `Conflict("external_identity")` leave nothing behind.
    async fn create_linked_user(
        &self,
        username: &str,
        password_hash: &str,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<UserRecord>;
    /// The identities linked to `user`, oldest link first.
    async fn external_identities_of(&self, user: UserId) -> StoreResult<Vec<ExternalIdentity>>;

    // --- Devices and tokens ---------------------------------------------------------------

    async fn create_device(&self, user: UserId, name: &str, now: i64) -> StoreResult<DeviceRecord>;
    /// A successful sign-in in one transaction: creates the device, stores its first refresh
    /// token (`refresh_hash`, valid until `refresh_expires_at`) and writes `audit`.
    /// `NotFound` if the user is unknown, suspended or deleted (checked in the same transaction,
    /// so a suspension can never be outrun by a sign-in that passed its password check earlier).
    async fn sign_in(
        &self,
        user: UserId,
        device_name: &str,
        refresh_hash: [u8; 32],
        refresh_expires_at: i64,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<DeviceRecord>;
    async fn device(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>>;
    /// The user's devices that are not revoked, oldest first.
    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>>;
    async fn touch_device(&self, id: DeviceId, now: i64) -> StoreResult<()>;
    /// Signs a device out: marks it revoked and deletes its refresh tokens, and writes `audit`
    /// (if given) in the same transaction when it did.
    /// Returns false (and writes nothing) if it did not exist, was not the user's, or was
    /// already revoked.
    async fn revoke_device(
        &self,
        user: UserId,
        id: DeviceId,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<bool>;
    /// Revokes every device of the user except `keep`, writing `audit` (if given) in the same
    /// transaction; returns the revoked ids.
    async fn revoke_other_devices(
        &self,
        user: UserId,
        keep: Option<DeviceId>,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<Vec<DeviceId>>;
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> StoreResult<()>;
    /// Atomically checks `old_hash` and, if valid and unused, marks it used and stores `new`
    /// (which must name the same device; the store fills in nothing). When the token was
    /// already used, the device is revoked and `on_reuse` is written in the same transaction.
    async fn rotate_refresh_token(
        &self,
        old_hash: [u8; 32],
        new: NewRefreshToken,
        now: i64,
        on_reuse: NewAudit,
    ) -> StoreResult<RotateOutcome>;
    /// The device a refresh token belongs to, if the token is known (used or not).
    async fn refresh_token_device(&self, hash: [u8; 32]) -> StoreResult<Option<DeviceId>>;
    /// Deletes refresh tokens that expired at or before `now`, used or not: they can no longer
    /// be rotated, and presenting one is answered `Invalid` either way. Returns how many.
    async fn prune_refresh_tokens(&self, now: i64) -> StoreResult<u64>;

    // --- OAuth clients and authorization codes ---------------------------------------------

    /// Registers a client and writes `audit` in the same transaction. `Conflict("client_id")`
    /// if the id is taken.
    async fn create_oauth_client(
        &self,
        client: OAuthClientRecord,
        audit: NewAudit,
    ) -> StoreResult<()>;
    async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRecord>>;
    /// Registered clients with ids after `after` (all when `None`), in id order, at most `limit`.
    async fn oauth_clients(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OAuthClientRecord>>;
    /// Removes a client, its pending authorization codes and device authorizations, and signs
    /// out every device signed in through it (deleting their refresh tokens; a bot client's
    /// account stays, without devices), writing `audit`, all in one transaction. Returns the
    /// devices signed out. `NotFound` if the client is unknown.
    async fn delete_oauth_client(
        &self,
        client_id: &str,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<(UserId, DeviceId)>>;
    /// Stores an authorization code, and deletes codes that expired at or before `now`.
    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
        now: i64,
    ) -> StoreResult<()>;
    /// Takes a code: deletes it and returns it if it had not expired at `now`. A code is taken
    /// at most once, whatever the outcome of the exchange, so it can never be replayed.
    async fn take_authorization_code(
        &self,
        code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<AuthorizationCodeRecord>>;
    /// [`Store::sign_in`] through a registered client: the new device also records `grant`.
    /// `NotFound` if the user is unknown, suspended or deleted, or the client no longer exists
    /// (checked in the same transaction).
    #[allow(clippy::too_many_arguments)]
    async fn sign_in_client(
        &self,
        user: UserId,
        device_name: &str,
        grant: DeviceGrant,
        refresh_hash: [u8; 32],
        refresh_expires_at: i64,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<DeviceRecord>;
    /// The client and scope a device was signed in through; `None` for first-party devices.
    async fn device_grant(&self, device: DeviceId) -> StoreResult<Option<DeviceGrant>>;
    /// Registers a bot client: creates the bot account `username` (with `password_hash`, which
    /// the core makes unusable), one device named after the client that records the client's
    /// grant, and the client bound to both, writing `audit`, all in one transaction. Returns
    /// the client with its [`BotBinding`] (the `bot` field passed in is ignored).
    /// `Conflict("username")` if the name is taken, `Conflict("client_id")` if the id is.
    async fn create_bot_client(
        &self,
        client: OAuthClientRecord,
        username: &str,
        password_hash: &str,
        audit: NewAudit,
    ) -> StoreResult<OAuthClientRecord>;

    // --- Device authorization grant (RFC 8628) ----------------------------------------------

    /// Stores a pending device authorization, and deletes those that expired at or before
    /// `now`. `Conflict("user_code")` if a live one has the same user code.
    async fn create_device_authorization(
        &self,
        authorization: DeviceAuthorizationRecord,
        now: i64,
    ) -> StoreResult<()>;
    /// The unexpired device authorization with this (normalized) user code.
    async fn device_authorization(
        &self,
        user_code: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>>;
    /// Records the user's answer to a pending, unexpired device authorization; `false` if there
    /// is none with this user code (unknown, expired, or already answered).
    async fn decide_device_authorization(
        &self,
        user_code: &str,
        state: DeviceAuthorizationState,
        now: i64,
    ) -> StoreResult<bool>;
    /// A poll of the token endpoint, in one transaction: returns the authorization as it was
    /// before this poll (expired ones too, so the caller can say `expired_token`), sets
    /// `last_polled_at` to `now`, adds 5 to `interval_secs` when this poll came less than
    /// `interval_secs` after the previous one, and deletes the authorization once it has been
    /// answered or has expired, so an answer is collected at most once.
    async fn poll_device_authorization(
        &self,
        device_code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>>;

    // --- Profiles ---------------------------------------------------------------------------

    /// A user's profile (empty fields when never set); `None` for unknown users.
    async fn profile(&self, user: UserId) -> StoreResult<Option<ProfileRecord>>;
    /// Replaces a user's display name and status text. `NotFound` for unknown users.
    /// Sets the user's avatar (a file id, or empty for none). A file that is a user's or a
    /// group's avatar is readable by every user ([`Store::can_read_file`]). `NotFound` if there
    /// is no such user.
    async fn set_avatar(&self, user: UserId, avatar: &str, now: i64) -> StoreResult<()>;
    async fn set_profile(
        &self,
        user: UserId,
        display_name: &str,
        status_text: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Enabled users whose username starts with `prefix`, or whose display name starts with it
    /// (ASCII case-insensitively), ordered by username, at most `limit`.
    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<ProfileRecord>>;

    // --- Block list -----------------------------------------------------------------------

    /// `blocker` blocks `blocked`. In the same transaction a block ends their friendship and
    /// removes pending friend requests both ways (and bumps both contacts versions when it
    /// does), so a blocked user never lingers in the blocker's friends or requests.
    /// Returns false if the block already existed. `NotFound` for unknown users.
    async fn block_user(&self, blocker: UserId, blocked: UserId, now: i64) -> StoreResult<bool>;
    /// Lifts a block; returns false if there was none.
    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool>;
    /// The users `blocker` has blocked, in user id order.
    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<BlockRecord>>;
    /// The users who have blocked `blocked`, in user id order.
    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>>;
    /// Whether `blocker` has blocked `blocked`.
    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool>;

    // --- Friends and privacy --------------------------------------------------------------
    //
    // Every change to a user's friends or friend requests bumps that user's contacts version
    // (see [`Store::contacts_version`]) in the same transaction, for both users involved.

    /// `from` asks `to` to be friends, with an optional note. If `to` already has a pending
    /// request to `from`, that request is consumed and the two become friends at once.
    /// `NotFound` for unknown users, `Conflict("friendship")` if they are friends already,
    /// `Conflict("friend_request")` if `from` already has a pending request to `to`.
    /// Blocks are the caller's business (the core checks them first).
    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<FriendRequestSent>;
    /// `to` accepts the pending request from `from`: the request is consumed and they become
    /// friends. Returns false if there was no such request.
    async fn accept_friend_request(&self, from: UserId, to: UserId, now: i64) -> StoreResult<bool>;
    /// Deletes the pending request from `from` to `to` (declined by `to` or cancelled by
    /// `from`). Returns false if there was none.
    async fn delete_friend_request(&self, from: UserId, to: UserId) -> StoreResult<bool>;
    /// Ends the friendship between `a` and `b` (in either order); returns false if there was
    /// none.
    async fn remove_friend(&self, a: UserId, b: UserId) -> StoreResult<bool>;
    /// The user's friends, in user id order.
    async fn friends_of(&self, user: UserId) -> StoreResult<Vec<FriendRecord>>;
    /// Whether `a` and `b` are friends (symmetric).
    async fn are_friends(&self, a: UserId, b: UserId) -> StoreResult<bool>;
    /// The pending request from `from` to `to`, if any.
    async fn friend_request(
        &self,
        from: UserId,
        to: UserId,
    ) -> StoreResult<Option<FriendRequestRecord>>;
    /// Pending requests to `user`, oldest first.
    async fn friend_requests_to(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>>;
    /// Pending requests from `user`, oldest first.
    async fn friend_requests_from(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>>;
    /// A counter that grows with every change to the user's friends or requests; 0 for a user
    /// whose contacts never changed.
    async fn contacts_version(&self, user: UserId) -> StoreResult<u64>;
    /// The privacy settings of these users, in user id order; users who never changed theirs
    /// get the defaults (everything open). Unknown ids are skipped.
    async fn privacy_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, PrivacySettings)>>;
    /// Replaces a user's privacy settings. `NotFound` for unknown users.
    async fn set_privacy(
        &self,
        user: UserId,
        settings: PrivacySettings,
        now: i64,
    ) -> StoreResult<()>;

    // --- Conversations --------------------------------------------------------------------

    /// The direct conversation between `a` and `b`, if there is one (never creates it).
    async fn direct_between(&self, a: UserId, b: UserId)
    -> StoreResult<Option<ConversationRecord>>;

    /// The one direct conversation between `a` and `b`, created if missing.
    /// Returns the record and whether it was created now.
    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        now: i64,
    ) -> StoreResult<(ConversationRecord, bool)>;
    /// Creates a group; `owner` becomes its owner and `members` its members (duplicates and the
    /// owner are ignored in `members`).
    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now: i64,
    ) -> StoreResult<ConversationRecord>;
    /// Adds members (existing ones are skipped); returns those actually added.
    async fn add_members(
        &self,
        conversation: ConversationId,
        users: &[UserId],
        now: i64,
    ) -> StoreResult<Vec<UserId>>;
    /// Removes a member; returns false if they were not a member.
    async fn remove_member(&self, conversation: ConversationId, user: UserId) -> StoreResult<bool>;
    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>>;
    async fn member(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> StoreResult<Option<MemberRecord>>;
    /// All members, in user id order.
    async fn members(&self, conversation: ConversationId) -> StoreResult<Vec<MemberRecord>>;
    /// Every conversation the user belongs to, newest activity first.
    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<UserConversation>>;
    /// One conversation as seen by `user`, if they are a member.
    async fn user_conversation(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> StoreResult<Option<UserConversation>>;
    /// The direct conversations `user` is in, in conversation id order.
    async fn direct_conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>>;
    /// Distinct users (other than `user`) who share at least one conversation with `user`.
    async fn co_members(&self, user: UserId) -> StoreResult<Vec<UserId>>;

    // --- Groups -----------------------------------------------------------------------------

    /// A group with its settings; `None` for unknown ids and direct conversations.
    async fn group(&self, id: ConversationId) -> StoreResult<Option<GroupRecord>>;
    /// Applies `change` to the group `event.conversation_id`, appends `event` (a system message,
    /// sequenced like any other) and writes `audit`, all in one durable transaction. If the
    /// change fails, nothing is stored. `NotFound` if the group does not exist (for
    /// [`GroupChange::DeleteMessage`], any conversation will do: administrators remove messages
    /// from direct conversations too).
    async fn change_group(
        &self,
        change: GroupChange,
        event: NewMessage,
        audit: Option<NewAudit>,
    ) -> StoreResult<GroupChanged>;
    /// The group's banned users, in user id order.
    async fn group_bans(&self, id: ConversationId) -> StoreResult<Vec<BanRecord>>;
    async fn is_banned(&self, id: ConversationId, user: UserId) -> StoreResult<bool>;
    async fn create_invite_link(&self, link: NewInviteLink) -> StoreResult<InviteLinkRecord>;
    /// The group's links that are not revoked, newest first.
    async fn invite_links(&self, id: ConversationId) -> StoreResult<Vec<InviteLinkRecord>>;
    async fn invite_link_by_code(
        &self,
        code_hash: [u8; 32],
    ) -> StoreResult<Option<InviteLinkRecord>>;
    /// Returns false if the link is not the group's or was already revoked.
    async fn revoke_invite_link(
        &self,
        id: ConversationId,
        link_id: i64,
        now: i64,
    ) -> StoreResult<bool>;
    /// Returns false if the user already has a pending request to this group.
    async fn create_join_request(
        &self,
        id: ConversationId,
        user: UserId,
        message: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Pending requests, oldest first.
    async fn join_requests(&self, id: ConversationId) -> StoreResult<Vec<JoinRequestRecord>>;
    /// Declines (or withdraws) a request; returns false if there was none.
    async fn delete_join_request(&self, id: ConversationId, user: UserId) -> StoreResult<bool>;
    /// Returns false if the user already has a pending invitation to this group.
    async fn create_group_invitation(
        &self,
        id: ConversationId,
        user: UserId,
        inviter: UserId,
        now: i64,
    ) -> StoreResult<bool>;
    /// The user's pending invitations, newest first.
    async fn group_invitations_of(&self, user: UserId) -> StoreResult<Vec<GroupInvitationRecord>>;
    /// Declines an invitation; returns false if there was none.
    async fn delete_group_invitation(&self, id: ConversationId, user: UserId) -> StoreResult<bool>;

    // --- Messages -------------------------------------------------------------------------

    /// Appends a batch in one durable transaction (see the crate docs). Results are in input
    /// order. An item fails alone with `NotFound` if its conversation does not exist; any
    /// backend failure fails the whole batch and nothing from it is stored. Each new message
    /// that [`push::notifies`] gets a push outbox row (due at its `ts`) in the same
    /// transaction; duplicates do not.
    async fn append_messages(
        &self,
        batch: Vec<NewMessage>,
    ) -> StoreResult<Vec<StoreResult<Appended>>>;
    /// Messages with `seq > after`, ascending, at most `limit`.
    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// The newest messages with `seq < before` (or the newest overall), returned ascending.
    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;

    /// Every version of the message's body, oldest first, ending with the current one. Empty
    /// when there is no such message or it was recalled.
    async fn edit_history(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<EditRecord>>;
    /// Who reacted to the message, per key, keys in order of first use and users in order of
    /// reacting.
    async fn reactions(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<(String, Vec<UserId>)>>;
    /// The pinned messages of a conversation, most recently pinned first, at most `limit`.
    async fn pinned_messages(
        &self,
        conversation: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// The replies in the thread under `root` with `seq > after`, ascending, at most `limit`.
    async fn thread_messages(
        &self,
        conversation: ConversationId,
        root: Seq,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// Changes a member's own settings for a conversation and returns them. `pinned` records
    /// `now` as the pin time (keeping an earlier one). `NotFound` if not a member.
    async fn update_conversation_settings(
        &self,
        conversation: ConversationId,
        user: UserId,
        change: UpdateConversationSettingsRequest,
        now: i64,
    ) -> StoreResult<ConversationSettings>;
    /// Hides a message from one member's own views ("delete for me"). `NotFound` if there is
    /// no such message. Hiding twice is harmless.
    async fn hide_message(
        &self,
        user: UserId,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<()>;
    /// Of the sequences `from..=to` of a conversation, those `user` has hidden, ascending.
    async fn hidden_messages(
        &self,
        user: UserId,
        conversation: ConversationId,
        from: Seq,
        to: Seq,
    ) -> StoreResult<Vec<Seq>>;
    /// Moves a member's read position in the thread under `root` forward to `seq`.
    async fn mark_thread_read(
        &self,
        conversation: ConversationId,
        root: Seq,
        user: UserId,
        seq: Seq,
    ) -> StoreResult<()>;
    /// The threads of a conversation, most recently active first, at most `limit`, each with
    /// the replies from others after `user`'s read position in it.
    async fn threads(
        &self,
        conversation: ConversationId,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>>;
    /// Sets a conversation's own retention; `Retention::default()` clears it. `NotFound` if
    /// there is no such conversation.
    async fn set_retention(
        &self,
        conversation: ConversationId,
        retention: Retention,
    ) -> StoreResult<()>;
    /// A conversation's own retention (default when it has none).
    async fn retention(&self, conversation: ConversationId) -> StoreResult<Retention>;
    /// Conversations with a retention of their own, after `after` by id, at most `limit`.
    async fn retentions(
        &self,
        after: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<(ConversationId, Retention)>>;
    /// Deletes up to `limit` of the oldest messages `prune` allows in one conversation, with
    /// their reactions, edits, mentions, pins and search entries. Returns how many went. The
    /// conversation's sequence is unaffected: later messages keep theirs, and new ones
    /// continue after `last_seq`. `NotFound` if there is no such conversation.
    async fn prune_conversation(
        &self,
        conversation: ConversationId,
        prune: Prune,
        limit: u32,
    ) -> StoreResult<u32>;
    /// Deletes up to `limit` of the oldest messages in the whole store written before
    /// `before_ts` (the server-wide policy). Returns how many went. Like
    /// [`Store::prune_conversation`] it never deletes the newest message of the store.
    async fn prune_before(&self, before_ts: i64, limit: u32) -> StoreResult<u32>;

    // --- Search ---------------------------------------------------------------------------

    /// Adds up to `limit` messages not yet indexed to the search index, oldest first; returns
    /// how many were examined (0 when the index is up to date). Only text bodies are indexed,
    /// with [`search::index_terms`]. Appends never wait for the index: the core runs this in
    /// the background, so a message becomes searchable shortly after it is stored.
    async fn index_pending(&self, limit: u32) -> StoreResult<u32>;
    /// Indexed messages matching `query` in conversations `user` is a member of, best first.
    /// Words match case-insensitively as prefixes; CJK text matches as substrings. Messages
    /// whose body was replaced by a tombstone are never returned.
    async fn search_messages(
        &self,
        user: UserId,
        query: SearchQuery,
    ) -> StoreResult<Vec<SearchHit>>;

    // --- Markers and presence -------------------------------------------------------------

    /// Moves a member's marker forward to `min(seq, last_seq)`. Returns the new value if it
    /// moved, `None` if it was already there or beyond. `NotFound` if not a member.
    /// Moving `read` also moves `delivered` (what was read was delivered).
    async fn advance_marker(
        &self,
        conversation: ConversationId,
        user: UserId,
        kind: ReceiptKind,
        seq: Seq,
    ) -> StoreResult<Option<Seq>>;
    async fn set_last_seen(&self, user: UserId, ts: i64) -> StoreResult<()>;
    /// Last-seen times for these users (users never seen are absent).
    async fn last_seen(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, i64)>>;

    // --- Audit log ------------------------------------------------------------------------

    /// Appends an entry that records no state change of its own (a failed sign-in, a refused
    /// attempt). Returns its id.
    async fn append_audit(&self, entry: NewAudit) -> StoreResult<i64>;
    /// Entries matching `filter` with `id > after`, ascending by id, at most `limit`.
    async fn audit_entries(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// Removes the entries up to the last one with `ts < before` and, in the same transaction,
    /// stores a checkpoint naming the last removed entry and its hash, signed by `sign` over
    /// [`audit::checkpoint_message`]. Returns the checkpoint, or `None` if nothing was old
    /// enough. The remaining chain verifies from the checkpoint.
    async fn prune_audit(
        &self,
        before: i64,
        now: i64,
        sign: CheckpointSigner,
    ) -> StoreResult<Option<AuditCheckpoint>>;
    /// Every checkpoint, oldest first.
    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>>;
    // --- Uploads and files ----------------------------------------------------------------

    /// Stores a new upload unless the owner's usage ([`Store::storage_usage`]) plus its length
    /// would exceed `quota`; returns `false` (storing nothing) in that case. The check and the
    /// insert are one transaction, so concurrent creations cannot overrun the quota together.
    async fn create_upload(&self, upload: UploadRecord, quota: u64) -> StoreResult<bool>;
    async fn upload(&self, id: &str) -> StoreResult<Option<UploadRecord>>;
    /// Moves an incomplete upload's offset from `from` to `to` (compare-and-set). Returns
    /// `false` and changes nothing when the offset is no longer `from` or the upload is gone.
    async fn advance_upload(&self, id: &str, from: u64, to: u64) -> StoreResult<bool>;
    /// Removes an upload record (not a file it became). `false` if there was none.
    async fn delete_upload(&self, id: &str) -> StoreResult<bool>;
    /// Uploads whose `expires_at` is at or before `now`, oldest first, at most `limit`.
    async fn expired_uploads(&self, now: i64, limit: u32) -> StoreResult<Vec<UploadRecord>>;
    /// Bytes counted against a user's quota: the declared lengths of their incomplete uploads
    /// plus the sizes of the files they own (a deduplicated file still counts for each owner).
    async fn storage_usage(&self, user: UserId) -> StoreResult<u64>;
    /// Completes an upload in one transaction: stores `file`, adds a reference to its bytes,
    /// sets the upload's `file_id`, and deletes the `consumed` partial uploads. Returns `true`
    /// when these bytes had no reference before. `NotFound` if the upload is gone or already
    /// complete.
    async fn complete_upload(
        &self,
        upload_id: &str,
        consumed: &[String],
        file: FileRecord,
    ) -> StoreResult<bool>;
    async fn file(&self, id: &str) -> StoreResult<Option<FileRecord>>;
    /// Deletes a file record and drops its reference to the bytes. Returns the record and
    /// whether that was the last reference (then the caller deletes the bytes); `None` if
    /// there was no such file. Its shares go with it.
    async fn delete_file(&self, id: &str) -> StoreResult<Option<(FileRecord, bool)>>;
    /// Records that `file` was shared in `conversation`, so the conversation's members may
    /// read it. Idempotent. `false` if there is no such file.
    async fn share_file(&self, file: &str, conversation: ConversationId) -> StoreResult<bool>;
    /// Whether `user` owns `file`, is a member of a conversation it was shared in, or `file` is
    /// a user's or a group's avatar (avatars are public pictures).
    async fn can_read_file(&self, file: &str, user: UserId) -> StoreResult<bool>;

    // Push notifications (see [`push`]). A device's subscription and its queued jobs disappear
    // when the device is revoked or deleted, in the same transaction.

    /// Registers `subscription` for `device` of `user`, replacing any it had.
    async fn set_push_subscription(
        &self,
        user: UserId,
        device: DeviceId,
        subscription: tidings_proto::push::PushSubscription,
        now: i64,
    ) -> StoreResult<()>;
    /// The subscriptions of these users' devices, in device id order.
    async fn push_subscriptions_of(
        &self,
        users: &[UserId],
    ) -> StoreResult<Vec<PushSubscriptionRecord>>;
    /// Deletes `device`'s subscription and its queued jobs. With `only`, only when the stored
    /// subscription is still that one (a push service said it is gone, and the device may have
    /// registered a new one since). Returns whether one was deleted.
    async fn delete_push_subscription(
        &self,
        device: DeviceId,
        only: Option<tidings_proto::push::PushSubscription>,
    ) -> StoreResult<bool>;
    /// A user's notification settings (the defaults when never set).
    async fn push_settings(&self, user: UserId) -> StoreResult<tidings_proto::push::PushSettings>;
    async fn set_push_settings(
        &self,
        user: UserId,
        settings: tidings_proto::push::PushSettings,
    ) -> StoreResult<()>;
    /// Queues jobs in one transaction. A job whose device and collapse key are already queued
    /// replaces that job's payload and bumps its version, keeping its due time (a job waiting
    /// out a backoff keeps waiting). Jobs for devices without a subscription are ignored.
    async fn enqueue_push_jobs(&self, jobs: Vec<NewPushJob>) -> StoreResult<()>;
    /// Claims up to `limit` jobs due at `now`, oldest first, leasing them until `lease_until`
    /// (they become due again then, should the claimer die). Several nodes may claim at once;
    /// each job goes to one of them.
    async fn claim_push_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<PushJob>>;
    /// Ends a claimed job (delivered, or given up). If a newer push was merged into it since
    /// the claim, the job stays, due at `now`, with its attempts reset.
    async fn finish_push_job(&self, key: PushJobKey, now: i64) -> StoreResult<()>;
    /// A claimed job failed: counts the attempt and makes it due again at `next_at`.
    async fn retry_push_job(&self, key: PushJobKey, next_at: i64) -> StoreResult<()>;
    /// Claims up to `limit` push outbox rows due at `now` (see [`push`]), oldest first, leasing
    /// them until `lease_until`. Several nodes may claim at once; each row goes to one of them.
    async fn claim_push_outbox(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>>;
    /// Deletes outbox rows whose pushes were planned (missing rows are ignored).
    async fn delete_push_outbox(&self, done: Vec<OutboxItem>) -> StoreResult<()>;
    // --- Two-factor sign-in (see [`twofactor`]) ----------------------------------------------

    /// The user's TOTP enrolment, pending or confirmed.
    async fn two_factor(&self, user: UserId) -> StoreResult<Option<TwoFactorRecord>>;
    /// Stores a pending enrolment with `secret` (sealed by the core), replacing a pending one.
    /// `Conflict` if a confirmed enrolment exists; `NotFound` for unknown or deleted users.
    async fn begin_two_factor(&self, user: UserId, secret: Vec<u8>, now: i64) -> StoreResult<()>;
    /// Confirms the pending enrolment: records `step` as the last used time step, stores the
    /// `recovery` code hashes (replacing any), and writes `audit`, in one transaction.
    /// `NotFound` if there is no pending enrolment.
    async fn confirm_two_factor(
        &self,
        user: UserId,
        step: i64,
        recovery: Vec<[u8; 32]>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<()>;
    /// Records that a code for TOTP time step `step` was accepted, when `step` is later than
    /// every step accepted before (compare-and-set, so two racing sign-ins with one code cannot
    /// both pass). `false` for a replayed or older step, or without a confirmed enrolment.
    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
    /// Spends the unspent recovery code of a confirmed enrolment whose hash is `hash`;
    /// `false` if there is none.
    async fn use_recovery_code(&self, user: UserId, hash: [u8; 32], now: i64) -> StoreResult<bool>;
    /// Replaces every recovery code of a confirmed enrolment with `recovery`, writing `audit`.
    /// `NotFound` without a confirmed enrolment.
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: Vec<[u8; 32]>,
        audit: NewAudit,
    ) -> StoreResult<()>;
    /// Removes the user's enrolment (pending or confirmed) and its recovery codes, writing
    /// `audit` when there was one. Returns whether there was.
    async fn disable_two_factor(&self, user: UserId, audit: NewAudit) -> StoreResult<bool>;
    /// The files `owner` uploaded, in id order after `after`, at most `limit` (account export).
    async fn files_of(
        &self,
        owner: UserId,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<FileRecord>>;

    // --- Calls -----------------------------------------------------------------------------

    /// Stores a new ringing call unless its caller or callee already takes part in a live call
    /// (ringing or active, in either role); returns `false` (storing nothing) then. The check
    /// and the insert are one transaction, so two calls cannot both find a user free.
    async fn create_call(&self, call: CallRecord) -> StoreResult<bool>;
    async fn call(&self, id: &str) -> StoreResult<Option<CallRecord>>;
    /// Moves a ringing call to active with the accepting device (compare-and-set): the first
    /// accept wins. `None` when the call is gone or no longer ringing.
    async fn accept_call(
        &self,
        id: &str,
        device: DeviceId,
        now: i64,
    ) -> StoreResult<Option<CallRecord>>;
    /// Ends a call that is in `state` (compare-and-set) and removes it, returning it as it
    /// was. `None` when it is gone or in another state: exactly one of several concurrent
    /// enders (a hang-up, the ring-timeout sweeper of any node) gets the record.
    async fn finish_call(&self, id: &str, state: CallState) -> StoreResult<Option<CallRecord>>;
    /// Ringing calls whose `ring_deadline` is at or before `now`, oldest deadline first, at
    /// most `limit`.
    async fn calls_ringing_until(&self, now: i64, limit: u32) -> StoreResult<Vec<CallRecord>>;

    // --- MQTT (see [`mqtt`]) -----------------------------------------------------------------

    /// Writes these persistent sessions (replacing what was stored under the same user and
    /// client id) and deletes those under `delete`, in one transaction.
    async fn save_mqtt_sessions(
        &self,
        put: Vec<MqttSessionRecord>,
        delete: Vec<(UserId, String)>,
    ) -> StoreResult<()>;
    /// Every stored persistent session, by user and client id.
    async fn mqtt_sessions(&self) -> StoreResult<Vec<MqttSessionRecord>>;
    /// Writes these retained messages (replacing those of the same topic) and deletes the
    /// retained messages of the topics under `delete`, in one transaction.
    async fn save_mqtt_retained(
        &self,
        put: Vec<MqttRetainedRecord>,
        delete: Vec<String>,
    ) -> StoreResult<()>;
    /// Every stored retained message, by topic.
    async fn mqtt_retained(&self) -> StoreResult<Vec<MqttRetainedRecord>>;

    // --- Per-user XML storage (see [`userxml`]) -----------------------------------------------

    /// Writes an item, replacing the one with the same user, node and item id. A new item is
    /// refused with `Ok(false)` when the user already holds `max_items` items (in all nodes);
    /// replacing an item always succeeds. `NotFound` when the user does not exist.
    async fn put_user_xml(&self, item: UserXmlRecord, max_items: u32) -> StoreResult<bool>;
    /// The items of one of a user's nodes, the most recently written first.
    async fn user_xml(&self, user: UserId, node: &str) -> StoreResult<Vec<UserXmlRecord>>;
    /// Deletes one item; `false` when there was none.
    async fn delete_user_xml(&self, user: UserId, node: &str, item_id: &str) -> StoreResult<bool>;

    // --- Named rooms and occupants (see [`rooms`]) --------------------------------------------

    /// Gives a group the room address `address` (lowercase). `Ok(false)` when another group
    /// holds the address or this group already has one; `NotFound` for unknown conversations.
    async fn claim_room_address(
        &self,
        conversation: ConversationId,
        address: &str,
        temporary: bool,
    ) -> StoreResult<bool>;
    /// The room holding `address` (lowercase), if any.
    async fn room_by_address(&self, address: &str) -> StoreResult<Option<RoomRecord>>;
    /// The rooms of those of `conversations` that have an address, by conversation id.
    async fn rooms_of(&self, conversations: &[ConversationId]) -> StoreResult<Vec<RoomRecord>>;
    /// Marks a room temporary or not; `false` when the group has no room address.
    async fn set_room_temporary(
        &self,
        conversation: ConversationId,
        temporary: bool,
    ) -> StoreResult<bool>;
    /// Releases a group's room address and empties its room (when the group is dissolved).
    async fn delete_room(&self, conversation: ConversationId) -> StoreResult<()>;
    /// Puts a device in a room under `occupant.nick`, or renames it there. Nicks are unique per
    /// user: another user's occupant with the same nick (on a node in `live_nodes`) makes it
    /// [`Occupied::NickTaken`]; the same user's other devices may share a nick.
    async fn occupy(&self, occupant: OccupantRecord, live_nodes: &[i64]) -> StoreResult<Occupied>;
    /// Takes a device out of a room, returning what it was there, if it was.
    async fn vacate(
        &self,
        conversation: ConversationId,
        device: DeviceId,
    ) -> StoreResult<Option<OccupantRecord>>;
    /// A room's occupants on the nodes in `live_nodes`, in the order they entered.
    async fn occupants(
        &self,
        conversation: ConversationId,
        live_nodes: &[i64],
    ) -> StoreResult<Vec<OccupantRecord>>;
    /// Deletes the occupants of every node not in `live_nodes` (nodes that stopped without
    /// saying so), returning how many rows went.
    async fn vacate_nodes_except(&self, live_nodes: &[i64]) -> StoreResult<u64>;
}
