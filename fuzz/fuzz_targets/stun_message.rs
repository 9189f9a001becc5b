//! Decodes arbitrary bytes as the embedded TURN server reads a datagram: as a STUN message
//! (RFC 8489), or as TURN ChannelData when it is not one. Decoding must never panic; integrity
//! and fingerprint checks on whatever decodes must never panic; and an attribute list that
//! decodes must re-encode (without integrity) to a message that decodes to the same attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_turn::stun::{self, Builder};

fuzz_target!(|data: &[u8]| {
    if !stun::is_stun(data) {
        let _ = stun::decode_channel_data(data);
        return;
    }
    let Ok(message) = stun::decode(data) else {
        return;
    };
    let _ = message.verify_integrity(data, b"key");
    let _ = message.verify_fingerprint(data);
    let _ = message.xor_address(stun::attr::XOR_PEER_ADDRESS);
    let mut builder = Builder::new(message.method, message.class, message.transaction_id);
    let kept: Vec<_> = message
        .attributes
        .iter()
        .filter(|a| {
            a.kind != stun::attr::MESSAGE_INTEGRITY && a.kind != stun::attr::FINGERPRINT
        })
        .collect();
    for attribute in &kept {
        builder = builder.add(attribute.kind, &attribute.value);
    }
    let encoded = builder.finish(None, false);
    let again = stun::decode(&encoded).expect("a re-encoded message decodes");
    assert_eq!((again.method, again.class), (message.method, message.class));
    assert_eq!(again.attributes.len(), kept.len());
    for (a, b) in again.attributes.iter().zip(kept) {
        assert_eq!((a.kind, &a.value), (b.kind, &b.value));
    }
});
