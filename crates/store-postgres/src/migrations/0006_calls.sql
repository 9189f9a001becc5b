-- 0004_calls.sql: live calls (docs/calls.md), as in the SQLite backend's 0010_calls.sql. A row
-- lives from the invite to the end of the call; the finished call's record is its `call`
-- message.
CREATE TABLE calls (
    id              TEXT PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    caller_id       BIGINT NOT NULL,
    caller_device   BIGINT NOT NULL,
    callee_id       BIGINT NOT NULL,
    callee_device   BIGINT,
    video           BOOLEAN NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('ringing', 'active')),
    created_at      BIGINT NOT NULL,
    ring_deadline   BIGINT NOT NULL,
    answered_at     BIGINT
);
CREATE INDEX calls_by_caller ON calls (caller_id);
CREATE INDEX calls_by_callee ON calls (callee_id);
CREATE INDEX calls_ringing ON calls (ring_deadline) WHERE state = 'ringing';
