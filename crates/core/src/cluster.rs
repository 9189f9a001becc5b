//! What this node knows about the other nodes of a deployment: which users hold connections on
//! them, so presence is answered for the whole cluster and not only for this node's sockets.
//!
//! Every node picks a random id at start and tells the others over the bus (as
//! `BusEvent::NodePresence`) whenever a user's first connection arrives or last one leaves,
//! and every [`HEARTBEAT`] with a full snapshot. Each node keeps the latest picture of every
//! other node; a node not heard from for [`EXPIRY`] (it died, or its bus link did) is
//! forgotten, so its users stop counting as online without it having to say goodbye. A node
//! that just started knows the others after at most one heartbeat.

use crate::Core;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings_bus::BusEvent;
use tidings_proto::UserId;

/// How often each node publishes its full list of online users.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a node's picture is trusted without news from it.
pub(crate) const EXPIRY: Duration = Duration::from_secs(35);

struct NodeView {
    heard: Instant,
    users: HashSet<UserId>,
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
    pub(crate) fn apply(&self, event: &BusEvent) {
        let BusEvent::NodePresence {
            node,
            full,
            online,
            offline,
        } = event
        else {
            return;
        };
        if *node == self.node {
            return;
        }
        let mut nodes = self.nodes.lock().expect("cluster lock poisoned");
        let now = Instant::now();
        nodes.retain(|_, view| now.duration_since(view.heard) < EXPIRY);
        let view = nodes.entry(*node).or_insert_with(|| NodeView {
            heard: now,
            users: HashSet::new(),
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

impl Core {
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
    let mut interval = tokio::time::interval(HEARTBEAT);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let event = BusEvent::NodePresence {
            node: core.inner.cluster.node,
            full: true,
            online: Arc::from(core.inner.hub.online_users()),
            offline: Arc::from(Vec::new()),
        };
        if let Err(e) = core.inner.bus.publish(event).await {
            tracing::debug!(%e, "Could not publish the node presence snapshot.");
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
    fn silent_nodes_are_forgotten() {
        let cluster = ClusterPresence::new();
        let other = cluster.node.wrapping_add(1);
        cluster.apply(&event(other, true, &[1], &[]));
        cluster.nodes.lock().unwrap().get_mut(&other).unwrap().heard -= EXPIRY;
        assert!(!cluster.online_elsewhere(UserId(1)));
    }
}
