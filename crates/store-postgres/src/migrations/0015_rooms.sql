-- 0015_rooms.sql: named rooms and their occupants, as in the SQLite backend's 0021_rooms.sql.
CREATE TABLE rooms (
    conversation_id BIGINT  PRIMARY KEY REFERENCES conversations (id),
    address         TEXT    NOT NULL UNIQUE,
    temporary       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE occupants (
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    device_id       BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    nick            TEXT   NOT NULL,
    node            BIGINT NOT NULL,
    joined_at       BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, device_id)
);
CREATE INDEX occupants_by_nick ON occupants (conversation_id, nick);
CREATE INDEX occupants_by_node ON occupants (node);
