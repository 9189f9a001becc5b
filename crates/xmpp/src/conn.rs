//! One XMPP client connection: stream negotiation, then stanzas through a core session.
//!
//! Negotiation (RFC 6120): the stream header, STARTTLS when the connection is not yet
//! encrypted, SASL (the core checks the password or the access token), a stream restart, and
//! resource binding, where the resource names a Tidings device (created on first use, as
//! MQTT client ids are). Then the connection owns a core [`Session`] authenticated as that
//! device, and its loop waits on three things at once: stanzas from the client, output of the
//! session, and a takeover of its resource by a newer connection.
//!
//! A `<message type="chat">` to `user@domain` becomes a native `send` in the direct
//! conversation with that user, with the message's origin-id (XEP-0359), or its id, as the
//! `client_msg_id`. The session answers with `ack` only after the sequencer committed the
//! message; a refusal becomes a stanza error. Messages the session delivers become
//! `<message>` stanzas carrying the sender's id and the server's message id as `stanza-id`.
//! Corrections, retractions and reactions, both ways, are the core's edits, recalls and
//! reactions (`actions.rs`).

#[path = "actions.rs"]
mod actions;
#[path = "blocking.rs"]
mod blocking;
#[path = "caps.rs"]
mod caps;
#[path = "iq_route.rs"]
mod iq_route;
#[path = "mam.rs"]
mod mam;
#[path = "muc.rs"]
mod muc;
#[path = "muc_admin.rs"]
mod muc_admin;
#[path = "pep.rs"]
mod pep;
#[path = "roster.rs"]
mod roster;
#[path = "upload.rs"]
pub mod upload;

use crate::Gateway;
use crate::sasl::{self, Credentials};
use crate::xml::{Element, NS_CLIENT, NS_STREAM, StreamEvent, StreamParser, XmlError};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::session::{Output, Session, close_code};
use tidings_core::{Caller, CoreError};
use tidings_proto::ws::{ClientFrame, PresenceStatus, ReceiptKind, ServerFrame};
use tidings_proto::{ConversationId, ErrorCode, MessageBody, Seq, UserId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Data forms (XEP-0004).
const NS_DATA: &str = "jabber:x:data";
/// Service Outage Status (XEP-0455).
const NS_SOS: &str = "urn:xmpp:sos:0";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// Message processing hints (XEP-0334), such as `<store/>`: advice, not content.
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_SM: &str = "urn:xmpp:sm:3";
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_VCARD: &str = "vcard-temp";
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// How long one write to the client may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closed stream waits for the core's answers to the messages sent before the close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 8 * 1024;
/// Message ids remembered per connection to map receipts and markers onto sequences.
const REMEMBERED_IDS: usize = 4096;
/// Request ids of the gateway start with this (the session answers them by id).
const REQUEST_PREFIX: &str = "xmpp:";

/// Anything a stream can run over (TCP, TLS over TCP, an in-memory pipe in tests).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A request for a resumable session: the connection resuming it waits on the other end.
pub(crate) type Handoff = tokio::sync::oneshot::Sender<Box<Conn>>;

/// How a stream ends.
enum Fail {
    /// Send this stream error, then close.
    Stream(&'static str, String),
    /// The client closed the stream: close ours.
    Closed,
    /// The socket closed without a closing tag: close ours; the session may be resumed.
    Eof,
    /// The socket failed: nothing more can be written; the session may be resumed.
    Io,
    /// Another connection resumed the session: hand it over.
    Handoff(Handoff),
}

impl std::fmt::Debug for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Stream(condition, text) => write!(f, "Stream({condition}, {text:?})"),
            Fail::Closed => f.write_str("Closed"),
            Fail::Eof => f.write_str("Eof"),
            Fail::Io => f.write_str("Io"),
            Fail::Handoff(_) => f.write_str("Handoff"),
        }
    }
}

impl From<XmlError> for Fail {
    fn from(e: XmlError) -> Fail {
        Fail::Stream(e.condition(), e.to_string())
    }
}

/// How a stream's XML travels.
enum Wire {
    /// A byte stream (TCP, TLS over TCP) read through the streaming parser.
    Bytes {
        io: Box<dyn Io>,
        parser: StreamParser,
    },
    /// A WebSocket (RFC 7395): one element per message each way (websocket.rs).
    Framed(Box<crate::websocket::Framed>),
}

/// The socket with its parser and the stanza rate limit.
struct Stream {
    wire: Wire,
    secure: bool,
    /// The `tls-exporter` channel binding of the TLS connection (RFC 9266), for SCRAM `-PLUS`;
    /// only with TLS 1.3, where the exporter is unique to the connection.
    channel_binding: Option<Vec<u8>>,
    /// Token bucket of the stanza rate: tokens and when they were counted.
    tokens: f64,
    counted: Instant,
    rate: f64,
    burst: f64,
}

impl Stream {
    fn new(gw: &Gateway, wire: Wire, secure: bool, channel_binding: Option<Vec<u8>>) -> Stream {
        let cfg = &gw.config;
        Stream {
            wire,
            secure,
            channel_binding,
            tokens: f64::from(cfg.stanza_burst.max(1)),
            counted: Instant::now(),
            rate: f64::from(cfg.stanzas_per_second.max(1)),
            burst: f64::from(cfg.stanza_burst.max(1)),
        }
    }

    fn restart(&mut self, gw: &Gateway) {
        match &mut self.wire {
            Wire::Bytes { parser, .. } => *parser = StreamParser::new(gw.config.limits()),
            Wire::Framed(framed) => framed.restart(),
        }
    }

    async fn write(&mut self, text: &str) -> Result<(), Fail> {
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            match &mut self.wire {
                Wire::Bytes { io, .. } => {
                    io.write_all(text.as_bytes()).await?;
                    io.flush().await
                }
                Wire::Framed(framed) => framed.write(text).await.map_err(std::io::Error::other),
            }
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(Fail::Io),
        }
    }

    /// Closes the socket once the stream is over.
    async fn shutdown(&mut self) {
        match &mut self.wire {
            Wire::Bytes { io, .. } => {
                let _ = io.shutdown().await;
            }
            Wire::Framed(framed) => framed.shutdown().await,
        }
    }

    /// The next parsed event, reading as needed. Cancel-safe: bytes read stay in the parser
    /// (a WebSocket message is taken only with its event), and a token is taken only together
    /// with the stanza it pays for.
    async fn next(&mut self) -> Result<StreamEvent, Fail> {
        self.wait_for_token().await;
        let event = match &mut self.wire {
            Wire::Bytes { io, parser } => loop {
                if let Some(event) = parser.next_event()? {
                    break event;
                }
                let n = read_into(io, parser).await.map_err(|_| Fail::Io)?;
                if n == 0 {
                    return Err(Fail::Eof);
                }
            },
            Wire::Framed(framed) => framed.next_event().await.map_err(|e| match e {
                crate::websocket::ReadError::Stream(condition, text) => {
                    Fail::Stream(condition, text)
                }
                crate::websocket::ReadError::Closed => Fail::Eof,
                crate::websocket::ReadError::Io => Fail::Io,
            })?,
        };
        if matches!(event, StreamEvent::Stanza(_)) {
            self.tokens -= 1.0;
        }
        Ok(event)
    }

    /// Waits until the bucket holds a token: a client over its stanza rate is read more
    /// slowly, which slows its own connection down and nobody else's.
    async fn wait_for_token(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.counted).as_secs_f64();
        self.counted = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).min(10.0));
            tokio::time::sleep(wait).await;
            let now = Instant::now();
            let elapsed = now.duration_since(self.counted).as_secs_f64();
            self.counted = now;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
    }
}

thread_local! {
    /// The buffer every connection on this thread reads into. A connection keeps no read
    /// buffer of its own: only the parser holds the bytes of a stanza still arriving, so an
    /// idle session does not pin a read buffer.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Reads what `io` has, through the thread's scratch buffer, straight into `parser`. Returns
/// the number of bytes read (0 at end of stream). Cancel-safe: a pending read has taken
/// nothing.
async fn read_into(io: &mut Box<dyn Io>, parser: &mut StreamParser) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            // The borrow lasts for one synchronous poll; no other connection's read runs on
            // this thread meanwhile.
            let mut scratch = scratch.borrow_mut();
            let mut read = tokio::io::ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut **io).poll_read(cx, &mut read) {
                std::task::Poll::Ready(Ok(())) => {
                    parser.feed(read.filled());
                    std::task::Poll::Ready(Ok(read.filled().len()))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    })
    .await
}

