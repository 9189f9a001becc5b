//! Profiles and per-user storage over XMPP: vCard-temp (XEP-0054), User Avatar (XEP-0084),
//! personal eventing (PEP, XEP-0163, last-item semantics) and private XML storage (XEP-0049).
//!
//! The Tidings profile is the one source of truth for the name and the avatar: a vCard is built
//! from it and a vCard set changes it, and the avatar nodes are views of the profile's avatar
//! (the image is a file in the file store, as when the web client sets one). Everything else a
//! client stores (other vCard fields, other PEP nodes, private XML) is kept verbatim per user
//! through `Core::put_user_xml`, which enforces the limits; who may read what is the core's
//! decision (`policy::read_user_node`).
//!
//! Notifications (XEP-0163 section 4.3) go to each connection whose client asked for the node
//! with a `+notify` feature (learned through entity capabilities, `caps.rs`): changes to the
//! user's own nodes and to the nodes friends may read of the user's friends, which the core
//! tells every such session (`user_xml`), and avatar changes, which are profile changes
//! (`profile_changed`). When a client first says it wants a node, it gets the node's last
//! item from the user and from each friend (auto-subscription to contacts' PEP).

use super::{Conn, NS_CLIENT, NS_VCARD, condition_for, iq_error};
use crate::xml::{Element, Node};
use futures_util::StreamExt;
use sha2::Digest;
use std::collections::HashMap;
use tidings_core::policy::NodeAccess;
use tidings_core::policy::{Scope, decide_scope};
use tidings_core::userxml::{VCARD_NODE, node_access};
use tidings_core::{CoreError, CoreResult};
use tidings_proto::rest::UpdateProfileRequest;
use tidings_proto::{ErrorCode, UserId};

pub const NS_PRIVATE: &str = "jabber:iq:private";
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
pub const NS_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";

/// The pubsub features the account (the user's bare JID) offers, for disco#info.
pub const PEP_FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
];

/// The item id of single-item storage (the vCard, private XML) and of items published without
/// an id, so a node keeps the last one published.
const CURRENT: &str = "current";
/// vCard fields that come from the profile rather than from what the client stored.
const PROFILE_FIELDS: &[&str] = &["FN", "NICKNAME", "PHOTO", "DESC"];

/// Whether a node name belongs to the gateway's own storage rather than to PEP.
fn reserved(node: &str) -> bool {
    node == VCARD_NODE
        || node == tidings_core::userxml::ROSTER_NODE
        || node == tidings_core::userxml::BLOCKED_ADDRESSES_NODE
        || node.starts_with("private:")
}

/// The lowercase hex SHA-1 of `bytes`: the id of an avatar (XEP-0084, XEP-0153).
fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn b64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Serializes a stored element with its namespace declared.
fn serialize(element: &Element) -> String {
    let mut out = String::new();
    element.write_to(&mut out, "");
    out
}

impl Conn {
    /// A stored element, parsed back under this gateway's limits.
    pub(super) fn stored(&self, xml: &str) -> Option<Element> {
        crate::xml::parse_element(xml.as_bytes(), &HashMap::new(), self.gw.config.limits()).ok()
    }

    pub(super) fn result_for(&self, stanza: &Element) -> Element {
        Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("to", self.full.clone())
            .attr_opt("from", stanza.get_attr("to"))
    }

    fn send_core_error(&mut self, stanza: &Element, e: &CoreError) {
        let (kind, condition) = condition_for(e.code);
        self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
    }

    /// Whom an IQ is about: the user whose bare JID it is addressed to, or the caller.
    async fn owner_of(&mut self, to: Option<&str>) -> Option<UserId> {
        match to.and_then(|t| self.local_user(t)).map(str::to_owned) {
            Some(local) => self.user_id(&local).await,
            None => Some(self.caller.user_id),
        }
    }

