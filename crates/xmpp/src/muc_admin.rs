//! MUC moderation and configuration (XEP-0045 §8–10) translated onto the core's group calls.
//!
//! The gateway decides nothing here: a `muc#admin` item becomes one core call (mute, unmute,
//! remove, ban, unban, role change, ownership transfer, add), a `muc#owner` form becomes a
//! group update, and the core's answer (with the same `policy.rs` decision the web client
//! gets) becomes the IQ result or error. What occupants see afterwards is derived from the
//! group's system messages, which every member's sessions receive on every node: a removal
//! becomes an unavailable presence with status 307, a ban one with 301, a mute, role change or
//! new member a presence with the member's current affiliation and role, a new title the
//! room's subject.

use super::muc::{NS_MUC_USER, affiliation_role};
use super::{Conn, NS_CLIENT, condition_for};
use crate::xml::Element;
use tidings_core::CoreError;
use tidings_proto::message::SystemEvent;
use tidings_proto::rest::{Member, Role, UpdateGroupRequest};
use tidings_proto::{ConversationId, ErrorCode, UserId};

pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// Moderated message retraction (XEP-0425), and its earlier version inside a fastening, which
/// moderation notices also carry for clients that only know it.
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// The body clients without moderation support show instead of a moderated message.
const MODERATED_FALLBACK: &str = "This message was retracted by a moderator.";
const NS_DATA: &str = "jabber:x:data";
const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const PERSISTENT: &str = "muc#roomconfig_persistentroom";
/// Revoking voice has no end in XMPP; Tidings mutes have one, so it becomes the longest mute
/// the core accepts (366 days, `groups.rs`).
const VOICELESS_SECS: u64 = 366 * 24 * 3600;
/// The room features that follow from what a Tidings group is, as configuration fields with
/// their only possible value. Persistence is not among them: a room created by joining its
/// address may be made temporary (its group is dissolved when the last occupant leaves).
const FIXED_FIELDS: [(&str, &str, &str); 4] = [
    ("muc#roomconfig_membersonly", "Only members may join", "1"),
    ("muc#roomconfig_publicroom", "Listed in the directory", "0"),
    ("muc#roomconfig_moderatedroom", "Moderated room", "0"),
    ("muc#roomconfig_whois", "Who may see real JIDs", "anyone"),
];

/// Why one `muc#admin` item was not applied: an XMPP error type, condition and text.
struct Refusal(&'static str, &'static str, String);

impl From<CoreError> for Refusal {
    fn from(e: CoreError) -> Refusal {
        // A request the core finds impossible rather than malformed (banning oneself, handing
        // out ownership by role) is `not-allowed` in XEP-0045's terms.
        let (kind, condition) = match e.code {
            ErrorCode::InvalidField | ErrorCode::Conflict => ("cancel", "not-allowed"),
            code => condition_for(code),
        };
        Refusal(kind, condition, e.message)
    }
}

fn refusal(kind: &'static str, condition: &'static str, text: &str) -> Refusal {
    Refusal(kind, condition, text.to_owned())
}

/// An `<item>` in the muc#user namespace for a member as the room shows them.
fn user_item(member: &Member, domain: &str) -> Element {
    let (affiliation, role) = affiliation_role(member);
    Element::new("item", NS_MUC_USER)
        .attr("affiliation", affiliation)
        .attr("role", role)
        .attr("jid", format!("{}@{domain}", member.username))
}

fn status(code: &str) -> Element {
    Element::new("status", NS_MUC_USER).attr("code", code)
}

impl Conn {
    fn iq_refusal(&mut self, stanza: &Element, refusal: Refusal) {
        let Refusal(kind, condition, text) = refusal;
        self.send(&super::iq_error(stanza, kind, condition, Some(&text)));
    }

    /// The user an item names: by `jid` (a bare JID of our domain) or by `nick` (an
    /// occupant's nick in the room, else a member's username).
    async fn item_user(&mut self, room: ConversationId, item: &Element) -> Result<UserId, Refusal> {
        if let (None, Some(nick)) = (item.get_attr("jid"), item.get_attr("nick"))
            && let Some(joined) = self.rooms.get(&room)
        {
            if joined.nick == nick {
                return Ok(self.caller.user_id);
            }
            if let Some(user) = joined.user_of(nick) {
                return Ok(user);
            }
        }
        let name = match (item.get_attr("jid"), item.get_attr("nick")) {
            (Some(jid), _) => self
                .local_user(jid)
                .map(str::to_owned)
                .ok_or_else(|| refusal("cancel", "item-not-found", "no such user here"))?,
            (None, Some(nick)) => nick.to_owned(),
            (None, None) => {
                return Err(refusal(
                    "modify",
                    "bad-request",
                    "an item needs a jid or nick",
                ));
            }
        };
        self.user_id(&name)
            .await
            .ok_or_else(|| refusal("cancel", "item-not-found", "no such user"))
    }

