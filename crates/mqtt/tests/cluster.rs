//! Broker mode across nodes: two servers share one PostgreSQL database and one NATS server,
//! and publications on topics outside `tidings/` made on one node reach the subscribers of the
//! other, in order, with retained messages, in both directions.
//!
//! Needs PostgreSQL (`PG_TEST_URL`, default 127.0.0.1:5432) and NATS (`NATS_TEST_URL`, default
//! 127.0.0.1:4222); the test fails when either is missing. It creates its own database and uses
//! its own NATS subject prefix.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tidings::config::{BusKind, StoreKind};
use tidings_mqtt::codec::{
    self, Ack, Connect, Packet, Properties, Publish, QoS, Reason, SubOptions, Subscribe, Version,
};
use tidings_store_postgres::testing::TestDatabase;
use tidings_testkit::{PASSWORD, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal MQTT 5 client on the crate's codec.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, username: &str, client_id: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        raw.send(&Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: client_id.into(),
            will: None,
            username: Some(username.into()),
            password: Some(Bytes::from_static(PASSWORD.as_bytes())),
        })))
        .await;
        match raw.recv().await {
            Packet::ConnAck(ack) => assert_eq!(ack.reason, Reason::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, Version::V5, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        loop {
            if let Some((packet, used)) =
                codec::decode_from_server(&self.buf, Version::V5, 1 << 24).unwrap()
            {
                let _ = self.buf.split_to(used);
                return packet;
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("a packet in time")
                    .unwrap();
            assert!(read > 0, "the server closed the connection");
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                filter.into(),
                SubOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    retain_handling: 0,
                },
            )],
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(ack) => assert_eq!(ack.reasons, [Reason(1)]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    async fn publish(&mut self, topic: &str, payload: &str, retain: bool, packet_id: u16) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: topic.into(),
            packet_id,
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }))
        .await;
        match self.recv().await {
            Packet::PubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                assert_eq!(ack.reason, Reason::SUCCESS);
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// The next publication (acknowledged): topic, payload, retain flag.
    async fn next_publication(&mut self) -> (String, String, bool) {
        loop {
            if let Packet::Publish(p) = self.recv().await {
                if p.qos != QoS::AtMostOnce {
                    self.send(&Packet::PubAck(Ack::new(p.packet_id, Reason::SUCCESS)))
                        .await;
                }
                return (
                    p.topic,
                    String::from_utf8(p.payload.to_vec()).unwrap(),
                    p.retain,
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_publications_cross_nodes_through_nats() {
    let db = TestDatabase::create().await;
    let nats = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("tidings-mqtt-cluster-test.{}", db.name);
    // One data directory for both nodes: it holds the token signing key they share.
    let data = tempfile::tempdir().unwrap();
    let node = |db_url: String, nats: String, prefix: String, dir: std::path::PathBuf| {
        move |c: &mut tidings::config::Config| {
            c.data_dir = dir;
            c.store.kind = StoreKind::Postgres;
            c.store.url = db_url;
            c.store.max_connections = 4;
            c.bus.kind = BusKind::Nats;
            c.bus.url = nats;
            c.bus.subject_prefix = prefix;
            c.tokens.issuer = "http://tidings.test".into();
        }
    };
    let a = TestServer::start_with(node(
        db.url.clone(),
        nats.clone(),
        prefix.clone(),
        data.path().into(),
    ))
    .await;
    let b = TestServer::start_with(node(
        db.url.clone(),
        nats.clone(),
        prefix.clone(),
        data.path().into(),
    ))
    .await;
    a.user("alice").await;

    // alice's subscriber on node B, her publisher on node A.
    let mut sub = Raw::connect(b.mqtt_addr(), "alice", "alice-sub").await;
    sub.subscribe("users/alice/#").await;
    let mut publisher = Raw::connect(a.mqtt_addr(), "alice", "alice-pub").await;
    // NATS subscriptions of both nodes are in place once the servers started; still, the
    // first publication is retried until it arrives, so the test does not race the bus.
    let mut arrived = false;
    for attempt in 0..20u16 {
        publisher
            .publish(
                "users/alice/ping",
                &format!("ping{attempt}"),
                false,
                100 + attempt,
            )
            .await;
        if let Ok(got) =
            tokio::time::timeout(Duration::from_millis(500), sub.next_publication()).await
        {
            assert_eq!(got.0, "users/alice/ping");
            arrived = true;
            break;
        }
    }
    assert!(arrived, "a publication on node A reached node B");
    // Drain any late ping.
    while let Ok(got) =
        tokio::time::timeout(Duration::from_millis(300), sub.next_publication()).await
    {
        assert_eq!(got.0, "users/alice/ping");
    }

    // Many publications, in order.
    for i in 1..=50u16 {
        publisher
            .publish("users/alice/data", &format!("m{i}"), false, i)
            .await;
    }
    for i in 1..=50 {
        let (topic, payload, retain) = sub.next_publication().await;
        assert_eq!(
            (topic.as_str(), payload.as_str(), retain),
            ("users/alice/data", format!("m{i}").as_str(), false)
        );
    }

    // A retained message published on A is live on B and retained there for a new subscriber.
    publisher.publish("users/alice/state", "on", true, 60).await;
    let (topic, payload, retain) = sub.next_publication().await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("users/alice/state", "on")
    );
    assert!(retain, "retain as published");
    let mut late = Raw::connect(b.mqtt_addr(), "alice", "alice-late").await;
    late.subscribe("users/alice/state").await;
    let (topic, payload, retain) = late.next_publication().await;
    assert_eq!(
        (topic.as_str(), payload.as_str(), retain),
        ("users/alice/state", "on", true)
    );

    // The other direction: published on B, received on A.
    let mut sub_a = Raw::connect(a.mqtt_addr(), "alice", "alice-sub-a").await;
    sub_a.subscribe("users/alice/back").await;
    late.publish("users/alice/back", "from b", false, 70).await;
    let (topic, payload, _) = sub_a.next_publication().await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("users/alice/back", "from b")
    );

    a.stop().await;
    b.stop().await;
}
