//! The statements of named rooms and their occupants on PostgreSQL, as in the SQLite backend.

use crate::error::Result;
use crate::queries::{all, exec, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::ws::OccupantShow;
use tidings_proto::{ConversationId, DeviceId, UserId};
use tidings_store::{OccupantRecord, Occupied, RoomRecord, StoreError};
use tokio_postgres::Row;

const OCCUPANT_COLUMNS: &str =
    "conversation_id, device_id, user_id, nick, node, joined_at, show, status";

fn room_from_row(row: &Row) -> RoomRecord {
    RoomRecord {
        conversation_id: ConversationId(row.get(0)),
        address: row.get(1),
        temporary: row.get(2),
    }
}

fn occupant_from_row(row: &Row) -> OccupantRecord {
    OccupantRecord {
        conversation_id: ConversationId(row.get(0)),
        device_id: DeviceId(row.get(1)),
        user_id: UserId(row.get(2)),
        nick: row.get(3),
        node: row.get(4),
        joined_at: row.get(5),
        show: row
            .get::<_, Option<String>>(6)
            .and_then(|s| OccupantShow::parse(&s)),
        status: row.get(7),
    }
}

async fn conversation_exists<C: GenericClient>(c: &C, conversation: ConversationId) -> Result<()> {
    // Locked, so a dissolve releasing the room and an occupant entering it are ordered.
    match opt(
        c,
        "SELECT 1 FROM conversations WHERE id = $1 FOR SHARE",
        &[&conversation.0],
    )
    .await?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound.into()),
    }
}

pub(crate) async fn claim<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    address: &str,
    temporary: bool,
) -> Result<bool> {
    conversation_exists(c, conversation).await?;
    let n = exec(
        c,
        "INSERT INTO rooms (conversation_id, address, temporary) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        &[&conversation.0, &address, &temporary],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn by_address<C: GenericClient>(
    c: &C,
    address: &str,
) -> Result<Option<RoomRecord>> {
    let row = opt(
        c,
        "SELECT conversation_id, address, temporary FROM rooms WHERE address = $1",
        &[&address],
    )
    .await?;
    Ok(row.as_ref().map(room_from_row))
}

pub(crate) async fn of_conversations<C: GenericClient>(
    c: &C,
    conversations: &[ConversationId],
) -> Result<Vec<RoomRecord>> {
    let ids: Vec<i64> = conversations.iter().map(|c| c.0).collect();
    let rows = all(
        c,
        "SELECT conversation_id, address, temporary FROM rooms \
         WHERE conversation_id = ANY($1) ORDER BY conversation_id",
        &[&ids],
    )
    .await?;
    Ok(rows.iter().map(room_from_row).collect())
}

pub(crate) async fn set_temporary<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    temporary: bool,
) -> Result<bool> {
    let n = exec(
        c,
        "UPDATE rooms SET temporary = $2 WHERE conversation_id = $1",
        &[&conversation.0, &temporary],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn delete<C: GenericClient>(c: &C, conversation: ConversationId) -> Result<()> {
    exec(
        c,
        "DELETE FROM occupants WHERE conversation_id = $1",
        &[&conversation.0],
    )
    .await?;
    exec(
        c,
        "DELETE FROM rooms WHERE conversation_id = $1",
        &[&conversation.0],
    )
    .await?;
    Ok(())
}

pub(crate) async fn occupy<C: GenericClient>(
    c: &C,
    occupant: &OccupantRecord,
    live_nodes: &[i64],
) -> Result<Occupied> {
    conversation_exists(c, occupant.conversation_id).await?;
    let conversation = occupant.conversation_id.0;
    // Serializes nick choices within one room: two nodes entering the same nick at once see
    // each other's rows.
    exec(
        c,
        "SELECT pg_advisory_xact_lock(hashtextextended('occupants', $1))",
        &[&conversation],
    )
    .await?;
    let taken = opt(
        c,
        "SELECT 1 FROM occupants WHERE conversation_id = $1 AND nick = $2 AND user_id <> $3 \
         AND node = ANY($4) LIMIT 1",
        &[
            &conversation,
            &occupant.nick,
            &occupant.user_id.0,
            &live_nodes,
        ],
    )
    .await?
    .is_some();
    if taken {
        return Ok(Occupied::NickTaken);
    }
    let existing = opt(
        c,
        &format!(
            "SELECT {OCCUPANT_COLUMNS} FROM occupants WHERE conversation_id = $1 AND device_id = $2"
        ),
        &[&conversation, &occupant.device_id.0],
    )
    .await?
    .as_ref()
    .map(occupant_from_row)
    .filter(|row| live_nodes.contains(&row.node));
    let rename = "UPDATE occupants SET nick = $3, node = $4, show = $5, status = $6 \
                  WHERE conversation_id = $1 AND device_id = $2";
    let show = occupant.show.map(OccupantShow::as_str);
    match existing {
        Some(row) => {
            exec(
                c,
                rename,
                &[
                    &conversation,
                    &occupant.device_id.0,
                    &occupant.nick,
                    &occupant.node,
                    &show,
                    &occupant.status,
                ],
            )
            .await?;
            if row.nick == occupant.nick {
                Ok(Occupied::Unchanged)
            } else {
                Ok(Occupied::Renamed { previous: row.nick })
            }
        }
        None => {
            exec(
                c,
                &format!(
                    "INSERT INTO occupants ({OCCUPANT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (conversation_id, device_id) DO UPDATE SET \
                     user_id = EXCLUDED.user_id, nick = EXCLUDED.nick, node = EXCLUDED.node, \
                     joined_at = EXCLUDED.joined_at, show = EXCLUDED.show, \
                     status = EXCLUDED.status"
                ),
                &[
                    &conversation,
                    &occupant.device_id.0,
                    &occupant.user_id.0,
                    &occupant.nick,
                    &occupant.node,
                    &occupant.joined_at,
                    &show,
                    &occupant.status,
                ],
            )
            .await?;
            Ok(Occupied::Entered)
        }
    }
}

pub(crate) async fn vacate<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    device: DeviceId,
) -> Result<Option<OccupantRecord>> {
    let row = opt(
        c,
        &format!(
            "DELETE FROM occupants WHERE conversation_id = $1 AND device_id = $2 \
             RETURNING {OCCUPANT_COLUMNS}"
        ),
        &[&conversation.0, &device.0],
    )
    .await?;
    Ok(row.as_ref().map(occupant_from_row))
}

pub(crate) async fn occupants<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    live_nodes: &[i64],
) -> Result<Vec<OccupantRecord>> {
    let rows = all(
        c,
        &format!(
            "SELECT {OCCUPANT_COLUMNS} FROM occupants WHERE conversation_id = $1 \
             AND node = ANY($2) ORDER BY joined_at, device_id"
        ),
        &[&conversation.0, &live_nodes],
    )
    .await?;
    Ok(rows.iter().map(occupant_from_row).collect())
}

pub(crate) async fn vacate_nodes_except<C: GenericClient>(
    c: &C,
    live_nodes: &[i64],
) -> Result<u64> {
    exec(
        c,
        "DELETE FROM occupants WHERE NOT (node = ANY($1))",
        &[&live_nodes],
    )
    .await
}
