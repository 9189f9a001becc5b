//! Messaging over real sockets: live delivery, acks, idempotent retries, history, receipts, typing.

use std::time::Duration;
use tidings_proto::ws::{ClientFrame, ReceiptKind, ServerFrame};
use tidings_proto::{ErrorCode, MessageBody};
use tidings_sdk::Cursors;
use tidings_testkit::{TestServer, next_message};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn direct_message_is_acked_then_delivered_to_every_device() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alice_phone = server.second_device(&alice, "phone").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    // Opening it again returns the same conversation, from either side.
    assert_eq!(
        bob.api.open_direct(alice.user_id).await.unwrap().id,
        conv.id
    );

    let alice_ws = server.connect(&alice).await;
    let mut phone_ws = server.connect(&alice_phone).await;
    let mut bob_ws = server.connect(&bob).await;

    let (seq, duplicate) = alice_ws
        .send_text(conv.id, "m-1", "hello bob")
        .await
        .unwrap();
    assert_eq!((seq, duplicate), (1, false));
    let got = next_message(&mut bob_ws).await;
    assert_eq!(got.seq, 1);
    assert_eq!(got.sender_id, alice.user_id);
    assert_eq!(
        got.body,
        MessageBody::Text {
            text: "hello bob".into()
        }
    );
    // The sender's other device gets it too.
    assert_eq!(next_message(&mut phone_ws).await.id, got.id);

    // A retry with the same client_msg_id returns the original ack and stores nothing.
    let (seq, duplicate) = alice_ws
        .send_text(conv.id, "m-1", "hello bob")
        .await
        .unwrap();
    assert_eq!((seq, duplicate), (1, true));
    let (seq, _) = bob_ws.send_text(conv.id, "b-1", "hi alice").await.unwrap();
    assert_eq!(seq, 2);
    let history = bob.api.history(conv.id, None, 50).await.unwrap();
    assert_eq!(history.messages.len(), 2);
    assert!(!history.has_more);

    // Unread counts exclude one's own messages; a read receipt clears them and is fanned out.
    let list = alice.api.conversations().await.unwrap();
    assert_eq!(list.conversations[0].unread, 1);
    assert_eq!(list.conversations[0].last_message.as_ref().unwrap().seq, 2);
    alice_ws
        .request(|id| ClientFrame::Receipt {
            id,
            conversation_id: conv.id,
            receipt: ReceiptKind::Read,
            seq: 2,
        })
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Receipt {
            user_id,
            receipt,
            seq,
            ..
        } = event
        {
            assert_eq!(
                (user_id, receipt, seq),
                (alice.user_id, ReceiptKind::Read, 2)
            );
            break;
        }
    }
    assert_eq!(
        alice.api.conversations().await.unwrap().conversations[0].unread,
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn group_messages_reach_members_in_one_order() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let a = server.user("member-a").await;
    let b = server.user("member-b").await;
    let outsider = server.user("outsider").await;
    let group = owner
        .api
        .create_group("team", &[a.user_id, b.user_id])
        .await
        .unwrap();
    assert_eq!(group.member_count, 3);
    let mut conns = [
        server.connect(&owner).await,
        server.connect(&a).await,
        server.connect(&b).await,
    ];
    // Everyone sends concurrently; everyone must see the same sequence.
    let mut sends = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        for n in 0..20 {
            let (id, text) = (format!("{i}-{n}"), format!("message {i}-{n}"));
            let group_id = group.id;
            sends.push(async move { conn.send_text(group_id, &id, &text).await });
        }
    }
    let acks = futures_util::future::join_all(sends).await;
    assert!(acks.iter().all(|a| a.is_ok()));
    let mut seqs: Vec<u64> = acks.iter().map(|a| a.as_ref().unwrap().0).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    // Each connection receives the messages it did not send, in sequence order, once.
    for conn in conns.iter_mut() {
        let mut last = 0;
        for _ in 0..40 {
            let m = next_message(conn).await;
            assert!(m.seq > last, "out of order: {} after {last}", m.seq);
            last = m.seq;
        }
    }
    // Outsiders cannot see or write, and cannot tell the group exists.
    let err = outsider.api.history(group.id, None, 10).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let outsider_ws = server.connect(&outsider).await;
    let err = outsider_ws
        .send_text(group.id, "x", "let me in")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    // Once the owner keeps invitations to admins, members cannot add people; the owner can,
    // and the newcomer is told live.
    let permissions = tidings_proto::rest::GroupPermissions {
        invite: tidings_proto::rest::Role::Admin,
        ..Default::default()
    };
    owner
        .api
        .set_group_permissions(group.id, &permissions)
        .await
        .unwrap();
    let err = a
        .api
        .add_members(group.id, &[outsider.user_id])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let mut outsider_ws = outsider_ws;
    owner
        .api
        .add_members(group.id, &[outsider.user_id])
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, outsider_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Conversation { conversation } = event {
            assert_eq!(conversation.id, group.id);
            break;
        }
    }
    outsider_ws
        .send_text(group.id, "x", "thanks")
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn typing_is_relayed_but_never_stored() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    alice_ws
        .request(|id| ClientFrame::Typing {
            id: Some(id),
            conversation_id: conv.id,
            typing: true,
        })
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Typing {
            user_id, typing, ..
        } = event
        {
            assert_eq!((user_id, typing), (alice.user_id, true));
            break;
        }
    }
    assert_eq!(conv.last_seq, 0);
    assert!(
        bob.api
            .history(conv.id, None, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn offline_user_syncs_exactly_what_they_missed() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let direct = alice.api.open_direct(bob.user_id).await.unwrap();
    let group = alice
        .api
        .create_group("trio", &[bob.user_id, carol.user_id])
        .await
        .unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let alice_ws = server.connect(&alice).await;
    // Bob sees the first few live, then goes away.
    for i in 1..=3 {
        alice_ws
            .send_text(direct.id, &format!("d{i}"), "early")
            .await
            .unwrap();
    }
    let mut cursors = Cursors::default();
    for _ in 0..3 {
        let m = next_message(&mut bob_ws).await;
        cursors.observe(m.conversation_id, m.seq);
    }
    bob_ws.close();
    drop(bob_ws);
    for i in 4..=700 {
        alice_ws
            .send_text(direct.id, &format!("d{i}"), "while away")
            .await
            .unwrap();
    }
    for i in 1..=50 {
        alice_ws
            .send_text(group.id, &format!("g{i}"), "group while away")
            .await
            .unwrap();
    }
    let mut bob_ws = server.connect(&bob).await;
    let (conversations, messages) = {
        let sync = bob_ws.sync(&cursors, None);
        sync.await.unwrap()
    };
    assert_eq!((conversations, messages), (2, 697 + 50));
    let mut seen = Cursors::default();
    let mut count = 0;
    while let Some(event) = bob_ws.try_next_event() {
        if let ServerFrame::Message { message } = event {
            assert!(
                seen.observe(message.conversation_id, message.seq),
                "duplicate {message:?}"
            );
            let expected_from = if message.conversation_id == direct.id {
                4
            } else {
                1
            };
            if seen.get(message.conversation_id) == message.seq && count == 0 {
                assert_eq!(message.seq, expected_from);
            }
            count += 1;
        }
    }
    assert_eq!(count, 747);
    assert_eq!(seen.get(direct.id), 700);
    assert_eq!(seen.get(group.id), 50);
    // With a limit, only the newest messages come, after a gap marker.
    let mut carol_ws = server.connect(&carol).await;
    let (_, messages) = carol_ws.sync(&Cursors::default(), Some(10)).await.unwrap();
    assert_eq!(messages, 10);
    let mut gap = None;
    while let Some(event) = carol_ws.try_next_event() {
        if let ServerFrame::Gap {
            from_seq, to_seq, ..
        } = event
        {
            gap = Some((from_seq, to_seq));
        }
    }
    assert_eq!(gap, Some((1, 40)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sync_keeps_live_traffic_and_requests_flowing() {
    // A small queue: if live events waited for the whole sync, they would overflow it.
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue = 16;
        c.limits.sync_page = 64;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let backlog = alice.api.open_direct(bob.user_id).await.unwrap();
    let live = carol.api.open_direct(bob.user_id).await.unwrap();
    let alice_ws = server.connect(&alice).await;
    for i in 0..3000 {
        alice_ws
            .send_text(backlog.id, &format!("b{i}"), "backlog")
            .await
            .unwrap();
    }
    let carol_ws = server.connect(&carol).await;
    let mut bob_ws = server.connect(&bob).await;
    // Carol talks to Bob while he catches up.
    let chatter = tokio::spawn(async move {
        for i in 0..200 {
            carol_ws
                .send_text(live.id, &format!("c{i}"), "live")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        carol_ws
    });
    bob_ws.sync(&Cursors::default(), None).await.unwrap();
    // Bob sends while live traffic flows; his own message reaches his other devices, while
    // this one learns its sequence from the ack.
    let (own_seq, _) = bob_ws
        .send_text(live.id, "from-bob", "hi carol")
        .await
        .unwrap();
    let _carol_ws = chatter.await.unwrap();
    // Everything arrives exactly once, in order per conversation, and the connection lived.
    let mut seen = Cursors::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.get(backlog.id) < 3000 || seen.get(live.id) < 201 {
        if seen.get(live.id) + 1 == own_seq {
            seen.observe(live.id, own_seq);
            continue;
        }
        let event = tokio::time::timeout_at(deadline, bob_ws.next_event())
            .await
            .expect("all messages in time")
            .expect("connection stays open");
        if let ServerFrame::Message { message } = event {
            let before = seen.get(message.conversation_id);
            assert!(
                seen.observe(message.conversation_id, message.seq),
                "duplicate {}",
                message.seq
            );
            assert_eq!(message.seq, before + 1, "gap");
        }
    }
    assert!(bob_ws.close_reason().is_none());
    server.stop().await;
}

#[tokio::test]
async fn sync_announces_conversations_joined_while_away_even_when_empty() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let group = alice
        .api
        .create_group("quiet", &[bob.user_id])
        .await
        .unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let (conversations, messages) = bob_ws.sync(&Cursors::default(), None).await.unwrap();
    assert_eq!((conversations, messages), (1, 0));
    let mut announced = false;
    while let Some(event) = bob_ws.try_next_event() {
        if let ServerFrame::Conversation { conversation } = event {
            announced |= conversation.id == group.id;
        }
    }
    assert!(announced);
    server.stop().await;
}

#[tokio::test]
async fn an_ack_before_the_first_sync_does_not_make_later_syncs_repeat() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let bob_ws = server.connect(&bob).await;
    for n in 1..=4 {
        bob_ws
            .send_text(conv.id, &format!("b-{n}"), "earlier")
            .await
            .unwrap();
    }
    let mut alice_ws = server.connect(&alice).await;
    // After a reconnect Alice resends an unacknowledged message, then syncs from her cursor; the
    // ack arrives first, before the connection knows her position.
    let (seq, _) = alice_ws.send_text(conv.id, "a-5", "resent").await.unwrap();
    assert_eq!(seq, 5);
    let mut cursors = Cursors::default();
    cursors.observe(conv.id, 4);
    assert_eq!(alice_ws.sync(&cursors, None).await.unwrap(), (1, 0));
    while alice_ws.try_next_event().is_some() {}
    for n in 6..=8 {
        bob_ws
            .send_text(conv.id, &format!("b-{n}"), "live")
            .await
            .unwrap();
        assert_eq!(next_message(&mut alice_ws).await.seq, n);
    }
    // Everything up to 8 came over this connection, so a sync from an older cursor neither
    // repeats it nor announces part of it as a gap.
    cursors.observe(conv.id, 5);
    let done = alice_ws.sync(&cursors, Some(1)).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = alice_ws.try_next_event() {
        events.push(event);
    }
    assert_eq!(done, (0, 0), "{events:?}");
    server.stop().await;
}

/// The documented recovery for a hole seen before the first sync (protocol 8.5, case 1) is to
/// sync; the sync must then deliver the missing messages.
#[tokio::test]
async fn a_sync_after_a_live_message_fills_the_hole_below_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let bob_ws = server.connect(&bob).await;
    for n in 1..=3 {
        bob_ws
            .send_text(conv.id, &format!("b-{n}"), "while away")
            .await
            .unwrap();
    }
    let mut alice_ws = server.connect(&alice).await;
    bob_ws.send_text(conv.id, "b-4", "live").await.unwrap();
    assert_eq!(next_message(&mut alice_ws).await.seq, 4);
    // Alice holds nothing before 4; she syncs with cursor 0.
    let (_, messages) = alice_ws.sync(&Cursors::default(), None).await.unwrap();
    let mut got = Vec::new();
    while let Some(event) = alice_ws.try_next_event() {
        if let ServerFrame::Message { message } = event {
            got.push(message.seq);
        }
    }
    assert_eq!((messages, got), (3, vec![1, 2, 3]));
    server.stop().await;
}

#[tokio::test]
async fn read_receipts_made_while_away_arrive_on_sync() {
    use tidings_proto::ws::{ClientFrame, Cursor, ReceiptKind};
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let alice_ws = server.connect(&alice).await;
    for i in 1..=3 {
        alice_ws
            .send_text(conv.id, &format!("a{i}"), "hello")
            .await
            .unwrap();
    }
    alice_ws.close();
    drop(alice_ws);
    // Bob reads everything while Alice is away.
    let bob_ws = server.connect(&bob).await;
    bob_ws
        .request(|id| ClientFrame::Receipt {
            id,
            conversation_id: conv.id,
            receipt: ReceiptKind::Read,
            seq: 3,
        })
        .await
        .unwrap();
    let sync = |peer_read_seq| {
        move |id| ClientFrame::Sync {
            id,
            cursors: vec![Cursor {
                conversation_id: conv.id,
                seq: 3,
                peer_read_seq,
            }],
            limit_per_conversation: None,
            contacts_version: None,
        }
    };
    // Alice has every message; she last saw Bob's read marker at 0.
    let mut alice_ws = server.connect(&alice).await;
    let done = alice_ws.request(sync(Some(0))).await.unwrap();
    assert!(
        matches!(
            done,
            ServerFrame::SyncDone {
                conversations: 1,
                messages: 0,
                ..
            }
        ),
        "{done:?}"
    );
    let mut header = None;
    while let Some(event) = alice_ws.try_next_event() {
        if let ServerFrame::Conversation { conversation } = event {
            header = Some(conversation);
        }
    }
    let header = header.expect("a header for the conversation whose receipts moved");
    assert_eq!(
        (header.peer_read_seq, header.peer_delivered_seq),
        (Some(3), Some(3))
    );
    // Once she has seen it, the next sync has nothing to say.
    let done = alice_ws.request(sync(Some(3))).await.unwrap();
    assert!(
        matches!(
            done,
            ServerFrame::SyncDone {
                conversations: 0,
                messages: 0,
                ..
            }
        ),
        "{done:?}"
    );
    // The REST list shows the same marks.
    let list = alice.api.conversations().await.unwrap();
    assert_eq!(list.conversations[0].peer_read_seq, Some(3));
    server.stop().await;
}

/// A client may pipeline sends without waiting for acks; the server must still commit them in
/// the order they were sent. A file message pays for store lookups before it is sequenced and a
/// text message does not, so without ordering the text sent second would overtake the file.
#[tokio::test]
async fn pipelined_sends_commit_in_the_order_they_were_sent() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let file = alice
        .api
        .upload(b"meeting notes", "notes.txt")
        .await
        .unwrap();
    let mut alice_ws = server.connect(&alice).await;
    // The first send fills the conversation's caches, so a text message needs no store read.
    alice_ws.send_text(conv.id, "warm", "first").await.unwrap();
    let frame = |id: String, body: MessageBody| {
        serde_json::to_string(&ClientFrame::Send {
            id: id.clone(),
            conversation_id: conv.id,
            client_msg_id: id,
            body,
            reply_to: None,
            thread_root: None,
            mentions: None,
        })
        .unwrap()
    };
    const ROUNDS: usize = 20;
    let mut order = Vec::new();
    for round in 0..ROUNDS {
        let file_body = MessageBody::File {
            file_id: file.clone(),
            name: "notes.txt".into(),
            size: 1,
            content_type: "text/plain".into(),
            width: None,
            height: None,
        };
        let text_body = MessageBody::Text {
            text: format!("after the file of round {round}"),
        };
        for (id, body) in [
            (format!("file-{round}"), file_body),
            (format!("text-{round}"), text_body),
        ] {
            alice_ws.send_raw(frame(id.clone(), body)).unwrap();
            order.push(id);
        }
    }
    let mut seqs = std::collections::HashMap::new();
    while seqs.len() < order.len() {
        match tokio::time::timeout(WAIT, alice_ws.next_event()).await {
            Ok(Some(ServerFrame::Ack { id, seq, .. })) => {
                seqs.insert(id, seq);
            }
            Ok(Some(ServerFrame::Error { id, code, .. })) => panic!("{id:?} refused: {code:?}"),
            Ok(Some(_)) => {}
            other => panic!("no ack: {other:?}"),
        }
    }
    let committed: Vec<_> = order.iter().map(|id| seqs[id]).collect();
    let expected: Vec<u64> = (2..2 + order.len() as u64).collect();
    assert_eq!(committed, expected, "sequences in send order: {order:?}");
    server.stop().await;
}
