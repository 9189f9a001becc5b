//! Open-loop throughput: pairs of users in direct conversations, senders on a fixed schedule.
//!
//! Each pair has a sender and a receiver, both connected. Sender `i` of `P` sends its `k`-th
//! message at the intended time `start + i/R + k*P/R`, so the total stream is evenly spaced at
//! `R` messages per second whatever the server does (open loop): a slow ack never delays the
//! next send. Latencies are measured from the intended time, so time a message spends queued
//! behind a stalled server (or a late client) counts against the server instead of vanishing
//! (no coordinated omission). The intended time travels in the message text, so the receiver
//! computes the end-to-end latency itself.

use crate::server::{
    Server, ServerLog, ServerOptions, ThreadCpu, machine_busy_seconds, own_cpu_seconds,
    thread_cpu_delta,
};
use crate::setup::{self, User};
use crate::stats::{Completeness, Latency, LatencySummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, MessageBody, Seq};
use tidings_sdk::Connection;
use tokio::sync::watch;
use tokio::time::Instant;

/// The end-to-end p99 a rate must stay within to pass the sweep.
pub const E2E_P99_TARGET_MS: f64 = 50.0;

#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub pairs: usize,
    /// Offered messages per second, all senders together.
    pub rate: u64,
    pub duration_secs: f64,
    /// Filler characters in each message text, on top of ~30 bytes of timing data.
    pub payload_bytes: usize,
    /// How long to wait for outstanding acks and deliveries after the schedule ends.
    pub drain_secs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub params: Params,
    /// Messages the schedule called for.
    pub scheduled: u64,
    pub sent: u64,
    pub acked: u64,
    /// Sends answered with an error frame, by error code.
    pub send_errors: BTreeMap<String, u64>,
    /// Sends with neither ack nor error when the drain time ran out.
    pub unanswered: u64,
    /// Acks per second from the first intended send to the last ack.
    pub achieved_ack_rate: f64,
    /// Messages received per second from the first intended send to the last delivery.
    pub achieved_delivery_rate: f64,
    /// Intended send → ack received.
    pub ack_latency: LatencySummary,
    /// Intended send → recipient received.
    pub e2e_latency: LatencySummary,
    /// Intended send → the frame handed to the client's writer: how far behind schedule the
    /// load generator itself ran (large values mean the client, not the server, was short of CPU).
    pub send_lag: LatencySummary,
    pub completeness: Completeness,
    /// Connections that closed during the run, with the server's reason.
    pub closed_connections: Vec<String>,
    /// Error frames without a request id (the server's notice before it closes a connection).
    pub connection_errors: Vec<String>,
    pub server_cpu_secs: f64,
    /// Server CPU by thread name over the run: shows whether one thread (the writer) saturates.
    pub server_threads: Vec<ThreadCpu>,
    pub bench_cpu_secs: f64,
    /// CPU time other processes on the machine used meanwhile (the box is shared).
    pub other_cpu_secs: f64,
    /// From the first intended send to the end of the drain.
    pub wall_secs: f64,
    pub server_rss_kib_after: u64,
    pub server_log: ServerLog,
    /// The server process had exited by the end of the run (a crash).
    pub server_exited: bool,
    /// e2e p99 within the target and every acknowledged message delivered exactly once, in order.
    pub passed: bool,
}

/// When sender `i` sends its messages.
#[derive(Clone, Copy)]
struct Schedule {
    /// Intended time of message 0, in ns after the epoch.
    first_ns: f64,
    period_ns: f64,
    count: u64,
}

impl Schedule {
    fn intended_ns(&self, k: u64) -> u64 {
        (self.first_ns + k as f64 * self.period_ns) as u64
    }
}

fn since(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_nanos() as u64
}

#[derive(Default)]
struct SenderReport {
    ack: Latency,
    lag: Latency,
    acked_seqs: Vec<Seq>,
    sent: u64,
    errors: BTreeMap<String, u64>,
    last_ack_ns: u64,
    closed: Option<String>,
    connection_errors: Vec<String>,
}

