-- 0004_oauth.sql: OAuth clients registered by administrators, pending authorization codes, and
-- which client each third-party device was signed in through (the SQLite backend's 0010).

CREATE TABLE oauth_clients (
    client_id     TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    secret_hash   BYTEA,
    redirect_uris TEXT   NOT NULL,
    scope         TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT oauth_clients_pkey PRIMARY KEY (client_id)
);

CREATE TABLE oauth_codes (
    code_hash      BYTEA  NOT NULL,
    client_id      TEXT   NOT NULL,
    user_id        BIGINT NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    code_challenge TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    expires_at     BIGINT NOT NULL,
    CONSTRAINT oauth_codes_pkey PRIMARY KEY (code_hash)
);
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (expires_at);
CREATE INDEX oauth_codes_by_client ON oauth_codes (client_id);

CREATE TABLE device_grants (
    device_id BIGINT NOT NULL REFERENCES devices (id),
    client_id TEXT   NOT NULL,
    scope     TEXT   NOT NULL,
    CONSTRAINT device_grants_pkey PRIMARY KEY (device_id)
);
CREATE INDEX device_grants_by_client ON device_grants (client_id);
