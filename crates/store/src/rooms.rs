//! Named rooms and their occupants: what the XMPP gateway's Multi-User Chat needs beyond a
//! group's membership.
//!
//! A room address is a group's public name on the MUC domain (`address@muc_domain`), claimed
//! once, unique across groups, released when the group is dissolved. An occupant is one device
//! that entered a group's room under a nick; occupancy is live state, not history: each row
//! names the node that holds the device's connection, so rows a dead node left behind can be
//! ignored and swept (`vacate_nodes_except`).

use tidings_proto::ws::OccupantShow;
use tidings_proto::{ConversationId, DeviceId, UserId};

/// A group's room address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    pub conversation_id: ConversationId,
    /// Lowercase; unique across groups.
    pub address: String,
    /// A temporary room's group is dissolved when its last occupant leaves.
    pub temporary: bool,
}

/// One device in a group's room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccupantRecord {
    pub conversation_id: ConversationId,
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub nick: String,
    /// The node holding the device's connection (its random id on the bus).
    pub node: i64,
    /// When the device entered, ms since the epoch; orders the occupant list.
    pub joined_at: i64,
    /// Availability and status text of the device's latest room presence, kept so that those
    /// who enter later see them.
    pub show: Option<OccupantShow>,
    pub status: Option<String>,
}

/// What [`crate::Store::occupy`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occupied {
    /// The device was not in the room and now is.
    Entered,
    /// The device was in the room under another nick, and now has this one.
    Renamed { previous: String },
    /// The device was already in the room under this nick (its show and status are updated).
    Unchanged,
    /// Another user holds the nick in this room; nothing changed.
    NickTaken,
}
