//! Per-user XML storage: items of a user's own nodes, which the XMPP gateway serves as PEP
//! nodes (XEP-0163), private XML storage (XEP-0049) and the vCard fields a profile lacks.
//!
//! The core decides who may read a node (`policy::read_user_node`: the owner; friends for the
//! shared nodes) and enforces the limits (`limits.max_user_xml_bytes` per item,
//! `limits.max_user_xml_items` per user); the XML itself is the gateway's.

use crate::error::{CoreError, CoreResult};
use crate::policy::NodeAccess;
use crate::{Caller, Core};
use tidings_proto::{ErrorCode, UserId};
use tidings_store::UserXmlRecord;

/// Nodes a user's friends may read as well: the avatar (XEP-0084) and the nickname
/// (XEP-0172), which contacts need to show the user.
pub const FRIEND_NODES: &[&str] = &[
    "urn:xmpp:avatar:data",
    "urn:xmpp:avatar:metadata",
    "http://jabber.org/protocol/nick",
];

/// The node of the vCard fields the profile has no place for; like the profile, every
/// signed-in user may read it.
pub const VCARD_NODE: &str = "vcard-temp";

/// The node of the XMPP roster's details (a contact's name and groups), one item per contact.
pub const ROSTER_NODE: &str = "roster";

/// The node of the addresses an XMPP user blocked that are not users of this server (XEP-0191
/// block lists hold any JID), one item per address. Nothing from them can arrive, since the
/// gateway speaks to no other server; they are kept so the client's list reads back whole.
pub const BLOCKED_ADDRESSES_NODE: &str = "blocked-addresses";

/// Who besides the owner may read `node`.
pub fn node_access(node: &str) -> NodeAccess {
    if node == VCARD_NODE {
        NodeAccess::Everyone
    } else if FRIEND_NODES.contains(&node) {
        NodeAccess::Friends
    } else {
        NodeAccess::Owner
    }
}

/// Longest node name or item id, in bytes.
const MAX_NAME_BYTES: usize = 255;

fn check_name(value: &str, what: &str) -> CoreResult<()> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(CoreError::invalid(format!(
            "{what} must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl Core {
    /// Stores an item in one of the caller's own nodes, replacing the item with that id.
    pub async fn put_user_xml(
        &self,
        caller: &Caller,
        node: &str,
        item_id: &str,
        xml: String,
    ) -> CoreResult<()> {
        check_name(node, "a node name")?;
        check_name(item_id, "an item id")?;
        let limits = &self.inner.config.limits;
        if xml.len() > limits.max_user_xml_bytes {
            return Err(CoreError::new(
                ErrorCode::TooLarge,
                format!(
                    "a stored item has at most {} bytes",
                    limits.max_user_xml_bytes
                ),
            ));
        }
        let record = UserXmlRecord {
            user_id: caller.user_id,
            node: node.to_owned(),
            item_id: item_id.to_owned(),
            xml,
            updated_at: self.now_ms(),
        };
        if self
            .inner
            .store
            .put_user_xml(record, limits.max_user_xml_items)
            .await?
        {
            self.tell_readers(caller, node, item_id, false).await;
            Ok(())
        } else {
            Err(CoreError::new(
                ErrorCode::QuotaExceeded,
                format!("a user stores at most {} items", limits.max_user_xml_items),
            ))
        }
    }

    /// The items of `owner`'s node, newest first, if the caller may read it.
    pub async fn user_xml(
        &self,
        caller: &Caller,
        owner: UserId,
        node: &str,
    ) -> CoreResult<Vec<UserXmlRecord>> {
        let own = owner == caller.user_id;
        let access = node_access(node);
        let friends = !own
            && access == NodeAccess::Friends
            && self.inner.store.are_friends(caller.user_id, owner).await?;
        crate::policy::read_user_node(own, friends, access)?;
        Ok(self.inner.store.user_xml(owner, node).await?)
    }

    /// Deletes an item of one of the caller's own nodes; `false` when there was none.
    pub async fn delete_user_xml(
        &self,
        caller: &Caller,
        node: &str,
        item_id: &str,
    ) -> CoreResult<bool> {
        let deleted = self
            .inner
            .store
            .delete_user_xml(caller.user_id, node, item_id)
            .await?;
        if deleted {
            self.tell_readers(caller, node, item_id, true).await;
        }
        Ok(deleted)
    }

    /// Tells every device of the caller (on every node) that one of their items changed, so
    /// their other sessions can follow (roster pushes, PEP notifications of their own nodes),
    /// and for a node friends may read, the friends' devices too (their PEP notifications).
    async fn tell_readers(&self, caller: &Caller, node: &str, item_id: &str, deleted: bool) {
        let users = if node_access(node) == NodeAccess::Friends {
            self.self_and_friends(caller.user_id).await
        } else {
            vec![caller.user_id]
        };
        self.deliver(
            users,
            tidings_proto::ws::ServerFrame::UserXml {
                user_id: caller.user_id,
                node: node.to_owned(),
                item_id: item_id.to_owned(),
                deleted,
            },
        )
        .await;
    }

    /// The user and their friends, who hear of changes to what friends may read. Friends are
    /// left out when the store cannot say: they read the change when they next ask.
    pub(crate) async fn self_and_friends(&self, user: UserId) -> Vec<UserId> {
        let mut users = vec![user];
        match self.friend_ids(user).await {
            Ok(friends) => users.extend(friends),
            Err(e) => tracing::warn!(%e, "Could not read the friends to tell of a change."),
        }
        users
    }
}
