//! One connection of the native protocol, independent of the transport that carries it.
//!
//! A transport (the WebSocket handler today, gateways later) feeds incoming text to
//! [`Session::handle_text`] and writes whatever [`Session::next_output`] yields. The session
//! owns every protocol rule in between:
//!
//! - **Authentication**: the first frame must be `auth`; `auth` again with a fresh token extends
//!   the session; expiry closes it with `token_expired` (the client reconnects and syncs).
//! - **Per-conversation order without gaps or duplicates**: for each conversation the session
//!   tracks the highest sequence the client is known to hold (`delivered`). Live events that
//!   would leave a hole the client cannot explain trigger a read from the store; events the
//!   client already has are dropped. The client's own sends count as known once acknowledged,
//!   so a sender's ack racing with other members' messages never causes a needless read: an
//!   event past holes that unacknowledged sends may explain is parked until they are answered
//!   (with several nodes such a hole may instead be another node's message still in transit,
//!   which must not be overtaken).
//! - **Sync**: `sync` turns every conversation with news into work; work is read from the store
//!   a page at a time, and the next page is read only when the previous one is written, so a
//!   catch-up of any size holds one page of memory. With a `contacts_version` older than the
//!   server's, a `contacts` snapshot goes out first.
//! - **Flow control**: at most `max_in_flight` requests run at once; past that the transport
//!   stops reading. Live events queue in a bounded channel; overflow closes the connection as a
//!   slow consumer (see [`crate::hub`]).
//!
//! `next_output` is cancel-safe: the transport may drop it at any await point (to read a frame)
//! and call it again; every long operation lives in a field, not in the future.

use crate::error::{CoreError, CoreResult};
use crate::hub::{CloseReason, ConnControl};
use crate::messaging::SendTurn;
use crate::{Caller, Core};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tidings_bus::OutFrame;
use tidings_proto::contacts::ContactsSnapshot;
use tidings_proto::rest::SendAck;
use tidings_proto::ws::{ClientFrame, Cursor, ServerFrame};
use tidings_proto::{ConversationId, ErrorCode, Message, MessageBody, Seq, UserId};
use tidings_store::UserConversation;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// How long a new connection may take to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// While the server shuts down, how long a connection with nothing left in flight waits for
/// more frames before it closes. Frames the client wrote before it read the shutdown notice
/// arrive within this quiet time on any sane link, so each is answered (refused) rather than
/// left unread in the socket when the connection closes.
pub const DRAIN_QUIET: Duration = Duration::from_millis(150);

/// WebSocket close codes the server uses (4000-4999 are for applications).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4002;
    pub const DEVICE_REVOKED: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const UNAVAILABLE: u16 = 4011;
}

/// The text of a frame to write.
#[derive(Debug, Clone)]
pub enum Text {
    /// Shared with other recipients.
    Shared(Arc<str>),
    Owned(String),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Shared(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        match text {
            Text::Shared(s) => s.to_string(),
            Text::Owned(s) => s,
        }
    }
}

/// What the transport should do next.
#[derive(Debug)]
pub enum Output {
    Frame(Text),
    /// Close the connection with this WebSocket close code and reason.
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// Why `next_output` woke up.
// A `Wake` is built and consumed without an await in between, so its size never lands in a
// connection's future; boxing the large variant would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Closed(CloseReason),
    Fetched(ConversationId, CoreResult<Vec<Message>>),
    Done(Completion),
    Event(Option<Arc<OutFrame>>),
    Deadline,
}

/// Work whose result changes the session.
enum Completion {
    /// Nothing to say (a typing indicator sent without an id).
    Silent,
    /// The device turned out to be signed out.
    Revoked,
    /// Boxed: frames are large and most completions are not replies.
    Reply(Box<ServerFrame>),
    Authed {
        id: String,
        result: CoreResult<Caller>,
    },
    Sent {
        id: String,
        conversation_id: ConversationId,
        result: CoreResult<SendAck>,
    },
    /// This device placed or accepted a call: remember it, to end it if the device leaves.
    InCall {
        call_id: tidings_proto::call::CallId,
        /// The answer, unless the request asked for none (a signal sent without an id).
        reply: Option<Box<ServerFrame>>,
    },
    SyncPlan {
        id: String,
        cursors: Vec<Cursor>,
        limit: Option<u32>,
        /// The conversations, and the contacts snapshot when the client's is outdated.
        result: CoreResult<(Vec<UserConversation>, Option<ContactsSnapshot>)>,
    },
}

/// Calls a connection remembers taking part in, at most (the newest are kept); a device is
/// in one call at a time, so this only bounds what stale ids could pile up.
const MAX_REMEMBERED_CALLS: usize = 8;

/// Live events held back per conversation while this connection's own sends are answered;
/// past this many the store is read instead.
const MAX_PARKED: usize = 256;

/// What the client is known to hold in one conversation.
#[derive(Debug, Default)]
struct ConvState {
    /// Every sequence up to this one has been delivered (or acknowledged to the client).
    delivered: Seq,
    /// Sequences beyond `delivered + 1` the client already holds (its own acked sends, or
    /// events sent while one of its sends was still unacknowledged).
    ahead: BTreeSet<Seq>,
    /// Sends of this connection not yet acknowledged.
    sending: u32,
    /// What the next send to this conversation waits on before it is sequenced: resolved once
    /// the latest send has been (see `SendTurn`).
    send_turn: Option<oneshot::Receiver<()>>,
    /// A store read for this conversation is queued or running; live events are dropped
    /// meanwhile because the read will include them.
    filling: bool,
    /// Whether `delivered` is known (from a sync cursor, an event or an ack).
    known: bool,
    /// A live event was dropped while a read of this conversation was running. That read may
    /// have started before the event's commit, so it cannot be the last one.
    dropped_while_reading: bool,
    /// Set when `delivered` was guessed from the first live event (`seq - 1`) rather than told
    /// by a sync: the first sequence this connection delivered. A later sync with a lower
    /// cursor then knows the client holds only what came from there on.
    guessed_from: Option<Seq>,
    /// A contiguous range above `delivered` the client holds (what this connection delivered
    /// after a guessed position, once a sync revealed the hole below it).
    held: Option<(Seq, Seq)>,
    /// Live events past holes this connection's own unacknowledged sends may explain, held back
    /// until the holes close (by acks or events) so the client still gets sequence order. With
    /// several nodes a hole can also be another node's message whose event is still on its way;
    /// when the sends are all answered and a hole remains, the store fills it instead.
    parked: std::collections::BTreeMap<Seq, Arc<OutFrame>>,
    /// The user left or was removed from this group at this sequence. Later messages (which
    /// a read filling an earlier hole could still return) are passed over without being sent,
    /// until an event adds the user back.
    ended_at: Option<Seq>,
}

