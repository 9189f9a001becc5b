//! Every SQL statement of the backend, and the async functions that run them.
//!
//! The functions take any [`GenericClient`] (a pooled connection or a transaction) and prepare
//! each statement once per connection (`prepare_cached`). `lib.rs` decides what runs in a
//! transaction. The statements mirror the SQLite backend's, with three differences that come
//! from several nodes writing at once:
//!
//! - Appends lock the conversation rows of a batch in id order (`FOR UPDATE`) before anything
//!   else, so concurrent batches from different nodes queue on the rows they share, never
//!   deadlock, and a retried `client_msg_id` is seen by the lookup that follows the lock.
//! - Operations that read before they write across rows no lock covers (the audit chain's head,
//!   a pair's friend requests, a user's quota) take a transaction-scoped advisory lock on what
//!   they decide about.
//! - The search indexer claims pending messages with `FOR UPDATE SKIP LOCKED`, so indexers on
//!   several nodes share the work instead of repeating it.

use crate::error::{Fail, Result};
use deadpool_postgres::GenericClient;
use tidings_proto::contacts::{DirectMessages, GroupAdds, PrivacySettings, Visibility};
use tidings_proto::rest::{
    ConversationKind, ConversationSettings, GroupPermissions, NotifyLevel, Role,
};
use tidings_proto::ws::ReceiptKind;
use tidings_proto::{ConversationId, DeviceId, Message, MessageBody, MessageId, Seq, UserId};
use tidings_store::audit::{self, GENESIS_HASH};
use tidings_store::meta::MessageMeta;
use tidings_store::{
    Appended, AuditCheckpoint, AuditFilter, AuditOutcome, AuditRecord, BanRecord, BlockRecord,
    CheckpointSigner, ConversationRecord, DeletedAccount, DeviceRecord, FileRecord, FriendRecord,
    FriendRequestRecord, FriendRequestSent, GroupChange, GroupChanged, GroupInvitationRecord,
    GroupRecord, InviteLinkRecord, JoinRequestRecord, MemberRecord, NewAudit, NewInvite,
    NewInviteLink, NewMessage, NewRefreshToken, Peer, ProfileRecord, RotateOutcome, SearchHit,
    SearchQuery, StoreError, UploadKind, UploadRecord, UserConversation, UserRecord,
};
use tidings_store::{CallRecord, CallState};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

type Param<'a> = &'a (dyn ToSql + Sync);

// --- Statement helpers -----------------------------------------------------------------------

pub(crate) async fn exec<C: GenericClient>(c: &C, sql: &str, params: &[Param<'_>]) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

pub(crate) async fn opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

pub(crate) async fn all<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

pub(crate) fn bad(what: impl Into<String>) -> Fail {
    Fail::Store(StoreError::Backend(what.into()))
}

/// Sequences are `u64` in the API and BIGINT in the database. Stored values are never negative;
/// a bound larger than i64::MAX means "no bound" and is clamped.
pub(crate) fn seq_to_sql(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(crate) fn seq_from_sql(value: i64) -> Seq {
    Seq::try_from(value).unwrap_or(0)
}

fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn u32_from_sql(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Transaction-scoped advisory lock keys. Each names what a transaction decides about; two keys
/// colliding only makes two unrelated transactions wait for each other.
mod lock {
    pub(super) const AUDIT: i64 = 0x7464_6e67_0000_0001;
    pub(super) const MIGRATIONS: i64 = 0x7464_6e67_0000_0002;

    fn mix(tag: i64, a: i64, b: i64) -> i64 {
        tag ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64) ^ b.rotate_left(29)
    }

    pub(super) fn pair(a: i64, b: i64) -> i64 {
        mix(0x7464_6e67_0001_0000, a.min(b), a.max(b))
    }

    pub(super) fn quota(user: i64) -> i64 {
        mix(0x7464_6e67_0002_0000, user, 0)
    }

    /// Whether a user is in a call: taken for both users before a call is created.
    pub(super) fn in_call(user: i64) -> i64 {
        mix(0x7464_6e67_0003_0000, user, 0)
    }
}

pub(crate) const MIGRATIONS_LOCK: i64 = lock::MIGRATIONS;

async fn advisory_lock<C: GenericClient>(c: &C, key: i64) -> Result<()> {
    exec(c, "SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .map(drop)
}

// --- Conversions -----------------------------------------------------------------------------

fn kind_to_sql(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

fn kind_from_sql(kind: &str) -> Result<ConversationKind> {
    match kind {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(bad(format!("unknown conversation kind {other:?}"))),
    }
}

fn role_to_sql(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn role_from_sql(role: &str) -> Result<Role> {
    match role {
        "owner" => Ok(Role::Owner),
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        other => Err(bad(format!("unknown role {other:?}"))),
    }
}

const USER_COLUMNS: &str =
    "id, username, password_hash, created_at, disabled, is_admin, deleted_at";

fn user_from_row(row: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(row.try_get(0)?),
        username: row.try_get(1)?,
        password_hash: row.try_get(2)?,
        created_at: row.try_get(3)?,
        disabled: row.try_get(4)?,
        is_admin: row.try_get(5)?,
        deleted_at: row.try_get(6)?,
    })
}

fn device_from_row(row: &Row) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: DeviceId(row.try_get(0)?),
        user_id: UserId(row.try_get(1)?),
        name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        last_active_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
    })
}

/// Reads `id, kind, title, created_at, last_seq` starting at column `at`.
fn conversation_from_row(row: &Row, at: usize) -> Result<ConversationRecord> {
    Ok(ConversationRecord {
        id: ConversationId(row.try_get(at)?),
        kind: kind_from_sql(row.try_get(at + 1)?)?,
        title: row.try_get(at + 2)?,
        created_at: row.try_get(at + 3)?,
        last_seq: seq_from_sql(row.try_get(at + 4)?),
    })
}

/// Reads `conversation_id, user_id, username, role, joined_at, delivered_seq, read_seq`
/// starting at column `at`, and `muted_until` from column `muted_at`.
fn member_from_row(row: &Row, at: usize, muted_at: usize) -> Result<MemberRecord> {
    Ok(MemberRecord {
        conversation_id: ConversationId(row.try_get(at)?),
        user_id: UserId(row.try_get(at + 1)?),
        username: row.try_get(at + 2)?,
        role: role_from_sql(row.try_get(at + 3)?)?,
        joined_at: row.try_get(at + 4)?,
        delivered_seq: seq_from_sql(row.try_get(at + 5)?),
        read_seq: seq_from_sql(row.try_get(at + 6)?),
        muted_until: row.try_get(muted_at)?,
    })
}

pub(crate) const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, sender_id, sender_device_id, \
     client_msg_id, ts, body, reply_to, thread_root, meta";

/// Reads and writes `messages.meta` (the shape every backend shares, so `migrate-store` copies
/// it as it is).
pub(crate) trait MetaColumn: Sized {
    fn parse(json: Option<&str>) -> Result<Self>;
    fn to_sql(&self) -> Result<Option<String>>;
}

impl MetaColumn for MessageMeta {
    fn parse(json: Option<&str>) -> Result<MessageMeta> {
        MessageMeta::from_json(json).map_err(|e| bad(format!("bad message meta: {e}")))
    }

    fn to_sql(&self) -> Result<Option<String>> {
        self.to_json()
            .map_err(|e| bad(format!("encoding message meta: {e}")))
    }
}

pub(crate) fn message_from_row(row: &Row) -> Result<Message> {
    let body: &str = row.try_get(7)?;
    let body: MessageBody =
        serde_json::from_str(body).map_err(|e| bad(format!("bad message body: {e}")))?;
    let meta = MessageMeta::parse(row.try_get(10)?)?;
    let mut message = Message::new(
        ConversationId(row.try_get(1)?),
        seq_from_sql(row.try_get(2)?),
        MessageId(row.try_get(0)?),
        (UserId(row.try_get(3)?), DeviceId(row.try_get(4)?)),
        row.try_get(5)?,
        row.try_get(6)?,
        body,
    );
    message.reply_to = row.try_get::<_, Option<i64>>(8)?.map(seq_from_sql);
    message.thread_root = row.try_get::<_, Option<i64>>(9)?.map(seq_from_sql);
    meta.apply_to(&mut message);
    Ok(message)
}

fn hash_from_row(row: &Row, index: usize) -> Result<[u8; 32]> {
    let bytes: Vec<u8> = row.try_get(index)?;
    bytes.try_into().map_err(|_| bad("a hash is not 32 bytes"))
}

fn ids(ids: &[UserId]) -> Vec<i64> {
    ids.iter().map(|id| id.0).collect()
}

pub(crate) fn tombstone() -> Result<String> {
    serde_json::to_string(&MessageBody::Deleted {})
        .map_err(|e| bad(format!("tombstone does not serialize: {e}")))
}

// --- Accounts --------------------------------------------------------------------------------

pub(crate) async fn ping<C: GenericClient>(c: &C) -> Result<()> {
    opt(c, "SELECT 1", &[]).await.map(drop)
}

pub(crate) async fn create_user<C: GenericClient>(
    c: &C,
    username: &str,
    password_hash: &str,
    now: i64,
) -> Result<UserRecord> {
    let row = opt(
        c,
        "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        &[&username, &password_hash, &now],
    )
    .await?
    .ok_or_else(|| bad("INSERT ... RETURNING returned no row"))?;
    Ok(UserRecord {
        id: UserId(row.try_get(0)?),
        username: username.to_owned(),
        password_hash: password_hash.to_owned(),
        created_at: now,
        disabled: false,
        is_admin: false,
        deleted_at: None,
    })
}

pub(crate) async fn create_user_with_invite<C: GenericClient>(
    c: &C,
    username: &str,
    password_hash: &str,
    invite_hash: [u8; 32],
    now: i64,
) -> Result<UserRecord> {
    let used = exec(
        c,
        "UPDATE invites SET uses_left = uses_left - 1 \
         WHERE code_hash = $1 AND expires_at > $2 AND uses_left > 0",
        &[&&invite_hash[..], &now],
    )
    .await?;
    if used == 0 {
        return Err(StoreError::NotFound.into());
    }
    create_user(c, username, password_hash, now).await
}

pub(crate) async fn user_by_name<C: GenericClient>(
    c: &C,
    name: &str,
) -> Result<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
    opt(c, &sql, &[&name])
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

pub(crate) async fn user_by_id<C: GenericClient>(c: &C, id: UserId) -> Result<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    opt(c, &sql, &[&id.0])
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

pub(crate) async fn users_by_ids<C: GenericClient>(
    c: &C,
    list: &[UserId],
) -> Result<Vec<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1) ORDER BY id");
    all(c, &sql, &[&ids(list)])
        .await?
        .iter()
        .map(user_from_row)
        .collect()
}

pub(crate) async fn list_users<C: GenericClient>(
    c: &C,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserRecord>> {
    let after = after.map_or(i64::MIN, |id| id.0);
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
    all(c, &sql, &[&after, &i64::from(limit)])
        .await?
        .iter()
        .map(user_from_row)
        .collect()
}

pub(crate) async fn set_password_hash<C: GenericClient>(
    c: &C,
    user: UserId,
    password_hash: &str,
) -> Result<()> {
    match exec(
        c,
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&user.0, &password_hash],
    )
    .await?
    {
        0 => Err(StoreError::NotFound.into()),
        _ => Ok(()),
    }
}

pub(crate) async fn find_users<C: GenericClient>(
    c: &C,
    prefix: &str,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserRecord>> {
    if prefix.is_empty() {
        return list_users(c, after, limit).await;
    }
    let after = after.map_or(i64::MIN, |id| id.0);
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE starts_with(username, $1) AND id > $2 \
         ORDER BY id LIMIT $3"
    );
    all(c, &sql, &[&prefix, &after, &i64::from(limit)])
        .await?
        .iter()
        .map(user_from_row)
        .collect()
}

