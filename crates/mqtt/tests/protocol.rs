//! MQTT protocol behaviour against the real server, with a raw client built on the crate's own
//! codec so each test controls every byte: malformed and oversized packets, redelivery until
//! acknowledged, flow control, topic aliases, keep-alive, session expiry, wills, sign-in
//! refusals, and that a QoS 1 IM message is in the store when its PUBACK arrives.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tidings_mqtt::codec::{
    self, Ack, ConnAck, Connect, Disconnect, Packet, Properties, Publish, QoS, Reason, SubOptions,
    Subscribe, Version, Will,
};
use tidings_testkit::{PASSWORD, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    v: Version,
}

fn connect_packet(v: Version, client_id: &str) -> Connect {
    Connect {
        version: v,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: client_id.into(),
        will: None,
        username: Some("alice".into()),
        password: Some(Bytes::from_static(PASSWORD.as_bytes())),
    }
}

impl Raw {
    async fn open(addr: SocketAddr, connect: Connect) -> (Raw, ConnAck) {
        let v = connect.version;
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            v,
        };
        raw.send(&Packet::Connect(Box::new(connect))).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(addr: SocketAddr, client_id: &str) -> Raw {
        let (raw, ack) = Raw::open(addr, connect_packet(Version::V5, client_id)).await;
        assert_eq!(ack.reason, Reason::SUCCESS);
        raw
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, self.v, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some((packet, used)) =
                codec::decode_from_server(&self.buf, self.v, 1 << 24).unwrap()
            {
                let _ = self.buf.split_to(used);
                return Some(packet);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("a packet in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                filter.into(),
                SubOptions {
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.reasons, [Reason(qos as u8)]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, packet_id: u16) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id,
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }))
        .await;
    }

    /// Expects a DISCONNECT with `reason`, then the end of the connection.
    async fn expect_disconnect(&mut self, reason: Reason) {
        match self.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason),
            other => panic!("expected DISCONNECT {reason:?}, got {other:?}"),
        }
        assert!(self.recv().await.is_none(), "the connection ends");
    }

    async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_packets_close_only_their_connection_with_the_reason() {
    let server = TestServer::start_with(|c| c.mqtt.max_packet_bytes = 1024).await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let mut healthy = Raw::connect(addr, "healthy").await;
    let mut bad = Raw::connect(addr, "bad").await;
    // PUBLISH with QoS 3.
    bad.stream
        .write_all(&[0x36, 0x03, 0x00, 0x01, b'a'])
        .await
        .unwrap();
    bad.expect_disconnect(Reason::MALFORMED_PACKET).await;
    // A packet announcing more than the maximum packet size, refused from its header.
    let mut big = Raw::connect(addr, "big").await;
    big.stream.write_all(&[0x30, 0x80, 0x10]).await.unwrap();
    big.expect_disconnect(Reason::PACKET_TOO_LARGE).await;
    // A second CONNECT is a protocol error.
    let mut twice = Raw::connect(addr, "twice").await;
    twice
        .send(&Packet::Connect(Box::new(connect_packet(Version::V5, "x"))))
        .await;
    twice.expect_disconnect(Reason::PROTOCOL_ERROR).await;
    healthy.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn sign_in_refusals_carry_the_right_codes_in_both_versions() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    for (v, expected) in [
        (Version::V5, Reason::BAD_USER_NAME_OR_PASSWORD),
        // 3.1.1 return code 4 reads back as the same reason.
        (Version::V311, Reason::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let mut connect = connect_packet(v, "wrong");
        connect.password = Some(Bytes::from_static(b"not the password"));
        let (_, ack) = Raw::open(addr, connect).await;
        assert_eq!(ack.reason, expected);
    }
    // MQTT 3.1 (protocol level 3) is refused with 3.1.1 return code 1.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&[
            0x10, 0x0C, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
        ])
        .await
        .unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [0x20, 0x02, 0x00, 0x01]);
    server.stop().await;
}

