//! The registry of connections this node holds, and the dispatcher that hands bus events to them.
//!
//! Each connection registers a bounded queue. Delivery never waits: when a queue is full the
//! connection is marked as a slow consumer and closed by its own task, and the client
//! resyncs from the store. That keeps one slow reader from growing the server's memory or
//! delaying anyone else.
//!
//! The queue is a `VecDeque` behind the connection's own lock rather than a tokio channel: an
//! idle connection then holds no queue memory at all, where a channel holds its block of 32
//! slots and two cache-line-padded halves (about 800 bytes) for the connection's whole life.
//! With hundreds of thousands of idle connections that was a quarter of each one's memory.

use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tidings_bus::{BusEvent, OutFrame};
use tidings_proto::{DeviceId, UserId};

/// Why the server closes a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    SlowConsumer,
    DeviceRevoked,
    ShuttingDown,
}

/// Shared between a connection's task and the hub: the connection's queue of live events, and
/// the way to ask the task to close.
///
/// The task is woken through one [`AtomicWaker`] and polls ([`poll_recv`](Self::poll_recv),
/// [`poll_closed`](Self::poll_closed)) rather than awaiting a `Notify`: a waiting task then
/// holds no `Notified` future (an intrusive list node of about 64 bytes each) in its state,
/// and the control itself holds one waker slot instead of two notifiers. One connection's
/// session is the only consumer, so one waker slot is enough.
#[derive(Debug, Default)]
pub struct ConnControl {
    /// Set once [`close`](Self::close) has been called; the reason is in `queue`.
    closing: AtomicBool,
    queue: Mutex<Outbound>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Outbound {
    frames: VecDeque<Arc<OutFrame>>,
    /// The hub let go of the connection (the hub itself is gone): nothing more will come.
    detached: bool,
    /// Why the server asked the connection to close, once it has.
    reason: Option<CloseReason>,
}

/// Queues of at most this many slots are kept once emptied; larger ones are freed, so a burst
/// does not pin its memory to an idle connection.
const KEPT_QUEUE_SLOTS: usize = 16;

impl ConnControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.queue.lock().expect("queue lock poisoned")
    }

    /// Queues a live event unless `capacity` frames are already waiting; false when full.
    fn push(&self, frame: Arc<OutFrame>, capacity: usize) -> bool {
        let mut queue = self.lock();
        if queue.frames.len() >= capacity {
            return false;
        }
        queue.frames.push_back(frame);
        drop(queue);
        // The task registers its waker before it looks at the queue, so a frame queued
        // between its look and its sleep still wakes it.
        self.waker.wake();
        true
    }

    fn detach(&self) {
        self.lock().detached = true;
        self.waker.wake();
    }

    /// The next live event, in order; `Ready(None)` once the hub has let go of the connection.
    /// A frame stays queued until a poll returns it.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<OutFrame>>> {
        self.waker.register(cx.waker());
        let mut queue = self.lock();
        if let Some(frame) = queue.frames.pop_front() {
            if queue.frames.is_empty() && queue.frames.capacity() > KEPT_QUEUE_SLOTS {
                queue.frames = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if queue.detached {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// The next live event, in order; `None` once the hub has let go of the connection.
    /// Cancel-safe: a frame stays queued until a call returns it.
    pub async fn recv(&self) -> Option<Arc<OutFrame>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn close(&self, reason: CloseReason) {
        let mut queue = self.lock();
        if queue.reason.is_none() {
            queue.reason = Some(reason);
        }
        drop(queue);
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// The close reason, if [`close`](Self::close) has been called.
    pub fn closed_now(&self) -> Option<CloseReason> {
        if self.closing.load(Ordering::Acquire) {
            self.lock().reason
        } else {
            None
        }
    }

    /// Ready once [`close`](Self::close) has been called.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.waker.register(cx.waker());
        match self.closed_now() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }

    /// Resolves once [`close`](Self::close) has been called.
    pub async fn closed(&self) -> CloseReason {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }
}

struct Conn {
    id: u64,
    device_id: DeviceId,
    /// The app is in the foreground (`set_activity`); a device with only background
    /// connections still gets push notifications.
    active: bool,
    control: Arc<ConnControl>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.control.detach();
    }
}

const SHARDS: usize = 32;

/// Connections by user, sharded to keep lock contention low under fan-out.
pub struct Hub {
    shards: Vec<Mutex<HashMap<UserId, Vec<Conn>>>>,
    next_id: AtomicU64,
    queue_capacity: usize,
}

/// What a connection gets when it registers.
pub struct Registration {
    pub conn_id: u64,
    /// The connection's queue of live events ([`ConnControl::recv`]) and its close signal.
    pub control: Arc<ConnControl>,
    /// True when this is the user's first connection on this node (the user came online).
    pub first_for_user: bool,
}

impl Hub {
    pub fn new(queue_capacity: usize) -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
        }
    }

    fn shard(&self, user: UserId) -> &Mutex<HashMap<UserId, Vec<Conn>>> {
        &self.shards[(user.0 as u64 as usize) % SHARDS]
    }

    pub fn register(&self, user: UserId, device_id: DeviceId) -> Registration {
        let control = Arc::new(ConnControl::default());
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(user).lock().expect("hub lock poisoned");
        // Most users hold one connection: a list sized for one, not the four a first push
        // would make room for.
        let conns = shard.entry(user).or_insert_with(|| Vec::with_capacity(1));
        let first_for_user = conns.is_empty();
        conns.push(Conn {
            id: conn_id,
            device_id,
            active: true,
            control: control.clone(),
        });
        Registration {
            conn_id,
            control,
            first_for_user,
        }
    }

    /// Removes a connection; returns true when it was the user's last one on this node.
    pub fn unregister(&self, user: UserId, conn_id: u64) -> bool {
        let mut shard = self.shard(user).lock().expect("hub lock poisoned");
        let Some(conns) = shard.get_mut(&user) else {
            return false;
        };
        let before = conns.len();
        conns.retain(|c| c.id != conn_id);
        let removed = conns.len() < before;
        if conns.is_empty() {
            shard.remove(&user);
            removed
        } else {
            false
        }
    }

    pub fn is_online(&self, user: UserId) -> bool {
        self.shard(user)
            .lock()
            .expect("hub lock poisoned")
            .get(&user)
            .is_some_and(|c| !c.is_empty())
    }

    /// Marks a connection as in the foreground or background. Returns whether that changed
    /// whether its device is awake on this node.
    pub fn set_active(&self, user: UserId, conn_id: u64, active: bool) -> bool {
        let mut shard = self.shard(user).lock().expect("hub lock poisoned");
        let Some(conns) = shard.get_mut(&user) else {
            return false;
        };
        let Some(device) = conns.iter().find(|c| c.id == conn_id).map(|c| c.device_id) else {
            return false;
        };
        let awake = |conns: &[Conn]| conns.iter().any(|c| c.device_id == device && c.active);
        let before = awake(conns);
        for conn in conns.iter_mut().filter(|c| c.id == conn_id) {
            conn.active = active;
        }
        before != awake(conns)
    }

    /// Whether `device` has a connection (in the foreground or not) on this node.
    pub fn device_connected(&self, user: UserId, device: DeviceId) -> bool {
        self.shard(user)
            .lock()
            .expect("hub lock poisoned")
            .get(&user)
            .is_some_and(|conns| conns.iter().any(|c| c.device_id == device))
    }

    /// Whether `device` has a connection in the foreground on this node.
    pub fn device_awake(&self, user: UserId, device: DeviceId) -> bool {
        self.shard(user)
            .lock()
            .expect("hub lock poisoned")
            .get(&user)
            .is_some_and(|conns| conns.iter().any(|c| c.device_id == device && c.active))
    }

    /// Devices with a connection in the foreground on this node.
    pub fn awake_devices(&self) -> Vec<DeviceId> {
        let mut devices: Vec<DeviceId> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("hub lock poisoned")
                    .values()
                    .flatten()
                    .filter(|c| c.active)
                    .map(|c| c.device_id)
                    .collect::<Vec<_>>()
            })
            .collect();
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    /// Whether this device of `user` has a connection on this node.
    pub fn device_online(&self, user: UserId, device: DeviceId) -> bool {
        self.shard(user)
            .lock()
            .expect("hub lock poisoned")
            .get(&user)
            .is_some_and(|c| c.iter().any(|c| c.device_id == device))
    }

    /// Users with at least one connection on this node.
    pub fn online_users(&self) -> Vec<UserId> {
        let mut users: Vec<UserId> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("hub lock poisoned")
                    .iter()
                    .filter(|(_, conns)| !conns.is_empty())
                    .map(|(user, _)| *user)
                    .collect::<Vec<_>>()
            })
            .collect();
        users.sort_unstable();
        users
    }

    /// Number of connections held, for metrics and tests.
    pub fn connection_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .expect("hub lock poisoned")
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Hands an event to local connections. Never waits.
    pub fn dispatch(&self, event: &BusEvent) {
        match event {
            BusEvent::Deliver {
                users,
                except_device,
                frame,
            } => {
                for user in users.iter() {
                    let shard = self.shard(*user).lock().expect("hub lock poisoned");
                    let Some(conns) = shard.get(user) else {
                        continue;
                    };
                    for conn in conns {
                        if Some(conn.device_id) == *except_device {
                            continue;
                        }
                        if !conn.control.push(frame.clone(), self.queue_capacity) {
                            // Full: the client will resync.
                            tidings_metrics::metrics().outbound_queue_drops.inc();
                            conn.control.close(CloseReason::SlowConsumer);
                        }
                    }
                }
            }
            BusEvent::DeliverToDevice {
                user,
                device,
                frame,
            } => {
                let shard = self.shard(*user).lock().expect("hub lock poisoned");
                if let Some(conns) = shard.get(user) {
                    for conn in conns.iter().filter(|c| c.device_id == *device) {
                        if !conn.control.push(frame.clone(), self.queue_capacity) {
                            conn.control.close(CloseReason::SlowConsumer);
                        }
                    }
                }
            }
            BusEvent::DeviceRevoked { user_id, device_id } => {
                let shard = self.shard(*user_id).lock().expect("hub lock poisoned");
                if let Some(conns) = shard.get(user_id) {
                    for conn in conns.iter().filter(|c| c.device_id == *device_id) {
                        conn.control.close(CloseReason::DeviceRevoked);
                    }
                }
            }
            BusEvent::MembershipChanged { .. }
            | BusEvent::NodePresence { .. }
            | BusEvent::DeviceActivity { .. }
            | BusEvent::BrokerPublish { .. } => {}
        }
    }

    /// Asks every connection to close, for shutdown.
    pub fn close_all(&self) {
        for shard in &self.shards {
            for conns in shard.lock().expect("hub lock poisoned").values() {
                for conn in conns {
                    conn.control.close(CloseReason::ShuttingDown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::ws::ServerFrame;

    fn pong(i: u32) -> BusEvent {
        BusEvent::Deliver {
            users: Arc::from(vec![UserId(1)]),
            except_device: None,
            frame: OutFrame::new(ServerFrame::Pong { id: i.to_string() }),
        }
    }

    #[tokio::test]
    async fn overflow_closes_only_the_slow_connection() {
        let hub = Hub::new(2);
        let fast = hub.register(UserId(1), DeviceId(1));
        let slow = hub.register(UserId(1), DeviceId(2));
        for i in 0..3 {
            hub.dispatch(&pong(i));
            // The fast connection drains its queue as events arrive.
            assert!(fast.control.recv().await.is_some());
        }
        assert_eq!(slow.control.closed().await, CloseReason::SlowConsumer);
        assert!(!fast.control.closing.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_drained_burst_leaves_no_queue_memory_behind() {
        let hub = Hub::new(1000);
        let conn = hub.register(UserId(1), DeviceId(1));
        for i in 0..100 {
            hub.dispatch(&pong(i));
        }
        for i in 0..100 {
            let frame = conn.control.recv().await.expect("queued");
            assert!(frame.json().contains(&format!("\"{i}\"")), "in order");
        }
        let queue = conn.control.queue.lock().unwrap();
        assert_eq!(queue.frames.capacity(), 0, "the burst's slots were freed");
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_for_a_frame_and_ends_when_the_hub_lets_go() {
        let hub = Arc::new(Hub::new(4));
        let conn = hub.register(UserId(1), DeviceId(1));
        let control = conn.control.clone();
        let waiting = tokio::spawn(async move {
            let first = control.recv().await;
            let after = control.recv().await;
            (first.is_some(), after.is_none())
        });
        tokio::task::yield_now().await;
        hub.dispatch(&pong(1));
        tokio::task::yield_now().await;
        drop(hub);
        let (got_frame, ended) = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert!(got_frame && ended);
    }

    #[tokio::test]
    async fn presence_edges_and_revocation() {
        let hub = Hub::new(4);
        let a = hub.register(UserId(5), DeviceId(1));
        let b = hub.register(UserId(5), DeviceId(2));
        assert!(a.first_for_user && !b.first_for_user);
        hub.dispatch(&BusEvent::DeviceRevoked {
            user_id: UserId(5),
            device_id: DeviceId(2),
        });
        assert_eq!(b.control.closed().await, CloseReason::DeviceRevoked);
        assert!(!hub.unregister(UserId(5), b.conn_id));
        assert!(hub.is_online(UserId(5)));
        assert!(hub.unregister(UserId(5), a.conn_id));
        assert!(!hub.is_online(UserId(5)));
        assert_eq!(hub.connection_count(), 0);
    }
}
