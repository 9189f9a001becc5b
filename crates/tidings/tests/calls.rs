//! Call signalling over real sockets: a full call, missed, declined, busy and cancelled calls,
//! the first accept winning, refusals for outsiders and blocked users, and the call records.

use std::time::Duration;
use tidings_proto::call::{CallEvent, CallOutcome, CallSignal, IceCandidate, SdpType};
use tidings_proto::contacts::{DirectMessages, UpdatePrivacyRequest};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, DeviceId, ErrorCode, Message, MessageBody, UserId};
use tidings_sdk::Connection;
use tidings_testkit::{EVENT_WAIT, TestServer, TestUser, error_code};

const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const ANSWER: &str = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

/// One `call` event as a device sees it.
#[derive(Debug)]
struct Seen {
    call_id: String,
    user_id: UserId,
    device_id: Option<DeviceId>,
    event: CallEvent,
}

/// The next `call` event on a connection, skipping other frames.
async fn next_call(conn: &mut Connection) -> Seen {
    loop {
        let event = tokio::time::timeout(EVENT_WAIT, conn.next_event())
            .await
            .expect("a call event in time")
            .expect("the connection is open");
        if let ServerFrame::Call {
            call_id,
            user_id,
            device_id,
            event,
            ..
        } = event
        {
            return Seen {
                call_id,
                user_id,
                device_id,
                event,
            };
        }
    }
}

/// The next `call` message (a call record) on a connection, skipping other frames.
async fn next_record(conn: &mut Connection) -> Message {
    loop {
        let event = tokio::time::timeout(EVENT_WAIT, conn.next_event())
            .await
            .expect("a call record in time")
            .expect("the connection is open");
        if let ServerFrame::Message { message } = event
            && matches!(message.body, MessageBody::Call { .. })
        {
            return message;
        }
    }
}

/// Asserts that no `call` event arrives for a short while.
async fn no_call_event(conn: &mut Connection) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match conn.next_event().await {
                Some(ServerFrame::Call { event, .. }) => return event,
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "unexpected call event {quiet:?}");
}

fn record_of(message: &Message) -> (String, UserId, CallOutcome, bool, u64) {
    match &message.body {
        MessageBody::Call {
            call_id,
            caller,
            outcome,
            video,
            duration_ms,
        } => (call_id.clone(), *caller, *outcome, *video, *duration_ms),
        other => panic!("not a call record: {other:?}"),
    }
}

fn candidate(port: u16) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    }
}

struct Pair {
    server: TestServer,
    bob_user: TestUser,
    conv: ConversationId,
    alice: Connection,
    bob: Connection,
    alice_id: UserId,
    bob_id: UserId,
}

async fn pair(adjust: impl FnOnce(&mut tidings::config::Config)) -> Pair {
    let server = TestServer::start_with(adjust).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap().id;
    Pair {
        alice: server.connect(&alice).await,
        bob: server.connect(&bob).await,
        alice_id: alice.user_id,
        bob_id: bob.user_id,
        bob_user: bob,
        server,
        conv,
    }
}

