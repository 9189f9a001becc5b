-- 0011_scram.sql: SCRAM credentials (RFC 5802) beside the argon2 hash, as in the SQLite
-- backend's 0017_scram.sql. A row carries the argon2 hash it was derived with, so a row left
-- behind by a password change is recognizably stale.
CREATE TABLE scram_credentials (
    user_id       BIGINT NOT NULL REFERENCES users (id),
    algorithm     TEXT NOT NULL,
    salt          BYTEA NOT NULL,
    iterations    BIGINT NOT NULL,
    stored_key    BYTEA NOT NULL,
    server_key    BYTEA NOT NULL,
    password_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, algorithm)
);
