//! SCRAM credentials (RFC 5802, RFC 7677): derived from a password whenever one is set or
//! checked, stored beside the argon2 hash, and used to check a SASL SCRAM client proof.
//!
//! The transport runs the SASL message exchange; the core owns the keys, the proof check, the
//! sign-in rate limit and the audit of failures, as for a password sign-in.

use crate::Core;
use crate::accounts::limit_key;
use crate::error::{CoreError, CoreResult};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::OnceLock;
use subtle::ConstantTimeEq;
use tidings_proto::UserId;
use tidings_store::{ScramCredential, UserRecord};

/// PBKDF2 iterations for new credentials: the minimum RFC 7677 asks of SCRAM-SHA-256 servers.
pub const ITERATIONS: u32 = 4096;

/// The hash functions SCRAM is offered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// Every function a credential is stored for, strongest first.
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha256, ScramHash::Sha1];

    /// The name SASL gives the function (`SCRAM-<name>`), also the stored algorithm.
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with this HMAC, one output block.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        fn hi<M: Mac + Clone + hmac::digest::KeyInit>(
            password: &[u8],
            salt: &[u8],
            iterations: u32,
        ) -> Vec<u8> {
            // The keyed state is computed once and cloned per round.
            let keyed =
                <M as hmac::digest::KeyInit>::new_from_slice(password).expect("HMAC takes any key");
            let mut mac = keyed.clone();
            mac.update(salt);
            mac.update(&1u32.to_be_bytes());
            let mut u = mac.finalize().into_bytes().to_vec();
            let mut out = u.clone();
            for _ in 1..iterations {
                let mut mac = keyed.clone();
                mac.update(&u);
                u = mac.finalize().into_bytes().to_vec();
                for (o, x) in out.iter_mut().zip(&u) {
                    *o ^= x;
                }
            }
            out
        }
        match self {
            ScramHash::Sha1 => hi::<Hmac<Sha1>>(password, salt, iterations),
            ScramHash::Sha256 => hi::<Hmac<Sha256>>(password, salt, iterations),
        }
    }

    /// `(StoredKey, ServerKey)` for a password (already SASLprepped), salt and iteration count.
    pub fn keys(self, password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>) {
        let salted = self.salted_password(password, salt, iterations);
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.hash(&client_key);
        let server_key = self.hmac(&salted, b"Server Key");
        (stored_key, server_key)
    }

    /// The client's side of RFC 5802 section 3: the proof for `auth_message` from the salted
    /// password, and the server signature the client must get back. The server checks proofs
    /// with [`ScramHash::verify`]; this is for clients (the benchmark's, the tests').
    pub fn client_proof(self, salted_password: &[u8], auth_message: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted_password, b"Client Key");
        let signature = self.hmac(&self.hash(&client_key), auth_message);
        let proof = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = self.hmac(&self.hmac(salted_password, b"Server Key"), auth_message);
        (proof, server_signature)
    }

    /// Checks a client proof against a stored key. On success returns the server signature
    /// the client checks in turn; `None` when the proof is wrong.
    pub fn verify(
        self,
        stored_key: &[u8],
        server_key: &[u8],
        auth_message: &[u8],
        proof: &[u8],
    ) -> Option<Vec<u8>> {
        if proof.len() != self.output_len() || stored_key.len() != self.output_len() {
            return None;
        }
        let signature = self.hmac(stored_key, auth_message);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let ok: bool = self.hash(&client_key).ct_eq(stored_key).into();
        ok.then(|| self.hmac(server_key, auth_message))
    }
}

/// The password as SCRAM clients hash it (SASLprep, RFC 4013); `None` if SASLprep refuses it,
/// in which case no SCRAM credential can be made and the account signs in with PLAIN only.
fn prepared(password: &str) -> Option<String> {
    stringprep::saslprep(password).ok().map(|p| p.into_owned())
}

