//! The audit log's tamper evidence: the canonical encoding of an entry, its chained hash, and
//! the walk that checks a chain. Every backend stores entries the same way and shares these
//! functions, so `tidings admin audit verify` means the same thing on any backend.
//!
//! Entry `n` carries `hash(n) = SHA-256(tag, hash(n-1), n, fields of n)`, where `hash(0)` is 32
//! zero bytes, or, after pruning, the hash of the last pruned entry as recorded in the newest
//! [`AuditCheckpoint`]. Changing, removing or reordering any entry changes every hash after it,
//! so the first entry whose stored hash no longer matches is where the log was altered.
//!
//! The encoding is unambiguous: every variable-length field is prefixed with its length and
//! every optional field with a presence byte, so no two different entries encode alike.

use crate::{AuditOutcome, NewAudit};
use sha2::{Digest, Sha256};
use tidings_proto::UserId;

/// The `prev_hash` of the very first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Separates this hash from every other SHA-256 the server computes, and versions the encoding.
const ENTRY_TAG: &[u8] = b"tidings.audit.entry.v1";
const CHECKPOINT_TAG: &[u8] = b"tidings.audit.checkpoint.v1";

/// A stored audit entry: its number, what happened, and its place in the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Gap-free and ascending from 1, in the order entries were committed.
    pub id: i64,
    pub entry: NewAudit,
    /// The hash of the entry before (or of the checkpoint that replaced it).
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Which entries [`crate::Store::audit_entries`] returns; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<UserId>,
    pub target_user: Option<UserId>,
    /// Exact kind, e.g. `user.suspend`.
    pub kind: Option<String>,
    /// Entries with `ts >= since` (ms since the epoch).
    pub since: Option<i64>,
    /// Entries with `ts < until`.
    pub until: Option<i64>,
}

/// What pruning left behind in place of the entries it removed: enough to verify the chain
/// that remains, signed by the server so the checkpoint itself cannot be forged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The last entry removed; the first remaining entry is `last_id + 1`.
    pub last_id: i64,
    /// Its hash, which the first remaining entry carries as `prev_hash`.
    pub last_hash: [u8; 32],
    /// How many entries this prune removed.
    pub pruned: u64,
    /// When the prune ran (ms since the epoch).
    pub created_at: i64,
    /// The signer's key id and its signature over [`checkpoint_message`].
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// Signs the bytes of a checkpoint (the server's Ed25519 key); handed to the store's prune.
pub type CheckpointSigner = Box<dyn FnOnce(&[u8]) -> (String, Vec<u8>) + Send>;

struct Encoder(Sha256);

impl Encoder {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn int(&mut self, value: i64) {
        self.0.update(value.to_be_bytes());
    }

    fn opt_int(&mut self, value: Option<i64>) {
        match value {
            None => self.0.update([0]),
            Some(v) => {
                self.0.update([1]);
                self.int(v);
            }
        }
    }

    fn opt_str(&mut self, value: Option<&str>) {
        match value {
            None => self.0.update([0]),
            Some(v) => {
                self.0.update([1]);
                self.bytes(v.as_bytes());
            }
        }
    }
}

/// The hash of entry number `id` whose predecessor has hash `prev`.
///
/// `detail` is hashed as its compact JSON text. Backends store exactly that text, and
/// `serde_json` writes a parsed value back out unchanged, so a stored entry hashes the same after
/// a round trip.
pub fn entry_hash(prev: &[u8; 32], id: i64, entry: &NewAudit) -> [u8; 32] {
    let mut e = Encoder(Sha256::new());
    e.bytes(ENTRY_TAG);
    e.0.update(prev);
    e.int(id);
    e.int(entry.ts);
    e.opt_int(entry.actor.map(|u| u.0));
    e.bytes(entry.kind.as_bytes());
    e.0.update([match entry.outcome {
        AuditOutcome::Done => 1,
        AuditOutcome::Refused => 2,
    }]);
    e.opt_int(entry.target_user.map(|u| u.0));
    e.opt_int(entry.conversation.map(|c| c.0));
    e.opt_str(entry.address.as_deref());
    e.bytes(entry.detail.to_string().as_bytes());
    e.0.finalize().into()
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(
    last_id: i64,
    last_hash: &[u8; 32],
    pruned: u64,
    created_at: i64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_TAG.len() + 32 + 24);
    out.extend_from_slice(CHECKPOINT_TAG);
    out.extend_from_slice(&last_id.to_be_bytes());
    out.extend_from_slice(last_hash);
    out.extend_from_slice(&pruned.to_be_bytes());
    out.extend_from_slice(&created_at.to_be_bytes());
    out
}

