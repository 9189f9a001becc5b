-- 0020_user_xml.sql: per-user XML storage (PEP nodes, private XML storage, vCard extras), kept
-- as opaque text the XMPP gateway serializes (see tidings_store::userxml).
CREATE TABLE user_xml (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    node       TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    xml        TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, node, item_id)
) STRICT;
