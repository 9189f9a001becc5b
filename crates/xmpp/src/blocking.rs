//! The blocking command (XEP-0191): the Tidings block list, plus the other addresses a client
//! blocks.
//!
//! A JID of a user of this server is a Tidings block (`Core::block`, so the web sees it and the
//! core enforces it). A block list holds any JID, though, and clients block addresses on other
//! servers too; those are kept per user in the `blocked-addresses` node (`Core::put_user_xml`,
//! within the stored-item limits) so the list reads back whole. Nothing from such an address
//! can arrive, since the gateway speaks to no other server. A JID on one of this server's own
//! domains that names no user is `item-not-found`. Every change, from any of the user's devices,
//! is pushed to the resources that asked for the list (XEP-0191 3.3 and 3.4): the core tells
//! the user's sessions of their blocks (`blocked`) and stored items (`user_xml`).

use super::{Conn, NS_BLOCKING, NS_CLIENT, condition_for, iq_error, random_id};
use crate::xml::Element;
use tidings_core::CoreResult;
use tidings_core::userxml::BLOCKED_ADDRESSES_NODE;
use tidings_proto::UserId;

/// Longest JID, in bytes (RFC 7622: three parts of at most 1023 bytes each; stored item ids
/// are at most 255).
const MAX_JID_BYTES: usize = 255;

/// What one JID of a block or unblock names.
enum Target {
    /// A user of this server.
    User(UserId),
    /// An address elsewhere, normalized (the bare part lowercased).
    Address(String),
}

/// A JID as written in a block list item, checked for shape only (RFC 7622 without the
/// stringprep profiles): its normalized form, or `None` when it is malformed.
fn normalized_jid(jid: &str) -> Option<String> {
    if jid.is_empty()
        || jid.len() > MAX_JID_BYTES
        || jid.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (bare, resource) = match jid.split_once('/') {
        Some((bare, resource)) if !resource.is_empty() => (bare, Some(resource)),
        Some(_) => return None,
        None => (jid, None),
    };
    let domain = match bare.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.contains('@') => domain,
        Some(_) => return None,
        None => bare,
    };
    if domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return None;
    }
    let bare = bare.to_lowercase();
    Some(match resource {
        Some(resource) => format!("{bare}/{resource}"),
        None => bare,
    })
}

