//! The HTTP transport: it translates HTTP and WebSocket traffic into core calls and holds no
//! business rules.
//!
//! # Layout
//! - [`router`] builds the axum router; [`serve`] runs it on a bound listener until a shutdown
//!   future resolves (tests bind `127.0.0.1:0`).
//! - `error`: [`ApiError`], the one error type handlers return, rendered as RFC 9457 problem+json.
//! - `extract`: the bearer-token extractor and a JSON extractor whose rejections are problems.
//! - `rest`: REST handlers; `oauth`: the token, device authorization, revocation,
//!   introspection and metadata endpoints; `authorize`: the sign-in and consent pages of the
//!   authorization code grant and the device authorization grant.
//! - `files`: tus uploads and file downloads, streamed both ways.
//! - `ws`: the WebSocket endpoint driving a [`tidings_core::session::Session`].
//! - `openapi`: the OpenAPI 3.1 document, assembled from the protocol crate's schemas.
//! - `security`: security headers on every response (CSP, HSTS under TLS) and CORS, closed
//!   unless `[http] cors_origins` names origins; [`finish`] wraps a finished router in it and
//!   in the request metrics.
//! - `proxy`: the client's address from `X-Forwarded-For`, believed only from
//!   `[http] trusted_proxies` ([`TrustedProxies`]).
//! - `admin`: the admin listener's router (`/metrics`, `/healthz`, `/readyz`).
//! - `tls`: [`TlsListener`], HTTPS and WSS on the main listener ([`serve_tls`]).
//! - `web`: the embedded web client (`web/dist`, compiled in by `build.rs`) at `/` and as the
//!   fallback for client-side routes outside the server's own paths.

mod admin;
mod authorize;
mod error;
mod extract;
mod files;
mod oauth;
pub mod oidc;
mod openapi;
mod proxy;
mod push;
mod rest;
mod security;
mod tls;
mod unread;
mod web;
mod ws;

pub use admin::admin_router;
pub use error::ApiError;
pub use openapi::openapi_document;
pub use proxy::TrustedProxies;
pub use security::{Security, content_security_policy};
pub use tls::TlsListener;
pub use web::embedded as web_client_embedded;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::future::Future;
use tidings_core::Core;
use tokio::net::TcpListener;

/// Settings of the HTTP and WebSocket listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest REST request body in bytes.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame the server answers with a `too_large` error while keeping the
    /// connection; frames beyond four times this close the connection (code 1009).
    pub ws_max_frame_bytes: usize,
    /// Read buffer per WebSocket connection in bytes; the main memory cost of an idle connection
    /// (it is allocated whole for every connection). Larger frames are still read, in several
    /// reads.
    pub ws_read_buffer_bytes: usize,
    /// Seconds between server pings on a quiet connection; a connection silent for three
    /// intervals is closed.
    pub ws_ping_interval_secs: u64,
    /// Origins (e.g. "https://chat.example.com") whose web pages may call the API from a
    /// browser (CORS). Empty, the default, allows none but the server's own; "*" allows any.
    pub cors_origins: Vec<String>,
    /// Addresses or CIDR ranges of reverse proxies and load balancers in front of the server
    /// (e.g. "10.0.0.0/8"). From these peers only, the client address is read from
    /// `X-Forwarded-For` (for per-address limits and the audit log). Empty, the default, trusts
    /// no header.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            ws_max_frame_bytes: 256 * 1024,
            ws_read_buffer_bytes: 2048,
            ws_ping_interval_secs: 30,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    pub config: HttpConfig,
    /// Uploads and file storage.
    pub files: tidings_files::Files,
    /// Sign-in with external OpenID Connect providers; `None` when none is configured.
    pub oidc: Option<std::sync::Arc<oidc::Oidc>>,
}