impl ConvState {
    fn advance(&mut self) {
        // Anything at or below `delivered` is no longer "ahead"; then follow the chain through
        // single held sequences and the held range.
        loop {
            if let Some((start, end)) = self.held
                && start <= self.delivered + 1
            {
                self.delivered = self.delivered.max(end);
                self.held = None;
                continue;
            }
            match self.ahead.first() {
                Some(&first) if first <= self.delivered => {
                    self.ahead.pop_first();
                }
                Some(&first) if first == self.delivered + 1 => {
                    self.ahead.pop_first();
                    self.delivered = first;
                }
                _ => break,
            }
        }
    }

    fn holds(&self, seq: Seq) -> bool {
        seq <= self.delivered
            || self.ahead.contains(&seq)
            || self
                .held
                .is_some_and(|(start, end)| (start..=end).contains(&seq))
    }

    /// Records that the client holds `seq`; returns false if it already did.
    fn take(&mut self, seq: Seq) -> bool {
        if !self.known {
            self.known = true;
            self.delivered = seq.saturating_sub(1);
            self.guessed_from = Some(seq);
            self.advance();
        }
        if self.holds(seq) {
            return false;
        }
        if seq == self.delivered + 1 {
            self.delivered = seq;
            self.advance();
        } else {
            self.ahead.insert(seq);
        }
        true
    }

    /// Records an ack of the client's own send. Before the position is known (no sync, no
    /// event yet), an ack says nothing about earlier messages, so it only marks `seq` as held.
    fn acked(&mut self, seq: Seq) {
        if self.known {
            self.take(seq);
        } else {
            self.ahead.insert(seq);
        }
    }

    /// Missing sequences below `seq` that the client does not hold.
    fn holes_below(&self, seq: Seq) -> u64 {
        let span = seq.saturating_sub(self.delivered + 1);
        let mut covered = self.ahead.range(..seq).count() as u64;
        if let Some((start, end)) = self.held {
            let low = start.max(self.delivered + 1);
            let high = end.min(seq.saturating_sub(1));
            if high >= low {
                covered += high - low + 1;
            }
        }
        span.saturating_sub(covered)
    }
}

/// One unit of store-reading work.
struct Work {
    conversation_id: ConversationId,
    /// Sent before the conversation's messages during sync.
    header: Option<ServerFrame>,
}

struct Connected {
    caller: Caller,
    conn_id: u64,
    /// The connection's queue of live events and its close signal, shared with the hub.
    control: Arc<ConnControl>,
}

type Fetch = BoxFuture<'static, (ConversationId, CoreResult<Vec<Message>>)>;

struct SyncProgress {
    id: String,
    /// Set once the conversation list has been turned into work.
    planned: bool,
    conversations: u32,
    messages: u64,
}

