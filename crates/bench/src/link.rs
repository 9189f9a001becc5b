//! One client connection of the comparison, whatever the protocol: the native WebSocket (SDK),
//! XMPP (Stream Management acks) or MQTT (QoS 1). A scenario sends message `k` with `send`,
//! and reads acknowledgements and deliveries as [`Event`]s, so the same scenario code drives
//! every server.
//!
//! Every protocol here is read by one task per connection: `next` is cancel-safe (it keeps
//! partial input in the link), and writes go through an unbounded queue to a writer task, so
//! a server that stops reading never blocks the reader, and the open-loop schedule never waits
//! for a socket.

use crate::xmpp::{self, BoxIo, NS_SM};
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tidings_mqtt::codec::{
    self, Ack, Connect, Packet, Properties, Publish, QoS, Reason, SubOptions, Subscribe, Version,
};
use tidings_proto::MessageBody;
use tidings_proto::ws::ServerFrame;
use tidings_sdk::Connection;
use tidings_xmpp::xml::{Element, StreamEvent, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a link reports.
#[derive(Debug)]
pub enum Event {
    /// The server acknowledged this connection's messages `first..end` (by send order).
    Acked { first: u64, end: u64 },
    /// The server refused message `k`.
    Refused { k: u64, reason: String },
    /// A message for this connection arrived; its text.
    Received(String),
    /// The connection ended.
    Closed(String),
}

/// How MQTT payloads are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttMode {
    /// The text is the payload (Mosquitto, or any plain broker topic).
    Broker,
    /// Tidings IM topics: the publication is a JSON send request, deliveries are JSON events
    /// on `tidings/v1/me/events`.
    Im,
}

/// A connected, authenticated client.
pub enum Link {
    Ws(WsLink),
    Xmpp(XmppLink),
    Mqtt(MqttLink),
}

pub struct WsLink {
    conn: Connection,
    /// Direct conversation this connection sends to.
    conversation: Option<i64>,
}

pub struct XmppLink {
    reader: ReadHalf<BoxIo>,
    parser: StreamParser,
    out: mpsc::UnboundedSender<Bytes>,
    to: String,
    /// Stanzas received since Stream Management was enabled (our `h`).
    inbound: u64,
    /// Stanzas we sent after enabling that are not benchmark messages (initial presence).
    not_messages: u64,
    /// Messages sent so far, and how many the server has acknowledged.
    sent: u64,
    acked: u64,
    /// When to ask for an acknowledgement again: a server may answer `<r/>` with an `h` that
    /// does not yet cover messages still being stored (Tidings counts a message only once it
    /// is committed), and it sends no `<a/>` by itself.
    ask_again: Option<Instant>,
    buf: Vec<u8>,
}

pub struct MqttLink {
    reader: tokio::net::tcp::OwnedReadHalf,
    buf: BytesMut,
    out: mpsc::UnboundedSender<Bytes>,
    mode: MqttMode,
    topic: String,
    /// Packet id → message number, for the publications in flight.
    in_flight: std::collections::HashMap<u16, u64>,
    /// The server's receive maximum: publications beyond it wait here, in order.
    receive_maximum: usize,
    waiting: VecDeque<(u64, Bytes)>,
    next_id: u16,
}

/// How long an XMPP link waits before asking again for an acknowledgement that lags.
const ASK_AGAIN: Duration = Duration::from_millis(5);

fn writer<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut w: W,
) -> mpsc::UnboundedSender<Bytes> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut batch = BytesMut::new();
        while let Some(first) = rx.recv().await {
            batch.extend_from_slice(&first);
            while batch.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if w.write_all(&batch).await.is_err() || w.flush().await.is_err() {
                return;
            }
            batch.clear();
        }
        let _ = w.shutdown().await;
    });
    tx
}

impl Link {
    pub fn ws(conn: Connection, conversation: Option<i64>) -> Link {
        Link::Ws(WsLink { conn, conversation })
    }