pub(crate) async fn create_invite<C: GenericClient>(c: &C, invite: &NewInvite) -> Result<()> {
    exec(
        c,
        "INSERT INTO invites (code_hash, created_at, expires_at, uses_left) \
         VALUES ($1, $2, $3, $4)",
        &[
            &&invite.code_hash[..],
            &invite.created_at,
            &invite.expires_at,
            &i64::from(invite.uses),
        ],
    )
    .await
    .map(drop)
}

pub(crate) async fn set_suspended<C: GenericClient>(
    c: &C,
    user: UserId,
    suspended: bool,
    now: i64,
    audit: &NewAudit,
) -> Result<Vec<DeviceId>> {
    let changed = exec(
        c,
        "UPDATE users SET disabled = $2 WHERE id = $1 AND deleted_at IS NULL",
        &[&user.0, &suspended],
    )
    .await?;
    if changed == 0 {
        return Err(StoreError::NotFound.into());
    }
    let revoked = if suspended {
        revoke_other_devices(c, user, None, now, None).await?
    } else {
        Vec::new()
    };
    insert_audit(c, audit).await?;
    Ok(revoked)
}

pub(crate) async fn set_admin<C: GenericClient>(
    c: &C,
    user: UserId,
    is_admin: bool,
    audit: &NewAudit,
) -> Result<bool> {
    // FOR UPDATE: the answer (whether the role changed) must describe this transaction's write.
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE");
    let current = opt(c, &sql, &[&user.0])
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()?;
    let Some(current) = current.filter(|u| u.deleted_at.is_none()) else {
        return Err(StoreError::NotFound.into());
    };
    exec(
        c,
        "UPDATE users SET is_admin = $2 WHERE id = $1",
        &[&user.0, &is_admin],
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(current.is_admin != is_admin)
}

pub(crate) async fn delete_user<C: GenericClient>(
    c: &C,
    user: UserId,
    now: i64,
    remove_messages: bool,
    audit: &NewAudit,
) -> Result<DeletedAccount> {
    let marked = exec(
        c,
        "UPDATE users SET deleted_at = $2, disabled = true, is_admin = false \
         WHERE id = $1 AND deleted_at IS NULL",
        &[&user.0, &now],
    )
    .await?;
    if marked == 0 {
        return Err(StoreError::NotFound.into());
    }
    let devices = revoke_other_devices(c, user, None, now, None).await?;
    let conversations: Vec<ConversationId> = all(
        c,
        "SELECT conversation_id FROM members WHERE user_id = $1 ORDER BY conversation_id",
        &[&user.0],
    )
    .await?
    .iter()
    .map(|row| row.try_get(0).map(ConversationId))
    .collect::<std::result::Result<_, _>>()?;
    let tombstone = tombstone()?;
    let mut messages_removed = 0;
    for &conversation in &conversations {
        if remove_messages {
            messages_removed += exec(
                c,
                "UPDATE messages SET kind = 'deleted', body = $3, search_terms = NULL \
                 WHERE conversation_id = $1 AND sender_id = $2 AND kind <> 'deleted'",
                &[&conversation.0, &user.0, &tombstone],
            )
            .await?;
        }
        remove_member(c, conversation, user).await?;
    }
    exec(c, "DELETE FROM profiles WHERE user_id = $1", &[&user.0]).await?;
    exec(c, "DELETE FROM user_xml WHERE user_id = $1", &[&user.0]).await?;
    exec(c, "DELETE FROM last_seen WHERE user_id = $1", &[&user.0]).await?;
    crate::account::remove_personal(c, user).await?;
    exec(
        c,
        "DELETE FROM external_identities WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(DeletedAccount {
        devices,
        conversations,
        messages_removed,
    })
}

// --- Devices and tokens ----------------------------------------------------------------------

const DEVICE_COLUMNS: &str = "id, user_id, name, created_at, last_active_at, revoked_at";

pub(crate) async fn create_device<C: GenericClient>(
    c: &C,
    user: UserId,
    name: &str,
    now: i64,
) -> Result<DeviceRecord> {
    let row = opt(
        c,
        "INSERT INTO devices (user_id, name, created_at, last_active_at) \
         VALUES ($1, $2, $3, $3) RETURNING id",
        &[&user.0, &name, &now],
    )
    .await?
    .ok_or_else(|| bad("INSERT ... RETURNING returned no row"))?;
    Ok(DeviceRecord {
        id: DeviceId(row.try_get(0)?),
        user_id: user,
        name: name.to_owned(),
        created_at: now,
        last_active_at: now,
        revoked_at: None,
    })
}

pub(crate) async fn device<C: GenericClient>(c: &C, id: DeviceId) -> Result<Option<DeviceRecord>> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1");
    opt(c, &sql, &[&id.0])
        .await?
        .as_ref()
        .map(device_from_row)
        .transpose()
}

pub(crate) async fn devices_of<C: GenericClient>(c: &C, user: UserId) -> Result<Vec<DeviceRecord>> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND revoked_at IS NULL \
         ORDER BY created_at, id"
    );
    all(c, &sql, &[&user.0])
        .await?
        .iter()
        .map(device_from_row)
        .collect()
}

pub(crate) async fn touch_device<C: GenericClient>(c: &C, id: DeviceId, now: i64) -> Result<()> {
    match exec(
        c,
        "UPDATE devices SET last_active_at = GREATEST(last_active_at, $2) WHERE id = $1",
        &[&id.0, &now],
    )
    .await?
    {
        0 => Err(StoreError::NotFound.into()),
        _ => Ok(()),
    }
}

pub(crate) async fn revoke_device<C: GenericClient>(
    c: &C,
    user: UserId,
    id: DeviceId,
    now: i64,
    audit: Option<&NewAudit>,
) -> Result<bool> {
    let revoked = exec(
        c,
        "UPDATE devices SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        &[&id.0, &user.0, &now],
    )
    .await?;
    if revoked == 0 {
        return Ok(false);
    }
    exec(
        c,
        "DELETE FROM refresh_tokens WHERE device_id = $1",
        &[&id.0],
    )
    .await?;
    if let Some(entry) = audit {
        insert_audit(c, entry).await?;
    }
    Ok(true)
}

pub(crate) async fn revoke_other_devices<C: GenericClient>(
    c: &C,
    user: UserId,
    keep: Option<DeviceId>,
    now: i64,
    audit: Option<&NewAudit>,
) -> Result<Vec<DeviceId>> {
    let keep = keep.map(|id| id.0);
    let mut revoked: Vec<DeviceId> = all(
        c,
        "UPDATE devices SET revoked_at = $3 \
         WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2 RETURNING id",
        &[&user.0, &keep, &now],
    )
    .await?
    .iter()
    .map(|row| row.try_get(0).map(DeviceId))
    .collect::<std::result::Result<_, _>>()?;
    revoked.sort_unstable();
    let list: Vec<i64> = revoked.iter().map(|d| d.0).collect();
    if !list.is_empty() {
        exec(
            c,
            "DELETE FROM refresh_tokens WHERE device_id = ANY($1)",
            &[&list],
        )
        .await?;
    }
    if let Some(entry) = audit {
        insert_audit(c, entry).await?;
    }
    Ok(revoked)
}

pub(crate) async fn insert_refresh_token<C: GenericClient>(
    c: &C,
    token: &NewRefreshToken,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO refresh_tokens (token_hash, device_id, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &&token.token_hash[..],
            &token.device_id.0,
            &token.user_id.0,
            &token.created_at,
            &token.expires_at,
        ],
    )
    .await
    .map(drop)
}

pub(crate) async fn rotate_refresh_token<C: GenericClient>(
    c: &C,
    old_hash: [u8; 32],
    new: &NewRefreshToken,
    now: i64,
    on_reuse: &NewAudit,
) -> Result<RotateOutcome> {
    // FOR UPDATE OF t: two nodes presenting the same token at once queue here, and the second
    // sees the token used by the first, which is reuse.
    let found = opt(
        c,
        "SELECT t.device_id, t.user_id, t.expires_at, t.used_at, d.revoked_at \
         FROM refresh_tokens t JOIN devices d ON d.id = t.device_id \
         WHERE t.token_hash = $1 FOR UPDATE OF t",
        &[&&old_hash[..]],
    )
    .await?;
    let Some(row) = found else {
        return Ok(RotateOutcome::Invalid);
    };
    let device_id = DeviceId(row.try_get(0)?);
    let user_id = UserId(row.try_get(1)?);
    let expires_at: i64 = row.try_get(2)?;
    let used = row.try_get::<_, Option<i64>>(3)?.is_some();
    let revoked = row.try_get::<_, Option<i64>>(4)?.is_some();
    if revoked || expires_at <= now {
        return Ok(RotateOutcome::Invalid);
    }
    if used {
        revoke_device(c, user_id, device_id, now, None).await?;
        insert_audit(c, on_reuse).await?;
        return Ok(RotateOutcome::ReuseDetected { user_id, device_id });
    }
    if new.device_id != device_id || new.user_id != user_id {
        return Err(bad(
            "rotate_refresh_token: the new token names another device",
        ));
    }
    exec(
        c,
        "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1",
        &[&&old_hash[..], &now],
    )
    .await?;
    insert_refresh_token(c, new).await?;
    Ok(RotateOutcome::Rotated { user_id, device_id })
}

pub(crate) async fn refresh_token_device<C: GenericClient>(
    c: &C,
    hash: [u8; 32],
) -> Result<Option<DeviceId>> {
    opt(
        c,
        "SELECT device_id FROM refresh_tokens WHERE token_hash = $1",
        &[&&hash[..]],
    )
    .await?
    .map(|row| row.try_get(0).map(DeviceId))
    .transpose()
    .map_err(Fail::from)
}

pub(crate) async fn prune_refresh_tokens<C: GenericClient>(c: &C, now: i64) -> Result<u64> {
    exec(
        c,
        "DELETE FROM refresh_tokens WHERE expires_at <= $1",
        &[&now],
    )
    .await
}

pub(crate) async fn sign_in<C: GenericClient>(
    c: &C,
    user: UserId,
    device_name: &str,
    refresh_hash: [u8; 32],
    refresh_expires_at: i64,
    now: i64,
    audit: &NewAudit,
) -> Result<DeviceRecord> {
    // FOR SHARE: a suspension committing meanwhile waits for this sign-in (and then signs its
    // device out), or this sign-in waits for it and sees the account disabled.
    let active = opt(
        c,
        "SELECT 1 FROM users WHERE id = $1 AND NOT disabled AND deleted_at IS NULL FOR SHARE",
        &[&user.0],
    )
    .await?;
    if active.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let device = create_device(c, user, device_name, now).await?;
    insert_refresh_token(
        c,
        &NewRefreshToken {
            token_hash: refresh_hash,
            device_id: device.id,
            user_id: user,
            created_at: now,
            expires_at: refresh_expires_at,
        },
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(device)
}

pub(crate) async fn replace_password<C: GenericClient>(
    c: &C,
    user: UserId,
    password_hash: &str,
    keep: Option<DeviceId>,
    now: i64,
    audit: &NewAudit,
) -> Result<Vec<DeviceId>> {
    set_password_hash(c, user, password_hash).await?;
    revoke_other_devices(c, user, keep, now, Some(audit)).await
}

// --- Profiles --------------------------------------------------------------------------------

fn profile_from_row(row: &Row) -> Result<ProfileRecord> {
    Ok(ProfileRecord {
        user_id: UserId(row.try_get(0)?),
        username: row.try_get(1)?,
        display_name: row.try_get(2)?,
        status_text: row.try_get(3)?,
        avatar: row.try_get(4)?,
    })
}

pub(crate) async fn profile<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Option<ProfileRecord>> {
    opt(
        c,
        "SELECT u.id, u.username, coalesce(p.display_name, ''), coalesce(p.status_text, ''), \
         coalesce(p.avatar, '') \
         FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
        &[&user.0],
    )
    .await?
    .as_ref()
    .map(profile_from_row)
    .transpose()
}

pub(crate) async fn set_profile<C: GenericClient>(
    c: &C,
    user: UserId,
    display_name: &str,
    status_text: &str,
    now: i64,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO profiles (user_id, display_name, status_text, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET \
         display_name = excluded.display_name, status_text = excluded.status_text, \
         updated_at = excluded.updated_at",
        &[&user.0, &display_name, &status_text, &now],
    )
    .await
    .map(drop)
}

pub(crate) async fn set_avatar<C: GenericClient>(
    c: &C,
    user: UserId,
    avatar: &str,
    now: i64,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO profiles (user_id, display_name, status_text, updated_at, avatar) \
         VALUES ($1, '', '', $3, $2) ON CONFLICT (user_id) DO UPDATE SET \
         avatar = excluded.avatar, updated_at = excluded.updated_at",
        &[&user.0, &avatar, &now],
    )
    .await
    .map(drop)
}

