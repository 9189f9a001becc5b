//! Connection-level behaviour: slow consumers, presence, token expiry, reconnect and resync.

use std::time::Duration;
use tidings_proto::ErrorCode;
use tidings_proto::ws::{ClientFrame, PresenceStatus, ServerFrame};
use tidings_sdk::{ConnectOptions, Connection, Cursors};
use tidings_testkit::TestServer;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_alone_and_resyncs_without_loss() {
    let server = TestServer::start_with(|c| c.limits.outbound_queue = 8).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    // Bob's slow device stops reading as soon as one event is buffered on the client side;
    // his fast device reads everything.
    let slow_options = ConnectOptions {
        event_buffer: 1,
        read_buffer: 1024,
        ..ConnectOptions::default()
    };
    let mut slow = Connection::connect_with(
        &server.client().ws_url(),
        &bob.tokens.access_token,
        &slow_options,
    )
    .await
    .unwrap();
    let bob_fast = server.second_device(&bob, "fast").await;
    let mut fast = server.connect(&bob_fast).await;
    let sender = server.connect(&alice).await;
    let text = "x".repeat(32 * 1024);
    let total = 400u64;
    let fast_reader = tokio::spawn(async move {
        let mut cursors = Cursors::default();
        while cursors.get(conv.id) < total {
            match tokio::time::timeout(WAIT, fast.next_event())
                .await
                .expect("fast reader keeps getting messages")
            {
                Some(ServerFrame::Message { message }) => {
                    assert!(cursors.observe(message.conversation_id, message.seq));
                    assert_eq!(message.seq, cursors.get(conv.id));
                }
                Some(_) => {}
                None => panic!("the fast connection must stay open"),
            }
        }
    });
    for i in 0..total {
        sender
            .send_text(conv.id, &format!("m{i}"), &text)
            .await
            .unwrap();
    }
    fast_reader.await.unwrap();
    // Drain the slow connection: it ends with a slow_consumer error and close code 4008.
    let mut cursors = Cursors::default();
    let mut saw_error = false;
    tokio::time::timeout(WAIT, async {
        while let Some(event) = slow.next_event().await {
            match event {
                ServerFrame::Message { message } => {
                    assert!(cursors.observe(message.conversation_id, message.seq));
                }
                ServerFrame::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::SlowConsumer);
                    saw_error = true;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the slow connection is closed by the server");
    assert!(saw_error);
    assert_eq!(slow.close_reason().map(|r| r.0), Some(4008));
    assert!(
        cursors.get(conv.id) < total,
        "the slow client missed something"
    );
    // Reconnect and sync: exactly the rest arrives.
    let mut again = server.connect(&bob).await;
    let (_, synced) = again.sync(&cursors, None).await.unwrap();
    assert_eq!(synced, total - cursors.get(conv.id));
    while let Some(event) = again.try_next_event() {
        if let ServerFrame::Message { message } = event {
            assert!(cursors.observe(message.conversation_id, message.seq));
        }
    }
    assert_eq!(cursors.get(conv.id), total);
    server.stop().await;
}

async fn next_presence(
    conn: &mut Connection,
) -> (tidings_proto::UserId, PresenceStatus, Option<i64>) {
    loop {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Presence { presence } = event {
            return (presence.user_id, presence.status, presence.last_seen);
        }
    }
}

#[tokio::test]
async fn presence_reaches_only_users_who_share_a_conversation_or_are_friends() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let friend = server.user("friend").await;
    let stranger = server.user("stranger").await;
    alice.api.open_direct(bob.user_id).await.unwrap();
    // A friend alice has never written to: no conversation between them.
    alice
        .api
        .send_friend_request(friend.user_id, None)
        .await
        .unwrap();
    friend
        .api
        .accept_friend_request(alice.user_id)
        .await
        .unwrap();
    let mut alice_ws = server.connect(&alice).await;
    let mut stranger_ws = server.connect(&stranger).await;
    let bob_ws = server.connect(&bob).await;
    assert_eq!(
        next_presence(&mut alice_ws).await,
        (bob.user_id, PresenceStatus::Online, None)
    );
    let _friend_ws = server.connect(&friend).await;
    assert_eq!(
        next_presence(&mut alice_ws).await,
        (friend.user_id, PresenceStatus::Online, None)
    );
    // Asking works for people one shares a conversation with and for friends; others are
    // left out.
    let answer = alice_ws
        .request(|id| ClientFrame::PresenceQuery {
            id,
            user_ids: vec![bob.user_id, stranger.user_id, friend.user_id],
        })
        .await
        .unwrap();
    match answer {
        ServerFrame::PresenceList { users, .. } => {
            let seen: Vec<_> = users.iter().map(|p| (p.user_id, p.status)).collect();
            let mut expected = vec![
                (bob.user_id, PresenceStatus::Online),
                (friend.user_id, PresenceStatus::Online),
            ];
            expected.sort_by_key(|(id, _)| *id);
            assert_eq!(seen, expected);
        }
        other => panic!("{other:?}"),
    }
    bob_ws.close();
    drop(bob_ws);
    let (user, status, last_seen) = next_presence(&mut alice_ws).await;
    assert_eq!((user, status), (bob.user_id, PresenceStatus::Offline));
    assert!(last_seen.is_some());
    // The stranger heard nothing about Bob.
    while let Some(event) = stranger_ws.try_next_event() {
        assert!(
            !matches!(event, ServerFrame::Presence { .. }),
            "leaked {event:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_and_a_refreshed_one_extends_it() {
    let server = TestServer::start_with(|c| c.tokens.access_ttl_secs = 10).await;
    let alice = server.user("alice").await;
    let mut kept = server.connect(&alice).await;
    let mut lapsed = server.connect(&alice).await;
    // Refresh before expiry and re-authenticate the first connection only.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = server
        .client()
        .refresh(&alice.tokens.refresh_token)
        .await
        .unwrap();
    kept.authenticate(&fresh.access_token).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut code = None;
        while let Some(event) = lapsed.next_event().await {
            if let ServerFrame::Error { code: c, .. } = event {
                code = Some(c);
            }
        }
        code
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(ErrorCode::TokenExpired));
    assert_eq!(lapsed.close_reason().map(|r| r.0), Some(4002));
    // The re-authenticated connection outlives the first token.
    let pong = kept.request(|id| ClientFrame::Ping { id }).await.unwrap();
    assert!(matches!(pong, ServerFrame::Pong { .. }));
    server.stop().await;
}

/// A transport stops polling its session while it awaits something else (a socket write, a
/// core call of its own: the XMPP gateway binding a resource). Reads the session had started
/// must not hold the store's read pool meanwhile: here sixteen sessions each start a sync,
/// are polled once so every read is queued for the pool, and are never polled again; reads
/// by everyone else must still complete. (Before the SQLite read pool waited for its slots
/// on tasks of its own, the slots went to those unpolled reads and every later read in the
/// server waited for ever: the XMPP gateway stalled after a few dozen sign-ins.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_sessions_nobody_polls_never_hold_up_other_reads() {
    use std::future::Future;
    use tidings_core::session::Session;
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap().id;
    alice
        .api
        .send(
            conv,
            "m1",
            tidings_proto::MessageBody::Text { text: "hi".into() },
        )
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let mut session = Session::new(server.core().clone());
        let auth = ClientFrame::Auth {
            id: "a".into(),
            token: alice.tokens.access_token.clone(),
        };
        session.handle_text(&serde_json::to_string(&auth).unwrap());
        loop {
            let out = tokio::time::timeout(Duration::from_secs(10), session.next_output())
                .await
                .expect("auth answered");
            if let tidings_core::session::Output::Frame(text) = out
                && text.as_str().contains("auth_ok")
            {
                break;
            }
        }
        sessions.push(session);
    }
    for session in &mut sessions {
        session.handle_text(r#"{"type":"sync","id":"s","cursors":[]}"#);
    }
    // One poll each, all in the same instant, so more reads are queued than the pool has
    // connections; then none of these sessions is polled again while the test reads.
    std::future::poll_fn(|cx| {
        for session in &mut sessions {
            let next = std::pin::pin!(session.next_output());
            let _ = next.poll(cx);
        }
        std::task::Poll::Ready(())
    })
    .await;
    for round in 0..20 {
        tokio::time::timeout(Duration::from_secs(10), bob.api.conversations())
            .await
            .unwrap_or_else(|_| panic!("read {round} waited for sessions nobody polls"))
            .unwrap();
    }
    drop(sessions);
    server.stop().await;
}
