//! The SQLite backend of [`tidings_store::Store`], for single-node deployments.
//!
//! # Layout
//! - [`SqliteStore`] (here): opens the file, and routes each trait method to the writer or to a
//!   reader.
//! - `writer`: the one read-write connection, owned by the thread `tidings-sqlite-writer`. Every
//!   write is a job on its channel; jobs queued together share one transaction (group commit).
//! - `readers`: a small pool of read-only connections used from tokio's blocking pool.
//! - `mqtt`: the statements of MQTT persistent sessions and retained messages.
//! - `userxml`: the statements of per-user XML storage.
//! - `rooms`: the statements of named rooms and their occupants (XMPP Multi-User Chat).
//! - `account`: the statements of TOTP enrolments, recovery codes and a user's file list.
//! - `push`: the statements of push subscriptions, settings and the job queue.
//! - `queries`: every other SQL statement, as blocking functions on a `&Connection`.
//! - `schema`: pragmas and the embedded migrations (`src/migrations/*.sql`).
//! - `error`: SQLite errors to [`StoreError`].
//!
//! **Architecture Invariant:** no SQLite call runs on an async worker thread. Writes run on the
//! writer thread and reads on the blocking pool; async methods only send work and await answers.
//!
//! **Architecture Invariant:** a write returns only after the COMMIT that contains it has
//! returned, and the database runs with `synchronous = FULL`, so whatever a caller was told is
//! stored has been fsync'd.

mod account;
mod cursors;
mod error;
mod identities;
mod mqtt;
mod oauth;
mod push;
mod queries;
mod readers;
mod rooms;
mod schema;
mod scram;
mod userxml;
mod writer;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use queries::PreparedMessage;
use readers::Readers;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tidings_proto::contacts::PrivacySettings;
use tidings_proto::rest::{ConversationSettings, UpdateConversationSettingsRequest};
use tidings_proto::ws::ReceiptKind;
use tidings_proto::{ConversationId, DeviceId, Message, Seq, UserId};
use tidings_store::{
    Appended, AuditCheckpoint, AuditFilter, AuditRecord, BanRecord, BlockRecord, CheckpointSigner,
    ConversationRecord, DeletedAccount, DeviceRecord, FriendRecord, FriendRequestRecord,
    FriendRequestSent, GroupChange, GroupChanged, GroupInvitationRecord, GroupRecord,
    InviteLinkRecord, JoinRequestRecord, MemberRecord, NewAudit, NewInvite, NewInviteLink,
    NewMessage, NewRefreshToken, ProfileRecord, RotateOutcome, SearchHit, SearchQuery, Store,
    StoreError, StoreResult, UserConversation, UserRecord,
};
use tidings_store::{
    AuthorizationCodeRecord, DeviceAuthorizationRecord, DeviceAuthorizationState, DeviceGrant,
    OAuthClientRecord,
};
use tidings_store::{CallRecord, CallState, ExternalIdentity};
use tidings_store::{EditRecord, FileRecord, Prune, Retention, ThreadRecord, UploadRecord};
use writer::Writer;

/// How to open the database.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Read-only connections, i.e. reads that can run at the same time beside the writer
    /// (at least 1).
    pub read_connections: usize,
    /// How long a connection waits for a lock held by another process (a backup, the sqlite3
    /// shell) before failing. Within one store the writer never contends with itself.
    pub busy_timeout: Duration,
    /// Page cache per connection, in KiB.
    pub cache_size_kib: u32,
    /// Bytes of the file each connection maps into memory; 0 disables mapping. Off by default:
    /// with mapping, an I/O error while reading becomes a SIGBUS instead of an error.
    pub mmap_size: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 16 * 1024,
            mmap_size: 0,
        }
    }
}

/// A [`Store`] on one SQLite file in WAL mode.
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and starts
    /// the writer thread.
    ///
    /// This blocks on file I/O; from async code, call it through `spawn_blocking`, or before the
    /// server starts accepting connections.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let writer_conn = schema::open_writer(path, &options)?;
        let readers = (0..options.read_connections.max(1))
            .map(|_| schema::open_reader(path, &options))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(SqliteStore {
            writer: Writer::start(writer_conn, path)?,
            readers: Readers::new(readers),
        })
    }

    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.run(work).await
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run(work).await
    }
}

