//! The statements of push notifications on PostgreSQL: subscriptions, settings and the job
//! queue. Nodes claim jobs with `FOR UPDATE SKIP LOCKED`, so workers on several nodes share
//! the queue without handing a job to two of them, and outbox rows the same way.

use crate::error::{Fail, Result};
use deadpool_postgres::GenericClient;
use tidings_proto::push::{PushSettings, PushSubscription};
use tidings_proto::{ConversationId, DeviceId, UserId};
use tidings_store::{
    Appended, NewPushJob, OutboxItem, PushJob, PushJobKey, PushSubscriptionRecord, StoreError,
};

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Fail::Store(StoreError::Backend(format!("push JSON: {e}"))))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Fail::Store(StoreError::Backend(format!("stored push JSON: {e}"))))
}

pub(crate) async fn set_subscription<C: GenericClient>(
    c: &C,
    user: UserId,
    device: DeviceId,
    subscription: &PushSubscription,
    now: i64,
) -> Result<()> {
    let json = to_json(subscription)?;
    // The device row is locked so a revocation running at the same time either sees the
    // subscription (and its trigger deletes it) or makes this insert find no live device.
    let changed = c
        .execute(
            "INSERT INTO push_subscriptions (device_id, user_id, subscription, created_at) \
             SELECT id, user_id, $3, $4 FROM devices \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL FOR UPDATE \
             ON CONFLICT (device_id) DO UPDATE SET subscription = excluded.subscription, \
             created_at = excluded.created_at",
            &[&device.0, &user.0, &json, &now],
        )
        .await?;
    if changed == 0 {
        return Err(Fail::Store(StoreError::NotFound));
    }
    Ok(())
}

pub(crate) async fn subscriptions_of<C: GenericClient>(
    c: &C,
    users: &[UserId],
) -> Result<Vec<PushSubscriptionRecord>> {
    let ids: Vec<i64> = users.iter().map(|u| u.0).collect();
    let rows = c
        .query(
            "SELECT device_id, user_id, subscription, created_at FROM push_subscriptions \
             WHERE user_id = ANY($1) ORDER BY device_id",
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PushSubscriptionRecord {
                device_id: DeviceId(row.get(0)),
                user_id: UserId(row.get(1)),
                subscription: from_json(row.get::<_, &str>(2))?,
                created_at: row.get(3),
            })
        })
        .collect()
}

pub(crate) async fn delete_subscription<C: GenericClient>(
    c: &C,
    device: DeviceId,
    only: Option<&PushSubscription>,
) -> Result<bool> {
    let deleted = match only {
        None => {
            c.execute(
                "DELETE FROM push_subscriptions WHERE device_id = $1",
                &[&device.0],
            )
            .await?
        }
        Some(only) => {
            let json = to_json(only)?;
            c.execute(
                "DELETE FROM push_subscriptions WHERE device_id = $1 AND subscription = $2",
                &[&device.0, &json],
            )
            .await?
        }
    };
    Ok(deleted > 0)
}

pub(crate) async fn settings<C: GenericClient>(c: &C, user: UserId) -> Result<PushSettings> {
    let row = c
        .query_opt(
            "SELECT settings FROM push_settings WHERE user_id = $1",
            &[&user.0],
        )
        .await?;
    match row {
        None => Ok(PushSettings::default()),
        Some(row) => from_json(row.get::<_, &str>(0)),
    }
}

pub(crate) async fn set_settings<C: GenericClient>(
    c: &C,
    user: UserId,
    settings: &PushSettings,
) -> Result<()> {
    let json = to_json(settings)?;
    c.execute(
        "INSERT INTO push_settings (user_id, settings) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings",
        &[&user.0, &json],
    )
    .await?;
    Ok(())
}