/// The opening of our stream header.
fn header(gw: &Gateway, to: Option<&str>) -> String {
    let mut out = String::from("<?xml version='1.0'?><stream:stream from='");
    crate::xml::escape_into(&mut out, &gw.config.domain);
    out.push('\'');
    if let Some(to) = to {
        out.push_str(" to='");
        crate::xml::escape_into(&mut out, to);
        out.push('\'');
    }
    out.push_str(" id='");
    out.push_str(&random_id());
    out.push_str(
        "' version='1.0' xml:lang='en' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    out
}

fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn stream_error(condition: &str, text: &str) -> String {
    let mut error = Element::new("error", NS_STREAM).child(Element::new(condition, NS_STREAMS));
    if !text.is_empty() {
        error = error.child(Element::new("text", NS_STREAMS).text(text));
    }
    let mut out = error.to_xml();
    out.push_str("</stream:stream>");
    out
}

/// Ends a stream the way `fail` says.
async fn finish(stream: &mut Stream, fail: Fail, header_sent: bool, gw: &Gateway) {
    match fail {
        Fail::Io | Fail::Handoff(_) => return,
        Fail::Closed | Fail::Eof => {
            let _ = stream.write("</stream:stream>").await;
        }
        Fail::Stream(condition, text) => {
            tracing::debug!(condition, text, "XMPP stream error.");
            let mut out = if header_sent {
                String::new()
            } else {
                header(gw, None)
            };
            out.push_str(&stream_error(condition, &text));
            let _ = stream.write(&out).await;
        }
    }
    stream.shutdown().await;
}

/// The `tls-exporter` channel binding of a server TLS connection: 32 bytes exported with the
/// label `EXPORTER-Channel-Binding` and no context (RFC 9266). TLS 1.2 is left out: without the
/// extended master secret its exporter is not unique to the connection.
fn tls_exporter<T>(tls: &tokio_rustls::server::TlsStream<T>) -> Option<Vec<u8>> {
    let (_, conn) = tls.get_ref();
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

/// Serves a direct-TLS connection (XEP-0368): the TLS handshake first, then the stream.
pub async fn run_direct_tls(gw: Arc<Gateway>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let Some(tls) = gw.tls.clone() else {
        return;
    };
    let timeout = Duration::from_secs(u64::from(gw.config.negotiation_timeout_secs.max(1)));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // The handshake is boxed and its result boxed at once (in a plain function), so the TLS
    // connection's state is not also kept inline in the connection's task for its lifetime.
    let accepted = boxed_tls(tokio::time::timeout(timeout, Box::pin(acceptor.accept(tcp))).await);
    match accepted {
        Some((io, binding)) => run(gw, io, Some(peer), Some(binding)).await,
        None => tracing::debug!(%peer, "XMPP direct TLS handshake failed."),
    }
}

/// A TLS stream ready to serve, and its channel binding.
type TlsIo = (Box<dyn Io>, Option<Vec<u8>>);

/// The outcome of a direct TLS handshake under its time limit.
type Accepted = Result<
    std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    tokio::time::error::Elapsed,
>;

/// A finished TLS handshake as the boxed stream the connection reads, with its channel
/// binding (`None` when the TLS version has none); `None` when the handshake failed or timed
/// out.
fn boxed_tls(accepted: Accepted) -> Option<TlsIo> {
    let tls = accepted.ok()?.ok()?;
    let binding = tls_exporter(&tls);
    Some((Box::new(tls), binding))
}

/// How negotiation ended: a resource bound, or a session resumed (with the client's `h`).
enum Start {
    Bound(Box<Negotiated>),
    Resumed(Box<Conn>, u32),
}

/// The result of negotiation: who the client is and which resource it bound.
struct Negotiated {
    caller: Caller,
    username: String,
    resource: String,
    session: Session,
    /// Signed in with a password: the gateway renews the device's token before it expires.
    by_password: bool,
}

/// Serves one connection until it ends. `tls` is `Some` when TLS is already on (direct TLS),
/// holding the connection's channel binding if it has one.
pub async fn run(
    gw: Arc<Gateway>,
    io: Box<dyn Io>,
    peer: Option<SocketAddr>,
    tls: Option<Option<Vec<u8>>>,
) {
    let parser = StreamParser::new(gw.config.limits());
    let wire = Wire::Bytes { io, parser };
    let stream = Stream::new(&gw, wire, tls.is_some(), tls.flatten());
    run_stream(gw, stream, peer).await;
}

/// Serves one stream over a WebSocket (RFC 7395). The route admitted it as secure (see
/// websocket.rs): TLS is the WebSocket's, so STARTTLS is not offered and SASL is.
pub(crate) async fn run_framed(
    gw: Arc<Gateway>,
    framed: crate::websocket::Framed,
    peer: Option<SocketAddr>,
) {
    let stream = Stream::new(&gw, Wire::Framed(Box::new(framed)), true, None);
    run_stream(gw, stream, peer).await;
}

async fn run_stream(gw: Arc<Gateway>, mut stream: Stream, peer: Option<SocketAddr>) {
    let cfg = &gw.config;
    let timeout = Duration::from_secs(u64::from(cfg.negotiation_timeout_secs.max(1)));
    // Boxed: negotiation's state is only needed until the stream is bound, and would
    // otherwise be part of every idle connection's task.
    let negotiated =
        tokio::time::timeout(timeout, Box::pin(negotiate(&gw, &mut stream, peer))).await;
    let negotiated = match negotiated {
        Ok(Ok(Start::Bound(n))) => n,
        Ok(Ok(Start::Resumed(mut conn, h))) => {
            tracing::debug!(user_id = %conn.caller.user_id, "XMPP session resumed.");
            if conn.resumed(h).is_err() {
                conn.end(true);
                let fail = Fail::Stream("undefined-condition", "handled-count-too-high".into());
                finish(&mut stream, fail, true, &gw).await;
                return;
            }
            serve_and_keep(conn, stream).await;
            return;
        }
        Ok(Err((fail, header_sent))) => {
            finish(&mut stream, fail, header_sent, &gw).await;
            return;
        }
        Err(_) => {
            let fail = Fail::Stream("connection-timeout", String::new());
            finish(&mut stream, fail, true, &gw).await;
            return;
        }
    };
    let conn_id = gw.conn_id();
    let kick = Arc::new(Notify::new());
    let user_id = negotiated.caller.user_id;
    let resource = negotiated.resource.clone();
    gw.bind(user_id, &resource, conn_id, kick.clone());
    // A new device's delivery cursors start when it first binds: what arrives from then on
    // while it is away is delivered on its next initial presence (offline delivery).
    if let Err(e) = gw.core.device_sync_cursors(&negotiated.caller).await {
        tracing::warn!(%e, "XMPP delivery cursors not started.");
    }
    let conn = Box::new(Conn {
        conn_id,
        kick,
        resource: resource.clone(),
        bare: format!("{}@{}", negotiated.username, gw.config.domain),
        full: format!(
            "{}@{}/{}",
            negotiated.username, gw.config.domain, negotiated.resource
        ),
        caller: negotiated.caller,
        session: negotiated.session,
        renew_at: negotiated.by_password.then(|| {
            let ttl = gw.core.config().tokens.access_ttl_secs.max(10);
            Instant::now() + Duration::from_secs(ttl * 4 / 5)
        }),
        gw: gw.clone(),
        out: String::new(),
        next_request: 1,
        pending: HashMap::new(),
        names: HashMap::new(),
        users: HashMap::new(),
        avatars: HashMap::new(),
        directs: HashMap::new(),
        peers: HashMap::new(),
        ids: VecDeque::new(),
        carbons: false,
        rooms: HashMap::new(),
        bound_at: gw.core.now_ms(),
        available: false,
        caps: caps::Caps::default(),
        blocklist_requested: false,
        sm: false,
        received: 0,
        unanswered: std::collections::BTreeSet::new(),
        resume_id: None,
        handoffs: None,
        outbox: crate::sm::Outbox::default(),
        routes: iq_route::Routes::default(),
        device_names: HashMap::new(),
    });
    tracing::debug!(user_id = %user_id, %resource, "XMPP client bound a resource.");
    serve_and_keep(conn, stream).await;
}

/// Serves a bound session on `stream`. When the connection is lost and the session is
/// resumable it is kept (parked) until it is resumed elsewhere or its time runs out; a
/// session resumed elsewhere is handed over.
async fn serve_and_keep(mut conn: Box<Conn>, mut stream: Stream) {
    let gw = conn.gw.clone();
    let end = conn.serve(&mut stream).await;
    // What follows the stream's end is boxed: it runs once, and an idle connection's task
    // should not keep room for it while the stream is served.
    Box::pin(after_serving(conn, stream, end, gw)).await;
}

async fn after_serving(mut conn: Box<Conn>, mut stream: Stream, end: Fail, gw: Arc<Gateway>) {
    match end {
        Fail::Handoff(handoff) => {
            stream.shutdown().await;
            let _ = handoff.send(conn);
        }
        Fail::Io | Fail::Eof if conn.resume_id.is_some() => {
            stream.shutdown().await;
            drop(stream);
            tracing::debug!(user_id = %conn.caller.user_id, "XMPP session kept for resumption.");
            match conn.park().await {
                Some(handoff) => {
                    let _ = handoff.send(conn);
                }
                // What the parked session took in never reached the client: the saved
                // cursors stay where they were, so the next session delivers it.
                None => conn.end(false),
            }
        }
        end => {
            if matches!(end, Fail::Closed) {
                conn.drain(&mut stream).await;
            }
            conn.end(true);
            finish(&mut stream, end, true, &gw).await;
        }
    }
}

/// Runs the stream until a resource is bound. On failure, says whether our header was sent.
async fn negotiate(
    gw: &Arc<Gateway>,
    stream: &mut Stream,
    peer: Option<SocketAddr>,
) -> Result<Start, (Fail, bool)> {
    let cfg = &gw.config;
    // Who SASL said the client is: the user, and the password to sign in a device with once
    // the resource is known, or an authenticated session (OAUTHBEARER).
    let mut authenticated: Option<AuthOutcome> = None;
    let mut header_sent = false;
    loop {
        // A new stream: the header first.
        let open = match stream.next().await {
            Ok(StreamEvent::Open(open)) => open,
            Ok(_) => return Err((Fail::Stream("not-well-formed", String::new()), header_sent)),
            Err(fail) => return Err((fail, header_sent)),
        };
        let mut out = header(gw, open.get_attr("from"));
        header_sent = true;
        if open
            .get_attr("to")
            .is_some_and(|to| !to.eq_ignore_ascii_case(&cfg.domain))
        {
            out.push_str(&stream_error("host-unknown", ""));
            let _ = stream.write(&out).await;
            return Err((Fail::Io, true));
        }
        if open.get_attr("version") != Some("1.0") {
            out.push_str(&stream_error("unsupported-version", ""));
            let _ = stream.write(&out).await;
            return Err((Fail::Io, true));
        }
        // Over a WebSocket, TLS is the WebSocket's (RFC 7395 3.8): never STARTTLS.
        let tls_available =
            gw.tls.is_some() && !stream.secure && matches!(stream.wire, Wire::Bytes { .. });
        let mut features = Element::new("features", NS_STREAM);
        let may_auth = stream.secure || !cfg.tls_required;
        if authenticated.is_none() {
            if tls_available {
                let mut starttls = Element::new("starttls", NS_TLS);
                if cfg.tls_required {
                    starttls = starttls.child(Element::new("required", NS_TLS));
                }
                features = features.child(starttls);
            }
            if may_auth && stream.secure {
                let mut mechanisms = Element::new("mechanisms", NS_SASL);
                for m in sasl::mechanisms(stream.channel_binding.is_some()) {
                    mechanisms = mechanisms.child(Element::new("mechanism", NS_SASL).text(m));
                }
                features = features.child(mechanisms);
                if stream.channel_binding.is_some() {
                    // XEP-0440: which channel binding types the -PLUS mechanisms take.
                    features = features.child(
                        Element::new("sasl-channel-binding", NS_SASL_CB).child(
                            Element::new("channel-binding", NS_SASL_CB)
                                .attr("type", sasl::CHANNEL_BINDING),
                        ),
                    );
                }
            }
        } else {
            features = features
                .child(Element::new("bind", NS_BIND))
                .child(
                    Element::new("session", NS_SESSION).child(Element::new("optional", NS_SESSION)),
                )
                .child(Element::new("sm", NS_SM));
        }
        out.push_str(&features.to_xml());
        stream.write(&out).await.map_err(|f| (f, true))?;
        // Stanzas until something restarts the stream or binds a resource.
        loop {
            let stanza = match stream.next().await {
                Ok(StreamEvent::Stanza(s)) => s,
                Ok(StreamEvent::Close) => return Err((Fail::Closed, true)),
                // The parsers return one header per stream; kept as an error all the same.
                Ok(StreamEvent::Open(_)) => {
                    return Err((Fail::Stream("not-well-formed", String::new()), true));
                }
                Err(fail) => return Err((fail, true)),
            };
            if stanza.is("starttls", NS_TLS) && tls_available && authenticated.is_none() {
                stream
                    .write(&Element::new("proceed", NS_TLS).to_xml())
                    .await
                    .map_err(|f| (f, true))?;
                let tls = gw.tls.clone().expect("checked above");
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                // Swap the plain socket out for the TLS one; a failed handshake leaves nothing
                // to write to.
                let Wire::Bytes { io, .. } = &mut stream.wire else {
                    return Err((Fail::Io, true));
                };
                let plain = std::mem::replace(io, Box::new(tokio::io::duplex(1).0));
                let tls = acceptor.accept(plain).await.map_err(|_| (Fail::Io, true))?;
                stream.channel_binding = tls_exporter(&tls);
                *io = Box::new(tls);
                stream.secure = true;
                stream.restart(gw);
                break;
            }
            if stanza.is("auth", NS_SASL) && authenticated.is_none() && may_auth && stream.secure {
                let mechanism = stanza.get_attr("mechanism").unwrap_or_default().to_owned();
                let outcome = match sasl::scram(&mechanism) {
                    Some(scram) => scram_exchange(gw, stream, scram, &stanza.text_content(), peer)
                        .await
                        .map_err(|f| (f, true))?,
                    None => authenticate(gw, &mechanism, &stanza.text_content(), peer)
                        .await
                        .map(|auth| (auth, String::new())),
                };
                match outcome {
                    Ok((auth, data)) => {
                        authenticated = Some(auth);
                        let mut success = Element::new("success", NS_SASL);
                        if !data.is_empty() {
                            use base64::Engine;
                            success = success
                                .text(base64::engine::general_purpose::STANDARD.encode(data));
                        }
                        stream
                            .write(&success.to_xml())
                            .await
                            .map_err(|f| (f, true))?;
                        stream.restart(gw);
                        break;
                    }
                    Err((condition, text)) => {
                        let mut failure = Element::new("failure", NS_SASL)
                            .child(Element::new(condition, NS_SASL));
                        if !text.is_empty() {
                            failure = failure.child(Element::new("text", NS_SASL).text(text));
                        }
                        stream
                            .write(&failure.to_xml())
                            .await
                            .map_err(|f| (f, true))?;
                        continue;
                    }
                }
            }
            if stanza.is("resume", NS_SM)
                && let Some((user, _, _)) = &authenticated
            {
                if let Some(resumed) = resume(gw, *user, &stanza).await {
                    return Ok(resumed);
                }
                let failed =
                    Element::new("failed", NS_SM).child(Element::new("item-not-found", NS_STANZAS));
                stream
                    .write(&failed.to_xml())
                    .await
                    .map_err(|f| (f, true))?;
                continue;
            }
            if stanza.is("iq", NS_CLIENT)
                && let Some((user, verified, session)) = authenticated.as_mut()
            {
                let id = stanza.get_attr("id").unwrap_or_default().to_owned();
                if let Some(bind) = stanza.find("bind", NS_BIND)
                    && stanza.get_attr("type") == Some("set")
                {
                    let resource = bind
                        .find("resource", NS_BIND)
                        .map(|r| r.text_content().trim().to_owned())
                        .filter(|r| {
                            !r.is_empty() && r.len() <= 64 && !r.chars().any(char::is_control)
                        })
                        .unwrap_or_else(|| format!("tidings-{}", &random_id()[..8]));
                    let by_password = *verified;
                    let session = match (std::mem::replace(verified, false), session.take()) {
                        (true, _) => {
                            // The resource names the device; SASL checked the password and the
                            // core checks the account again before it creates the device.
                            let token = gw
                                .core
                                .device_of_verified_user(
                                    *user,
                                    format!("XMPP {resource}"),
                                    peer.map(|p| p.ip()),
                                )
                                .await;
                            match token {
                                Ok(token) => open_session(gw, token).await,
                                Err(e) => Err(e),
                            }
                        }
                        (false, Some(session)) => Ok(session),
                        (false, None) => Err(CoreError::unauthenticated("bind once")),
                    };
                    let session = match session {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%e, "XMPP resource binding refused.");
                            return Err((Fail::Stream("not-authorized", String::new()), true));
                        }
                    };
                    let caller = session.caller().expect("authenticated session");
                    let username = match gw.core.me(&caller).await {
                        Ok(account) => account.username,
                        Err(_) => {
                            return Err((
                                Fail::Stream("internal-server-error", String::new()),
                                true,
                            ));
                        }
                    };
                    let jid = format!("{username}@{}/{resource}", cfg.domain);
                    let result = Element::new("iq", NS_CLIENT)
                        .attr("type", "result")
                        .attr("id", id)
                        .child(
                            Element::new("bind", NS_BIND)
                                .child(Element::new("jid", NS_BIND).text(jid)),
                        );
                    stream
                        .write(&result.to_xml())
                        .await
                        .map_err(|f| (f, true))?;
                    return Ok(Start::Bound(Box::new(Negotiated {
                        caller,
                        username,
                        resource,
                        session,
                        by_password,
                    })));
                }
                let error = iq_error(&stanza, "cancel", "not-allowed", None);
                stream.write(&error.to_xml()).await.map_err(|f| (f, true))?;
                continue;
            }
            // Anything else before authentication (RFC 6120 6.4.1 / 5.3.1).
            let condition = if !stream.secure && cfg.tls_required {
                "policy-violation"
            } else {
                "not-authorized"
            };
            return Err((Fail::Stream(condition, String::new()), true));
        }
    }
}