#[tokio::test]
async fn qos1_deliveries_are_redelivered_until_acknowledged() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let mut connect = connect_packet(Version::V5, "slow");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(60);
    let (mut device, ack) = Raw::open(addr, connect.clone()).await;
    assert!(!ack.session_present);
    device.subscribe("users/alice/r", QoS::AtLeastOnce).await;
    let mut sender = Raw::connect(addr, "sender").await;
    for (i, text) in ["one", "two"].iter().enumerate() {
        sender
            .publish("users/alice/r", text, QoS::AtLeastOnce, i as u16 + 1)
            .await;
        assert!(matches!(sender.recv().await, Some(Packet::PubAck(_))));
    }
    let mut first = Vec::new();
    for _ in 0..2 {
        match device.recv().await {
            Some(Packet::Publish(p)) => first.push((p.packet_id, p.payload)),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // Gone without acknowledging; back to the same session.
    drop(device);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut device, ack) = Raw::open(addr, connect.clone()).await;
    assert!(ack.session_present);
    let mut again = Vec::new();
    for _ in 0..2 {
        match device.recv().await {
            Some(Packet::Publish(p)) => {
                assert!(p.dup, "a redelivery carries DUP");
                again.push((p.packet_id, p.payload));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(again, first, "same packets, same ids, same order");
    for (id, _) in &again {
        device
            .send(&Packet::PubAck(Ack::new(*id, Reason::SUCCESS)))
            .await;
    }
    device
        .send(&Packet::Disconnect(Disconnect {
            reason: Reason::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    // The server closes once it has read everything up to DISCONNECT.
    assert!(device.recv().await.is_none());
    // Acknowledged now: the next connection gets nothing more.
    let (mut device, ack) = Raw::open(addr, connect).await;
    assert!(ack.session_present);
    device.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn receive_maximum_topic_aliases_and_keep_alive_are_enforced() {
    let server = TestServer::start_with(|c| {
        c.mqtt.receive_maximum = 2;
        c.mqtt.topic_alias_maximum = 2;
    })
    .await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let (_, ack) = Raw::open(addr, connect_packet(Version::V5, "props")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));

    // QoS 2 publications without PUBREL count against the receive maximum.
    let mut greedy = Raw::connect(addr, "greedy").await;
    for id in 1..=2 {
        greedy
            .publish("users/alice/q", "x", QoS::ExactlyOnce, id)
            .await;
        assert!(matches!(greedy.recv().await, Some(Packet::PubRec(_))));
    }
    greedy
        .publish("users/alice/q", "x", QoS::ExactlyOnce, 3)
        .await;
    greedy
        .expect_disconnect(Reason::RECEIVE_MAXIMUM_EXCEEDED)
        .await;

    // A topic alias set once stands for its topic afterwards.
    let mut listener = Raw::connect(addr, "listener").await;
    listener
        .subscribe("users/alice/alias/#", QoS::AtMostOnce)
        .await;
    let mut aliaser = Raw::connect(addr, "aliaser").await;
    for topic in ["users/alice/alias/t", ""] {
        let properties = Properties {
            topic_alias: Some(1),
            ..Properties::default()
        };
        aliaser
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                packet_id: 0,
                properties,
                payload: Bytes::from_static(b"a"),
            }))
            .await;
        match listener.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(p.topic, "users/alice/alias/t"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let properties = Properties {
        topic_alias: Some(3),
        ..Properties::default()
    };
    aliaser
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "users/alice/alias/t".into(),
            packet_id: 0,
            properties,
            payload: Bytes::from_static(b"a"),
        }))
        .await;
    aliaser.expect_disconnect(Reason::TOPIC_ALIAS_INVALID).await;

    // Towards a client that accepts topic aliases, the server sets one with the first
    // delivery on a topic and sends the alias alone afterwards.
    let mut connect = connect_packet(Version::V5, "alias-taker");
    connect.properties.topic_alias_maximum = Some(1);
    let (mut taker, _) = Raw::open(addr, connect).await;
    taker.subscribe("users/alice/out/#", QoS::AtMostOnce).await;
    for _ in 0..2 {
        aliaser_free_publish(addr, "users/alice/out/t").await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        match taker.recv().await {
            Some(Packet::Publish(p)) => seen.push((p.topic, p.properties.topic_alias)),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("users/alice/out/t".to_string(), Some(1)),
            (String::new(), Some(1))
        ]
    );

    // A client silent for 1.5 times its keep-alive is disconnected.
    let mut connect = connect_packet(Version::V5, "sleepy");
    connect.keep_alive = 1;
    let (mut sleepy, _) = Raw::open(addr, connect).await;
    sleepy.expect_disconnect(Reason::KEEP_ALIVE_TIMEOUT).await;
    server.stop().await;
}

#[tokio::test]
async fn sessions_expire_and_wills_follow_how_the_connection_ended() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let mut connect = connect_packet(Version::V5, "brief");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(1);
    let (mut brief, _) = Raw::open(addr, connect.clone()).await;
    brief.subscribe("users/alice/x", QoS::AtLeastOnce).await;
    drop(brief);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, ack) = Raw::open(addr, connect).await;
    assert!(!ack.session_present, "the session expired after a second");

    let mut watcher = Raw::connect(addr, "watcher").await;
    watcher
        .subscribe("users/alice/will", QoS::AtLeastOnce)
        .await;
    let with_will = |id: &str| {
        let mut c = connect_packet(Version::V5, id);
        c.will = Some(Will {
            topic: "users/alice/will".into(),
            payload: Bytes::from(format!("{id} is gone")),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        });
        c
    };
    // A clean DISCONNECT drops the will.
    let (mut polite, _) = Raw::open(addr, with_will("polite")).await;
    polite
        .send(&Packet::Disconnect(Disconnect {
            reason: Reason::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    // A lost connection publishes it.
    let (lost, _) = Raw::open(addr, with_will("lost")).await;
    drop(lost);
    match watcher.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload, "lost is gone"),
        other => panic!("expected the will, got {other:?}"),
    }
    // A will on someone else's topic is refused at CONNECT.
    let mut c = connect_packet(Version::V5, "forger");
    c.will = Some(Will {
        topic: "users/bob/will".into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    let (_, ack) = Raw::open(addr, c).await;
    assert_eq!(ack.reason, Reason::NOT_AUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_qos1_message_is_in_the_store_when_its_puback_arrives() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap().id;
    let mut device = Raw::connect(server.mqtt_addr(), "durable").await;
    for i in 1..=20u16 {
        let payload = serde_json::json!({
            "client_msg_id": format!("d{i}"),
            "body": {"kind": "text", "text": format!("durable {i}")},
        })
        .to_string();
        device
            .publish(
                &format!("tidings/v1/conversations/{conv}/messages"),
                &payload,
                QoS::AtLeastOnce,
                i,
            )
            .await;
    }
    let mut acked = 0;
    while acked < 20 {
        match device.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.reason, Reason::SUCCESS);
                acked += 1;
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let history = bob.api.history(conv, None, 50).await.unwrap();
    assert_eq!(history.messages.len(), 20);
    server.stop().await;
}

/// Publishes one QoS 0 message from a fresh connection.
async fn aliaser_free_publish(addr: SocketAddr, topic: &str) {
    let mut publisher = Raw::connect(addr, "one-shot").await;
    publisher.publish(topic, "x", QoS::AtMostOnce, 0).await;
    publisher.ping().await;
}

#[tokio::test]
async fn a_device_that_stops_acknowledging_is_let_go_when_its_queue_overflows() {
    let server = TestServer::start_with(|c| c.limits.outbound_queue = 4).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut connect = connect_packet(Version::V5, "stalled");
    connect.properties.receive_maximum = Some(1);
    let (mut device, _) = Raw::open(server.mqtt_addr(), connect).await;
    device
        .subscribe("tidings/v1/me/events", QoS::AtLeastOnce)
        .await;
    let bob_ws = server.connect(&bob).await;
    for i in 0..20 {
        bob_ws
            .send_text(conv, &format!("s{i}"), "are you there?")
            .await
            .unwrap();
    }
    // One delivery fills the device's window; it never acknowledges, the IM queue behind it
    // overflows, and the server ends the connection as it would a slow WebSocket client.
    let mut publishes = 0;
    loop {
        match device.recv().await {
            Some(Packet::Publish(_)) => publishes += 1,
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, Reason::QUOTA_EXCEEDED);
                break;
            }
            other => panic!("expected PUBLISH or DISCONNECT, got {other:?}"),
        }
    }
    assert_eq!(publishes, 1, "no more than the window allows");
    server.stop().await;
}

#[tokio::test]
async fn packets_sent_right_behind_connect_are_handled_without_waiting_for_more() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let v = Version::V5;
    // CONNECT, SUBSCRIBE, PUBLISH (QoS 1) and PINGREQ in one write, as a client that does
    // not wait for CONNACK sends them: every answer comes without the client sending more.
    let mut out = BytesMut::new();
    codec::encode(
        &Packet::Connect(Box::new(connect_packet(v, "eager"))),
        v,
        &mut out,
    );
    codec::encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 7,
            properties: Properties::default(),
            filters: vec![(
                "users/alice/eager".into(),
                SubOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        }),
        v,
        &mut out,
    );
    codec::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "users/alice/eager".into(),
            packet_id: 8,
            properties: Properties::default(),
            payload: Bytes::from_static(b"right away"),
        }),
        v,
        &mut out,
    );
    codec::encode(&Packet::PingReq, v, &mut out);
    let mut raw = Raw {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: BytesMut::new(),
        v,
    };
    raw.stream.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        match raw.recv().await.expect("the connection stays open") {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.reason, Reason::SUCCESS);
                seen.push("connack");
            }
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, 7);
                seen.push("suback");
            }
            Packet::PubAck(ack) => {
                assert_eq!(ack.packet_id, 8);
                seen.push("puback");
            }
            Packet::Publish(p) => {
                assert_eq!(&p.payload[..], b"right away");
                raw.send(&Packet::PubAck(Ack::new(p.packet_id, Reason::SUCCESS)))
                    .await;
                seen.push("publish");
            }
            Packet::PingResp => seen.push("pingresp"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[..2], ["connack", "suback"], "{seen:?}");
    assert!(seen.contains(&"puback") && seen.contains(&"publish") && seen.contains(&"pingresp"));
    server.stop().await;
}

