-- 0007_push_outbox.sql: the push outbox, committed messages whose pushes are still to be
-- planned (as SQLite's 0013_push_outbox.sql). Planners on several nodes claim rows with
-- FOR UPDATE SKIP LOCKED.

CREATE TABLE push_outbox (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    next_at         BIGINT NOT NULL,
    CONSTRAINT push_outbox_pkey PRIMARY KEY (conversation_id, seq)
);
CREATE INDEX push_outbox_due ON push_outbox (next_at);
