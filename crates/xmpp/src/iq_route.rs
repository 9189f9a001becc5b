//! IQs between users' resources (RFC 6121 8.5.3): an IQ `get` or `set` to another full JID of
//! our domain travels to that resource's device as a core device signal of kind
//! [`KIND_IQ`], and its `result` or `error` comes back the same way. The core decides who may
//! signal whom (`policy::device_signal`); this module only keeps what routing needs:
//!
//! - **Outgoing**: IQs this connection's client sent and that wait for an answer, by target
//!   device and id. An answer is delivered only when it comes from the device asked, with the
//!   id asked, once; anything else (an unsolicited or repeated result) is dropped. An IQ left
//!   unanswered for [`TIMEOUT`] is answered with `recipient-unavailable`.
//! - **Incoming**: IQs delivered to this connection's client, by the JID they came from and
//!   their id. Only a `result` or `error` matching one of these is routed back, so a client
//!   cannot push answers to a device that asked it nothing.
//!
//! Both tables hold at most [`MAX_PENDING`] entries; past that a new IQ is refused with
//! `resource-constraint`.
//!
//! Messages to another full JID that carry nothing the core keeps (no body) and something it
//! cannot map (a marker or receipt for a message id this connection cannot place, a reaction,
//! a retraction, any other extension) travel the same way as signals of kind
//! [`KIND_MESSAGE`]: delivered to that resource if it is connected, never stored, and never
//! answered. A message with a body always goes through the core.

use super::*;
use tidings_proto::DeviceId;

/// The `kind` of a device signal that carries an XMPP IQ stanza (its payload is the stanza's
/// XML as a JSON string).
pub(crate) const KIND_IQ: &str = "xmpp.iq";
/// The `kind` of a device signal that carries a bodiless XMPP message stanza the core has no
/// meaning for (its payload is the stanza's XML as a JSON string).
pub(crate) const KIND_MESSAGE: &str = "xmpp.message";
/// Routed IQs waiting for an answer, per connection and direction, at most.
const MAX_PENDING: usize = 64;
/// How long a routed IQ waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(60);

/// An IQ this client sent to another resource.
struct Outgoing {
    id: String,
    to_user: UserId,
    to_device: DeviceId,
    /// The JID the client addressed, which the answer's `from` repeats.
    to_jid: String,
    until: Instant,
}

/// An IQ another resource sent this client.
struct Incoming {
    id: String,
    from_user: UserId,
    from_device: DeviceId,
    from_jid: String,
    until: Instant,
}

#[derive(Default)]
pub(super) struct Routes {
    outgoing: VecDeque<Outgoing>,
    incoming: VecDeque<Incoming>,
}

/// Whether two JIDs name the same resource: the bare part compared without case (local parts
/// and domains are case-insensitive here), the resource exactly.
fn same_jid(a: &str, b: &str) -> bool {
    let (a_bare, a_res) = a.split_once('/').unwrap_or((a, ""));
    let (b_bare, b_res) = b.split_once('/').unwrap_or((b, ""));
    a_bare.eq_ignore_ascii_case(b_bare) && a_res == b_res
}

impl Routes {
    fn expire_incoming(&mut self, now: Instant) {
        self.incoming.retain(|i| i.until > now);
    }

    /// Remembers an IQ sent to `to_jid`; false when too many wait already.
    fn add_outgoing(
        &mut self,
        id: &str,
        to_user: UserId,
        to_device: DeviceId,
        to_jid: &str,
        now: Instant,
    ) -> bool {
        if self.outgoing.len() >= MAX_PENDING {
            return false;
        }
        self.outgoing.push_back(Outgoing {
            id: id.to_owned(),
            to_user,
            to_device,
            to_jid: to_jid.to_owned(),
            until: now + TIMEOUT,
        });
        true
    }

    /// The IQ an answer from `user`'s `device` with `id` answers, forgotten now.
    fn take_outgoing(&mut self, user: UserId, device: DeviceId, id: &str) -> Option<Outgoing> {
        let at = self
            .outgoing
            .iter()
            .position(|o| o.to_user == user && o.to_device == device && o.id == id)?;
        self.outgoing.remove(at)
    }

