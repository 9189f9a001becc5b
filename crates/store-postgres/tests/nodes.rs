//! Several nodes on one database: two stores with their own pools (as two `tidings serve`
//! processes would have) append batches that span the same conversations, and retry the same
//! client ids on each other. Sequences must stay gap-free per conversation and in commit order,
//! and every client id must be stored once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tidings_proto::{ConversationId, MessageBody, UserId};
use tidings_store::{NewMessage, Store};
use tidings_store_postgres::testing::TestDatabase;

const CONVERSATIONS: usize = 4;
const BATCHES: usize = 60;
const PER_BATCH: usize = 8;

fn message(conversation: ConversationId, sender: UserId, client_msg_id: String) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device_id: tidings_proto::DeviceId(1),
        client_msg_id,
        ts: 1_000,
        body: MessageBody::Text {
            text: "hello".into(),
        },
        relations: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_append_gap_free_and_idempotent() {
    let db = TestDatabase::create().await;
    let node_a = db.store().await;
    let node_b = db.store().await;
    let owner = node_a.create_user("owner", "x", 1).await.unwrap().id;
    let mut groups = Vec::new();
    for i in 0..CONVERSATIONS {
        groups.push(
            node_a
                .create_group(owner, &format!("g{i}"), &[], 1)
                .await
                .unwrap()
                .id,
        );
    }

    // Each node sends the same batches (same client ids), in opposite conversation orders, so
    // every batch races its copy on the other node: one stores it, the other sees duplicates.
    let mut tasks = Vec::new();
    for (node, store) in [(0, Arc::clone(&node_a)), (1, Arc::clone(&node_b))] {
        let groups = groups.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for batch in 0..BATCHES {
                let mut items: Vec<NewMessage> = (0..PER_BATCH)
                    .map(|i| {
                        let conversation = groups[(batch + i) % CONVERSATIONS];
                        message(conversation, owner, format!("b{batch}-{i}"))
                    })
                    .collect();
                if node == 1 {
                    items.reverse();
                }
                let results = store
                    .append_messages(items)
                    .await
                    .expect("the batch commits");
                for result in results {
                    let appended = result.expect("every item is stored or a duplicate");
                    stored.push((appended.message, appended.duplicate));
                }
            }
            stored
        }));
    }
    let mut originals = BTreeMap::new();
    let mut copies = Vec::new();
    for task in tasks {
        for (message, duplicate) in task.await.unwrap() {
            if duplicate {
                copies.push(message);
            } else {
                let key = message.client_msg_id.clone();
                assert!(
                    originals.insert(key, message).is_none(),
                    "a client id was stored twice"
                );
            }
        }
    }
    assert_eq!(
        originals.len(),
        BATCHES * PER_BATCH,
        "every message stored once"
    );
    assert_eq!(
        copies.len(),
        BATCHES * PER_BATCH,
        "every copy answered as a duplicate"
    );
    for copy in &copies {
        assert_eq!(
            originals[&copy.client_msg_id], *copy,
            "a duplicate returns the stored original"
        );
    }
    for &g in &groups {
        let history = node_b.messages_after(g, 0, 10_000).await.unwrap();
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=history.len() as u64).collect::<Vec<_>>(),
            "gap-free from 1"
        );
        let ids: BTreeSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(ids.len(), history.len());
        let conversation = node_a.conversation(g).await.unwrap().unwrap();
        assert_eq!(conversation.last_seq, history.len() as u64);
    }
    drop((node_a, node_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_indexers_on_two_nodes_share_the_work() {
    let db = TestDatabase::create().await;
    let node_a = db.store().await;
    let node_b = db.store().await;
    let owner = node_a.create_user("owner", "x", 1).await.unwrap().id;
    let g = node_a.create_group(owner, "g", &[], 1).await.unwrap().id;
    let total = 300;
    let batch: Vec<NewMessage> = (0..total)
        .map(|i| NewMessage {
            body: MessageBody::Text {
                text: format!("needle {i} 通讯软件"),
            },
            ..message(g, owner, format!("m{i}"))
        })
        .collect();
    node_a.append_messages(batch).await.unwrap();
    let index = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut examined = 0;
            loop {
                let n = store.index_pending(7).await.unwrap();
                if n == 0 {
                    return examined;
                }
                examined += n;
            }
        })
    };
    let (a, b) = (index(Arc::clone(&node_a)), index(Arc::clone(&node_b)));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(
        a + b,
        total as u32,
        "each message indexed once, by one node"
    );
    let hits = node_b
        .search_messages(
            owner,
            tidings_store::SearchQuery {
                text: "通讯软件 NEEDLE".into(),
                conversation: None,
                sender: None,
                since: None,
                until: None,
                limit: 1_000,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), total);
    drop((node_a, node_b));
}
