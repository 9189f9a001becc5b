//! Access tokens (EdDSA-signed JWTs, RFC 9068 profile) and opaque refresh tokens.
//!
//! The JWT code is deliberately narrow: it signs and accepts exactly one algorithm (`EdDSA`
//! with Ed25519) and rejects every header it did not write, so there is no algorithm
//! confusion to get wrong.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidings_proto::{DeviceId, UserId};

/// The token signing key with its key id. The binary loads it from the data directory
/// (generating it on first start); the core never touches the file.
#[derive(Clone)]
pub struct Keyring {
    signing: SigningKey,
    kid: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself is a secret and never printed.
        f.debug_struct("Keyring").field("kid", &self.kid).finish()
    }
}

impl Keyring {
    /// Builds a keyring from a 32-byte Ed25519 seed. The key id is derived from the public key,
    /// so it changes exactly when the key does.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let digest = Sha256::digest(signing.verifying_key().as_bytes());
        let kid = B64.encode(&digest[..12]);
        Keyring { signing, kid }
    }

    /// A fresh random seed for a new key.
    pub fn generate_seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        seed
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// A 32-byte key for `purpose`, derived from the server key (HMAC-SHA256 keyed with the
    /// seed, over the purpose), so secrets sealed with it need no second key file. Rotating the
    /// server key changes every derived key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.signing.to_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"tidings derived key: ");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Signs arbitrary bytes (audit checkpoints) with the server key.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.signing.sign(message).to_bytes().to_vec()
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.verifying_key()
            .verify(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// The public key as an RFC 8037 JWK set, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": B64.encode(self.verifying_key().as_bytes()),
            }]
        })
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id, as a string per RFC 7519.
    pub sub: String,
    /// The device the token was issued to.
    pub did: i64,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl AccessClaims {
    pub fn user_id(&self) -> Option<UserId> {
        self.sub.parse().ok().map(UserId)
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.did)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("wrong issuer")]
    WrongIssuer,
}

/// Signs claims into a compact JWT.
pub fn sign_access(keys: &Keyring, claims: &AccessClaims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: "at+jwt".into(),
        kid: keys.kid.clone(),
    };
    let header = B64.encode(serde_json::to_vec(&header).expect("header serializes"));
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let signature = keys.signing.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
}

/// Verifies a compact JWT and returns its claims if the signature, issuer and expiry hold.
pub fn verify_access(
    keys: &Keyring,
    token: &str,
    issuer: &str,
    now_secs: i64,
) -> Result<AccessClaims, TokenError> {
    // Tokens are small; refuse anything oversized before decoding it.
    if token.len() > 4096 {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "EdDSA" || header.typ != "at+jwt" || header.kid != keys.kid {
        return Err(TokenError::BadSignature);
    }
    let sig_bytes: [u8; 64] = B64
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    let signature = Signature::from_bytes(&sig_bytes);
    let signing_input_len = h.len() + 1 + p.len();
    keys.verifying_key()
        .verify(&token.as_bytes()[..signing_input_len], &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: AccessClaims = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.iss != issuer {
        return Err(TokenError::WrongIssuer);
    }
    if claims.exp <= now_secs {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// A new opaque token: 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// What the store keeps of an opaque token: its SHA-256. The tokens carry 256 bits of
/// entropy, so a fast hash is enough (no salt or stretching needed).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://chat.example".into(),
            sub: "7".into(),
            did: 9,
            client_id: "tidings".into(),
            scope: "messages".into(),
            iat: 100,
            exp,
            jti: "x".into(),
        }
    }

    #[test]
    fn round_trip() {
        let keys = Keyring::from_seed([7; 32]);
        let token = sign_access(&keys, &claims(1000));
        let back = verify_access(&keys, &token, "https://chat.example", 500).unwrap();
        assert_eq!(back, claims(1000));
        assert_eq!(back.user_id(), Some(UserId(7)));
    }

    #[test]
    fn refuses_expired_wrong_issuer_other_key_and_tampering() {
        let keys = Keyring::from_seed([7; 32]);
        let token = sign_access(&keys, &claims(1000));
        assert_eq!(
            verify_access(&keys, &token, "https://chat.example", 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_access(&keys, &token, "https://other", 500),
            Err(TokenError::WrongIssuer)
        );
        let other = Keyring::from_seed([8; 32]);
        assert_eq!(
            verify_access(&other, &token, "https://chat.example", 500),
            Err(TokenError::BadSignature)
        );
        // Change the payload but keep the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut forged = claims(999_999);
        forged.sub = "1".into();
        parts[1] = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify_access(&keys, &parts.join("."), "https://chat.example", 500),
            Err(TokenError::BadSignature)
        );
        // An unsigned token with alg "none" is never accepted.
        let none_header = B64.encode(br#"{"alg":"none","typ":"at+jwt","kid":"x"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(verify_access(&keys, &unsigned, "https://chat.example", 500).is_err());
        for junk in ["", "a", "a.b", "a.b.c", "a.b.c.d", &"x".repeat(5000)] {
            assert!(verify_access(&keys, junk, "https://chat.example", 500).is_err());
        }
    }

    #[test]
    fn jwks_names_the_key() {
        let keys = Keyring::from_seed([1; 32]);
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], keys.kid());
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    }

    #[test]
    fn byte_signatures_verify_only_unchanged_with_the_same_key() {
        let keys = Keyring::from_seed([1; 32]);
        let signature = keys.sign_bytes(b"checkpoint");
        assert!(keys.verify_bytes(b"checkpoint", &signature));
        assert!(!keys.verify_bytes(b"checkpoinT", &signature));
        assert!(!keys.verify_bytes(b"checkpoint", &signature[1..]));
        assert!(!Keyring::from_seed([2; 32]).verify_bytes(b"checkpoint", &signature));
    }
}
