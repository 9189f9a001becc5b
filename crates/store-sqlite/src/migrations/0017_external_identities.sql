-- 0018_external_identities.sql: accounts linked to identities at external OpenID Connect
-- providers. An identity is the provider's issuer and the subject it gives the person; it is
-- linked to at most one account.
CREATE TABLE external_identities (
    issuer    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    user_id   INTEGER NOT NULL REFERENCES users (id),
    provider  TEXT    NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT, WITHOUT ROWID;
-- Listing an account's links.
CREATE INDEX external_identities_by_user ON external_identities (user_id);