pub(crate) async fn enqueue<C: GenericClient>(c: &C, jobs: &[NewPushJob]) -> Result<()> {
    // Jobs are written in key order so two nodes queueing for the same devices lock the rows
    // in the same order instead of deadlocking.
    let mut sorted: Vec<&NewPushJob> = jobs.iter().collect();
    sorted.sort_by(|a, b| (a.device_id, &a.collapse_key).cmp(&(b.device_id, &b.collapse_key)));
    let stmt = c
        .prepare(
            "INSERT INTO push_jobs (device_id, collapse_key, payload, next_at) \
             SELECT device_id, $2, $3, $4 FROM push_subscriptions WHERE device_id = $1 \
             ON CONFLICT (device_id, collapse_key) DO UPDATE SET payload = excluded.payload, \
             version = push_jobs.version + 1",
        )
        .await?;
    for job in sorted {
        c.execute(
            &stmt,
            &[
                &job.device_id.0,
                &job.collapse_key,
                &job.payload,
                &job.due_at,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn claim<C: GenericClient>(
    c: &C,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<PushJob>> {
    let rows = c
        .query(
            "WITH due AS ( \
                 SELECT device_id, collapse_key FROM push_jobs WHERE next_at <= $1 \
                 ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             leased AS ( \
                 UPDATE push_jobs j SET next_at = $3 FROM due \
                 WHERE j.device_id = due.device_id AND j.collapse_key = due.collapse_key \
                 RETURNING j.device_id, j.collapse_key, j.version, j.payload, j.attempts) \
             SELECT l.device_id, l.collapse_key, l.version, l.payload, l.attempts, \
                    s.user_id, s.subscription \
             FROM leased l JOIN push_subscriptions s ON s.device_id = l.device_id",
            &[&now, &i64::from(limit), &lease_until],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PushJob {
                key: PushJobKey {
                    device_id: DeviceId(row.get(0)),
                    collapse_key: row.get(1),
                    version: row.get(2),
                },
                payload: row.get(3),
                attempts: row.get::<_, i64>(4) as u32,
                user_id: UserId(row.get(5)),
                subscription: from_json(row.get::<_, &str>(6))?,
            })
        })
        .collect()
}

pub(crate) async fn finish<C: GenericClient>(c: &C, key: &PushJobKey, now: i64) -> Result<()> {
    let deleted = c
        .execute(
            "DELETE FROM push_jobs WHERE device_id = $1 AND collapse_key = $2 AND version = $3",
            &[&key.device_id.0, &key.collapse_key, &key.version],
        )
        .await?;
    if deleted == 0 {
        // A newer push was merged in while this one was out: send that one next.
        c.execute(
            "UPDATE push_jobs SET next_at = $3, attempts = 0 \
             WHERE device_id = $1 AND collapse_key = $2",
            &[&key.device_id.0, &key.collapse_key, &now],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn retry<C: GenericClient>(c: &C, key: &PushJobKey, next_at: i64) -> Result<()> {
    c.execute(
        "UPDATE push_jobs SET next_at = $3, attempts = attempts + 1 \
         WHERE device_id = $1 AND collapse_key = $2",
        &[&key.device_id.0, &key.collapse_key, &next_at],
    )
    .await?;
    Ok(())
}

/// Records the new messages of an append that may notify someone with a push subscription in
/// the outbox, in the append's transaction.
pub(crate) async fn record_outbox<C: GenericClient>(
    c: &C,
    appended: &[std::result::Result<Appended, StoreError>],
) -> Result<()> {
    let rows: Vec<&Appended> = appended
        .iter()
        .flatten()
        .filter(|a| !a.duplicate && tidings_store::push::notifies(&a.message.body))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let conversations: Vec<i64> = rows.iter().map(|a| a.message.conversation_id.0).collect();
    let seqs: Vec<i64> = rows
        .iter()
        .map(|a| crate::queries::seq_to_sql(a.message.seq))
        .collect();
    let ts: Vec<i64> = rows.iter().map(|a| a.message.ts).collect();
    let senders: Vec<i64> = rows.iter().map(|a| a.message.sender_id.0).collect();
    // Only when a member other than the sender has a device that can be pushed: planning a
    // message nobody can be pushed for costs writes and reads per message.
    c.execute(
        "INSERT INTO push_outbox (conversation_id, seq, next_at) \
         SELECT u.c, u.s, u.t FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], \
             $4::bigint[]) AS u(c, s, t, sender) \
         WHERE EXISTS (SELECT 1 FROM members m \
             JOIN push_subscriptions p ON p.user_id = m.user_id \
             WHERE m.conversation_id = u.c AND m.user_id <> u.sender) \
         ON CONFLICT (conversation_id, seq) DO NOTHING",
        &[&conversations, &seqs, &ts, &senders],
    )
    .await?;
    Ok(())
}

pub(crate) async fn claim_outbox<C: GenericClient>(
    c: &C,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<OutboxItem>> {
    let rows = c
        .query(
            "WITH due AS ( \
                 SELECT conversation_id, seq FROM push_outbox WHERE next_at <= $1 \
                 ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE push_outbox o SET next_at = $3 FROM due \
             WHERE o.conversation_id = due.conversation_id AND o.seq = due.seq \
             RETURNING o.conversation_id, o.seq",
            &[&now, &i64::from(limit), &lease_until],
        )
        .await?;
    let mut items: Vec<OutboxItem> = rows
        .iter()
        .map(|row| OutboxItem {
            conversation_id: ConversationId(row.get(0)),
            seq: crate::queries::seq_from_sql(row.get(1)),
        })
        .collect();
    // RETURNING does not keep the CTE's order; conversation order is as good as any.
    items.sort_unstable();
    Ok(items)
}

pub(crate) async fn delete_outbox<C: GenericClient>(c: &C, done: &[OutboxItem]) -> Result<()> {
    let conversations: Vec<i64> = done.iter().map(|i| i.conversation_id.0).collect();
    let seqs: Vec<i64> = done
        .iter()
        .map(|i| crate::queries::seq_to_sql(i.seq))
        .collect();
    c.execute(
        "DELETE FROM push_outbox o USING unnest($1::bigint[], $2::bigint[]) AS d (c, s) \
         WHERE o.conversation_id = d.c AND o.seq = d.s",
        &[&conversations, &seqs],
    )
    .await?;
    Ok(())
}
