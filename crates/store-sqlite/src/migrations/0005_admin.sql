-- 0005_admin.sql: server roles, deleted accounts, and the tamper-evident audit log.

-- The administrator role, read on every admin request (never taken from a token, so a demotion
-- takes effect at once). `disabled` (from 0001) is the suspension flag.
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
-- Deleted accounts keep their row and username; see `Store::delete_user`.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;

-- The audit log: append-only, one row per audited event. `id` is gap-free from 1 (ids come from
-- max(id) + 1 on the single writer, never from AUTOINCREMENT, and rows are only ever removed as a
-- prefix by pruning). `hash` chains each row to the one before (see tidings_store::audit);
-- `detail` is compact JSON text, hashed as stored.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    ts           INTEGER NOT NULL,
    actor        INTEGER,
    kind         TEXT    NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('done', 'refused')),
    target_user  INTEGER,
    conversation INTEGER,
    address      TEXT,
    detail       TEXT    NOT NULL,
    prev_hash    BLOB    NOT NULL,
    hash         BLOB    NOT NULL
) STRICT;
-- Administrators' filters; each carries the id so a filtered page is one index range scan.
CREATE INDEX audit_by_actor ON audit_log (actor, id);
CREATE INDEX audit_by_target ON audit_log (target_user, id);
CREATE INDEX audit_by_kind ON audit_log (kind, id);
-- Time-range filters and pruning find their first and last entry by time.
CREATE INDEX audit_by_ts ON audit_log (ts);

-- What pruning removed: the last removed entry and its hash, signed by the server key, so the
-- chain that remains still verifies. Written in the same transaction as the deletion.
CREATE TABLE audit_checkpoints (
    last_id    INTEGER PRIMARY KEY,
    last_hash  BLOB    NOT NULL,
    pruned     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  BLOB    NOT NULL
) STRICT;