/// Takes over the session a `<resume/>` names, if it belongs to `user` and is still held.
async fn resume(gw: &Gateway, user: UserId, stanza: &Element) -> Option<Start> {
    let previd = stanza.get_attr("previd")?;
    let h: u32 = stanza.get_attr("h")?.parse().ok()?;
    let handoffs = gw.resumable(previd, user)?;
    let (reply, taken) = tokio::sync::oneshot::channel();
    handoffs.send(reply).await.ok()?;
    // The holder answers at once unless it is already ending; then the channel closes.
    let conn = tokio::time::timeout(Duration::from_secs(10), taken)
        .await
        .ok()?
        .ok()?;
    Some(Start::Resumed(conn, h))
}

/// Who SASL authenticated: the user, whether a password (PLAIN or SCRAM) proved it (a device
/// is signed in once the resource is bound), or else the session of the access token.
type AuthOutcome = (UserId, bool, Option<Session>);

/// A SASL failure: the condition and a text for the client.
type SaslFailure = (&'static str, &'static str);

/// Runs a SCRAM exchange (RFC 5802) after its `<auth>`: the server-first-message as a
/// challenge, the client-final-message as the response. On success: who authenticated and the
/// server-final-message for `<success>`. The core holds the keys, checks the proof, limits
/// the attempts and audits the failures.
async fn scram_exchange(
    gw: &Gateway,
    stream: &mut Stream,
    scram: sasl::Scram,
    initial: &str,
    peer: Option<SocketAddr>,
) -> Result<Result<(AuthOutcome, String), SaslFailure>, Fail> {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let address = peer.map(|p| p.ip());
    let first = match sasl::decode_response(initial)
        .and_then(|bytes| sasl::parse_client_first(&bytes, &gw.config.domain))
    {
        Ok(first) => first,
        Err(e) => return Ok(Err((e.condition(), ""))),
    };
    // Channel binding (RFC 5802 6): -PLUS must bind to our type; a client that supports
    // binding but saw no -PLUS ("y") while we offered it is being downgraded.
    let offered_plus = stream.channel_binding.is_some();
    let binding: Vec<u8> = match (&first.channel_binding, scram.plus) {
        (sasl::ChannelBindingFlag::Used(kind), true)
            if kind == sasl::CHANNEL_BINDING && offered_plus =>
        {
            stream.channel_binding.clone().unwrap_or_default()
        }
        (sasl::ChannelBindingFlag::Used(_), true) => {
            return Ok(Err(("not-authorized", "unsupported channel binding type")));
        }
        (sasl::ChannelBindingFlag::No, false) => Vec::new(),
        (sasl::ChannelBindingFlag::NotOffered, false) if !offered_plus => Vec::new(),
        (sasl::ChannelBindingFlag::NotOffered, false) => {
            return Ok(Err(("not-authorized", "channel binding was offered")));
        }
        _ => return Ok(Err(("malformed-request", ""))),
    };
    let lookup = match gw
        .core
        .scram_lookup(&first.username, scram.hash, address)
        .await
    {
        Ok(lookup) => lookup,
        Err(e) if e.code == ErrorCode::RateLimited => {
            return Ok(Err(("temporary-auth-failure", "too many attempts")));
        }
        Err(_) => return Ok(Err(("temporary-auth-failure", ""))),
    };
    let nonce = format!("{}{}", first.nonce, random_id());
    let server_first = sasl::server_first(&nonce, &lookup.salt, lookup.iterations);
    let challenge = Element::new("challenge", NS_SASL).text(b64.encode(&server_first));
    stream.write(&challenge.to_xml()).await?;
    let response = match stream.next().await? {
        StreamEvent::Stanza(s) if s.is("response", NS_SASL) => s,
        StreamEvent::Stanza(s) if s.is("abort", NS_SASL) => return Ok(Err(("aborted", ""))),
        StreamEvent::Close => return Err(Fail::Closed),
        _ => return Err(Fail::Stream("not-authorized", String::new())),
    };
    let last = match sasl::decode_response(&response.text_content())
        .and_then(|bytes| sasl::parse_client_final(&bytes))
    {
        Ok(last) => last,
        Err(e) => return Ok(Err((e.condition(), ""))),
    };
    let mut expected = first.gs2_header.as_bytes().to_vec();
    expected.extend_from_slice(&binding);
    let auth_message = format!("{},{server_first},{}", first.bare, last.without_proof);
    let signature = (last.nonce == nonce && last.channel_binding == expected)
        .then(|| lookup.verify(auth_message.as_bytes(), &last.proof))
        .flatten();
    match gw
        .core
        .scram_finish(&lookup, signature.is_some(), address)
        .await
    {
        Ok(user) => Ok(Ok((
            (user, true, None),
            sasl::server_final(&signature.unwrap_or_default()),
        ))),
        Err(e) if e.code == ErrorCode::Forbidden => Ok(Err(("account-disabled", ""))),
        Err(_) => Ok(Err(("not-authorized", "wrong username or password"))),
    }
}

