//! Signals on the real binary: SIGTERM closes every WebSocket with 1001 ("going away") and the
//! process exits cleanly after acknowledged messages are durable; a SIGTERM in the middle of a
//! burst of sends answers every send the server read (acked and stored, or refused) before it
//! exits; SIGHUP applies a new log level from the configuration file without a restart.

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

/// What the server answered to one send of the burst.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Acked(u64),
    Refused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_answers_every_send_and_loses_nothing_acknowledged() {
    use futures_util::{SinkExt, StreamExt};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio_tungstenite::tungstenite::Message as Ws;

    /// Sends in the burst, at most; the server is stopped long before the end.
    const BURST: usize = 20_000;
    /// Acks to wait for before the signal, so it lands mid-burst.
    const ACKS_BEFORE_SIGNAL: usize = 200;
    /// Sends the client still writes after the shutdown notice, as a client slow to react
    /// would: each must be refused, not silently dropped.
    const WRITES_AFTER_NOTICE: usize = 20;

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

    let (ws, _) = tokio_tungstenite::connect_async(client.ws_url())
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let auth = serde_json::json!({"type": "auth", "id": "auth", "token": tokens.access_token});
    sink.send(Ws::Text(auth.to_string().into())).await.unwrap();
    loop {
        let Some(Ok(Ws::Text(text))) = stream.next().await else {
            panic!("no auth_ok");
        };
        if text.contains("\"auth_ok\"") {
            break;
        }
    }

    // The writer pipelines sends without waiting for acks; it stops a few frames after the
    // reader has seen the shutdown notice, or when the socket refuses to take more.
    let noticed = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let noticed = Arc::clone(&noticed);
        let written = Arc::clone(&written);
        async move {
            let mut after_notice = 0;
            for i in 0..BURST {
                if noticed.load(Ordering::Acquire) {
                    if after_notice == WRITES_AFTER_NOTICE {
                        break;
                    }
                    after_notice += 1;
                }
                let frame = serde_json::json!({
                    "type": "send", "id": format!("s{i}"), "conversation_id": conv,
                    "client_msg_id": format!("m{i}"), "body": {"kind": "text", "text": format!("burst {i}")},
                });
                if sink.send(Ws::Text(frame.to_string().into())).await.is_err() {
                    break;
                }
                written.store(i + 1, Ordering::Release);
                // Paced before the notice, so the signal lands mid-burst; after it, the last
                // frames go out back to back, as a client's queued writes would.
                if i % 8 == 0 && after_notice == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            sink
        }
    });

    let mut answers: HashMap<usize, Answer> = HashMap::new();
    let mut server = Some(server);
    let mut stopping = None;
    let mut close_code = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the connection ends")
    {
        let text = match item {
            Ok(Ws::Text(text)) => text,
            Ok(Ws::Close(frame)) => {
                close_code = frame.map(|f| u16::from(f.code));
                continue;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        let index = |frame: &serde_json::Value| {
            frame["id"]
                .as_str()
                .and_then(|id| id.strip_prefix('s'))
                .map(|n| n.parse::<usize>().unwrap())
        };
        match frame["type"].as_str() {
            Some("ack") => {
                let i = index(&frame).expect("acks carry the send's id");
                assert!(
                    answers
                        .insert(i, Answer::Acked(frame["seq"].as_u64().unwrap()))
                        .is_none()
                );
            }
            Some("error") => match index(&frame) {
                Some(i) => {
                    assert_eq!(frame["code"], "unavailable", "{frame}");
                    assert!(answers.insert(i, Answer::Refused).is_none());
                }
                None => {
                    assert_eq!(frame["code"], "unavailable", "{frame}");
                    noticed.store(true, Ordering::Release);
                }
            },
            _ => {}
        }
        if stopping.is_none() && answers.len() >= ACKS_BEFORE_SIGNAL {
            let process = server.take().unwrap();
            stopping = Some(tokio::spawn(process.terminate()));
        }
    }
    let status = stopping
        .expect("the burst reached the signal")
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(close_code, Some(1001));
    assert!(noticed.load(Ordering::Acquire), "no shutdown notice");
    drop(writer.await.unwrap());
    let written = written.load(Ordering::Acquire);
    assert!(written < BURST, "the signal came after the burst");

    // Every send the client wrote was answered: nothing was read and dropped, or left unread.
    let unanswered: Vec<usize> = (0..written).filter(|i| !answers.contains_key(i)).collect();
    assert!(unanswered.is_empty(), "unanswered sends: {unanswered:?}");
    let acked = answers
        .values()
        .filter(|a| matches!(a, Answer::Acked(_)))
        .count();
    let refused = answers.len() - acked;
    assert!(
        acked >= ACKS_BEFORE_SIGNAL && refused > 0,
        "acked {acked}, refused {refused}"
    );

    // After a restart, the history holds exactly the acknowledged sends, at their sequences.
    let again = ServerProcess::spawn(binary(), tmp.path(), &[])
        .await
        .unwrap();
    let client = Client::new(&again.base_url);
    let tokens = client.login("ann", PASSWORD, "d2").await.unwrap();
    let api = client.authed(tokens.access_token);
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut before = None;
    loop {
        let page = api.history(conv, before, 500).await.unwrap();
        before = page.messages.iter().map(|m| m.seq).min();
        for m in &page.messages {
            stored.insert(m.client_msg_id.clone(), m.seq);
        }
        if !page.has_more || page.messages.is_empty() {
            break;
        }
    }
    for (i, answer) in &answers {
        let found = stored.get(&format!("m{i}")).copied();
        match answer {
            Answer::Acked(seq) => assert_eq!(found, Some(*seq), "acked send {i} lost"),
            Answer::Refused => assert_eq!(found, None, "refused send {i} was stored"),
        }
    }
    assert_eq!(
        stored.len(),
        acked,
        "the history holds sends nobody was told about"
    );
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
