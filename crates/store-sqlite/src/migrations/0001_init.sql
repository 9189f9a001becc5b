-- 0001_init.sql: the initial schema of the SQLite backend.
--
-- Every table is STRICT so a wrongly typed bind fails loudly instead of being stored as text.
-- Each index is named after the query it serves; `queries.rs` has a test that checks every
-- query the backend runs is an index lookup or range scan, never a full table scan.

-- Accounts. Usernames are stored lowercase (the store lowercases them), so UNIQUE is enough.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Invitation codes, by the SHA-256 of the code; `uses_left` counts down to 0.
CREATE TABLE invites (
    code_hash  BLOB    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Signed-in devices. Revoked devices stay (with `revoked_at`) so their ids keep meaning something.
CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    name           TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    revoked_at     INTEGER
) STRICT;
-- devices_of, revoke_other_devices.
CREATE INDEX devices_by_user ON devices (user_id);

-- Refresh tokens, by the SHA-256 of the token. Used tokens are kept (with `used_at`) until their
-- device is revoked, so that presenting one again is recognised as reuse. `user_id` has no foreign
-- key of its own: the device's already ties the token to a user, and a second one would need an
-- index on user_id that no query uses.
CREATE TABLE refresh_tokens (
    token_hash BLOB    PRIMARY KEY,
    device_id  INTEGER NOT NULL REFERENCES devices (id),
    user_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT, WITHOUT ROWID;
-- Deleting a revoked device's tokens.
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (device_id);
-- Used tokens are kept (to detect reuse) until they expire; the janitor prunes by expiry.
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Conversations. `last_seq` is the sequence counter that appends bump; `last_activity` orders the
-- conversation list; `member_count` is kept up to date so listing needs no COUNT per
-- conversation; `direct_key` ("<smaller id>:<larger id>") makes a direct conversation unique per
-- unordered pair of users and is NULL for groups.
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    last_activity INTEGER NOT NULL,
    member_count  INTEGER NOT NULL DEFAULT 0,
    direct_key    TEXT    UNIQUE
) STRICT;

-- Membership and per-member markers. The primary key serves members() in user id order and
-- every (conversation, user) lookup; the index on user_id serves conversations_of and
-- co_members (it carries conversation_id, as every index of a WITHOUT ROWID table carries the key).
CREATE TABLE members (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at       INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id);

-- Messages. The rowid is the server-wide message id (messages are never deleted, so rowids are
-- never reused). `body` is the JSON of the MessageBody, `kind` its tag, so queries can filter by
-- kind without parsing JSON. Sender columns carry no foreign keys: the hot path should not pay
-- two extra lookups per message for rows the core has already checked.
-- No foreign key on conversation_id: the append path reaches the conversation first (it bumps
-- last_seq and fails with NotFound when the row is missing), and an enforced foreign key would
-- make SQLite keep a statement journal for every insert of the hot path.
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    sender_id        INTEGER NOT NULL,
    sender_device_id INTEGER NOT NULL,
    client_msg_id    TEXT    NOT NULL,
    ts               INTEGER NOT NULL,
    kind             TEXT    NOT NULL,
    body             TEXT    NOT NULL
) STRICT;
-- History paging (messages_after, messages_before); also guarantees one message per seq.
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
-- Idempotent appends.
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, sender_id, client_msg_id);

-- Presence: when each user was last seen.
CREATE TABLE last_seen (
    user_id INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL
) STRICT;