/// Runs one SASL exchange with an initial response only (PLAIN, OAUTHBEARER). On success: the
/// user, and either the password's proof or an authenticated session.
async fn authenticate(
    gw: &Gateway,
    mechanism: &str,
    response: &str,
    peer: Option<SocketAddr>,
) -> Result<AuthOutcome, SaslFailure> {
    if !matches!(mechanism, "PLAIN" | "OAUTHBEARER") {
        return Err(("invalid-mechanism", ""));
    }
    let bytes = sasl::decode_response(response).map_err(|e| (e.condition(), ""))?;
    let credentials =
        sasl::parse(mechanism, &bytes, &gw.config.domain).map_err(|e| (e.condition(), ""))?;
    match credentials {
        Credentials::Password { username, password } => {
            match gw
                .core
                .verify_password(&username, password, peer.map(|p| p.ip()))
                .await
            {
                Ok(user) => Ok((user, true, None)),
                Err(e) if e.code == ErrorCode::RateLimited => {
                    Err(("temporary-auth-failure", "too many attempts"))
                }
                Err(e) if e.code == ErrorCode::Forbidden => Err(("account-disabled", "")),
                Err(_) => Err(("not-authorized", "wrong username or password")),
            }
        }
        Credentials::Bearer { authzid, token } => {
            let session = open_session(gw, token)
                .await
                .map_err(|_| ("not-authorized", "invalid access token"))?;
            let caller = session.caller().expect("authenticated session");
            if let Some(authzid) = authzid {
                let me = gw
                    .core
                    .me(&caller)
                    .await
                    .map_err(|_| ("not-authorized", ""))?;
                let name = authzid.split('@').next().unwrap_or_default();
                if !name.eq_ignore_ascii_case(&me.username) {
                    return Err(("invalid-authzid", ""));
                }
            }
            Ok((caller.user_id, false, Some(session)))
        }
    }
}

/// A core session authenticated with `token`.
async fn open_session(gw: &Gateway, token: String) -> Result<Session, CoreError> {
    let mut session = Session::new(gw.core.clone());
    let auth = ClientFrame::Auth {
        id: format!("{REQUEST_PREFIX}auth"),
        token,
    };
    session.handle_text(&serde_json::to_string(&auth).expect("frames serialize"));
    loop {
        match session.next_output().await {
            Output::Frame(text) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                Ok(ServerFrame::AuthOk { .. }) => return Ok(session),
                Ok(ServerFrame::Error { code, message, .. }) => {
                    return Err(CoreError::new(code, message));
                }
                _ => {}
            },
            Output::Close { .. } => return Err(CoreError::unauthenticated("session closed")),
        }
    }
}

fn iq_error(iq: &Element, kind: &str, condition: &str, text: Option<&str>) -> Element {
    let mut error = Element::new("error", NS_CLIENT)
        .attr("type", kind)
        .child(Element::new(condition, NS_STANZAS));
    if let Some(text) = text {
        error = error.child(Element::new("text", NS_STANZAS).text(text));
    }
    Element::new("iq", NS_CLIENT)
        .attr("type", "error")
        .attr_opt("id", iq.get_attr("id"))
        .attr_opt("to", iq.get_attr("from"))
        .attr_opt("from", iq.get_attr("to"))
        .child(error)
}

/// The stanza error condition for a core error (RFC 6120 8.3.3).
fn condition_for(code: ErrorCode) -> (&'static str, &'static str) {
    match code {
        ErrorCode::Forbidden => ("auth", "forbidden"),
        ErrorCode::NotFound => ("cancel", "item-not-found"),
        ErrorCode::RateLimited | ErrorCode::QuotaExceeded => ("wait", "resource-constraint"),
        ErrorCode::TooLarge | ErrorCode::LimitExceeded => ("modify", "policy-violation"),
        ErrorCode::InvalidField | ErrorCode::MalformedRequest => ("modify", "bad-request"),
        ErrorCode::Conflict => ("cancel", "conflict"),
        ErrorCode::Unauthenticated | ErrorCode::TokenExpired => ("auth", "not-authorized"),
        _ => ("wait", "internal-server-error"),
    }
}

/// What the connection waits for from the session, by request id.
enum Pending {
    /// A message send: the stanza to bounce with an error if it is refused, and its number
    /// for Stream Management.
    Send { stanza: Element, number: u64 },
    /// A correction, retraction or reaction (actions.rs): bounced like a send; `number` is
    /// set on the last message a stanza became, and a room reflects the stanza on its `ack`
    /// when `reflect`.
    Action {
        stanza: Element,
        number: Option<u64>,
        reflect: bool,
    },
    /// A request whose error only needs logging (receipts, typing).
    Quiet,
    /// An initial-presence query: answered with the presence of the friends asked about.
    Presence,
    /// The gateway's token renewal.
    Renew,
    /// The catch-up sync from the device's saved cursors (offline delivery).
    Sync,
    /// An IQ handed to another resource's device: if the core refuses it, the client gets
    /// an IQ error.
    RoutedIq {
        to_user: UserId,
        to_device: tidings_proto::DeviceId,
        iq_id: String,
    },
}

/// A bound session, served on a connection or parked awaiting resumption.
pub(crate) struct Conn {
    gw: Arc<Gateway>,
    /// The resource this session holds, the id it holds it under, and how a newer binding of
    /// it tells this one to end.
    conn_id: u64,
    kick: Arc<Notify>,
    resource: String,
    caller: Caller,
    bare: String,
    full: String,
    session: Session,
    renew_at: Option<Instant>,
    /// Output gathered during one turn of the loop, written once.
    out: String,
    next_request: u64,
    pending: HashMap<String, Pending>,
    /// Usernames by user id, and ids by username, as met.
    names: HashMap<UserId, String>,
    users: HashMap<String, UserId>,
    /// Friends' avatars (file ids, empty for none) as met, for the photo hash in their
    /// presence (XEP-0153); an entry goes when the friend's profile changes.
    avatars: HashMap<UserId, String>,
    /// Direct conversations by peer, and peers by direct conversation (`None`: a group).
    directs: HashMap<UserId, ConversationId>,
    peers: HashMap<ConversationId, Option<UserId>>,
    /// (conversation, seq, XMPP message id) of recent messages, oldest first, to turn receipts
    /// and markers that name a message id into sequences and back.
    ids: VecDeque<(ConversationId, Seq, String)>,
    /// Message Carbons (XEP-0280) enabled.
    carbons: bool,
    /// Rooms (groups) this connection joined over MUC: the JID, its nick and the occupants.
    rooms: HashMap<ConversationId, muc::Joined>,
    /// When the resource was bound (ms since the epoch, the core's clock): a direct message
    /// committed before it is an offline message and carries a `<delay>` (XEP-0203).
    bound_at: i64,
    /// The client sent initial presence.
    available: bool,
    /// What the client said it supports (XEP-0115), which decides its PEP notifications.
    caps: caps::Caps,
    /// The client asked for its block list, so it gets pushes of changes (XEP-0191).
    blocklist_requested: bool,
    /// Stream Management (XEP-0198) acknowledgements are on.
    sm: bool,
    /// Stanzas received since Stream Management was enabled.
    received: u64,
    /// Numbers of received message stanzas the core has not answered yet. A stanza counts as
    /// handled only once it and all before it are: for a message, once the core's `ack` (or
    /// refusal) arrived, so `<a h=.../>` never covers a message that is not durable.
    unanswered: std::collections::BTreeSet<u64>,
    /// The Stream Management id when resumption is on; the session is in the gateway's table
    /// under it.
    resume_id: Option<String>,
    /// Requests from connections resuming this session.
    handoffs: Option<tokio::sync::mpsc::Receiver<Handoff>>,
    /// Stanzas sent and not acknowledged, while resumption is on.
    outbox: crate::sm::Outbox,
    /// IQs routed to and from other resources that wait for answers (iq_route.rs).
    routes: iq_route::Routes,
    /// Names (resources) of other users' devices that sent this client IQs, as met.
    device_names: HashMap<tidings_proto::DeviceId, String>,
}

