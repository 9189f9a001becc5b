//! Every SQL statement of the backend, and the blocking functions that run them.
//!
//! The functions here take a plain `&Connection` and know nothing about threads: `lib.rs`
//! decides whether they run on the writer thread (anything that writes) or on a reader. Each
//! statement is prepared once per connection and then reused (`prepare_cached`).
//!
//! **Invariant:** every statement is an index lookup or a range scan over an index; the test at
//! the bottom asks SQLite for each statement's plan and fails on a full table scan.

use crate::error::backend;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tidings_proto::contacts::{DirectMessages, GroupAdds, PrivacySettings, Visibility};
use tidings_proto::rest::{
    ConversationKind, ConversationSettings, GroupPermissions, NotifyLevel, Role,
    UpdateConversationSettingsRequest,
};
use tidings_proto::ws::ReceiptKind;
use tidings_proto::{
    ConversationId, DeviceId, Message, MessageBody, MessageId, Seq, ThreadSummary, UserId,
};
use tidings_store::audit::{self, GENESIS_HASH};
use tidings_store::meta::{MessageMeta, REACTION_USERS_SHOWN};
use tidings_store::{
    Appended, AuditCheckpoint, AuditFilter, AuditOutcome, AuditRecord, BanRecord, BlockRecord,
    CheckpointSigner, ConversationRecord, DeletedAccount, DeviceRecord, FriendRecord,
    FriendRequestRecord, FriendRequestSent, GroupChange, GroupChanged, GroupInvitationRecord,
    GroupRecord, InviteLinkRecord, JoinRequestRecord, MemberRecord, NewAudit, NewInvite,
    NewInviteLink, NewRefreshToken, Peer, ProfileRecord, RotateOutcome, SearchHit, SearchQuery,
    StoreError, StoreResult, UserConversation, UserRecord,
};
use tidings_store::{CallRecord, CallState, FileRecord, UploadKind, UploadRecord};
use tidings_store::{EditRecord, Prune, Retention, ThreadRecord};

/// The columns `user_conversation_from_row` reads: the conversation, the member, and for
/// direct conversations the peer with its markers. Shared by the list and the single lookup.
macro_rules! user_conversation_select {
    () => {
        "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, \
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
         LEFT JOIN users pu ON pu.id = p.user_id "
    };
}

/// The columns `friend_request_from_row` reads: a request with both users' names.
macro_rules! friend_request_select {
    () => {
        "SELECT r.from_id, fu.username, r.to_id, tu.username, r.note, r.created_at \
         FROM friend_requests r \
         JOIN users fu ON fu.id = r.from_id \
         JOIN users tu ON tu.id = r.to_id "
    };
}

/// The columns `audit_from_row` reads.
macro_rules! audit_select {
    () => {
        "SELECT id, ts, actor, kind, outcome, target_user, conversation, address, detail, \
         prev_hash, hash FROM audit_log "
    };
}

