//! The STUN message codec (RFC 8489): header, attributes, XOR-mapped addresses,
//! MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT, plus TURN's ChannelData framing (RFC 8656).
//!
//! Decoding never panics and never allocates more than the datagram it reads: every length is
//! checked against what is left of the input.

use hmac::{Hmac, Mac};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in every STUN header since RFC 5389.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Methods this server knows.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types this server reads or writes.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The class of a message (the two class bits of its type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 3 {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (leading bits or magic cookie)")]
    NotStun,
    #[error("the header length does not match the datagram")]
    BadLength,
    #[error("an attribute runs past the end of the message")]
    Truncated,
    #[error("an attribute follows FINGERPRINT or MESSAGE-INTEGRITY where none may")]
    Misplaced,
}

/// One attribute as it was on the wire (value without padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub kind: u16,
    pub value: Vec<u8>,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub method: u16,
    pub class: Class,
    pub transaction_id: [u8; 12],
    pub attributes: Vec<Attribute>,
    /// Byte offset of the MESSAGE-INTEGRITY attribute header, when there is one.
    integrity_at: Option<usize>,
    /// Byte offset of the FINGERPRINT attribute header, when there is one.
    fingerprint_at: Option<usize>,
}

/// Whether `bytes` look like a STUN message (as opposed to ChannelData, which shares the port).
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER
        && bytes[0] & 0xC0 == 0
        && u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) == MAGIC_COOKIE
}

fn type_of(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

/// Decodes one message. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT, and any
/// after FINGERPRINT, are refused (RFC 8489 section 14.5 and 14.7).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::TooShort);
    }
    if !is_stun(bytes) {
        return Err(DecodeError::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if !length.is_multiple_of(4) || HEADER + length != bytes.len() {
        return Err(DecodeError::BadLength);
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    let method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2);
    let class = Class::from_bits(((kind >> 4) & 1) | ((kind >> 7) & 2));
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&bytes[8..20]);
    let mut message = Message {
        method,
        class,
        transaction_id,
        attributes: Vec::new(),
        integrity_at: None,
        fingerprint_at: None,
    };
    let mut at = HEADER;
    while at < bytes.len() {
        if bytes.len() - at < 4 {
            return Err(DecodeError::Truncated);
        }
        let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let padded = len.div_ceil(4) * 4;
        if bytes.len() - at - 4 < padded {
            return Err(DecodeError::Truncated);
        }
        if message.fingerprint_at.is_some()
            || (message.integrity_at.is_some() && kind != attr::FINGERPRINT)
        {
            return Err(DecodeError::Misplaced);
        }
        match kind {
            attr::MESSAGE_INTEGRITY => message.integrity_at = Some(at),
            attr::FINGERPRINT => message.fingerprint_at = Some(at),
            _ => {}
        }
        message.attributes.push(Attribute {
            kind,
            value: bytes[at + 4..at + 4 + len].to_vec(),
        });
        at += 4 + padded;
    }
    Ok(message)
}

impl Message {
    /// The first attribute of this type.
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }

    /// Every attribute of this type, in order.
    pub fn all(&self, kind: u16) -> impl Iterator<Item = &[u8]> {
        self.attributes
            .iter()
            .filter(move |a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE, SOFTWARE).
    pub fn text(&self, kind: u16) -> Option<&str> {
        self.get(kind).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// An XOR-encoded address attribute.
    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        self.get(kind)
            .and_then(|v| decode_xor_address(v, &self.transaction_id))
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY against `key`, over `raw` (the bytes this message was decoded
    /// from). False when there is none or it does not match.
    pub fn verify_integrity(&self, raw: &[u8], key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(expected) = self.get(attr::MESSAGE_INTEGRITY) else {
            return false;
        };
        if expected.len() != 20 {
            return false;
        }
        // The length field covers everything up to and including MESSAGE-INTEGRITY.
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key");
        let length = u16::try_from(at - HEADER + 24).unwrap_or(u16::MAX);
        mac.update(&raw[..2]);
        mac.update(&length.to_be_bytes());
        mac.update(&raw[4..at]);
        mac.verify_slice(expected).is_ok()
    }

    /// Checks FINGERPRINT over `raw`. True when the message carries none.
    pub fn verify_fingerprint(&self, raw: &[u8]) -> bool {
        let Some(at) = self.fingerprint_at else {
            return true;
        };
        let Some(value) = self.get(attr::FINGERPRINT) else {
            return false;
        };
        value.len() == 4 && value == fingerprint(&raw[..at]).to_be_bytes()
    }
}

fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// Decodes an XOR-MAPPED-ADDRESS style value.
pub fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match value[1] {
        1 if value.len() == 8 => {
            let raw = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(raw)), port))
        }
        2 if value.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction_id);
            let mut octets = [0u8; 16];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Encodes an address as an XOR-MAPPED-ADDRESS style value.