/// Escapes LIKE's wildcards so a prefix is matched literally.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

pub(crate) async fn search_users<C: GenericClient>(
    c: &C,
    prefix: &str,
    limit: u32,
) -> Result<Vec<ProfileRecord>> {
    let limit_sql = i64::from(limit);
    let by_username = like_prefix(&prefix.to_lowercase());
    let mut found: Vec<ProfileRecord> = all(
        c,
        "SELECT u.id, u.username, coalesce(p.display_name, ''), coalesce(p.status_text, ''), \
         coalesce(p.avatar, '') \
         FROM users u LEFT JOIN profiles p ON p.user_id = u.id \
         WHERE u.username LIKE $1 AND NOT u.disabled ORDER BY u.username LIMIT $2",
        &[&by_username, &limit_sql],
    )
    .await?
    .iter()
    .map(profile_from_row)
    .collect::<Result<_>>()?;
    // SQLite's NOCASE folds ASCII only; lower() folds more, which only ever finds more.
    let by_display = like_prefix(&prefix.to_ascii_lowercase());
    let more: Vec<ProfileRecord> = all(
        c,
        "SELECT u.id, u.username, p.display_name, p.status_text, p.avatar \
         FROM profiles p JOIN users u ON u.id = p.user_id \
         WHERE lower(p.display_name) LIKE $1 AND NOT u.disabled LIMIT $2",
        &[&by_display, &limit_sql],
    )
    .await?
    .iter()
    .map(profile_from_row)
    .collect::<Result<_>>()?;
    found.extend(more);
    found.sort_by(|a, b| a.username.cmp(&b.username));
    found.dedup_by(|a, b| a.user_id == b.user_id);
    found.truncate(limit as usize);
    Ok(found)
}

// --- Block list ------------------------------------------------------------------------------

fn ordered(a: UserId, b: UserId) -> (i64, i64) {
    (a.0.min(b.0), a.0.max(b.0))
}

pub(crate) async fn block_user<C: GenericClient>(
    c: &C,
    blocker: UserId,
    blocked: UserId,
    now: i64,
) -> Result<bool> {
    advisory_lock(c, lock::pair(blocker.0, blocked.0)).await?;
    let added = exec(
        c,
        "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (blocker_id, blocked_id) DO NOTHING",
        &[&blocker.0, &blocked.0, &now],
    )
    .await?
        == 1;
    let (low, high) = ordered(blocker, blocked);
    let mut changed = exec(
        c,
        "DELETE FROM friendships WHERE low_id = $1 AND high_id = $2",
        &[&low, &high],
    )
    .await?;
    changed += delete_request_row(c, blocker, blocked).await?;
    changed += delete_request_row(c, blocked, blocker).await?;
    if changed > 0 {
        bump_contacts_versions(c, [blocker, blocked]).await?;
    }
    Ok(added)
}

pub(crate) async fn unblock_user<C: GenericClient>(
    c: &C,
    blocker: UserId,
    blocked: UserId,
) -> Result<bool> {
    exec(
        c,
        "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
        &[&blocker.0, &blocked.0],
    )
    .await
    .map(|n| n == 1)
}

pub(crate) async fn blocked_by<C: GenericClient>(
    c: &C,
    blocker: UserId,
) -> Result<Vec<BlockRecord>> {
    all(
        c,
        "SELECT b.blocked_id, u.username, b.created_at FROM blocks b \
         JOIN users u ON u.id = b.blocked_id WHERE b.blocker_id = $1 ORDER BY b.blocked_id",
        &[&blocker.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(BlockRecord {
            user_id: UserId(row.try_get(0)?),
            username: row.try_get(1)?,
            since: row.try_get(2)?,
        })
    })
    .collect()
}

pub(crate) async fn blockers_of<C: GenericClient>(c: &C, blocked: UserId) -> Result<Vec<UserId>> {
    all(
        c,
        "SELECT blocker_id FROM blocks WHERE blocked_id = $1 ORDER BY blocker_id",
        &[&blocked.0],
    )
    .await?
    .iter()
    .map(|row| Ok(UserId(row.try_get(0)?)))
    .collect()
}

pub(crate) async fn is_blocked<C: GenericClient>(
    c: &C,
    blocker: UserId,
    blocked: UserId,
) -> Result<bool> {
    Ok(opt(
        c,
        "SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
        &[&blocker.0, &blocked.0],
    )
    .await?
    .is_some())
}

// --- Friends and privacy ---------------------------------------------------------------------

const FRIEND_REQUEST_SELECT: &str = "SELECT r.from_id, fu.username, r.to_id, tu.username, r.note, r.created_at \
     FROM friend_requests r JOIN users fu ON fu.id = r.from_id JOIN users tu ON tu.id = r.to_id ";

