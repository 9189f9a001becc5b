//! Feeds arbitrary bytes as the text of the configuration file through the same code
//! `tidings serve` loads it with (TOML parse, merge over the defaults, typed decoding,
//! validation). An operator's file is trusted more than a client's bytes, but a typo must give
//! an error naming the key, never a panic; and a configuration that loads must write back out
//! as TOML that loads to the same configuration (what `cargo xtask codegen` relies on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;
use tidings::config::{self, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let env = BTreeMap::new();
    let Ok(loaded) = config::from_text(Some((path, text)), &env, &Overrides::default()) else {
        return;
    };
    let written = toml::to_string(&loaded).expect("a loaded configuration serializes");
    let again = config::from_text(Some((path, &written)), &env, &Overrides::default())
        .unwrap_or_else(|e| panic!("written configuration does not load: {e}\n{written}"));
    assert_eq!(again, loaded, "{written}");
});
