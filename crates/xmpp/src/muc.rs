//! Multi-User Chat (XEP-0045): Tidings groups as rooms on the MUC domain.
//!
//! A group is the room `<conversation id>@<muc_domain>`. Membership is the core's: only
//! members can discover, join, read or post, and every read and send goes through the same
//! core calls (and so the same `policy.rs` decisions) as the web protocol. The room is
//! members-only, persistent and non-anonymous; its occupants are the group's members (a
//! Tidings group has no separate "in the room" state), each under their username as nick,
//! with affiliations and roles from the Tidings roles: owner → owner/moderator,
//! admin → admin/moderator, member → member/participant, a muted member → visitor.
//!
//! Joining answers with the occupants, the self-presence (status 110), history from the
//! core's archive (`maxstanzas`, `seconds`, `since`) and the subject (the group title).
//! Group messages the session delivers reach this connection only for rooms it joined, as
//! `groupchat` messages from `room/sender` with a `stanza-id` by the room; the sender's own
//! message is reflected with the id it was sent with. MAM queries to the room JID page through
//! the group's history (`mam.rs`). Moderation, configuration and the presence that follows
//! from the group's events are in `muc_admin.rs`.

use super::mam::{NS_DELAY, stamp};
use super::{Conn, NS_CLIENT, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_SID, Pending, condition_for};
use crate::xml::Element;
use tidings_proto::rest::{ConversationKind, Member, Role};
use tidings_proto::ws::ClientFrame;
use tidings_proto::{ConversationId, MessageBody};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// History sent on join when the client does not limit it.
const DEFAULT_HISTORY: u32 = 20;

/// The affiliation and role of a member (XEP-0045 5.1, 5.2).
pub(super) fn affiliation_role(member: &Member) -> (&'static str, &'static str) {
    match member.role {
        Role::Owner => ("owner", "moderator"),
        Role::Admin => ("admin", "moderator"),
        Role::Member if member.muted_until.is_some() => ("member", "visitor"),
        Role::Member => ("member", "participant"),
    }
}

impl Conn {
    fn muc_domain(&self) -> &str {
        &self.gw.config.muc_domain
    }

    /// Sends this connection the unavailable presence of the occupant `room_jid/nick`, with
    /// `x` (the muc#user item and status codes).
    pub(super) fn send_unavailable(&mut self, room_jid: &str, nick: &str, x: Element) {
        let el = Element::new("presence", NS_CLIENT)
            .attr("type", "unavailable")
            .attr("from", format!("{room_jid}/{nick}"))
            .attr("to", self.full.clone())
            .child(x);
        self.send(&el);
    }

    /// Whether a JID is on the MUC domain (the service itself, a room or an occupant).
    pub(super) fn is_muc(&self, jid: &str) -> bool {
        let bare = jid.split('/').next().unwrap_or(jid);
        let domain = bare.rsplit('@').next().unwrap_or(bare);
        domain.eq_ignore_ascii_case(self.muc_domain())
    }

    /// The group a room JID names, if it is one of the MUC domain's.
    fn room_of(&self, jid: &str) -> Option<ConversationId> {
        let bare = jid.split('/').next().unwrap_or(jid);
        let (local, domain) = bare.split_once('@')?;
        if !domain.eq_ignore_ascii_case(self.muc_domain()) {
            return None;
        }
        local.parse().ok().map(ConversationId)
    }

    pub(super) fn room_jid(&self, room: ConversationId) -> String {
        format!("{room}@{}", self.muc_domain())
    }

    /// The group's title if the caller is a member of this group (the core decides).
    async fn group_title(&mut self, room: ConversationId) -> Option<String> {
        let info = self.gw.core.conversation(&self.caller, room).await.ok()?;
        (info.kind == ConversationKind::Group).then_some(info.title)
    }