    pub fn xmpp(negotiated: xmpp::Negotiated, to: String) -> Link {
        let (reader, write) = tokio::io::split(negotiated.io);
        Link::Xmpp(XmppLink {
            reader,
            parser: negotiated.parser,
            out: writer(write),
            to,
            inbound: 0,
            not_messages: 1,
            sent: 0,
            acked: 0,
            ask_again: None,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Sends message number `k` (numbers start at 0 and rise by one per send).
    pub fn send(&mut self, k: u64, text: &str) -> anyhow::Result<()> {
        match self {
            Link::Ws(l) => {
                let conversation = l.conversation.context("this link has no conversation")?;
                let mut body = String::with_capacity(40 + text.len());
                // The text is ours (digits, spaces, 'x'): no JSON escaping needed.
                use std::fmt::Write as _;
                let _ = write!(
                    body,
                    r#"{{"type":"send","id":"{k}","conversation_id":{conversation},"client_msg_id":"{k}","body":{{"kind":"text","text":"{text}"}}}}"#
                );
                l.conn.send_raw(body).context("the connection is closed")?;
            }
            Link::Xmpp(l) => {
                let stanza = xmpp::chat_stanza(&l.to, &format!("m{k}"), text);
                l.out
                    .send(Bytes::from(stanza))
                    .ok()
                    .context("the connection is closed")?;
                l.sent += 1;
            }
            Link::Mqtt(l) => {
                let payload = match l.mode {
                    MqttMode::Broker => Bytes::copy_from_slice(text.as_bytes()),
                    MqttMode::Im => Bytes::from(format!(
                        r#"{{"client_msg_id":"{k}","body":{{"kind":"text","text":"{text}"}}}}"#
                    )),
                };
                if l.in_flight.len() >= l.receive_maximum {
                    l.waiting.push_back((k, payload));
                } else {
                    l.publish(k, payload)?;
                }
            }
        }
        Ok(())
    }

    /// Called after each burst of sends: XMPP asks for an acknowledgement.
    pub fn end_burst(&mut self) {
        if let Link::Xmpp(l) = self {
            let _ = l
                .out
                .send(Bytes::from_static(b"<r xmlns='urn:xmpp:sm:3'/>"));
            l.ask_again = None;
        }
    }

    /// The next event; cancel-safe.
    pub async fn next(&mut self) -> Event {
        match self {
            Link::Ws(l) => loop {
                match l.conn.next_event().await {
                    Some(ServerFrame::Ack { id, .. }) => {
                        if let Ok(k) = id.parse::<u64>() {
                            return Event::Acked {
                                first: k,
                                end: k + 1,
                            };
                        }
                    }
                    Some(ServerFrame::Error {
                        id: Some(id), code, ..
                    }) => {
                        if let Ok(k) = id.parse::<u64>() {
                            return Event::Refused {
                                k,
                                reason: code.as_str().to_string(),
                            };
                        }
                    }
                    Some(ServerFrame::Message { message }) => {
                        if let MessageBody::Text { text } = message.body {
                            return Event::Received(text);
                        }
                    }
                    Some(_) => {}
                    None => return Event::Closed(format!("{:?}", l.conn.close_reason())),
                }
            },
            Link::Xmpp(l) => l.next().await,
            Link::Mqtt(l) => l.next().await,
        }
    }

    pub fn close(self) {
        match self {
            Link::Ws(l) => l.conn.close(),
            Link::Xmpp(l) => {
                let _ = l.out.send(Bytes::from_static(b"</stream:stream>"));
            }
            Link::Mqtt(l) => {
                let mut out = BytesMut::new();
                codec::encode(
                    &Packet::Disconnect(codec::Disconnect {
                        reason: Reason::SUCCESS,
                        properties: Properties::default(),
                    }),
                    Version::V5,
                    &mut out,
                );
                let _ = l.out.send(out.freeze());
            }
        }
    }
}

/// Message Archive Management (XEP-0313), Result Set Management (XEP-0059) and forwarding
/// (XEP-0297), for reading an archive.
const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

impl Link {
    /// XMPP only: reads the archive of the conversation with `with` (a bare JID) through
    /// Message Archive Management, oldest first, in pages of at most `max` (the server may
    /// give fewer), handing each archived message's body to `on_message`, and returns how many
    /// pages it took. A page is asked for once the previous one is complete, as clients do:
    /// the next page starts after the last id of the previous one. Other stanzas meanwhile
    /// (presence, live messages) are not handed on.
    pub async fn read_archive(
        &mut self,
        with: &str,
        max: u32,
        mut on_message: impl FnMut(String),
    ) -> anyhow::Result<u64> {
        let Link::Xmpp(l) = self else {
            bail!("only an XMPP link reads an archive");
        };
        let mut after: Option<String> = None;
        let mut pages = 0u64;
        loop {
            pages += 1;
            let query_id = format!("mam{pages}");
            let after_xml = after
                .as_deref()
                .map_or(String::new(), |a| format!("<after>{a}</after>"));
            let iq = format!(
                "<iq type='set' id='{query_id}'><query xmlns='{NS_MAM}' queryid='{query_id}'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
                 <field var='with'><value>{with}</value></field></x>\
                 <set xmlns='{NS_RSM}'><max>{max}</max>{after_xml}</set></query></iq>"
            );
            l.out
                .send(Bytes::from(iq))
                .ok()
                .context("the connection is closed")?;
            let mut last_result_id = None;
            loop {
                let stanza = l.next_stanza().await?;
                if stanza.name == "message" {
                    let Some(result) = stanza.find("result", NS_MAM) else {
                        continue;
                    };
                    if result.get_attr("queryid") != Some(query_id.as_str()) {
                        continue;
                    }
                    let body = result
                        .find("forwarded", NS_FORWARD)
                        .and_then(|f| f.elements().find(|e| e.name == "message"))
                        .and_then(|m| m.elements().find(|e| e.name == "body"));
                    if let Some(body) = body {
                        on_message(body.text_content());
                    }
                    last_result_id = result.get_attr("id").map(str::to_string);
                } else if stanza.name == "iq" && stanza.get_attr("id") == Some(query_id.as_str()) {
                    if stanza.get_attr("type") != Some("result") {
                        let mut xml = stanza.to_xml();
                        xml.truncate(300);
                        bail!("MAM query refused: {xml}");
                    }
                    let fin = stanza
                        .find("fin", NS_MAM)
                        .context("a MAM answer without <fin/>")?;
                    let complete = matches!(fin.get_attr("complete"), Some("true" | "1"));
                    let last = fin
                        .find("set", NS_RSM)
                        .and_then(|s| s.elements().find(|e| e.name == "last"))
                        .map(|e| e.text_content())
                        .or(last_result_id);
                    match last {
                        Some(last) if !complete => after = Some(last),
                        _ => return Ok(pages),
                    }
                    break;
                }
            }
        }
    }
}

impl XmppLink {
    /// The next stanza that is not Stream Management's, answering the server's `<r/>` on the
    /// way (acknowledgements of our own sends are not expected while reading an archive).
    async fn next_stanza(&mut self) -> anyhow::Result<Element> {
        loop {
            match self.parser.next_event() {
                Err(e) => bail!("XML: {e}"),
                Ok(Some(StreamEvent::Close)) => bail!("stream closed"),
                Ok(Some(StreamEvent::Open(_))) => {}
                Ok(Some(StreamEvent::Stanza(e))) => {
                    if e.ns == NS_SM {
                        if e.name == "r" {
                            let a = format!("<a xmlns='{NS_SM}' h='{}'/>", self.inbound);
                            let _ = self.out.send(Bytes::from(a));
                        }
                        continue;
                    }
                    self.inbound += 1;
                    if e.name == "error" {
                        let mut xml = e.to_xml();
                        xml.truncate(200);
                        bail!("stream error: {xml}");
                    }
                    return Ok(e);
                }
                Ok(None) => match self.reader.read(&mut self.buf).await {
                    Ok(0) => bail!("connection closed"),
                    Ok(n) => self.parser.feed(&self.buf[..n]),
                    Err(e) => bail!("read: {e}"),
                },
            }
        }
    }

    async fn next(&mut self) -> Event {
        loop {
            match self.parser.next_event() {
                Err(e) => return Event::Closed(format!("XML: {e}")),
                Ok(Some(StreamEvent::Close)) => return Event::Closed("stream closed".into()),
                Ok(Some(StreamEvent::Open(_))) => {}
                Ok(Some(StreamEvent::Stanza(e))) => {
                    if e.ns == NS_SM {
                        match e.name.as_str() {
                            "r" => {
                                let a = format!("<a xmlns='{NS_SM}' h='{}'/>", self.inbound);
                                let _ = self.out.send(Bytes::from(a));
                            }
                            "a" => {
                                let h: u64 =
                                    e.get_attr("h").and_then(|h| h.parse().ok()).unwrap_or(0);
                                // `h` counts modulo 2^32; runs here stay far below.
                                let messages = h.saturating_sub(self.not_messages);
                                if messages < self.sent {
                                    self.ask_again = Some(Instant::now() + ASK_AGAIN);
                                }
                                if messages > self.acked {
                                    let first = self.acked;
                                    self.acked = messages;
                                    return Event::Acked {
                                        first,
                                        end: messages,
                                    };
                                }
                            }
                            _ => {}
                        }
                        continue;
                    }
                    self.inbound += 1;
                    if e.name == "message" {
                        if e.get_attr("type") == Some("error") {
                            let k = e
                                .get_attr("id")
                                .and_then(|i| i.strip_prefix('m')?.parse().ok())
                                .unwrap_or(u64::MAX);
                            let mut reason = e.to_xml();
                            reason.truncate(200);
                            return Event::Refused { k, reason };
                        }
                        if let Some(body) = e.elements().find(|c| c.name == "body") {
                            return Event::Received(body.text_content());
                        }
                    }
                    if e.name == "error" {
                        let mut reason = e.to_xml();
                        reason.truncate(200);
                        return Event::Closed(format!("stream error: {reason}"));
                    }
                }
                Ok(None) => {
                    let ask_at = self.ask_again;
                    tokio::select! {
                        read = self.reader.read(&mut self.buf) => match read {
                            Ok(0) => return Event::Closed("connection closed".into()),
                            Ok(n) => self.parser.feed(&self.buf[..n]),
                            Err(e) => return Event::Closed(format!("read: {e}")),
                        },
                        () = async {
                            match ask_at {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        } => {
                            self.ask_again = None;
                            let _ = self.out.send(Bytes::from_static(b"<r xmlns='urn:xmpp:sm:3'/>"));
                        }
                    }
                }
            }
        }
    }
}

impl MqttLink {
    fn publish(&mut self, k: u64, payload: Bytes) -> anyhow::Result<()> {
        let mut id = self.next_id;
        while self.in_flight.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_id = id.checked_add(1).unwrap_or(1);
        self.in_flight.insert(id, k);
        let mut out = BytesMut::new();
        codec::encode(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: self.topic.clone(),
                packet_id: id,
                properties: Properties::default(),
                payload,
            }),
            Version::V5,
            &mut out,
        );
        self.out
            .send(out.freeze())
            .ok()
            .context("the connection is closed")
    }

    fn send_packet(&self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, Version::V5, &mut out);
        let _ = self.out.send(out.freeze());
    }

    async fn next(&mut self) -> Event {
        loop {
            let decoded = match codec::decode_from_server(&self.buf, Version::V5, 1 << 24) {
                Ok(d) => d,
                Err(e) => return Event::Closed(format!("MQTT: {e:?}")),
            };
            let Some((packet, used)) = decoded else {
                match self.reader.read_buf(&mut self.buf).await {
                    Ok(0) => return Event::Closed("connection closed".into()),
                    Ok(_) => continue,
                    Err(e) => return Event::Closed(format!("read: {e}")),
                }
            };
            let _ = self.buf.split_to(used);
            match packet {
                Packet::PubAck(a) => {
                    let Some(k) = self.in_flight.remove(&a.packet_id) else {
                        continue;
                    };
                    if let Some((next, payload)) = self.waiting.pop_front()
                        && self.publish(next, payload).is_err()
                    {
                        return Event::Closed("closed while sending".into());
                    }
                    if a.reason.is_error() {
                        return Event::Refused {
                            k,
                            reason: format!("{:?}", a.reason),
                        };
                    }
                    return Event::Acked {
                        first: k,
                        end: k + 1,
                    };
                }
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.send_packet(&Packet::PubAck(Ack::new(p.packet_id, Reason::SUCCESS)));
                    }
                    let text = match self.mode {
                        MqttMode::Broker => String::from_utf8_lossy(&p.payload).into_owned(),
                        MqttMode::Im => {
                            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            else {
                                continue;
                            };
                            if event["type"] != "message" {
                                continue;
                            }
                            match event["message"]["body"]["text"].as_str() {
                                Some(t) => t.to_string(),
                                None => continue,
                            }
                        }
                    };
                    return Event::Received(text);
                }
                Packet::Disconnect(d) => {
                    return Event::Closed(format!("DISCONNECT {:?}", d.reason));
                }
                _ => {}
            }
        }
    }
}

