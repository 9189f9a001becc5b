//! The comparison: Tidings (native WebSocket, its XMPP gateway, its MQTT gateway) side by side
//! with ejabberd, Prosody and Mosquitto, driven by the same scenario code through [`Link`].
//!
//! - **Scenario 1, idle sessions**: server RSS at increasing numbers of authenticated, idle
//!   sessions (XMPP: bound, Stream Management on, initial presence; MQTT: connected and
//!   subscribed; WebSocket: authenticated), and the slope of the line through the points.
//! - **Scenario 2, 1:1 durable messaging**: `pairs` sender→receiver pairs, open-loop senders at
//!   a constant total rate for `step` seconds, each rate on a fresh server; latency from the
//!   intended send time; the highest rate whose end-to-end p99 stays within 50 ms with nothing
//!   lost, duplicated or reordered.
//!
//! - **Scenario 3, group fan-out** ([`fanout`]): one sender in a group of N members, open loop;
//!   first- and last-recipient latency, deliveries per second, completeness; then one member
//!   stops reading and the others are measured beside it (native protocol only).
//! - **Scenario 4, offline catch-up** ([`catchup`]): N messages sent while the receiver is
//!   away, then the time to take them all in on its return (native sync, MAM pages, a
//!   persistent MQTT session) and the server's peak memory meanwhile.
//! - **Scenario 5, sign-in storm** ([`storm`]): K clients holding credentials come back to a
//!   restarted server within W seconds; sign-ins per second, time to a session, failures.
//!
//! - **Scenario 6, mixed soak** ([`soak`]): users in pairs and in groups of 50 to 500 send at
//!   constant rates for half an hour while 1% of them churn per minute; memory and latency
//!   must stay flat and every member must hold every message (native protocol only).
//!
//! Every message text is `"<pair> <k> <intended ns> <filler>"`: the receiver checks that the
//! message came from its own sender and that `k` arrives exactly once, in order, for every
//! message the server acknowledged.
//!
//! Tidings is started by this tool (see [`crate::server`]), its accounts made over REST; the
//! peers by `bench/peers/run`, each on a fresh data directory, which also writes their accounts.

mod catchup;
mod fanout;
mod soak;
mod storm;

pub use catchup::CatchupOutcome;
pub use fanout::FanoutOutcome;
pub use soak::{SoakOutcome, SoakParams};
pub use storm::StormOutcome;

use crate::link::{self, Event, Link, MqttMode};
use crate::server::{
    Server, ServerOptions, cpu_seconds, machine_busy_seconds, own_cpu_seconds, status_kib,
};
use crate::setup::{self, PASSWORD, source_ip};
use crate::stats::{Completeness, Latency, LatencySummary, Line, regression};
use crate::xmpp;
use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidings_proto::UserId;
use tidings_sdk::{ConnectOptions, Connection};
use tokio::sync::watch;
use tokio::time::Instant;

/// The end-to-end p99 a rate must stay within.
pub const E2E_P99_TARGET_MS: f64 = 50.0;

/// The XMPP domain of every XMPP server here.
const DOMAIN: &str = "localhost";

/// A server and protocol under test.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Tidings, native protocol (JSON frames over WebSocket).
    TidingsWs,
    /// Tidings' XMPP gateway (STARTTLS, PLAIN, Stream Management).
    TidingsXmpp,
    /// Tidings' MQTT gateway, IM topics (QoS 1; PUBACK after the fsync'd commit).
    TidingsMqtt,
    Ejabberd,
    Prosody,
    /// Mosquitto, QoS 1 (persistence on, not written per message).
    Mosquitto,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::TidingsWs => "tidings-ws",
            Target::TidingsXmpp => "tidings-xmpp",
            Target::TidingsMqtt => "tidings-mqtt",
            Target::Ejabberd => "ejabberd",
            Target::Prosody => "prosody",
            Target::Mosquitto => "mosquitto",
        }
    }

    fn peer(self) -> Option<&'static str> {
        match self {
            Target::Ejabberd => Some("ejabberd"),
            Target::Prosody => Some("prosody"),
            Target::Mosquitto => Some("mosquitto"),
            _ => None,
        }
    }

    fn is_xmpp(self) -> bool {
        matches!(
            self,
            Target::TidingsXmpp | Target::Ejabberd | Target::Prosody
        )
    }

    pub const ALL: [Target; 6] = [
        Target::TidingsWs,
        Target::TidingsXmpp,
        Target::TidingsMqtt,
        Target::Ejabberd,
        Target::Prosody,
        Target::Mosquitto,
    ];
}