impl Conn {
    /// `get` on the block list: every blocked JID, users of this server first. The resource
    /// gets pushes of later changes from now on.
    pub(super) async fn on_blocklist(&mut self, stanza: &Element) {
        self.blocklist_requested = true;
        match self.blocked_jids().await {
            Ok(jids) => {
                let list = jids
                    .into_iter()
                    .fold(Element::new("blocklist", NS_BLOCKING), |l, jid| {
                        l.child(Element::new("item", NS_BLOCKING).attr("jid", jid))
                    });
                let el = self.result_for(stanza).child(list);
                self.send(&el);
            }
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
            }
        }
    }

    async fn blocked_jids(&mut self) -> CoreResult<Vec<String>> {
        let domain = self.domain().to_owned();
        let mut jids: Vec<String> = self
            .gw
            .core
            .blocks(&self.caller)
            .await?
            .users
            .into_iter()
            .map(|u| format!("{}@{domain}", u.username))
            .collect();
        jids.extend(self.blocked_addresses().await?);
        Ok(jids)
    }

    async fn blocked_addresses(&mut self) -> CoreResult<Vec<String>> {
        let me = self.caller.user_id;
        Ok(self
            .gw
            .core
            .user_xml(&self.caller, me, BLOCKED_ADDRESSES_NODE)
            .await?
            .into_iter()
            .map(|r| r.item_id)
            .collect())
    }

    /// `set` of `<block/>` or `<unblock/>`: every item is checked before anything changes; an
    /// `unblock` without items unblocks everything (XEP-0191 3.4).
    pub(super) async fn on_block(&mut self, stanza: &Element, payload: &Element) {
        let block = payload.name == "block";
        let mut targets = Vec::new();
        for item in payload.elements().filter(|e| e.is("item", NS_BLOCKING)) {
            match self
                .block_target(item.get_attr("jid").unwrap_or_default())
                .await
            {
                Ok(target) => targets.push(target),
                Err(condition) => {
                    self.send(&iq_error(stanza, "modify", condition, None));
                    return;
                }
            }
        }
        if targets.is_empty() && block {
            self.send(&iq_error(
                stanza,
                "modify",
                "bad-request",
                Some("nothing to block"),
            ));
            return;
        }
        let done = async {
            if targets.is_empty() {
                let users = self.gw.core.blocks(&self.caller).await?.users;
                targets.extend(users.into_iter().map(|u| Target::User(u.user_id)));
                targets.extend(
                    self.blocked_addresses()
                        .await?
                        .into_iter()
                        .map(Target::Address),
                );
            }
            for target in targets {
                match (target, block) {
                    (Target::User(user), true) => self.gw.core.block(&self.caller, user).await?,
                    (Target::User(user), false) => {
                        self.gw.core.unblock(&self.caller, user).await?;
                    }
                    (Target::Address(jid), true) => {
                        let mut xml = String::new();
                        Element::new("item", NS_BLOCKING)
                            .attr("jid", jid.clone())
                            .write_to(&mut xml, "");
                        self.gw
                            .core
                            .put_user_xml(&self.caller, BLOCKED_ADDRESSES_NODE, &jid, xml)
                            .await?;
                    }
                    (Target::Address(jid), false) => {
                        self.gw
                            .core
                            .delete_user_xml(&self.caller, BLOCKED_ADDRESSES_NODE, &jid)
                            .await?;
                    }
                }
            }
            Ok::<_, tidings_core::CoreError>(())
        }
        .await;
        match done {
            Ok(()) => {
                let el = self.result_for(stanza);
                self.send(&el);
            }
            Err(e) => {
                let (kind, condition) = match e.code {
                    tidings_proto::ErrorCode::QuotaExceeded => ("wait", "resource-constraint"),
                    code => condition_for(code),
                };
                self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
            }
        }
    }

    /// What `jid` names, or the stanza error condition that refuses it.
    async fn block_target(&mut self, jid: &str) -> Result<Target, &'static str> {
        let jid = normalized_jid(jid.trim()).ok_or("jid-malformed")?;
        if let Some(local) = self.local_user(&jid).map(str::to_owned) {
            return self
                .user_id(&local)
                .await
                .map(Target::User)
                .ok_or("item-not-found");
        }
        let bare = jid.split('/').next().unwrap_or(&jid);
        let domain = bare.rsplit('@').next().unwrap_or(bare);
        if domain.eq_ignore_ascii_case(self.domain())
            || self.is_muc(domain)
            || self.is_upload_service(domain)
        {
            // This server's own domains hold users, rooms and services, not strangers.
            return Err("item-not-found");
        }
        Ok(Target::Address(jid))
    }

    /// A change to the block list, from any of the user's devices, pushed to this resource if
    /// it asked for the list.
    pub(super) fn push_block(&mut self, jid: String, blocked: bool) {
        if !self.blocklist_requested {
            return;
        }
        let change = if blocked { "block" } else { "unblock" };
        let el = Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .attr("id", format!("push-{}", random_id()))
            .attr("to", self.full.clone())
            .child(
                Element::new(change, NS_BLOCKING)
                    .child(Element::new("item", NS_BLOCKING).attr("jid", jid)),
            );
        self.send(&el);
    }
}

#[cfg(test)]
mod tests {
    use super::normalized_jid;

    #[test]
    fn block_list_jids_are_checked_for_shape() {
        assert_eq!(
            normalized_jid("Toto@Example.com").as_deref(),
            Some("toto@example.com")
        );
        assert_eq!(
            normalized_jid("toto@example.com/Phone").as_deref(),
            Some("toto@example.com/Phone")
        );
        assert_eq!(
            normalized_jid("example.com").as_deref(),
            Some("example.com")
        );
        for bad in [
            "",
            "@example.com",
            "a@b@example.com",
            "toto@",
            "toto@example.com/",
            "to to@example.com",
            "toto@.example.com",
            &format!("{}@example.com", "a".repeat(250)),
        ] {
            assert_eq!(normalized_jid(bad), None, "{bad}");
        }
    }
}
