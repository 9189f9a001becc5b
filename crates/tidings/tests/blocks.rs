//! The block list end to end with real clients: direct messages refused both ways without
//! telling the blocked side why, presence and typing hidden from the blocked user, undone by
//! unblocking.

use std::time::Duration;
use tidings_proto::ErrorCode;
use tidings_proto::ws::{ClientFrame, PresenceStatus, ServerFrame};
use tidings_sdk::{Connection, SdkError};
use tidings_testkit::TestServer;

const WAIT: Duration = Duration::from_secs(10);

fn refusal(err: SdkError) -> String {
    match err {
        SdkError::Server { code, message }
        | SdkError::Problem {
            problem:
                tidings_proto::rest::Problem {
                    code,
                    detail: Some(message),
                    ..
                },
            ..
        } => {
            assert_eq!(code, ErrorCode::Forbidden);
            message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Reads events until `quiet` passes without one; returns them.
async fn drain(conn: &mut Connection, quiet: Duration) -> Vec<ServerFrame> {
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(quiet, conn.next_event()).await {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_block_stops_direct_messages_both_ways_until_lifted() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let alice_ws = server.connect(&alice).await;
    let bob_ws = server.connect(&bob).await;
    bob_ws.send_text(conv.id, "b1", "hi").await.unwrap();

    alice.api.block(bob.user_id).await.unwrap();
    alice.api.block(bob.user_id).await.unwrap(); // Blocking twice is fine.
    let list = alice.api.blocks().await.unwrap();
    assert_eq!(list.users.len(), 1);
    assert_eq!(list.users[0].username, "bob");

    // The blocked side is refused like by anyone who does not accept its messages.
    let message = refusal(bob_ws.send_text(conv.id, "b2", "hello?").await.unwrap_err());
    assert_eq!(message, "this user does not accept messages from you");
    let message = refusal(bob.api.open_direct(alice.user_id).await.unwrap_err());
    assert_eq!(message, "this user does not accept messages from you");
    // The blocker is told why.
    let message = refusal(alice_ws.send_text(conv.id, "a1", "bye").await.unwrap_err());
    assert!(message.contains("unblock"), "{message}");
    assert_eq!(
        bob.api
            .history(conv.id, None, 10)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );

    alice.api.unblock(bob.user_id).await.unwrap();
    assert!(alice.api.blocks().await.unwrap().users.is_empty());
    bob_ws.send_text(conv.id, "b3", "again").await.unwrap();
    alice_ws
        .send_text(conv.id, "a2", "welcome back")
        .await
        .unwrap();

    // Nonsense is refused clearly.
    let err = alice.api.block(alice.user_id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let err = alice
        .api
        .block(tidings_proto::UserId(999_999))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    server.stop().await;
}

#[tokio::test]
async fn the_blocked_user_sees_neither_presence_nor_typing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let group = alice
        .api
        .create_group("three", &[bob.user_id, carol.user_id])
        .await
        .unwrap();
    alice.api.block(bob.user_id).await.unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let mut carol_ws = server.connect(&carol).await;
    drain(&mut bob_ws, Duration::from_millis(200)).await;
    drain(&mut carol_ws, Duration::from_millis(200)).await;

    let alice_ws = server.connect(&alice).await;
    alice_ws
        .request(|id| ClientFrame::Typing {
            id: Some(id),
            conversation_id: group.id,
            typing: true,
        })
        .await
        .unwrap();
    // Carol sees Alice arrive and type.
    let mut carol_saw = (false, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while carol_saw != (true, true) {
        match tokio::time::timeout_at(deadline, carol_ws.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            ServerFrame::Presence { presence } if presence.user_id == alice.user_id => {
                assert_eq!(presence.status, PresenceStatus::Online);
                carol_saw.0 = true;
            }
            ServerFrame::Typing { user_id, .. } if user_id == alice.user_id => carol_saw.1 = true,
            _ => {}
        }
    }
    // Bob sees neither, and asking for Alice's presence leaves her out.
    for event in drain(&mut bob_ws, Duration::from_millis(300)).await {
        match event {
            ServerFrame::Presence { presence } => assert_ne!(presence.user_id, alice.user_id),
            ServerFrame::Typing { user_id, .. } => assert_ne!(user_id, alice.user_id),
            _ => {}
        }
    }
    match bob_ws
        .request(|id| ClientFrame::PresenceQuery {
            id,
            user_ids: vec![alice.user_id, carol.user_id],
        })
        .await
        .unwrap()
    {
        ServerFrame::PresenceList { users, .. } => {
            let ids: Vec<_> = users.iter().map(|p| p.user_id).collect();
            assert_eq!(ids, vec![carol.user_id]);
        }
        other => panic!("{other:?}"),
    }
    // Group messages still flow: a block is about direct contact, not shared groups.
    alice_ws
        .send_text(group.id, "g1", "hello all")
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Message { message } = event {
            assert_eq!(message.client_msg_id, "g1");
            break;
        }
    }
    server.stop().await;
}
