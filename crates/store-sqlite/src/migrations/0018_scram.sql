-- 0017_scram.sql: SCRAM credentials (RFC 5802) beside the argon2 hash, one row per user and
-- hash function, for SASL SCRAM-SHA-1/-256 in the XMPP gateway (docs/xmpp.md). A row carries the
-- argon2 hash it was derived with, so a row left behind by a password change is recognizably
-- stale rather than a second valid password.
CREATE TABLE scram_credentials (
    user_id       INTEGER NOT NULL REFERENCES users (id),
    algorithm     TEXT NOT NULL,
    salt          BLOB NOT NULL,
    iterations    INTEGER NOT NULL,
    stored_key    BLOB NOT NULL,
    server_key    BLOB NOT NULL,
    password_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, algorithm)
) STRICT;