/// The requests a connection has in flight. The set is dropped whenever it empties: a
/// `FuturesUnordered` allocates its ready queue and a stub task up front (about 200 bytes),
/// which an idle connection would otherwise hold for its whole life.
#[derive(Default)]
struct InFlight(Option<FuturesUnordered<BoxFuture<'static, Completion>>>);

impl InFlight {
    fn push(&mut self, request: BoxFuture<'static, Completion>) {
        self.0
            .get_or_insert_with(FuturesUnordered::new)
            .push(request);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next request to complete; `Ready(None)` when none is in flight.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let Some(set) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        let done = set.poll_next_unpin(cx);
        if set.is_empty() {
            self.0 = None;
        }
        done
    }
}

/// The protocol state of one connection.
pub struct Session {
    core: Core,
    conn: Option<Connected>,
    out: VecDeque<Output>,
    in_flight: InFlight,
    convs: HashMap<ConversationId, ConvState>,
    work: VecDeque<Work>,
    fetch: Option<Fetch>,
    /// Boxed: a sync is rare and brief, and the slot is in every connection.
    sync: Option<Box<SyncProgress>>,
    /// Fires at the auth deadline before authentication and at token expiry after.
    deadline: Pin<Box<Sleep>>,
    closing: bool,
    /// The server is shutting down: requests already started finish and are answered, new
    /// ones are refused with `unavailable`, and the connection closes (1001) once nothing is
    /// in flight and the client has been quiet for [`DRAIN_QUIET`].
    draining: bool,
    /// Calls this device placed or accepted on this connection, newest last.
    calls: VecDeque<tidings_proto::call::CallId>,
    /// Devices that signalled this connection and may get an answer from it.
    answers: crate::device_signals::AnswerCredits,
}

impl Session {
    pub fn new(core: Core) -> Self {
        Session {
            core,
            conn: None,
            out: VecDeque::new(),
            in_flight: InFlight::default(),
            convs: HashMap::new(),
            work: VecDeque::new(),
            fetch: None,
            sync: None,
            deadline: Box::pin(tokio::time::sleep(AUTH_TIMEOUT)),
            closing: false,
            draining: false,
            calls: VecDeque::new(),
            answers: Default::default(),
        }
    }

    /// The authenticated caller, if any.
    pub fn caller(&self) -> Option<Caller> {
        self.conn.as_ref().map(|c| c.caller)
    }

    /// Whether the server has asked this connection to close (slow consumer, signed out,
    /// shutting down). `next_output` reports it too; a transport that has paused taking output
    /// (its client's window is full) asks here so a stalled client is still let go.
    pub fn close_requested(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.control.closed_now().is_some())
    }

    /// Whether the transport may read another frame: false while the connection has as many
    /// requests in flight, or as much output queued, as it may.
    /// Per conversation, the highest sequence this connection is sure the client holds with
    /// nothing missing below it: positions a sync or an acknowledged send established. A
    /// position only guessed from a live event is left out (the client may lack what lies
    /// below it). Transports without client-side cursors save these with
    /// [`Core::save_device_cursors`] and sync from them on the device's next session.
    pub fn delivered_cursors(&self) -> Vec<Cursor> {
        self.convs
            .iter()
            .filter(|(_, s)| s.known && s.guessed_from.is_none() && s.delivered > 0)
            .map(|(&conversation_id, s)| Cursor {
                conversation_id,
                seq: s.delivered,
                peer_read_seq: None,
            })
            .collect()
    }

    pub fn can_read(&self) -> bool {
        let limit = self.core.inner.config.limits.max_in_flight;
        !self.closing && self.in_flight.len() < limit && self.out.len() < limit
    }

    fn reply(&mut self, frame: ServerFrame) {
        let text = serde_json::to_string(&frame).expect("server frames always serialize");
        self.out.push_back(Output::Frame(Text::Owned(text)));
    }

    fn error(&mut self, id: Option<String>, err: CoreError) {
        self.reply(ServerFrame::Error {
            id,
            code: err.code,
            message: err.message,
            retry_after_ms: err.retry_after_ms,
        });
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.closing = true;
        self.out.push_back(Output::Close { code, reason });
    }

    /// Tells the client a frame was refused for being binary.
    pub fn handle_binary(&mut self) {
        self.error(
            None,
            CoreError::new(ErrorCode::MalformedRequest, "frames must be JSON text"),
        );
    }

    /// Tells the client a frame exceeded the size limit (the transport measured it). The
    /// request id is recovered when the frame is JSON, so the request still gets its answer.
    pub fn handle_oversized(&mut self, text: &str, limit: usize) {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: Option<String>,
        }
        let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id);
        self.error(
            id,
            CoreError::new(
                ErrorCode::TooLarge,
                format!("frames are limited to {limit} bytes"),
            ),
        );
    }

    /// Decodes and starts one request. Errors are answered on the connection; nothing here
    /// can fail the connection or its neighbours.
    pub fn handle_text(&mut self, text: &str) {
        if self.closing {
            return;
        }
        if self.draining {
            return self.refuse_while_draining(text);
        }
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let (id, err) = classify_decode_error(text, &e);
                self.error(id, err);
                return;
            }
        };
        // The transport's per-frame trace span (when it has one) learns what the frame was.
        tracing::Span::current().record("frame.type", frame.type_name());
        let Some(caller) = self.caller() else {
            return match frame {
                ClientFrame::Auth { id, token } => self.start_auth(id, token),
                ClientFrame::Ping { id } => self.reply(ServerFrame::Pong { id }),
                other => self.error(
                    other.request_id().map(String::from),
                    CoreError::unauthenticated("authenticate first with an `auth` frame"),
                ),
            };
        };
        if let Some(need) = crate::policy::frame_scope(&frame)
            && let Err(refusal) = crate::policy::decide_scope(caller.scopes, need)
        {
            return self.error(frame.request_id().map(String::from), refusal);
        }
        let core = self.core.clone();
        match frame {
            ClientFrame::Auth { id, token } => self.start_auth(id, token),
            ClientFrame::Ping { id } => self.reply(ServerFrame::Pong { id }),
            ClientFrame::Send {
                id,
                conversation_id,
                client_msg_id,
                body,
                reply_to,
                thread_root,
                mentions,
            } => {
                let state = self.convs.entry(conversation_id).or_default();
                state.sending += 1;
                // Commits follow the order of this connection's sends (see `SendTurn`).
                let (turn, next) = SendTurn::after(state.send_turn.take());
                state.send_turn = Some(next);
                let relations = tidings_proto::Relations {
                    reply_to,
                    thread_root,
                    mentions,
                };
                self.in_flight.push(Box::pin(async move {
                    let result = core
                        .send_in_turn(
                            &caller,
                            conversation_id,
                            client_msg_id,
                            body,
                            relations,
                            Some(turn),
                        )
                        .await;
                    Completion::Sent {
                        id,
                        conversation_id,
                        result,
                    }
                }));
            }
            ClientFrame::Sync {
                id,
                cursors,
                limit_per_conversation,
                contacts_version,
            } => {
                if self.sync.is_some() {
                    return self.error(
                        Some(id),
                        CoreError::new(ErrorCode::Conflict, "a sync is already running"),
                    );
                }
                // Reserve the slot now so a second sync cannot start before the plan arrives.
                self.sync = Some(Box::new(SyncProgress {
                    id: id.clone(),
                    planned: false,
                    conversations: 0,
                    messages: 0,
                }));
                self.in_flight.push(Box::pin(async move {
                    let result = async {
                        let list = core.inner.store.conversations_of(caller.user_id).await?;
                        let contacts = match contacts_version {
                            Some(held) => core.contacts_if_newer(caller.user_id, held).await?,
                            None => None,
                        };
                        Ok((list, contacts))
                    }
                    .await;
                    Completion::SyncPlan {
                        id,
                        cursors,
                        limit: limit_per_conversation,
                        result,
                    }
                }));
            }
            ClientFrame::History {
                id,
                conversation_id,
                before_seq,
                limit,
            } => self.in_flight.push(Box::pin(async move {
                match core
                    .history(&caller, conversation_id, before_seq, limit)
                    .await
                {
                    Ok(page) => Completion::Reply(Box::new(ServerFrame::History {
                        id,
                        messages: page.messages,
                        has_more: page.has_more,
                    })),
                    Err(e) => error_completion(Some(id), e),
                }
            })),
            ClientFrame::Receipt {
                id,
                conversation_id,
                receipt,
                seq,
            } => self.in_flight.push(Box::pin(async move {
                match core.receipt(&caller, conversation_id, receipt, seq).await {
                    Ok(()) => Completion::Reply(Box::new(ServerFrame::Ok { id })),
                    Err(e) => error_completion(Some(id), e),
                }
            })),
            ClientFrame::Typing {
                id,
                conversation_id,
                typing,
            } => self.in_flight.push(Box::pin(async move {
                match (core.typing(&caller, conversation_id, typing).await, id) {
                    (Ok(()), Some(id)) => Completion::Reply(Box::new(ServerFrame::Ok { id })),
                    // Without an id the client asked for no answer, not even an error.
                    (_, None) => Completion::Silent,
                    (Err(e), id) => error_completion(id, e),
                }
            })),
            ClientFrame::SetActivity { id, active } => {
                let conn_id = self.conn.as_ref().map_or(0, |c| c.conn_id);
                let changed = self
                    .core
                    .inner
                    .hub
                    .set_active(caller.user_id, conn_id, active);
                self.in_flight.push(Box::pin(async move {
                    if changed {
                        core.publish_device_activity(caller.user_id, caller.device_id)
                            .await;
                    }
                    match id {
                        Some(id) => Completion::Reply(Box::new(ServerFrame::Ok { id })),
                        None => Completion::Silent,
                    }
                }))
            }
            ClientFrame::CallInvite {
                id,
                conversation_id,
                sdp,
                video,
            } => self.in_flight.push(Box::pin(async move {
                match core.call_invite(&caller, conversation_id, sdp, video).await {
                    Ok((call_id, busy)) => {
                        let reply = Box::new(ServerFrame::CallStarted {
                            id,
                            call_id: call_id.clone(),
                            busy,
                        });
                        if busy {
                            Completion::Reply(reply)
                        } else {
                            Completion::InCall {
                                call_id,
                                reply: Some(reply),
                            }
                        }
                    }
                    Err(e) => error_completion(Some(id), e),
                }
            })),
            ClientFrame::CallSignal {
                id,
                call_id,
                signal,
            } => self.in_flight.push(Box::pin(async move {
                let accept = matches!(signal, tidings_proto::call::CallSignal::Accept { .. });
                match (core.call_signal(&caller, &call_id, signal).await, id) {
                    (Ok(()), Some(id)) if accept => Completion::InCall {
                        call_id,
                        reply: Some(Box::new(ServerFrame::Ok { id })),
                    },
                    (Ok(()), Some(id)) => Completion::Reply(Box::new(ServerFrame::Ok { id })),
                    (Ok(()), None) if accept => Completion::InCall {
                        call_id,
                        reply: None,
                    },
                    (_, None) => Completion::Silent,
                    (Err(e), id) => error_completion(id, e),
                }
            })),
            ClientFrame::DeviceSignal {
                id,
                to_user,
                to_device,
                kind,
                payload,
            } => {
                let answering = self.answers.take(to_user, to_device, Instant::now());
                self.in_flight.push(Box::pin(async move {
                    match core
                        .device_signal(&caller, to_user, to_device, kind, payload, answering)
                        .await
                    {
                        Ok(()) => Completion::Reply(Box::new(ServerFrame::Ok { id })),
                        Err(e) => error_completion(Some(id), e),
                    }
                }))
            }
            ClientFrame::PresenceQuery { id, user_ids } => {
                self.in_flight.push(Box::pin(async move {
                    match core.presence_of(&caller, &user_ids).await {
                        Ok(users) => {
                            Completion::Reply(Box::new(ServerFrame::PresenceList { id, users }))
                        }
                        Err(e) => error_completion(Some(id), e),
                    }
                }))
            }
        }
    }

    fn start_auth(&mut self, id: String, token: String) {
        let core = self.core.clone();
        self.in_flight.push(Box::pin(async move {
            let result = core.authenticate(&token).await;
            Completion::Authed { id, result }
        }));
    }

    /// Answers a frame that arrived after shutdown began: a request is refused with its id, so
    /// the client knows it was not carried out (a send was not stored) and retries it after
    /// reconnecting. Each frame restarts the quiet time before the connection closes.
    fn refuse_while_draining(&mut self, text: &str) {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: Option<String>,
        }
        self.deadline.as_mut().reset(Instant::now() + DRAIN_QUIET);
        let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id);
        self.error(id, shutting_down());
    }

    /// Begins the graceful close of a server shutdown (see [`Session::draining`]).
    fn start_draining(&mut self) {
        self.draining = true;
        // No new store reads: what is not delivered now is found by the next sync.
        self.work.clear();
        self.error(None, shutting_down());
        self.deadline.as_mut().reset(Instant::now() + DRAIN_QUIET);
    }

    /// The next thing to write. Cancel-safe.
    pub async fn next_output(&mut self) -> Output {
        std::future::poll_fn(|cx| self.poll_output(cx)).await
    }

    /// The next thing to write, polled. Every source it waits on is polled in place (the
    /// connection's control, the boxed store read, the requests in flight, the deadline), so
    /// a transport that polls this from its own loop holds no future for it while it waits:
    /// an idle connection's task stays as small as its state.
    pub fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        loop {
            if let Some(out) = self.out.pop_front() {
                return Poll::Ready(out);
            }
            if self.closing {
                // Everything, including the close, has been handed out; stay quiet.
                return Poll::Pending;
            }
            if let Some(conn) = &self.conn
                && !self.draining
                && let Some(reason) = conn.control.closed_now()
            {
                self.closed_by_server(reason);
                continue;
            }
            if self.fetch.is_none() && !self.work.is_empty() {
                self.start_fetch();
                continue;
            }
            if let Some(sync) = self.sync.as_ref()
                && sync.planned
                && self.work.is_empty()
            {
                let frame = ServerFrame::SyncDone {
                    id: sync.id.clone(),
                    conversations: sync.conversations,
                    messages: sync.messages,
                };
                self.sync = None;
                self.reply(frame);
                continue;
            }
            // A store read runs alongside everything else: live events keep draining (those
            // for conversations being filled are dropped, the read covers them) and requests
            // keep completing, so a long sync neither overflows the queue nor stalls sends.
            // The order is a priority: a close first, then a finished read, then requests,
            // then live events, then the deadline.
            let control = self.conn.as_ref().map(|c| &c.control);
            let wake = if let Some(Poll::Ready(reason)) = control
                .as_ref()
                .filter(|_| !self.draining)
                .map(|c| c.poll_closed(cx))
            {
                Wake::Closed(reason)
            } else if let Some(Poll::Ready((id, result))) =
                self.fetch.as_mut().map(|f| f.as_mut().poll(cx))
            {
                Wake::Fetched(id, result)
            } else if let Poll::Ready(Some(done)) = self.in_flight.poll_next(cx) {
                Wake::Done(done)
            } else if let Some(Poll::Ready(event)) = control.as_ref().map(|c| c.poll_recv(cx)) {
                Wake::Event(event)
            } else if self.deadline.as_mut().poll(cx).is_ready() {
                Wake::Deadline
            } else {
                // Going idle: the queue grew to a few slots for the sign-in's replies (or a
                // burst's), and an idle connection keeps none of them. Freed here rather than
                // whenever it empties, so a busy connection does not allocate per reply.
                if self.out.capacity() > 0 {
                    self.out = VecDeque::new();
                }
                return Poll::Pending;
            };
            match wake {
                Wake::Fetched(id, result) => {
                    self.fetch = None;
                    self.finish_fetch(id, result);
                }
                Wake::Closed(reason) => self.closed_by_server(reason),
                Wake::Done(done) => self.complete(done),
                Wake::Event(Some(frame)) => self.on_event(frame),
                Wake::Event(None) => self.close(close_code::GOING_AWAY, "server shutting down"),
                Wake::Deadline if self.draining => {
                    if self.in_flight.is_empty() && self.fetch.is_none() {
                        self.close(close_code::GOING_AWAY, "server shutting down");
                    } else {
                        self.deadline.as_mut().reset(Instant::now() + DRAIN_QUIET);
                    }
                }
                Wake::Deadline if self.conn.is_some() => {
                    self.error(
                        None,
                        CoreError::new(
                            ErrorCode::TokenExpired,
                            "access token expired; refresh it and reconnect",
                        ),
                    );
                    self.close(close_code::TOKEN_EXPIRED, "token expired");
                }
                Wake::Deadline => {
                    self.error(None, CoreError::unauthenticated("no `auth` frame in time"));
                    self.close(close_code::UNAUTHENTICATED, "authentication timeout");
                }
            }
        }
    }

    fn closed_by_server(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::SlowConsumer => {
                self.error(
                    None,
                    CoreError::new(
                        ErrorCode::SlowConsumer,
                        "the connection fell too far behind; reconnect and sync",
                    ),
                );
                self.close(close_code::SLOW_CONSUMER, "slow consumer");
            }
            CloseReason::DeviceRevoked => {
                self.error(
                    None,
                    CoreError::unauthenticated("this device has been signed out"),
                );
                self.close(close_code::DEVICE_REVOKED, "device signed out");
            }
            CloseReason::ShuttingDown => self.start_draining(),
        }
    }

    fn complete(&mut self, done: Completion) {
        match done {
            Completion::Silent => {}
            Completion::Revoked => self.closed_by_server(CloseReason::DeviceRevoked),
            Completion::Reply(frame) => self.reply(*frame),
            Completion::InCall { call_id, reply } => {
                if self.calls.len() == MAX_REMEMBERED_CALLS {
                    self.calls.pop_front();
                }
                self.calls.push_back(call_id);
                if let Some(reply) = reply {
                    self.reply(*reply);
                }
            }
            Completion::Authed { id, result } => self.finish_auth(id, result),
            Completion::Sent {
                id,
                conversation_id,
                result,
            } => {
                let state = self.convs.entry(conversation_id).or_default();
                state.sending = state.sending.saturating_sub(1);
                match result {
                    Ok(ack) => {
                        state.acked(ack.seq);
                        self.reply(ServerFrame::Ack {
                            id,
                            conversation_id,
                            seq: ack.seq,
                            message_id: ack.message_id,
                            ts: ack.ts,
                            duplicate: ack.duplicate,
                        });
                        self.release_parked(conversation_id);
                    }
                    Err(e) => {
                        if !state.parked.is_empty() {
                            self.error(Some(id), e);
                            self.release_parked(conversation_id);
                            return;
                        }
                        // A refused send (say, to a conversation the caller is not in) must not
                        // leave state behind, or a stream of them would grow the map.
                        if !state.known
                            && !state.filling
                            && state.sending == 0
                            && state.ahead.is_empty()
                        {
                            self.convs.remove(&conversation_id);
                        }
                        self.error(Some(id), e);
                    }
                }
            }
            Completion::SyncPlan {
                id,
                cursors,
                limit,
                result,
            } => match result {
                Ok((list, contacts)) => {
                    if let Some(contacts) = contacts {
                        self.reply(ServerFrame::Contacts { contacts });
                    }
                    self.plan_sync(cursors, limit, list);
                    self.replay_held_for_plan();
                }
                Err(e) => {
                    self.sync = None;
                    self.error(Some(id), e);
                    self.replay_held_for_plan();
                }
            },
        }
    }

    fn finish_auth(&mut self, id: String, result: CoreResult<Caller>) {
        let caller = match result {
            Ok(caller) => caller,
            Err(e) => return self.error(Some(id), e),
        };
        if let Some(conn) = &mut self.conn {
            // Re-authentication extends the session, but only for the same device.
            if conn.caller.user_id != caller.user_id || conn.caller.device_id != caller.device_id {
                return self.error(
                    Some(id),
                    CoreError::forbidden("a connection stays with the device it authenticated as"),
                );
            }
            conn.caller.expires_at = caller.expires_at;
        } else {
            let registration = self
                .core
                .inner
                .hub
                .register(caller.user_id, caller.device_id);
            if registration.first_for_user {
                let core = self.core.clone();
                tokio::spawn(async move {
                    core.announce_presence(caller.user_id).await;
                });
            }
            // Other nodes hold back pushes for a device awake here.
            let core = self.core.clone();
            tokio::spawn(async move {
                core.publish_device_activity(caller.user_id, caller.device_id)
                    .await;
            });
            self.conn = Some(Connected {
                caller,
                conn_id: registration.conn_id,
                control: registration.control,
            });
            // A sign-out that landed between the token check and this registration was
            // announced to a hub that did not know the connection yet: look once more.
            let core = self.core.clone();
            self.in_flight.push(Box::pin(async move {
                let revoked = match core.inner.store.device(caller.device_id).await {
                    Ok(Some(device)) => device.revoked_at.is_some(),
                    Ok(None) => true,
                    // Storage trouble is not a sign-out; the next request will tell.
                    Err(_) => false,
                };
                if revoked {
                    Completion::Revoked
                } else {
                    Completion::Silent
                }
            }));
        }
        let wait_ms = (caller.expires_at - self.core.now_ms()).max(0) as u64;
        self.deadline
            .as_mut()
            .reset(Instant::now() + Duration::from_millis(wait_ms));
        self.reply(ServerFrame::AuthOk {
            id,
            user_id: caller.user_id,
            device_id: caller.device_id,
            expires_at: caller.expires_at,
        });
    }

    fn plan_sync(&mut self, cursors: Vec<Cursor>, limit: Option<u32>, list: Vec<UserConversation>) {
        if let Some(sync) = self.sync.as_mut() {
            sync.planned = true;
        }
        let cursors: HashMap<ConversationId, Cursor> = cursors
            .into_iter()
            .map(|c| (c.conversation_id, c))
            .collect();
        for uc in list {
            let id = uc.conversation.id;
            let last = uc.conversation.last_seq;
            let cursor = cursors.get(&id).map_or(0, |c| c.seq).min(last);
            // Read receipts made while the client was away: the peer is further along than the
            // client last saw.
            let receipts_moved = match (cursors.get(&id).and_then(|c| c.peer_read_seq), &uc.peer) {
                (Some(seen), Some(peer)) => peer.read_seq > seen,
                _ => false,
            };
            let mut from = cursor;
            let listed = cursors.contains_key(&id);
            let state = self.convs.entry(id).or_default();
            // What this connection already delivered, the client holds (one TCP stream, in
            // order), so a sync never repeats it, whatever the cursor says. When the position
            // was only guessed from the first live event, the client may lack what lies below
            // that event: keep what was delivered as held and read the hole from the cursor.
            if state.known {
                match state.guessed_from.take() {
                    Some(first) if cursor + 1 < first => {
                        state.held = Some((first, state.delivered));
                        state.delivered = cursor;
                    }
                    _ => from = from.max(state.delivered.min(last)),
                }
            }
            if last <= from {
                if !state.known {
                    state.known = true;
                    state.delivered = from;
                    // Acked sends above the cursor are held too.
                    state.advance();
                }
                if !listed || receipts_moved {
                    // New to the client (say, joined while away) but without messages yet, or
                    // read further by the peer: the header tells the client what changed.
                    let sync = self.sync.as_mut().expect("sync slot reserved at request");
                    sync.conversations += 1;
                    self.reply(ServerFrame::Conversation {
                        conversation: Core::conversation_view(&uc),
                    });
                }
                continue;
            }
            let sync = self.sync.as_mut().expect("sync slot reserved at request");
            sync.conversations += 1;
            let header = ServerFrame::Conversation {
                conversation: Core::conversation_view(&uc),
            };
            if let Some(limit) = limit
                && last - from > u64::from(limit)
            {
                let skip_to = last - u64::from(limit);
                let gap = ServerFrame::Gap {
                    conversation_id: id,
                    from_seq: from + 1,
                    to_seq: skip_to,
                };
                let text = serde_json::to_string(&header).expect("server frames always serialize");
                self.out.push_back(Output::Frame(Text::Owned(text)));
                self.reply(gap);
                self.fill_from(id, skip_to, None);
                continue;
            }
            self.fill_from(id, from, Some(header));
        }
    }

    /// Sets the client's position in a conversation and queues a store read from there.
    fn fill_from(&mut self, id: ConversationId, from: Seq, header: Option<ServerFrame>) {
        let state = self.convs.entry(id).or_default();
        state.known = true;
        state.delivered = from;
        // What the client holds beyond `from` (acked sends, live events, a held range) stays
        // held, and the chain through it is followed: otherwise an ack received before the
        // first sync would keep `delivered` below it for good.
        state.advance();
        state.filling = true;
        self.work.push_back(Work {
            conversation_id: id,
            header,
        });
    }

    fn start_fetch(&mut self) {
        let Some(work) = self.work.front_mut() else {
            return;
        };
        if let Some(header) = work.header.take() {
            self.reply(header);
            return;
        }
        let id = work.conversation_id;
        let state = self.convs.entry(id).or_default();
        state.dropped_while_reading = false;
        let from = state.delivered;
        let page = self.core.inner.config.limits.sync_page.max(1);
        let core = self.core.clone();
        let user = self.caller().map(|c| c.user_id);
        self.fetch = Some(Box::pin(async move {
            let result = async {
                let mut messages = core.inner.store.messages_after(id, from, page).await?;
                if let Some(user) = user {
                    core.apply_hidden(user, id, &mut messages).await?;
                }
                Ok(messages)
            }
            .await;
            (id, result)
        }));
    }

    /// Decides whether `message` may go to this connection's user, updating the conversation's
    /// membership state from the group events it carries.
    fn visible(state: &mut ConvState, user: Option<UserId>, message: &Message) -> bool {
        let Some(user) = user else {
            return true;
        };
        let before_end = state.ended_at.is_none_or(|end| message.seq <= end);
        match membership_change(message, user) {
            // Being added back makes the conversation visible again from this event on.
            Some(true) => {
                state.ended_at = None;
                true
            }
            // The event that ends the membership is the last one the user sees.
            Some(false) if before_end => {
                state.ended_at = Some(message.seq);
                true
            }
            _ => before_end,
        }
    }

    fn finish_fetch(&mut self, id: ConversationId, result: CoreResult<Vec<Message>>) {
        let messages = match result {
            Ok(messages) => messages,
            Err(e) => {
                self.error(None, e);
                self.close(close_code::UNAVAILABLE, "storage unavailable");
                return;
            }
        };
        tidings_metrics::metrics().sync_pages.inc();
        let page = self.core.inner.config.limits.sync_page.max(1) as usize;
        let user = self.caller().map(|c| c.user_id);
        let state = self.convs.entry(id).or_default();
        let done = messages.len() < page && !state.dropped_while_reading;
        let mut sent = 0u64;
        for message in messages {
            if !Self::visible(state, user, &message) {
                // Marked as held so the position moves past it, but never sent.
                state.take(message.seq);
                continue;
            }
            if state.take(message.seq) {
                sent += 1;
                let frame = OutFrame::new(ServerFrame::Message { message });
                self.out
                    .push_back(Output::Frame(Text::Shared(frame.json())));
            }
        }
        if done {
            state.filling = false;
            self.work.pop_front();
        }
        if let Some(sync) = &mut self.sync {
            sync.messages += sent;
        }
    }

    fn on_event(&mut self, frame: Arc<OutFrame>) {
        if let ServerFrame::DeviceSignal {
            from_user,
            from_device,
            ..
        } = frame.frame()
        {
            self.answers
                .received(*from_user, *from_device, Instant::now());
        }
        let Some((id, seq)) = frame.position() else {
            self.out
                .push_back(Output::Frame(Text::Shared(frame.json())));
            return;
        };
        let user = self.caller().map(|c| c.user_id);
        let state = self.convs.entry(id).or_default();
        if state.filling {
            state.dropped_while_reading = true;
            return;
        }
        // A sync was asked for and its plan is not in yet: the client's position here is about
        // to be known from its cursor. Delivered now, the event would come before the older
        // messages the sync is about to read; it waits for the plan instead.
        if !state.known && self.sync.as_ref().is_some_and(|sync| !sync.planned) {
            if state.parked.len() < MAX_PARKED {
                state.parked.insert(seq, frame);
            } else {
                // Too many to hold: the sync's read of this conversation takes them in.
                state.dropped_while_reading = true;
            }
            return;
        }
        if let ServerFrame::Message { message } = frame.frame()
            && !Self::visible(state, user, message)
        {
            state.take(seq);
            return;
        }
        if !state.known || seq == state.delivered + 1 {
            state.take(seq);
            count_delivery(&self.core, &frame);
            self.out
                .push_back(Output::Frame(Text::Shared(frame.json())));
            self.release_parked(id);
            return;
        }
        if state.holds(seq) {
            return;
        }
        if state.holes_below(seq) <= u64::from(state.sending) && state.parked.len() < MAX_PARKED {
            // The holes may be this connection's own sends, whose acks are on their way: wait
            // for them rather than deliver out of order.
            state.parked.insert(seq, frame);
            return;
        }
        // Holes nobody here can explain (a lost or reordered event): read them from the store.
        self.fill(id);
    }

    /// After a sync's plan (or its failure), the events held back for it go through the live
    /// path again, now that the client's position in their conversations is known: delivered,
    /// parked, or left to the sync's reads. Each conversation's events stay in sequence order.
    fn replay_held_for_plan(&mut self) {
        let held: Vec<Arc<OutFrame>> = self
            .convs
            .values_mut()
            .flat_map(|state| std::mem::take(&mut state.parked).into_values())
            .collect();
        for frame in held {
            self.on_event(frame);
        }
        // Conversations whose held events overflowed, and that the plan placed but did not read.
        let overflowed: Vec<ConversationId> = self
            .convs
            .iter()
            .filter(|(_, state)| state.known && state.dropped_while_reading && !state.filling)
            .map(|(id, _)| *id)
            .collect();
        for id in overflowed {
            self.fill(id);
        }
    }

    /// Reads a conversation's holes from the store; what was parked is in the read too.
    fn fill(&mut self, id: ConversationId) {
        let state = self.convs.entry(id).or_default();
        state.parked.clear();
        if state.filling {
            return;
        }
        state.filling = true;
        self.work.push_back(Work {
            conversation_id: id,
            header: None,
        });
    }

    /// Delivers parked events that are next in sequence; when the holes before the rest can no
    /// longer be this connection's own sends, fills them from the store.
    fn release_parked(&mut self, id: ConversationId) {
        let Some(state) = self.convs.get_mut(&id) else {
            return;
        };
        while let Some((&seq, _)) = state.parked.first_key_value() {
            if state.holds(seq) {
                state.parked.pop_first();
                continue;
            }
            if seq != state.delivered + 1 {
                break;
            }
            let Some((_, frame)) = state.parked.pop_first() else {
                break;
            };
            state.take(seq);
            count_delivery(&self.core, &frame);
            self.out
                .push_back(Output::Frame(Text::Shared(frame.json())));
        }
        if let Some((&first, _)) = state.parked.first_key_value()
            && state.holes_below(first) > u64::from(state.sending)
        {
            self.fill(id);
        }
    }
}

