//! The PostgreSQL backend of [`tidings_store::Store`], for deployments with several nodes.
//!
//! # Layout
//! - [`PgStore`] (here): the connection pool, and each trait method as one transaction (writes)
//!   or one pooled connection (reads).
//! - `queries`: every SQL statement, as async functions over any pooled client or transaction.
//! - `mqtt`: MQTT persistent sessions and retained messages.
//! - `userxml`: per-user XML storage.
//! - `rooms`: named rooms and their occupants (XMPP Multi-User Chat).
//! - `account`: TOTP enrolments, recovery codes and a user's file list.
//! - `push`: push subscriptions, settings and the job queue (claimed with `SKIP LOCKED`).
//! - `schema`: the embedded migrations (`src/migrations/*.sql`) and how they are applied.
//! - `error`: PostgreSQL errors to [`StoreError`], and which of them call for a retry.
//!
//! **Architecture Invariant:** a write returns only after its COMMIT returned, and the server
//! runs with its default `synchronous_commit = on`, so what a caller is told is stored has been
//! flushed to the write-ahead log.
//!
//! **Architecture Invariant:** several nodes may share one database. Every read-then-write
//! decision is protected by a row lock or a transaction-scoped advisory lock (see `queries`),
//! and a transaction that PostgreSQL aborts to break a deadlock or a serialization conflict is
//! run again from the start, a bounded number of times.
//!
//! Group commit: the core's sequencer hands each batch of waiting messages to one
//! `append_messages` call, which is one transaction and so one WAL flush for the whole batch.

mod account;
mod cursors;
mod error;
mod identities;
pub mod import;
mod mqtt;
mod oauth;
mod push;
mod queries;
mod rich;
mod rooms;
mod schema;
mod scram;
#[doc(hidden)]
pub mod testing;
mod userxml;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use error::Fail;
use queries::PreparedMessage;
use std::time::Duration;
use tidings_proto::contacts::PrivacySettings;
use tidings_proto::rest::{ConversationSettings, UpdateConversationSettingsRequest};
use tidings_proto::ws::ReceiptKind;
use tidings_proto::{ConversationId, DeviceId, Message, Seq, UserId};
use tidings_store::{
    Appended, AuditCheckpoint, AuditFilter, AuditRecord, BanRecord, BlockRecord, CheckpointSigner,
    ConversationRecord, DeletedAccount, DeviceRecord, ExternalIdentity, FileRecord, FriendRecord,
    FriendRequestRecord, FriendRequestSent, GroupChange, GroupChanged, GroupInvitationRecord,
    GroupRecord, InviteLinkRecord, JoinRequestRecord, MemberRecord, NewAudit, NewInvite,
    NewInviteLink, NewMessage, NewRefreshToken, ProfileRecord, RotateOutcome, SearchHit,
    SearchQuery, Store, StoreError, StoreResult, UploadRecord, UserConversation, UserRecord,
};
use tidings_store::{
    AuthorizationCodeRecord, DeviceAuthorizationRecord, DeviceAuthorizationState, DeviceGrant,
    OAuthClientRecord,
};
use tidings_store::{CallRecord, CallState};
use tidings_store::{EditRecord, Prune, Retention, ThreadRecord};

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style URL, `postgres://user@host:port/database`. TLS is not supported: run the
    /// database on a private network or loopback.
    pub url: String,
    /// Connections in this node's pool (at least 1).
    pub max_connections: usize,
    /// How long connecting, or waiting for a free pooled connection, may take.
    pub connect_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] on a PostgreSQL database, shareable by several nodes.
pub struct PgStore {
    pool: Pool,
}

/// How often a transaction aborted by a deadlock or a serialization conflict is run again.
const MAX_RETRIES: u32 = 8;

/// Runs `$body` (which uses `$c`, a transaction, with `?` and `.await`) in a transaction,
/// commits it, and runs the whole again when PostgreSQL aborted it for a retryable reason. The
/// body may run more than once, so it must only borrow what it uses.
macro_rules! in_tx {
    ($store:expr, |$c:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let outcome: Result<_, Fail> = async {
                let mut client = $store.pool.get().await?;
                let tx = client.transaction().await?;
                let $c = &tx;
                let value = $body;
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Ok(value) => break Ok(value),
                Err(fail) if fail.is_retryable() && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tracing::debug!(
                        attempt,
                        "Retrying a PostgreSQL transaction after a conflict."
                    );
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(fail) => break Err(fail.into_store()),
            }
        }
    }};
}

/// Runs `$body` on a pooled connection, outside any explicit transaction (each statement sees
/// the latest committed state).
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let outcome: Result<_, Fail> = async {
            let client = $store.pool.get().await?;
            let $c = &client;
            Ok($body)
        }
        .await;
        outcome.map_err(Fail::into_store)
    }};
}

