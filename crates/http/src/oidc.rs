//! Sign-in with external OpenID Connect providers over HTTP: the list of providers, the two
//! ways to start a flow (signing in, by a browser navigation; linking, by a signed-in client),
//! the provider's callback, and the exchange of the one-time code the callback hands to the web
//! app for tokens. The protocol work is `tidings_oidc`'s; who may sign in or link is the core's.

use crate::AppState;
use crate::authorize::cookie_value;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed, ClientAddr};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tidings_core::sso::SsoIdentity;
use tidings_oidc::{OidcConfig, OidcError, Purpose, RelyingParty};
use tidings_proto::ErrorCode;
use tidings_proto::oauth::{OidcExchangeRequest, OidcLinkStart, OidcProvider, OidcProviderList};
use tidings_proto::rest::TokenResponse;

type ApiResult<T> = Result<T, ApiError>;

/// The cookie that binds a flow to the browser that started it: the callback's `state` must
/// equal it, so a callback URL planted in another browser (login CSRF) is refused.
const FLOW_COOKIE: &str = "tidings_oidc";
/// The path of the provider's callback; `<issuer>` + this is the redirect URI to register.
pub const CALLBACK_PATH: &str = "/oauth/oidc/callback";
/// How long the web app has to exchange its one-time code.
const HANDOFF_TTL: Duration = Duration::from_secs(60);
/// At most this many tokens wait for their exchange at once.
const MAX_HANDOFFS: usize = 10_000;

/// The relying party and the tokens waiting for the web app, shared by the handlers.
pub struct Oidc {
    rp: RelyingParty,
    handoffs: Mutex<HashMap<String, (TokenResponse, Instant)>>,
}

impl Oidc {
    /// `None` when no provider is configured. `issuer` is the server's public base URL.
    pub fn new(config: &OidcConfig, issuer: &str) -> Result<Option<Oidc>, OidcError> {
        if config.providers.is_empty() {
            return Ok(None);
        }
        let redirect_uri = format!("{}{CALLBACK_PATH}", issuer.trim_end_matches('/'));
        Ok(Some(Oidc {
            rp: RelyingParty::new(config, redirect_uri)?,
            handoffs: Mutex::new(HashMap::new()),
        }))
    }

    fn hand_off(&self, tokens: TokenResponse) -> Option<String> {
        let now = Instant::now();
        let mut handoffs = self.handoffs.lock().expect("handoff lock");
        handoffs.retain(|_, (_, at)| now.duration_since(*at) < HANDOFF_TTL);
        if handoffs.len() >= MAX_HANDOFFS {
            return None;
        }
        let code = tidings_oidc::random();
        handoffs.insert(code.clone(), (tokens, now));
        Some(code)
    }

    fn take(&self, code: &str) -> Option<TokenResponse> {
        let mut handoffs = self.handoffs.lock().expect("handoff lock");
        let (tokens, at) = handoffs.remove(code)?;
        (at.elapsed() < HANDOFF_TTL).then_some(tokens)
    }
}

fn oidc(state: &AppState) -> Result<&Oidc, ApiError> {
    state
        .oidc
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "single sign-on is not configured"))
}

fn start_error(e: OidcError) -> ApiError {
    match e {
        OidcError::UnknownProvider => ApiError::new(ErrorCode::NotFound, "unknown provider"),
        OidcError::TooManyPending => {
            ApiError::new(ErrorCode::Unavailable, "too many sign-ins in progress")
        }
        other => {
            tracing::warn!(error = %other, "Could not start a single sign-on flow.");
            ApiError::new(ErrorCode::Unavailable, "the provider cannot be reached")
        }
    }
}

