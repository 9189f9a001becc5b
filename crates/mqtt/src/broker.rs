//! MQTT sessions and the broker that routes publications between them.
//!
//! One mutex guards every session and the subscription index; nothing awaits while holding it.
//! A session outlives its connection when it has a session expiry: its subscriptions keep
//! collecting messages (bounded by `max_queued_messages`), its unacknowledged deliveries are
//! resent when the client comes back, and for IM it keeps, per conversation, the highest
//! sequence the device acknowledged, from which the normal sync path catches it up.

use crate::codec::{Properties, Publish, QoS, SubOptions};
use crate::topic;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tidings_bus::BrokerPublication;
use tidings_proto::{ConversationId, Seq, UserId};
use tokio::time::Instant;

/// Now on the wall clock, in ms since the epoch (session expiry across restarts).
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How the rest of the gateway wakes one connection's task: the session it holds has
/// something queued, a newer connection took the session, or one of its timers is due.
///
/// The task polls it ([`ConnSignal::poll`]) rather than awaiting a `Notify`, and its timers are
/// a deadline the gateway's sweep checks rather than a timer of its own (see
/// [`ConnSignal::set_deadline`]): a waiting connection then holds neither `Notified` nor
/// `Sleep` futures, which were about a third of an idle connection's memory.
#[derive(Debug, Default)]
pub struct ConnSignal {
    waker: AtomicWaker,
    raised: AtomicU8,
    /// When the connection wants [`ConnSignal::TIMER`], in ms of the gateway's clock
    /// ([`crate::Gateway::clock_ms`]); `u64::MAX` for never.
    deadline_ms: AtomicU64,
}

impl ConnSignal {
    /// The session has something queued for the client.
    pub const QUEUED: u8 = 1;
    /// A newer connection took the session: this one says so and ends.
    pub const KICKED: u8 = 2;
    /// The deadline passed: the connection checks its keep-alive and other timers.
    pub const TIMER: u8 = 4;

    pub fn new() -> Self {
        ConnSignal {
            deadline_ms: AtomicU64::new(u64::MAX),
            ..ConnSignal::default()
        }
    }

    /// Raises `flags` and wakes the connection.
    pub fn raise(&self, flags: u8) {
        self.raised.fetch_or(flags, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Takes the raised flags, if any; otherwise the connection is woken when one is raised.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<u8> {
        // Registered before looking, so a flag raised in between still wakes the task.
        self.waker.register(cx.waker());
        match self.raised.swap(0, Ordering::AcqRel) {
            0 => Poll::Pending,
            flags => Poll::Ready(flags),
        }
    }

    /// Asks for [`ConnSignal::TIMER`] once the gateway's clock reaches `at_ms`.
    pub fn set_deadline(&self, at_ms: u64) {
        self.deadline_ms.store(at_ms, Ordering::Release);
    }

    /// Raises [`ConnSignal::TIMER`] if the deadline has passed at `now_ms`. The deadline is
    /// cleared, so a connection is woken once per deadline it sets.
    pub fn check_deadline(&self, now_ms: u64) {
        let at = self.deadline_ms.load(Ordering::Acquire);
        if at <= now_ms
            && self
                .deadline_ms
                .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.raise(Self::TIMER);
        }
    }
}

/// A session is its user's: two users may use the same client id without meeting.
pub type SessionKey = (UserId, String);

/// A publication as the broker holds it (shared by every recipient and the retained store).
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The properties forwarded to subscribers (payload format, content type, response topic,
    /// correlation data, user properties).
    pub properties: Properties,
    pub expires_at: Option<Instant>,
}

impl Message {
    /// The message as the bus carries it to the other nodes.
    pub fn to_relay(&self, from: &SessionKey) -> BrokerPublication {
        let p = &self.properties;
        BrokerPublication {
            from_user: from.0,
            from_client: from.1.clone(),
            topic: self.topic.clone(),
            payload: self.payload.to_vec(),
            qos: self.qos as u8,
            retain: self.retain,
            expiry_secs: self.expires_at.map(|at| {
                at.saturating_duration_since(Instant::now())
                    .as_secs()
                    .try_into()
                    .unwrap_or(u32::MAX)
            }),
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.as_ref().map(|d| d.to_vec()),
            user_properties: p.user_properties.clone(),
        }
    }

