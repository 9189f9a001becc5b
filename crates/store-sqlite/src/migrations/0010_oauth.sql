-- 0010_oauth.sql: OAuth clients registered by administrators, pending authorization codes, and
-- which client each third-party device was signed in through.

-- `secret_hash` is the SHA-256 of a confidential client's secret, NULL for public clients;
-- `redirect_uris` is a JSON array of exact URIs; `scope` is what the client may ask for.
CREATE TABLE oauth_clients (
    client_id     TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    secret_hash   BLOB,
    redirect_uris TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Authorization codes by the SHA-256 of the code; taking one deletes it.
CREATE TABLE oauth_codes (
    code_hash      BLOB    PRIMARY KEY,
    client_id      TEXT    NOT NULL,
    user_id        INTEGER NOT NULL,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
-- Deleting expired codes.
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (expires_at);
-- Deleting a client's codes.
CREATE INDEX oauth_codes_by_client ON oauth_codes (client_id);

-- The client and scope of devices signed in through a registered client.
CREATE TABLE device_grants (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id),
    client_id TEXT    NOT NULL,
    scope     TEXT    NOT NULL
) STRICT;
-- Signing out a removed client's devices.
CREATE INDEX device_grants_by_client ON device_grants (client_id);
