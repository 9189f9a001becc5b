//! The MQTT driver: the same scenarios against Tidings (started by this tool, MQTT on a free
//! port) and against a Mosquitto broker already running (default 127.0.0.1:1883), in one run.
//!
//! - **idle**: server memory per idle MQTT connection (RSS growth over the last three quarters
//!   of `connections`).
//! - **qos1**: `pairs` publishers, each with its own subscriber on its own topic, keep `window`
//!   QoS 1 publications unacknowledged for `duration` seconds; deliveries per second and
//!   publish→deliver latency. On Tidings this runs twice: broker mode (in memory, like
//!   Mosquitto) and IM mode (direct conversations; every PUBACK waits for the fsync'd commit).
//! - **fanout**: one publisher, `fanout` subscribers of one topic, QoS 0; deliveries per second.
//!
//! The client is built on `tidings_mqtt::codec`, one task per connection, no library between
//! the measurement and the socket.

use crate::server::{Server, ServerOptions, status_kib};
use crate::setup::{self, User};
use crate::stats::{Latency, LatencySummary};
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tidings_mqtt::codec::{
    self, Ack, Connect, Packet, Properties, Publish, QoS, Reason, SubOptions, Subscribe, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Clone, Debug)]
pub struct Params {
    pub mosquitto: Option<SocketAddr>,
    pub connections: usize,
    pub pairs: usize,
    pub window: usize,
    pub duration_secs: f64,
    pub fanout: usize,
    pub payload_bytes: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Qos1 {
    pub deliveries: u64,
    pub per_second: f64,
    pub latency: LatencySummary,
}

#[derive(Debug, Default, Serialize)]
pub struct Target {
    pub name: String,
    pub idle_connections: usize,
    pub idle_kib_per_connection: f64,
    pub idle_sessions_per_gib: f64,
    pub qos1_broker: Qos1,
    /// Tidings only: QoS 1 IM messages, durable before PUBACK.
    pub qos1_im: Option<Qos1>,
    pub fanout_subscribers: usize,
    pub fanout_deliveries_per_second: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub targets: Vec<Target>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Credentials of one connection: none (Mosquitto, anonymous on loopback) or a token.
#[derive(Clone)]
struct Login {
    token: Option<String>,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(
        addr: SocketAddr,
        i: usize,
        client_id: String,
        login: &Login,
    ) -> anyhow::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(setup::source_ip(i), 0))?;
        let stream = socket.connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        conn.send(&Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 600,
            properties: Properties::default(),
            client_id,
            will: None,
            username: login.token.as_ref().map(|_| String::new()),
            password: login.token.as_ref().map(|t| Bytes::from(t.clone())),
        })))
        .await?;
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.reason == Reason::SUCCESS => Ok(conn),
            other => bail!("connection refused: {other:?}"),
        }
    }

    async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        codec::encode(packet, Version::V5, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some((packet, used)) =
                codec::decode_from_server(&self.buf, Version::V5, 1 << 24)?
            {
                let _ = self.buf.split_to(used);
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
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
        .await?;
        match self.recv().await? {
            Packet::SubAck(ack) if ack.reasons.iter().all(|r| !r.is_error()) => Ok(()),
            other => bail!("subscription refused: {other:?}"),
        }
    }
}

/// How a publication's send time travels: in the first 8 bytes (broker), or as the first word
/// of a message text inside an IM event (IM).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Broker,
    Im,
}

fn sent_at(mode: Mode, payload: &[u8]) -> Option<u64> {
    match mode {
        Mode::Broker => Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?)),
        Mode::Im => {
            let event: serde_json::Value = serde_json::from_slice(payload).ok()?;
            if event["type"] != "message" {
                return None;
            }
            event["message"]["body"]["text"]
                .as_str()?
                .split(' ')
                .next()?
                .parse()
                .ok()
        }
    }
}