/// Defines one constant per statement and the list of all of them, for the plan test.
macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    // --- Accounts
    INSERT_USER = "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) \
                   RETURNING id";
    USER_BY_NAME = "SELECT id, username, password_hash, created_at, disabled, is_admin, deleted_at FROM users \
                    WHERE username = ?1";
    USER_BY_ID = "SELECT id, username, password_hash, created_at, disabled, is_admin, deleted_at FROM users \
                  WHERE id = ?1";
    USERS_BY_IDS = "SELECT id, username, password_hash, created_at, disabled, is_admin, deleted_at FROM users \
                    WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id";
    LIST_USERS = "SELECT id, username, password_hash, created_at, disabled, is_admin, deleted_at FROM users \
                  WHERE id > ?1 ORDER BY id LIMIT ?2";
    SET_PASSWORD = "UPDATE users SET password_hash = ?2 WHERE id = ?1";
    FIND_USERS = "SELECT id, username, password_hash, created_at, disabled, is_admin, deleted_at FROM users \
                  WHERE username >= ?1 AND username < ?2 AND id > ?3 ORDER BY id LIMIT ?4";
    USER_IS_ACTIVE = "SELECT 1 FROM users WHERE id = ?1 AND disabled = 0 AND deleted_at IS NULL";
    SET_SUSPENDED = "UPDATE users SET disabled = ?2 WHERE id = ?1 AND deleted_at IS NULL";
    SET_ADMIN = "UPDATE users SET is_admin = ?2 WHERE id = ?1 AND deleted_at IS NULL";
    MARK_DELETED = "UPDATE users SET deleted_at = ?2, disabled = 1, is_admin = 0 \
                    WHERE id = ?1 AND deleted_at IS NULL";
    MEMBERSHIPS_OF = "SELECT conversation_id FROM members WHERE user_id = ?1 ORDER BY conversation_id";
    DELETE_PROFILE = "DELETE FROM profiles WHERE user_id = ?1";
    DELETE_LAST_SEEN = "DELETE FROM last_seen WHERE user_id = ?1";
    DELETE_EXTERNAL_IDENTITIES = "DELETE FROM external_identities WHERE user_id = ?1";
    TOMBSTONE_MESSAGES = "UPDATE messages SET kind = 'deleted', body = ?3 \
                          WHERE conversation_id = ?1 AND sender_id = ?2 AND kind <> 'deleted'";
    INSERT_INVITE = "INSERT INTO invites (code_hash, created_at, expires_at, uses_left) \
                     VALUES (?1, ?2, ?3, ?4)";
    USE_INVITE = "UPDATE invites SET uses_left = uses_left - 1 \
                  WHERE code_hash = ?1 AND expires_at > ?2 AND uses_left > 0";

    // --- Devices and tokens
    INSERT_DEVICE = "INSERT INTO devices (user_id, name, created_at, last_active_at) \
                     VALUES (?1, ?2, ?3, ?3) RETURNING id";
    DEVICE = "SELECT id, user_id, name, created_at, last_active_at, revoked_at FROM devices \
              WHERE id = ?1";
    DEVICES_OF = "SELECT id, user_id, name, created_at, last_active_at, revoked_at FROM devices \
                  WHERE user_id = ?1 AND revoked_at IS NULL ORDER BY created_at, id";
    TOUCH_DEVICE = "UPDATE devices SET last_active_at = max(last_active_at, ?2) WHERE id = ?1";
    REVOKE_DEVICE = "UPDATE devices SET revoked_at = ?3 \
                     WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL";
    REVOKE_OTHER_DEVICES = "UPDATE devices SET revoked_at = ?3 \
                            WHERE user_id = ?1 AND revoked_at IS NULL AND id IS NOT ?2 \
                            RETURNING id";
    DELETE_DEVICE_TOKENS = "DELETE FROM refresh_tokens WHERE device_id = ?1";
    INSERT_TOKEN = "INSERT INTO refresh_tokens \
                    (token_hash, device_id, user_id, created_at, expires_at) \
                    VALUES (?1, ?2, ?3, ?4, ?5)";
    TOKEN_FOR_ROTATION = "SELECT t.device_id, t.user_id, t.expires_at, t.used_at, d.revoked_at \
                          FROM refresh_tokens t JOIN devices d ON d.id = t.device_id \
                          WHERE t.token_hash = ?1";
    USE_TOKEN = "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1";
    TOKEN_DEVICE = "SELECT device_id FROM refresh_tokens WHERE token_hash = ?1";
    PRUNE_TOKENS = "DELETE FROM refresh_tokens WHERE expires_at <= ?1";

    // --- Profiles
    PROFILE = "SELECT u.id, u.username, coalesce(p.display_name, ''), coalesce(p.status_text, ''), \
               coalesce(p.avatar, '') FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE u.id = ?1";
    UPSERT_PROFILE = "INSERT INTO profiles (user_id, display_name, status_text, updated_at) \
                      VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id) DO UPDATE SET \
                      display_name = excluded.display_name, status_text = excluded.status_text, \
                      updated_at = excluded.updated_at";
    SET_AVATAR = "INSERT INTO profiles (user_id, display_name, status_text, updated_at, avatar) \
                  VALUES (?1, '', '', ?3, ?2) ON CONFLICT (user_id) DO UPDATE SET \
                  avatar = excluded.avatar, updated_at = excluded.updated_at";
    // Prefix searches as index range scans: [prefix, prefix + U+10FFFF).
    SEARCH_BY_USERNAME = "SELECT u.id, u.username, coalesce(p.display_name, ''), \
                          coalesce(p.status_text, ''), coalesce(p.avatar, '') FROM users u \
                          LEFT JOIN profiles p ON p.user_id = u.id \
                          WHERE u.username >= ?1 AND u.username < ?2 AND u.disabled = 0 \
                          ORDER BY u.username LIMIT ?3";
    SEARCH_BY_DISPLAY_NAME = "SELECT u.id, u.username, p.display_name, p.status_text, p.avatar \
                              FROM profiles p JOIN users u ON u.id = p.user_id \
                              WHERE p.display_name >= ?1 COLLATE NOCASE \
                              AND p.display_name < ?2 COLLATE NOCASE AND u.disabled = 0 \
                              LIMIT ?3";

    // --- Block list
    INSERT_BLOCK = "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3) \
                    ON CONFLICT (blocker_id, blocked_id) DO NOTHING";
    DELETE_BLOCK = "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2";
    BLOCKED_BY = "SELECT b.blocked_id, u.username, b.created_at FROM blocks b \
                  JOIN users u ON u.id = b.blocked_id WHERE b.blocker_id = ?1 ORDER BY b.blocked_id";
    IS_BLOCKED = "SELECT 1 FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2";
    BLOCKERS_OF = "SELECT blocker_id FROM blocks WHERE blocked_id = ?1 ORDER BY blocker_id";

    // --- Friends and privacy
    INSERT_FRIEND_REQUEST = "INSERT INTO friend_requests (from_id, to_id, note, created_at) \
                             VALUES (?1, ?2, ?3, ?4)";
    DELETE_FRIEND_REQUEST = "DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2";
    FRIEND_REQUEST = concat!(
        friend_request_select!(),
        "WHERE r.from_id = ?1 AND r.to_id = ?2"
    );
    FRIEND_REQUESTS_TO = concat!(
        friend_request_select!(),
        "WHERE r.to_id = ?1 ORDER BY r.created_at, r.from_id"
    );
    FRIEND_REQUESTS_FROM = concat!(
        friend_request_select!(),
        "WHERE r.from_id = ?1 ORDER BY r.created_at, r.to_id"
    );
    // Friendships are stored once, smaller id first; callers order the pair.
    INSERT_FRIENDSHIP = "INSERT INTO friendships (low_id, high_id, created_at) VALUES (?1, ?2, ?3)";
    DELETE_FRIENDSHIP = "DELETE FROM friendships WHERE low_id = ?1 AND high_id = ?2";
    IS_FRIEND = "SELECT 1 FROM friendships WHERE low_id = ?1 AND high_id = ?2";
    FRIENDS_ABOVE = "SELECT f.high_id, u.username, f.created_at FROM friendships f \
                     JOIN users u ON u.id = f.high_id WHERE f.low_id = ?1";
    FRIENDS_BELOW = "SELECT f.low_id, u.username, f.created_at FROM friendships f \
                     JOIN users u ON u.id = f.low_id WHERE f.high_id = ?1";
    BUMP_CONTACTS_VERSION = "INSERT INTO contacts_versions (user_id, version) VALUES (?1, 1) \
                             ON CONFLICT (user_id) DO UPDATE SET version = version + 1";
    CONTACTS_VERSION = "SELECT version FROM contacts_versions WHERE user_id = ?1";
    PRIVACY_OF = "SELECT u.id, p.direct_messages, p.presence, p.group_adds FROM users u \
                  LEFT JOIN privacy_settings p ON p.user_id = u.id \
                  WHERE u.id IN (SELECT value FROM json_each(?1)) ORDER BY u.id";
    UPSERT_PRIVACY = "INSERT INTO privacy_settings \
                      (user_id, direct_messages, presence, group_adds, updated_at) \
                      VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id) DO UPDATE SET \
                      direct_messages = excluded.direct_messages, presence = excluded.presence, \
                      group_adds = excluded.group_adds, updated_at = excluded.updated_at";

    // --- Conversations
    CONVERSATION = "SELECT id, kind, title, created_at, last_seq FROM conversations WHERE id = ?1";
    DIRECT_BY_KEY = "SELECT id, kind, title, created_at, last_seq FROM conversations \
                     WHERE direct_key = ?1";
    INSERT_CONVERSATION = "INSERT INTO conversations \
                           (kind, title, created_at, last_activity, direct_key) \
                           VALUES (?1, ?2, ?3, ?3, ?4) RETURNING id";
    // New members start with their markers at the current end of the conversation: history from
    // before they joined is not unread for them. This also keeps the unread invariant below.
    INSERT_MEMBER = "INSERT INTO members \
                     (conversation_id, user_id, role, joined_at, delivered_seq, read_seq, \
                     read_count) \
                     SELECT id, ?2, ?3, ?4, last_seq, last_seq, message_count FROM conversations \
                     WHERE id = ?1 \
                     ON CONFLICT (conversation_id, user_id) DO NOTHING";
    DELETE_MEMBER = "DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2";
    ADD_MEMBER_COUNT = "UPDATE conversations SET member_count = member_count + ?2 WHERE id = ?1";
    MEMBER = "SELECT m.conversation_id, m.user_id, u.username, m.role, m.joined_at, \
              m.delivered_seq, m.read_seq, m.muted_until \
              FROM members m JOIN users u ON u.id = m.user_id \
              WHERE m.conversation_id = ?1 AND m.user_id = ?2";
    MEMBERS = "SELECT m.conversation_id, m.user_id, u.username, m.role, m.joined_at, \
               m.delivered_seq, m.read_seq, m.muted_until \
               FROM members m JOIN users u ON u.id = m.user_id \
               WHERE m.conversation_id = ?1 ORDER BY m.user_id";
    // The unread count is `last_seq - read_seq`, which is exactly "messages from others after the
    // read marker" because no own message can lie after one's read marker: appending moves the
    // sender's read marker to the new message (which is then the last one), markers never move
    // back, and members join with their markers at the then-last sequence. That makes the count
    // O(1) per conversation, and the whole list O(conversations of the user): one range scan of
    // members_by_user, then primary-key lookups.
    CONVERSATIONS_OF = concat!(
        user_conversation_select!(),
        "WHERE m.user_id = ?1 ORDER BY c.last_activity DESC, c.id DESC"
    );
    USER_CONVERSATION = concat!(
        user_conversation_select!(),
        "WHERE m.conversation_id = ?2 AND m.user_id = ?1"
    );
    DIRECT_CONVERSATIONS_OF = "SELECT c.id FROM members m \
                               JOIN conversations c ON c.id = m.conversation_id \
                               WHERE m.user_id = ?1 AND c.kind = 'direct' ORDER BY c.id";
    CO_MEMBERS = "SELECT DISTINCT o.user_id FROM members m \
                  JOIN members o ON o.conversation_id = m.conversation_id \
                  WHERE m.user_id = ?1 AND o.user_id <> ?1 ORDER BY o.user_id";

    // --- Messages (the hot path: four statements per appended message)
    MESSAGE_BY_CLIENT_ID = "SELECT id, conversation_id, seq, sender_id, sender_device_id, \
                            client_msg_id, ts, body, reply_to, thread_root, meta FROM messages \
                            WHERE conversation_id = ?1 AND sender_id = ?2 AND client_msg_id = ?3";
    // ?3 is 1 for a countable message, 0 for one that acts on another (which neither counts
    // as unread nor moves the conversation up the list). SET sees the old last_seq. No
    // RETURNING: SQLite runs RETURNING like a trigger, which makes the statement keep a
    // statement journal (a savepoint per message); reading the row back after is cheaper.
    NEXT_SEQ = "UPDATE conversations SET last_seq = last_seq + 1, \
                message_count = message_count + ?3, \
                last_message_seq = CASE WHEN ?3 = 1 THEN last_seq + 1 ELSE last_message_seq END, \
                last_activity = CASE WHEN ?3 = 1 THEN max(last_activity, ?2) \
                    ELSE last_activity END \
                WHERE id = ?1";
    SEQ_NOW = "SELECT last_seq, message_count FROM conversations WHERE id = ?1";
    INSERT_MESSAGE = "INSERT INTO messages (conversation_id, seq, sender_id, sender_device_id, \
                      client_msg_id, ts, kind, body, reply_to, thread_root, target, meta, \
                      ordinal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
    SENDER_MARKERS = "UPDATE members SET delivered_seq = max(delivered_seq, ?3), \
                      read_seq = max(read_seq, ?3), read_count = max(read_count, ?4), \
                      marked_unread = 0 WHERE conversation_id = ?1 AND user_id = ?2";
    TARGET_MESSAGE = "SELECT id, kind, body, sender_id, ts, meta FROM messages \
                      WHERE conversation_id = ?1 AND seq = ?2";
    SET_META = "UPDATE messages SET meta = ?3 WHERE conversation_id = ?1 AND seq = ?2";
    SET_BODY = "UPDATE messages SET body = ?3, meta = ?4 WHERE conversation_id = ?1 AND seq = ?2";
    RECALL_BODY = "UPDATE messages SET kind = 'deleted', body = ?3, meta = ?4 \
                   WHERE conversation_id = ?1 AND seq = ?2";
    // Edit events carry the new text, so a recall tombstones them as well.
    RECALL_EDITS = "UPDATE messages SET kind = 'deleted', body = ?3 \
                    WHERE conversation_id = ?1 AND target = ?2 AND kind = 'edit'";
    ORIGINAL_BODY = "SELECT body FROM messages WHERE conversation_id = ?1 AND seq = ?2";
    EDIT_VERSIONS = "SELECT ts, editor_id, body FROM message_edits \
                     WHERE conversation_id = ?1 AND seq = ?2 ORDER BY version";
    EDIT_COUNT = "SELECT count(*) FROM message_edits WHERE conversation_id = ?1 AND seq = ?2";
    INSERT_EDIT = "INSERT INTO message_edits (conversation_id, seq, version, ts, editor_id, body) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    DELETE_EDITS = "DELETE FROM message_edits WHERE conversation_id = ?1 AND seq = ?2";
    INSERT_REACTION = "INSERT INTO reactions (conversation_id, seq, key, user_id, ts) \
                       VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING";
    DELETE_REACTION = "DELETE FROM reactions \
                       WHERE conversation_id = ?1 AND seq = ?2 AND key = ?3 AND user_id = ?4";
    DELETE_REACTIONS = "DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2";
    REACTORS_OF_KEY = "SELECT user_id FROM reactions \
                       WHERE conversation_id = ?1 AND seq = ?2 AND key = ?3 LIMIT ?4";
    REACTIONS = "SELECT key, user_id FROM reactions WHERE conversation_id = ?1 AND seq = ?2 \
                 ORDER BY ts, key, user_id";
    INSERT_MENTION = "INSERT INTO mentions (conversation_id, user_id, seq) VALUES (?1, ?2, ?3) \
                      ON CONFLICT DO NOTHING";
    DELETE_MENTIONS = "DELETE FROM mentions WHERE conversation_id = ?1 AND seq = ?2 \
                       AND user_id IN (SELECT value FROM json_each(?3))";
    INSERT_PIN = "INSERT INTO pins (conversation_id, seq, pinned_at, pinned_by) \
                  VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";
    DELETE_PIN = "DELETE FROM pins WHERE conversation_id = ?1 AND seq = ?2";
    PINNED = "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, \
              m.client_msg_id, m.ts, m.body, m.reply_to, m.thread_root, m.meta \
              FROM pins p JOIN messages m ON m.conversation_id = p.conversation_id \
                  AND m.seq = p.seq \
              WHERE p.conversation_id = ?1 ORDER BY p.pinned_at DESC, p.seq DESC LIMIT ?2";
    THREAD = "SELECT id, conversation_id, seq, sender_id, sender_device_id, \
              client_msg_id, ts, body, reply_to, thread_root, meta FROM messages \
              WHERE conversation_id = ?1 AND thread_root = ?2 AND seq > ?3 \
              ORDER BY seq LIMIT ?4";
    REINDEX_MESSAGE = "INSERT INTO message_search (rowid, terms) \
                       SELECT ?1, ?2 WHERE ?1 <= \
                       (SELECT last_message_id FROM search_progress WHERE id = 1)";
    UNINDEX_BY_ID = "DELETE FROM message_search WHERE rowid = ?1";
    MESSAGE_EXISTS = "SELECT 1 FROM messages WHERE conversation_id = ?1 AND seq = ?2";
    HIDE_MESSAGE = "INSERT INTO hidden_messages (user_id, conversation_id, seq) \
                    VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
    HIDDEN_IN_RANGE = "SELECT seq FROM hidden_messages \
                       WHERE user_id = ?1 AND conversation_id = ?2 AND seq BETWEEN ?3 AND ?4 \
                       ORDER BY seq";
    MARK_THREAD_READ = "INSERT INTO thread_reads (conversation_id, root, user_id, read_seq) \
                        VALUES (?1, ?2, ?3, ?4) ON CONFLICT (conversation_id, user_id, root) \
                        DO UPDATE SET read_seq = max(read_seq, excluded.read_seq)";
    THREAD_ROOTS = "SELECT DISTINCT thread_root FROM messages \
                    WHERE conversation_id = ?1 AND thread_root IS NOT NULL";
    THREAD_READ = "SELECT read_seq FROM thread_reads \
                   WHERE conversation_id = ?1 AND user_id = ?2 AND root = ?3";
    THREAD_UNREAD = "SELECT count(*) FROM messages \
                     WHERE conversation_id = ?1 AND thread_root = ?2 AND seq > ?3 \
                     AND sender_id <> ?4";
    UPDATE_SETTINGS = "UPDATE members SET notify = coalesce(?3, notify), \
                       pinned_at = CASE WHEN ?4 IS NULL THEN pinned_at \
                           WHEN ?4 = 1 THEN coalesce(pinned_at, ?7) ELSE NULL END, \
                       archived = coalesce(?5, archived), \
                       marked_unread = coalesce(?6, marked_unread) \
                       WHERE conversation_id = ?1 AND user_id = ?2 \
                       RETURNING notify, pinned_at, archived, marked_unread";
    SET_RETENTION = "UPDATE conversations SET retention_ms = ?2, retention_keep = ?3 \
                     WHERE id = ?1";
    RETENTION = "SELECT retention_ms, retention_keep FROM conversations WHERE id = ?1";
    RETENTIONS = "SELECT id, retention_ms, retention_keep FROM conversations \
                  WHERE (retention_ms IS NOT NULL OR retention_keep IS NOT NULL) AND id > ?1 \
                  ORDER BY id LIMIT ?2";
    OLDEST_IN_CONVERSATION = "SELECT id, seq, ts FROM messages WHERE conversation_id = ?1 \
                              ORDER BY seq LIMIT ?2";
    // `id > 0` lets SQLite search the rowid range instead of reporting a scan.
    OLDEST_MESSAGES = "SELECT id, conversation_id, seq, ts FROM messages WHERE id > 0 \
                       ORDER BY id LIMIT ?1";
    NEWEST_MESSAGE_ID = "SELECT max(id) FROM messages";
    DELETE_MESSAGE_ROW = "DELETE FROM messages WHERE id = ?1";
    DELETE_MENTIONS_UPTO = "DELETE FROM mentions WHERE conversation_id = ?1 AND seq <= ?2";
    MESSAGES_AFTER = "SELECT id, conversation_id, seq, sender_id, sender_device_id, \
                      client_msg_id, ts, body, reply_to, thread_root, meta FROM messages \
                      WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
    MESSAGES_BEFORE = "SELECT id, conversation_id, seq, sender_id, sender_device_id, \
                       client_msg_id, ts, body, reply_to, thread_root, meta FROM messages \
                       WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3";

    // --- Markers and presence
    MARKERS = "SELECT c.last_seq, m.delivered_seq, m.read_seq \
               FROM members m JOIN conversations c ON c.id = m.conversation_id \
               WHERE m.conversation_id = ?1 AND m.user_id = ?2";
    SET_DELIVERED = "UPDATE members SET delivered_seq = ?3 \
                     WHERE conversation_id = ?1 AND user_id = ?2";
    SET_READ = "UPDATE members SET read_seq = ?3, delivered_seq = max(delivered_seq, ?3), \
                read_count = max(read_count, ?4), marked_unread = 0 \
                WHERE conversation_id = ?1 AND user_id = ?2";
    // The ordinal at a read marker: of the message there, or (when retention removed it) of
    // the newest earlier one that is left.
    ORDINAL_AT = "SELECT ordinal FROM messages WHERE conversation_id = ?1 AND seq <= ?2 \
                  ORDER BY seq DESC LIMIT 1";
    SET_LAST_SEEN = "INSERT INTO last_seen (user_id, ts) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET ts = excluded.ts";
    LAST_SEEN = "SELECT user_id, ts FROM last_seen \
                 WHERE user_id IN (SELECT value FROM json_each(?1)) ORDER BY user_id";
    PING = "SELECT 1";

    // --- Groups
    GROUP = "SELECT id, kind, title, created_at, last_seq, description, avatar, announcement, \
             join_approval, permissions, member_count FROM conversations \
             WHERE id = ?1 AND kind = 'group' AND dissolved_at IS NULL";
    UPDATE_GROUP_INFO = "UPDATE conversations SET title = coalesce(?2, title), \
                         description = coalesce(?3, description), avatar = coalesce(?4, avatar), \
                         announcement = coalesce(?5, announcement), \
                         join_approval = coalesce(?6, join_approval) WHERE id = ?1";
    SET_PERMISSIONS = "UPDATE conversations SET permissions = ?2 WHERE id = ?1";
    DISSOLVE_GROUP = "UPDATE conversations SET dissolved_at = ?2, member_count = 0 WHERE id = ?1";
    DELETE_ALL_MEMBERS = "DELETE FROM members WHERE conversation_id = ?1 RETURNING user_id";
    SET_ROLE = "UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND user_id = ?2";
    SET_MUTE = "UPDATE members SET muted_until = ?3 WHERE conversation_id = ?1 AND user_id = ?2";
    DELETE_MESSAGE_BODY = "UPDATE messages SET kind = 'deleted', body = ?3 \
                           WHERE conversation_id = ?1 AND seq = ?2 AND kind <> 'system'";
    UPSERT_BAN = "INSERT INTO group_bans (conversation_id, user_id, banned_by, created_at, reason) \
                  VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (conversation_id, user_id) DO UPDATE \
                  SET banned_by = excluded.banned_by, created_at = excluded.created_at, \
                  reason = excluded.reason";
    DELETE_BAN = "DELETE FROM group_bans WHERE conversation_id = ?1 AND user_id = ?2";
    IS_BANNED = "SELECT 1 FROM group_bans WHERE conversation_id = ?1 AND user_id = ?2";
    GROUP_BANS = "SELECT b.user_id, u.username, b.banned_by, b.created_at, b.reason \
                  FROM group_bans b JOIN users u ON u.id = b.user_id \
                  WHERE b.conversation_id = ?1 ORDER BY b.user_id";
    INSERT_LINK = "INSERT INTO group_invite_links \
                   (conversation_id, code_hash, created_by, created_at, expires_at, max_uses) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id";
    LINKS_OF = "SELECT id, conversation_id, created_by, created_at, expires_at, max_uses, uses, \
                revoked_at FROM group_invite_links \
                WHERE conversation_id = ?1 AND revoked_at IS NULL ORDER BY id DESC";
    LINK_BY_CODE = "SELECT id, conversation_id, created_by, created_at, expires_at, max_uses, \
                    uses, revoked_at FROM group_invite_links WHERE code_hash = ?1";
    REVOKE_LINK = "UPDATE group_invite_links SET revoked_at = ?3 \
                   WHERE id = ?2 AND conversation_id = ?1 AND revoked_at IS NULL";
    REVOKE_ALL_LINKS = "UPDATE group_invite_links SET revoked_at = ?2 \
                        WHERE conversation_id = ?1 AND revoked_at IS NULL";
    // Uses one use of a link only if it is still usable at ?3.
    USE_LINK = "UPDATE group_invite_links SET uses = uses + 1 \
                WHERE id = ?1 AND conversation_id = ?2 AND revoked_at IS NULL \
                AND (expires_at IS NULL OR expires_at > ?3) \
                AND (max_uses IS NULL OR uses < max_uses)";
    INSERT_JOIN_REQUEST = "INSERT INTO group_join_requests \
                           (conversation_id, user_id, message, created_at) VALUES (?1, ?2, ?3, ?4) \
                           ON CONFLICT (conversation_id, user_id) DO NOTHING";
    JOIN_REQUESTS = "SELECT r.conversation_id, r.user_id, u.username, r.message, r.created_at \
                     FROM group_join_requests r JOIN users u ON u.id = r.user_id \
                     WHERE r.conversation_id = ?1 ORDER BY r.created_at, r.user_id";
    DELETE_JOIN_REQUEST = "DELETE FROM group_join_requests \
                           WHERE conversation_id = ?1 AND user_id = ?2";
    DELETE_ALL_JOIN_REQUESTS = "DELETE FROM group_join_requests WHERE conversation_id = ?1";
    INSERT_INVITATION = "INSERT INTO group_invitations \
                         (conversation_id, user_id, inviter_id, created_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (conversation_id, user_id) DO NOTHING";
    INVITATIONS_OF = "SELECT i.conversation_id, c.title, i.inviter_id, u.username, i.created_at \
                      FROM group_invitations i JOIN conversations c ON c.id = i.conversation_id \
                      JOIN users u ON u.id = i.inviter_id \
                      WHERE i.user_id = ?1 ORDER BY i.created_at DESC, i.conversation_id DESC";
    DELETE_INVITATION = "DELETE FROM group_invitations WHERE conversation_id = ?1 AND user_id = ?2";
    DELETE_ALL_INVITATIONS = "DELETE FROM group_invitations WHERE conversation_id = ?1";

    // --- Search
    SEARCH_PROGRESS = "SELECT last_message_id FROM search_progress WHERE id = 1";
    SET_SEARCH_PROGRESS = "UPDATE search_progress SET last_message_id = ?1 WHERE id = 1";
    MESSAGES_TO_INDEX = "SELECT id, kind, body FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2";
    INDEX_MESSAGE = "INSERT INTO message_search (rowid, terms) VALUES (?1, ?2)";
    UNINDEX_MESSAGE = "DELETE FROM message_search WHERE rowid = \
                       (SELECT id FROM messages WHERE conversation_id = ?1 AND seq = ?2)";
    // Ranked by bm25 (lower is better in SQLite's convention); membership is checked per hit
    // through the members primary key, so hits from other conversations never leave the query.
    SEARCH = "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, \
              m.client_msg_id, m.ts, m.body, m.reply_to, m.thread_root, m.meta, s.rank \
              FROM message_search s \
              JOIN messages m ON m.id = s.rowid \
              JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ?2 \
              WHERE message_search MATCH ?1 \
              AND m.kind IN ('text', 'markdown', 'location', 'file') \
              AND (?3 IS NULL OR m.conversation_id = ?3) AND (?4 IS NULL OR m.sender_id = ?4) \
              AND (?5 IS NULL OR m.ts >= ?5) AND (?6 IS NULL OR m.ts < ?6) \
              ORDER BY s.rank LIMIT ?7 OFFSET ?8";
    // --- Audit log
    AUDIT_HEAD = "SELECT id, hash FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)";
    CHECKPOINT_HEAD = "SELECT last_id, last_hash FROM audit_checkpoints \
                       WHERE last_id = (SELECT max(last_id) FROM audit_checkpoints)";
    INSERT_AUDIT = "INSERT INTO audit_log (id, ts, actor, kind, outcome, target_user, \
                    conversation, address, detail, prev_hash, hash) \
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    AUDIT_BY_ACTOR = concat!(
        audit_select!(),
        "WHERE actor = ?1 AND id > ?2 AND (?3 IS NULL OR target_user = ?3) \
         AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR ts >= ?5) AND (?6 IS NULL OR ts < ?6) \
         ORDER BY id LIMIT ?7"
    );
    AUDIT_BY_TARGET = concat!(
        audit_select!(),
        "WHERE target_user = ?1 AND id > ?2 AND (?3 IS NULL OR actor = ?3) \
         AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR ts >= ?5) AND (?6 IS NULL OR ts < ?6) \
         ORDER BY id LIMIT ?7"
    );
    AUDIT_BY_KIND = concat!(
        audit_select!(),
        "WHERE kind = ?1 AND id > ?2 AND (?3 IS NULL OR actor = ?3) \
         AND (?4 IS NULL OR target_user = ?4) AND (?5 IS NULL OR ts >= ?5) \
         AND (?6 IS NULL OR ts < ?6) ORDER BY id LIMIT ?7"
    );
    AUDIT_BY_ID = concat!(
        audit_select!(),
        "WHERE id > ?1 AND (?2 IS NULL OR ts >= ?2) AND (?3 IS NULL OR ts < ?3) \
         ORDER BY id LIMIT ?4"
    );
    // Where a time range starts and where pruning stops, through audit_by_ts.
    AUDIT_FIRST_SINCE = "SELECT min(id) FROM audit_log WHERE ts >= ?1";
    AUDIT_LAST_BEFORE = "SELECT max(id) FROM audit_log WHERE ts < ?1";
    AUDIT_HASH = "SELECT hash FROM audit_log WHERE id = ?1";
    AUDIT_PRUNE = "DELETE FROM audit_log WHERE id <= ?1";
    INSERT_CHECKPOINT = "INSERT INTO audit_checkpoints \
                         (last_id, last_hash, pruned, created_at, key_id, signature) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    CHECKPOINTS = "SELECT last_id, last_hash, pruned, created_at, key_id, signature \
                   FROM audit_checkpoints WHERE last_id > ?1 ORDER BY last_id";
    // --- Uploads and files
    INSERT_UPLOAD = "INSERT INTO uploads (id, owner_id, length, offset, kind, parts, metadata, \
                     name, created_at, expires_at, file_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    UPLOAD = "SELECT id, owner_id, length, offset, kind, parts, metadata, name, created_at, \
              expires_at, file_id FROM uploads WHERE id = ?1";
    ADVANCE_UPLOAD = "UPDATE uploads SET offset = ?3 \
                      WHERE id = ?1 AND offset = ?2 AND file_id IS NULL AND ?3 <= length";
    DELETE_UPLOAD = "DELETE FROM uploads WHERE id = ?1";
    EXPIRED_UPLOADS = "SELECT id, owner_id, length, offset, kind, parts, metadata, name, \
                       created_at, expires_at, file_id FROM uploads \
                       WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2";
    UPLOAD_USAGE = "SELECT coalesce(sum(length), 0) FROM uploads \
                    WHERE owner_id = ?1 AND file_id IS NULL";
    FILE_USAGE = "SELECT coalesce(sum(size), 0) FROM files WHERE owner_id = ?1";
    COMPLETE_UPLOAD = "UPDATE uploads SET offset = length, file_id = ?2 \
                       WHERE id = ?1 AND file_id IS NULL";
    ADD_BLOB_REF = "INSERT INTO blobs (sha256, size, refs) VALUES (?1, ?2, 1) \
                    ON CONFLICT (sha256) DO UPDATE SET refs = refs + 1 RETURNING refs";
    DROP_BLOB_REF = "UPDATE blobs SET refs = refs - 1 WHERE sha256 = ?1 RETURNING refs";
    DELETE_BLOB = "DELETE FROM blobs WHERE sha256 = ?1 AND refs <= 0";
    INSERT_FILE = "INSERT INTO files (id, owner_id, sha256, size, content_type, name, created_at, \
                   width, height) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    FILE = "SELECT id, owner_id, sha256, size, content_type, name, created_at, width, height \
            FROM files WHERE id = ?1";
    DELETE_FILE = "DELETE FROM files WHERE id = ?1";
    SHARE_FILE = "INSERT INTO file_shares (file_id, conversation_id) \
                  SELECT id, ?2 FROM files WHERE id = ?1 \
                  ON CONFLICT (file_id, conversation_id) DO NOTHING";
    FILE_EXISTS = "SELECT 1 FROM files WHERE id = ?1";
    CAN_READ_FILE = "SELECT 1 FROM files WHERE id = ?1 AND owner_id = ?2 \
                     UNION ALL \
                     SELECT 1 FROM file_shares s JOIN members m \
                     ON m.conversation_id = s.conversation_id AND m.user_id = ?2 \
                     WHERE s.file_id = ?1 \
                     UNION ALL SELECT 1 FROM profiles WHERE avatar = ?1 \
                     UNION ALL SELECT 1 FROM conversations WHERE avatar = ?1 LIMIT 1";
    // --- Calls
    CALL_AS_CALLER = "SELECT 1 FROM calls WHERE caller_id = ?1 LIMIT 1";
    CALL_AS_CALLEE = "SELECT 1 FROM calls WHERE callee_id = ?1 LIMIT 1";
    INSERT_CALL = "INSERT INTO calls (id, conversation_id, caller_id, caller_device, callee_id, \
                   callee_device, video, state, created_at, ring_deadline, answered_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    CALL = "SELECT id, conversation_id, caller_id, caller_device, callee_id, callee_device, \
            video, state, created_at, ring_deadline, answered_at FROM calls WHERE id = ?1";
    ACCEPT_CALL = "UPDATE calls SET state = 'active', callee_device = ?2, answered_at = ?3 \
                   WHERE id = ?1 AND state = 'ringing' \
                   RETURNING id, conversation_id, caller_id, caller_device, callee_id, \
                   callee_device, video, state, created_at, ring_deadline, answered_at";
    FINISH_CALL = "DELETE FROM calls WHERE id = ?1 AND state = ?2 \
                   RETURNING id, conversation_id, caller_id, caller_device, callee_id, \
                   callee_device, video, state, created_at, ring_deadline, answered_at";
    CALLS_RINGING_UNTIL = "SELECT id, conversation_id, caller_id, caller_device, callee_id, \
                           callee_device, video, state, created_at, ring_deadline, answered_at \
                           FROM calls WHERE state = 'ringing' AND ring_deadline <= ?1 \
                           ORDER BY ring_deadline LIMIT ?2";
}

