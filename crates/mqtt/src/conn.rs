//! One MQTT connection: CONNECT and authentication, then the packet loop.
//!
//! The loop waits on four things at once: bytes from the client, output of the connection's
//! core session (IM events and answers), and the connection's [`ConnSignal`]: the MQTT
//! session's queue (broker deliveries), a takeover by a newer connection with the same client
//! id, and its timers (keep-alive, token renewal), which the gateway's sweep raises. It polls
//! all of them in one `poll_fn` rather than selecting over futures, so a waiting connection's
//! task holds its state and nothing more. Output is collected in one buffer and written once
//! per turn of the loop.
//!
//! IM publications become native frames for the core session, with a request id of the gateway
//! (`mqtt:<n>`), and the session's answer to that id becomes the PUBACK (or PUBREC): so a QoS 1
//! message is acknowledged only after the sequencer committed it, and a refusal carries the
//! MQTT 5 reason code that matches the core's error code. MQTT 3.1.1 has no negative
//! acknowledgement; there the refusal is acknowledged and the `error` frame is delivered on the
//! events topic.

use crate::Gateway;
use crate::broker::{ConnSignal, Inflight, Message, Queued, SessionKey, Subscription};
use crate::codec::{
    self, Ack, ConnAck, Connect, DecodeError, Disconnect, Packet, Properties, Publish, QoS, Reason,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};
use crate::im;
use crate::topic;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tidings_core::Caller;
use tidings_core::policy::{BrokerAccess, decide_broker};
use tidings_core::session::{Output, Session, close_code};
use tidings_proto::ErrorCode;
use tidings_proto::ws::{ClientFrame, Cursor};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long one write to the client may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a connection whose client's window is full checks whether the server wants it
/// closed.
const STALLED_CHECK: Duration = Duration::from_secs(1);
/// How long a connection the server ended keeps reading (and discarding) before it closes.
const LINGER: Duration = Duration::from_secs(2);
/// The request id of the gateway's own catch-up `sync`.
const SYNC_ID: &str = "mqtt:sync";
/// The request id of a token renewal.
const RENEW_ID: &str = "mqtt:renew";

/// Serves one connection until it ends, in a `connection` span every log line of it carries.
///
/// Neither this nor [`serve_connection`] is an `async fn`: an async fn keeps its arguments in
/// its state for its whole life (here the gateway, the stream and the peer address, 56 bytes),
/// next to the copies its body moved them into. The arguments go straight into the boxed
/// sign-in instead, and the connection's task holds the connection's state and little else.
pub fn run<S>(
    gw: Arc<Gateway>,
    stream: S,
    peer: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tracing::Instrument;
    let span =
        tracing::info_span!("connection", id = %tidings_metrics::next_log_id(), transport = "mqtt");
    serve_connection(gw, stream, peer).instrument(span)
}

fn serve_connection<S>(
    gw: Arc<Gateway>,
    stream: S,
    peer: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counted = tidings_metrics::metrics().connection_opened(tidings_metrics::Transport::Mqtt);
    // Boxed: reading CONNECT, signing in and refusing hold large futures and packets; freed
    // once the connection is open, they do not size the task of every idle connection.
    let accepting = Box::pin(accept(gw, stream, peer));
    async move {
        let _counted = counted;
        let Some((mut conn, present)) = accepting.await else {
            return;
        };
        let end = conn.serve(present).await;
        // Boxed: it runs once, and inline its state would size the task for its whole life.
        Box::pin(conn.finish(end)).await;
    }
}

/// Reads CONNECT and opens the connection, with the CONNACK written to its output; or
/// refuses it. Returns the connection and whether its session was present.
async fn accept<S>(
    gw: Arc<Gateway>,
    mut stream: S,
    peer: Option<SocketAddr>,
) -> Option<(Conn<S>, bool)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut rbuf = BytesMut::new();
    let max_packet = gw.config.max_packet_bytes as usize;
    let timeout = Duration::from_secs(u64::from(gw.config.connect_timeout_secs.max(1)));
    let deadline = Instant::now() + timeout;
    // CONNECT first.
    let connect = loop {
        match codec::decode(&rbuf, None, max_packet) {
            Ok(Some((Packet::Connect(connect), used))) => {
                let _ = rbuf.split_to(used);
                break connect;
            }
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(e) => {
                refuse_connect(&mut stream, &rbuf, &e).await;
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, read_some(&mut stream, &mut rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    };
    let v = connect.version;
    let (mut conn, connack) = match Conn::open(gw, stream, rbuf, *connect, peer).await {
        Ok(pair) => pair,
        Err((mut stream, reason, message)) => {
            tracing::debug!(reason = reason.0, message, "MQTT connection refused.");
            let mut properties = Properties::default();
            if v == Version::V5 {
                properties.reason_string = Some(message.into());
            }
            let packet = Packet::ConnAck(ConnAck {
                session_present: false,
                reason,
                properties,
            });
            let mut out = BytesMut::new();
            codec::encode(&packet, v, &mut out);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            return None;
        }
    };
    let present = connack.session_present;
    conn.write(&Packet::ConnAck(connack));
    Some((conn, present))
}

/// Answers a CONNECT that could not be decoded, when the client can understand an answer.
async fn refuse_connect<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8], e: &DecodeError) {
    let level = connect_level(buf);
    let (v, reason) = match level {
        Some(5) => (Version::V5, e.reason),
        // 3.1.1 says: refuse an unsupported level with return code 1; other errors just close.
        _ if e.reason == Reason::UNSUPPORTED_PROTOCOL_VERSION => (Version::V311, e.reason),
        _ => return,
    };
    let mut out = BytesMut::new();
    codec::encode(
        &Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Properties::default(),
        }),
        v,
        &mut out,
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Bytes read per system call at most, into the per-thread scratch buffer.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// The buffer every connection on this thread reads into. A connection keeps no read
    /// buffer of its own while idle: only the bytes of a packet that has not fully arrived are
    /// held per connection, so ten thousand idle devices do not each pin a few KiB.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

