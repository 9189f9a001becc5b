//! Push providers behind the core's [`Pusher`](tidings_core::push::Pusher) trait.
//!
//! # Layout
//! - `ece`: RFC 8291 message encryption (`aes128gcm`).
//! - `vapid`: the VAPID key (RFC 8292), made on first start and kept 0600 in the data
//!   directory, and the ES256 JWT that authenticates each request.
//! - `webpush`: delivery to Web Push services (RFC 8030) and what their answers mean.
//! - `fcm`: Firebase Cloud Messaging HTTP v1 (service-account OAuth, RS256 assertions).
//! - `apns`: Apple Push Notification service over HTTP/2 with ES256 provider tokens.
//! - `jwt`: what FCM and APNs share (PEM keys, JWT assembly, retryable statuses).
//!
//! [`Providers`] holds one of each that is configured and hands each push to the one its
//! subscription names. All cryptography is aws-lc-rs, the provider rustls already uses; HTTP
//! is reqwest.

pub mod apns;
pub mod ece;
pub mod fcm;
pub mod jwt;
pub mod vapid;
pub mod webpush;

pub use apns::ApnsPusher;
pub use fcm::FcmPusher;
pub use jwt::CredentialError;
pub use vapid::VapidKey;
pub use webpush::WebPusher;

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;
use tidings_core::push::{PushOutcome, PushRequest, Pusher};
use tidings_proto::push::PushSubscription;

/// Every configured provider; a push goes to the one its subscription names.
pub struct Providers {
    pub web: WebPusher,
    pub fcm: Option<FcmPusher>,
    pub apns: Option<ApnsPusher>,
}

#[async_trait]
impl Pusher for Providers {
    fn vapid_public_key(&self) -> Option<String> {
        self.web.vapid_public_key()
    }

    async fn push(&self, request: PushRequest<'_>) -> PushOutcome {
        match request.subscription {
            PushSubscription::WebPush { .. } => self.web.push(request).await,
            PushSubscription::Fcm { token } => match &self.fcm {
                Some(fcm) => fcm.push(token, &request).await,
                None => PushOutcome::Failed("FCM is not configured".into()),
            },
            PushSubscription::Apns { token } => match &self.apns {
                Some(apns) => apns.push(token, &request).await,
                None => PushOutcome::Failed("APNs is not configured".into()),
            },
        }
    }
}

/// An HTTP client for a provider: rustls on aws-lc-rs with the system's roots plus the
/// certificates in `extra_roots` (PEM), HTTP/2 only when `http2_only` (APNs accepts nothing
/// else), no redirects (a provider that redirects is misconfigured; following would resend).
pub fn provider_client(
    extra_roots: Option<&[u8]>,
    http2_only: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_roots {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    builder.build()
}

/// The title and body a native notification shows, from the payload alone: what privacy
/// mode or encryption left out of the payload cannot appear here either.
pub fn alert_text(payload: &Map<String, Value>) -> (String, String) {
    let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
    let (sender, title, preview) = (text("sender"), text("title"), text("preview"));
    let count = payload.get("count").and_then(Value::as_u64).unwrap_or(1);
    match payload.get("kind").and_then(Value::as_str) {
        Some("friend_request") => (
            "Friend request".into(),
            sender.map_or("New friend request".into(), |s| {
                format!("{s} wants to be your friend")
            }),
        ),
        Some("call") => (
            "Incoming call".into(),
            sender.unwrap_or_else(|| "Someone is calling".into()),
        ),
        _ => {
            let heading = match (sender, title) {
                (Some(s), Some(t)) => format!("{s} in {t}"),
                (Some(s), None) => s,
                (None, _) => "Tidings".into(),
            };
            let body = match (preview, count) {
                (Some(p), _) => p,
                (None, 1) => "New message".into(),
                (None, n) => format!("{n} new messages"),
            };
            (heading, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(payload: Value) -> (String, String) {
        alert_text(payload.as_object().unwrap())
    }

    #[test]
    fn alerts_show_only_what_the_payload_holds() {
        assert_eq!(
            alert(json!({"kind": "message", "sender": "Alice", "preview": "lunch?", "count": 1})),
            ("Alice".into(), "lunch?".into())
        );
        assert_eq!(
            alert(
                json!({"kind": "mention", "sender": "Alice", "title": "Plans",
                         "preview": "@bob", "count": 2})
            ),
            ("Alice in Plans".into(), "@bob".into())
        );
        // Privacy mode: no sender, title or preview in the payload, none in the alert.
        assert_eq!(
            alert(json!({"kind": "message", "count": 3})),
            ("Tidings".into(), "3 new messages".into())
        );
        assert_eq!(
            alert(json!({"kind": "friend_request"})),
            ("Friend request".into(), "New friend request".into())
        );
    }
}