    /// Remembers an IQ delivered from `from_jid`; false when too many wait already.
    fn add_incoming(
        &mut self,
        id: &str,
        from_user: UserId,
        from_device: DeviceId,
        from_jid: &str,
        now: Instant,
    ) -> bool {
        self.expire_incoming(now);
        if self.incoming.len() >= MAX_PENDING {
            return false;
        }
        self.incoming.push_back(Incoming {
            id: id.to_owned(),
            from_user,
            from_device,
            from_jid: from_jid.to_owned(),
            until: now + TIMEOUT,
        });
        true
    }

    /// The delivered IQ that an answer to `to_jid` with `id` answers, forgotten now.
    fn take_incoming(&mut self, to_jid: &str, id: &str, now: Instant) -> Option<Incoming> {
        self.expire_incoming(now);
        let at = self
            .incoming
            .iter()
            .position(|i| i.id == id && same_jid(&i.from_jid, to_jid))?;
        self.incoming.remove(at)
    }

    /// Outgoing IQs whose time is up, forgotten now.
    fn expired_outgoing(&mut self, now: Instant) -> Vec<Outgoing> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.outgoing.drain(..).partition(|o| o.until <= now);
        self.outgoing = kept.into();
        gone
    }

    /// When the next outgoing IQ times out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.outgoing.iter().map(|o| o.until).min()
    }
}

/// An IQ error from `from` to `to` with `id` (for IQs of which only that much is kept).
fn iq_error_for(id: &str, from: &str, to: &str, kind: &str, condition: &str) -> Element {
    let asked = Element::new("iq", NS_CLIENT)
        .attr("id", id)
        .attr("from", to)
        .attr("to", from);
    iq_error(&asked, kind, condition, None)
}

/// The stanza error for a refused device signal. A refusal by the policy and a device with
/// no live connection look alike, as RFC 6121 8.5.3.1 has it for a resource that is not there
/// (`service-unavailable`), so neither a block nor a setting is revealed.
fn condition_for_signal(code: ErrorCode) -> (&'static str, &'static str) {
    match code {
        ErrorCode::NotFound | ErrorCode::Forbidden => ("cancel", "service-unavailable"),
        other => condition_for(other),
    }
}

impl Conn {
    /// Sends an IQ `get` or `set` addressed to another resource (`to`, a full JID of our
    /// domain that is not this connection's) to that resource's device.
    pub(super) async fn route_iq(&mut self, stanza: &Element, to: &str) {
        let id = stanza.get_attr("id").unwrap_or_default().to_owned();
        let Some((to_user, to_device)) = self.device_of_jid(to).await else {
            self.send(&iq_error(stanza, "cancel", "service-unavailable", None));
            return;
        };
        if !self
            .routes
            .add_outgoing(&id, to_user, to_device, to, Instant::now())
        {
            self.send(&iq_error(
                stanza,
                "wait",
                "resource-constraint",
                Some("too many IQs wait for answers"),
            ));
            return;
        }
        let request = self.request_id(Pending::RoutedIq {
            to_user,
            to_device,
            iq_id: id,
        });
        self.signal_iq(request, to_user, to_device, stanza);
    }

    fn signal_iq(&mut self, request: String, to_user: UserId, to_device: DeviceId, iq: &Element) {
        self.signal_stanza(request, to_user, to_device, KIND_IQ, iq);
    }

    /// Sends a stanza to a device as a signal of `kind`.
    fn signal_stanza(
        &mut self,
        request: String,
        to_user: UserId,
        to_device: DeviceId,
        kind: &str,
        stanza: &Element,
    ) {
        // Written with its namespace, so the payload stands alone for native receivers too.
        let mut xml = String::with_capacity(256);
        stanza.write_to(&mut xml, "");
        self.native(&ClientFrame::DeviceSignal {
            id: request,
            to_user,
            to_device,
            kind: kind.into(),
            payload: serde_json::Value::String(xml),
        });
    }

    /// The stanza a device signalled, parsed under this gateway's limits; `None` (logged)
    /// when the payload is not one.
    fn signalled_stanza(&self, payload: &serde_json::Value) -> Option<Element> {
        let xml = payload.as_str()?;
        let scope = HashMap::from([(String::new(), NS_CLIENT.to_owned())]);
        let parsed = crate::xml::parse_element(xml.as_bytes(), &scope, self.gw.config.limits());
        if parsed.is_err() {
            tracing::debug!("Unreadable signalled stanza dropped.");
        }
        parsed.ok()
    }