fn friend_request_from_row(row: &Row) -> Result<FriendRequestRecord> {
    Ok(FriendRequestRecord {
        from: UserId(row.try_get(0)?),
        from_username: row.try_get(1)?,
        to: UserId(row.try_get(2)?),
        to_username: row.try_get(3)?,
        note: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

async fn delete_request_row<C: GenericClient>(c: &C, from: UserId, to: UserId) -> Result<u64> {
    exec(
        c,
        "DELETE FROM friend_requests WHERE from_id = $1 AND to_id = $2",
        &[&from.0, &to.0],
    )
    .await
}

async fn bump_contacts_versions<C: GenericClient>(c: &C, users: [UserId; 2]) -> Result<()> {
    for user in users {
        exec(
            c,
            "INSERT INTO contacts_versions (user_id, version) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET version = contacts_versions.version + 1",
            &[&user.0],
        )
        .await?;
    }
    Ok(())
}

async fn insert_friendship<C: GenericClient>(c: &C, a: UserId, b: UserId, now: i64) -> Result<()> {
    let (low, high) = ordered(a, b);
    exec(
        c,
        "INSERT INTO friendships (low_id, high_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (low_id, high_id) DO NOTHING",
        &[&low, &high, &now],
    )
    .await
    .map(drop)
}

pub(crate) async fn are_friends<C: GenericClient>(c: &C, a: UserId, b: UserId) -> Result<bool> {
    let (low, high) = ordered(a, b);
    Ok(opt(
        c,
        "SELECT 1 FROM friendships WHERE low_id = $1 AND high_id = $2",
        &[&low, &high],
    )
    .await?
    .is_some())
}

pub(crate) async fn friend_request<C: GenericClient>(
    c: &C,
    from: UserId,
    to: UserId,
) -> Result<Option<FriendRequestRecord>> {
    let sql = format!("{FRIEND_REQUEST_SELECT}WHERE r.from_id = $1 AND r.to_id = $2");
    opt(c, &sql, &[&from.0, &to.0])
        .await?
        .as_ref()
        .map(friend_request_from_row)
        .transpose()
}

/// Serialized per pair by an advisory lock, so two crossing requests sent through different
/// nodes cannot both end up pending.
pub(crate) async fn send_friend_request<C: GenericClient>(
    c: &C,
    from: UserId,
    to: UserId,
    note: Option<&str>,
    now: i64,
) -> Result<FriendRequestSent> {
    if from == to {
        return Err(StoreError::Conflict("friend_request").into());
    }
    advisory_lock(c, lock::pair(from.0, to.0)).await?;
    if are_friends(c, from, to).await? {
        return Err(StoreError::Conflict("friendship").into());
    }
    if delete_request_row(c, to, from).await? == 1 {
        insert_friendship(c, from, to, now).await?;
        bump_contacts_versions(c, [from, to]).await?;
        return Ok(FriendRequestSent::BecameFriends);
    }
    exec(
        c,
        "INSERT INTO friend_requests (from_id, to_id, note, created_at) VALUES ($1, $2, $3, $4)",
        &[&from.0, &to.0, &note, &now],
    )
    .await?;
    bump_contacts_versions(c, [from, to]).await?;
    Ok(FriendRequestSent::Pending)
}

pub(crate) async fn accept_friend_request<C: GenericClient>(
    c: &C,
    from: UserId,
    to: UserId,
    now: i64,
) -> Result<bool> {
    advisory_lock(c, lock::pair(from.0, to.0)).await?;
    if delete_request_row(c, from, to).await? == 0 {
        return Ok(false);
    }
    insert_friendship(c, from, to, now).await?;
    bump_contacts_versions(c, [from, to]).await?;
    Ok(true)
}

pub(crate) async fn delete_friend_request<C: GenericClient>(
    c: &C,
    from: UserId,
    to: UserId,
) -> Result<bool> {
    if delete_request_row(c, from, to).await? == 0 {
        return Ok(false);
    }
    bump_contacts_versions(c, [from, to]).await?;
    Ok(true)
}

pub(crate) async fn remove_friend<C: GenericClient>(c: &C, a: UserId, b: UserId) -> Result<bool> {
    let (low, high) = ordered(a, b);
    let removed = exec(
        c,
        "DELETE FROM friendships WHERE low_id = $1 AND high_id = $2",
        &[&low, &high],
    )
    .await?;
    if removed == 0 {
        return Ok(false);
    }
    bump_contacts_versions(c, [a, b]).await?;
    Ok(true)
}

pub(crate) async fn friends_of<C: GenericClient>(c: &C, user: UserId) -> Result<Vec<FriendRecord>> {
    all(
        c,
        "SELECT f.high_id, u.username, f.created_at FROM friendships f \
         JOIN users u ON u.id = f.high_id WHERE f.low_id = $1 \
         UNION ALL \
         SELECT f.low_id, u.username, f.created_at FROM friendships f \
         JOIN users u ON u.id = f.low_id WHERE f.high_id = $1 \
         ORDER BY 1",
        &[&user.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(FriendRecord {
            user_id: UserId(row.try_get(0)?),
            username: row.try_get(1)?,
            since: row.try_get(2)?,
        })
    })
    .collect()
}

pub(crate) async fn friend_requests_to<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<FriendRequestRecord>> {
    let sql = format!("{FRIEND_REQUEST_SELECT}WHERE r.to_id = $1 ORDER BY r.created_at, r.from_id");
    all(c, &sql, &[&user.0])
        .await?
        .iter()
        .map(friend_request_from_row)
        .collect()
}

pub(crate) async fn friend_requests_from<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<FriendRequestRecord>> {
    let sql = format!("{FRIEND_REQUEST_SELECT}WHERE r.from_id = $1 ORDER BY r.created_at, r.to_id");
    all(c, &sql, &[&user.0])
        .await?
        .iter()
        .map(friend_request_from_row)
        .collect()
}

pub(crate) async fn contacts_version<C: GenericClient>(c: &C, user: UserId) -> Result<u64> {
    let version = opt(
        c,
        "SELECT version FROM contacts_versions WHERE user_id = $1",
        &[&user.0],
    )
    .await?
    .map(|row| row.try_get::<_, i64>(0))
    .transpose()?;
    Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

fn privacy_from_row(row: &Row) -> Result<PrivacySettings> {
    let text = |index: usize| row.try_get::<_, Option<String>>(index);
    let direct_messages = match text(1)?.as_deref() {
        None | Some("everyone") => DirectMessages::Everyone,
        Some("friends") => DirectMessages::Friends,
        Some(other) => return Err(bad(format!("unknown setting {other:?}"))),
    };
    let visibility = |value: Option<String>| match value.as_deref() {
        None | Some("everyone") => Ok(Visibility::Everyone),
        Some("friends") => Ok(Visibility::Friends),
        Some("nobody") => Ok(Visibility::Nobody),
        Some(other) => Err(bad(format!("unknown setting {other:?}"))),
    };
    let presence = visibility(text(2)?)?;
    let group_adds = match text(3)?.as_deref() {
        None | Some("everyone") => GroupAdds::Everyone,
        Some("friends") => GroupAdds::Friends,
        Some("nobody") => GroupAdds::Nobody,
        Some(other) => return Err(bad(format!("unknown setting {other:?}"))),
    };
    Ok(PrivacySettings {
        direct_messages,
        presence,
        group_adds,
    })
}

pub(crate) async fn privacy_of<C: GenericClient>(
    c: &C,
    users: &[UserId],
) -> Result<Vec<(UserId, PrivacySettings)>> {
    all(
        c,
        "SELECT u.id, p.direct_messages, p.presence, p.group_adds FROM users u \
         LEFT JOIN privacy_settings p ON p.user_id = u.id WHERE u.id = ANY($1) ORDER BY u.id",
        &[&ids(users)],
    )
    .await?
    .iter()
    .map(|row| Ok((UserId(row.try_get(0)?), privacy_from_row(row)?)))
    .collect()
}

pub(crate) async fn set_privacy<C: GenericClient>(
    c: &C,
    user: UserId,
    settings: PrivacySettings,
    now: i64,
) -> Result<()> {
    let direct = match settings.direct_messages {
        DirectMessages::Everyone => "everyone",
        DirectMessages::Friends => "friends",
    };
    let presence = match settings.presence {
        Visibility::Everyone => "everyone",
        Visibility::Friends => "friends",
        Visibility::Nobody => "nobody",
    };
    let adds = match settings.group_adds {
        GroupAdds::Everyone => "everyone",
        GroupAdds::Friends => "friends",
        GroupAdds::Nobody => "nobody",
    };
    exec(
        c,
        "INSERT INTO privacy_settings (user_id, direct_messages, presence, group_adds, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
         direct_messages = excluded.direct_messages, presence = excluded.presence, \
         group_adds = excluded.group_adds, updated_at = excluded.updated_at",
        &[&user.0, &direct, &presence, &adds, &now],
    )
    .await
    .map(drop)
}

// --- Conversations ---------------------------------------------------------------------------

const CONVERSATION_COLUMNS: &str = "id, kind, title, created_at, last_seq";

fn direct_key(a: UserId, b: UserId) -> String {
    format!("{}:{}", a.0.min(b.0), a.0.max(b.0))
}

pub(crate) async fn direct_between<C: GenericClient>(
    c: &C,
    a: UserId,
    b: UserId,
) -> Result<Option<ConversationRecord>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE direct_key = $1");
    opt(c, &sql, &[&direct_key(a, b)])
        .await?
        .map(|row| conversation_from_row(&row, 0))
        .transpose()
}

pub(crate) async fn conversation<C: GenericClient>(
    c: &C,
    id: ConversationId,
) -> Result<Option<ConversationRecord>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
    opt(c, &sql, &[&id.0])
        .await?
        .map(|row| conversation_from_row(&row, 0))
        .transpose()
}

/// Adds members that are not members yet and returns those added, in input order, updating
/// the member count in the same transaction.
async fn insert_members<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    users: &[(UserId, Role)],
    now: i64,
) -> Result<Vec<UserId>> {
    let mut added = Vec::new();
    for &(user, role) in users {
        // Members start with their markers at the current end: earlier history is not unread.
        let inserted = exec(
            c,
            "INSERT INTO members \
             (conversation_id, user_id, role, joined_at, delivered_seq, read_seq, read_count) \
             SELECT id, $2, $3, $4, last_seq, last_seq, message_count FROM conversations \
             WHERE id = $1 ON CONFLICT (conversation_id, user_id) DO NOTHING",
            &[&conversation.0, &user.0, &role_to_sql(role), &now],
        )
        .await?;
        if inserted > 0 {
            added.push(user);
        }
    }
    if !added.is_empty() {
        add_member_count(c, conversation, added.len() as i64).await?;
    }
    Ok(added)
}

async fn add_member_count<C: GenericClient>(c: &C, id: ConversationId, delta: i64) -> Result<()> {
    exec(
        c,
        "UPDATE conversations SET member_count = member_count + $2 WHERE id = $1",
        &[&id.0, &delta],
    )
    .await
    .map(drop)
}

pub(crate) async fn get_or_create_direct<C: GenericClient>(
    c: &C,
    a: UserId,
    b: UserId,
    now: i64,
) -> Result<(ConversationRecord, bool)> {
    let key = direct_key(a, b);
    // ON CONFLICT DO NOTHING: when another node creates the same pair at the same moment, this
    // statement waits for it and then finds the row instead of failing.
    let inserted = opt(
        c,
        "INSERT INTO conversations (kind, title, created_at, last_activity, direct_key) \
         VALUES ('direct', '', $1, $1, $2) ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        &[&now, &key],
    )
    .await?;
    let Some(row) = inserted else {
        let existing = direct_between(c, a, b)
            .await?
            .ok_or_else(|| bad("a direct conversation vanished while being created"))?;
        return Ok((existing, false));
    };
    let conversation = ConversationRecord {
        id: ConversationId(row.try_get(0)?),
        kind: ConversationKind::Direct,
        title: String::new(),
        created_at: now,
        last_seq: 0,
    };
    let mut members = vec![(a, Role::Member)];
    if b != a {
        members.push((b, Role::Member));
    }
    insert_members(c, conversation.id, &members, now).await?;
    Ok((conversation, true))
}

pub(crate) async fn create_group<C: GenericClient>(
    c: &C,
    owner: UserId,
    title: &str,
    members: &[UserId],
    now: i64,
) -> Result<ConversationRecord> {
    let row = opt(
        c,
        "INSERT INTO conversations (kind, title, created_at, last_activity) \
         VALUES ($1, $2, $3, $3) RETURNING id",
        &[&kind_to_sql(ConversationKind::Group), &title, &now],
    )
    .await?
    .ok_or_else(|| bad("INSERT ... RETURNING returned no row"))?;
    let conversation = ConversationRecord {
        id: ConversationId(row.try_get(0)?),
        kind: ConversationKind::Group,
        title: title.to_owned(),
        created_at: now,
        last_seq: 0,
    };
    let all_members: Vec<(UserId, Role)> = std::iter::once((owner, Role::Owner))
        .chain(members.iter().map(|&user| (user, Role::Member)))
        .collect();
    insert_members(c, conversation.id, &all_members, now).await?;
    Ok(conversation)
}

pub(crate) async fn add_members<C: GenericClient>(
    c: &C,
    conversation_id: ConversationId,
    users: &[UserId],
    now: i64,
) -> Result<Vec<UserId>> {
    if conversation(c, conversation_id).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let users: Vec<(UserId, Role)> = users.iter().map(|&user| (user, Role::Member)).collect();
    insert_members(c, conversation_id, &users, now).await
}

pub(crate) async fn remove_member<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    user: UserId,
) -> Result<bool> {
    let removed = exec(
        c,
        "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2",
        &[&conversation.0, &user.0],
    )
    .await?;
    if removed == 0 {
        return Ok(false);
    }
    add_member_count(c, conversation, -1).await?;
    Ok(true)
}

const MEMBER_SELECT: &str = "SELECT m.conversation_id, m.user_id, u.username, m.role, \
     m.joined_at, m.delivered_seq, m.read_seq, m.muted_until \
     FROM members m JOIN users u ON u.id = m.user_id ";

pub(crate) async fn member<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    user: UserId,
) -> Result<Option<MemberRecord>> {
    let sql = format!("{MEMBER_SELECT}WHERE m.conversation_id = $1 AND m.user_id = $2");
    opt(c, &sql, &[&conversation.0, &user.0])
        .await?
        .map(|row| member_from_row(&row, 0, 7))
        .transpose()
}

pub(crate) async fn members<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
) -> Result<Vec<MemberRecord>> {
    let sql = format!("{MEMBER_SELECT}WHERE m.conversation_id = $1 ORDER BY m.user_id");
    all(c, &sql, &[&conversation.0])
        .await?
        .iter()
        .map(|row| member_from_row(row, 0, 7))
        .collect()
}

const USER_CONVERSATION_SELECT: &str = "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, \
     m.conversation_id, m.user_id, u.username, m.role, m.joined_at, \
     m.delivered_seq, m.read_seq, \
     c.member_count, p.user_id, pu.username, p.delivered_seq, p.read_seq, \
     m.muted_until, c.message_count, m.read_count, c.last_message_seq, \
     m.notify, m.pinned_at, m.archived, m.marked_unread, \
     (SELECT count(*) FROM mentions x WHERE x.conversation_id = m.conversation_id \
         AND x.user_id IN (m.user_id, 0) AND x.seq > m.read_seq) \
     FROM members m \
     JOIN conversations c ON c.id = m.conversation_id \
     JOIN users u ON u.id = m.user_id \
     LEFT JOIN members p ON c.kind = 'direct' \
         AND p.conversation_id = c.id AND p.user_id <> m.user_id \
     LEFT JOIN users pu ON pu.id = p.user_id ";

pub(crate) fn notify_from_sql(value: &str) -> NotifyLevel {
    match value {
        "mentions" => NotifyLevel::Mentions,
        "none" => NotifyLevel::None,
        _ => NotifyLevel::All,
    }
}

/// Unread is the conversation's count of countable messages minus the count at the member's
/// read marker, exact for the reasons given in the SQLite backend.
fn user_conversation_from_row(row: &Row) -> Result<UserConversation> {
    let conversation = conversation_from_row(row, 0)?;
    let me = member_from_row(row, 5, 17)?;
    let message_count: i64 = row.try_get(18)?;
    let read_count: i64 = row.try_get(19)?;
    let unread = message_count.saturating_sub(read_count).max(0) as u64;
    let settings = ConversationSettings {
        notify: notify_from_sql(row.try_get(21)?),
        pinned_at: row.try_get(22)?,
        archived: row.try_get(23)?,
        marked_unread: row.try_get(24)?,
    };
    let peer = match row.try_get::<_, Option<i64>>(13)? {
        Some(id) => Some(Peer {
            user_id: UserId(id),
            username: row.try_get(14)?,
            delivered_seq: seq_from_sql(row.try_get(15)?),
            read_seq: seq_from_sql(row.try_get(16)?),
        }),
        None => None,
    };
    Ok(UserConversation {
        conversation,
        me,
        unread,
        mentions: row.try_get::<_, i64>(25)?.max(0) as u64,
        settings,
        last_message_seq: seq_from_sql(row.try_get(20)?),
        member_count: u32_from_sql(row.try_get(12)?),
        peer,
    })
}