#[tokio::test]
async fn full_call_first_accept_wins_and_is_recorded() {
    let Pair {
        server,
        conv,
        mut alice,
        mut bob,
        alice_id,
        bob_id,
        bob_user,
    } = pair(|_| {}).await;
    let mut bob_phone = server
        .connect(&server.second_device(&bob_user, "phone").await)
        .await;

    let (call_id, busy) = alice.call_invite(conv, OFFER, true).await.unwrap();
    assert!(!busy);
    assert_eq!(call_id.len(), 32);
    // Every online device of the callee rings.
    for device in [&mut bob, &mut bob_phone] {
        let seen = next_call(device).await;
        assert_eq!(seen.call_id, call_id);
        assert_eq!(seen.user_id, alice_id);
        assert_eq!(seen.device_id, Some(alice.device_id));
        let CallEvent::Invite {
            sdp,
            video,
            ring_until,
        } = seen.event
        else {
            panic!("an invite, got {:?}", seen.event)
        };
        assert_eq!((sdp.as_str(), video), (OFFER, true));
        assert!(ring_until > 0);
    }
    bob_phone
        .call_signal(&call_id, CallSignal::Ringing {})
        .await
        .unwrap();
    let seen = next_call(&mut alice).await;
    assert_eq!(seen.event, CallEvent::Ringing {});
    assert_eq!(seen.device_id, Some(bob_phone.device_id));
    // The caller's early candidates reach every ringing device.
    alice
        .call_signal(
            &call_id,
            CallSignal::Ice {
                candidate: candidate(5000),
            },
        )
        .await
        .unwrap();
    for device in [&mut bob, &mut bob_phone] {
        assert_eq!(
            next_call(device).await.event,
            CallEvent::Ice {
                candidate: candidate(5000)
            }
        );
    }

    // The laptop accepts first; the phone stops ringing and cannot accept any more.
    bob.call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap();
    let seen = next_call(&mut alice).await;
    assert_eq!(seen.event, CallEvent::Accepted { sdp: ANSWER.into() });
    assert_eq!(
        (seen.user_id, seen.device_id),
        (bob_id, Some(bob.device_id))
    );
    assert_eq!(
        next_call(&mut bob_phone).await.event,
        CallEvent::AnsweredElsewhere {}
    );
    let late = bob_phone
        .call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap_err();
    assert_eq!(error_code(late), ErrorCode::Forbidden);
    // A second accept from the winner finds the call no longer ringing.
    let again = bob
        .call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap_err();
    assert_eq!(error_code(again), ErrorCode::Conflict);

    // From now on the two devices talk to each other only.
    bob.call_signal(
        &call_id,
        CallSignal::Ice {
            candidate: candidate(6000),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        next_call(&mut alice).await.event,
        CallEvent::Ice {
            candidate: candidate(6000)
        }
    );
    alice
        .call_signal(
            &call_id,
            CallSignal::Renegotiate {
                sdp_type: SdpType::Offer,
                sdp: OFFER.into(),
                video: Some(false),
                ice_restart: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        next_call(&mut bob).await.event,
        CallEvent::Renegotiate {
            sdp_type: SdpType::Offer,
            sdp: OFFER.into(),
            video: Some(false),
            ice_restart: true,
        }
    );
    no_call_event(&mut bob_phone).await;

    tokio::time::sleep(Duration::from_millis(60)).await;
    bob.call_signal(&call_id, CallSignal::Hangup {})
        .await
        .unwrap();
    let CallEvent::Ended { duration_ms } = next_call(&mut alice).await.event else {
        panic!("the end of the call")
    };
    assert!(duration_ms >= 50, "{duration_ms}");
    // The record reaches every device of both users, the caller's own device included.
    for device in [&mut alice, &mut bob, &mut bob_phone] {
        let record = next_record(device).await;
        assert_eq!(record.sender_id, alice_id);
        assert_eq!(
            record_of(&record),
            (
                call_id.clone(),
                alice_id,
                CallOutcome::Answered,
                true,
                duration_ms
            )
        );
    }
    let history = alice.history(conv, None, Some(10)).await.unwrap();
    let records: Vec<_> = history
        .0
        .iter()
        .filter(|m| m.body.kind() == "call")
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(record_of(records[0]).4, duration_ms);
    // The call is over: a late hang-up from the other side finds nothing.
    let gone = alice
        .call_signal(&call_id, CallSignal::Hangup {})
        .await
        .unwrap_err();
    assert_eq!(error_code(gone), ErrorCode::NotFound);
    // Clients cannot write call records themselves.
    let forged = alice
        .send(
            conv,
            "forged",
            MessageBody::Call {
                call_id,
                caller: alice_id,
                outcome: CallOutcome::Answered,
                video: false,
                duration_ms: 1,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(forged), ErrorCode::InvalidField);
}

#[tokio::test]
async fn unanswered_call_becomes_missed_after_the_ring_timeout() {
    let Pair {
        conv,
        mut alice,
        mut bob,
        alice_id,
        ..
    } = pair(|config| config.calls.ring_timeout_secs = 1).await;
    let started = std::time::Instant::now();
    let (call_id, _) = alice.call_invite(conv, OFFER, false).await.unwrap();
    assert!(matches!(
        next_call(&mut bob).await.event,
        CallEvent::Invite { video: false, .. }
    ));
    for device in [&mut alice, &mut bob] {
        let seen = next_call(device).await;
        assert_eq!(
            (seen.call_id.as_str(), seen.event),
            (call_id.as_str(), CallEvent::Missed {})
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let record = next_record(&mut bob).await;
    assert_eq!(
        record_of(&record),
        (call_id.clone(), alice_id, CallOutcome::Missed, false, 0)
    );
    let late = bob
        .call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap_err();
    assert_eq!(error_code(late), ErrorCode::NotFound);
}

#[tokio::test]
async fn declined_and_cancelled_calls() {
    let Pair {
        conv,
        mut alice,
        mut bob,
        alice_id,
        ..
    } = pair(|_| {}).await;
    let (call_id, _) = alice.call_invite(conv, OFFER, true).await.unwrap();
    next_call(&mut bob).await;
    bob.call_signal(&call_id, CallSignal::Decline { busy: false })
        .await
        .unwrap();
    assert_eq!(next_call(&mut alice).await.event, CallEvent::Declined {});
    assert_eq!(
        record_of(&next_record(&mut alice).await).2,
        CallOutcome::Declined
    );

    let (call_id, _) = alice.call_invite(conv, OFFER, false).await.unwrap();
    next_call(&mut bob).await;
    // The caller cannot accept its own call, and the callee cannot cancel it.
    let own = alice
        .call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap_err();
    assert_eq!(error_code(own), ErrorCode::Forbidden);
    let not_theirs = bob
        .call_signal(&call_id, CallSignal::Cancel {})
        .await
        .unwrap_err();
    assert_eq!(error_code(not_theirs), ErrorCode::Forbidden);
    alice
        .call_signal(&call_id, CallSignal::Cancel {})
        .await
        .unwrap();
    let seen = next_call(&mut bob).await;
    assert_eq!(
        (seen.event, seen.user_id),
        (CallEvent::Cancelled {}, alice_id)
    );
    assert_eq!(
        record_of(&next_record(&mut bob).await).2,
        CallOutcome::Cancelled
    );
    // A callee's device may answer busy itself.
    let (call_id, _) = alice.call_invite(conv, OFFER, false).await.unwrap();
    next_call(&mut bob).await;
    bob.call_signal(&call_id, CallSignal::Decline { busy: true })
        .await
        .unwrap();
    assert_eq!(next_call(&mut alice).await.event, CallEvent::Busy {});
    assert_eq!(
        record_of(&next_record(&mut alice).await).2,
        CallOutcome::Busy
    );
}

#[tokio::test]
async fn busy_callee_outsiders_and_blocked_users() {
    let Pair {
        server,
        conv,
        alice,
        mut bob,
        bob_id,
        bob_user,
        ..
    } = pair(|_| {}).await;
    let carol = server.user("carol").await;
    let carol_conv = carol.api.open_direct(bob_id).await.unwrap().id;
    let mut carol_ws = server.connect(&carol).await;

    let (call_id, _) = alice.call_invite(conv, OFFER, false).await.unwrap();
    next_call(&mut bob).await;
    // Bob is being called: Carol's call is busy at once, nothing rings, and it is recorded.
    let (busy_id, busy) = carol_ws
        .call_invite(carol_conv, OFFER, false)
        .await
        .unwrap();
    assert!(busy);
    no_call_event(&mut bob).await;
    let record = next_record(&mut carol_ws).await;
    assert_eq!(
        record_of(&record),
        (busy_id, carol.user_id, CallOutcome::Busy, false, 0)
    );
    // Carol is no party to Alice's call: every signal is refused as if there were no call.
    for signal in [
        CallSignal::Ice {
            candidate: candidate(7000),
        },
        CallSignal::Accept { sdp: ANSWER.into() },
        CallSignal::Hangup {},
    ] {
        let refused = carol_ws.call_signal(&call_id, signal).await.unwrap_err();
        assert_eq!(error_code(refused), ErrorCode::NotFound);
    }
    // Carol cannot call in a conversation she is not in.
    let outside = carol_ws.call_invite(conv, OFFER, false).await.unwrap_err();
    assert_eq!(error_code(outside), ErrorCode::NotFound);
    alice
        .call_signal(&call_id, CallSignal::Hangup {})
        .await
        .unwrap();
    assert_eq!(next_call(&mut bob).await.event, CallEvent::Cancelled {});

    // Calls follow the rules of direct messages: blocks and privacy settings.
    bob_user.api.block(carol.user_id).await.unwrap();
    let blocked = carol_ws
        .call_invite(carol_conv, OFFER, false)
        .await
        .unwrap_err();
    assert_eq!(error_code(blocked), ErrorCode::Forbidden);
    bob_user
        .api
        .update_privacy(&UpdatePrivacyRequest {
            direct_messages: Some(DirectMessages::Friends),
            ..Default::default()
        })
        .await
        .unwrap();
    let friends_only = alice.call_invite(conv, OFFER, false).await.unwrap_err();
    assert_eq!(error_code(friends_only), ErrorCode::Forbidden);
    no_call_event(&mut bob).await;
}

#[tokio::test]
async fn a_device_that_leaves_ends_its_call_after_the_grace() {
    let Pair {
        conv,
        mut alice,
        bob,
        ..
    } = pair(|config| config.calls.reconnect_grace_secs = 1).await;
    let mut bob = bob;
    let (call_id, _) = alice.call_invite(conv, OFFER, true).await.unwrap();
    next_call(&mut bob).await;
    bob.call_signal(&call_id, CallSignal::Accept { sdp: ANSWER.into() })
        .await
        .unwrap();
    next_call(&mut alice).await;
    bob.close();
    drop(bob);
    let seen = next_call(&mut alice).await;
    assert_eq!(seen.call_id, call_id);
    assert!(matches!(seen.event, CallEvent::Ended { .. }), "{seen:?}");
    assert_eq!(
        record_of(&next_record(&mut alice).await).2,
        CallOutcome::Answered
    );
}

fn turn_entry(list: &tidings_proto::call::IceServers) -> &tidings_proto::call::IceServer {
    list.ice_servers
        .iter()
        .find(|s| s.username.is_some())
        .expect("a TURN entry")
}

#[tokio::test]
async fn ice_servers_carry_turn_rest_credentials() {
    let server = TestServer::start_with(|config| {
        config.rtc.stun_urls = vec!["stun:192.0.2.1:3478".into()];
        config.rtc.turn_urls = vec!["turn:192.0.2.1:3478?transport=udp".into()];
        config.rtc.shared_secret = "north".into();
        config.rtc.credential_ttl_secs = 600;
    })
    .await;
    let alice = server.user("alice").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let list = alice.api.ice_servers().await.unwrap();
    assert_eq!(list.ice_servers.len(), 2);
    // The embedded server comes first, then the configured ones.
    let stun = &list.ice_servers[0];
    assert_eq!(stun.username, None);
    assert_eq!(stun.urls.len(), 2);
    assert!(
        stun.urls[0].starts_with("stun:127.0.0.1:"),
        "{:?}",
        stun.urls
    );
    assert_eq!(stun.urls[1], "stun:192.0.2.1:3478");
    let turn = turn_entry(&list);
    assert!(
        turn.urls[0].starts_with("turn:127.0.0.1:"),
        "{:?}",
        turn.urls
    );
    assert!(turn.urls[0].ends_with("?transport=udp"));
    assert_eq!(turn.urls[1], "turn:192.0.2.1:3478?transport=udp");
    let username = turn.username.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id.to_string());
    let expiry: i64 = expiry.parse().unwrap();
    assert!(
        (before + 590..=before + 610).contains(&expiry),
        "{expiry} vs {before}"
    );
    assert_eq!(list.expires_at / 1000, expiry);
    assert_eq!(
        turn.credential.as_deref(),
        Some(tidings_core::rtc::turn_password(b"north", &username).as_str())
    );
    // Without a token there are no credentials.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/v1/rtc/ice-servers", server.client().base()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_generated_turn_secret_is_kept_owner_only() {
    let server = TestServer::start().await;
    let path = server.data_dir().join("turn-secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let alice = server.user("alice").await;
    let list = alice.api.ice_servers().await.unwrap();
    let turn = turn_entry(&list);
    assert_eq!(
        turn.credential.as_deref(),
        Some(
            tidings_core::rtc::turn_password(secret.as_bytes(), turn.username.as_deref().unwrap())
                .as_str()
        )
    );
}

/// The credentials `GET /api/v1/rtc/ice-servers` hands out open the embedded TURN server to a
/// real third-party client (coturn's turnutils_uclient), which relays packets through it.
#[tokio::test]
async fn embedded_turn_relays_for_a_third_party_client_with_issued_credentials() {
    let uclient = "/usr/bin/turnutils_uclient";
    if !std::path::Path::new(uclient).exists() {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but turnutils_uclient (Debian coturn) is missing"
        );
        eprintln!("SKIPPED: turnutils_uclient is missing; scripts/test installs coturn");
        return;
    }
    let server = TestServer::start_with(|config| {
        config.rtc.turn_allow_loopback_peers = true;
        config.rtc.turn_relay_port_min = 43_000;
        config.rtc.turn_relay_port_max = 43_999;
    })
    .await;
    let alice = server.user("alice").await;
    let list = alice.api.ice_servers().await.unwrap();
    let turn = turn_entry(&list);
    let port = turn.urls[0]
        .trim_start_matches("turn:127.0.0.1:")
        .trim_end_matches("?transport=udp")
        .to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(uclient)
            .args(["-y", "-c", "-n", "20", "-l", "200", "-z", "5"])
            .args(["-u", turn.username.as_deref().unwrap()])
            .args(["-w", turn.credential.as_deref().unwrap()])
            .args(["-p", &port, "127.0.0.1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The client's summary: "tot_send_msgs=40, tot_recv_msgs=40" and "Total lost packets 0".
    let count = |label: &str| -> Option<u64> {
        let at = text.rfind(label)? + label.len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let sent = count("tot_send_msgs=");
    assert!(
        sent.is_some_and(|s| s >= 20)
            && count("tot_recv_msgs=") == sent
            && count("Total lost packets ") == Some(0),
        "{text}"
    );
}
