-- Friends, friend requests, privacy settings and the per-user contacts version.

-- Pending friend requests: at most one per ordered pair (the primary key). A request is deleted
-- when it is accepted, declined or cancelled, so every row is pending.
CREATE TABLE friend_requests (
    from_id    INTEGER NOT NULL REFERENCES users (id),
    to_id      INTEGER NOT NULL REFERENCES users (id),
    note       TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (from_id, to_id)
) STRICT, WITHOUT ROWID;
-- Incoming requests of a user, oldest first; also the foreign-key checks on users by to_id.
CREATE INDEX friend_requests_by_to ON friend_requests (to_id, created_at);

-- Friendships, stored once per unordered pair with the smaller id first (`low_id < high_id`).
CREATE TABLE friendships (
    low_id     INTEGER NOT NULL REFERENCES users (id),
    high_id    INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (low_id, high_id),
    CHECK (low_id < high_id)
) STRICT, WITHOUT ROWID;
-- friends_of from the larger side; also the foreign-key checks on users by high_id.
CREATE INDEX friendships_by_high ON friendships (high_id);

-- Privacy settings; a user without a row has the defaults (everything open).
CREATE TABLE privacy_settings (
    user_id         INTEGER PRIMARY KEY REFERENCES users (id),
    direct_messages TEXT    NOT NULL CHECK (direct_messages IN ('everyone', 'friends')),
    presence        TEXT    NOT NULL CHECK (presence IN ('everyone', 'friends', 'nobody')),
    group_adds      TEXT    NOT NULL CHECK (group_adds IN ('everyone', 'friends', 'nobody')),
    updated_at      INTEGER NOT NULL
) STRICT;

-- A counter per user, bumped in the transaction of every change to the user's friends or
-- requests, so a syncing client learns whether its copy is current with one lookup.
CREATE TABLE contacts_versions (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    version INTEGER NOT NULL
) STRICT;
