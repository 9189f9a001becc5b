//! VAPID (RFC 8292): the server's P-256 key and the ES256 JWT that proves a push comes from it.
//!
//! The key is made on first start and kept in the data directory, readable by the owner only
//! (it is a secret: whoever holds it can push to every subscription). Clients subscribe with
//! its public half, and push services refuse pushes signed by another key.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use std::io::Write;
use std::path::Path;

/// How long a VAPID JWT is valid: RFC 8292 allows at most 24 hours.
const JWT_LIFETIME_SECS: i64 = 12 * 3600;

/// Why the key could not be loaded or a token made.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("reading or writing the VAPID key: {0}")]
    Io(#[from] std::io::Error),
    #[error("the VAPID key file is not a base64 PKCS#8 P-256 key")]
    BadKey,
    #[error("signing failed")]
    Sign,
}

/// The server's VAPID key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl VapidKey {
    /// Makes a fresh key (not persisted).
    pub fn generate() -> Result<(VapidKey, Vec<u8>), VapidError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| VapidError::Sign)?;
        let der = pkcs8.as_ref().to_vec();
        Ok((VapidKey::from_pkcs8(&der)?, der))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<VapidKey, VapidError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| VapidError::BadKey)?;
        Ok(VapidKey { pair })
    }

    /// Loads the key at `path`, or makes one and writes it there with mode 0600.
    pub fn load_or_create(path: &Path) -> Result<VapidKey, VapidError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let der = STANDARD
                    .decode(text.trim())
                    .map_err(|_| VapidError::BadKey)?;
                VapidKey::from_pkcs8(&der)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, der) = VapidKey::generate()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(path)?;
                file.write_all(STANDARD.encode(&der).as_bytes())?;
                file.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The public key, uncompressed, base64url: the `applicationServerKey` clients subscribe
    /// with and the `k` of the Authorization header.
    pub fn public_key(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The ES256 JWT for a push service at `audience` (the endpoint's origin), valid from
    /// `now_secs` for 12 hours, naming the operator `subject`.
    pub fn jwt(&self, audience: &str, subject: &str, now_secs: i64) -> Result<String, VapidError> {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": audience,
            "exp": now_secs + JWT_LIFETIME_SECS,
            "sub": subject,
        });
        let claims = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| VapidError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }

    /// The `Authorization` header value (RFC 8292 section 3).
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        now_secs: i64,
    ) -> Result<String, VapidError> {
        Ok(format!(
            "vapid t={}, k={}",
            self.jwt(audience, subject, now_secs)?,
            self.public_key()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn key_is_persisted_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.key");
        let first = VapidKey::load_or_create(&path).unwrap();
        let again = VapidKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains(&std::fs::read_to_string(&path).unwrap()));
    }

    #[test]
    fn jwt_verifies_with_the_public_key_and_carries_the_claims() {
        let (key, _) = VapidKey::generate().unwrap();
        let jwt = key
            .jwt("https://push.example", "mailto:ops@example.org", 1_000)
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example");
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        assert_eq!(claims["exp"], 1_000 + JWT_LIFETIME_SECS);
        let public = B64.decode(key.public_key()).unwrap();
        assert_eq!(public.len(), 65);
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = B64.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        // A changed claim does not verify.
        let forged = format!("{}.{}", parts[0], B64.encode(b"{\"aud\":\"x\"}"));
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
                .verify(forged.as_bytes(), &signature)
                .is_err()
        );
    }
}