/// Where and why a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {id}: {reason}")]
pub struct ChainBreak {
    /// The first entry that does not verify (for a missing entry, the id that should be there).
    pub id: i64,
    pub reason: String,
}

/// Walks a chain one entry at a time, so a log of any length is checked in constant memory.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    expected_id: i64,
    expected_prev: [u8; 32],
    checked: u64,
}

impl ChainVerifier {
    /// Starts at the beginning of the log, or right after the newest checkpoint.
    pub fn new(from: Option<&AuditCheckpoint>) -> Self {
        match from {
            Some(c) => ChainVerifier {
                expected_id: c.last_id + 1,
                expected_prev: c.last_hash,
                checked: 0,
            },
            None => ChainVerifier {
                expected_id: 1,
                expected_prev: GENESIS_HASH,
                checked: 0,
            },
        }
    }

    /// Checks the next entry in id order.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let fail = |id: i64, reason: &str| {
            Err(ChainBreak {
                id,
                reason: reason.into(),
            })
        };
        if record.id != self.expected_id {
            return fail(
                self.expected_id,
                &format!("is missing (the next stored entry is {})", record.id),
            );
        }
        if record.prev_hash != self.expected_prev {
            return fail(record.id, "does not chain to the entry before it");
        }
        let hash = entry_hash(&record.prev_hash, record.id, &record.entry);
        if hash != record.hash {
            return fail(
                record.id,
                "was altered: its content does not match its hash",
            );
        }
        self.expected_id += 1;
        self.expected_prev = hash;
        self.checked += 1;
        Ok(())
    }

    /// Entries checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The hash of the last entry checked (or of the starting point): worth writing down
    /// somewhere else, since it vouches for everything before it.
    pub fn head(&self) -> [u8; 32] {
        self.expected_prev
    }
}

/// Lowercase hex, for hashes in output and on the wire.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str) -> NewAudit {
        NewAudit {
            ts: 1,
            actor: Some(UserId(1)),
            kind: kind.into(),
            outcome: AuditOutcome::Done,
            target_user: None,
            conversation: None,
            address: Some("127.0.0.1".into()),
            detail: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    fn chain(kinds: &[&str]) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH;
        let mut out = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let id = i as i64 + 1;
            let e = entry(kind);
            let hash = entry_hash(&prev, id, &e);
            out.push(AuditRecord {
                id,
                entry: e,
                prev_hash: prev,
                hash,
            });
            prev = hash;
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_any_change_is_named() {
        let records = chain(&["a", "b", "c"]);
        let mut v = ChainVerifier::new(None);
        for r in &records {
            v.push(r).unwrap();
        }
        assert_eq!(v.checked(), 3);

        let mut altered = records.clone();
        altered[1].entry.kind = "x".into();
        let mut v = ChainVerifier::new(None);
        v.push(&altered[0]).unwrap();
        assert_eq!(v.push(&altered[1]).unwrap_err().id, 2);

        // A removed entry is named by the id that is missing.
        let mut v = ChainVerifier::new(None);
        v.push(&records[0]).unwrap();
        assert_eq!(v.push(&records[2]).unwrap_err().id, 2);
    }

    #[test]
    fn the_encoding_separates_fields() {
        // Moving a character from one field to the next changes the hash.
        let mut a = entry("ab");
        a.address = Some("c".into());
        let mut b = entry("a");
        b.address = Some("bc".into());
        assert_ne!(
            entry_hash(&GENESIS_HASH, 1, &a),
            entry_hash(&GENESIS_HASH, 1, &b)
        );
        // An absent field differs from an empty one.
        let mut c = entry("a");
        c.address = None;
        let mut d = entry("a");
        d.address = Some(String::new());
        assert_ne!(
            entry_hash(&GENESIS_HASH, 1, &c),
            entry_hash(&GENESIS_HASH, 1, &d)
        );
        // The detail hashes the same after a round trip through its text.
        let text = a.detail.to_string();
        let mut back = a.clone();
        back.detail = serde_json::from_str(&text).unwrap();
        assert_eq!(
            entry_hash(&GENESIS_HASH, 1, &a),
            entry_hash(&GENESIS_HASH, 1, &back)
        );
    }
}