/// What the comparison runs.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub targets: Vec<Target>,
    /// Session counts of scenario 1 (empty: skip it).
    pub idle_counts: Vec<usize>,
    /// Offered rates of scenario 2, increasing (empty: skip it).
    pub rates: Vec<u64>,
    pub pairs: usize,
    pub step_secs: f64,
    pub drain_secs: f64,
    pub payload_bytes: usize,
    /// Failed rates in a row after which a target's sweep stops.
    pub stop_after_failures: usize,
    /// Group sizes of scenario 3, the sender included (empty: skip it).
    pub fanout_members: Vec<usize>,
    /// Messages per second the fan-out's sender sends, in each of its two phases.
    pub fanout_rate: u64,
    /// Seconds of sending per fan-out phase.
    pub fanout_step_secs: f64,
    pub fanout_payload_bytes: usize,
    /// `limits.outbound_queue` for the fan-out's server (`None`: the server's default); small,
    /// the stalled member overflows it within seconds.
    pub fanout_outbound_queue: Option<usize>,
    /// Messages of scenario 4's backlog (0: skip it).
    pub catchup_messages: u64,
    /// Seconds the backlog's sender may take; a server that stores fewer in that time is
    /// caught up on what it stored.
    pub catchup_send_secs: f64,
    /// Scenario 6 (`users` 0: skip it).
    pub soak: SoakParams,
    /// Clients of scenario 5 (0: skip it).
    pub storm_clients: usize,
    /// Seconds within which they all come back.
    pub storm_window_secs: f64,
    /// The targets of scenario 5, among `targets` (the smoke profile: the native protocol only,
    /// to stay within its time).
    pub storm_targets: Vec<Target>,
    /// Pass on completeness alone (the smoke profile: correctness, never speed).
    pub completeness_only: bool,
}

/// Where things are.
#[derive(Clone, Debug)]
pub struct Env {
    pub server: ServerOptions,
    /// `bench/peers/run`.
    pub peers_script: PathBuf,
    /// Parent of the peers' fresh data directories.
    pub peers_dir: PathBuf,
}

/// One account on the server under test.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    /// Tidings: the access token (WebSocket, MQTT); everything else signs in with [`PASSWORD`].
    token: String,
    /// Tidings: the account's id (groups are made of ids); the peers have none.
    user_id: Option<UserId>,
}

/// A server started for one measurement.
struct Deployment {
    target: Target,
    pid: u32,
    /// The XMPP or MQTT endpoint.
    addr: SocketAddr,
    ws_url: String,
    server: Option<Server>,
    peer_dir: Option<PathBuf>,
    accounts: Vec<Account>,
    /// Per pair, where the sender sends: a conversation id, a JID or a topic.
    dests: Vec<String>,
    /// Connection attempts that failed and were tried again.
    retries: AtomicU64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `bench/peers/run ARGS` and returns its standard output.
async fn peers_script(env: &Env, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(&env.peers_script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", env.peers_script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            env.peers_script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `PEER pid PID addr ADDR`.
fn parse_started(line: &str) -> anyhow::Result<(u32, SocketAddr)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [_, "pid", pid, "addr", addr, ..] => Ok((pid.parse()?, addr.parse()?)),
        _ => bail!("unexpected output from the peers script: {line}"),
    }
}

fn xmpp_endpoint(addr: SocketAddr) -> xmpp::Endpoint {
    xmpp::Endpoint {
        addr,
        domain: DOMAIN.into(),
        starttls: true,
    }
}

impl Deployment {
    /// Starts `target` fresh with `n` accounts and `pairs` sender→receiver pairs (account `2i`
    /// sends to `2i+1`). With `fresh_heap`, the server is restarted on the same data after the
    /// accounts exist, so what setting up left on the heap does not absorb the first sessions.
    async fn start(
        env: &Env,
        target: Target,
        n: usize,
        pairs: usize,
        fresh_heap: bool,
    ) -> anyhow::Result<Deployment> {
        // The peers' accounts are written by bench/peers/run as u0, u1, …; Tidings wants
        // usernames of three characters or more.
        let prefix = if target.peer().is_some() {
            "u"
        } else {
            "bench"
        };
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        if let Some(peer) = target.peer() {
            let dir = env.peers_dir.join(peer);
            let dir_str = dir.to_string_lossy().into_owned();
            let line = peers_script(env, &["start", peer, &dir_str]).await?;
            let (mut pid, addr) = parse_started(line.trim())?;
            if target.is_xmpp() {
                peers_script(env, &["accounts", peer, &dir_str, &n.to_string(), PASSWORD]).await?;
            }
            if fresh_heap {
                let line = peers_script(env, &["restart", peer, &dir_str]).await?;
                pid = parse_started(line.trim())?.0;
            }
            let dests = (0..pairs)
                .map(|i| match target {
                    Target::Mosquitto => format!("bench/{i}"),
                    _ => format!("u{}@{DOMAIN}", 2 * i + 1),
                })
                .collect();
            return Ok(Deployment {
                target,
                pid,
                addr,
                ws_url: String::new(),
                server: None,
                peer_dir: Some(dir),
                accounts: names
                    .into_iter()
                    .map(|name| Account {
                        name,
                        token: String::new(),
                        user_id: None,
                    })
                    .collect(),
                dests,
                retries: AtomicU64::new(0),
            });
        }
        let mut options = env.server.clone();
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        if target == Target::TidingsMqtt {
            options.env.extend([
                ("TIDINGS_MQTT_ENABLED".into(), "true".into()),
                ("TIDINGS_MQTT_LISTEN".into(), addr.to_string()),
            ]);
        }
        let server = Server::start(&options).await?;
        let client = server.client();
        let users = setup::create_users(&client, prefix, n).await?;
        let pair_users: Vec<_> = (0..pairs)
            .map(|i| (users[2 * i].clone(), users[2 * i + 1].clone()))
            .collect();
        let conversations = setup::open_directs(&client, &pair_users).await?;
        let dests = conversations
            .iter()
            .enumerate()
            .map(|(i, c)| match target {
                Target::TidingsWs => c.to_string(),
                Target::TidingsMqtt => format!("tidings/v1/conversations/{c}/messages"),
                _ => format!("{}@{DOMAIN}", names[2 * i + 1]),
            })
            .collect();
        let server = if target == Target::TidingsXmpp {
            // XMPP signs in only over TLS; with TLS on, HTTP is HTTPS too, which the SDK's client
            // does not trust, so accounts are made first and the server restarted with TLS.
            options.env.extend([
                ("TIDINGS_TLS_DEV".into(), "true".into()),
                ("TIDINGS_XMPP_ENABLED".into(), "true".into()),
                ("TIDINGS_XMPP_LISTEN".into(), addr.to_string()),
                ("TIDINGS_XMPP_DIRECT_TLS".into(), "false".into()),
                // Fairness: ejabberd and Prosody run without a per-client shaper here.
                ("TIDINGS_XMPP_STANZAS_PER_SECOND".into(), "100000".into()),
                ("TIDINGS_XMPP_STANZA_BURST".into(), "100000".into()),
            ]);
            server.restart(&options).await?
        } else if fresh_heap {
            server.restart(&options).await?
        } else {
            server
        };
        Ok(Deployment {
            target,
            pid: server.pid,
            addr,
            ws_url: server.ws_url(),
            server: Some(server),
            peer_dir: None,
            accounts: names
                .into_iter()
                .zip(users)
                .map(|(name, u)| Account {
                    name,
                    token: u.token,
                    user_id: Some(u.user_id),
                })
                .collect(),
            dests,
            retries: AtomicU64::new(0),
        })
    }

