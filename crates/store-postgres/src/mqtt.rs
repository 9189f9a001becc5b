//! The statements of the MQTT gateway's records on PostgreSQL: persistent sessions and
//! retained messages. Several nodes share them; each node writes the sessions its clients
//! hold and the retained messages its clients publish.

use crate::error::Result;
use deadpool_postgres::GenericClient;
use tidings_proto::UserId;
use tidings_store::{MqttRetainedRecord, MqttSessionRecord};

pub(crate) async fn save_sessions<C: GenericClient>(
    c: &C,
    put: &[MqttSessionRecord],
    delete: &[(UserId, String)],
) -> Result<()> {
    for r in put {
        c.execute(
            "INSERT INTO mqtt_sessions (user_id, client_id, state, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, client_id) DO UPDATE SET \
             state = excluded.state, updated_at = excluded.updated_at",
            &[&r.user_id.0, &r.client_id, &r.state, &r.updated_at],
        )
        .await?;
    }
    for (user, client_id) in delete {
        c.execute(
            "DELETE FROM mqtt_sessions WHERE user_id = $1 AND client_id = $2",
            &[&user.0, client_id],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn sessions<C: GenericClient>(c: &C) -> Result<Vec<MqttSessionRecord>> {
    let rows = c
        .query(
            "SELECT user_id, client_id, state, updated_at FROM mqtt_sessions \
             ORDER BY user_id, client_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| MqttSessionRecord {
            user_id: UserId(row.get(0)),
            client_id: row.get(1),
            state: row.get(2),
            updated_at: row.get(3),
        })
        .collect())
}

pub(crate) async fn save_retained<C: GenericClient>(
    c: &C,
    put: &[MqttRetainedRecord],
    delete: &[String],
) -> Result<()> {
    for r in put {
        c.execute(
            "INSERT INTO mqtt_retained (topic, message) VALUES ($1, $2) \
             ON CONFLICT (topic) DO UPDATE SET message = excluded.message",
            &[&r.topic, &r.message],
        )
        .await?;
    }
    for topic in delete {
        c.execute("DELETE FROM mqtt_retained WHERE topic = $1", &[topic])
            .await?;
    }
    Ok(())
}

pub(crate) async fn retained<C: GenericClient>(c: &C) -> Result<Vec<MqttRetainedRecord>> {
    let rows = c
        .query(
            "SELECT topic, message FROM mqtt_retained ORDER BY topic",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| MqttRetainedRecord {
            topic: row.get(0),
            message: row.get(1),
        })
        .collect())
}
