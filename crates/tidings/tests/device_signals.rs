//! Device signals over real sockets: a signal reaches the one device addressed (and not the
//! user's other devices), own devices are always reachable, a device without a live
//! connection gives `not_found` to those who may see the user's presence (and a plain `ok` to
//! others), blocks and friends-only settings refuse like a message, an answer to a signal gets
//! through once, and payloads over the limit are refused.

use serde_json::json;
use std::time::Duration;
use tidings_proto::contacts::{DirectMessages, UpdatePrivacyRequest, Visibility};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{DeviceId, ErrorCode, UserId};
use tidings_sdk::Connection;
use tidings_testkit::{EVENT_WAIT, TestServer, error_code};

/// The next `device_signal` event on a connection, skipping other frames.
async fn next_signal(conn: &mut Connection) -> (UserId, DeviceId, String, serde_json::Value) {
    loop {
        let event = tokio::time::timeout(EVENT_WAIT, conn.next_event())
            .await
            .expect("a device signal in time")
            .expect("the connection is open");
        if let ServerFrame::DeviceSignal {
            from_user,
            from_device,
            kind,
            payload,
        } = event
        {
            return (from_user, from_device, kind, payload);
        }
    }
}

/// Asserts that no `device_signal` event arrives for a short while.
async fn no_signal(conn: &mut Connection) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match conn.next_event().await {
                Some(ServerFrame::DeviceSignal { payload, .. }) => return payload,
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "unexpected device signal {quiet:?}");
}

#[tokio::test]
async fn signals_reach_the_device_addressed_and_only_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let bob_laptop = server.second_device(&bob, "laptop").await;
    // Alice shares a conversation with bob, so she may see his presence; carol may not.
    alice.api.open_direct(bob.user_id).await.unwrap();
    let carol_conn = server.connect(&carol).await;
    let alice_conn = server.connect(&alice).await;
    let mut bob_phone = server.connect(&bob).await;
    let mut bob_laptop = server.connect(&bob_laptop).await;

    alice_conn
        .device_signal(
            bob.user_id,
            bob_phone.device_id,
            "test.hello",
            json!({"n": 1}),
        )
        .await
        .unwrap();
    let (from_user, from_device, kind, payload) = next_signal(&mut bob_phone).await;
    assert_eq!(
        (from_user, from_device, kind.as_str(), payload),
        (
            alice.user_id,
            alice_conn.device_id,
            "test.hello",
            json!({"n": 1})
        )
    );
    no_signal(&mut bob_laptop).await;

    // A user's own other device, and a string payload.
    bob_phone
        .device_signal(bob.user_id, bob_laptop.device_id, "test.own", json!("<x/>"))
        .await
        .unwrap();
    let (from_user, from_device, _, payload) = next_signal(&mut bob_laptop).await;
    assert_eq!(
        (from_user, from_device, payload),
        (bob.user_id, bob_phone.device_id, json!("<x/>"))
    );

    // A device with no live connection, and one that does not exist, look the same.
    bob_laptop.close();
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let sent = alice_conn
            .device_signal(bob.user_id, bob_laptop.device_id, "test.hello", json!(1))
            .await;
        match sent {
            Err(e) => {
                assert_eq!(error_code(e), ErrorCode::NotFound);
                break;
            }
            // The server has not seen the close yet.
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "still delivered"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = alice_conn
        .device_signal(bob.user_id, DeviceId(999_999), "test.hello", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::NotFound);
    // Whether a device is connected is presence: carol, who may not see bob's, is not told.
    carol_conn
        .device_signal(bob.user_id, bob_laptop.device_id, "test.hello", json!(1))
        .await
        .unwrap();
    // Nor is alice once bob hides his presence; signals to his live device still arrive.
    bob.api
        .update_privacy(&UpdatePrivacyRequest {
            presence: Some(Visibility::Nobody),
            ..Default::default()
        })
        .await
        .unwrap();
    alice_conn
        .device_signal(bob.user_id, bob_laptop.device_id, "test.hello", json!(1))
        .await
        .unwrap();
    alice_conn
        .device_signal(bob.user_id, bob_phone.device_id, "test.hidden", json!(2))
        .await
        .unwrap();
    let (_, _, kind, _) = next_signal(&mut bob_phone).await;
    assert_eq!(kind, "test.hidden");

    // Limits: the payload's size and the kind's form.
    let big = json!("x".repeat(64 * 1024));
    let err = alice_conn
        .device_signal(bob.user_id, bob_phone.device_id, "test.big", big)
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::TooLarge);
    let err = alice_conn
        .device_signal(bob.user_id, bob_phone.device_id, "not a kind", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::InvalidField);
}

#[tokio::test]
async fn blocks_refuse_signals_both_ways() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alice_conn = server.connect(&alice).await;
    let mut bob_conn = server.connect(&bob).await;
    bob.api.block(alice.user_id).await.unwrap();

    let err = alice_conn
        .device_signal(bob.user_id, bob_conn.device_id, "test.hello", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::Forbidden);
    // The refusal does not reveal the block: it reads like a friends-only refusal.
    let err = alice_conn
        .device_signal(bob.user_id, bob_conn.device_id, "test.hello", json!(1))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("block"), "{err}");
    let err = bob_conn
        .device_signal(alice.user_id, alice_conn.device_id, "test.hello", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::Forbidden);
    no_signal(&mut bob_conn).await;
}

#[tokio::test]
async fn a_friends_only_user_gets_one_answer_per_signal() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    bob.api
        .update_privacy(&UpdatePrivacyRequest {
            direct_messages: Some(DirectMessages::Friends),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut alice_conn = server.connect(&alice).await;
    let mut bob_conn = server.connect(&bob).await;

    // Alice may not write to bob, so she may not signal him first.
    let err = alice_conn
        .device_signal(bob.user_id, bob_conn.device_id, "test.question", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::Forbidden);

    // Bob asks; alice's connection may answer that once.
    bob_conn
        .device_signal(
            alice.user_id,
            alice_conn.device_id,
            "test.question",
            json!(2),
        )
        .await
        .unwrap();
    let (from_user, from_device, _, _) = next_signal(&mut alice_conn).await;
    assert_eq!((from_user, from_device), (bob.user_id, bob_conn.device_id));
    alice_conn
        .device_signal(from_user, from_device, "test.answer", json!(3))
        .await
        .unwrap();
    let (_, _, kind, payload) = next_signal(&mut bob_conn).await;
    assert_eq!((kind.as_str(), payload), ("test.answer", json!(3)));
    let err = alice_conn
        .device_signal(from_user, from_device, "test.answer", json!(4))
        .await
        .unwrap_err();
    assert_eq!(error_code(err), ErrorCode::Forbidden);
}
