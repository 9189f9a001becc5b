-- 0002_rich.sql: replies, threads, mentions, edits, recalls, reactions, pins, per-member
-- settings, unread counts that skip annotations, and retention (SQLite's 0009_rich.sql).
--
-- `meta` holds what the server aggregates onto a message (mentions, edited_at, reaction counts,
-- thread summary, pin time) as JSON text, NULL when there is none. `ordinal` counts the
-- countable messages (not edits, recalls, reactions or pins) up to this one, so a member's
-- unread count is the conversation's count minus the ordinal at their read marker.
ALTER TABLE messages ADD COLUMN reply_to    BIGINT;
ALTER TABLE messages ADD COLUMN thread_root BIGINT;
ALTER TABLE messages ADD COLUMN target      BIGINT;
ALTER TABLE messages ADD COLUMN meta        TEXT;
ALTER TABLE messages ADD COLUMN ordinal     BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET ordinal = seq;
CREATE INDEX messages_by_thread ON messages (conversation_id, thread_root, seq)
    WHERE thread_root IS NOT NULL;
CREATE INDEX messages_by_target ON messages (conversation_id, target)
    WHERE target IS NOT NULL;

ALTER TABLE conversations ADD COLUMN message_count    BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN last_message_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN retention_ms     BIGINT;
ALTER TABLE conversations ADD COLUMN retention_keep   BIGINT;
UPDATE conversations SET message_count = last_seq, last_message_seq = last_seq;
CREATE INDEX conversations_with_retention ON conversations (id)
    WHERE retention_ms IS NOT NULL OR retention_keep IS NOT NULL;

ALTER TABLE members ADD COLUMN read_count    BIGINT  NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN notify        TEXT    NOT NULL DEFAULT 'all'
    CHECK (notify IN ('all', 'mentions', 'none'));
ALTER TABLE members ADD COLUMN pinned_at     BIGINT;
ALTER TABLE members ADD COLUMN archived      BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE members ADD COLUMN marked_unread BOOLEAN NOT NULL DEFAULT false;
UPDATE members SET read_count = read_seq;

CREATE TABLE message_edits (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    ts              BIGINT NOT NULL,
    editor_id       BIGINT NOT NULL,
    body            TEXT   NOT NULL,
    CONSTRAINT message_edits_pkey PRIMARY KEY (conversation_id, seq, version)
);

CREATE TABLE reactions (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    key             TEXT   NOT NULL,
    user_id         BIGINT NOT NULL,
    ts              BIGINT NOT NULL,
    CONSTRAINT reactions_pkey PRIMARY KEY (conversation_id, seq, key, user_id)
);

-- User 0 stands for everyone (`all`).
CREATE TABLE mentions (
    conversation_id BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    CONSTRAINT mentions_pkey PRIMARY KEY (conversation_id, user_id, seq)
);

CREATE TABLE pins (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    pinned_at       BIGINT NOT NULL,
    pinned_by       BIGINT NOT NULL,
    CONSTRAINT pins_pkey PRIMARY KEY (conversation_id, seq)
);
CREATE INDEX pins_by_time ON pins (conversation_id, pinned_at);

CREATE TABLE hidden_messages (
    user_id         BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    CONSTRAINT hidden_messages_pkey PRIMARY KEY (user_id, conversation_id, seq)
);

CREATE TABLE thread_reads (
    conversation_id BIGINT NOT NULL,
    root            BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    read_seq        BIGINT NOT NULL,
    CONSTRAINT thread_reads_pkey PRIMARY KEY (conversation_id, user_id, root)
);
