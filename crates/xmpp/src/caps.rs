//! Entity capabilities (XEP-0115) of the connected client, learned so that personal eventing
//! sends it the notifications it asked for (XEP-0163 section 4.3: a `<node>+notify` feature is
//! the client's interest in that node).
//!
//! A client announces its capabilities as a `<c/>` in its presence, a hash of its disco#info.
//! The gateway asks that client for its disco#info once per announced hash and keeps the
//! answer for the connection. Answers are not shared between connections: that would need the
//! hash checked against the answer (XEP-0115 section 5.4) so that one client cannot poison what
//! another is believed to want, and one small query per sign-in costs less than that code.

use super::{Conn, NS_CLIENT, random_id};
use crate::xml::Element;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// The suffix of a feature that asks for a node's notifications.
const NOTIFY: &str = "+notify";
/// The most nodes one client's interests are kept for; the rest are ignored.
const MAX_INTERESTS: usize = 64;
/// Ids of the gateway's capability queries start with this.
const QUERY_PREFIX: &str = "caps-";

/// What the gateway knows of the client's capabilities.
#[derive(Debug, Default)]
pub(super) struct Caps {
    /// The `ver` the client announced last, which was asked about.
    asked: Option<String>,
    /// The id of the query in flight.
    pending: Option<String>,
    /// The nodes the client wants notifications of; empty until it said.
    interests: Vec<String>,
}

impl Caps {
    /// Whether the client wants notifications of `node`.
    pub(super) fn wants(&self, node: &str) -> bool {
        self.interests.iter().any(|n| n == node)
    }
}

/// The nodes a disco#info answer asks notifications of, in its order, without repeats.
fn interests_of(answer: &Element) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    let Some(query) = answer.find("query", NS_DISCO_INFO) else {
        return nodes;
    };
    for feature in query.elements().filter(|e| e.is("feature", NS_DISCO_INFO)) {
        if let Some(node) = feature.get_attr("var").and_then(|v| v.strip_suffix(NOTIFY))
            && !node.is_empty()
            && !nodes.iter().any(|n| n == node)
            && nodes.len() < MAX_INTERESTS
        {
            nodes.push(node.to_owned());
        }
    }
    nodes
}

impl Conn {
    /// An available presence: if it announces capabilities not asked about yet, asks the
    /// client for them (XEP-0115 section 6.2, a disco#info query on `node#ver`).
    pub(super) fn on_caps(&mut self, presence: &Element) {
        let Some(c) = presence.find("c", NS_CAPS) else {
            return;
        };
        let (Some(node), Some(ver)) = (c.get_attr("node"), c.get_attr("ver")) else {
            return;
        };
        if self.caps.asked.as_deref() == Some(ver) {
            return;
        }
        let id = format!("{QUERY_PREFIX}{}", random_id());
        let query = Element::new("iq", NS_CLIENT)
            .attr("type", "get")
            .attr("id", id.clone())
            .attr("from", self.domain().to_owned())
            .attr("to", self.full.clone())
            .child(Element::new("query", NS_DISCO_INFO).attr("node", format!("{node}#{ver}")));
        self.caps.asked = Some(ver.to_owned());
        self.caps.pending = Some(id);
        self.send(&query);
    }

    /// Takes an IQ answer if it answers the capability query: the client's interests are
    /// replaced by what it says, and the nodes new among them get their last items. `false`
    /// when the answer is for something else.
    pub(super) async fn on_caps_answer(&mut self, answer: &Element) -> bool {
        let id = answer.get_attr("id");
        if id.is_none_or(|id| !id.starts_with(QUERY_PREFIX)) || id != self.caps.pending.as_deref() {
            return false;
        }
        self.caps.pending = None;
        if answer.get_attr("type") != Some("result") {
            // A client that cannot say wants nothing; it may still retrieve items itself.
            return true;
        }
        let interests = interests_of(answer);
        let new: Vec<String> = interests
            .iter()
            .filter(|n| !self.caps.wants(n))
            .cloned()
            .collect();
        self.caps.interests = interests;
        self.send_last_items(&new).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interests_are_the_notify_features() {
        let answer = Element::new("iq", NS_CLIENT).child(
            Element::new("query", NS_DISCO_INFO)
                .child(Element::new("identity", NS_DISCO_INFO).attr("category", "client"))
                .child(Element::new("feature", NS_DISCO_INFO).attr("var", "urn:xmpp:ping"))
                .child(
                    Element::new("feature", NS_DISCO_INFO)
                        .attr("var", "urn:xmpp:avatar:metadata+notify"),
                )
                .child(
                    Element::new("feature", NS_DISCO_INFO)
                        .attr("var", "urn:xmpp:avatar:metadata+notify"),
                )
                .child(Element::new("feature", NS_DISCO_INFO).attr("var", "+notify"))
                .child(
                    Element::new("feature", NS_DISCO_INFO)
                        .attr("var", "http://jabber.org/protocol/nick+notify"),
                ),
        );
        assert_eq!(
            interests_of(&answer),
            [
                "urn:xmpp:avatar:metadata",
                "http://jabber.org/protocol/nick"
            ]
        );
        let many = (0..100).fold(Element::new("query", NS_DISCO_INFO), |q, i| {
            q.child(Element::new("feature", NS_DISCO_INFO).attr("var", format!("n{i}+notify")))
        });
        let answer = Element::new("iq", NS_CLIENT).child(many);
        assert_eq!(interests_of(&answer).len(), MAX_INTERESTS);
        assert!(interests_of(&Element::new("iq", NS_CLIENT)).is_empty());
    }
}
