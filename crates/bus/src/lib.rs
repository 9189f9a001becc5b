//! The `Bus` trait: how an event committed on one node reaches the connections of every node.
//!
//! The store is the source of truth; the bus only carries notifications. A lost or late bus
//! event is repaired by the normal sync path (clients and sessions fill gaps from the store),
//! so implementations may be at-most-once. The in-process bus here serves a single node;
//! a NATS bus will serve several with the same trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, DeviceId, Seq, UserId};
use tokio::sync::mpsc;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus is closed")]
    Closed,
    #[error("bus backend failed: {0}")]
    Backend(String),
}

/// A server frame shared by every recipient, serialized to JSON at most once.
#[derive(Debug)]
pub struct OutFrame {
    frame: ServerFrame,
    json: OnceLock<Arc<str>>,
}

impl OutFrame {
    pub fn new(frame: ServerFrame) -> Arc<Self> {
        Arc::new(OutFrame {
            frame,
            json: OnceLock::new(),
        })
    }

    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The JSON text of the frame, computed on first use and shared afterwards.
    pub fn json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| {
                serde_json::to_string(&self.frame)
                    .expect("server frames always serialize")
                    .into()
            })
            .clone()
    }

    /// For message events, the conversation and sequence, which sessions use to keep each
    /// conversation gap-free and duplicate-free.
    pub fn position(&self) -> Option<(ConversationId, Seq)> {
        match &self.frame {
            ServerFrame::Message { message } => Some((message.conversation_id, message.seq)),
            _ => None,
        }
    }
}

impl Serialize for OutFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.frame.serialize(s)
    }
}

impl<'de> Deserialize<'de> for OutFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OutFrame {
            frame: ServerFrame::deserialize(d)?,
            json: OnceLock::new(),
        })
    }
}

/// Something every node must hear about.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BusEvent {
    /// Deliver a frame to every connected device of these users.
    Deliver {
        users: Arc<[UserId]>,
        /// A device that must not get it (typing indicators skip the typer's own device).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except_device: Option<DeviceId>,
        frame: Arc<OutFrame>,
    },
    /// Deliver a frame to the connections of one device of a user (call signalling meant
    /// for the device in the call, not for the user's other devices).
    DeliverToDevice {
        user: UserId,
        device: DeviceId,
        frame: Arc<OutFrame>,
    },
    /// A device was signed out: close its connections.
    DeviceRevoked {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// A conversation's membership changed: drop cached member lists.
    MembershipChanged { conversation_id: ConversationId },
    /// Which users have connections on the node `node` (a random id each node picks at start):
    /// with `full`, a periodic snapshot that replaces what other nodes knew of it; otherwise a
    /// change (users who came online there, users who left it). Other nodes use this to answer
    /// presence for users connected elsewhere; a node not heard from for a while is forgotten.
    NodePresence {
        node: u64,
        full: bool,
        online: Arc<[UserId]>,
        #[serde(default)]
        offline: Arc<[UserId]>,
    },
    /// Which devices have a connection in the foreground on the node `node` (see
    /// `NodePresence` for `full`): push notifications go only to devices awake nowhere.
    DeviceActivity {
        node: u64,
        full: bool,
        awake: Arc<[DeviceId]>,
        #[serde(default)]
        asleep: Arc<[DeviceId]>,
    },
    /// An MQTT broker-mode publication (a topic outside `tidings/`) made on node `node`, for
    /// the subscribers the other nodes hold. The node that made it has routed it already and
    /// skips its own echo.
    BrokerPublish {
        node: u64,
        publication: Arc<BrokerPublication>,
    },
}

/// What a broker-mode MQTT publication carries from node to node: the topic, the payload and
/// the properties MQTT forwards to subscribers. The transport that made it translates it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerPublication {
    /// The session that published (its user and client id), for subscriptions with no-local.
    pub from_user: UserId,
    pub from_client: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// Seconds left of the message expiry interval when it was published, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format_indicator: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
}

/// Fan-out between nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes an event to every subscriber (on every node). May wait for room when
    /// subscribers lag, which slows publishers instead of growing memory.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;
    /// Subscribes this node to all events. Each node subscribes once.
    async fn subscribe(&self) -> Result<mpsc::Receiver<BusEvent>, BusError>;
    /// Whether events reach other nodes: false for a bus within one process, so work that
    /// only serves other nodes (relaying MQTT broker publications) can be skipped.
    fn spans_nodes(&self) -> bool {
        true
    }
}

/// The bus of a single-node deployment: a bounded channel per subscriber.
pub struct InProcessBus {
    capacity: usize,
    subscribers: Mutex<Vec<mpsc::Sender<BusEvent>>>,
}

impl InProcessBus {
    /// `capacity` bounds the events buffered per subscriber.
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            capacity: capacity.max(1),
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let subscribers: Vec<_> = {
            let mut subs = self.subscribers.lock().expect("bus lock poisoned");
            subs.retain(|s| !s.is_closed());
            subs.clone()
        };
        for sub in subscribers {
            // A subscriber that went away is not an error for the publisher.
            let _ = sub.send(event.clone()).await;
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BusEvent>, BusError> {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.subscribers.lock().expect("bus lock poisoned").push(tx);
        Ok(rx)
    }

    fn spans_nodes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::ws::ServerFrame;

    #[tokio::test]
    async fn every_subscriber_hears_every_event_in_order() {
        let bus = InProcessBus::new(16);
        let mut a = bus.subscribe().await.unwrap();
        let mut b = bus.subscribe().await.unwrap();
        for i in 0..10 {
            bus.publish(BusEvent::Deliver {
                users: Arc::from(vec![UserId(1)]),
                except_device: None,
                frame: OutFrame::new(ServerFrame::Pong { id: i.to_string() }),
            })
            .await
            .unwrap();
        }
        for rx in [&mut a, &mut b] {
            for i in 0..10 {
                match rx.recv().await.unwrap() {
                    BusEvent::Deliver { frame, .. } => {
                        assert_eq!(frame.frame(), &ServerFrame::Pong { id: i.to_string() })
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn dropped_subscriber_does_not_block_publishers() {
        let bus = InProcessBus::new(1);
        let rx = bus.subscribe().await.unwrap();
        drop(rx);
        for _ in 0..5 {
            bus.publish(BusEvent::MembershipChanged {
                conversation_id: ConversationId(1),
            })
            .await
            .unwrap();
        }
    }

    #[test]
    fn out_frame_round_trips_through_json() {
        let event = BusEvent::DeviceRevoked {
            user_id: UserId(3),
            device_id: DeviceId(4),
        };
        let text = serde_json::to_string(&event).unwrap();
        let back: BusEvent = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            BusEvent::DeviceRevoked {
                user_id: UserId(3),
                device_id: DeviceId(4)
            }
        ));
    }
}
