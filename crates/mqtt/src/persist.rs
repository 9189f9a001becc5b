//! Persistent sessions and retained messages in the store, so they outlive a restart.
//!
//! Changes are collected in memory (the broker marks a persistent session or a retained topic
//! dirty when it changes) and written in batches: every [`SAVE_INTERVAL`] and once more when
//! the server shuts down. A crash loses at most the last interval of broker state, as a broker
//! with periodic persistence does (Mosquitto saves every 30 minutes by default); IM messages
//! are not at stake, since they live in the store anyway and a session catches up from its
//! per-conversation positions.
//!
//! At start the gateway restores every stored session that has not expired (its expiry counts
//! from when its client left, across the restart) and every retained message.

use crate::Gateway;
use crate::broker::{Inflight, Message, Queued, SessionKey, SessionState, Subscription, wall_ms};
use crate::codec::{Publish, QoS, SubOptions};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tidings_bus::BrokerPublication;
use tidings_proto::{ConversationId, Seq, UserId};
use tidings_store::{MqttRetainedRecord, MqttSessionRecord};
use tokio::time::Instant;

/// How often changed sessions and retained messages are written.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The stored form of a session (JSON in the store's opaque bytes).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    expiry_secs: u32,
    /// When the client left, ms since the epoch; a session saved while connected counts as
    /// left when it was saved.
    #[serde(default)]
    away_since_ms: Option<i64>,
    next_packet_id: u16,
    subscriptions: Vec<(String, StoredSub)>,
    im_events: Option<StoredSub>,
    /// Unacknowledged deliveries, by packet id in order.
    inflight: Vec<(u16, StoredInflight)>,
    inbound_qos2: Vec<u16>,
    queue: Vec<StoredQueued>,
    im_cursors: Vec<(ConversationId, Seq)>,
    im_baseline: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredSub {
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<u32>,
}

#[derive(Serialize, Deserialize)]
enum StoredInflight {
    Publish {
        message: Box<BrokerPublication>,
        dup_topic: String,
        subscription_ids: Vec<u32>,
        im: Option<(ConversationId, Seq)>,
    },
    Released,
}

#[derive(Serialize, Deserialize)]
struct StoredQueued {
    message: BrokerPublication,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
}

/// The stored form of a retained message: the publication and when it was saved, from which
/// its remaining expiry is counted.
#[derive(Serialize, Deserialize)]
struct StoredRetained {
    saved_at_ms: i64,
    message: BrokerPublication,
}

fn sub_out(s: &Subscription) -> StoredSub {
    StoredSub {
        qos: s.options.qos as u8,
        no_local: s.options.no_local,
        retain_as_published: s.options.retain_as_published,
        retain_handling: s.options.retain_handling,
        id: s.id,
    }
}

fn sub_in(s: &StoredSub) -> Subscription {
    Subscription {
        options: SubOptions {
            qos: QoS::from_bits(s.qos).unwrap_or(QoS::AtMostOnce),
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            retain_handling: s.retain_handling,
        },
        id: s.id,
    }
}

/// The publication a delivery in flight carries, as a broker message.
fn publish_out(p: &Publish) -> BrokerPublication {
    let message = Message {
        topic: p.topic.clone(),
        payload: p.payload.clone(),
        qos: p.qos,
        retain: p.retain,
        properties: p.properties.clone(),
        expires_at: p
            .properties
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    };
    // The session key is not needed for a stored delivery.
    message.to_relay(&(UserId(0), String::new()))
}

fn encode_session(s: &SessionState, now_ms: i64) -> Vec<u8> {
    let stored = StoredSession {
        expiry_secs: s.expiry_secs,
        away_since_ms: Some(s.away_since_ms.unwrap_or(now_ms)),
        next_packet_id: s.next_packet_id,
        subscriptions: s
            .subscriptions
            .iter()
            .map(|(f, sub)| (f.clone(), sub_out(sub)))
            .collect(),
        im_events: s.im_events.as_ref().map(sub_out),
        inflight: s
            .inflight
            .iter()
            .map(|(id, inflight)| {
                let stored = match inflight {
                    Inflight::Publish { publish, im } => StoredInflight::Publish {
                        message: Box::new(publish_out(publish)),
                        dup_topic: publish.topic.clone(),
                        subscription_ids: publish.properties.subscription_identifiers.clone(),
                        im: *im,
                    },
                    Inflight::Released => StoredInflight::Released,
                };
                (*id, stored)
            })
            .collect(),
        inbound_qos2: s.inbound_qos2.iter().copied().collect(),
        queue: s
            .queue
            .iter()
            .map(|q| StoredQueued {
                message: q.message.to_relay(&(UserId(0), String::new())),
                qos: q.qos as u8,
                retain: q.retain,
                subscription_ids: q.subscription_ids.clone(),
            })
            .collect(),
        im_cursors: s.im_cursors.iter().map(|(c, s)| (*c, *s)).collect(),
        im_baseline: s.im_baseline,
    };
    serde_json::to_vec(&stored).expect("sessions serialize")
}

