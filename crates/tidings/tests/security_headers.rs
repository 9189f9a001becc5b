//! Security headers and CORS over real HTTP: every response carries the policy headers, CORS
//! is closed by default, and a configured origin (and only it) gets a preflight and the
//! `Access-Control-*` headers.

use tidings_testkit::TestServer;

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let addr = server.base_url.trim_start_matches("http://").to_string();
    // Pages, API answers, errors, the OpenAPI document, health, and MQTT's merged route.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/v1/account"),
        ("GET", "/api/v1/nope"),
        ("POST", "/oauth/token"),
        ("GET", "/api/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/mqtt"),
    ] {
        let res = http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", server.base_url),
            )
            .send()
            .await
            .unwrap();
        let csp = header(&res, "content-security-policy").unwrap_or_else(|| panic!("{path}"));
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("img-src 'self' blob: data:"), "{path}: {csp}");
        assert!(
            csp.contains(&format!("connect-src 'self' ws://{addr} wss://{addr}"))
                || csp.contains("connect-src 'self'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&res, "referrer-policy"), Some("no-referrer"));
        assert_eq!(header(&res, "x-frame-options"), Some("DENY"));
        // Plain HTTP: HSTS would be ignored by browsers and is not sent.
        assert_eq!(header(&res, "strict-transport-security"), None, "{path}");
        // CORS is closed by default.
        assert_eq!(header(&res, "access-control-allow-origin"), None, "{path}");
    }
    let api = http
        .get(format!("{}/api/v1/account", server.base_url))
        .send()
        .await
        .unwrap();
    let csp = header(&api, "content-security-policy").unwrap();
    assert!(csp.contains(&format!("connect-src 'self' ws://{addr} wss://{addr}")));
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/account", server.base_url),
        )
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success());
    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
    assert_eq!(header(&preflight, "access-control-allow-methods"), None);
    let get = http
        .get(format!("{}/healthz", server.base_url))
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&get, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_configured_origin_and_only_it_may_call_the_api() {
    let server = TestServer::start_with(|c| {
        c.http.cors_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let user = server.user("corsy").await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/account", server.base_url);

    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("https://chat.example.com")
    );
    assert!(
        header(&preflight, "access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert!(
        header(&preflight, "access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );

    let get = http
        .get(&url)
        .header("origin", "https://chat.example.com")
        .bearer_auth(&user.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        header(&get, "access-control-allow-origin"),
        Some("https://chat.example.com")
    );
    assert!(
        header(&get, "vary")
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin")
    );

    // Another origin, even a look-alike, gets nothing.
    for other in [
        "https://evil.example.net",
        "https://chat.example.com.evil.net",
        "http://chat.example.com",
    ] {
        let res = http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", other)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&res, "access-control-allow-origin"), None, "{other}");
        let res = http
            .get(&url)
            .header("origin", other)
            .bearer_auth(&user.tokens.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&res, "access-control-allow-origin"), None, "{other}");
    }
}