    /// The bytes and type of an avatar file, when the file store is there and the caller may
    /// read it (every signed-in user may read a set avatar).
    async fn avatar_bytes(&mut self, file_id: &str) -> Option<(Vec<u8>, String)> {
        let uploads = self.gw.uploads.as_ref()?;
        let download = uploads
            .files
            .download(&self.caller, file_id, |_| None)
            .await
            .ok()?;
        let content_type = download.file.content_type.clone();
        let cap = uploads.files.config().max_file_bytes;
        let mut body = download.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.ok()?);
            if bytes.len() as u64 > cap {
                return None;
            }
        }
        Some((bytes, content_type))
    }

    /// Stores image bytes in the file store as the caller's (the same size limit, quota and
    /// scope as any upload) and makes them the caller's avatar (which checks it is an image).
    async fn set_avatar_bytes(&mut self, bytes: Vec<u8>) -> CoreResult<String> {
        decide_scope(self.caller.scopes, Scope::Files)?;
        let Some(uploads) = self.gw.uploads.as_ref() else {
            return Err(CoreError::new(
                ErrorCode::Unavailable,
                "this server keeps no files",
            ));
        };
        // Clients send the same photo again with every vCard they set: that is no new file
        // (it would count against the quota each time). The file record's hash tells, without
        // reading the stored bytes back.
        let current = self
            .gw
            .core
            .profile(&self.caller, self.caller.user_id)
            .await?;
        if !current.avatar.is_empty()
            && let Ok(existing) = uploads.files.file_for(&self.caller, &current.avatar).await
            && existing.sha256 == <[u8; 32]>::from(sha2::Sha256::digest(&bytes))
        {
            return Ok(current.avatar);
        }
        let length = bytes.len() as u64;
        let metadata = format!("filename {}", b64_encode(b"avatar"));
        let body: tidings_files::ByteStream = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes))
        })
        .boxed();
        let upload = uploads
            .files
            .create(
                &self.caller,
                tidings_files::NewUpload {
                    length: Some(length),
                    metadata: Some(metadata),
                    concat: None,
                },
                Some((Some(length), None, body)),
            )
            .await?;
        let file_id = upload
            .file_id
            .ok_or_else(|| CoreError::invalid("the avatar was not stored whole"))?;
        self.set_avatar(&file_id).await?;
        Ok(file_id)
    }

    async fn set_avatar(&mut self, file_id: &str) -> CoreResult<()> {
        let request = UpdateProfileRequest {
            display_name: None,
            status_text: None,
            avatar: Some(file_id.to_owned()),
        };
        self.gw
            .core
            .update_profile(&self.caller, request)
            .await
            .map(|_| ())
    }

    /// `get` on a vCard: the user's own (to the bare JID or the server) or another user's
    /// (addressed to theirs), built from their profile plus, for whoever may read them, the
    /// fields the user stored.
    pub(super) async fn vcard_get(&mut self, stanza: &Element, to: Option<&str>) {
        let Some(owner) = self.owner_of(to).await else {
            self.send(&iq_error(stanza, "cancel", "item-not-found", None));
            return;
        };
        let profile = match self.gw.core.profile(&self.caller, owner).await {
            Ok(profile) => profile,
            Err(e) => return self.send_core_error(stanza, &e),
        };
        let mut vcard = Element::new("vCard", NS_VCARD)
            .child(Element::new("NICKNAME", NS_VCARD).text(profile.username.clone()));
        let name = if profile.display_name.is_empty() {
            profile.username.clone()
        } else {
            profile.display_name.clone()
        };
        vcard = vcard.child(Element::new("FN", NS_VCARD).text(name));
        if !profile.status_text.is_empty() {
            vcard = vcard.child(Element::new("DESC", NS_VCARD).text(profile.status_text.clone()));
        }
        if !profile.avatar.is_empty()
            && let Some((bytes, content_type)) = self.avatar_bytes(&profile.avatar).await
        {
            vcard = vcard.child(
                Element::new("PHOTO", NS_VCARD)
                    .child(Element::new("TYPE", NS_VCARD).text(content_type))
                    .child(Element::new("BINVAL", NS_VCARD).text(b64_encode(&bytes))),
            );
        }
        // The fields the owner stored (readable as the profile is).
        if let Ok(items) = self.gw.core.user_xml(&self.caller, owner, VCARD_NODE).await
            && let Some(stored) = items.first().and_then(|i| self.stored(&i.xml))
        {
            for child in stored.elements() {
                if !PROFILE_FIELDS.contains(&child.name.as_str()) {
                    vcard = vcard.child(child.clone());
                }
            }
        }
        let el = self.result_for(stanza).child(vcard);
        self.send(&el);
    }

    /// `set` on the caller's own vCard: FN (or, without one, NICKNAME) becomes the display
    /// name, a PHOTO the avatar (an empty PHOTO clears it; without PHOTO the avatar stays), and
    /// the other fields are kept as they came.
    pub(super) async fn vcard_set(&mut self, stanza: &Element, payload: &Element, own: bool) {
        if !own {
            self.send(&iq_error(stanza, "auth", "forbidden", None));
            return;
        }
        let text_of = |name: &str| payload.find(name, NS_VCARD).map(Element::text_content);
        let display_name = text_of("FN").or_else(|| text_of("NICKNAME"));
        let photo = match payload.find("PHOTO", NS_VCARD) {
            None => None,
            Some(photo) => match photo.find("BINVAL", NS_VCARD) {
                None => Some(None),
                Some(binval) => match b64_decode(&binval.text_content()) {
                    Some(bytes) if bytes.is_empty() => Some(None),
                    Some(bytes) => Some(Some(bytes)),
                    None => {
                        self.send(&iq_error(
                            stanza,
                            "modify",
                            "bad-request",
                            Some("BINVAL is not base64"),
                        ));
                        return;
                    }
                },
            },
        };
        // The rest first: it is the part a limit may refuse, and nothing has changed yet.
        let mut rest = Element::new("vCard", NS_VCARD);
        rest.attrs = payload.attrs.clone();
        rest.children = payload
            .children
            .iter()
            .filter(|n| match n {
                Node::Element(e) => !PROFILE_FIELDS.contains(&e.name.as_str()),
                Node::Text(_) => false,
            })
            .cloned()
            .collect();
        if let Err(e) = self
            .gw
            .core
            .put_user_xml(&self.caller, VCARD_NODE, CURRENT, serialize(&rest))
            .await
        {
            return self.send_core_error(stanza, &e);
        }
        let avatar = match photo {
            Some(Some(bytes)) => match self.set_avatar_bytes(bytes).await {
                Ok(_) => None,
                Err(e) => return self.send_core_error(stanza, &e),
            },
            Some(None) => Some(String::new()),
            None => None,
        };
        if display_name.is_some() || avatar.is_some() {
            let request = UpdateProfileRequest {
                display_name,
                status_text: None,
                avatar,
            };
            if let Err(e) = self.gw.core.update_profile(&self.caller, request).await {
                return self.send_core_error(stanza, &e);
            }
        }
        let el = self.result_for(stanza);
        self.send(&el);
    }

    /// Private XML storage (XEP-0049): one element per namespace, the caller's own.
    pub(super) async fn on_private(&mut self, stanza: &Element, payload: &Element, kind: &str) {
        let Some(child) = payload.elements().next().cloned() else {
            self.send(&iq_error(stanza, "modify", "bad-request", None));
            return;
        };
        if child.ns.starts_with("jabber:") || child.ns.is_empty() {
            // XEP-0049 §3: the jabber: namespaces are the protocol's own.
            self.send(&iq_error(stanza, "modify", "not-acceptable", None));
            return;
        }
        let node = format!("private:{}", child.ns);
        if kind == "set" {
            match self
                .gw
                .core
                .put_user_xml(&self.caller, &node, CURRENT, serialize(&child))
                .await
            {
                Ok(()) => {
                    let el = self.result_for(stanza);
                    self.send(&el);
                }
                Err(e) => self.send_core_error(stanza, &e),
            }
            return;
        }
        let own = self.caller.user_id;
        match self.gw.core.user_xml(&self.caller, own, &node).await {
            Ok(items) => {
                let stored = items
                    .first()
                    .and_then(|i| self.stored(&i.xml))
                    .unwrap_or(child);
                let el = self
                    .result_for(stanza)
                    .child(Element::new("query", NS_PRIVATE).child(stored));
                self.send(&el);
            }
            Err(e) => self.send_core_error(stanza, &e),
        }
    }

    /// Personal eventing on a user's own nodes: publish and retract (the caller's), and
    /// retrieve (anyone's, as the core allows).
    pub(super) async fn on_pep(
        &mut self,
        stanza: &Element,
        payload: &Element,
        kind: &str,
        to: Option<&str>,
        own: bool,
    ) {
        let Some(action) = payload.elements().next().cloned() else {
            self.send(&iq_error(stanza, "modify", "bad-request", None));
            return;
        };
        let Some(node) = action.get_attr("node").map(str::to_owned) else {
            self.send(&iq_error(stanza, "modify", "bad-request", Some("no node")));
            return;
        };
        if reserved(&node) {
            // The gateway's own storage (vCard fields, private XML, roster details) is reached
            // through its own protocols, never as PEP nodes.
            self.send(&iq_error(
                stanza,
                "cancel",
                "not-allowed",
                Some("that node name is reserved"),
            ));
            return;
        }
        match (kind, action.name.as_str()) {
            ("set", "publish" | "retract") if !own => {
                self.send(&iq_error(stanza, "auth", "forbidden", None));
            }
            ("set", "publish") => self.pep_publish(stanza, &node, &action).await,
            ("set", "retract") => {
                for item in action.elements().filter(|e| e.name == "item") {
                    if let Some(id) = item.get_attr("id")
                        && let Err(e) = self.gw.core.delete_user_xml(&self.caller, &node, id).await
                    {
                        return self.send_core_error(stanza, &e);
                    }
                }
                let el = self.result_for(stanza);
                self.send(&el);
            }
            ("get", "items") => {
                let Some(owner) = self.owner_of(to).await else {
                    self.send(&iq_error(stanza, "cancel", "item-not-found", None));
                    return;
                };
                self.pep_items(stanza, owner, &node, &action).await;
            }
            _ => self.send(&iq_error(stanza, "cancel", "feature-not-implemented", None)),
        }
    }

    async fn pep_publish(&mut self, stanza: &Element, node: &str, action: &Element) {
        let item = action.elements().find(|e| e.name == "item");
        let entry = item.and_then(|i| i.elements().next());
        let mut item_id = item
            .and_then(|i| i.get_attr("id"))
            .unwrap_or(CURRENT)
            .to_owned();
        let done = match (node, entry) {
            (_, None) => Err(CoreError::invalid(
                "a publish carries one item with a payload",
            )),
            (NS_AVATAR_DATA, Some(data)) => match b64_decode(&data.text_content()) {
                // Empty data is how some clients take their avatar down.
                Some(bytes) if bytes.is_empty() => self.set_avatar("").await,
                Some(bytes) => {
                    item_id = sha1_hex(&bytes);
                    self.set_avatar_bytes(bytes).await.map(|_| ())
                }
                None => Err(CoreError::invalid("the avatar data is not base64")),
            },
            (NS_AVATAR_METADATA, Some(metadata)) => {
                // The data node already set the avatar; metadata without an info element
                // turns it off (XEP-0084 §4.2).
                if metadata.elements().any(|e| e.name == "info") {
                    Ok(())
                } else {
                    self.set_avatar("").await
                }
            }
            (_, Some(entry)) => {
                let xml = serialize(entry);
                self.gw
                    .core
                    .put_user_xml(&self.caller, node, &item_id, xml)
                    .await
            }
        };
        match done {
            Ok(()) => {
                let el = self.result_for(stanza).child(
                    Element::new("pubsub", NS_PUBSUB).child(
                        Element::new("publish", NS_PUBSUB)
                            .attr("node", node)
                            .child(Element::new("item", NS_PUBSUB).attr("id", item_id)),
                    ),
                );
                self.send(&el);
            }
            Err(e) => self.send_core_error(stanza, &e),
        }
    }

    /// The SHA-1 of `user`'s avatar as XEP-0153 puts it in presence: empty for none, `None`
    /// when it cannot be read now. The avatar's file id is kept per connection until the
    /// user's profile changes, the hash per file id by the gateway.
    async fn photo_hash(&mut self, user: UserId) -> Option<String> {
        let file_id = match self.avatars.get(&user) {
            Some(file_id) => file_id.clone(),
            None => {
                let file_id = self.gw.core.profile(&self.caller, user).await.ok()?.avatar;
                self.avatars.insert(user, file_id.clone());
                file_id
            }
        };
        if file_id.is_empty() {
            return Some(String::new());
        }
        if let Some(hash) = self.gw.avatar_hash(&file_id) {
            return Some(hash);
        }
        let (bytes, _) = self.avatar_bytes(&file_id).await?;
        let hash = sha1_hex(&bytes);
        self.gw.remember_avatar_hash(&file_id, hash.clone());
        Some(hash)
    }

    /// `presence` (a friend's, or an occupant's) with the photo hash of `user` (XEP-0153):
    /// empty when there is no avatar, and no `<photo/>` at all when it cannot be read now (the
    /// client then keeps what it has).
    pub(super) async fn with_photo_hash(&mut self, presence: Element, user: UserId) -> Element {
        let mut update = Element::new("x", NS_VCARD_UPDATE);
        if let Some(hash) = self.photo_hash(user).await {
            update = update.child(Element::new("photo", NS_VCARD_UPDATE).text(hash));
        }
        presence.child(update)
    }

    /// The item of an avatar node (`NS_AVATAR_DATA` or `NS_AVATAR_METADATA`) of `owner`, a view
    /// of their profile's avatar: its data or its metadata under the image's hash, or, without
    /// an avatar, empty metadata (XEP-0084 4.2: the avatar is off) and no data.
    async fn avatar_items(
        &mut self,
        owner: UserId,
        node: &str,
    ) -> CoreResult<Vec<(String, Element)>> {
        let profile = self.gw.core.profile(&self.caller, owner).await?;
        let avatar = if profile.avatar.is_empty() {
            None
        } else {
            self.avatar_bytes(&profile.avatar).await
        };
        Ok(match (node, avatar) {
            (NS_AVATAR_DATA, Some((bytes, _))) => vec![(
                sha1_hex(&bytes),
                Element::new("data", NS_AVATAR_DATA).text(b64_encode(&bytes)),
            )],
            (_, Some((bytes, content_type))) => vec![(
                sha1_hex(&bytes),
                Element::new("metadata", NS_AVATAR_METADATA).child(
                    Element::new("info", NS_AVATAR_METADATA)
                        .attr("bytes", bytes.len().to_string())
                        .attr("id", sha1_hex(&bytes))
                        .attr("type", content_type),
                ),
            )],
            (NS_AVATAR_METADATA, None) => vec![(
                CURRENT.to_owned(),
                Element::new("metadata", NS_AVATAR_METADATA),
            )],
            _ => Vec::new(),
        })
    }

    async fn pep_items(&mut self, stanza: &Element, owner: UserId, node: &str, action: &Element) {
        // The core decides access for every node, the avatar's too.
        let stored = match self.gw.core.user_xml(&self.caller, owner, node).await {
            Ok(items) => items,
            Err(e) => return self.send_core_error(stanza, &e),
        };
        let mut items: Vec<(String, Element)> = Vec::new();
        if node == NS_AVATAR_DATA || node == NS_AVATAR_METADATA {
            match self.avatar_items(owner, node).await {
                Ok(avatar) => items = avatar,
                Err(e) => return self.send_core_error(stanza, &e),
            }
        } else {
            for record in stored {
                if let Some(element) = self.stored(&record.xml) {
                    items.push((record.item_id, element));
                }
            }
        }
        let wanted: Vec<&str> = action
            .elements()
            .filter(|e| e.name == "item")
            .filter_map(|e| e.get_attr("id"))
            .collect();
        if !wanted.is_empty() {
            items.retain(|(id, _)| wanted.contains(&id.as_str()));
        }
        if let Some(max) = action
            .get_attr("max_items")
            .and_then(|m| m.parse::<usize>().ok())
        {
            items.truncate(max);
        }
        if items.is_empty() && wanted.is_empty() {
            self.send(&iq_error(stanza, "cancel", "item-not-found", None));
            return;
        }
        let mut list = Element::new("items", NS_PUBSUB).attr("node", node);
        for (id, element) in items {
            list = list.child(
                Element::new("item", NS_PUBSUB)
                    .attr("id", id)
                    .child(element),
            );
        }
        let el = self
            .result_for(stanza)
            .child(Element::new("pubsub", NS_PUBSUB).child(list));
        self.send(&el);
    }

    /// Sends this client a notification of `owner`'s `node` (XEP-0163 4.3): `items` are the
    /// `<item/>`s or `<retract/>`s of the event.
    fn send_event(&mut self, owner_name: &str, node: &str, items: Vec<Element>) {
        let mut list = Element::new("items", NS_PUBSUB_EVENT).attr("node", node);
        for item in items {
            list = list.child(item);
        }
        let el = Element::new("message", NS_CLIENT)
            .attr("type", "headline")
            .attr("id", format!("event-{}", super::random_id()))
            .attr("from", format!("{owner_name}@{}", self.domain()))
            .attr("to", self.full.clone())
            .child(Element::new("event", NS_PUBSUB_EVENT).child(list));
        self.send(&el);
    }

    /// An item of `owner`'s `node` changed: the client gets it (or its retraction) if it asked
    /// for the node's notifications. The core read decides again whether it may see the item.
    pub(super) async fn notify_item(
        &mut self,
        owner: UserId,
        node: &str,
        item_id: &str,
        deleted: bool,
    ) {
        if reserved(node) || !self.caps.wants(node) {
            return;
        }
        let Some(owner_name) = self.username(owner).await else {
            return;
        };
        let item = if deleted {
            Element::new("retract", NS_PUBSUB_EVENT).attr("id", item_id)
        } else {
            let Ok(stored) = self.gw.core.user_xml(&self.caller, owner, node).await else {
                return;
            };
            let Some(payload) = stored
                .iter()
                .find(|r| r.item_id == item_id)
                .and_then(|r| self.stored(&r.xml))
            else {
                return;
            };
            Element::new("item", NS_PUBSUB_EVENT)
                .attr("id", item_id)
                .child(payload)
        };
        self.send_event(&owner_name, node, vec![item]);
    }

    /// `owner`'s profile changed: a client that asked for avatar metadata gets the current one
    /// (empty metadata when the avatar was taken down).
    pub(super) async fn notify_avatar(&mut self, owner: UserId) {
        if !self.caps.wants(NS_AVATAR_METADATA) {
            return;
        }
        let Some(owner_name) = self.username(owner).await else {
            return;
        };
        let Ok(items) = self.avatar_items(owner, NS_AVATAR_METADATA).await else {
            return;
        };
        let items = items
            .into_iter()
            .map(|(id, payload)| {
                Element::new("item", NS_PUBSUB_EVENT)
                    .attr("id", id)
                    .child(payload)
            })
            .collect();
        self.send_event(&owner_name, NS_AVATAR_METADATA, items);
    }

    /// The last item of each of `nodes`, the user's own and, for the nodes friends may read,
    /// each friend's: what a client gets when it first says it wants them (XEP-0163 4.3.6 and
    /// 6.1.2). Nodes without items, and avatars that are off, send nothing.
    pub(super) async fn send_last_items(&mut self, nodes: &[String]) {
        let nodes: Vec<&String> = nodes.iter().filter(|n| !reserved(n)).collect();
        if nodes.is_empty() {
            return;
        }
        let me = self.caller.user_id;
        let mut owners = vec![(me, self.username(me).await.unwrap_or_default())];
        if nodes.iter().any(|n| node_access(n) == NodeAccess::Friends)
            && let Ok(list) = self.gw.core.friends(&self.caller).await
        {
            for friend in list.friends {
                self.learn_name(friend.user_id, &friend.username);
                owners.push((friend.user_id, friend.username));
            }
        }
        for node in nodes {
            for (owner, name) in &owners {
                if *owner != me && node_access(node) != NodeAccess::Friends {
                    continue;
                }
                let last = if node == NS_AVATAR_DATA || node == NS_AVATAR_METADATA {
                    self.avatar_items(*owner, node)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .find(|(id, _)| id != CURRENT)
                } else {
                    let stored = self
                        .gw
                        .core
                        .user_xml(&self.caller, *owner, node)
                        .await
                        .unwrap_or_default();
                    // Newest first.
                    stored
                        .into_iter()
                        .find_map(|r| Some((r.item_id.clone(), self.stored(&r.xml)?)))
                };
                if let Some((id, payload)) = last {
                    let item = Element::new("item", NS_PUBSUB_EVENT)
                        .attr("id", id)
                        .child(payload);
                    self.send_event(name, node, vec![item]);
                }
            }
        }
    }
}
