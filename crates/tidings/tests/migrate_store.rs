//! `tidings admin migrate-store`: a single-node deployment (the real binary on SQLite) is
//! copied into a fresh PostgreSQL database, and the same binary then serves it from PostgreSQL:
//! the accounts sign in with their passwords, tokens issued before still work, conversations,
//! history, friendships and the audit chain are the same, sequences continue where they were,
//! and search finds the copied text (the index is rebuilt). Copying into a database that holds
//! a deployment is refused.
//!
//! Needs PostgreSQL (`PG_TEST_URL`, default 127.0.0.1:5432); fails without it.

use std::path::Path;
use std::time::{Duration, Instant};
use tidings_proto::MessageBody;
use tidings_proto::rest::SearchRequest;
use tidings_sdk::AuthedClient;
use tidings_store_postgres::testing::TestDatabase;
use tidings_testkit::{PASSWORD, ServerProcess};

const ISSUER: (&str, &str) = ("TIDINGS_TOKENS_ISSUER", "http://tidings.test");

async fn all_history(
    api: &AuthedClient,
    id: tidings_proto::ConversationId,
) -> Vec<tidings_proto::Message> {
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = api.history(id, before, 200).await.unwrap();
        before = page.messages.first().map(|m| m.seq);
        stored.splice(0..0, page.messages);
        if !page.has_more {
            return stored;
        }
    }
}

fn migrate(binary: &Path, data: &Path, from: &Path, to: &str) -> std::process::Output {
    std::process::Command::new(binary)
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .arg("migrate-store")
        .arg("--from")
        .arg(format!("sqlite:{}", from.display()))
        .arg("--to")
        .arg(to)
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_moves_to_postgres() {
    let binary = Path::new(env!("CARGO_BIN_EXE_tidings"));
    let data = tempfile::tempdir().unwrap();

    // A single node on SQLite, with some life in it.
    let node = ServerProcess::spawn(binary, data.path(), &[ISSUER])
        .await
        .unwrap();
    let client = node.client();
    let alice = client.register("alice", PASSWORD).await.unwrap();
    let bob = client.register("bob", PASSWORD).await.unwrap();
    let alice_tokens = client.login("alice", PASSWORD, "laptop").await.unwrap();
    let alice_api = client.authed(alice_tokens.access_token.clone());
    let bob_api = client.authed(
        client
            .login("bob", PASSWORD, "phone")
            .await
            .unwrap()
            .access_token,
    );
    let direct = alice_api.open_direct(bob.user_id).await.unwrap().id;
    let group = alice_api
        .create_group("团队", &[bob.user_id])
        .await
        .unwrap()
        .id;
    for n in 0..30 {
        alice_api
            .send(
                direct,
                &format!("d{n}"),
                MessageBody::Text {
                    text: format!("direct {n}"),
                },
            )
            .await
            .unwrap();
    }
    bob_api
        .send(
            group,
            "g0",
            MessageBody::Text {
                text: "新的通讯软件上线了".into(),
            },
        )
        .await
        .unwrap();
    // Rich state: a reaction, an edit (with its history) and a pin.
    bob_api
        .send(
            direct,
            "r1",
            MessageBody::Reaction {
                target: 1,
                key: "👍".into(),
                remove: false,
            },
        )
        .await
        .unwrap();
    alice_api
        .send(
            direct,
            "e2",
            MessageBody::Edit {
                target: 2,
                body: Box::new(MessageBody::Text {
                    text: "direct 1, edited".into(),
                }),
            },
        )
        .await
        .unwrap();
    alice_api
        .send(
            direct,
            "p3",
            MessageBody::Pin {
                target: 3,
                unpin: false,
            },
        )
        .await
        .unwrap();
    let rich_before = format!(
        "{:?} {:?} {:?}",
        alice_api.reactions(direct, 1).await.unwrap(),
        alice_api.edit_history(direct, 2).await.unwrap(),
        alice_api.pins(direct).await.unwrap()
    );
    bob_api
        .send_friend_request(alice.user_id, Some("hi"))
        .await
        .unwrap();
    alice_api.accept_friend_request(bob.user_id).await.unwrap();
    let direct_before = all_history(&alice_api, direct).await;
    let group_before = all_history(&alice_api, group).await;
    let conversations_before = alice_api.conversations().await.unwrap();
    node.terminate().await.unwrap();

    // Copy, then serve the copy from PostgreSQL with the same data directory (the signing key).
    let db = TestDatabase::create().await;
    let sqlite = data.path().join("tidings.db");
    let out = migrate(binary, data.path(), &sqlite, &db.url);
    assert!(
        out.status.success(),
        "migrate-store failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("messages: 34 rows"), "{report}");

    let node = ServerProcess::spawn(
        binary,
        data.path(),
        &[
            ISSUER,
            ("TIDINGS_STORE_KIND", "postgres"),
            ("TIDINGS_STORE_URL", db.url.as_str()),
        ],
    )
    .await
    .unwrap();
    let client = node.client();
    // A token issued by the SQLite deployment is still good, and passwords still work.
    let old_api = client.authed(alice_tokens.access_token.clone());
    assert_eq!(old_api.me().await.unwrap().user_id, alice.user_id);
    let refreshed = client.refresh(&alice_tokens.refresh_token).await.unwrap();
    let alice_api = client.authed(refreshed.access_token);
    client.login("bob", PASSWORD, "tablet").await.unwrap();

    assert_eq!(all_history(&alice_api, direct).await, direct_before);
    assert_eq!(all_history(&alice_api, group).await, group_before);
    let conversations = alice_api.conversations().await.unwrap();
    assert_eq!(
        conversations.conversations.len(),
        conversations_before.conversations.len()
    );
    assert_eq!(alice_api.friends().await.unwrap().friends.len(), 1);
    let rich_after = format!(
        "{:?} {:?} {:?}",
        alice_api.reactions(direct, 1).await.unwrap(),
        alice_api.edit_history(direct, 2).await.unwrap(),
        alice_api.pins(direct).await.unwrap()
    );
    assert_eq!(
        rich_after, rich_before,
        "reactions, edit history and pins came along"
    );

    // Sequences and ids continue where SQLite left them.
    let ack = alice_api
        .send(
            direct,
            "after",
            MessageBody::Text {
                text: "on postgres now".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ack.seq, direct_before.len() as u64 + 1);
    let last_id = direct_before
        .iter()
        .chain(&group_before)
        .map(|m| m.id)
        .max()
        .unwrap();
    let history = all_history(&alice_api, direct).await;
    assert!(history.last().unwrap().id > last_id, "message ids continue");

    // The search index is rebuilt in the background.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let results = alice_api
            .search(&SearchRequest {
                q: "通讯".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if results.hits.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copied messages become searchable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.terminate().await.unwrap();

    // The audit chain came along intact.
    let verify = std::process::Command::new(binary)
        .args(["admin", "--data-dir"])
        .arg(data.path())
        .args(["audit", "verify"])
        .env("TIDINGS_STORE_KIND", "postgres")
        .env("TIDINGS_STORE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // A database that already holds a deployment is never overwritten.
    let again = migrate(binary, data.path(), &sqlite, &db.url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("target_not_empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
