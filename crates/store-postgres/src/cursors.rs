//! The statements of devices' persisted sync cursors on PostgreSQL, as in the SQLite backend.

use crate::error::Result;
use crate::queries::{all, exec, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::{ConversationId, DeviceId, Seq};
use tidings_store::StoreError;

/// The row that marks a device's cursors as started.
const STARTED: i64 = 0;

const ADVANCE: &str = "INSERT INTO device_cursors (device_id, conversation_id, seq) \
     VALUES ($1, $2, $3) ON CONFLICT (device_id, conversation_id) \
     DO UPDATE SET seq = GREATEST(device_cursors.seq, EXCLUDED.seq)";

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    device: DeviceId,
) -> Result<Option<Vec<(ConversationId, Seq)>>> {
    let rows = all(
        c,
        "SELECT conversation_id, seq FROM device_cursors WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .map(|row| {
                (
                    ConversationId(row.get(0)),
                    u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                )
            })
            .filter(|(c, _)| c.0 != STARTED)
            .collect(),
    ))
}

pub(crate) async fn advance<C: GenericClient>(
    c: &C,
    device: DeviceId,
    cursors: &[(ConversationId, Seq)],
) -> Result<()> {
    if opt(c, "SELECT 1 FROM devices WHERE id = $1", &[&device.0])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    exec(c, ADVANCE, &[&device.0, &STARTED, &0i64]).await?;
    for (conversation, seq) in cursors {
        let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
        exec(c, ADVANCE, &[&device.0, &conversation.0, &seq]).await?;
    }
    Ok(())
}
