//! The NATS implementation of [`Bus`], for deployments with several nodes.
//!
//! Every node publishes each event once, as JSON, on one subject (`<prefix>.events`) and
//! subscribes to it, so every node (the publisher too) hears every event and delivers it to the
//! connections it holds. Core NATS is at-most-once, which the [`Bus`] contract allows: the store
//! is the truth and sessions repair gaps from it. Order is kept per publisher, which is the order
//! the sequencer publishes in (commit order).
//!
//! Backpressure: the subscription's events go into a bounded channel; while the node's
//! dispatcher is behind, the forwarding task waits, NATS buffers, and past the server's
//! slow-consumer limit NATS drops events for this node (which it then repairs from the store)
//! rather than growing memory here.

use async_trait::async_trait;
use futures_util::StreamExt;
use std::time::Duration;
use tidings_bus::{Bus, BusError, BusEvent};
use tokio::sync::mpsc;

/// How to reach NATS.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// `nats://host:port` (several may be given, separated by commas).
    pub url: String,
    /// Subjects start with this; nodes of one deployment must share it, and two deployments on
    /// one NATS must not.
    pub subject_prefix: String,
    /// Events buffered for this node's dispatcher.
    pub capacity: usize,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
}

impl NatsOptions {
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            subject_prefix: "tidings".into(),
            capacity: 4096,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Bus`] over a NATS connection.
pub struct NatsBus {
    client: async_nats::Client,
    subject: String,
    capacity: usize,
}

impl NatsBus {
    /// Connects to NATS. Later disconnections are repaired by the client, which reconnects on
    /// its own; events published meanwhile may be lost (see the module docs).
    pub async fn connect(options: NatsOptions) -> Result<NatsBus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("tidings")
            .connection_timeout(options.connect_timeout)
            // The client's own buffer in front of our channel; when both are full the client
            // drops events for this node (a slow consumer) and reports it below.
            .subscription_capacity(options.capacity.max(1))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("Lost the NATS connection; reconnecting.")
                    }
                    async_nats::Event::Connected => tracing::info!("Connected to NATS."),
                    async_nats::Event::SlowConsumer(_) => tracing::warn!(
                        "This node fell behind the NATS bus and lost events; sessions repair \
                         from the store."
                    ),
                    other => tracing::debug!(%other, "NATS client event."),
                }
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| BusError::Backend(format!("connecting to NATS: {e}")))?;
        Ok(NatsBus {
            client,
            subject: format!("{}.events", options.subject_prefix),
            capacity: options.capacity.max(1),
        })
    }

    /// Waits until everything published so far has been written to the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Backend(format!("flushing to NATS: {e}")))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let payload = serde_json::to_vec(&event)
            .map_err(|e| BusError::Backend(format!("encoding a bus event: {e}")))?;
        self.client
            .publish(self.subject.clone(), payload.into())
            .await
            .map_err(|e| BusError::Backend(format!("publishing to NATS: {e}")))
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BusEvent>, BusError> {
        let mut subscriber = self
            .client
            .subscribe(self.subject.clone())
            .await
            .map_err(|e| BusError::Backend(format!("subscribing on NATS: {e}")))?;
        // The subscription must be registered with the server before the caller relies on it
        // (the first event this node publishes must come back to it).
        self.flush().await?;
        let (tx, rx) = mpsc::channel(self.capacity);
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                match serde_json::from_slice::<BusEvent>(&message.payload) {
                    Ok(event) => {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                    // A node of another version, or garbage on our subject: skip it rather
                    // than stop hearing everything else.
                    Err(err) => tracing::warn!(%err, "Ignored an undecodable bus event."),
                }
            }
            // Dropping the subscriber unsubscribes.
        });
        Ok(rx)
    }
}
