//! REST endpoints of push notifications: the VAPID key, the caller's device subscriptions and
//! the caller's notification settings. The rules live in `tidings_core::push`.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tidings_proto::DeviceId;
use tidings_proto::push::{PushSettings, PushSubscription, PushSubscriptionList, VapidKey};

type ApiResult<T> = Result<T, ApiError>;

pub async fn vapid_key(State(state): State<AppState>) -> ApiResult<Json<VapidKey>> {
    Ok(Json(VapidKey {
        public_key: state.core.vapid_public_key()?,
    }))
}

pub async fn subscriptions(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<PushSubscriptionList>> {
    Ok(Json(PushSubscriptionList {
        subscriptions: state.core.push_subscriptions(&caller).await?,
    }))
}

pub async fn subscribe(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(subscription): ApiJson<PushSubscription>,
) -> ApiResult<StatusCode> {
    state
        .core
        .set_push_subscription(&caller, subscription)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unsubscribe(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<StatusCode> {
    state
        .core
        .delete_push_subscription(&caller, caller.device_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unsubscribe_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(device_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .delete_push_subscription(&caller, DeviceId(device_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn settings(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<PushSettings>> {
    Ok(Json(state.core.push_settings(&caller).await?))
}

pub async fn set_settings(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(settings): ApiJson<PushSettings>,
) -> ApiResult<Json<PushSettings>> {
    Ok(Json(state.core.set_push_settings(&caller, settings).await?))
}