/// Counts a live message handed to this connection, and how long it took since its send
/// arrived (the message's server timestamp).
fn count_delivery(core: &Core, frame: &OutFrame) {
    if let ServerFrame::Message { message } = frame.frame() {
        let m = tidings_metrics::metrics();
        m.messages_delivered.inc();
        let ms = core.now_ms().saturating_sub(message.ts).max(0);
        m.delivery_latency.observe(ms as f64 / 1000.0);
    }
}

/// Whether a group event adds (`Some(true)`) or removes (`Some(false)`) `user`.
fn membership_change(message: &Message, user: UserId) -> Option<bool> {
    use tidings_proto::message::SystemEvent;
    let MessageBody::System { event } = &message.body else {
        return None;
    };
    match &**event {
        SystemEvent::MembersAdded { users } if users.contains(&user) => Some(true),
        SystemEvent::MemberJoined { user: joined, .. } if *joined == user => Some(true),
        SystemEvent::MemberLeft {} if message.sender_id == user => Some(false),
        SystemEvent::MemberRemoved { user: gone }
        | SystemEvent::MemberBanned { user: gone, .. }
            if *gone == user =>
        {
            Some(false)
        }
        SystemEvent::GroupDissolved {} => Some(false),
        _ => None,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let last = self
            .core
            .inner
            .hub
            .unregister(conn.caller.user_id, conn.conn_id);
        if !self.calls.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            self.core
                .leave_calls_later(conn.caller, std::mem::take(&mut self.calls).into());
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let core = self.core.clone();
            handle.spawn(async move {
                core.publish_device_activity(conn.caller.user_id, conn.caller.device_id)
                    .await;
                if last {
                    core.announce_presence(conn.caller.user_id).await;
                }
            });
        }
    }
}

