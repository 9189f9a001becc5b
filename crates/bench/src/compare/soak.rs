//! Scenario 6 of the comparison, the mixed soak over the native protocol: U users, each with
//! one connection, in direct pairs and in groups of 50 to 500 members, send at constant rates
//! (open loop, latency from the intended send time) for M minutes while a share of the users
//! churns every minute: a churning user waits for its sends' acks, disconnects, stays away for
//! a while, reconnects and syncs from its cursors. Every sample period the server's RSS and CPU
//! are read and the live deliveries' latency summarized; memory and latency must stay flat,
//! and at the end every member must hold every message the others were acknowledged, once
//! and in order, whether it came live or in a sync.
//!
//! Only `tidings-ws` is measured, as for scenario 3: the peers would need their rooms made.

use super::{Deployment, Env, Params, Target, connect_ws_retrying, since};
use crate::server::{cpu_seconds, status_kib};
use crate::stats::{Completeness, Latency, LatencySummary};
use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, MessageBody, Seq, UserId};
use tidings_sdk::{Connection, Cursors};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Members added per REST request while a group is made.
const ADD_BATCH: usize = 500;
/// How long a churning user waits for its outstanding acks before it disconnects anyway.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long the run waits after the last send for the last deliveries and syncs.
const DRAIN: Duration = Duration::from_secs(10);

/// What scenario 6 runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakParams {
    pub users: usize,
    pub minutes: f64,
    /// Messages per second into direct conversations (pairs of users).
    pub direct_rate: u64,
    /// Messages per second into groups.
    pub group_rate: u64,
    pub groups: usize,
    /// Group sizes, spread evenly from the smallest to the largest.
    pub group_min: usize,
    pub group_max: usize,
    /// Users that churn per minute, in percent of all users.
    pub churn_percent_per_minute: f64,
    /// How long a churning user stays away, at most (at least a tenth of it).
    pub away_max_secs: f64,
    /// Seconds per sample.
    pub sample_secs: f64,
    pub payload_bytes: usize,
}

/// One sample period.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakSample {
    /// Seconds since the sends started, at the end of the period.
    pub at_secs: f64,
    pub server_rss_kib: u64,
    /// Server CPU time during the period, in cores.
    pub server_cpu_cores: f64,
    pub sent: u64,
    /// Messages delivered live (not by a sync) during the period.
    pub live_deliveries: u64,
    /// From the intended send time to each live delivery.
    pub e2e: LatencySummary,
    pub ack: LatencySummary,
    /// Users that went away during the period.
    pub churned: u64,
    /// From reconnecting to the end of the sync, for the users that came back in the period.
    pub reconnect_sync: LatencySummary,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakOutcome {
    pub target: Target,
    pub params: SoakParams,
    pub samples: Vec<SoakSample>,
    pub sent: u64,
    pub acked: u64,
    /// Sends the scheduler could not place because every candidate sender was away.
    pub skipped: u64,
    pub refused: BTreeMap<String, u64>,
    pub churns: u64,
    /// Connection attempts (at setup or on coming back) that failed and were tried again.
    pub connect_retries: u64,
    /// Over every member of every conversation, against what the others were acknowledged.
    pub completeness: Completeness,
    pub e2e: LatencySummary,
    /// RSS averaged over the first third of the samples (the first sample, warm-up, left out)
    /// and over the last third.
    pub rss_first_third_kib: f64,
    pub rss_last_third_kib: f64,
    /// The highest per-sample e2e p99 in the first third (warm-up left out) and the last.
    pub p99_first_third_ms: f64,
    pub p99_last_third_ms: f64,
    /// Memory grew by at most 10% from the first third to the last, and the last third's
    /// p99 stayed within 1.5 times the first third's (or 50 ms).
    pub flat: bool,
    pub closed: Vec<String>,
    pub passed: bool,
    pub error: Option<String>,
}

/// What the scheduler asks of a user's task.
enum Command {
    Send {
        conversation: ConversationId,
        k: u64,
        intended_ns: u64,
    },
    /// Disconnect, stay away this long, reconnect and sync.
    Churn(Duration),
    Stop,
}

/// Shared by the user tasks and the scheduler.
struct Shared {
    epoch: Instant,
    sample_ns: u64,
    online: Vec<AtomicBool>,
    /// Per sample period.
    e2e: Mutex<Vec<Latency>>,
    ack: Mutex<Vec<Latency>>,
    reconnect: Mutex<Vec<Latency>>,
    live: Vec<AtomicU64>,
    pad: String,
    /// Reconnections that failed and were tried again.
    retries: AtomicU64,
}

