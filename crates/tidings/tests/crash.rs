//! Fault injection: SIGKILL the server while clients exchange thousands of messages, restart it
//! on the same data directory, and prove that every acknowledged message survived exactly once
//! with the sequence it was acknowledged with, and that retrying unacknowledged sends ends with
//! no loss and no duplicate.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_proto::ConversationId;
use tidings_sdk::{Client, Connection};
use tidings_testkit::{PASSWORD, ServerProcess};

/// Messages each sender sends in total.
const PER_SENDER: usize = 2500;
/// Sends each sender keeps in flight (pipelining makes the crash land mid-batch).
const WINDOW: usize = 32;

struct Sender {
    name: String,
    token: String,
    conversation: ConversationId,
}

type Acks = Arc<Mutex<HashMap<(ConversationId, String), u64>>>;

/// Sends every message of `sender` not yet acked, until done or the connection fails.
/// Returns how many acks it got.
async fn send_all(base: &str, sender: &Sender, acks: &Acks, resend_acked: bool) -> usize {
    let Ok(conn) = Connection::connect(&Client::new(base).ws_url(), &sender.token).await else {
        return 0;
    };
    let todo: Vec<String> = (0..PER_SENDER)
        .map(|n| format!("{}-{n}", sender.name))
        .filter(|id| {
            resend_acked
                || !acks
                    .lock()
                    .unwrap()
                    .contains_key(&(sender.conversation, id.clone()))
        })
        .collect();
    let conn = &conn;
    let mut ok = 0;
    let mut results = futures_util::stream::iter(todo)
        .map(|id| async move {
            let result = conn
                .send_text(sender.conversation, &id, &format!("payload of {id}"))
                .await;
            (id, result)
        })
        .buffer_unordered(WINDOW);
    // Acks are recorded the moment they arrive, so the crash lands while sends are in flight.
    while let Some((id, result)) = results.next().await {
        if let Ok((seq, duplicate)) = result {
            ok += 1;
            let mut acks = acks.lock().unwrap();
            match acks.get(&(sender.conversation, id.clone())) {
                // An acknowledged message keeps its sequence forever.
                Some(previous) => {
                    assert!(duplicate, "{id} stored twice");
                    assert_eq!(*previous, seq, "{id} changed its sequence");
                }
                None => {
                    acks.insert((sender.conversation, id), seq);
                }
            }
        }
    }
    ok
}

async fn setup(base: &str) -> Vec<Sender> {
    let client = Client::new(base);
    let alice = client.register("alice", PASSWORD).await.unwrap();
    let bob = client.register("bob", PASSWORD).await.unwrap();
    let mut senders = Vec::new();
    let mut tokens = Vec::new();
    for (user, device) in [
        ("alice", "a1"),
        ("alice", "a2"),
        ("bob", "b1"),
        ("bob", "b2"),
    ] {
        tokens.push((
            user,
            device,
            client.login(user, PASSWORD, device).await.unwrap(),
        ));
    }
    let alice_api = client.authed(tokens[0].2.access_token.clone());
    let direct = alice_api.open_direct(bob.user_id).await.unwrap().id;
    let group = alice_api
        .create_group("crash test", &[bob.user_id])
        .await
        .unwrap()
        .id;
    let _ = alice;
    for (i, (_, device, t)) in tokens.into_iter().enumerate() {
        senders.push(Sender {
            name: device.to_string(),
            token: t.access_token,
            conversation: if i % 2 == 0 { direct } else { group },
        });
    }
    senders
}

async fn verify(base: &str, senders: &[Sender], acks: &Acks) {
    let client = Client::new(base);
    let tokens = client.login("alice", PASSWORD, "checker").await.unwrap();
    let api = client.authed(tokens.access_token);
    let mut conversations: Vec<ConversationId> = senders.iter().map(|s| s.conversation).collect();
    conversations.sort();
    conversations.dedup();
    let acks = acks.lock().unwrap().clone();
    for conversation in conversations {
        // Page through the whole history, newest first.
        let mut stored = Vec::new();
        let mut before = None;
        loop {
            let page = api.history(conversation, before, 500).await.unwrap();
            before = page.messages.first().map(|m| m.seq);
            stored.splice(0..0, page.messages);
            if !page.has_more {
                break;
            }
        }
        let expected: usize = senders
            .iter()
            .filter(|s| s.conversation == conversation)
            .count()
            * PER_SENDER;
        assert_eq!(stored.len(), expected, "every message stored exactly once");
        for (i, m) in stored.iter().enumerate() {
            assert_eq!(m.seq, i as u64 + 1, "sequences are gap-free");
            assert_eq!(
                acks.get(&(conversation, m.client_msg_id.clone())),
                Some(&m.seq),
                "stored message {} matches its ack",
                m.client_msg_id
            );
        }
        let mut ids: Vec<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), expected, "no client_msg_id stored twice");
    }
}

async fn run(binary: &Path) {
    let data = tempfile::tempdir().unwrap();
    // The port changes across the restart; a fixed issuer keeps the tokens valid, as a
    // configured deployment would.
    let env = [("TIDINGS_TOKENS_ISSUER", "http://tidings.test")];
    let server = ServerProcess::spawn(binary, data.path(), &env)
        .await
        .unwrap();
    let base = server.base_url.clone();
    let senders = Arc::new(setup(&base).await);
    let acks: Acks = Arc::default();

    // Phase 1: everyone sends; the server dies mid-stream.
    let mut tasks = Vec::new();
    for i in 0..senders.len() {
        let (senders, acks, base) = (senders.clone(), acks.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            send_all(&base, &senders[i], &acks, false).await
        }));
    }
    let total = senders.len() * PER_SENDER;
    tokio::time::timeout(Duration::from_secs(60), async {
        while acks.lock().unwrap().len() < total / 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("progress before the crash");
    server.kill().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let acked_before = acks.lock().unwrap().len();
    assert!(acked_before < total, "the crash must interrupt the senders");

    // Phase 2: restart on the same data; clients retry everything, acked or not.
    let server = ServerProcess::spawn(binary, data.path(), &env)
        .await
        .unwrap();
    let base = server.base_url.clone();
    let mut tasks = Vec::new();
    for i in 0..senders.len() {
        let (senders, acks, base) = (senders.clone(), acks.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            send_all(&base, &senders[i], &acks, true).await
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            PER_SENDER,
            "every retry is acknowledged"
        );
    }
    assert_eq!(acks.lock().unwrap().len(), total);
    verify(&base, &senders, &acks).await;
    eprintln!(
        "crash test: {acked_before} of {total} acked before SIGKILL; all {total} present once after restart"
    );
    server.terminate().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    run(Path::new(env!("CARGO_BIN_EXE_tidings"))).await;
}
