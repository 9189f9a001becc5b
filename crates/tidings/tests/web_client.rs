//! The embedded web client over real HTTP: `/` and client-side routes get the app, hashed assets
//! are cacheable forever, and the server's own paths are never shadowed by the app.

use tidings_testkit::TestServer;

#[tokio::test]
async fn the_app_is_served_without_shadowing_server_routes() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.base_url)).send();

    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = index.text().await.unwrap();

    // Unknown paths in the server's namespaces stay problem+json 404s, whatever is embedded.
    for path in [
        "/api/v1/nope",
        "/oauth/nope",
        "/.well-known/nope",
        "/ws/nope",
    ] {
        let res = get(path).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // Real server routes still answer as themselves.
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.headers()["content-type"], "application/json");
    let openapi = get("/api/openapi.json").await.unwrap();
    assert_eq!(openapi.status(), 200);

    if !tidings_http::web_client_embedded() {
        // Built without web/dist (a Rust-only checkout): the landing page, and no app routes.
        assert!(page.contains("/api/openapi.json"));
        assert_eq!(get("/chats/1").await.unwrap().status(), 404);
        return;
    }

    assert!(page.contains(r#"<div id="root">"#), "the app's index.html");
    assert_eq!(index_cache(&get("/").await.unwrap()), "no-cache");
    // A client-side route gets the app too.
    let route = get("/chats/12").await.unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), page);
    // The PWA files have their types.
    let manifest = get("/manifest.webmanifest").await.unwrap();
    assert_eq!(
        manifest.headers()["content-type"],
        "application/manifest+json"
    );
    let sw = get("/sw.js").await.unwrap();
    assert!(
        sw.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(index_cache(&sw), "no-cache");
    // Every hashed asset the page names is served, typed and immutable.
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(!assets.is_empty(), "index.html names its bundles");
    for asset in assets {
        let res = get(asset).await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert_eq!(
            index_cache(&res),
            "public, max-age=31536000, immutable",
            "{asset}"
        );
        let ty = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            ty.starts_with("text/javascript") || ty.starts_with("text/css"),
            "{asset}: {ty}"
        );
    }
    // A missing asset is a 404, not the app (a stale page must not run HTML as a script).
    assert_eq!(get("/assets/missing-123.js").await.unwrap().status(), 404);
}

fn index_cache(res: &reqwest::Response) -> String {
    res.headers()["cache-control"].to_str().unwrap().to_string()
}
