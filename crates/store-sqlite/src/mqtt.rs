//! The statements of the MQTT gateway's records: persistent sessions and retained messages.

use crate::error::backend;
use rusqlite::{Connection, params};
use tidings_proto::UserId;
use tidings_store::{MqttRetainedRecord, MqttSessionRecord, StoreResult};

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        /// Every keyed statement, for the index-plan test.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    UPSERT_SESSION = "INSERT INTO mqtt_sessions (user_id, client_id, state, updated_at) \
        VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, client_id) DO UPDATE SET \
        state = excluded.state, updated_at = excluded.updated_at";
    DELETE_SESSION = "DELETE FROM mqtt_sessions WHERE user_id = ?1 AND client_id = ?2";
    UPSERT_RETAINED = "INSERT INTO mqtt_retained (topic, message) VALUES (?1, ?2) \
        ON CONFLICT (topic) DO UPDATE SET message = excluded.message";
    DELETE_RETAINED = "DELETE FROM mqtt_retained WHERE topic = ?1";
}

// Read once at start, every row: a scan by design, so not in the index-plan test.
const ALL_SESSIONS: &str =
    "SELECT user_id, client_id, state, updated_at FROM mqtt_sessions ORDER BY user_id, client_id";
const ALL_RETAINED: &str = "SELECT topic, message FROM mqtt_retained ORDER BY topic";

pub(crate) fn save_sessions(
    conn: &Connection,
    put: &[MqttSessionRecord],
    delete: &[(UserId, String)],
) -> StoreResult<()> {
    let mut upsert = conn.prepare_cached(UPSERT_SESSION).map_err(backend)?;
    for r in put {
        upsert
            .execute(params![r.user_id.0, r.client_id, r.state, r.updated_at])
            .map_err(backend)?;
    }
    let mut remove = conn.prepare_cached(DELETE_SESSION).map_err(backend)?;
    for (user, client_id) in delete {
        remove
            .execute(params![user.0, client_id])
            .map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn sessions(conn: &Connection) -> StoreResult<Vec<MqttSessionRecord>> {
    let mut stmt = conn.prepare_cached(ALL_SESSIONS).map_err(backend)?;
    let rows = stmt
        .query_map([], |row| {
            Ok(MqttSessionRecord {
                user_id: UserId(row.get(0)?),
                client_id: row.get(1)?,
                state: row.get(2)?,
                updated_at: row.get(3)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(crate) fn save_retained(
    conn: &Connection,
    put: &[MqttRetainedRecord],
    delete: &[String],
) -> StoreResult<()> {
    let mut upsert = conn.prepare_cached(UPSERT_RETAINED).map_err(backend)?;
    for r in put {
        upsert
            .execute(params![r.topic, r.message])
            .map_err(backend)?;
    }
    let mut remove = conn.prepare_cached(DELETE_RETAINED).map_err(backend)?;
    for topic in delete {
        remove.execute(params![topic]).map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn retained(conn: &Connection) -> StoreResult<Vec<MqttRetainedRecord>> {
    let mut stmt = conn.prepare_cached(ALL_RETAINED).map_err(backend)?;
    let rows = stmt
        .query_map([], |row| {
            Ok(MqttRetainedRecord {
                topic: row.get(0)?,
                message: row.get(1)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}