pub(crate) async fn conversations_of<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<UserConversation>> {
    let sql = format!(
        "{USER_CONVERSATION_SELECT}WHERE m.user_id = $1 ORDER BY c.last_activity DESC, c.id DESC"
    );
    all(c, &sql, &[&user.0])
        .await?
        .iter()
        .map(user_conversation_from_row)
        .collect()
}

pub(crate) async fn user_conversation<C: GenericClient>(
    c: &C,
    user: UserId,
    conversation: ConversationId,
) -> Result<Option<UserConversation>> {
    let sql = format!("{USER_CONVERSATION_SELECT}WHERE m.conversation_id = $2 AND m.user_id = $1");
    opt(c, &sql, &[&user.0, &conversation.0])
        .await?
        .as_ref()
        .map(user_conversation_from_row)
        .transpose()
}

pub(crate) async fn direct_conversations_of<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<ConversationId>> {
    all(
        c,
        "SELECT c.id FROM members m JOIN conversations c ON c.id = m.conversation_id \
         WHERE m.user_id = $1 AND c.kind = 'direct' ORDER BY c.id",
        &[&user.0],
    )
    .await?
    .iter()
    .map(|row| Ok(ConversationId(row.try_get(0)?)))
    .collect()
}

pub(crate) async fn co_members<C: GenericClient>(c: &C, user: UserId) -> Result<Vec<UserId>> {
    all(
        c,
        "SELECT DISTINCT o.user_id FROM members m \
         JOIN members o ON o.conversation_id = m.conversation_id \
         WHERE m.user_id = $1 AND o.user_id <> $1 ORDER BY o.user_id",
        &[&user.0],
    )
    .await?
    .iter()
    .map(|row| Ok(UserId(row.try_get(0)?)))
    .collect()
}

// --- Messages --------------------------------------------------------------------------------

/// A message to append with its body already serialized (outside the transaction).
pub(crate) struct PreparedMessage {
    pub(crate) message: NewMessage,
    pub(crate) body_json: String,
}

impl PreparedMessage {
    pub(crate) fn new(message: NewMessage) -> std::result::Result<Self, StoreError> {
        let body_json = serde_json::to_string(&message.body)
            .map_err(|e| StoreError::Backend(format!("message body does not serialize: {e}")))?;
        Ok(PreparedMessage { message, body_json })
    }
}

/// Appends a batch in the caller's transaction. The conversations it touches are locked first,
/// in id order: concurrent batches (from other nodes) wait for each other's commit rather than
/// deadlock, sequences follow commit order, and the idempotency lookup below sees a copy that
/// another node committed while this batch waited.
pub(crate) async fn append_messages<C: GenericClient>(
    c: &C,
    batch: &[PreparedMessage],
) -> Result<Vec<std::result::Result<Appended, StoreError>>> {
    let mut conversations: Vec<i64> = batch.iter().map(|m| m.message.conversation_id.0).collect();
    conversations.sort_unstable();
    conversations.dedup();
    exec(
        c,
        "SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&conversations],
    )
    .await?;
    let find = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3"
        ))
        .await?;
    let mut results = Vec::with_capacity(batch.len());
    for prepared in batch {
        let message = &prepared.message;
        let conversation = message.conversation_id.0;
        let sender = message.sender_id.0;
        if let Some(row) = c
            .query_opt(&find, &[&conversation, &sender, &message.client_msg_id])
            .await?
        {
            results.push(Ok(Appended {
                message: message_from_row(&row)?,
                duplicate: true,
            }));
            continue;
        }
        // An item with an effect gets a savepoint, so when its target is refused it leaves no
        // trace while the rest of the batch commits.
        let savepoint = message.body.target().is_some();
        if savepoint {
            c.batch_execute("SAVEPOINT item").await?;
        }
        match crate::rich::append_one(c, prepared).await {
            Ok(appended) => {
                if savepoint {
                    c.batch_execute("RELEASE SAVEPOINT item").await?;
                }
                results.push(Ok(appended));
            }
            Err(Fail::Store(refusal @ (StoreError::NotFound | StoreError::Conflict(_)))) => {
                if savepoint {
                    c.batch_execute("ROLLBACK TO SAVEPOINT item; RELEASE SAVEPOINT item")
                        .await?;
                }
                results.push(Err(refusal));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(results)
}

pub(crate) async fn messages_after<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    after: Seq,
    limit: u32,
) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    );
    all(
        c,
        &sql,
        &[&conversation.0, &seq_to_sql(after), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(message_from_row)
    .collect()
}

pub(crate) async fn messages_before<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    before: Option<Seq>,
    limit: u32,
) -> Result<Vec<Message>> {
    let before = before.map_or(i64::MAX, seq_to_sql);
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2 \
         ORDER BY seq DESC LIMIT $3"
    );
    let mut messages = all(c, &sql, &[&conversation.0, &before, &i64::from(limit)])
        .await?
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>>>()?;
    messages.reverse();
    Ok(messages)
}

// --- Groups ----------------------------------------------------------------------------------

fn group_from_row(row: &Row) -> Result<GroupRecord> {
    let permissions = match row.try_get::<_, Option<&str>>(9)? {
        None => GroupPermissions::default(),
        Some(json) => {
            serde_json::from_str(json).map_err(|e| bad(format!("bad group permissions: {e}")))?
        }
    };
    Ok(GroupRecord {
        conversation: conversation_from_row(row, 0)?,
        description: row.try_get(5)?,
        avatar: row.try_get(6)?,
        announcement: row.try_get(7)?,
        join_approval: row.try_get(8)?,
        permissions,
        member_count: u32_from_sql(row.try_get(10)?),
    })
}

const GROUP_SELECT: &str = "SELECT id, kind, title, created_at, last_seq, description, avatar, \
     announcement, join_approval, permissions, member_count FROM conversations \
     WHERE id = $1 AND kind = 'group' AND dissolved_at IS NULL";

pub(crate) async fn group<C: GenericClient>(
    c: &C,
    id: ConversationId,
) -> Result<Option<GroupRecord>> {
    opt(c, GROUP_SELECT, &[&id.0])
        .await?
        .as_ref()
        .map(group_from_row)
        .transpose()
}

async fn require_member<C: GenericClient>(c: &C, id: ConversationId, user: UserId) -> Result<()> {
    match member(c, id, user).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound.into()),
    }
}

async fn refuse_banned<C: GenericClient>(c: &C, id: ConversationId, user: UserId) -> Result<()> {
    if is_banned(c, id, user).await? {
        return Err(StoreError::Conflict("banned").into());
    }
    Ok(())
}

async fn set_role<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
    role: Role,
) -> Result<u64> {
    exec(
        c,
        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        &[&id.0, &user.0, &role_to_sql(role)],
    )
    .await
}

async fn delete_join_request_row<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<u64> {
    exec(
        c,
        "DELETE FROM group_join_requests WHERE conversation_id = $1 AND user_id = $2",
        &[&id.0, &user.0],
    )
    .await
}

async fn delete_invitation_row<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<u64> {
    exec(
        c,
        "DELETE FROM group_invitations WHERE conversation_id = $1 AND user_id = $2",
        &[&id.0, &user.0],
    )
    .await
}

/// Applies one group change in the caller's transaction; returns who joined and who left.
async fn apply_group_change<C: GenericClient>(
    c: &C,
    id: ConversationId,
    change: &GroupChange,
    now: i64,
) -> Result<(Vec<UserId>, Vec<UserId>)> {
    let none = || (Vec::new(), Vec::new());
    Ok(match change {
        GroupChange::AddMembers { users } => {
            let users: Vec<(UserId, Role)> = users.iter().map(|&u| (u, Role::Member)).collect();
            (insert_members(c, id, &users, now).await?, Vec::new())
        }
        GroupChange::RemoveMember { user } => {
            if !remove_member(c, id, *user).await? {
                return Err(StoreError::NotFound.into());
            }
            (Vec::new(), vec![*user])
        }
        GroupChange::Ban { user, by, reason } => {
            exec(
                c,
                "INSERT INTO group_bans (conversation_id, user_id, banned_by, created_at, reason) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (conversation_id, user_id) DO UPDATE \
                 SET banned_by = excluded.banned_by, created_at = excluded.created_at, \
                 reason = excluded.reason",
                &[&id.0, &user.0, &by.0, &now, reason],
            )
            .await?;
            delete_join_request_row(c, id, *user).await?;
            delete_invitation_row(c, id, *user).await?;
            let removed = if remove_member(c, id, *user).await? {
                vec![*user]
            } else {
                Vec::new()
            };
            (Vec::new(), removed)
        }
        GroupChange::Unban { user } => {
            let removed = exec(
                c,
                "DELETE FROM group_bans WHERE conversation_id = $1 AND user_id = $2",
                &[&id.0, &user.0],
            )
            .await?;
            if removed == 0 {
                return Err(StoreError::NotFound.into());
            }
            none()
        }
        GroupChange::Mute { user, until } => {
            let changed = exec(
                c,
                "UPDATE members SET muted_until = $3 WHERE conversation_id = $1 AND user_id = $2",
                &[&id.0, &user.0, until],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound.into());
            }
            none()
        }
        GroupChange::SetRole { user, role } => {
            if *role == Role::Owner {
                return Err(StoreError::Conflict("role").into());
            }
            if set_role(c, id, *user, *role).await? == 0 {
                return Err(StoreError::NotFound.into());
            }
            none()
        }
        GroupChange::TransferOwnership { from, to } => {
            require_member(c, id, *from).await?;
            if set_role(c, id, *to, Role::Owner).await? == 0 {
                return Err(StoreError::NotFound.into());
            }
            set_role(c, id, *from, Role::Admin).await?;
            none()
        }
        GroupChange::UpdateInfo {
            title,
            description,
            avatar,
            announcement,
            join_approval,
        } => {
            exec(
                c,
                "UPDATE conversations SET title = coalesce($2, title), \
                 description = coalesce($3, description), avatar = coalesce($4, avatar), \
                 announcement = coalesce($5, announcement), \
                 join_approval = coalesce($6, join_approval) WHERE id = $1",
                &[
                    &id.0,
                    title,
                    description,
                    avatar,
                    announcement,
                    join_approval,
                ],
            )
            .await?;
            none()
        }
        GroupChange::SetPermissions(permissions) => {
            let json = serde_json::to_string(permissions)
                .map_err(|e| bad(format!("encoding permissions: {e}")))?;
            exec(
                c,
                "UPDATE conversations SET permissions = $2 WHERE id = $1",
                &[&id.0, &json],
            )
            .await?;
            none()
        }
        GroupChange::DeleteMessage { seq } => {
            let changed = exec(
                c,
                "UPDATE messages SET kind = 'deleted', body = $3, search_terms = NULL \
                 WHERE conversation_id = $1 AND seq = $2 AND kind <> 'system'",
                &[&id.0, &seq_to_sql(*seq), &tombstone()?],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound.into());
            }
            none()
        }
        GroupChange::Dissolve => {
            let removed: Vec<UserId> = all(
                c,
                "DELETE FROM members WHERE conversation_id = $1 RETURNING user_id",
                &[&id.0],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0).map(UserId))
            .collect::<std::result::Result<_, _>>()?;
            exec(
                c,
                "UPDATE conversations SET dissolved_at = $2, member_count = 0 WHERE id = $1",
                &[&id.0, &now],
            )
            .await?;
            exec(
                c,
                "UPDATE group_invite_links SET revoked_at = $2 \
                 WHERE conversation_id = $1 AND revoked_at IS NULL",
                &[&id.0, &now],
            )
            .await?;
            exec(
                c,
                "DELETE FROM group_join_requests WHERE conversation_id = $1",
                &[&id.0],
            )
            .await?;
            exec(
                c,
                "DELETE FROM group_invitations WHERE conversation_id = $1",
                &[&id.0],
            )
            .await?;
            (Vec::new(), removed)
        }
        GroupChange::JoinByLink { user, link_id } => {
            refuse_banned(c, id, *user).await?;
            let used = exec(
                c,
                "UPDATE group_invite_links SET uses = uses + 1 \
                 WHERE id = $1 AND conversation_id = $2 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $3) \
                 AND (max_uses IS NULL OR uses < max_uses)",
                &[link_id, &id.0, &now],
            )
            .await?;
            if used == 0 {
                return Err(StoreError::NotFound.into());
            }
            (
                insert_members(c, id, &[(*user, Role::Member)], now).await?,
                Vec::new(),
            )
        }
        GroupChange::AcceptInvitation { user } => {
            refuse_banned(c, id, *user).await?;
            if delete_invitation_row(c, id, *user).await? == 0 {
                return Err(StoreError::NotFound.into());
            }
            (
                insert_members(c, id, &[(*user, Role::Member)], now).await?,
                Vec::new(),
            )
        }
        GroupChange::Notice => none(),
        GroupChange::ApproveJoinRequest { user } => {
            refuse_banned(c, id, *user).await?;
            if delete_join_request_row(c, id, *user).await? == 0 {
                return Err(StoreError::NotFound.into());
            }
            (
                insert_members(c, id, &[(*user, Role::Member)], now).await?,
                Vec::new(),
            )
        }
    })
}

