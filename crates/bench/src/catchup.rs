//! Catch-up: user A sends N messages to user B while B is offline; then B connects and syncs
//! from cursor 0. Measures the time from the sync request to `sync_done` with every message
//! received, and how much the server's memory grows meanwhile.

use crate::server::{Server, ServerLog, ServerOptions};
use crate::setup;
use crate::stats::Completeness;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tidings_proto::Seq;
use tidings_proto::ws::ServerFrame;
use tidings_sdk::{ConnectOptions, Cursors};
use tokio::time::Instant;

pub const TARGET_SECS: f64 = 2.0;
pub const TARGET_GROWTH_MIB: f64 = 50.0;

#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub messages: u64,
    /// Sends the sender keeps unacknowledged at most.
    pub window: u64,
    pub payload_bytes: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub params: Params,
    pub send_secs: f64,
    pub send_rate: f64,
    pub send_errors: BTreeMap<String, u64>,
    /// From writing the `sync` request to receiving `sync_done` (every message is in by then).
    pub sync_secs: f64,
    pub sync_rate: f64,
    /// What `sync_done` reported.
    pub sync_done_messages: u64,
    pub sync_done_conversations: u32,
    pub completeness: Completeness,
    pub server_rss_before_kib: u64,
    /// Highest VmRSS seen by sampling /proc every 2 ms during the sync.
    pub server_rss_peak_sampled_kib: u64,
    pub rss_samples: u64,
    /// VmHWM after the sync, the peak having been reset just before it.
    pub server_hwm_after_kib: u64,
    /// The larger of the two peaks minus the RSS before.
    pub peak_growth_mib: f64,
    pub server_rss_after_kib: u64,
    pub server_cpu_secs_during_sync: f64,
    pub server_threads_during_sync: Vec<crate::server::ThreadCpu>,
    /// CPU time other processes on the machine used during the sync (the box is shared).
    pub other_cpu_secs_during_sync: f64,
    pub server_log: ServerLog,
    pub passed: bool,
}