    /// A publication another node relayed, and the session that made it.
    pub fn from_relay(p: &BrokerPublication) -> (SessionKey, Message) {
        let message = Message {
            topic: p.topic.clone(),
            payload: Bytes::from(p.payload.clone()),
            qos: QoS::from_bits(p.qos).unwrap_or(QoS::AtMostOnce),
            retain: p.retain,
            properties: Properties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone().map(Bytes::from),
                user_properties: p.user_properties.clone(),
                ..Properties::default()
            },
            expires_at: p
                .expiry_secs
                .map(|s| Instant::now() + std::time::Duration::from_secs(u64::from(s))),
        };
        ((p.from_user, p.from_client.clone()), message)
    }
}

/// A message waiting in a session for its turn to be sent.
#[derive(Debug)]
pub struct Queued {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// A delivery sent to the client and not yet acknowledged.
#[derive(Debug)]
pub enum Inflight {
    /// Waiting for PUBACK (QoS 1) or PUBREC (QoS 2); resent with DUP on reconnection.
    Publish {
        publish: Box<Publish>,
        /// The IM message this delivery carries, whose acknowledgement moves the cursor.
        im: Option<(ConversationId, Seq)>,
    },
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Clone, Debug)]
pub struct Subscription {
    pub options: SubOptions,
    pub id: Option<u32>,
}

/// The state of one MQTT session.
#[derive(Debug)]
pub struct SessionState {
    /// Broker subscriptions by the filter as the client wrote it (`$share/...` included).
    pub subscriptions: HashMap<String, Subscription>,
    /// The IM events subscription (`tidings/v1/me/events`), kept apart from the broker index.
    pub im_events: Option<Subscription>,
    pub queue: VecDeque<Queued>,
    pub inflight: BTreeMap<u16, Inflight>,
    /// QoS 2 publications received (PUBREC sent) whose PUBREL has not come yet.
    pub inbound_qos2: HashSet<u16>,
    pub(crate) next_packet_id: u16,
    /// Seconds the session outlives its connection; `u32::MAX` is forever.
    pub expiry_secs: u32,
    /// Per conversation, the highest sequence the device acknowledged.
    pub im_cursors: HashMap<ConversationId, Seq>,
    /// Whether `im_cursors` holds a starting position for every conversation the user was in
    /// when the events subscription was first made.
    pub im_baseline: bool,
    /// The connection holding the session, and how to wake it (something queued) or ask it
    /// to leave.
    pub owner: Option<(u64, Arc<ConnSignal>)>,
    /// The id of the last connection that held the session (ids are unique per node), so
    /// timers armed when an earlier connection ended know they are stale.
    pub generation: u64,
    /// Messages dropped because the queue was full (logged when the client returns).
    pub dropped: u64,
    /// When its client left (wall clock, ms since the epoch), for an expiry that continues
    /// across a restart; `None` while connected.
    pub away_since_ms: Option<i64>,
    /// Whether a client held the session on this node since it started: only such sessions
    /// are written to the store by this node (another node of a cluster writes the others).
    pub owned_here: bool,
    /// Restored from the store at start.
    pub restored: bool,
}

impl SessionState {
    pub(crate) fn new() -> Self {
        SessionState {
            subscriptions: HashMap::new(),
            im_events: None,
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            inbound_qos2: HashSet::new(),
            next_packet_id: 1,
            expiry_secs: 0,
            im_cursors: HashMap::new(),
            im_baseline: false,
            owner: None,
            generation: 0,
            dropped: 0,
            away_since_ms: None,
            owned_here: false,
            restored: false,
        }
    }

    /// A packet identifier not in use by an unacknowledged delivery. The caller keeps the
    /// in-flight window well below 65535, so one is always free.
    pub fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    /// The position to sync from in each conversation: what was acknowledged, or beyond it
    /// what is in flight (that is resent on reconnection, so the sync must not repeat it).
    pub fn sync_cursors(&self) -> HashMap<ConversationId, Seq> {
        let mut cursors = self.im_cursors.clone();
        for inflight in self.inflight.values() {
            if let Inflight::Publish {
                im: Some((conv, seq)),
                ..
            } = inflight
            {
                let cursor = cursors.entry(*conv).or_insert(0);
                *cursor = (*cursor).max(*seq);
            }
        }
        cursors
    }
}

/// Shared subscribers of one group on one filter, served in turn.
#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<(SessionKey, Subscription)>,
    next: usize,
}

/// Subscribers of one filter.
#[derive(Debug, Default)]
struct FilterSubs {
    plain: HashMap<SessionKey, Subscription>,
    shared: HashMap<String, SharedGroup>,
}