/// Applies a group change and appends its system message in the caller's transaction. The
/// conversation row is locked first, so changes to one group from several nodes run one after
/// the other, each seeing the state the previous one left.
pub(crate) async fn change_group<C: GenericClient>(
    c: &C,
    change: &GroupChange,
    event: &PreparedMessage,
    audit: Option<&NewAudit>,
) -> Result<GroupChanged> {
    let id = event.message.conversation_id;
    let locked = opt(
        c,
        "SELECT kind, dissolved_at FROM conversations WHERE id = $1 FOR UPDATE",
        &[&id.0],
    )
    .await?;
    let Some(row) = locked else {
        return Err(StoreError::NotFound.into());
    };
    let is_live_group =
        row.try_get::<_, &str>(0)? == "group" && row.try_get::<_, Option<i64>>(1)?.is_none();
    // Moderators delete messages in groups; server administrators may in any conversation.
    if !matches!(change, GroupChange::DeleteMessage { .. }) && !is_live_group {
        return Err(StoreError::NotFound.into());
    }
    let now = event.message.ts;
    let (added, removed) = apply_group_change(c, id, change, now).await?;
    let appended = append_messages(c, std::slice::from_ref(event))
        .await?
        .pop()
        .ok_or_else(|| bad("append returned no result"))??;
    if appended.duplicate {
        return Err(StoreError::Conflict("client_msg_id").into());
    }
    // The entry joins the change's transaction: both commit or neither does.
    if let Some(entry) = audit {
        insert_audit(c, entry).await?;
    }
    Ok(GroupChanged {
        event: appended.message,
        added,
        removed,
    })
}

pub(crate) async fn is_banned<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<bool> {
    Ok(opt(
        c,
        "SELECT 1 FROM group_bans WHERE conversation_id = $1 AND user_id = $2",
        &[&id.0, &user.0],
    )
    .await?
    .is_some())
}

pub(crate) async fn group_bans<C: GenericClient>(
    c: &C,
    id: ConversationId,
) -> Result<Vec<BanRecord>> {
    all(
        c,
        "SELECT b.user_id, u.username, b.banned_by, b.created_at, b.reason \
         FROM group_bans b JOIN users u ON u.id = b.user_id \
         WHERE b.conversation_id = $1 ORDER BY b.user_id",
        &[&id.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(BanRecord {
            user_id: UserId(row.try_get(0)?),
            username: row.try_get(1)?,
            banned_by: UserId(row.try_get(2)?),
            since: row.try_get(3)?,
            reason: row.try_get(4)?,
        })
    })
    .collect()
}

const LINK_COLUMNS: &str =
    "id, conversation_id, created_by, created_at, expires_at, max_uses, uses, revoked_at";

fn link_from_row(row: &Row) -> Result<InviteLinkRecord> {
    Ok(InviteLinkRecord {
        id: row.try_get(0)?,
        conversation_id: ConversationId(row.try_get(1)?),
        created_by: UserId(row.try_get(2)?),
        created_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        max_uses: row.try_get::<_, Option<i64>>(5)?.map(u32_from_sql),
        uses: u32_from_sql(row.try_get(6)?),
        revoked: row.try_get::<_, Option<i64>>(7)?.is_some(),
    })
}

pub(crate) async fn create_invite_link<C: GenericClient>(
    c: &C,
    link: &NewInviteLink,
) -> Result<InviteLinkRecord> {
    if group(c, link.conversation_id).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let max_uses = link.max_uses.map(i64::from);
    let row = opt(
        c,
        "INSERT INTO group_invite_links \
         (conversation_id, code_hash, created_by, created_at, expires_at, max_uses) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            &link.conversation_id.0,
            &&link.code_hash[..],
            &link.created_by.0,
            &link.created_at,
            &link.expires_at,
            &max_uses,
        ],
    )
    .await?
    .ok_or_else(|| bad("INSERT ... RETURNING returned no row"))?;
    Ok(InviteLinkRecord {
        id: row.try_get(0)?,
        conversation_id: link.conversation_id,
        created_by: link.created_by,
        created_at: link.created_at,
        expires_at: link.expires_at,
        max_uses: link.max_uses,
        uses: 0,
        revoked: false,
    })
}

pub(crate) async fn invite_links<C: GenericClient>(
    c: &C,
    id: ConversationId,
) -> Result<Vec<InviteLinkRecord>> {
    let sql = format!(
        "SELECT {LINK_COLUMNS} FROM group_invite_links \
         WHERE conversation_id = $1 AND revoked_at IS NULL ORDER BY id DESC"
    );
    all(c, &sql, &[&id.0])
        .await?
        .iter()
        .map(link_from_row)
        .collect()
}

pub(crate) async fn invite_link_by_code<C: GenericClient>(
    c: &C,
    code_hash: [u8; 32],
) -> Result<Option<InviteLinkRecord>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM group_invite_links WHERE code_hash = $1");
    opt(c, &sql, &[&&code_hash[..]])
        .await?
        .as_ref()
        .map(link_from_row)
        .transpose()
}

pub(crate) async fn revoke_invite_link<C: GenericClient>(
    c: &C,
    id: ConversationId,
    link_id: i64,
    now: i64,
) -> Result<bool> {
    Ok(exec(
        c,
        "UPDATE group_invite_links SET revoked_at = $3 \
         WHERE id = $2 AND conversation_id = $1 AND revoked_at IS NULL",
        &[&id.0, &link_id, &now],
    )
    .await?
        > 0)
}

pub(crate) async fn create_join_request<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
    message: &str,
    now: i64,
) -> Result<bool> {
    if group(c, id).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    Ok(exec(
        c,
        "INSERT INTO group_join_requests (conversation_id, user_id, message, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, user_id) DO NOTHING",
        &[&id.0, &user.0, &message, &now],
    )
    .await?
        > 0)
}

pub(crate) async fn join_requests<C: GenericClient>(
    c: &C,
    id: ConversationId,
) -> Result<Vec<JoinRequestRecord>> {
    all(
        c,
        "SELECT r.conversation_id, r.user_id, u.username, r.message, r.created_at \
         FROM group_join_requests r JOIN users u ON u.id = r.user_id \
         WHERE r.conversation_id = $1 ORDER BY r.created_at, r.user_id",
        &[&id.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(JoinRequestRecord {
            conversation_id: ConversationId(row.try_get(0)?),
            user_id: UserId(row.try_get(1)?),
            username: row.try_get(2)?,
            message: row.try_get(3)?,
            created_at: row.try_get(4)?,
        })
    })
    .collect()
}

pub(crate) async fn delete_join_request<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<bool> {
    Ok(delete_join_request_row(c, id, user).await? > 0)
}

pub(crate) async fn create_group_invitation<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
    inviter: UserId,
    now: i64,
) -> Result<bool> {
    if group(c, id).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    Ok(exec(
        c,
        "INSERT INTO group_invitations (conversation_id, user_id, inviter_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, user_id) DO NOTHING",
        &[&id.0, &user.0, &inviter.0, &now],
    )
    .await?
        > 0)
}

pub(crate) async fn group_invitations_of<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<GroupInvitationRecord>> {
    all(
        c,
        "SELECT i.conversation_id, c.title, i.inviter_id, u.username, i.created_at \
         FROM group_invitations i JOIN conversations c ON c.id = i.conversation_id \
         JOIN users u ON u.id = i.inviter_id \
         WHERE i.user_id = $1 ORDER BY i.created_at DESC, i.conversation_id DESC",
        &[&user.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(GroupInvitationRecord {
            conversation_id: ConversationId(row.try_get(0)?),
            title: row.try_get(1)?,
            inviter_id: UserId(row.try_get(2)?),
            inviter_username: row.try_get(3)?,
            created_at: row.try_get(4)?,
        })
    })
    .collect()
}

pub(crate) async fn delete_group_invitation<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<bool> {
    Ok(delete_invitation_row(c, id, user).await? > 0)
}

// --- Search ----------------------------------------------------------------------------------

/// Claims up to `limit` messages nobody has indexed yet (rows another node's indexer holds are
/// skipped, not waited for), stores their lexemes, and marks them indexed.
pub(crate) async fn index_pending<C: GenericClient>(c: &C, limit: u32) -> Result<u32> {
    let rows = all(
        c,
        "SELECT id, kind, body FROM messages WHERE NOT indexed ORDER BY id LIMIT $1 \
         FOR UPDATE SKIP LOCKED",
        &[&i64::from(limit)],
    )
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut terms: Vec<Option<String>> = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<_, i64>(0)?);
        let kind: &str = row.try_get(1)?;
        let body: &str = row.try_get(2)?;
        // Bodies were written by this backend; one that no longer parses is skipped rather
        // than stopping the indexer for every message after it.
        let terms_of = match serde_json::from_str::<MessageBody>(body) {
            Ok(body) if SEARCHABLE_KINDS.contains(&kind) => body
                .text()
                .map(|text| tidings_store::search::lexemes(text).join(" ")),
            _ => None,
        };
        terms.push(terms_of);
    }
    exec(
        c,
        "UPDATE messages m SET indexed = true, search_terms = CASE WHEN u.terms IS NULL THEN NULL \
         ELSE array_to_tsvector(string_to_array(u.terms, ' ')) END \
         FROM unnest($1::bigint[], $2::text[]) AS u(id, terms) WHERE m.id = u.id",
        &[&ids, &terms],
    )
    .await?;
    Ok(rows.len() as u32)
}

/// The kinds whose text is indexed (see [`MessageBody::text`]); the search filters on the same.
pub(crate) const SEARCHABLE_KINDS: &[&str] = &["text", "markdown", "location", "file"];

/// Rows read per round while confirming CJK hits, and the most rows one search reads.
const SEARCH_CHUNK: u32 = 200;
const SEARCH_MAX_ROWS: u32 = 5_000;

