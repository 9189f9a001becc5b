//! Scenario 4 of the comparison, offline catch-up: while the receiver is away, its sender sends
//! N messages (at most `WINDOW` unacknowledged) until all are acknowledged or the send phase's
//! time is up; then the receiver comes back and takes in everything it missed, the way that
//! protocol's clients do:
//!
//! - **native protocol**: connects and sends `sync` from its cursor (0: it has seen nothing);
//! - **XMPP**: connects and reads the conversation's archive with Message Archive Management,
//!   page after page of at most [`MAM_PAGE`] (the server may give fewer), as Conversations and
//!   Dino do; neither peer is configured with offline storage, and a Tidings resource that is
//!   new is not sent offline messages, so the archive is the only path for all three;
//! - **MQTT**: comes back to its persistent session (MQTT 5, no clean start, a session expiry):
//!   Mosquitto sends the messages it queued, Tidings the IM catch-up from the session's saved
//!   positions. The receiver visits once before the sends, so the session (and, for Tidings, its
//!   positions) exists.
//!
//! Measured: the time from opening the receiver's connection to its last missed message (the
//! sign-in included), the server's peak RSS during it (sampled every 5 ms) against before, and
//! completeness: every acknowledged message exactly once, in order.

use super::{Account, DOMAIN, Deployment, Env, Params, Target};
use crate::link::{self, Event, MqttClient, MqttMode};
use crate::server::{cpu_seconds, status_kib};
use crate::setup::source_ip;
use crate::stats::Completeness;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tidings_proto::ws::ServerFrame;
use tidings_sdk::Cursors;
use tokio::time::Instant;

/// Sends the sender keeps unacknowledged at most.
const WINDOW: u64 = 1000;
/// Results asked for per MAM page.
const MAM_PAGE: u32 = 500;
/// How long the receiver waits for its next message before the catch-up counts as stalled.
const STALL: Duration = Duration::from_secs(30);
/// How long a persistent MQTT session outlives its connection here.
const SESSION_EXPIRY_SECS: u32 = 3600;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CatchupOutcome {
    pub target: Target,
    /// Messages the sender was to send.
    pub offered: u64,
    /// Messages the server acknowledged in the send phase (what the receiver must get).
    pub stored: u64,
    pub refused: BTreeMap<String, u64>,
    pub send_secs: f64,
    /// Whether the send phase ran out of time before every message was sent.
    pub send_cut_short: bool,
    /// How the receiver catches up.
    pub method: String,
    /// MAM pages read (XMPP).
    pub pages: u64,
    /// From opening the receiver's connection to its last missed message.
    pub catchup_secs: f64,
    pub messages_per_sec: f64,
    pub completeness: Completeness,
    pub server_rss_before_kib: u64,
    /// Highest VmRSS sampled every 5 ms during the catch-up.
    pub server_rss_peak_kib: u64,
    pub peak_growth_mib: f64,
    pub server_cpu_secs: f64,
    /// What the server holds on disk after the send phase (its archive, journal).
    pub server_data_bytes: u64,
    pub passed: bool,
    pub error: Option<String>,
}

/// Runs scenario 4 against `target`.
pub async fn run(env: &Env, target: Target, params: &Params) -> CatchupOutcome {
    match catchup(env, target, params).await {
        Ok(o) => o,
        Err(e) => {
            println!("{} catch-up: error: {e:#}", target.name());
            if let Some(peer) = target.peer() {
                let dir = env.peers_dir.join(peer);
                let _ = super::peers_script(env, &["stop", peer, &dir.to_string_lossy()]).await;
            }
            CatchupOutcome {
                target,
                offered: params.catchup_messages,
                stored: 0,
                refused: BTreeMap::new(),
                send_secs: 0.0,
                send_cut_short: false,
                method: method(target).into(),
                pages: 0,
                catchup_secs: 0.0,
                messages_per_sec: 0.0,
                completeness: Completeness::default(),
                server_rss_before_kib: 0,
                server_rss_peak_kib: 0,
                peak_growth_mib: 0.0,
                server_cpu_secs: 0.0,
                server_data_bytes: 0,
                passed: false,
                error: Some(format!("{e:#}")),
            }
        }
    }
}

