//! Three `tidings serve` processes (the real binary) share one PostgreSQL database and one NATS
//! server. Users spread over the nodes exchange direct and group messages; every message must
//! reach every member once, in sequence order, whichever node it was sent through. Then one node
//! is killed with SIGKILL during traffic: its users reconnect to another node, resync, and resend
//! what was not acknowledged; nothing acknowledged is lost and nothing is stored twice.
//!
//! Needs PostgreSQL (`PG_TEST_URL`, default 127.0.0.1:5432) and NATS (`NATS_TEST_URL`, default
//! 127.0.0.1:4222); the test fails when either is missing. It creates and drops its own
//! database and uses its own NATS subject prefix.

use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tidings_proto::ws::{ClientFrame, PresenceStatus, ServerFrame};
use tidings_proto::{ConversationId, Seq, UserId};
use tidings_sdk::{Client, ConnectOptions, Connection, Cursors};
use tidings_store_postgres::testing::TestDatabase;
use tidings_testkit::{PASSWORD, ServerProcess};

const NODES: usize = 3;
const USERS: usize = 6;
/// Messages each user sends in the first phase, to the group and to its direct conversation.
const PHASE1: usize = 60;
/// Group messages each user sends in the second phase, during which a node dies.
const PHASE2: usize = 200;
const WINDOW: usize = 16;
/// The whole test must finish well within this.
const DEADLINE: Duration = Duration::from_secs(120);

struct User {
    name: String,
    id: UserId,
    token: String,
    /// The node this user's client talks to.
    node: usize,
    /// The group, and this user's direct conversation with its partner.
    conversations: Vec<ConversationId>,
    direct: ConversationId,
}

/// What one user's client holds: per conversation, the sequences it received as events (which
/// must arrive once each, in increasing order per connection) and those of its own acked sends.
#[derive(Default)]
struct Held {
    received: BTreeMap<ConversationId, BTreeSet<Seq>>,
    /// What the current connection delivered, in arrival order (a new connection that syncs
    /// from a cursor below a hole legitimately sends again what an old one had delivered).
    this_connection: BTreeMap<ConversationId, Vec<Seq>>,
    own: BTreeMap<ConversationId, BTreeSet<Seq>>,
    /// Acked sends: client id to sequence.
    acks: BTreeMap<String, (ConversationId, Seq)>,
}

impl Held {
    /// Records an event: a sequence never arrives twice on one connection, and once the
    /// connection's first sync is done, each conversation's events arrive in sequence order,
    /// whichever node published them. (Before that, the session only guesses the client's
    /// position from the first live event and the sync then fills what lies below it.)
    fn take_event(&mut self, frame: ServerFrame, connection_start: &BTreeMap<ConversationId, Seq>) {
        self.take(frame, connection_start, true);
    }

    fn take(
        &mut self,
        frame: ServerFrame,
        connection_start: &BTreeMap<ConversationId, Seq>,
        in_order: bool,
    ) {
        if let ServerFrame::Message { message } = frame {
            let floor = connection_start
                .get(&message.conversation_id)
                .copied()
                .unwrap_or(0);
            assert!(
                message.seq > floor,
                "conversation {:?}: seq {} arrived on a connection that synced from {}",
                message.conversation_id,
                message.seq,
                floor
            );
            let list = self
                .this_connection
                .entry(message.conversation_id)
                .or_default();
            assert!(
                !list.contains(&message.seq),
                "conversation {:?}: seq {} arrived twice on one connection",
                message.conversation_id,
                message.seq
            );
            if in_order {
                assert!(
                    list.last().is_none_or(|&last| last < message.seq),
                    "conversation {:?}: seq {} arrived after {:?}",
                    message.conversation_id,
                    message.seq,
                    list.last()
                );
            }
            list.push(message.seq);
            self.received
                .entry(message.conversation_id)
                .or_default()
                .insert(message.seq);
        }
    }

    /// Every sequence held in `conversation`, received or own.
    fn all(&self, conversation: ConversationId) -> BTreeSet<Seq> {
        let mut all: BTreeSet<Seq> = self.own.get(&conversation).cloned().unwrap_or_default();
        // One's own message may also arrive as an event when it beats its ack (the client
        // knows it by its client id); events never repeat (see `take_event`).
        all.extend(self.received.get(&conversation).into_iter().flatten());
        all
    }

    /// The highest sequence held without a gap below it.
    fn contiguous(&self, conversation: ConversationId) -> Seq {
        let mut next = 1;
        for seq in self.all(conversation) {
            if seq != next {
                break;
            }
            next += 1;
        }
        next - 1
    }

