//! Delivery to Web Push services (RFC 8030): encrypt, sign, POST, and read the answer.

use crate::ece;
use crate::vapid::VapidKey;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidings_core::push::{PushOutcome, PushRequest, Pusher, Urgency};
use tidings_proto::push::PushSubscription;

/// Sends Web Push messages with one VAPID key.
pub struct WebPusher {
    client: reqwest::Client,
    vapid: VapidKey,
    subject: String,
}

impl WebPusher {
    /// `subject` is the VAPID `sub` claim (`mailto:` or `https:`).
    pub fn new(vapid: VapidKey, subject: String) -> Result<WebPusher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            // A push service that redirects is misconfigured; following would resend the payload.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebPusher {
            client,
            vapid,
            subject,
        })
    }

    async fn web_push(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        request: &PushRequest<'_>,
    ) -> PushOutcome {
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            return PushOutcome::Failed("the endpoint is not a URL".into());
        };
        let (Ok(p256dh), Ok(auth)) = (decode(p256dh), decode(auth)) else {
            return PushOutcome::Failed("p256dh or auth is not base64url".into());
        };
        let body = match ece::encrypt(request.payload, &p256dh, &auth) {
            Ok(body) => body,
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let audience = url.origin().ascii_serialization();
        let authorization = match self.vapid.authorization(&audience, &self.subject, now) {
            Ok(value) => value,
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        let urgency = match request.urgency {
            Urgency::Normal => "normal",
            Urgency::High => "high",
        };
        let response = self
            .client
            .post(url)
            .header("TTL", request.ttl_secs.to_string())
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Urgency", urgency)
            .header("Topic", request.topic)
            .header("Authorization", authorization)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => outcome_of(response.status(), retry_after(response.headers())),
            // Unreachable or cut off: the push service may be back later.
            Err(e) => {
                tracing::debug!(%e, "A push service could not be reached.");
                PushOutcome::Retry { after_ms: None }
            }
        }
    }
}

fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // Browsers give unpadded base64url; some libraries pad it.
    B64.decode(text.trim_end_matches('='))
}

/// What a push service's status means (RFC 8030 section 5, and RFC 6585 for 429).
pub fn outcome_of(status: StatusCode, retry_after_ms: Option<u64>) -> PushOutcome {
    match status.as_u16() {
        200..=299 => PushOutcome::Delivered,
        404 | 410 => PushOutcome::Gone,
        429 | 500..=599 => PushOutcome::Retry {
            after_ms: retry_after_ms,
        },
        other => PushOutcome::Failed(format!("the push service answered {other}")),
    }
}

/// `Retry-After` as seconds or an HTTP date, in milliseconds from now.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .map_or(0, |d| d.as_millis() as u64),
    )
}

#[async_trait]
impl Pusher for WebPusher {
    fn vapid_public_key(&self) -> Option<String> {
        Some(self.vapid.public_key())
    }

    async fn push(&self, request: PushRequest<'_>) -> PushOutcome {
        match request.subscription {
            PushSubscription::WebPush {
                endpoint,
                p256dh,
                auth,
            } => self.web_push(endpoint, p256dh, auth, &request).await,
            PushSubscription::Fcm { .. } | PushSubscription::Apns { .. } => {
                PushOutcome::Failed("this provider is not configured".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn statuses_map_to_outcomes() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(outcome_of(s(201), None), PushOutcome::Delivered);
        assert_eq!(outcome_of(s(404), None), PushOutcome::Gone);
        assert_eq!(outcome_of(s(410), None), PushOutcome::Gone);
        assert_eq!(
            outcome_of(s(429), Some(5)),
            PushOutcome::Retry { after_ms: Some(5) }
        );
        assert_eq!(
            outcome_of(s(503), None),
            PushOutcome::Retry { after_ms: None }
        );
        assert!(matches!(outcome_of(s(413), None), PushOutcome::Failed(_)));
        assert!(matches!(outcome_of(s(403), None), PushOutcome::Failed(_)));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(7_000));
        let later = SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let ms = retry_after(&headers).unwrap();
        assert!((110_000..=120_000).contains(&ms), "{ms}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