impl PgStore {
    /// Connects, applies pending migrations, and returns the store.
    pub async fn connect(options: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        config.application_name("tidings");
        config.connect_timeout(options.connect_timeout);
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("building the PostgreSQL pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| Fail::from(e).into_store())?;
        schema::migrate(&mut client)
            .await
            .map_err(Fail::into_store)?;
        Ok(PgStore { pool })
    }
}

/// Checks that `url` is a PostgreSQL URL this backend can use, for configuration validation.
pub fn validate_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Usernames are stored lowercase, as in the SQLite backend.
fn normalize_username(username: &str) -> String {
    username.to_lowercase()
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        read!(self, |c| queries::ping(c).await?)
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        in_tx!(self, |c| queries::create_user(
            c,
            &username,
            password_hash,
            now
        )
        .await?)
    }

    async fn create_user_with_invite(
        &self,
        username: &str,
        password_hash: &str,
        invite_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        in_tx!(self, |c| queries::create_user_with_invite(
            c,
            &username,
            password_hash,
            invite_hash,
            now
        )
        .await?)
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = normalize_username(username);
        read!(self, |c| queries::user_by_name(c, &username).await?)
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        read!(self, |c| queries::user_by_id(c, id).await?)
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        read!(self, |c| queries::users_by_ids(c, ids).await?)
    }

    async fn list_users(&self, after: Option<UserId>, limit: u32) -> StoreResult<Vec<UserRecord>> {
        read!(self, |c| queries::list_users(c, after, limit).await?)
    }

    async fn set_password_hash(&self, user: UserId, password_hash: &str) -> StoreResult<()> {
        in_tx!(self, |c| queries::set_password_hash(c, user, password_hash)
            .await?)
    }

    async fn set_scram_credentials(
        &self,
        user: UserId,
        credentials: Vec<tidings_store::ScramCredential>,
    ) -> StoreResult<()> {
        in_tx!(self, |c| scram::set(c, user, &credentials).await?)
    }

    async fn scram_credential(
        &self,
        user: UserId,
        algorithm: &str,
    ) -> StoreResult<Option<tidings_store::ScramCredential>> {
        read!(self, |c| scram::get(c, user, algorithm).await?)
    }

    async fn device_cursors(
        &self,
        device: DeviceId,
    ) -> StoreResult<Option<Vec<(ConversationId, tidings_proto::Seq)>>> {
        read!(self, |c| cursors::get(c, device).await?)
    }

    async fn advance_device_cursors(
        &self,
        device: DeviceId,
        list: Vec<(ConversationId, tidings_proto::Seq)>,
    ) -> StoreResult<()> {
        in_tx!(self, |c| cursors::advance(c, device, &list).await?)
    }

    async fn replace_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep: Option<DeviceId>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>> {
        in_tx!(self, |c| queries::replace_password(
            c,
            user,
            password_hash,
            keep,
            now,
            &audit
        )
        .await?)
    }

    async fn find_users(
        &self,
        prefix: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        let prefix = normalize_username(prefix);
        read!(self, |c| queries::find_users(c, &prefix, after, limit)
            .await?)
    }