    fn cursors(&self, conversations: &[ConversationId]) -> Cursors {
        let mut cursors = Cursors::default();
        for &c in conversations {
            let seq = self.contiguous(c);
            if seq > 0 {
                cursors.observe(c, seq);
            }
        }
        cursors
    }
}

/// Connects, syncs from what `held` holds, and takes in what the sync delivered. Returns the
/// connection and the cursors it synced from.
async fn connect(
    base: &str,
    user: &User,
    held: &mut Held,
) -> Option<(Connection, BTreeMap<ConversationId, Seq>)> {
    let options = ConnectOptions {
        event_buffer: 1 << 16,
        ..ConnectOptions::default()
    };
    let conn = Connection::connect_with(&Client::new(base).ws_url(), &user.token, &options)
        .await
        .ok()?;
    // Sync from what the client holds: the session then knows its position in every
    // conversation, delivers what was missed, and from then on keeps each one gap-free.
    let start = start_of(held, &user.conversations);
    conn.sync(&held.cursors(&user.conversations), None)
        .await
        .ok()?;
    // Everything before the sync's answer is already in the event channel.
    let mut conn = conn;
    while let Some(frame) = conn.try_next_event() {
        held.take(frame, &start, false);
    }
    held.this_connection.clear();
    Some((conn, start))
}

/// Sends `ids` (conversation, client id) through `conn`, recording acks; returns whether every
/// send was acknowledged (false when the connection broke).
async fn send_all(
    conn: &Connection,
    ids: &[(ConversationId, String)],
    acked: &AtomicUsize,
) -> Vec<(String, ConversationId, Seq)> {
    let mut results = futures_util::stream::iter(ids.iter().cloned())
        .map(|(conversation, id)| async move {
            let result = conn
                .send_text(conversation, &id, &format!("text of {id}"))
                .await;
            (conversation, id, result)
        })
        .buffer_unordered(WINDOW);
    let mut done = Vec::new();
    while let Some((conversation, id, result)) = results.next().await {
        if let Ok((seq, _duplicate)) = result {
            acked.fetch_add(1, Ordering::Relaxed);
            done.push((id, conversation, seq));
        }
    }
    done
}

fn record(held: &mut Held, done: Vec<(String, ConversationId, Seq)>) {
    for (id, conversation, seq) in done {
        if let Some(&(c, previous)) = held.acks.get(&id) {
            assert_eq!(
                (c, previous),
                (conversation, seq),
                "{id} changed its sequence"
            );
            continue;
        }
        held.acks.insert(id, (conversation, seq));
        held.own.entry(conversation).or_default().insert(seq);
    }
}

