//! Decodes arbitrary bytes as a `ClientFrame`, the first thing the server parses from an
//! untrusted connection. Decoding must never panic, and every frame that decodes must survive
//! a re-encode and decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_proto::ws::ClientFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = serde_json::from_str::<ClientFrame>(text) else {
        return;
    };
    let encoded = serde_json::to_string(&frame).expect("a decoded frame encodes");
    let decoded: ClientFrame = serde_json::from_str(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}\n{encoded}"));
    assert_eq!(frame, decoded, "round trip changed the frame\n{encoded}");
});
