//! Message encryption for Web Push (RFC 8291) in the `aes128gcm` content coding (RFC 8188).
//!
//! The application server makes a fresh P-256 key pair and salt for every message, agrees a
//! secret with the browser's key (`p256dh`), mixes in the browser's authentication secret, and
//! seals the payload as one record. Only the browser can open it.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{ECDH_P256, PrivateKey, UnparsedPublicKey, agree};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The record size we announce: one record always holds a Web Push payload (at most 4 KiB).
const RECORD_SIZE: u32 = 4096;
/// The largest plaintext that still fits in one 4096-byte record: the record carries the
/// padding delimiter (1 byte) and the AEAD tag (16 bytes), and push services refuse bodies
/// above 4096 bytes of ciphertext plus the 86-byte header.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 17;

/// Why a payload could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum EceError {
    #[error("the subscription's p256dh key is not an uncompressed P-256 point")]
    BadPublicKey,
    #[error("the subscription's auth secret must be 16 bytes")]
    BadAuthSecret,
    #[error("the payload is larger than {MAX_PLAINTEXT} bytes")]
    TooLarge,
    #[error("the cryptographic library failed")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for EceError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        EceError::Crypto
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), EceError> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    prk.expand(&[info], Len(out.len()))?.fill(out)?;
    Ok(())
}

/// Encrypts `plaintext` for a subscription whose keys are `ua_public` (65 bytes, uncompressed)
/// and `auth_secret` (16 bytes), with fresh randomness. Returns the request body.
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
) -> Result<Vec<u8>, EceError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)?;
    let as_private = PrivateKey::generate(&ECDH_P256)?;
    encrypt_with(plaintext, ua_public, auth_secret, &as_private, salt)
}

/// [`encrypt`] with the sender's key and salt given, so the RFC's test vector can be checked.
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
    as_private: &PrivateKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EceError> {
    if ua_public.len() != 65 || ua_public[0] != 4 {
        return Err(EceError::BadPublicKey);
    }
    if auth_secret.len() != 16 {
        return Err(EceError::BadAuthSecret);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge);
    }
    let as_public = as_private.compute_public_key()?;
    let as_public = as_public.as_ref();
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let ecdh_secret: Vec<u8> = agree(as_private, peer, EceError::BadPublicKey, |secret| {
        Ok(secret.to_vec())
    })?;

    // RFC 8291 section 3.4: the input keying material binds both public keys and the auth secret.
    let mut key_info = Vec::with_capacity(144);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    hkdf(auth_secret, &ecdh_secret, &key_info, &mut ikm)?;

    // RFC 8188 section 2.2 and 2.3: content-encryption key and nonce from the salt.
    let mut cek = [0u8; 16];
    hkdf(&salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek)?;
    let mut nonce = [0u8; 12];
    hkdf(&salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce)?;

    // One record, and it is the last: the delimiter is 2 and no further padding is added.
    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(2);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek)?);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut record,
    )?;

    let mut body = Vec::with_capacity(86 + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A, byte for byte.
    #[test]
    fn rfc8291_appendix_a() {
        let plaintext = b64("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        let as_private = PrivateKey::from_private_key(
            &ECDH_P256,
            &b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"),
        )
        .unwrap();
        assert_eq!(
            as_private.compute_public_key().unwrap().as_ref(),
            b64("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8")
                .as_slice()
        );
        let ua_public = b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(&plaintext, &ua_public, &auth, &as_private, salt).unwrap();
        assert_eq!(
            B64.encode(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn bad_keys_and_large_payloads_are_refused() {
        let key = PrivateKey::generate(&ECDH_P256).unwrap();
        let ua = key.compute_public_key().unwrap().as_ref().to_vec();
        assert!(matches!(
            encrypt(b"x", &ua[..64], &[0; 16]),
            Err(EceError::BadPublicKey)
        ));
        assert!(matches!(
            encrypt(b"x", &ua, &[0; 15]),
            Err(EceError::BadAuthSecret)
        ));
        assert!(matches!(
            encrypt(&vec![0; MAX_PLAINTEXT + 1], &ua, &[0; 16]),
            Err(EceError::TooLarge)
        ));
        let body = encrypt(&vec![0; MAX_PLAINTEXT], &ua, &[0; 16]).unwrap();
        assert_eq!(body.len(), 86 + 4096);
    }
}