#[tokio::test]
async fn a_newer_connection_with_the_same_client_id_takes_the_session_over() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let mut first = Raw::connect(addr, "phone").await;
    first.subscribe("users/alice/t", QoS::AtLeastOnce).await;
    let mut connect = connect_packet(Version::V5, "phone");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(60);
    let (mut second, ack) = Raw::open(addr, connect).await;
    assert_eq!(ack.reason, Reason::SUCCESS);
    first.expect_disconnect(Reason::SESSION_TAKEN_OVER).await;
    // The session, and its subscription, went to the newer connection.
    let mut publisher = Raw::connect(addr, "publisher").await;
    publisher
        .publish("users/alice/t", "after", QoS::AtMostOnce, 0)
        .await;
    match second.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload, Bytes::from_static(b"after")),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    server.stop().await;
}

/// A device signed in with its password holds an access token the gateway renews before it
/// expires; without the renewal the core would close the connection at expiry.
#[tokio::test]
async fn a_password_session_outlives_its_first_access_token() {
    let server = TestServer::start_with(|c| c.tokens.access_ttl_secs = 10).await;
    server.user("alice").await;
    let addr = server.mqtt_addr();
    let mut device = Raw::connect(addr, "long-lived").await;
    device.subscribe("users/alice/t", QoS::AtMostOnce).await;
    // Past the first token's expiry, pinging within the keep-alive.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        device.ping().await;
    }
    let mut publisher = Raw::connect(addr, "publisher").await;
    publisher
        .publish("users/alice/t", "still here", QoS::AtMostOnce, 0)
        .await;
    match device.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload, Bytes::from_static(b"still here")),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    server.stop().await;
}
