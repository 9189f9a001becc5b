-- 0016_mqtt.sql: MQTT persistent sessions and retained messages, so they survive a restart.
-- Both are opaque to the store: the MQTT transport encodes them (see tidings_store::mqtt).

-- One row per persistent session, by its user and client id.
CREATE TABLE mqtt_sessions (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL,
    state      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) WITHOUT ROWID;

-- One row per retained message, by topic.
CREATE TABLE mqtt_retained (
    topic   TEXT PRIMARY KEY,
    message BLOB NOT NULL
) WITHOUT ROWID;
