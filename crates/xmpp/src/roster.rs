//! The roster (RFC 6121 §2): the Tidings friend list, with the details a client gives its
//! contacts (a name and groups) kept per user through `Core::put_user_xml` in the `roster`
//! node, one item per contact.
//!
//! A friend is a contact with subscription `both`. A roster set stores the contact's details;
//! for a user who is not (or no longer) a friend the contact stays with subscription `none`
//! until removed, as RFC 6121 keeps roster items apart from subscriptions. Removing a contact
//! deletes its details, ends the friendship and withdraws a pending friend request. Every
//! change reaches all of the user's resources as a roster push: the core tells each of the
//! user's sessions (on every node) that the item changed, and each pushes it.
//!
//! A friend request the user sent and that is still pending is a contact with subscription
//! `none` and `ask='subscribe'` (RFC 6121 3.1.2); requests to the user are not roster items but
//! `subscribe` presences, delivered when the user becomes available (RFC 6121 3.1.3).

use super::{Conn, NS_CLIENT, NS_ROSTER, condition_for, iq_error};
use crate::xml::Element;
use std::collections::BTreeMap;
use tidings_core::userxml::ROSTER_NODE;
use tidings_proto::{ErrorCode, UserId};

/// Most groups one contact may be in.
const MAX_GROUPS: usize = 32;
/// Longest contact name or group name, in characters.
const MAX_NAME_CHARS: usize = 256;

/// Where a contact stands with the user, which decides its roster item's subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Friends: subscription `both`.
    Friend,
    /// The user asked them to be friends: subscription `none`, `ask='subscribe'`.
    Asked,
    /// Neither: subscription `none`, in the roster only if the user gave it details.
    Stranger,
}

impl Conn {
    /// Where `user` stands with the caller: a friend, asked to be one, or neither.
    pub(super) async fn standing(&mut self, user: UserId) -> Standing {
        let core = self.gw.core.clone();
        if core
            .friends(&self.caller)
            .await
            .is_ok_and(|list| list.friends.iter().any(|f| f.user_id == user))
        {
            Standing::Friend
        } else if core
            .friend_requests(&self.caller)
            .await
            .is_ok_and(|list| list.outgoing.iter().any(|r| r.to.user_id == user))
        {
            Standing::Asked
        } else {
            Standing::Stranger
        }
    }

    /// The details the user stored for the contact `username`, if any.
    async fn stored_roster_item(&mut self, username: &str) -> Option<Element> {
        let me = self.caller.user_id;
        let items = self
            .gw
            .core
            .user_xml(&self.caller, me, ROSTER_NODE)
            .await
            .ok()?;
        let record = items.into_iter().find(|i| i.item_id == username)?;
        self.stored(&record.xml)
    }

    /// A roster item for `username` as the contact stands, carrying the stored details.
    fn roster_item(&self, username: &str, standing: Standing, stored: Option<&Element>) -> Element {
        let jid = format!("{username}@{}", self.domain());
        let subscription = if standing == Standing::Friend {
            "both"
        } else {
            "none"
        };
        let mut item = Element::new("item", NS_ROSTER)
            .attr("jid", jid)
            .attr("subscription", subscription)
            .attr_opt("ask", (standing == Standing::Asked).then_some("subscribe"));
        if let Some(stored) = stored {
            if let Some(name) = stored.get_attr("name") {
                item = item.attr("name", name.to_owned());
            }
            for group in stored.elements().filter(|e| e.is("group", NS_ROSTER)) {
                item = item.child(group.clone());
            }
        }
        item
    }

    /// The whole roster: friends, then contacts with details who are not friends. The stored
    /// details are read once for all of them.
    pub(super) async fn roster(&mut self) -> tidings_core::CoreResult<Vec<Element>> {
        let friends = self.gw.core.friends(&self.caller).await?.friends;
        let me = self.caller.user_id;
        let mut stored: BTreeMap<String, Element> = self
            .gw
            .core
            .user_xml(&self.caller, me, ROSTER_NODE)
            .await?
            .into_iter()
            .filter_map(|r| Some((r.item_id, self.stored(&r.xml)?)))
            .collect();
        let mut items = Vec::new();
        for friend in &friends {
            self.learn_name(friend.user_id, &friend.username);
            let details = stored.remove(&friend.username);
            items.push(self.roster_item(&friend.username, Standing::Friend, details.as_ref()));
        }
        let asked = self.gw.core.friend_requests(&self.caller).await?.outgoing;
        for request in &asked {
            let to = &request.to;
            self.learn_name(to.user_id, &to.username);
            let details = stored.remove(&to.username);
            items.push(self.roster_item(&to.username, Standing::Asked, details.as_ref()));
        }
        // What is left are contacts who are neither friends nor asked, in name order.
        for (name, details) in &stored {
            items.push(self.roster_item(name, Standing::Stranger, Some(details)));
        }
        Ok(items)
    }

