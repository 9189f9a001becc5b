//! The statements of push notifications: subscriptions, settings and the job queue.
//!
//! The queue needs no row locks here: every write runs on the one writer thread, so a claim
//! (select the due jobs, move their `next_at`) cannot interleave with another.

use crate::error::backend;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tidings_proto::push::{PushSettings, PushSubscription};
use tidings_proto::{ConversationId, DeviceId, UserId};
use tidings_store::{
    Appended, NewPushJob, OutboxItem, PushJob, PushJobKey, PushSubscriptionRecord, StoreError,
    StoreResult,
};

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        /// Every statement, for the index-plan test.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    UPSERT_SUBSCRIPTION = "INSERT INTO push_subscriptions (device_id, user_id, subscription, created_at) \
        SELECT id, user_id, ?3, ?4 FROM devices WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL \
        ON CONFLICT (device_id) DO UPDATE SET subscription = excluded.subscription, \
        created_at = excluded.created_at";
    SUBSCRIPTIONS_OF = "SELECT device_id, user_id, subscription, created_at FROM push_subscriptions \
        WHERE user_id IN (SELECT value FROM json_each(?1)) ORDER BY device_id";
    DELETE_SUBSCRIPTION = "DELETE FROM push_subscriptions WHERE device_id = ?1";
    DELETE_SUBSCRIPTION_IF = "DELETE FROM push_subscriptions WHERE device_id = ?1 AND subscription = ?2";
    SETTINGS = "SELECT settings FROM push_settings WHERE user_id = ?1";
    SET_SETTINGS = "INSERT INTO push_settings (user_id, settings) VALUES (?1, ?2) \
        ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings";
    ENQUEUE = "INSERT INTO push_jobs (device_id, collapse_key, payload, next_at) \
        SELECT device_id, ?2, ?3, ?4 FROM push_subscriptions WHERE device_id = ?1 \
        ON CONFLICT (device_id, collapse_key) DO UPDATE SET payload = excluded.payload, \
        version = version + 1";
    DUE = "SELECT j.device_id, j.collapse_key, j.version, j.payload, j.attempts, s.user_id, s.subscription \
        FROM push_jobs j JOIN push_subscriptions s ON s.device_id = j.device_id \
        WHERE j.next_at <= ?1 ORDER BY j.next_at LIMIT ?2";
    LEASE = "UPDATE push_jobs SET next_at = ?3 WHERE device_id = ?1 AND collapse_key = ?2";
    FINISH = "DELETE FROM push_jobs WHERE device_id = ?1 AND collapse_key = ?2 AND version = ?3";
    RELEASE = "UPDATE push_jobs SET next_at = ?3, attempts = 0 WHERE device_id = ?1 AND collapse_key = ?2";
    RETRY = "UPDATE push_jobs SET next_at = ?3, attempts = attempts + 1 \
        WHERE device_id = ?1 AND collapse_key = ?2";
    // Only when a member other than the sender has a device that can be pushed: planning a
    // message nobody can be pushed for cost three writes and two reads per message.
    OUTBOX_INSERT = "INSERT INTO push_outbox (conversation_id, seq, next_at) \
        SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM members m \
            JOIN push_subscriptions s ON s.user_id = m.user_id \
            WHERE m.conversation_id = ?1 AND m.user_id <> ?4) \
        ON CONFLICT (conversation_id, seq) DO NOTHING";
    OUTBOX_DUE = "SELECT conversation_id, seq FROM push_outbox WHERE next_at <= ?1 \
        ORDER BY next_at LIMIT ?2";
    OUTBOX_LEASE = "UPDATE push_outbox SET next_at = ?3 WHERE conversation_id = ?1 AND seq = ?2";
    OUTBOX_DELETE = "DELETE FROM push_outbox WHERE conversation_id = ?1 AND seq = ?2";
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("push JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn set_subscription(
    conn: &Connection,
    user: UserId,
    device: DeviceId,
    subscription: &PushSubscription,
    now: i64,
) -> StoreResult<()> {
    let json = to_json(subscription)?;
    let changed = conn
        .prepare_cached(UPSERT_SUBSCRIPTION)
        .and_then(|mut s| s.execute(params![device.0, user.0, json, now]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn subscription_from_row(row: &Row<'_>) -> rusqlite::Result<PushSubscriptionRecord> {
    Ok(PushSubscriptionRecord {
        device_id: DeviceId(row.get(0)?),
        user_id: UserId(row.get(1)?),
        subscription: from_json(&row.get::<_, String>(2)?)?,
        created_at: row.get(3)?,
    })
}

pub(crate) fn subscriptions_of(
    conn: &Connection,
    users: &[UserId],
) -> StoreResult<Vec<PushSubscriptionRecord>> {
    let ids = to_json(&users.iter().map(|u| u.0).collect::<Vec<_>>())?;
    conn.prepare_cached(SUBSCRIPTIONS_OF)
        .and_then(|mut s| s.query_map([ids], subscription_from_row)?.collect())
        .map_err(backend)
}

pub(crate) fn delete_subscription(
    conn: &Connection,
    device: DeviceId,
    only: Option<&PushSubscription>,
) -> StoreResult<bool> {
    let deleted = match only {
        None => conn
            .prepare_cached(DELETE_SUBSCRIPTION)
            .and_then(|mut s| s.execute([device.0])),
        Some(only) => {
            let json = to_json(only)?;
            conn.prepare_cached(DELETE_SUBSCRIPTION_IF)
                .and_then(|mut s| s.execute(params![device.0, json]))
        }
    }
    .map_err(backend)?;
    Ok(deleted > 0)
}

pub(crate) fn settings(conn: &Connection, user: UserId) -> StoreResult<PushSettings> {
    let text: Option<String> = conn
        .prepare_cached(SETTINGS)
        .and_then(|mut s| s.query_row([user.0], |r| r.get(0)).optional())
        .map_err(backend)?;
    match text {
        None => Ok(PushSettings::default()),
        Some(text) => from_json(&text).map_err(backend),
    }
}

pub(crate) fn set_settings(
    conn: &Connection,
    user: UserId,
    settings: &PushSettings,
) -> StoreResult<()> {
    let json = to_json(settings)?;
    conn.prepare_cached(SET_SETTINGS)
        .and_then(|mut s| s.execute(params![user.0, json]))
        .map_err(backend)
        .map(drop)
}

pub(crate) fn enqueue(conn: &Connection, jobs: &[NewPushJob]) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(ENQUEUE).map_err(backend)?;
    for job in jobs {
        stmt.execute(params![
            job.device_id.0,
            job.collapse_key,
            job.payload,
            job.due_at
        ])
        .map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn claim(
    conn: &Connection,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> StoreResult<Vec<PushJob>> {
    let jobs: Vec<PushJob> = conn
        .prepare_cached(DUE)
        .and_then(|mut s| {
            s.query_map(params![now, limit], |row| {
                Ok(PushJob {
                    key: PushJobKey {
                        device_id: DeviceId(row.get(0)?),
                        collapse_key: row.get(1)?,
                        version: row.get(2)?,
                    },
                    payload: row.get(3)?,
                    attempts: row.get(4)?,
                    user_id: UserId(row.get(5)?),
                    subscription: from_json(&row.get::<_, String>(6)?)?,
                })
            })?
            .collect()
        })
        .map_err(backend)?;
    let mut lease = conn.prepare_cached(LEASE).map_err(backend)?;
    for job in &jobs {
        lease
            .execute(params![
                job.key.device_id.0,
                job.key.collapse_key,
                lease_until
            ])
            .map_err(backend)?;
    }
    Ok(jobs)
}

pub(crate) fn finish(conn: &Connection, key: &PushJobKey, now: i64) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached(FINISH)
        .and_then(|mut s| s.execute(params![key.device_id.0, key.collapse_key, key.version]))
        .map_err(backend)?;
    if deleted == 0 {
        // A newer push was merged in while this one was out: send that one next.
        conn.prepare_cached(RELEASE)
            .and_then(|mut s| s.execute(params![key.device_id.0, key.collapse_key, now]))
            .map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn retry(conn: &Connection, key: &PushJobKey, next_at: i64) -> StoreResult<()> {
    conn.prepare_cached(RETRY)
        .and_then(|mut s| s.execute(params![key.device_id.0, key.collapse_key, next_at]))
        .map_err(backend)
        .map(drop)
}

/// Records the new messages of an append that may notify someone with a push subscription in
/// the outbox, in the append's transaction.
pub(crate) fn record_outbox(
    conn: &Connection,
    appended: &[StoreResult<Appended>],
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(OUTBOX_INSERT).map_err(backend)?;
    for a in appended.iter().flatten() {
        if !a.duplicate && tidings_store::push::notifies(&a.message.body) {
            let seq = i64::try_from(a.message.seq).unwrap_or(i64::MAX);
            insert
                .execute(params![
                    a.message.conversation_id.0,
                    seq,
                    a.message.ts,
                    a.message.sender_id.0
                ])
                .map_err(backend)?;
        }
    }
    Ok(())
}

pub(crate) fn claim_outbox(
    conn: &Connection,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> StoreResult<Vec<OutboxItem>> {
    let due: Vec<(i64, i64)> = conn
        .prepare_cached(OUTBOX_DUE)
        .and_then(|mut s| {
            s.query_map(params![now, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(backend)?;
    let mut lease = conn.prepare_cached(OUTBOX_LEASE).map_err(backend)?;
    for (conversation, seq) in &due {
        lease
            .execute(params![conversation, seq, lease_until])
            .map_err(backend)?;
    }
    Ok(due
        .into_iter()
        .map(|(conversation, seq)| OutboxItem {
            conversation_id: ConversationId(conversation),
            seq: u64::try_from(seq).unwrap_or(0),
        })
        .collect())
}

pub(crate) fn delete_outbox(conn: &Connection, done: &[OutboxItem]) -> StoreResult<()> {
    let mut delete = conn.prepare_cached(OUTBOX_DELETE).map_err(backend)?;
    for item in done {
        let seq = i64::try_from(item.seq).unwrap_or(i64::MAX);
        delete
            .execute(params![item.conversation_id.0, seq])
            .map_err(backend)?;
    }
    Ok(())
}