/// Credentials for every function in [`ScramHash::ALL`], each with its own random salt.
/// CPU-bound (PBKDF2): run it on the blocking pool.
pub fn derive_credentials(password: &str, password_hash: &str) -> Option<Vec<ScramCredential>> {
    use rand::RngCore;
    let password = prepared(password)?;
    Some(
        ScramHash::ALL
            .iter()
            .map(|&h| {
                let mut salt = vec![0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                let (stored_key, server_key) = h.keys(password.as_bytes(), &salt, ITERATIONS);
                ScramCredential {
                    algorithm: h.name().to_owned(),
                    salt,
                    iterations: ITERATIONS,
                    stored_key,
                    server_key,
                    password_hash: password_hash.to_owned(),
                }
            })
            .collect(),
    )
}

/// What the server needs for one SCRAM exchange. For an unknown user, a user without a usable
/// credential, or a deleted account, the salt is made up (the same one each time for the same
/// name while the process runs) and no proof matches, so the exchange looks the same as for a
/// real account until the proof is refused.
#[derive(Clone, Debug)]
pub struct ScramLookup {
    /// The account, if it exists; only [`Core::scram_finish`] acts on it.
    pub(crate) user: Option<UserId>,
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramLookup {
    /// Checks the client proof over `auth_message`; the server signature on success.
    pub fn verify(&self, auth_message: &[u8], proof: &[u8]) -> Option<Vec<u8>> {
        self.hash
            .verify(&self.stored_key, &self.server_key, auth_message, proof)
    }
}

/// The key of made-up salts, random per process.
fn fake_salt_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        key
    })
}

fn fake_lookup(user: Option<UserId>, username: &str, hash: ScramHash) -> ScramLookup {
    let mut input = hash.name().as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(username.as_bytes());
    let salt = ScramHash::Sha256.hmac(fake_salt_key(), &input)[..16].to_vec();
    ScramLookup {
        user,
        hash,
        salt,
        iterations: ITERATIONS,
        // An empty stored key never matches a proof (the length check refuses it).
        stored_key: Vec::new(),
        server_key: Vec::new(),
    }
}

