//! Signals on the real binary: SIGTERM closes every WebSocket with 1001 ("going away") and the
//! process exits cleanly after acknowledged messages are durable; SIGHUP applies a new log
//! level from the configuration file without a restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tidings_sdk::{Client, Connection};
use tidings_testkit::{PASSWORD, ServerProcess};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tidings"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_going_away_and_keeps_acknowledged_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(binary(), tmp.path(), &[])
        .await
        .unwrap();
    let client = Client::new(&server.base_url);
    client.register("ann", PASSWORD).await.unwrap();
    let bob = client.register("ben", PASSWORD).await.unwrap();
    let tokens = client.login("ann", PASSWORD, "d").await.unwrap();
    let conv = client
        .authed(tokens.access_token.clone())
        .open_direct(bob.user_id)
        .await
        .unwrap()
        .id;
    let mut conn = Connection::connect(&client.ws_url(), &tokens.access_token)
        .await
        .unwrap();
    let (seq, _) = conn.send_text(conv, "before-stop", "x").await.unwrap();
    let status = server.terminate().await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    // The events end once the server closed the connection.
    while tokio::time::timeout(Duration::from_secs(10), conn.next_event())
        .await
        .expect("the connection ends")
        .is_some()
    {}
    let (code, _) = conn.close_reason().expect("a close frame");
    assert_eq!(code, 1001);

    // The acknowledged message is there after a restart.
    let again = ServerProcess::spawn(binary(), tmp.path(), &[])
        .await
        .unwrap();
    let client = Client::new(&again.base_url);
    let tokens = client.login("ann", PASSWORD, "d2").await.unwrap();
    let page = client
        .authed(tokens.access_token)
        .history(conv, None, 10)
        .await
        .unwrap();
    assert!(page.messages.iter().any(|m| m.seq == seq));
    again.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_log_level() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tidings.toml");
    std::fs::write(&config, "[log]\nlevel = \"warn\"\n").unwrap();
    let log_path = tmp.path().join("server.log");
    let mut child = tokio::process::Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut base = None;
    for _ in 0..300 {
        if let Some(url) = read()
            .lines()
            .find_map(|l| l.strip_prefix("Tidings is running at "))
        {
            base = Some(url.trim().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = base.expect("the server starts");
    let http = reqwest::Client::new();
    http.get(format!("{base}/healthz")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!read().contains("Request finished."), "debug lines at warn");

    std::fs::write(&config, "[log]\nlevel = \"debug\"\n").unwrap();
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let mut applied = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        http.get(format!("{base}/healthz")).send().await.unwrap();
        if read().contains("Request finished.") {
            applied = true;
            break;
        }
    }
    assert!(applied, "SIGHUP did not apply the new level:\n{}", read());
    // Still the same process, still serving.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().await.unwrap();
}
