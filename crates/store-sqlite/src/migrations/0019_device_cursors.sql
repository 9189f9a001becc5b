-- 0019_device_cursors.sql: each device's own sync cursor, persisted: per conversation, the
-- highest sequence the device was handed. Transports without client-side cursors (the XMPP
-- gateway) sync from it when the device comes back, so messages that arrived while it was away
-- are delivered once and in order (docs/xmpp.md, offline delivery).
CREATE TABLE device_cursors (
    device_id       INTEGER NOT NULL REFERENCES devices (id),
    -- 0 marks that the device's cursors were started (a device with no conversations yet);
    -- conversations are never deleted, so no foreign key is needed to keep rows meaningful.
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) STRICT;