impl Core {
    /// Stores SCRAM credentials derived from `password`, bound to `password_hash` (the argon2
    /// hash just stored for it). Every path that sets a password calls this after the new hash
    /// is stored; a failure is logged and leaves the old credentials, which no longer match the
    /// stored hash and so are never used (the account falls back to PLAIN).
    pub async fn refresh_scram_credentials(
        &self,
        user: UserId,
        password: &str,
        password_hash: &str,
    ) {
        let password = password.to_owned();
        let password_hash = password_hash.to_owned();
        let derived =
            tokio::task::spawn_blocking(move || derive_credentials(&password, &password_hash))
                .await;
        let credentials = match derived {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::debug!(%user, "Password refused by SASLprep; no SCRAM credentials.");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(%user, %e, "Could not derive SCRAM credentials.");
                return;
            }
        };
        if let Err(e) = self
            .inner
            .store
            .set_scram_credentials(user, credentials)
            .await
        {
            tracing::warn!(%user, %e, "Could not store SCRAM credentials.");
        }
    }

    /// After a successful password check: makes SCRAM credentials for an account that has none
    /// for its current password (created before SCRAM was supported), so its next sign-in can
    /// use SCRAM.
    pub(crate) async fn ensure_scram_credentials(&self, user: &UserRecord, password: &str) {
        let current = self
            .inner
            .store
            .scram_credential(user.id, ScramHash::Sha256.name())
            .await;
        match current {
            Ok(Some(c)) if c.password_hash == user.password_hash => {}
            Ok(_) => {
                self.refresh_scram_credentials(user.id, password, &user.password_hash)
                    .await;
            }
            Err(e) => tracing::warn!(user_id = %user.id, %e, "Could not read SCRAM credentials."),
        }
    }

    /// The first step of a SCRAM sign-in: the salt, iteration count and keys for `username`.
    /// Limited per address like every password sign-in. Follow it with
    /// [`Core::scram_finish`] whatever the proof check says.
    pub async fn scram_lookup(
        &self,
        username: &str,
        hash: ScramHash,
        address: Option<IpAddr>,
    ) -> CoreResult<ScramLookup> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        let name = match crate::passwords::normalize_username(username) {
            Ok(name) => name,
            Err(_) => return Ok(fake_lookup(None, username, hash)),
        };
        let Some(user) = self.inner.store.user_by_name(&name).await? else {
            return Ok(fake_lookup(None, &name, hash));
        };
        if user.deleted_at.is_some() {
            return Ok(fake_lookup(Some(user.id), &name, hash));
        }
        match self
            .inner
            .store
            .scram_credential(user.id, hash.name())
            .await?
        {
            Some(c) if c.password_hash == user.password_hash => Ok(ScramLookup {
                user: Some(user.id),
                hash,
                salt: c.salt,
                iterations: c.iterations,
                stored_key: c.stored_key,
                server_key: c.server_key,
            }),
            _ => Ok(fake_lookup(Some(user.id), &name, hash)),
        }
    }

    /// The last step of a SCRAM sign-in: audits a failure, refuses suspended or deleted
    /// accounts (named as suspended only to a client that proved the password), and returns the
    /// account for [`Core::device_of_verified_user`].
    pub async fn scram_finish(
        &self,
        lookup: &ScramLookup,
        proof_ok: bool,
        address: Option<IpAddr>,
    ) -> CoreResult<UserId> {
        let wrong = || {
            CoreError::new(
                tidings_proto::ErrorCode::InvalidCredentials,
                "wrong username or password",
            )
        };
        let Some(id) = lookup.user else {
            self.audit_sign_in_failure(None, address, "unknown_user")
                .await;
            return Err(wrong());
        };
        if !proof_ok {
            self.audit_sign_in_failure(Some(id), address, "wrong_password")
                .await;
            return Err(wrong());
        }
        match self.inner.store.user_by_id(id).await? {
            Some(u) if u.deleted_at.is_some() => {
                self.audit_sign_in_failure(Some(id), address, "deleted")
                    .await;
                Err(wrong())
            }
            Some(u) if u.disabled => {
                self.audit_sign_in_failure(Some(id), address, "suspended")
                    .await;
                Err(CoreError::new(
                    tidings_proto::ErrorCode::Forbidden,
                    "this account is suspended",
                ))
            }
            // SCRAM, like PLAIN, carries no second factor: a two-factor account signs in over
            // XMPP with an access token (OAUTHBEARER) instead, so the password alone is never
            // enough (docs/accounts.md).
            Some(_) if self.needs_second_factor(id).await? => Err(CoreError::new(
                tidings_proto::ErrorCode::SecondFactorRequired,
                "this account uses two-factor sign-in: use an access token instead of the password",
            )),
            Some(_) => Ok(id),
            None => Err(wrong()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    /// The exchange of RFC 5802 section 5 (SCRAM-SHA-1, user "user", password "pencil").
    #[test]
    fn rfc5802_example() {
        let h = ScramHash::Sha1;
        let (stored, server) = h.keys(b"pencil", &b64("QSXCR+Q6sek8bf92"), 4096);
        let auth = b"n=user,r=fyko+d2lbbFgONRv9qkxdawL,\
r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,\
c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let proof = b64("v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
        let signature = h.verify(&stored, &server, auth, &proof).expect("proof");
        assert_eq!(signature, b64("rmF9pqV8S7suAoZWja4dJRkFsKQ="));
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert_eq!(h.verify(&stored, &server, auth, &bad), None);
        // The client's side of the same exchange.
        let salted = h.salted_password(b"pencil", &b64("QSXCR+Q6sek8bf92"), 4096);
        assert_eq!(h.client_proof(&salted, auth), (proof, signature));
    }

    /// The exchange of RFC 7677 section 3 (SCRAM-SHA-256, user "user", password "pencil").
    #[test]
    fn rfc7677_example() {
        let h = ScramHash::Sha256;
        let (stored, server) = h.keys(b"pencil", &b64("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
        let auth = b"n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = b64("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let signature = h.verify(&stored, &server, auth, &proof).expect("proof");
        assert_eq!(
            signature,
            b64("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
        let salted = h.salted_password(b"pencil", &b64("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
        assert_eq!(h.client_proof(&salted, auth), (proof, signature));
    }

    #[test]
    fn made_up_salts_are_stable_and_never_verify() {
        let a = fake_lookup(None, "nobody", ScramHash::Sha256);
        let b = fake_lookup(None, "nobody", ScramHash::Sha256);
        assert_eq!(a.salt, b.salt);
        assert_ne!(a.salt, fake_lookup(None, "other", ScramHash::Sha256).salt);
        assert_eq!(a.verify(b"x", &[0u8; 32]), None);
    }
}