fn error_completion(id: Option<String>, err: CoreError) -> Completion {
    Completion::Reply(Box::new(ServerFrame::Error {
        id,
        code: err.code,
        message: err.message,
        retry_after_ms: err.retry_after_ms,
    }))
}

/// Tells a malformed frame from an unknown one, and recovers its id when possible.
fn classify_decode_error(text: &str, err: &serde_json::Error) -> (Option<String>, CoreError) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (
            None,
            CoreError::new(ErrorCode::MalformedRequest, "frame is not valid JSON"),
        );
    };
    let id = value.get("id").and_then(|v| v.as_str()).map(String::from);
    const KNOWN: [&str; 8] = [
        "auth",
        "send",
        "sync",
        "history",
        "receipt",
        "typing",
        "presence_query",
        "ping",
    ];
    match value.get("type").and_then(|t| t.as_str()) {
        Some(t) if !KNOWN.contains(&t) => (
            id,
            CoreError::new(ErrorCode::UnknownFrame, format!("unknown frame type `{t}`")),
        ),
        None => (
            id,
            CoreError::new(ErrorCode::MalformedRequest, "frame needs a string `type`"),
        ),
        Some(_) => (
            id,
            CoreError::new(ErrorCode::MalformedRequest, format!("invalid frame: {err}")),
        ),
    }
}

