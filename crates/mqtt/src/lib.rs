//! The MQTT transport: IM over MQTT 3.1.1 and 5.0 through core sessions, and a standard
//! broker for topics outside `tidings/`.
//!
//! # Layout
//! - [`codec`]: packets, strict decoding with MQTT 5 reason codes, encoding.
//! - [`topic`]: topic validation, wildcard matching, shared subscriptions.
//! - [`broker`]: sessions (live and persistent), the subscription index, retained messages.
//! - [`im`]: the `tidings/v1/...` topic scheme, translated to and from native frames.
//! - [`persist`]: persistent sessions and retained messages saved to the store in batches
//!   and restored at start.
//! - [`conn`]: one connection: CONNECT and authentication, the packet loop, flow control,
//!   keep-alive, wills, and the core [`tidings_core::session::Session`] behind IM topics.
//!
//! The transport holds no business rules: sending, receipts, typing and delivery order are the
//! core session's; broker access is `tidings_core::policy::decide_broker`. [`serve`] runs the
//! TCP listener; [`websocket_router`] gives the binary an axum route for MQTT over WebSocket,
//! so the HTTP transport never depends on this crate.

pub mod broker;
pub mod codec;
pub mod conn;
pub mod im;
pub mod persist;
pub mod topic;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tidings_core::Core;
use tidings_core::policy::BrokerRule;
use tokio::net::TcpListener;

/// MQTT: IM for devices that speak MQTT, and a broker for topics outside `tidings/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Whether to serve MQTT over TCP on `mqtt.listen`.
    pub enabled: bool,
    /// Address and port of the MQTT listener (1883 is the standard port).
    pub listen: SocketAddr,
    /// Whether to serve MQTT over TLS on `mqtt.tls_listen`, with the certificate of `[tls]`
    /// (which must be configured, or `--dev-tls` given).
    pub tls_enabled: bool,
    /// Address and port of the MQTT over TLS listener (8883 is the standard port).
    pub tls_listen: SocketAddr,
    /// Whether to serve MQTT over WebSocket at `/mqtt` on the HTTP listener.
    pub websocket: bool,
    /// Largest packet accepted, in bytes (also announced to MQTT 5 clients).
    pub max_packet_bytes: u32,
    /// QoS 1 and 2 publications a client may have unacknowledged at once (MQTT 5 receive
    /// maximum); a client that exceeds it is disconnected with 0x93.
    pub receive_maximum: u16,
    /// Deliveries the server keeps unacknowledged per client at once, at most.
    pub max_inflight: u16,
    /// Messages queued per session (for slow clients and for persistent sessions whose client
    /// is away); further messages are dropped for that session.
    pub max_queued_messages: u32,
    /// Topic aliases a client may use (MQTT 5); 0 turns them off.
    pub topic_alias_maximum: u16,
    /// Longest session expiry granted, in seconds; 3.1.1 sessions without clean session get
    /// this.
    pub max_session_expiry_secs: u32,
    /// Longest keep-alive allowed, in seconds; MQTT 5 clients asking for more (or none) are
    /// told this one, so a dead connection is found within 1.5 times it. 0 accepts what the
    /// client asks.
    pub max_keep_alive_secs: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u16,
    /// Messages per conversation a persistent session catches up at most when its device
    /// returns (older ones are announced as a gap, as in the native `sync`).
    pub catch_up_limit: u32,
    /// Broker-mode access rules. `%u` stands for the username and `%i` for the user id.
    pub broker_rules: Vec<BrokerRule>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls_enabled: false,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            websocket: true,
            max_packet_bytes: 256 * 1024,
            receive_maximum: 64,
            max_inflight: 32,
            max_queued_messages: 1000,
            topic_alias_maximum: 16,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_keep_alive_secs: 3600,
            connect_timeout_secs: 10,
            catch_up_limit: 500,
            broker_rules: vec![
                BrokerRule {
                    pattern: "users/%u/#".into(),
                    read: true,
                    write: true,
                },
                BrokerRule {
                    pattern: "shared/#".into(),
                    read: true,
                    write: false,
                },
            ],
        }
    }
}

/// Broker publications waiting to go out to the other nodes, at most; a publisher that finds
/// the queue full waits (its PUBACK with it), so a slow bus slows publishers instead of
/// growing memory.
const RELAY_QUEUE: usize = 1024;

/// How often the gateway looks for connections whose deadline (keep-alive, token renewal)
/// has passed. One sweep over every connection replaces a timer per connection; a keep-alive
/// then runs out up to this much late, well within what MQTT allows (the server may wait
/// 1.5 times the keep-alive).
const TIMER_SWEEP: std::time::Duration = std::time::Duration::from_millis(250);

/// What every MQTT connection of this node shares.
pub struct Gateway {
    pub core: Core,
    pub config: MqttConfig,
    pub broker: broker::Broker,
    next_conn: AtomicU64,
    /// The start of the gateway's clock, in which connections set their deadlines.
    epoch: tokio::time::Instant,
    /// Broker publications of this node's clients, in order, for the other nodes (through
    /// the core's bus, NATS). `None` on a single node, whose bus reaches no other node: there
    /// each publication would only be copied, queued and dropped again.
    pub(crate) relay: Option<tokio::sync::mpsc::Sender<tidings_bus::BrokerPublication>>,
}