pub(crate) async fn search_messages<C: GenericClient>(
    c: &C,
    user: UserId,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>> {
    let Some(parsed) = tidings_store::search::parse_query(&query.text) else {
        return Ok(Vec::new());
    };
    let tsquery = parsed.tsquery();
    if tsquery.is_empty() {
        return Ok(Vec::new());
    }
    // Membership is checked per hit through the members primary key, so hits from other
    // conversations never leave the query.
    let stmt = c
        .prepare_cached(
            "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, \
             m.client_msg_id, m.ts, m.body, m.reply_to, m.thread_root, m.meta, \
             ts_rank(m.search_terms, q.q)::float8 AS rank \
             FROM (SELECT $1::text::tsquery AS q) q \
             JOIN messages m ON m.search_terms @@ q.q \
             JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = $2 \
             WHERE m.kind IN ('text', 'markdown', 'location', 'file') \
             AND ($3::bigint IS NULL OR m.conversation_id = $3) \
             AND ($4::bigint IS NULL OR m.sender_id = $4) \
             AND ($5::bigint IS NULL OR m.ts >= $5) AND ($6::bigint IS NULL OR m.ts < $6) \
             ORDER BY rank DESC, m.id DESC LIMIT $7 OFFSET $8",
        )
        .await?;
    let confirming = !parsed.cjk_phrases.is_empty();
    let (mut row_offset, chunk) = if confirming {
        (0, SEARCH_CHUNK)
    } else {
        (query.offset, query.limit)
    };
    let conversation = query.conversation.map(|c| c.0);
    let sender = query.sender.map(|s| s.0);
    let mut hits = Vec::new();
    let mut skipped = 0u32;
    let mut read = 0u32;
    loop {
        let rows = c
            .query(
                &stmt,
                &[
                    &tsquery,
                    &user.0,
                    &conversation,
                    &sender,
                    &query.since,
                    &query.until,
                    &i64::from(chunk),
                    &i64::from(row_offset),
                ],
            )
            .await?;
        let exhausted = (rows.len() as u32) < chunk;
        read += rows.len() as u32;
        row_offset += rows.len() as u32;
        for row in &rows {
            let message = message_from_row(row)?;
            let rank: f64 = row.try_get(11)?;
            if confirming {
                let Some(text) = message.body.text() else {
                    continue;
                };
                if !parsed.confirms(text) {
                    continue;
                }
                if skipped < query.offset {
                    skipped += 1;
                    continue;
                }
            }
            hits.push(SearchHit {
                message,
                score: rank,
            });
            if hits.len() as u32 >= query.limit {
                return Ok(hits);
            }
        }
        if !confirming || exhausted || read >= SEARCH_MAX_ROWS {
            return Ok(hits);
        }
    }
}

// --- Markers and presence --------------------------------------------------------------------

pub(crate) async fn advance_marker<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    user: UserId,
    kind: ReceiptKind,
    seq: Seq,
) -> Result<Option<Seq>> {
    // Lock the member row: two receipts for one member on different nodes apply in turn.
    let markers = opt(
        c,
        "SELECT c.last_seq, m.delivered_seq, m.read_seq \
         FROM members m JOIN conversations c ON c.id = m.conversation_id \
         WHERE m.conversation_id = $1 AND m.user_id = $2 FOR UPDATE OF m",
        &[&conversation.0, &user.0],
    )
    .await?;
    let Some(row) = markers else {
        return Err(StoreError::NotFound.into());
    };
    let last_seq: i64 = row.try_get(0)?;
    let delivered: i64 = row.try_get(1)?;
    let read: i64 = row.try_get(2)?;
    let target = seq_to_sql(seq).min(last_seq);
    let (current, sql) = match kind {
        ReceiptKind::Delivered => (
            delivered,
            "UPDATE members SET delivered_seq = $3 WHERE conversation_id = $1 AND user_id = $2",
        ),
        ReceiptKind::Read => (
            read,
            "UPDATE members SET read_seq = $3, delivered_seq = GREATEST(delivered_seq, $3), \
             read_count = GREATEST(read_count, $4), marked_unread = false \
             WHERE conversation_id = $1 AND user_id = $2",
        ),
    };
    if target <= current {
        return Ok(None);
    }
    match kind {
        ReceiptKind::Delivered => exec(c, sql, &[&conversation.0, &user.0, &target]).await?,
        ReceiptKind::Read => {
            // The ordinal at the marker: of the message there, or (when retention removed it)
            // of the newest earlier one that is left.
            let ordinal: i64 = opt(
                c,
                "SELECT ordinal FROM messages WHERE conversation_id = $1 AND seq <= $2 \
                 ORDER BY seq DESC LIMIT 1",
                &[&conversation.0, &target],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .unwrap_or(0);
            exec(c, sql, &[&conversation.0, &user.0, &target, &ordinal]).await?
        }
    };
    Ok(Some(seq_from_sql(target)))
}

pub(crate) async fn set_last_seen<C: GenericClient>(c: &C, user: UserId, ts: i64) -> Result<()> {
    exec(
        c,
        "INSERT INTO last_seen (user_id, ts) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET ts = excluded.ts",
        &[&user.0, &ts],
    )
    .await
    .map(drop)
}

pub(crate) async fn last_seen<C: GenericClient>(
    c: &C,
    users: &[UserId],
) -> Result<Vec<(UserId, i64)>> {
    all(
        c,
        "SELECT user_id, ts FROM last_seen WHERE user_id = ANY($1) ORDER BY user_id",
        &[&ids(users)],
    )
    .await?
    .iter()
    .map(|row| Ok((UserId(row.try_get(0)?), row.try_get(1)?)))
    .collect()
}

// --- Audit log -------------------------------------------------------------------------------

const AUDIT_SELECT: &str = "SELECT id, ts, actor, kind, outcome, target_user, conversation, \
     address, detail, prev_hash, hash FROM audit_log ";

fn outcome_to_sql(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Done => "done",
        AuditOutcome::Refused => "refused",
    }
}

fn audit_from_row(row: &Row) -> Result<AuditRecord> {
    let outcome = match row.try_get::<_, &str>(4)? {
        "done" => AuditOutcome::Done,
        "refused" => AuditOutcome::Refused,
        other => return Err(bad(format!("unknown outcome {other:?}"))),
    };
    let detail: &str = row.try_get(8)?;
    let detail = serde_json::from_str(detail).map_err(|e| bad(format!("bad audit detail: {e}")))?;
    Ok(AuditRecord {
        id: row.try_get(0)?,
        entry: NewAudit {
            ts: row.try_get(1)?,
            actor: row.try_get::<_, Option<i64>>(2)?.map(UserId),
            kind: row.try_get(3)?,
            outcome,
            target_user: row.try_get::<_, Option<i64>>(5)?.map(UserId),
            conversation: row.try_get::<_, Option<i64>>(6)?.map(ConversationId),
            address: row.try_get(7)?,
            detail,
        },
        prev_hash: hash_from_row(row, 9)?,
        hash: hash_from_row(row, 10)?,
    })
}

/// Appends `entry` in the caller's transaction and returns its id. The advisory lock, held to
/// the end of the transaction, makes every node wait its turn for the chain's head: ids stay
/// gap-free and each entry hashes the one committed before it.
pub(crate) async fn insert_audit<C: GenericClient>(c: &C, entry: &NewAudit) -> Result<i64> {
    advisory_lock(c, lock::AUDIT).await?;
    let head =
        match opt(
            c,
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        {
            Some(row) => Some(row),
            None => opt(
                c,
                "SELECT last_id, last_hash FROM audit_checkpoints ORDER BY last_id DESC LIMIT 1",
                &[],
            )
            .await?,
        };
    let (prev_id, prev_hash) = match head {
        Some(row) => (row.try_get::<_, i64>(0)?, hash_from_row(&row, 1)?),
        None => (0, GENESIS_HASH),
    };
    let id = prev_id + 1;
    let hash = audit::entry_hash(&prev_hash, id, entry);
    exec(
        c,
        "INSERT INTO audit_log (id, ts, actor, kind, outcome, target_user, conversation, \
         address, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &id,
            &entry.ts,
            &entry.actor.map(|u| u.0),
            &entry.kind,
            &outcome_to_sql(entry.outcome),
            &entry.target_user.map(|u| u.0),
            &entry.conversation.map(|c| c.0),
            &entry.address,
            &entry.detail.to_string(),
            &&prev_hash[..],
            &&hash[..],
        ],
    )
    .await?;
    Ok(id)
}

pub(crate) async fn audit_entries<C: GenericClient>(
    c: &C,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRecord>> {
    let after = after.unwrap_or(0);
    let sql = format!(
        "{AUDIT_SELECT}WHERE id > $1 AND ($2::bigint IS NULL OR actor = $2) \
         AND ($3::bigint IS NULL OR target_user = $3) AND ($4::text IS NULL OR kind = $4) \
         AND ($5::bigint IS NULL OR ts >= $5) AND ($6::bigint IS NULL OR ts < $6) \
         ORDER BY id LIMIT $7"
    );
    all(
        c,
        &sql,
        &[
            &after,
            &filter.actor.map(|u| u.0),
            &filter.target_user.map(|u| u.0),
            &filter.kind,
            &filter.since,
            &filter.until,
            &i64::from(limit),
        ],
    )
    .await?
    .iter()
    .map(audit_from_row)
    .collect()
}

pub(crate) async fn prune_audit<C: GenericClient>(
    c: &C,
    before: i64,
    now: i64,
    sign: CheckpointSigner,
) -> Result<Option<AuditCheckpoint>> {
    advisory_lock(c, lock::AUDIT).await?;
    let last: Option<i64> = opt(c, "SELECT max(id) FROM audit_log WHERE ts < $1", &[&before])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?
        .flatten();
    let Some(last_id) = last else {
        return Ok(None);
    };
    let row = opt(c, "SELECT hash FROM audit_log WHERE id = $1", &[&last_id])
        .await?
        .ok_or_else(|| bad("the prune point vanished"))?;
    let last_hash = hash_from_row(&row, 0)?;
    let pruned = exec(c, "DELETE FROM audit_log WHERE id <= $1", &[&last_id]).await?;
    let message = audit::checkpoint_message(last_id, &last_hash, pruned, now);
    let (key_id, signature) = sign(&message);
    exec(
        c,
        "INSERT INTO audit_checkpoints (last_id, last_hash, pruned, created_at, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &last_id,
            &&last_hash[..],
            &(pruned as i64),
            &now,
            &key_id,
            &signature,
        ],
    )
    .await?;
    Ok(Some(AuditCheckpoint {
        last_id,
        last_hash,
        pruned,
        created_at: now,
        key_id,
        signature,
    }))
}

pub(crate) async fn audit_checkpoints<C: GenericClient>(c: &C) -> Result<Vec<AuditCheckpoint>> {
    all(
        c,
        "SELECT last_id, last_hash, pruned, created_at, key_id, signature \
         FROM audit_checkpoints ORDER BY last_id",
        &[],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(AuditCheckpoint {
            last_id: row.try_get(0)?,
            last_hash: hash_from_row(row, 1)?,
            pruned: row.try_get::<_, i64>(2)? as u64,
            created_at: row.try_get(3)?,
            key_id: row.try_get(4)?,
            signature: row.try_get(5)?,
        })
    })
    .collect()
}

// --- Uploads and files -----------------------------------------------------------------------

const UPLOAD_COLUMNS: &str = "id, owner_id, length, \"offset\", kind, parts, metadata, name, \
     created_at, expires_at, file_id";

fn upload_from_row(row: &Row) -> Result<UploadRecord> {
    let kind = match row.try_get::<_, &str>(4)? {
        "single" => UploadKind::Single,
        "partial" => UploadKind::Partial,
        "final" => UploadKind::Final,
        other => return Err(bad(format!("unknown upload kind {other}"))),
    };
    let parts: &str = row.try_get(5)?;
    let parts: Vec<String> = serde_json::from_str(parts).map_err(|e| bad(e.to_string()))?;
    Ok(UploadRecord {
        id: row.try_get(0)?,
        owner: UserId(row.try_get(1)?),
        length: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
        offset: u64::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
        kind,
        parts,
        metadata: row.try_get(6)?,
        name: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        file_id: row.try_get(10)?,
    })
}

