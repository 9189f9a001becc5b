-- Uploads (tus) and files. Bytes live in object storage under their SHA-256; these tables say
-- who owns what, how far each upload got, and who may read each file.

-- An upload in progress, or just completed (file_id set) until it expires. `kind` is 'single',
-- 'partial' or 'final'; `parts` is a JSON array of partial upload ids for a final upload.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    length INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    kind TEXT NOT NULL,
    parts TEXT NOT NULL,
    metadata TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    file_id TEXT
) STRICT, WITHOUT ROWID;
-- Quota sums incomplete uploads per owner; the janitor walks uploads by expiry.
CREATE INDEX uploads_by_owner ON uploads (owner_id, file_id);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);

-- Content-addressed bytes and how many files refer to them.
CREATE TABLE blobs (
    sha256 BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    sha256 BLOB NOT NULL REFERENCES blobs (sha256),
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- Pixel size of images, read from their header.
    width INTEGER,
    height INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX files_by_owner ON files (owner_id);
CREATE INDEX files_by_blob ON files (sha256);

-- Conversations a file was shared in (by a message); their members may read it.
CREATE TABLE file_shares (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (file_id, conversation_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX file_shares_by_conversation ON file_shares (conversation_id);
