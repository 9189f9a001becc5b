//! Scenario 5 of the comparison, the sign-in storm: the server restarts (a fresh process on the
//! same data, as after an upgrade) and K clients that already hold credentials all come back
//! within W seconds, client `i` starting at `i·W/K` whatever the server does (open loop).
//! Sign-ins per second, the time from each client's intended start to its signed-in session,
//! and failures by kind.
//!
//! A sign-in is what [`Deployment::connect_once`] opens: native protocol, TCP and WebSocket
//! handshake then `auth` with the access token until `auth_ok`; XMPP, TCP, STARTTLS, SASL
//! (SCRAM-SHA-1 where offered), resource binding, Stream Management and initial presence; MQTT,
//! CONNECT with the access token (Tidings) or anonymous (Mosquitto) and the subscription.
//! Every session is held and read until all have tried, and sessions the server closes meanwhile
//! are counted.

use super::{Deployment, Env, Target};
use crate::link::Event;
use crate::server::{cpu_seconds, status_kib};
use crate::stats::{Latency, LatencySummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidings_sdk::SdkError;
use tokio::time::Instant;

/// How long one client may take to sign in before it counts as a timeout.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormOutcome {
    pub target: Target,
    pub clients: usize,
    pub window_secs: f64,
    pub signed_in: u64,
    /// Failed sign-ins by kind (transport, refused with a code, closed, timeout, …).
    pub failures: BTreeMap<String, u64>,
    /// Sign-ins over the time from the first intended start to the last session up.
    pub sign_ins_per_sec: f64,
    /// From a client's intended start to its signed-in session.
    pub time_to_session: LatencySummary,
    /// How late clients started against the schedule (the load generator's own lag).
    pub start_lag: LatencySummary,
    /// Seconds from the first intended start to the last session up.
    pub last_secs: f64,
    /// Signed-in sessions the server closed before every client had tried.
    pub lost_sessions: u64,
    pub server_cpu_secs: f64,
    pub server_rss_kib_after: u64,
    pub server_exited: bool,
    /// Every client signed in and kept its session.
    pub passed: bool,
    pub error: Option<String>,
}

