//! End-to-end-encrypted attachments, scheme `tidings.file.v1` (docs/protocol.md, 16.3).
//!
//! The file is sealed in fixed-size chunks with AES-256-GCM under a fresh key, so a client can
//! encrypt while it streams and resume at any chunk boundary. Chunk `i` uses the nonce
//! `nonce_prefix (8 bytes) || i (4 bytes, big-endian)` and the associated data
//! `"tidings.file.v1" || i (4 bytes, big-endian) || last (1 byte)`: the index stops reordering,
//! the `last` flag stops truncation and appending. Only ciphertext is uploaded; the key, the
//! nonce prefix and the plaintext's SHA-256 travel inside the (end-to-end-encrypted) message.

use crate::{AuthedClient, SdkError, SdkResult};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The scheme's name, in [`FileKey::scheme`] and in every chunk's associated data.
pub const FILE_SCHEME: &str = "tidings.file.v1";
/// Plaintext bytes per chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The GCM tag after each chunk's ciphertext.
const TAG_BYTES: usize = 16;

/// What a recipient needs to open an encrypted attachment; a protocol type, so the TypeScript
/// SDK shares its definition.
pub use tidings_proto::FileKey;

fn associated_data(index: u32, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(FILE_SCHEME.len() + 5);
    aad.extend_from_slice(FILE_SCHEME.as_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

fn nonce(prefix: &[u8; 8], index: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(prefix);
    nonce[8..].copy_from_slice(&index.to_be_bytes());
    nonce
}

fn bad(what: &str) -> SdkError {
    SdkError::Unexpected(format!("encrypted attachment: {what}"))
}

/// Encrypts `plaintext` with a fresh key; returns the ciphertext to upload and its key.
pub fn encrypt_file(plaintext: &[u8]) -> (Vec<u8>, FileKey) {
    let key: [u8; 32] = rand::random();
    let prefix: [u8; 8] = rand::random();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(CHUNK_BYTES).collect()
    };
    let mut out = Vec::with_capacity(plaintext.len() + chunks.len() * TAG_BYTES);
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let index = u32::try_from(i).expect("fewer than 2^32 chunks");
        let aad = associated_data(index, i + 1 == count);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce(&prefix, index)),
                Payload {
                    msg: chunk,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any chunk of this size");
        out.extend_from_slice(&sealed);
    }
    let file_key = FileKey {
        scheme: FILE_SCHEME.to_owned(),
        key: STANDARD.encode(key),
        nonce_prefix: STANDARD.encode(prefix),
        chunk_bytes: CHUNK_BYTES as u32,
        plaintext_sha256: STANDARD.encode(Sha256::digest(plaintext)),
    };
    (out, file_key)
}

/// Opens every chunk and checks the plaintext's SHA-256. Fails on any tampering, reordering,
/// truncation or appended data.
pub fn decrypt_file(ciphertext: &[u8], file_key: &FileKey) -> SdkResult<Vec<u8>> {
    if file_key.scheme != FILE_SCHEME {
        return Err(bad("unknown scheme"));
    }
    let key: [u8; 32] = STANDARD
        .decode(&file_key.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("bad key"))?;
    let prefix: [u8; 8] = STANDARD
        .decode(&file_key.nonce_prefix)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| bad("bad nonce prefix"))?;
    let record = file_key.chunk_bytes as usize + TAG_BYTES;
    if record == TAG_BYTES || ciphertext.len() < TAG_BYTES {
        return Err(bad("too short"));
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    let records: Vec<&[u8]> = ciphertext.chunks(record).collect();
    let count = records.len();
    let mut plaintext = Vec::with_capacity(ciphertext.len());
    for (i, sealed) in records.into_iter().enumerate() {
        let index = u32::try_from(i).map_err(|_| bad("too many chunks"))?;
        let aad = associated_data(index, i + 1 == count);
        let opened = cipher
            .decrypt(
                Nonce::from_slice(&nonce(&prefix, index)),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| bad("a chunk does not authenticate (tampered, reordered or cut)"))?;
        plaintext.extend_from_slice(&opened);
    }
    let expected = STANDARD
        .decode(&file_key.plaintext_sha256)
        .map_err(|_| bad("bad hash"))?;
    if Sha256::digest(&plaintext).as_slice() != expected.as_slice() {
        return Err(bad("the plaintext does not match its SHA-256"));
    }
    Ok(plaintext)
}

