-- 0006_groups.sql: group roles and moderation: the admin role, mutes, group settings, bans,
-- invite links, join requests and invitations.

-- `members.role` gains 'admin' and members gain `muted_until`. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt (nothing references it, so the foreign keys of
-- other tables are unaffected).
CREATE TABLE members_v2 (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL,
    muted_until     INTEGER,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
INSERT INTO members_v2 (conversation_id, user_id, role, joined_at, delivered_seq, read_seq)
    SELECT conversation_id, user_id, role, joined_at, delivered_seq, read_seq FROM members;
DROP TABLE members;
ALTER TABLE members_v2 RENAME TO members;
CREATE INDEX members_by_user ON members (user_id);

-- Group settings live on the conversation row. `permissions` is the JSON of GroupPermissions;
-- NULL means the defaults, so changing the defaults in code reaches groups that never set them.
ALTER TABLE conversations ADD COLUMN description   TEXT    NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN avatar        TEXT    NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN announcement  TEXT    NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN join_approval INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN permissions   TEXT;
ALTER TABLE conversations ADD COLUMN dissolved_at  INTEGER;

-- Bans outlive membership: a banned user cannot rejoin by link, request or invitation.
CREATE TABLE group_bans (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    banned_by       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    reason          TEXT,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
-- Foreign-key checks when a user row changes (SQLite looks up child rows by the referencing column).
CREATE INDEX group_bans_by_user ON group_bans (user_id);

-- Invite links, by the SHA-256 of the code (the code itself is shown once and never stored).
CREATE TABLE group_invite_links (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    code_hash       BLOB    NOT NULL UNIQUE,
    created_by      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    max_uses        INTEGER,
    uses            INTEGER NOT NULL DEFAULT 0,
    revoked_at      INTEGER
) STRICT;
-- invite_links, and deleting a dissolved group's links.
CREATE INDEX invite_links_by_conversation ON group_invite_links (conversation_id);

-- Requests to join groups that need approval.
CREATE TABLE group_join_requests (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    message         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
-- Foreign-key checks when a user row changes.
CREATE INDEX group_join_requests_by_user ON group_join_requests (user_id);

-- Invitations for users whose privacy settings do not let the inviter add them directly.
CREATE TABLE group_invitations (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    inviter_id      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
-- group_invitations_of.
CREATE INDEX group_invitations_by_user ON group_invitations (user_id);