/// Reads what the stream has into `buf`, through the per-thread scratch buffer, so `buf`
/// grows only by what arrived. Ready with the number of bytes read (0 at end of stream); a
/// read that is pending has taken no bytes.
fn poll_read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    SCRATCH.with(|scratch| {
        // The borrow lasts for one synchronous poll; nothing in `poll_read` of a socket, a TLS
        // stream or a pipe reads MQTT input on this thread meanwhile.
        let mut scratch = scratch.borrow_mut();
        let mut read = tokio::io::ReadBuf::new(&mut scratch[..]);
        match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                buf.extend_from_slice(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Writes as much of `data` as `stream` takes without waiting, and flushes it. `Some(Ok)` when
/// all of it went out, `Some(Err)` when the stream failed, `None` when the stream would block:
/// what is left of `data` is then still to write.
fn write_now<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Option<std::io::Result<()>> {
    let mut stream = std::pin::Pin::new(stream);
    while !data.is_empty() {
        match stream.as_mut().poll_write(cx, data) {
            Poll::Ready(Ok(0)) => return Some(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                let _ = data.split_to(n);
            }
            Poll::Ready(Err(e)) => return Some(Err(e)),
            Poll::Pending => return None,
        }
    }
    match stream.poll_flush(cx) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

/// [`poll_read_some`] as a future, for the reads before the packet loop.
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(stream, buf, cx)).await
}

/// The protocol level byte of a CONNECT packet, if the buffer holds that far.
fn connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let mut i = 1;
    while buf.get(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return None;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i + 1)?, *buf.get(i + 2)?]));
    buf.get(i + 3 + name_len).copied()
}

/// The MQTT 5 reason for a core error code.
fn reason_for(code: ErrorCode) -> Reason {
    match code {
        ErrorCode::Forbidden | ErrorCode::NotFound | ErrorCode::Unauthenticated => {
            Reason::NOT_AUTHORIZED
        }
        ErrorCode::RateLimited | ErrorCode::LimitExceeded | ErrorCode::QuotaExceeded => {
            Reason::QUOTA_EXCEEDED
        }
        ErrorCode::MalformedRequest
        | ErrorCode::UnknownFrame
        | ErrorCode::InvalidField
        | ErrorCode::TooLarge => Reason::PAYLOAD_FORMAT_INVALID,
        ErrorCode::Conflict => Reason::IMPLEMENTATION_SPECIFIC,
        _ => Reason::UNSPECIFIED,
    }
}

/// The CONNACK reason for a failed sign-in.
fn connack_reason_for(code: ErrorCode) -> Reason {
    match code {
        ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::InvalidCredentials => {
            Reason::BAD_USER_NAME_OR_PASSWORD
        }
        ErrorCode::Forbidden => Reason::NOT_AUTHORIZED,
        ErrorCode::RateLimited => Reason(0x9F),
        _ => Reason::SERVER_UNAVAILABLE,
    }
}

/// The DISCONNECT reason for a core session's close code.
fn disconnect_reason_for(code: u16) -> Reason {
    match code {
        close_code::TOKEN_EXPIRED | close_code::UNAUTHENTICATED => Reason::NOT_AUTHORIZED,
        close_code::DEVICE_REVOKED => Reason::ADMINISTRATIVE_ACTION,
        close_code::SLOW_CONSUMER => Reason::QUOTA_EXCEEDED,
        close_code::GOING_AWAY => Reason(0x8B),
        _ => Reason::UNSPECIFIED,
    }
}

/// A request of this connection waiting for the core's answer.
struct Pending {
    packet_id: u16,
    qos: QoS,
}

/// How the connection ends.
enum End {
    /// The client sent DISCONNECT: the will is dropped unless it asked for it (0x04).
    Client { send_will: bool },
    /// Anything else: a lost connection, a protocol error, a timeout. The will is sent.
    Abnormal,
    /// Another connection took the session; the will is sent as for a lost connection.
    TakenOver,
}

struct Conn<S> {
    gw: Arc<Gateway>,
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    v: Version,
    key: SessionKey,
    conn_id: u64,
    /// Wakes this connection: its session has something queued, a newer connection took the
    /// session, or its deadline passed.
    signal: Arc<ConnSignal>,
    session: Session,
    caller: Caller,
    username: String,
    /// Signed in with a password: the gateway renews the access token before it expires.
    renew_at: Option<Instant>,
    /// 1.5 times the keep-alive; `None` when the client asked for none.
    keep_alive: Option<Duration>,
    last_heard: Instant,
    /// The largest packet the client accepts.
    client_max_packet: usize,
    /// Deliveries in flight to the client, at most.
    window: usize,
    /// Topic aliases of both directions; boxed and made on first use, since most clients use
    /// none and two empty maps are 96 bytes in every connection.
    aliases: Option<Box<TopicAliases>>,
    /// Boxed: a will carries a whole property set, and most connections have none.
    will: Option<Box<Will>>,
    /// IM requests waiting for the core's answer, by request id; made on the first. Boxed
    /// on purpose: an empty map is 48 bytes inline in every connection, and most devices
    /// never publish.
    #[allow(clippy::box_collection)]
    pending: Option<Box<HashMap<String, Pending>>>,
    next_request: u64,
    /// QoS 1 and 2 IM publications waiting for the core's answer.
    waiting: usize,
    /// The server ended the connection: read what the client still sends for a moment before
    /// closing, so it reads the DISCONNECT rather than a reset.
    linger: bool,
    /// Topic aliases the client accepts from the server (MQTT 5).
    client_alias_max: u16,
    /// Whether the client accepts reason strings (MQTT 5 request problem information).
    problem_information: bool,
}

/// The topic aliases of one connection (MQTT 5).
#[derive(Default)]
struct TopicAliases {
    /// Set by the client, for its publications.
    incoming: HashMap<u16, String>,
    /// Assigned by the server, for deliveries to a client that accepts aliases.
    outgoing: HashMap<String, u16>,
}

