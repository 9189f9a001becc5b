//! The MQTT 3.1.1 and 5.0 packet codec: strict decoding of untrusted bytes, and encoding.
//!
//! Decoding checks everything the specifications call malformed or a protocol error before a
//! packet reaches the connection logic: the remaining length (at most four bytes, at most the
//! configured maximum packet size, which is checked from the fixed header before the body is
//! waited for), reserved flag bits, UTF-8 strings without U+0000, properties (known, allowed in
//! that packet, not repeated unless the specification allows it), and that every byte of the
//! packet is consumed. A failure carries the MQTT 5 reason code to close the connection with.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// An MQTT 5 reason code (also used, mapped, for 3.1.1 return codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u8);

impl Reason {
    pub const SUCCESS: Reason = Reason(0x00);
    pub const GRANTED_QOS1: Reason = Reason(0x01);
    pub const GRANTED_QOS2: Reason = Reason(0x02);
    pub const DISCONNECT_WITH_WILL: Reason = Reason(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Reason = Reason(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Reason = Reason(0x11);
    pub const UNSPECIFIED: Reason = Reason(0x80);
    pub const MALFORMED_PACKET: Reason = Reason(0x81);
    pub const PROTOCOL_ERROR: Reason = Reason(0x82);
    pub const IMPLEMENTATION_SPECIFIC: Reason = Reason(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Reason = Reason(0x84);
    pub const CLIENT_ID_NOT_VALID: Reason = Reason(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Reason = Reason(0x86);
    pub const NOT_AUTHORIZED: Reason = Reason(0x87);
    pub const SERVER_UNAVAILABLE: Reason = Reason(0x88);
    pub const SERVER_BUSY: Reason = Reason(0x89);
    pub const BAD_AUTHENTICATION_METHOD: Reason = Reason(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: Reason = Reason(0x8D);
    pub const SESSION_TAKEN_OVER: Reason = Reason(0x8E);
    pub const TOPIC_FILTER_INVALID: Reason = Reason(0x8F);
    pub const TOPIC_NAME_INVALID: Reason = Reason(0x90);
    pub const PACKET_ID_IN_USE: Reason = Reason(0x91);
    pub const PACKET_ID_NOT_FOUND: Reason = Reason(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Reason = Reason(0x93);
    pub const TOPIC_ALIAS_INVALID: Reason = Reason(0x94);
    pub const PACKET_TOO_LARGE: Reason = Reason(0x95);
    pub const QUOTA_EXCEEDED: Reason = Reason(0x97);
    pub const ADMINISTRATIVE_ACTION: Reason = Reason(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Reason = Reason(0x99);
    pub const RETAIN_NOT_SUPPORTED: Reason = Reason(0x9A);
    pub const QOS_NOT_SUPPORTED: Reason = Reason(0x9B);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Reason = Reason(0x9E);
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: Reason = Reason(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Reason = Reason(0xA2);

    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }
}

/// The protocol level a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Why bytes could not be decoded; the connection closes with `reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (reason 0x{:02x})", reason.0)]
pub struct DecodeError {
    pub reason: Reason,
    pub message: &'static str,
}

fn malformed(message: &'static str) -> DecodeError {
    DecodeError {
        reason: Reason::MALFORMED_PACKET,
        message,
    }
}

fn protocol_error(message: &'static str) -> DecodeError {
    DecodeError {
        reason: Reason::PROTOCOL_ERROR,
        message,
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 properties. Only those a packet may carry are accepted by the decoder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

/// Where a property list sits, which decides the properties it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PropCtx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

// Property identifiers (MQTT 5, section 2.2.2.2).
const P_PAYLOAD_FORMAT: u8 = 0x01;
const P_MESSAGE_EXPIRY: u8 = 0x02;
const P_CONTENT_TYPE: u8 = 0x03;
const P_RESPONSE_TOPIC: u8 = 0x08;
const P_CORRELATION_DATA: u8 = 0x09;
const P_SUBSCRIPTION_ID: u8 = 0x0B;
const P_SESSION_EXPIRY: u8 = 0x11;
const P_ASSIGNED_CLIENT_ID: u8 = 0x12;
const P_SERVER_KEEP_ALIVE: u8 = 0x13;
const P_AUTH_METHOD: u8 = 0x15;
const P_AUTH_DATA: u8 = 0x16;
const P_REQUEST_PROBLEM: u8 = 0x17;
const P_WILL_DELAY: u8 = 0x18;
const P_REQUEST_RESPONSE: u8 = 0x19;
const P_RESPONSE_INFO: u8 = 0x1A;
const P_SERVER_REFERENCE: u8 = 0x1C;
const P_REASON_STRING: u8 = 0x1F;
const P_RECEIVE_MAXIMUM: u8 = 0x21;
const P_TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const P_TOPIC_ALIAS: u8 = 0x23;
const P_MAXIMUM_QOS: u8 = 0x24;
const P_RETAIN_AVAILABLE: u8 = 0x25;
const P_USER_PROPERTY: u8 = 0x26;
const P_MAXIMUM_PACKET_SIZE: u8 = 0x27;
const P_WILDCARD_AVAILABLE: u8 = 0x28;
const P_SUB_ID_AVAILABLE: u8 = 0x29;
const P_SHARED_AVAILABLE: u8 = 0x2A;

fn allowed(id: u8, ctx: PropCtx) -> bool {
    use PropCtx::*;
    match id {
        P_PAYLOAD_FORMAT | P_MESSAGE_EXPIRY | P_CONTENT_TYPE | P_RESPONSE_TOPIC
        | P_CORRELATION_DATA => matches!(ctx, Publish | Will),
        P_SUBSCRIPTION_ID => matches!(ctx, Publish | Subscribe),
        P_SESSION_EXPIRY => matches!(ctx, Connect | ConnAck | Disconnect),
        P_ASSIGNED_CLIENT_ID | P_SERVER_KEEP_ALIVE | P_RESPONSE_INFO | P_MAXIMUM_QOS
        | P_RETAIN_AVAILABLE | P_WILDCARD_AVAILABLE | P_SUB_ID_AVAILABLE | P_SHARED_AVAILABLE => {
            ctx == ConnAck
        }
        P_AUTH_METHOD | P_AUTH_DATA => matches!(ctx, Connect | ConnAck | Auth),
        P_REQUEST_PROBLEM | P_REQUEST_RESPONSE => ctx == Connect,
        P_WILL_DELAY => ctx == Will,
        P_SERVER_REFERENCE => matches!(ctx, ConnAck | Disconnect),
        P_REASON_STRING => matches!(ctx, ConnAck | Ack | Disconnect | Auth),
        P_RECEIVE_MAXIMUM | P_TOPIC_ALIAS_MAXIMUM | P_MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | ConnAck)
        }
        P_TOPIC_ALIAS => ctx == Publish,
        P_USER_PROPERTY => true,
        _ => false,
    }
}

/// A will message from CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: Properties,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: Reason,
    pub properties: Properties,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub packet_id: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    pub reason: Reason,
    pub properties: Properties,
}

impl Ack {
    pub fn new(packet_id: u16, reason: Reason) -> Ack {
        Ack {
            packet_id,
            reason,
            properties: Properties::default(),
        }
    }
}

/// Subscription options (MQTT 5 section 3.8.3.1; 3.1.1 has only the QoS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<(String, SubOptions)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<Reason>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<Reason>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: Reason,
    pub properties: Properties,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Disconnect),
}

/// Reads the fixed header. Returns `(first byte, remaining length, header length)`, or `None`
/// when more bytes are needed.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A length in more bytes than needed (a trailing 0x80 0x00) is tolerated by the
            // specification's algorithm, so it is accepted here too.
            return Ok(Some((first, value, 2 + i)));
        }
    }
    Err(malformed("remaining length longer than four bytes"))
}

/// Decodes one packet from the front of `buf`. `version` is `None` until CONNECT has been
/// received, and then only CONNECT is accepted. Returns the packet and the bytes it used, or
/// `None` when `buf` does not yet hold a whole packet.
pub fn decode(
    buf: &[u8],
    version: Option<Version>,
    max_packet: usize,
) -> Result<Option<(Packet, usize)>> {
    let Some((first, remaining, header)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = header + remaining;
    if total > max_packet {
        return Err(DecodeError {
            reason: Reason::PACKET_TOO_LARGE,
            message: "packet exceeds the maximum packet size",
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header..total];
    let kind = first >> 4;
    let flags = first & 0x0F;
    let packet = match version {
        None => {
            if kind != 1 {
                return Err(protocol_error("the first packet must be CONNECT"));
            }
            expect_flags(flags, 0)?;
            decode_connect(body)?
        }
        Some(v) => decode_body(kind, flags, body, v)?,
    };
    Ok(Some((packet, total)))
}

/// Decodes one packet a server sent (for clients: the tests and the benchmark driver).
pub fn decode_from_server(
    buf: &[u8],
    version: Version,
    max_packet: usize,
) -> Result<Option<(Packet, usize)>> {
    let Some((first, remaining, header)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = header + remaining;
    if total > max_packet {
        return Err(DecodeError {
            reason: Reason::PACKET_TOO_LARGE,
            message: "packet exceeds the maximum packet size",
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header..total];
    let (kind, flags) = (first >> 4, first & 0x0F);
    let mut r = Reader { buf: body };
    let v5 = version == Version::V5;
    let packet = match kind {
        2 => {
            expect_flags(flags, 0)?;
            let session_present = r.u8()? & 0x01 != 0;
            let code = r.u8()?;
            let reason = if v5 {
                Reason(code)
            } else {
                match code {
                    0 => Reason::SUCCESS,
                    1 => Reason::UNSUPPORTED_PROTOCOL_VERSION,
                    2 => Reason::CLIENT_ID_NOT_VALID,
                    3 => Reason::SERVER_UNAVAILABLE,
                    4 => Reason::BAD_USER_NAME_OR_PASSWORD,
                    _ => Reason::NOT_AUTHORIZED,
                }
            };
            let properties = r.properties(version, PropCtx::ConnAck)?;
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        }
        9 | 11 => {
            expect_flags(flags, 0)?;
            let packet_id = r.packet_id()?;
            let properties = r.properties(version, PropCtx::Ack)?;
            let reasons = r.buf.iter().map(|b| Reason(*b)).collect();
            r.buf = &[];
            if kind == 9 {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties,
                    reasons,
                })
            } else {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties,
                    reasons,
                })
            }
        }
        13 => {
            expect_flags(flags, 0)?;
            Packet::PingResp
        }
        3 => Packet::Publish(decode_publish(flags, &mut r, version)?),
        4..=7 | 14 | 15 => {
            return decode_body(kind, flags, body, version).map(|p| Some((p, total)));
        }
        _ => return Err(protocol_error("a packet type servers may not send")),
    };
    if !r.buf.is_empty() {
        return Err(malformed("bytes left over at the end of the packet"));
    }
    Ok(Some((packet, total)))
}

fn expect_flags(flags: u8, expected: u8) -> Result<()> {
    if flags == expected {
        Ok(())
    } else {
        Err(malformed("reserved flag bits are wrong"))
    }
}

fn decode_body(kind: u8, flags: u8, body: &[u8], v: Version) -> Result<Packet> {
    let mut r = Reader { buf: body };
    let packet = match kind {
        1 => return Err(protocol_error("a second CONNECT")),
        3 => {
            let publish = decode_publish(flags, &mut r, v)?;
            if !publish.properties.subscription_identifiers.is_empty() {
                return Err(protocol_error(
                    "a client PUBLISH with a subscription identifier",
                ));
            }
            Packet::Publish(publish)
        }
        4 | 5 | 7 => {
            expect_flags(flags, 0)?;
            let ack = decode_ack(&mut r, v)?;
            match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                _ => Packet::PubComp(ack),
            }
        }
        6 => {
            expect_flags(flags, 0b0010)?;
            Packet::PubRel(decode_ack(&mut r, v)?)
        }
        8 => {
            expect_flags(flags, 0b0010)?;
            Packet::Subscribe(decode_subscribe(&mut r, v)?)
        }
        10 => {
            expect_flags(flags, 0b0010)?;
            let packet_id = r.packet_id()?;
            let properties = r.properties(v, PropCtx::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.buf.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(protocol_error("UNSUBSCRIBE without topic filters"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        }
        12 => {
            expect_flags(flags, 0)?;
            Packet::PingReq
        }
        14 => {
            expect_flags(flags, 0)?;
            let (reason, properties) = if v == Version::V5 && !r.buf.is_empty() {
                let reason = Reason(r.u8()?);
                let properties = if r.buf.is_empty() {
                    Properties::default()
                } else {
                    r.properties(v, PropCtx::Disconnect)?
                };
                (reason, properties)
            } else {
                (Reason::SUCCESS, Properties::default())
            };
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 if v == Version::V5 => {
            expect_flags(flags, 0)?;
            let reason = if r.buf.is_empty() {
                Reason::SUCCESS
            } else {
                Reason(r.u8()?)
            };
            let properties = if r.buf.is_empty() {
                Properties::default()
            } else {
                r.properties(v, PropCtx::Auth)?
            };
            Packet::Auth(Disconnect { reason, properties })
        }
        // Packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) and type 0.
        _ => return Err(protocol_error("a packet type clients may not send")),
    };
    if !r.buf.is_empty() {
        return Err(malformed("bytes left over at the end of the packet"));
    }
    Ok(packet)
}

fn decode_connect(body: &[u8]) -> Result<Packet> {
    let mut r = Reader { buf: body };
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        ("MQTT" | "MQIsdp", _) => {
            return Err(DecodeError {
                reason: Reason::UNSUPPORTED_PROTOCOL_VERSION,
                message: "unsupported protocol level",
            });
        }
        _ => return Err(protocol_error("unknown protocol name")),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain without a will"));
    }
    let will_qos = QoS::from_bits(will_qos).ok_or_else(|| malformed("will QoS 3"))?;
    if version == Version::V311 && has_password && !has_username {
        return Err(malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = r.properties(version, PropCtx::Connect)?;
    if properties.receive_maximum == Some(0) || properties.maximum_packet_size == Some(0) {
        return Err(protocol_error(
            "receive maximum or maximum packet size of 0",
        ));
    }
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(protocol_error("authentication data without a method"));
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = r.properties(version, PropCtx::Will)?;
        let topic = r.string()?;
        let payload = Bytes::copy_from_slice(r.binary()?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(Bytes::copy_from_slice(r.binary()?))
    } else {
        None
    };
    if !r.buf.is_empty() {
        return Err(malformed("bytes left over at the end of CONNECT"));
    }
    Ok(Packet::Connect(Box::new(Connect {
        version,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })))
}

fn decode_publish(flags: u8, r: &mut Reader<'_>, v: Version) -> Result<Publish> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0x03).ok_or_else(|| malformed("PUBLISH QoS 3"))?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    if topic.contains(['+', '#']) {
        return Err(DecodeError {
            reason: Reason::TOPIC_NAME_INVALID,
            message: "wildcards in a topic name",
        });
    }
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = r.properties(v, PropCtx::Publish)?;
    if properties.topic_alias == Some(0) {
        return Err(DecodeError {
            reason: Reason::TOPIC_ALIAS_INVALID,
            message: "topic alias 0",
        });
    }
    let payload = Bytes::copy_from_slice(r.buf);
    r.buf = &[];
    if properties.payload_format_indicator == Some(1) && std::str::from_utf8(&payload).is_err() {
        return Err(DecodeError {
            reason: Reason::PAYLOAD_FORMAT_INVALID,
            message: "payload marked as UTF-8 is not",
        });
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn decode_ack(r: &mut Reader<'_>, v: Version) -> Result<Ack> {
    let packet_id = r.packet_id()?;
    let mut ack = Ack::new(packet_id, Reason::SUCCESS);
    if v == Version::V5 && !r.buf.is_empty() {
        ack.reason = Reason(r.u8()?);
        if !r.buf.is_empty() {
            ack.properties = r.properties(v, PropCtx::Ack)?;
        }
    }
    Ok(ack)
}

fn decode_subscribe(r: &mut Reader<'_>, v: Version) -> Result<Subscribe> {
    let packet_id = r.packet_id()?;
    let properties = r.properties(v, PropCtx::Subscribe)?;
    if properties.subscription_identifiers.len() > 1 {
        return Err(protocol_error("more than one subscription identifier"));
    }
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v == Version::V5 { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(malformed("reserved subscription option bits set"));
        }
        let qos = QoS::from_bits(options & 0x03).ok_or_else(|| malformed("subscription QoS 3"))?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(protocol_error("retain handling 3"));
        }
        filters.push((
            filter,
            SubOptions {
                qos,
                no_local: options & 0x04 != 0,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(protocol_error("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// A cursor over a packet body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8> {
        if self.buf.is_empty() {
            return Err(malformed("packet ends early"));
        }
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16> {
        if self.buf.len() < 2 {
            return Err(malformed("packet ends early"));
        }
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32> {
        if self.buf.len() < 4 {
            return Err(malformed("packet ends early"));
        }
        Ok(self.buf.get_u32())
    }

    fn packet_id(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(malformed("packet identifier 0")),
            id => Ok(id),
        }
    }

    fn varint(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("variable byte integer longer than four bytes"))
    }

    fn binary(&mut self) -> Result<&[u8]> {
        let len = usize::from(self.u16()?);
        if self.buf.len() < len {
            return Err(malformed("field longer than the packet"));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    fn string(&mut self) -> Result<String> {
        let bytes = self.binary()?;
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("string is not UTF-8"))?;
        if text.contains('\0') {
            return Err(malformed("string contains U+0000"));
        }
        Ok(text.to_owned())
    }

    fn properties(&mut self, v: Version, ctx: PropCtx) -> Result<Properties> {
        let mut p = Properties::default();
        if v == Version::V311 {
            return Ok(p);
        }
        let len = self.varint()? as usize;
        if self.buf.len() < len {
            return Err(malformed("properties longer than the packet"));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        let mut r = Reader { buf: head };
        while !r.buf.is_empty() {
            let id = r.varint()?;
            let id = u8::try_from(id).map_err(|_| malformed("unknown property"))?;
            if !allowed(id, ctx) {
                return Err(malformed("property not allowed in this packet"));
            }
            fn once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
                if slot.is_some() {
                    return Err(protocol_error("property repeated"));
                }
                *slot = Some(value);
                Ok(())
            }
            fn flag(value: u8) -> Result<u8> {
                if value > 1 {
                    return Err(protocol_error("a 0-or-1 property holds another value"));
                }
                Ok(value)
            }
            match id {
                P_PAYLOAD_FORMAT => once(&mut p.payload_format_indicator, flag(r.u8()?)?)?,
                P_MESSAGE_EXPIRY => once(&mut p.message_expiry_interval, r.u32()?)?,
                P_CONTENT_TYPE => once(&mut p.content_type, r.string()?)?,
                P_RESPONSE_TOPIC => {
                    let topic = r.string()?;
                    if topic.contains(['+', '#']) {
                        return Err(protocol_error("wildcards in a response topic"));
                    }
                    once(&mut p.response_topic, topic)?
                }
                P_CORRELATION_DATA => {
                    once(&mut p.correlation_data, Bytes::copy_from_slice(r.binary()?))?
                }
                P_SUBSCRIPTION_ID => {
                    let sid = r.varint()?;
                    if sid == 0 {
                        return Err(protocol_error("subscription identifier 0"));
                    }
                    p.subscription_identifiers.push(sid);
                }
                P_SESSION_EXPIRY => once(&mut p.session_expiry_interval, r.u32()?)?,
                P_ASSIGNED_CLIENT_ID => once(&mut p.assigned_client_identifier, r.string()?)?,
                P_SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?)?,
                P_AUTH_METHOD => once(&mut p.authentication_method, r.string()?)?,
                P_AUTH_DATA => once(
                    &mut p.authentication_data,
                    Bytes::copy_from_slice(r.binary()?),
                )?,
                P_REQUEST_PROBLEM => once(&mut p.request_problem_information, flag(r.u8()?)?)?,
                P_WILL_DELAY => once(&mut p.will_delay_interval, r.u32()?)?,
                P_REQUEST_RESPONSE => once(&mut p.request_response_information, flag(r.u8()?)?)?,
                P_RESPONSE_INFO => once(&mut p.response_information, r.string()?)?,
                P_SERVER_REFERENCE => once(&mut p.server_reference, r.string()?)?,
                P_REASON_STRING => once(&mut p.reason_string, r.string()?)?,
                P_RECEIVE_MAXIMUM => once(&mut p.receive_maximum, r.u16()?)?,
                P_TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?)?,
                P_TOPIC_ALIAS => once(&mut p.topic_alias, r.u16()?)?,
                P_MAXIMUM_QOS => once(&mut p.maximum_qos, flag(r.u8()?)?)?,
                P_RETAIN_AVAILABLE => once(&mut p.retain_available, flag(r.u8()?)?)?,
                P_USER_PROPERTY => {
                    let key = r.string()?;
                    let value = r.string()?;
                    p.user_properties.push((key, value));
                }
                P_MAXIMUM_PACKET_SIZE => once(&mut p.maximum_packet_size, r.u32()?)?,
                P_WILDCARD_AVAILABLE => {
                    once(&mut p.wildcard_subscription_available, flag(r.u8()?)?)?
                }
                P_SUB_ID_AVAILABLE => {
                    once(&mut p.subscription_identifier_available, flag(r.u8()?)?)?
                }
                P_SHARED_AVAILABLE => once(&mut p.shared_subscription_available, flag(r.u8()?)?)?,
                _ => return Err(malformed("unknown property")),
            }
        }
        Ok(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_binary(out: &mut BytesMut, bytes: &[u8]) {
    // Fields are bounded by the codec's callers (topics and strings come from decoded packets or
    // from the server itself), so the 16-bit length never truncates in practice; truncating
    // rather than panicking keeps a bug from becoming a crash.
    let len = bytes.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(&bytes[..len]);
}

fn encode_properties(p: &Properties, out: &mut BytesMut) {
    let mut b = BytesMut::new();
    let byte = |b: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            b.put_u8(id);
            b.put_u8(v);
        }
    };
    let short = |b: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            b.put_u8(id);
            b.put_u16(v);
        }
    };
    let long = |b: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            b.put_u8(id);
            b.put_u32(v);
        }
    };
    let text = |b: &mut BytesMut, id: u8, v: &Option<String>| {
        if let Some(v) = v {
            b.put_u8(id);
            put_binary(b, v.as_bytes());
        }
    };
    let bin = |b: &mut BytesMut, id: u8, v: &Option<Bytes>| {
        if let Some(v) = v {
            b.put_u8(id);
            put_binary(b, v);
        }
    };
    byte(&mut b, P_PAYLOAD_FORMAT, p.payload_format_indicator);
    long(&mut b, P_MESSAGE_EXPIRY, p.message_expiry_interval);
    text(&mut b, P_CONTENT_TYPE, &p.content_type);
    text(&mut b, P_RESPONSE_TOPIC, &p.response_topic);
    bin(&mut b, P_CORRELATION_DATA, &p.correlation_data);
    for sid in &p.subscription_identifiers {
        b.put_u8(P_SUBSCRIPTION_ID);
        put_varint(&mut b, *sid as usize);
    }
    long(&mut b, P_SESSION_EXPIRY, p.session_expiry_interval);
    text(&mut b, P_ASSIGNED_CLIENT_ID, &p.assigned_client_identifier);
    short(&mut b, P_SERVER_KEEP_ALIVE, p.server_keep_alive);
    text(&mut b, P_AUTH_METHOD, &p.authentication_method);
    bin(&mut b, P_AUTH_DATA, &p.authentication_data);
    byte(&mut b, P_REQUEST_PROBLEM, p.request_problem_information);
    long(&mut b, P_WILL_DELAY, p.will_delay_interval);
    byte(&mut b, P_REQUEST_RESPONSE, p.request_response_information);
    text(&mut b, P_RESPONSE_INFO, &p.response_information);
    text(&mut b, P_SERVER_REFERENCE, &p.server_reference);
    text(&mut b, P_REASON_STRING, &p.reason_string);
    short(&mut b, P_RECEIVE_MAXIMUM, p.receive_maximum);
    short(&mut b, P_TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    short(&mut b, P_TOPIC_ALIAS, p.topic_alias);
    byte(&mut b, P_MAXIMUM_QOS, p.maximum_qos);
    byte(&mut b, P_RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        b.put_u8(P_USER_PROPERTY);
        put_binary(&mut b, k.as_bytes());
        put_binary(&mut b, v.as_bytes());
    }
    long(&mut b, P_MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        &mut b,
        P_WILDCARD_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        &mut b,
        P_SUB_ID_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(&mut b, P_SHARED_AVAILABLE, p.shared_subscription_available);
    put_varint(out, b.len());
    out.put_slice(&b);
}

/// Encodes `packet` for a connection speaking `v` and appends it to `out`.
pub fn encode(packet: &Packet, v: Version, out: &mut BytesMut) {
    let v5 = v == Version::V5;
    let mut body = BytesMut::new();
    let first: u8 = match packet {
        Packet::Connect(c) => {
            put_binary(&mut body, b"MQTT");
            body.put_u8(if c.version == Version::V5 { 5 } else { 4 });
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            body.put_u8(flags);
            body.put_u16(c.keep_alive);
            if c.version == Version::V5 {
                encode_properties(&c.properties, &mut body);
            }
            put_binary(&mut body, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                if c.version == Version::V5 {
                    encode_properties(&w.properties, &mut body);
                }
                put_binary(&mut body, w.topic.as_bytes());
                put_binary(&mut body, &w.payload);
            }
            if let Some(u) = &c.username {
                put_binary(&mut body, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_binary(&mut body, p);
            }
            0x10
        }
        Packet::ConnAck(c) => {
            body.put_u8(u8::from(c.session_present));
            if v5 {
                body.put_u8(c.reason.0);
                encode_properties(&c.properties, &mut body);
            } else {
                body.put_u8(connack_v311(c.reason));
            }
            0x20
        }
        Packet::Publish(p) => {
            put_binary(&mut body, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                body.put_u16(p.packet_id);
            }
            if v5 {
                encode_properties(&p.properties, &mut body);
            }
            body.put_slice(&p.payload);
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            body.put_u16(a.packet_id);
            if v5 && (a.reason != Reason::SUCCESS || a.properties != Properties::default()) {
                body.put_u8(a.reason.0);
                if a.properties != Properties::default() {
                    encode_properties(&a.properties, &mut body);
                }
            }
            match packet {
                Packet::PubAck(_) => 0x40,
                Packet::PubRec(_) => 0x50,
                Packet::PubRel(_) => 0x62,
                _ => 0x70,
            }
        }
        Packet::Subscribe(s) => {
            body.put_u16(s.packet_id);
            if v5 {
                encode_properties(&s.properties, &mut body);
            }
            for (filter, o) in &s.filters {
                put_binary(&mut body, filter.as_bytes());
                let mut options = o.qos as u8;
                if v5 {
                    options |= (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4);
                }
                body.put_u8(options);
            }
            0x82
        }
        Packet::SubAck(s) => {
            body.put_u16(s.packet_id);
            if v5 {
                encode_properties(&s.properties, &mut body);
            }
            for r in &s.reasons {
                // 3.1.1 knows only the granted QoS and 0x80 for failure.
                body.put_u8(if v5 || !r.is_error() { r.0 } else { 0x80 });
            }
            0x90
        }
        Packet::Unsubscribe(u) => {
            body.put_u16(u.packet_id);
            if v5 {
                encode_properties(&u.properties, &mut body);
            }
            for filter in &u.filters {
                put_binary(&mut body, filter.as_bytes());
            }
            0xA2
        }
        Packet::UnsubAck(u) => {
            body.put_u16(u.packet_id);
            if v5 {
                encode_properties(&u.properties, &mut body);
                for r in &u.reasons {
                    body.put_u8(r.0);
                }
            }
            0xB0
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(d) => {
            if v5 {
                body.put_u8(d.reason.0);
                encode_properties(&d.properties, &mut body);
            }
            0xE0
        }
        Packet::Auth(a) => {
            body.put_u8(a.reason.0);
            encode_properties(&a.properties, &mut body);
            0xF0
        }
    };
    out.reserve(1 + varint_len(body.len()) + body.len());
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(&body);
}

/// The 3.1.1 CONNACK return code for an MQTT 5 reason.
fn connack_v311(reason: Reason) -> u8 {
    match reason {
        Reason::SUCCESS => 0,
        Reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        Reason::CLIENT_ID_NOT_VALID => 2,
        Reason::SERVER_UNAVAILABLE | Reason::SERVER_BUSY => 3,
        Reason::BAD_USER_NAME_OR_PASSWORD => 4,
        _ => 5,
    }
}

/// The size `packet` has once encoded, for checking a client's maximum packet size.
pub fn encoded_len(packet: &Packet, v: Version) -> usize {
    let mut out = BytesMut::new();
    encode(packet, v, &mut out);
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(packet: Packet, v: Version) {
        let mut out = BytesMut::new();
        encode(&packet, v, &mut out);
        let (decoded, used) = decode(&out, Some(v), 1 << 20).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(decoded, packet);
    }

    fn connect(v: Version) -> Connect {
        Connect {
            version: v,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: "dev-1".into(),
            will: Some(Will {
                topic: "a/b".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: Some("alice".into()),
            password: Some(Bytes::from_static(b"secret")),
        }
    }

    #[test]
    fn connect_round_trips_in_both_versions() {
        for v in [Version::V311, Version::V5] {
            let mut c = connect(v);
            if v == Version::V5 {
                c.properties.session_expiry_interval = Some(60);
                c.properties.receive_maximum = Some(10);
                c.properties.user_properties.push(("k".into(), "v".into()));
                c.will.as_mut().unwrap().properties.will_delay_interval = Some(5);
            }
            let packet = Packet::Connect(Box::new(c));
            let mut out = BytesMut::new();
            encode(&packet, v, &mut out);
            let (decoded, _) = decode(&out, None, 1 << 20).unwrap().unwrap();
            assert_eq!(decoded, packet);
        }
    }

    #[test]
    fn other_packets_round_trip() {
        let props = Properties {
            topic_alias: Some(3),
            payload_format_indicator: Some(1),
            ..Properties::default()
        };
        round_trip(
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "x/y".into(),
                packet_id: 7,
                properties: props,
                payload: Bytes::from_static(b"hello"),
            }),
            Version::V5,
        );
        let mut ack = Ack::new(9, Reason::NOT_AUTHORIZED);
        ack.properties.reason_string = Some("no".into());
        round_trip(Packet::PubAck(ack), Version::V5);
        round_trip(Packet::PubRel(Ack::new(9, Reason::SUCCESS)), Version::V311);
        round_trip(
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![(
                    "a/+/#".into(),
                    SubOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                )],
            }),
            Version::V5,
        );
        round_trip(
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                properties: Properties::default(),
                filters: vec!["a/#".into()],
            }),
            Version::V311,
        );
        round_trip(Packet::PingReq, Version::V311);
        round_trip(
            Packet::Disconnect(Disconnect {
                reason: Reason::DISCONNECT_WITH_WILL,
                properties: Properties::default(),
            }),
            Version::V5,
        );
    }

    /// The fuzz target's seeds (fuzz/seeds/mqtt_packet) hold whole sessions: every packet in
    /// them decodes and survives a round trip, as the fuzz target checks for any input.
    #[test]
    fn fuzz_seeds_decode_whole_and_round_trip() {
        let seeds: [&[u8]; 4] = [
            include_bytes!("../../../fuzz/seeds/mqtt_packet/v5_session"),
            include_bytes!("../../../fuzz/seeds/mqtt_packet/v311_session"),
            include_bytes!("../../../fuzz/seeds/mqtt_packet/v5_publishes"),
            include_bytes!("../../../fuzz/seeds/mqtt_packet/v311_publishes"),
        ];
        for seed in seeds {
            let (selector, mut rest) = seed.split_first().unwrap();
            let mut version = match selector % 3 {
                0 => None,
                1 => Some(Version::V311),
                _ => Some(Version::V5),
            };
            let mut count = 0;
            while !rest.is_empty() {
                let (packet, used) = decode(rest, version, 1 << 16).unwrap().unwrap();
                let v = match &packet {
                    Packet::Connect(c) => c.version,
                    _ => version.unwrap(),
                };
                let mut out = BytesMut::new();
                encode(&packet, v, &mut out);
                assert_eq!(decode(&out, version, 1 << 16).unwrap().unwrap().0, packet);
                version = Some(v);
                rest = &rest[used..];
                count += 1;
            }
            assert!(count >= 3, "a seed holds several packets");
        }
    }

    #[test]
    fn partial_input_asks_for_more() {
        let mut out = BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect(Version::V5))),
            Version::V5,
            &mut out,
        );
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut], None, 1 << 20), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_refused_with_the_right_reason() {
        let cases: &[(&[u8], Option<Version>, Reason)] = &[
            // A remaining length of five bytes.
            (
                &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                Some(Version::V5),
                Reason::MALFORMED_PACKET,
            ),
            // PUBLISH with QoS 3.
            (
                &[0x36, 0x03, 0x00, 0x01, b'a'],
                Some(Version::V5),
                Reason::MALFORMED_PACKET,
            ),
            // SUBSCRIBE with wrong reserved flags.
            (&[0x80, 0x00], Some(Version::V311), Reason::MALFORMED_PACKET),
            // PINGREQ with a body.
            (
                &[0xC0, 0x01, 0x00],
                Some(Version::V311),
                Reason::MALFORMED_PACKET,
            ),
            // A packet only servers send.
            (
                &[0x20, 0x02, 0x00, 0x00],
                Some(Version::V311),
                Reason::PROTOCOL_ERROR,
            ),
            // Anything but CONNECT first.
            (&[0xC0, 0x00], None, Reason::PROTOCOL_ERROR),
            // CONNECT for protocol level 3.
            (
                &[
                    0x10, 0x0C, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00,
                    0x3C,
                ],
                None,
                Reason::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            // CONNECT with the reserved flag.
            (
                &[
                    0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00,
                    0x01, b'c',
                ],
                None,
                Reason::MALFORMED_PACKET,
            ),
            // PUBLISH topic with an invalid UTF-8 byte.
            (
                &[0x30, 0x04, 0x00, 0x01, 0xFF, 0x00],
                Some(Version::V5),
                Reason::MALFORMED_PACKET,
            ),
            // PUBLISH with a wildcard in its topic.
            (
                &[0x30, 0x04, 0x00, 0x01, b'#', 0x00],
                Some(Version::V5),
                Reason::TOPIC_NAME_INVALID,
            ),
            // PUBLISH properties: a repeated topic alias.
            (
                &[
                    0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02,
                ],
                Some(Version::V5),
                Reason::PROTOCOL_ERROR,
            ),
            // PUBLISH with a property only CONNECT may carry.
            (
                &[0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0, 0, 0, 1],
                Some(Version::V5),
                Reason::MALFORMED_PACKET,
            ),
            // Packet identifier 0.
            (
                &[0x40, 0x02, 0x00, 0x00],
                Some(Version::V311),
                Reason::MALFORMED_PACKET,
            ),
        ];
        for (bytes, v, reason) in cases {
            let err = decode(bytes, *v, 1 << 20).unwrap_err();
            assert_eq!(err.reason, *reason, "{bytes:02x?}: {err}");
        }
    }

    #[test]
    fn packets_over_the_limit_are_refused_before_the_body_arrives() {
        // Announces 1000 bytes; only the header has arrived.
        let err = decode(&[0x30, 0xE8, 0x07], Some(Version::V5), 256).unwrap_err();
        assert_eq!(err.reason, Reason::PACKET_TOO_LARGE);
    }
}
