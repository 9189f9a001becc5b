-- 0014_user_xml.sql: per-user XML storage, as in the SQLite backend's 0020_user_xml.sql.
CREATE TABLE user_xml (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    node       TEXT   NOT NULL,
    item_id    TEXT   NOT NULL,
    xml        TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, node, item_id)
);
