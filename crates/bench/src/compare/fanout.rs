//! Scenario 3 of the comparison, group fan-out over the native protocol: one sender in a group
//! of N members sends at a constant rate (open loop, latency from the intended send time);
//! deliveries per second, first- and last-recipient latency of every message, and completeness
//! at every member (each message once, in order). Then one member stops reading its socket and
//! the others are measured again beside it; afterwards that member reads again, which shows
//! what the server did with it, reconnects, syncs, and must have every message.
//!
//! Only `tidings-ws` is measured: Tidings' XMPP gateway maps groups to MUC rooms joined with
//! presence, and ejabberd and Prosody would need their rooms created first, which this tool
//! does not do yet.

use super::{Deployment, Env, Params, SenderReport, Target, run_sender, since};
use crate::link::{Event, Link};
use crate::server::{cpu_seconds, status_kib};
use crate::stats::{Completeness, Latency, LatencySummary};
use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, MessageBody, UserId};
use tidings_sdk::{Connection, Cursors};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Members added per REST request while the group is made.
const ADD_BATCH: usize = 500;

/// The member that stops reading in the second phase (member 0 is the sender).
const STALLED: usize = 1;

/// One phase of a fan-out run, over the members that read throughout it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FanoutPhase {
    /// Members reading throughout the phase (the sender is not one).
    pub readers: usize,
    pub scheduled: u64,
    pub sent: u64,
    pub acked: u64,
    pub refused: BTreeMap<String, u64>,
    /// Messages the reading members received.
    pub deliveries: u64,
    /// Deliveries over the time from the first intended send to the last arrival.
    pub deliveries_per_sec: f64,
    /// Per message, from its intended send time to its first reading recipient.
    pub first_recipient: LatencySummary,
    /// Per message, to its last reading recipient.
    pub last_recipient: LatencySummary,
    /// Every delivery.
    pub delivery: LatencySummary,
    pub ack_latency: LatencySummary,
    pub send_lag: LatencySummary,
    /// Summed over the reading members, against what the sender was acknowledged.
    pub completeness: Completeness,
}

/// What became of the member that stopped reading.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stall {
    /// Messages of the second phase it received once it read again (what the server had
    /// written or queued for it).
    pub read_on_resume: u64,
    /// The server had closed the connection (seen when the member read again).
    pub closed_by_server: bool,
    /// The close the client saw (code and reason), if any.
    pub close: Option<String>,
    /// What it received live, both phases: duplicates and reorderings (must be none).
    pub live_duplicated: u64,
    pub live_out_of_order: u64,
    /// Messages of the group the sync after reconnecting returned.
    pub synced: u64,
    /// Acknowledged messages the sync did not return.
    pub missing_after_sync: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutOutcome {
    pub target: Target,
    /// Group size, the sender included.
    pub members: usize,
    /// Messages per second the sender sends.
    pub rate: u64,
    pub step_secs: f64,
    pub payload_bytes: usize,
    /// The server's per-connection queue (`limits.outbound_queue`) if the run set it.
    pub outbound_queue: Option<usize>,
    /// Accounts, group and connections, until the server was quiet.
    pub setup_secs: f64,
    /// Every member reading.
    pub steady: Option<FanoutPhase>,
    /// One member not reading its socket; the others measured.
    pub with_stalled: Option<FanoutPhase>,
    pub stall: Option<Stall>,
    /// Messages that reached a member with a foreign sender or number.
    pub misdelivered: u64,
    /// Connections other than the stalled member's that ended.
    pub closed: Vec<String>,
    pub connect_retries: u64,
    /// Server CPU over both phases.
    pub server_cpu_secs: f64,
    pub server_rss_kib_after: u64,
    pub server_exited: bool,
    /// Completeness only (never speed): every phase complete, the stalled member complete after
    /// its sync, nothing refused, closed or misdelivered.
    pub passed: bool,
    pub error: Option<String>,
}

