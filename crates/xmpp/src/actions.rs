//! Corrections (XEP-0308), retractions (XEP-0424), reactions (XEP-0444) and replies
//! (XEP-0461), both ways.
//!
//! Incoming, each becomes the core's message acting on an earlier one, so the same rules as
//! for the web client apply (only the sender edits, within the edit window; the recall rules
//! of `policy.rs`; the reaction key limits): `<replace>` an edit, `<retract>` a recall, and
//! `<reactions>` the adds and removes that turn the user's reactions into the set it names.
//! The earlier message is found by the id the client knows it by: an id this connection
//! remembers, a recent message's `client_msg_id` (the origin-id or stanza id it was sent
//! with), or the server's message id (the `stanza-id` the gateway gave it).
//!
//! Outgoing, the core's edit, recall and reaction messages become a correction with the new
//! body, a retraction with a fallback body, and the reacting user's full set of reactions. In
//! a direct conversation a message is named by the id it was delivered with (the sender's
//! `client_msg_id`); in a room, retractions and reactions name the room's `stanza-id` and
//! corrections the message id, as the XEPs ask. The archive shows a recalled message as a
//! tombstone and the edits as corrections after the message, which already has its latest
//! body.
//!
//! A reply is a message with `reply_to`: incoming, `<reply id>` names the answered message as
//! above, and the quote the sender's fallback marks (XEP-0428) is cut from the body, since
//! Tidings shows the answered message itself; outgoing, the reply names the message by the id
//! the client knows it by and carries a quote of it as a fallback for clients without replies.

use super::{Conn, NS_CLIENT, NS_HINTS, NS_SID, Pending, condition_for};
use crate::xml::Element;
use std::collections::BTreeSet;
use tidings_proto::ws::ClientFrame;
use tidings_proto::{ConversationId, Message, MessageBody, Seq};

pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// The retraction of XEP-0424 before version 0.4, inside a fastening (XEP-0422).
pub(super) const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
pub(super) const NS_FASTEN: &str = "urn:xmpp:fasten:0";
pub const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
/// The most characters of the answered message quoted in a reply's fallback.
const QUOTED_CHARS: usize = 120;
/// Recent messages searched for a `client_msg_id` this connection does not remember.
const SEARCHED: u32 = 200;
/// The body XEP-0424 suggests for clients that do not support retraction.
const RETRACT_FALLBACK: &str =
    "This person attempted to retract a previous message, but it's unsupported by your client.";

/// What an incoming message asks to do to an earlier one, named by `id`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    Correct { id: String, text: String },
    Retract { id: String },
    React { id: String, keys: BTreeSet<String> },
}

impl Action {
    fn id(&self) -> &str {
        match self {
            Action::Correct { id, .. } | Action::Retract { id } | Action::React { id, .. } => id,
        }
    }
}

/// The correction, retraction or reaction a message carries, if any. A retraction's body is
/// the fallback for other clients and never a message of its own; a correction without a body
/// is none.
pub(super) fn action_of(stanza: &Element) -> Option<Action> {
    let retract = stanza
        .find("retract", NS_RETRACT)
        .and_then(|r| r.get_attr("id"))
        .or_else(|| {
            let fastening = stanza.find("apply-to", NS_FASTEN)?;
            fastening.find("retract", NS_RETRACT_0)?;
            fastening.get_attr("id")
        });
    if let Some(id) = retract {
        return Some(Action::Retract { id: id.to_owned() });
    }
    if let Some(reactions) = stanza.find("reactions", NS_REACTIONS) {
        let id = reactions.get_attr("id")?.to_owned();
        let keys = reactions
            .elements()
            .filter(|e| e.is("reaction", NS_REACTIONS))
            .map(|e| e.text_content().trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        return Some(Action::React { id, keys });
    }
    let id = stanza
        .find("replace", NS_CORRECT)?
        .get_attr("id")?
        .to_owned();
    let text = stanza.find("body", NS_CLIENT)?.text_content();
    (!text.is_empty()).then_some(Action::Correct { id, text })
}

/// How an incoming action went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The stanza carries no correction, retraction or reaction.
    None,
    /// Handed to the core (or refused with a stanza error).
    Done,
    /// The message it names is not one the gateway can find; nothing was sent.
    Unknown,
}