pub(crate) fn file_from_row(row: &Row) -> Result<FileRecord> {
    Ok(FileRecord {
        id: row.try_get(0)?,
        owner: UserId(row.try_get(1)?),
        sha256: hash_from_row(row, 2)?,
        size: u64::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
        content_type: row.try_get(4)?,
        name: row.try_get(5)?,
        created_at: row.try_get(6)?,
        width: row.try_get::<_, Option<i64>>(7)?.map(u32_from_sql),
        height: row.try_get::<_, Option<i64>>(8)?.map(u32_from_sql),
    })
}

pub(crate) async fn storage_usage<C: GenericClient>(c: &C, user: UserId) -> Result<u64> {
    let row = opt(
        c,
        "SELECT (SELECT coalesce(sum(length), 0) FROM uploads \
                 WHERE owner_id = $1 AND file_id IS NULL)::bigint, \
                (SELECT coalesce(sum(size), 0) FROM files WHERE owner_id = $1)::bigint",
        &[&user.0],
    )
    .await?
    .ok_or_else(|| bad("usage returned no row"))?;
    let uploads: i64 = row.try_get(0)?;
    let files: i64 = row.try_get(1)?;
    Ok(u64::try_from(uploads.saturating_add(files)).unwrap_or(0))
}

pub(crate) async fn create_upload<C: GenericClient>(
    c: &C,
    upload: &UploadRecord,
    quota: u64,
) -> Result<bool> {
    // One creation per owner at a time, across nodes: the check and the insert must not
    // interleave with another's.
    advisory_lock(c, lock::quota(upload.owner.0)).await?;
    let used = storage_usage(c, upload.owner).await?;
    if used.saturating_add(upload.length) > quota {
        return Ok(false);
    }
    let parts = serde_json::to_string(&upload.parts).map_err(|e| bad(e.to_string()))?;
    let kind = match upload.kind {
        UploadKind::Single => "single",
        UploadKind::Partial => "partial",
        UploadKind::Final => "final",
    };
    exec(
        c,
        "INSERT INTO uploads (id, owner_id, length, \"offset\", kind, parts, metadata, name, \
         created_at, expires_at, file_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &upload.id,
            &upload.owner.0,
            &size_to_sql(upload.length),
            &size_to_sql(upload.offset),
            &kind,
            &parts,
            &upload.metadata,
            &upload.name,
            &upload.created_at,
            &upload.expires_at,
            &upload.file_id,
        ],
    )
    .await?;
    Ok(true)
}

pub(crate) async fn upload<C: GenericClient>(c: &C, id: &str) -> Result<Option<UploadRecord>> {
    let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1");
    opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(upload_from_row)
        .transpose()
}

pub(crate) async fn advance_upload<C: GenericClient>(
    c: &C,
    id: &str,
    from: u64,
    to: u64,
) -> Result<bool> {
    exec(
        c,
        "UPDATE uploads SET \"offset\" = $3 \
         WHERE id = $1 AND \"offset\" = $2 AND file_id IS NULL AND $3 <= length",
        &[&id, &size_to_sql(from), &size_to_sql(to)],
    )
    .await
    .map(|n| n == 1)
}

pub(crate) async fn delete_upload<C: GenericClient>(c: &C, id: &str) -> Result<bool> {
    exec(c, "DELETE FROM uploads WHERE id = $1", &[&id])
        .await
        .map(|n| n == 1)
}

pub(crate) async fn expired_uploads<C: GenericClient>(
    c: &C,
    now: i64,
    limit: u32,
) -> Result<Vec<UploadRecord>> {
    let sql = format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2"
    );
    all(c, &sql, &[&now, &i64::from(limit)])
        .await?
        .iter()
        .map(upload_from_row)
        .collect()
}

pub(crate) async fn complete_upload<C: GenericClient>(
    c: &C,
    upload_id: &str,
    consumed: &[String],
    file: &FileRecord,
) -> Result<bool> {
    let completed = exec(
        c,
        "UPDATE uploads SET \"offset\" = length, file_id = $2 WHERE id = $1 AND file_id IS NULL",
        &[&upload_id, &file.id],
    )
    .await?;
    if completed != 1 {
        return Err(StoreError::NotFound.into());
    }
    for part in consumed {
        exec(c, "DELETE FROM uploads WHERE id = $1", &[part]).await?;
    }
    let refs: i64 = opt(
        c,
        "INSERT INTO blobs (sha256, size, refs) VALUES ($1, $2, 1) \
         ON CONFLICT (sha256) DO UPDATE SET refs = blobs.refs + 1 RETURNING refs",
        &[&&file.sha256[..], &size_to_sql(file.size)],
    )
    .await?
    .map(|row| row.try_get(0))
    .transpose()?
    .unwrap_or(0);
    exec(
        c,
        "INSERT INTO files (id, owner_id, sha256, size, content_type, name, created_at, \
         width, height) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &file.id,
            &file.owner.0,
            &&file.sha256[..],
            &size_to_sql(file.size),
            &file.content_type,
            &file.name,
            &file.created_at,
            &file.width.map(i64::from),
            &file.height.map(i64::from),
        ],
    )
    .await?;
    Ok(refs == 1)
}

pub(crate) const FILE_COLUMNS: &str =
    "id, owner_id, sha256, size, content_type, name, created_at, width, height";

pub(crate) async fn file<C: GenericClient>(c: &C, id: &str) -> Result<Option<FileRecord>> {
    let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1");
    opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(file_from_row)
        .transpose()
}

pub(crate) async fn delete_file<C: GenericClient>(
    c: &C,
    id: &str,
) -> Result<Option<(FileRecord, bool)>> {
    let sql = format!("DELETE FROM files WHERE id = $1 RETURNING {FILE_COLUMNS}");
    let Some(record) = opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(file_from_row)
        .transpose()?
    else {
        return Ok(None);
    };
    let refs: i64 = opt(
        c,
        "UPDATE blobs SET refs = refs - 1 WHERE sha256 = $1 RETURNING refs",
        &[&&record.sha256[..]],
    )
    .await?
    .map(|row| row.try_get(0))
    .transpose()?
    .unwrap_or(0);
    let last = refs <= 0;
    if last {
        exec(
            c,
            "DELETE FROM blobs WHERE sha256 = $1 AND refs <= 0",
            &[&&record.sha256[..]],
        )
        .await?;
    }
    Ok(Some((record, last)))
}

pub(crate) async fn share_file<C: GenericClient>(
    c: &C,
    file: &str,
    conversation: ConversationId,
) -> Result<bool> {
    exec(
        c,
        "INSERT INTO file_shares (file_id, conversation_id) \
         SELECT id, $2 FROM files WHERE id = $1 \
         ON CONFLICT (file_id, conversation_id) DO NOTHING",
        &[&file, &conversation.0],
    )
    .await?;
    Ok(opt(c, "SELECT 1 FROM files WHERE id = $1", &[&file])
        .await?
        .is_some())
}

pub(crate) async fn can_read_file<C: GenericClient>(
    c: &C,
    file: &str,
    user: UserId,
) -> Result<bool> {
    Ok(opt(
        c,
        "SELECT 1 FROM files WHERE id = $1 AND owner_id = $2 \
         UNION ALL \
         SELECT 1 FROM file_shares s JOIN members m \
         ON m.conversation_id = s.conversation_id AND m.user_id = $2 \
         WHERE s.file_id = $1 \
         UNION ALL SELECT 1 FROM profiles WHERE avatar = $1 \
         UNION ALL SELECT 1 FROM conversations WHERE avatar = $1 LIMIT 1",
        &[&file, &user.0],
    )
    .await?
    .is_some())
}

// --- Calls -----------------------------------------------------------------------------------

const CALL_COLUMNS: &str = "id, conversation_id, caller_id, caller_device, callee_id, \
     callee_device, video, state, created_at, ring_deadline, answered_at";

fn call_state_to_sql(state: CallState) -> &'static str {
    match state {
        CallState::Ringing => "ringing",
        CallState::Active => "active",
    }
}

fn call_from_row(row: &Row) -> Result<CallRecord> {
    let state = match row.try_get::<_, &str>(7)? {
        "ringing" => CallState::Ringing,
        "active" => CallState::Active,
        other => return Err(bad(format!("unknown call state {other}"))),
    };
    Ok(CallRecord {
        id: row.try_get(0)?,
        conversation_id: ConversationId(row.try_get(1)?),
        caller_id: UserId(row.try_get(2)?),
        caller_device: DeviceId(row.try_get(3)?),
        callee_id: UserId(row.try_get(4)?),
        callee_device: row.try_get::<_, Option<i64>>(5)?.map(DeviceId),
        video: row.try_get(6)?,
        state,
        created_at: row.try_get(8)?,
        ring_deadline: row.try_get(9)?,
        answered_at: row.try_get(10)?,
    })
}

/// Nodes may create calls for the same users at once: each takes both users' advisory locks
/// (in id order, so two creations never wait for each other crosswise) before it checks that
/// neither is in a call, so the check and the insert act as one.
pub(crate) async fn create_call<C: GenericClient>(c: &C, call: &CallRecord) -> Result<bool> {
    let (a, b) = (
        call.caller_id.0.min(call.callee_id.0),
        call.caller_id.0.max(call.callee_id.0),
    );
    advisory_lock(c, lock::in_call(a)).await?;
    if b != a {
        advisory_lock(c, lock::in_call(b)).await?;
    }
    let busy = opt(
        c,
        "SELECT 1 FROM calls WHERE caller_id = ANY($1) OR callee_id = ANY($1) LIMIT 1",
        &[&vec![a, b]],
    )
    .await?
    .is_some();
    if busy {
        return Ok(false);
    }
    exec(
        c,
        "INSERT INTO calls (id, conversation_id, caller_id, caller_device, callee_id, \
         callee_device, video, state, created_at, ring_deadline, answered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &call.id,
            &call.conversation_id.0,
            &call.caller_id.0,
            &call.caller_device.0,
            &call.callee_id.0,
            &call.callee_device.map(|d| d.0),
            &call.video,
            &call_state_to_sql(call.state),
            &call.created_at,
            &call.ring_deadline,
            &call.answered_at,
        ],
    )
    .await?;
    Ok(true)
}

pub(crate) async fn call<C: GenericClient>(c: &C, id: &str) -> Result<Option<CallRecord>> {
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1");
    opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(call_from_row)
        .transpose()
}

pub(crate) async fn accept_call<C: GenericClient>(
    c: &C,
    id: &str,
    device: DeviceId,
    now: i64,
) -> Result<Option<CallRecord>> {
    let sql = format!(
        "UPDATE calls SET state = 'active', callee_device = $2, answered_at = $3 \
         WHERE id = $1 AND state = 'ringing' RETURNING {CALL_COLUMNS}"
    );
    opt(c, &sql, &[&id, &device.0, &now])
        .await?
        .as_ref()
        .map(call_from_row)
        .transpose()
}

pub(crate) async fn finish_call<C: GenericClient>(
    c: &C,
    id: &str,
    state: CallState,
) -> Result<Option<CallRecord>> {
    let sql = format!("DELETE FROM calls WHERE id = $1 AND state = $2 RETURNING {CALL_COLUMNS}");
    opt(c, &sql, &[&id, &call_state_to_sql(state)])
        .await?
        .as_ref()
        .map(call_from_row)
        .transpose()
}

pub(crate) async fn calls_ringing_until<C: GenericClient>(
    c: &C,
    now: i64,
    limit: u32,
) -> Result<Vec<CallRecord>> {
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE state = 'ringing' AND ring_deadline <= $1 \
         ORDER BY ring_deadline LIMIT $2"
    );
    all(c, &sql, &[&now, &i64::from(limit)])
        .await?
        .iter()
        .map(call_from_row)
        .collect()
}
