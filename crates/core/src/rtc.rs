//! ICE servers for calls: STUN and TURN URLs with time-limited TURN credentials in the TURN
//! REST scheme (`username = expiry:user_id`, `password = base64(HMAC-SHA1(secret, username))`),
//! which coturn checks with `use-auth-secret` and the embedded TURN server checks the same way.

use crate::{Caller, Core};
use base64::Engine;
use hmac::{Hmac, Mac};
use tidings_proto::call::{IceServer, IceServers};

/// The TURN REST credential for `username` under `secret`.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Core {
    /// The ICE servers the caller's device should use, with TURN credentials valid for
    /// `rtc.credential_ttl_secs`.
    pub fn ice_servers(&self, caller: &Caller) -> IceServers {
        let rtc = &self.inner.config.rtc;
        let ttl_ms =
            i64::try_from(rtc.credential_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_at = self.now_ms().saturating_add(ttl_ms);
        let mut ice_servers = Vec::new();
        if !rtc.stun_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: rtc.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !rtc.turn_urls.is_empty() {
            // The TURN REST scheme counts the expiry in seconds since the epoch.
            let username = format!("{}:{}", expires_at / 1000, caller.user_id);
            let credential = turn_password(rtc.shared_secret.as_bytes(), &username);
            ice_servers.push(IceServer {
                urls: rtc.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        IceServers {
            ice_servers,
            expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's `hmac` and `base64` modules.
    #[test]
    fn turn_rest_password_matches_a_reference() {
        assert_eq!(
            turn_password(b"north", "1764243600:42"),
            "KBQZUm/ggKV9n+ilmSb6IRc+nzs="
        );
    }
}
