-- 0010_calls.sql: live calls (docs/calls.md). A row lives from the invite to the end of the
-- call; the finished call's record is its `call` message, so the table only holds calls that
-- ring or run, and stays small.
CREATE TABLE calls (
    id              TEXT PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    caller_id       INTEGER NOT NULL,
    caller_device   INTEGER NOT NULL,
    callee_id       INTEGER NOT NULL,
    callee_device   INTEGER,
    video           INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('ringing', 'active')),
    created_at      INTEGER NOT NULL,
    ring_deadline   INTEGER NOT NULL,
    answered_at     INTEGER
) STRICT;
-- "Is this user in a call?" in either role, and the ring-timeout sweep.
CREATE INDEX calls_by_caller ON calls (caller_id);
CREATE INDEX calls_by_callee ON calls (callee_id);
CREATE INDEX calls_ringing ON calls (ring_deadline) WHERE state = 'ringing';