/// A short name for why a sign-in failed.
fn failure_kind(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(sdk) = cause.downcast_ref::<SdkError>() {
            return match sdk {
                SdkError::Server { code, .. } => format!("refused: {}", code.as_str()),
                SdkError::Closed => "closed".into(),
                SdkError::Transport(_) => "transport".into(),
                SdkError::Unexpected(_) => "unexpected answer".into(),
                SdkError::Problem { status, .. } | SdkError::OAuth { status, .. } => {
                    format!("HTTP {status}")
                }
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("io: {:?}", io.kind());
        }
    }
    // XMPP and MQTT errors are sentences; their first words name the step.
    let text = e.root_cause().to_string();
    text.split([':', '('])
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

enum Try {
    Up {
        lag_ns: i64,
        total_ns: i64,
        at_ns: u64,
    },
    Failed(String),
}

/// Runs scenario 5 against `target` with `clients` clients within `window` seconds.
pub async fn run(env: &Env, target: Target, clients: usize, window: f64) -> StormOutcome {
    match storm(env, target, clients, window).await {
        Ok(o) => o,
        Err(e) => {
            println!("{} sign-in storm: error: {e:#}", target.name());
            if let Some(peer) = target.peer() {
                let dir = env.peers_dir.join(peer);
                let _ = super::peers_script(env, &["stop", peer, &dir.to_string_lossy()]).await;
            }
            StormOutcome {
                target,
                clients,
                window_secs: window,
                signed_in: 0,
                failures: BTreeMap::new(),
                sign_ins_per_sec: 0.0,
                time_to_session: LatencySummary::default(),
                start_lag: LatencySummary::default(),
                last_secs: 0.0,
                lost_sessions: 0,
                server_cpu_secs: 0.0,
                server_rss_kib_after: 0,
                server_exited: false,
                passed: false,
                error: Some(format!("{e:#}")),
            }
        }
    }
}

async fn storm(
    env: &Env,
    target: Target,
    clients: usize,
    window: f64,
) -> anyhow::Result<StormOutcome> {
    let k = clients.max(1);
    // Accounts and tokens first, then a fresh server process: every client comes back to it.
    let mut deployment = Deployment::start(env, target, k, 0, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    crate::server::wait_for_quiet(env.server.quiet_wait).await;
    let stat = format!("/proc/{}/stat", deployment.pid);
    let cpu_before = cpu_seconds(&stat)?;
    let d = Arc::new(deployment);
    let lost = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now() + Duration::from_millis(100);
    let spacing = window.max(0.0) * 1e9 / k as f64;
    let mut tries = Vec::with_capacity(k);
    for i in 0..k {
        let d = d.clone();
        let lost = lost.clone();
        let intended = epoch + Duration::from_nanos((i as f64 * spacing) as u64);
        tries.push(tokio::spawn(async move {
            tokio::time::sleep_until(intended).await;
            let began = Instant::now();
            let opened =
                tokio::time::timeout(SIGN_IN_TIMEOUT, d.connect_once(i, i, None, true)).await;
            let up = Instant::now();
            match opened {
                Err(_) => (Try::Failed("timeout".into()), None),
                Ok(Err(e)) => (Try::Failed(failure_kind(&e)), None),
                Ok(Ok(mut link)) => {
                    // Read it from now on, so the server's keepalives and Stream Management
                    // requests are answered, and count it if the server ends it.
                    let reader = tokio::spawn(async move {
                        loop {
                            if let Event::Closed(_) = link.next().await {
                                lost.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    });
                    let up_try = Try::Up {
                        lag_ns: began.duration_since(intended).as_nanos() as i64,
                        total_ns: up.duration_since(intended).as_nanos() as i64,
                        at_ns: up.duration_since(epoch).as_nanos() as u64,
                    };
                    (up_try, Some(reader))
                }
            }
        }));
    }
    let (mut time_to_session, mut start_lag) = (Latency::default(), Latency::default());
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut readers = Vec::with_capacity(k);
    let (mut signed_in, mut last_ns) = (0u64, 0u64);
    for t in tries {
        let (result, reader) = t.await?;
        match result {
            Try::Up {
                lag_ns,
                total_ns,
                at_ns,
            } => {
                signed_in += 1;
                start_lag.record_ns(lag_ns);
                time_to_session.record_ns(total_ns);
                last_ns = last_ns.max(at_ns);
            }
            Try::Failed(kind) => *failures.entry(kind).or_default() += 1,
        }
        readers.extend(reader);
    }
    let server_cpu_secs = cpu_seconds(&stat).unwrap_or(cpu_before) - cpu_before;
    // The sessions are held a moment longer: a server that accepted and then dropped them shows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost_sessions = lost.load(Ordering::Relaxed);
    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    deployment = Arc::into_inner(d).ok_or_else(|| anyhow::anyhow!("every client task ended"))?;
    let server_exited = !deployment.alive();
    let server_rss_kib_after = status_kib(deployment.pid, "VmRSS").unwrap_or(0);
    deployment.stop(env).await?;
    let last_secs = last_ns as f64 / 1e9;
    let passed = signed_in == k as u64 && lost_sessions == 0 && !server_exited;
    Ok(StormOutcome {
        target,
        clients: k,
        window_secs: window,
        signed_in,
        failures,
        sign_ins_per_sec: if last_secs > 0.0 {
            signed_in as f64 / last_secs
        } else {
            0.0
        },
        time_to_session: time_to_session.summary(),
        start_lag: start_lag.summary(),
        last_secs,
        lost_sessions,
        server_cpu_secs,
        server_rss_kib_after,
        server_exited,
        passed,
        error: None,
    })
}

pub fn print_one(o: &StormOutcome) {
    if let Some(e) = &o.error {
        println!(
            "{:<13} sign-in storm {} in {} s: ERROR {e}",
            o.target.name(),
            o.clients,
            o.window_secs
        );
        return;
    }
    println!(
        "{:<13} sign-in storm {} in {} s: {} signed in, {:.0}/s, to session p50 {:.2} p99 {:.2} max {:.2} ms, start lag p99 {:.2} ms, failures {:?}, lost {}, server CPU {:.1} s; {}",
        o.target.name(),
        o.clients,
        o.window_secs,
        o.signed_in,
        o.sign_ins_per_sec,
        o.time_to_session.p50_ms,
        o.time_to_session.p99_ms,
        o.time_to_session.max_ms,
        o.start_lag.p99_ms,
        o.failures,
        o.lost_sessions,
        o.server_cpu_secs,
        if o.passed { "PASS" } else { "FAIL" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use tidings_proto::ErrorCode;

    #[test]
    fn failures_are_named_by_kind() {
        let refused: anyhow::Error = SdkError::Server {
            code: ErrorCode::SlowConsumer,
            message: "x".into(),
        }
        .into();
        assert_eq!(failure_kind(&refused), "refused: slow_consumer");
        let transport = Err::<(), _>(SdkError::Transport("reset".into()))
            .context("session 4")
            .unwrap_err();
        assert_eq!(failure_kind(&transport), "transport");
        let io: anyhow::Error =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no").into();
        assert_eq!(failure_kind(&io), "io: ConnectionRefused");
        let xmpp = anyhow::anyhow!("no session within 30 s (stalled at: binding)");
        assert_eq!(failure_kind(&xmpp), "no session within 30 s");
    }
}