impl AuthedClient {
    /// Encrypts `plaintext`, uploads only the ciphertext, and returns the file id and the key
    /// to put inside the end-to-end-encrypted message.
    pub async fn upload_encrypted(
        &self,
        plaintext: &[u8],
        name: &str,
    ) -> SdkResult<(String, FileKey)> {
        let (ciphertext, key) = encrypt_file(plaintext);
        let file_id = self.upload(&ciphertext, name).await?;
        Ok((file_id, key))
    }

    /// Downloads an encrypted attachment and opens it with the key from its message.
    pub async fn download_decrypted(&self, file_id: &str, key: &FileKey) -> SdkResult<Vec<u8>> {
        let ciphertext = self.download(file_id, None).await?;
        decrypt_file(&ciphertext, key)
    }

    /// Shares a file with a conversation without a `file` message (for encrypted messages).
    pub async fn share_file(
        &self,
        conversation: tidings_proto::ConversationId,
        file_id: &str,
    ) -> SdkResult<()> {
        self.empty(
            reqwest::Method::PUT,
            &format!("/api/v1/conversations/{conversation}/files/{file_id}"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    /// The fixtures shared with the TypeScript SDK (sdk-ts/test/fixtures): one sealed here,
    /// which its tests open, and one sealed by it, which this test opens, so the two
    /// implementations agree byte for byte. The plaintext is `text(length)` on both sides.
    /// `UPDATE_FIXTURES=1` seals a new one here (the TypeScript side writes its own likewise).
    #[test]
    fn both_sdks_open_each_others_attachments() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk-ts/test/fixtures");
        let ours = dir.join("file-v1-from-rust.json");
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            let length = CHUNK_BYTES + 1000;
            let (sealed, key) = encrypt_file(&text(length));
            let fixture = serde_json::json!({
                "key": key,
                "length": length,
                "ciphertext": STANDARD.encode(sealed),
            });
            std::fs::write(&ours, serde_json::to_string_pretty(&fixture).unwrap()).unwrap();
        }
        for name in ["file-v1-from-rust.json", "file-v1-from-ts.json"] {
            let fixture: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
            let key: FileKey = serde_json::from_value(fixture["key"].clone()).unwrap();
            let sealed = STANDARD
                .decode(fixture["ciphertext"].as_str().unwrap())
                .unwrap();
            let length = fixture["length"].as_u64().unwrap() as usize;
            assert!(length > CHUNK_BYTES, "{name} spans two chunks");
            assert_eq!(decrypt_file(&sealed, &key).unwrap(), text(length), "{name}");
        }
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for len in [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES + 7,
        ] {
            let plain = text(len);
            let (sealed, key) = encrypt_file(&plain);
            let chunks = len.div_ceil(CHUNK_BYTES).max(1);
            assert_eq!(sealed.len(), len + chunks * TAG_BYTES, "{len}");
            assert_eq!(decrypt_file(&sealed, &key).unwrap(), plain, "{len}");
        }
    }

    #[test]
    fn fresh_keys_and_no_plaintext_in_the_ciphertext() {
        let plain = vec![b'A'; 4 * CHUNK_BYTES];
        let (one, k1) = encrypt_file(&plain);
        let (two, k2) = encrypt_file(&plain);
        assert_ne!(k1.key, k2.key);
        assert_ne!(one, two);
        assert!(!one.windows(64).any(|w| w.iter().all(|&b| b == b'A')));
    }

    #[test]
    fn tampering_reordering_truncation_and_appending_fail() {
        let plain = text(3 * CHUNK_BYTES + 10);
        let (sealed, key) = encrypt_file(&plain);
        let record = CHUNK_BYTES + TAG_BYTES;
        let mut flipped = sealed.clone();
        flipped[100] ^= 1;
        assert!(decrypt_file(&flipped, &key).is_err());
        let mut swapped = sealed[record..2 * record].to_vec();
        swapped.extend_from_slice(&sealed[..record]);
        swapped.extend_from_slice(&sealed[2 * record..]);
        assert!(decrypt_file(&swapped, &key).is_err());
        assert!(
            decrypt_file(&sealed[..3 * record], &key).is_err(),
            "cut at a chunk boundary"
        );
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[..record]);
        assert!(decrypt_file(&longer, &key).is_err());
        let wrong = FileKey {
            plaintext_sha256: STANDARD.encode([0u8; 32]),
            ..key
        };
        assert!(
            decrypt_file(&sealed, &wrong).is_err(),
            "the hash is checked"
        );
    }
}
