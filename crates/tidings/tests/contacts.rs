//! Friends, friend requests and privacy settings end to end with real clients: requests and
//! answers reach every device of both users live, offline users catch up on sync, blocks and
//! friends-only settings refuse with the same words, presence follows the setting, and
//! requests are rate limited.

use std::time::Duration;
use tidings_proto::contacts::{
    ContactEvent, ContactsSnapshot, DirectMessages, FriendRequestOutcome, UpdatePrivacyRequest,
    Visibility,
};
use tidings_proto::ws::{ClientFrame, Presence, PresenceStatus, ServerFrame};
use tidings_proto::{ErrorCode, UserId};
use tidings_sdk::{Connection, Cursors, SdkError};
use tidings_testkit::{TestServer, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// The refusal of a user who does not accept the caller's messages, whatever the reason.
const NOT_ACCEPTED: &str = "this user does not accept messages from you";

/// The next `contact` event on a connection, skipping others (presence and the like).
async fn next_contact(conn: &mut Connection) -> (ContactEvent, u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, conn.next_event())
            .await
            .expect("a contact event in time")
            .expect("the connection is open");
        if let ServerFrame::Contact { event, version } = event {
            return (event, version);
        }
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

/// A refusal's code and message, from REST or WebSocket.
fn refusal(err: SdkError) -> (ErrorCode, String) {
    match err {
        SdkError::Server { code, message } => (code, message),
        SdkError::Problem { problem, .. } => (problem.code, problem.detail.unwrap_or_default()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn befriend(a: &TestUser, b: &TestUser) {
    a.api.send_friend_request(b.user_id, None).await.unwrap();
    b.api.accept_friend_request(a.user_id).await.unwrap();
}

#[tokio::test]
async fn requests_and_answers_reach_every_device_of_both_sides_live() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice_phone = server.second_device(&alice, "phone").await;
    let bob = server.user("bob").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut alice_phone_ws = server.connect(&alice_phone).await;
    let mut bob_ws = server.connect(&bob).await;

    let outcome = alice
        .api
        .send_friend_request(bob.user_id, Some("  we met at the meetup "))
        .await
        .unwrap();
    assert_eq!(outcome, FriendRequestOutcome::Sent);
    let (event, bob_version) = next_contact(&mut bob_ws).await;
    let ContactEvent::RequestReceived { request } = event else {
        panic!("{event:?}")
    };
    assert_eq!(request.from.username, "alice");
    assert_eq!(request.to.user_id, bob.user_id);
    assert_eq!(request.note.as_deref(), Some("we met at the meetup"));
    assert!(bob_version > 0);
    for ws in [&mut alice_ws, &mut alice_phone_ws] {
        let (event, _) = next_contact(ws).await;
        assert!(
            matches!(&event, ContactEvent::RequestSent { request } if request.to.username == "bob"),
            "{event:?}"
        );
    }
    let lists = bob.api.friend_requests().await.unwrap();
    assert_eq!(lists.incoming, vec![request.clone()]);
    assert!(lists.outgoing.is_empty());
    assert_eq!(
        alice.api.friend_requests().await.unwrap().outgoing,
        vec![request]
    );

    // Asking twice, asking oneself and asking nobody are refused clearly.
    let again = alice.api.send_friend_request(bob.user_id, None).await;
    assert_eq!(again.unwrap_err().code(), Some(ErrorCode::Conflict));
    let own = alice.api.send_friend_request(alice.user_id, None).await;
    assert_eq!(own.unwrap_err().code(), Some(ErrorCode::InvalidField));
    let nobody = alice.api.send_friend_request(UserId(999_999), None).await;
    assert_eq!(nobody.unwrap_err().code(), Some(ErrorCode::NotFound));
    let long = "x".repeat(201);
    let too_long = alice
        .api
        .send_friend_request(bob.user_id, Some(&long))
        .await;
    assert_eq!(too_long.unwrap_err().code(), Some(ErrorCode::InvalidField));
    // Only the recipient can accept.
    let wrong_side = alice.api.accept_friend_request(bob.user_id).await;
    assert_eq!(wrong_side.unwrap_err().code(), Some(ErrorCode::NotFound));

    bob.api.accept_friend_request(alice.user_id).await.unwrap();
    for (ws, other) in [
        (&mut bob_ws, "alice"),
        (&mut alice_ws, "bob"),
        (&mut alice_phone_ws, "bob"),
    ] {
        let (event, _) = next_contact(ws).await;
        assert!(
            matches!(&event, ContactEvent::RequestAccepted { friend } if friend.username == other),
            "{event:?}"
        );
    }
    let friends = alice.api.friends().await.unwrap().friends;
    assert_eq!(friends.len(), 1);
    assert_eq!(friends[0].user_id, bob.user_id);
    assert_eq!(
        bob.api.friends().await.unwrap().friends[0].username,
        "alice"
    );
    assert!(bob.api.friend_requests().await.unwrap().incoming.is_empty());
    let already = bob.api.send_friend_request(alice.user_id, None).await;
    assert_eq!(already.unwrap_err().code(), Some(ErrorCode::Conflict));

    bob.api.remove_friend(alice.user_id).await.unwrap();
    for (ws, gone) in [
        (&mut bob_ws, alice.user_id),
        (&mut alice_ws, bob.user_id),
        (&mut alice_phone_ws, bob.user_id),
    ] {
        let (event, _) = next_contact(ws).await;
        assert_eq!(event, ContactEvent::FriendRemoved { user_id: gone });
    }
    assert!(alice.api.friends().await.unwrap().friends.is_empty());
    let twice = bob.api.remove_friend(alice.user_id).await;
    assert_eq!(twice.unwrap_err().code(), Some(ErrorCode::NotFound));
    server.stop().await;
}

#[tokio::test]
async fn decline_cancel_and_crossing_requests() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    let (alice_id, bob_id) = (alice.user_id, bob.user_id);

    alice.api.send_friend_request(bob_id, None).await.unwrap();
    next_contact(&mut bob_ws).await;
    next_contact(&mut alice_ws).await;
    bob.api.decline_friend_request(alice_id).await.unwrap();
    let declined = ContactEvent::RequestDeclined {
        from: alice_id,
        to: bob_id,
    };
    assert_eq!(next_contact(&mut alice_ws).await.0, declined);
    assert_eq!(next_contact(&mut bob_ws).await.0, declined);
    assert!(
        alice
            .api
            .friend_requests()
            .await
            .unwrap()
            .outgoing
            .is_empty()
    );

    // A declined request may be sent again, and withdrawn.
    alice.api.send_friend_request(bob_id, None).await.unwrap();
    next_contact(&mut bob_ws).await;
    next_contact(&mut alice_ws).await;
    alice.api.cancel_friend_request(bob_id).await.unwrap();
    let cancelled = ContactEvent::RequestCancelled {
        from: alice_id,
        to: bob_id,
    };
    assert_eq!(next_contact(&mut bob_ws).await.0, cancelled);
    assert_eq!(next_contact(&mut alice_ws).await.0, cancelled);
    assert!(bob.api.friend_requests().await.unwrap().incoming.is_empty());
    let nothing = alice.api.cancel_friend_request(bob_id).await;
    assert_eq!(nothing.unwrap_err().code(), Some(ErrorCode::NotFound));

    // Asking someone who already asked you makes you friends at once.
    bob.api.send_friend_request(alice_id, None).await.unwrap();
    next_contact(&mut bob_ws).await;
    next_contact(&mut alice_ws).await;
    let outcome = alice.api.send_friend_request(bob_id, None).await.unwrap();
    assert_eq!(outcome, FriendRequestOutcome::BecameFriends);
    for ws in [&mut alice_ws, &mut bob_ws] {
        let (event, _) = next_contact(ws).await;
        assert!(
            matches!(event, ContactEvent::RequestAccepted { .. }),
            "{event:?}"
        );
    }
    assert_eq!(alice.api.friends().await.unwrap().friends.len(), 1);
    server.stop().await;
}

/// Syncs with a contacts version and returns the snapshot the server sent, if any.
async fn sync_contacts(conn: &mut Connection, held: Option<u64>) -> Option<ContactsSnapshot> {
    drain(conn, Duration::from_millis(100)).await;
    conn.sync_with_contacts(&Cursors::default(), None, held)
        .await
        .unwrap();
    // Events are delivered before the answer to the sync.
    let mut snapshot = None;
    while let Some(event) = conn.try_next_event() {
        if let ServerFrame::Contacts { contacts } = event {
            snapshot = Some(contacts);
        }
    }
    snapshot
}

#[tokio::test]
async fn an_offline_user_sees_contact_changes_on_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    // Bob is away while Alice asks him and he has a friend request out to Carol, who accepts.
    alice
        .api
        .send_friend_request(bob.user_id, Some("hi bob"))
        .await
        .unwrap();
    bob.api
        .send_friend_request(carol.user_id, None)
        .await
        .unwrap();
    carol.api.accept_friend_request(bob.user_id).await.unwrap();

    let mut bob_ws = server.connect(&bob).await;
    let snapshot = sync_contacts(&mut bob_ws, Some(0))
        .await
        .expect("a snapshot for a client holding none");
    assert_eq!(snapshot.incoming.len(), 1);
    assert_eq!(snapshot.incoming[0].from.user_id, alice.user_id);
    assert_eq!(snapshot.incoming[0].note.as_deref(), Some("hi bob"));
    assert!(snapshot.outgoing.is_empty());
    assert_eq!(snapshot.friends.len(), 1);
    assert_eq!(snapshot.friends[0].username, "carol");
    // Up to date: nothing is sent; without a version, contacts are left out.
    assert_eq!(
        sync_contacts(&mut bob_ws, Some(snapshot.version)).await,
        None
    );
    assert_eq!(sync_contacts(&mut bob_ws, None).await, None);
    drop(bob_ws);

    // A change while away makes the next sync send a newer snapshot.
    alice.api.cancel_friend_request(bob.user_id).await.unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let newer = sync_contacts(&mut bob_ws, Some(snapshot.version))
        .await
        .expect("a newer snapshot");
    assert!(newer.version > snapshot.version);
    assert!(newer.incoming.is_empty());
    assert_eq!(newer.friends, snapshot.friends);
    server.stop().await;
}

#[tokio::test]
async fn a_blocked_users_request_is_refused_without_revealing_the_block() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    alice.api.block(bob.user_id).await.unwrap();
    let (code, message) = refusal(
        bob.api
            .send_friend_request(alice.user_id, Some("please"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::Forbidden, NOT_ACCEPTED)
    );
    // The same words as from a user who takes messages only from friends.
    dave.api
        .update_privacy(&UpdatePrivacyRequest {
            direct_messages: Some(DirectMessages::Friends),
            ..Default::default()
        })
        .await
        .unwrap();
    let (code, from_dave) = refusal(bob.api.open_direct(dave.user_id).await.unwrap_err());
    assert_eq!(
        (code, from_dave.as_str()),
        (ErrorCode::Forbidden, message.as_str())
    );
    assert!(
        alice
            .api
            .friend_requests()
            .await
            .unwrap()
            .incoming
            .is_empty()
    );
    // The blocker is told why.
    let (_, own) = refusal(
        alice
            .api
            .send_friend_request(bob.user_id, None)
            .await
            .unwrap_err(),
    );
    assert!(own.contains("unblock"), "{own}");

    // A block drops pending requests; the blocked side sees an ordinary decline.
    let mut carol_ws = server.connect(&carol).await;
    carol
        .api
        .send_friend_request(alice.user_id, None)
        .await
        .unwrap();
    next_contact(&mut carol_ws).await;
    alice.api.block(carol.user_id).await.unwrap();
    assert_eq!(
        next_contact(&mut carol_ws).await.0,
        ContactEvent::RequestDeclined {
            from: carol.user_id,
            to: alice.user_id
        }
    );
    assert!(
        carol
            .api
            .friend_requests()
            .await
            .unwrap()
            .outgoing
            .is_empty()
    );
    assert!(
        alice
            .api
            .friend_requests()
            .await
            .unwrap()
            .incoming
            .is_empty()
    );
    // And ends a friendship, which the blocked side sees as a removal.
    befriend(&dave, &carol).await;
    drain(&mut carol_ws, Duration::from_millis(200)).await;
    dave.api.block(carol.user_id).await.unwrap();
    assert_eq!(
        next_contact(&mut carol_ws).await.0,
        ContactEvent::FriendRemoved {
            user_id: dave.user_id
        }
    );
    assert!(dave.api.friends().await.unwrap().friends.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn friends_only_direct_messages_take_effect_at_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    befriend(&alice, &carol).await;
    // Bob and Alice talk while Alice accepts everyone; the cached conversation is warm.
    let conv = bob.api.open_direct(alice.user_id).await.unwrap();
    let bob_ws = server.connect(&bob).await;
    bob_ws.send_text(conv.id, "b1", "hi alice").await.unwrap();
    assert_eq!(
        alice.api.privacy().await.unwrap().direct_messages,
        DirectMessages::Everyone
    );

    let settings = alice
        .api
        .update_privacy(&UpdatePrivacyRequest {
            direct_messages: Some(DirectMessages::Friends),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(settings.direct_messages, DirectMessages::Friends);
    assert_eq!(settings.presence, Visibility::Everyone, "untouched");
    assert_eq!(alice.api.privacy().await.unwrap(), settings);
    // The existing conversation refuses at once, with the words a block uses.
    let (code, message) = refusal(bob_ws.send_text(conv.id, "b2", "hello?").await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::Forbidden, NOT_ACCEPTED)
    );
    let (_, message) = refusal(bob.api.open_direct(alice.user_id).await.unwrap_err());
    assert_eq!(message, NOT_ACCEPTED);
    // A friend may still write, and Alice may write to Bob (his setting is open).
    let with_carol = carol.api.open_direct(alice.user_id).await.unwrap();
    let carol_ws = server.connect(&carol).await;
    carol_ws
        .send_text(with_carol.id, "c1", "hi friend")
        .await
        .unwrap();
    let alice_ws = server.connect(&alice).await;
    alice_ws.send_text(conv.id, "a1", "hi bob").await.unwrap();

    // Becoming friends opens the conversation again at once; ending it closes it.
    befriend(&bob, &alice).await;
    bob_ws
        .send_text(conv.id, "b3", "friends now")
        .await
        .unwrap();
    alice.api.remove_friend(bob.user_id).await.unwrap();
    let (_, message) = refusal(bob_ws.send_text(conv.id, "b4", "oh").await.unwrap_err());
    assert_eq!(message, NOT_ACCEPTED);
    // Back to everyone: open again.
    alice
        .api
        .update_privacy(&UpdatePrivacyRequest {
            direct_messages: Some(DirectMessages::Everyone),
            ..Default::default()
        })
        .await
        .unwrap();
    bob_ws.send_text(conv.id, "b5", "thanks").await.unwrap();
    let texts: Vec<String> = bob
        .api
        .history(conv.id, None, 10)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    assert_eq!(texts, vec!["b1", "a1", "b3", "b5"]);
    server.stop().await;
}

/// Asks for presences over the WebSocket.
async fn presence_query(conn: &Connection, users: Vec<UserId>) -> Vec<Presence> {
    match conn
        .request(|id| ClientFrame::PresenceQuery {
            id,
            user_ids: users,
        })
        .await
        .unwrap()
    {
        ServerFrame::PresenceList { users, .. } => users,
        other => panic!("{other:?}"),
    }
}

fn presence_of_in(events: &[ServerFrame], user: UserId) -> Vec<Presence> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerFrame::Presence { presence } if presence.user_id == user => {
                Some(presence.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn presence_follows_the_visibility_setting() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    befriend(&alice, &bob).await;
    alice
        .api
        .create_group("three", &[bob.user_id, carol.user_id])
        .await
        .unwrap();
    alice
        .api
        .update_privacy(&UpdatePrivacyRequest {
            presence: Some(Visibility::Friends),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let mut carol_ws = server.connect(&carol).await;
    drain(&mut bob_ws, Duration::from_millis(200)).await;
    drain(&mut carol_ws, Duration::from_millis(200)).await;

    // Alice comes online: her friend sees it, Carol does not.
    let alice_ws = server.connect(&alice).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Presence { presence } = event
            && presence.user_id == alice.user_id
        {
            assert_eq!(presence.status, PresenceStatus::Online);
            break;
        }
    }
    let carol_saw = drain(&mut carol_ws, Duration::from_millis(300)).await;
    assert!(presence_of_in(&carol_saw, alice.user_id).is_empty());
    let asked = presence_query(&carol_ws, vec![alice.user_id, bob.user_id]).await;
    assert_eq!(
        asked[0],
        Presence {
            user_id: alice.user_id,
            status: PresenceStatus::Offline,
            last_seen: None
        },
        "hidden like a user who is away, without a last-seen time"
    );
    assert_eq!(asked[1].status, PresenceStatus::Online, "Bob shows");
    let asked = presence_query(&bob_ws, vec![alice.user_id]).await;
    assert_eq!(asked[0].status, PresenceStatus::Online);

    // Nobody: her friend is shown her offline at once, and asking says the same.
    alice
        .api
        .update_privacy(&UpdatePrivacyRequest {
            presence: Some(Visibility::Nobody),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Presence { presence } = event
            && presence.user_id == alice.user_id
        {
            assert_eq!(presence.status, PresenceStatus::Offline);
            assert_eq!(presence.last_seen, None);
            break;
        }
    }
    let asked = presence_query(&bob_ws, vec![alice.user_id]).await;
    assert_eq!(
        (asked[0].status, asked[0].last_seen),
        (PresenceStatus::Offline, None)
    );
    // Her own presence she always sees.
    let own = presence_query(&alice_ws, vec![alice.user_id]).await;
    assert_eq!(own[0].status, PresenceStatus::Online);
    // Carol, hidden from before, hears nothing of the change.
    let carol_saw = drain(&mut carol_ws, Duration::from_millis(200)).await;
    assert!(presence_of_in(&carol_saw, alice.user_id).is_empty());
    // Leaving is not announced to anyone either.
    drain(&mut bob_ws, Duration::from_millis(100)).await;
    drop(alice_ws);
    let bob_saw = drain(&mut bob_ws, Duration::from_millis(300)).await;
    let carol_saw = drain(&mut carol_ws, Duration::from_millis(100)).await;
    assert!(presence_of_in(&bob_saw, alice.user_id).is_empty());
    assert!(presence_of_in(&carol_saw, alice.user_id).is_empty());
    server.stop().await;
}

/// Sends one raw HTTP request and returns the status line and headers, lowercased.
async fn raw_post(base_url: &str, path: &str, token: &str, body: &str) -> String {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.to_ascii_lowercase()
}

#[tokio::test]
async fn friend_requests_are_rate_limited_with_retry_after() {
    let server = TestServer::start_with(|c| c.limits.friend_requests_per_hour = 2).await;
    let alice = server.user("alice").await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave"] {
        others.push(server.user(name).await);
    }
    // A burst of two passes; the third waits about half an hour (two an hour).
    for other in &others[..2] {
        alice
            .api
            .send_friend_request(other.user_id, None)
            .await
            .unwrap();
    }
    match alice
        .api
        .send_friend_request(others[2].user_id, None)
        .await
        .unwrap_err()
    {
        SdkError::Problem { status, problem } => {
            assert_eq!(status, 429);
            assert_eq!(problem.code, ErrorCode::RateLimited);
            let wait = problem.retry_after_ms.expect("a wait");
            assert!((1_700_000..=1_800_000).contains(&wait), "{wait}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let body = format!("{{\"user_id\":{}}}", others[2].user_id);
    let head = raw_post(
        &server.base_url,
        "/api/v1/friend-requests",
        &alice.tokens.access_token,
        &body,
    )
    .await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1_700..=1_800).contains(&retry_after), "{retry_after}");
    // Others have their own budget.
    others[2]
        .api
        .send_friend_request(alice.user_id, None)
        .await
        .unwrap();
    server.stop().await;
}