#[derive(Default)]
pub struct State {
    /// Boxed: a session's state is a few hundred bytes, and the map's spare slots (an eighth
    /// to a half of them) would each hold that much inline.
    pub sessions: HashMap<SessionKey, Box<SessionState>>,
    index: HashMap<String, FilterSubs>,
    pub(crate) retained: HashMap<String, Arc<Message>>,
    /// Persistent sessions changed since they were last saved, and stored ones removed.
    pub(crate) dirty: HashSet<SessionKey>,
    /// Sessions this node wrote to the store (or took over from it), whose rows it deletes
    /// when they end.
    pub(crate) stored: HashSet<SessionKey>,
    /// Retained topics changed since they were last saved.
    pub(crate) dirty_retained: HashSet<String>,
}

/// The broker: sessions, subscriptions and retained messages of this node.
pub struct Broker {
    state: Mutex<State>,
    max_queued: usize,
}

/// What a subscription made happen.
pub struct Subscribed {
    /// Retained messages to send (already queued in the session).
    pub retained: usize,
}

impl Broker {
    pub fn new(max_queued: usize) -> Broker {
        Broker {
            state: Mutex::new(State::default()),
            max_queued: max_queued.max(1),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("broker lock poisoned")
    }

    /// Wakes every connection whose deadline has passed at `now_ms` (the gateway's clock).
    pub fn check_deadlines(&self, now_ms: u64) {
        for (_, signal) in self
            .lock()
            .sessions
            .values()
            .filter_map(|s| s.owner.as_ref())
        {
            signal.check_deadline(now_ms);
        }
    }

    /// Number of sessions held (connected or not).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Takes (or creates) the session for a connection, woken through `signal` from now on.
    /// With `clean`, any earlier state is discarded. Returns whether earlier state was kept
    /// (CONNACK's "session present").
    pub fn attach(
        &self,
        key: &SessionKey,
        clean: bool,
        conn_id: u64,
        signal: Arc<ConnSignal>,
    ) -> bool {
        let mut state = self.lock();
        if let Some(old) = state.sessions.get_mut(key)
            && let Some((_, old_signal)) = old.owner.take()
        {
            old_signal.raise(ConnSignal::KICKED);
        }
        // A session restored from the store is this node's to write (or delete) from now on.
        if state.sessions.get(key).is_some_and(|s| s.restored) {
            state.stored.insert(key.clone());
        }
        let present = if clean {
            state.remove_session(key);
            false
        } else {
            state.sessions.contains_key(key)
        };
        let session = state
            .sessions
            .entry(key.clone())
            .or_insert_with(|| Box::new(SessionState::new()));
        session.owner = Some((conn_id, signal));
        session.generation = conn_id;
        session.owned_here = true;
        session.away_since_ms = None;
        state.touch(key);
        present
    }

    /// Releases the session when its connection ends. A session without expiry goes at once;
    /// otherwise the caller arms a timer and calls [`Broker::expire`].
    pub fn detach(&self, key: &SessionKey, conn_id: u64) -> Option<(u32, u64)> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(key)?;
        if session.owner.as_ref().is_some_and(|(id, _)| *id != conn_id) {
            // Taken over by a newer connection.
            return None;
        }
        session.owner = None;
        if session.expiry_secs == 0 {
            state.remove_session(key);
            return None;
        }
        session.away_since_ms = Some(wall_ms());
        let expiry = (session.expiry_secs, session.generation);
        state.touch(key);
        Some(expiry)
    }

