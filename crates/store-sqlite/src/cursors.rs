//! The statements of devices' persisted sync cursors.

use crate::queries::{execute, query_all, query_opt};
use rusqlite::{Connection, params};
use tidings_proto::{ConversationId, DeviceId, Seq};
use tidings_store::{StoreError, StoreResult};

const DEVICE_EXISTS: &str = "SELECT 1 FROM devices WHERE id = ?1";
const SELECT: &str = "SELECT conversation_id, seq FROM device_cursors WHERE device_id = ?1";
const ADVANCE: &str = "INSERT INTO device_cursors (device_id, conversation_id, seq) \
    VALUES (?1, ?2, ?3) ON CONFLICT (device_id, conversation_id) \
    DO UPDATE SET seq = MAX(seq, excluded.seq)";

/// The row that marks a device's cursors as started.
const STARTED: i64 = 0;

pub(crate) fn get(
    conn: &Connection,
    device: DeviceId,
) -> StoreResult<Option<Vec<(ConversationId, Seq)>>> {
    let rows = query_all(conn, SELECT, params![device.0], |row| {
        Ok((
            ConversationId(row.get(0)?),
            u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        ))
    })?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter().filter(|(c, _)| c.0 != STARTED).collect(),
    ))
}

pub(crate) fn advance(
    conn: &Connection,
    device: DeviceId,
    cursors: &[(ConversationId, Seq)],
) -> StoreResult<()> {
    if query_opt(conn, DEVICE_EXISTS, params![device.0], |row| {
        row.get::<_, i64>(0)
    })?
    .is_none()
    {
        return Err(StoreError::NotFound);
    }
    execute(conn, ADVANCE, params![device.0, STARTED, 0])?;
    for (conversation, seq) in cursors {
        let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
        execute(conn, ADVANCE, params![device.0, conversation.0, seq])?;
    }
    Ok(())
}
