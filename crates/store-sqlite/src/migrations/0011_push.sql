-- 0010_push.sql: push subscriptions per device, notification settings per user, and the
-- durable queue of pushes.

-- One subscription per device. `subscription` is the JSON of a `PushSubscription`.
CREATE TABLE push_subscriptions (
    device_id    INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    subscription TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
-- push_subscriptions_of.
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);

-- A user's `PushSettings` as JSON; no row means the defaults.
CREATE TABLE push_settings (
    user_id  INTEGER PRIMARY KEY REFERENCES users (id),
    settings TEXT    NOT NULL
);

-- Queued pushes, one per device and collapse key (see tidings_store::push). `next_at` is when
-- the job is due: a claim moves it to the end of the lease.
CREATE TABLE push_jobs (
    device_id    INTEGER NOT NULL REFERENCES push_subscriptions (device_id) ON DELETE CASCADE,
    collapse_key TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    version      INTEGER NOT NULL DEFAULT 1,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    PRIMARY KEY (device_id, collapse_key)
);
-- claim_push_jobs.
CREATE INDEX push_jobs_due ON push_jobs (next_at);

-- A revoked device loses its subscription (and with it its queued pushes) in the transaction
-- that revokes it; devices are kept as rows, so the foreign key alone would not do it.
CREATE TRIGGER push_subscriptions_of_revoked_devices
AFTER UPDATE OF revoked_at ON devices
WHEN NEW.revoked_at IS NOT NULL
BEGIN
    DELETE FROM push_subscriptions WHERE device_id = NEW.id;
END;