impl Shared {
    fn bucket(&self, ns: u64) -> usize {
        ((ns / self.sample_ns) as usize).min(self.live.len() - 1)
    }

    fn record(&self, which: &Mutex<Vec<Latency>>, at_ns: u64, latency_ns: i64) {
        let bucket = self.bucket(at_ns);
        which.lock().expect("latency lock")[bucket].record_ns(latency_ns);
    }
}

/// What one user's task saw.
#[derive(Default)]
struct UserReport {
    /// Per conversation, the sequences of the others' benchmark messages in arrival order.
    received: HashMap<ConversationId, Vec<Seq>>,
    /// This user's acknowledged sends.
    acked: Vec<(ConversationId, Seq)>,
    refused: BTreeMap<String, u64>,
    sent: u64,
    closed: Option<String>,
}

/// One user: its connection and what it knows.
struct User {
    index: usize,
    token: String,
    ws_url: String,
    cursors: Cursors,
    /// Sends not yet answered: message number → intended send time.
    pending: HashMap<u64, u64>,
    report: UserReport,
}

/// Parses `s <sender> <k> <intended ns> <filler>`.
fn parse(text: &str) -> Option<(usize, u64)> {
    let mut words = text.split(' ');
    (words.next()? == "s").then_some(())?;
    let sender = words.next()?.parse().ok()?;
    let _k: u64 = words.next()?.parse().ok()?;
    let at = words.next()?.parse().ok()?;
    Some((sender, at))
}

