-- The block list: who refuses contact from whom. Read on the send path only through the core's
-- member cache, so one lookup per direction is enough.
CREATE TABLE blocks (
    blocker_id INTEGER NOT NULL REFERENCES users (id),
    blocked_id INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
) STRICT, WITHOUT ROWID;
-- Foreign-key checks on users look blocks up by either column.
CREATE INDEX blocks_by_blocked ON blocks (blocked_id);