    /// Sets how long the session outlives its connection.
    pub fn set_expiry(&self, key: &SessionKey, expiry_secs: u32) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(key) {
            session.expiry_secs = expiry_secs;
            state.touch(key);
        }
    }

    /// Ends a session whose expiry passed, unless a connection took it since.
    pub fn expire(&self, key: &SessionKey, generation: u64) {
        let mut state = self.lock();
        if state
            .sessions
            .get(key)
            .is_some_and(|s| s.owner.is_none() && s.generation == generation)
        {
            state.remove_session(key);
        }
    }

    /// Whether the session is still away from the connection of `generation` (no newer one
    /// took it), for delayed wills.
    pub fn still_away(&self, key: &SessionKey, generation: u64) -> bool {
        self.lock()
            .sessions
            .get(key)
            .is_none_or(|s| s.owner.is_none() && s.generation == generation)
    }

    /// Adds or replaces a broker subscription and queues the retained messages it asks for.
    pub fn subscribe(&self, key: &SessionKey, filter: &str, sub: Subscription) -> Subscribed {
        let mut state = self.lock();
        let State {
            sessions,
            index,
            retained,
            dirty: state_dirty,
            ..
        } = &mut *state;
        let Some(session) = sessions.get_mut(key) else {
            return Subscribed { retained: 0 };
        };
        let existed = session
            .subscriptions
            .insert(filter.to_owned(), sub.clone())
            .is_some();
        if session.expiry_secs > 0 && session.owned_here {
            state_dirty.insert(key.clone());
        }
        let shared = topic::shared(filter).ok().flatten();
        let inner = shared.map_or(filter, |(_, inner)| inner);
        let entry = index.entry(inner.to_owned()).or_default();
        match shared {
            Some((group, _)) => {
                let group = entry.shared.entry(group.to_owned()).or_default();
                group.members.retain(|(k, _)| k != key);
                group.members.push((key.clone(), sub.clone()));
            }
            None => {
                entry.plain.insert(key.clone(), sub.clone());
            }
        }
        // Retained messages: never for shared subscriptions; handling 1 sends only for a new
        // subscription, 2 never.
        let send_retained = shared.is_none()
            && match sub.options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        let mut count = 0;
        if send_retained {
            let now = Instant::now();
            let mut matching: Vec<&Arc<Message>> = retained
                .iter()
                .filter(|(topic, m)| {
                    topic::matches(inner, topic) && m.expires_at.is_none_or(|at| at > now)
                })
                .map(|(_, m)| m)
                .collect();
            matching.sort_by(|a, b| a.topic.cmp(&b.topic));
            for message in matching {
                if session.queue.len() >= self.max_queued {
                    session.dropped += 1;
                    continue;
                }
                session.queue.push_back(Queued {
                    message: message.clone(),
                    qos: message.qos.min(sub.options.qos),
                    retain: true,
                    subscription_ids: sub.id.into_iter().collect(),
                });
                count += 1;
            }
        }
        Subscribed { retained: count }
    }

    /// Removes a broker subscription; returns whether it existed.
    pub fn unsubscribe(&self, key: &SessionKey, filter: &str) -> bool {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(key) else {
            return false;
        };
        if session.subscriptions.remove(filter).is_none() {
            return false;
        }
        state.unindex(key, filter);
        state.touch(key);
        true
    }

    /// Routes a publication to every matching subscription and updates the retained store.
    /// Returns the number of sessions it was queued for.
    pub fn publish(&self, from: &SessionKey, message: Message) -> usize {
        let message = Arc::new(message);
        let mut state = self.lock();
        if message.retain {
            if message.payload.is_empty() {
                state.retained.remove(&message.topic);
            } else {
                state
                    .retained
                    .insert(message.topic.clone(), message.clone());
            }
            state.dirty_retained.insert(message.topic.clone());
        }
        // Per session: the highest QoS granted among its matching subscriptions, whether any
        // asks for the retain flag as published, and their identifiers.
        let mut targets: HashMap<SessionKey, (QoS, bool, Vec<u32>)> = HashMap::new();
        let mut add = |key: &SessionKey, sub: &Subscription| {
            let t = targets
                .entry(key.clone())
                .or_insert((QoS::AtMostOnce, false, Vec::new()));
            t.0 = t.0.max(sub.options.qos.min(message.qos));
            t.1 |= sub.options.retain_as_published && message.retain;
            t.2.extend(sub.id);
        };
        let State {
            sessions,
            index,
            dirty,
            ..
        } = &mut *state;
        for (filter, subs) in index.iter_mut() {
            if !topic::matches(filter, &message.topic) {
                continue;
            }
            for (key, sub) in &subs.plain {
                if sub.options.no_local && key == from {
                    continue;
                }
                add(key, sub);
            }
            for group in subs.shared.values_mut() {
                if group.members.is_empty() {
                    continue;
                }
                // Prefer a member that is connected; fall back to the next in turn.
                let n = group.members.len();
                let start = group.next % n;
                let pick = (0..n)
                    .map(|i| (start + i) % n)
                    .find(|i| {
                        sessions
                            .get(&group.members[*i].0)
                            .is_some_and(|s| s.owner.is_some())
                    })
                    .unwrap_or(start);
                group.next = pick + 1;
                let (key, sub) = &group.members[pick];
                add(key, sub);
            }
        }
        let count = targets.len();
        for (key, (qos, retain, subscription_ids)) in targets {
            let Some(session) = sessions.get_mut(&key) else {
                continue;
            };
            // QoS 0 is not kept for a session whose client is away.
            if session.owner.is_none() && qos == QoS::AtMostOnce {
                continue;
            }
            if session.queue.len() >= self.max_queued {
                session.dropped += 1;
                continue;
            }
            session.queue.push_back(Queued {
                message: message.clone(),
                qos,
                retain,
                subscription_ids,
            });
            if session.expiry_secs > 0 && session.owned_here {
                dirty.insert(key);
            }
            if let Some((_, signal)) = &session.owner {
                signal.raise(ConnSignal::QUEUED);
            }
        }
        count
    }
}