fn flow_cookie(state: &AppState, value: &str, max_age: u32) -> HeaderValue {
    let secure = if state.core.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    // Lax, not Strict: the callback is a navigation from the provider's site.
    HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path={CALLBACK_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie is ASCII")
}

/// `GET /api/v1/oidc/providers`: the providers a sign-in page offers.
pub async fn providers(State(state): State<AppState>) -> Json<OidcProviderList> {
    let providers = state
        .oidc
        .as_deref()
        .map(|o| {
            o.rp.providers()
                .iter()
                .map(|p| OidcProvider {
                    id: p.id.clone(),
                    display_name: p.display_name.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Json(OidcProviderList { providers })
}

/// `GET /api/v1/oidc/providers/{provider}/start`: sends the browser to the provider to sign in.
pub async fn start(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(provider): Path<String>,
) -> ApiResult<Response> {
    state.core.sso_attempt(address)?;
    let started = oidc(&state)?
        .rp
        .start(&provider, Purpose::SignIn)
        .await
        .map_err(start_error)?;
    let location = HeaderValue::from_str(&started.authorize_url)
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the provider cannot be reached"))?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::SET_COOKIE, flow_cookie(&state, &started.state, 600));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /api/v1/oidc/providers/{provider}/link`: starts linking an identity of the provider to
/// the caller's account. The client sends the browser to the returned URL.
pub async fn link(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(provider): Path<String>,
) -> ApiResult<Response> {
    state.core.sso_attempt(address)?;
    let started = oidc(&state)?
        .rp
        .start(&provider, Purpose::Link(caller.user_id.0))
        .await
        .map_err(start_error)?;
    let mut response = Json(OidcLinkStart {
        authorize_url: started.authorize_url,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, flow_cookie(&state, &started.state, 600));
    Ok(response)
}

#[derive(Deserialize)]
pub struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of the answer, from providers that say it.
    iss: Option<String>,
}

/// Where the callback sends the browser: the web app, with the outcome in the URL fragment
/// (never sent to a server, so never in an access log). The flow cookie is cleared, except
/// after a state that does not match it: that request did not come from the flow, which may
/// still finish.
fn back_to_app(state: &AppState, fragment: &str) -> Response {
    let mut response = keep_cookie_back_to_app(fragment);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, flow_cookie(state, "", 0));
    response
}

fn keep_cookie_back_to_app(fragment: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/#{fragment}")).expect("fragment is ASCII"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /oauth/oidc/callback`: the provider's answer. Checks the state against the browser's
/// cookie, exchanges the code, validates the id_token, then signs in or links.
pub async fn callback(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Ok(oidc) = oidc(&state) else {
        return back_to_app(&state, "oidc_error=not_configured");
    };
    let cookie = cookie_value(&headers, FLOW_COOKIE).filter(|c| !c.is_empty());
    let flow_state = match (&params.state, &cookie) {
        (Some(s), Some(c)) if s == c => s.clone(),
        _ => {
            state
                .core
                .sso_refused(None, "state_mismatch", address)
                .await;
            return keep_cookie_back_to_app("oidc_error=invalid_state");
        }
    };
    if params.error.is_some() {
        return back_to_app(&state, "oidc_error=cancelled");
    }
    let Some(code) = params.code else {
        return back_to_app(&state, "oidc_error=invalid_request");
    };
    let finished = match oidc
        .rp
        .finish(&flow_state, &code, params.iss.as_deref())
        .await
    {
        Ok(finished) => finished,
        Err(e) => {
            tracing::warn!(error = %e, "Single sign-on refused.");
            let reason = match e {
                OidcError::UnknownState => "unknown_state",
                OidcError::InvalidIdToken(_) => "invalid_id_token",
                OidcError::Provider(_) => "provider_error",
                _ => "provider_unreachable",
            };
            state.core.sso_refused(None, reason, address).await;
            return back_to_app(&state, "oidc_error=refused");
        }
    };
    let identity = SsoIdentity {
        provider: finished.provider.id.clone(),
        allow_create: finished.provider.allow_create,
        issuer: finished.identity.issuer,
        subject: finished.identity.subject,
        preferred_username: finished.identity.preferred_username,
    };
    let outcome = match finished.purpose {
        Purpose::SignIn => match state.core.sso_sign_in(identity, address).await {
            Ok(tokens) => match oidc.hand_off(tokens) {
                Some(code) => return back_to_app(&state, &format!("oidc_code={code}")),
                None => return back_to_app(&state, "oidc_error=busy"),
            },
            Err(e) => e,
        },
        Purpose::Link(user) => {
            let provider = identity.provider.clone();
            match state
                .core
                .sso_link(tidings_proto::UserId(user), identity, address)
                .await
            {
                Ok(()) => return back_to_app(&state, &format!("oidc_linked={provider}")),
                Err(e) => e,
            }
        }
    };
    let reason = match outcome.code {
        ErrorCode::InvalidCredentials => "unlinked",
        ErrorCode::Conflict => "conflict",
        ErrorCode::Forbidden => "suspended",
        _ => "failed",
    };
    back_to_app(&state, &format!("oidc_error={reason}"))
}

/// `POST /api/v1/oidc/exchange`: the tokens of a finished sign-in, once, for its one-time code.
pub async fn exchange(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OidcExchangeRequest>,
) -> ApiResult<Json<TokenResponse>> {
    oidc(&state)?
        .take(&req.code)
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidCredentials, "unknown or expired code"))
}
