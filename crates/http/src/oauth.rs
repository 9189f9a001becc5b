//! OAuth 2.0 endpoints: token (RFC 6749), revocation (RFC 7009), metadata (RFC 8414), JWKS.

use crate::AppState;
use crate::extract::ClientAddr;
use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidings_core::CoreError;
use tidings_proto::ErrorCode;
use tidings_proto::rest::OAuthError;

/// The fields of a token request; which are required depends on `grant_type`.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// Accepted for compatibility; first-party tokens always carry the default scope.
    #[allow(dead_code)]
    scope: Option<String>,
    /// Accepted for compatibility; clients are not registered yet.
    #[allow(dead_code)]
    client_id: Option<String>,
    /// A Tidings extension: the name shown in the device list.
    device_name: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let body = OAuthError {
        error: error.into(),
        error_description: Some(description.into()),
    };
    no_store((status, Json(body)).into_response())
}

/// RFC 6749 section 5.1: token responses must not be cached.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn grant_error(err: CoreError) -> Response {
    match err.code {
        // A suspended account is an invalid grant too (RFC 6749 section 5.2); the description
        // says why.
        ErrorCode::InvalidCredentials | ErrorCode::NotFound | ErrorCode::Forbidden => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", err.message)
        }
        ErrorCode::InvalidField | ErrorCode::MalformedRequest => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", err.message)
        }
        _ => crate::ApiError(err).into_response(),
    }
}

pub async fn token(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Ok(Form(req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    let result = match req.grant_type.as_deref() {
        Some("password") => {
            let (Some(username), Some(password)) = (req.username, req.password) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the password grant needs username and password",
                );
            };
            state
                .core
                .password_grant(&username, password, req.device_name, address)
                .await
        }
        Some("refresh_token") => {
            let Some(refresh) = req.refresh_token else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the refresh_token grant needs refresh_token",
                );
            };
            state.core.refresh_grant(&refresh, address).await
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant type `{other}` is not supported"),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
    };
    match result {
        Ok(tokens) => no_store(Json(tokens).into_response()),
        Err(e) => grant_error(e),
    }
}

#[derive(Deserialize)]
pub struct RevokeRequest {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// RFC 7009: answers 200 whether or not the token was known.
pub async fn revoke(
    State(state): State<AppState>,
    form: Result<Form<RevokeRequest>, FormRejection>,
) -> Response {
    let Ok(Form(RevokeRequest {
        token: Some(token), ..
    })) = form
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    match state.core.revoke_token(&token).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => crate::ApiError(e).into_response(),
    }
}

/// RFC 8414 authorization server metadata.
pub async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let issuer = state.core.issuer().trim_end_matches('/').to_string();
    Json(serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": tidings_core::accounts::DEFAULT_SCOPE.split(' ').collect::<Vec<_>>(),
    }))
}

pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.core.keys().jwks())
}
