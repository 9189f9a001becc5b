-- 0014_oauth_grants.sql: bot clients (client credentials grant) and pending device
-- authorizations (RFC 8628).

-- A bot client acts as one account through one device, both created with the client; NULL for
-- every other client.
ALTER TABLE oauth_clients ADD COLUMN bot_user_id INTEGER;
ALTER TABLE oauth_clients ADD COLUMN bot_device_id INTEGER;

-- Device authorizations by the SHA-256 of the device code. `state` is 0 pending, 1 approved
-- (by `user_id`), 2 denied; a poll that collects an answer deletes the row.
CREATE TABLE device_authorizations (
    device_code_hash BLOB    PRIMARY KEY,
    user_code        TEXT    NOT NULL UNIQUE,
    client_id        TEXT    NOT NULL,
    scope            TEXT    NOT NULL,
    expires_at       INTEGER NOT NULL,
    interval_secs    INTEGER NOT NULL,
    last_polled_at   INTEGER,
    state            INTEGER NOT NULL DEFAULT 0,
    user_id          INTEGER
) STRICT, WITHOUT ROWID;
-- Deleting expired authorizations.
CREATE INDEX device_authorizations_by_expiry ON device_authorizations (expires_at);
-- Deleting a removed client's authorizations.
CREATE INDEX device_authorizations_by_client ON device_authorizations (client_id);