impl Gateway {
    /// Makes the gateway and starts relaying broker publications to and from the other nodes.
    /// Must be called within the Tokio runtime.
    pub fn new(core: Core, config: MqttConfig) -> Arc<Gateway> {
        let (relay, outgoing) = if core.is_clustered() {
            let (relay, outgoing) = tokio::sync::mpsc::channel(RELAY_QUEUE);
            (Some(relay), Some(outgoing))
        } else {
            (None, None)
        };
        let gateway = Arc::new(Gateway {
            broker: broker::Broker::new(config.max_queued_messages as usize),
            core: core.clone(),
            config,
            next_conn: AtomicU64::new(1),
            epoch: tokio::time::Instant::now(),
            relay,
        });
        // One task sends, so one node's publications reach the others in the order they were
        // made.
        if let Some(mut outgoing) = outgoing {
            tokio::spawn(async move {
                while let Some(publication) = outgoing.recv().await {
                    core.publish_broker(publication).await;
                }
            });
        }
        if let Some(mut incoming) = gateway.core.broker_publications(RELAY_QUEUE) {
            let weak = Arc::downgrade(&gateway);
            tokio::spawn(async move {
                while let Some(publication) = incoming.recv().await {
                    let Some(gateway) = weak.upgrade() else { break };
                    let (from, message) = broker::Message::from_relay(&publication);
                    gateway.broker.publish(&from, message);
                }
            });
        }
        gateway.start_saving();
        gateway.start_timer_sweep();
        gateway
    }

    /// `at` on the gateway's clock: ms since the gateway started.
    pub(crate) fn clock_ms(&self, at: tokio::time::Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Wakes, every [`TIMER_SWEEP`], the connections whose deadline has passed.
    fn start_timer_sweep(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TIMER_SWEEP);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(gateway) = weak.upgrade() else { break };
                let now = gateway.clock_ms(tokio::time::Instant::now());
                gateway.broker.check_deadlines(now);
            }
        });
    }

    /// Routes a broker publication to this node's sessions and queues it for the other
    /// nodes. Returns it when the relay queue is full: the caller waits for room
    /// ([`Gateway::relay_when_room`]) before publishing more, so order is kept.
    pub fn publish(
        &self,
        from: &broker::SessionKey,
        message: broker::Message,
    ) -> Option<tidings_bus::BrokerPublication> {
        let Some(relay) = &self.relay else {
            self.broker.publish(from, message);
            return None;
        };
        let relayed = message.to_relay(from);
        self.broker.publish(from, message);
        match relay.try_send(relayed) {
            Ok(()) => None,
            Err(tokio::sync::mpsc::error::TrySendError::Full(relayed)) => Some(relayed),
            // The relay task is gone: the gateway is shutting down.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    /// Like [`Gateway::publish`], for publications outside a connection's packet loop (wills):
    /// when the relay queue is full, a task waits for room.
    pub fn publish_detached(self: &Arc<Self>, from: &broker::SessionKey, message: broker::Message) {
        if let Some(relayed) = self.publish(from, message) {
            let gateway = self.clone();
            tokio::spawn(async move {
                gateway.relay_when_room(relayed).await;
            });
        }
    }

    /// Queues a publication for the other nodes, waiting for room in the relay queue.
    pub(crate) async fn relay_when_room(&self, publication: tidings_bus::BrokerPublication) {
        if let Some(relay) = &self.relay {
            // An error means the relay task is gone: the gateway is shutting down.
            let _ = relay.send(publication).await;
        }
    }

    fn conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Accepts MQTT connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(listener, gateway, None, shutdown).await
}

/// Accepts MQTT over TLS connections on `listener` until `shutdown` resolves. The handshake
/// runs in the connection's own task, within the CONNECT timeout, so a slow or silent client
/// never holds up the others.
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(listener, gateway, Some(acceptor), shutdown).await
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%e, "Could not accept an MQTT connection.");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%e, "Could not set TCP_NODELAY.");
                }
                let gateway = gateway.clone();
                match tls.clone() {
                    None => {
                        tokio::spawn(conn::run(gateway, stream, Some(peer)));
                    }
                    Some(acceptor) => {
                        let limit = std::time::Duration::from_secs(u64::from(
                            gateway.config.connect_timeout_secs.max(1),
                        ));
                        tokio::spawn(async move {
                            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                Ok(Ok(tls_stream)) => conn::run(gateway, tls_stream, Some(peer)).await,
                                Ok(Err(e)) => tracing::debug!(%e, %peer, "MQTT TLS handshake failed."),
                                Err(_) => tracing::debug!(%peer, "MQTT TLS handshake timed out."),
                            }
                        });
                    }
                }
            }
        }
    }
}

/// The axum route for MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`), for the binary to
/// merge into the HTTP router.
pub fn websocket_router(gateway: Arc<Gateway>) -> axum::Router {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::extract::{ConnectInfo, State};
    use axum::response::Response;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn upgrade(
        State(gateway): State<Arc<Gateway>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        ws: WebSocketUpgrade,
    ) -> Response {
        let limit = gateway.config.max_packet_bytes as usize + 8;
        ws.protocols(["mqtt"])
            .max_message_size(limit)
            .max_frame_size(limit)
            .write_buffer_size(0)
            .on_upgrade(move |socket| bridge(socket, gateway, peer))
    }

    // MQTT over WebSocket is a byte stream in binary messages (packets may span messages);
    // a duplex pipe lets the connection code serve it exactly as it serves TCP.
    async fn bridge(socket: WebSocket, gateway: Arc<Gateway>, peer: SocketAddr) {
        let (ours, theirs) = tokio::io::duplex(16 * 1024);
        let conn = tokio::spawn(conn::run(gateway, theirs, Some(peer)));
        let (mut sink, mut stream) = socket.split();
        let (mut read_half, mut write_half) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(bytes) => {
                        if write_half.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    // MQTT over WebSocket uses binary messages only.
                    Message::Text(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            let _ = write_half.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read_half.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if sink.send(Message::Binary(bytes)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
        // Dropping the pipe ends the connection task if it is still running.
        drop((read_half, write_half));
        let _ = conn.await;
    }

    axum::Router::new()
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(gateway)
}
