//! Multi-User Chat (XEP-0045): Tidings groups as rooms on the MUC domain.
//!
//! A group is the room `<conversation id>@<muc_domain>`, or `<address>@<muc_domain>` when it
//! has a room address (`tidings_core::rooms`). Joining an address no group holds creates a
//! group under it, owned by the joiner (status 201). Membership is the core's: only members can
//! discover, join, read or post, and every read and send goes through the same core calls (and
//! so the same `policy.rs` decisions) as the web protocol. Affiliations and roles come from the
//! Tidings roles: owner → owner/moderator, admin → admin/moderator, member →
//! member/participant, a muted member → visitor.
//!
//! Occupants are the core's: each connection that joins enters its device in the room under
//! its nick (`Core::enter_room`), and the other occupants' connections learn it from the
//! core's `occupant` frames, on whichever node they are. The core keeps a nick unique per user
//! in a room and apart from other members' usernames (web members post under theirs). Joining
//! answers with the occupants, the self-presence (status 110), history from the core's archive
//! (`maxstanzas`, `seconds`, `since`) and the subject (the group title). Group messages reach
//! this connection only for rooms it joined, as `groupchat` messages from `room/nick` (the
//! sender's occupant nick, or their username when they are not in the room) with a
//! `stanza-id` by the room; the sender's own message is reflected with the id it was sent with.
//! MAM queries to the room JID page through the group's history (`mam.rs`). Moderation,
//! configuration and the presence that follows from the group's events are in `muc_admin.rs`.

use super::mam::{NS_DELAY, stamp};
use super::{Conn, NS_CLIENT, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_SID, Pending, condition_for};
use crate::xml::Element;
use tidings_proto::rest::{ConversationKind, Member, Role};
use tidings_proto::ws::{ClientFrame, Occupant, OccupantShow};
use tidings_proto::{ConversationId, ErrorCode, MessageBody, UserId};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// History sent on join when the client does not limit it.
const DEFAULT_HISTORY: u32 = 20;

/// A room this connection joined.
#[derive(Debug)]
pub(super) struct Joined {
    /// The room's bare JID, as the client joined it.
    pub(super) jid: String,
    /// This connection's nick there.
    pub(super) nick: String,
    /// The other devices in the room (the user's own other devices included).
    pub(super) others: Vec<Occupant>,
}

impl Joined {
    /// The nick `user` goes by in the room, if one of their devices is in it.
    pub(super) fn nick_of(&self, user: UserId) -> Option<&str> {
        self.others
            .iter()
            .find(|o| o.user_id == user)
            .map(|o| o.nick.as_str())
    }

    /// Every nick `user`'s devices hold in the room (besides this connection's), once each.
    pub(super) fn nicks_of(&self, user: UserId) -> Vec<String> {
        let mut nicks: Vec<String> = Vec::new();
        for o in self.others.iter().filter(|o| o.user_id == user) {
            if !nicks.contains(&o.nick) {
                nicks.push(o.nick.clone());
            }
        }
        nicks
    }

    /// The user an occupant nick belongs to.
    pub(super) fn user_of(&self, nick: &str) -> Option<UserId> {
        self.others
            .iter()
            .find(|o| o.nick == nick)
            .map(|o| o.user_id)
    }
}

/// What an `occupant` frame says changed.
pub(super) struct OccupantChange {
    pub(super) previous_nick: Option<String>,
    pub(super) present: bool,
    pub(super) status: Option<String>,
    pub(super) kicked_by: Option<UserId>,
}

/// The affiliation and role of a member (XEP-0045 5.1, 5.2).
pub(super) fn affiliation_role(member: &Member) -> (&'static str, &'static str) {
    match member.role {
        Role::Owner => ("owner", "moderator"),
        Role::Admin => ("admin", "moderator"),
        Role::Member if member.muted_until.is_some() => ("member", "visitor"),
        Role::Member => ("member", "participant"),
    }
}