/// A session as stored, back in memory (not connected). `None` when it cannot be read.
fn decode_session(bytes: &[u8]) -> Option<(SessionState, Option<i64>)> {
    let stored: StoredSession = serde_json::from_slice(bytes).ok()?;
    let mut s = SessionState::new();
    s.expiry_secs = stored.expiry_secs;
    s.next_packet_id = stored.next_packet_id.max(1);
    s.subscriptions = stored
        .subscriptions
        .iter()
        .map(|(f, sub)| (f.clone(), sub_in(sub)))
        .collect();
    s.im_events = stored.im_events.as_ref().map(sub_in);
    for (id, inflight) in stored.inflight {
        let inflight = match inflight {
            StoredInflight::Publish {
                message,
                dup_topic,
                subscription_ids,
                im,
            } => {
                let (_, m) = Message::from_relay(&message);
                let mut properties = m.properties;
                properties.subscription_identifiers = subscription_ids;
                if let Some(at) = m.expires_at {
                    properties.message_expiry_interval =
                        Some((at - Instant::now()).as_secs().max(1) as u32);
                }
                Inflight::Publish {
                    publish: Box::new(Publish {
                        dup: true,
                        qos: m.qos,
                        retain: m.retain,
                        topic: dup_topic,
                        packet_id: id,
                        properties,
                        payload: m.payload,
                    }),
                    im,
                }
            }
            StoredInflight::Released => Inflight::Released,
        };
        s.inflight.insert(id, inflight);
    }
    s.inbound_qos2 = stored.inbound_qos2.into_iter().collect();
    for q in stored.queue {
        let (_, message) = Message::from_relay(&q.message);
        s.queue.push_back(Queued {
            message: Arc::new(message),
            qos: QoS::from_bits(q.qos).unwrap_or(QoS::AtMostOnce),
            retain: q.retain,
            subscription_ids: q.subscription_ids,
        });
    }
    s.im_cursors = stored.im_cursors.into_iter().collect();
    s.im_baseline = stored.im_baseline;
    Some((s, stored.away_since_ms))
}

/// The changes to write in one batch.
#[derive(Default)]
struct Changes {
    sessions: Vec<MqttSessionRecord>,
    deleted: Vec<(UserId, String)>,
    retained: Vec<MqttRetainedRecord>,
    unretained: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.deleted.is_empty()
            && self.retained.is_empty()
            && self.unretained.is_empty()
    }
}

