//! Apple Push Notification service, token-based: an ES256 JWT (`kid` = the key's id, `iss` =
//! the team, `iat`) signed with the operator's `.p8` key and renewed before it is an hour old,
//! and one HTTP/2 POST to `/3/device/{token}` per push.
//!
//! The `.p8` file, its key id, the team id and the app's bundle id (the `apns-topic`) come from
//! the Apple developer account; the operator names them in `push.apns_*`.

use crate::jwt::{self, CredentialError};
use crate::webpush::retry_after;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Mutex;
use tidings_core::push::{PushOutcome, PushRequest};

/// A provider token is renewed when it is this old: Apple refuses tokens older than an hour
/// and asks that they be renewed no more often than every 20 minutes.
const TOKEN_RENEW_SECS: i64 = 50 * 60;

/// Sends pushes through APNs for one app.
pub struct ApnsPusher {
    client: reqwest::Client,
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    topic: String,
    base_url: String,
    /// The current provider token and when it was made.
    token: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for ApnsPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsPusher")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .finish()
    }
}

impl ApnsPusher {
    /// Loads the `.p8` key. `base_url` is `https://api.push.apple.com` (or the sandbox's);
    /// `client` must speak HTTP/2.
    pub fn from_file(
        key_file: &Path,
        key_id: &str,
        team_id: &str,
        topic: &str,
        base_url: &str,
        client: reqwest::Client,
    ) -> Result<ApnsPusher, CredentialError> {
        let der = jwt::pem_der(&jwt::read_file(key_file)?, "PRIVATE KEY").ok_or(
            CredentialError::Invalid("the APNs key file is not a PKCS#8 PEM (.p8) key"),
        )?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| CredentialError::Invalid("the APNs key is not a P-256 key"))?;
        if key_id.is_empty() || team_id.is_empty() || topic.is_empty() {
            return Err(CredentialError::Invalid(
                "APNs needs the key id, the team id and the topic (bundle id)",
            ));
        }
        Ok(ApnsPusher {
            client,
            key,
            key_id: key_id.into(),
            team_id: team_id.into(),
            topic: topic.into(),
            base_url: base_url.trim_end_matches('/').into(),
            token: Mutex::new(None),
        })
    }

    /// The provider token made at `now`.
    pub fn provider_token(&self, now: i64) -> Result<String, CredentialError> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let claims = json!({"iss": self.team_id, "iat": now});
        let input = jwt::signing_input(&header, &claims);
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| CredentialError::Invalid("signing the APNs token failed"))?;
        Ok(jwt::assemble(input, signature.as_ref()))
    }

    /// The cached provider token, renewed when it is old.
    fn current_token(&self, now: i64) -> Result<String, CredentialError> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, made)) = cached.as_ref()
            && now - made < TOKEN_RENEW_SECS
            && now >= *made
        {
            return Ok(token.clone());
        }
        let token = self.provider_token(now)?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }

    pub(crate) async fn push(&self, device_token: &str, request: &PushRequest<'_>) -> PushOutcome {
        if device_token.is_empty() || !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return PushOutcome::Gone; // Not a device token APNs could ever accept.
        }
        let body = match notification(request) {
            Ok(body) => body,
            Err(reason) => return PushOutcome::Failed(reason),
        };
        let now = jwt::now_secs();
        let token = match self.current_token(now) {
            Ok(token) => token,
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        // Apple limits the collapse id to 64 bytes; ours are short (`c<conversation id>`).
        let collapse: String = request.topic.chars().take(64).collect();
        let response = self
            .client
            .post(format!("{}/3/device/{device_token}", self.base_url))
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            // Every push is a visible alert the user expects now; 5 is for background updates
            // Apple may hold back.
            .header("apns-priority", "10")
            .header(
                "apns-expiration",
                (now + i64::from(request.ttl_secs)).to_string(),
            )
            .header("apns-collapse-id", collapse)
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(%e, "APNs could not be reached.");
                return PushOutcome::Retry { after_ms: None };
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let reason = if response.status().is_success() {
            String::new()
        } else {
            response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        if matches!(
            reason.as_str(),
            "ExpiredProviderToken" | "InvalidProviderToken"
        ) {
            *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        outcome_of(status, after, &reason)
    }
}

/// What an APNs answer means (`reason` from the JSON body of an error).
pub fn outcome_of(status: u16, retry_after_ms: Option<u64>, reason: &str) -> PushOutcome {
    match (status, reason) {
        (200..=299, _) => PushOutcome::Delivered,
        (410, _) | (_, "BadDeviceToken" | "Unregistered") => PushOutcome::Gone,
        // A stale provider token: the next attempt makes a new one.
        (403, "ExpiredProviderToken") => PushOutcome::Retry { after_ms: None },
        _ => jwt::retry_or(
            status,
            retry_after_ms,
            PushOutcome::Failed(format!("APNs answered {status} {reason}")),
        ),
    }
}

/// The JSON body of one push: an alert built only from what the payload holds (so privacy
/// mode and encrypted messages show no more than on the web), the badge, a thread per collapse
/// key, and the payload itself under `tidings` for the app.
pub fn notification(request: &PushRequest<'_>) -> Result<Value, String> {
    let payload: Map<String, Value> = serde_json::from_slice(request.payload)
        .map_err(|_| "the push payload is not a JSON object".to_string())?;
    let (title, body) = crate::alert_text(&payload);
    let mut aps = json!({
        "alert": {"title": title, "body": body},
        "sound": "default",
        "thread-id": request.topic,
    });
    if let Some(badge) = payload.get("badge").and_then(Value::as_u64) {
        aps["badge"] = json!(badge);
    }
    Ok(json!({"aps": aps, "tidings": payload}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(outcome_of(200, None, ""), PushOutcome::Delivered);
        assert_eq!(outcome_of(410, None, "Unregistered"), PushOutcome::Gone);
        assert_eq!(outcome_of(400, None, "BadDeviceToken"), PushOutcome::Gone);
        assert_eq!(
            outcome_of(429, Some(2_000), "TooManyRequests"),
            PushOutcome::Retry {
                after_ms: Some(2_000)
            }
        );
        assert_eq!(
            outcome_of(503, None, "ServiceUnavailable"),
            PushOutcome::Retry { after_ms: None }
        );
        assert_eq!(
            outcome_of(403, None, "ExpiredProviderToken"),
            PushOutcome::Retry { after_ms: None }
        );
        assert!(matches!(
            outcome_of(400, None, "BadTopic"),
            PushOutcome::Failed(_)
        ));
    }
}
