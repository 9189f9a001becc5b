//! What this node knows about the other nodes of a deployment: which users hold connections on
//! them, so presence is answered for the whole cluster and not only for this node's sockets.
//!
//! Every node picks a random id at start and tells the others over the bus (as
//! `BusEvent::NodePresence`) whenever a user's first connection arrives or last one leaves,
//! and every [`HEARTBEAT`] with a full snapshot. Each node keeps the latest picture of every
//! other node; a node not heard from for [`EXPIRY`] (it died, or its bus link did) is
//! forgotten, so its users stop counting as online without it having to say goodbye, and its
//! room occupants (`rooms.rs`) are swept. A node
//! that just started knows the others after at most one heartbeat.

use crate::Core;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings_bus::BusEvent;
use tidings_proto::{DeviceId, UserId};

/// How often each node publishes its full list of online users.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a node's picture is trusted without news from it.
pub(crate) const EXPIRY: Duration = Duration::from_secs(35);

struct NodeView {
    heard: Instant,
    users: HashSet<UserId>,
    /// Devices with a foreground connection there (for push notifications).
    awake: HashSet<DeviceId>,
}

/// The other nodes' online users, as last heard.
pub(crate) struct ClusterPresence {
    /// This node's id on the bus.
    pub(crate) node: u64,
    nodes: Mutex<HashMap<u64, NodeView>>,
}

impl ClusterPresence {
    pub(crate) fn new() -> Self {
        ClusterPresence {
            node: rand::random(),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Takes in another node's news; our own events (which the bus echoes) are skipped.
    /// Returns `true` when the news is from a node not heard from before (one that just
    /// started): it then deserves this node's snapshot at once rather than at the next
    /// heartbeat, so it does not count this node's users and room occupants as gone meanwhile.
    pub(crate) fn apply(&self, event: &BusEvent) -> bool {
        if let BusEvent::DeviceActivity {
            node,
            full,
            awake,
            asleep,
        } = event
        {
            if *node == self.node {
                return false;
            }
            let mut nodes = self.nodes.lock().expect("cluster lock poisoned");
            let new = !nodes.contains_key(node);
            let view = nodes.entry(*node).or_insert_with(|| NodeView {
                heard: Instant::now(),
                users: HashSet::new(),
                awake: HashSet::new(),
            });
            if *full {
                view.awake = awake.iter().copied().collect();
            } else {
                view.awake.extend(awake.iter().copied());
                for device in asleep.iter() {
                    view.awake.remove(device);
                }
            }
            return new;
        }
        let BusEvent::NodePresence {
            node,
            full,
            online,
            offline,
        } = event
        else {
            return false;
        };
        if *node == self.node {
            return false;
        }
        let mut nodes = self.nodes.lock().expect("cluster lock poisoned");
        let now = Instant::now();
        nodes.retain(|_, view| now.duration_since(view.heard) < EXPIRY);
        let new = !nodes.contains_key(node);
        let view = nodes.entry(*node).or_insert_with(|| NodeView {
            heard: now,
            users: HashSet::new(),
            awake: HashSet::new(),
        });
        view.heard = now;
        if *full {
            view.users = online.iter().copied().collect();
        } else {
            view.users.extend(online.iter().copied());
            for user in offline.iter() {
                view.users.remove(user);
            }
        }
        new
    }

    /// Whether a node other than this one, heard from recently, holds a connection of `user`.
    pub(crate) fn online_elsewhere(&self, user: UserId) -> bool {
        let nodes = self.nodes.lock().expect("cluster lock poisoned");
        let now = Instant::now();
        nodes
            .values()
            .any(|view| now.duration_since(view.heard) < EXPIRY && view.users.contains(&user))
    }
}

impl ClusterPresence {
    /// This node and every other node heard from recently, as the store keeps node ids.
    pub(crate) fn live_nodes(&self) -> Vec<i64> {
        let nodes = self.nodes.lock().expect("cluster lock poisoned");
        let now = Instant::now();
        let mut live: Vec<i64> = nodes
            .iter()
            .filter(|(_, view)| now.duration_since(view.heard) < EXPIRY)
            .map(|(node, _)| *node as i64)
            .collect();
        live.push(self.node as i64);
        live
    }

    /// Whether a node other than this one, heard from recently, holds a foreground connection
    /// of `device`.
    pub(crate) fn device_awake_elsewhere(&self, device: DeviceId) -> bool {
        let nodes = self.nodes.lock().expect("cluster lock poisoned");
        let now = Instant::now();
        nodes
            .values()
            .any(|view| now.duration_since(view.heard) < EXPIRY && view.awake.contains(&device))
    }
}

impl Core {
    /// Tells the other nodes whether `device` is awake here now.
    pub(crate) async fn publish_device_activity(&self, user: UserId, device: DeviceId) {
        let here: Arc<[DeviceId]> = Arc::from(vec![device]);
        let none: Arc<[DeviceId]> = Arc::from(Vec::new());
        let (awake, asleep) = if self.inner.hub.device_awake(user, device) {
            (here, none)
        } else {
            (none, here)
        };
        let event = BusEvent::DeviceActivity {
            node: self.inner.cluster.node,
            full: false,
            awake,
            asleep,
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::debug!(%e, "Could not publish device activity.");
        }
    }

    /// Whether `user` has a connection on any node.
    pub(crate) fn online_anywhere(&self, user: UserId) -> bool {
        self.inner.hub.is_online(user) || self.inner.cluster.online_elsewhere(user)
    }

    /// Tells the other nodes whether `user` has connections here now.
    pub(crate) async fn publish_node_presence(&self, user: UserId) {
        let here: Arc<[UserId]> = Arc::from(vec![user]);
        let none: Arc<[UserId]> = Arc::from(Vec::new());
        let (online, offline) = if self.inner.hub.is_online(user) {
            (here, none)
        } else {
            (none, here)
        };
        let event = BusEvent::NodePresence {
            node: self.inner.cluster.node,
            full: false,
            online,
            offline,
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::debug!(%e, "Could not publish node presence.");
        }
    }
}

/// Publishes this node's online users every [`HEARTBEAT`], until the core is dropped.
pub(crate) async fn run_heartbeat(core: Core) {
    let started = Instant::now();
    let mut interval = tokio::time::interval(HEARTBEAT);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // Room occupants of nodes that stopped without saying so are swept, once this node
        // has been up long enough to have heard from every live one.
        if started.elapsed() > EXPIRY {
            let live = core.inner.cluster.live_nodes();
            match core.inner.store.vacate_nodes_except(&live).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(occupants = n, "Swept the room occupants of stopped nodes.")
                }
                Err(e) => tracing::debug!(%e, "Could not sweep the occupants of stopped nodes."),
            }
        }
        core.publish_snapshot().await;
    }
}

