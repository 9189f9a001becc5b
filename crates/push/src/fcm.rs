//! Firebase Cloud Messaging, HTTP v1 API: a service account's RS256-signed JWT is exchanged for
//! an OAuth access token at the account's `token_uri` (cached until shortly before it expires),
//! and each push is a POST to `/v1/projects/{project}/messages:send`.
//!
//! The service-account JSON file comes from the Firebase console; the operator names it in
//! `push.fcm_service_account`. Its RSA key signs with aws-lc-rs.

use crate::jwt::{self, CredentialError};
use crate::webpush::retry_after;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tidings_core::push::{PushOutcome, PushRequest, Urgency};
use tokio::sync::Mutex;

/// The OAuth scope that may send FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long an assertion is valid (Google accepts at most one hour).
const ASSERTION_SECS: i64 = 3600;
/// A cached access token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The fields of a service-account file this provider uses.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    private_key_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

struct AccessToken {
    value: String,
    renew_at: Instant,
}

/// Sends pushes through FCM for one Firebase project.
pub struct FcmPusher {
    client: reqwest::Client,
    key: RsaKeyPair,
    key_id: String,
    client_email: String,
    token_uri: String,
    send_url: String,
    /// Held across a renewal, so concurrent pushes wait for one token request.
    token: Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for FcmPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the token.
        f.debug_struct("FcmPusher")
            .field("client_email", &self.client_email)
            .field("send_url", &self.send_url)
            .finish()
    }
}

impl FcmPusher {
    /// Loads the service-account file. `base_url` is the FCM API's origin
    /// (`https://fcm.googleapis.com`).
    pub fn from_file(
        path: &Path,
        base_url: &str,
        client: reqwest::Client,
    ) -> Result<FcmPusher, CredentialError> {
        let account: ServiceAccount = serde_json::from_str(&jwt::read_file(path)?)
            .map_err(|_| CredentialError::Invalid("the FCM service-account file is not valid"))?;
        let der = jwt::pem_der(&account.private_key, "PRIVATE KEY").ok_or(
            CredentialError::Invalid("the service account's private_key is not a PKCS#8 PEM key"),
        )?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| CredentialError::Invalid("the service account's key is not an RSA key"))?;
        Ok(FcmPusher {
            client,
            key,
            key_id: account.private_key_id,
            client_email: account.client_email,
            token_uri: account.token_uri,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                base_url.trim_end_matches('/'),
                account.project_id
            ),
            token: Mutex::new(None),
        })
    }

    /// The signed JWT assertion for the token request (RFC 7523), valid from `now`.
    pub fn assertion(&self, now: i64) -> Result<String, CredentialError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        let input = jwt::signing_input(&header, &claims);
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| CredentialError::Invalid("signing the FCM assertion failed"))?;
        Ok(jwt::assemble(input, &signature))
    }

    /// A valid access token: the cached one, or a new one from the token endpoint. `Err` is
    /// the outcome to report (the token endpoint failed).
    async fn access_token(&self) -> Result<String, PushOutcome> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let assertion = self
            .assertion(jwt::now_secs())
            .map_err(|e| PushOutcome::Failed(e.to_string()))?;
        let response = self
            .client
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(%e, "The FCM token endpoint could not be reached.");
                PushOutcome::Retry { after_ms: None }
            })?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            tracing::warn!(
                status,
                "The FCM token endpoint refused the service account."
            );
            let after = retry_after(response.headers());
            return Err(jwt::retry_or(
                status,
                after,
                // A refused account will not be accepted on a retry either.
                PushOutcome::Failed(format!("the FCM token endpoint answered {status}")),
            ));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: u64,
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|_| PushOutcome::Retry { after_ms: None })?;
        let lifetime = Duration::from_secs(token.expires_in);
        *cached = Some(AccessToken {
            value: token.access_token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        });
        Ok(token.access_token)
    }

    pub(crate) async fn push(&self, token: &str, request: &PushRequest<'_>) -> PushOutcome {
        let body = match message(token, request) {
            Ok(body) => body,
            Err(reason) => return PushOutcome::Failed(reason),
        };
        let access = match self.access_token().await {
            Ok(access) => access,
            Err(outcome) => return outcome,
        };
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(%e, "FCM could not be reached.");
                return PushOutcome::Retry { after_ms: None };
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let error: Value = if response.status().is_success() {
            Value::Null
        } else {
            response.json().await.unwrap_or(Value::Null)
        };
        if status == 401 {
            // The access token was revoked or expired early: drop it, get a new one next time.
            *self.token.lock().await = None;
        }
        outcome_of(status, after, &error)
    }
}

/// What an FCM answer means. `error` is the body of a failed request
/// (`{"error": {"status": ..., "details": [{"errorCode": ...}]}}`).
pub fn outcome_of(status: u16, retry_after_ms: Option<u64>, error: &Value) -> PushOutcome {
    let code = error["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .unwrap_or("");
    match (status, code) {
        (200..=299, _) => PushOutcome::Delivered,
        (404, _) | (_, "UNREGISTERED") => PushOutcome::Gone,
        (401, _) => PushOutcome::Retry { after_ms: None },
        _ => jwt::retry_or(
            status,
            retry_after_ms,
            PushOutcome::Failed(format!("FCM answered {status} {code}")),
        ),
    }
}

/// The `messages:send` body for one push: the payload's fields as `data` (FCM wants strings),
/// a notification built only from what the payload holds (so privacy mode and encrypted
/// messages show no more than on the web), and the collapse key and badge for Android.
pub fn message(token: &str, request: &PushRequest<'_>) -> Result<Value, String> {
    let payload: Map<String, Value> = serde_json::from_slice(request.payload)
        .map_err(|_| "the push payload is not a JSON object".to_string())?;
    let data: Map<String, Value> = payload
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(text))
        })
        .collect();
    let (title, body) = crate::alert_text(&payload);
    let mut notification = json!({"tag": request.topic});
    if let Some(badge) = payload.get("badge").and_then(Value::as_u64) {
        notification["notification_count"] = json!(badge);
    }
    Ok(json!({
        "message": {
            "token": token,
            "data": data,
            "notification": {"title": title, "body": body},
            "android": {
                "collapse_key": request.topic,
                "priority": match request.urgency {
                    Urgency::High => "HIGH",
                    Urgency::Normal => "NORMAL",
                },
                "ttl": format!("{}s", request.ttl_secs),
                "notification": notification,
            },
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let unregistered = json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
             "errorCode": "UNREGISTERED"}]}});
        assert_eq!(outcome_of(200, None, &Value::Null), PushOutcome::Delivered);
        assert_eq!(outcome_of(404, None, &unregistered), PushOutcome::Gone);
        let mut as_400 = unregistered.clone();
        as_400["error"]["code"] = json!(400);
        assert_eq!(outcome_of(400, None, &as_400), PushOutcome::Gone);
        assert_eq!(
            outcome_of(429, Some(3_000), &Value::Null),
            PushOutcome::Retry {
                after_ms: Some(3_000)
            }
        );
        assert_eq!(
            outcome_of(503, None, &Value::Null),
            PushOutcome::Retry { after_ms: None }
        );
        assert!(matches!(
            outcome_of(400, None, &json!({"error": {"status": "INVALID_ARGUMENT"}})),
            PushOutcome::Failed(_)
        ));
    }
}
