-- 0012_external_identities.sql: accounts linked to identities at external OpenID Connect
-- providers; the SQLite backend's 0018.
CREATE TABLE external_identities (
    issuer    TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    user_id   BIGINT NOT NULL REFERENCES users (id),
    provider  TEXT   NOT NULL,
    linked_at BIGINT NOT NULL,
    CONSTRAINT external_identities_pkey PRIMARY KEY (issuer, subject)
);
CREATE INDEX external_identities_by_user ON external_identities (user_id);
