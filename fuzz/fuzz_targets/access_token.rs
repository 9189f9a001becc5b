//! Feeds arbitrary bytes to the access-token verifier, which parses bearer tokens from any
//! client before anything else is known about it. Verification must never panic, and nothing
//! but a token this key signed may ever pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_core::tokens::{verify_access, Keyring};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = Keyring::from_seed([7; 32]);
    // No input the fuzzer can make carries a valid Ed25519 signature of this key.
    assert!(verify_access(&keys, token, "https://fuzz.example", 0).is_err());
});
