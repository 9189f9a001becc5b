-- 0015_two_factor.sql: two-factor sign-in with TOTP (RFC 6238) and recovery codes.

-- One enrolment per user. `secret` is sealed by the core (AES-256-GCM under a key derived from
-- the server key); `last_step` is the latest TOTP time step a code was accepted for, so no code
-- is accepted twice. `confirmed_at` stays NULL until the first code confirms the enrolment.
CREATE TABLE two_factor (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id),
    secret       BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- SHA-256 hashes of single-use recovery codes; `used_at` is set when one is spent.
CREATE TABLE recovery_codes (
    user_id   INTEGER NOT NULL REFERENCES two_factor (user_id) ON DELETE CASCADE,
    code_hash BLOB    NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
) STRICT, WITHOUT ROWID;