fn status(code: &str) -> Element {
    Element::new("status", NS_MUC_USER).attr("code", code.to_owned())
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

    /// The local part of a room JID on the MUC domain.
    fn room_local<'a>(&self, jid: &'a str) -> Option<&'a str> {
        let bare = jid.split('/').next().unwrap_or(jid);
        let (local, domain) = bare.split_once('@')?;
        domain
            .eq_ignore_ascii_case(self.muc_domain())
            .then_some(local)
            .filter(|l| !l.is_empty())
    }

    /// The group a room JID names: by id, by a room this connection joined, or by address.
    pub(super) async fn room_of(&mut self, jid: &str) -> Option<ConversationId> {
        let local = self.room_local(jid)?;
        if let Ok(id) = local.parse() {
            return Some(ConversationId(id));
        }
        let bare = jid.split('/').next().unwrap_or(jid);
        if let Some((id, _)) = self
            .rooms
            .iter()
            .find(|(_, j)| j.jid.eq_ignore_ascii_case(bare))
        {
            return Some(*id);
        }
        self.gw.core.room_by_address(local).await.ok().flatten()
    }

    /// The room JID of a group: the one this connection joined it as, else by id.
    pub(super) fn room_jid(&self, room: ConversationId) -> String {
        match self.rooms.get(&room) {
            Some(joined) => joined.jid.clone(),
            None => format!("{room}@{}", self.muc_domain()),
        }
    }

    /// The group's title if the caller is a member of this group (the core decides).
    async fn group_title(&mut self, room: ConversationId) -> Option<String> {
        let info = self.gw.core.conversation(&self.caller, room).await.ok()?;
        (info.kind == ConversationKind::Group).then_some(info.title)
    }

    /// The status text of a presence, if any.
    /// The text of a presence's `<status/>`, if it has one.
    fn status_text(stanza: &Element) -> Option<String> {
        stanza
            .find("status", NS_CLIENT)
            .map(Element::text_content)
            .filter(|s| !s.is_empty())
    }

    /// Leaves a room: the core takes the device out (telling the other occupants when
    /// `announce`), and this client gets its own unavailable presence.
    pub(super) async fn leave_room(
        &mut self,
        room: ConversationId,
        status_text: Option<String>,
        announce: bool,
    ) {
        let Some(joined) = self.rooms.remove(&room) else {
            return;
        };
        if let Err(e) = self
            .gw
            .core
            .leave_room(&self.caller, room, status_text, announce)
            .await
        {
            tracing::debug!(%e, "Could not take an XMPP occupant out of a room.");
        }
        let item = Element::new("item", NS_MUC_USER).attr("role", "none");
        let item = match self.my_affiliation(room).await {
            Some(affiliation) => item.attr("affiliation", affiliation),
            None => item.attr("affiliation", "none"),
        };
        self.send_unavailable(
            &joined.jid,
            &joined.nick,
            Element::new("x", NS_MUC_USER)
                .child(item)
                .child(status("110")),
        );
    }

    /// Leaves every room (unavailable presence, or the end of the session).
    pub(super) async fn leave_all_rooms(&mut self) {
        let rooms: Vec<ConversationId> = self.rooms.keys().copied().collect();
        for room in rooms {
            self.leave_room(room, None, true).await;
        }
    }

    /// Presence and messages to the MUC domain.
    pub(super) async fn on_muc_presence(&mut self, stanza: &Element, to: &str) {
        let kind = stanza.get_attr("type");
        let Some(local) = self.room_local(to).map(str::to_owned) else {
            self.muc_presence_error(stanza, "cancel", "item-not-found");
            return;
        };
        let nick = to.split_once('/').map(|(_, n)| n.to_owned());
        let known = self.room_of(to).await;
        if kind == Some("unavailable") {
            if let Some(room) = known {
                self.leave_room(room, Self::status_text(stanza), true).await;
            }
            return;
        }
        if kind.is_some() {
            // Subscriptions and probes mean nothing to a room.
            return;
        }
        let Some(nick) = nick.filter(|n| !n.trim().is_empty()) else {
            self.muc_presence_error(stanza, "modify", "jid-malformed");
            return;
        };
        let mut created = false;
        let room = match known {
            Some(room) => room,
            None => match self.gw.core.create_room(&self.caller, &local).await {
                Ok(room) => {
                    created = true;
                    room
                }
                Err(e) => {
                    let (kind, condition) = match e.code {
                        ErrorCode::InvalidField => ("modify", "jid-malformed"),
                        ErrorCode::Conflict => ("cancel", "conflict"),
                        code => condition_for(code),
                    };
                    self.muc_presence_error(stanza, kind, condition);
                    return;
                }
            },
        };
        let joined_already = self.rooms.contains_key(&room);
        let Some(title) = self.group_title(room).await else {
            self.muc_presence_error(stanza, "auth", "registration-required");
            return;
        };
        let status_text = Self::status_text(stanza);
        let show = stanza
            .find("show", NS_CLIENT)
            // RFC 6121 4.7.2.1; anything else is plain availability.
            .and_then(|s| OccupantShow::parse(s.text_content().trim()));
        let entered = match self
            .gw
            .core
            .enter_room(&self.caller, room, &nick, status_text, show)
            .await
        {
            Ok(entered) => entered,
            Err(e) => {
                let (kind, condition) = match e.code {
                    ErrorCode::Conflict => ("cancel", "conflict"),
                    ErrorCode::InvalidField => ("modify", "jid-malformed"),
                    ErrorCode::NotFound | ErrorCode::Forbidden => ("auth", "registration-required"),
                    code => condition_for(code),
                };
                self.muc_presence_error(stanza, kind, condition);
                return;
            }
        };
        let members = match self.gw.core.members(&self.caller, room).await {
            Ok(members) => members,
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.muc_presence_error(stanza, kind, condition);
                return;
            }
        };
        for member in &members {
            self.learn_name(member.user_id, &member.username);
        }
        let me = self.caller.user_id;
        let Some(own) = members.iter().find(|m| m.user_id == me) else {
            self.muc_presence_error(stanza, "auth", "registration-required");
            return;
        };
        let (affiliation, role) = affiliation_role(own);
        let nick = nick.trim().to_owned();
        let room_jid = match self.rooms.get(&room) {
            Some(joined) => joined.jid.clone(),
            None => to.split('/').next().unwrap_or(to).to_lowercase(),
        };
        let others: Vec<Occupant> = entered
            .occupants
            .iter()
            .filter(|o| o.device_id != self.caller.device_id)
            .cloned()
            .collect();
        let full = self.full.clone();
        let own_item = |nick: &str| {
            Element::new("item", NS_MUC_USER)
                .attr("affiliation", affiliation)
                .attr("role", role)
                .attr("jid", full.clone())
                .attr("nick", nick.to_owned())
        };
        if joined_already && stanza.find("x", NS_MUC).is_none() {
            // A nick change (XEP-0045 7.6) or a presence update while joined.
            // The core tells this device of its own nick change last, after the others
            // (`on_own_rename`).
            if let Some(joined) = self.rooms.get_mut(&room) {
                joined.others = others;
            }
            return;
        }
        // Occupants first, then the self-presence (XEP-0045 7.2.3).
        for other in &others {
            let Some(member) = members.iter().find(|m| m.user_id == other.user_id) else {
                continue;
            };
            let el = self.occupant_element(&room_jid, other, member);
            let el = self.with_photo_hash(el, other.user_id).await;
            self.send(&el);
        }
        // 100: real JIDs are visible; 110: this is you; 201: the room was created.
        let mut x = Element::new("x", NS_MUC_USER)
            .child(own_item(&nick))
            .child(status("100"))
            .child(status("110"));
        if created {
            x = x.child(status("201"));
        }
        let el = Element::new("presence", NS_CLIENT)
            .attr("from", format!("{room_jid}/{nick}"))
            .attr("to", self.full.clone())
            .child(x);
        self.send(&el);
        self.rooms.insert(
            room,
            Joined {
                jid: room_jid.clone(),
                nick,
                others,
            },
        );
        if !created {
            self.room_history(room, stanza.find("x", NS_MUC)).await;
        }
        let subject = Element::new("message", NS_CLIENT)
            .attr("type", "groupchat")
            .attr("from", room_jid)
            .attr("to", self.full.clone())
            .attr("id", super::random_id())
            .child(Element::new("subject", NS_CLIENT).text(title));
        self.send(&subject);
    }

    /// The available presence of another occupant, as this connection sees it, with the show
    /// and status of its latest room presence (kept by the core, so that whoever enters later
    /// sees them too).
    pub(super) fn occupant_element(
        &self,
        room_jid: &str,
        occupant: &Occupant,
        member: &Member,
    ) -> Element {
        let (affiliation, role) = affiliation_role(member);
        let mut el = Element::new("presence", NS_CLIENT)
            .attr("from", format!("{room_jid}/{}", occupant.nick))
            .attr("to", self.full.clone());
        if let Some(show) = occupant.show {
            el = el.child(Element::new("show", NS_CLIENT).text(show.as_str()));
        }
        if let Some(text) = &occupant.status {
            el = el.child(Element::new("status", NS_CLIENT).text(text.clone()));
        }
        el.child(
            Element::new("x", NS_MUC_USER).child(
                Element::new("item", NS_MUC_USER)
                    .attr("affiliation", affiliation)
                    .attr("role", role)
                    .attr("jid", format!("{}@{}", member.username, self.domain())),
            ),
        )
    }

    /// Another device entered a room this connection is in, changed its nick there, or left;
    /// or a moderator kicked a device (this one included) out of it.
    pub(super) async fn on_occupant(
        &mut self,
        room: ConversationId,
        occupant: Occupant,
        change: OccupantChange,
    ) {
        let OccupantChange {
            previous_nick,
            present,
            status: status_text,
            kicked_by,
        } = change;
        if let Some(actor) = kicked_by {
            self.on_kick(room, occupant, actor, status_text).await;
            return;
        }
        if occupant.device_id == self.caller.device_id {
            if let Some(previous) = previous_nick {
                self.on_own_rename(room, occupant.nick, previous).await;
            }
            return;
        }
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        let room_jid = joined.jid.clone();
        joined.others.retain(|o| o.device_id != occupant.device_id);
        if present {
            joined.others.push(occupant.clone());
        }
        let member = match self.gw.core.members(&self.caller, room).await {
            Ok(members) => members.into_iter().find(|m| m.user_id == occupant.user_id),
            Err(_) => None,
        };
        let domain = self.domain().to_owned();
        let item = |member: Option<&Member>, present: bool| {
            let (affiliation, role) = match member {
                Some(member) if present => affiliation_role(member),
                Some(member) => (affiliation_role(member).0, "none"),
                None => ("none", "none"),
            };
            let mut item = Element::new("item", NS_MUC_USER)
                .attr("affiliation", affiliation)
                .attr("role", role);
            if let Some(member) = member {
                item = item.attr("jid", format!("{}@{domain}", member.username));
            }
            item
        };
        if let Some(previous) = previous_nick {
            let x = Element::new("x", NS_MUC_USER)
                .child(item(member.as_ref(), true).attr("nick", occupant.nick.clone()))
                .child(status("303"));
            self.send_unavailable(&room_jid, &previous, x);
        }
        if present {
            let Some(member) = member else {
                return;
            };
            // The occupant carries the show and status this presence came with.
            let el = self.occupant_element(&room_jid, &occupant, &member);
            let el = self.with_photo_hash(el, occupant.user_id).await;
            self.send(&el);
        } else {
            let mut el = Element::new("presence", NS_CLIENT)
                .attr("type", "unavailable")
                .attr("from", format!("{room_jid}/{}", occupant.nick))
                .attr("to", self.full.clone());
            if let Some(text) = status_text {
                el = el.child(Element::new("status", NS_CLIENT).text(text));
            }
            el = el.child(Element::new("x", NS_MUC_USER).child(item(member.as_ref(), false)));
            self.send(&el);
        }
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
        let sender = self
            .nick_in(message.conversation_id, message.sender_id)
            .await?;
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

    /// The nick `user` shows under in a room this connection joined: this connection's own
    /// nick for the user themselves, an occupant's nick, else the username (members who are not
    /// in the room, such as web users, post under it).
    pub(super) async fn nick_in(&mut self, room: ConversationId, user: UserId) -> Option<String> {
        if let Some(joined) = self.rooms.get(&room) {
            if user == self.caller.user_id {
                return Some(joined.nick.clone());
            }
            if let Some(nick) = joined.nick_of(user) {
                return Some(nick.to_owned());
            }
        }
        self.username(user).await
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
        let Some(nick) = self.rooms.get(&room).map(|j| j.nick.clone()) else {
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

    /// A message to a room or an occupant. A `groupchat` message to a room is a native send in
    /// the group. A private message to an occupant (`room/nick`) is a direct message to that
    /// occupant's user: the stanza comes back with `to` rewritten for the direct path, so it is
    /// stored, delivered and refused like any other (the recipient sees it from the sender's own
    /// JID, and both find it in their direct history).
    pub(super) async fn on_muc_message(
        &mut self,
        mut stanza: Element,
        to: &str,
    ) -> Option<Element> {
        let Some(room) = self.room_of(to).await else {
            self.message_error(&stanza, "cancel", "item-not-found", "no such room");
            return None;
        };
        if stanza.get_attr("type") != Some("groupchat") {
            let nick = to.split_once('/').map(|(_, n)| n);
            let target = match (self.rooms.get(&room), nick) {
                (Some(joined), Some(nick)) => joined.user_of(nick),
                _ => None,
            };
            let target = match (target, nick) {
                (Some(user), _) => Some(user),
                (None, Some(nick)) if self.rooms.contains_key(&room) => {
                    // A member not in the room is addressed by username.
                    match self.user_id(nick).await {
                        Some(user) if self.is_member(room, user).await => Some(user),
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some(user) = target else {
                let text = if self.rooms.contains_key(&room) {
                    "no such occupant"
                } else {
                    "join the room first"
                };
                self.message_error(&stanza, "modify", "item-not-found", text);
                return None;
            };
            let username = self.username(user).await?;
            stanza.set_attr("to", format!("{username}@{}", self.domain()));
            if stanza.get_attr("type").is_none() {
                stanza.set_attr("type", "chat");
            }
            return Some(stanza);
        }
        if !self.rooms.contains_key(&room) {
            self.message_error(&stanza, "modify", "not-acceptable", "join the room first");
            return None;
        }
        match self.on_action(&stanza, room, true).await {
            super::actions::Outcome::None => {}
            super::actions::Outcome::Done => return None,
            super::actions::Outcome::Unknown => {
                self.message_error(&stanza, "cancel", "item-not-found", "no such message");
                return None;
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
            return None;
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
        let (reply_to, text) = self.reply_of(room, &stanza, text).await;
        let id = self.request_id(Pending::Send {
            stanza: stanza.clone(),
            number,
        });
        self.native(&ClientFrame::Send {
            id,
            conversation_id: room,
            client_msg_id,
            body: MessageBody::Text { text },
            reply_to,
            thread_root: None,
            mentions: None,
        });
        None
    }

    /// Whether `user` is a member of the group (as the caller may see).
    async fn is_member(&mut self, room: ConversationId, user: UserId) -> bool {
        self.gw
            .core
            .members(&self.caller, room)
            .await
            .is_ok_and(|members| members.iter().any(|m| m.user_id == user))
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
                    let groups: Vec<_> = list
                        .iter()
                        .filter(|c| c.kind == ConversationKind::Group)
                        .collect();
                    let ids: Vec<ConversationId> = groups.iter().map(|c| c.id).collect();
                    let addresses = self
                        .gw
                        .core
                        .room_addresses(&self.caller, &ids)
                        .await
                        .unwrap_or_default();
                    let mut query = Element::new("query", NS_DISCO_ITEMS);
                    for c in groups {
                        let jid = match addresses.iter().find(|(id, _)| *id == c.id) {
                            Some((_, address)) => format!("{address}@{}", self.muc_domain()),
                            None => self.room_jid(c.id),
                        };
                        query = query.child(
                            Element::new("item", NS_DISCO_ITEMS)
                                .attr("jid", jid)
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
        let room = match self.room_of(to).await {
            Some(room) if !to.contains('/') => room,
            Some(room) => {
                self.on_occupant_iq(stanza, payload, room, to, result).await;
                return;
            }
            None => {
                self.send(&super::iq_error(stanza, "cancel", "item-not-found", None));
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
                let temporary = self
                    .gw
                    .core
                    .room_is_temporary(&self.caller, room)
                    .await
                    .unwrap_or(false);
                let lifetime = if temporary {
                    "muc_temporary"
                } else {
                    "muc_persistent"
                };
                for feature in [
                    NS_DISCO_INFO,
                    NS_MUC,
                    "muc_membersonly",
                    lifetime,
                    "muc_nonanonymous",
                    "muc_unsecured",
                    "muc_hidden",
                    super::mam::NS_MAM,
                    NS_SID,
                    super::actions::NS_CORRECT,
                    super::actions::NS_RETRACT,
                    super::actions::NS_REACTIONS,
                    super::muc_admin::NS_MODERATE,
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
            ("set", "moderate", super::muc_admin::NS_MODERATE) => {
                self.on_moderate(stanza, payload, room, result).await;
            }
            _ => self.send(&super::iq_error(
                stanza,
                "cancel",
                "service-unavailable",
                None,
            )),
        }
    }

    /// IQs to an occupant's JID. A ping to one's own occupant JID is the self-ping of
    /// XEP-0410: answered by the room, with `not-acceptable` when this connection is not in the
    /// room under that nick (the client then rejoins). Other IQs to occupants would reach
    /// users' devices without their real JIDs; they are not relayed.
    async fn on_occupant_iq(
        &mut self,
        stanza: &Element,
        payload: &Element,
        room: ConversationId,
        to: &str,
        result: Element,
    ) {
        let nick = to.split_once('/').map_or("", |(_, n)| n);
        let own = self.rooms.get(&room).is_some_and(|j| j.nick == nick);
        let someone = self
            .rooms
            .get(&room)
            .is_some_and(|j| j.user_of(nick).is_some());
        let ping = stanza.get_attr("type") == Some("get") && payload.is("ping", super::NS_PING);
        let vcard = stanza.get_attr("type") == Some("get") && payload.is("vCard", super::NS_VCARD);
        if vcard && self.rooms.contains_key(&room) {
            // An occupant's vCard (XEP-0054 through the room, as clients fetch avatars in
            // rooms): the vCard of the user behind the nick, answered from the occupant JID.
            match self.user_behind(room, nick).await {
                Some(username) => {
                    let bare = format!("{username}@{}", self.domain());
                    self.vcard_get(stanza, Some(&bare)).await;
                }
                None => self.send(&super::iq_error(stanza, "cancel", "item-not-found", None)),
            }
        } else if ping && own {
            self.send(&result);
        } else if ping && !someone {
            self.send(&super::iq_error(stanza, "cancel", "not-acceptable", None));
        } else {
            self.send(&super::iq_error(
                stanza,
                "cancel",
                "service-unavailable",
                None,
            ));
        }
    }

    /// The username of whoever goes by `nick` in the room: this connection, another occupant,
    /// or a member who is not in the room (web members show under their usernames).
    async fn user_behind(&mut self, room: ConversationId, nick: &str) -> Option<String> {
        let joined = self.rooms.get(&room)?;
        let user = if joined.nick == nick {
            Some(self.caller.user_id)
        } else {
            joined.user_of(nick)
        };
        match user {
            Some(user) => self.username(user).await,
            None => self
                .gw
                .core
                .members(&self.caller, room)
                .await
                .ok()?
                .into_iter()
                .find(|m| m.username == nick)
                .map(|m| m.username),
        }
    }

    /// A device was kicked out of a room (XEP-0045 8.2): status 307 with the actor and the
    /// reason; for this connection's own device, 110 too, and the room is left (the core took
    /// the device out already).
    async fn on_kick(
        &mut self,
        room: ConversationId,
        occupant: Occupant,
        actor: UserId,
        reason: Option<String>,
    ) {
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        joined.others.retain(|o| o.device_id != occupant.device_id);
        let room_jid = joined.jid.clone();
        let own = occupant.device_id == self.caller.device_id;
        let affiliation = match self.gw.core.members(&self.caller, room).await {
            Ok(members) => members
                .iter()
                .find(|m| m.user_id == occupant.user_id)
                .map_or("none", |m| affiliation_role(m).0),
            Err(_) => "none",
        };
        let mut item = Element::new("item", NS_MUC_USER)
            .attr("affiliation", affiliation)
            .attr("role", "none");
        if let Some(actor_nick) = self.nick_in(room, actor).await {
            item = item.child(Element::new("actor", NS_MUC_USER).attr("nick", actor_nick));
        }
        if let Some(reason) = reason {
            item = item.child(Element::new("reason", NS_MUC_USER).text(reason));
        }
        let mut x = Element::new("x", NS_MUC_USER)
            .child(item)
            .child(status("307"));
        if own {
            x = x.child(status("110"));
            self.rooms.remove(&room);
        }
        self.send_unavailable(&room_jid, &occupant.nick, x);
    }

    /// This device's own nick change, confirmed by the core after the other occupants were
    /// told (XEP-0045 7.6): unavailable from the old nick with 303 and 110, then the presence
    /// from the new one.
    async fn on_own_rename(&mut self, room: ConversationId, nick: String, previous: String) {
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        joined.nick = nick.clone();
        let room_jid = joined.jid.clone();
        let (affiliation, role) = match self.gw.core.members(&self.caller, room).await {
            Ok(members) => members
                .iter()
                .find(|m| m.user_id == self.caller.user_id)
                .map_or(("none", "none"), affiliation_role),
            Err(_) => ("none", "none"),
        };
        let item = Element::new("item", NS_MUC_USER)
            .attr("affiliation", affiliation)
            .attr("role", role)
            .attr("jid", self.full.clone())
            .attr("nick", nick.clone());
        let x = Element::new("x", NS_MUC_USER)
            .child(item.clone())
            .child(status("303"))
            .child(status("110"));
        self.send_unavailable(&room_jid, &previous, x);
        let el = Element::new("presence", NS_CLIENT)
            .attr("from", format!("{room_jid}/{nick}"))
            .attr("to", self.full.clone())
            .child(
                Element::new("x", NS_MUC_USER)
                    .child(item)
                    .child(status("110")),
            );
        self.send(&el);
    }
}