pub async fn run(server_options: &ServerOptions, params: Params) -> anyhow::Result<Outcome> {
    let server = Server::start(server_options).await?;
    let client = server.client();
    let users = setup::create_users(&client, "catchup", 2).await?;
    let (a, b) = (&users[0], &users[1]);
    let conversation = setup::open_directs(&client, &[(a.clone(), b.clone())]).await?[0];
    let ws_url = server.ws_url();
    let mut sender = setup::connect_all(&ws_url, &[a.token.as_str()], 0, 64 * 1024, 65_536, 1)
        .await?
        .pop()
        .expect("one connection");

    crate::server::wait_for_quiet(server_options.quiet_wait).await;
    // Phase 1: A sends everything over one pipelined connection, at most `window` unacked.
    let n = params.messages;
    let pad = "x".repeat(params.payload_bytes);
    let mut acked: Vec<Seq> = Vec::with_capacity(n as usize);
    let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    while answered < n {
        while sent < n && sent - answered < params.window {
            let mut text = String::with_capacity(160 + pad.len());
            let _ = write!(
                text,
                r#"{{"type":"send","id":"{sent}","conversation_id":{conversation},"client_msg_id":"c{sent}","body":{{"kind":"text","text":"{sent} {pad}"}}}}"#
            );
            sender.send_raw(text)?;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(30), sender.next_event()).await {
            Ok(Some(ServerFrame::Ack { seq, .. })) => {
                answered += 1;
                acked.push(seq);
            }
            Ok(Some(ServerFrame::Error {
                id: Some(_), code, ..
            })) => {
                answered += 1;
                *send_errors.entry(code.as_str().to_string()).or_default() += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!(
                "the sender's connection closed after {answered} answers: {:?}",
                sender.close_reason()
            ),
            Err(_) => anyhow::bail!("no answer for 30 s after {answered} answers"),
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    println!(
        "catchup: sent {n} messages in {send_secs:.2} s ({:.0} msg/s), errors {send_errors:?}",
        n as f64 / send_secs
    );
    sender.close();
    drop(sender);

    // Phase 2: B connects (not timed), then syncs from cursor 0.
    let options = ConnectOptions {
        local_ip: Some(setup::source_ip(1)),
        read_buffer: 64 * 1024,
        // Room for every message, so the reader never waits for this task.
        event_buffer: n as usize + 1024,
    };
    let mut receiver = tidings_sdk::Connection::connect_with(&ws_url, &b.token, &options).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::server::wait_for_quiet(server_options.quiet_wait).await;
    let server_rss_before_kib = server.rss_kib()?;
    server.reset_hwm()?;
    let peak = Arc::new(AtomicU64::new(server_rss_before_kib));
    let samples = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, samples, stop, pid) = (peak.clone(), samples.clone(), stop.clone(), server.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = crate::server::status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let cpu_before = server.cpu_seconds()?;
    let threads_before = server.thread_cpu();
    let bench_cpu_before = crate::server::own_cpu_seconds();
    let machine_before = crate::server::machine_busy_seconds();
    let started = Instant::now();
    let (sync_done_conversations, sync_done_messages) =
        receiver.sync(&Cursors::default(), None).await?;
    let sync_secs = started.elapsed().as_secs_f64();
    let server_cpu_secs_during_sync = server.cpu_seconds()? - cpu_before;
    let server_threads_during_sync =
        crate::server::thread_cpu_delta(&threads_before, &server.thread_cpu());
    let other_cpu_secs_during_sync = (crate::server::machine_busy_seconds()
        - machine_before
        - server_cpu_secs_during_sync
        - (crate::server::own_cpu_seconds() - bench_cpu_before))
        .max(0.0);
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let server_hwm_after_kib = server.hwm_kib()?;
    let server_rss_after_kib = server.rss_kib()?;

    let mut received: Vec<Seq> = Vec::with_capacity(n as usize);
    while let Some(frame) = receiver.try_next_event() {
        if let ServerFrame::Message { message } = frame
            && message.conversation_id == conversation
        {
            received.push(message.seq);
        }
    }
    receiver.close();
    let completeness = Completeness::check(&acked, &received);
    let server_rss_peak_sampled_kib = peak.load(Ordering::Relaxed);
    let peak_kib = server_rss_peak_sampled_kib.max(server_hwm_after_kib);
    let peak_growth_mib = peak_kib.saturating_sub(server_rss_before_kib) as f64 / 1024.0;
    let server_log = server.stop().await?;
    let passed = sync_secs < TARGET_SECS
        && peak_growth_mib < TARGET_GROWTH_MIB
        && completeness.is_perfect()
        && completeness.acked == n
        && sync_done_messages == n;
    Ok(Outcome {
        params,
        send_secs,
        send_rate: n as f64 / send_secs,
        send_errors,
        sync_secs,
        sync_rate: n as f64 / sync_secs,
        sync_done_messages,
        sync_done_conversations,
        completeness,
        server_rss_before_kib,
        server_rss_peak_sampled_kib,
        rss_samples: samples.load(Ordering::Relaxed),
        server_hwm_after_kib,
        peak_growth_mib,
        server_rss_after_kib,
        server_cpu_secs_during_sync,
        other_cpu_secs_during_sync,
        server_threads_during_sync,
        server_log,
        passed,
    })
}

pub fn print(o: &Outcome) {
    let c = &o.completeness;
    println!("catch-up of {} messages:", o.params.messages);
    println!(
        "  send phase: {:.2} s ({:.0} msg/s, window {}), errors {:?}",
        o.send_secs, o.send_rate, o.params.window, o.send_errors
    );
    println!(
        "  sync: {:.3} s ({:.0} msg/s); sync_done says {} messages in {} conversations; server CPU {:.2} s, other processes {:.2} s",
        o.sync_secs,
        o.sync_rate,
        o.sync_done_messages,
        o.sync_done_conversations,
        o.server_cpu_secs_during_sync,
        o.other_cpu_secs_during_sync
    );
    println!(
        "  received {} (acked {}), lost {}, duplicated {}, out of order {}, unacked {}",
        c.received, c.acked, c.lost, c.duplicated, c.out_of_order, c.unacked_received
    );
    println!(
        "  server RSS before {} KiB, peak {} KiB sampled ({} samples) / VmHWM {} KiB, after {} KiB: growth {:.1} MiB",
        o.server_rss_before_kib,
        o.server_rss_peak_sampled_kib,
        o.rss_samples,
        o.server_hwm_after_kib,
        o.server_rss_after_kib,
        o.peak_growth_mib
    );
    println!(
        "  targets: < {TARGET_SECS} s and < {TARGET_GROWTH_MIB} MiB: {}",
        if o.passed { "PASS" } else { "FAIL" }
    );
}
