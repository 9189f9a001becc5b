-- 0010_mqtt.sql: MQTT persistent sessions and retained messages, so they survive a restart
-- (as SQLite's 0016_mqtt.sql). Both are opaque to the store: the MQTT transport encodes them.

CREATE TABLE mqtt_sessions (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL,
    state      BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT mqtt_sessions_pkey PRIMARY KEY (user_id, client_id)
);

CREATE TABLE mqtt_retained (
    topic   TEXT  NOT NULL,
    message BYTEA NOT NULL,
    CONSTRAINT mqtt_retained_pkey PRIMARY KEY (topic)
);