/// `body` without the ranges that `stanza`'s fallbacks for `for_ns` mark (XEP-0428: Unicode
/// code point offsets, `start` inclusive, `end` exclusive). Ranges that do not fit the body are
/// ignored; if nothing would be left, the body stays whole.
pub(super) fn strip_fallback(stanza: &Element, body: &str, for_ns: &str) -> String {
    let chars: Vec<char> = body.chars().collect();
    let mut cut = vec![false; chars.len()];
    for fallback in stanza
        .elements()
        .filter(|e| e.is("fallback", NS_FALLBACK) && e.get_attr("for") == Some(for_ns))
    {
        for range in fallback.elements().filter(|e| e.name == "body") {
            let bound = |name: &str| range.get_attr(name).and_then(|v| v.parse::<usize>().ok());
            if let (Some(start), Some(end)) = (bound("start"), bound("end"))
                && start < end
                && end <= chars.len()
            {
                cut[start..end].iter_mut().for_each(|c| *c = true);
            }
        }
    }
    let kept: String = chars
        .iter()
        .zip(&cut)
        .filter(|(_, cut)| !**cut)
        .map(|(c, _)| c)
        .collect();
    if kept.trim().is_empty() {
        body.to_owned()
    } else {
        kept
    }
}

/// The quote of `text` a reply carries as its fallback: each line after `> `, shortened.
fn quote(author: &str, text: &str) -> String {
    let mut short: String = text.chars().take(QUOTED_CHARS).collect();
    if text.chars().count() > QUOTED_CHARS {
        short.push('…');
    }
    let mut out = format!("> {author}:\n");
    for line in short.lines() {
        out.push_str("> ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Conn {
    /// Maps a correction, retraction or reaction in `stanza` onto the core, in `conversation`
    /// (a room when `groupchat`).
    pub(super) async fn on_action(
        &mut self,
        stanza: &Element,
        conversation: ConversationId,
        groupchat: bool,
    ) -> Outcome {
        let Some(action) = action_of(stanza) else {
            return Outcome::None;
        };
        let Some(target) = self.target_of(conversation, action.id()).await else {
            return Outcome::Unknown;
        };
        let base_id = stanza
            .find("origin-id", NS_SID)
            .and_then(|o| o.get_attr("id"))
            .or_else(|| stanza.get_attr("id"))
            .map(str::to_owned)
            .filter(|id| !id.is_empty() && id.len() <= 56)
            .unwrap_or_else(super::random_id);
        let bodies: Vec<MessageBody> = match action {
            Action::Correct { text, .. } => {
                let body = match target.body {
                    MessageBody::Markdown { .. } => MessageBody::Markdown { text },
                    _ => MessageBody::Text { text },
                };
                vec![MessageBody::Edit {
                    target: target.seq,
                    body: Box::new(body),
                }]
            }
            Action::Retract { .. } => vec![MessageBody::Recall { target: target.seq }],
            Action::React { keys, .. } => {
                let current = match self.my_reactions(conversation, target.seq).await {
                    Ok(current) => current,
                    Err(e) => {
                        let (kind, condition) = condition_for(e.code);
                        self.message_error(stanza, kind, condition, &e.message);
                        return Outcome::Done;
                    }
                };
                // Removes first, so a changed reaction never counts against the key limit.
                let removes = current.difference(&keys).map(|key| (key, true));
                let adds = keys.difference(&current).map(|key| (key, false));
                removes
                    .chain(adds)
                    .map(|(key, remove)| MessageBody::Reaction {
                        target: target.seq,
                        key: key.clone(),
                        remove,
                    })
                    .collect()
            }
        };
        if bodies.is_empty() {
            // The set is what the core holds already: no message, so nothing to reflect
            // either (a reflection carries the stanza-id of the message it became).
            return Outcome::Done;
        }
        let number = self.received;
        if self.sm {
            self.unanswered.insert(number);
        }
        let last = bodies.len() - 1;
        for (i, body) in bodies.into_iter().enumerate() {
            // One stanza may become several messages, each with its own idempotency key.
            let client_msg_id = if i == 0 {
                base_id.clone()
            } else {
                format!("{base_id}.{i}")
            };
            let id = self.request_id(Pending::Action {
                stanza: stanza.clone(),
                number: (i == last).then_some(number),
                reflect: groupchat && i == last,
            });
            self.native(&ClientFrame::Send {
                id,
                conversation_id: conversation,
                client_msg_id,
                body,
                reply_to: None,
                thread_root: None,
                mentions: None,
            });
        }
        Outcome::Done
    }

    /// The keys the user reacted with on a message.
    async fn my_reactions(
        &mut self,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<BTreeSet<String>, tidings_core::CoreError> {
        let list = self
            .gw
            .core
            .reactions(&self.caller, conversation, seq)
            .await?;
        Ok(list
            .reactions
            .into_iter()
            .filter(|r| r.users.contains(&self.caller.user_id))
            .map(|r| r.key)
            .collect())
    }

    /// The message an XMPP id names in a conversation: one remembered, a recent one with that
    /// `client_msg_id`, or the one with that server id. An id that names a correction names
    /// the message it corrected (clients that correct a correction use its id).
    pub(super) async fn target_of(
        &mut self,
        conversation: ConversationId,
        id: &str,
    ) -> Option<Message> {
        let mut found = None;
        if let Some(seq) = self.seq_of(conversation, id) {
            found = self
                .message_at(conversation, Some(seq))
                .await
                .filter(|m| m.seq == seq);
        }
        if found.is_none() {
            let limit = SEARCHED.min(self.gw.core.config().limits.max_history_page);
            found = self
                .gw
                .core
                .history(&self.caller, conversation, None, Some(limit))
                .await
                .ok()?
                .messages
                .into_iter()
                .rev()
                .find(|m| m.client_msg_id == id);
        }
        if found.is_none()
            && let Ok(server_id) = id.parse::<i64>()
            && let Some(newest) = self.message_at(conversation, None).await
        {
            let seq = self
                .first_seq(conversation, 1, newest.seq, |m| m.id.0 >= server_id)
                .await;
            found = self
                .message_at(conversation, Some(seq))
                .await
                .filter(|m| m.seq == seq && m.id.0 == server_id);
        }
        let found = found?;
        match found.body {
            MessageBody::Edit { target, .. } => self
                .message_at(conversation, Some(target))
                .await
                .filter(|m| m.seq == target),
            _ => Some(found),
        }
    }

    /// A reply's answered message in `conversation` (XEP-0461) and the body without the quote
    /// its fallback marks. A reply to a message the gateway cannot place is kept as a plain
    /// message with its whole body, quote included.
    pub(super) async fn reply_of(
        &mut self,
        conversation: ConversationId,
        stanza: &Element,
        body: String,
    ) -> (Option<Seq>, String) {
        let Some(id) = stanza
            .find("reply", NS_REPLY)
            .and_then(|r| r.get_attr("id"))
        else {
            return (None, body);
        };
        match self.target_of(conversation, id).await {
            Some(target) => (Some(target.seq), strip_fallback(stanza, &body, NS_REPLY)),
            None => (None, body),
        }
    }

    /// The `<reply/>`, the quoting body and its fallback marker for a message answering the
    /// one at `seq`; `None` when that message cannot be read.
    async fn reply_payload(
        &mut self,
        message: &Message,
        seq: Seq,
        groupchat: bool,
        text: &str,
    ) -> Option<Vec<Element>> {
        let conversation = message.conversation_id;
        let answered = self
            .message_at(conversation, Some(seq))
            .await
            .filter(|m| m.seq == seq)?;
        let id = self.xmpp_id_of(conversation, seq, groupchat).await?;
        let author = self.username(answered.sender_id).await?;
        let to = if groupchat {
            format!("{conversation}@{}/{author}", self.gw.config.muc_domain)
        } else {
            format!("{author}@{}", self.domain())
        };
        let quoted = quote(
            &author,
            super::text_of(&answered.body).as_deref().unwrap_or(""),
        );
        let end = quoted.chars().count();
        Some(vec![
            Element::new("reply", NS_REPLY)
                .attr("to", to)
                .attr("id", id),
            Element::new("body", NS_CLIENT).text(format!("{quoted}{text}")),
            Element::new("fallback", NS_FALLBACK)
                .attr("for", NS_REPLY)
                .child(
                    Element::new("body", NS_FALLBACK)
                        .attr("start", "0")
                        .attr("end", end.to_string()),
                ),
        ])
    }

    /// The id an XMPP client knows a message by: its `client_msg_id` (the id it was delivered
    /// with), or in a room (`by_stanza_id`) the room's `stanza-id`, the server's message id.
    pub(super) async fn xmpp_id_of(
        &mut self,
        conversation: ConversationId,
        seq: Seq,
        by_stanza_id: bool,
    ) -> Option<String> {
        if !by_stanza_id && let Some(id) = self.id_of(conversation, seq) {
            return Some(id.to_owned());
        }
        let message = self
            .message_at(conversation, Some(seq))
            .await
            .filter(|m| m.seq == seq)?;
        Some(if by_stanza_id {
            message.id.to_string()
        } else {
            message.client_msg_id
        })
    }

    /// What a message becomes inside an XMPP `<message>` (the children besides the ids):
    /// a body for content, a correction, a retraction with its fallback, the reacting user's
    /// reactions, or a tombstone for a recalled message. `None` for what XMPP does not show.
    pub(super) async fn payload(
        &mut self,
        message: &Message,
        groupchat: bool,
    ) -> Option<Vec<Element>> {
        let conversation = message.conversation_id;
        Some(match &message.body {
            MessageBody::Edit { target, body } => {
                let text = super::text_of(body)?;
                let id = self.xmpp_id_of(conversation, *target, false).await?;
                vec![
                    Element::new("body", NS_CLIENT).text(text),
                    Element::new("replace", NS_CORRECT).attr("id", id),
                ]
            }
            MessageBody::Recall { target } => {
                let id = self.xmpp_id_of(conversation, *target, groupchat).await?;
                vec![
                    Element::new("retract", NS_RETRACT).attr("id", id),
                    Element::new("fallback", NS_FALLBACK).attr("for", NS_RETRACT),
                    Element::new("body", NS_CLIENT).text(RETRACT_FALLBACK),
                    Element::new("store", NS_HINTS),
                ]
            }
            MessageBody::Reaction { target, .. } => {
                let id = self.xmpp_id_of(conversation, *target, groupchat).await?;
                // The full set of the reacting user, as the core holds it now.
                let list = self
                    .gw
                    .core
                    .reactions(&self.caller, conversation, *target)
                    .await
                    .ok()?;
                let mut reactions = Element::new("reactions", NS_REACTIONS).attr("id", id);
                for r in list.reactions {
                    if r.users.contains(&message.sender_id) {
                        reactions =
                            reactions.child(Element::new("reaction", NS_REACTIONS).text(r.key));
                    }
                }
                vec![reactions, Element::new("store", NS_HINTS)]
            }
            MessageBody::Deleted {} => vec![
                Element::new("retracted", NS_RETRACT).attr("stamp", super::mam::stamp(message.ts)),
            ],
            body => {
                let text = super::text_of(body)?;
                if let Some(seq) = message.reply_to
                    && let Some(reply) = self.reply_payload(message, seq, groupchat, &text).await
                {
                    return Some(reply);
                }
                vec![Element::new("body", NS_CLIENT).text(text)]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{StreamEvent, StreamParser};

    fn stanza(xml: &str) -> Element {
        let mut parser = StreamParser::new(crate::XmppConfig::default().limits());
        parser.feed(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        );
        parser.feed(xml.as_bytes());
        match parser.next_event().unwrap() {
            Some(StreamEvent::Open(_)) => {}
            other => panic!("{other:?}"),
        }
        match parser.next_event().unwrap() {
            Some(StreamEvent::Stanza(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_fallbacks_are_cut_by_code_points() {
        let reply = stanza(
            "<message><body>&gt; é:\nYes</body>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='5'/></fallback>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:other'><body start='5' end='8'/></fallback>\
             </message>",
        );
        assert_eq!(strip_fallback(&reply, "> é:\nYes", NS_REPLY), "Yes");
        // Out of range, or everything: the body stays whole.
        let odd = stanza(
            "<message><body>Hi</body>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='9'/></fallback>\
             </message>",
        );
        assert_eq!(strip_fallback(&odd, "Hi", NS_REPLY), "Hi");
        let all = stanza(
            "<message><body>Hi</body>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='2'/></fallback>\
             </message>",
        );
        assert_eq!(strip_fallback(&all, "Hi", NS_REPLY), "Hi");
        assert_eq!(quote("bob", "one\ntwo"), "> bob:\n> one\n> two\n");
        assert!(quote("bob", &"x".repeat(500)).ends_with("…\n"));
    }

    #[test]
    fn actions_parse() {
        let correct = stanza(
            "<message id='2'><body>fixed</body><replace id='1' xmlns='urn:xmpp:message-correct:0'/></message>",
        );
        assert_eq!(
            action_of(&correct),
            Some(Action::Correct {
                id: "1".into(),
                text: "fixed".into()
            })
        );
        // The fallback body of a retraction is not a correction or a message.
        let retract = stanza(
            "<message id='3'><retract id='1' xmlns='urn:xmpp:message-retract:1'/>\
             <fallback xmlns='urn:xmpp:fallback:0'/><body>retracted</body></message>",
        );
        assert_eq!(
            action_of(&retract),
            Some(Action::Retract { id: "1".into() })
        );
        let old = stanza(
            "<message id='3'><apply-to id='9' xmlns='urn:xmpp:fasten:0'>\
             <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>",
        );
        assert_eq!(action_of(&old), Some(Action::Retract { id: "9".into() }));
        let react = stanza(
            "<message id='4'><reactions id='1' xmlns='urn:xmpp:reactions:0'>\
             <reaction>👍</reaction><reaction> 🐢 </reaction><reaction/></reactions></message>",
        );
        assert_eq!(
            action_of(&react),
            Some(Action::React {
                id: "1".into(),
                keys: ["👍".to_owned(), "🐢".to_owned()].into()
            })
        );
        let plain = stanza("<message id='5'><body>hi</body></message>");
        assert_eq!(action_of(&plain), None);
        let empty = stanza(
            "<message id='6'><replace id='1' xmlns='urn:xmpp:message-correct:0'/></message>",
        );
        assert_eq!(action_of(&empty), None);
    }
}