impl Core {
    /// Publishes this node's full picture: its online users and its awake devices.
    pub(crate) async fn publish_snapshot(&self) {
        let event = BusEvent::NodePresence {
            node: self.inner.cluster.node,
            full: true,
            online: Arc::from(self.inner.hub.online_users()),
            offline: Arc::from(Vec::new()),
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::debug!(%e, "Could not publish the node presence snapshot.");
        }
        let event = BusEvent::DeviceActivity {
            node: self.inner.cluster.node,
            full: true,
            awake: Arc::from(self.inner.hub.awake_devices()),
            asleep: Arc::from(Vec::new()),
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::debug!(%e, "Could not publish the device activity snapshot.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: u64, full: bool, online: &[i64], offline: &[i64]) -> BusEvent {
        BusEvent::NodePresence {
            node,
            full,
            online: online.iter().map(|&u| UserId(u)).collect(),
            offline: offline.iter().map(|&u| UserId(u)).collect(),
        }
    }

    #[test]
    fn other_nodes_changes_and_snapshots_are_tracked() {
        let cluster = ClusterPresence::new();
        let other = cluster.node.wrapping_add(1);
        cluster.apply(&event(other, false, &[1, 2], &[]));
        assert!(cluster.online_elsewhere(UserId(1)));
        cluster.apply(&event(other, false, &[], &[1]));
        assert!(!cluster.online_elsewhere(UserId(1)));
        assert!(cluster.online_elsewhere(UserId(2)));
        // A snapshot replaces the picture.
        cluster.apply(&event(other, true, &[3], &[]));
        assert!(!cluster.online_elsewhere(UserId(2)));
        assert!(cluster.online_elsewhere(UserId(3)));
        // Our own news, echoed by the bus, is not "elsewhere".
        cluster.apply(&event(cluster.node, false, &[4], &[]));
        assert!(!cluster.online_elsewhere(UserId(4)));
    }

    #[test]
    fn other_nodes_awake_devices_are_tracked() {
        let cluster = ClusterPresence::new();
        let other = cluster.node.wrapping_add(1);
        let activity = |full: bool, awake: &[i64], asleep: &[i64]| BusEvent::DeviceActivity {
            node: other,
            full,
            awake: awake.iter().map(|&d| DeviceId(d)).collect(),
            asleep: asleep.iter().map(|&d| DeviceId(d)).collect(),
        };
        cluster.apply(&activity(false, &[1, 2], &[]));
        assert!(cluster.device_awake_elsewhere(DeviceId(1)));
        cluster.apply(&activity(false, &[], &[1]));
        assert!(!cluster.device_awake_elsewhere(DeviceId(1)));
        assert!(cluster.device_awake_elsewhere(DeviceId(2)));
        cluster.apply(&activity(true, &[3], &[]));
        assert!(!cluster.device_awake_elsewhere(DeviceId(2)));
        assert!(cluster.device_awake_elsewhere(DeviceId(3)));
        cluster.nodes.lock().unwrap().get_mut(&other).unwrap().heard -= EXPIRY;
        assert!(!cluster.device_awake_elsewhere(DeviceId(3)));
    }

    #[test]
    fn silent_nodes_are_forgotten() {
        let cluster = ClusterPresence::new();
        let other = cluster.node.wrapping_add(1);
        cluster.apply(&event(other, true, &[1], &[]));
        cluster.nodes.lock().unwrap().get_mut(&other).unwrap().heard -= EXPIRY;
        assert!(!cluster.online_elsewhere(UserId(1)));
    }
}