    /// A `muc#admin` IQ to a room: lists by affiliation or role (get), or changes (set).
    pub(super) async fn on_muc_admin(
        &mut self,
        stanza: &Element,
        query: &Element,
        room: ConversationId,
        result: Element,
    ) {
        let items: Vec<Element> = query
            .elements()
            .filter(|e| e.is("item", NS_MUC_ADMIN))
            .cloned()
            .collect();
        if items.is_empty() {
            self.iq_refusal(stanza, refusal("modify", "bad-request", "no item"));
            return;
        }
        if stanza.get_attr("type") == Some("get") {
            match self.admin_list(room, &items[0]).await {
                Ok(list) => self.send(&result.child(list)),
                Err(refusal) => self.iq_refusal(stanza, refusal),
            }
            return;
        }
        // Items apply one by one, each as its own core change; the first refusal ends the
        // request (XEP-0045 leaves atomicity of a list to the service).
        for item in &items {
            if let Err(refusal) = self.admin_change(room, item).await {
                self.iq_refusal(stanza, refusal);
                return;
            }
        }
        self.send(&result);
    }

    /// The members with one affiliation or role, or the banned users for `outcast`.
    async fn admin_list(
        &mut self,
        room: ConversationId,
        item: &Element,
    ) -> Result<Element, Refusal> {
        let domain = self.domain().to_owned();
        let mut query = Element::new("query", NS_MUC_ADMIN);
        if item.get_attr("affiliation") == Some("outcast") {
            let bans = self.gw.core.bans(&self.caller, room).await?;
            for ban in bans.users {
                let mut el = Element::new("item", NS_MUC_ADMIN)
                    .attr("affiliation", "outcast")
                    .attr("jid", format!("{}@{domain}", ban.username));
                if let Some(reason) = ban.reason {
                    el = el.child(Element::new("reason", NS_MUC_ADMIN).text(reason));
                }
                query = query.child(el);
            }
            return Ok(query);
        }
        let (attr, wanted) = match (item.get_attr("affiliation"), item.get_attr("role")) {
            (Some(a), _) if matches!(a, "owner" | "admin" | "member") => ("affiliation", a),
            (None, Some(r)) if matches!(r, "moderator" | "participant" | "visitor") => ("role", r),
            _ => {
                return Err(refusal(
                    "modify",
                    "bad-request",
                    "ask for an affiliation (owner, admin, member, outcast) or a role \
                     (moderator, participant, visitor)",
                ));
            }
        };
        for member in self.gw.core.members(&self.caller, room).await? {
            let (affiliation, role) = affiliation_role(&member);
            let value = if attr == "affiliation" {
                affiliation
            } else {
                role
            };
            if value == wanted {
                query = query.child(
                    Element::new("item", NS_MUC_ADMIN)
                        .attr("affiliation", affiliation)
                        .attr("role", role)
                        .attr("nick", member.username.clone())
                        .attr("jid", format!("{}@{domain}", member.username)),
                );
            }
        }
        Ok(query)
    }