impl Gateway {
    /// Restores the stored sessions and retained messages. Call once, before the listeners
    /// accept connections.
    pub async fn restore(self: &Arc<Self>) -> Result<(), tidings_store::StoreError> {
        let store = self.core.store();
        let sessions = store.mqtt_sessions().await?;
        let retained = store.mqtt_retained().await?;
        let now_ms = wall_ms();
        let mut expired = Vec::new();
        let mut timers = Vec::new();
        let (mut restored_sessions, mut restored_retained) = (0usize, 0usize);
        {
            let mut state = self.broker.lock();
            for record in sessions {
                let key: SessionKey = (record.user_id, record.client_id.clone());
                let Some((mut session, away_since)) = decode_session(&record.state) else {
                    tracing::warn!(user_id = %record.user_id, client_id = %record.client_id, "Could not read a stored MQTT session; dropping it.");
                    expired.push(key);
                    continue;
                };
                let away_ms = now_ms.saturating_sub(away_since.unwrap_or(record.updated_at));
                let left = if session.expiry_secs == u32::MAX {
                    None
                } else {
                    let left = i64::from(session.expiry_secs) * 1000 - away_ms;
                    if left <= 0 {
                        expired.push(key);
                        continue;
                    }
                    Some(Duration::from_millis(left as u64))
                };
                session.away_since_ms = away_since;
                session.restored = true;
                for (filter, sub) in &session.subscriptions {
                    state.index_subscription(&key, filter, sub.clone());
                }
                state.sessions.insert(key.clone(), Box::new(session));
                if let Some(left) = left {
                    timers.push((key, left));
                }
                restored_sessions += 1;
            }
            for record in retained {
                let Ok(stored) = serde_json::from_slice::<StoredRetained>(&record.message) else {
                    continue;
                };
                let mut message = stored.message;
                if let Some(expiry) = message.expiry_secs {
                    let gone = now_ms.saturating_sub(stored.saved_at_ms) / 1000;
                    let left = i64::from(expiry) - gone;
                    if left <= 0 {
                        state.dirty_retained.insert(record.topic);
                        continue;
                    }
                    message.expiry_secs = Some(left as u32);
                }
                let (_, message) = Message::from_relay(&message);
                state.retained.insert(record.topic, Arc::new(message));
                restored_retained += 1;
            }
        }
        // Expired sessions go from the store now; the rest expire on time unless their client
        // comes back (generation 0: no connection of this node has that id).
        store.save_mqtt_sessions(vec![], expired).await?;
        for (key, left) in timers {
            let gateway = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                if let Some(gateway) = gateway.upgrade() {
                    gateway.broker.expire(&key, 0);
                }
            });
        }
        if restored_sessions + restored_retained > 0 {
            tracing::info!(
                sessions = restored_sessions,
                retained = restored_retained,
                "Restored MQTT sessions and retained messages."
            );
        }
        Ok(())
    }

    /// Writes what changed since the last save. On failure the changes stay marked and the
    /// next save tries again.
    pub async fn save(&self) {
        let now_ms = wall_ms();
        let (changes, keys, topics) = {
            let mut state = self.broker.lock();
            let keys: Vec<SessionKey> = state.dirty.drain().collect();
            let topics: Vec<String> = state.dirty_retained.drain().collect();
            let mut changes = Changes::default();
            for key in &keys {
                match state.sessions.get(key) {
                    Some(s) if s.expiry_secs > 0 && s.owned_here => {
                        changes.sessions.push(MqttSessionRecord {
                            user_id: key.0,
                            client_id: key.1.clone(),
                            state: encode_session(s, now_ms),
                            updated_at: now_ms,
                        });
                        state.stored.insert(key.clone());
                    }
                    _ => {
                        if state.stored.remove(key) {
                            changes.deleted.push(key.clone());
                        }
                    }
                }
            }
            for topic in &topics {
                match state.retained.get(topic) {
                    Some(m) => {
                        let stored = StoredRetained {
                            saved_at_ms: now_ms,
                            message: m.to_relay(&(UserId(0), String::new())),
                        };
                        changes.retained.push(MqttRetainedRecord {
                            topic: topic.clone(),
                            message: serde_json::to_vec(&stored).expect("messages serialize"),
                        });
                    }
                    None => changes.unretained.push(topic.clone()),
                }
            }
            (changes, keys, topics)
        };
        if changes.is_empty() {
            return;
        }
        let store = self.core.store();
        let saved = async {
            store
                .save_mqtt_sessions(changes.sessions, changes.deleted)
                .await?;
            store
                .save_mqtt_retained(changes.retained, changes.unretained)
                .await
        }
        .await;
        if let Err(e) = saved {
            tracing::warn!(%e, "Could not save MQTT sessions; retrying.");
            let mut state = self.broker.lock();
            for key in keys {
                // Deleted rows are stored again as far as the retry knows.
                state.stored.insert(key.clone());
                state.dirty.insert(key);
            }
            state.dirty_retained.extend(topics);
        }
    }

    /// Saves changes every [`SAVE_INTERVAL`] while the gateway exists.
    pub(crate) fn start_saving(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAVE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                gateway.save().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Properties;
    use crate::im;
    use bytes::Bytes;

    #[test]
    fn sessions_round_trip_through_their_stored_form() {
        let mut s = SessionState::new();
        s.expiry_secs = 300;
        s.subscriptions.insert(
            "a/#".into(),
            Subscription {
                options: SubOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 1,
                },
                id: Some(7),
            },
        );
        let mut properties = Properties::default();
        properties.user_properties.push(("k".into(), "v".into()));
        properties.subscription_identifiers.push(7);
        s.inflight.insert(
            3,
            Inflight::Publish {
                publish: Box::new(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: im::EVENTS.into(),
                    packet_id: 3,
                    properties,
                    payload: Bytes::from_static(b"{}"),
                }),
                im: Some((ConversationId(4), 9)),
            },
        );
        s.inflight.insert(4, Inflight::Released);
        s.inbound_qos2.insert(11);
        s.im_cursors.insert(ConversationId(4), 8);
        s.next_packet_id = 5;
        let bytes = encode_session(&s, 1_000);
        let (back, away) = decode_session(&bytes).expect("decodes");
        assert_eq!(away, Some(1_000));
        assert_eq!(back.expiry_secs, 300);
        assert_eq!(back.next_packet_id, 5);
        assert_eq!(back.subscriptions["a/#"].id, Some(7));
        assert!(back.subscriptions["a/#"].options.no_local);
        assert!(back.inbound_qos2.contains(&11));
        assert_eq!(back.im_cursors[&ConversationId(4)], 8);
        match &back.inflight[&3] {
            Inflight::Publish { publish, im } => {
                assert!(publish.dup);
                assert_eq!(publish.topic, im::EVENTS);
                assert_eq!(publish.payload, Bytes::from_static(b"{}"));
                assert_eq!(publish.properties.subscription_identifiers, vec![7]);
                assert_eq!(*im, Some((ConversationId(4), 9)));
            }
            Inflight::Released => panic!("a publication was stored"),
        }
        assert!(matches!(back.inflight[&4], Inflight::Released));
    }
}
