//! The admin listener's routes: Prometheus metrics, liveness and readiness, kept off the public
//! listener so that only the operator's network (loopback by default) can read them.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use std::time::Instant;
use tidings_core::Core;
use tidings_proto::rest::Health;

/// `/metrics`, `/healthz` and `/readyz`.
pub fn admin_router(core: Core) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(crate::rest::healthz))
        .route("/readyz", axum::routing::get(readyz))
        .with_state(core)
}

async fn metrics() -> Response {
    let mut res = tidings_metrics::render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

async fn readyz(State(core): State<Core>) -> Response {
    let ready = core.ready().await.is_ok();
    let body = Json(Health {
        status: if ready { "ok" } else { "unavailable" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// Middleware around every request: a `request` span (id, method, matched route) that every
/// log line of the request carries, the id in an `x-request-id` response header, a debug line
/// with the outcome, and the request counted by route pattern (bounded by the router), method
/// and status. Only the route pattern is logged, never the query string (it may carry a signed
/// download link).
pub async fn observe(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let id = tidings_metrics::next_log_id();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    let took = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(
            status,
            took_us = took.as_micros() as u64,
            "Request finished."
        );
    });
    tidings_metrics::metrics().http_request(&route, method.as_str(), status, took);
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}
