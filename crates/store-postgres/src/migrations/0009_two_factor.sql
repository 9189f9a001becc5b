-- 0009_two_factor.sql: two-factor sign-in with TOTP (RFC 6238) and recovery codes (as
-- SQLite's 0015_two_factor.sql).

CREATE TABLE two_factor (
    user_id      BIGINT NOT NULL REFERENCES users (id),
    secret       BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step    BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT two_factor_pkey PRIMARY KEY (user_id)
);

CREATE TABLE recovery_codes (
    user_id   BIGINT NOT NULL REFERENCES two_factor (user_id) ON DELETE CASCADE,
    code_hash BYTEA  NOT NULL,
    used_at   BIGINT,
    CONSTRAINT recovery_codes_pkey PRIMARY KEY (user_id, code_hash)
);

-- files_of pages through a user's files in id order.
CREATE INDEX files_by_owner_id ON files (owner_id, id);