    /// The user and device a full JID of our domain names, if both exist.
    async fn device_of_jid(&mut self, jid: &str) -> Option<(UserId, DeviceId)> {
        let (bare, resource) = jid.split_once('/')?;
        let local = self.local_user(bare)?.to_owned();
        let user = self.user_id(&local).await?;
        let device = self.device_of_resource(user, resource).await?;
        Some((user, device))
    }

    /// The core refused to hand an IQ to its target: answer the client.
    pub(super) fn routed_iq_refused(
        &mut self,
        to_user: UserId,
        to_device: DeviceId,
        iq_id: &str,
        code: ErrorCode,
    ) {
        let Some(out) = self.routes.take_outgoing(to_user, to_device, iq_id) else {
            return;
        };
        let (kind, condition) = condition_for_signal(code);
        let full = self.full.clone();
        self.send(&iq_error_for(&out.id, &full, &out.to_jid, kind, condition));
    }

    /// Answers the client's IQs whose answer did not come in time.
    pub(super) fn expire_routed_iqs(&mut self) {
        let full = self.full.clone();
        for out in self.routes.expired_outgoing(Instant::now()) {
            self.send(&iq_error_for(
                &out.id,
                &full,
                &out.to_jid,
                "wait",
                "recipient-unavailable",
            ));
        }
    }

    /// The client answered an IQ (`result` or `error`): when it answers one routed to it,
    /// the answer goes back to the asking device; anything else is dropped.
    pub(super) fn answer_routed_iq(&mut self, stanza: &Element) {
        let (Some(to), Some(id)) = (stanza.get_attr("to"), stanza.get_attr("id")) else {
            return;
        };
        let Some(asked) = self.routes.take_incoming(to, id, Instant::now()) else {
            return;
        };
        let request = self.request_id(Pending::Quiet);
        self.signal_iq(request, asked.from_user, asked.from_device, stanza);
    }

    /// A device signalled this connection an IQ: deliver a question (and remember it), or an
    /// answer to a question this client asked that device.
    pub(super) async fn on_routed_iq(
        &mut self,
        from_user: UserId,
        from_device: DeviceId,
        payload: serde_json::Value,
    ) {
        let Some(mut iq) = self.signalled_stanza(&payload) else {
            return;
        };
        let Some(id) = iq.get_attr("id").map(str::to_owned) else {
            return;
        };
        if !iq.is("iq", NS_CLIENT) {
            return;
        }
        match iq.get_attr("type") {
            Some("get" | "set") => {
                let Some(from_jid) = self.jid_of_device(from_user, from_device).await else {
                    return;
                };
                let now = Instant::now();
                if !self
                    .routes
                    .add_incoming(&id, from_user, from_device, &from_jid, now)
                {
                    let refusal =
                        iq_error_for(&id, &from_jid, &self.full, "wait", "resource-constraint");
                    let request = self.request_id(Pending::Quiet);
                    self.signal_iq(request, from_user, from_device, &refusal);
                    return;
                }
                iq.set_attr("from", from_jid);
                iq.set_attr("to", self.full.clone());
                self.send(&iq);
            }
            Some("result" | "error") => {
                let Some(out) = self.routes.take_outgoing(from_user, from_device, &id) else {
                    return;
                };
                iq.set_attr("from", out.to_jid);
                iq.set_attr("to", self.full.clone());
                self.send(&iq);
            }
            _ => {}
        }
    }

    /// Relays a bodiless message to another user's resource (`to`, a full JID of our domain):
    /// dropped when the resource is unknown, as an ephemeral message would be.
    pub(super) async fn route_message(&mut self, stanza: &Element, to: &str) {
        let Some((to_user, to_device)) = self.device_of_jid(to).await else {
            return;
        };
        let request = self.request_id(Pending::Quiet);
        self.signal_stanza(request, to_user, to_device, KIND_MESSAGE, stanza);
    }

    /// A device relayed this connection a bodiless message: delivered from the sender's full
    /// JID. Anything but a message without a body is dropped (the core stores every body).
    pub(super) async fn on_routed_message(
        &mut self,
        from_user: UserId,
        from_device: DeviceId,
        payload: serde_json::Value,
    ) {
        let Some(mut message) = self.signalled_stanza(&payload) else {
            return;
        };
        if !message.is("message", NS_CLIENT) || message.find("body", NS_CLIENT).is_some() {
            return;
        }
        let Some(from_jid) = self.jid_of_device(from_user, from_device).await else {
            return;
        };
        message.set_attr("from", from_jid);
        message.set_attr("to", self.full.clone());
        self.send(&message);
    }