    /// One `muc#admin` item of a set, as the core call it stands for.
    async fn admin_change(&mut self, room: ConversationId, item: &Element) -> Result<(), Refusal> {
        let user = self.item_user(room, item).await?;
        let core = self.gw.core.clone();
        let caller = self.caller;
        let reason = item
            .find("reason", NS_MUC_ADMIN)
            .map(Element::text_content)
            .filter(|r| !r.trim().is_empty());
        // The target's standing now, to turn requests that change nothing into no core call.
        let current = core
            .members(&caller, room)
            .await?
            .into_iter()
            .find(|m| m.user_id == user);
        match (item.get_attr("role"), item.get_attr("affiliation")) {
            (Some(role), None) => {
                let Some(member) = current else {
                    return Err(refusal("cancel", "item-not-found", "not an occupant"));
                };
                match role {
                    "none" if user == caller.user_id => Err(refusal(
                        "cancel",
                        "conflict",
                        "you cannot kick yourself; leave the room instead",
                    )),
                    // A kick takes the member's devices out of the room; they stay a member
                    // (XEP-0045 8.2). Removing them from the group is affiliation `none`.
                    "none" => Ok(core.kick_from_room(&caller, room, user, reason).await?),
                    "visitor" if member.muted_until.is_some() => Ok(()),
                    "visitor" => Ok(core
                        .mute_member(&caller, room, user, Some(VOICELESS_SECS))
                        .await?),
                    "participant" if member.muted_until.is_none() => Ok(()),
                    "participant" => Ok(core.mute_member(&caller, room, user, None).await?),
                    "moderator" => Err(refusal(
                        "cancel",
                        "not-allowed",
                        "moderators are the group's admins: grant the admin affiliation",
                    )),
                    _ => Err(refusal("modify", "bad-request", "unknown role")),
                }
            }
            (None, Some(affiliation)) => match (affiliation, current) {
                ("owner", Some(m)) if m.role == Role::Owner => Ok(()),
                // A group has one owner: granting ownership hands it over (the caller becomes
                // an admin), as the web client's transfer does.
                ("owner", Some(_)) => Ok(core.transfer_ownership(&caller, room, user).await?),
                ("admin", Some(m)) if m.role == Role::Admin => Ok(()),
                ("admin", Some(_)) => Ok(core.set_role(&caller, room, user, Role::Admin).await?),
                ("member", Some(m)) if m.role == Role::Member => Ok(()),
                ("member", Some(_)) => Ok(core.set_role(&caller, room, user, Role::Member).await?),
                ("member", None) => {
                    // Membership for a non-member adds them (or invites them, as their privacy
                    // settings say).
                    core.add_members(&caller, room, vec![user]).await?;
                    Ok(())
                }
                ("owner" | "admin", None) => {
                    Err(refusal("cancel", "item-not-found", "not a member"))
                }
                ("none", Some(_)) if user == caller.user_id => Err(refusal(
                    "cancel",
                    "conflict",
                    "you cannot remove your own affiliation; leave the room instead",
                )),
                ("none", Some(_)) => Ok(core.remove_member(&caller, room, user).await?),
                ("none", None) => {
                    // Not a member: `none` lifts a ban if there is one.
                    match core.unban(&caller, room, user).await {
                        Err(e) if e.code == ErrorCode::NotFound => Ok(()),
                        other => Ok(other?),
                    }
                }
                ("outcast", _) => Ok(core.ban(&caller, room, user, reason).await?),
                _ => Err(refusal("modify", "bad-request", "unknown affiliation")),
            },
            _ => Err(refusal(
                "modify",
                "bad-request",
                "an item changes either a role or an affiliation",
            )),
        }
    }