/// Who an MQTT link signs in as and what it does.
pub struct MqttClient<'a> {
    pub client_id: String,
    /// Tidings: the access token (as the password); `None` signs in anonymously.
    pub password: Option<&'a str>,
    pub mode: MqttMode,
    /// Where [`Link::send`] publishes.
    pub topic: String,
    /// A filter to subscribe to at QoS 1 once connected.
    pub subscribe: Option<&'a str>,
    /// `Some(seconds)`: no clean start, and the session outlives the connection that long
    /// (MQTT 5 session expiry), so messages for it wait while it is away. `None`: a clean
    /// start with a session that ends with the connection.
    pub session_expiry: Option<u32>,
}

/// [`mqtt_connect`], giving up after 30 s.
pub async fn mqtt_connect_within(
    addr: SocketAddr,
    source: IpAddr,
    client: MqttClient<'_>,
) -> anyhow::Result<Link> {
    tokio::time::timeout(Duration::from_secs(30), mqtt_connect(addr, source, client))
        .await
        .context("no MQTT session within 30 s")?
}

/// Opens an MQTT 5 connection from `source` as `client`, subscribes (QoS 1) if asked, and
/// returns a link that publishes to the client's topic.
pub async fn mqtt_connect(
    addr: SocketAddr,
    source: IpAddr,
    client: MqttClient<'_>,
) -> anyhow::Result<Link> {
    let MqttClient {
        client_id,
        password,
        mode,
        topic,
        subscribe,
        session_expiry,
    } = client;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let (mut reader, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    codec::encode(
        &Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: session_expiry.is_none(),
            keep_alive: 600,
            properties: Properties {
                session_expiry_interval: session_expiry,
                ..Properties::default()
            },
            client_id,
            will: None,
            username: password.map(|_| String::new()),
            password: password.map(|p| Bytes::from(p.to_string())),
        })),
        Version::V5,
        &mut out,
    );
    if let Some(filter) = subscribe {
        codec::encode(
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![(
                    filter.into(),
                    SubOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                )],
            }),
            Version::V5,
            &mut out,
        );
    }
    write.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut receive_maximum = 65_535usize;
    let mut waiting_for = 1 + usize::from(subscribe.is_some());
    while waiting_for > 0 {
        let Some((packet, used)) = codec::decode_from_server(&buf, Version::V5, 1 << 24)
            .map_err(|e| anyhow::anyhow!("MQTT: {e:?}"))?
        else {
            if reader.read_buf(&mut buf).await? == 0 {
                bail!("the server closed the connection during CONNECT");
            }
            continue;
        };
        let _ = buf.split_to(used);
        match packet {
            Packet::ConnAck(ack) if ack.reason == Reason::SUCCESS => {
                if let Some(m) = ack.properties.receive_maximum {
                    receive_maximum = usize::from(m);
                }
            }
            Packet::SubAck(ack) if ack.reasons.iter().all(|r| !r.is_error()) => {}
            other => bail!("refused: {other:?}"),
        }
        waiting_for -= 1;
    }
    Ok(Link::Mqtt(MqttLink {
        reader,
        buf,
        out: writer(write),
        mode,
        topic,
        in_flight: std::collections::HashMap::new(),
        receive_maximum,
        waiting: VecDeque::new(),
        next_id: 1,
    }))
}