    async fn set_suspended(
        &self,
        user: UserId,
        suspended: bool,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<DeviceId>> {
        in_tx!(self, |c| queries::set_suspended(
            c, user, suspended, now, &audit
        )
        .await?)
    }

    async fn set_admin(&self, user: UserId, is_admin: bool, audit: NewAudit) -> StoreResult<bool> {
        in_tx!(self, |c| queries::set_admin(c, user, is_admin, &audit)
            .await?)
    }

    async fn delete_user(
        &self,
        user: UserId,
        now: i64,
        remove_messages: bool,
        audit: NewAudit,
    ) -> StoreResult<DeletedAccount> {
        in_tx!(self, |c| queries::delete_user(
            c,
            user,
            now,
            remove_messages,
            &audit
        )
        .await?)
    }

    async fn external_identity_user(
        &self,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>> {
        read!(self, |c| identities::user_of(c, issuer, subject).await?)
    }

    async fn link_external_identity(
        &self,
        user: UserId,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<()> {
        in_tx!(self, |c| identities::link(c, user, link, &audit).await?)
    }

    async fn create_linked_user(
        &self,
        username: &str,
        password_hash: &str,
        link: &ExternalIdentity,
        audit: NewAudit,
    ) -> StoreResult<UserRecord> {
        let username = normalize_username(username);
        in_tx!(self, |c| identities::create_linked_user(
            c,
            &username,
            password_hash,
            link,
            &audit
        )
        .await?)
    }

    async fn external_identities_of(&self, user: UserId) -> StoreResult<Vec<ExternalIdentity>> {
        read!(self, |c| identities::of_user(c, user).await?)
    }

    async fn create_invite(&self, invite: NewInvite) -> StoreResult<()> {
        in_tx!(self, |c| queries::create_invite(c, &invite).await?)
    }

    async fn create_device(&self, user: UserId, name: &str, now: i64) -> StoreResult<DeviceRecord> {
        in_tx!(self, |c| queries::create_device(c, user, name, now).await?)
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
        in_tx!(self, |c| queries::sign_in(
            c,
            user,
            device_name,
            refresh_hash,
            refresh_expires_at,
            now,
            &audit
        )
        .await?)
    }

    async fn create_oauth_client(
        &self,
        client: OAuthClientRecord,
        audit: NewAudit,
    ) -> StoreResult<()> {
        in_tx!(self, |c| oauth::create_client(c, &client, &audit).await?)
    }

    async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRecord>> {
        read!(self, |c| oauth::client(c, client_id).await?)
    }

    async fn oauth_clients(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OAuthClientRecord>> {
        let after = after.unwrap_or_default();
        read!(self, |c| oauth::clients(c, after, limit).await?)
    }

    async fn delete_oauth_client(
        &self,
        client_id: &str,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<Vec<(UserId, DeviceId)>> {
        in_tx!(self, |c| oauth::delete_client(c, client_id, now, &audit)
            .await?)
    }

    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| oauth::create_code(c, &code, now).await?)
    }

    async fn take_authorization_code(
        &self,
        code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<AuthorizationCodeRecord>> {
        in_tx!(self, |c| oauth::take_code(c, code_hash, now).await?)
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
        in_tx!(self, |c| oauth::sign_in_client(
            c,
            user,
            device_name,
            &grant,
            refresh_hash,
            refresh_expires_at,
            now,
            &audit
        )
        .await?)
    }

    async fn device_grant(&self, device: DeviceId) -> StoreResult<Option<DeviceGrant>> {
        read!(self, |c| oauth::device_grant(c, device).await?)
    }

    async fn create_bot_client(
        &self,
        client: OAuthClientRecord,
        username: &str,
        password_hash: &str,
        audit: NewAudit,
    ) -> StoreResult<OAuthClientRecord> {
        in_tx!(self, |c| oauth::create_bot_client(
            c,
            &client,
            username,
            password_hash,
            &audit
        )
        .await?)
    }

    async fn create_device_authorization(
        &self,
        authorization: DeviceAuthorizationRecord,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| oauth::create_device_authorization(
            c,
            &authorization,
            now
        )
        .await?)
    }

    async fn device_authorization(
        &self,
        user_code: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        read!(self, |c| oauth::device_authorization(c, user_code, now)
            .await?)
    }

    async fn decide_device_authorization(
        &self,
        user_code: &str,
        state: DeviceAuthorizationState,
        now: i64,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| oauth::decide_device_authorization(
            c, user_code, state, now
        )
        .await?)
    }

    async fn poll_device_authorization(
        &self,
        device_code_hash: [u8; 32],
        now: i64,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        in_tx!(self, |c| oauth::poll_device_authorization(
            c,
            device_code_hash,
            now
        )
        .await?)
    }

    async fn device(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
        read!(self, |c| queries::device(c, id).await?)
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        read!(self, |c| queries::devices_of(c, user).await?)
    }

    async fn touch_device(&self, id: DeviceId, now: i64) -> StoreResult<()> {
        in_tx!(self, |c| queries::touch_device(c, id, now).await?)
    }

    async fn revoke_device(
        &self,
        user: UserId,
        id: DeviceId,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| queries::revoke_device(
            c,
            user,
            id,
            now,
            audit.as_ref()
        )
        .await?)
    }

    async fn revoke_other_devices(
        &self,
        user: UserId,
        keep: Option<DeviceId>,
        now: i64,
        audit: Option<NewAudit>,
    ) -> StoreResult<Vec<DeviceId>> {
        in_tx!(self, |c| queries::revoke_other_devices(
            c,
            user,
            keep,
            now,
            audit.as_ref()
        )
        .await?)
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> StoreResult<()> {
        in_tx!(self, |c| queries::insert_refresh_token(c, &token).await?)
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: [u8; 32],
        new: NewRefreshToken,
        now: i64,
        on_reuse: NewAudit,
    ) -> StoreResult<RotateOutcome> {
        in_tx!(self, |c| queries::rotate_refresh_token(
            c, old_hash, &new, now, &on_reuse
        )
        .await?)
    }

    async fn refresh_token_device(&self, hash: [u8; 32]) -> StoreResult<Option<DeviceId>> {
        read!(self, |c| queries::refresh_token_device(c, hash).await?)
    }

    async fn prune_refresh_tokens(&self, now: i64) -> StoreResult<u64> {
        in_tx!(self, |c| queries::prune_refresh_tokens(c, now).await?)
    }

    async fn profile(&self, user: UserId) -> StoreResult<Option<ProfileRecord>> {
        read!(self, |c| queries::profile(c, user).await?)
    }

    async fn set_avatar(&self, user: UserId, avatar: &str, now: i64) -> StoreResult<()> {
        in_tx!(self, |c| queries::set_avatar(c, user, avatar, now).await?)
    }

    async fn set_profile(
        &self,
        user: UserId,
        display_name: &str,
        status_text: &str,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| queries::set_profile(
            c,
            user,
            display_name,
            status_text,
            now
        )
        .await?)
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<ProfileRecord>> {
        read!(self, |c| queries::search_users(c, prefix, limit).await?)
    }

    async fn block_user(&self, blocker: UserId, blocked: UserId, now: i64) -> StoreResult<bool> {
        in_tx!(self, |c| queries::block_user(c, blocker, blocked, now)
            .await?)
    }

    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::unblock_user(c, blocker, blocked).await?)
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<BlockRecord>> {
        read!(self, |c| queries::blocked_by(c, blocker).await?)
    }

    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>> {
        read!(self, |c| queries::blockers_of(c, blocked).await?)
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        read!(self, |c| queries::is_blocked(c, blocker, blocked).await?)
    }

    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<FriendRequestSent> {
        in_tx!(self, |c| queries::send_friend_request(
            c, from, to, note, now
        )
        .await?)
    }

    async fn accept_friend_request(&self, from: UserId, to: UserId, now: i64) -> StoreResult<bool> {
        in_tx!(self, |c| queries::accept_friend_request(c, from, to, now)
            .await?)
    }

    async fn delete_friend_request(&self, from: UserId, to: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::delete_friend_request(c, from, to)
            .await?)
    }