/// The next handoff request, or never when the session is not resumable.
async fn next_handoff(rx: &mut Option<tokio::sync::mpsc::Receiver<Handoff>>) -> Option<Handoff> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    /// Releases what the session holds in the gateway once it is over, and (with `save`) saves
    /// how far the device was handed messages, so its next session starts there.
    fn end(&self, save: bool) {
        let bound = self
            .gw
            .unbind(self.caller.user_id, &self.resource, self.conn_id);
        // The device leaves the rooms it is in, unless a newer connection bound the same
        // resource (the same device) and took its place there.
        if bound && !self.rooms.is_empty() {
            let rooms: Vec<ConversationId> = self.rooms.keys().copied().collect();
            let (core, caller) = (self.gw.core.clone(), self.caller);
            tokio::spawn(async move {
                for room in rooms {
                    if let Err(e) = core.leave_room(&caller, room, None, true).await {
                        tracing::debug!(%e, "Could not take an XMPP occupant out of a room.");
                    }
                }
            });
        }
        if let Some(id) = &self.resume_id {
            self.gw.forget_resumable(id);
        }
        if !save {
            return;
        }
        let cursors = self.session.delivered_cursors();
        let (core, caller) = (self.gw.core.clone(), self.caller);
        tokio::spawn(async move {
            if let Err(e) = core.save_device_cursors(&caller, &cursors).await {
                tracing::warn!(%e, "XMPP delivery cursors not saved.");
            }
        });
    }

    /// Continues on a new stream after `<resume h=.../>`: forgets what the client
    /// acknowledged, confirms, and resends the rest.
    fn resumed(&mut self, h: u32) -> Result<(), crate::sm::TooHigh> {
        self.outbox.ack(h)?;
        let resumed = Element::new("resumed", NS_SM)
            .attr("previd", self.resume_id.clone().unwrap_or_default())
            .attr("h", self.handled().to_string());
        resumed.write_to(&mut self.out, NS_CLIENT);
        for xml in self.outbox.unacked() {
            self.out.push_str(xml);
        }
        Ok(())
    }

    /// Keeps the session without a connection: its output goes into the outbox until a
    /// connection resumes it (the handoff is returned), or until the resumption timeout, a
    /// newer binding of the resource, the end of the core session or an outbox too large
    /// (`None`: the session ends, and its messages stay in the history).
    async fn park(&mut self) -> Option<Handoff> {
        let timeout = Duration::from_secs(u64::from(self.gw.config.resume_timeout_secs));
        let deadline = Instant::now() + timeout;
        loop {
            // What would have been written is already in the outbox.
            self.out.clear();
            if self.outbox.too_big() {
                return None;
            }
            let renew_at = self.renew_at;
            tokio::select! {
                biased;
                () = self.kick.notified() => return None,
                handoff = next_handoff(&mut self.handoffs) => return handoff,
                output = self.session.next_output() => match output {
                    Output::Frame(text) => {
                        if let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) {
                            self.on_frame(frame).await;
                        }
                    }
                    Output::Close { .. } => return None,
                },
                () = tokio::time::sleep_until(deadline) => return None,
                () = sleep_until_opt(renew_at) => self.renew().await,
            }
        }
    }

    /// After the client closed its stream: the messages it sent before the close are still
    /// on their way through the core (a client may send and close at once). Their answers are
    /// awaited, within a limit, and what they bring (bounces) written, so closing never drops
    /// a message sent before it; ending the session first would cancel the sends in flight.
    async fn drain(&mut self, stream: &mut Stream) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            if !self.out.is_empty() {
                let out = std::mem::take(&mut self.out);
                if stream.write(&out).await.is_err() {
                    return;
                }
            }
            if !self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Send { .. } | Pending::Action { .. }))
            {
                return;
            }
            tokio::select! {
                output = self.session.next_output() => match output {
                    Output::Frame(text) => {
                        if let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) {
                            self.on_frame(frame).await;
                        }
                    }
                    Output::Close { .. } => return,
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!("XMPP sends still unanswered when the stream closed.");
                    return;
                }
            }
        }
    }

    async fn serve(&mut self, stream: &mut Stream) -> Fail {
        loop {
            if self.resume_id.is_some() && self.outbox.take_request() {
                // Ask for an acknowledgement so the outbox does not grow without bound.
                Element::new("r", NS_SM).write_to(&mut self.out, NS_CLIENT);
            }
            if !self.out.is_empty() {
                let out = std::mem::take(&mut self.out);
                if let Err(fail) = stream.write(&out).await {
                    return fail;
                }
            }
            let renew_at = self.renew_at;
            let routed_deadline = self.routes.next_deadline();
            tokio::select! {
                biased;
                () = self.kick.notified() => {
                    return Fail::Stream("conflict", "another connection bound this resource".into());
                }
                handoff = next_handoff(&mut self.handoffs) => {
                    if let Some(handoff) = handoff {
                        return Fail::Handoff(handoff);
                    }
                }
                event = stream.next(), if self.session.can_read() => {
                    match event {
                        Ok(StreamEvent::Stanza(stanza)) => {
                            // Boxed, like the frame handling below: the handlers' state is
                            // large and lives only while a stanza is handled, so an idle
                            // connection's task does not keep room for it.
                            if let Err(fail) = Box::pin(self.on_stanza(stanza)).await {
                                return fail;
                            }
                        }
                        Ok(StreamEvent::Close) => return Fail::Closed,
                        Ok(StreamEvent::Open(_)) => {
                            return Fail::Stream("not-well-formed", String::new());
                        }
                        Err(fail) => return fail,
                    }
                }
                output = self.session.next_output() => match output {
                    Output::Frame(text) => {
                        match serde_json::from_str::<ServerFrame>(text.as_str()) {
                            Ok(frame) => Box::pin(self.on_frame(frame)).await,
                            Err(e) => tracing::warn!(%e, "Unreadable session frame."),
                        }
                    }
                    Output::Close { code, reason } => {
                        let condition = match code {
                            close_code::TOKEN_EXPIRED | close_code::UNAUTHENTICATED
                            | close_code::DEVICE_REVOKED => "not-authorized",
                            close_code::SLOW_CONSUMER => "policy-violation",
                            close_code::GOING_AWAY => "system-shutdown",
                            _ => "internal-server-error",
                        };
                        return Fail::Stream(condition, reason.into());
                    }
                },
                () = sleep_until_opt(renew_at) => Box::pin(self.renew()).await,
                () = sleep_until_opt(routed_deadline) => self.expire_routed_iqs(),
            }
        }
    }

    /// Saves the device's delivery cursors now (also done when the session ends; saving
    /// along the way bounds what a crash could deliver twice).
    async fn save_cursors(&mut self) {
        let cursors = self.session.delivered_cursors();
        if let Err(e) = self
            .gw
            .core
            .save_device_cursors(&self.caller, &cursors)
            .await
        {
            tracing::warn!(%e, "XMPP delivery cursors not saved.");
        }
    }

    async fn renew(&mut self) {
        self.save_cursors().await;
        let ttl = self.gw.core.config().tokens.access_ttl_secs.max(10);
        self.renew_at = Some(Instant::now() + Duration::from_secs(ttl * 4 / 5));
        match self.gw.core.renew_device_token(&self.caller).await {
            Ok(token) => {
                let id = self.request_id(Pending::Renew);
                self.native(&ClientFrame::Auth { id, token });
            }
            Err(e) => tracing::debug!(%e, "XMPP device token not renewed."),
        }
    }

    fn request_id(&mut self, pending: Pending) -> String {
        let id = format!("{REQUEST_PREFIX}{}", self.next_request);
        self.next_request += 1;
        self.pending.insert(id.clone(), pending);
        id
    }

    fn native(&mut self, frame: &ClientFrame) {
        self.session
            .handle_text(&serde_json::to_string(frame).expect("frames serialize"));
    }

    /// Writes a stanza to the client (counted and kept for resending while resumption is on).
    fn send(&mut self, element: &Element) {
        let start = self.out.len();
        element.write_to(&mut self.out, NS_CLIENT);
        if self.resume_id.is_some() {
            self.outbox.push(self.out[start..].to_owned());
        }
    }

    /// Writes a Stream Management nonza, which XEP-0198 does not count.
    fn send_nonza(&mut self, element: &Element) {
        element.write_to(&mut self.out, NS_CLIENT);
    }

    fn domain(&self) -> &str {
        &self.gw.config.domain
    }

    /// The local part of a JID of our domain (`user@domain[/resource]`); `None` otherwise.
    fn local_user<'a>(&self, jid: &'a str) -> Option<&'a str> {
        let bare = jid.split('/').next().unwrap_or(jid);
        let (user, domain) = bare.split_once('@')?;
        domain.eq_ignore_ascii_case(self.domain()).then_some(user)
    }

    /// Remembers a user's name both ways, as met in a listing or an event.
    fn learn_name(&mut self, id: UserId, username: &str) {
        self.names.insert(id, username.to_owned());
        self.users.insert(username.to_owned(), id);
    }

    async fn user_id(&mut self, username: &str) -> Option<UserId> {
        let username = username.to_lowercase();
        if let Some(id) = self.users.get(&username) {
            return Some(*id);
        }
        let id = self.gw.core.user_id_by_name(&username).await.ok()?;
        self.learn_name(id, &username);
        Some(id)
    }

    async fn username(&mut self, id: UserId) -> Option<String> {
        if let Some(name) = self.names.get(&id) {
            return Some(name.clone());
        }
        let profile = self.gw.core.profile(&self.caller, id).await.ok()?;
        self.learn_name(id, &profile.username);
        Some(profile.username)
    }

    async fn direct_with(&mut self, peer: UserId) -> Result<ConversationId, CoreError> {
        if let Some(id) = self.directs.get(&peer) {
            return Ok(*id);
        }
        let conversation = self.gw.core.open_direct(&self.caller, peer).await?;
        self.directs.insert(peer, conversation.id);
        self.peers.insert(conversation.id, Some(peer));
        Ok(conversation.id)
    }

    /// The peer of a direct conversation, `None` for a group.
    async fn peer_of(&mut self, conversation: ConversationId) -> Option<UserId> {
        if let Some(peer) = self.peers.get(&conversation) {
            return *peer;
        }
        let info = self
            .gw
            .core
            .conversation(&self.caller, conversation)
            .await
            .ok()?;
        let peer = if info.kind == tidings_proto::rest::ConversationKind::Direct {
            let members = self
                .gw
                .core
                .members(&self.caller, conversation)
                .await
                .ok()?;
            members
                .iter()
                .find(|m| m.user_id != self.caller.user_id)
                .map(|m| {
                    self.learn_name(m.user_id, &m.username);
                    m.user_id
                })
        } else {
            None
        };
        self.peers.insert(conversation, peer);
        if let Some(peer) = peer {
            self.directs.insert(peer, conversation);
        }
        peer
    }

    fn remember(&mut self, conversation: ConversationId, seq: Seq, id: String) {
        if self.ids.len() >= REMEMBERED_IDS {
            self.ids.pop_front();
        }
        self.ids.push_back((conversation, seq, id));
    }

    fn seq_of(&self, conversation: ConversationId, id: &str) -> Option<Seq> {
        self.ids
            .iter()
            .rev()
            .find(|(c, _, i)| *c == conversation && i == id)
            .map(|(_, s, _)| *s)
    }

    fn id_of(&self, conversation: ConversationId, seq: Seq) -> Option<&str> {
        self.ids
            .iter()
            .rev()
            .find(|(c, s, _)| *c == conversation && *s == seq)
            .map(|(_, _, i)| i.as_str())
    }

    /// The count of handled stanzas XEP-0198 reports (`h`, modulo 2^32).
    fn handled(&self) -> u32 {
        let h = match self.unanswered.first() {
            Some(first) => first - 1,
            None => self.received,
        };
        (h % (1 << 32)) as u32
    }

    fn on_sm(&mut self, nonza: &Element) -> Result<(), Fail> {
        match nonza.name.as_str() {
            "enable" if !self.sm => {
                self.sm = true;
                let max = self.gw.config.resume_timeout_secs;
                let wants = matches!(nonza.get_attr("resume"), Some("true" | "1"));
                let mut enabled = Element::new("enabled", NS_SM);
                if wants && max > 0 {
                    let id = random_id();
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    self.gw.add_resumable(id.clone(), self.caller.user_id, tx);
                    self.handoffs = Some(rx);
                    self.resume_id = Some(id.clone());
                    enabled = enabled
                        .attr("id", id)
                        .attr("resume", "true")
                        .attr("max", max.to_string());
                }
                self.send_nonza(&enabled);
            }
            "enable" => {
                let failed = Element::new("failed", NS_SM)
                    .child(Element::new("unexpected-request", NS_STANZAS));
                self.send_nonza(&failed);
            }
            "r" if self.sm => {
                let a = Element::new("a", NS_SM).attr("h", self.handled().to_string());
                self.send_nonza(&a);
            }
            // The client's acknowledgement of what we sent: those need no resending.
            "a" if self.sm => {
                let h = nonza.get_attr("h").and_then(|h| h.parse().ok());
                match h {
                    Some(h) if self.resume_id.is_some() => {
                        if self.outbox.ack(h).is_err() {
                            return Err(Fail::Stream(
                                "undefined-condition",
                                "handled-count-too-high".into(),
                            ));
                        }
                    }
                    Some(_) => {}
                    None => return Err(Fail::Stream("bad-format", String::new())),
                }
            }
            _ => return Err(Fail::Stream("unsupported-stanza-type", String::new())),
        }
        Ok(())
    }

    async fn on_stanza(&mut self, mut stanza: Element) -> Result<(), Fail> {
        if stanza.ns == NS_SM {
            return self.on_sm(&stanza);
        }
        if self.sm {
            self.received += 1;
        }
        if stanza.ns != NS_CLIENT {
            return Err(Fail::Stream("invalid-namespace", String::new()));
        }
        // RFC 6120 8.1.2.1: the server stamps `from` with the full JID; a client may only
        // claim its own.
        if let Some(from) = stanza.get_attr("from")
            && from != self.full
            && from != self.bare
        {
            return Err(Fail::Stream(
                "invalid-from",
                "stanzas may only come from your own JID".into(),
            ));
        }
        stanza.set_attr("from", self.full.clone());
        match stanza.name.as_str() {
            "message" => self.on_message(stanza).await,
            "presence" => self.on_presence(stanza).await,
            "iq" => self.on_iq(stanza).await,
            _ => Err(Fail::Stream("unsupported-stanza-type", String::new())),
        }
    }

    fn message_error(&mut self, stanza: &Element, kind: &str, condition: &str, text: &str) {
        let error = Element::new("message", NS_CLIENT)
            .attr("type", "error")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("to", self.full.clone())
            .attr_opt("from", stanza.get_attr("to"))
            .child(
                Element::new("error", NS_CLIENT)
                    .attr("type", kind)
                    .child(Element::new(condition, NS_STANZAS))
                    .child(Element::new("text", NS_STANZAS).text(text)),
            );
        self.send(&error);
    }

    async fn on_message(&mut self, stanza: Element) -> Result<(), Fail> {
        let kind = stanza.get_attr("type").unwrap_or("normal");
        if kind == "error" || kind == "groupchat" && stanza.get_attr("to").is_none() {
            return Ok(());
        }
        let Some(to) = stanza.get_attr("to").map(str::to_owned) else {
            // A message to the server itself: nothing handles it.
            return Ok(());
        };
        let (stanza, to) = if self.is_muc(&to) {
            // A private message to an occupant comes back as a direct message to its user.
            match self.on_muc_message(stanza, &to).await {
                Some(direct) => {
                    let to = direct.get_attr("to").unwrap_or_default().to_owned();
                    (direct, to)
                }
                None => return Ok(()),
            }
        } else {
            (stanza, to)
        };
        let kind = stanza.get_attr("type").unwrap_or("normal").to_owned();
        let kind = kind.as_str();
        let Some(local) = self.local_user(&to).map(str::to_owned) else {
            let error = "remote domains are not reachable from this server";
            self.message_error(&stanza, "cancel", "remote-server-not-found", error);
            return Ok(());
        };
        if kind == "groupchat" {
            self.message_error(
                &stanza,
                "cancel",
                "feature-not-implemented",
                "group chat is not available over XMPP yet",
            );
            return Ok(());
        }
        let Some(peer) = self.user_id(&local).await else {
            self.message_error(&stanza, "cancel", "item-not-found", "no such user");
            return Ok(());
        };
        let conversation = match self.direct_with(peer).await {
            Ok(id) => id,
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.message_error(&stanza, kind, condition, &e.message);
                return Ok(());
            }
        };
        match self.on_action(&stanza, conversation, false).await {
            actions::Outcome::Done => return Ok(()),
            // A retraction or reaction of a message the gateway cannot place, to one
            // resource of the peer, is relayed to that resource as a server routes it (its
            // client may know the id). A retraction's fallback body is left out: a relayed
            // message never carries content the core did not store, and the fallback is for
            // clients without retraction, which could not act on an unknown id anyway.
            actions::Outcome::Unknown if to.contains('/') && to != self.full => {
                let mut relayed = stanza.clone();
                relayed.children.retain(|child| match child {
                    crate::xml::Node::Element(e) => {
                        !e.is("body", NS_CLIENT) && !e.is("fallback", actions::NS_FALLBACK)
                    }
                    crate::xml::Node::Text(_) => true,
                });
                self.route_message(&relayed, &to).await;
                return Ok(());
            }
            actions::Outcome::Unknown => {
                self.message_error(&stanza, "cancel", "item-not-found", "no such message");
                return Ok(());
            }
            actions::Outcome::None => {}
        }
        let body = stanza.find("body", NS_CLIENT).map(Element::text_content);
        // Receipts and markers name a message this connection delivered.
        let receipt = stanza
            .find("received", NS_RECEIPTS)
            .map(|r| (ReceiptKind::Delivered, r))
            .or_else(|| {
                stanza
                    .find("received", NS_MARKERS)
                    .map(|r| (ReceiptKind::Delivered, r))
            })
            .or_else(|| {
                stanza
                    .find("displayed", NS_MARKERS)
                    .map(|r| (ReceiptKind::Read, r))
            });
        let mut mapped_receipt = false;
        if let Some((receipt, marker)) = &receipt
            && let Some(seq) = marker
                .get_attr("id")
                .and_then(|id| self.seq_of(conversation, id))
        {
            let id = self.request_id(Pending::Quiet);
            self.native(&ClientFrame::Receipt {
                id,
                conversation_id: conversation,
                receipt: *receipt,
                seq,
            });
            mapped_receipt = true;
        }
        // A bodiless message to one resource carrying what the core cannot keep (a marker for
        // a message this connection cannot place, a reaction, a retraction, another
        // extension) is relayed to that resource, as a server routes it.
        let unmapped = stanza.elements().any(|e| {
            !(e.ns == NS_CHATSTATES
                || e.ns == NS_HINTS
                || e.is("origin-id", NS_SID)
                || e.is("thread", NS_CLIENT)
                || (mapped_receipt && (e.ns == NS_RECEIPTS || e.ns == NS_MARKERS)))
        });
        if to.contains('/')
            && unmapped
            && body.as_deref().is_none_or(str::is_empty)
            && to != self.full
        {
            self.route_message(&stanza, &to).await;
        }
        let state = stanza
            .elements()
            .find(|e| e.ns == NS_CHATSTATES)
            .map(|e| e.name.clone());
        match body {
            Some(text) if !text.is_empty() => {
                let client_msg_id = stanza
                    .find("origin-id", NS_SID)
                    .and_then(|o| o.get_attr("id"))
                    .or_else(|| stanza.get_attr("id"))
                    .map(str::to_owned)
                    .filter(|id| !id.is_empty() && id.len() <= 128)
                    .unwrap_or_else(random_id);
                let number = self.received;
                if self.sm {
                    self.unanswered.insert(number);
                }
                let (reply_to, text) = self.reply_of(conversation, &stanza, text).await;
                let id = self.request_id(Pending::Send {
                    stanza: stanza.clone(),
                    number,
                });
                self.native(&ClientFrame::Send {
                    id,
                    conversation_id: conversation,
                    client_msg_id,
                    body: MessageBody::Text { text },
                    reply_to,
                    thread_root: None,
                    mentions: None,
                });
            }
            _ => {
                if let Some(state) = state {
                    self.native(&ClientFrame::Typing {
                        id: None,
                        conversation_id: conversation,
                        typing: state == "composing",
                    });
                }
            }
        }
        Ok(())
    }

    async fn on_presence(&mut self, stanza: Element) -> Result<(), Fail> {
        let kind = stanza.get_attr("type");
        let to = stanza.get_attr("to").map(str::to_owned);
        if let Some(to) = to.as_deref().filter(|t| self.is_muc(t)) {
            self.on_muc_presence(&stanza, to).await;
            return Ok(());
        }
        match (kind, to) {
            // Initial (or updated) presence: Tidings presence follows connections, so there is
            // nothing to store; answer the first with the presence of the user's friends.
            (None, None) => {
                if !self.available {
                    self.available = true;
                    let friends = self
                        .gw
                        .core
                        .friends(&self.caller)
                        .await
                        .map(|l| l.friends)
                        .unwrap_or_default();
                    let user_ids: Vec<UserId> = friends.iter().map(|f| f.user_id).collect();
                    for f in friends {
                        self.learn_name(f.user_id, &f.username);
                    }
                    if !user_ids.is_empty() {
                        let id = self.request_id(Pending::Presence);
                        self.native(&ClientFrame::PresenceQuery { id, user_ids });
                    }
                    // Offline delivery (RFC 6121 8.5.2.1.1 on initial presence): what arrived
                    // since this device's saved cursors, once and in order.
                    match self.gw.core.device_sync_cursors(&self.caller).await {
                        Ok(cursors) => {
                            let id = self.request_id(Pending::Sync);
                            self.native(&ClientFrame::Sync {
                                id,
                                cursors,
                                limit_per_conversation: None,
                                contacts_version: None,
                            });
                        }
                        Err(e) => tracing::warn!(%e, "XMPP offline delivery unavailable."),
                    }
                    // Requests to the user still unanswered (RFC 6121 3.1.3).
                    match self.gw.core.friend_requests(&self.caller).await {
                        Ok(list) => {
                            for request in list.incoming {
                                self.send_subscription("subscribe", &request.from.username);
                            }
                        }
                        Err(e) => tracing::warn!(%e, "XMPP pending friend requests unavailable."),
                    }
                    // Our own presence, reflected (RFC 6121 4.2.2).
                    let reflected = Element::new("presence", NS_CLIENT)
                        .attr("from", self.full.clone())
                        .attr("to", self.full.clone());
                    self.send(&reflected);
                }
                self.on_caps(&stanza);
                Ok(())
            }
            (Some("unavailable"), None) => {
                // Unavailable presence leaves every room (XEP-0045 7.14).
                self.available = false;
                self.leave_all_rooms().await;
                Ok(())
            }
            (
                Some(kind @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")),
                Some(to),
            ) => {
                let Some(local) = self.local_user(&to).map(str::to_owned) else {
                    return Ok(());
                };
                let Some(peer) = self.user_id(&local).await else {
                    return Ok(());
                };
                let core = self.gw.core.clone();
                let caller = self.caller;
                let result = match kind {
                    "subscribe" => core
                        .send_friend_request(
                            &caller,
                            tidings_proto::contacts::SendFriendRequest {
                                user_id: peer,
                                note: None,
                            },
                        )
                        .await
                        .map(|_| ()),
                    "subscribed" => core.accept_friend_request(&caller, peer).await,
                    "unsubscribed" => match core.decline_friend_request(&caller, peer).await {
                        Err(e) if e.code == ErrorCode::NotFound => {
                            core.remove_friend(&caller, peer).await
                        }
                        other => other,
                    },
                    _ => match core.cancel_friend_request(&caller, peer).await {
                        Err(e) if e.code == ErrorCode::NotFound => {
                            core.remove_friend(&caller, peer).await
                        }
                        other => other,
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%e, kind, "XMPP subscription request refused.");
                }
                Ok(())
            }
            // Directed presence and probes: Tidings has no per-contact presence to send.
            _ => Ok(()),
        }
    }

    async fn on_iq(&mut self, stanza: Element) -> Result<(), Fail> {
        let kind = stanza.get_attr("type").unwrap_or_default().to_owned();
        if kind == "result" || kind == "error" {
            // The answer to the gateway's own capability query, or to an IQ another resource
            // sent this client, which goes back to it.
            if !self.on_caps_answer(&stanza).await {
                self.answer_routed_iq(&stanza);
            }
            return Ok(());
        }
        if kind != "get" && kind != "set" || stanza.get_attr("id").is_none() {
            self.send(&iq_error(&stanza, "modify", "bad-request", None));
            return Ok(());
        }
        let Some(payload) = stanza.elements().next().cloned() else {
            self.send(&iq_error(&stanza, "modify", "bad-request", None));
            return Ok(());
        };
        let to = stanza.get_attr("to").map(str::to_owned);
        if let Some(to) = to.as_deref().filter(|t| self.is_muc(t)) {
            self.on_muc_iq(&stanza, &payload, to).await;
            return Ok(());
        }
        if to.as_deref().is_some_and(|t| self.is_upload_service(t)) {
            self.on_upload_iq(&stanza, &payload).await;
            return Ok(());
        }
        let to_server = to
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(self.domain()));
        let to_self = to
            .as_deref()
            .is_some_and(|t| t == self.bare || t == self.full);
        // A vCard or PEP request to another user's bare JID is answered by the server for
        // that account (RFC 6121 8.5.1), from their profile and stored nodes.
        let vcard_of_user = (payload.is("vCard", NS_VCARD) || payload.is("pubsub", pep::NS_PUBSUB))
            && to
                .as_deref()
                .is_some_and(|t| !t.contains('/') && self.local_user(t).is_some());
        if let Some(to) = to
            .as_deref()
            .filter(|t| !to_self && t.contains('/') && self.local_user(t).is_some())
        {
            // A full JID of our domain: the addressed resource answers (RFC 6121 8.5.3).
            self.route_iq(&stanza, to).await;
            return Ok(());
        }
        if !to_server && !to_self && !vcard_of_user {
            // Another user's bare JID: the server answers for accounts (RFC 6121 8.5).
            self.send(&iq_error(&stanza, "cancel", "service-unavailable", None));
            return Ok(());
        }
        let full = self.full.clone();
        let result = || {
            Element::new("iq", NS_CLIENT)
                .attr("type", "result")
                .attr_opt("id", stanza.get_attr("id"))
                .attr("to", full.clone())
                .attr_opt("from", stanza.get_attr("to"))
        };
        match (kind.as_str(), payload.name.as_str(), payload.ns.as_str()) {
            ("get", "ping", NS_PING) => self.send(&result()),
            ("set", "query", mam::NS_MAM) => self.on_mam(&stanza, &payload).await,
            ("set", "session", NS_SESSION) => self.send(&result()),
            ("get", "query", NS_DISCO_INFO) => {
                let mut query = Element::new("query", NS_DISCO_INFO);
                if to_server {
                    query = query.child(
                        Element::new("identity", NS_DISCO_INFO)
                            .attr("category", "server")
                            .attr("type", "im")
                            .attr("name", "Tidings"),
                    );
                    for feature in [
                        NS_DISCO_INFO,
                        NS_DISCO_ITEMS,
                        NS_PING,
                        NS_CARBONS,
                        "jabber:iq:roster",
                        NS_SID,
                        actions::NS_CORRECT,
                        actions::NS_RETRACT,
                        actions::NS_REACTIONS,
                        NS_VCARD,
                        pep::NS_PRIVATE,
                    ] {
                        query = query
                            .child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
                    }
                    // Where users learn of an outage when this server cannot tell them
                    // (XEP-0455), as a service discovery extension form (XEP-0128).
                    let addresses = &self.gw.config.status_addresses;
                    if !addresses.is_empty() {
                        let mut field = Element::new("field", NS_DATA)
                            .attr("var", "external-status-addresses")
                            .attr("type", "list-multi");
                        for address in addresses {
                            field =
                                field.child(Element::new("value", NS_DATA).text(address.clone()));
                        }
                        query = query.child(
                            Element::new("x", NS_DATA)
                                .attr("type", "result")
                                .child(
                                    Element::new("field", NS_DATA)
                                        .attr("var", "FORM_TYPE")
                                        .attr("type", "hidden")
                                        .child(Element::new("value", NS_DATA).text(NS_SOS)),
                                )
                                .child(field),
                        );
                    }
                } else {
                    query = query.child(
                        Element::new("identity", NS_DISCO_INFO)
                            .attr("category", "account")
                            .attr("type", "registered"),
                    );
                    query = query.child(
                        Element::new("identity", NS_DISCO_INFO)
                            .attr("category", "pubsub")
                            .attr("type", "pep"),
                    );
                    for feature in [
                        NS_DISCO_INFO,
                        mam::NS_MAM,
                        actions::NS_CORRECT,
                        actions::NS_RETRACT,
                        actions::NS_REACTIONS,
                        NS_VCARD,
                    ]
                    .into_iter()
                    .chain(pep::PEP_FEATURES.iter().copied())
                    {
                        query = query
                            .child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
                    }
                }
                let el = result().child(query);
                self.send(&el);
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                let mut query = Element::new("query", NS_DISCO_ITEMS);
                if to_server {
                    // The MUC service, where the user's groups are rooms.
                    query = query.child(
                        Element::new("item", NS_DISCO_ITEMS)
                            .attr("jid", self.gw.config.muc_domain.clone())
                            .attr("name", "Groups"),
                    );
                    if self.gw.uploads.is_some() {
                        query = query.child(
                            Element::new("item", NS_DISCO_ITEMS)
                                .attr("jid", self.gw.config.upload_domain.clone())
                                .attr("name", "File upload"),
                        );
                    }
                }
                let el = result().child(query);
                self.send(&el);
            }
            ("get", "query", NS_ROSTER) => match self.roster().await {
                Ok(items) => {
                    let mut query = Element::new("query", NS_ROSTER);
                    for item in items {
                        query = query.child(item);
                    }
                    let el = result().child(query);
                    self.send(&el);
                }
                Err(e) => {
                    let (kind, condition) = condition_for(e.code);
                    self.send(&iq_error(&stanza, kind, condition, Some(&e.message)));
                }
            },
            ("set", "query", NS_ROSTER) => self.on_roster_set(&stanza, &payload).await,
            ("set", "enable", NS_CARBONS) => {
                self.carbons = true;
                self.send(&result());
            }
            ("set", "disable", NS_CARBONS) => {
                self.carbons = false;
                self.send(&result());
            }
            ("get", "blocklist", NS_BLOCKING) => self.on_blocklist(&stanza).await,
            ("set", "block" | "unblock", NS_BLOCKING) => self.on_block(&stanza, &payload).await,
            ("get", "vCard", NS_VCARD) => self.vcard_get(&stanza, to.as_deref()).await,
            ("set", "vCard", NS_VCARD) => {
                self.vcard_set(&stanza, &payload, to_server || to_self)
                    .await;
            }
            ("get" | "set", "query", pep::NS_PRIVATE) if to_server || to_self => {
                self.on_private(&stanza, &payload, &kind).await;
            }
            ("get" | "set", "pubsub", pep::NS_PUBSUB) => {
                let own = to_server || to_self;
                self.on_pep(&stanza, &payload, &kind, to.as_deref(), own)
                    .await;
            }
            ("set", "bind", NS_BIND) => {
                self.send(&iq_error(
                    &stanza,
                    "cancel",
                    "not-allowed",
                    Some("already bound"),
                ));
            }
            _ => {
                self.send(&iq_error(&stanza, "cancel", "service-unavailable", None));
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Ack {
                id,
                conversation_id,
                seq,
                message_id,
                ..
            } => {
                match self.pending.remove(&id) {
                    Some(Pending::Send { stanza, number }) => {
                        self.unanswered.remove(&number);
                        let origin_id = stanza
                            .find("origin-id", NS_SID)
                            .and_then(|o| o.get_attr("id"))
                            .map(str::to_owned);
                        let stanza_id = stanza.get_attr("id").map(str::to_owned);
                        // The client may name the message by either later (a correction
                        // names the stanza id); the stanza id is found first.
                        if let Some(origin_id) = &origin_id {
                            self.remember(conversation_id, seq, origin_id.clone());
                        }
                        if let Some(stanza_id) =
                            stanza_id.filter(|id| Some(id) != origin_id.as_ref())
                        {
                            self.remember(conversation_id, seq, stanza_id);
                        }
                        if stanza.get_attr("type") == Some("groupchat") {
                            self.reflect(&stanza, conversation_id, message_id);
                        }
                    }
                    Some(Pending::Action {
                        stanza,
                        number,
                        reflect,
                    }) => {
                        if let Some(number) = number {
                            self.unanswered.remove(&number);
                        }
                        if reflect {
                            self.reflect(&stanza, conversation_id, message_id);
                        }
                    }
                    _ => {}
                }
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
                ..
            } => match self.pending.remove(&id) {
                Some(Pending::Send { stanza, number }) => {
                    self.unanswered.remove(&number);
                    let (kind, condition) = condition_for(code);
                    self.message_error(&stanza, kind, condition, &message);
                }
                Some(Pending::Action { stanza, number, .. }) => {
                    if let Some(number) = number {
                        self.unanswered.remove(&number);
                    }
                    let (kind, condition) = condition_for(code);
                    self.message_error(&stanza, kind, condition, &message);
                }
                Some(Pending::RoutedIq {
                    to_user,
                    to_device,
                    iq_id,
                }) => self.routed_iq_refused(to_user, to_device, &iq_id, code),
                Some(_) => tracing::debug!(%message, "XMPP request refused."),
                None => {}
            },
            ServerFrame::Error {
                id: None, message, ..
            } => {
                tracing::debug!(%message, "XMPP session error.");
            }
            ServerFrame::Ok { id } | ServerFrame::AuthOk { id, .. } => {
                self.pending.remove(&id);
            }
            ServerFrame::SyncDone { id, .. } => {
                if let Some(Pending::Sync) = self.pending.remove(&id) {
                    self.save_cursors().await;
                }
            }
            ServerFrame::PresenceList { id, users } => {
                self.pending.remove(&id);
                for presence in users {
                    self.presence(presence.user_id, presence.status).await;
                }
            }
            ServerFrame::Presence { presence } if self.available => {
                self.presence(presence.user_id, presence.status).await;
            }
            ServerFrame::Message { message } => self.deliver(message).await,
            ServerFrame::Typing {
                conversation_id,
                user_id,
                typing,
            } => {
                if user_id == self.caller.user_id {
                    return;
                }
                if self.peer_of(conversation_id).await != Some(user_id) {
                    return;
                }
                let Some(name) = self.username(user_id).await else {
                    return;
                };
                let state = if typing { "composing" } else { "paused" };
                let el = Element::new("message", NS_CLIENT)
                    .attr("type", "chat")
                    .attr("from", format!("{name}@{}", self.domain()))
                    .attr("to", self.full.clone())
                    .child(Element::new(state, NS_CHATSTATES));
                self.send(&el);
            }
            ServerFrame::Receipt {
                conversation_id,
                user_id,
                receipt,
                seq,
            } => {
                if user_id == self.caller.user_id
                    || self.peer_of(conversation_id).await != Some(user_id)
                {
                    return;
                }
                let Some(id) = self.id_of(conversation_id, seq).map(str::to_owned) else {
                    return;
                };
                let Some(name) = self.username(user_id).await else {
                    return;
                };
                let payload = match receipt {
                    ReceiptKind::Delivered => Element::new("received", NS_RECEIPTS).attr("id", id),
                    ReceiptKind::Read => Element::new("displayed", NS_MARKERS).attr("id", id),
                };
                let el = Element::new("message", NS_CLIENT)
                    .attr("type", "chat")
                    .attr("from", format!("{name}@{}", self.domain()))
                    .attr("to", self.full.clone())
                    .child(payload);
                self.send(&el);
            }
            ServerFrame::Contact { event, .. } => self.contact(event).await,
            ServerFrame::DeviceSignal {
                from_user,
                from_device,
                kind,
                payload,
            } if kind == iq_route::KIND_IQ => {
                self.on_routed_iq(from_user, from_device, payload).await;
            }
            ServerFrame::DeviceSignal {
                from_user,
                from_device,
                kind,
                payload,
            } if kind == iq_route::KIND_MESSAGE => {
                self.on_routed_message(from_user, from_device, payload)
                    .await;
            }
            ServerFrame::UserXml {
                user_id,
                node,
                item_id,
                ..
            } if node == tidings_core::userxml::ROSTER_NODE => {
                if user_id != self.caller.user_id {
                    return;
                }
                // A contact's details changed on one of the user's devices (this one too).
                let Some(user) = self.user_id(&item_id).await else {
                    return;
                };
                let standing = self.standing(user).await;
                self.roster_push(&item_id, standing).await;
            }
            ServerFrame::UserXml {
                user_id,
                node,
                item_id,
                deleted,
            } if node == tidings_core::userxml::BLOCKED_ADDRESSES_NODE
                && user_id == self.caller.user_id =>
            {
                self.push_block(item_id, !deleted);
            }
            ServerFrame::UserXml {
                user_id,
                node,
                item_id,
                deleted,
            } => self.notify_item(user_id, &node, &item_id, deleted).await,
            ServerFrame::Blocked { user_id, blocked } => {
                if let Some(name) = self.username(user_id).await {
                    let jid = format!("{name}@{}", self.domain());
                    self.push_block(jid, blocked);
                }
            }
            ServerFrame::ProfileChanged { user_id } => {
                self.avatars.remove(&user_id);
                self.notify_avatar(user_id).await;
                // A friend's new photo hash comes with their presence (XEP-0153), which their
                // client would send; here the server asks for it and sends it.
                if user_id != self.caller.user_id && self.available {
                    let id = self.request_id(Pending::Presence);
                    self.native(&ClientFrame::PresenceQuery {
                        id,
                        user_ids: vec![user_id],
                    });
                }
            }
            ServerFrame::Occupant {
                conversation_id,
                occupant,
                previous_nick,
                present,
                status,
                kicked_by,
            } => {
                let change = muc::OccupantChange {
                    previous_nick,
                    present,
                    status,
                    kicked_by,
                };
                self.on_occupant(conversation_id, occupant, change).await;
            }
            _ => {}
        }
    }

    async fn presence(&mut self, user: UserId, status: PresenceStatus) {
        if user == self.caller.user_id {
            return;
        }
        let Some(name) = self.username(user).await else {
            return;
        };
        let el = Element::new("presence", NS_CLIENT)
            .attr("from", format!("{name}@{}", self.domain()))
            .attr("to", self.full.clone());
        let el = if status == PresenceStatus::Online {
            self.with_photo_hash(el, user).await
        } else {
            el.attr("type", "unavailable")
        };
        self.send(&el);
    }

    /// Friend changes as roster pushes and subscription stanzas (RFC 6121).
    async fn contact(&mut self, event: tidings_proto::contacts::ContactEvent) {
        use tidings_proto::contacts::ContactEvent;
        match event {
            ContactEvent::RequestReceived { request } => {
                self.send_subscription("subscribe", &request.from.username);
            }
            ContactEvent::RequestSent { request } => {
                let to = request.to;
                self.learn_name(to.user_id, &to.username);
                self.roster_push(&to.username, roster::Standing::Asked)
                    .await;
            }
            ContactEvent::RequestAccepted { friend } => {
                self.learn_name(friend.user_id, &friend.username);
                self.roster_push(&friend.username, roster::Standing::Friend)
                    .await;
            }
            ContactEvent::FriendRemoved { user_id } => {
                if let Some(name) = self.username(user_id).await {
                    // Kept without a subscription when the user gave it details, else removed.
                    self.roster_push(&name, roster::Standing::Stranger).await;
                }
            }
            // A request of the user's that ended unanswered: the `ask` goes; a declined one is
            // also told as the contact's refusal (RFC 6121 3.2.2).
            ContactEvent::RequestDeclined { from, to } if from == self.caller.user_id => {
                self.request_ended(to, true).await;
            }
            ContactEvent::RequestCancelled { from, to } if from == self.caller.user_id => {
                self.request_ended(to, false).await;
            }
            // A request to the user that its sender withdrew (RFC 6121 3.3.3).
            ContactEvent::RequestCancelled { from, to } if to == self.caller.user_id => {
                if let Some(name) = self.username(from).await {
                    self.send_subscription("unsubscribe", &name);
                }
            }
            _ => {}
        }
    }

    /// The user's friend request to `to` ended without a friendship: declined by them, or
    /// withdrawn from one of the user's devices.
    async fn request_ended(&mut self, to: UserId, declined: bool) {
        let Some(name) = self.username(to).await else {
            return;
        };
        if declined {
            self.send_subscription("unsubscribed", &name);
        }
        self.roster_push(&name, roster::Standing::Stranger).await;
    }

    /// A subscription presence (RFC 6121 3) of `kind` from the contact `username` to the user.
    fn send_subscription(&mut self, kind: &str, username: &str) {
        let el = Element::new("presence", NS_CLIENT)
            .attr("type", kind)
            .attr("from", format!("{username}@{}", self.domain()))
            .attr("to", self.bare.clone());
        self.send(&el);
    }

    /// A message from the session: to the client, as a carbon when another device of the
    /// user sent it, and not at all when this connection sent it.
    async fn deliver(&mut self, message: tidings_proto::Message) {
        let Some(peer) = self.peer_of(message.conversation_id).await else {
            self.deliver_group(message).await;
            return;
        };
        let xmpp_id = message.client_msg_id.clone();
        self.remember(message.conversation_id, message.seq, xmpp_id.clone());
        let mine = message.sender_id == self.caller.user_id;
        if mine && message.sender_device_id == self.caller.device_id {
            return;
        }
        // A message recalled before it reached this device: there is nothing to show.
        if matches!(message.body, MessageBody::Deleted {}) {
            return;
        }
        let Some(payload) = self.payload(&message, false).await else {
            return;
        };
        let Some(peer_name) = self.username(peer).await else {
            return;
        };
        let peer_jid = format!("{peer_name}@{}", self.domain());
        let (from, to) = if mine {
            (self.bare.clone(), peer_jid.clone())
        } else {
            (peer_jid.clone(), self.full.clone())
        };
        let mut stanza = Element::new("message", NS_CLIENT)
            .attr("type", "chat")
            .attr("id", xmpp_id.clone())
            .attr("from", from)
            .attr("to", to);
        for child in payload {
            stanza = stanza.child(child);
        }
        stanza = stanza
            .child(Element::new("origin-id", NS_SID).attr("id", xmpp_id))
            .child(
                Element::new("stanza-id", NS_SID)
                    .attr("by", self.bare.clone())
                    .attr("id", message.id.to_string()),
            );
        if message.ts < self.bound_at {
            stanza = stanza.child(
                Element::new("delay", mam::NS_DELAY)
                    .attr("from", self.domain().to_owned())
                    .attr("stamp", mam::stamp(message.ts)),
            );
        }
        if mine {
            if !self.carbons {
                return;
            }
            let carbon = Element::new("message", NS_CLIENT)
                .attr("type", "chat")
                .attr("from", self.bare.clone())
                .attr("to", self.full.clone())
                .child(
                    Element::new("sent", NS_CARBONS)
                        .child(Element::new("forwarded", NS_FORWARD).child(stanza)),
                );
            self.send(&carbon);
        } else {
            self.send(&stanza);
        }
    }
}

/// The body text of a message for XMPP: its text, or a line saying what kind of message it is;
/// `None` for system messages, which XMPP does not show.
fn text_of(body: &MessageBody) -> Option<String> {
    Some(match body {
        MessageBody::Text { text } => text.clone(),
        MessageBody::System { .. } => return None,
        other => format!(
            "[a {} message; open Tidings to see it]",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "rich".into())
        ),
    })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