/// Usernames are stored lowercase (see [`UserRecord::username`]); lowering them here too makes
/// the uniqueness rule case-insensitive whatever the caller passes.
fn normalize_username(username: &str) -> String {
    username.to_lowercase()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        if !self.writer.is_alive() {
            return Err(StoreError::Backend(
                "the SQLite writer thread has stopped".into(),
            ));
        }
        self.read(queries::ping).await
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        let password_hash = password_hash.to_owned();
        self.write(move |conn| queries::create_user(conn, &username, &password_hash, now))
            .await
    }

    async fn create_user_with_invite(
        &self,
        username: &str,
        password_hash: &str,
        invite_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        let password_hash = password_hash.to_owned();
        self.write(move |conn| {
            queries::create_user_with_invite(conn, &username, &password_hash, invite_hash, now)
        })
        .await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = normalize_username(username);
        self.read(move |conn| queries::user_by_name(conn, &username))
            .await
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.read(move |conn| queries::user_by_id(conn, id)).await
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        let ids = ids.to_vec();
        self.read(move |conn| queries::users_by_ids(conn, &ids))
            .await
    }

    async fn list_users(&self, after: Option<UserId>, limit: u32) -> StoreResult<Vec<UserRecord>> {
        self.read(move |conn| queries::list_users(conn, after, limit))
            .await
    }

    async fn set_password_hash(&self, user: UserId, password_hash: &str) -> StoreResult<()> {
        let password_hash = password_hash.to_owned();
        self.write(move |conn| queries::set_password_hash(conn, user, &password_hash))
            .await
    }

    async fn set_scram_credentials(
        &self,
        user: UserId,
        credentials: Vec<tidings_store::ScramCredential>,
    ) -> StoreResult<()> {
        self.write(move |conn| scram::set(conn, user, &credentials))
            .await
    }

    async fn scram_credential(
        &self,
        user: UserId,
        algorithm: &str,
    ) -> StoreResult<Option<tidings_store::ScramCredential>> {
        let algorithm = algorithm.to_owned();
        self.read(move |conn| scram::get(conn, user, &algorithm))
            .await
    }

    async fn device_cursors(
        &self,
        device: DeviceId,
    ) -> StoreResult<Option<Vec<(ConversationId, tidings_proto::Seq)>>> {
        self.read(move |conn| cursors::get(conn, device)).await
    }

    async fn advance_device_cursors(
        &self,
        device: DeviceId,
        list: Vec<(ConversationId, tidings_proto::Seq)>,
    ) -> StoreResult<()> {
        self.write(move |conn| cursors::advance(conn, device, &list))
            .await
    }

    async fn replace_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep: Option<DeviceId>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>> {
        let password_hash = password_hash.to_owned();
        self.write(move |conn| {
            queries::replace_password(conn, user, &password_hash, keep, now, &audit)
        })
        .await
    }

    async fn find_users(
        &self,
        prefix: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        let prefix = normalize_username(prefix);
        self.read(move |conn| queries::find_users(conn, &prefix, after, limit))
            .await
    }

    async fn set_suspended(
        &self,
        user: UserId,
        suspended: bool,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>> {
        self.write(move |conn| queries::set_suspended(conn, user, suspended, now, &audit))
            .await
    }

    async fn set_admin(&self, user: UserId, is_admin: bool, audit: NewAudit) -> StoreResult<bool> {
        self.write(move |conn| queries::set_admin(conn, user, is_admin, &audit))
            .await
    }

    async fn delete_user(
        &self,
        user: UserId,
        now: i64,
        remove_messages: bool,
        audit: NewAudit,
    ) -> StoreResult<DeletedAccount> {
        self.write(move |conn| queries::delete_user(conn, user, now, remove_messages, &audit))
            .await
    }

    async fn external_identity_user(
        &self,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.read(move |conn| identities::user_of(conn, &issuer, &subject))
            .await
    }

    async fn link_external_identity(
        &self,
        user: UserId,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<()> {
        let link = link.clone();
        self.write(move |conn| identities::link(conn, user, &link, &audit))
            .await
    }

    async fn create_linked_user(
        &self,
        username: &str,
        password_hash: &str,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        let password_hash = password_hash.to_owned();
        let link = link.clone();
        self.write(move |conn| {
            identities::create_linked_user(conn, &username, &password_hash, &link, audit)
        })
        .await
    }

    async fn external_identities_of(&self, user: UserId) -> StoreResult<Vec<ExternalIdentity>> {
        self.read(move |conn| identities::of_user(conn, user)).await
    }

    async fn create_invite(&self, invite: NewInvite) -> StoreResult<()> {
        self.write(move |conn| queries::create_invite(conn, &invite))
            .await
    }

    async fn create_device(&self, user: UserId, name: &str, now: i64) -> StoreResult<DeviceRecord> {
        let name = name.to_owned();
        self.write(move |conn| queries::create_device(conn, user, &name, now))
            .await
    }

    async fn device(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
        self.read(move |conn| queries::device(conn, id)).await
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        self.read(move |conn| queries::devices_of(conn, user)).await
    }

    async fn touch_device(&self, id: DeviceId, now: i64) -> StoreResult<()> {
        self.write(move |conn| queries::touch_device(conn, id, now))
            .await
    }

    async fn sign_in(
        &self,
        user: UserId,
        device_name: &str,
        refresh_hash: [u8; 32],
        refresh_expires_at: i64,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<DeviceRecord> {
        let name = device_name.to_owned();
        self.write(move |conn| {
            queries::sign_in(
                conn,
                user,
                &name,
                refresh_hash,
                refresh_expires_at,
                now,
                &audit,
            )
        })
        .await
    }

    async fn revoke_device(
        &self,
        user: UserId,
        id: DeviceId,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<bool> {
        self.write(move |conn| queries::revoke_device(conn, user, id, now, audit.as_ref()))
            .await
    }

    async fn revoke_other_devices(
        &self,
        user: UserId,
        keep: Option<DeviceId>,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<Vec<DeviceId>> {
        self.write(move |conn| queries::revoke_other_devices(conn, user, keep, now, audit.as_ref()))
            .await
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> StoreResult<()> {
        self.write(move |conn| queries::insert_refresh_token(conn, &token))
            .await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: [u8; 32],
        new: NewRefreshToken,
        now: i64,
        on_reuse: NewAudit,
    ) -> StoreResult<RotateOutcome> {
        self.write(move |conn| queries::rotate_refresh_token(conn, old_hash, &new, now, &on_reuse))
            .await
    }

    async fn refresh_token_device(&self, hash: [u8; 32]) -> StoreResult<Option<DeviceId>> {
        self.read(move |conn| queries::refresh_token_device(conn, hash))
            .await
    }

    async fn prune_refresh_tokens(&self, now: i64) -> StoreResult<u64> {
        self.write(move |conn| queries::prune_refresh_tokens(conn, now))
            .await
    }

    async fn create_oauth_client(
        &self,
        client: OAuthClientRecord,
        audit: NewAudit,
    ) -> StoreResult<()> {
        self.write(move |conn| oauth::create_client(conn, &client, &audit))
            .await
    }

    async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRecord>> {
        let client_id = client_id.to_owned();
        self.read(move |conn| oauth::client(conn, &client_id)).await
    }

    async fn oauth_clients(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OAuthClientRecord>> {
        let after = after.unwrap_or_default().to_owned();
        self.read(move |conn| oauth::clients(conn, &after, limit))
            .await
    }

    async fn delete_oauth_client(
        &self,
        client_id: &str,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<(UserId, DeviceId)>> {
        let client_id = client_id.to_owned();
        self.write(move |conn| oauth::delete_client(conn, &client_id, now, &audit))
            .await
    }

    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
        now: i64,
    ) -> StoreResult<()> {
        self.write(move |conn| oauth::create_code(conn, &code, now))
            .await
    }

    async fn take_authorization_code(
        &self,
        code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<AuthorizationCodeRecord>> {
        self.write(move |conn| oauth::take_code(conn, code_hash, now))
            .await
    }

    async fn sign_in_client(
        &self,
        user: UserId,
        device_name: &str,
        grant: DeviceGrant,
        refresh_hash: [u8; 32],
        refresh_expires_at: i64,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<DeviceRecord> {
        let name = device_name.to_owned();
        self.write(move |conn| {
            oauth::sign_in_client(
                conn,
                user,
                &name,
                &grant,
                refresh_hash,
                refresh_expires_at,
                now,
                &audit,
            )
        })
        .await
    }

    async fn device_grant(&self, device: DeviceId) -> StoreResult<Option<DeviceGrant>> {
        self.read(move |conn| oauth::device_grant(conn, device))
            .await
    }

    async fn create_bot_client(
        &self,
        client: OAuthClientRecord,
        username: &str,
        password_hash: &str,
        audit: NewAudit,
    ) -> StoreResult<OAuthClientRecord> {
        let (username, password_hash) = (username.to_owned(), password_hash.to_owned());
        self.write(move |conn| {
            oauth::create_bot_client(conn, &client, &username, &password_hash, &audit)
        })
        .await
    }

    async fn create_device_authorization(
        &self,
        authorization: DeviceAuthorizationRecord,
        now: i64,
    ) -> StoreResult<()> {
        self.write(move |conn| oauth::create_device_authorization(conn, &authorization, now))
            .await
    }

    async fn device_authorization(
        &self,
        user_code: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        let user_code = user_code.to_owned();
        self.read(move |conn| oauth::device_authorization(conn, &user_code, now))
            .await
    }

    async fn decide_device_authorization(
        &self,
        user_code: &str,
        state: DeviceAuthorizationState,
        now: i64,
    ) -> StoreResult<bool> {
        let user_code = user_code.to_owned();
        self.write(move |conn| oauth::decide_device_authorization(conn, &user_code, state, now))
            .await
    }

    async fn poll_device_authorization(
        &self,
        device_code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        self.write(move |conn| oauth::poll_device_authorization(conn, device_code_hash, now))
            .await
    }

    async fn profile(&self, user: UserId) -> StoreResult<Option<ProfileRecord>> {
        self.read(move |conn| queries::profile(conn, user)).await
    }

    async fn set_profile(
        &self,
        user: UserId,
        display_name: &str,
        status_text: &str,
        now: i64,
    ) -> StoreResult<()> {
        let (display_name, status_text) = (display_name.to_owned(), status_text.to_owned());
        self.write(move |conn| queries::set_profile(conn, user, &display_name, &status_text, now))
            .await
    }
    async fn set_avatar(&self, user: UserId, avatar: &str, now: i64) -> StoreResult<()> {
        let avatar = avatar.to_owned();
        self.write(move |conn| queries::set_avatar(conn, user, &avatar, now))
            .await
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<ProfileRecord>> {
        let prefix = prefix.to_owned();
        self.read(move |conn| queries::search_users(conn, &prefix, limit))
            .await
    }

    async fn block_user(&self, blocker: UserId, blocked: UserId, now: i64) -> StoreResult<bool> {
        self.write(move |conn| queries::block_user(conn, blocker, blocked, now))
            .await
    }

    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::unblock_user(conn, blocker, blocked))
            .await
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<BlockRecord>> {
        self.read(move |conn| queries::blocked_by(conn, blocker))
            .await
    }

    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>> {
        self.read(move |conn| queries::blockers_of(conn, blocked))
            .await
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.read(move |conn| queries::is_blocked(conn, blocker, blocked))
            .await
    }

    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<FriendRequestSent> {
        let note = note.map(str::to_owned);
        self.write(move |conn| queries::send_friend_request(conn, from, to, note.as_deref(), now))
            .await
    }

    async fn accept_friend_request(&self, from: UserId, to: UserId, now: i64) -> StoreResult<bool> {
        self.write(move |conn| queries::accept_friend_request(conn, from, to, now))
            .await
    }

    async fn delete_friend_request(&self, from: UserId, to: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::delete_friend_request(conn, from, to))
            .await
    }

    async fn remove_friend(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::remove_friend(conn, a, b))
            .await
    }

    async fn friends_of(&self, user: UserId) -> StoreResult<Vec<FriendRecord>> {
        self.read(move |conn| queries::friends_of(conn, user)).await
    }

    async fn are_friends(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.read(move |conn| queries::are_friends(conn, a, b))
            .await
    }

    async fn friend_request(
        &self,
        from: UserId,
        to: UserId,
    ) -> StoreResult<Option<FriendRequestRecord>> {
        self.read(move |conn| queries::friend_request(conn, from, to))
            .await
    }

    async fn friend_requests_to(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>> {
        self.read(move |conn| queries::friend_requests_to(conn, user))
            .await
    }

    async fn friend_requests_from(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>> {
        self.read(move |conn| queries::friend_requests_from(conn, user))
            .await
    }

    async fn contacts_version(&self, user: UserId) -> StoreResult<u64> {
        self.read(move |conn| queries::contacts_version(conn, user))
            .await
    }

    async fn privacy_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, PrivacySettings)>> {
        let users = users.to_vec();
        self.read(move |conn| queries::privacy_of(conn, &users))
            .await
    }

    async fn set_privacy(
        &self,
        user: UserId,
        settings: PrivacySettings,
        now: i64,
    ) -> StoreResult<()> {
        self.write(move |conn| queries::set_privacy(conn, user, settings, now))
            .await
    }

    async fn direct_conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        self.read(move |conn| queries::direct_conversations_of(conn, user))
            .await
    }

    async fn direct_between(
        &self,
        a: UserId,
        b: UserId,
    ) -> StoreResult<Option<ConversationRecord>> {
        self.read(move |conn| queries::direct_between(conn, a, b))
            .await
    }

    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        now: i64,
    ) -> StoreResult<(ConversationRecord, bool)> {
        self.write(move |conn| queries::get_or_create_direct(conn, a, b, now))
            .await
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now: i64,
    ) -> StoreResult<ConversationRecord> {
        let title = title.to_owned();
        let members = members.to_vec();
        self.write(move |conn| queries::create_group(conn, owner, &title, &members, now))
            .await
    }

    async fn add_members(
        &self,
        conversation: ConversationId,
        users: &[UserId],
        now: i64,
    ) -> StoreResult<Vec<UserId>> {
        let users = users.to_vec();
        self.write(move |conn| queries::add_members(conn, conversation, &users, now))
            .await
    }

    async fn remove_member(&self, conversation: ConversationId, user: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::remove_member(conn, conversation, user))
            .await
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>> {
        self.read(move |conn| queries::conversation(conn, id)).await
    }

    async fn member(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> StoreResult<Option<MemberRecord>> {
        self.read(move |conn| queries::member(conn, conversation, user))
            .await
    }

    async fn members(&self, conversation: ConversationId) -> StoreResult<Vec<MemberRecord>> {
        self.read(move |conn| queries::members(conn, conversation))
            .await
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<UserConversation>> {
        self.read(move |conn| queries::conversations_of(conn, user))
            .await
    }

    async fn user_conversation(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> StoreResult<Option<UserConversation>> {
        self.read(move |conn| queries::user_conversation(conn, user, conversation))
            .await
    }

    async fn co_members(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read(move |conn| queries::co_members(conn, user)).await
    }

    async fn group(&self, id: ConversationId) -> StoreResult<Option<GroupRecord>> {
        self.read(move |conn| queries::group(conn, id)).await
    }

    async fn change_group(
        &self,
        change: GroupChange,
        event: NewMessage,
        audit: Option<NewAudit>,
    ) -> StoreResult<GroupChanged> {
        let event = PreparedMessage::new(event)?;
        // The entry joins the change's transaction: both commit or neither does.
        self.write(move |conn| {
            let changed = queries::change_group(conn, change, event)?;
            if let Some(entry) = &audit {
                queries::insert_audit(conn, entry)?;
            }
            Ok(changed)
        })
        .await
    }

    async fn group_bans(&self, id: ConversationId) -> StoreResult<Vec<BanRecord>> {
        self.read(move |conn| queries::group_bans(conn, id)).await
    }

    async fn is_banned(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        self.read(move |conn| queries::is_banned(conn, id, user))
            .await
    }

    async fn create_invite_link(&self, link: NewInviteLink) -> StoreResult<InviteLinkRecord> {
        self.write(move |conn| queries::create_invite_link(conn, &link))
            .await
    }

    async fn invite_links(&self, id: ConversationId) -> StoreResult<Vec<InviteLinkRecord>> {
        self.read(move |conn| queries::invite_links(conn, id)).await
    }

    async fn invite_link_by_code(
        &self,
        code_hash: [u8; 32],
    ) -> StoreResult<Option<InviteLinkRecord>> {
        self.read(move |conn| queries::invite_link_by_code(conn, code_hash))
            .await
    }

    async fn revoke_invite_link(
        &self,
        id: ConversationId,
        link_id: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.write(move |conn| queries::revoke_invite_link(conn, id, link_id, now))
            .await
    }

    async fn create_join_request(
        &self,
        id: ConversationId,
        user: UserId,
        message: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let message = message.to_owned();
        self.write(move |conn| queries::create_join_request(conn, id, user, &message, now))
            .await
    }

    async fn join_requests(&self, id: ConversationId) -> StoreResult<Vec<JoinRequestRecord>> {
        self.read(move |conn| queries::join_requests(conn, id))
            .await
    }

    async fn delete_join_request(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::delete_join_request(conn, id, user))
            .await
    }

    async fn create_group_invitation(
        &self,
        id: ConversationId,
        user: UserId,
        inviter: UserId,
        now: i64,
    ) -> StoreResult<bool> {
        self.write(move |conn| queries::create_group_invitation(conn, id, user, inviter, now))
            .await
    }

    async fn group_invitations_of(&self, user: UserId) -> StoreResult<Vec<GroupInvitationRecord>> {
        self.read(move |conn| queries::group_invitations_of(conn, user))
            .await
    }

    async fn delete_group_invitation(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        self.write(move |conn| queries::delete_group_invitation(conn, id, user))
            .await
    }

    async fn index_pending(&self, limit: u32) -> StoreResult<u32> {
        self.write(move |conn| queries::index_pending(conn, limit))
            .await
    }

    async fn search_messages(
        &self,
        user: UserId,
        query: SearchQuery,
    ) -> StoreResult<Vec<SearchHit>> {
        self.read(move |conn| queries::search_messages(conn, user, &query))
            .await
    }

    async fn append_messages(
        &self,
        batch: Vec<NewMessage>,
    ) -> StoreResult<Vec<StoreResult<Appended>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch
            .into_iter()
            .map(PreparedMessage::new)
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |conn| {
            let appended = queries::append_messages(conn, batch)?;
            push::record_outbox(conn, &appended)?;
            Ok(appended)
        })
        .await
    }

    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        self.read(move |conn| queries::messages_after(conn, conversation, after, limit))
            .await
    }

    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        self.read(move |conn| queries::messages_before(conn, conversation, before, limit))
            .await
    }

    async fn edit_history(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<EditRecord>> {
        self.read(move |conn| queries::edit_history(conn, conversation, seq))
            .await
    }

    async fn reactions(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<(String, Vec<UserId>)>> {
        self.read(move |conn| queries::reactions(conn, conversation, seq))
            .await
    }

    async fn pinned_messages(
        &self,
        conversation: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        self.read(move |conn| queries::pinned_messages(conn, conversation, limit))
            .await
    }

    async fn thread_messages(
        &self,
        conversation: ConversationId,
        root: Seq,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        self.read(move |conn| queries::thread_messages(conn, conversation, root, after, limit))
            .await
    }

    async fn update_conversation_settings(
        &self,
        conversation: ConversationId,
        user: UserId,
        change: UpdateConversationSettingsRequest,
        now: i64,
    ) -> StoreResult<ConversationSettings> {
        self.write(move |conn| {
            queries::update_conversation_settings(conn, conversation, user, &change, now)
        })
        .await
    }

    async fn hide_message(
        &self,
        user: UserId,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<()> {
        self.write(move |conn| queries::hide_message(conn, user, conversation, seq))
            .await
    }

    async fn hidden_messages(
        &self,
        user: UserId,
        conversation: ConversationId,
        from: Seq,
        to: Seq,
    ) -> StoreResult<Vec<Seq>> {
        self.read(move |conn| queries::hidden_messages(conn, user, conversation, from, to))
            .await
    }

    async fn mark_thread_read(
        &self,
        conversation: ConversationId,
        root: Seq,
        user: UserId,
        seq: Seq,
    ) -> StoreResult<()> {
        self.write(move |conn| queries::mark_thread_read(conn, conversation, root, user, seq))
            .await
    }

    async fn threads(
        &self,
        conversation: ConversationId,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>> {
        self.read(move |conn| queries::threads(conn, conversation, user, limit))
            .await
    }

    async fn set_retention(
        &self,
        conversation: ConversationId,
        retention: Retention,
    ) -> StoreResult<()> {
        self.write(move |conn| queries::set_retention(conn, conversation, retention))
            .await
    }

    async fn retention(&self, conversation: ConversationId) -> StoreResult<Retention> {
        self.read(move |conn| queries::retention(conn, conversation))
            .await
    }

    async fn retentions(
        &self,
        after: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<(ConversationId, Retention)>> {
        self.read(move |conn| queries::retentions(conn, after, limit))
            .await
    }

    async fn prune_conversation(
        &self,
        conversation: ConversationId,
        prune: Prune,
        limit: u32,
    ) -> StoreResult<u32> {
        self.write(move |conn| queries::prune_conversation(conn, conversation, prune, limit))
            .await
    }

    async fn prune_before(&self, before_ts: i64, limit: u32) -> StoreResult<u32> {
        self.write(move |conn| queries::prune_before(conn, before_ts, limit))
            .await
    }

    async fn advance_marker(
        &self,
        conversation: ConversationId,
        user: UserId,
        kind: ReceiptKind,
        seq: Seq,
    ) -> StoreResult<Option<Seq>> {
        self.write(move |conn| queries::advance_marker(conn, conversation, user, kind, seq))
            .await
    }

    async fn set_last_seen(&self, user: UserId, ts: i64) -> StoreResult<()> {
        self.write(move |conn| queries::set_last_seen(conn, user, ts))
            .await
    }

    async fn last_seen(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, i64)>> {
        let users = users.to_vec();
        self.read(move |conn| queries::last_seen(conn, &users))
            .await
    }

    async fn append_audit(&self, entry: NewAudit) -> StoreResult<i64> {
        self.write(move |conn| queries::insert_audit(conn, &entry))
            .await
    }

    async fn audit_entries(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let filter = filter.clone();
        self.read(move |conn| queries::audit_entries(conn, &filter, after, limit))
            .await
    }

    async fn prune_audit(
        &self,
        before: i64,
        now: i64,
        sign: CheckpointSigner,
    ) -> StoreResult<Option<AuditCheckpoint>> {
        self.write(move |conn| queries::prune_audit(conn, before, now, sign))
            .await
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        self.read(queries::audit_checkpoints).await
    }

    async fn create_upload(&self, upload: UploadRecord, quota: u64) -> StoreResult<bool> {
        self.write(move |conn| queries::create_upload(conn, &upload, quota))
            .await
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.read(move |conn| queries::upload(conn, &id)).await
    }

    async fn advance_upload(&self, id: &str, from: u64, to: u64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| queries::advance_upload(conn, &id, from, to))
            .await
    }

    async fn delete_upload(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| queries::delete_upload(conn, &id))
            .await
    }

    async fn expired_uploads(&self, now: i64, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        self.read(move |conn| queries::expired_uploads(conn, now, limit))
            .await
    }

    async fn storage_usage(&self, user: UserId) -> StoreResult<u64> {
        self.read(move |conn| queries::storage_usage(conn, user))
            .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        consumed: &[String],
        file: FileRecord,
    ) -> StoreResult<bool> {
        let upload_id = upload_id.to_owned();
        let consumed = consumed.to_vec();
        self.write(move |conn| queries::complete_upload(conn, &upload_id, &consumed, &file))
            .await
    }

    async fn file(&self, id: &str) -> StoreResult<Option<FileRecord>> {
        let id = id.to_owned();
        self.read(move |conn| queries::file(conn, &id)).await
    }

    async fn delete_file(&self, id: &str) -> StoreResult<Option<(FileRecord, bool)>> {
        let id = id.to_owned();
        self.write(move |conn| queries::delete_file(conn, &id))
            .await
    }

    async fn share_file(&self, file: &str, conversation: ConversationId) -> StoreResult<bool> {
        let file = file.to_owned();
        self.write(move |conn| queries::share_file(conn, &file, conversation))
            .await
    }

    async fn can_read_file(&self, file: &str, user: UserId) -> StoreResult<bool> {
        let file = file.to_owned();
        self.read(move |conn| queries::can_read_file(conn, &file, user))
            .await
    }

    async fn set_push_subscription(
        &self,
        user: UserId,
        device: DeviceId,
        subscription: tidings_proto::push::PushSubscription,
        now: i64,
    ) -> StoreResult<()> {
        self.write(move |conn| push::set_subscription(conn, user, device, &subscription, now))
            .await
    }

    async fn push_subscriptions_of(
        &self,
        users: &[UserId],
    ) -> StoreResult<Vec<tidings_store::PushSubscriptionRecord>> {
        let users = users.to_vec();
        self.read(move |conn| push::subscriptions_of(conn, &users))
            .await
    }

    async fn delete_push_subscription(
        &self,
        device: DeviceId,
        only: Option<tidings_proto::push::PushSubscription>,
    ) -> StoreResult<bool> {
        self.write(move |conn| push::delete_subscription(conn, device, only.as_ref()))
            .await
    }

    async fn push_settings(&self, user: UserId) -> StoreResult<tidings_proto::push::PushSettings> {
        self.read(move |conn| push::settings(conn, user)).await
    }

    async fn set_push_settings(
        &self,
        user: UserId,
        settings: tidings_proto::push::PushSettings,
    ) -> StoreResult<()> {
        self.write(move |conn| push::set_settings(conn, user, &settings))
            .await
    }

    async fn enqueue_push_jobs(&self, jobs: Vec<tidings_store::NewPushJob>) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.write(move |conn| push::enqueue(conn, &jobs)).await
    }

    async fn claim_push_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<tidings_store::PushJob>> {
        self.write(move |conn| push::claim(conn, now, lease_until, limit))
            .await
    }

    async fn finish_push_job(&self, key: tidings_store::PushJobKey, now: i64) -> StoreResult<()> {
        self.write(move |conn| push::finish(conn, &key, now)).await
    }

    async fn retry_push_job(
        &self,
        key: tidings_store::PushJobKey,
        next_at: i64,
    ) -> StoreResult<()> {
        self.write(move |conn| push::retry(conn, &key, next_at))
            .await
    }

    async fn claim_push_outbox(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<tidings_store::OutboxItem>> {
        self.write(move |conn| push::claim_outbox(conn, now, lease_until, limit))
            .await
    }

    async fn delete_push_outbox(&self, done: Vec<tidings_store::OutboxItem>) -> StoreResult<()> {
        if done.is_empty() {
            return Ok(());
        }
        self.write(move |conn| push::delete_outbox(conn, &done))
            .await
    }

    async fn create_call(&self, call: CallRecord) -> StoreResult<bool> {
        self.write(move |conn| queries::create_call(conn, &call))
            .await
    }

    async fn call(&self, id: &str) -> StoreResult<Option<CallRecord>> {
        let id = id.to_owned();
        self.read(move |conn| queries::call(conn, &id)).await
    }

    async fn accept_call(
        &self,
        id: &str,
        device: DeviceId,
        now: i64,
    ) -> StoreResult<Option<CallRecord>> {
        let id = id.to_owned();
        self.write(move |conn| queries::accept_call(conn, &id, device, now))
            .await
    }

    async fn finish_call(&self, id: &str, state: CallState) -> StoreResult<Option<CallRecord>> {
        let id = id.to_owned();
        self.write(move |conn| queries::finish_call(conn, &id, state))
            .await
    }

    async fn calls_ringing_until(&self, now: i64, limit: u32) -> StoreResult<Vec<CallRecord>> {
        self.read(move |conn| queries::calls_ringing_until(conn, now, limit))
            .await
    }
    async fn save_mqtt_sessions(
        &self,
        put: Vec<tidings_store::MqttSessionRecord>,
        delete: Vec<(UserId, String)>,
    ) -> StoreResult<()> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        self.write(move |conn| mqtt::save_sessions(conn, &put, &delete))
            .await
    }

    async fn mqtt_sessions(&self) -> StoreResult<Vec<tidings_store::MqttSessionRecord>> {
        self.read(mqtt::sessions).await
    }

    async fn save_mqtt_retained(
        &self,
        put: Vec<tidings_store::MqttRetainedRecord>,
        delete: Vec<String>,
    ) -> StoreResult<()> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        self.write(move |conn| mqtt::save_retained(conn, &put, &delete))
            .await
    }

    async fn mqtt_retained(&self) -> StoreResult<Vec<tidings_store::MqttRetainedRecord>> {
        self.read(mqtt::retained).await
    }

    async fn put_user_xml(
        &self,
        item: tidings_store::UserXmlRecord,
        max_items: u32,
    ) -> StoreResult<bool> {
        self.write(move |conn| userxml::put(conn, &item, max_items))
            .await
    }

    async fn user_xml(
        &self,
        user: UserId,
        node: &str,
    ) -> StoreResult<Vec<tidings_store::UserXmlRecord>> {
        let node = node.to_owned();
        self.read(move |conn| userxml::get(conn, user, &node)).await
    }

    async fn delete_user_xml(&self, user: UserId, node: &str, item_id: &str) -> StoreResult<bool> {
        let (node, item_id) = (node.to_owned(), item_id.to_owned());
        self.write(move |conn| userxml::delete(conn, user, &node, &item_id))
            .await
    }

    async fn claim_room_address(
        &self,
        conversation: ConversationId,
        address: &str,
        temporary: bool,
    ) -> StoreResult<bool> {
        let address = address.to_owned();
        self.write(move |conn| rooms::claim(conn, conversation, &address, temporary))
            .await
    }

    async fn room_by_address(
        &self,
        address: &str,
    ) -> StoreResult<Option<tidings_store::RoomRecord>> {
        let address = address.to_owned();
        self.read(move |conn| rooms::by_address(conn, &address))
            .await
    }

    async fn rooms_of(
        &self,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<tidings_store::RoomRecord>> {
        let conversations = conversations.to_vec();
        self.read(move |conn| rooms::of_conversations(conn, &conversations))
            .await
    }

    async fn set_room_temporary(
        &self,
        conversation: ConversationId,
        temporary: bool,
    ) -> StoreResult<bool> {
        self.write(move |conn| rooms::set_temporary(conn, conversation, temporary))
            .await
    }

    async fn delete_room(&self, conversation: ConversationId) -> StoreResult<()> {
        self.write(move |conn| rooms::delete(conn, conversation))
            .await
    }

    async fn occupy(
        &self,
        occupant: tidings_store::OccupantRecord,
        live_nodes: &[i64],
    ) -> StoreResult<tidings_store::Occupied> {
        let live_nodes = live_nodes.to_vec();
        self.write(move |conn| rooms::occupy(conn, &occupant, &live_nodes))
            .await
    }

    async fn vacate(
        &self,
        conversation: ConversationId,
        device: DeviceId,
    ) -> StoreResult<Option<tidings_store::OccupantRecord>> {
        self.write(move |conn| rooms::vacate(conn, conversation, device))
            .await
    }

    async fn occupants(
        &self,
        conversation: ConversationId,
        live_nodes: &[i64],
    ) -> StoreResult<Vec<tidings_store::OccupantRecord>> {
        let live_nodes = live_nodes.to_vec();
        self.read(move |conn| rooms::occupants(conn, conversation, &live_nodes))
            .await
    }

    async fn vacate_nodes_except(&self, live_nodes: &[i64]) -> StoreResult<u64> {
        let live_nodes = live_nodes.to_vec();
        self.write(move |conn| rooms::vacate_nodes_except(conn, &live_nodes))
            .await
    }

    async fn two_factor(
        &self,
        user: UserId,
    ) -> StoreResult<Option<tidings_store::TwoFactorRecord>> {
        self.read(move |conn| account::two_factor(conn, user)).await
    }

    async fn begin_two_factor(&self, user: UserId, secret: Vec<u8>, now: i64) -> StoreResult<()> {
        self.write(move |conn| account::begin(conn, user, &secret, now))
            .await
    }

    async fn confirm_two_factor(
        &self,
        user: UserId,
        step: i64,
        recovery: Vec<[u8; 32]>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<()> {
        self.write(move |conn| account::confirm(conn, user, step, &recovery, now, &audit))
            .await
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        self.write(move |conn| account::use_step(conn, user, step))
            .await
    }

    async fn use_recovery_code(&self, user: UserId, hash: [u8; 32], now: i64) -> StoreResult<bool> {
        self.write(move |conn| account::use_recovery(conn, user, &hash, now))
            .await
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: Vec<[u8; 32]>,
        audit: NewAudit,
    ) -> StoreResult<()> {
        self.write(move |conn| account::replace_recovery(conn, user, &recovery, &audit))
            .await
    }

    async fn disable_two_factor(&self, user: UserId, audit: NewAudit) -> StoreResult<bool> {
        self.write(move |conn| account::disable(conn, user, &audit))
            .await
    }

    async fn files_of(
        &self,
        owner: UserId,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<FileRecord>> {
        self.read(move |conn| account::files_of(conn, owner, after.as_deref(), limit))
            .await
    }
}
