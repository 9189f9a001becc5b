-- 0004_push.sql: push subscriptions per device, notification settings per user, and the
-- durable queue of pushes (as SQLite's 0010_push.sql).

CREATE TABLE push_subscriptions (
    device_id    BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users (id),
    subscription TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    CONSTRAINT push_subscriptions_pkey PRIMARY KEY (device_id)
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);

CREATE TABLE push_settings (
    user_id  BIGINT NOT NULL REFERENCES users (id),
    settings TEXT   NOT NULL,
    CONSTRAINT push_settings_pkey PRIMARY KEY (user_id)
);

CREATE TABLE push_jobs (
    device_id    BIGINT NOT NULL REFERENCES push_subscriptions (device_id) ON DELETE CASCADE,
    collapse_key TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    version      BIGINT NOT NULL DEFAULT 1,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    CONSTRAINT push_jobs_pkey PRIMARY KEY (device_id, collapse_key)
);
CREATE INDEX push_jobs_due ON push_jobs (next_at);

-- A revoked device loses its subscription in the transaction that revokes it.
CREATE FUNCTION push_forget_revoked_device() RETURNS trigger AS $$
BEGIN
    DELETE FROM push_subscriptions WHERE device_id = NEW.id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER push_subscriptions_of_revoked_devices
AFTER UPDATE OF revoked_at ON devices
FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION push_forget_revoked_device();