/// Receives until `until`, acknowledging QoS 1, recording latency.
async fn subscriber(
    mut conn: Conn,
    mode: Mode,
    until: Instant,
    latency: Arc<Mutex<Latency>>,
    count: Arc<AtomicU64>,
) {
    let mut local = Latency::default();
    let mut n = 0u64;
    while let Ok(Ok(packet)) = tokio::time::timeout_at(until.into(), conn.recv()).await {
        if let Packet::Publish(p) = packet {
            if let Some(at) = sent_at(mode, &p.payload) {
                local.record_ns(now_ns() as i64 - at as i64);
                n += 1;
            }
            if p.qos == QoS::AtLeastOnce
                && conn
                    .send(&Packet::PubAck(Ack::new(p.packet_id, Reason::SUCCESS)))
                    .await
                    .is_err()
            {
                break;
            }
        }
    }
    latency.lock().expect("latency lock").merge(&local);
    count.fetch_add(n, Ordering::Relaxed);
}

/// Publishes with `window` QoS 1 publications in flight until `until`.
async fn publisher(
    mut conn: Conn,
    topic: String,
    mode: Mode,
    window: usize,
    payload_bytes: usize,
    until: Instant,
) -> anyhow::Result<()> {
    let mut in_flight = 0usize;
    let mut next_id: u16 = 1;
    let mut seq = 0u64;
    let filler = "x".repeat(payload_bytes);
    while Instant::now() < until {
        while in_flight < window {
            let at = now_ns();
            let payload = match mode {
                Mode::Broker => {
                    let mut p = at.to_be_bytes().to_vec();
                    p.resize(payload_bytes.max(8), b'x');
                    Bytes::from(p)
                }
                Mode::Im => {
                    seq += 1;
                    Bytes::from(
                        serde_json::json!({
                            "client_msg_id": format!("b{seq}"),
                            "body": {"kind": "text", "text": format!("{at} {filler}")},
                        })
                        .to_string(),
                    )
                }
            };
            conn.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.clone(),
                packet_id: next_id,
                properties: Properties::default(),
                payload,
            }))
            .await?;
            next_id = next_id.checked_add(1).unwrap_or(1);
            in_flight += 1;
        }
        match tokio::time::timeout_at(until.into(), conn.recv()).await {
            Ok(packet) => {
                if let Packet::PubAck(a) = packet? {
                    if a.reason.is_error() {
                        bail!("publication refused: {:?}", a.reason);
                    }
                    in_flight -= 1;
                }
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// One measured QoS 1 run: `topics[i]` is where publisher `i` writes and subscriber `i` reads.
async fn qos1(
    addr: SocketAddr,
    logins: &[(Login, Login)],
    topics: &[(String, String)],
    mode: Mode,
    params: &Params,
    first_ip: usize,
) -> anyhow::Result<Qos1> {
    let latency = Arc::new(Mutex::new(Latency::default()));
    let count = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for (i, ((pub_login, sub_login), (pub_topic, sub_filter))) in
        logins.iter().zip(topics).enumerate()
    {
        let mut sub = Conn::open(addr, first_ip + 2 * i, format!("bsub{i}"), sub_login).await?;
        sub.subscribe(sub_filter, QoS::AtLeastOnce).await?;
        subs.push(sub);
        pubs.push((
            Conn::open(addr, first_ip + 2 * i + 1, format!("bpub{i}"), pub_login).await?,
            pub_topic.clone(),
        ));
    }
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(params.duration_secs);
    // Subscribers keep reading a little past the end for what is still in flight.
    let sub_until = until + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for sub in subs {
        tasks.push(tokio::spawn(subscriber(
            sub,
            mode,
            sub_until,
            latency.clone(),
            count.clone(),
        )));
    }
    let mut publishers = Vec::new();
    for (conn, topic) in pubs {
        publishers.push(tokio::spawn(publisher(
            conn,
            topic,
            mode,
            params.window,
            params.payload_bytes,
            until,
        )));
    }
    for p in publishers {
        p.await??;
    }
    for t in tasks {
        t.await?;
    }
    let deliveries = count.load(Ordering::Relaxed);
    let latency = latency.lock().expect("latency lock").summary();
    Ok(Qos1 {
        deliveries,
        per_second: deliveries as f64 / params.duration_secs,
        latency,
    })
}

async fn fanout(
    addr: SocketAddr,
    logins: &[Login],
    topic: &str,
    params: &Params,
    first_ip: usize,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Latency::default()));
    let mut subs = Vec::new();
    for (i, login) in logins.iter().enumerate().skip(1) {
        let mut sub = Conn::open(addr, first_ip + i, format!("fsub{i}"), login).await?;
        sub.subscribe(topic, QoS::AtMostOnce).await?;
        subs.push(sub);
    }
    let mut publisher = Conn::open(addr, first_ip, "fpub".into(), &logins[0]).await?;
    let until = Instant::now() + Duration::from_secs_f64(params.duration_secs);
    let tasks: Vec<_> = subs
        .into_iter()
        .map(|s| {
            tokio::spawn(subscriber(
                s,
                Mode::Broker,
                until + Duration::from_secs(1),
                latency.clone(),
                count.clone(),
            ))
        })
        .collect();
    // QoS 0 has no flow control: pace by a round trip (PINGREQ) every 100 publications so the
    // publisher cannot run unboundedly ahead of the deliveries.
    let mut sent = 0u64;
    while Instant::now() < until {
        let mut p = now_ns().to_be_bytes().to_vec();
        p.resize(params.payload_bytes.max(8), b'x');
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                packet_id: 0,
                properties: Properties::default(),
                payload: Bytes::from(p),
            }))
            .await?;
        sent += 1;
        if sent.is_multiple_of(100) {
            publisher.send(&Packet::PingReq).await?;
            while !matches!(publisher.recv().await?, Packet::PingResp) {}
        }
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / params.duration_secs)
}