/// The refusal of a request that arrives while the server shuts down.
fn shutting_down() -> CoreError {
    CoreError::new(
        ErrorCode::Unavailable,
        "the server is shutting down; reconnect and retry what was not acknowledged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::message::SystemEvent;
    use tidings_proto::{DeviceId, MessageId};

    fn message(seq: Seq, sender: i64, body: MessageBody) -> Message {
        Message::new(
            ConversationId(1),
            seq,
            MessageId(seq as i64),
            (UserId(sender), DeviceId(1)),
            format!("c{seq}"),
            0,
            body,
        )
    }

    fn system(seq: Seq, sender: i64, event: SystemEvent) -> Message {
        message(
            seq,
            sender,
            MessageBody::System {
                event: Box::new(event),
            },
        )
    }

    /// A removed user sees the event that removed them and nothing after it, until an event
    /// adds them back.
    #[test]
    fn removal_ends_visibility_until_readded() {
        let me = UserId(7);
        let text = |seq| message(seq, 2, MessageBody::Text { text: "x".into() });
        let mut state = ConvState::default();
        let seen: Vec<bool> = [
            text(1),
            system(2, 2, SystemEvent::MemberRemoved { user: UserId(8) }),
            text(3),
            system(4, 2, SystemEvent::MemberRemoved { user: me }),
            text(5),
            system(6, 2, SystemEvent::MemberMuted { user: me, until: 9 }),
            system(
                7,
                2,
                SystemEvent::MembersAdded {
                    users: vec![UserId(3), me],
                },
            ),
            text(8),
            system(9, 7, SystemEvent::MemberLeft {}),
            text(10),
        ]
        .iter()
        .map(|m| Session::visible(&mut state, Some(me), m))
        .collect();
        assert_eq!(
            seen,
            [
                true, true, true, true, false, false, true, true, true, false
            ]
        );
    }

    #[test]
    fn conv_state_tracks_holes_and_ahead() {
        let mut s = ConvState {
            known: true,
            delivered: 4,
            ..Default::default()
        };
        assert!(!s.take(4));
        assert!(s.take(6));
        assert_eq!(s.delivered, 4);
        assert_eq!(s.holes_below(7), 1);
        assert!(s.take(5));
        assert_eq!(s.delivered, 6);
        assert!(s.ahead.is_empty());
        assert!(!s.take(6));

        // Before the position is known, acks only mark what the client holds.
        let mut s = ConvState::default();
        s.acked(2);
        s.acked(5);
        assert!(!s.known);
        assert!(s.take(4));
        assert_eq!(s.delivered, 5);
        assert!(s.ahead.is_empty());
        assert!(!s.take(2), "an acked message is never delivered again");

        // A held range counts as held, and the chain runs through it.
        let mut s = ConvState {
            known: true,
            delivered: 0,
            held: Some((4, 6)),
            ..Default::default()
        };
        assert_eq!(s.holes_below(8), 4, "1, 2, 3 and 7 are missing");
        assert!(!s.take(5));
        assert!(s.take(1) && s.take(2));
        assert_eq!(s.delivered, 2);
        assert!(s.take(3));
        assert_eq!((s.delivered, s.held), (6, None));
    }

    #[test]
    fn decode_errors_are_classified() {
        let err = serde_json::from_str::<ClientFrame>("{").unwrap_err();
        assert_eq!(
            classify_decode_error("{", &err).1.code,
            ErrorCode::MalformedRequest
        );
        let text = r#"{"type":"fly","id":"7"}"#;
        let err = serde_json::from_str::<ClientFrame>(text).unwrap_err();
        let (id, e) = classify_decode_error(text, &err);
        assert_eq!(
            (id.as_deref(), e.code),
            (Some("7"), ErrorCode::UnknownFrame)
        );
        let text = r#"{"type":"send","id":"8"}"#;
        let err = serde_json::from_str::<ClientFrame>(text).unwrap_err();
        let (id, e) = classify_decode_error(text, &err);
        assert_eq!(
            (id.as_deref(), e.code),
            (Some("8"), ErrorCode::MalformedRequest)
        );
    }
}
