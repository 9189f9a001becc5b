//! Extractors whose failures are problem documents: bearer authentication and JSON bodies;
//! and the client's network address.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tidings_core::Caller;
use tidings_proto::ErrorCode;

/// The caller authenticated by `Authorization: Bearer <access token>`.
pub struct Authed(pub Caller);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing bearer token"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "expected a bearer token"))?;
        let caller = state.core.authenticate(token.trim()).await?;
        // Every authenticated route needs a scope (core::policy::rest_scope); a route missing
        // from that table is refused rather than left open.
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str())
            .unwrap_or_default();
        let need =
            tidings_core::policy::rest_scope(parts.method.as_str(), route).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InsufficientScope,
                    "this endpoint is not open to access tokens",
                )
            })?;
        tidings_core::policy::decide_scope(caller.scopes, need)?;
        Ok(Authed(caller))
    }
}

/// A JSON body; malformed, mistyped or oversized bodies become problem documents.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::MalformedRequest
                };
                Err(ApiError::new(code, rejection.body_text()))
            }
        }
    }
}

/// The client's IP address, when the server was started with connection info (it always is by
/// [`crate::serve`]; a router driven another way, say in a unit test, has none). Behind a
/// trusted proxy it is the address the proxy layer resolved from `X-Forwarded-For`.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(resolved) = parts.extensions.get::<crate::proxy::ResolvedClient>() {
            return Ok(ClientAddr(Some(resolved.0)));
        }
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}