async fn run_sender(
    mut conn: Connection,
    index: usize,
    conversation_id: ConversationId,
    schedule: Schedule,
    epoch: Instant,
    drain: Duration,
    pad: Arc<str>,
) -> SenderReport {
    let mut report = SenderReport {
        acked_seqs: Vec::with_capacity(schedule.count as usize),
        ..SenderReport::default()
    };
    let drain_until = epoch
        + Duration::from_nanos(schedule.intended_ns(schedule.count.saturating_sub(1)))
        + drain;
    let mut k = 0u64;
    let mut answered = 0u64;
    let timer = tokio::time::sleep_until(epoch + Duration::from_nanos(schedule.intended_ns(0)));
    tokio::pin!(timer);
    while answered < schedule.count {
        tokio::select! {
            biased;
            event = conn.next_event() => match event {
                Some(ServerFrame::Ack { id, seq, .. }) => {
                    let now = since(epoch);
                    let Ok(j) = id.parse::<u64>() else { continue };
                    answered += 1;
                    report.ack.record_ns(now as i64 - schedule.intended_ns(j) as i64);
                    report.acked_seqs.push(seq);
                    report.last_ack_ns = now;
                }
                Some(ServerFrame::Error { id: Some(_), code, .. }) => {
                    answered += 1;
                    *report.errors.entry(code.as_str().to_string()).or_default() += 1;
                }
                Some(ServerFrame::Error { id: None, code, message, .. }) => {
                    report.connection_errors.push(format!("sender {index}: {}: {message}", code.as_str()));
                }
                Some(_) => {}
                None => {
                    report.closed = Some(format!("sender {index}: {:?}", conn.close_reason()));
                    break;
                }
            },
            () = &mut timer => {
                if k >= schedule.count {
                    // The drain deadline passed with answers outstanding.
                    break;
                }
                let now = since(epoch);
                while k < schedule.count && schedule.intended_ns(k) <= now {
                    let intended = schedule.intended_ns(k);
                    let mut text = String::with_capacity(176 + pad.len());
                    let _ = write!(
                        text,
                        r#"{{"type":"send","id":"{k}","conversation_id":{conversation_id},"client_msg_id":"{index}-{k}","body":{{"kind":"text","text":"{k} {intended} {pad}"}}}}"#
                    );
                    if conn.send_raw(text).is_err() {
                        report.closed = Some(format!("sender {index}: closed while sending"));
                        return report;
                    }
                    report.lag.record_ns(since(epoch) as i64 - intended as i64);
                    report.sent += 1;
                    k += 1;
                }
                let next = if k < schedule.count {
                    epoch + Duration::from_nanos(schedule.intended_ns(k))
                } else {
                    drain_until
                };
                timer.as_mut().reset(next);
            }
        }
    }
    conn.close();
    report
}

#[derive(Default)]
struct ReceiverReport {
    e2e: Latency,
    seqs: Vec<Seq>,
    last_ns: u64,
    closed: Option<String>,
    connection_errors: Vec<String>,
}