    /// Presence and messages to the MUC domain.
    pub(super) async fn on_muc_presence(&mut self, stanza: &Element, to: &str) {
        let Some(room) = self.room_of(to) else {
            self.muc_presence_error(stanza, "cancel", "item-not-found");
            return;
        };
        let nick = to.split_once('/').map(|(_, n)| n.to_owned());
        let kind = stanza.get_attr("type");
        if kind == Some("unavailable") {
            if let Some(nick) = self.rooms.remove(&room) {
                let room_jid = self.room_jid(room);
                let item = Element::new("item", NS_MUC_USER).attr("role", "none");
                let item = match self.my_affiliation(room).await {
                    Some(affiliation) => item.attr("affiliation", affiliation),
                    None => item.attr("affiliation", "none"),
                };
                self.send_unavailable(
                    &room_jid,
                    &nick,
                    Element::new("x", NS_MUC_USER)
                        .child(item)
                        .child(Element::new("status", NS_MUC_USER).attr("code", "110")),
                );
            }
            return;
        }
        if kind.is_some() {
            // Subscriptions and probes mean nothing to a room.
            return;
        }
        let Some(nick) = nick.filter(|n| !n.is_empty()) else {
            self.muc_presence_error(stanza, "modify", "jid-malformed");
            return;
        };
        if self.rooms.contains_key(&room) && stanza.find("x", NS_MUC).is_none() {
            // A presence update or nick change while joined: the nick stays the username, and
            // occupants' presence is not broadcast. A join sent again (with the MUC element,
            // as clients do after reconnecting) is answered in full below.
            return;
        }
        let Some(title) = self.group_title(room).await else {
            self.muc_presence_error(stanza, "auth", "registration-required");
            return;
        };
        let members = match self.gw.core.members(&self.caller, room).await {
            Ok(members) => members,
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.muc_presence_error(stanza, kind, condition);
                return;
            }
        };
        let room_jid = self.room_jid(room);
        let me = self.caller.user_id;
        let my_nick = self.username(me).await.unwrap_or(nick.clone());
        // Occupants first, then the self-presence (XEP-0045 7.2.3).
        let mut own = None;
        for member in &members {
            self.names.insert(member.user_id, member.username.clone());
            self.users.insert(member.username.clone(), member.user_id);
            let (affiliation, role) = affiliation_role(member);
            let item = Element::new("item", NS_MUC_USER)
                .attr("affiliation", affiliation)
                .attr("role", role)
                .attr("jid", format!("{}@{}", member.username, self.domain()));
            if member.user_id == me {
                own = Some(item);
                continue;
            }
            let el = Element::new("presence", NS_CLIENT)
                .attr("from", format!("{room_jid}/{}", member.username))
                .attr("to", self.full.clone())
                .child(Element::new("x", NS_MUC_USER).child(item));
            self.send(&el);
        }
        let Some(own) = own else {
            self.muc_presence_error(stanza, "auth", "registration-required");
            return;
        };
        // 100: real JIDs are visible; 110: this is you; 210: the service set the nick.
        let mut x = Element::new("x", NS_MUC_USER)
            .child(own.attr("jid", self.full.clone()))
            .child(Element::new("status", NS_MUC_USER).attr("code", "100"))
            .child(Element::new("status", NS_MUC_USER).attr("code", "110"));
        if my_nick != nick {
            x = x.child(Element::new("status", NS_MUC_USER).attr("code", "210"));
        }
        let el = Element::new("presence", NS_CLIENT)
            .attr("from", format!("{room_jid}/{my_nick}"))
            .attr("to", self.full.clone())
            .child(x);
        self.send(&el);
        self.rooms.insert(room, my_nick);
        self.room_history(room, stanza.find("x", NS_MUC)).await;
        let subject = Element::new("message", NS_CLIENT)
            .attr("type", "groupchat")
            .attr("from", room_jid)
            .attr("to", self.full.clone())
            .attr("id", super::random_id())
            .child(Element::new("subject", NS_CLIENT).text(title));
        self.send(&subject);
    }

    async fn my_affiliation(&mut self, room: ConversationId) -> Option<&'static str> {
        let members = self.gw.core.members(&self.caller, room).await.ok()?;
        members
            .iter()
            .find(|m| m.user_id == self.caller.user_id)
            .map(|m| affiliation_role(m).0)
    }

    fn muc_presence_error(&mut self, stanza: &Element, kind: &str, condition: &str) {
        let el = Element::new("presence", NS_CLIENT)
            .attr("type", "error")
            .attr_opt("from", stanza.get_attr("to"))
            .attr("to", self.full.clone())
            .attr_opt("id", stanza.get_attr("id"))
            .child(Element::new("x", NS_MUC))
            .child(
                Element::new("error", NS_CLIENT)
                    .attr("type", kind)
                    .child(Element::new(condition, super::NS_STANZAS)),
            );
        self.send(&el);
    }

    /// The discussion history sent on join, from the core's archive, oldest first.
    async fn room_history(&mut self, room: ConversationId, muc: Option<&Element>) {
        let history = muc.and_then(|x| x.find("history", NS_MUC));
        let attr = |name: &str| history.and_then(|h| h.get_attr(name));
        let max = attr("maxstanzas")
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(DEFAULT_HISTORY);
        // `maxchars='0'` asks for no history at all.
        if max == 0 || attr("maxchars") == Some("0") {
            return;
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let since = attr("seconds")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|s| now - s * 1000)
            .or_else(|| {
                attr("since")
                    .and_then(|s| s.trim().parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond())
            });
        let limit = max.min(self.gw.core.config().limits.max_history_page);
        let Ok(page) = self
            .gw
            .core
            .history(&self.caller, room, None, Some(limit))
            .await
        else {
            return;
        };
        for message in page.messages {
            if since.is_some_and(|since| message.ts < since) {
                continue;
            }
            if let Some(mut el) = self.groupchat(&message).await {
                el = el.child(
                    Element::new("delay", NS_DELAY)
                        .attr("from", self.room_jid(room))
                        .attr("stamp", stamp(message.ts)),
                );
                self.send(&el);
            }
        }
    }

    /// A group message as a `groupchat` stanza from the sender's occupant JID.
    pub(super) async fn groupchat(&mut self, message: &tidings_proto::Message) -> Option<Element> {
        let payload = self.payload(message, true).await?;
        let sender = self.username(message.sender_id).await?;
        let room_jid = self.room_jid(message.conversation_id);
        let mut el = Element::new("message", NS_CLIENT)
            .attr("type", "groupchat")
            .attr("id", message.client_msg_id.clone())
            .attr("from", format!("{room_jid}/{sender}"))
            .attr("to", self.full.clone());
        for child in payload {
            el = el.child(child);
        }
        Some(
            el.child(Element::new("origin-id", NS_SID).attr("id", message.client_msg_id.clone()))
                .child(
                    Element::new("stanza-id", NS_SID)
                        .attr("by", room_jid)
                        .attr("id", message.id.to_string()),
                ),
        )
    }

    /// A group message from the session: to the client if it joined the room. Messages from
    /// the user's other devices come this way too; this connection's own come back through
    /// [`Conn::reflect`].
    pub(super) async fn deliver_group(&mut self, message: tidings_proto::Message) {
        if !self.rooms.contains_key(&message.conversation_id) {
            return;
        }
        if let MessageBody::System { event } = &message.body {
            self.room_event(message.conversation_id, message.sender_id, event)
                .await;
            return;
        }
        self.remember(
            message.conversation_id,
            message.seq,
            message.client_msg_id.clone(),
        );
        if let Some(el) = self.groupchat(&message).await {
            self.send(&el);
        }
    }

    /// The reflection of this connection's own group message once the core committed it
    /// (XEP-0045 7.4): the session does not echo a device's own sends, so it is built from the
    /// stanza and the core's `ack` (the server id becomes the stanza-id).
    pub(super) fn reflect(
        &mut self,
        stanza: &Element,
        room: ConversationId,
        message_id: tidings_proto::MessageId,
    ) {
        let Some(nick) = self.rooms.get(&room).cloned() else {
            return;
        };
        let room_jid = self.room_jid(room);
        let mut el = Element::new("message", NS_CLIENT)
            .attr("type", "groupchat")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("from", format!("{room_jid}/{nick}"))
            .attr("to", self.full.clone());
        for child in stanza.elements() {
            // Corrections, retractions and reactions are reflected with what they carry.
            if child.is("body", NS_CLIENT)
                || child.is("origin-id", NS_SID)
                || child.is("replace", super::actions::NS_CORRECT)
                || child.is("retract", super::actions::NS_RETRACT)
                || child.is("reactions", super::actions::NS_REACTIONS)
                || child.is("fallback", super::actions::NS_FALLBACK)
            {
                el = el.child(child.clone());
            }
        }
        el = el.child(
            Element::new("stanza-id", NS_SID)
                .attr("by", room_jid)
                .attr("id", message_id.to_string()),
        );
        self.send(&el);
    }

    /// A `groupchat` message to a room: a native send in the group.
    pub(super) async fn on_muc_message(&mut self, stanza: Element, to: &str) {
        let Some(room) = self.room_of(to) else {
            self.message_error(&stanza, "cancel", "item-not-found", "no such room");
            return;
        };
        if stanza.get_attr("type") != Some("groupchat") {
            // Private messages between occupants would bypass the group; not offered.
            self.message_error(
                &stanza,
                "cancel",
                "feature-not-implemented",
                "private messages in rooms are not available; send a chat message to the user",
            );
            return;
        }
        if !self.rooms.contains_key(&room) {
            self.message_error(&stanza, "modify", "not-acceptable", "join the room first");
            return;
        }
        match self.on_action(&stanza, room, true).await {
            super::actions::Outcome::None => {}
            super::actions::Outcome::Done => return,
            super::actions::Outcome::Unknown => {
                self.message_error(&stanza, "cancel", "item-not-found", "no such message");
                return;
            }
        }
        let Some(text) = stanza
            .find("body", NS_CLIENT)
            .map(Element::text_content)
            .filter(|t| !t.is_empty())
        else {
            // A subject without a body changes the title; chat states are not mapped.
            if stanza.find("subject", NS_CLIENT).is_some() {
                self.on_muc_subject(&stanza, room).await;
            }
            return;
        };
        let client_msg_id = stanza
            .find("origin-id", NS_SID)
            .and_then(|o| o.get_attr("id"))
            .or_else(|| stanza.get_attr("id"))
            .map(str::to_owned)
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .unwrap_or_else(super::random_id);
        let number = self.received;
        if self.sm {
            self.unanswered.insert(number);
        }
        let id = self.request_id(Pending::Send {
            stanza: stanza.clone(),
            number,
        });
        self.native(&ClientFrame::Send {
            id,
            conversation_id: room,
            client_msg_id,
            body: MessageBody::Text { text },
            reply_to: None,
            thread_root: None,
            mentions: None,
        });
    }

    /// IQs to the MUC service or a room: disco, and MAM on a room.
    pub(super) async fn on_muc_iq(&mut self, stanza: &Element, payload: &Element, to: &str) {
        let kind = stanza.get_attr("type").unwrap_or_default();
        let result = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("to", self.full.clone())
            .attr("from", to.to_owned());
        let service = to.eq_ignore_ascii_case(self.muc_domain());
        if service {
            match (kind, payload.name.as_str(), payload.ns.as_str()) {
                ("get", "query", NS_DISCO_INFO) => {
                    let query = Element::new("query", NS_DISCO_INFO)
                        .child(
                            Element::new("identity", NS_DISCO_INFO)
                                .attr("category", "conference")
                                .attr("type", "text")
                                .attr("name", "Tidings groups"),
                        )
                        .child(Element::new("feature", NS_DISCO_INFO).attr("var", NS_DISCO_INFO))
                        .child(Element::new("feature", NS_DISCO_INFO).attr("var", NS_DISCO_ITEMS))
                        .child(Element::new("feature", NS_DISCO_INFO).attr("var", NS_MUC));
                    self.send(&result.child(query));
                }
                ("get", "query", NS_DISCO_ITEMS) => {
                    // The rooms of the groups the user is a member of.
                    let list = match self.gw.core.conversations(&self.caller).await {
                        Ok(list) => list.conversations,
                        Err(e) => {
                            let (kind, condition) = condition_for(e.code);
                            self.send(&super::iq_error(stanza, kind, condition, None));
                            return;
                        }
                    };
                    let mut query = Element::new("query", NS_DISCO_ITEMS);
                    for c in list.iter().filter(|c| c.kind == ConversationKind::Group) {
                        query = query.child(
                            Element::new("item", NS_DISCO_ITEMS)
                                .attr("jid", self.room_jid(c.id))
                                .attr("name", c.title.clone()),
                        );
                    }
                    self.send(&result.child(query));
                }
                ("get", "ping", super::NS_PING) => self.send(&result),
                _ => self.send(&super::iq_error(
                    stanza,
                    "cancel",
                    "service-unavailable",
                    None,
                )),
            }
            return;
        }
        let room = match self.room_of(to) {
            Some(room) if !to.contains('/') => room,
            _ => {
                // Occupants' JIDs hide users' resources; IQs are not relayed to them.
                self.send(&super::iq_error(
                    stanza,
                    "cancel",
                    "service-unavailable",
                    None,
                ));
                return;
            }
        };
        let Some(title) = self.group_title(room).await else {
            // Not a member (or no such group): the same answer for both.
            self.send(&super::iq_error(stanza, "auth", "forbidden", None));
            return;
        };
        match (kind, payload.name.as_str(), payload.ns.as_str()) {
            ("get", "query", NS_DISCO_INFO) => {
                let mut query = Element::new("query", NS_DISCO_INFO).child(
                    Element::new("identity", NS_DISCO_INFO)
                        .attr("category", "conference")
                        .attr("type", "text")
                        .attr("name", title),
                );
                for feature in [
                    NS_DISCO_INFO,
                    NS_MUC,
                    "muc_membersonly",
                    "muc_persistent",
                    "muc_nonanonymous",
                    "muc_unsecured",
                    "muc_hidden",
                    super::mam::NS_MAM,
                    NS_SID,
                    super::actions::NS_CORRECT,
                    super::actions::NS_RETRACT,
                    super::actions::NS_REACTIONS,
                ] {
                    query =
                        query.child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
                }
                self.send(&result.child(query));
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                // Occupants are not listed to disco (XEP-0045 6.5 allows refusing).
                self.send(&result.child(Element::new("query", NS_DISCO_ITEMS)));
            }
            ("set", "query", super::mam::NS_MAM) => {
                self.on_room_mam(stanza, payload, room).await;
            }
            ("get" | "set", "query", super::muc_admin::NS_MUC_ADMIN) => {
                self.on_muc_admin(stanza, payload, room, result).await;
            }
            ("get" | "set", "query", super::muc_admin::NS_MUC_OWNER) => {
                self.on_muc_owner(stanza, payload, room, result).await;
            }
            _ => self.send(&super::iq_error(
                stanza,
                "cancel",
                "service-unavailable",
                None,
            )),
        }
    }
}
