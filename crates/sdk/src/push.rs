//! Push notifications: the VAPID key, this device's subscription, notification settings, and
//! telling the server whether the app is in the foreground.

use crate::connection::Connection;
use crate::rest::AuthedClient;
use crate::{SdkError, SdkResult};
use reqwest::Method;
use tidings_proto::DeviceId;
use tidings_proto::push::{PushSettings, PushSubscription, PushSubscriptionList, VapidKey};
use tidings_proto::ws::{ClientFrame, ServerFrame};

impl AuthedClient {
    /// The server's VAPID public key (base64url), the `applicationServerKey` to subscribe with.
    pub async fn vapid_key(&self) -> SdkResult<String> {
        Ok(self.get::<VapidKey>("/api/v1/push/vapid").await?.public_key)
    }

    /// Registers this device's subscription, replacing any it had.
    pub async fn set_push_subscription(&self, subscription: &PushSubscription) -> SdkResult<()> {
        self.json_empty(Method::PUT, "/api/v1/push/subscription", subscription)
            .await
    }

    pub async fn delete_push_subscription(&self) -> SdkResult<()> {
        self.delete("/api/v1/push/subscription").await
    }

    /// Deletes the subscription of another device of the caller.
    pub async fn delete_device_push_subscription(&self, device: DeviceId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/push/subscriptions/{device}"))
            .await
    }

    pub async fn push_subscriptions(&self) -> SdkResult<PushSubscriptionList> {
        self.get("/api/v1/push/subscriptions").await
    }

    pub async fn push_settings(&self) -> SdkResult<PushSettings> {
        self.get("/api/v1/push/settings").await
    }

    pub async fn set_push_settings(&self, settings: &PushSettings) -> SdkResult<PushSettings> {
        self.json(Method::PUT, "/api/v1/push/settings", settings)
            .await
    }
}

impl Connection {
    /// Tells the server the app is in the foreground (`true`) or the background (`false`);
    /// in the background this device gets push notifications although connected.
    pub async fn set_activity(&self, active: bool) -> SdkResult<()> {
        match self
            .request(|id| ClientFrame::SetActivity {
                id: Some(id),
                active,
            })
            .await?
        {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }
}