    /// Sends this connection a roster push for `username` as the contact stands now: the item
    /// with its subscription and the stored details, or its removal when the contact is a
    /// stranger without details (RFC 6121 3.2: an item outlives its subscription only if the
    /// user put it in the roster).
    pub(super) async fn roster_push(&mut self, username: &str, standing: Standing) {
        let stored = self.stored_roster_item(username).await;
        let item = if standing == Standing::Stranger && stored.is_none() {
            Element::new("item", NS_ROSTER)
                .attr("jid", format!("{username}@{}", self.domain()))
                .attr("subscription", "remove")
        } else {
            self.roster_item(username, standing, stored.as_ref())
        };
        let el = Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .attr("id", format!("push-{}", super::random_id()))
            .attr("to", self.full.clone())
            .child(Element::new("query", NS_ROSTER).child(item));
        self.send(&el);
    }

    /// A roster set (RFC 6121 2.3, 2.5): one item, added, updated or removed.
    pub(super) async fn on_roster_set(&mut self, stanza: &Element, query: &Element) {
        let items: Vec<&Element> = query
            .elements()
            .filter(|e| e.is("item", NS_ROSTER))
            .collect();
        let [item] = items.as_slice() else {
            return self.send(&iq_error(
                stanza,
                "modify",
                "bad-request",
                Some("a roster set carries exactly one item"),
            ));
        };
        let Some(username) = item
            .get_attr("jid")
            .filter(|jid| !jid.contains('/'))
            .and_then(|jid| self.local_user(jid))
            .map(str::to_lowercase)
        else {
            return self.send(&iq_error(
                stanza,
                "cancel",
                "item-not-found",
                Some("contacts are users of this server"),
            ));
        };
        let Some(user) = self.user_id(&username).await else {
            return self.send(&iq_error(stanza, "cancel", "item-not-found", None));
        };
        if user == self.caller.user_id {
            return self.send(&iq_error(
                stanza,
                "cancel",
                "not-allowed",
                Some("you are not your own contact"),
            ));
        }
        if item.get_attr("subscription") == Some("remove") {
            return self.roster_remove(stanza, &username, user).await;
        }
        let name = item.get_attr("name").filter(|n| !n.is_empty());
        let groups: Vec<String> = item
            .elements()
            .filter(|e| e.is("group", NS_ROSTER))
            .map(Element::text_content)
            .collect();
        let too_long = |text: &str| text.chars().count() > MAX_NAME_CHARS;
        if groups.len() > MAX_GROUPS
            || name.is_some_and(too_long)
            || groups.iter().any(|g| g.is_empty() || too_long(g))
        {
            return self.send(&iq_error(
                stanza,
                "modify",
                "not-acceptable",
                Some("a contact has at most 32 groups; names are 1 to 256 characters"),
            ));
        }
        let mut stored = Element::new("item", NS_ROSTER)
            .attr("jid", format!("{username}@{}", self.domain()))
            .attr_opt("name", name);
        let mut seen: Vec<&String> = Vec::new();
        for group in &groups {
            if !seen.contains(&group) {
                seen.push(group);
                stored = stored.child(Element::new("group", NS_ROSTER).text(group.clone()));
            }
        }
        let mut xml = String::new();
        stored.write_to(&mut xml, "");
        match self
            .gw
            .core
            .put_user_xml(&self.caller, ROSTER_NODE, &username, xml)
            .await
        {
            // The push to every resource (this one too) follows from the core's notice.
            Ok(()) => {
                let el = self.result_for(stanza);
                self.send(&el);
            }
            Err(e) => {
                let (kind, condition) = match e.code {
                    ErrorCode::QuotaExceeded | ErrorCode::TooLarge => {
                        ("wait", "resource-constraint")
                    }
                    code => condition_for(code),
                };
                self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
            }
        }
    }

    /// Removes a contact: its details, the friendship, and a friend request still pending.
    async fn roster_remove(&mut self, stanza: &Element, username: &str, user: UserId) {
        let outcome = async {
            self.gw
                .core
                .delete_user_xml(&self.caller, ROSTER_NODE, username)
                .await?;
            match self.gw.core.remove_friend(&self.caller, user).await {
                Err(e) if e.code != ErrorCode::NotFound => return Err(e),
                _ => {}
            }
            match self.gw.core.cancel_friend_request(&self.caller, user).await {
                Err(e) if e.code != ErrorCode::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                // A contact with neither details nor friendship left no notice to push from.
                self.roster_push(username, Standing::Stranger).await;
                let el = self.result_for(stanza);
                self.send(&el);
            }
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
            }
        }
    }
}
