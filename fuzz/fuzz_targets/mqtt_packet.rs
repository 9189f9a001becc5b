//! Decodes arbitrary bytes as a stream of MQTT packets, the way an MQTT connection reads an
//! untrusted socket: first as CONNECT (protocol level unknown), then, by the first input byte,
//! as MQTT 3.1.1 or 5.0 packets. Decoding must never panic, must never claim more bytes than it
//! was given, and every packet that decodes must survive a re-encode and decode unchanged.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidings_mqtt::codec::{self, Packet, Version};

const MAX_PACKET: usize = 64 * 1024;

fn round_trip(packet: &Packet, version: Option<Version>) {
    let v = match (packet, version) {
        (Packet::Connect(c), _) => c.version,
        (_, Some(v)) => v,
        (_, None) => unreachable!("only CONNECT decodes before the version is known"),
    };
    let mut out = BytesMut::new();
    codec::encode(packet, v, &mut out);
    let (again, used) = codec::decode(&out, version, usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded packet does not decode: {e}\n{packet:?}"))
        .expect("a whole packet");
    assert_eq!(used, out.len(), "the re-encoded packet is read whole");
    assert_eq!(&again, packet, "round trip changed the packet");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let mut version = match selector % 3 {
        0 => None,
        1 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    // At most a few packets per input keeps each run short.
    for _ in 0..8 {
        match codec::decode(rest, version, MAX_PACKET) {
            Ok(Some((packet, used))) => {
                assert!(used > 0 && used <= rest.len(), "used {used} of {}", rest.len());
                round_trip(&packet, version);
                if let Packet::Connect(c) = &packet {
                    version = Some(c.version);
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => return,
        }
    }
});