/// Reads events until the client holds everything up to `targets`, or the deadline passes.
async fn drain_until(
    conn: &mut Connection,
    held: &mut Held,
    start: &BTreeMap<ConversationId, Seq>,
    targets: &BTreeMap<ConversationId, Seq>,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        while let Some(frame) = conn.try_next_event() {
            held.take_event(frame, start);
        }
        if targets.iter().all(|(&c, &last)| held.contiguous(c) >= last) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.next_event()).await {
            Ok(Some(frame)) => held.take_event(frame, start),
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Where a new connection starts: the cursors it syncs from.
fn start_of(held: &Held, conversations: &[ConversationId]) -> BTreeMap<ConversationId, Seq> {
    conversations
        .iter()
        .map(|&c| (c, held.contiguous(c)))
        .collect()
}

async fn last_seqs(
    base: &str,
    token: &str,
    conversations: &[ConversationId],
) -> BTreeMap<ConversationId, Seq> {
    let api = Client::new(base).authed(token.to_owned());
    let mut out = BTreeMap::new();
    for &c in conversations {
        let page = api.history(c, None, 1).await.expect("history");
        out.insert(c, page.messages.last().map_or(0, |m| m.seq));
    }
    out
}

async fn spawn_node(binary: &Path, data: &Path, env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::spawn(binary, data, env)
        .await
        .expect("a node starts")
}

async fn run(binary: &Path) {
    let db = TestDatabase::create().await;
    let nats = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("tidings-cluster-test.{}", db.name);
    // One data directory for all nodes: it holds the token signing key they must share (and
    // local file storage); the database is PostgreSQL. The issuer is fixed, as a deployment
    // behind one name configures it, so tokens from one node are valid on the others.
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("TIDINGS_STORE_KIND", "postgres"),
        ("TIDINGS_STORE_URL", db.url.as_str()),
        ("TIDINGS_STORE_MAX_CONNECTIONS", "6"),
        ("TIDINGS_BUS_KIND", "nats"),
        ("TIDINGS_BUS_URL", nats.as_str()),
        ("TIDINGS_BUS_SUBJECT_PREFIX", prefix.as_str()),
        ("TIDINGS_TOKENS_ISSUER", "http://tidings.test"),
    ];
    // The first node creates the schema and the key; the others start after it.
    let mut nodes = vec![Some(spawn_node(binary, data.path(), &env).await)];
    for _ in 1..NODES {
        nodes.push(Some(spawn_node(binary, data.path(), &env).await));
    }
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().base_url.clone())
        .collect();

    // Accounts are created through different nodes; everyone signs in on their own node.
    let mut users = Vec::new();
    for i in 0..USERS {
        let node = i % NODES;
        let client = Client::new(&bases[node]);
        let name = format!("user{i}");
        let account = client.register(&name, PASSWORD).await.unwrap();
        let tokens = client.login(&name, PASSWORD, "phone").await.unwrap();
        users.push(User {
            name,
            id: account.user_id,
            token: tokens.access_token,
            node,
            conversations: Vec::new(),
            direct: ConversationId(0),
        });
    }
    let creator = Client::new(&bases[1]).authed(users[0].token.clone());
    let others: Vec<UserId> = users.iter().skip(1).map(|u| u.id).collect();
    let group = creator.create_group("cluster", &others).await.unwrap().id;
    // Partners sit on different nodes: user0-user1, user2-user3, user4-user5.
    for pair in 0..USERS / 2 {
        let (a, b) = (2 * pair, 2 * pair + 1);
        let api = Client::new(&bases[2]).authed(users[a].token.clone());
        let direct = api.open_direct(users[b].id).await.unwrap().id;
        for u in [a, b] {
            users[u].direct = direct;
            users[u].conversations = vec![group, direct];
        }
    }
    let users = Arc::new(users);
    let acked = Arc::new(AtomicUsize::new(0));

    // --- Phase 1: live delivery across nodes, no failures, no resync. ---
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let (users, bases, acked) = (users.clone(), bases.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let user = &users[i];
            let mut held = Held::default();
            let (conn, _) = connect(&bases[user.node], user, &mut held)
                .await
                .expect("connects");
            let ids: Vec<(ConversationId, String)> = (0..PHASE1)
                .flat_map(|n| {
                    [
                        (user.conversations[0], format!("{}-g1-{n}", user.name)),
                        (user.direct, format!("{}-d1-{n}", user.name)),
                    ]
                })
                .collect();
            let done = send_all(&conn, &ids, &acked).await;
            assert_eq!(
                done.len(),
                ids.len(),
                "{}: every send acknowledged",
                user.name
            );
            record(&mut held, done);
            (held, conn)
        }));
    }
    let mut states = Vec::new();
    for task in tasks {
        states.push(task.await.unwrap());
    }
    // Everyone has sent: every client must now get the rest live.
    let targets = last_seqs(&bases[0], &users[0].token, &[group]).await;
    assert_eq!(targets[&group], (USERS * PHASE1) as Seq);
    for (i, (held, conn)) in states.iter_mut().enumerate() {
        let user = &users[i];
        let mut want = targets.clone();
        want.insert(user.direct, (2 * PHASE1) as Seq);
        let start = BTreeMap::new();
        assert!(
            drain_until(conn, held, &start, &want, Duration::from_secs(20)).await,
            "{}: every message of phase 1 arrives live (holds {:?}, wants {want:?})",
            user.name,
            user.conversations
                .iter()
                .map(|&c| held.contiguous(c))
                .collect::<Vec<_>>()
        );
    }

    // Presence crosses nodes: user1 (node 1) sees everyone, connected through every node, online.
    let everyone: Vec<UserId> = users.iter().map(|u| u.id).collect();
    let answer = states[1]
        .1
        .request(|id| ClientFrame::PresenceQuery {
            id,
            user_ids: everyone.clone(),
        })
        .await
        .expect("presence");
    let ServerFrame::PresenceList { users: listed, .. } = answer else {
        panic!("unexpected {answer:?}");
    };
    assert_eq!(listed.len(), USERS);
    for presence in &listed {
        assert_eq!(
            presence.status,
            PresenceStatus::Online,
            "{:?} is online through another node",
            presence.user_id
        );
    }
    eprintln!(
        "cluster test: phase 1 delivered {} messages to every member across {NODES} nodes",
        acked.load(Ordering::Relaxed)
    );

    // --- Phase 2: a node dies during traffic. ---
    let victim = 2;
    let phase2_start = acked.load(Ordering::Relaxed);
    let mut tasks = Vec::new();
    for (i, (held, conn)) in states.into_iter().enumerate() {
        let (users, bases, acked) = (users.clone(), bases.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let user = &users[i];
            let (mut held, mut conn) = (held, conn);
            let mut node = user.node;
            let mut start = start_of(&held, &user.conversations);
            held.this_connection.clear();
            let ids: Vec<(ConversationId, String)> = (0..PHASE2)
                .map(|n| (user.conversations[0], format!("{}-g2-{n}", user.name)))
                .collect();
            let mut reconnects = 0;
            loop {
                let todo: Vec<_> = ids
                    .iter()
                    .filter(|(_, id)| !held.acks.contains_key(id))
                    .cloned()
                    .collect();
                let done = send_all(&conn, &todo, &acked).await;
                let complete = done.len() == todo.len();
                record(&mut held, done);
                if complete {
                    break;
                }
                // The node went away. Keep what arrived before it died, then move to the next
                // node, resync from what is held, and resend what was not acknowledged.
                while let Some(frame) = conn.next_event().await {
                    held.take_event(frame, &start);
                }
                reconnects += 1;
                assert!(reconnects <= 3, "{}: too many reconnects", user.name);
                node = (node + 1) % NODES;
                let mut fresh = None;
                for _ in 0..50 {
                    fresh = connect(&bases[node], user, &mut held).await;
                    if fresh.is_some() {
                        break;
                    }
                    node = (node + 1) % NODES;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (conn, start) = fresh.expect("reconnects to a surviving node");
            }
            (held, conn, start, node, reconnects)
        }));
    }
    // Kill the victim once traffic is well under way.
    let until = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < phase2_start + USERS * PHASE2 / 4 {
        assert!(Instant::now() < until, "phase 2 makes progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    nodes[victim].take().unwrap().kill().await.unwrap();
    let killed_at = acked.load(Ordering::Relaxed) - phase2_start;
    let mut states = Vec::new();
    for task in tasks {
        states.push(task.await.unwrap());
    }
    let moved: usize = states.iter().map(|s| s.4).sum();
    assert!(
        moved >= USERS / NODES,
        "the victim's users had to reconnect"
    );

    // Every client ends up with everything. Events a dying node had committed but not yet
    // published are repaired the normal way: a client syncs from what it holds.
    let targets = last_seqs(&bases[0], &users[0].token, &[group]).await;
    assert_eq!(
        targets[&group],
        (USERS * (PHASE1 + PHASE2)) as Seq,
        "every group message stored once"
    );
    for (i, (held, conn, start, _, _)) in states.iter_mut().enumerate() {
        let user = &users[i];
        let mut want = targets.clone();
        want.insert(user.direct, (2 * PHASE1) as Seq);
        if !drain_until(conn, held, start, &want, Duration::from_secs(5)).await {
            conn.sync(&held.cursors(&user.conversations), None)
                .await
                .expect("sync");
            assert!(
                drain_until(conn, held, start, &want, Duration::from_secs(20)).await,
                "{}: holds everything after a sync",
                user.name
            );
        }
    }

    // The store agrees with every ack, without gaps or duplicates.
    let api = Client::new(&bases[0]).authed(users[0].token.clone());
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = api.history(group, before, 500).await.unwrap();
        before = page.messages.first().map(|m| m.seq);
        stored.splice(0..0, page.messages);
        if !page.has_more {
            break;
        }
    }
    let acks: BTreeMap<&String, &(ConversationId, Seq)> =
        states.iter().flat_map(|s| s.0.acks.iter()).collect();
    assert_eq!(stored.len(), USERS * (PHASE1 + PHASE2));
    let mut ids = BTreeSet::new();
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(m.seq, i as Seq + 1, "gap-free");
        assert!(
            ids.insert(m.client_msg_id.clone()),
            "{} stored twice",
            m.client_msg_id
        );
        assert_eq!(
            acks.get(&m.client_msg_id).map(|a| a.1),
            Some(m.seq),
            "matches its ack"
        );
    }
    eprintln!(
        "cluster test: SIGKILL of node {victim} after {killed_at} phase-2 acks; {moved} clients \
         reconnected; {} group messages present once, every client saw them in sequence order",
        stored.len()
    );
    for node in nodes.into_iter().flatten() {
        node.terminate().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_postgres_and_nats_and_survive_a_sigkill() {
    tokio::time::timeout(DEADLINE, run(Path::new(env!("CARGO_BIN_EXE_tidings"))))
        .await
        .expect("the cluster test finishes in time");
}
