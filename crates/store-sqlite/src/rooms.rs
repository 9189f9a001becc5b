//! The statements of named rooms and their occupants.

use crate::queries::{execute, query_all, query_opt};
use rusqlite::{Connection, Row, params};
use tidings_proto::ws::OccupantShow;
use tidings_proto::{ConversationId, DeviceId, UserId};
use tidings_store::{OccupantRecord, Occupied, RoomRecord, StoreError, StoreResult};

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        /// Every keyed statement, for the index-plan test.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    CONVERSATION_EXISTS = "SELECT 1 FROM conversations WHERE id = ?1";
    CLAIM = "INSERT INTO rooms (conversation_id, address, temporary) VALUES (?1, ?2, ?3) \
        ON CONFLICT DO NOTHING";
    BY_ADDRESS = "SELECT conversation_id, address, temporary FROM rooms WHERE address = ?1";
    OF_CONVERSATIONS = "SELECT conversation_id, address, temporary FROM rooms \
        WHERE conversation_id IN (SELECT value FROM json_each(?1)) ORDER BY conversation_id";
    SET_TEMPORARY = "UPDATE rooms SET temporary = ?2 WHERE conversation_id = ?1";
    DELETE_ROOM = "DELETE FROM rooms WHERE conversation_id = ?1";
    DELETE_OCCUPANTS = "DELETE FROM occupants WHERE conversation_id = ?1";
    NICK_TAKEN = "SELECT 1 FROM occupants WHERE conversation_id = ?1 AND nick = ?2 \
        AND user_id <> ?3 AND node IN (SELECT value FROM json_each(?4)) LIMIT 1";
    OCCUPANT = "SELECT conversation_id, device_id, user_id, nick, node, joined_at, show, status \
        FROM occupants WHERE conversation_id = ?1 AND device_id = ?2";
    UPSERT_OCCUPANT = "INSERT INTO occupants \
        (conversation_id, device_id, user_id, nick, node, joined_at, show, status) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
        ON CONFLICT (conversation_id, device_id) DO UPDATE SET \
        user_id = excluded.user_id, nick = excluded.nick, node = excluded.node, \
        joined_at = excluded.joined_at, show = excluded.show, status = excluded.status";
    RENAME_OCCUPANT = "UPDATE occupants SET nick = ?3, node = ?4, show = ?5, status = ?6 \
        WHERE conversation_id = ?1 AND device_id = ?2";
    DELETE_OCCUPANT = "DELETE FROM occupants WHERE conversation_id = ?1 AND device_id = ?2";
    OCCUPANTS = "SELECT conversation_id, device_id, user_id, nick, node, joined_at, show, status \
        FROM occupants WHERE conversation_id = ?1 \
        AND node IN (SELECT value FROM json_each(?2)) ORDER BY joined_at, device_id";
    // The sweep deletes the ranges between live nodes, each an index search.
    DELETE_BELOW = "DELETE FROM occupants WHERE node < ?1";
    DELETE_BETWEEN = "DELETE FROM occupants WHERE node > ?1 AND node < ?2";
    DELETE_ABOVE = "DELETE FROM occupants WHERE node > ?1";
}

fn json(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

fn room_from_row(row: &Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        conversation_id: ConversationId(row.get(0)?),
        address: row.get(1)?,
        temporary: row.get::<_, i64>(2)? != 0,
    })
}

fn occupant_from_row(row: &Row<'_>) -> rusqlite::Result<OccupantRecord> {
    Ok(OccupantRecord {
        conversation_id: ConversationId(row.get(0)?),
        device_id: DeviceId(row.get(1)?),
        user_id: UserId(row.get(2)?),
        nick: row.get(3)?,
        node: row.get(4)?,
        joined_at: row.get(5)?,
        show: row
            .get::<_, Option<String>>(6)?
            .and_then(|s| OccupantShow::parse(&s)),
        status: row.get(7)?,
    })
}

fn conversation_exists(conn: &Connection, conversation: ConversationId) -> StoreResult<()> {
    match query_opt(conn, CONVERSATION_EXISTS, params![conversation.0], |row| {
        row.get::<_, i64>(0)
    })? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound),
    }
}

pub(crate) fn claim(
    conn: &Connection,
    conversation: ConversationId,
    address: &str,
    temporary: bool,
) -> StoreResult<bool> {
    conversation_exists(conn, conversation)?;
    Ok(execute(
        conn,
        CLAIM,
        params![conversation.0, address, i64::from(temporary)],
    )? > 0)
}

