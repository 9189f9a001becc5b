//! Feeds arbitrary bytes to the XMPP stream parser the way a connection reads an untrusted
//! socket: the first input byte picks the chunk size, the rest arrives in chunks of that size.
//! Parsing must never panic; the events must not depend on how the bytes were chunked; and
//! every stanza that parses must serialize and parse back to an equal element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_xmpp::xml::{Limits, StreamEvent, StreamParser};

const LIMITS: Limits = Limits {
    max_stanza_bytes: 16 * 1024,
    max_depth: 16,
    max_attributes: 16,
};

fn events(data: &[u8], chunk: usize) -> (Vec<StreamEvent>, bool) {
    let mut parser = StreamParser::new(LIMITS);
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        parser.feed(piece);
        loop {
            match parser.next_event() {
                Ok(Some(event)) => out.push(event),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector % 64) + 1;
    let (chunked, failed) = events(rest, chunk);
    let (whole, failed_whole) = events(rest, rest.len().max(1));
    assert_eq!(chunked, whole, "chunking changed the events");
    assert_eq!(failed, failed_whole, "chunking changed the outcome");
    for event in &whole {
        if let StreamEvent::Stanza(stanza) = event {
            let header = "<stream:stream xmlns='jabber:client' \
                xmlns:stream='http://etherx.jabber.org/streams'>";
            let text = format!("{header}{}", stanza.to_xml());
            let (again, failed) = events(text.as_bytes(), text.len());
            assert!(!failed, "a serialized stanza does not parse: {text}");
            assert_eq!(again.get(1), Some(event), "round trip changed the stanza");
        }
    }
});
