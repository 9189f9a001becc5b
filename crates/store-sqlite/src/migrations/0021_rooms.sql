-- 0021_rooms.sql: named rooms and their occupants (XMPP Multi-User Chat; see
-- tidings_store::rooms). A room address is a group's public name on the MUC domain; an occupant
-- is a device in a group's room under a nick, on the node that holds its connection.
CREATE TABLE rooms (
    conversation_id INTEGER PRIMARY KEY REFERENCES conversations (id),
    address         TEXT    NOT NULL UNIQUE,
    temporary       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE occupants (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    device_id       INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    nick            TEXT    NOT NULL,
    node            INTEGER NOT NULL,
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, device_id)
) STRICT;
CREATE INDEX occupants_by_nick ON occupants (conversation_id, nick);
CREATE INDEX occupants_by_node ON occupants (node);