/// Builds the router for every endpoint.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/", get(web::index))
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/api/openapi.json", get(openapi::serve))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route(
            "/oauth/device_authorization",
            post(oauth::device_authorization),
        )
        .route(
            "/oauth/device",
            get(authorize::device_show).post(authorize::device_submit),
        )
        .route(
            "/oauth/authorize",
            get(authorize::show).post(authorize::submit),
        )
        .route("/oauth/style.css", get(authorize::stylesheet))
        .route(
            "/api/v1/admin/oauth-clients",
            get(rest::admin_oauth_clients).post(rest::admin_add_oauth_client),
        )
        .route(
            "/api/v1/admin/oauth-clients/{client_id}",
            delete(rest::admin_remove_oauth_client),
        )
        .route("/api/v1/oidc/providers", get(oidc::providers))
        .route("/api/v1/oidc/providers/{provider}/start", get(oidc::start))
        .route("/api/v1/oidc/providers/{provider}/link", post(oidc::link))
        .route("/api/v1/oidc/exchange", post(oidc::exchange))
        .route(oidc::CALLBACK_PATH, get(oidc::callback))
        .route("/api/v1/accounts", post(rest::register))
        .route(
            "/api/v1/account",
            get(rest::me).delete(rest::delete_account),
        )
        .route(
            "/api/v1/account/two-factor",
            get(rest::two_factor_status).post(rest::begin_two_factor),
        )
        .route(
            "/api/v1/account/two-factor/confirm",
            post(rest::confirm_two_factor),
        )
        .route(
            "/api/v1/account/two-factor/recovery-codes",
            post(rest::regenerate_recovery_codes),
        )
        .route(
            "/api/v1/account/two-factor/disable",
            post(rest::disable_two_factor),
        )
        .route("/api/v1/account/export", get(rest::export_account))
        .route(
            "/api/v1/sign-in/second-factor",
            post(rest::second_factor_sign_in),
        )
        .route("/api/v1/account/password", post(rest::change_password))
        .route(
            "/api/v1/profile",
            get(rest::my_profile).patch(rest::update_profile),
        )
        .route("/api/v1/users", get(rest::search_users))
        .route("/api/v1/users/{user_id}", get(rest::profile))
        .route("/api/v1/rtc/ice-servers", get(rest::ice_servers))
        .route("/api/v1/blocks", get(rest::blocks))
        .route(
            "/api/v1/blocks/{user_id}",
            axum::routing::put(rest::block).delete(rest::unblock),
        )
        .route("/api/v1/friends", get(rest::friends))
        .route("/api/v1/friends/{user_id}", delete(rest::remove_friend))
        .route(
            "/api/v1/friend-requests",
            get(rest::friend_requests).post(rest::send_friend_request),
        )
        .route(
            "/api/v1/friend-requests/{user_id}",
            delete(rest::cancel_friend_request),
        )
        .route(
            "/api/v1/friend-requests/{user_id}/accept",
            post(rest::accept_friend_request),
        )
        .route(
            "/api/v1/friend-requests/{user_id}/decline",
            post(rest::decline_friend_request),
        )
        .route(
            "/api/v1/privacy",
            get(rest::privacy).patch(rest::update_privacy),
        )
        .route("/api/v1/push/vapid", get(push::vapid_key))
        .route(
            "/api/v1/push/subscription",
            put(push::subscribe).delete(push::unsubscribe),
        )
        .route("/api/v1/push/subscriptions", get(push::subscriptions))
        .route(
            "/api/v1/push/subscriptions/{device_id}",
            delete(push::unsubscribe_device),
        )
        .route(
            "/api/v1/push/settings",
            get(push::settings).put(push::set_settings),
        )
        .route("/api/v1/devices", get(rest::devices))
        .route("/api/v1/devices/{device_id}", delete(rest::sign_out_device))
        .route(
            "/api/v1/conversations",
            get(rest::conversations).post(rest::create_group),
        )
        .route("/api/v1/conversations/direct", post(rest::open_direct))
        .route(
            "/api/v1/conversations/{id}",
            get(rest::conversation).delete(rest::dissolve_group),
        )
        .route(
            "/api/v1/conversations/{id}/group",
            get(rest::group_info).patch(rest::update_group),
        )
        .route(
            "/api/v1/conversations/{id}/permissions",
            put(rest::set_permissions),
        )
        .route(
            "/api/v1/conversations/{id}/transfer",
            post(rest::transfer_ownership),
        )
        .route(
            "/api/v1/conversations/{id}/members/{user_id}/role",
            put(rest::set_role),
        )
        .route(
            "/api/v1/conversations/{id}/members/{user_id}/mute",
            put(rest::mute_member).delete(rest::unmute_member),
        )
        .route("/api/v1/conversations/{id}/bans", get(rest::bans))
        .route(
            "/api/v1/conversations/{id}/bans/{user_id}",
            put(rest::ban).delete(rest::unban),
        )
        .route(
            "/api/v1/conversations/{id}/messages/{seq}",
            delete(rest::delete_message),
        )
        .route(
            "/api/v1/conversations/{id}/messages/{seq}/readers",
            get(rest::message_readers),
        )
        .route(
            "/api/v1/conversations/{id}/messages/{seq}/edits",
            get(rest::edit_history),
        )
        .route(
            "/api/v1/conversations/{id}/messages/{seq}/reactions",
            get(rest::reactions),
        )
        .route(
            "/api/v1/conversations/{id}/threads/{root}",
            get(rest::thread),
        )
        .route("/api/v1/conversations/{id}/pins", get(rest::pins))
        .route(
            "/api/v1/conversations/{id}/messages/{seq}/hide",
            post(rest::hide_message),
        )
        .route("/api/v1/conversations/{id}/threads", get(rest::threads))
        .route(
            "/api/v1/conversations/{id}/threads/{root}/read",
            post(rest::mark_thread_read),
        )
        .route(
            "/api/v1/conversations/{id}/settings",
            patch(rest::update_conversation_settings),
        )
        .route(
            "/api/v1/conversations/{id}/retention",
            get(rest::retention).put(rest::set_retention),
        )
        .route(
            "/api/v1/conversations/{id}/invite-links",
            get(rest::invite_links).post(rest::create_invite_link),
        )
        .route(
            "/api/v1/conversations/{id}/invite-links/{link_id}",
            delete(rest::revoke_invite_link),
        )
        .route(
            "/api/v1/conversations/{id}/join-requests",
            get(rest::join_requests),
        )
        .route(
            "/api/v1/conversations/{id}/join-requests/{user_id}/approve",
            post(rest::approve_join_request),
        )
        .route(
            "/api/v1/conversations/{id}/join-requests/{user_id}",
            delete(rest::decline_join_request),
        )
        .route("/api/v1/search", get(rest::search))
        .route("/api/v1/groups/preview", post(rest::preview_group))
        .route("/api/v1/groups/join", post(rest::join_group))
        .route("/api/v1/group-invitations", get(rest::group_invitations))
        .route(
            "/api/v1/group-invitations/{id}/accept",
            post(rest::accept_group_invitation),
        )
        .route(
            "/api/v1/group-invitations/{id}",
            delete(rest::decline_group_invitation),
        )
        .route(
            "/api/v1/conversations/{id}/members",
            get(rest::members).post(rest::add_members),
        )
        .route(
            "/api/v1/conversations/{id}/members/{user_id}",
            delete(rest::remove_member),
        )
        .route(
            "/api/v1/conversations/{id}/messages",
            get(rest::history).post(rest::send),
        )
        .route("/api/v1/admin/users", get(rest::admin_users))
        .route(
            "/api/v1/admin/users/{user_id}",
            delete(rest::admin_delete_user),
        )
        .route(
            "/api/v1/admin/users/{user_id}/suspend",
            post(rest::admin_suspend),
        )
        .route(
            "/api/v1/admin/users/{user_id}/reactivate",
            post(rest::admin_reactivate),
        )
        .route(
            "/api/v1/admin/users/{user_id}/sign-out",
            post(rest::admin_sign_out),
        )
        .route(
            "/api/v1/admin/users/{user_id}/admin",
            axum::routing::put(rest::admin_grant).delete(rest::admin_revoke),
        )
        .route(
            "/api/v1/admin/conversations/{id}/messages/{seq}",
            delete(rest::admin_remove_message),
        )
        .route("/api/v1/admin/audit", get(rest::admin_audit))
        .route("/api/v1/admin/audit/export", get(rest::admin_audit_export))
        .route("/ws", get(ws::upgrade))
        .merge(file_routes())
        .fallback(web::fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Wraps a finished router (with every merged route) in the request metrics, the security
/// headers and CORS; `tls` says whether clients reach it over TLS (then responses carry HSTS).
pub fn finish(app: Router, config: &HttpConfig, tls: bool) -> Router {
    let security = std::sync::Arc::new(Security::new(&config.cors_origins, tls));
    // The configuration was validated when it was loaded, so a failure here is a bug.
    let proxies = std::sync::Arc::new(
        TrustedProxies::parse(&config.trusted_proxies).expect("validated trusted_proxies"),
    );
    app.layer(axum::middleware::from_fn(unread::close_if_unread))
        .layer(axum::middleware::from_fn(admin::observe))
        .layer(axum::middleware::from_fn_with_state(
            security,
            security::headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            proxies,
            proxy::resolve_client,
        ))
}

/// tus uploads (every response carries `Tus-Resumable`) and downloads. Upload bodies are
/// streamed, so the REST body limit does not apply to them.
fn file_routes() -> Router<AppState> {
    use axum::routing::{head, options};
    let uploads = Router::new()
        .route(
            "/api/v1/uploads/",
            options(files::options).post(files::create),
        )
        .route(
            "/api/v1/uploads",
            options(files::options).post(files::create),
        )
        .route(
            "/api/v1/uploads/{upload_id}",
            head(files::status)
                .patch(files::append)
                .delete(files::terminate),
        )
        .route_layer(axum::middleware::from_fn(files::tus_headers));
    Router::new()
        .route(
            "/api/v1/files/{file_id}",
            get(files::download).delete(files::delete_file),
        )
        .route("/api/v1/files/{file_id}/link", post(files::link))
        .route(
            "/api/v1/slots/{upload_id}/{name}",
            get(files::slot_get).put(files::slot_put),
        )
        .route("/api/v1/files/{file_id}/thumbnail", get(files::thumbnail))
        .route(
            "/api/v1/conversations/{id}/files/{file_id}",
            axum::routing::put(files::share),
        )
        .merge(uploads)
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Frames are small and latency matters more than packet count: without TCP_NODELAY,
    // Nagle's algorithm holds a small write back until the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%e, "Could not set TCP_NODELAY.");
        }
    });
    // Connection info gives handlers the client's address (per-address sign-in limits, and
    // the address in the audit log).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Like [`serve`], over TLS: `config` handshakes every connection (its certificate resolver
/// decides the certificate per handshake, so reloaded files apply to new connections).
pub async fn serve_tls(
    listener: TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // `tap_io` only to get axum's connection-info impl for wrapped listeners.
    let listener = TlsListener::new(listener, config)?.tap_io(|_| {});
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