    /// A `muc#owner` IQ to a room: the configuration form (get), its submission (set), or
    /// the room's destruction (set with `<destroy/>`, the group dissolved).
    pub(super) async fn on_muc_owner(
        &mut self,
        stanza: &Element,
        query: &Element,
        room: ConversationId,
        result: Element,
    ) {
        let core = self.gw.core.clone();
        let caller = self.caller;
        if stanza.get_attr("type") == Some("get") {
            let info = match core.group_info(&caller, room).await {
                Ok(info) => info,
                Err(e) => return self.iq_refusal(stanza, e.into()),
            };
            let field = |var: &str, kind: &str, label: &str, value: &str| {
                Element::new("field", NS_DATA)
                    .attr("var", var)
                    .attr("type", kind)
                    .attr("label", label)
                    .child(Element::new("value", NS_DATA).text(value))
            };
            let mut form = Element::new("x", NS_DATA)
                .attr("type", "form")
                .child(Element::new("title", NS_DATA).text("Room configuration"))
                .child(field("FORM_TYPE", "hidden", "", NS_ROOMCONFIG))
                .child(field(
                    "muc#roomconfig_roomname",
                    "text-single",
                    "Room name (the group title)",
                    &info.title,
                ))
                .child(field(
                    "muc#roomconfig_roomdesc",
                    "text-single",
                    "Description",
                    &info.description,
                ));
            let temporary = core.room_is_temporary(&caller, room).await.unwrap_or(false);
            form = form.child(field(
                PERSISTENT,
                "boolean",
                "Persistent room (a temporary one is dissolved when the last occupant leaves)",
                if temporary { "0" } else { "1" },
            ));
            for (var, label, value) in FIXED_FIELDS {
                let kind = if value == "anyone" {
                    "list-single"
                } else {
                    "boolean"
                };
                form = form.child(field(var, kind, label, value));
            }
            self.send(&result.child(Element::new("query", NS_MUC_OWNER).child(form)));
            return;
        }
        if query.find("destroy", NS_MUC_OWNER).is_some() {
            match core.dissolve_group(&caller, room).await {
                Ok(()) => self.send(&result),
                Err(e) => self.iq_refusal(stanza, e.into()),
            }
            return;
        }
        let Some(form) = query.find("x", NS_DATA) else {
            self.iq_refusal(stanza, refusal("modify", "bad-request", "no form"));
            return;
        };
        if form.get_attr("type") == Some("cancel") {
            self.send(&result);
            return;
        }
        let value = |var: &str| {
            form.elements()
                .find(|f| f.is("field", NS_DATA) && f.get_attr("var") == Some(var))
                .map(|f| {
                    f.find("value", NS_DATA)
                        .map(Element::text_content)
                        .unwrap_or_default()
                })
        };
        for (var, _, fixed) in FIXED_FIELDS {
            let same = |v: &str| {
                v == fixed || (fixed == "1" && v == "true") || (fixed == "0" && v == "false")
            };
            if let Some(v) = value(var)
                && !same(v.trim())
            {
                let text = format!("{var} is always {fixed} for a Tidings group");
                self.iq_refusal(stanza, Refusal("cancel", "not-acceptable", text));
                return;
            }
        }
        let info = match core.group_info(&caller, room).await {
            Ok(info) => info,
            Err(e) => return self.iq_refusal(stanza, e.into()),
        };
        if let Some(persistent) = value(PERSISTENT) {
            let temporary = match persistent.trim() {
                "1" | "true" => false,
                "0" | "false" => true,
                _ => {
                    let text = format!("{PERSISTENT} is a boolean");
                    return self.iq_refusal(stanza, Refusal("modify", "bad-request", text));
                }
            };
            let now = core.room_is_temporary(&caller, room).await.unwrap_or(false);
            if temporary != now {
                match core.set_room_temporary(&caller, room, temporary).await {
                    Ok(()) => {}
                    Err(e) if e.code == ErrorCode::NotFound => {
                        let text = "only a room created by joining its name can be temporary";
                        return self.iq_refusal(
                            stanza,
                            Refusal("cancel", "not-acceptable", text.to_owned()),
                        );
                    }
                    Err(e) => return self.iq_refusal(stanza, e.into()),
                }
            }
        }
        // Only fields that change something go to the core (an instant-room submission or an
        // unchanged form is accepted without a change).
        let request = UpdateGroupRequest {
            title: value("muc#roomconfig_roomname").filter(|t| t.trim() != info.title),
            description: value("muc#roomconfig_roomdesc").filter(|d| *d != info.description),
            ..UpdateGroupRequest::default()
        };
        if request.title.is_none() && request.description.is_none() {
            self.send(&result);
            return;
        }
        match core.update_group(&caller, room, request).await {
            Ok(_) => self.send(&result),
            Err(e) => self.iq_refusal(stanza, e.into()),
        }
    }

    /// A subject change (`<message type='groupchat'><subject>`): the group's title, changed
    /// through the core; the new subject reaches the occupants from the group's system
    /// message.
    pub(super) async fn on_muc_subject(&mut self, stanza: &Element, room: ConversationId) {
        let Some(subject) = stanza.find("subject", NS_CLIENT).map(Element::text_content) else {
            return;
        };
        let request = UpdateGroupRequest {
            title: Some(subject),
            ..UpdateGroupRequest::default()
        };
        if let Err(e) = self.gw.core.update_group(&self.caller, room, request).await {
            let Refusal(kind, condition, text) = Refusal::from(e);
            self.message_error(stanza, kind, condition, &text);
        }
    }

