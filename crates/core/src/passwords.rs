//! Password hashing with argon2id, run on the blocking pool so it never stalls the runtime.

use crate::error::{CoreError, CoreResult};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id with the configured cost.
#[derive(Clone, Debug)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    pub fn new(memory_kib: u32, iterations: u32) -> CoreResult<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| CoreError::invalid(format!("argon2 parameters: {e}")))?;
        Ok(PasswordHashing { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> CoreResult<String> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| CoreError::internal("hashing password", e))
        })
        .await
        .map_err(|e| CoreError::internal("password task", e))?
    }

    /// Checks a password against a PHC string. The stored hash carries its own parameters,
    /// so hashes made with older settings keep working.
    pub async fn verify(&self, password: String, phc: String) -> CoreResult<bool> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            argon2.verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .await
        .map_err(|e| CoreError::internal("password task", e))
    }

    /// A hash of a random password, verified against when a username does not exist so the
    /// answer takes as long as for a real account (no user enumeration by timing).
    pub async fn dummy_hash(&self) -> CoreResult<String> {
        self.hash(crate::tokens::random_token()).await
    }
}

/// Normalizes and checks a username: 3 to 32 characters of `a-z`, `0-9`, `_`, `.`, `-`,
/// starting with a letter. Usernames are case-insensitive and stored lowercase.
pub fn normalize_username(raw: &str) -> CoreResult<String> {
    let name = raw.trim().to_ascii_lowercase();
    let len_ok = (3..=32).contains(&name.len());
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if len_ok && first_ok && chars_ok {
        Ok(name)
    } else {
        Err(CoreError::invalid(
            "username must be 3 to 32 characters of a-z, 0-9, '_', '.', '-', starting with a letter",
        ))
    }
}

/// Checks the password policy: a minimum length, at most 1024 characters, not the username.
pub fn check_password(password: &str, username: &str, min_len: u32) -> CoreResult<()> {
    let len = password.chars().count();
    if len < min_len as usize {
        return Err(CoreError::invalid(format!(
            "password must have at least {min_len} characters"
        )));
    }
    if len > 1024 {
        return Err(CoreError::invalid(
            "password must have at most 1024 characters",
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(CoreError::invalid("password must differ from the username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        assert_eq!(normalize_username("Alice").unwrap(), "alice");
        assert_eq!(normalize_username(" bob_1.x-y ").unwrap(), "bob_1.x-y");
        for bad in ["ab", "1abc", "_abc", "a b c", "ålice", "", &"a".repeat(33)] {
            assert!(normalize_username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn password_rules() {
        assert!(check_password("correct horse", "alice", 10).is_ok());
        assert!(check_password("short", "alice", 10).is_err());
        assert!(check_password("alicealice", "alicealice", 10).is_err());
        assert!(check_password(&"x".repeat(1025), "alice", 10).is_err());
    }

    #[tokio::test]
    async fn hash_and_verify_argon2id() {
        let hashing = PasswordHashing::new(256, 1).unwrap();
        let phc = hashing.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            hashing
                .verify("correct horse".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!hashing.verify("wrong horse".into(), phc).await.unwrap());
        assert!(
            !hashing
                .verify("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
    }
}
