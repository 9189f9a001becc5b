-- 0009_rich.sql: replies, threads, mentions, edits, recalls, reactions, pins, per-member
-- settings, unread counts that skip annotations, and retention.

-- `reply_to` and `thread_root` are what the sender chose; `target` is the message an edit,
-- recall, reaction or pin acts on. `meta` holds what the server aggregates onto a message
-- (mentions, edited_at, reaction counts, thread summary, pin time) as JSON, NULL when there is
-- none, so reading a page of history stays one query without joins.
ALTER TABLE messages ADD COLUMN reply_to    INTEGER;
ALTER TABLE messages ADD COLUMN thread_root INTEGER;
ALTER TABLE messages ADD COLUMN target      INTEGER;
ALTER TABLE messages ADD COLUMN meta        TEXT;
-- How many countable messages (not edits, recalls, reactions or pins) the conversation had up
-- to and including this one. A member's unread count is the conversation's count minus the
-- ordinal at their read marker, O(1) per conversation like before. Every earlier message
-- was countable, so the ordinal of existing rows is their sequence.
ALTER TABLE messages ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET ordinal = seq;

CREATE INDEX messages_by_thread ON messages (conversation_id, thread_root, seq)
    WHERE thread_root IS NOT NULL;
CREATE INDEX messages_by_target ON messages (conversation_id, target)
    WHERE target IS NOT NULL;

ALTER TABLE conversations ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN last_message_seq INTEGER NOT NULL DEFAULT 0;
-- A conversation's own retention: delete messages older than this many milliseconds, and all
-- but the newest `retention_keep` messages. NULL follows the server's policy.
ALTER TABLE conversations ADD COLUMN retention_ms INTEGER;
ALTER TABLE conversations ADD COLUMN retention_keep INTEGER;
UPDATE conversations SET message_count = last_seq, last_message_seq = last_seq;
CREATE INDEX conversations_with_retention ON conversations (id)
    WHERE retention_ms IS NOT NULL OR retention_keep IS NOT NULL;

-- The ordinal at the member's read marker, and the member's own settings.
ALTER TABLE members ADD COLUMN read_count    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN notify        TEXT    NOT NULL DEFAULT 'all'
    CHECK (notify IN ('all', 'mentions', 'none'));
ALTER TABLE members ADD COLUMN pinned_at     INTEGER;
ALTER TABLE members ADD COLUMN archived      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN marked_unread INTEGER NOT NULL DEFAULT 0;
UPDATE members SET read_count = read_seq;

-- Earlier bodies of edited messages; version 0 is the original.
CREATE TABLE message_edits (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    ts              INTEGER NOT NULL,
    editor_id       INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (conversation_id, seq, version)
) STRICT, WITHOUT ROWID;

-- Who reacted how; the counts on the message are aggregated from here.
CREATE TABLE reactions (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    key             TEXT    NOT NULL,
    user_id         INTEGER NOT NULL,
    ts              INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq, key, user_id)
) STRICT, WITHOUT ROWID;

-- Mentions for the mention count; user 0 stands for everyone (`all`).
CREATE TABLE mentions (
    conversation_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE pins (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    pinned_at       INTEGER NOT NULL,
    pinned_by       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX pins_by_time ON pins (conversation_id, pinned_at);

-- Messages a member deleted for themselves only: their own views show a tombstone instead.
CREATE TABLE hidden_messages (
    user_id         INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
) STRICT, WITHOUT ROWID;

-- How far each member has read each thread they looked at.
CREATE TABLE thread_reads (
    conversation_id INTEGER NOT NULL,
    root            INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id, root)
) STRICT, WITHOUT ROWID;

-- Avatars are file ids. A file that is someone's (or a group's) avatar is readable by every
-- signed-in user, so these lookups back `can_read_file`.
ALTER TABLE profiles ADD COLUMN avatar TEXT NOT NULL DEFAULT '';
CREATE INDEX profiles_by_avatar ON profiles (avatar);
CREATE INDEX conversations_by_avatar ON conversations (avatar);
