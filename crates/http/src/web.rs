//! The embedded web client (`web/`, built into `web/dist` and compiled in by `build.rs`): its
//! files at their paths, the app's `index.html` for every other page path (client-side routes),
//! never for the server's own namespaces (`/api`, `/oauth`, `/ws`, `/.well-known`, health),
//! which keep their problem+json 404.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Whether the web client was built before this binary was compiled.
pub fn embedded() -> bool {
    find("index.html").is_some()
}

fn find(path: &str) -> Option<&'static [u8]> {
    assets::ASSETS
        .binary_search_by(|(p, _)| p.cmp(&path))
        .ok()
        .map(|i| assets::ASSETS[i].1)
}

/// Paths the server owns: an unknown one there is an API 404, never the app.
fn server_namespace(path: &str) -> bool {
    [
        "/api",
        "/oauth",
        "/ws",
        "/.well-known",
        "/healthz",
        "/readyz",
        // Metrics live on the admin listener; a scraper pointed at the public one should get
        // a plain 404, not the app's page.
        "/metrics",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file_response(path: &str, bytes: &'static [u8], head: bool) -> Response {
    // Vite names everything under assets/ by its content hash, so those never change; the rest
    // (index.html, the service worker, the manifest) must be revalidated to pick up a new build.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut res = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(bytes))
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path.ends_with(".html") {
        h.insert(
            header::HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        );
    }
    res
}

/// `GET /`: the app, or the plain landing page when the app was not built in.
pub async fn index(method: Method) -> Response {
    match find("index.html") {
        Some(bytes) => file_response("index.html", bytes, method == Method::HEAD),
        None => {
            let mut res = axum::response::Html(LANDING_PAGE).into_response();
            // The landing page's one inline style block is allowed by its hash, nothing else.
            let csp = crate::security::content_security_policy(None).replace(
                "style-src 'self'",
                &format!("style-src 'self' '{LANDING_STYLE_HASH}'"),
            );
            if let Ok(v) = HeaderValue::from_str(&csp) {
                res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
            }
            res
        }
    }
}

const LANDING_PAGE: &str = include_str!("index.html");

/// The SHA-256 of the landing page's `<style>` content, as CSP spells it (checked by a test).
const LANDING_STYLE_HASH: &str = "sha256-hagF2e2sDIZSatC+zTJXQZrdh7m6NZdqC2ZM5nfXkrs=";

/// The router's fallback: a file of the app, the app itself for a client-side route, or the
/// API's 404 problem.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if server_namespace(path) || (method != Method::GET && method != Method::HEAD) {
        return crate::rest::not_found().await.into_response();
    }
    let head = method == Method::HEAD;
    let rel = path.trim_start_matches('/');
    if let Some(bytes) = find(rel) {
        return file_response(rel, bytes, head);
    }
    // A missing file (a name with an extension, or anything under assets/) is a plain 404; any
    // other path is a page of the single-page app.
    let last = rel.rsplit('/').next().unwrap_or("");
    if rel.starts_with("assets/") || last.contains('.') {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match find("index.html") {
        Some(bytes) => file_response("index.html", bytes, head),
        None => crate::rest::not_found().await.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_paths_are_never_the_app() {
        for p in [
            "/api",
            "/api/v1/nope",
            "/oauth/x",
            "/ws",
            "/.well-known/x",
            "/healthz",
            "/metrics",
        ] {
            assert!(server_namespace(p), "{p}");
        }
        for p in ["/", "/chats/3", "/apis", "/assets/index.js", "/wsx"] {
            assert!(!server_namespace(p), "{p}");
        }
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(
            content_type("assets/a-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("manifest.webmanifest"),
            "application/manifest+json"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }

    #[test]
    fn the_landing_style_hash_is_current() {
        use base64::Engine;
        use sha2::Digest;
        let style = LANDING_PAGE
            .split_once("<style>")
            .and_then(|(_, rest)| rest.split_once("</style>"))
            .map(|(style, _)| style)
            .expect("the landing page has a style block");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style));
        assert_eq!(LANDING_STYLE_HASH, format!("sha256-{hash}"));
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(assets::ASSETS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