    /// What a group's system message means for the room's occupants: presence of members
    /// whose standing changed, and the subject after a title change.
    pub(super) async fn room_event(
        &mut self,
        room: ConversationId,
        actor: UserId,
        event: &SystemEvent,
    ) {
        match event {
            SystemEvent::MembersAdded { users } => {
                for user in users.clone() {
                    self.occupant_presence(room, user).await;
                }
            }
            SystemEvent::MemberJoined { user, .. }
            | SystemEvent::MemberMuted { user, .. }
            | SystemEvent::MemberUnmuted { user }
            | SystemEvent::RoleChanged { user, .. } => {
                self.occupant_presence(room, *user).await;
            }
            SystemEvent::OwnershipTransferred { user } => {
                self.occupant_presence(room, *user).await;
                self.occupant_presence(room, actor).await;
            }
            SystemEvent::MemberLeft {} => {
                self.occupant_gone(room, actor, actor, "none", None, None)
                    .await;
            }
            SystemEvent::MemberRemoved { user } => {
                self.occupant_gone(room, *user, actor, "none", Some("307"), None)
                    .await;
            }
            SystemEvent::MemberBanned { user, reason } => {
                self.occupant_gone(room, *user, actor, "outcast", Some("301"), reason.clone())
                    .await;
            }
            SystemEvent::MessageDeleted { seq } => {
                self.moderated(room, actor, *seq).await;
            }
            SystemEvent::GroupDissolved {} => {
                // XEP-0045 10.9: every occupant leaves with the room's destruction (the core
                // emptied the room with the group).
                if let Some(joined) = self.rooms.remove(&room) {
                    let x = Element::new("x", NS_MUC_USER)
                        .child(
                            Element::new("item", NS_MUC_USER)
                                .attr("affiliation", "none")
                                .attr("role", "none"),
                        )
                        .child(Element::new("destroy", NS_MUC_USER))
                        .child(status("110"));
                    self.send_unavailable(&joined.jid, &joined.nick, x);
                }
            }
            SystemEvent::InfoChanged {
                title: Some(title), ..
            } => {
                let room_jid = self.room_jid(room);
                let from = match self.username(actor).await {
                    Some(nick) => format!("{room_jid}/{nick}"),
                    None => room_jid,
                };
                let el = Element::new("message", NS_CLIENT)
                    .attr("type", "groupchat")
                    .attr("from", from)
                    .attr("to", self.full.clone())
                    .attr("id", super::random_id())
                    .child(Element::new("subject", NS_CLIENT).text(title.clone()));
                self.send(&el);
            }
            _ => {}
        }
    }

    /// The presence of a member with their current affiliation and role (after a mute, a role
    /// change or joining), under each nick their devices hold in the room. A member with no
    /// device in the room is not an occupant: an affiliation change is told as a message from
    /// the room (XEP-0045 9.3), a mute means nothing until they enter.
    async fn occupant_presence(&mut self, room: ConversationId, user: UserId) {
        let Ok(members) = self.gw.core.members(&self.caller, room).await else {
            return;
        };
        let Some(member) = members.into_iter().find(|m| m.user_id == user) else {
            return;
        };
        self.learn_name(member.user_id, &member.username);
        let Some(joined) = self.rooms.get(&room) else {
            return;
        };
        let room_jid = joined.jid.clone();
        let me = user == self.caller.user_id;
        let mut nicks = joined.nicks_of(user);
        if me && !nicks.contains(&joined.nick) {
            nicks.insert(0, joined.nick.clone());
        }
        if nicks.is_empty() {
            let item = user_item(&member, &self.gw.config.domain).attr("role", "none");
            self.affiliation_notice(room_jid, item);
            return;
        }
        let own_nick = self.rooms.get(&room).map(|j| j.nick.clone());
        for nick in nicks {
            let mut item = user_item(&member, &self.gw.config.domain);
            let mut x = Element::new("x", NS_MUC_USER);
            if me && own_nick.as_deref() == Some(nick.as_str()) {
                item = item.attr("jid", self.full.clone());
                x = x.child(item).child(status("110"));
            } else {
                x = x.child(item);
            }
            let el = Element::new("presence", NS_CLIENT)
                .attr("from", format!("{room_jid}/{nick}"))
                .attr("to", self.full.clone())
                .child(x);
            self.send(&el);
        }
    }

    /// An affiliation change of a member with no device in the room, as a message from the
    /// room carrying the item (XEP-0045 9.3).
    fn affiliation_notice(&mut self, room_jid: String, item: Element) {
        let el = Element::new("message", NS_CLIENT)
            .attr("from", room_jid)
            .attr("to", self.full.clone())
            .attr("id", super::random_id())
            .child(Element::new("x", NS_MUC_USER).child(item));
        self.send(&el);
    }