/// What the member tasks share.
struct Shared {
    /// Per message number: the lowest and highest latency (ns) at a reading member.
    first: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    /// Per phase: deliveries, and the latest arrival (ns since the epoch).
    delivered: [AtomicU64; 2],
    last_arrival: [AtomicU64; 2],
    /// The first message number of the second phase.
    boundary: u64,
    epoch: Instant,
}

#[derive(Default)]
struct MemberReport {
    /// `k + 1` of every message received, in arrival order.
    received: Vec<u64>,
    /// Per phase, every delivery's latency.
    delivery: [Latency; 2],
    misdelivered: u64,
    closed: Option<String>,
}

/// Parses `"0 <k> <intended ns> …"`: the fan-out's sender is number 0.
fn parse(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split(' ');
    let from = words.next()?.parse::<usize>().ok()?;
    let k = words.next()?.parse::<u64>().ok()?;
    let at = words.next()?.parse::<u64>().ok()?;
    (from == 0).then_some((k, at))
}

/// Reads one member's link until `stop`; with `stall`, gives the link back as soon as that
/// signal comes, so the member stops reading.
async fn run_member(
    mut link: Link,
    member: usize,
    shared: Arc<Shared>,
    mut stall: Option<watch::Receiver<bool>>,
    mut stop: watch::Receiver<bool>,
) -> (MemberReport, Option<Link>) {
    let mut report = MemberReport::default();
    loop {
        let stalled = async {
            match stall.as_mut() {
                Some(s) => s.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            true = stalled => return (report, Some(link)),
            event = link.next() => match event {
                Event::Received(text) => {
                    let now = since(shared.epoch);
                    let Some((k, at)) = parse(&text).filter(|(k, _)| (*k as usize) < shared.first.len()) else {
                        report.misdelivered += 1;
                        continue;
                    };
                    let latency = now.saturating_sub(at);
                    let phase = usize::from(k >= shared.boundary);
                    report.delivery[phase].record_ns(latency as i64);
                    report.received.push(k + 1);
                    shared.first[k as usize].fetch_min(latency, Ordering::Relaxed);
                    shared.last[k as usize].fetch_max(latency, Ordering::Relaxed);
                    shared.delivered[phase].fetch_add(1, Ordering::Relaxed);
                    shared.last_arrival[phase].fetch_max(now, Ordering::Relaxed);
                }
                Event::Closed(reason) => {
                    report.closed = Some(format!("member {member}: {reason}"));
                    return (report, None);
                }
                _ => {}
            },
        }
    }
    link.close();
    (report, None)
}

/// Makes the group: member 0 creates it with the first members, then adds the rest in batches;
/// every member must be added at once (not invited).
async fn make_group(d: &Deployment) -> anyhow::Result<ConversationId> {
    let server = d
        .server
        .as_ref()
        .context("fan-out runs against Tidings only")?;
    let api = server.client().authed(d.accounts[0].token.clone());
    let ids: Vec<UserId> = d.accounts[1..]
        .iter()
        .map(|a| a.user_id.context("a Tidings account has an id"))
        .collect::<anyhow::Result<_>>()?;
    let first = ids.len().min(ADD_BATCH);
    let group = api
        .create_group("fan-out", &ids[..first])
        .await
        .context("creating the group")?;
    for chunk in ids[first..].chunks(ADD_BATCH) {
        let added = api
            .add_members(group.id, chunk)
            .await
            .context("adding members")?;
        if added.added.len() != chunk.len() || !added.invited.is_empty() {
            bail!(
                "{} of {} members added, {} invited",
                added.added.len(),
                chunk.len(),
                added.invited.len()
            );
        }
    }
    let info = api.group_info(group.id).await?;
    if info.member_count as usize != d.accounts.len() {
        bail!(
            "the group has {} members, not {}",
            info.member_count,
            d.accounts.len()
        );
    }
    Ok(group.id)
}

/// Waits (at most five minutes) until the server uses less than a tenth of a core, so the
/// presence announcements of the members coming online are over before the clock starts: each
/// member that connects is announced to every member already online, N²/2 frames in all.
async fn settle(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    for _ in 0..600 {
        let Ok(before) = cpu_seconds(&stat) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        match cpu_seconds(&stat) {
            Ok(after) if after - before < 0.05 => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Sends one phase's messages and waits until every reading member has them (or the drain
/// time is over, then a little longer for duplicates).
#[allow(clippy::too_many_arguments)]
async fn phase(
    sender: Link,
    phase: usize,
    k0: u64,
    count: u64,
    rate: u64,
    readers: usize,
    shared: &Shared,
    drain: Duration,
    pad: Arc<str>,
) -> (SenderReport, Link, f64) {
    let start_ns = since(shared.epoch) as f64 + 100e6;
    let (report, sender) = run_sender(
        sender,
        0,
        start_ns,
        1e9 / rate.max(1) as f64,
        k0,
        count,
        shared.epoch,
        drain,
        pad,
    )
    .await;
    let expected = report.acked.len() as u64 * readers as u64;
    let deadline = Instant::now() + drain;
    while shared.delivered[phase].load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    (report, sender, start_ns)
}

/// The conversation's order: message number (`k + 1`) to sequence, from the sync that returned
/// every message. The protocol does not promise that pipelined sends are sequenced in the order
/// they were sent, so "in order" means in sequence order, the order every member must see.
struct Order {
    seq: HashMap<u64, u64>,
    /// Above every sequence: numbers the sync did not return are placed here (they show as
    /// missing after the sync anyway).
    beyond: u64,
}

impl Order {
    fn new(synced: &[(u64, u64)]) -> Order {
        Order {
            seq: synced.iter().copied().collect(),
            beyond: synced.iter().map(|&(_, s)| s).max().unwrap_or(0) + 1,
        }
    }

    fn seqs(&self, k1s: &[u64]) -> Vec<u64> {
        k1s.iter()
            .map(|k1| self.seq.get(k1).copied().unwrap_or(self.beyond + k1))
            .collect()
    }
}

fn summarize(
    sent: &SenderReport,
    scheduled: u64,
    phase: usize,
    start_ns: f64,
    shared: &Shared,
    members: &[&MemberReport],
    order: &Order,
) -> FanoutPhase {
    let (mut first, mut last, mut delivery) =
        (Latency::default(), Latency::default(), Latency::default());
    for &k1 in &sent.acked {
        let k = (k1 - 1) as usize;
        let f = shared.first[k].load(Ordering::Relaxed);
        if f != u64::MAX {
            first.record_ns(f as i64);
            last.record_ns(shared.last[k].load(Ordering::Relaxed) as i64);
        }
    }
    let in_phase = |k1: u64| usize::from(k1 > shared.boundary) == phase;
    let mut completeness = Completeness::default();
    let acked = order.seqs(&sent.acked);
    for m in members {
        delivery.merge(&m.delivery[phase]);
        let received: Vec<u64> = m
            .received
            .iter()
            .copied()
            .filter(|&k1| in_phase(k1))
            .collect();
        completeness.add(&Completeness::check(&acked, &order.seqs(&received)));
    }
    let deliveries = shared.delivered[phase].load(Ordering::Relaxed);
    let secs = (shared.last_arrival[phase].load(Ordering::Relaxed) as f64 - start_ns) / 1e9;
    FanoutPhase {
        readers: members.len(),
        scheduled,
        sent: sent.sent,
        acked: sent.acked.len() as u64,
        refused: sent.refused.clone(),
        deliveries,
        deliveries_per_sec: if secs > 0.0 {
            deliveries as f64 / secs
        } else {
            0.0
        },
        first_recipient: first.summary(),
        last_recipient: last.summary(),
        delivery: delivery.summary(),
        ack_latency: sent.ack.summary(),
        send_lag: sent.lag.summary(),
        completeness,
    }
}

/// Reads the stalled member's link again until the server closes it or every acknowledged
/// message of the second phase is in (at most `drain`).
async fn resume(
    mut link: Link,
    acked: &[u64],
    boundary: u64,
    drain: Duration,
) -> (Stall, Vec<u64>) {
    let want: HashSet<u64> = acked.iter().copied().collect();
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    let mut stall = Stall::default();
    let deadline = Instant::now() + drain;
    loop {
        if want.iter().all(|k| seen.contains(k)) {
            link.close();
            break;
        }
        match tokio::time::timeout_at(deadline, link.next()).await {
            Err(_) => {
                link.close();
                break;
            }
            Ok(Event::Received(text)) => {
                if let Some((k, _)) = parse(&text) {
                    got.push(k + 1);
                    if k >= boundary {
                        stall.read_on_resume += 1;
                    }
                    seen.insert(k + 1);
                }
            }
            Ok(Event::Closed(reason)) => {
                stall.closed_by_server = true;
                stall.close = Some(reason);
                break;
            }
            Ok(_) => {}
        }
    }
    (stall, got)
}

/// Reconnects account `i` and syncs from the start; the number (`k + 1`) and sequence of each
/// of the group's messages.
async fn sync_all(
    d: &Deployment,
    i: usize,
    group: ConversationId,
    expected: usize,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut conn: Connection = d.connect_ws(i, 64 * 1024, expected + 4096).await?;
    conn.sync(&Cursors::default(), None)
        .await
        .context("syncing after the stall")?;
    let mut got = Vec::new();
    while let Some(frame) = conn.try_next_event() {
        if let ServerFrame::Message { message } = frame
            && message.conversation_id == group
            && let MessageBody::Text { text } = &message.body
            && let Some((k, _)) = parse(text)
        {
            got.push((k + 1, message.seq));
        }
    }
    conn.close();
    Ok(got)
}

/// Runs scenario 3 for every group size in `params.fanout_members`.
pub async fn run(env: &Env, target: Target, params: &Params) -> Vec<FanoutOutcome> {
    let mut out = Vec::new();
    for &members in &params.fanout_members {
        let outcome = match one(env, target, members, params).await {
            Ok(o) => o,
            Err(e) => {
                println!("{} fan-out 1→{members}: error: {e:#}", target.name());
                FanoutOutcome {
                    target,
                    members,
                    rate: params.fanout_rate,
                    step_secs: params.fanout_step_secs,
                    payload_bytes: params.fanout_payload_bytes,
                    outbound_queue: params.fanout_outbound_queue,
                    setup_secs: 0.0,
                    steady: None,
                    with_stalled: None,
                    stall: None,
                    misdelivered: 0,
                    closed: Vec::new(),
                    connect_retries: 0,
                    server_cpu_secs: 0.0,
                    server_rss_kib_after: 0,
                    server_exited: false,
                    passed: false,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        print_one(&outcome);
        out.push(outcome);
    }
    out
}

async fn one(
    env: &Env,
    target: Target,
    members: usize,
    params: &Params,
) -> anyhow::Result<FanoutOutcome> {
    if target != Target::TidingsWs {
        bail!("fan-out is measured over the native protocol only");
    }
    // A sender, the member that stalls, and at least one that keeps reading.
    let n = members.max(3);
    let mut env = env.clone();
    // Adding a thousand members at once is setup, not what is measured.
    env.server.env.push((
        "TIDINGS_LIMITS_GROUP_INVITATIONS_PER_MINUTE".into(),
        "0".into(),
    ));
    if let Some(q) = params.fanout_outbound_queue {
        env.server
            .env
            .push(("TIDINGS_LIMITS_OUTBOUND_QUEUE".into(), q.to_string()));
    }
    let started = Instant::now();
    let mut deployment = Deployment::start(&env, target, n, 0, false).await?;
    let group = make_group(&deployment).await?;
    let d = &deployment;
    let conns: Vec<anyhow::Result<Connection>> = stream::iter(0..n)
        .map(|i| async move {
            // The member that stops reading gets small client buffers, so what the server
            // writes piles up in the sockets and then in the server's queue, not in this
            // process; the others room for every event of the run.
            let (read_buffer, event_buffer) = match i {
                STALLED => (4096, 1),
                0 => (16 * 1024, 65_536),
                _ => (8 * 1024, 65_536),
            };
            d.connect_ws(i, read_buffer, event_buffer)
                .await
                .with_context(|| format!("member {i}"))
        })
        .buffered(32)
        .collect()
        .await;
    let mut conns = conns.into_iter();
    let sender = Link::ws(conns.next().context("a sender")??, Some(group.0));

    let rate = params.fanout_rate.max(1);
    let count = ((params.fanout_step_secs * rate as f64).floor() as u64).max(1);
    let shared = Arc::new(Shared {
        first: (0..2 * count).map(|_| AtomicU64::new(u64::MAX)).collect(),
        last: (0..2 * count).map(|_| AtomicU64::new(0)).collect(),
        delivered: Default::default(),
        last_arrival: Default::default(),
        boundary: count,
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stall_tx, stall_rx) = watch::channel(false);
    // Every member reads from the moment it is up (presence announcements arrive meanwhile).
    let mut tasks: Vec<JoinHandle<(MemberReport, Option<Link>)>> = Vec::with_capacity(n - 1);
    for (j, conn) in conns.enumerate() {
        let i = j + 1;
        let stall = (i == STALLED).then(|| stall_rx.clone());
        tasks.push(tokio::spawn(run_member(
            Link::ws(conn?, None),
            i,
            shared.clone(),
            stall,
            stop_rx.clone(),
        )));
    }
    settle(deployment.pid).await;
    crate::server::wait_for_quiet(env.server.quiet_wait).await;
    let setup_secs = started.elapsed().as_secs_f64();

    let stat = format!("/proc/{}/stat", deployment.pid);
    let cpu_before = cpu_seconds(&stat)?;
    let drain = Duration::from_secs_f64(params.drain_secs);
    let pad: Arc<str> = "x".repeat(params.fanout_payload_bytes).into();
    let (steady_sent, sender, steady_start) = phase(
        sender,
        0,
        0,
        count,
        rate,
        n - 1,
        &shared,
        drain,
        pad.clone(),
    )
    .await;

    // The stalled member stops reading before the second phase begins.
    let _ = stall_tx.send(true);
    let stalled_task = tasks.remove(STALLED - 1);
    let (stalled_report, stalled_link) = stalled_task.await?;
    let Some(stalled_link) = stalled_link else {
        bail!(
            "the member to stall was closed while it still read: {}",
            stalled_report.closed.as_deref().unwrap_or("-")
        );
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (stall_sent, sender, stall_start) =
        phase(sender, 1, count, count, rate, n - 2, &shared, drain, pad).await;
    let server_cpu_secs = cpu_seconds(&stat).unwrap_or(cpu_before) - cpu_before;
    sender.close();

    // A moment for the server to act on the stalled connection, then it reads again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut stall, live_after) = resume(stalled_link, &stall_sent.acked, count, drain).await;
    let mut live = stalled_report.received.clone();
    live.extend(live_after);
    let mut all_acked = steady_sent.acked.clone();
    all_acked.extend(&stall_sent.acked);
    let synced = sync_all(&deployment, STALLED, group, all_acked.len()).await?;
    let order = Order::new(&synced);
    let live_check = Completeness::check(&order.seqs(&all_acked), &order.seqs(&live));
    stall.live_duplicated = live_check.duplicated;
    stall.live_out_of_order = live_check.out_of_order;
    stall.synced = synced.len() as u64;
    let synced_k1s: Vec<u64> = synced.iter().map(|&(k1, _)| k1).collect();
    stall.missing_after_sync = Completeness::check(&all_acked, &synced_k1s).lost;

    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await?.0);
    }
    let server_exited = !deployment.alive();
    let server_rss_kib_after = status_kib(deployment.pid, "VmRSS").unwrap_or(0);
    let connect_retries = deployment.retries.load(Ordering::Relaxed);

    let mut steady_members: Vec<&MemberReport> = reports.iter().collect();
    steady_members.push(&stalled_report);
    let steady = summarize(
        &steady_sent,
        count,
        0,
        steady_start,
        &shared,
        &steady_members,
        &order,
    );
    let others: Vec<&MemberReport> = reports.iter().collect();
    let with_stalled = summarize(&stall_sent, count, 1, stall_start, &shared, &others, &order);
    let misdelivered = steady_members.iter().map(|r| r.misdelivered).sum();
    let closed: Vec<String> = steady_members
        .iter()
        .filter_map(|r| r.closed.clone())
        .chain(steady_sent.closed.clone())
        .chain(stall_sent.closed.clone())
        .collect();
    let phase_ok = |p: &FanoutPhase| {
        p.completeness.is_perfect()
            && p.completeness.acked == p.acked * p.readers as u64
            && p.sent == p.scheduled
            && p.acked == p.sent
            && p.refused.is_empty()
    };
    let passed = phase_ok(&steady)
        && phase_ok(&with_stalled)
        && misdelivered == 0
        && closed.is_empty()
        && stall.missing_after_sync == 0
        && stall.live_duplicated == 0
        && stall.live_out_of_order == 0
        && !server_exited;
    deployment.stop(&env).await?;
    Ok(FanoutOutcome {
        target,
        members: n,
        rate,
        step_secs: params.fanout_step_secs,
        payload_bytes: params.fanout_payload_bytes,
        outbound_queue: params.fanout_outbound_queue,
        setup_secs,
        steady: Some(steady),
        with_stalled: Some(with_stalled),
        stall: Some(stall),
        misdelivered,
        closed,
        connect_retries,
        server_cpu_secs,
        server_rss_kib_after,
        server_exited,
        passed,
        error: None,
    })
}

fn phase_line(p: &FanoutPhase) -> String {
    let c = &p.completeness;
    format!(
        "{} readers, sent {}/{}, acked {}, {:.0} deliv/s; first p50 {:.2} p99 {:.2} ms, last p50 {:.2} p99 {:.2} ms; lost {} dup {} reordered {}",
        p.readers,
        p.sent,
        p.scheduled,
        p.acked,
        p.deliveries_per_sec,
        p.first_recipient.p50_ms,
        p.first_recipient.p99_ms,
        p.last_recipient.p50_ms,
        p.last_recipient.p99_ms,
        c.lost,
        c.duplicated,
        c.out_of_order
    )
}

pub fn print_one(o: &FanoutOutcome) {
    let head = format!(
        "{:<13} fan-out 1→{} at {} msg/s",
        o.target.name(),
        o.members,
        o.rate
    );
    if let Some(e) = &o.error {
        println!("{head}: ERROR {e}");
        return;
    }
    if let Some(p) = &o.steady {
        println!("{head}, all reading: {}", phase_line(p));
    }
    if let Some(p) = &o.with_stalled {
        println!("{head}, one stalled: {}", phase_line(p));
    }
    if let Some(s) = &o.stall {
        println!(
            "    stalled member: closed by the server {} ({}), {} of the stalled phase read on resuming, {} synced, {} missing after sync; {}",
            s.closed_by_server,
            s.close.as_deref().unwrap_or("-"),
            s.read_on_resume,
            s.synced,
            s.missing_after_sync,
            if o.passed { "PASS" } else { "FAIL" }
        );
    }
    for line in o.closed.iter().take(3) {
        println!("    closed: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_senders_messages_parse() {
        assert_eq!(parse("0 7 123456 xxxx"), Some((7, 123456)));
        assert_eq!(parse("3 7 123456 xxxx"), None);
        assert_eq!(parse("0 seven 123456"), None);
        assert_eq!(parse("hello"), None);
    }

    #[test]
    fn order_follows_the_sequences_not_the_send_order() {
        // Message numbers 1 and 2 were sequenced the other way round (5 before 6 is 2 before 1);
        // number 9 is not in the sync.
        let order = Order::new(&[(1, 6), (2, 5), (3, 7)]);
        assert_eq!(order.seqs(&[2, 1, 3]), vec![5, 6, 7]);
        assert_eq!(order.seqs(&[9]), vec![8 + 9]);
        // A member that saw 2 before 1 saw them in order; one that saw 1 before 2 did not.
        let acked = order.seqs(&[1, 2, 3]);
        assert!(Completeness::check(&acked, &order.seqs(&[2, 1, 3])).is_perfect());
        assert_eq!(
            Completeness::check(&acked, &order.seqs(&[1, 2, 3])).out_of_order,
            1
        );
    }
}
