//! Feeds arbitrary header text to the tus header parsers (`Upload-Metadata`, `Upload-Checksum`,
//! `Upload-Concat`), which read what any signed-in client sends before an upload exists.
//! Parsing must never panic, and whatever is accepted must keep the promises the rest of the
//! server relies on: a file name that is a safe single path component, ids that are safe in
//! object paths, and digests of the algorithm's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_files::tus::{
    self, ChecksumAlgorithm, Concat, MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_PARTS,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the header; HTTP header values reach the parsers as `&str`.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => {
            let Ok(meta) = tus::parse_metadata(text) else {
                return;
            };
            assert!(meta.raw.len() <= MAX_METADATA_BYTES);
            let name = &meta.name;
            assert!(name.chars().count() <= MAX_NAME_CHARS, "{name:?}");
            assert!(
                !name.contains(['/', '\\', '"']) && !name.chars().any(char::is_control),
                "unsafe file name {name:?}"
            );
            assert!(name != "." && name != "..", "{name:?}");
            // The header is stored as `raw` and echoed on HEAD; it must mean the same again.
            let again = tus::parse_metadata(&meta.raw).expect("accepted metadata re-parses");
            assert_eq!(again, meta);
        }
        1 => {
            let Ok(checksum) = tus::parse_checksum(text) else {
                return;
            };
            let expected = match checksum.algorithm {
                ChecksumAlgorithm::Sha1 => 20,
                ChecksumAlgorithm::Sha256 => 32,
            };
            assert_eq!(checksum.digest.len(), expected);
        }
        _ => match tus::parse_concat(text) {
            Ok(Concat::Final(ids)) => {
                assert!(!ids.is_empty() && ids.len() <= MAX_PARTS);
                assert!(ids.iter().all(|id| tus::is_valid_id(id)), "{ids:?}");
            }
            Ok(Concat::Partial) => assert_eq!(text.trim(), "partial"),
            Err(_) => {}
        },
    }
});
