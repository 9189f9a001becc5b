//! Stream Management resumption (XEP-0198): the stanzas sent to a client and not yet
//! acknowledged, kept so a resumed stream can resend them, and the handoff of a session from
//! the connection that held it to the one that resumes it.
//!
//! A session that asked for resumption outlives a lost TCP connection for
//! `xmpp.resume_timeout_secs`: its core session keeps receiving, and what it would have written
//! goes into the [`Outbox`]. A new connection that authenticates as the same user and sends
//! `<resume previd=.../>` asks the holder (parked, or still serving a connection it has not
//! noticed is dead) for the session through a channel; the holder hands it over and the new
//! connection resends everything after the client's `h`.

use std::collections::VecDeque;

/// The most bytes of unacknowledged stanzas kept for one session; past it a parked session
/// ends (the messages stay in the history).
pub const MAX_UNACKED_BYTES: usize = 4 * 1024 * 1024;

/// Stanzas sent to the client, counted as XEP-0198 counts them.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Stanzas sent since resumption was enabled.
    sent: u64,
    /// Copies of the stanzas numbered `sent - unacked.len() + 1 ..= sent`, oldest first.
    unacked: VecDeque<String>,
    bytes: usize,
    /// An `<r/>` is out and its `<a/>` has not come back.
    requested: bool,
}

/// The client acknowledged more stanzas than were sent (`handled-count-too-high`).
#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh;

impl Outbox {
    /// Records a stanza as sent.
    pub fn push(&mut self, xml: String) {
        self.sent += 1;
        self.bytes += xml.len();
        self.unacked.push_back(xml);
    }

    /// The client says it handled `h` stanzas (modulo 2^32): forgets those. An `h` behind
    /// one the client already sent changes nothing: xmpp.js, for one, can answer an `<r/>`
    /// before it resets its count on `<enabled/>`, and then counts one short for good; that
    /// costs it at most a stanza resent, where ending the stream would cost the session.
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        self.requested = false;
        let acked = self.sent - self.unacked.len() as u64;
        // `h` wraps at 2^32; what it adds to the acknowledged count is the difference, read
        // as serial numbers (RFC 1982): up to 2^31 ahead, else behind.
        let delta = h.wrapping_sub(acked as u32);
        if delta > u32::MAX / 2 {
            return Ok(());
        }
        let delta = u64::from(delta);
        if delta > self.unacked.len() as u64 {
            return Err(TooHigh);
        }
        for _ in 0..delta {
            if let Some(xml) = self.unacked.pop_front() {
                self.bytes -= xml.len();
            }
        }
        Ok(())
    }

    /// The stanzas to resend after a resumption, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &str> {
        self.unacked.iter().map(String::as_str)
    }

    /// Whether to ask the client for an acknowledgement now: something is unacknowledged
    /// and no request is out.
    pub fn take_request(&mut self) -> bool {
        if self.requested || self.unacked.is_empty() {
            return false;
        }
        self.requested = true;
        true
    }

    pub fn too_big(&self) -> bool {
        self.bytes > MAX_UNACKED_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_drop_the_oldest() {
        let mut outbox = Outbox::default();
        for i in 0..5 {
            outbox.push(format!("<m{i}/>"));
        }
        assert!(outbox.take_request());
        assert!(!outbox.take_request(), "one request at a time");
        outbox.ack(2).unwrap();
        assert_eq!(
            outbox.unacked().collect::<Vec<_>>(),
            ["<m2/>", "<m3/>", "<m4/>"]
        );
        outbox.ack(2).unwrap();
        assert_eq!(outbox.unacked().count(), 3, "an old h changes nothing");
        outbox.ack(1).unwrap();
        outbox.ack(0).unwrap();
        assert_eq!(outbox.unacked().count(), 3, "nor does one behind it");
        assert_eq!(outbox.ack(6), Err(TooHigh));
        outbox.ack(5).unwrap();
        assert_eq!(outbox.unacked().count(), 0);
        assert_eq!(outbox.bytes, 0);
        assert!(!outbox.take_request(), "nothing to acknowledge");
    }

    #[test]
    fn the_count_wraps_at_two_to_the_32() {
        let mut outbox = Outbox {
            sent: u64::from(u32::MAX),
            ..Outbox::default()
        };
        outbox.push("<a/>".into());
        outbox.push("<b/>".into());
        // Stanza 2^32 is h = 0 after the wrap.
        outbox.ack(0).unwrap();
        assert_eq!(outbox.unacked().collect::<Vec<_>>(), ["<b/>"]);
        // Behind, across the wrap: nothing changes.
        outbox.ack(u32::MAX).unwrap();
        assert_eq!(outbox.unacked().collect::<Vec<_>>(), ["<b/>"]);
        outbox.ack(1).unwrap();
        assert_eq!(outbox.unacked().count(), 0);
    }
}