/// Opens idle connections, one per login, and returns KiB of server RSS per connection: the
/// growth over the last three quarters of them. The first quarter is not counted: a server
/// first reuses heap it freed earlier (creating the bench's users, a previous phase), so RSS
/// barely grows at first and a plain before/after difference can read 0.
async fn idle(
    addr: SocketAddr,
    pid: u32,
    logins: &[Login],
    first_ip: usize,
) -> anyhow::Result<f64> {
    let warm = logins.len() / 4;
    let mut conns = Vec::with_capacity(logins.len());
    let mut before = 0;
    for (i, login) in logins.iter().enumerate() {
        if i == warm {
            tokio::time::sleep(Duration::from_secs(2)).await;
            before = status_kib(pid, "VmRSS")?;
        }
        conns.push(Conn::open(addr, first_ip + i, format!("idle{i}"), login).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status_kib(pid, "VmRSS")?;
    drop(conns);
    Ok((after.saturating_sub(before)) as f64 / (logins.len() - warm).max(1) as f64)
}

fn per_gib(kib: f64) -> f64 {
    if kib > 0.0 {
        1024.0 * 1024.0 / kib
    } else {
        0.0
    }
}

/// Finds the Mosquitto process, for its memory.
/// The Mosquitto serving `port`: the one whose command line names the port (a broker started
/// for the run, `mosquitto -p PORT`, has a fresh heap, so its memory growth is not absorbed by
/// what a long-running broker freed before), else the only or first one found.
fn mosquitto_pid(port: u16) -> Option<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "mosquitto" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let names_port = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == port.to_string().as_bytes());
        if names_port {
            return Some(pid);
        }
        found.push(pid);
    }
    found.first().copied()
}