impl State {
    fn remove_session(&mut self, key: &SessionKey) {
        if let Some(session) = self.sessions.remove(key) {
            for filter in session.subscriptions.keys() {
                self.unindex(key, filter);
            }
        }
        self.touch(key);
    }

    /// Notes that a session changed, so the next save writes it (a persistent session held on
    /// this node) or deletes its row (a stored session that ended or stopped persisting).
    pub(crate) fn touch(&mut self, key: &SessionKey) {
        let persistent = self
            .sessions
            .get(key)
            .is_some_and(|s| s.expiry_secs > 0 && s.owned_here);
        if (persistent || self.stored.contains(key)) && !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Adds a session to the subscription index (for sessions restored from the store).
    pub(crate) fn index_subscription(&mut self, key: &SessionKey, filter: &str, sub: Subscription) {
        let shared = topic::shared(filter).ok().flatten();
        let inner = shared.map_or(filter, |(_, inner)| inner);
        let entry = self.index.entry(inner.to_owned()).or_default();
        match shared {
            Some((group, _)) => {
                let group = entry.shared.entry(group.to_owned()).or_default();
                group.members.retain(|(k, _)| k != key);
                group.members.push((key.clone(), sub));
            }
            None => {
                entry.plain.insert(key.clone(), sub);
            }
        }
    }

    fn unindex(&mut self, key: &SessionKey, filter: &str) {
        let shared = topic::shared(filter).ok().flatten();
        let inner = shared.map_or(filter, |(_, inner)| inner);
        let Some(entry) = self.index.get_mut(inner) else {
            return;
        };
        match shared {
            Some((group, _)) => {
                if let Some(g) = entry.shared.get_mut(group) {
                    g.members.retain(|(k, _)| k != key);
                    if g.members.is_empty() {
                        entry.shared.remove(group);
                    }
                }
            }
            None => {
                entry.plain.remove(key);
            }
        }
        if entry.plain.is_empty() && entry.shared.is_empty() {
            self.index.remove(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: i64) -> SessionKey {
        (UserId(n), format!("c{n}"))
    }

    fn sub(qos: QoS) -> Subscription {
        Subscription {
            options: SubOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
            id: None,
        }
    }

    fn message(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos,
            retain,
            properties: Properties::default(),
            expires_at: None,
        }
    }

    #[test]
    fn routes_by_wildcard_downgrades_qos_and_keeps_retained() {
        let broker = Broker::new(10);
        for n in 1..=3 {
            broker.attach(&key(n), true, n as u64, Arc::new(ConnSignal::new()));
        }
        broker.subscribe(&key(1), "a/+", sub(QoS::AtLeastOnce));
        broker.subscribe(&key(2), "a/#", sub(QoS::AtMostOnce));
        broker.subscribe(&key(3), "b/#", sub(QoS::ExactlyOnce));
        assert_eq!(
            broker.publish(&key(3), message("a/x", QoS::ExactlyOnce, true, b"1")),
            2
        );
        {
            let state = broker.lock();
            assert_eq!(state.sessions[&key(1)].queue[0].qos, QoS::AtLeastOnce);
            assert_eq!(state.sessions[&key(2)].queue[0].qos, QoS::AtMostOnce);
            assert!(state.sessions[&key(3)].queue.is_empty());
        }
        // A later subscriber gets the retained message with the retain flag.
        broker.subscribe(&key(3), "a/x", sub(QoS::ExactlyOnce));
        let state = broker.lock();
        let q = &state.sessions[&key(3)].queue[0];
        assert!(q.retain);
        assert_eq!(q.qos, QoS::ExactlyOnce);
    }

    #[test]
    fn shared_subscriptions_take_turns_and_clean_sessions_forget() {
        let broker = Broker::new(10);
        for n in 1..=2 {
            broker.attach(&key(n), true, n as u64, Arc::new(ConnSignal::new()));
            broker.subscribe(&key(n), "$share/g/t/#", sub(QoS::AtLeastOnce));
        }
        for _ in 0..4 {
            broker.publish(&key(9), message("t/1", QoS::AtLeastOnce, false, b"x"));
        }
        {
            let state = broker.lock();
            assert_eq!(state.sessions[&key(1)].queue.len(), 2);
            assert_eq!(state.sessions[&key(2)].queue.len(), 2);
        }
        // Without expiry, detaching removes the session and its subscriptions.
        assert!(broker.detach(&key(1), 1).is_none());
        broker.publish(&key(9), message("t/1", QoS::AtLeastOnce, false, b"x"));
        assert_eq!(broker.lock().sessions[&key(2)].queue.len(), 3);
    }
}