    /// Connects account `i` from source address number `src`; a failed attempt (a server
    /// that timed out a slow handshake on this busy machine) is tried twice more, and counted.
    async fn connect(
        &self,
        i: usize,
        src: usize,
        dest: Option<&str>,
        idle: bool,
    ) -> anyhow::Result<Link> {
        let mut attempt = 0;
        loop {
            match self.connect_once(i, src, dest, idle).await {
                Ok(link) => return Ok(link),
                Err(e) if attempt < 2 => {
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "{}: connection {i}: {e:#}; trying again",
                        self.target.name()
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a native-protocol connection for account `i` from source address number `i` with
    /// the given client buffers (a member that is to stop reading needs small ones, so the
    /// server's socket fills); failed attempts are tried twice more and counted, as in
    /// [`Deployment::connect`].
    async fn connect_ws(
        &self,
        i: usize,
        read_buffer: usize,
        event_buffer: usize,
    ) -> anyhow::Result<Connection> {
        let options = ConnectOptions {
            local_ip: Some(source_ip(i)),
            read_buffer,
            event_buffer,
        };
        let label = format!("{}: connection {i}", self.target.name());
        connect_ws_retrying(
            &self.ws_url,
            &self.accounts[i].token,
            &options,
            &label,
            &self.retries,
        )
        .await
    }

    /// Connects account `i` from source address number `src`. A sender sends to `dest`; every
    /// link receives what is addressed to its account.
    async fn connect_once(
        &self,
        i: usize,
        src: usize,
        dest: Option<&str>,
        idle: bool,
    ) -> anyhow::Result<Link> {
        let account = &self.accounts[i];
        let ip = source_ip(src);
        match self.target {
            Target::TidingsWs => {
                let options = ConnectOptions {
                    local_ip: Some(ip),
                    read_buffer: if idle { 2048 } else { 16 * 1024 },
                    event_buffer: if idle { 8 } else { 65_536 },
                };
                let conn = Connection::connect_with(&self.ws_url, &account.token, &options).await?;
                let conversation = dest.map(|d| d.parse()).transpose()?;
                Ok(Link::ws(conn, conversation))
            }
            Target::TidingsXmpp | Target::Ejabberd | Target::Prosody => {
                let negotiated = xmpp::connect(
                    &xmpp_endpoint(self.addr),
                    ip,
                    &account.name,
                    PASSWORD,
                    "bench",
                )
                .await?;
                Ok(Link::xmpp(negotiated, dest.unwrap_or_default().to_string()))
            }
            Target::TidingsMqtt => {
                link::mqtt_connect_within(
                    self.addr,
                    ip,
                    link::MqttClient {
                        client_id: format!("bench{i}"),
                        password: Some(&account.token),
                        mode: MqttMode::Im,
                        topic: dest.unwrap_or_default().to_string(),
                        subscribe: Some("tidings/v1/me/events"),
                        session_expiry: None,
                    },
                )
                .await
            }
            Target::Mosquitto => {
                // Receiver of pair p (account 2p+1) reads bench/p; idle sessions their own topic.
                let subscribe = if i % 2 == 1 && !idle {
                    format!("bench/{}", i / 2)
                } else {
                    format!("bench/idle/{i}")
                };
                link::mqtt_connect_within(
                    self.addr,
                    ip,
                    link::MqttClient {
                        client_id: format!("bench{i}"),
                        password: None,
                        mode: MqttMode::Broker,
                        topic: dest.unwrap_or_default().to_string(),
                        subscribe: Some(&subscribe),
                        session_expiry: None,
                    },
                )
                .await
            }
        }
    }

    fn alive(&mut self) -> bool {
        match &mut self.server {
            Some(s) => s.alive(),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// Bytes the server keeps on disk (accounts, archive, journal).
    fn data_bytes(&self) -> u64 {
        let dir = match (&self.server, &self.peer_dir) {
            (Some(s), _) => s.data_path().to_path_buf(),
            (None, Some(d)) => d.clone(),
            _ => return 0,
        };
        dir_bytes(&dir)
    }

    async fn stop(self, env: &Env) -> anyhow::Result<()> {
        if let Some(server) = self.server {
            server.stop().await?;
        }
        if let (Some(peer), Some(dir)) = (self.target.peer(), &self.peer_dir) {
            peers_script(env, &["stop", peer, &dir.to_string_lossy()]).await?;
        }
        Ok(())
    }
}

/// Opens a native-protocol connection; a failed attempt (a server that timed out a slow
/// handshake on this busy machine) is tried twice more, each counted in `retries`.
async fn connect_ws_retrying(
    ws_url: &str,
    token: &str,
    options: &ConnectOptions,
    label: &str,
    retries: &AtomicU64,
) -> anyhow::Result<Connection> {
    let mut attempt = 0;
    loop {
        match Connection::connect_with(ws_url, token, options).await {
            Ok(conn) => return Ok(conn),
            Err(e) if attempt < 2 => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                eprintln!("{label}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: idle sessions.

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdlePoint {
    pub sessions: usize,
    pub server_rss_kib: u64,
    pub connect_secs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleOutcome {
    pub target: Target,
    pub baseline_rss_kib: u64,
    pub points: Vec<IdlePoint>,
    /// RSS (KiB) against sessions; the slope is KiB per idle session.
    pub fit: Option<Line>,
    /// Sessions that ended before the last reading.
    pub lost_sessions: u64,
    /// Session attempts that failed and were tried again.
    pub connect_retries: u64,
    /// Server CPU seconds per second over the last 10 s with every session open.
    pub idle_cpu_cores: f64,
    pub error: Option<String>,
}

async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = status_kib(pid, "VmRSS")?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = status_kib(pid, "VmRSS")?;
        if now.abs_diff(last) * 200 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

pub async fn idle(env: &Env, target: Target, counts: &[usize]) -> anyhow::Result<IdleOutcome> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let started = Instant::now();
    let deployment = Deployment::start(env, target, max, 0, true).await?;
    println!(
        "{}: {max} accounts ready in {:.1} s",
        target.name(),
        started.elapsed().as_secs_f64()
    );
    let baseline_rss_kib = settled_rss(deployment.pid).await?;
    let lost = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(max);
    let mut points = Vec::new();
    let deployment = Arc::new(deployment);
    for &count in counts {
        let started = Instant::now();
        let have = tasks.len();
        // Each session is read from the moment it is up, so Stream Management requests are
        // answered while the others connect (ejabberd drops a session after 60 s without).
        let opened: Vec<anyhow::Result<tokio::task::JoinHandle<()>>> = stream::iter(have..count)
            .map(|i| {
                let d = deployment.clone();
                let lost = lost.clone();
                async move {
                    let mut link = d
                        .connect(i, i, None, true)
                        .await
                        .with_context(|| format!("session {i}"))?;
                    Ok(tokio::spawn(async move {
                        loop {
                            if let Event::Closed(_) = link.next().await {
                                lost.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }))
                }
            })
            .buffered(64)
            .collect()
            .await;
        for task in opened {
            tasks.push(task?);
        }
        let connect_secs = started.elapsed().as_secs_f64();
        let server_rss_kib = settled_rss(deployment.pid).await?;
        println!(
            "{}: {count:>6} idle sessions (opened in {connect_secs:.1} s): server RSS {server_rss_kib} KiB",
            target.name()
        );
        points.push(IdlePoint {
            sessions: count,
            server_rss_kib,
            connect_secs,
        });
    }
    let cpu_before = cpu_seconds(&format!("/proc/{}/stat", deployment.pid))?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu_cores =
        (cpu_seconds(&format!("/proc/{}/stat", deployment.pid))? - cpu_before) / 10.0;
    let lost_sessions = lost.load(Ordering::Relaxed);
    let connect_retries = deployment.retries.load(Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let deployment = Arc::into_inner(deployment).context("every session task ended")?;
    deployment.stop(env).await?;
    let fit = regression(
        &points
            .iter()
            .map(|p| (p.sessions as f64, p.server_rss_kib as f64))
            .collect::<Vec<_>>(),
    );
    Ok(IdleOutcome {
        target,
        baseline_rss_kib,
        points,
        fit,
        lost_sessions,
        connect_retries,
        idle_cpu_cores,
        error: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: 1:1 rate sweep.

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub target: Target,
    pub rate: u64,
    pub pairs: usize,
    pub step_secs: f64,
    pub scheduled: u64,
    pub sent: u64,
    pub acked: u64,
    pub refused: BTreeMap<String, u64>,
    pub unanswered: u64,
    pub achieved_delivery_rate: f64,
    pub ack_latency: LatencySummary,
    pub e2e_latency: LatencySummary,
    pub send_lag: LatencySummary,
    pub completeness: Completeness,
    /// Messages that reached a receiver other than their sender's partner.
    pub misdelivered: u64,
    pub closed: Vec<String>,
    /// Connection attempts during setup that failed and were tried again.
    pub connect_retries: u64,
    pub server_cpu_secs: f64,
    pub bench_cpu_secs: f64,
    pub other_cpu_secs: f64,
    pub server_rss_kib_after: u64,
    /// What the server holds on disk after the step (archive, journal): ejabberd's rate falls
    /// as its archive grows, so the size goes beside the figure.
    pub server_data_bytes_after: u64,
    pub server_exited: bool,
    pub passed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepOutcome {
    pub target: Target,
    pub steps: Vec<Step>,
    pub best_rate: Option<u64>,
    pub error: Option<String>,
}

#[derive(Default)]
struct SenderReport {
    ack: Latency,
    lag: Latency,
    acked: Vec<u64>,
    sent: u64,
    refused: BTreeMap<String, u64>,
    closed: Option<String>,
}

fn since(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_nanos() as u64
}

/// Sends messages `k0..k0 + count` on `link`, message `k` at `first_ns + (k - k0) * period_ns`
/// after `epoch` whatever the server does, and waits for their answers (at most `drain` after
/// the last intended send). Gives the link back, for a sender that goes on in a later phase.
#[allow(clippy::too_many_arguments)]
async fn run_sender(
    mut link: Link,
    pair: usize,
    first_ns: f64,
    period_ns: f64,
    k0: u64,
    count: u64,
    epoch: Instant,
    drain: Duration,
    pad: Arc<str>,
) -> (SenderReport, Link) {
    let intended = |k: u64| (first_ns + (k - k0) as f64 * period_ns) as u64;
    let mut report = SenderReport::default();
    let end = k0 + count;
    let drain_until = epoch + Duration::from_nanos(intended((end - 1).max(k0))) + drain;
    let mut k = k0;
    let mut answered = 0u64;
    let timer = tokio::time::sleep_until(epoch + Duration::from_nanos(intended(k0)));
    tokio::pin!(timer);
    while answered < count {
        tokio::select! {
            biased;
            event = link.next() => match event {
                Event::Acked { first, end } => {
                    let now = since(epoch) as i64;
                    for j in first.max(k0)..end.min(k) {
                        report.ack.record_ns(now - intended(j) as i64);
                        report.acked.push(j + 1);
                    }
                    answered += end.min(k).saturating_sub(first.max(k0));
                }
                Event::Refused { k: refused_k, reason } => {
                    answered += 1;
                    if report.refused.is_empty() {
                        println!("    sender {pair}: message {refused_k} refused: {reason}");
                    }
                    *report.refused.entry(reason).or_default() += 1;
                }
                Event::Received(_) => {}
                Event::Closed(reason) => {
                    report.closed = Some(format!("sender {pair}: {reason}"));
                    break;
                }
            },
            () = &mut timer => {
                if k >= end {
                    break;
                }
                let now = since(epoch);
                let mut text = String::with_capacity(48 + pad.len());
                while k < end && intended(k) <= now {
                    use std::fmt::Write as _;
                    text.clear();
                    let _ = write!(text, "{pair} {k} {} {pad}", intended(k));
                    if link.send(k, &text).is_err() {
                        report.closed = Some(format!("sender {pair}: closed while sending"));
                        return (report, link);
                    }
                    report.lag.record_ns(since(epoch) as i64 - intended(k) as i64);
                    report.sent += 1;
                    k += 1;
                }
                link.end_burst();
                let next = if k < end {
                    epoch + Duration::from_nanos(intended(k))
                } else {
                    drain_until
                };
                timer.as_mut().reset(next);
            }
        }
    }
    (report, link)
}

#[derive(Default)]
struct ReceiverReport {
    e2e: Latency,
    received: Vec<u64>,
    misdelivered: u64,
    last_ns: u64,
    closed: Option<String>,
}

async fn run_receiver(
    mut link: Link,
    pair: usize,
    epoch: Instant,
    count: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverReport {
    let mut report = ReceiverReport::default();
    loop {
        tokio::select! {
            biased;
            event = link.next() => match event {
                Event::Received(text) => {
                    let now = since(epoch);
                    let mut words = text.split(' ');
                    let from = words.next().and_then(|w| w.parse::<usize>().ok());
                    let k = words.next().and_then(|w| w.parse::<u64>().ok());
                    let at = words.next().and_then(|w| w.parse::<u64>().ok());
                    let (Some(from), Some(k), Some(at)) = (from, k, at) else { continue };
                    if from != pair {
                        report.misdelivered += 1;
                        continue;
                    }
                    report.e2e.record_ns(now as i64 - at as i64);
                    report.received.push(k + 1);
                    report.last_ns = now;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Event::Closed(reason) => {
                    report.closed = Some(format!("receiver {pair}: {reason}"));
                    break;
                }
                _ => {}
            },
            _ = stop.changed() => break,
        }
    }
    link.close();
    report
}

async fn step(env: &Env, target: Target, rate: u64, params: &Params) -> anyhow::Result<Step> {
    let p = params.pairs.max(1);
    let mut deployment = Deployment::start(env, target, 2 * p, p, false).await?;
    let d = &deployment;
    let links: Vec<anyhow::Result<Link>> = stream::iter(0..2 * p)
        .map(|i| async move {
            let dest = (i % 2 == 0).then(|| d.dests[i / 2].as_str());
            d.connect(i, i, dest, false)
                .await
                .with_context(|| format!("{} connection {i}", target.name()))
        })
        .buffered(32)
        .collect()
        .await;
    let mut senders = Vec::with_capacity(p);
    let mut receivers = Vec::with_capacity(p);
    for (i, link) in links.into_iter().enumerate() {
        if i % 2 == 0 {
            senders.push(link?);
        } else {
            receivers.push(link?);
        }
    }
    // Let presence and session setup settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crate::server::wait_for_quiet(env.server.quiet_wait).await;

    let rate_f = rate.max(1) as f64;
    let per_sender = (params.step_secs * rate_f / p as f64).floor().max(1.0) as u64;
    let epoch = Instant::now();
    let start_ns = 100_000_000.0;
    let drain = Duration::from_secs_f64(params.drain_secs);
    let pad: Arc<str> = "x".repeat(params.payload_bytes).into();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stat = format!("/proc/{}/stat", deployment.pid);
    let server_cpu_before = cpu_seconds(&stat)?;
    let bench_cpu_before = own_cpu_seconds();
    let machine_before = machine_busy_seconds();
    let receiver_tasks: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, l)| tokio::spawn(run_receiver(l, i, epoch, received.clone(), stop_rx.clone())))
        .collect();
    let sender_tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            tokio::spawn(run_sender(
                l,
                i,
                start_ns + i as f64 * 1e9 / rate_f,
                p as f64 * 1e9 / rate_f,
                0,
                per_sender,
                epoch,
                drain,
                pad.clone(),
            ))
        })
        .collect();
    let mut sent_reports = Vec::with_capacity(p);
    for t in sender_tasks {
        let (report, link) = t.await?;
        link.close();
        sent_reports.push(report);
    }
    let acked: u64 = sent_reports.iter().map(|r| r.acked.len() as u64).sum();
    let deadline = Instant::now() + drain;
    while received.load(Ordering::Relaxed) < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer, for duplicates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut received_reports = Vec::with_capacity(p);
    for t in receiver_tasks {
        received_reports.push(t.await?);
    }
    let server_cpu_secs = cpu_seconds(&stat).unwrap_or(server_cpu_before) - server_cpu_before;
    let bench_cpu_secs = own_cpu_seconds() - bench_cpu_before;
    let other_cpu_secs =
        (machine_busy_seconds() - machine_before - server_cpu_secs - bench_cpu_secs).max(0.0);
    let server_exited = !deployment.alive();
    let server_rss_kib_after = status_kib(deployment.pid, "VmRSS").unwrap_or(0);
    let server_data_bytes_after = deployment.data_bytes();
    let connect_retries = deployment.retries.load(Ordering::Relaxed);

    let (mut ack, mut lag, mut e2e) = (Latency::default(), Latency::default(), Latency::default());
    let mut completeness = Completeness::default();
    let mut refused = BTreeMap::new();
    let mut closed = Vec::new();
    let (mut sent, mut answered, mut misdelivered, mut last_ns) = (0, 0, 0, 0);
    for (s, r) in sent_reports.iter().zip(&received_reports) {
        ack.merge(&s.ack);
        lag.merge(&s.lag);
        e2e.merge(&r.e2e);
        completeness.add(&Completeness::check(&s.acked, &r.received));
        sent += s.sent;
        answered += s.acked.len() as u64;
        for (reason, n) in &s.refused {
            *refused.entry(reason.clone()).or_default() += n;
            answered += n;
        }
        misdelivered += r.misdelivered;
        last_ns = last_ns.max(r.last_ns);
        closed.extend(s.closed.iter().chain(&r.closed).cloned());
    }
    let secs = (last_ns as f64 - start_ns) / 1e9;
    let e2e_latency = e2e.summary();
    let scheduled = per_sender * p as u64;
    let passed = (params.completeness_only || e2e_latency.p99_ms <= E2E_P99_TARGET_MS)
        && completeness.is_perfect()
        && misdelivered == 0
        && refused.is_empty()
        && sent == scheduled
        && answered == sent
        && closed.is_empty()
        && !server_exited;
    deployment.stop(env).await?;
    Ok(Step {
        target,
        rate,
        pairs: p,
        step_secs: params.step_secs,
        scheduled,
        sent,
        acked,
        refused,
        unanswered: sent.saturating_sub(answered),
        achieved_delivery_rate: if secs > 0.0 {
            completeness.received as f64 / secs
        } else {
            0.0
        },
        ack_latency: ack.summary(),
        e2e_latency,
        send_lag: lag.summary(),
        completeness,
        misdelivered,
        closed,
        connect_retries,
        server_cpu_secs,
        bench_cpu_secs,
        other_cpu_secs,
        server_rss_kib_after,
        server_data_bytes_after,
        server_exited,
        passed,
    })
}

fn print_step(s: &Step) {
    let c = &s.completeness;
    println!(
        "{:<13} {:>7} msg/s: sent {}/{}, acked {}, deliv/s {:.0}; ack p99 {:.2} ms; e2e p50 {:.2} p99 {:.2} max {:.2} ms; lost {} dup {} reordered {} misdelivered {}; refused {:?}; closed {}; server CPU {:.1} s, bench {:.1} s, other {:.1} s; data {:.1} MiB; {}",
        s.target.name(),
        s.rate,
        s.sent,
        s.scheduled,
        s.acked,
        s.achieved_delivery_rate,
        s.ack_latency.p99_ms,
        s.e2e_latency.p50_ms,
        s.e2e_latency.p99_ms,
        s.e2e_latency.max_ms,
        c.lost,
        c.duplicated,
        c.out_of_order,
        s.misdelivered,
        s.refused,
        s.closed.len(),
        s.server_cpu_secs,
        s.bench_cpu_secs,
        s.other_cpu_secs,
        s.server_data_bytes_after as f64 / (1024.0 * 1024.0),
        if s.passed { "PASS" } else { "FAIL" }
    );
    for line in s.closed.iter().take(3) {
        println!("    closed: {line}");
    }
}

pub async fn sweep(env: &Env, target: Target, params: &Params) -> SweepOutcome {
    let mut steps = Vec::new();
    let mut failures = 0;
    let mut error = None;
    for &rate in &params.rates {
        match step(env, target, rate, params).await {
            Ok(s) => {
                print_step(&s);
                failures = if s.passed { 0 } else { failures + 1 };
                steps.push(s);
            }
            Err(e) => {
                println!("{} {rate} msg/s: error: {e:#}", target.name());
                error = Some(format!("{rate} msg/s: {e:#}"));
                // Leave no peer running after a failed step.
                if let Some(peer) = target.peer() {
                    let dir = env.peers_dir.join(peer);
                    let _ = peers_script(env, &["stop", peer, &dir.to_string_lossy()]).await;
                }
                break;
            }
        }
        if failures >= params.stop_after_failures.max(1) {
            break;
        }
    }
    let best_rate = steps.iter().filter(|s| s.passed).map(|s| s.rate).max();
    SweepOutcome {
        target,
        steps,
        best_rate,
        error,
    }
}

/// The whole comparison's results.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub params: Params,
    /// `uptime` before and after: the machine is shared, so the load average goes with the figures.
    pub uptime_before: String,
    pub uptime_after: String,
    /// Installed versions of the peers (Debian packages).
    pub peer_versions: String,
    pub idle: Vec<IdleOutcome>,
    pub sweeps: Vec<SweepOutcome>,
    /// Scenario 3.
    pub fanout: Vec<FanoutOutcome>,
    /// Scenario 4.
    pub catchups: Vec<CatchupOutcome>,
    /// Scenario 5.
    pub storms: Vec<StormOutcome>,
    /// Scenario 6.
    pub soaks: Vec<SoakOutcome>,
    /// Every scenario passed (for the smoke profile: completeness only).
    pub passed: bool,
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub async fn run(env: &Env, params: Params) -> anyhow::Result<Outcome> {
    let uptime_before = uptime();
    println!("uptime: {uptime_before}");
    let peer_versions = peers_script(env, &["versions"]).await.unwrap_or_default();
    let mut idle_results = Vec::new();
    let mut sweeps = Vec::new();
    let mut fanout_results = Vec::new();
    let mut catchups = Vec::new();
    let mut storms = Vec::new();
    let mut soaks = Vec::new();
    let mut passed = true;
    for &target in &params.targets {
        if !params.idle_counts.is_empty() {
            let outcome = match idle(env, target, &params.idle_counts).await {
                Ok(o) => o,
                Err(e) => {
                    println!("{} idle: error: {e:#}", target.name());
                    if let Some(peer) = target.peer() {
                        let dir = env.peers_dir.join(peer);
                        let _ = peers_script(env, &["stop", peer, &dir.to_string_lossy()]).await;
                    }
                    IdleOutcome {
                        target,
                        baseline_rss_kib: 0,
                        points: Vec::new(),
                        fit: None,
                        lost_sessions: 0,
                        connect_retries: 0,
                        idle_cpu_cores: 0.0,
                        error: Some(format!("{e:#}")),
                    }
                }
            };
            if let Some(f) = outcome.fit {
                println!(
                    "{}: {:.2} KiB per idle session (r² {:.4}), {} lost, idle CPU {:.3} cores",
                    target.name(),
                    f.slope,
                    f.r_squared,
                    outcome.lost_sessions,
                    outcome.idle_cpu_cores
                );
            }
            passed &= outcome.error.is_none() && outcome.lost_sessions == 0;
            idle_results.push(outcome);
        }
        if !params.rates.is_empty() {
            let outcome = sweep(env, target, &params).await;
            passed &= outcome.error.is_none();
            if params.completeness_only {
                passed &= outcome.steps.iter().all(|s| s.passed);
            }
            sweeps.push(outcome);
        }
        // Scenario 3 runs over the native protocol only (see `fanout`).
        if !params.fanout_members.is_empty() && target == Target::TidingsWs {
            let outcomes = fanout::run(env, target, &params).await;
            passed &= outcomes.iter().all(|o| o.passed);
            fanout_results.extend(outcomes);
        }
        if params.catchup_messages > 0 {
            let outcome = catchup::run(env, target, &params).await;
            catchup::print_one(&outcome);
            passed &= outcome.error.is_none();
            if params.completeness_only {
                passed &= outcome.passed;
            }
            catchups.push(outcome);
        }
        if params.storm_clients > 0 && params.storm_targets.contains(&target) {
            let outcome =
                storm::run(env, target, params.storm_clients, params.storm_window_secs).await;
            storm::print_one(&outcome);
            passed &= outcome.error.is_none();
            if params.completeness_only {
                passed &= outcome.passed;
            }
            storms.push(outcome);
        }
        // Scenario 6 runs over the native protocol only (see `soak`).
        if params.soak.users > 0 && target == Target::TidingsWs {
            let outcome = soak::run(env, &params).await;
            soak::print_one(&outcome);
            passed &= outcome.error.is_none() && outcome.passed;
            soaks.push(outcome);
        }
    }
    let outcome = Outcome {
        params,
        uptime_before,
        uptime_after: uptime(),
        peer_versions,
        idle: idle_results,
        sweeps,
        fanout: fanout_results,
        catchups,
        storms,
        soaks,
        passed,
    };
    print(&outcome);
    Ok(outcome)
}

pub fn print(o: &Outcome) {
    println!("== comparison ({})", o.uptime_after);
    if !o.idle.is_empty() {
        println!("scenario 1, idle sessions: KiB per session (slope), RSS at each count");
        for i in &o.idle {
            let points: Vec<String> = i
                .points
                .iter()
                .map(|p| {
                    format!(
                        "{}: {:.1} MiB",
                        p.sessions,
                        p.server_rss_kib as f64 / 1024.0
                    )
                })
                .collect();
            println!(
                "  {:<13} {:>8} KiB/session  lost {}  idle CPU {:.3} cores  [{}]{}",
                i.target.name(),
                i.fit.map_or("-".into(), |f| format!("{:.2}", f.slope)),
                i.lost_sessions,
                i.idle_cpu_cores,
                points.join(", "),
                i.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  ERROR {e}"))
            );
        }
    }
    if !o.sweeps.is_empty() {
        println!(
            "scenario 2, 1:1 durable: highest rate with e2e p99 <= {E2E_P99_TARGET_MS} ms and nothing lost"
        );
        for s in &o.sweeps {
            println!(
                "  {:<13} {:>8}{}",
                s.target.name(),
                s.best_rate.map_or("none".into(), |r| format!("{r} msg/s")),
                s.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  ERROR {e}"))
            );
        }
    }
    if !o.fanout.is_empty() {
        println!(
            "scenario 3, group fan-out: deliveries/s and last-recipient p99, all reading | one member stalled"
        );
        for f in &o.fanout {
            let phase = |p: &Option<fanout::FanoutPhase>| {
                p.as_ref().map_or("-".to_string(), |p| {
                    format!(
                        "{:.0}/s, last p99 {:.2} ms",
                        p.deliveries_per_sec, p.last_recipient.p99_ms
                    )
                })
            };
            println!(
                "  {:<13} 1→{:<6} {} msg/s: {} | {}; stalled member closed by the server: {}{}",
                f.target.name(),
                f.members,
                f.rate,
                phase(&f.steady),
                phase(&f.with_stalled),
                f.stall
                    .as_ref()
                    .map_or("-".into(), |s| s.closed_by_server.to_string()),
                f.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  ERROR {e}"))
            );
        }
    }
    if !o.catchups.is_empty() {
        println!(
            "scenario 4, offline catch-up: stored, then the time from connecting to the last missed message, peak RSS"
        );
        for c in &o.catchups {
            catchup::print_one(c);
        }
    }
    if !o.storms.is_empty() {
        println!("scenario 5, sign-in storm: sign-ins/s, time to a session p50/p99, failures");
        for s in &o.storms {
            println!(
                "  {:<13} {} in {} s: {}/{} signed in, {:.0}/s, p50 {:.2} p99 {:.2} ms, failures {:?}{}",
                s.target.name(),
                s.clients,
                s.window_secs,
                s.signed_in,
                s.clients,
                s.sign_ins_per_sec,
                s.time_to_session.p50_ms,
                s.time_to_session.p99_ms,
                s.failures,
                s.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  ERROR {e}"))
            );
        }
    }
    if !o.soaks.is_empty() {
        println!(
            "scenario 6, mixed soak: completeness, e2e latency, RSS and p99 from the first third to the last"
        );
        for s in &o.soaks {
            soak::print_one(s);
        }
    }
    println!(
        "{}",
        match (o.params.completeness_only, o.passed) {
            (true, true) => "PASS (completeness)",
            (true, false) => "FAIL",
            (false, true) => "completed without errors or lost sessions",
            (false, false) => "errors or lost sessions (see above)",
        }
    );
}
