//! OAuth 2.0 endpoints: token (RFC 6749), device authorization (RFC 8628), revocation
//! (RFC 7009), introspection (RFC 7662), metadata (RFC 8414), JWKS. The authorization page and
//! the device verification page are in `authorize`.

use crate::AppState;
use crate::extract::ClientAddr;
use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidings_core::CoreError;
use tidings_core::accounts::PasswordGrant;
use tidings_core::oauth::{ClientAuth, DEVICE_CODE_GRANT, GrantError};
use tidings_proto::ErrorCode;
use tidings_proto::rest::OAuthError;

/// The fields of a token request; which are required depends on `grant_type`.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// What a bot client asks for (client credentials grant). Other grants ignore it:
    /// first-party tokens carry the account's full scope and registered clients the scope the
    /// user consented to.
    scope: Option<String>,
    /// A registered client's id (`client_secret_post`, or a public client), unless it uses
    /// HTTP Basic authentication.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// The authorization code grant's fields.
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    /// The device code grant's field (RFC 8628 section 3.4).
    device_code: Option<String>,
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
        // RFC 6749 section 5.2: a failed client authentication is 401 `invalid_client`.
        ErrorCode::Unauthenticated => {
            let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", err.message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tidings\""),
            );
            response
        }
        ErrorCode::InsufficientScope => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", err.message)
        }
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

/// The client credentials of a request: HTTP Basic (`client_secret_basic`, with the id and
/// secret form-urlencoded first as RFC 6749 section 2.3.1 says) or the form's `client_id` and
/// `client_secret`. `Err` when the Authorization header is malformed or both ways are used.
fn client_auth(
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Option<ClientAuth>, CoreError> {
    use base64::Engine;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let Some(basic) = basic else {
        return Ok(client_id.map(|client_id| ClientAuth {
            client_id,
            client_secret,
        }));
    };
    let bad = || CoreError::unauthenticated("malformed HTTP Basic client credentials");
    if client_secret.is_some() {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
    };
    let (id, secret) = (
        unescape(id).ok_or_else(bad)?,
        unescape(secret).ok_or_else(bad)?,
    );
    if client_id.is_some_and(|form_id| form_id != id) {
        return Err(bad());
    }
    Ok(Some(ClientAuth {
        client_id: id,
        client_secret: Some(secret),
    }))
}

pub async fn token(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Ok(Form(mut req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    let client = match client_auth(&headers, req.client_id.take(), req.client_secret.take()) {
        Ok(client) => client,
        Err(e) => return grant_error(e),
    };
    let result = match req.grant_type.as_deref() {
        Some("authorization_code") => {
            let (Some(code), Some(client)) = (req.code, client) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the authorization_code grant needs code and the client's credentials",
                );
            };
            state
                .core
                .authorization_code_grant(
                    client,
                    &code,
                    req.redirect_uri.as_deref(),
                    req.code_verifier.as_deref(),
                    address,
                )
                .await
        }
        Some("password") => {
            let (Some(username), Some(password)) = (req.username, req.password) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the password grant needs username and password",
                );
            };
            match state
                .core
                .password_grant(&username, password, req.device_name, address)
                .await
            {
                Ok(PasswordGrant::Tokens(tokens)) => Ok(tokens),
                // The password was right; the client completes the sign-in with a code at
                // `/api/v1/sign-in/second-factor` (docs/accounts.md).
                Ok(PasswordGrant::SecondFactor(challenge)) => {
                    return no_store((StatusCode::UNAUTHORIZED, Json(challenge)).into_response());
                }
                Err(e) => Err(e),
            }
        }
        Some("client_credentials") => {
            let Some(client) = client else {
                return grant_error(CoreError::unauthenticated(
                    "the client_credentials grant needs the client's credentials",
                ));
            };
            let result = state
                .core
                .client_credentials_grant(client, req.scope.as_deref())
                .await;
            return refusable(result);
        }
        Some(DEVICE_CODE_GRANT) => {
            let (Some(device_code), Some(client)) = (req.device_code, client) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the device_code grant needs device_code and the client's id",
                );
            };
            let result = state
                .core
                .device_code_grant(client, &device_code, address)
                .await;
            return refusable(result);
        }
        Some("refresh_token") => {
            let Some(refresh) = req.refresh_token else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the refresh_token grant needs refresh_token",
                );
            };
            state.core.refresh_grant_as(&refresh, client, address).await
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

/// A grant answer that may be a protocol-specific refusal (RFC 6749 section 5.2, RFC 8628
/// section 3.5): all are `400` with the `error` the standard names.
fn refusable<T: serde::Serialize>(result: Result<T, GrantError>) -> Response {
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(GrantError::Refused(refusal)) => oauth_error(
            StatusCode::BAD_REQUEST,
            refusal.code(),
            refusal.description(),
        ),
        Err(GrantError::Core(e)) => grant_error(e),
    }
}

#[derive(Deserialize)]
pub struct DeviceAuthorizationRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

/// RFC 8628 section 3.1: a device (a terminal client, a television) asks for a device code
/// and a user code. Public clients send only `client_id`; confidential ones authenticate as at
/// the token endpoint.
pub async fn device_authorization(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<DeviceAuthorizationRequest>, FormRejection>,
) -> Response {
    let Ok(Form(req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    let client = match client_auth(&headers, req.client_id, req.client_secret) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return grant_error(CoreError::unauthenticated("client_id is required"));
        }
        Err(e) => return grant_error(e),
    };
    let result = state
        .core
        .device_authorization(&client, req.scope.as_deref(), address)
        .await;
    refusable(result)
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

#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7662 token introspection, for registered clients (authenticated like at the token
/// endpoint).
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<IntrospectRequest>, FormRejection>,
) -> Response {
    let Ok(Form(req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    let client = match client_auth(&headers, req.client_id, req.client_secret) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return grant_error(CoreError::unauthenticated(
                "client authentication is required",
            ));
        }
        Err(e) => return grant_error(e),
    };
    let Some(token) = req.token else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    match state.core.introspect(&client, &token).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => grant_error(e),
    }
}

/// RFC 8414 authorization server metadata.
pub async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let issuer = state.core.issuer().trim_end_matches('/').to_string();
    Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "device_authorization_endpoint": format!("{issuer}/oauth/device_authorization"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            DEVICE_CODE_GRANT,
            "password",
            "refresh_token",
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": tidings_core::policy::SCOPES,
        "service_documentation": format!("{issuer}/api/openapi.json"),
    }))
}

pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.core.keys().jwks())
}