pub(crate) fn by_address(conn: &Connection, address: &str) -> StoreResult<Option<RoomRecord>> {
    query_opt(conn, BY_ADDRESS, params![address], room_from_row)
}

pub(crate) fn of_conversations(
    conn: &Connection,
    conversations: &[ConversationId],
) -> StoreResult<Vec<RoomRecord>> {
    let ids: Vec<i64> = conversations.iter().map(|c| c.0).collect();
    query_all(conn, OF_CONVERSATIONS, params![json(&ids)], room_from_row)
}

pub(crate) fn set_temporary(
    conn: &Connection,
    conversation: ConversationId,
    temporary: bool,
) -> StoreResult<bool> {
    Ok(execute(
        conn,
        SET_TEMPORARY,
        params![conversation.0, i64::from(temporary)],
    )? > 0)
}

pub(crate) fn delete(conn: &Connection, conversation: ConversationId) -> StoreResult<()> {
    execute(conn, DELETE_OCCUPANTS, params![conversation.0])?;
    execute(conn, DELETE_ROOM, params![conversation.0])?;
    Ok(())
}

pub(crate) fn occupy(
    conn: &Connection,
    occupant: &OccupantRecord,
    live_nodes: &[i64],
) -> StoreResult<Occupied> {
    conversation_exists(conn, occupant.conversation_id)?;
    let conversation = occupant.conversation_id.0;
    let taken = query_opt(
        conn,
        NICK_TAKEN,
        params![
            conversation,
            occupant.nick,
            occupant.user_id.0,
            json(live_nodes)
        ],
        |row| row.get::<_, i64>(0),
    )?
    .is_some();
    if taken {
        return Ok(Occupied::NickTaken);
    }
    let existing = query_opt(
        conn,
        OCCUPANT,
        params![conversation, occupant.device_id.0],
        occupant_from_row,
    )?
    .filter(|row| live_nodes.contains(&row.node));
    match existing {
        Some(row) => {
            execute(
                conn,
                RENAME_OCCUPANT,
                params![
                    conversation,
                    occupant.device_id.0,
                    occupant.nick,
                    occupant.node,
                    occupant.show.map(OccupantShow::as_str),
                    occupant.status
                ],
            )?;
            if row.nick == occupant.nick {
                Ok(Occupied::Unchanged)
            } else {
                Ok(Occupied::Renamed { previous: row.nick })
            }
        }
        None => {
            execute(
                conn,
                UPSERT_OCCUPANT,
                params![
                    conversation,
                    occupant.device_id.0,
                    occupant.user_id.0,
                    occupant.nick,
                    occupant.node,
                    occupant.joined_at,
                    occupant.show.map(OccupantShow::as_str),
                    occupant.status
                ],
            )?;
            Ok(Occupied::Entered)
        }
    }
}

pub(crate) fn vacate(
    conn: &Connection,
    conversation: ConversationId,
    device: DeviceId,
) -> StoreResult<Option<OccupantRecord>> {
    let row = query_opt(
        conn,
        OCCUPANT,
        params![conversation.0, device.0],
        occupant_from_row,
    )?;
    if row.is_some() {
        execute(conn, DELETE_OCCUPANT, params![conversation.0, device.0])?;
    }
    Ok(row)
}

pub(crate) fn occupants(
    conn: &Connection,
    conversation: ConversationId,
    live_nodes: &[i64],
) -> StoreResult<Vec<OccupantRecord>> {
    query_all(
        conn,
        OCCUPANTS,
        params![conversation.0, json(live_nodes)],
        occupant_from_row,
    )
}

pub(crate) fn vacate_nodes_except(conn: &Connection, live_nodes: &[i64]) -> StoreResult<u64> {
    let mut live = live_nodes.to_vec();
    live.sort_unstable();
    live.dedup();
    let (Some(first), Some(last)) = (live.first(), live.last()) else {
        return Ok(execute(conn, DELETE_ABOVE, params![i64::MIN])? as u64
            + execute(conn, DELETE_BELOW, params![i64::MIN + 1])? as u64);
    };
    let mut deleted = execute(conn, DELETE_BELOW, params![first])?;
    for pair in live.windows(2) {
        deleted += execute(conn, DELETE_BETWEEN, params![pair[0], pair[1]])?;
    }
    deleted += execute(conn, DELETE_ABOVE, params![last])?;
    Ok(deleted as u64)
}