pub async fn run(options: &ServerOptions, params: Params) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    epoch();
    // Tidings: MQTT on a free port, every broker topic open to the bench users.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut options = options.clone();
    options
        .env
        .push(("TIDINGS_MQTT_ENABLED".into(), "true".into()));
    options
        .env
        .push(("TIDINGS_MQTT_LISTEN".into(), format!("127.0.0.1:{port}")));
    options.env.push((
        "TIDINGS_MQTT_BROKER_RULES".into(),
        r##"[{ pattern = "#", read = true, write = true }]"##.into(),
    ));
    let server = Server::start(&options).await?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let users = setup::create_users(
        &server.client(),
        "mq",
        params
            .connections
            .max(2 * params.pairs)
            .max(params.fanout + 1),
    )
    .await?;
    let token = |u: &User| Login {
        token: Some(u.token.clone()),
    };
    let mut t = Target {
        name: "tidings".into(),
        ..Target::default()
    };
    let logins: Vec<Login> = users.iter().take(params.connections).map(token).collect();
    t.idle_connections = logins.len();
    t.idle_kib_per_connection = idle(addr, server.pid, &logins, 0).await?;
    t.idle_sessions_per_gib = per_gib(t.idle_kib_per_connection);
    let pair_logins: Vec<(Login, Login)> = (0..params.pairs)
        .map(|i| (token(&users[2 * i]), token(&users[2 * i + 1])))
        .collect();
    let topics: Vec<(String, String)> = (0..params.pairs)
        .map(|i| (format!("bench/{i}"), format!("bench/{i}")))
        .collect();
    t.qos1_broker = qos1(addr, &pair_logins, &topics, Mode::Broker, &params, 2000).await?;
    let pairs: Vec<(User, User)> = (0..params.pairs)
        .map(|i| (users[2 * i].clone(), users[2 * i + 1].clone()))
        .collect();
    let convs = setup::open_directs(&server.client(), &pairs).await?;
    let im_topics: Vec<(String, String)> = convs
        .iter()
        .map(|c| {
            (
                format!("tidings/v1/conversations/{c}/messages"),
                "tidings/v1/me/events".to_string(),
            )
        })
        .collect();
    t.qos1_im = Some(qos1(addr, &pair_logins, &im_topics, Mode::Im, &params, 3000).await?);
    let fan_logins: Vec<Login> = users.iter().take(params.fanout + 1).map(token).collect();
    t.fanout_subscribers = params.fanout;
    t.fanout_deliveries_per_second =
        fanout(addr, &fan_logins, "bench/fanout", &params, 4000).await?;
    server.stop().await?;
    outcome.targets.push(t);

    if let Some(addr) = params.mosquitto {
        let pid =
            mosquitto_pid(addr.port()).context("no mosquitto process found for its memory")?;
        let anon = Login { token: None };
        let mut m = Target {
            name: format!("mosquitto {addr}"),
            ..Target::default()
        };
        let logins = vec![anon.clone(); params.connections];
        m.idle_connections = logins.len();
        m.idle_kib_per_connection = idle(addr, pid, &logins, 0).await?;
        m.idle_sessions_per_gib = per_gib(m.idle_kib_per_connection);
        let pair_logins = vec![(anon.clone(), anon.clone()); params.pairs];
        let topics: Vec<(String, String)> = (0..params.pairs)
            .map(|i| (format!("tidings-bench/{i}"), format!("tidings-bench/{i}")))
            .collect();
        m.qos1_broker = qos1(addr, &pair_logins, &topics, Mode::Broker, &params, 2000).await?;
        m.fanout_subscribers = params.fanout;
        m.fanout_deliveries_per_second = fanout(
            addr,
            &vec![anon; params.fanout + 1],
            "tidings-bench/fanout",
            &params,
            4000,
        )
        .await?;
        outcome.targets.push(m);
    }
    Ok(outcome)
}

pub fn print(outcome: &Outcome) {
    for t in &outcome.targets {
        println!("== {}", t.name);
        println!(
            "idle: {} connections, {:.1} KiB each, {:.0} per GiB",
            t.idle_connections, t.idle_kib_per_connection, t.idle_sessions_per_gib
        );
        let line = |name: &str, q: &Qos1| {
            println!(
                "{name}: {:.0} deliveries/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                q.per_second, q.latency.p50_ms, q.latency.p99_ms, q.latency.max_ms
            );
        };
        line("qos1 broker", &t.qos1_broker);
        if let Some(im) = &t.qos1_im {
            line("qos1 IM (durable)", im);
        }
        println!(
            "fan-out to {}: {:.0} deliveries/s",
            t.fanout_subscribers, t.fanout_deliveries_per_second
        );
    }
}
