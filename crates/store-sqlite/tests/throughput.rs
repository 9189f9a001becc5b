//! A quick local measurement of the append hot path; run it in release mode:
//! `cargo test -p tidings-store-sqlite --release --test throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;
use tidings_proto::{ConversationId, DeviceId, MessageBody, UserId};
use tidings_store::{NewMessage, Store};
use tidings_store_sqlite::{SqliteOptions, SqliteStore};

const TOTAL: usize = 100_000;
const BATCH: usize = 256;
const CONVERSATIONS: usize = 16;

fn message(conversation: ConversationId, sender: UserId, n: usize) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device_id: DeviceId(1),
        client_msg_id: format!("c{n:08}"),
        ts: 1_700_000_000_000 + n as i64,
        body: MessageBody::Text {
            text: format!("message number {n}, about as long as a typical chat line"),
        },
        relations: Default::default(),
    }
}

/// Appends 100,000 messages in batches of 256, spread over a few conversations like a server's
/// group-commit batches are, with `synchronous = FULL` on a real file, and prints messages/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run it in release mode"]
async fn append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bench.db"), SqliteOptions::default()).unwrap(),
    );
    let mut conversations = Vec::new();
    let owner = store.create_user("owner", "hash", 1).await.unwrap().id;
    for i in 0..CONVERSATIONS {
        let peer = store
            .create_user(&format!("peer{i}"), "hash", 1)
            .await
            .unwrap()
            .id;
        let group = store.create_group(owner, "g", &[peer], 1).await.unwrap();
        conversations.push((group.id, peer));
    }

    let begun = Instant::now();
    let mut n = 0;
    while n < TOTAL {
        let batch: Vec<NewMessage> = (n..(n + BATCH).min(TOTAL))
            .map(|i| {
                let (conversation, peer) = conversations[i % CONVERSATIONS];
                let sender = if i % 2 == 0 { owner } else { peer };
                message(conversation, sender, i)
            })
            .collect();
        n += batch.len();
        for item in store.append_messages(batch).await.unwrap() {
            assert!(!item.unwrap().duplicate);
        }
    }
    let elapsed = begun.elapsed();
    let rate = TOTAL as f64 / elapsed.as_secs_f64();
    println!(
        "append_throughput: {TOTAL} messages in batches of {BATCH} over {CONVERSATIONS} \
         conversations in {elapsed:.2?}: {rate:.0} messages/s"
    );
    let last = store
        .conversation(conversations[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.last_seq as usize, TOTAL / CONVERSATIONS);
}
