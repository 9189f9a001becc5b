//! `tidings admin backup` against a running server under write load, then `tidings admin
//! restore` into a fresh data directory and a server started on it: every message acknowledged
//! before the backup began is there with its sequence, and every file uploaded before it
//! downloads with the same bytes. Restoring over existing data and backing up into a used
//! directory are refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings_proto::Seq;
use tidings_sdk::{Client, Connection};
use tidings_testkit::{PASSWORD, ServerProcess};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tidings"))
}

async fn admin(data_dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary())
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_acknowledged_message_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::spawn(binary(), &data, &[]).await.unwrap();
    let client = Client::new(&server.base_url);
    let alice = client.register("alice", PASSWORD).await.unwrap();
    let bob = client.register("bob", PASSWORD).await.unwrap();
    let tokens = client.login("alice", PASSWORD, "writer").await.unwrap();
    let api = client.authed(tokens.access_token.clone());
    let conv = api.open_direct(bob.user_id).await.unwrap().id;
    let _ = alice;

    // Files uploaded before the backup.
    let mut files = Vec::new();
    for i in 0..3u8 {
        let bytes: Vec<u8> = (0..200_000u32).map(|n| (n as u8) ^ i).collect();
        let id = api.upload(&bytes, &format!("f{i}.bin")).await.unwrap();
        files.push((id, bytes));
    }

    // The write load: sends pipelined on one connection, each ack recorded with its time.
    let acks: Arc<Mutex<HashMap<String, (Seq, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acks, stop) = (acks.clone(), stop.clone());
        let ws = client.ws_url();
        let token = tokens.access_token.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let conn = Connection::connect(&ws, &token).await.unwrap();
            let conn = &conn;
            let mut n = 0usize;
            // Bounded: at most 20,000 messages, and the test stops it after the backup.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                let ids: Vec<String> = (n..n + 16).map(|i| format!("m{i}")).collect();
                n += 16;
                let mut sends = futures_util::stream::iter(ids)
                    .map(|id| async move {
                        let r = conn.send_text(conv, &id, &format!("text {id}")).await;
                        (id, r)
                    })
                    .buffer_unordered(16);
                while let Some((id, r)) = sends.next().await {
                    let (seq, _) = r.expect("send acknowledged");
                    acks.lock().unwrap().insert(id, (seq, Instant::now()));
                }
            }
            n
        })
    };
    // Let the load run, then back up while it continues.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backup_dir = tmp.path().join("backup");
    let started = Instant::now();
    let out = admin(&data, &["backup", backup_dir.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("backed up"), "{said}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    let before: HashMap<String, Seq> = acks
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, (_, at))| *at < started)
        .map(|(id, (seq, _))| (id.clone(), *seq))
        .collect();
    let after_backup = acks.lock().unwrap().len() - before.len();
    assert!(before.len() >= 16, "the load ran before the backup");
    assert!(after_backup > 0, "the load kept running during the backup");
    eprintln!(
        "{sent} sends, {} acknowledged before the backup, {after_backup} after its start; {said}",
        before.len()
    );

    // Refusals: a used backup directory, a used data directory.
    let again = admin(&data, &["backup", backup_dir.to_str().unwrap()]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let over = admin(&data, &["restore", backup_dir.to_str().unwrap()]).await;
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("not empty"));
    server.kill().await.unwrap();

    // Restore into a fresh directory and serve it.
    let fresh = tmp.path().join("fresh");
    let out = admin(&fresh, &["restore", backup_dir.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = ServerProcess::spawn(binary(), &fresh, &[]).await.unwrap();
    let client = Client::new(&restored.base_url);
    let tokens = client.login("alice", PASSWORD, "checker").await.unwrap();
    let api = client.authed(tokens.access_token);
    let mut stored: HashMap<String, Seq> = HashMap::new();
    let mut cursor = None;
    loop {
        let page = api.history(conv, cursor, 500).await.unwrap();
        cursor = page.messages.first().map(|m| m.seq);
        for m in page.messages {
            stored.insert(m.client_msg_id.clone(), m.seq);
        }
        if !page.has_more {
            break;
        }
    }
    for (id, seq) in &before {
        assert_eq!(
            stored.get(id),
            Some(seq),
            "{id} acknowledged before the backup"
        );
    }
    // The restored timeline is gap-free from 1.
    let mut seqs: Vec<Seq> = stored.values().copied().collect();
    seqs.sort_unstable();
    assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1));
    for (id, bytes) in &files {
        assert_eq!(&api.download(id, None).await.unwrap(), bytes, "file {id}");
    }
    restored.kill().await.unwrap();
}