type Refused<S> = (S, Reason, &'static str);

/// What woke the packet loop.
enum Wake {
    /// Flags of the connection's [`ConnSignal`].
    Signals(u8),
    /// Bytes from the client (0 at the end of the stream).
    Read(std::io::Result<usize>),
    /// The core session has something to send.
    Output(Output),
}

/// What the input buffer asks of the packet loop.
enum Input {
    /// No whole packet is left.
    Drained,
    /// Catch the new IM events subscription up, then go on.
    CatchUp,
    /// Wait for room in the relay queue for this publication, then go on.
    Relay(Box<tidings_bus::BrokerPublication>),
    /// The client ended the connection.
    End(End),
    /// A protocol error: the DISCONNECT is in the output; flush it and end.
    Fail,
}

/// What the packet loop does after a packet was handled. Handling is synchronous; the rare
/// steps that wait are done by the loop, boxed, so an idle connection's task does not carry
/// their futures.
enum Step {
    Continue,
    End(End),
    /// A new IM events subscription of a persistent session: catch it up, then pump.
    CatchUp,
    /// A broker publication the relay queue had no room for: wait for room.
    Relay(tidings_bus::BrokerPublication),
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Checks CONNECT, signs in and takes the session. Returns the CONNACK to send.
    async fn open(
        gw: Arc<Gateway>,
        stream: S,
        rbuf: BytesMut,
        connect: Connect,
        peer: Option<SocketAddr>,
    ) -> Result<(Conn<S>, ConnAck), Refused<S>> {
        let v = connect.version;
        let cfg = &gw.config;
        if connect.properties.authentication_method.is_some() {
            return Err((
                stream,
                Reason::BAD_AUTHENTICATION_METHOD,
                "enhanced authentication is not supported",
            ));
        }
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            if v == Version::V311 && !connect.clean_start {
                return Err((
                    stream,
                    Reason::CLIENT_ID_NOT_VALID,
                    "a persistent session needs a client id",
                ));
            }
            let id = format!("auto-{}", random_hex());
            assigned = Some(id.clone());
            id
        } else {
            connect.client_id.clone()
        };
        if client_id.len() > 59 {
            return Err((
                stream,
                Reason::CLIENT_ID_NOT_VALID,
                "client ids are limited to 59 bytes",
            ));
        }
        let Some(password) = connect
            .password
            .as_ref()
            .and_then(|p| String::from_utf8(p.to_vec()).ok())
        else {
            return Err((
                stream,
                Reason::BAD_USER_NAME_OR_PASSWORD,
                "a password or an access token is required",
            ));
        };
        let core = gw.core.clone();
        // No user name (or `$token`): the password is an access token. Otherwise it is the
        // account's password and the client id names the device.
        let by_password = !matches!(connect.username.as_deref(), None | Some("" | "$token"));
        let token = if by_password {
            let username = connect.username.clone().unwrap_or_default();
            match core
                .device_sign_in(
                    &username,
                    password,
                    format!("MQTT {client_id}"),
                    peer.map(|p| p.ip()),
                )
                .await
            {
                Ok(token) => token,
                Err(e) => {
                    return Err((stream, connack_reason_for(e.code), "sign-in refused"));
                }
            }
        } else {
            password
        };
        let mut session = Session::new(core.clone());
        let auth = ClientFrame::Auth {
            id: "mqtt:auth".into(),
            token,
        };
        session.handle_text(&serde_json::to_string(&auth).expect("frames serialize"));
        let caller = loop {
            let out = session.next_output().await;
            let Output::Frame(text) = out else {
                return Err((stream, Reason::SERVER_UNAVAILABLE, "session closed"));
            };
            match im::peek(text.as_str()) {
                Some(p) if p.kind == "auth_ok" => break session.caller().expect("authenticated"),
                Some(p) if p.kind == "error" => {
                    let code = p.code.unwrap_or(ErrorCode::Unauthenticated);
                    return Err((stream, connack_reason_for(code), "authentication failed"));
                }
                _ => {}
            }
        };
        let username = match core.me(&caller).await {
            Ok(account) => account.username,
            Err(_) => return Err((stream, Reason::SERVER_UNAVAILABLE, "account unavailable")),
        };
        if let Some(will) = &connect.will {
            if !topic::valid_topic(&will.topic) {
                return Err((stream, Reason::TOPIC_NAME_INVALID, "invalid will topic"));
            }
            let allowed = if will.topic.starts_with(im::PREFIX) {
                will.topic == im::PRESENCE
            } else {
                decide_broker(
                    &cfg.broker_rules,
                    &username,
                    caller.user_id.0,
                    BrokerAccess::Publish,
                    &will.topic,
                )
                .is_ok()
            };
            if !allowed {
                return Err((stream, Reason::NOT_AUTHORIZED, "will topic not allowed"));
            }
        }
        let mut properties = Properties::default();
        let asked_expiry = match v {
            Version::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            Version::V311 if connect.clean_start => 0,
            Version::V311 => u32::MAX,
        };
        let expiry = asked_expiry.min(cfg.max_session_expiry_secs);
        if expiry != asked_expiry && v == Version::V5 {
            properties.session_expiry_interval = Some(expiry);
        }
        let mut keep_alive = connect.keep_alive;
        if v == Version::V5
            && cfg.max_keep_alive_secs > 0
            && (keep_alive == 0 || keep_alive > cfg.max_keep_alive_secs)
        {
            keep_alive = cfg.max_keep_alive_secs;
            properties.server_keep_alive = Some(keep_alive);
        }
        let key: SessionKey = (caller.user_id, client_id);
        let conn_id = gw.conn_id();
        let signal = Arc::new(ConnSignal::new());
        let present = gw
            .broker
            .attach(&key, connect.clean_start, conn_id, signal.clone());
        gw.broker.set_expiry(&key, expiry);
        if v == Version::V5 {
            properties.receive_maximum = Some(cfg.receive_maximum);
            properties.maximum_packet_size = Some(cfg.max_packet_bytes);
            properties.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            properties.assigned_client_identifier = assigned;
        }
        let client_max_packet = connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize);
        let window = usize::from(
            connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(cfg.max_inflight.max(1)),
        );
        let renew_at = by_password.then(|| {
            let ttl = core.config().tokens.access_ttl_secs.max(10);
            Instant::now() + Duration::from_secs(ttl * 4 / 5)
        });
        let conn = Conn {
            v,
            key,
            conn_id,
            signal,
            session,
            caller,
            username,
            renew_at,
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            last_heard: Instant::now(),
            client_max_packet,
            window,
            aliases: None,
            will: connect.will.map(Box::new),
            pending: None,
            next_request: 1,
            waiting: 0,
            linger: false,
            client_alias_max: if v == Version::V5 {
                connect.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            problem_information: connect.properties.request_problem_information != Some(0),
            wbuf: BytesMut::new(),
            rbuf,
            stream,
            gw,
        };
        Ok((
            conn,
            ConnAck {
                session_present: present,
                reason: Reason::SUCCESS,
                properties,
            },
        ))
    }

    /// Runs the connection after CONNACK (already in the output) until it ends. Takes `self`
    /// by reference: an async fn that takes it by value holds it twice in its state (the
    /// argument and the local it is moved into), and this future lives as long as the
    /// connection.
    async fn serve(&mut self, present: bool) -> End {
        tracing::debug!(user_id = %self.caller.user_id, client_id = %self.key.1, "MQTT client connected.");
        if present {
            self.resend_inflight();
            let has_events = self
                .session_state(|s| s.im_events.is_some())
                .unwrap_or(false);
            if has_events {
                Box::pin(self.catch_up()).await;
            }
        }
        self.pump();
        self.run_loop().await
    }

    /// Handles the whole packets in the input buffer until one asks the loop to wait for
    /// something (or the buffer holds no whole packet). Synchronous, so the loop's state
    /// does not carry a decoded packet: the rare waits are the loop's, boxed.
    fn take_input(&mut self, max_packet: usize) -> Input {
        loop {
            match codec::decode(&self.rbuf, Some(self.v), max_packet) {
                Ok(Some((packet, used))) => {
                    let _ = self.rbuf.split_to(used);
                    match self.on_packet(packet) {
                        Ok(Step::Continue) => {}
                        Ok(Step::CatchUp) => return Input::CatchUp,
                        Ok(Step::Relay(publication)) => return Input::Relay(Box::new(publication)),
                        Ok(Step::End(end)) => return Input::End(end),
                        Err(reason) => {
                            self.disconnect(reason);
                            return Input::Fail;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%e, "Malformed MQTT packet.");
                    self.disconnect(e.reason);
                    return Input::Fail;
                }
            }
        }
        // Between packets the connection holds no input buffer at all; only a packet still
        // arriving keeps its bytes (and their allocation).
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        Input::Drained
    }

    /// Handles every whole packet in the input buffer, doing the waits packets ask for,
    /// starting with `first` when [`Conn::take_input`] already ran. Also run before the first
    /// read: a client may send SUBSCRIBE or PUBLISH right behind its CONNECT, in the same
    /// segment, and those bytes are already here.
    async fn take_all_input(&mut self, mut first: Option<Input>, max_packet: usize) -> Option<End> {
        loop {
            let input = match first.take() {
                Some(input) => input,
                None => self.take_input(max_packet),
            };
            match input {
                Input::Drained => return None,
                Input::CatchUp => {
                    // Boxed: the store read inside is rare, and inline it would enlarge
                    // every connection's task.
                    Box::pin(self.catch_up()).await;
                    self.pump();
                }
                Input::Relay(publication) => {
                    Box::pin(self.gw.relay_when_room(*publication)).await;
                }
                Input::End(end) => return Some(end),
                Input::Fail => {
                    let _ = self.flush().await;
                    return Some(End::Abnormal);
                }
            }
        }
    }

    async fn run_loop(&mut self) -> End {
        let max_packet = self.gw.config.max_packet_bytes as usize;
        if self.rbuf.is_empty() {
            // CONNECT came alone. The emptied buffer still holds the allocation CONNECT
            // arrived in (a token makes that about 500 bytes); an idle connection keeps none.
            self.rbuf = BytesMut::new();
        } else if let Some(end) = Box::pin(self.take_all_input(None, max_packet)).await {
            // Packets that came with CONNECT. Boxed: this runs once per connection.
            return end;
        }
        loop {
            if !self.wbuf.is_empty() && !self.flush().await {
                return End::Abnormal;
            }
            let window_open = self
                .session_state(|s| s.inflight.len() < self.window)
                .unwrap_or(false);
            self.arm_timer(window_open);
            match std::future::poll_fn(|cx| self.poll_wake(cx, window_open)).await {
                Wake::Signals(flags) => {
                    if flags & ConnSignal::KICKED != 0 {
                        self.disconnect(Reason::SESSION_TAKEN_OVER);
                        let _ = self.flush().await;
                        return End::TakenOver;
                    }
                    if flags & ConnSignal::TIMER != 0
                        && let Some(end) = Box::pin(self.on_timer(window_open)).await
                    {
                        return end;
                    }
                    if flags & ConnSignal::QUEUED != 0 {
                        self.pump();
                    }
                }
                Wake::Read(read) => {
                    match read {
                        Ok(0) | Err(_) => return End::Abnormal,
                        Ok(_) => {}
                    }
                    self.last_heard = Instant::now();
                    // Handled synchronously; only input that asks the loop to wait (a rare
                    // catch-up or a full relay queue, a protocol error's flush) goes through
                    // the boxed path, so its state does not size every connection's task.
                    let input = self.take_input(max_packet);
                    if !matches!(input, Input::Drained)
                        && let Some(end) =
                            Box::pin(self.take_all_input(Some(input), max_packet)).await
                    {
                        return end;
                    }
                }
                Wake::Output(out) => {
                    if let Some(end) = self.on_output(out) {
                        let _ = self.flush().await;
                        return end;
                    }
                }
            }
        }
    }

    /// What woke the loop, in the order it looks: the signal (a takeover first of all), then
    /// the client's bytes, then the core session's output (while the client's window has
    /// room). Nothing here is a stored future: every source is polled in place.
    fn poll_wake(&mut self, cx: &mut Context<'_>, window_open: bool) -> Poll<Wake> {
        if let Poll::Ready(flags) = self.signal.poll(cx) {
            return Poll::Ready(Wake::Signals(flags));
        }
        if self.session.can_read()
            && let Poll::Ready(read) = poll_read_some(&mut self.stream, &mut self.rbuf, cx)
        {
            return Poll::Ready(Wake::Read(read));
        }
        if window_open && let Poll::Ready(out) = self.session.poll_output(cx) {
            return Poll::Ready(Wake::Output(out));
        }
        Poll::Pending
    }

    /// Sets the deadline at which the gateway's sweep wakes this connection: the keep-alive
    /// running out, the token's renewal, or (while the client's window is full) the next look
    /// at whether the server asked it to close.
    fn arm_timer(&self, window_open: bool) {
        let at = [
            self.keep_alive.map(|k| self.last_heard + k),
            self.renew_at,
            (!window_open).then(|| Instant::now() + STALLED_CHECK),
        ]
        .into_iter()
        .flatten()
        .min();
        self.signal
            .set_deadline(at.map_or(u64::MAX, |at| self.gw.clock_ms(at)));
    }

    /// The deadline passed: ends the connection whose keep-alive ran out or whose server-side
    /// close is due, or renews the token. Boxed by the caller: it runs rarely, and inline its
    /// state would size every connection's task.
    async fn on_timer(&mut self, window_open: bool) -> Option<End> {
        let now = Instant::now();
        if self.keep_alive.is_some_and(|k| self.last_heard + k <= now) {
            self.disconnect(Reason::KEEP_ALIVE_TIMEOUT);
            let _ = self.flush().await;
            return Some(End::Abnormal);
        }
        // While the client's window is full, output waits; a close the server asked for
        // meanwhile (say, the IM queue overflowed) must still end the connection.
        if !window_open && self.session.close_requested() {
            self.disconnect(Reason::QUOTA_EXCEEDED);
            let _ = self.flush().await;
            return Some(End::Abnormal);
        }
        if self.renew_at.is_some_and(|at| at <= now) {
            match self.gw.core.renew_device_token(&self.caller).await {
                Ok(token) => {
                    let frame = ClientFrame::Auth {
                        id: RENEW_ID.into(),
                        token,
                    };
                    self.session
                        .handle_text(&serde_json::to_string(&frame).expect("frames serialize"));
                    let ttl = self.gw.core.config().tokens.access_ttl_secs.max(10);
                    self.renew_at = Some(Instant::now() + Duration::from_secs(ttl * 4 / 5));
                }
                Err(_) => {
                    self.disconnect(Reason::NOT_AUTHORIZED);
                    let _ = self.flush().await;
                    return Some(End::Abnormal);
                }
            }
        }
        None
    }

    /// Runs `f` on this connection's MQTT session, if it still has it.
    fn session_state<T>(&self, f: impl FnOnce(&mut crate::broker::SessionState) -> T) -> Option<T> {
        let mut state = self.gw.broker.lock();
        let session = state.sessions.get_mut(&self.key)?;
        if session
            .owner
            .as_ref()
            .is_some_and(|(id, _)| *id != self.conn_id)
        {
            return None;
        }
        let out = f(session);
        // Whatever changed in a persistent session is saved with the next batch.
        state.touch(&self.key);
        Some(out)
    }

    /// Appends a packet to the output, unless it exceeds the client's maximum packet size
    /// (MQTT 5 says such a packet is dropped as if sent). Returns whether it was written.
    fn write(&mut self, packet: &Packet) -> bool {
        if let Packet::Publish(p) = packet
            && self.client_alias_max > 0
        {
            return self.write_aliased(p.clone());
        }
        self.write_plain(packet)
    }

    /// Writes a publication with a topic alias: the alias alone once the client knows it,
    /// both when there is room for a new one, the topic alone otherwise.
    fn write_aliased(&mut self, mut p: Publish) -> bool {
        let mut assigned = None;
        let out = &self.aliases.get_or_insert_default().outgoing;
        if let Some(&alias) = out.get(&p.topic) {
            p.properties.topic_alias = Some(alias);
            p.topic = String::new();
        } else if out.len() < usize::from(self.client_alias_max) {
            let alias = out.len() as u16 + 1;
            p.properties.topic_alias = Some(alias);
            assigned = Some((p.topic.clone(), alias));
        }
        let written = self.write_plain(&Packet::Publish(p));
        if written && let Some((topic, alias)) = assigned {
            self.aliases
                .get_or_insert_default()
                .outgoing
                .insert(topic, alias);
        }
        written
    }

    fn write_plain(&mut self, packet: &Packet) -> bool {
        if self.client_max_packet == usize::MAX {
            codec::encode(packet, self.v, &mut self.wbuf);
            return true;
        }
        let mut one = BytesMut::new();
        codec::encode(packet, self.v, &mut one);
        if one.len() > self.client_max_packet {
            return false;
        }
        self.wbuf.extend_from_slice(&one);
        true
    }

    /// Writes the output buffer out; false when the client cannot take it within
    /// [`WRITE_TIMEOUT`]. The buffer goes with the write: an idle connection holds no output
    /// buffer either.
    async fn flush(&mut self) -> bool {
        let mut data = std::mem::take(&mut self.wbuf);
        // Nearly every flush completes at once (the socket has room): try that first, with no
        // timer. Only a client that does not read gets the timed write, boxed, so its timer
        // does not size every connection's task.
        let stream = &mut self.stream;
        let at_once =
            std::future::poll_fn(|cx| Poll::Ready(write_now(stream, &mut data, cx))).await;
        match at_once {
            Some(Ok(())) => true,
            Some(Err(_)) => false,
            None => {
                let write = async {
                    stream.write_all(&data).await?;
                    stream.flush().await
                };
                matches!(
                    Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write)).await,
                    Ok(Ok(()))
                )
            }
        }
    }

    fn disconnect(&mut self, reason: Reason) {
        self.linger = true;
        if self.v == Version::V5 {
            self.write(&Packet::Disconnect(Disconnect {
                reason,
                properties: Properties::default(),
            }));
        }
    }

    /// Acknowledges a received publication: PUBACK for QoS 1, PUBREC for QoS 2 (remembering
    /// the packet id until PUBREL when it succeeded).
    fn ack(&mut self, qos: QoS, packet_id: u16, reason: Reason, why: Option<String>) {
        let mut ack = Ack::new(packet_id, reason);
        if self.v == Version::V5 && self.problem_information {
            ack.properties.reason_string = why;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.write(&Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                if !reason.is_error() {
                    self.session_state(|s| s.inbound_qos2.insert(packet_id));
                }
                self.write(&Packet::PubRec(ack));
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) -> Result<Step, Reason> {
        match packet {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(a) => {
                self.session_state(|s| {
                    if let Some(Inflight::Publish { im, publish }) = s.inflight.remove(&a.packet_id)
                    {
                        if publish.qos != QoS::AtLeastOnce {
                            // A PUBACK for a QoS 2 delivery: keep waiting for PUBREC.
                            s.inflight
                                .insert(a.packet_id, Inflight::Publish { im, publish });
                        } else if let Some((conv, seq)) = im {
                            let cursor = s.im_cursors.entry(conv).or_insert(0);
                            *cursor = (*cursor).max(seq);
                        }
                    }
                });
                self.pump();
            }
            Packet::PubRec(a) => {
                let found = self
                    .session_state(|s| match s.inflight.get(&a.packet_id) {
                        Some(Inflight::Publish { .. }) if a.reason.is_error() => {
                            s.inflight.remove(&a.packet_id);
                            None
                        }
                        Some(Inflight::Publish { .. }) | Some(Inflight::Released) => {
                            s.inflight.insert(a.packet_id, Inflight::Released);
                            Some(true)
                        }
                        None => Some(false),
                    })
                    .flatten();
                match found {
                    Some(true) => {
                        self.write(&Packet::PubRel(Ack::new(a.packet_id, Reason::SUCCESS)));
                    }
                    Some(false) => {
                        self.write(&Packet::PubRel(Ack::new(
                            a.packet_id,
                            Reason::PACKET_ID_NOT_FOUND,
                        )));
                    }
                    None => self.pump(),
                }
            }
            Packet::PubComp(a) => {
                self.session_state(|s| {
                    if matches!(s.inflight.get(&a.packet_id), Some(Inflight::Released)) {
                        s.inflight.remove(&a.packet_id);
                    }
                });
                self.pump();
            }
            Packet::PubRel(a) => {
                let known = self
                    .session_state(|s| s.inbound_qos2.remove(&a.packet_id))
                    .unwrap_or(false);
                let reason = if known {
                    Reason::SUCCESS
                } else {
                    Reason::PACKET_ID_NOT_FOUND
                };
                self.write(&Packet::PubComp(Ack::new(a.packet_id, reason)));
            }
            Packet::Subscribe(s) => return Ok(self.on_subscribe(s)),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.write(&Packet::PingResp);
            }
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    let current = self.session_state(|s| s.expiry_secs).unwrap_or(0);
                    if current == 0 && expiry > 0 {
                        return Err(Reason::PROTOCOL_ERROR);
                    }
                    let expiry = expiry.min(self.gw.config.max_session_expiry_secs);
                    self.session_state(|s| s.expiry_secs = expiry);
                }
                return Ok(Step::End(End::Client {
                    send_will: d.reason == Reason::DISCONNECT_WITH_WILL,
                }));
            }
            // Enhanced authentication was not negotiated, so AUTH is a protocol error, and
            // the decoder refuses every other packet type a client may not send.
            _ => return Err(Reason::PROTOCOL_ERROR),
        }
        Ok(Step::Continue)
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<Step, Reason> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias > self.gw.config.topic_alias_maximum {
                return Err(Reason::TOPIC_ALIAS_INVALID);
            }
            let incoming = &mut self.aliases.get_or_insert_default().incoming;
            if p.topic.is_empty() {
                p.topic = incoming
                    .get(&alias)
                    .cloned()
                    .ok_or(Reason::PROTOCOL_ERROR)?;
            } else {
                incoming.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return Err(Reason::PROTOCOL_ERROR);
        }
        if p.qos == QoS::ExactlyOnce {
            let duplicate = self
                .session_state(|s| s.inbound_qos2.contains(&p.packet_id))
                .unwrap_or(false);
            if duplicate {
                self.write(&Packet::PubRec(Ack::new(p.packet_id, Reason::SUCCESS)));
                return Ok(Step::Continue);
            }
        }
        if p.qos != QoS::AtMostOnce {
            let outstanding =
                self.waiting + self.session_state(|s| s.inbound_qos2.len()).unwrap_or(0);
            if outstanding >= usize::from(self.gw.config.receive_maximum) {
                return Err(Reason::RECEIVE_MAXIMUM_EXCEEDED);
            }
        }
        if p.topic.starts_with(im::PREFIX) {
            self.on_im_publish(p);
            Ok(Step::Continue)
        } else {
            Ok(self.on_broker_publish(p))
        }
    }

    fn on_im_publish(&mut self, p: Publish) {
        let request = match im::route(&p.topic, &p.payload) {
            Ok(request) => request,
            Err(refusal) => {
                let (reason, code, why) = match refusal {
                    im::Refusal::UnknownTopic => (
                        Reason::TOPIC_NAME_INVALID,
                        ErrorCode::NotFound,
                        "no such IM topic; see docs/mqtt.md".to_string(),
                    ),
                    im::Refusal::BadPayload(why) => (
                        Reason::PAYLOAD_FORMAT_INVALID,
                        ErrorCode::MalformedRequest,
                        why,
                    ),
                };
                self.tell_refusal(code, &why);
                self.ack(p.qos, p.packet_id, reason, Some(why));
                return;
            }
        };
        let frame = if request.waits() {
            let id = format!("{}{}", im::INTERNAL_ID, self.next_request);
            self.next_request += 1;
            if p.qos != QoS::AtMostOnce {
                self.waiting += 1;
            }
            self.pending.get_or_insert_default().insert(
                id.clone(),
                Pending {
                    packet_id: p.packet_id,
                    qos: p.qos,
                },
            );
            request.into_frame(Some(id))
        } else {
            self.ack(p.qos, p.packet_id, Reason::SUCCESS, None);
            request.into_frame(None)
        };
        self.session
            .handle_text(&serde_json::to_string(&frame).expect("frames serialize"));
    }

    /// In 3.1.1, where acknowledgements carry no reason, delivers the refusal as an `error`
    /// frame on the events topic.
    fn tell_refusal(&mut self, code: ErrorCode, message: &str) {
        if self.v != Version::V311 {
            return;
        }
        let frame = tidings_proto::ws::ServerFrame::Error {
            id: None,
            code,
            message: message.to_owned(),
            retry_after_ms: None,
        };
        let text = serde_json::to_string(&frame).expect("frames serialize");
        self.deliver_event(text, None);
    }

    fn on_broker_publish(&mut self, p: Publish) -> Step {
        let allowed = decide_broker(
            &self.gw.config.broker_rules,
            &self.username,
            self.caller.user_id.0,
            BrokerAccess::Publish,
            &p.topic,
        );
        if allowed.is_err() {
            // The reason code says it all; some clients (the Paho test client) accept no
            // properties on PUBACK, as Mosquitto sends none.
            self.ack(p.qos, p.packet_id, Reason::NOT_AUTHORIZED, None);
            return Step::Continue;
        }
        let message = Message {
            expires_at: p
                .properties
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
            properties: forwarded(&p.properties),
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
        };
        let unsent = self.gw.publish(&self.key, message);
        self.ack(p.qos, p.packet_id, Reason::SUCCESS, None);
        // The packet loop waits for room in the relay before reading on, so this client's
        // publications reach the other nodes in order.
        unsent.map_or(Step::Continue, Step::Relay)
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Step {
        let id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut catch_up = false;
        for (filter, mut options) in s.filters {
            let reason = if filter == im::EVENTS {
                // IM deliveries are at most QoS 1: redelivery until acknowledged is what a
                // message needs; exactly-once is the client's dedup by message id.
                options.qos = options.qos.min(QoS::AtLeastOnce);
                let sub = Subscription { options, id };
                catch_up |= self
                    .session_state(|s| s.im_events.replace(sub).is_none())
                    .unwrap_or(false);
                Reason(options.qos as u8)
            } else {
                self.broker_subscribe(&filter, options, id)
            };
            reasons.push(reason);
        }
        self.write(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::default(),
            reasons,
        }));
        if catch_up {
            // The loop catches up, then pumps.
            return Step::CatchUp;
        }
        self.pump();
        Step::Continue
    }

    fn broker_subscribe(
        &mut self,
        filter: &str,
        options: codec::SubOptions,
        id: Option<u32>,
    ) -> Reason {
        let inner = match topic::shared(filter) {
            Err(topic::InvalidShare) => return Reason::TOPIC_FILTER_INVALID,
            Ok(Some((_, inner))) => {
                if options.no_local {
                    return Reason::PROTOCOL_ERROR;
                }
                inner
            }
            Ok(None) => filter,
        };
        if !topic::valid_filter(inner) {
            return Reason::TOPIC_FILTER_INVALID;
        }
        if decide_broker(
            &self.gw.config.broker_rules,
            &self.username,
            self.caller.user_id.0,
            BrokerAccess::Subscribe,
            inner,
        )
        .is_err()
        {
            return Reason::NOT_AUTHORIZED;
        }
        self.gw
            .broker
            .subscribe(&self.key, filter, Subscription { options, id });
        Reason(options.qos as u8)
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = if filter == im::EVENTS {
                self.session_state(|s| s.im_events.take().is_some())
                    .unwrap_or(false)
            } else {
                self.gw.broker.unsubscribe(&self.key, filter)
            };
            reasons.push(if existed {
                Reason::SUCCESS
            } else {
                Reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.write(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reasons,
        }));
    }

    /// Starts catching a persistent session up on IM: the first time, records where every
    /// conversation stands; afterwards, syncs from what the device acknowledged.
    async fn catch_up(&mut self) {
        let Some((persistent, baseline, cursors)) =
            self.session_state(|s| (s.expiry_secs > 0, s.im_baseline, s.sync_cursors()))
        else {
            return;
        };
        if !persistent {
            return;
        }
        if !baseline {
            match self
                .gw
                .core
                .store()
                .conversations_of(self.caller.user_id)
                .await
            {
                Ok(list) => {
                    self.session_state(|s| {
                        for uc in list {
                            let cursor = s.im_cursors.entry(uc.conversation.id).or_insert(0);
                            *cursor = (*cursor).max(uc.conversation.last_seq);
                        }
                        s.im_baseline = true;
                    });
                }
                Err(e) => tracing::warn!(%e, "Could not read conversations for an MQTT session."),
            }
            return;
        }
        let frame = ClientFrame::Sync {
            id: SYNC_ID.into(),
            cursors: cursors
                .into_iter()
                .map(|(conversation_id, seq)| Cursor {
                    conversation_id,
                    seq,
                    peer_read_seq: None,
                })
                .collect(),
            limit_per_conversation: Some(self.gw.config.catch_up_limit),
            contacts_version: None,
        };
        self.session
            .handle_text(&serde_json::to_string(&frame).expect("frames serialize"));
    }

    fn on_output(&mut self, out: Output) -> Option<End> {
        let text = match out {
            Output::Frame(text) => text,
            Output::Close { code, reason } => {
                tracing::debug!(code, reason, "Core session closed an MQTT connection.");
                self.disconnect(disconnect_reason_for(code));
                return Some(End::Abnormal);
            }
        };
        let peek = im::peek(text.as_str())?;
        if let Some(id) = peek.id
            && id.starts_with(im::INTERNAL_ID)
        {
            let Some(pending) = self.pending.as_mut().and_then(|p| p.remove(id)) else {
                // The gateway's own sync, renewal and sign-in answers.
                return None;
            };
            if pending.qos != QoS::AtMostOnce {
                self.waiting = self.waiting.saturating_sub(1);
            }
            let reason = match peek.kind {
                "error" => reason_for(peek.code.unwrap_or(ErrorCode::Internal)),
                _ => Reason::SUCCESS,
            };
            if reason.is_error() {
                let why = serde_json::from_str::<tidings_proto::ws::ServerFrame>(text.as_str())
                    .ok()
                    .and_then(|f| match f {
                        tidings_proto::ws::ServerFrame::Error { message, .. } => Some(message),
                        _ => None,
                    });
                if self.v == Version::V311 || pending.qos == QoS::AtMostOnce {
                    self.deliver_event(String::from(text), None);
                }
                self.ack(pending.qos, pending.packet_id, reason, why);
            } else {
                // The device holds its own message: when it is the next in the conversation,
                // the catch-up cursor moves past it, so a reconnection does not send it back.
                if let (Some(conv), Some(seq)) = (peek.conversation_id, peek.seq) {
                    self.session_state(|s| {
                        if let Some(cursor) = s.im_cursors.get_mut(&conv)
                            && *cursor + 1 == seq
                        {
                            *cursor = seq;
                        }
                    });
                }
                self.ack(pending.qos, pending.packet_id, reason, None);
            }
            return None;
        }
        let im = if peek.kind == "message" {
            im::message_position(text.as_str())
        } else {
            None
        };
        self.deliver_event(String::from(text), im);
        None
    }

    /// Publishes a frame on the events topic, if the device subscribed to it.
    fn deliver_event(&mut self, text: String, im: Option<(tidings_proto::ConversationId, u64)>) {
        let v5 = self.v == Version::V5;
        let Some((sub, packet_id)) = self
            .session_state(|s| {
                let sub = s.im_events.clone()?;
                let packet_id = if sub.options.qos == QoS::AtMostOnce {
                    0
                } else {
                    s.next_packet_id()
                };
                Some((sub, packet_id))
            })
            .flatten()
        else {
            return;
        };
        let mut properties = Properties::default();
        if v5 {
            properties.payload_format_indicator = Some(1);
            properties.content_type = Some("application/json".into());
            properties.subscription_identifiers.extend(sub.id);
        }
        let publish = Publish {
            dup: false,
            qos: sub.options.qos,
            retain: false,
            topic: im::EVENTS.into(),
            packet_id,
            properties,
            payload: Bytes::from(text),
        };
        let qos = publish.qos;
        if qos == QoS::AtMostOnce {
            // Nothing will acknowledge it: at QoS 0, written is as delivered as it gets.
            if self.write(&Packet::Publish(publish))
                && let Some((conv, seq)) = im
            {
                self.session_state(|s| {
                    let cursor = s.im_cursors.entry(conv).or_insert(0);
                    *cursor = (*cursor).max(seq);
                });
            }
            return;
        }
        if self.write(&Packet::Publish(publish.clone())) {
            self.session_state(|s| {
                s.inflight.insert(
                    packet_id,
                    Inflight::Publish {
                        publish: Box::new(publish),
                        im,
                    },
                )
            });
        }
    }

    /// Moves queued broker deliveries into the in-flight window and writes them.
    fn pump(&mut self) {
        let v5 = self.v == Version::V5;
        let window = self.window;
        let now = Instant::now();
        let Some(packets) = self.session_state(|s| {
            let mut packets = Vec::new();
            while s.inflight.len() < window {
                let Some(Queued {
                    message,
                    qos,
                    retain,
                    subscription_ids,
                }) = s.queue.pop_front()
                else {
                    break;
                };
                let mut properties = if v5 {
                    message.properties.clone()
                } else {
                    Properties::default()
                };
                if let Some(at) = message.expires_at {
                    if at <= now {
                        continue;
                    }
                    if v5 {
                        properties.message_expiry_interval =
                            Some((at - now).as_secs().max(1) as u32);
                    }
                }
                if v5 {
                    properties.subscription_identifiers = subscription_ids;
                }
                let packet_id = if qos == QoS::AtMostOnce {
                    0
                } else {
                    s.next_packet_id()
                };
                let publish = Publish {
                    dup: false,
                    qos,
                    retain,
                    topic: message.topic.clone(),
                    packet_id,
                    properties,
                    payload: message.payload.clone(),
                };
                if qos != QoS::AtMostOnce {
                    s.inflight.insert(
                        packet_id,
                        Inflight::Publish {
                            publish: Box::new(publish.clone()),
                            im: None,
                        },
                    );
                }
                packets.push(Packet::Publish(publish));
            }
            packets
        }) else {
            return;
        };
        for packet in packets {
            // A packet too large for the client is dropped as if delivered (MQTT 5 3.1.2.25).
            if !self.write(&packet)
                && let Packet::Publish(p) = &packet
            {
                self.session_state(|s| s.inflight.remove(&p.packet_id));
            }
        }
    }

    /// Resends what the previous connection left unacknowledged, in order.
    fn resend_inflight(&mut self) {
        let Some(packets) = self.session_state(|s| {
            s.inflight
                .iter()
                .map(|(id, inflight)| match inflight {
                    Inflight::Publish { publish, .. } => {
                        let mut publish = (**publish).clone();
                        publish.dup = true;
                        Packet::Publish(publish)
                    }
                    Inflight::Released => Packet::PubRel(Ack::new(*id, Reason::SUCCESS)),
                })
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        for packet in packets {
            self.write(&packet);
        }
    }

    async fn finish(mut self, end: End) {
        let _ = self.stream.shutdown().await;
        if self.linger {
            // Closing with unread input makes the kernel send a reset, which can destroy the
            // DISCONNECT before the client reads it: drain for a moment first.
            let deadline = Instant::now() + LINGER;
            // Read through the shared scratch buffer: an array here would sit in every
            // connection's task for its whole life, since a future is as large as its largest
            // state.
            let mut sink = BytesMut::new();
            while let Ok(Ok(n)) =
                tokio::time::timeout_at(deadline, read_some(&mut self.stream, &mut sink)).await
            {
                if n == 0 {
                    break;
                }
                sink.clear();
            }
        }
        let detached = self.gw.broker.detach(&self.key, self.conn_id);
        if let Some((expiry, generation)) = detached
            && expiry != u32::MAX
        {
            let gw = self.gw.clone();
            let key = self.key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                gw.broker.expire(&key, generation);
            });
        }
        let send_will = match end {
            End::Client { send_will } => send_will,
            End::Abnormal | End::TakenOver => true,
        };
        if let Some(will) = self.will.take().filter(|_| send_will).map(|w| *w) {
            // A will on the presence topic needs nothing more: the device's presence follows
            // its connections, and the core session announces it offline when it is dropped.
            if will.topic != im::PRESENCE {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                let expiry = detached.map_or(0, |(e, _)| e);
                let delay = delay.min(expiry);
                let message = Message {
                    expires_at: will
                        .properties
                        .message_expiry_interval
                        .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
                    properties: forwarded(&will.properties),
                    topic: will.topic,
                    payload: will.payload,
                    qos: will.qos,
                    retain: will.retain,
                };
                if delay == 0 {
                    self.gw.publish_detached(&self.key, message);
                } else {
                    let gw = self.gw.clone();
                    let key = self.key.clone();
                    // The session's generation is the id of the connection that held it last.
                    let generation = self.conn_id;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                        if gw.broker.still_away(&key, generation) {
                            gw.publish_detached(&key, message);
                        }
                    });
                }
            }
        }
        tracing::debug!(user_id = %self.caller.user_id, client_id = %self.key.1, "MQTT client disconnected.");
        // Dropping the core session unregisters the device and announces presence.
    }
}

