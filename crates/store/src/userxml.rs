//! Per-user XML storage: the items of a user's own nodes, which the XMPP gateway serves as
//! personal eventing (PEP, XEP-0163) nodes, private XML storage (XEP-0049) and the parts of a
//! vCard the Tidings profile has no field for.
//!
//! The store keeps each item as opaque text: the gateway owns the XML and its namespaces, the
//! store only finds items by user, node and item id and enforces how many a user may hold.

use tidings_proto::UserId;

/// One item of one of a user's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserXmlRecord {
    pub user_id: UserId,
    /// The node (a PEP node name, or a name the gateway derives for private storage).
    pub node: String,
    /// The item id within the node.
    pub item_id: String,
    /// The item's payload, serialized by the gateway.
    pub xml: String,
    /// When it was last written, ms since the epoch; orders a node's items.
    pub updated_at: i64,
}
