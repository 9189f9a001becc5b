//! The admin listener over real HTTP: `/metrics` parsed by the reference Prometheus parser
//! (`prometheus_client` from PyPI, through scripts/ops/prom_parse.py) before and after real
//! traffic, and the values that traffic must move have moved; health checks answer there;
//! metrics are not on the public listener; the listener can be disabled.
//!
//! One test per binary on purpose: the registry is process-wide, so another test in the same
//! process would add its own traffic to the counts checked here.

use serde_json::Value;
use std::path::PathBuf;
use tidings_sdk::Cursors;
use tidings_testkit::{TestServer, next_message};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter with prometheus_client (scripts/test prepares target/py-venv).
fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("TEST_CLIENTS_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join("target/py-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Scrapes `/metrics` and parses it with prometheus_client: (family types, samples).
async fn scrape(python: &PathBuf, admin: &str) -> (Value, Value) {
    let res = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    let mut child = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/ops/prom_parse.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    (parsed["families"].take(), parsed["samples"].take())
}

fn value(samples: &Value, key: &str) -> f64 {
    samples[key].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_parse_with_the_reference_parser() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with prometheus_client was found"
        );
        eprintln!(
            "SKIPPED: no Python with prometheus_client; scripts/test prepares target/py-venv"
        );
        return;
    };
    let server = TestServer::start().await;
    let admin = server
        .admin_url()
        .expect("the admin listener is on by default");
    let (families, before) = scrape(&python, &admin).await;
    for (family, kind) in [
        ("tidings_connections", "gauge"),
        ("tidings_messages_received", "counter"),
        ("tidings_messages_delivered", "counter"),
        ("tidings_delivery_latency_seconds", "histogram"),
        ("tidings_ack_latency_seconds", "histogram"),
        ("tidings_commit_batch_size", "histogram"),
        ("tidings_commit_latency_seconds", "histogram"),
        ("tidings_outbound_queue_drops", "counter"),
        ("tidings_sync_pages", "counter"),
        ("tidings_http_requests", "counter"),
        ("tidings_push_notifications", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(families[family], kind, "{family}");
    }

    // Traffic: two users on WebSockets, five messages from alice to bob, a sync, REST calls.
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    for i in 0..5 {
        a.send_text(conv.id, &format!("m{i}"), "hello")
            .await
            .unwrap();
    }
    for _ in 0..5 {
        next_message(&mut b).await;
    }
    // A connection that holds only the first message syncs the rest: a page from the store.
    let b2 = server.connect(&bob).await;
    let mut held = Cursors::default();
    held.observe(conv.id, 1);
    let (_, synced) = b2.sync(&held, None).await.unwrap();
    assert_eq!(synced, 4);
    for _ in 0..3 {
        alice.api.me().await.unwrap();
    }

    let (_, after) = scrape(&python, &admin).await;
    let moved = |key: &str| value(&after, key) - value(&before, key);
    assert_eq!(
        value(&after, "tidings_connections{transport=websocket}"),
        3.0
    );
    assert!(moved("tidings_connections_opened_total{transport=websocket}") >= 3.0);
    assert!(moved("tidings_messages_received_total{}") >= 5.0);
    assert!(moved("tidings_messages_delivered_total{}") >= 5.0);
    assert!(moved("tidings_delivery_latency_seconds_count{}") >= 5.0);
    assert!(moved("tidings_ack_latency_seconds_count{}") >= 5.0);
    assert!(moved("tidings_commit_batch_size_count{}") >= 1.0);
    assert!(moved("tidings_commit_batch_size_sum{}") >= 5.0);
    assert!(moved("tidings_commit_latency_seconds_count{}") >= 1.0);
    assert!(moved("tidings_sync_pages_total{}") >= 1.0);
    // Requests are counted by the route pattern, never by a concrete path.
    assert_eq!(
        value(
            &after,
            "tidings_http_requests_total{method=GET,route=/api/v1/account,status=200}"
        ),
        3.0
    );
    assert!(
        value(
            &after,
            "tidings_http_requests_total{method=POST,route=/api/v1/conversations/direct,status=200}"
        ) + value(
            &after,
            "tidings_http_requests_total{method=POST,route=/api/v1/conversations/direct,status=201}"
        ) >= 1.0
    );
    let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&format!("/conversations/{}", conv.id))),
        "a concrete id became a label: {keys:?}"
    );
    assert!(value(&after, "process_resident_memory_bytes{}") > 1e6);
    assert!(value(&after, "process_open_fds{}") >= 3.0);

    // Health on the admin listener; metrics never on the public one.
    for path in ["/healthz", "/readyz"] {
        let res = reqwest::get(format!("{admin}{path}")).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let public = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap();
    assert_ne!(public.status(), 200);

    // Connections leave the gauge when they close.
    for conn in [a, b, b2] {
        conn.close();
    }
    let mut closed = false;
    for _ in 0..50 {
        let (_, now) = scrape(&python, &admin).await;
        if value(&now, "tidings_connections{transport=websocket}") == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(closed, "closed connections still counted");
    server.stop().await;

    // The listener can be turned off.
    let off = TestServer::start_with(|c| c.admin.enabled = false).await;
    assert!(off.admin_url().is_none());
    off.stop().await;
}