// --- Conversions -----------------------------------------------------------------------------

/// Sequences are `u64` in the API and `INTEGER` (i64) in SQLite. Stored values are never
/// negative; a bound larger than i64::MAX means "no bound" and is clamped.
fn seq_to_sql(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_from_sql(value: i64) -> Seq {
    Seq::try_from(value).unwrap_or(0)
}

fn bad_column(index: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, what.into())
}

fn kind_to_sql(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

fn kind_from_row(row: &Row<'_>, index: usize) -> rusqlite::Result<ConversationKind> {
    match row.get_ref(index)?.as_str()? {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(bad_column(
            index,
            format!("unknown conversation kind {other:?}"),
        )),
    }
}

fn role_to_sql(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn role_from_row(row: &Row<'_>, index: usize) -> rusqlite::Result<Role> {
    match row.get_ref(index)?.as_str()? {
        "owner" => Ok(Role::Owner),
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        other => Err(bad_column(index, format!("unknown role {other:?}"))),
    }
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`: one statement for any count.
fn json_ids(ids: impl Iterator<Item = i64>) -> String {
    let ids: Vec<i64> = ids.collect();
    serde_json::Value::from(ids).to_string()
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(row.get(0)?),
        username: row.get(1)?,
        password_hash: row.get(2)?,
        created_at: row.get(3)?,
        disabled: row.get(4)?,
        is_admin: row.get(5)?,
        deleted_at: row.get(6)?,
    })
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: DeviceId(row.get(0)?),
        user_id: UserId(row.get(1)?),
        name: row.get(2)?,
        created_at: row.get(3)?,
        last_active_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

/// Reads `id, kind, title, created_at, last_seq` starting at column `at`.
fn conversation_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<ConversationRecord> {
    Ok(ConversationRecord {
        id: ConversationId(row.get(at)?),
        kind: kind_from_row(row, at + 1)?,
        title: row.get(at + 2)?,
        created_at: row.get(at + 3)?,
        last_seq: seq_from_sql(row.get(at + 4)?),
    })
}

/// Reads `conversation_id, user_id, username, role, joined_at, delivered_seq, read_seq`
/// starting at column `at`, and `muted_until` from column `muted_at`.
fn member_from_row(row: &Row<'_>, at: usize, muted_at: usize) -> rusqlite::Result<MemberRecord> {
    Ok(MemberRecord {
        conversation_id: ConversationId(row.get(at)?),
        user_id: UserId(row.get(at + 1)?),
        username: row.get(at + 2)?,
        role: role_from_row(row, at + 3)?,
        joined_at: row.get(at + 4)?,
        delivered_seq: seq_from_sql(row.get(at + 5)?),
        read_seq: seq_from_sql(row.get(at + 6)?),
        muted_until: row.get(muted_at)?,
    })
}

fn user_conversation_from_row(row: &Row<'_>) -> rusqlite::Result<UserConversation> {
    let conversation = conversation_from_row(row, 0)?;
    let me = member_from_row(row, 5, 17)?;
    let message_count: i64 = row.get(18)?;
    let read_count: i64 = row.get(19)?;
    let unread = message_count.saturating_sub(read_count).max(0) as u64;
    let notify = match row.get_ref(21)?.as_str()? {
        "mentions" => NotifyLevel::Mentions,
        "none" => NotifyLevel::None,
        _ => NotifyLevel::All,
    };
    let settings = ConversationSettings {
        notify,
        pinned_at: row.get(22)?,
        archived: row.get(23)?,
        marked_unread: row.get(24)?,
    };
    let peer = match row.get::<_, Option<i64>>(13)? {
        Some(id) => Some(Peer {
            user_id: UserId(id),
            username: row.get(14)?,
            delivered_seq: seq_from_sql(row.get(15)?),
            read_seq: seq_from_sql(row.get(16)?),
        }),
        None => None,
    };
    Ok(UserConversation {
        conversation,
        me,
        unread,
        mentions: row.get::<_, i64>(25)? as u64,
        settings,
        last_message_seq: seq_from_sql(row.get(20)?),
        member_count: row.get(12)?,
        peer,
    })
}

fn meta_to_sql(meta: &MessageMeta) -> StoreResult<Option<String>> {
    meta.to_json()
        .map_err(|e| StoreError::Backend(format!("encoding message meta: {e}")))
}

fn meta_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<MessageMeta> {
    MessageMeta::from_json(row.get_ref(at)?.as_str_or_null()?)
        .map_err(|e| bad_column(at, format!("bad message meta: {e}")))
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let body = row.get_ref(7)?.as_str()?;
    let body: MessageBody =
        serde_json::from_str(body).map_err(|e| bad_column(7, format!("bad message body: {e}")))?;
    let mut message = Message::new(
        ConversationId(row.get(1)?),
        seq_from_sql(row.get(2)?),
        MessageId(row.get(0)?),
        (UserId(row.get(3)?), DeviceId(row.get(4)?)),
        row.get(5)?,
        row.get(6)?,
        body,
    );
    message.reply_to = row.get::<_, Option<i64>>(8)?.map(seq_from_sql);
    message.thread_root = row.get::<_, Option<i64>>(9)?.map(seq_from_sql);
    meta_from_row(row, 10)?.apply_to(&mut message);
    Ok(message)
}

/// Runs a statement that changes rows and returns how many it changed.
pub(crate) fn execute(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(backend)
}

/// Runs a statement that returns at most one row.
pub(crate) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, map).optional())
        .map_err(backend)
}

/// Runs a statement that returns any number of rows.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_map(params, map)?.collect())
        .map_err(backend)
}

// --- Accounts --------------------------------------------------------------------------------

pub(crate) fn ping(conn: &Connection) -> StoreResult<()> {
    query_opt(conn, PING, [], |row| row.get::<_, i64>(0)).map(drop)
}

pub(crate) fn create_user(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<UserRecord> {
    let id = query_opt(
        conn,
        INSERT_USER,
        params![username, password_hash, now],
        |row| row.get(0),
    )?
    .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING returned no row".into()))?;
    Ok(UserRecord {
        id: UserId(id),
        username: username.to_owned(),
        password_hash: password_hash.to_owned(),
        created_at: now,
        disabled: false,
        is_admin: false,
        deleted_at: None,
    })
}

/// Consumes one use of the invite, then creates the user. Runs inside the writer's savepoint,
/// so a username conflict after the invite was consumed gives the use back.
pub(crate) fn create_user_with_invite(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    invite_hash: [u8; 32],
    now: i64,
) -> StoreResult<UserRecord> {
    if execute(conn, USE_INVITE, params![invite_hash, now])? == 0 {
        return Err(StoreError::NotFound);
    }
    create_user(conn, username, password_hash, now)
}

pub(crate) fn user_by_name(conn: &Connection, username: &str) -> StoreResult<Option<UserRecord>> {
    query_opt(conn, USER_BY_NAME, [username], user_from_row)
}

pub(crate) fn user_by_id(conn: &Connection, id: UserId) -> StoreResult<Option<UserRecord>> {
    query_opt(conn, USER_BY_ID, [id.0], user_from_row)
}

pub(crate) fn users_by_ids(conn: &Connection, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_ids(ids.iter().map(|id| id.0));
    query_all(conn, USERS_BY_IDS, [ids], user_from_row)
}

pub(crate) fn list_users(
    conn: &Connection,
    after: Option<UserId>,
    limit: u32,
) -> StoreResult<Vec<UserRecord>> {
    let after = after.map_or(i64::MIN, |id| id.0);
    query_all(conn, LIST_USERS, params![after, limit], user_from_row)
}

pub(crate) fn set_password_hash(
    conn: &Connection,
    user: UserId,
    password_hash: &str,
) -> StoreResult<()> {
    match execute(conn, SET_PASSWORD, params![user.0, password_hash])? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(crate) fn create_invite(conn: &Connection, invite: &NewInvite) -> StoreResult<()> {
    execute(
        conn,
        INSERT_INVITE,
        params![
            invite.code_hash,
            invite.created_at,
            invite.expires_at,
            invite.uses
        ],
    )
    .map(drop)
}

// --- Devices and tokens ----------------------------------------------------------------------

pub(crate) fn create_device(
    conn: &Connection,
    user: UserId,
    name: &str,
    now: i64,
) -> StoreResult<DeviceRecord> {
    let id = query_opt(conn, INSERT_DEVICE, params![user.0, name, now], |row| {
        row.get(0)
    })?
    .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING returned no row".into()))?;
    Ok(DeviceRecord {
        id: DeviceId(id),
        user_id: user,
        name: name.to_owned(),
        created_at: now,
        last_active_at: now,
        revoked_at: None,
    })
}

pub(crate) fn device(conn: &Connection, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
    query_opt(conn, DEVICE, [id.0], device_from_row)
}

pub(crate) fn devices_of(conn: &Connection, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
    query_all(conn, DEVICES_OF, [user.0], device_from_row)
}

pub(crate) fn touch_device(conn: &Connection, id: DeviceId, now: i64) -> StoreResult<()> {
    match execute(conn, TOUCH_DEVICE, params![id.0, now])? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(crate) fn revoke_device(
    conn: &Connection,
    user: UserId,
    id: DeviceId,
    now: i64,
    audit: Option<&NewAudit>,
) -> StoreResult<bool> {
    if execute(conn, REVOKE_DEVICE, params![id.0, user.0, now])? == 0 {
        return Ok(false);
    }
    execute(conn, DELETE_DEVICE_TOKENS, [id.0])?;
    if let Some(entry) = audit {
        insert_audit(conn, entry)?;
    }
    Ok(true)
}

pub(crate) fn revoke_other_devices(
    conn: &Connection,
    user: UserId,
    keep: Option<DeviceId>,
    now: i64,
    audit: Option<&NewAudit>,
) -> StoreResult<Vec<DeviceId>> {
    if let Some(entry) = audit {
        insert_audit(conn, entry)?;
    }
    let keep = keep.map(|id| id.0);
    let mut revoked = query_all(
        conn,
        REVOKE_OTHER_DEVICES,
        params![user.0, keep, now],
        |row| row.get(0).map(DeviceId),
    )?;
    for id in &revoked {
        execute(conn, DELETE_DEVICE_TOKENS, [id.0])?;
    }
    revoked.sort_unstable();
    Ok(revoked)
}

pub(crate) fn insert_refresh_token(conn: &Connection, token: &NewRefreshToken) -> StoreResult<()> {
    execute(
        conn,
        INSERT_TOKEN,
        params![
            token.token_hash,
            token.device_id.0,
            token.user_id.0,
            token.created_at,
            token.expires_at
        ],
    )
    .map(drop)
}

pub(crate) fn rotate_refresh_token(
    conn: &Connection,
    old_hash: [u8; 32],
    new: &NewRefreshToken,
    now: i64,
    on_reuse: &NewAudit,
) -> StoreResult<RotateOutcome> {
    struct Found {
        device_id: DeviceId,
        user_id: UserId,
        expires_at: i64,
        used: bool,
        revoked: bool,
    }
    let found = query_opt(conn, TOKEN_FOR_ROTATION, [old_hash], |row| {
        Ok(Found {
            device_id: DeviceId(row.get(0)?),
            user_id: UserId(row.get(1)?),
            expires_at: row.get(2)?,
            used: row.get::<_, Option<i64>>(3)?.is_some(),
            revoked: row.get::<_, Option<i64>>(4)?.is_some(),
        })
    })?;
    let Some(found) = found else {
        return Ok(RotateOutcome::Invalid);
    };
    if found.revoked || found.expires_at <= now {
        return Ok(RotateOutcome::Invalid);
    }
    if found.used {
        // Someone presents a token that was already exchanged: either the client or a thief has
        // a copy. Sign the device out so neither can go on (RFC 9700, section 4.14.2).
        revoke_device(conn, found.user_id, found.device_id, now, None)?;
        insert_audit(conn, on_reuse)?;
        return Ok(RotateOutcome::ReuseDetected {
            user_id: found.user_id,
            device_id: found.device_id,
        });
    }
    if new.device_id != found.device_id || new.user_id != found.user_id {
        return Err(StoreError::Backend(
            "rotate_refresh_token: the new token names another device".into(),
        ));
    }
    execute(conn, USE_TOKEN, params![old_hash, now])?;
    insert_refresh_token(conn, new)?;
    Ok(RotateOutcome::Rotated {
        user_id: found.user_id,
        device_id: found.device_id,
    })
}

pub(crate) fn prune_refresh_tokens(conn: &Connection, now: i64) -> StoreResult<u64> {
    execute(conn, PRUNE_TOKENS, [now]).map(|n| n as u64)
}

pub(crate) fn refresh_token_device(
    conn: &Connection,
    hash: [u8; 32],
) -> StoreResult<Option<DeviceId>> {
    query_opt(conn, TOKEN_DEVICE, [hash], |row| row.get(0).map(DeviceId))
}

// --- Administration --------------------------------------------------------------------------

pub(crate) fn sign_in(
    conn: &Connection,
    user: UserId,
    device_name: &str,
    refresh_hash: [u8; 32],
    refresh_expires_at: i64,
    now: i64,
    audit: &NewAudit,
) -> StoreResult<DeviceRecord> {
    if query_opt(conn, USER_IS_ACTIVE, [user.0], |row| row.get::<_, i64>(0))?.is_none() {
        return Err(StoreError::NotFound);
    }
    let device = create_device(conn, user, device_name, now)?;
    insert_refresh_token(
        conn,
        &NewRefreshToken {
            token_hash: refresh_hash,
            device_id: device.id,
            user_id: user,
            created_at: now,
            expires_at: refresh_expires_at,
        },
    )?;
    insert_audit(conn, audit)?;
    Ok(device)
}

pub(crate) fn replace_password(
    conn: &Connection,
    user: UserId,
    password_hash: &str,
    keep: Option<DeviceId>,
    now: i64,
    audit: &NewAudit,
) -> StoreResult<Vec<DeviceId>> {
    set_password_hash(conn, user, password_hash)?;
    revoke_other_devices(conn, user, keep, now, Some(audit))
}

pub(crate) fn find_users(
    conn: &Connection,
    prefix: &str,
    after: Option<UserId>,
    limit: u32,
) -> StoreResult<Vec<UserRecord>> {
    if prefix.is_empty() {
        return list_users(conn, after, limit);
    }
    let after = after.map_or(i64::MIN, |id| id.0);
    let upper = format!("{prefix}\u{10FFFF}");
    query_all(
        conn,
        FIND_USERS,
        params![prefix, upper, after, limit],
        user_from_row,
    )
}

pub(crate) fn set_suspended(
    conn: &Connection,
    user: UserId,
    suspended: bool,
    now: i64,
    audit: &NewAudit,
) -> StoreResult<Vec<DeviceId>> {
    if execute(conn, SET_SUSPENDED, params![user.0, suspended])? == 0 {
        return Err(StoreError::NotFound);
    }
    let revoked = if suspended {
        revoke_other_devices(conn, user, None, now, None)?
    } else {
        Vec::new()
    };
    insert_audit(conn, audit)?;
    Ok(revoked)
}

pub(crate) fn set_admin(
    conn: &Connection,
    user: UserId,
    is_admin: bool,
    audit: &NewAudit,
) -> StoreResult<bool> {
    let Some(current) = user_by_id(conn, user)?.filter(|u| u.deleted_at.is_none()) else {
        return Err(StoreError::NotFound);
    };
    execute(conn, SET_ADMIN, params![user.0, is_admin])?;
    insert_audit(conn, audit)?;
    Ok(current.is_admin != is_admin)
}

pub(crate) fn delete_user(
    conn: &Connection,
    user: UserId,
    now: i64,
    remove_messages: bool,
    audit: &NewAudit,
) -> StoreResult<DeletedAccount> {
    if execute(conn, MARK_DELETED, params![user.0, now])? == 0 {
        return Err(StoreError::NotFound);
    }
    let devices = revoke_other_devices(conn, user, None, now, None)?;
    let conversations = query_all(conn, MEMBERSHIPS_OF, [user.0], |row| {
        row.get(0).map(ConversationId)
    })?;
    let tombstone = serde_json::to_string(&MessageBody::Deleted {})
        .map_err(|e| StoreError::Backend(format!("tombstone does not serialize: {e}")))?;
    let mut messages_removed = 0;
    for &conversation in &conversations {
        if remove_messages {
            messages_removed += execute(
                conn,
                TOMBSTONE_MESSAGES,
                params![conversation.0, user.0, tombstone],
            )? as u64;
        }
        remove_member(conn, conversation, user)?;
    }
    // What the account said about itself goes with it.
    execute(conn, DELETE_PROFILE, [user.0])?;
    execute(conn, DELETE_LAST_SEEN, [user.0])?;
    crate::userxml::delete_all(conn, user)?;
    crate::account::remove_personal(conn, user)?;
    execute(conn, DELETE_EXTERNAL_IDENTITIES, [user.0])?;
    insert_audit(conn, audit)?;
    Ok(DeletedAccount {
        devices,
        conversations,
        messages_removed,
    })
}

// --- Profiles --------------------------------------------------------------------------------

fn profile_from_row(row: &Row<'_>) -> rusqlite::Result<ProfileRecord> {
    Ok(ProfileRecord {
        user_id: UserId(row.get(0)?),
        username: row.get(1)?,
        display_name: row.get(2)?,
        status_text: row.get(3)?,
        avatar: row.get(4)?,
    })
}

pub(crate) fn profile(conn: &Connection, user: UserId) -> StoreResult<Option<ProfileRecord>> {
    query_opt(conn, PROFILE, [user.0], profile_from_row)
}

pub(crate) fn set_profile(
    conn: &Connection,
    user: UserId,
    display_name: &str,
    status_text: &str,
    now: i64,
) -> StoreResult<()> {
    execute(
        conn,
        UPSERT_PROFILE,
        params![user.0, display_name, status_text, now],
    )
    .map(drop)
}

pub(crate) fn set_avatar(
    conn: &Connection,
    user: UserId,
    avatar: &str,
    now: i64,
) -> StoreResult<()> {
    execute(conn, SET_AVATAR, params![user.0, avatar, now]).map(drop)
}

pub(crate) fn search_users(
    conn: &Connection,
    prefix: &str,
    limit: u32,
) -> StoreResult<Vec<ProfileRecord>> {
    let upper = format!("{prefix}\u{10FFFF}");
    let by_username = prefix.to_lowercase();
    let upper_username = format!("{by_username}\u{10FFFF}");
    let mut found = query_all(
        conn,
        SEARCH_BY_USERNAME,
        params![by_username, upper_username, limit],
        profile_from_row,
    )?;
    found.extend(query_all(
        conn,
        SEARCH_BY_DISPLAY_NAME,
        params![prefix, upper, limit],
        profile_from_row,
    )?);
    found.sort_by(|a, b| a.username.cmp(&b.username));
    found.dedup_by(|a, b| a.user_id == b.user_id);
    found.truncate(limit as usize);
    Ok(found)
}

// --- Block list ------------------------------------------------------------------------------

/// Stores the block, and in the same transaction ends the pair's friendship and drops their
/// pending requests both ways (see `Store::block_user`).
pub(crate) fn block_user(
    conn: &Connection,
    blocker: UserId,
    blocked: UserId,
    now: i64,
) -> StoreResult<bool> {
    let added = execute(conn, INSERT_BLOCK, params![blocker.0, blocked.0, now])? == 1;
    let (low, high) = ordered(blocker, blocked);
    let mut changed = execute(conn, DELETE_FRIENDSHIP, [low, high])?;
    changed += execute(conn, DELETE_FRIEND_REQUEST, [blocker.0, blocked.0])?;
    changed += execute(conn, DELETE_FRIEND_REQUEST, [blocked.0, blocker.0])?;
    if changed > 0 {
        bump_contacts_versions(conn, [blocker, blocked])?;
    }
    Ok(added)
}

pub(crate) fn unblock_user(
    conn: &Connection,
    blocker: UserId,
    blocked: UserId,
) -> StoreResult<bool> {
    execute(conn, DELETE_BLOCK, params![blocker.0, blocked.0]).map(|n| n == 1)
}

pub(crate) fn blocked_by(conn: &Connection, blocker: UserId) -> StoreResult<Vec<BlockRecord>> {
    query_all(conn, BLOCKED_BY, [blocker.0], |row| {
        Ok(BlockRecord {
            user_id: UserId(row.get(0)?),
            username: row.get(1)?,
            since: row.get(2)?,
        })
    })
}

pub(crate) fn blockers_of(conn: &Connection, blocked: UserId) -> StoreResult<Vec<UserId>> {
    query_all(conn, BLOCKERS_OF, [blocked.0], |row| row.get(0).map(UserId))
}

pub(crate) fn is_blocked(conn: &Connection, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
    query_opt(conn, IS_BLOCKED, [blocker.0, blocked.0], |row| {
        row.get::<_, i64>(0)
    })
    .map(|r| r.is_some())
}

// --- Friends and privacy ---------------------------------------------------------------------

fn friend_request_from_row(row: &Row<'_>) -> rusqlite::Result<FriendRequestRecord> {
    Ok(FriendRequestRecord {
        from: UserId(row.get(0)?),
        from_username: row.get(1)?,
        to: UserId(row.get(2)?),
        to_username: row.get(3)?,
        note: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// A friendship's key: the pair with the smaller id first.
fn ordered(a: UserId, b: UserId) -> (i64, i64) {
    (a.0.min(b.0), a.0.max(b.0))
}

fn bump_contacts_versions(conn: &Connection, users: [UserId; 2]) -> StoreResult<()> {
    for user in users {
        execute(conn, BUMP_CONTACTS_VERSION, [user.0])?;
    }
    Ok(())
}

fn befriend(conn: &Connection, a: UserId, b: UserId, now: i64) -> StoreResult<()> {
    let (low, high) = ordered(a, b);
    execute(conn, INSERT_FRIENDSHIP, params![low, high, now])?;
    bump_contacts_versions(conn, [a, b])
}

pub(crate) fn are_friends(conn: &Connection, a: UserId, b: UserId) -> StoreResult<bool> {
    let (low, high) = ordered(a, b);
    query_opt(conn, IS_FRIEND, [low, high], |row| row.get::<_, i64>(0)).map(|r| r.is_some())
}

pub(crate) fn friend_request(
    conn: &Connection,
    from: UserId,
    to: UserId,
) -> StoreResult<Option<FriendRequestRecord>> {
    query_opt(
        conn,
        FRIEND_REQUEST,
        [from.0, to.0],
        friend_request_from_row,
    )
}

/// Checks the pair, then either completes a mutual request or stores a new one; all in the
/// writer's transaction, so two crossing requests cannot both end up pending.
pub(crate) fn send_friend_request(
    conn: &Connection,
    from: UserId,
    to: UserId,
    note: Option<&str>,
    now: i64,
) -> StoreResult<FriendRequestSent> {
    if from == to {
        return Err(StoreError::Conflict("friend_request"));
    }
    if are_friends(conn, from, to)? {
        return Err(StoreError::Conflict("friendship"));
    }
    if execute(conn, DELETE_FRIEND_REQUEST, [to.0, from.0])? == 1 {
        befriend(conn, from, to, now)?;
        return Ok(FriendRequestSent::BecameFriends);
    }
    // A duplicate violates the primary key (Conflict) and an unknown user the foreign key
    // (NotFound).
    execute(
        conn,
        INSERT_FRIEND_REQUEST,
        params![from.0, to.0, note, now],
    )?;
    bump_contacts_versions(conn, [from, to])?;
    Ok(FriendRequestSent::Pending)
}

pub(crate) fn accept_friend_request(
    conn: &Connection,
    from: UserId,
    to: UserId,
    now: i64,
) -> StoreResult<bool> {
    if execute(conn, DELETE_FRIEND_REQUEST, [from.0, to.0])? == 0 {
        return Ok(false);
    }
    // A request never coexists with a friendship (sending checks, befriending consumes), but
    // stay correct if one does: the pair is friends either way.
    if !are_friends(conn, from, to)? {
        let (low, high) = ordered(from, to);
        execute(conn, INSERT_FRIENDSHIP, params![low, high, now])?;
    }
    bump_contacts_versions(conn, [from, to])?;
    Ok(true)
}

pub(crate) fn delete_friend_request(
    conn: &Connection,
    from: UserId,
    to: UserId,
) -> StoreResult<bool> {
    if execute(conn, DELETE_FRIEND_REQUEST, [from.0, to.0])? == 0 {
        return Ok(false);
    }
    bump_contacts_versions(conn, [from, to])?;
    Ok(true)
}

pub(crate) fn remove_friend(conn: &Connection, a: UserId, b: UserId) -> StoreResult<bool> {
    let (low, high) = ordered(a, b);
    if execute(conn, DELETE_FRIENDSHIP, [low, high])? == 0 {
        return Ok(false);
    }
    bump_contacts_versions(conn, [a, b])?;
    Ok(true)
}

pub(crate) fn friends_of(conn: &Connection, user: UserId) -> StoreResult<Vec<FriendRecord>> {
    let friend = |row: &Row<'_>| {
        Ok(FriendRecord {
            user_id: UserId(row.get(0)?),
            username: row.get(1)?,
            since: row.get(2)?,
        })
    };
    let mut friends = query_all(conn, FRIENDS_ABOVE, [user.0], friend)?;
    friends.extend(query_all(conn, FRIENDS_BELOW, [user.0], friend)?);
    friends.sort_by_key(|f| f.user_id);
    Ok(friends)
}

pub(crate) fn friend_requests_to(
    conn: &Connection,
    user: UserId,
) -> StoreResult<Vec<FriendRequestRecord>> {
    query_all(conn, FRIEND_REQUESTS_TO, [user.0], friend_request_from_row)
}

pub(crate) fn friend_requests_from(
    conn: &Connection,
    user: UserId,
) -> StoreResult<Vec<FriendRequestRecord>> {
    query_all(
        conn,
        FRIEND_REQUESTS_FROM,
        [user.0],
        friend_request_from_row,
    )
}

pub(crate) fn contacts_version(conn: &Connection, user: UserId) -> StoreResult<u64> {
    query_opt(conn, CONTACTS_VERSION, [user.0], |row| row.get::<_, i64>(0))
        .map(|v| v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

fn direct_messages_to_sql(value: DirectMessages) -> &'static str {
    match value {
        DirectMessages::Everyone => "everyone",
        DirectMessages::Friends => "friends",
    }
}

fn visibility_to_sql(value: Visibility) -> &'static str {
    match value {
        Visibility::Everyone => "everyone",
        Visibility::Friends => "friends",
        Visibility::Nobody => "nobody",
    }
}

fn group_adds_to_sql(value: GroupAdds) -> &'static str {
    match value {
        GroupAdds::Everyone => "everyone",
        GroupAdds::Friends => "friends",
        GroupAdds::Nobody => "nobody",
    }
}

/// Reads the three settings from columns 1 to 3; NULLs (no row) are the defaults.
fn privacy_from_row(row: &Row<'_>) -> rusqlite::Result<PrivacySettings> {
    let text = |index: usize| row.get::<_, Option<String>>(index);
    let direct_messages = match text(1)?.as_deref() {
        None | Some("everyone") => DirectMessages::Everyone,
        Some("friends") => DirectMessages::Friends,
        Some(other) => return Err(bad_column(1, format!("unknown setting {other:?}"))),
    };
    let presence = match text(2)?.as_deref() {
        None | Some("everyone") => Visibility::Everyone,
        Some("friends") => Visibility::Friends,
        Some("nobody") => Visibility::Nobody,
        Some(other) => return Err(bad_column(2, format!("unknown setting {other:?}"))),
    };
    let group_adds = match text(3)?.as_deref() {
        None | Some("everyone") => GroupAdds::Everyone,
        Some("friends") => GroupAdds::Friends,
        Some("nobody") => GroupAdds::Nobody,
        Some(other) => return Err(bad_column(3, format!("unknown setting {other:?}"))),
    };
    Ok(PrivacySettings {
        direct_messages,
        presence,
        group_adds,
    })
}

pub(crate) fn privacy_of(
    conn: &Connection,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, PrivacySettings)>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_ids(users.iter().map(|id| id.0));
    query_all(conn, PRIVACY_OF, [ids], |row| {
        Ok((UserId(row.get(0)?), privacy_from_row(row)?))
    })
}

pub(crate) fn set_privacy(
    conn: &Connection,
    user: UserId,
    settings: PrivacySettings,
    now: i64,
) -> StoreResult<()> {
    execute(
        conn,
        UPSERT_PRIVACY,
        params![
            user.0,
            direct_messages_to_sql(settings.direct_messages),
            visibility_to_sql(settings.presence),
            group_adds_to_sql(settings.group_adds),
            now
        ],
    )
    .map(drop)
}

// --- Conversations ---------------------------------------------------------------------------

pub(crate) fn direct_between(
    conn: &Connection,
    a: UserId,
    b: UserId,
) -> StoreResult<Option<ConversationRecord>> {
    let key = format!("{}:{}", a.0.min(b.0), a.0.max(b.0));
    conversation_by(conn, DIRECT_BY_KEY, &key)
}

fn conversation_by(
    conn: &Connection,
    sql: &str,
    key: impl rusqlite::ToSql,
) -> StoreResult<Option<ConversationRecord>> {
    query_opt(conn, sql, [key], |row| conversation_from_row(row, 0))
}

fn insert_conversation(
    conn: &Connection,
    kind: ConversationKind,
    title: &str,
    direct_key: Option<&str>,
    now: i64,
) -> StoreResult<ConversationRecord> {
    let id = query_opt(
        conn,
        INSERT_CONVERSATION,
        params![kind_to_sql(kind), title, now, direct_key],
        |row| row.get(0),
    )?
    .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING returned no row".into()))?;
    Ok(ConversationRecord {
        id: ConversationId(id),
        kind,
        title: title.to_owned(),
        created_at: now,
        last_seq: 0,
    })
}

/// Adds members that are not members yet and returns those added, in input order. The member
/// count is updated in the same transaction.
fn insert_members(
    conn: &Connection,
    conversation: ConversationId,
    users: &[(UserId, Role)],
    now: i64,
) -> StoreResult<Vec<UserId>> {
    let mut added = Vec::new();
    for &(user, role) in users {
        let inserted = execute(
            conn,
            INSERT_MEMBER,
            params![conversation.0, user.0, role_to_sql(role), now],
        )?;
        if inserted > 0 {
            added.push(user);
        }
    }
    if !added.is_empty() {
        execute(conn, ADD_MEMBER_COUNT, params![conversation.0, added.len()])?;
    }
    Ok(added)
}

pub(crate) fn get_or_create_direct(
    conn: &Connection,
    a: UserId,
    b: UserId,
    now: i64,
) -> StoreResult<(ConversationRecord, bool)> {
    let key = format!("{}:{}", a.0.min(b.0), a.0.max(b.0));
    if let Some(existing) = conversation_by(conn, DIRECT_BY_KEY, &key)? {
        return Ok((existing, false));
    }
    let conversation = insert_conversation(conn, ConversationKind::Direct, "", Some(&key), now)?;
    let mut members = vec![(a, Role::Member)];
    if b != a {
        members.push((b, Role::Member));
    }
    insert_members(conn, conversation.id, &members, now)?;
    Ok((conversation, true))
}

pub(crate) fn create_group(
    conn: &Connection,
    owner: UserId,
    title: &str,
    members: &[UserId],
    now: i64,
) -> StoreResult<ConversationRecord> {
    let conversation = insert_conversation(conn, ConversationKind::Group, title, None, now)?;
    // The owner goes first so that, if `members` names them too, that duplicate is skipped and
    // the owner keeps the owner role; other duplicates are skipped the same way.
    let all: Vec<(UserId, Role)> = std::iter::once((owner, Role::Owner))
        .chain(members.iter().map(|&user| (user, Role::Member)))
        .collect();
    insert_members(conn, conversation.id, &all, now)?;
    Ok(conversation)
}

pub(crate) fn add_members(
    conn: &Connection,
    conversation: ConversationId,
    users: &[UserId],
    now: i64,
) -> StoreResult<Vec<UserId>> {
    if conversation_by(conn, CONVERSATION, conversation.0)?.is_none() {
        return Err(StoreError::NotFound);
    }
    let users: Vec<(UserId, Role)> = users.iter().map(|&user| (user, Role::Member)).collect();
    insert_members(conn, conversation, &users, now)
}

pub(crate) fn remove_member(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
) -> StoreResult<bool> {
    if execute(conn, DELETE_MEMBER, params![conversation.0, user.0])? == 0 {
        return Ok(false);
    }
    execute(conn, ADD_MEMBER_COUNT, params![conversation.0, -1])?;
    Ok(true)
}

pub(crate) fn conversation(
    conn: &Connection,
    id: ConversationId,
) -> StoreResult<Option<ConversationRecord>> {
    conversation_by(conn, CONVERSATION, id.0)
}

pub(crate) fn member(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
) -> StoreResult<Option<MemberRecord>> {
    query_opt(conn, MEMBER, params![conversation.0, user.0], |row| {
        member_from_row(row, 0, 7)
    })
}

pub(crate) fn members(
    conn: &Connection,
    conversation: ConversationId,
) -> StoreResult<Vec<MemberRecord>> {
    query_all(conn, MEMBERS, [conversation.0], |row| {
        member_from_row(row, 0, 7)
    })
}

pub(crate) fn conversations_of(
    conn: &Connection,
    user: UserId,
) -> StoreResult<Vec<UserConversation>> {
    query_all(conn, CONVERSATIONS_OF, [user.0], user_conversation_from_row)
}

pub(crate) fn user_conversation(
    conn: &Connection,
    user: UserId,
    conversation: ConversationId,
) -> StoreResult<Option<UserConversation>> {
    query_opt(
        conn,
        USER_CONVERSATION,
        params![user.0, conversation.0],
        user_conversation_from_row,
    )
}

pub(crate) fn direct_conversations_of(
    conn: &Connection,
    user: UserId,
) -> StoreResult<Vec<ConversationId>> {
    query_all(conn, DIRECT_CONVERSATIONS_OF, [user.0], |row| {
        row.get(0).map(ConversationId)
    })
}

pub(crate) fn co_members(conn: &Connection, user: UserId) -> StoreResult<Vec<UserId>> {
    query_all(conn, CO_MEMBERS, [user.0], |row| row.get(0).map(UserId))
}

// --- Messages --------------------------------------------------------------------------------

/// A message to append with its body already serialized, so the writer thread, which every
/// write waits for, spends no time on JSON.
pub(crate) struct PreparedMessage {
    pub(crate) message: tidings_store::NewMessage,
    pub(crate) body_json: String,
}

impl PreparedMessage {
    pub(crate) fn new(message: tidings_store::NewMessage) -> StoreResult<Self> {
        let body_json = serde_json::to_string(&message.body)
            .map_err(|e| StoreError::Backend(format!("message body does not serialize: {e}")))?;
        Ok(PreparedMessage { message, body_json })
    }
}

/// Appends a batch in the caller's transaction. An item whose conversation does not exist
/// fails alone, as does one whose target (for edits, recalls, reactions and pins) is missing
/// (`NotFound`) or recalled (`Conflict("deleted")`); any SQLite error fails the whole batch
/// (the writer rolls it back).
pub(crate) fn append_messages(
    conn: &Connection,
    batch: Vec<PreparedMessage>,
) -> StoreResult<Vec<StoreResult<Appended>>> {
    let mut find = conn.prepare_cached(MESSAGE_BY_CLIENT_ID).map_err(backend)?;
    let mut results = Vec::with_capacity(batch.len());
    for PreparedMessage { message, body_json } in batch {
        let conversation = message.conversation_id.0;
        let sender = message.sender_id.0;
        // The unique index (conversation, sender, client id) answers this, and it also sees
        // rows inserted earlier in this same batch, so a copy within a batch is a duplicate too.
        let existing = find
            .query_row(
                params![conversation, sender, message.client_msg_id],
                message_from_row,
            )
            .optional()
            .map_err(backend)?;
        if let Some(original) = existing {
            results.push(Ok(Appended {
                message: original,
                duplicate: true,
            }));
            continue;
        }
        // An item with an effect gets a savepoint, so when its target is refused it leaves no
        // trace while the rest of the batch commits. Plain messages can only be refused before
        // they change anything (no such conversation) and skip the savepoint.
        let savepoint = message.body.target().is_some();
        if savepoint {
            conn.execute_batch("SAVEPOINT item").map_err(backend)?;
        }
        match append_one(conn, message, body_json) {
            Ok(appended) => {
                if savepoint {
                    conn.execute_batch("RELEASE item").map_err(backend)?;
                }
                results.push(Ok(appended));
            }
            Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
            Err(refusal) => {
                if savepoint {
                    conn.execute_batch("ROLLBACK TO item; RELEASE item")
                        .map_err(backend)?;
                }
                results.push(Err(refusal));
            }
        }
    }
    Ok(results)
}

/// Appends one message and applies its effect on its target. `NotFound` when the conversation
/// or the target does not exist.
fn append_one(
    conn: &Connection,
    message: tidings_store::NewMessage,
    body_json: String,
) -> StoreResult<Appended> {
    let conversation = message.conversation_id.0;
    let target = message.body.target();
    let countable = target.is_none();
    // Apply the effect first: a refusal (missing or recalled target) then costs no sequence.
    if let Some(target) = target {
        apply_effect(conn, &message, target)?;
    }
    let bumped = execute(
        conn,
        NEXT_SEQ,
        params![conversation, message.ts, i64::from(countable)],
    )?;
    if bumped == 0 {
        return Err(StoreError::NotFound);
    }
    let (seq, count): (i64, i64) = query_opt(conn, SEQ_NOW, [conversation], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?
    .ok_or(StoreError::NotFound)?;
    let relations = &message.relations;
    let mentions = relations
        .mentions
        .clone()
        .filter(|m| m.all || !m.users.is_empty());
    let meta = MessageMeta {
        mentions: mentions.clone(),
        ..MessageMeta::default()
    };
    execute(
        conn,
        INSERT_MESSAGE,
        params![
            conversation,
            seq,
            message.sender_id.0,
            message.sender_device_id.0,
            message.client_msg_id,
            message.ts,
            message.body.kind(),
            body_json,
            relations.reply_to.map(seq_to_sql),
            relations.thread_root.map(seq_to_sql),
            target.map(seq_to_sql),
            meta_to_sql(&meta)?,
            count,
        ],
    )?;
    let id = conn.last_insert_rowid();
    // One's own message is delivered and read; it is also the newest, so max() is only a
    // guard for markers that are somehow ahead.
    execute(
        conn,
        SENDER_MARKERS,
        params![conversation, message.sender_id.0, seq, count],
    )?;
    if let Some(mentions) = &mentions {
        for user in &mentions.users {
            if *user != message.sender_id {
                execute(conn, INSERT_MENTION, params![conversation, user.0, seq])?;
            }
        }
        if mentions.all {
            execute(conn, INSERT_MENTION, params![conversation, 0, seq])?;
        }
    }
    if let Some(root) = relations.thread_root {
        update_meta(conn, conversation, root, |meta| {
            let replies = meta.thread.map_or(0, |t| t.replies) + 1;
            meta.thread = Some(ThreadSummary {
                replies,
                last_seq: seq_from_sql(seq),
                last_ts: message.ts,
            });
        })?;
    }
    let mut stored = Message::new(
        message.conversation_id,
        seq_from_sql(seq),
        MessageId(id),
        (message.sender_id, message.sender_device_id),
        message.client_msg_id,
        message.ts,
        message.body,
    );
    stored.reply_to = relations.reply_to;
    stored.thread_root = relations.thread_root;
    stored.mentions = mentions;
    Ok(Appended {
        message: stored,
        duplicate: false,
    })
}

/// The message an effect applies to, as stored.
struct TargetRow {
    id: i64,
    kind: String,
    sender: i64,
    ts: i64,
    meta: MessageMeta,
}

fn target_row(conn: &Connection, conversation: i64, seq: Seq) -> StoreResult<TargetRow> {
    query_opt(
        conn,
        TARGET_MESSAGE,
        params![conversation, seq_to_sql(seq)],
        |row| {
            let meta = meta_from_row(row, 5)?;
            Ok(TargetRow {
                id: row.get(0)?,
                kind: row.get(1)?,
                sender: row.get(3)?,
                ts: row.get(4)?,
                meta,
            })
        },
    )?
    .ok_or(StoreError::NotFound)
}

/// Reads, changes and writes back the aggregated state of one message (ignoring a message
/// that is gone).
fn update_meta(
    conn: &Connection,
    conversation: i64,
    seq: Seq,
    change: impl FnOnce(&mut MessageMeta),
) -> StoreResult<()> {
    let Ok(mut row) = target_row(conn, conversation, seq) else {
        return Ok(());
    };
    change(&mut row.meta);
    execute(
        conn,
        SET_META,
        params![conversation, seq_to_sql(seq), meta_to_sql(&row.meta)?],
    )
    .map(drop)
}

fn apply_effect(
    conn: &Connection,
    message: &tidings_store::NewMessage,
    target: Seq,
) -> StoreResult<()> {
    let conversation = message.conversation_id.0;
    let at = seq_to_sql(target);
    let mut row = target_row(conn, conversation, target)?;
    if row.kind == "deleted" {
        return Err(StoreError::Conflict("deleted"));
    }
    match &message.body {
        MessageBody::Edit { body, .. } => {
            let versions: i64 =
                query_opt(conn, EDIT_COUNT, params![conversation, at], |r| r.get(0))?.unwrap_or(0);
            let new_json = serde_json::to_string(body)
                .map_err(|e| StoreError::Backend(format!("encoding an edit: {e}")))?;
            let mut version = versions;
            if versions == 0 {
                // The first edit saves the original as version 0.
                let original: String =
                    query_opt(conn, ORIGINAL_BODY, params![conversation, at], |r| r.get(0))?
                        .ok_or(StoreError::NotFound)?;
                execute(
                    conn,
                    INSERT_EDIT,
                    params![conversation, at, 0, row.ts, row.sender, original],
                )?;
                version = 1;
            }
            execute(
                conn,
                INSERT_EDIT,
                params![
                    conversation,
                    at,
                    version,
                    message.ts,
                    message.sender_id.0,
                    new_json
                ],
            )?;
            row.meta.edited_at = Some(message.ts);
            execute(
                conn,
                SET_BODY,
                params![conversation, at, new_json, meta_to_sql(&row.meta)?],
            )?;
            // Messages the indexer has passed are re-indexed here; later ones it will find
            // with their new body.
            execute(conn, UNINDEX_BY_ID, [row.id])?;
            if let Some(text) = body.text() {
                execute(
                    conn,
                    REINDEX_MESSAGE,
                    params![row.id, tidings_store::search::index_terms(text)],
                )?;
            }
        }
        MessageBody::Recall { .. } => {
            let tombstone = serde_json::to_string(&MessageBody::Deleted {})
                .map_err(|e| StoreError::Backend(format!("encoding a tombstone: {e}")))?;
            execute(conn, UNINDEX_BY_ID, [row.id])?;
            if let Some(mentions) = &row.meta.mentions {
                let mut ids: Vec<i64> = mentions.users.iter().map(|u| u.0).collect();
                if mentions.all {
                    ids.push(0);
                }
                execute(
                    conn,
                    DELETE_MENTIONS,
                    params![conversation, at, json_ids(ids.into_iter())],
                )?;
            }
            execute(conn, DELETE_EDITS, params![conversation, at])?;
            execute(conn, DELETE_REACTIONS, params![conversation, at])?;
            execute(conn, DELETE_PIN, params![conversation, at])?;
            execute(conn, RECALL_EDITS, params![conversation, at, tombstone])?;
            // Only the thread summary survives: the replies are other people's messages.
            let meta = MessageMeta {
                thread: row.meta.thread,
                ..MessageMeta::default()
            };
            execute(
                conn,
                RECALL_BODY,
                params![conversation, at, tombstone, meta_to_sql(&meta)?],
            )?;
        }
        MessageBody::Reaction { key, remove, .. } => {
            let user = message.sender_id;
            if *remove {
                if execute(
                    conn,
                    DELETE_REACTION,
                    params![conversation, at, key, user.0],
                )? > 0
                    && row.meta.remove_reaction(key, user)
                {
                    let users = query_all(
                        conn,
                        REACTORS_OF_KEY,
                        params![conversation, at, key, REACTION_USERS_SHOWN as i64],
                        |r| r.get(0).map(UserId),
                    )?;
                    row.meta.set_reactors(key, users);
                }
            } else if execute(
                conn,
                INSERT_REACTION,
                params![conversation, at, key, user.0, message.ts],
            )? > 0
            {
                row.meta.add_reaction(key, user);
            }
            execute(
                conn,
                SET_META,
                params![conversation, at, meta_to_sql(&row.meta)?],
            )?;
        }
        MessageBody::Pin { unpin, .. } => {
            if *unpin {
                execute(conn, DELETE_PIN, params![conversation, at])?;
                row.meta.pinned_at = None;
            } else {
                execute(
                    conn,
                    INSERT_PIN,
                    params![conversation, at, message.ts, message.sender_id.0],
                )?;
                row.meta.pinned_at.get_or_insert(message.ts);
            }
            execute(
                conn,
                SET_META,
                params![conversation, at, meta_to_sql(&row.meta)?],
            )?;
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn messages_after(
    conn: &Connection,
    conversation: ConversationId,
    after: Seq,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    query_all(
        conn,
        MESSAGES_AFTER,
        params![conversation.0, seq_to_sql(after), limit],
        message_from_row,
    )
}

pub(crate) fn messages_before(
    conn: &Connection,
    conversation: ConversationId,
    before: Option<Seq>,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let before = before.map_or(i64::MAX, seq_to_sql);
    let mut messages = query_all(
        conn,
        MESSAGES_BEFORE,
        params![conversation.0, before, limit],
        message_from_row,
    )?;
    messages.reverse();
    Ok(messages)
}

// --- Groups ----------------------------------------------------------------------------------

fn group_from_row(row: &Row<'_>) -> rusqlite::Result<GroupRecord> {
    let permissions = match row.get_ref(9)?.as_str_or_null()? {
        None => GroupPermissions::default(),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| bad_column(9, format!("bad group permissions: {e}")))?,
    };
    Ok(GroupRecord {
        conversation: conversation_from_row(row, 0)?,
        description: row.get(5)?,
        avatar: row.get(6)?,
        announcement: row.get(7)?,
        join_approval: row.get(8)?,
        permissions,
        member_count: row.get(10)?,
    })
}

pub(crate) fn group(conn: &Connection, id: ConversationId) -> StoreResult<Option<GroupRecord>> {
    query_opt(conn, GROUP, [id.0], group_from_row)
}

fn require_member(conn: &Connection, id: ConversationId, user: UserId) -> StoreResult<()> {
    match member(conn, id, user)? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound),
    }
}

fn refuse_banned(conn: &Connection, id: ConversationId, user: UserId) -> StoreResult<()> {
    if is_banned(conn, id, user)? {
        return Err(StoreError::Conflict("banned"));
    }
    Ok(())
}

/// Applies one group change in the caller's transaction; returns who joined and who left.
fn apply_group_change(
    conn: &Connection,
    id: ConversationId,
    change: GroupChange,
    now: i64,
) -> StoreResult<(Vec<UserId>, Vec<UserId>)> {
    let add = |users: &[UserId]| -> StoreResult<Vec<UserId>> {
        let users: Vec<(UserId, Role)> = users.iter().map(|&u| (u, Role::Member)).collect();
        insert_members(conn, id, &users, now)
    };
    let remove = |user: UserId| -> StoreResult<Vec<UserId>> {
        Ok(if remove_member(conn, id, user)? {
            vec![user]
        } else {
            Vec::new()
        })
    };
    Ok(match change {
        GroupChange::AddMembers { users } => (add(&users)?, Vec::new()),
        GroupChange::RemoveMember { user } => {
            let removed = remove(user)?;
            if removed.is_empty() {
                return Err(StoreError::NotFound);
            }
            (Vec::new(), removed)
        }
        GroupChange::Ban { user, by, reason } => {
            execute(conn, UPSERT_BAN, params![id.0, user.0, by.0, now, reason])?;
            execute(conn, DELETE_JOIN_REQUEST, params![id.0, user.0])?;
            execute(conn, DELETE_INVITATION, params![id.0, user.0])?;
            (Vec::new(), remove(user)?)
        }
        GroupChange::Unban { user } => {
            if execute(conn, DELETE_BAN, params![id.0, user.0])? == 0 {
                return Err(StoreError::NotFound);
            }
            (Vec::new(), Vec::new())
        }
        GroupChange::Mute { user, until } => {
            if execute(conn, SET_MUTE, params![id.0, user.0, until])? == 0 {
                return Err(StoreError::NotFound);
            }
            (Vec::new(), Vec::new())
        }
        GroupChange::SetRole { user, role } => {
            if role == Role::Owner {
                return Err(StoreError::Conflict("role"));
            }
            if execute(conn, SET_ROLE, params![id.0, user.0, role_to_sql(role)])? == 0 {
                return Err(StoreError::NotFound);
            }
            (Vec::new(), Vec::new())
        }
        GroupChange::TransferOwnership { from, to } => {
            require_member(conn, id, from)?;
            if execute(
                conn,
                SET_ROLE,
                params![id.0, to.0, role_to_sql(Role::Owner)],
            )? == 0
            {
                return Err(StoreError::NotFound);
            }
            execute(
                conn,
                SET_ROLE,
                params![id.0, from.0, role_to_sql(Role::Admin)],
            )?;
            (Vec::new(), Vec::new())
        }
        GroupChange::UpdateInfo {
            title,
            description,
            avatar,
            announcement,
            join_approval,
        } => {
            execute(
                conn,
                UPDATE_GROUP_INFO,
                params![
                    id.0,
                    title,
                    description,
                    avatar,
                    announcement,
                    join_approval
                ],
            )?;
            (Vec::new(), Vec::new())
        }
        GroupChange::SetPermissions(permissions) => {
            let json = serde_json::to_string(&permissions)
                .map_err(|e| StoreError::Backend(format!("encoding permissions: {e}")))?;
            execute(conn, SET_PERMISSIONS, params![id.0, json])?;
            (Vec::new(), Vec::new())
        }
        GroupChange::DeleteMessage { seq } => {
            let tombstone = serde_json::to_string(&MessageBody::Deleted {})
                .map_err(|e| StoreError::Backend(format!("encoding a tombstone: {e}")))?;
            // The index entry goes first: it is found through the message, which stays.
            execute(conn, UNINDEX_MESSAGE, params![id.0, seq_to_sql(seq)])?;
            if execute(
                conn,
                DELETE_MESSAGE_BODY,
                params![id.0, seq_to_sql(seq), tombstone],
            )? == 0
            {
                return Err(StoreError::NotFound);
            }
            (Vec::new(), Vec::new())
        }
        GroupChange::Dissolve => {
            let removed = query_all(conn, DELETE_ALL_MEMBERS, [id.0], |row| {
                row.get(0).map(UserId)
            })?;
            execute(conn, DISSOLVE_GROUP, params![id.0, now])?;
            execute(conn, REVOKE_ALL_LINKS, params![id.0, now])?;
            execute(conn, DELETE_ALL_JOIN_REQUESTS, [id.0])?;
            execute(conn, DELETE_ALL_INVITATIONS, [id.0])?;
            (Vec::new(), removed)
        }
        GroupChange::JoinByLink { user, link_id } => {
            refuse_banned(conn, id, user)?;
            if execute(conn, USE_LINK, params![link_id, id.0, now])? == 0 {
                return Err(StoreError::NotFound);
            }
            (add(&[user])?, Vec::new())
        }
        GroupChange::AcceptInvitation { user } => {
            refuse_banned(conn, id, user)?;
            if execute(conn, DELETE_INVITATION, params![id.0, user.0])? == 0 {
                return Err(StoreError::NotFound);
            }
            (add(&[user])?, Vec::new())
        }
        GroupChange::Notice => (Vec::new(), Vec::new()),
        GroupChange::ApproveJoinRequest { user } => {
            refuse_banned(conn, id, user)?;
            if execute(conn, DELETE_JOIN_REQUEST, params![id.0, user.0])? == 0 {
                return Err(StoreError::NotFound);
            }
            (add(&[user])?, Vec::new())
        }
    })
}

/// Applies a group change and appends its system message in the caller's transaction.
pub(crate) fn change_group(
    conn: &Connection,
    change: GroupChange,
    event: PreparedMessage,
) -> StoreResult<GroupChanged> {
    let id = event.message.conversation_id;
    // Moderators delete messages in groups; server administrators may in any conversation.
    let exists = match change {
        GroupChange::DeleteMessage { .. } => conversation(conn, id)?.is_some(),
        _ => group(conn, id)?.is_some(),
    };
    if !exists {
        return Err(StoreError::NotFound);
    }
    let now = event.message.ts;
    let (added, removed) = apply_group_change(conn, id, change, now)?;
    let appended = append_messages(conn, vec![event])?
        .pop()
        .ok_or_else(|| StoreError::Backend("append returned no result".into()))??;
    if appended.duplicate {
        // System messages carry fresh ids; a duplicate means the caller reused one.
        return Err(StoreError::Conflict("client_msg_id"));
    }
    Ok(GroupChanged {
        event: appended.message,
        added,
        removed,
    })
}

pub(crate) fn is_banned(conn: &Connection, id: ConversationId, user: UserId) -> StoreResult<bool> {
    Ok(query_opt(conn, IS_BANNED, params![id.0, user.0], |_| Ok(()))?.is_some())
}

pub(crate) fn group_bans(conn: &Connection, id: ConversationId) -> StoreResult<Vec<BanRecord>> {
    query_all(conn, GROUP_BANS, [id.0], |row| {
        Ok(BanRecord {
            user_id: UserId(row.get(0)?),
            username: row.get(1)?,
            banned_by: UserId(row.get(2)?),
            since: row.get(3)?,
            reason: row.get(4)?,
        })
    })
}

fn link_from_row(row: &Row<'_>) -> rusqlite::Result<InviteLinkRecord> {
    Ok(InviteLinkRecord {
        id: row.get(0)?,
        conversation_id: ConversationId(row.get(1)?),
        created_by: UserId(row.get(2)?),
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
        max_uses: row.get(5)?,
        uses: row.get(6)?,
        revoked: row.get::<_, Option<i64>>(7)?.is_some(),
    })
}

pub(crate) fn create_invite_link(
    conn: &Connection,
    link: &NewInviteLink,
) -> StoreResult<InviteLinkRecord> {
    if group(conn, link.conversation_id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    let id: i64 = query_opt(
        conn,
        INSERT_LINK,
        params![
            link.conversation_id.0,
            link.code_hash.as_slice(),
            link.created_by.0,
            link.created_at,
            link.expires_at,
            link.max_uses
        ],
        |row| row.get(0),
    )?
    .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING returned no row".into()))?;
    Ok(InviteLinkRecord {
        id,
        conversation_id: link.conversation_id,
        created_by: link.created_by,
        created_at: link.created_at,
        expires_at: link.expires_at,
        max_uses: link.max_uses,
        uses: 0,
        revoked: false,
    })
}

pub(crate) fn invite_links(
    conn: &Connection,
    id: ConversationId,
) -> StoreResult<Vec<InviteLinkRecord>> {
    query_all(conn, LINKS_OF, [id.0], link_from_row)
}

pub(crate) fn invite_link_by_code(
    conn: &Connection,
    code_hash: [u8; 32],
) -> StoreResult<Option<InviteLinkRecord>> {
    query_opt(conn, LINK_BY_CODE, [code_hash.as_slice()], link_from_row)
}

pub(crate) fn revoke_invite_link(
    conn: &Connection,
    id: ConversationId,
    link_id: i64,
    now: i64,
) -> StoreResult<bool> {
    Ok(execute(conn, REVOKE_LINK, params![id.0, link_id, now])? > 0)
}

pub(crate) fn create_join_request(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
    message: &str,
    now: i64,
) -> StoreResult<bool> {
    if group(conn, id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(execute(
        conn,
        INSERT_JOIN_REQUEST,
        params![id.0, user.0, message, now],
    )? > 0)
}

pub(crate) fn join_requests(
    conn: &Connection,
    id: ConversationId,
) -> StoreResult<Vec<JoinRequestRecord>> {
    query_all(conn, JOIN_REQUESTS, [id.0], |row| {
        Ok(JoinRequestRecord {
            conversation_id: ConversationId(row.get(0)?),
            user_id: UserId(row.get(1)?),
            username: row.get(2)?,
            message: row.get(3)?,
            created_at: row.get(4)?,
        })
    })
}

pub(crate) fn delete_join_request(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
) -> StoreResult<bool> {
    Ok(execute(conn, DELETE_JOIN_REQUEST, params![id.0, user.0])? > 0)
}

pub(crate) fn create_group_invitation(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
    inviter: UserId,
    now: i64,
) -> StoreResult<bool> {
    if group(conn, id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(execute(
        conn,
        INSERT_INVITATION,
        params![id.0, user.0, inviter.0, now],
    )? > 0)
}

pub(crate) fn group_invitations_of(
    conn: &Connection,
    user: UserId,
) -> StoreResult<Vec<GroupInvitationRecord>> {
    query_all(conn, INVITATIONS_OF, [user.0], |row| {
        Ok(GroupInvitationRecord {
            conversation_id: ConversationId(row.get(0)?),
            title: row.get(1)?,
            inviter_id: UserId(row.get(2)?),
            inviter_username: row.get(3)?,
            created_at: row.get(4)?,
        })
    })
}

pub(crate) fn delete_group_invitation(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
) -> StoreResult<bool> {
    Ok(execute(conn, DELETE_INVITATION, params![id.0, user.0])? > 0)
}

// --- Search ----------------------------------------------------------------------------------

pub(crate) fn index_pending(conn: &Connection, limit: u32) -> StoreResult<u32> {
    let after: i64 = query_opt(conn, SEARCH_PROGRESS, [], |row| row.get(0))?.unwrap_or(0);
    let rows = query_all(conn, MESSAGES_TO_INDEX, params![after, limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let Some(&(last, _, _)) = rows.last() else {
        return Ok(0);
    };
    let mut insert = conn.prepare_cached(INDEX_MESSAGE).map_err(backend)?;
    for (id, kind, body) in &rows {
        if !SEARCHABLE_KINDS.contains(&kind.as_str()) {
            continue;
        }
        // Bodies were written by this backend; one that no longer parses is skipped rather
        // than stopping the indexer for every message after it.
        let Ok(body) = serde_json::from_str::<MessageBody>(body) else {
            continue;
        };
        if let Some(text) = body.text() {
            insert
                .execute(params![id, tidings_store::search::index_terms(text)])
                .map_err(backend)?;
        }
    }
    execute(conn, SET_SEARCH_PROGRESS, [last])?;
    Ok(rows.len() as u32)
}

/// The kinds whose text is indexed (see [`MessageBody::text`]); SEARCH filters on the same.
const SEARCHABLE_KINDS: &[&str] = &["text", "markdown", "location", "file"];

/// Rows read per round while confirming CJK hits, and the most rows one search reads.
const SEARCH_CHUNK: u32 = 200;
const SEARCH_MAX_ROWS: u32 = 5_000;

pub(crate) fn search_messages(
    conn: &Connection,
    user: UserId,
    query: &SearchQuery,
) -> StoreResult<Vec<SearchHit>> {
    let Some(parsed) = tidings_store::search::parse_query(&query.text) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(SEARCH).map_err(backend)?;
    let mut hits = Vec::new();
    let mut skipped = 0u32;
    let mut read = 0u32;
    // Without long CJK phrases every row is a hit and one page is read; with them, rows are
    // read in chunks and confirmed until the page is full.
    let confirming = !parsed.cjk_phrases.is_empty();
    let (mut row_offset, chunk) = if confirming {
        (0, SEARCH_CHUNK)
    } else {
        (query.offset, query.limit)
    };
    loop {
        let rows: Vec<(Message, f64)> = stmt
            .query_map(
                params![
                    parsed.fts,
                    user.0,
                    query.conversation.map(|c| c.0),
                    query.sender.map(|s| s.0),
                    query.since,
                    query.until,
                    chunk,
                    row_offset
                ],
                |row| Ok((message_from_row(row)?, row.get::<_, f64>(11)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(backend)?;
        let exhausted = (rows.len() as u32) < chunk;
        read += rows.len() as u32;
        row_offset += rows.len() as u32;
        for (message, rank) in rows {
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
            // bm25 is negative, better matches more so; flip it so higher is better.
            hits.push(SearchHit {
                message,
                score: -rank,
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

pub(crate) fn advance_marker(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    kind: ReceiptKind,
    seq: Seq,
) -> StoreResult<Option<Seq>> {
    let markers = query_opt(conn, MARKERS, params![conversation.0, user.0], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let Some((last_seq, delivered, read)) = markers else {
        return Err(StoreError::NotFound);
    };
    let target = seq_to_sql(seq).min(last_seq);
    let (current, sql) = match kind {
        ReceiptKind::Delivered => (delivered, SET_DELIVERED),
        ReceiptKind::Read => (read, SET_READ),
    };
    if target <= current {
        return Ok(None);
    }
    match kind {
        ReceiptKind::Delivered => execute(conn, sql, params![conversation.0, user.0, target])?,
        ReceiptKind::Read => {
            let ordinal: i64 =
                query_opt(conn, ORDINAL_AT, params![conversation.0, target], |row| {
                    row.get(0)
                })?
                .unwrap_or(0);
            execute(conn, sql, params![conversation.0, user.0, target, ordinal])?
        }
    };
    Ok(Some(seq_from_sql(target)))
}

pub(crate) fn set_last_seen(conn: &Connection, user: UserId, ts: i64) -> StoreResult<()> {
    execute(conn, SET_LAST_SEEN, params![user.0, ts]).map(drop)
}

pub(crate) fn last_seen(conn: &Connection, users: &[UserId]) -> StoreResult<Vec<(UserId, i64)>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_ids(users.iter().map(|id| id.0));
    query_all(conn, LAST_SEEN, [ids], |row| {
        Ok((UserId(row.get(0)?), row.get(1)?))
    })
}

// --- Audit log -------------------------------------------------------------------------------

fn outcome_to_sql(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Done => "done",
        AuditOutcome::Refused => "refused",
    }
}

fn hash_from_row(row: &Row<'_>, index: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes
        .try_into()
        .map_err(|_| bad_column(index, "a hash is not 32 bytes".into()))
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let outcome = match row.get_ref(4)?.as_str()? {
        "done" => AuditOutcome::Done,
        "refused" => AuditOutcome::Refused,
        other => return Err(bad_column(4, format!("unknown outcome {other:?}"))),
    };
    let detail = row.get_ref(8)?.as_str()?;
    let detail = serde_json::from_str(detail)
        .map_err(|e| bad_column(8, format!("bad audit detail: {e}")))?;
    Ok(AuditRecord {
        id: row.get(0)?,
        entry: NewAudit {
            ts: row.get(1)?,
            actor: row.get::<_, Option<i64>>(2)?.map(UserId),
            kind: row.get(3)?,
            outcome,
            target_user: row.get::<_, Option<i64>>(5)?.map(UserId),
            conversation: row.get::<_, Option<i64>>(6)?.map(ConversationId),
            address: row.get(7)?,
            detail,
        },
        prev_hash: hash_from_row(row, 9)?,
        hash: hash_from_row(row, 10)?,
    })
}

/// Appends `entry` to the audit log in the caller's transaction and returns its id. Any write
/// closure can call it, so an action and the entry that records it commit together.
///
/// The id and the previous hash come from the newest entry, or, when pruning has removed every
/// entry, from the newest checkpoint. On the single writer nothing can slip in between.
pub(crate) fn insert_audit(conn: &Connection, entry: &NewAudit) -> StoreResult<i64> {
    let head = match query_opt(conn, AUDIT_HEAD, [], |row| {
        Ok((row.get::<_, i64>(0)?, hash_from_row(row, 1)?))
    })? {
        Some(head) => Some(head),
        None => query_opt(conn, CHECKPOINT_HEAD, [], |row| {
            Ok((row.get::<_, i64>(0)?, hash_from_row(row, 1)?))
        })?,
    };
    let (prev_id, prev_hash) = head.unwrap_or((0, GENESIS_HASH));
    let id = prev_id + 1;
    let hash = audit::entry_hash(&prev_hash, id, entry);
    execute(
        conn,
        INSERT_AUDIT,
        params![
            id,
            entry.ts,
            entry.actor.map(|u| u.0),
            entry.kind,
            outcome_to_sql(entry.outcome),
            entry.target_user.map(|u| u.0),
            entry.conversation.map(|c| c.0),
            entry.address,
            entry.detail.to_string(),
            prev_hash,
            hash,
        ],
    )?;
    Ok(id)
}

pub(crate) fn audit_entries(
    conn: &Connection,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let mut after = after.unwrap_or(0);
    let (actor, target) = (filter.actor.map(|u| u.0), filter.target_user.map(|u| u.0));
    let (since, until) = (filter.since, filter.until);
    // The most selective filter picks the index; the others are checked on the rows it yields.
    if let Some(actor) = actor {
        return query_all(
            conn,
            AUDIT_BY_ACTOR,
            params![actor, after, target, filter.kind, since, until, limit],
            audit_from_row,
        );
    }
    if let Some(target) = target {
        return query_all(
            conn,
            AUDIT_BY_TARGET,
            params![target, after, actor, filter.kind, since, until, limit],
            audit_from_row,
        );
    }
    if let Some(kind) = &filter.kind {
        return query_all(
            conn,
            AUDIT_BY_KIND,
            params![kind, after, actor, target, since, until, limit],
            audit_from_row,
        );
    }
    if let Some(since) = since {
        // Start the id range at the first entry of the time range instead of walking to it.
        match query_opt(conn, AUDIT_FIRST_SINCE, [since], |row| {
            row.get::<_, Option<i64>>(0)
        })?
        .flatten()
        {
            Some(first) => after = after.max(first - 1),
            None => return Ok(Vec::new()),
        }
    }
    query_all(
        conn,
        AUDIT_BY_ID,
        params![after, since, until, limit],
        audit_from_row,
    )
}

pub(crate) fn prune_audit(
    conn: &Connection,
    before: i64,
    now: i64,
    sign: CheckpointSigner,
) -> StoreResult<Option<AuditCheckpoint>> {
    let last = query_opt(conn, AUDIT_LAST_BEFORE, [before], |row| {
        row.get::<_, Option<i64>>(0)
    })?
    .flatten();
    let Some(last_id) = last else {
        return Ok(None);
    };
    let last_hash = query_opt(conn, AUDIT_HASH, [last_id], |row| hash_from_row(row, 0))?
        .ok_or_else(|| StoreError::Backend("the prune point vanished".into()))?;
    let pruned = execute(conn, AUDIT_PRUNE, [last_id])? as u64;
    let message = audit::checkpoint_message(last_id, &last_hash, pruned, now);
    let (key_id, signature) = sign(&message);
    execute(
        conn,
        INSERT_CHECKPOINT,
        params![last_id, last_hash, pruned, now, key_id, signature],
    )?;
    Ok(Some(AuditCheckpoint {
        last_id,
        last_hash,
        pruned,
        created_at: now,
        key_id,
        signature,
    }))
}

pub(crate) fn audit_checkpoints(conn: &Connection) -> StoreResult<Vec<AuditCheckpoint>> {
    query_all(conn, CHECKPOINTS, [i64::MIN], |row| {
        Ok(AuditCheckpoint {
            last_id: row.get(0)?,
            last_hash: hash_from_row(row, 1)?,
            pruned: row.get::<_, i64>(2)? as u64,
            created_at: row.get(3)?,
            key_id: row.get(4)?,
            signature: row.get(5)?,
        })
    })
}

// --- Uploads and files -----------------------------------------------------------------------

/// Sizes are `u64` in the API and `INTEGER` in SQLite; no real size comes near i64::MAX.
fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn upload_kind_to_sql(kind: UploadKind) -> &'static str {
    match kind {
        UploadKind::Single => "single",
        UploadKind::Partial => "partial",
        UploadKind::Final => "final",
    }
}

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<UploadRecord> {
    let kind: String = row.get(4)?;
    let kind = match kind.as_str() {
        "single" => UploadKind::Single,
        "partial" => UploadKind::Partial,
        "final" => UploadKind::Final,
        other => return Err(bad_column(4, format!("unknown upload kind {other}"))),
    };
    let parts: String = row.get(5)?;
    let parts: Vec<String> =
        serde_json::from_str(&parts).map_err(|e| bad_column(5, e.to_string()))?;
    Ok(UploadRecord {
        id: row.get(0)?,
        owner: UserId(row.get(1)?),
        length: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
        offset: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        kind,
        parts,
        metadata: row.get(6)?,
        name: row.get(7)?,
        created_at: row.get(8)?,
        expires_at: row.get(9)?,
        file_id: row.get(10)?,
    })
}

pub(crate) fn file_from_row(row: &Row<'_>) -> rusqlite::Result<FileRecord> {
    let sha: Vec<u8> = row.get(2)?;
    let sha256: [u8; 32] = sha
        .try_into()
        .map_err(|_| bad_column(2, "sha256 is not 32 bytes".into()))?;
    Ok(FileRecord {
        id: row.get(0)?,
        owner: UserId(row.get(1)?),
        sha256,
        size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        content_type: row.get(4)?,
        name: row.get(5)?,
        created_at: row.get(6)?,
        width: row.get(7)?,
        height: row.get(8)?,
    })
}

pub(crate) fn storage_usage(conn: &Connection, user: UserId) -> StoreResult<u64> {
    let uploads: i64 = query_opt(conn, UPLOAD_USAGE, [user.0], |row| row.get(0))?.unwrap_or(0);
    let files: i64 = query_opt(conn, FILE_USAGE, [user.0], |row| row.get(0))?.unwrap_or(0);
    Ok(u64::try_from(uploads.saturating_add(files)).unwrap_or(0))
}

pub(crate) fn create_upload(
    conn: &Connection,
    upload: &UploadRecord,
    quota: u64,
) -> StoreResult<bool> {
    let used = storage_usage(conn, upload.owner)?;
    if used.saturating_add(upload.length) > quota {
        return Ok(false);
    }
    let parts =
        serde_json::to_string(&upload.parts).map_err(|e| StoreError::Backend(e.to_string()))?;
    execute(
        conn,
        INSERT_UPLOAD,
        params![
            upload.id,
            upload.owner.0,
            size_to_sql(upload.length),
            size_to_sql(upload.offset),
            upload_kind_to_sql(upload.kind),
            parts,
            upload.metadata,
            upload.name,
            upload.created_at,
            upload.expires_at,
            upload.file_id,
        ],
    )?;
    Ok(true)
}

pub(crate) fn upload(conn: &Connection, id: &str) -> StoreResult<Option<UploadRecord>> {
    query_opt(conn, UPLOAD, [id], upload_from_row)
}

pub(crate) fn advance_upload(conn: &Connection, id: &str, from: u64, to: u64) -> StoreResult<bool> {
    execute(
        conn,
        ADVANCE_UPLOAD,
        params![id, size_to_sql(from), size_to_sql(to)],
    )
    .map(|n| n == 1)
}

pub(crate) fn delete_upload(conn: &Connection, id: &str) -> StoreResult<bool> {
    execute(conn, DELETE_UPLOAD, [id]).map(|n| n == 1)
}

pub(crate) fn expired_uploads(
    conn: &Connection,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<UploadRecord>> {
    query_all(conn, EXPIRED_UPLOADS, params![now, limit], upload_from_row)
}

pub(crate) fn complete_upload(
    conn: &Connection,
    upload_id: &str,
    consumed: &[String],
    file: &FileRecord,
) -> StoreResult<bool> {
    if execute(conn, COMPLETE_UPLOAD, params![upload_id, file.id])? != 1 {
        return Err(StoreError::NotFound);
    }
    for part in consumed {
        execute(conn, DELETE_UPLOAD, [part])?;
    }
    let refs: i64 = query_opt(
        conn,
        ADD_BLOB_REF,
        params![&file.sha256[..], size_to_sql(file.size)],
        |row| row.get(0),
    )?
    .unwrap_or(0);
    execute(
        conn,
        INSERT_FILE,
        params![
            file.id,
            file.owner.0,
            &file.sha256[..],
            size_to_sql(file.size),
            file.content_type,
            file.name,
            file.created_at,
            file.width,
            file.height,
        ],
    )?;
    Ok(refs == 1)
}

pub(crate) fn file(conn: &Connection, id: &str) -> StoreResult<Option<FileRecord>> {
    query_opt(conn, FILE, [id], file_from_row)
}

pub(crate) fn delete_file(conn: &Connection, id: &str) -> StoreResult<Option<(FileRecord, bool)>> {
    let Some(record) = file(conn, id)? else {
        return Ok(None);
    };
    execute(conn, DELETE_FILE, [id])?;
    let refs: i64 =
        query_opt(conn, DROP_BLOB_REF, [&record.sha256[..]], |row| row.get(0))?.unwrap_or(0);
    let last = refs <= 0;
    if last {
        execute(conn, DELETE_BLOB, [&record.sha256[..]])?;
    }
    Ok(Some((record, last)))
}

pub(crate) fn share_file(
    conn: &Connection,
    file: &str,
    conversation: ConversationId,
) -> StoreResult<bool> {
    execute(conn, SHARE_FILE, params![file, conversation.0])?;
    query_opt(conn, FILE_EXISTS, [file], |row| row.get::<_, i64>(0)).map(|r| r.is_some())
}

pub(crate) fn can_read_file(conn: &Connection, file: &str, user: UserId) -> StoreResult<bool> {
    query_opt(conn, CAN_READ_FILE, params![file, user.0], |row| {
        row.get::<_, i64>(0)
    })
    .map(|r| r.is_some())
}

// --- Rich messages ---------------------------------------------------------------------------

pub(crate) fn edit_history(
    conn: &Connection,
    conversation: ConversationId,
    seq: Seq,
) -> StoreResult<Vec<EditRecord>> {
    let versions = query_all(
        conn,
        EDIT_VERSIONS,
        params![conversation.0, seq_to_sql(seq)],
        |row| {
            let body = row.get_ref(2)?.as_str()?;
            Ok(EditRecord {
                ts: row.get(0)?,
                editor_id: UserId(row.get(1)?),
                body: serde_json::from_str(body)
                    .map_err(|e| bad_column(2, format!("bad edit body: {e}")))?,
            })
        },
    )?;
    if !versions.is_empty() {
        return Ok(versions);
    }
    // Never edited: the one version is the message itself.
    let current = messages_after(conn, conversation, seq.saturating_sub(1), 1)?;
    Ok(current
        .into_iter()
        .filter(|m| m.seq == seq && !matches!(m.body, MessageBody::Deleted {}))
        .map(|m| EditRecord {
            ts: m.ts,
            editor_id: m.sender_id,
            body: m.body,
        })
        .collect())
}

pub(crate) fn reactions(
    conn: &Connection,
    conversation: ConversationId,
    seq: Seq,
) -> StoreResult<Vec<(String, Vec<UserId>)>> {
    let rows = query_all(
        conn,
        REACTIONS,
        params![conversation.0, seq_to_sql(seq)],
        |row| Ok((row.get::<_, String>(0)?, UserId(row.get(1)?))),
    )?;
    let mut grouped: Vec<(String, Vec<UserId>)> = Vec::new();
    for (key, user) in rows {
        match grouped.iter_mut().find(|(k, _)| *k == key) {
            Some((_, users)) => users.push(user),
            None => grouped.push((key, vec![user])),
        }
    }
    Ok(grouped)
}

pub(crate) fn pinned_messages(
    conn: &Connection,
    conversation: ConversationId,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    query_all(
        conn,
        PINNED,
        params![conversation.0, limit],
        message_from_row,
    )
}

pub(crate) fn thread_messages(
    conn: &Connection,
    conversation: ConversationId,
    root: Seq,
    after: Seq,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    query_all(
        conn,
        THREAD,
        params![conversation.0, seq_to_sql(root), seq_to_sql(after), limit],
        message_from_row,
    )
}

pub(crate) fn update_conversation_settings(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    change: &UpdateConversationSettingsRequest,
    now: i64,
) -> StoreResult<ConversationSettings> {
    let notify = change.notify.map(|level| match level {
        NotifyLevel::All => "all",
        NotifyLevel::Mentions => "mentions",
        NotifyLevel::None => "none",
    });
    query_opt(
        conn,
        UPDATE_SETTINGS,
        params![
            conversation.0,
            user.0,
            notify,
            change.pinned,
            change.archived,
            change.marked_unread,
            now
        ],
        |row| {
            Ok(ConversationSettings {
                notify: match row.get_ref(0)?.as_str()? {
                    "mentions" => NotifyLevel::Mentions,
                    "none" => NotifyLevel::None,
                    _ => NotifyLevel::All,
                },
                pinned_at: row.get(1)?,
                archived: row.get(2)?,
                marked_unread: row.get(3)?,
            })
        },
    )?
    .ok_or(StoreError::NotFound)
}

pub(crate) fn set_retention(
    conn: &Connection,
    conversation: ConversationId,
    retention: Retention,
) -> StoreResult<()> {
    let keep = retention.keep_last.map(|n| n.min(i64::MAX as u64) as i64);
    if execute(
        conn,
        SET_RETENTION,
        params![conversation.0, retention.max_age_ms, keep],
    )? == 0
    {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn retention_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Retention> {
    Ok(Retention {
        max_age_ms: row.get(at)?,
        keep_last: row.get::<_, Option<i64>>(at + 1)?.map(|n| n.max(0) as u64),
    })
}

pub(crate) fn retention(conn: &Connection, conversation: ConversationId) -> StoreResult<Retention> {
    query_opt(conn, RETENTION, [conversation.0], |row| {
        retention_from_row(row, 0)
    })?
    .ok_or(StoreError::NotFound)
}

pub(crate) fn retentions(
    conn: &Connection,
    after: ConversationId,
    limit: u32,
) -> StoreResult<Vec<(ConversationId, Retention)>> {
    query_all(conn, RETENTIONS, params![after.0, limit], |row| {
        Ok((ConversationId(row.get(0)?), retention_from_row(row, 1)?))
    })
}

/// Deletes one message with everything that hangs off it.
fn delete_message_row(conn: &Connection, id: i64, conversation: i64, seq: i64) -> StoreResult<()> {
    execute(conn, UNINDEX_BY_ID, [id])?;
    execute(conn, DELETE_EDITS, params![conversation, seq])?;
    execute(conn, DELETE_REACTIONS, params![conversation, seq])?;
    execute(conn, DELETE_PIN, params![conversation, seq])?;
    execute(conn, DELETE_MESSAGE_ROW, [id])?;
    Ok(())
}

/// The newest message id, which retention never deletes: SQLite would hand the id of a
/// deleted newest row to the next message, and the search indexer, which has passed it,
/// would never index that message.
fn newest_message_id(conn: &Connection) -> StoreResult<i64> {
    Ok(query_opt(conn, NEWEST_MESSAGE_ID, [], |row| {
        row.get::<_, Option<i64>>(0)
    })?
    .flatten()
    .unwrap_or(0))
}

pub(crate) fn prune_conversation(
    conn: &Connection,
    conversation: ConversationId,
    prune: Prune,
    limit: u32,
) -> StoreResult<u32> {
    let Some(record) = self::conversation(conn, conversation)? else {
        return Err(StoreError::NotFound);
    };
    let last = seq_to_sql(record.last_seq);
    let keep_below = prune.keep_last.map_or(i64::MIN, |keep| {
        last.saturating_sub(keep.min(i64::MAX as u64) as i64) + 1
    });
    let newest = newest_message_id(conn)?;
    let rows = query_all(
        conn,
        OLDEST_IN_CONVERSATION,
        params![conversation.0, limit],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    let mut deleted = 0;
    let mut last_deleted = None;
    for (id, seq, ts) in rows {
        let expired = prune.before_ts.is_some_and(|before| ts < before);
        // Rows come oldest first: the first one to keep ends the pass.
        if !(expired || seq < keep_below) || id == newest {
            break;
        }
        delete_message_row(conn, id, conversation.0, seq)?;
        deleted += 1;
        last_deleted = Some(seq);
    }
    if let Some(seq) = last_deleted {
        execute(conn, DELETE_MENTIONS_UPTO, params![conversation.0, seq])?;
    }
    Ok(deleted)
}

pub(crate) fn prune_before(conn: &Connection, before_ts: i64, limit: u32) -> StoreResult<u32> {
    let newest = newest_message_id(conn)?;
    let rows = query_all(conn, OLDEST_MESSAGES, [limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    let mut deleted = 0;
    let mut upto: Vec<(i64, i64)> = Vec::new();
    for (id, conversation, seq, ts) in rows {
        // Ids grow with commit time, so the first message young enough ends the pass.
        if ts >= before_ts || id == newest {
            break;
        }
        delete_message_row(conn, id, conversation, seq)?;
        deleted += 1;
        match upto.iter_mut().find(|(c, _)| *c == conversation) {
            Some(entry) => entry.1 = seq,
            None => upto.push((conversation, seq)),
        }
    }
    for (conversation, seq) in upto {
        execute(conn, DELETE_MENTIONS_UPTO, params![conversation, seq])?;
    }
    Ok(deleted)
}

pub(crate) fn hide_message(
    conn: &Connection,
    user: UserId,
    conversation: ConversationId,
    seq: Seq,
) -> StoreResult<()> {
    let at = seq_to_sql(seq);
    if query_opt(
        conn,
        MESSAGE_EXISTS,
        params![conversation.0, at],
        |_| Ok(()),
    )?
    .is_none()
    {
        return Err(StoreError::NotFound);
    }
    execute(conn, HIDE_MESSAGE, params![user.0, conversation.0, at]).map(drop)
}

pub(crate) fn hidden_messages(
    conn: &Connection,
    user: UserId,
    conversation: ConversationId,
    from: Seq,
    to: Seq,
) -> StoreResult<Vec<Seq>> {
    query_all(
        conn,
        HIDDEN_IN_RANGE,
        params![user.0, conversation.0, seq_to_sql(from), seq_to_sql(to)],
        |row| row.get(0).map(seq_from_sql),
    )
}

pub(crate) fn mark_thread_read(
    conn: &Connection,
    conversation: ConversationId,
    root: Seq,
    user: UserId,
    seq: Seq,
) -> StoreResult<()> {
    execute(
        conn,
        MARK_THREAD_READ,
        params![conversation.0, seq_to_sql(root), user.0, seq_to_sql(seq)],
    )
    .map(drop)
}

pub(crate) fn threads(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    limit: u32,
) -> StoreResult<Vec<ThreadRecord>> {
    let roots = query_all(conn, THREAD_ROOTS, [conversation.0], |row| {
        row.get::<_, i64>(0)
    })?;
    let mut threads = Vec::with_capacity(roots.len());
    for root in roots {
        let root_seq = seq_from_sql(root);
        // A root removed by retention leaves its replies without a thread to show.
        let Some(message) = messages_after(conn, conversation, root_seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|m| m.seq == root_seq)
        else {
            continue;
        };
        let read: i64 = query_opt(
            conn,
            THREAD_READ,
            params![conversation.0, user.0, root],
            |r| r.get(0),
        )?
        .unwrap_or(0);
        let unread: i64 = query_opt(
            conn,
            THREAD_UNREAD,
            params![conversation.0, root, read, user.0],
            |r| r.get(0),
        )?
        .unwrap_or(0);
        threads.push(ThreadRecord {
            root: message,
            unread: unread.max(0) as u64,
            read_seq: seq_from_sql(read),
        });
    }
    threads.sort_by_key(|t| std::cmp::Reverse(t.root.thread.map_or(0, |s| s.last_seq)));
    threads.truncate(limit as usize);
    Ok(threads)
}

// --- Calls -----------------------------------------------------------------------------------

fn call_state_to_sql(state: CallState) -> &'static str {
    match state {
        CallState::Ringing => "ringing",
        CallState::Active => "active",
    }
}

fn call_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let state: String = row.get(7)?;
    let state = match state.as_str() {
        "ringing" => CallState::Ringing,
        "active" => CallState::Active,
        other => return Err(bad_column(7, format!("unknown call state {other}"))),
    };
    Ok(CallRecord {
        id: row.get(0)?,
        conversation_id: ConversationId(row.get(1)?),
        caller_id: UserId(row.get(2)?),
        caller_device: DeviceId(row.get(3)?),
        callee_id: UserId(row.get(4)?),
        callee_device: row.get::<_, Option<i64>>(5)?.map(DeviceId),
        video: row.get(6)?,
        state,
        created_at: row.get(8)?,
        ring_deadline: row.get(9)?,
        answered_at: row.get(10)?,
    })
}

fn in_call(conn: &Connection, user: UserId) -> StoreResult<bool> {
    Ok(
        query_opt(conn, CALL_AS_CALLER, [user.0], |_| Ok(()))?.is_some()
            || query_opt(conn, CALL_AS_CALLEE, [user.0], |_| Ok(()))?.is_some(),
    )
}

/// Runs on the single writer, so no other call can be created between the check and the insert.
pub(crate) fn create_call(conn: &Connection, call: &CallRecord) -> StoreResult<bool> {
    if in_call(conn, call.caller_id)? || in_call(conn, call.callee_id)? {
        return Ok(false);
    }
    execute(
        conn,
        INSERT_CALL,
        params![
            call.id,
            call.conversation_id.0,
            call.caller_id.0,
            call.caller_device.0,
            call.callee_id.0,
            call.callee_device.map(|d| d.0),
            call.video,
            call_state_to_sql(call.state),
            call.created_at,
            call.ring_deadline,
            call.answered_at,
        ],
    )?;
    Ok(true)
}

pub(crate) fn call(conn: &Connection, id: &str) -> StoreResult<Option<CallRecord>> {
    query_opt(conn, CALL, [id], call_from_row)
}

pub(crate) fn accept_call(
    conn: &Connection,
    id: &str,
    device: DeviceId,
    now: i64,
) -> StoreResult<Option<CallRecord>> {
    query_opt(conn, ACCEPT_CALL, params![id, device.0, now], call_from_row)
}

pub(crate) fn finish_call(
    conn: &Connection,
    id: &str,
    state: CallState,
) -> StoreResult<Option<CallRecord>> {
    query_opt(
        conn,
        FINISH_CALL,
        params![id, call_state_to_sql(state)],
        call_from_row,
    )
}

pub(crate) fn calls_ringing_until(
    conn: &Connection,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<CallRecord>> {
    query_all(
        conn,
        CALLS_RINGING_UNTIL,
        params![now, limit],
        call_from_row,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks SQLite how it would run each statement and fails on a full scan of a table or an
    /// index. `SCAN` of json_each is the list of ids we pass in, which is fine.
    #[test]
    fn every_statement_uses_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn =
            crate::schema::open_writer(&dir.path().join("plan.db"), &Default::default()).unwrap();
        for (name, sql) in ALL
            .iter()
            .chain(crate::oauth::ALL)
            .chain(crate::push::ALL)
            .chain(crate::mqtt::ALL)
            .chain(crate::userxml::ALL)
            .chain(crate::rooms::ALL)
            .chain(crate::account::ALL)
        {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap_or_else(|e| panic!("{name} does not prepare: {e}"));
            // The plan does not depend on the values, so every parameter is bound to NULL.
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |row| {
                    row.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                // Full-text MATCH is an index lookup too, reported as a virtual table scan.
                let full_scan = step.starts_with("SCAN")
                    && !step.contains("json_each")
                    && !step.contains("VIRTUAL TABLE INDEX");
                // A constant-only SELECT (ping) has the plan "SCAN CONSTANT ROW".
                let constant = step == "SCAN CONSTANT ROW";
                assert!(
                    !full_scan || constant,
                    "{name} scans instead of searching: {plan:?}"
                );
            }
        }
    }
}
