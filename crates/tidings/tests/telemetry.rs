//! OpenTelemetry export against a real OTLP/HTTP receiver on loopback: the server binary runs
//! with `[telemetry]` on, a workload (sign-up, sign-in, refresh, a WebSocket session with a
//! send, a REST send, a failed sign-in) runs, SIGTERM flushes the exporter, and the spans the
//! receiver decoded (with the official `opentelemetry-proto` Python package) have the expected
//! names, attributes and parents, carry no log events, and hold none of the secrets used.
//!
//! `scripts/test` installs opentelemetry-proto in target/py-venv and sets
//! `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass without it; a plain
//! `cargo test` without it says so and skips.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tidings_proto::MessageBody;
use tidings_sdk::{Client, Connection};
use tidings_testkit::ServerProcess;
use tokio::io::AsyncBufReadExt;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tidings"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has opentelemetry-proto, if there is one.
fn otel_python() -> Option<PathBuf> {
    let python = match std::env::var_os("TEST_CLIENTS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => workspace_root().join("target/py-venv/bin/python"),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", "import opentelemetry.proto"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
        "REQUIRE_TEST_CLIENTS is set but no Python with opentelemetry-proto was found"
    );
    eprintln!("SKIPPED: no Python with opentelemetry-proto; scripts/test prepares target/py-venv");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_ids_and_without_secrets() {
    let Some(python) = otel_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spans_path = tmp.path().join("spans.jsonl");
    let mut receiver = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/otel/receiver.py"))
        .arg(&spans_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut first = String::new();
    tokio::io::BufReader::new(receiver.stdout.take().unwrap())
        .read_line(&mut first)
        .await
        .unwrap();
    let port: u16 = first.trim().parse().expect("the receiver prints its port");
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");

    let data = tmp.path().join("data");
    let server = ServerProcess::spawn(
        binary(),
        &data,
        &[
            ("TIDINGS_TELEMETRY_ENABLED", "true"),
            ("TIDINGS_TELEMETRY_ENDPOINT", &endpoint),
            ("TIDINGS_TELEMETRY_SERVICE_NAME", "tidings-under-test"),
        ],
    )
    .await
    .unwrap();

    let password = "Pw-otel-4b7c1d9e-secret";
    let text_ws = "Msg-otel-ws-71c3aa02";
    let text_rest = "Msg-otel-rest-5e0d9b13";
    let client = Client::new(&server.base_url);
    client.register("tracy", password).await.unwrap();
    let bob = client.register("other", password).await.unwrap();
    let first = client.login("tracy", password, "laptop").await.unwrap();
    let refreshed = client.refresh(&first.refresh_token).await.unwrap();
    let api = client.authed(refreshed.access_token.clone());
    let conv = api.open_direct(bob.user_id).await.unwrap().id;
    let conn = Connection::connect(&client.ws_url(), &refreshed.access_token)
        .await
        .unwrap();
    conn.send_text(conv, "c1", text_ws).await.unwrap();
    api.send(
        conv,
        "c2",
        MessageBody::Text {
            text: text_rest.into(),
        },
    )
    .await
    .unwrap();
    assert!(client.login("tracy", "Wrong-otel-pw", "x").await.is_err());
    conn.close();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM: the server exports what it still buffers before it exits.
    let status = server.terminate().await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    receiver.kill().await.unwrap();

    let text = std::fs::read_to_string(&spans_path).expect("the receiver got spans");
    let spans: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };

    for span in &spans {
        assert_eq!(
            span["resource"]["service.name"], "tidings-under-test",
            "{span}"
        );
        // Log events never travel with the spans.
        assert_eq!(span["events"], Value::Array(vec![]), "{span}");
    }
    let is_id = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };

    // HTTP requests: one span each, with the request id the logs and X-Request-Id carry.
    let requests = named("request");
    assert!(requests.len() >= 7, "{text}");
    assert!(
        requests.iter().all(|s| is_id(&s["attributes"]["id"])),
        "{text}"
    );
    assert!(
        requests.iter().any(|s| s["attributes"]["method"] == "POST"
            && s["attributes"]["route"] == "/api/v1/conversations/{id}/messages"),
        "{text}"
    );

    // The WebSocket connection, and each frame handled inside it (same trace, its child).
    let connections = named("connection");
    let connection = connections
        .iter()
        .find(|s| s["attributes"]["transport"] == "websocket")
        .expect("a connection span");
    assert!(is_id(&connection["attributes"]["id"]), "{connection}");
    let frames = named("ws.frame");
    for kind in ["auth", "send"] {
        let frame = frames
            .iter()
            .find(|s| s["attributes"]["frame.type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} frame span in {text}"));
        assert_eq!(frame["parent_span_id"], connection["span_id"], "{frame}");
        assert_eq!(frame["trace_id"], connection["trace_id"], "{frame}");
        assert!(
            frame["attributes"]["bytes"].as_i64().is_some_and(|b| b > 0),
            "{frame}"
        );
    }

    // Group commits: at least the two sends, in one or two batches.
    let commits = named("store.commit");
    let committed: i64 = commits
        .iter()
        .map(|s| {
            s["attributes"]["messages"]
                .as_i64()
                .unwrap_or_else(|| panic!("{s}"))
        })
        .sum();
    assert!(committed >= 2, "{text}");

    for (what, secret) in [
        ("password", password.to_string()),
        ("wrong password", "Wrong-otel-pw".into()),
        ("first access token", first.access_token.clone()),
        ("first refresh token", first.refresh_token.clone()),
        ("access token", refreshed.access_token.clone()),
        ("refresh token", refreshed.refresh_token.clone()),
        ("WebSocket message text", text_ws.into()),
        ("REST message text", text_rest.into()),
    ] {
        // A token's tail is enough to count as a leak.
        let needle = if secret.len() > 40 {
            &secret[secret.len() - 32..]
        } else {
            &secret
        };
        assert!(!text.contains(needle), "the {what} was exported: {text}");
    }
}
