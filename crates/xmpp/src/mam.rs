//! Message Archive Management (XEP-0313) over the Tidings history.
//!
//! A query with the form field `with` reads the direct conversation with that peer; one
//! without it reads the user's whole archive, every direct conversation merged by message id
//! (group messages are in the rooms' archives, as XEP-0313 section 4 has it). A query is
//! bounded by `start`/`end` and paged with Result Set Management (XEP-0059): `max`, `after`
//! and `before` (an empty `before` is the last page). Ids are stanza-ids, which are the
//! server's message ids. The history is read through `Core::history`, a page before a sequence
//! number, so every read is authorized by the core; a bound by id or time becomes a sequence
//! number by binary search (ids and times grow with the sequence within a conversation), a few
//! single-message reads.

use super::{Conn, NS_CLIENT, NS_FORWARD, condition_for, iq_error};
use crate::xml::Element;
use tidings_proto::rest::ConversationKind;
use tidings_proto::{ConversationId, Message, Seq};

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
pub(super) const NS_DELAY: &str = "urn:xmpp:delay";
/// Archived messages with the username of their direct conversation's peer (`None`: a room's),
/// and whether the page reaches the end of the range in the direction of paging.
type ArchivePage = (Vec<(Message, Option<String>)>, bool);
/// Results per page when the client gives no `max`.
const DEFAULT_MAX: u32 = 50;

/// A parsed query.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    query_id: Option<String>,
    with: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    max: Option<u32>,
    after: Option<String>,
    /// `Some(None)`: an empty `<before/>`, the last page.
    before: Option<Option<String>>,
}

fn millis(text: &str) -> Result<i64, &'static str> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| "start and end are XEP-0082 date-times")
}

fn parse(query: &Element) -> Result<Query, &'static str> {
    let mut out = Query {
        query_id: query.get_attr("queryid").map(str::to_owned),
        ..Query::default()
    };
    if let Some(form) = query.find("x", NS_DATA) {
        for field in form.elements().filter(|e| e.is("field", NS_DATA)) {
            let value = field
                .find("value", NS_DATA)
                .map(Element::text_content)
                .unwrap_or_default();
            match field.get_attr("var").unwrap_or_default() {
                "FORM_TYPE" if value.trim() != NS_MAM => return Err("unknown FORM_TYPE"),
                "with" => out.with = Some(value.trim().to_owned()),
                "start" => out.start = Some(millis(&value)?),
                "end" => out.end = Some(millis(&value)?),
                "FORM_TYPE" => {}
                _ => return Err("unknown field"),
            }
        }
    }
    if let Some(set) = query.find("set", NS_RSM) {
        if let Some(max) = set.find("max", NS_RSM) {
            out.max = Some(max.text_content().trim().parse().map_err(|_| "bad max")?);
        }
        out.after = set
            .find("after", NS_RSM)
            .map(|a| a.text_content().trim().to_owned());
        out.before = set.find("before", NS_RSM).map(|b| {
            let id = b.text_content().trim().to_owned();
            (!id.is_empty()).then_some(id)
        });
    }
    Ok(out)
}

pub(super) fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

impl Conn {
    /// Answers a MAM query on the user's archive (`<iq type='set'><query xmlns='urn:xmpp:mam:2'>`).
    pub(super) async fn on_mam(&mut self, stanza: &Element, payload: &Element) {
        let query = match parse(payload) {
            Ok(q) => q,
            Err(text) => {
                self.send(&iq_error(stanza, "modify", "bad-request", Some(text)));
                return;
            }
        };
        let max = self.page_size(&query);
        let Some(with) = query.with.as_deref() else {
            let page = self.archive_page(&query, max).await;
            self.answer_mam(stanza, &query, None, page).await;
            return;
        };
        let Some(peer) = self.local_user(with) else {
            self.send(&iq_error(
                stanza,
                "cancel",
                "item-not-found",
                Some("'with' names a user of this server"),
            ));
            return;
        };
        let peer = peer.to_owned();
        let Some(peer_id) = self.user_id(&peer).await else {
            self.send(&iq_error(stanza, "cancel", "item-not-found", None));
            return;
        };
        let conversation = match self.direct_with(peer_id).await {
            Ok(id) => id,
            Err(e) => {
                let (kind, condition) = condition_for(e.code);
                self.send(&iq_error(stanza, kind, condition, None));
                return;
            }
        };
        let page = self
            .mam_page(conversation, &query, max)
            .await
            .map(|(messages, complete)| {
                let items = messages
                    .into_iter()
                    .map(|m| (m, Some(peer.clone())))
                    .collect();
                (items, complete)
            });
        self.answer_mam(stanza, &query, None, page).await;
    }

