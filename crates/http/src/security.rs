//! Security headers on every HTTP response (Content-Security-Policy, `nosniff`, referrer and
//! framing rules, HSTS when the listener speaks TLS) and CORS, closed unless configured.
//!
//! One middleware wraps the whole router, the routes other crates merge in (MQTT over
//! WebSocket) included, so no response can leave without the headers. A handler that sets a
//! stricter policy of its own (file downloads are sandboxed) keeps it: headers already present
//! are never overwritten.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The policy every response carries unless its handler chose another. The web client is
/// served as files (no inline script or style), talks to its own origin only (REST and the
/// WebSocket; the WebSocket sources are added per request from the `Host` header, because not
/// every browser lets `'self'` cover `ws:` and `wss:`), shows images from its origin, from
/// `blob:` URLs it creates for downloaded files and from `data:` URLs, and may never be framed.
const CSP_BASE: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; media-src 'self' blob:; font-src 'self'; worker-src 'self'; \
manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Request headers a cross-origin client may send: the bearer token, JSON bodies, tus uploads,
/// conditional and partial downloads.
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, if-none-match, range, \
tus-resumable, upload-length, upload-offset, upload-metadata, upload-checksum, upload-concat, \
upload-defer-length, x-http-method-override";

/// Response headers a cross-origin client may read (tus needs `Location` and the offsets).
const CORS_EXPOSE_HEADERS: &str = "location, etag, content-range, retry-after, tus-resumable, \
tus-version, tus-extension, tus-max-size, tus-checksum-algorithm, upload-offset, upload-length, \
upload-expires, upload-metadata";

const CORS_ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// What the middleware needs to know about the listener and the configuration.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Origins allowed to call the API from a browser (`[http] cors_origins`); `*` allows any.
    cors_origins: Vec<String>,
    /// Whether clients reached this listener over TLS, which makes HSTS meaningful.
    tls: bool,
}

impl Security {
    /// Normalizes the configured origins (`https://chat.example.com`, without a trailing slash).
    pub fn new(cors_origins: &[String], tls: bool) -> Security {
        Security {
            cors_origins: cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            tls,
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.cors_origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let origin_str = origin.to_str().ok()?.to_ascii_lowercase();
        self.cors_origins
            .contains(&origin_str)
            .then(|| origin.clone())
    }
}

/// A `Host` header that is safe to place inside a policy: a host name or address and a port,
/// nothing that could end a directive or add a source.
fn safe_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(host)
}

/// The Content-Security-Policy for a request that arrived with `host`.
pub fn content_security_policy(host: Option<&str>) -> String {
    match host {
        Some(h) => format!("{CSP_BASE}; connect-src 'self' ws://{h} wss://{h}"),
        None => format!("{CSP_BASE}; connect-src 'self'"),
    }
}

/// The middleware: answers allowed CORS preflights itself, and adds the headers to every
/// response.
pub async fn headers(State(security): State<Arc<Security>>, req: Request, next: Next) -> Response {
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| security.allow(o));
    let csp = content_security_policy(safe_host(req.headers()));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    let mut res = match (&allowed, preflight) {
        (Some(_), true) => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(CORS_ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(CORS_ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            res
        }
        _ => next.run(req).await,
    };

    let h = res.headers_mut();
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
    }
    if !security.cors_origins.is_empty() {
        // The answer depends on the Origin header: caches must not hand one origin's answer to
        // another.
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Ok(value) = HeaderValue::from_str(&csp) {
        h.entry(header::CONTENT_SECURITY_POLICY).or_insert(value);
    }
    set_default(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Signed download links travel in URLs; no referrer means they never leak to another site.
    set_default(h, header::REFERRER_POLICY, "no-referrer");
    set_default(h, header::X_FRAME_OPTIONS, "DENY");
    set_default(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if security.tls {
        set_default(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    res
}

fn set_default(h: &mut HeaderMap, name: HeaderName, value: &'static str) {
    h.entry(name).or_insert(HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_enter_the_policy() {
        let host = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            safe_host(&h).map(str::to_owned)
        };
        assert_eq!(host("127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host("[::1]:443").as_deref(), Some("[::1]:443"));
        assert_eq!(
            host("chat.example.com").as_deref(),
            Some("chat.example.com")
        );
        for bad in ["a; script-src *", "a b", "evil.com/x", "a'b", ""] {
            assert_eq!(host(bad), None, "{bad}");
        }
        let csp = content_security_policy(Some("h:1"));
        assert!(csp.contains("connect-src 'self' ws://h:1 wss://h:1"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn origins_match_exactly_after_normalizing() {
        let s = Security::new(&["https://Chat.example.com/".into()], false);
        let v = |o: &str| HeaderValue::from_str(o).unwrap();
        assert!(s.allow(&v("https://chat.example.com")).is_some());
        for bad in [
            "https://chat.example.com.evil.net",
            "http://chat.example.com",
            "https://example.com",
            "null",
        ] {
            assert!(s.allow(&v(bad)).is_none(), "{bad}");
        }
        assert!(Security::new(&[], false).allow(&v("https://a.b")).is_none());
        let any = Security::new(&["*".into()], false);
        assert_eq!(any.allow(&v("https://a.b")).unwrap(), "*");
    }
}