impl User {
    fn handle(&mut self, shared: &Shared, frame: ServerFrame, live: bool) {
        match frame {
            ServerFrame::Message { message } => {
                self.cursors.observe(message.conversation_id, message.seq);
                let MessageBody::Text { text } = &message.body else {
                    return;
                };
                let Some((sender, at)) = parse(text) else {
                    return;
                };
                if sender == self.index {
                    return;
                }
                self.report
                    .received
                    .entry(message.conversation_id)
                    .or_default()
                    .push(message.seq);
                if live {
                    let now = since(shared.epoch);
                    shared.record(&shared.e2e, now, now as i64 - at as i64);
                    shared.live[shared.bucket(now)].fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerFrame::Ack {
                id,
                conversation_id,
                seq,
                ..
            } => {
                if let Some(intended) = id.parse().ok().and_then(|k| self.pending.remove(&k)) {
                    let now = since(shared.epoch);
                    shared.record(&shared.ack, now, now as i64 - intended as i64);
                    self.report.acked.push((conversation_id, seq));
                }
            }
            ServerFrame::Error {
                id: Some(id), code, ..
            } if id
                .parse()
                .ok()
                .and_then(|k| self.pending.remove(&k))
                .is_some() =>
            {
                *self
                    .report
                    .refused
                    .entry(code.as_str().to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    async fn connect(&self, shared: &Shared) -> anyhow::Result<Connection> {
        let options = tidings_sdk::ConnectOptions {
            local_ip: Some(crate::setup::source_ip(self.index)),
            read_buffer: 16 * 1024,
            event_buffer: 65_536,
        };
        let label = format!("soak: user {}", self.index);
        connect_ws_retrying(&self.ws_url, &self.token, &options, &label, &shared.retries).await
    }

    /// Goes away for `away` and comes back: reconnects and syncs from its cursors.
    async fn churn(
        &mut self,
        shared: &Shared,
        mut conn: Connection,
        away: Duration,
    ) -> anyhow::Result<Connection> {
        let until = Instant::now() + ACK_WAIT;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(until, conn.next_event()).await {
                Ok(Some(frame)) => self.handle(shared, frame, true),
                _ => break,
            }
        }
        conn.close();
        drop(conn);
        tokio::time::sleep(away).await;
        let started = Instant::now();
        let mut conn = self.connect(shared).await?;
        conn.sync(&self.cursors, None).await.context("syncing")?;
        // What came between the reconnect and the end of the sync is checked as a set (each
        // once, none missing), not for order: a live message that arrives before the server
        // has the sync request is delivered as it is, ahead of the older ones the sync then
        // reads (docs/protocol.md 8.5, case 1). Live deliveries after that are checked in order.
        let marks: HashMap<ConversationId, usize> = self
            .report
            .received
            .iter()
            .map(|(c, list)| (*c, list.len()))
            .collect();
        while let Some(frame) = conn.try_next_event() {
            self.handle(shared, frame, false);
        }
        for (c, list) in self.report.received.iter_mut() {
            let from = marks.get(c).copied().unwrap_or(0);
            list[from..].sort_unstable();
        }
        let now = since(shared.epoch);
        shared.record(&shared.reconnect, now, started.elapsed().as_nanos() as i64);
        shared.online[self.index].store(true, Ordering::Relaxed);
        Ok(conn)
    }

    async fn run(
        mut self,
        shared: Arc<Shared>,
        mut conn: Connection,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> UserReport {
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => break,
                    Some(Command::Send { conversation, k, intended_ns }) => {
                        let text = format!(
                            r#"{{"type":"send","id":"{k}","conversation_id":{conversation},"client_msg_id":"{k}","body":{{"kind":"text","text":"s {} {k} {intended_ns} {}"}}}}"#,
                            self.index, shared.pad
                        );
                        if conn.send_raw(text).is_ok() {
                            self.pending.insert(k, intended_ns);
                            self.report.sent += 1;
                        }
                    }
                    Some(Command::Churn(away)) => match self.churn(&shared, conn, away).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            self.report.closed = Some(format!("user {}: coming back: {e:#}", self.index));
                            return self.report;
                        }
                    },
                },
                frame = conn.next_event() => match frame {
                    Some(frame) => self.handle(&shared, frame, true),
                    None => {
                        self.report.closed =
                            Some(format!("user {}: closed: {:?}", self.index, conn.close_reason()));
                        return self.report;
                    }
                },
            }
        }
        conn.close();
        self.report
    }
}

/// Group `g` of `groups`: its size, spread evenly from `min` to `max`, and its members, a run
/// of consecutive users starting at `g · users / groups` (wrapping), so groups overlap.
fn group_members(g: usize, groups: usize, min: usize, max: usize, users: usize) -> Vec<usize> {
    let size = if groups > 1 {
        min + g * (max - min) / (groups - 1)
    } else {
        min
    }
    .min(users);
    let start = g * users / groups.max(1);
    (0..size).map(|j| (start + j) % users).collect()
}

async fn make_group(
    d: &Deployment,
    title: &str,
    members: &[usize],
) -> anyhow::Result<ConversationId> {
    let server = d.server.as_ref().context("the soak runs against Tidings")?;
    let api = server.client().authed(d.accounts[members[0]].token.clone());
    let ids: Vec<UserId> = members[1..]
        .iter()
        .map(|&m| d.accounts[m].user_id.context("a Tidings account has an id"))
        .collect::<anyhow::Result<_>>()?;
    let first = ids.len().min(ADD_BATCH);
    let group = api
        .create_group(title, &ids[..first])
        .await
        .context("creating a group")?;
    for chunk in ids[first..].chunks(ADD_BATCH) {
        let added = api.add_members(group.id, chunk).await?;
        if added.added.len() != chunk.len() {
            bail!("{} of {} members added", added.added.len(), chunk.len());
        }
    }
    Ok(group.id)
}

/// Runs scenario 6 (Tidings' native protocol).
pub async fn run(env: &Env, params: &Params) -> SoakOutcome {
    let p = params.soak.clone();
    match soak(env, &p).await {
        Ok(o) => o,
        Err(e) => {
            println!("tidings-ws soak: error: {e:#}");
            SoakOutcome {
                target: Target::TidingsWs,
                params: p,
                samples: Vec::new(),
                sent: 0,
                acked: 0,
                skipped: 0,
                refused: BTreeMap::new(),
                churns: 0,
                connect_retries: 0,
                completeness: Completeness::default(),
                e2e: LatencySummary::default(),
                rss_first_third_kib: 0.0,
                rss_last_third_kib: 0.0,
                p99_first_third_ms: 0.0,
                p99_last_third_ms: 0.0,
                flat: false,
                closed: Vec::new(),
                passed: false,
                error: Some(format!("{e:#}")),
            }
        }
    }
}

async fn soak(env: &Env, p: &SoakParams) -> anyhow::Result<SoakOutcome> {
    let users = p.users.max(4) & !1;
    let pairs = users / 2;
    let mut env = env.clone();
    // The run is longer than an access token lives (15 minutes by default) and these clients
    // do not refresh: their tokens are made to outlive it instead.
    let run_secs = (p.minutes * 60.0) as u64;
    env.server.env.push((
        "TIDINGS_TOKENS_ACCESS_TTL_SECS".into(),
        (run_secs + 3600).to_string(),
    ));
    // Putting 2,750 members into groups is setup, not what is measured (as for scenario 3).
    env.server.env.push((
        "TIDINGS_LIMITS_GROUP_INVITATIONS_PER_MINUTE".into(),
        "0".into(),
    ));
    println!("soak: {users} users, {pairs} pairs, {} groups", p.groups);
    let deployment = Deployment::start(&env, Target::TidingsWs, users, pairs, false).await?;
    let d = &deployment;
    let directs: Vec<ConversationId> = d
        .dests
        .iter()
        .map(|c| c.parse().map(ConversationId))
        .collect::<Result<_, _>>()?;
    let mut members: HashMap<ConversationId, Vec<usize>> = directs
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, vec![2 * i, 2 * i + 1]))
        .collect();
    let mut groups = Vec::with_capacity(p.groups);
    for g in 0..p.groups {
        let list = group_members(g, p.groups, p.group_min, p.group_max, users);
        let id = make_group(d, &format!("soak {g}"), &list).await?;
        members.insert(id, list.clone());
        groups.push((id, list));
    }

    let ws_url = d.ws_url.clone();
    let connections: Vec<anyhow::Result<Connection>> = stream::iter(0..users)
        .map(|i| async move { d.connect_ws(i, 16 * 1024, 65_536).await })
        .buffered(32)
        .collect()
        .await;
    // The clock starts once every connection is up and presence has settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::server::wait_for_quiet(env.server.quiet_wait).await;
    let samples_len = ((p.minutes * 60.0 / p.sample_secs).ceil() as usize).max(1);
    let buckets = || Mutex::new((0..=samples_len).map(|_| Latency::default()).collect());
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sample_ns: (p.sample_secs * 1e9) as u64,
        online: (0..users).map(|_| AtomicBool::new(true)).collect(),
        e2e: buckets(),
        ack: buckets(),
        reconnect: buckets(),
        live: (0..=samples_len).map(|_| AtomicU64::new(0)).collect(),
        pad: "x".repeat(p.payload_bytes),
        retries: AtomicU64::new(0),
    });
    let mut commands = Vec::with_capacity(users);
    let mut tasks = Vec::with_capacity(users);
    for (i, conn) in connections.into_iter().enumerate() {
        let conn = conn.with_context(|| format!("user {i}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let user = User {
            index: i,
            token: d.accounts[i].token.clone(),
            ws_url: ws_url.clone(),
            cursors: Cursors::default(),
            pending: HashMap::new(),
            report: UserReport::default(),
        };
        commands.push(tx);
        tasks.push(tokio::spawn(user.run(shared.clone(), conn, rx)));
    }

    // The schedule: sends at the total rate, churns at theirs, a sample at every period's end.
    let total_rate = (p.direct_rate + p.group_rate).max(1) as f64;
    let period_ns = 1e9 / total_rate;
    let end_ns = run_secs.max(1) * 1_000_000_000;
    let churn_per_sec = users as f64 * p.churn_percent_per_minute / 100.0 / 60.0;
    let churn_period_ns = if churn_per_sec > 0.0 {
        (1e9 / churn_per_sec) as u64
    } else {
        u64::MAX
    };
    let mut rng = StdRng::seed_from_u64(6);
    let stat = format!("/proc/{}/stat", d.pid);
    let mut cpu_before = cpu_seconds(&stat)?;
    let mut samples: Vec<SoakSample> = Vec::with_capacity(samples_len);
    let (mut k, mut skipped, mut churns) = (0u64, 0u64, 0u64);
    let mut sent_in_period = 0u64;
    let mut churned_in_period = 0u64;
    let mut next_churn_ns = churn_period_ns;
    let mut next_sample_ns = shared.sample_ns;
    let intended = |k: u64| (k as f64 * period_ns) as u64;
    loop {
        let next_ns = intended(k).min(next_churn_ns).min(next_sample_ns);
        if next_ns >= end_ns && next_sample_ns > end_ns {
            break;
        }
        tokio::time::sleep_until(shared.epoch + Duration::from_nanos(next_ns)).await;
        let now = since(shared.epoch);
        while intended(k) <= now && intended(k) < end_ns {
            let online = |u: usize| shared.online[u].load(Ordering::Relaxed);
            let group_share = p.group_rate as f64 / total_rate;
            let chosen = if rng.r#gen::<f64>() < group_share && !groups.is_empty() {
                let (id, list) = &groups[rng.gen_range(0..groups.len())];
                let start = rng.gen_range(0..list.len());
                (0..list.len())
                    .map(|j| list[(start + j) % list.len()])
                    .find(|&u| online(u))
                    .map(|u| (u, *id))
            } else {
                let pair = rng.gen_range(0..pairs);
                let side = rng.gen_range(0..2);
                [2 * pair + side, 2 * pair + 1 - side]
                    .into_iter()
                    .find(|&u| online(u))
                    .map(|u| (u, directs[pair]))
            };
            match chosen {
                Some((user, conversation)) => {
                    let _ = commands[user].send(Command::Send {
                        conversation,
                        k,
                        intended_ns: intended(k),
                    });
                    sent_in_period += 1;
                }
                None => skipped += 1,
            }
            k += 1;
        }
        while next_churn_ns <= now && next_churn_ns < end_ns {
            next_churn_ns = next_churn_ns.saturating_add(churn_period_ns);
            let start = rng.gen_range(0..users);
            if let Some(user) = (0..users)
                .map(|j| (start + j) % users)
                .find(|&u| shared.online[u].load(Ordering::Relaxed))
            {
                shared.online[user].store(false, Ordering::Relaxed);
                let away = Duration::from_secs_f64(p.away_max_secs * rng.gen_range(0.1..=1.0));
                let _ = commands[user].send(Command::Churn(away));
                churns += 1;
                churned_in_period += 1;
            }
        }
        if next_sample_ns <= now {
            let cpu = cpu_seconds(&stat).unwrap_or(cpu_before);
            samples.push(SoakSample {
                at_secs: next_sample_ns as f64 / 1e9,
                server_rss_kib: status_kib(d.pid, "VmRSS").unwrap_or(0),
                server_cpu_cores: (cpu - cpu_before) / p.sample_secs,
                sent: sent_in_period,
                churned: churned_in_period,
                ..SoakSample::default()
            });
            cpu_before = cpu;
            sent_in_period = 0;
            churned_in_period = 0;
            if let Some(s) = samples.last() {
                println!(
                    "soak: {:>6.0} s: RSS {:.1} MiB, server {:.2} cores, {} sent, {} churned",
                    s.at_secs,
                    s.server_rss_kib as f64 / 1024.0,
                    s.server_cpu_cores,
                    s.sent,
                    s.churned
                );
            }
            next_sample_ns += shared.sample_ns;
        }
    }
    // Everyone comes back (churning users finish their sync), then the last deliveries.
    let back_by = Instant::now() + Duration::from_secs_f64(p.away_max_secs) + DRAIN;
    while shared.online.iter().any(|o| !o.load(Ordering::Relaxed)) && Instant::now() < back_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(DRAIN.min(Duration::from_secs(3))).await;
    for c in &commands {
        let _ = c.send(Command::Stop);
    }
    let mut reports = Vec::with_capacity(users);
    for t in tasks {
        reports.push(t.await?);
    }

    // Per member and conversation: the others' acknowledged messages, once each and in order.
    let mut acked_in: HashMap<ConversationId, Vec<(usize, Seq)>> = HashMap::new();
    for (u, r) in reports.iter().enumerate() {
        for &(c, seq) in &r.acked {
            acked_in.entry(c).or_default().push((u, seq));
        }
    }
    let mut completeness = Completeness::default();
    for (c, list) in &members {
        let acked = acked_in.get(c).map(Vec::as_slice).unwrap_or(&[]);
        for &u in list {
            let expected: Vec<Seq> = acked
                .iter()
                .filter(|(sender, _)| *sender != u)
                .map(|&(_, s)| s)
                .collect();
            let got = reports[u].received.get(c).map(Vec::as_slice).unwrap_or(&[]);
            completeness.add(&Completeness::check(&expected, got));
        }
    }
    let take =
        |buckets: &Mutex<Vec<Latency>>| std::mem::take(&mut *buckets.lock().expect("latency lock"));
    let (e2e_buckets, ack_buckets, reconnect_buckets) = (
        take(&shared.e2e),
        take(&shared.ack),
        take(&shared.reconnect),
    );
    let mut e2e_all = Latency::default();
    for (i, s) in samples.iter_mut().enumerate() {
        s.e2e = e2e_buckets[i].summary();
        s.ack = ack_buckets[i].summary();
        s.reconnect_sync = reconnect_buckets[i].summary();
        s.live_deliveries = shared.live[i].load(Ordering::Relaxed);
        e2e_all.merge(&e2e_buckets[i]);
    }
    let third = (samples.len() / 3).max(1);
    let first: Vec<&SoakSample> = samples.iter().skip(1).take(third).collect();
    let last: Vec<&SoakSample> = samples.iter().rev().take(third).collect();
    let mean_rss = |s: &[&SoakSample]| {
        s.iter().map(|x| x.server_rss_kib as f64).sum::<f64>() / s.len().max(1) as f64
    };
    let max_p99 = |s: &[&SoakSample]| s.iter().map(|x| x.e2e.p99_ms).fold(0.0, f64::max);
    let (rss_first_third_kib, rss_last_third_kib) = (mean_rss(&first), mean_rss(&last));
    let (p99_first_third_ms, p99_last_third_ms) = (max_p99(&first), max_p99(&last));
    let flat = rss_last_third_kib <= rss_first_third_kib * 1.10
        && p99_last_third_ms <= (p99_first_third_ms * 1.5).max(50.0);
    let mut refused = BTreeMap::new();
    let (mut sent, mut acked) = (0, 0);
    let mut closed = Vec::new();
    for r in &reports {
        sent += r.sent;
        acked += r.acked.len() as u64;
        for (code, n) in &r.refused {
            *refused.entry(code.clone()).or_default() += n;
        }
        closed.extend(r.closed.clone());
    }
    let connect_retries =
        d.retries.load(Ordering::Relaxed) + shared.retries.load(Ordering::Relaxed);
    deployment.stop(&env).await?;
    let passed = completeness.is_perfect() && closed.is_empty() && refused.is_empty();
    Ok(SoakOutcome {
        target: Target::TidingsWs,
        params: p.clone(),
        samples,
        sent,
        acked,
        skipped,
        refused,
        churns,
        connect_retries,
        completeness,
        e2e: e2e_all.summary(),
        rss_first_third_kib,
        rss_last_third_kib,
        p99_first_third_ms,
        p99_last_third_ms,
        flat,
        closed,
        passed,
        error: None,
    })
}