    /// Answers a MAM query to a room JID (XEP-0313 section 5) from the group's history; the
    /// caller's membership was checked by the MUC module and is checked again by the core.
    pub(super) async fn on_room_mam(
        &mut self,
        stanza: &Element,
        payload: &Element,
        room: ConversationId,
    ) {
        let query = match parse(payload) {
            Ok(q) => q,
            Err(text) => {
                self.send(&iq_error(stanza, "modify", "bad-request", Some(text)));
                return;
            }
        };
        if query.with.is_some() {
            self.send(&iq_error(
                stanza,
                "cancel",
                "feature-not-implemented",
                Some("filtering a room's archive by occupant is not available"),
            ));
            return;
        }
        let max = self.page_size(&query);
        let page = self
            .mam_page(room, &query, max)
            .await
            .map(|(messages, complete)| {
                (messages.into_iter().map(|m| (m, None)).collect(), complete)
            });
        self.answer_mam(stanza, &query, Some(room), page).await;
    }

    /// Results per page: the client's `max` within the server's history page limit.
    fn page_size(&self, query: &Query) -> u32 {
        query
            .max
            .unwrap_or(DEFAULT_MAX)
            .clamp(1, self.gw.core.config().limits.max_history_page)
    }

    /// A page of the user's whole archive: the same page taken from every direct conversation
    /// that can have messages in range, merged by message id (which grows with time across
    /// conversations) and cut to `max` from the side the query pages from.
    async fn archive_page(&mut self, query: &Query, max: u32) -> Result<ArchivePage, &'static str> {
        let parse_id = |id: &str| id.parse::<i64>().map_err(|_| "unknown id");
        let after = query.after.as_deref().map(parse_id).transpose()?;
        if let Some(Some(before)) = &query.before {
            parse_id(before)?;
        }
        let list = self
            .gw
            .core
            .conversations(&self.caller)
            .await
            .map_err(|_| "archive unavailable")?;
        let mut merged = Vec::new();
        let mut complete = true;
        for conversation in list.conversations {
            if conversation.kind != ConversationKind::Direct {
                continue;
            }
            let (Some(peer), Some(last)) = (conversation.peer, conversation.last_message) else {
                continue;
            };
            // Conversations whose newest message is before the range are skipped unread, so a
            // client catching up (`after` its last id) reads only those with something new.
            if after.is_some_and(|a| last.id.0 <= a) || query.start.is_some_and(|s| last.ts < s) {
                continue;
            }
            let (messages, done) = self.mam_page(conversation.id, query, max).await?;
            complete &= done;
            merged.extend(
                messages
                    .into_iter()
                    .map(|m| (m, Some(peer.username.clone()))),
            );
        }
        merged.sort_by_key(|(m, _)| m.id.0);
        let max = max as usize;
        if merged.len() > max {
            complete = false;
            if query.before.is_some() {
                merged.drain(..merged.len() - max);
            } else {
                merged.truncate(max);
            }
        }
        Ok((merged, complete))
    }

    /// Sends the results and the `<fin/>` of a query: messages of direct conversations with
    /// their peer's username, or of `room` (results from the room), or the error that ended
    /// the query.
    async fn answer_mam(
        &mut self,
        stanza: &Element,
        query: &Query,
        room: Option<ConversationId>,
        page: Result<ArchivePage, &'static str>,
    ) {
        let page = match page {
            Ok(page) => page,
            Err(text) => {
                self.send(&iq_error(stanza, "cancel", "item-not-found", Some(text)));
                return;
            }
        };
        let room_jid = room.map(|room| format!("{room}@{}", self.gw.config.muc_domain));
        let (messages, complete) = page;
        for (message, peer) in &messages {
            // Corrections, retractions and reactions come as such, a recalled message as a
            // tombstone (XEP-0424), and an edited one with its latest body.
            let archived = match peer {
                Some(peer) => {
                    let Some(payload) = self.payload(message, false).await else {
                        continue;
                    };
                    let peer_jid = format!("{peer}@{}", self.domain());
                    let mine = message.sender_id == self.caller.user_id;
                    let (from, to) = if mine {
                        (self.bare.clone(), peer_jid)
                    } else {
                        (peer_jid, self.bare.clone())
                    };
                    let mut el = Element::new("message", NS_CLIENT)
                        .attr("type", "chat")
                        .attr("id", message.client_msg_id.clone())
                        .attr("from", from)
                        .attr("to", to);
                    for child in payload {
                        el = el.child(child);
                    }
                    el.child(
                        Element::new("origin-id", super::NS_SID)
                            .attr("id", message.client_msg_id.clone()),
                    )
                }
                None => {
                    let Some(mut el) = self.groupchat(message).await else {
                        continue;
                    };
                    el.set_attr("to", self.bare.clone());
                    el
                }
            };
            let result = Element::new("message", NS_CLIENT)
                .attr("to", self.full.clone())
                .attr(
                    "from",
                    room_jid.clone().unwrap_or_else(|| self.bare.clone()),
                )
                .child(
                    Element::new("result", NS_MAM)
                        .attr_opt("queryid", query.query_id.as_deref())
                        .attr("id", message.id.to_string())
                        .child(
                            Element::new("forwarded", NS_FORWARD)
                                .child(
                                    Element::new("delay", NS_DELAY)
                                        .attr("stamp", stamp(message.ts)),
                                )
                                .child(archived),
                        ),
                );
            self.send(&result);
        }
        let mut set = Element::new("set", NS_RSM);
        match (messages.first(), messages.last()) {
            (Some((first, _)), Some((last, _))) => {
                set = set
                    .child(Element::new("first", NS_RSM).text(first.id.to_string()))
                    .child(Element::new("last", NS_RSM).text(last.id.to_string()));
            }
            _ => set = set.child(Element::new("count", NS_RSM).text("0")),
        }
        let mut fin = Element::new("fin", NS_MAM).child(set);
        if complete {
            fin = fin.attr("complete", "true");
        }
        let result = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("to", self.full.clone())
            .attr_opt("from", room_jid.as_deref())
            .child(fin);
        self.send(&result);
    }

    /// The page a query asks for, oldest first, and whether it reaches the end of the range in
    /// the direction of paging.
    async fn mam_page(
        &mut self,
        conversation: ConversationId,
        query: &Query,
        max: u32,
    ) -> Result<(Vec<Message>, bool), &'static str> {
        let Some(newest) = self.message_at(conversation, None).await else {
            return Ok((Vec::new(), true));
        };
        let (mut lo, mut hi): (Seq, Seq) = (1, newest.seq);
        if let Some(start) = query.start {
            lo = lo.max(
                self.first_seq(conversation, lo, hi, |m| m.ts >= start)
                    .await,
            );
        }
        if let Some(end) = query.end {
            hi = hi.min(self.first_seq(conversation, lo, hi, |m| m.ts > end).await - 1);
        }
        if let Some(after) = &query.after {
            let after: i64 = after.parse().map_err(|_| "unknown id")?;
            lo = lo.max(
                self.first_seq(conversation, lo, hi, |m| m.id.0 > after)
                    .await,
            );
        }
        if let Some(Some(before)) = &query.before {
            let before: i64 = before.parse().map_err(|_| "unknown id")?;
            hi = hi.min(
                self.first_seq(conversation, lo, hi, |m| m.id.0 >= before)
                    .await
                    - 1,
            );
        }
        if lo > hi {
            return Ok((Vec::new(), true));
        }
        let limit = u64::from(max);
        let (upto, backwards) = if query.before.is_some() {
            (hi, true)
        } else {
            (hi.min(lo + limit - 1), false)
        };
        let mut messages = self
            .gw
            .core
            .history(&self.caller, conversation, Some(upto + 1), Some(max))
            .await
            .map_err(|_| "history unavailable")?
            .messages;
        messages.retain(|m| m.seq >= lo && m.seq <= hi);
        let complete = if backwards {
            messages.first().is_none_or(|m| m.seq <= lo) || (upto + 1).saturating_sub(lo) <= limit
        } else {
            upto >= hi
        };
        Ok((messages, complete))
    }

    /// The first sequence number in `lo..=hi` whose message satisfies `pred` (false, then
    /// true, along the sequence), or `hi + 1`.
    pub(super) async fn first_seq(
        &mut self,
        conversation: ConversationId,
        lo: Seq,
        hi: Seq,
        pred: impl Fn(&Message) -> bool,
    ) -> Seq {
        let (mut a, mut b) = (lo, hi + 1);
        while a < b {
            let mid = a + (b - a) / 2;
            match self.message_at(conversation, Some(mid)).await {
                Some(m) if pred(&m) => b = mid,
                _ => a = mid + 1,
            }
        }
        a
    }

    /// The newest message the caller may see with a sequence number at most `seq` (the newest
    /// of all without one).
    pub(super) async fn message_at(
        &mut self,
        conversation: ConversationId,
        seq: Option<Seq>,
    ) -> Option<Message> {
        self.gw
            .core
            .history(&self.caller, conversation, seq.map(|s| s + 1), Some(1))
            .await
            .ok()?
            .messages
            .pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{StreamEvent, StreamParser};

    fn element(xml: &str) -> Element {
        let mut parser = StreamParser::new(crate::XmppConfig::default().limits());
        parser.feed(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        );
        parser.feed(xml.as_bytes());
        let mut out = None;
        while let Some(event) = parser.next_event().unwrap() {
            if let StreamEvent::Stanza(s) = event {
                out = Some(s);
            }
        }
        out.expect("a stanza").elements().next().cloned().unwrap()
    }

    #[test]
    fn queries_parse() {
        let q = element(
            "<iq type='set' id='1'><query xmlns='urn:xmpp:mam:2' queryid='f27'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>bob@localhost</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set>\
             </query></iq>",
        );
        assert_eq!(
            parse(&q),
            Ok(Query {
                query_id: Some("f27".into()),
                with: Some("bob@localhost".into()),
                start: Some(1_275_868_800_000),
                end: None,
                max: Some(10),
                after: None,
                before: Some(None),
            })
        );
        let q = element(
            "<iq type='set' id='1'><query xmlns='urn:xmpp:mam:2'>\
             <x xmlns='jabber:x:data'><field var='start'><value>yesterday</value></field></x>\
             </query></iq>",
        );
        assert!(parse(&q).is_err());
        assert_eq!(stamp(1_275_868_800_123), "2010-06-07T00:00:00.123Z");
    }
}