pub fn encode_xor_address(addr: SocketAddr, transaction_id: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut out = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 2]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction_id);
            for (octet, k) in ip.octets().iter().zip(key) {
                out.push(octet ^ k);
            }
        }
    }
    out
}

/// Builds a message attribute by attribute.
pub struct Builder {
    buf: Vec<u8>,
    transaction_id: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: Class, transaction_id: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&type_of(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        Builder {
            buf,
            transaction_id,
        }
    }

    fn set_length(&mut self, extra: usize) {
        let length = u16::try_from(self.buf.len() - HEADER + extra).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
    }

    /// Appends an attribute, padded to four bytes.
    pub fn add(mut self, kind: u16, value: &[u8]) -> Builder {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    pub fn add_xor_address(self, kind: u16, addr: SocketAddr) -> Builder {
        let value = encode_xor_address(addr, &self.transaction_id);
        self.add(kind, &value)
    }

    pub fn add_u32(self, kind: u16, value: u32) -> Builder {
        self.add(kind, &value.to_be_bytes())
    }

    /// ERROR-CODE with its class/number split and a reason phrase.
    pub fn add_error(self, code: u16, reason: &str) -> Builder {
        let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        value.extend_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &value)
    }

    /// Finishes the message, with MESSAGE-INTEGRITY under `key` when given, then FINGERPRINT.
    pub fn finish(mut self, key: Option<&[u8]>, with_fingerprint: bool) -> Vec<u8> {
        if let Some(key) = key {
            self.set_length(24);
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key");
            mac.update(&self.buf);
            let tag = mac.finalize().into_bytes();
            self = self.add(attr::MESSAGE_INTEGRITY, &tag);
        }
        if with_fingerprint {
            self.set_length(8);
            let crc = fingerprint(&self.buf);
            self = self.add(attr::FINGERPRINT, &crc.to_be_bytes());
        }
        self.set_length(0);
        self.buf
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 section 9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into()
}

/// A TURN ChannelData message: (channel number, application data).
pub fn decode_channel_data(bytes: &[u8]) -> Option<(u16, &[u8])> {
    if bytes.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if !(0x4000..=0x7FFF).contains(&channel) || bytes.len() - 4 < len {
        return None;
    }
    Some((channel, &bytes[4..4 + len]))
}

pub fn encode_channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| (b as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    // RFC 5769 section 2.1, "Sample Request" (short-term credential).
    const SAMPLE_REQUEST: &str = "
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
        00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf";
    // RFC 5769 section 2.2, "Sample IPv4 Response".
    const IPV4_RESPONSE: &str = "
        01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 08 00 01 a1 47 e1 12 a6 43
        00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
        80 28 00 04 c0 7d 4c 96";
    // RFC 5769 section 2.3, "Sample IPv6 Response".
    const IPV6_RESPONSE: &str = "
        01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
        00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
        80 28 00 04 c8 fb 0b 4c";
    // RFC 5769 section 2.4, "Sample Request with Long-Term Authentication".
    const LONG_TERM_REQUEST: &str = "
        00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
        00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
        00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
        53 54 76 79 36 34 73 41
        00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
        00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";
    const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn rfc5769_sample_request() {
        let raw = hex(SAMPLE_REQUEST);
        let message = decode(&raw).unwrap();
        assert_eq!(
            (message.method, message.class),
            (method::BINDING, Class::Request)
        );
        assert_eq!(message.text(attr::USERNAME), Some("evtj:h6vY"));
        assert_eq!(message.text(attr::SOFTWARE), Some("STUN test client"));
        assert!(message.verify_integrity(&raw, SHORT_TERM_PASSWORD));
        assert!(!message.verify_integrity(&raw, b"wrong"));
        assert!(message.verify_fingerprint(&raw));
        let mut flipped = raw.clone();
        flipped[30] ^= 1;
        let tampered = decode(&flipped).unwrap();
        assert!(!tampered.verify_integrity(&flipped, SHORT_TERM_PASSWORD));
        assert!(!tampered.verify_fingerprint(&flipped));
    }

    #[test]
    fn rfc5769_responses_decode_and_encode_byte_for_byte() {
        for (text, addr) in [
            (IPV4_RESPONSE, "192.0.2.1:32853"),
            (
                IPV6_RESPONSE,
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ),
        ] {
            let raw = hex(text);
            let message = decode(&raw).unwrap();
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(message.class, Class::Success);
            assert_eq!(message.xor_address(attr::XOR_MAPPED_ADDRESS), Some(addr));
            assert!(message.verify_integrity(&raw, SHORT_TERM_PASSWORD));
            assert!(message.verify_fingerprint(&raw));
            // The vectors pad SOFTWARE with a space where we pad with zero; the rest of our
            // encoding must match the RFC's bytes exactly.
            let encoded = Builder::new(method::BINDING, Class::Success, message.transaction_id)
                .add(attr::SOFTWARE, b"test vector ")
                .add_xor_address(attr::XOR_MAPPED_ADDRESS, addr)
                .finish(Some(SHORT_TERM_PASSWORD), true);
            let mut expected = raw.clone();
            expected[23] = 0x0c; // SOFTWARE length 12 with the space counted as content.
            let again = decode(&encoded).unwrap();
            assert!(again.verify_integrity(&encoded, SHORT_TERM_PASSWORD));
            assert!(again.verify_fingerprint(&encoded));
            assert_eq!(
                encoded[..48],
                expected[..48],
                "header, SOFTWARE, start of address"
            );
            assert_eq!(again.xor_address(attr::XOR_MAPPED_ADDRESS), Some(addr));
        }
    }

    #[test]
    fn rfc5769_long_term_request() {
        let raw = hex(LONG_TERM_REQUEST);
        let message = decode(&raw).unwrap();
        let username = message.text(attr::USERNAME).unwrap();
        assert_eq!(username, "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}");
        assert_eq!(message.text(attr::REALM), Some("example.org"));
        assert_eq!(
            message.text(attr::NONCE),
            Some("f//499k954d6OL34oL9FSTvy64sA")
        );
        // "TheMatrIX" is the password after SASLprep.
        let key = long_term_key(username, "example.org", "TheMatrIX");
        assert!(message.verify_integrity(&raw, &key));
        assert!(!message.verify_integrity(&raw, &long_term_key(username, "example.org", "x")));
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let raw = hex(SAMPLE_REQUEST);
        assert_eq!(decode(&raw[..10]), Err(DecodeError::TooShort));
        assert_eq!(decode(&raw[..raw.len() - 4]), Err(DecodeError::BadLength));
        let mut long_attr = raw.clone();
        long_attr[22] = 0xff; // SOFTWARE claims far more bytes than there are.
        assert_eq!(decode(&long_attr), Err(DecodeError::Truncated));
        let mut not_stun = raw.clone();
        not_stun[4] = 0;
        assert_eq!(decode(&not_stun), Err(DecodeError::NotStun));
        // Every prefix and every single-byte corruption decodes or fails cleanly.
        for cut in 0..raw.len() {
            let _ = decode(&raw[..cut]);
        }
        for i in 0..raw.len() {
            let mut bytes = raw.clone();
            bytes[i] ^= 0xff;
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn method_and_class_bits_round_trip() {
        for method in [
            method::BINDING,
            method::ALLOCATE,
            method::CHANNEL_BIND,
            0xABC,
        ] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let raw = Builder::new(method, class, [7; 12]).finish(None, false);
                let message = decode(&raw).unwrap();
                assert_eq!((message.method, message.class), (method, class));
            }
        }
        assert_eq!(type_of(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(type_of(method::DATA, Class::Indication), 0x0017);
    }

    #[test]
    fn channel_data_frames() {
        let frame = encode_channel_data(0x4001, b"hello");
        assert_eq!(decode_channel_data(&frame), Some((0x4001, &b"hello"[..])));
        assert_eq!(decode_channel_data(&frame[..6]), None);
        assert_eq!(
            decode_channel_data(&encode_channel_data(0x3FFF, b"x")),
            None
        );
        assert!(!is_stun(&frame));
    }
}