/// The properties of a publication that travel on to subscribers.
fn forwarded(p: &Properties) -> Properties {
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    }
}

/// 16 random hex digits for assigned client ids.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the operating system's randomness; an assigned client id
    // only needs to be unlikely to collide, not secret.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async function returns, without calling it.
    fn future_size<F, A, B, C, R>(_: F) -> usize
    where
        F: Fn(A, B, C) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every connection's task holds this future for the connection's whole life, idle or
    /// not, so it is part of the memory per idle session (docs/benchmarks.md): rare paths
    /// with large futures (sign-in, catch-up, token renewal, the end) are boxed to keep it
    /// small, the loop polls its sources in place instead of selecting over futures, and
    /// `Conn` is held once (an async fn taking it by value holds it twice). The bounds hold
    /// for the unoptimised test build, whose futures are the larger (before the boxing:
    /// 10,184 bytes over TCP; before the polled loop: 2,768; 864 since); the TLS stream is held
    /// inline.
    #[test]
    fn connection_future_stays_small() {
        let tcp = future_size(run::<tokio::net::TcpStream>);
        let tls = future_size(run::<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>);
        eprintln!(
            "connection future: TCP {tcp} bytes, TLS {tls} bytes; Conn {} bytes, of which the core session {} bytes; MQTT session state {} bytes",
            std::mem::size_of::<Conn<tokio::net::TcpStream>>(),
            std::mem::size_of::<Session>(),
            std::mem::size_of::<crate::broker::SessionState>(),
        );
        assert!(tcp <= 1024, "the TCP connection future grew to {tcp} bytes");
        assert!(tls <= 2304, "the TLS connection future grew to {tls} bytes");
    }
}