async fn run_receiver(
    mut conn: Connection,
    index: usize,
    conversation_id: ConversationId,
    epoch: Instant,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverReport {
    let mut report = ReceiverReport::default();
    loop {
        tokio::select! {
            biased;
            event = conn.next_event() => match event {
                Some(ServerFrame::Message { message }) => {
                    let now = since(epoch);
                    if message.conversation_id != conversation_id {
                        continue;
                    }
                    let intended = match &message.body {
                        MessageBody::Text { text } => text
                            .split(' ')
                            .nth(1)
                            .and_then(|t| t.parse::<u64>().ok()),
                        _ => None,
                    };
                    if let Some(intended) = intended {
                        report.e2e.record_ns(now as i64 - intended as i64);
                    }
                    report.seqs.push(message.seq);
                    report.last_ns = now;
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Some(ServerFrame::Error { id: None, code, message, .. }) => {
                    report.connection_errors.push(format!("receiver {index}: {}: {message}", code.as_str()));
                }
                Some(_) => {}
                None => {
                    report.closed = Some(format!("receiver {index}: {:?}", conn.close_reason()));
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    conn.close();
    report
}

/// Runs one rate against a fresh server.
pub async fn run(server_options: &ServerOptions, params: Params) -> anyhow::Result<Outcome> {
    let server = Server::start(server_options).await?;
    run_on(server_options, params, vec![server], 0, 0).await
}

/// Runs one rate against running `nodes` (one server, or the nodes of a cluster): senders
/// connect to node `senders_on`, receivers to node `receivers_on`. Accounts are made through
/// node 0. CPU, memory and logs are summed over the nodes; every node is stopped at the end.
pub async fn run_on(
    server_options: &ServerOptions,
    params: Params,
    mut nodes: Vec<Server>,
    senders_on: usize,
    receivers_on: usize,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        senders_on < nodes.len() && receivers_on < nodes.len(),
        "no such node"
    );
    let client = nodes[0].client();
    let p = params.pairs.max(1);
    let users = setup::create_users(&client, "tp", 2 * p).await?;
    let pairs: Vec<(User, User)> = users
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let conversations = setup::open_directs(&client, &pairs).await?;
    let sender_tokens: Vec<&str> = pairs.iter().map(|(a, _)| a.token.as_str()).collect();
    let receiver_tokens: Vec<&str> = pairs.iter().map(|(_, b)| b.token.as_str()).collect();
    let senders = setup::connect_all(
        &nodes[senders_on].ws_url(),
        &sender_tokens,
        0,
        16 * 1024,
        65_536,
        64,
    )
    .await?;
    let receivers = setup::connect_all(
        &nodes[receivers_on].ws_url(),
        &receiver_tokens,
        p,
        16 * 1024,
        65_536,
        64,
    )
    .await?;
    // Let presence announcements and connection setup finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crate::server::wait_for_quiet(server_options.quiet_wait).await;

    let rate = params.rate.max(1) as f64;
    let per_sender = (params.duration_secs * rate / p as f64).floor().max(1.0) as u64;
    let epoch = Instant::now();
    let start_ns = 100_000_000.0;
    let drain = Duration::from_secs_f64(params.drain_secs);
    let pad: Arc<str> = "x".repeat(params.payload_bytes).into();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let nodes_cpu =
        |nodes: &[Server]| -> anyhow::Result<f64> { nodes.iter().map(|n| n.cpu_seconds()).sum() };
    // Thread ids are unique across processes, so one map holds every node's threads.
    let nodes_threads = |nodes: &[Server]| -> BTreeMap<u32, (String, f64)> {
        nodes.iter().flat_map(|n| n.thread_cpu()).collect()
    };
    let server_cpu_before = nodes_cpu(&nodes)?;
    let threads_before = nodes_threads(&nodes);
    let bench_cpu_before = own_cpu_seconds();
    let machine_before = machine_busy_seconds();

    let mut receiver_tasks = Vec::with_capacity(p);
    for (i, conn) in receivers.into_iter().enumerate() {
        receiver_tasks.push(tokio::spawn(run_receiver(
            conn,
            i,
            conversations[i],
            epoch,
            received.clone(),
            stop_rx.clone(),
        )));
    }
    let mut sender_tasks = Vec::with_capacity(p);
    for (i, conn) in senders.into_iter().enumerate() {
        let schedule = Schedule {
            first_ns: start_ns + i as f64 * 1e9 / rate,
            period_ns: p as f64 * 1e9 / rate,
            count: per_sender,
        };
        sender_tasks.push(tokio::spawn(run_sender(
            conn,
            i,
            conversations[i],
            schedule,
            epoch,
            drain,
            pad.clone(),
        )));
    }
    let mut sent_reports = Vec::with_capacity(p);
    for task in sender_tasks {
        sent_reports.push(task.await?);
    }
    let acked: u64 = sent_reports.iter().map(|r| r.acked_seqs.len() as u64).sum();
    // Wait for deliveries to catch up with the acks, then a little longer for duplicates.
    let deadline = Instant::now() + drain;
    while received.load(Ordering::Relaxed) < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut received_reports = Vec::with_capacity(p);
    for task in receiver_tasks {
        received_reports.push(task.await?);
    }
    let wall_secs = since(epoch) as f64 / 1e9 - start_ns / 1e9;
    let server_cpu_secs = nodes_cpu(&nodes)? - server_cpu_before;
    let server_threads = thread_cpu_delta(&threads_before, &nodes_threads(&nodes));
    let bench_cpu_secs = own_cpu_seconds() - bench_cpu_before;
    let other_cpu_secs =
        (machine_busy_seconds() - machine_before - server_cpu_secs - bench_cpu_secs).max(0.0);
    let server_exited = !nodes.iter_mut().all(|n| n.alive());
    let server_rss_kib_after = nodes.iter().map(|n| n.rss_kib().unwrap_or(0)).sum();

    let mut ack = Latency::default();
    let mut lag = Latency::default();
    let mut e2e = Latency::default();
    let mut completeness = Completeness::default();
    let mut send_errors = BTreeMap::new();
    let mut closed_connections = Vec::new();
    let mut connection_errors = Vec::new();
    let (mut sent, mut answered, mut last_ack_ns, mut last_recv_ns) = (0, 0, 0, 0);
    for (s, r) in sent_reports.iter().zip(&received_reports) {
        ack.merge(&s.ack);
        lag.merge(&s.lag);
        e2e.merge(&r.e2e);
        completeness.add(&Completeness::check(&s.acked_seqs, &r.seqs));
        sent += s.sent;
        answered += s.acked_seqs.len() as u64;
        for (code, n) in &s.errors {
            *send_errors.entry(code.clone()).or_default() += n;
            answered += n;
        }
        last_ack_ns = last_ack_ns.max(s.last_ack_ns);
        last_recv_ns = last_recv_ns.max(r.last_ns);
        closed_connections.extend(s.closed.iter().chain(&r.closed).cloned());
        connection_errors.extend(
            s.connection_errors
                .iter()
                .chain(&r.connection_errors)
                .cloned(),
        );
    }
    let per_sec = |n: u64, end_ns: u64| {
        let secs = (end_ns as f64 - start_ns) / 1e9;
        if secs > 0.0 { n as f64 / secs } else { 0.0 }
    };
    let e2e_latency = e2e.summary();
    let passed = e2e_latency.p99_ms <= E2E_P99_TARGET_MS
        && completeness.is_perfect()
        && send_errors.is_empty()
        && sent == per_sender * p as u64
        && answered == sent
        && closed_connections.is_empty()
        && !server_exited;
    let mut server_log = ServerLog::default();
    for node in nodes {
        let log = node.stop().await?;
        server_log.lines += log.lines;
        server_log.first.extend(log.first);
    }
    Ok(Outcome {
        scheduled: per_sender * p as u64,
        sent,
        acked,
        send_errors,
        unanswered: sent - answered,
        achieved_ack_rate: per_sec(acked, last_ack_ns),
        achieved_delivery_rate: per_sec(completeness.received, last_recv_ns),
        ack_latency: ack.summary(),
        e2e_latency,
        send_lag: lag.summary(),
        completeness,
        closed_connections,
        connection_errors,
        server_cpu_secs,
        server_threads,
        bench_cpu_secs,
        other_cpu_secs,
        wall_secs,
        server_rss_kib_after,
        server_log,
        server_exited,
        passed,
        params,
    })
}

/// One line per latency, for the human summary.
pub fn print(outcome: &Outcome) {
    let p = &outcome.params;
    println!(
        "throughput: {} pairs, offered {} msg/s for {} s ({} scheduled, {} sent, {} acked, {} unanswered, errors {:?})",
        p.pairs,
        p.rate,
        p.duration_secs,
        outcome.scheduled,
        outcome.sent,
        outcome.acked,
        outcome.unanswered,
        outcome.send_errors
    );
    println!(
        "  achieved: {:.0} acks/s, {:.0} deliveries/s; CPU over {:.1} s: server {:.1} s, bench {:.1} s, other processes {:.1} s",
        outcome.achieved_ack_rate,
        outcome.achieved_delivery_rate,
        outcome.wall_secs,
        outcome.server_cpu_secs,
        outcome.bench_cpu_secs,
        outcome.other_cpu_secs
    );
    let threads: Vec<String> = outcome
        .server_threads
        .iter()
        .take(4)
        .map(|t| {
            format!(
                "{} x{} {:.1} s (busiest {:.1} s)",
                t.name, t.threads, t.cpu_secs, t.max_thread_cpu_secs
            )
        })
        .collect();
    println!("  server threads: {}", threads.join("; "));
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    for (name, l) in [
        ("ack", &outcome.ack_latency),
        ("e2e", &outcome.e2e_latency),
        ("send lag", &outcome.send_lag),
    ] {
        println!(
            "  {:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
        );
    }
    let c = &outcome.completeness;
    println!(
        "  completeness: acked {}, received {}, lost {}, duplicated {}, out of order {}, received unacked {}",
        c.acked, c.received, c.lost, c.duplicated, c.out_of_order, c.unacked_received
    );
    for line in outcome.closed_connections.iter().take(5) {
        println!("  closed: {line}");
    }
    for line in outcome.connection_errors.iter().take(5) {
        println!("  connection error: {line}");
    }
    if outcome.server_log.lines > 0 {
        println!(
            "  server logged {} warning/error lines; first:",
            outcome.server_log.lines
        );
        for line in outcome.server_log.first.iter().take(3) {
            println!("    {line}");
        }
    }
    if outcome.server_exited {
        println!("  THE SERVER EXITED DURING THE RUN");
    }
    println!(
        "  {}",
        if outcome.passed {
            "PASS (e2e p99 <= 50 ms, nothing lost)"
        } else {
            "FAIL"
        }
    );
}

#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    pub steps: Vec<Outcome>,
    /// The highest offered rate that passed.
    pub best_rate: Option<u64>,
}

/// Runs increasing rates, each on a fresh server; stops after two failed rates in a row. A
/// failed step during which other processes used more than a tenth of a core is run once
/// more; both attempts are kept.
pub async fn sweep(
    server_options: &ServerOptions,
    base: Params,
    rates: &[u64],
) -> anyhow::Result<Sweep> {
    let mut steps = Vec::new();
    let mut failures = 0;
    for &rate in rates {
        let params = Params {
            rate,
            ..base.clone()
        };
        let mut outcome = run(server_options, params.clone()).await?;
        print(&outcome);
        if !outcome.passed && outcome.other_cpu_secs > 0.1 * outcome.wall_secs {
            // Another process took a share of the two cores mid-run; measure this rate again.
            println!(
                "  (other processes used {:.1} CPU-seconds; running this rate once more)",
                outcome.other_cpu_secs
            );
            steps.push(outcome);
            outcome = run(server_options, params).await?;
            print(&outcome);
        }
        failures = if outcome.passed { 0 } else { failures + 1 };
        steps.push(outcome);
        if failures >= 2 {
            break;
        }
    }
    let best_rate = steps
        .iter()
        .filter(|s| s.passed)
        .map(|s| s.params.rate)
        .max();
    println!("sweep summary (e2e p99 target {E2E_P99_TARGET_MS} ms, nothing lost):");
    println!(
        "  {:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "offered", "acks/s", "deliv/s", "ack p99", "e2e p50", "e2e p99", "e2e max", "pass"
    );
    for s in &steps {
        println!(
            "  {:>8} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6}",
            s.params.rate,
            s.achieved_ack_rate,
            s.achieved_delivery_rate,
            s.ack_latency.p99_ms,
            s.e2e_latency.p50_ms,
            s.e2e_latency.p99_ms,
            s.e2e_latency.max_ms,
            s.passed
        );
    }
    match best_rate {
        Some(r) => println!("  highest passing rate: {r} msg/s"),
        None => println!("  no rate passed"),
    }
    Ok(Sweep { steps, best_rate })
}
