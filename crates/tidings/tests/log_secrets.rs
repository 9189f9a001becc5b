//! The server's logs at debug level during a representative workload (registration, password
//! sign-in, refresh, sends over the WebSocket and REST, an upload, a download): no password,
//! no access or refresh token, no message text and no file content appears in any line, and the
//! lines of a request or connection carry its id.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tidings_proto::MessageBody;
use tidings_sdk::{Client, Connection};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tidings"))
}

/// The secrets a workload used, each with a name for the failure message. Every step records
/// what it uses with [`Secrets::keep`] right where it uses it, so a feature that brings a new
/// kind of secret (TOTP secrets, recovery codes, OAuth client secrets) adds its step and its
/// `keep` calls, and [`check`] looks for each in every log line.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// Records `secret` as one that must never be logged, and hands it back for use.
    fn keep(&mut self, what: &str, secret: impl Into<String>) -> String {
        let secret = secret.into();
        self.0.push((what.to_string(), secret.clone()));
        secret
    }
}

/// Runs the workload against a server logging at debug level in `format`; returns the log
/// and the secrets used.
async fn run_workload(format: &str) -> (String, Secrets) {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("server.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(binary())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("TIDINGS_LOG_LEVEL", "debug")
        .env("TIDINGS_LOG_FORMAT", format)
        .env("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB", "256")
        .env("TIDINGS_ACCOUNTS_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut base = None;
    for _ in 0..300 {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(url) = log
            .lines()
            .find_map(|l| l.strip_prefix("Tidings is running at "))
        {
            base = Some(url.trim().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = base.expect("the server starts");

    let mut secrets = Secrets::default();
    let password = &secrets.keep("password", "Pw-9f3b1c7e-not-in-logs");
    // Message texts and file contents: a distinctive prefix stands for the whole.
    secrets.keep("WebSocket message text", "Msg-ws-5a2e8d41");
    secrets.keep("REST message text", "Msg-rest-c0ffee17");
    secrets.keep("file content", "File-content-7d1e4f22");
    let text_ws = "Msg-ws-5a2e8d41 the meeting moved to Thursday";
    let text_rest = "Msg-rest-c0ffee17 secret plans";
    let file_bytes = b"File-content-7d1e4f22 quarterly numbers".repeat(100);
    let client = Client::new(&base);
    let alice = client.register("logsy", password).await.unwrap();
    let bob = client.register("other", password).await.unwrap();
    let first = client.login("logsy", password, "laptop").await.unwrap();
    secrets.keep("first access token", &first.access_token);
    secrets.keep("first refresh token", &first.refresh_token);
    let refreshed = client.refresh(&first.refresh_token).await.unwrap();
    secrets.keep("access token", &refreshed.access_token);
    secrets.keep("refresh token", &refreshed.refresh_token);
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
    let file_id = api.upload(&file_bytes, "notes.txt").await.unwrap();
    assert_eq!(api.download(&file_id, None).await.unwrap(), file_bytes);
    // A failed sign-in with a wrong password is logged too; the attempt's password must not be.
    let wrong = secrets.keep("wrong password", "Wrong-8e1f-pw");
    assert!(client.login("logsy", &wrong, "x").await.is_err());
    conn.close();
    drop(conn);
    let _ = alice;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    (log, secrets)
}

fn check(log: &str, secrets: &Secrets) {
    assert!(
        log.lines().count() > 20,
        "debug logging produced lines:\n{log}"
    );
    assert!(secrets.0.len() >= 9, "the workload recorded its secrets");
    for (what, secret) in &secrets.0 {
        // Tokens are long; a fragment of one is a leak too (JWT parts, a truncated print).
        let needle: &str = if secret.len() > 40 {
            &secret[secret.len() - 32..]
        } else {
            secret
        };
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            panic!("the {what} appears in the log: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_hold_no_secret_and_carry_ids() {
    let (log, secrets) = run_workload("text").await;
    check(&log, &secrets);
    let finished: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Request finished."))
        .collect();
    assert!(finished.len() >= 8, "{log}");
    assert!(
        finished
            .iter()
            .all(|l| l.contains("request{id=") && l.contains("route=")),
        "{finished:#?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("connection{id=") && l.contains("Connection ended.")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_no_secret_and_carry_ids() {
    let (log, secrets) = run_workload("json").await;
    check(&log, &secrets);
    let mut requests = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        if v["fields"]["message"] == "Request finished." {
            assert!(v["span"]["id"].is_string(), "{line}");
            requests += 1;
        }
    }
    assert!(requests >= 8, "{log}");
}
