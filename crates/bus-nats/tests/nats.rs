//! The NATS bus against the real NATS server on 127.0.0.1:4222 (or `NATS_TEST_URL`): two buses
//! stand for two nodes. Each test uses its own subject prefix, so runs never hear each other.
//! An unreachable server fails the tests.

use std::sync::Arc;
use std::time::Duration;
use tidings_bus::{Bus, BusEvent, OutFrame};
use tidings_bus_nats::{NatsBus, NatsOptions};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, DeviceId, UserId};
use tokio::time::timeout;

fn options(prefix: &str) -> NatsOptions {
    let url = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut options = NatsOptions::new(url);
    options.subject_prefix = format!("tidings-test.{prefix}.{}", std::process::id());
    options
}

async fn node(prefix: &str) -> NatsBus {
    let options = options(prefix);
    let url = options.url.clone();
    NatsBus::connect(options).await.unwrap_or_else(|err| {
        panic!("NATS at {url} is not reachable ({err}); the NATS bus tests need it")
    })
}

fn pong(i: usize, user: UserId) -> BusEvent {
    BusEvent::Deliver {
        users: Arc::from(vec![user]),
        except_device: Some(DeviceId(9)),
        frame: OutFrame::new(ServerFrame::Pong { id: i.to_string() }),
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<BusEvent>) -> BusEvent {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("the subscription is open")
}

/// Waits until `to` hears what `from` publishes. A subscription is registered with the server
/// before `subscribe` returns only as seen from its own connection: another node's first
/// publications may reach the server before it, and are then not delivered to it.
async fn until_hearing(from: &NatsBus, to: &mut tokio::sync::mpsc::Receiver<BusEvent>) {
    let marker = BusEvent::DeviceRevoked {
        user_id: UserId(-1),
        device_id: DeviceId(-1),
    };
    for _ in 0..50 {
        from.publish(marker.clone()).await.unwrap();
        if let Ok(Some(BusEvent::DeviceRevoked {
            user_id: UserId(-1),
            ..
        })) = timeout(Duration::from_millis(100), to.recv()).await
        {
            return;
        }
    }
    panic!("the other node never heard us");
}

/// Drops whatever is queued.
async fn drain(rx: &mut tokio::sync::mpsc::Receiver<BusEvent>) {
    while let Ok(Some(_)) = timeout(Duration::from_millis(200), rx.recv()).await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_hears_every_event_in_publish_order() {
    let a = node("order").await;
    let b = node("order").await;
    let mut heard_a = a.subscribe().await.unwrap();
    let mut heard_b = b.subscribe().await.unwrap();
    until_hearing(&a, &mut heard_b).await;
    until_hearing(&b, &mut heard_a).await;
    drain(&mut heard_a).await;
    drain(&mut heard_b).await;
    const N: usize = 1_000;
    // Node A publishes for a user only node B holds, and the other way round.
    for i in 0..N {
        a.publish(pong(i, UserId(2))).await.unwrap();
    }
    // Order holds per publisher, not across publishers: B's event may come anywhere among A's.
    a.flush().await.unwrap();
    b.publish(BusEvent::DeviceRevoked {
        user_id: UserId(1),
        device_id: DeviceId(7),
    })
    .await
    .unwrap();
    for rx in [&mut heard_a, &mut heard_b] {
        let mut next_pong = 0;
        let mut revoked = 0;
        for _ in 0..=N {
            match next(rx).await {
                BusEvent::Deliver {
                    users,
                    except_device,
                    frame,
                } => {
                    assert_eq!(&*users, &[UserId(2)]);
                    assert_eq!(except_device, Some(DeviceId(9)));
                    assert_eq!(
                        frame.frame(),
                        &ServerFrame::Pong {
                            id: next_pong.to_string()
                        },
                        "A's events arrive in the order A published them"
                    );
                    next_pong += 1;
                }
                BusEvent::DeviceRevoked {
                    user_id: UserId(1),
                    device_id: DeviceId(7),
                } => revoked += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((next_pong, revoked), (N, 1), "every event once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_other_prefixes_are_not_heard() {
    let ours = node("mine").await;
    let theirs = node("theirs").await;
    let mut heard = ours.subscribe().await.unwrap();
    theirs
        .publish(BusEvent::MembershipChanged {
            conversation_id: ConversationId(1),
        })
        .await
        .unwrap();
    theirs.flush().await.unwrap();
    ours.publish(BusEvent::MembershipChanged {
        conversation_id: ConversationId(2),
    })
    .await
    .unwrap();
    assert!(matches!(
        next(&mut heard).await,
        BusEvent::MembershipChanged {
            conversation_id: ConversationId(2)
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_does_not_block_publishers() {
    let a = node("dropped").await;
    let rx = a.subscribe().await.unwrap();
    drop(rx);
    for i in 0..100 {
        timeout(Duration::from_secs(5), a.publish(pong(i, UserId(1))))
            .await
            .expect("publishing does not wait for a subscriber that is gone")
            .unwrap();
    }
    a.flush().await.unwrap();
}