fn method(target: Target) -> &'static str {
    match target {
        Target::TidingsWs => "sync from cursor 0",
        Target::TidingsXmpp | Target::Ejabberd | Target::Prosody => "MAM pages",
        Target::TidingsMqtt | Target::Mosquitto => "persistent session",
    }
}

/// The receiver's persistent MQTT session (account 1, pair 0).
fn mqtt_receiver<'a>(target: Target, account: &'a Account, subscribe: bool) -> MqttClient<'a> {
    let (password, mode, filter) = match target {
        Target::TidingsMqtt => (
            Some(account.token.as_str()),
            MqttMode::Im,
            "tidings/v1/me/events",
        ),
        _ => (None, MqttMode::Broker, "bench/0"),
    };
    MqttClient {
        client_id: "bench1".into(),
        password,
        mode,
        topic: String::new(),
        subscribe: subscribe.then_some(filter),
        session_expiry: Some(SESSION_EXPIRY_SECS),
    }
}

async fn catchup(env: &Env, target: Target, params: &Params) -> anyhow::Result<CatchupOutcome> {
    let n = params.catchup_messages;
    let mut env = env.clone();
    // Tidings' MQTT gateway catches a session up by at most `mqtt.catch_up_limit` messages per
    // conversation (older ones are announced as a gap), 500 by default; Mosquitto is given room
    // to queue 100,000 (bench/peers/mosquitto.conf). Both get room for the whole backlog.
    env.server
        .env
        .push(("TIDINGS_MQTT_CATCH_UP_LIMIT".into(), n.max(1).to_string()));
    let deployment = Deployment::start(&env, target, 2, 1, false).await?;
    let d = &deployment;
    let is_mqtt = matches!(target, Target::TidingsMqtt | Target::Mosquitto);
    if is_mqtt {
        let visit = link::mqtt_connect_within(
            d.addr,
            source_ip(1),
            mqtt_receiver(target, &d.accounts[1], true),
        )
        .await
        .context("the receiver's first visit")?;
        visit.close();
        // Tidings saves sessions every second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // The send phase.
    let mut sender = d
        .connect(0, 0, Some(d.dests[0].as_str()), false)
        .await
        .context("the sender")?;
    let pad = "x".repeat(params.payload_bytes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(params.catchup_send_secs);
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut acked: Vec<u64> = Vec::with_capacity(n as usize);
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut send_cut_short = false;
    loop {
        // Refill once half the window is answered, so acknowledgements are asked for in bursts.
        if sent < n && sent - answered <= WINDOW / 2 {
            if Instant::now() >= deadline {
                send_cut_short = true;
            } else {
                while sent < n && sent - answered < WINDOW {
                    sender.send(sent, &format!("0 {sent} 0 {pad}"))?;
                    sent += 1;
                }
                sender.end_burst();
            }
        }
        if answered >= sent && (sent == n || send_cut_short) {
            break;
        }
        match tokio::time::timeout(STALL, sender.next()).await {
            Ok(Event::Acked { first, end }) => {
                acked.extend((first..end).map(|k| k + 1));
                answered += end - first;
            }
            Ok(Event::Refused { reason, .. }) => {
                answered += 1;
                *refused.entry(reason).or_default() += 1;
            }
            Ok(Event::Received(_)) => {}
            Ok(Event::Closed(reason)) => bail!("the sender's connection closed: {reason}"),
            Err(_) => bail!("no answer for {STALL:?} after {answered} of {sent} sends"),
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    sender.close();
    let stored = acked.len() as u64;
    println!(
        "{}: catch-up: {stored} of {n} messages stored in {send_secs:.1} s ({:.0}/s){}, refused {refused:?}",
        target.name(),
        stored as f64 / send_secs,
        if send_cut_short { ", cut short" } else { "" }
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::server::wait_for_quiet(env.server.quiet_wait).await;
    let server_data_bytes = d.data_bytes();

    // The catch-up.
    let pid = d.pid;
    let server_rss_before_kib = status_kib(pid, "VmRSS")?;
    let peak = Arc::new(AtomicU64::new(server_rss_before_kib));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let stat = format!("/proc/{pid}/stat");
    let cpu_before = cpu_seconds(&stat)?;
    let mut received: Vec<u64> = Vec::with_capacity(stored as usize);
    let mut record = |text: String| {
        let mut words = text.split(' ');
        if let (Some("0"), Some(k)) = (
            words.next(),
            words.next().and_then(|w| w.parse::<u64>().ok()),
        ) {
            received.push(k + 1);
        }
    };
    let started = Instant::now();
    let mut pages = 0;
    let caught_up = async {
        match target {
            Target::TidingsWs => {
                let mut conn = d.connect_ws(1, 64 * 1024, stored as usize + 1024).await?;
                conn.sync(&Cursors::default(), None).await?;
                while let Some(frame) = conn.try_next_event() {
                    if let ServerFrame::Message { message } = frame
                        && let tidings_proto::MessageBody::Text { text } = message.body
                    {
                        record(text);
                    }
                }
                conn.close();
            }
            Target::TidingsXmpp | Target::Ejabberd | Target::Prosody => {
                let mut receiver = d.connect(1, 1, None, false).await?;
                let with = format!("{}@{DOMAIN}", d.accounts[0].name);
                pages = receiver.read_archive(&with, MAM_PAGE, &mut record).await?;
                receiver.close();
            }
            Target::TidingsMqtt | Target::Mosquitto => {
                let mut receiver = link::mqtt_connect_within(
                    d.addr,
                    source_ip(1),
                    mqtt_receiver(target, &d.accounts[1], false),
                )
                .await?;
                let mut got = 0u64;
                while got < stored {
                    match tokio::time::timeout(STALL, receiver.next()).await {
                        Ok(Event::Received(text)) => {
                            got += 1;
                            record(text);
                        }
                        Ok(Event::Closed(reason)) => {
                            bail!("the receiver's connection closed: {reason}")
                        }
                        Ok(_) => {}
                        Err(_) => bail!("nothing for {STALL:?} after {got} of {stored} messages"),
                    }
                }
                receiver.close();
            }
        }
        anyhow::Ok(())
    }
    .await;
    let catchup_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    caught_up?;
    let server_cpu_secs = cpu_seconds(&stat).unwrap_or(cpu_before) - cpu_before;
    let server_rss_peak_kib = peak.load(Ordering::Relaxed);
    let completeness = Completeness::check(&acked, &received);
    deployment.stop(&env).await?;
    let passed = completeness.is_perfect() && completeness.acked == stored;
    Ok(CatchupOutcome {
        target,
        offered: n,
        stored,
        refused,
        send_secs,
        send_cut_short,
        method: method(target).into(),
        pages,
        catchup_secs,
        messages_per_sec: completeness.received as f64 / catchup_secs,
        completeness,
        server_rss_before_kib,
        server_rss_peak_kib,
        peak_growth_mib: server_rss_peak_kib.saturating_sub(server_rss_before_kib) as f64 / 1024.0,
        server_cpu_secs,
        server_data_bytes,
        passed,
        error: None,
    })
}

pub fn print_one(o: &CatchupOutcome) {
    let c = &o.completeness;
    println!(
        "  {:<13} {}/{} stored in {:.1} s{}; {} ({} pages): {:.2} s, {:.0} msg/s; lost {} dup {} reordered {}; RSS {:.1} -> peak {:.1} MiB (+{:.1}); server CPU {:.2} s; data {:.1} MiB{}",
        o.target.name(),
        o.stored,
        o.offered,
        o.send_secs,
        if o.send_cut_short { " (cut short)" } else { "" },
        o.method,
        o.pages,
        o.catchup_secs,
        o.messages_per_sec,
        c.lost,
        c.duplicated,
        c.out_of_order,
        o.server_rss_before_kib as f64 / 1024.0,
        o.server_rss_peak_kib as f64 / 1024.0,
        o.peak_growth_mib,
        o.server_cpu_secs,
        o.server_data_bytes as f64 / (1024.0 * 1024.0),
        o.error
            .as_ref()
            .map_or(String::new(), |e| format!("  ERROR {e}"))
    );
}
