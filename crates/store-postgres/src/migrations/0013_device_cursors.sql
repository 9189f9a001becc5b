-- 0013_device_cursors.sql: each device's own sync cursor, as in the SQLite backend's
-- 0019_device_cursors.sql.
CREATE TABLE device_cursors (
    device_id       BIGINT NOT NULL REFERENCES devices (id),
    -- 0 marks that the device's cursors were started (see the SQLite migration).
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
);