pub fn print_one(o: &SoakOutcome) {
    let c = &o.completeness;
    println!(
        "  {:<13} {} users, {:.1} min: sent {}, acked {}, skipped {}, churns {}; received {} (lost {} dup {} reordered {}); e2e p50 {:.2} p99 {:.2} ms; RSS {:.1} -> {:.1} MiB, p99 {:.2} -> {:.2} ms: {}; refused {:?}; closed {}{}",
        o.target.name(),
        o.params.users,
        o.params.minutes,
        o.sent,
        o.acked,
        o.skipped,
        o.churns,
        c.received,
        c.lost,
        c.duplicated,
        c.out_of_order,
        o.e2e.p50_ms,
        o.e2e.p99_ms,
        o.rss_first_third_kib / 1024.0,
        o.rss_last_third_kib / 1024.0,
        o.p99_first_third_ms,
        o.p99_last_third_ms,
        if o.flat { "flat" } else { "NOT flat" },
        o.refused,
        o.closed.len(),
        o.error
            .as_ref()
            .map_or(String::new(), |e| format!("  ERROR {e}"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_spread_from_the_smallest_to_the_largest_and_wrap() {
        let sizes: Vec<usize> = (0..10)
            .map(|g| group_members(g, 10, 50, 500, 2000).len())
            .collect();
        assert_eq!(sizes, [50, 100, 150, 200, 250, 300, 350, 400, 450, 500]);
        let last = group_members(3, 4, 5, 8, 20);
        assert_eq!(last, [15, 16, 17, 18, 19, 0, 1, 2]);
    }

    #[test]
    fn only_benchmark_messages_parse() {
        assert_eq!(parse("s 12 7 1500 xx"), Some((12, 1500)));
        assert_eq!(parse("0 7 1500 xx"), None);
        assert_eq!(parse("s x 7 1500"), None);
    }
}