    /// The unavailable presence of a member who left, was removed or banned, under each nick
    /// their devices held in the room, with the status code saying which and who did it; for
    /// this user, the room is left (the core is told, without a second announcement). A member
    /// with no device in the room gets the affiliation change as a message from the room.
    async fn occupant_gone(
        &mut self,
        room: ConversationId,
        user: UserId,
        actor: UserId,
        affiliation: &str,
        code: Option<&str>,
        reason: Option<String>,
    ) {
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        let room_jid = joined.jid.clone();
        let me = user == self.caller.user_id;
        let mut nicks = joined.nicks_of(user);
        joined.others.retain(|o| o.user_id != user);
        if me {
            nicks.retain(|n| *n != joined.nick);
            nicks.insert(0, joined.nick.clone());
        }
        let mut item = Element::new("item", NS_MUC_USER)
            .attr("affiliation", affiliation)
            .attr("role", "none");
        if code.is_some()
            && let Some(actor_nick) = self.nick_in(room, actor).await
        {
            item = item.child(Element::new("actor", NS_MUC_USER).attr("nick", actor_nick));
        }
        if let Some(reason) = reason {
            item = item.child(Element::new("reason", NS_MUC_USER).text(reason));
        }
        if nicks.is_empty() {
            if code.is_some()
                && let Some(username) = self.username(user).await
            {
                let item = item.attr("jid", format!("{username}@{}", self.domain()));
                self.affiliation_notice(room_jid, item);
            }
            return;
        }
        for (i, nick) in nicks.iter().enumerate() {
            let mut x = Element::new("x", NS_MUC_USER).child(item.clone());
            if let Some(code) = code {
                x = x.child(status(code));
            }
            if me && i == 0 {
                x = x.child(status("110"));
            }
            self.send_unavailable(&room_jid, nick, x);
        }
        if me {
            // Out of the group, so out of the room; the group's message told the others.
            self.rooms.remove(&room);
            if let Err(e) = self
                .gw
                .core
                .leave_room(&self.caller, room, None, false)
                .await
            {
                tracing::debug!(%e, "Could not take a removed member's device out of a room.");
            }
        }
    }

    /// A moderation request (XEP-0425): `<moderate id='stanza-id'>` with a `<retract/>`, the
    /// core's deletion of another member's message (its policy decides: moderators, by rank).
    pub(super) async fn on_moderate(
        &mut self,
        stanza: &Element,
        moderate: &Element,
        room: ConversationId,
        result: Element,
    ) {
        if moderate
            .find("retract", super::actions::NS_RETRACT)
            .is_none()
        {
            return self.iq_refusal(
                stanza,
                refusal("modify", "bad-request", "only retraction is supported"),
            );
        }
        let Some(id) = moderate.get_attr("id").map(str::to_owned) else {
            return self.iq_refusal(stanza, refusal("modify", "bad-request", "no id"));
        };
        let Some(message) = self.target_of(room, &id).await else {
            return self.iq_refusal(
                stanza,
                refusal("cancel", "item-not-found", "no such message"),
            );
        };
        match self
            .gw
            .core
            .delete_message(&self.caller, room, message.seq)
            .await
        {
            Ok(()) => self.send(&result),
            Err(e) => self.iq_refusal(stanza, e.into()),
        }
    }

    /// A message a moderator deleted, to the occupants as a moderated retraction from the room
    /// (XEP-0425), named by its `stanza-id`, with the earlier fastening form beside it.
    async fn moderated(&mut self, room: ConversationId, actor: UserId, seq: tidings_proto::Seq) {
        let Some(id) = self.xmpp_id_of(room, seq, true).await else {
            return;
        };
        let room_jid = self.room_jid(room);
        let by = match self.nick_in(room, actor).await {
            Some(nick) => format!("{room_jid}/{nick}"),
            None => room_jid.clone(),
        };
        let el = Element::new("message", NS_CLIENT)
            .attr("type", "groupchat")
            .attr("from", room_jid)
            .attr("to", self.full.clone())
            .attr("id", super::random_id())
            .child(
                Element::new("retract", super::actions::NS_RETRACT)
                    .attr("id", id.clone())
                    .child(Element::new("moderated", NS_MODERATE).attr("by", by.clone())),
            )
            .child(
                Element::new("apply-to", super::actions::NS_FASTEN)
                    .attr("id", id)
                    .child(
                        Element::new("moderated", NS_MODERATE_0)
                            .attr("by", by)
                            .child(Element::new("retract", super::actions::NS_RETRACT_0)),
                    ),
            )
            .child(
                Element::new("fallback", super::actions::NS_FALLBACK)
                    .attr("for", super::actions::NS_RETRACT),
            )
            .child(Element::new("body", NS_CLIENT).text(MODERATED_FALLBACK));
        self.send(&el);
    }
}
