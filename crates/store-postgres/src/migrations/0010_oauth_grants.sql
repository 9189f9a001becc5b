-- 0008_oauth_grants.sql: bot clients (client credentials grant) and pending device
-- authorizations (RFC 8628); the SQLite backend's 0014.

ALTER TABLE oauth_clients ADD COLUMN bot_user_id BIGINT;
ALTER TABLE oauth_clients ADD COLUMN bot_device_id BIGINT;

CREATE TABLE device_authorizations (
    device_code_hash BYTEA  NOT NULL,
    user_code        TEXT   NOT NULL,
    client_id        TEXT   NOT NULL,
    scope            TEXT   NOT NULL,
    expires_at       BIGINT NOT NULL,
    interval_secs    BIGINT NOT NULL,
    last_polled_at   BIGINT,
    state            SMALLINT NOT NULL DEFAULT 0,
    user_id          BIGINT,
    CONSTRAINT device_authorizations_pkey PRIMARY KEY (device_code_hash),
    CONSTRAINT device_authorizations_user_code_key UNIQUE (user_code)
);
CREATE INDEX device_authorizations_by_expiry ON device_authorizations (expires_at);
CREATE INDEX device_authorizations_by_client ON device_authorizations (client_id);