    async fn remove_friend(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::remove_friend(c, a, b).await?)
    }

    async fn friends_of(&self, user: UserId) -> StoreResult<Vec<FriendRecord>> {
        read!(self, |c| queries::friends_of(c, user).await?)
    }

    async fn are_friends(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        read!(self, |c| queries::are_friends(c, a, b).await?)
    }

    async fn friend_request(
        &self,
        from: UserId,
        to: UserId,
    ) -> StoreResult<Option<FriendRequestRecord>> {
        read!(self, |c| queries::friend_request(c, from, to).await?)
    }

    async fn friend_requests_to(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>> {
        read!(self, |c| queries::friend_requests_to(c, user).await?)
    }

    async fn friend_requests_from(&self, user: UserId) -> StoreResult<Vec<FriendRequestRecord>> {
        read!(self, |c| queries::friend_requests_from(c, user).await?)
    }

    async fn contacts_version(&self, user: UserId) -> StoreResult<u64> {
        read!(self, |c| queries::contacts_version(c, user).await?)
    }

    async fn privacy_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, PrivacySettings)>> {
        read!(self, |c| queries::privacy_of(c, users).await?)
    }

    async fn set_privacy(
        &self,
        user: UserId,
        settings: PrivacySettings,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| queries::set_privacy(c, user, settings, now)
            .await?)
    }

    async fn direct_between(
        &self,
        a: UserId,
        b: UserId,
    ) -> StoreResult<Option<ConversationRecord>> {
        read!(self, |c| queries::direct_between(c, a, b).await?)
    }

    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        now: i64,
    ) -> StoreResult<(ConversationRecord, bool)> {
        in_tx!(self, |c| queries::get_or_create_direct(c, a, b, now)
            .await?)
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now: i64,
    ) -> StoreResult<ConversationRecord> {
        in_tx!(self, |c| queries::create_group(
            c, owner, title, members, now
        )
        .await?)
    }

    async fn add_members(
        &self,
        conversation: ConversationId,
        users: &[UserId],
        now: i64,
    ) -> StoreResult<Vec<UserId>> {
        in_tx!(self, |c| queries::add_members(c, conversation, users, now)
            .await?)
    }

    async fn remove_member(&self, conversation: ConversationId, user: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::remove_member(c, conversation, user)
            .await?)
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>> {
        read!(self, |c| queries::conversation(c, id).await?)
    }

    async fn member(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> StoreResult<Option<MemberRecord>> {
        read!(self, |c| queries::member(c, conversation, user).await?)
    }

    async fn members(&self, conversation: ConversationId) -> StoreResult<Vec<MemberRecord>> {
        read!(self, |c| queries::members(c, conversation).await?)
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<UserConversation>> {
        read!(self, |c| queries::conversations_of(c, user).await?)
    }

    async fn user_conversation(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> StoreResult<Option<UserConversation>> {
        read!(self, |c| queries::user_conversation(c, user, conversation)
            .await?)
    }

    async fn direct_conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        read!(self, |c| queries::direct_conversations_of(c, user).await?)
    }

    async fn co_members(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        read!(self, |c| queries::co_members(c, user).await?)
    }

    async fn group(&self, id: ConversationId) -> StoreResult<Option<GroupRecord>> {
        read!(self, |c| queries::group(c, id).await?)
    }

    async fn change_group(
        &self,
        change: GroupChange,
        event: NewMessage,
        audit: Option<NewAudit>,
    ) -> StoreResult<GroupChanged> {
        let event = PreparedMessage::new(event)?;
        in_tx!(self, |c| queries::change_group(
            c,
            &change,
            &event,
            audit.as_ref()
        )
        .await?)
    }

    async fn group_bans(&self, id: ConversationId) -> StoreResult<Vec<BanRecord>> {
        read!(self, |c| queries::group_bans(c, id).await?)
    }

    async fn is_banned(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        read!(self, |c| queries::is_banned(c, id, user).await?)
    }

    async fn create_invite_link(&self, link: NewInviteLink) -> StoreResult<InviteLinkRecord> {
        in_tx!(self, |c| queries::create_invite_link(c, &link).await?)
    }

    async fn invite_links(&self, id: ConversationId) -> StoreResult<Vec<InviteLinkRecord>> {
        read!(self, |c| queries::invite_links(c, id).await?)
    }

    async fn invite_link_by_code(
        &self,
        code_hash: [u8; 32],
    ) -> StoreResult<Option<InviteLinkRecord>> {
        read!(self, |c| queries::invite_link_by_code(c, code_hash).await?)
    }

    async fn revoke_invite_link(
        &self,
        id: ConversationId,
        link_id: i64,
        now: i64,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| queries::revoke_invite_link(c, id, link_id, now)
            .await?)
    }

    async fn create_join_request(
        &self,
        id: ConversationId,
        user: UserId,
        message: &str,
        now: i64,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| queries::create_join_request(
            c, id, user, message, now
        )
        .await?)
    }

    async fn join_requests(&self, id: ConversationId) -> StoreResult<Vec<JoinRequestRecord>> {
        read!(self, |c| queries::join_requests(c, id).await?)
    }

    async fn delete_join_request(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::delete_join_request(c, id, user).await?)
    }

    async fn create_group_invitation(
        &self,
        id: ConversationId,
        user: UserId,
        inviter: UserId,
        now: i64,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| queries::create_group_invitation(
            c, id, user, inviter, now
        )
        .await?)
    }

    async fn group_invitations_of(&self, user: UserId) -> StoreResult<Vec<GroupInvitationRecord>> {
        read!(self, |c| queries::group_invitations_of(c, user).await?)
    }

    async fn delete_group_invitation(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::delete_group_invitation(c, id, user)
            .await?)
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
        in_tx!(self, |c| {
            let appended = queries::append_messages(c, &batch).await?;
            push::record_outbox(c, &appended).await?;
            appended
        })
    }

    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        read!(self, |c| queries::messages_after(
            c,
            conversation,
            after,
            limit
        )
        .await?)
    }

    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        read!(self, |c| queries::messages_before(
            c,
            conversation,
            before,
            limit
        )
        .await?)
    }

    async fn index_pending(&self, limit: u32) -> StoreResult<u32> {
        in_tx!(self, |c| queries::index_pending(c, limit).await?)
    }

    async fn search_messages(
        &self,
        user: UserId,
        query: SearchQuery,
    ) -> StoreResult<Vec<SearchHit>> {
        read!(self, |c| queries::search_messages(c, user, &query).await?)
    }

    async fn advance_marker(
        &self,
        conversation: ConversationId,
        user: UserId,
        kind: ReceiptKind,
        seq: Seq,
    ) -> StoreResult<Option<Seq>> {
        in_tx!(self, |c| queries::advance_marker(
            c,
            conversation,
            user,
            kind,
            seq
        )
        .await?)
    }

    async fn set_last_seen(&self, user: UserId, ts: i64) -> StoreResult<()> {
        in_tx!(self, |c| queries::set_last_seen(c, user, ts).await?)
    }

    async fn last_seen(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, i64)>> {
        read!(self, |c| queries::last_seen(c, users).await?)
    }

    async fn append_audit(&self, entry: NewAudit) -> StoreResult<i64> {
        in_tx!(self, |c| queries::insert_audit(c, &entry).await?)
    }

    async fn audit_entries(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        read!(self, |c| queries::audit_entries(c, filter, after, limit)
            .await?)
    }

    async fn prune_audit(
        &self,
        before: i64,
        now: i64,
        sign: CheckpointSigner,
    ) -> StoreResult<Option<AuditCheckpoint>> {
        let sign = std::sync::Mutex::new(Some(sign));
        let signer = || {
            sign.lock().ok().and_then(|mut s| s.take()).ok_or_else(|| {
                Fail::Store(StoreError::Backend(
                    "the checkpoint was signed by an attempt that failed".into(),
                ))
            })
        };
        in_tx!(self, |c| queries::prune_audit(c, before, now, signer()?)
            .await?)
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        read!(self, |c| queries::audit_checkpoints(c).await?)
    }

    async fn create_upload(&self, upload: UploadRecord, quota: u64) -> StoreResult<bool> {
        in_tx!(self, |c| queries::create_upload(c, &upload, quota).await?)
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<UploadRecord>> {
        read!(self, |c| queries::upload(c, id).await?)
    }

    async fn advance_upload(&self, id: &str, from: u64, to: u64) -> StoreResult<bool> {
        in_tx!(self, |c| queries::advance_upload(c, id, from, to).await?)
    }

    async fn delete_upload(&self, id: &str) -> StoreResult<bool> {
        in_tx!(self, |c| queries::delete_upload(c, id).await?)
    }

    async fn expired_uploads(&self, now: i64, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        read!(self, |c| queries::expired_uploads(c, now, limit).await?)
    }

    async fn storage_usage(&self, user: UserId) -> StoreResult<u64> {
        read!(self, |c| queries::storage_usage(c, user).await?)
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        consumed: &[String],
        file: FileRecord,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| queries::complete_upload(
            c, upload_id, consumed, &file
        )
        .await?)
    }

    async fn file(&self, id: &str) -> StoreResult<Option<FileRecord>> {
        read!(self, |c| queries::file(c, id).await?)
    }

    async fn delete_file(&self, id: &str) -> StoreResult<Option<(FileRecord, bool)>> {
        in_tx!(self, |c| queries::delete_file(c, id).await?)
    }

    async fn share_file(&self, file: &str, conversation: ConversationId) -> StoreResult<bool> {
        in_tx!(self, |c| queries::share_file(c, file, conversation).await?)
    }

    async fn can_read_file(&self, file: &str, user: UserId) -> StoreResult<bool> {
        read!(self, |c| queries::can_read_file(c, file, user).await?)
    }

    async fn create_call(&self, call: CallRecord) -> StoreResult<bool> {
        in_tx!(self, |c| queries::create_call(c, &call).await?)
    }

    async fn call(&self, id: &str) -> StoreResult<Option<CallRecord>> {
        read!(self, |c| queries::call(c, id).await?)
    }

    async fn accept_call(
        &self,
        id: &str,
        device: DeviceId,
        now: i64,
    ) -> StoreResult<Option<CallRecord>> {
        in_tx!(self, |c| queries::accept_call(c, id, device, now).await?)
    }

    async fn finish_call(&self, id: &str, state: CallState) -> StoreResult<Option<CallRecord>> {
        in_tx!(self, |c| queries::finish_call(c, id, state).await?)
    }

    async fn calls_ringing_until(&self, now: i64, limit: u32) -> StoreResult<Vec<CallRecord>> {
        read!(self, |c| queries::calls_ringing_until(c, now, limit)
            .await?)
    }
    async fn two_factor(
        &self,
        user: UserId,
    ) -> StoreResult<Option<tidings_store::TwoFactorRecord>> {
        read!(self, |c| account::two_factor(c, user).await?)
    }
    async fn begin_two_factor(&self, user: UserId, secret: Vec<u8>, now: i64) -> StoreResult<()> {
        in_tx!(self, |c| account::begin(c, user, &secret, now).await?)
    }
    async fn confirm_two_factor(
        &self,
        user: UserId,
        step: i64,
        recovery: Vec<[u8; 32]>,
        now: i64,
        audit: NewAudit,
    ) -> StoreResult<()> {
        in_tx!(self, |c| account::confirm(
            c, user, step, &recovery, now, &audit
        )
        .await?)
    }
    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        in_tx!(self, |c| account::use_step(c, user, step).await?)
    }
    async fn use_recovery_code(&self, user: UserId, hash: [u8; 32], now: i64) -> StoreResult<bool> {
        in_tx!(self, |c| account::use_recovery(c, user, &hash, now).await?)
    }
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: Vec<[u8; 32]>,
        audit: NewAudit,
    ) -> StoreResult<()> {
        in_tx!(self, |c| account::replace_recovery(
            c, user, &recovery, &audit
        )
        .await?)
    }
    async fn disable_two_factor(&self, user: UserId, audit: NewAudit) -> StoreResult<bool> {
        in_tx!(self, |c| account::disable(c, user, &audit).await?)
    }
    async fn files_of(
        &self,
        owner: UserId,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<FileRecord>> {
        read!(self, |c| account::files_of(
            c,
            owner,
            after.as_deref(),
            limit
        )
        .await?)
    }
    async fn edit_history(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<EditRecord>> {
        read!(self, |c| rich::edit_history(c, conversation, seq).await?)
    }

    async fn reactions(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<Vec<(String, Vec<UserId>)>> {
        read!(self, |c| rich::reactions(c, conversation, seq).await?)
    }

    async fn pinned_messages(
        &self,
        conversation: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        read!(self, |c| rich::pinned_messages(c, conversation, limit)
            .await?)
    }

    async fn thread_messages(
        &self,
        conversation: ConversationId,
        root: Seq,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        read!(self, |c| rich::thread_messages(
            c,
            conversation,
            root,
            after,
            limit
        )
        .await?)
    }

    async fn update_conversation_settings(
        &self,
        conversation: ConversationId,
        user: UserId,
        change: UpdateConversationSettingsRequest,
        now: i64,
    ) -> StoreResult<ConversationSettings> {
        in_tx!(self, |c| rich::update_conversation_settings(
            c,
            conversation,
            user,
            &change,
            now
        )
        .await?)
    }

    async fn hide_message(
        &self,
        user: UserId,
        conversation: ConversationId,
        seq: Seq,
    ) -> StoreResult<()> {
        in_tx!(self, |c| rich::hide_message(c, user, conversation, seq)
            .await?)
    }

    async fn hidden_messages(
        &self,
        user: UserId,
        conversation: ConversationId,
        from: Seq,
        to: Seq,
    ) -> StoreResult<Vec<Seq>> {
        read!(self, |c| rich::hidden_messages(
            c,
            user,
            conversation,
            from,
            to
        )
        .await?)
    }

    async fn mark_thread_read(
        &self,
        conversation: ConversationId,
        root: Seq,
        user: UserId,
        seq: Seq,
    ) -> StoreResult<()> {
        in_tx!(self, |c| rich::mark_thread_read(
            c,
            conversation,
            root,
            user,
            seq
        )
        .await?)
    }

    async fn threads(
        &self,
        conversation: ConversationId,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>> {
        read!(self, |c| rich::threads(c, conversation, user, limit)
            .await?)
    }

    async fn set_retention(
        &self,
        conversation: ConversationId,
        retention: Retention,
    ) -> StoreResult<()> {
        in_tx!(self, |c| rich::set_retention(c, conversation, retention)
            .await?)
    }

    async fn retention(&self, conversation: ConversationId) -> StoreResult<Retention> {
        read!(self, |c| rich::retention(c, conversation).await?)
    }

    async fn retentions(
        &self,
        after: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<(ConversationId, Retention)>> {
        read!(self, |c| rich::retentions(c, after, limit).await?)
    }

    async fn prune_conversation(
        &self,
        conversation: ConversationId,
        prune: Prune,
        limit: u32,
    ) -> StoreResult<u32> {
        in_tx!(self, |c| rich::prune_conversation(
            c,
            conversation,
            prune,
            limit
        )
        .await?)
    }

    async fn prune_before(&self, before_ts: i64, limit: u32) -> StoreResult<u32> {
        in_tx!(self, |c| rich::prune_before(c, before_ts, limit).await?)
    }

    async fn set_push_subscription(
        &self,
        user: UserId,
        device: DeviceId,
        subscription: tidings_proto::push::PushSubscription,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| push::set_subscription(
            c,
            user,
            device,
            &subscription,
            now
        )
        .await?)
    }

    async fn push_subscriptions_of(
        &self,
        users: &[UserId],
    ) -> StoreResult<Vec<tidings_store::PushSubscriptionRecord>> {
        read!(self, |c| push::subscriptions_of(c, users).await?)
    }

    async fn delete_push_subscription(
        &self,
        device: DeviceId,
        only: Option<tidings_proto::push::PushSubscription>,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| push::delete_subscription(
            c,
            device,
            only.as_ref()
        )
        .await?)
    }

    async fn push_settings(&self, user: UserId) -> StoreResult<tidings_proto::push::PushSettings> {
        read!(self, |c| push::settings(c, user).await?)
    }

    async fn set_push_settings(
        &self,
        user: UserId,
        settings: tidings_proto::push::PushSettings,
    ) -> StoreResult<()> {
        in_tx!(self, |c| push::set_settings(c, user, &settings).await?)
    }

    async fn enqueue_push_jobs(&self, jobs: Vec<tidings_store::NewPushJob>) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        in_tx!(self, |c| push::enqueue(c, &jobs).await?)
    }

    async fn claim_push_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<tidings_store::PushJob>> {
        in_tx!(self, |c| push::claim(c, now, lease_until, limit).await?)
    }

    async fn finish_push_job(&self, key: tidings_store::PushJobKey, now: i64) -> StoreResult<()> {
        in_tx!(self, |c| push::finish(c, &key, now).await?)
    }

    async fn retry_push_job(
        &self,
        key: tidings_store::PushJobKey,
        next_at: i64,
    ) -> StoreResult<()> {
        in_tx!(self, |c| push::retry(c, &key, next_at).await?)
    }

    async fn claim_push_outbox(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<tidings_store::OutboxItem>> {
        in_tx!(self, |c| push::claim_outbox(c, now, lease_until, limit)
            .await?)
    }

    async fn delete_push_outbox(&self, done: Vec<tidings_store::OutboxItem>) -> StoreResult<()> {
        if done.is_empty() {
            return Ok(());
        }
        in_tx!(self, |c| push::delete_outbox(c, &done).await?)
    }

    async fn save_mqtt_sessions(
        &self,
        put: Vec<tidings_store::MqttSessionRecord>,
        delete: Vec<(UserId, String)>,
    ) -> StoreResult<()> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        in_tx!(self, |c| mqtt::save_sessions(c, &put, &delete).await?)
    }

    async fn mqtt_sessions(&self) -> StoreResult<Vec<tidings_store::MqttSessionRecord>> {
        read!(self, |c| mqtt::sessions(c).await?)
    }

    async fn save_mqtt_retained(
        &self,
        put: Vec<tidings_store::MqttRetainedRecord>,
        delete: Vec<String>,
    ) -> StoreResult<()> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        in_tx!(self, |c| mqtt::save_retained(c, &put, &delete).await?)
    }

    async fn mqtt_retained(&self) -> StoreResult<Vec<tidings_store::MqttRetainedRecord>> {
        read!(self, |c| mqtt::retained(c).await?)
    }

    async fn put_user_xml(
        &self,
        item: tidings_store::UserXmlRecord,
        max_items: u32,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| userxml::put(c, &item, max_items).await?)
    }

    async fn user_xml(
        &self,
        user: UserId,
        node: &str,
    ) -> StoreResult<Vec<tidings_store::UserXmlRecord>> {
        read!(self, |c| userxml::get(c, user, node).await?)
    }

    async fn delete_user_xml(&self, user: UserId, node: &str, item_id: &str) -> StoreResult<bool> {
        in_tx!(self, |c| userxml::delete(c, user, node, item_id).await?)
    }

    async fn claim_room_address(
        &self,
        conversation: ConversationId,
        address: &str,
        temporary: bool,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| rooms::claim(c, conversation, address, temporary)
            .await?)
    }

    async fn room_by_address(
        &self,
        address: &str,
    ) -> StoreResult<Option<tidings_store::RoomRecord>> {
        read!(self, |c| rooms::by_address(c, address).await?)
    }

    async fn rooms_of(
        &self,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<tidings_store::RoomRecord>> {
        read!(self, |c| rooms::of_conversations(c, conversations).await?)
    }

    async fn set_room_temporary(
        &self,
        conversation: ConversationId,
        temporary: bool,
    ) -> StoreResult<bool> {
        in_tx!(self, |c| rooms::set_temporary(c, conversation, temporary)
            .await?)
    }

    async fn delete_room(&self, conversation: ConversationId) -> StoreResult<()> {
        in_tx!(self, |c| rooms::delete(c, conversation).await?)
    }

    async fn occupy(
        &self,
        occupant: tidings_store::OccupantRecord,
        live_nodes: &[i64],
    ) -> StoreResult<tidings_store::Occupied> {
        in_tx!(self, |c| rooms::occupy(c, &occupant, live_nodes).await?)
    }

    async fn vacate(
        &self,
        conversation: ConversationId,
        device: DeviceId,
    ) -> StoreResult<Option<tidings_store::OccupantRecord>> {
        in_tx!(self, |c| rooms::vacate(c, conversation, device).await?)
    }

    async fn occupants(
        &self,
        conversation: ConversationId,
        live_nodes: &[i64],
    ) -> StoreResult<Vec<tidings_store::OccupantRecord>> {
        read!(self, |c| rooms::occupants(c, conversation, live_nodes)
            .await?)
    }

    async fn vacate_nodes_except(&self, live_nodes: &[i64]) -> StoreResult<u64> {
        in_tx!(self, |c| rooms::vacate_nodes_except(c, live_nodes).await?)
    }
}