    /// The device a resource of `user` names: the device of that XMPP resource (named
    /// `XMPP <resource>` at binding), else a device named as the resource (a device of another
    /// transport, which [`Conn::jid_of_device`] names so).
    async fn device_of_resource(&mut self, user: UserId, resource: &str) -> Option<DeviceId> {
        let bound: String = format!("XMPP {resource}").trim().chars().take(64).collect();
        for name in [bound.as_str(), resource] {
            if let Ok(Some(device)) = self.gw.core.device_named(user, name).await {
                return Some(device);
            }
        }
        None
    }

    /// The full JID of `user`'s device `device`: their username, and as the resource the
    /// XMPP resource the device was bound as (its name without `XMPP `), or the name of a
    /// device of another transport.
    async fn jid_of_device(&mut self, user: UserId, device: DeviceId) -> Option<String> {
        let name = self.username(user).await?;
        let resource = match self.device_names.get(&device) {
            Some(resource) => resource.clone(),
            None => {
                let name = self.gw.core.device_name(user, device).await.ok()??;
                let resource = name.strip_prefix("XMPP ").unwrap_or(&name).to_owned();
                if self.device_names.len() >= MAX_PENDING {
                    self.device_names.clear();
                }
                self.device_names.insert(device, resource.clone());
                resource
            }
        };
        Some(format!("{name}@{}/{resource}", self.domain()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_only_from_the_device_asked_once() {
        let mut routes = Routes::default();
        let now = Instant::now();
        let (bob, phone) = (UserId(2), DeviceId(20));
        assert!(routes.add_outgoing("q1", bob, phone, "bob@x/phone", now));
        assert!(routes.take_outgoing(bob, DeviceId(21), "q1").is_none());
        assert!(routes.take_outgoing(UserId(3), phone, "q1").is_none());
        assert!(routes.take_outgoing(bob, phone, "q2").is_none());
        assert_eq!(
            routes.take_outgoing(bob, phone, "q1").unwrap().to_jid,
            "bob@x/phone"
        );
        assert!(routes.take_outgoing(bob, phone, "q1").is_none());
    }

    #[test]
    fn only_questions_received_can_be_answered() {
        let mut routes = Routes::default();
        let now = Instant::now();
        assert!(routes.take_incoming("alice@x/pc", "q1", now).is_none());
        assert!(routes.add_incoming("q1", UserId(1), DeviceId(10), "alice@x/pc", now));
        assert!(routes.take_incoming("alice@x/phone", "q1", now).is_none());
        assert!(routes.take_incoming("alice@x/pc", "q2", now).is_none());
        let asked = routes.take_incoming("Alice@X/pc", "q1", now).unwrap();
        assert_eq!(
            (asked.from_user, asked.from_device),
            (UserId(1), DeviceId(10))
        );
        assert!(routes.take_incoming("alice@x/pc", "q1", now).is_none());
        // Too late.
        assert!(routes.add_incoming("q3", UserId(1), DeviceId(10), "alice@x/pc", now));
        assert!(
            routes
                .take_incoming("alice@x/pc", "q3", now + TIMEOUT)
                .is_none()
        );
    }

    #[test]
    fn tables_are_bounded_and_time_out() {
        let mut routes = Routes::default();
        let now = Instant::now();
        for i in 0..MAX_PENDING {
            let id = i.to_string();
            assert!(routes.add_outgoing(&id, UserId(2), DeviceId(20), "bob@x/a", now));
            assert!(routes.add_incoming(&id, UserId(1), DeviceId(10), "alice@x/b", now));
        }
        assert!(!routes.add_outgoing("more", UserId(2), DeviceId(20), "bob@x/a", now));
        assert!(!routes.add_incoming("more", UserId(1), DeviceId(10), "alice@x/b", now));
        assert_eq!(routes.next_deadline(), Some(now + TIMEOUT));
        assert!(routes.expired_outgoing(now).is_empty());
        assert_eq!(routes.expired_outgoing(now + TIMEOUT).len(), MAX_PENDING);
        assert_eq!(routes.next_deadline(), None);
        // Expired questions make room.
        assert!(routes.add_incoming("later", UserId(1), DeviceId(10), "alice@x/b", now + TIMEOUT));
    }
}
