//! Sending through the group-commit sequencer, history, receipts, typing and presence.

use crate::error::{CoreError, CoreResult};
use crate::policy::Action;
use crate::{Caller, Core};
use std::collections::HashSet;
use std::sync::Arc;
use tidings_bus::{BusEvent, OutFrame};
use tidings_proto::rest::{ConversationKind, HistoryPage, SendAck};
use tidings_proto::ws::{Cursor, Presence, PresenceStatus, ReceiptKind, ServerFrame};
use tidings_proto::{ConversationId, ErrorCode, MessageBody, Relations, Seq, UserId};
use tidings_store::{Appended, NewMessage};
use tokio::sync::{mpsc, oneshot};

/// One message waiting for the group commit.
pub(crate) struct SequencerRequest {
    message: NewMessage,
    /// Who gets the message live once it is committed.
    recipients: Arc<[UserId]>,
    /// A device that does not get it live: a client's own device learns the sequence from its
    /// ack; messages the server writes (call records) go to every device.
    except_device: Option<tidings_proto::DeviceId>,
    reply: oneshot::Sender<CoreResult<Appended>>,
}

/// Batches appended at once, at most. While one batch commits the next ones are already
/// handed to the store, so the storage writer never idles while this node publishes; the SQLite
/// backend folds batches that queue up behind each other into one transaction.
const APPENDS_IN_FLIGHT: usize = 2;

type AppendResult = tidings_store::StoreResult<Vec<tidings_store::StoreResult<Appended>>>;

/// The group-commit sequencer of this node: takes every waiting message, appends them as one
/// batch, and once the batch is durable publishes its messages in commit order and answers each
/// sender.
///
/// Batches are awaited in the order they were handed to the store, so publication follows
/// commit order, and the batch size grows with load: durability costs one fsync per batch
/// instead of one per message.
pub(crate) async fn run_sequencer(core: Core, mut rx: mpsc::Receiver<SequencerRequest>) {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    let max_batch = core.inner.config.limits.max_commit_batch.max(1);
    let mut appending = FuturesOrdered::new();
    let mut open = true;
    loop {
        if !open && appending.is_empty() {
            return;
        }
        let mut batch: Vec<SequencerRequest> = Vec::new();
        tokio::select! {
            biased;
            Some((done, result)) = appending.next(), if !appending.is_empty() => {
                publish_and_reply(&core, done, result).await;
            }
            received = rx.recv_many(&mut batch, max_batch), if open && appending.len() < APPENDS_IN_FLIGHT => {
                if received == 0 {
                    open = false;
                    continue;
                }
                let messages: Vec<NewMessage> = batch.iter().map(|r| r.message.clone()).collect();
                let store = core.inner.store.clone();
                tidings_metrics::metrics()
                    .commit_batch_size
                    .observe(messages.len() as f64);
                let span = tracing::info_span!(
                    target: tidings_metrics::TRACE_TARGET,
                    parent: None,
                    "store.commit",
                    // OTLP has no unsigned integers: a u64 would be exported as a string.
                    messages = i64::try_from(messages.len()).unwrap_or(i64::MAX),
                    error = tracing::field::Empty,
                );
                appending.push_back(tracing::Instrument::instrument(async move {
                    let started = std::time::Instant::now();
                    let result: AppendResult = store.append_messages(messages).await;
                    tidings_metrics::metrics()
                        .commit_latency
                        .observe_duration(started.elapsed());
                    if result.is_err() {
                        tracing::Span::current().record("error", true);
                    }
                    (batch, result)
                }, span));
            }
        }
    }
}

async fn publish_and_reply(core: &Core, batch: Vec<SequencerRequest>, result: AppendResult) {
    let results = match result {
        Ok(results) => results,
        Err(e) => {
            let err = CoreError::from(e);
            for request in batch {
                let _ = request.reply.send(Err(err.clone()));
            }
            return;
        }
    };
    for (request, result) in batch.into_iter().zip(results) {
        let result = result.map_err(CoreError::from);
        if let Ok(appended) = &result
            && !appended.duplicate
        {
            let event = BusEvent::Deliver {
                users: request.recipients.clone(),
                except_device: request.except_device,
                frame: OutFrame::new(ServerFrame::Message {
                    message: appended.message.clone(),
                }),
            };
            if let Err(e) = core.inner.bus.publish(event).await {
                // Stored but not announced: recipients get it on their next sync.
                tracing::warn!(%e, "Could not publish a committed message.");
            }
            core.push_message(&appended.message);
        }
        let _ = request.reply.send(result);
    }
}

/// Checks a body against the size limit and its kind's rules.
pub(crate) fn validate_body(body: &MessageBody, max_bytes: usize) -> CoreResult<()> {
    // Count the encoded bytes without building the encoding: this runs for every message, and
    // the store encodes the body again anyway.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, body)
        .map_err(|e| CoreError::internal("measuring a body", e))?;
    let size = counter.0;
    if size > max_bytes {
        return Err(CoreError::new(
            ErrorCode::TooLarge,
            format!("message body is {size} bytes; the limit is {max_bytes}"),
        ));
    }
    match body {
        MessageBody::Text { text } if text.trim().is_empty() => {
            Err(CoreError::invalid("text must not be empty"))
        }
        MessageBody::Encrypted {
            algorithm,
            ciphertext,
            ..
        } if algorithm.is_empty() || ciphertext.is_empty() => Err(CoreError::invalid(
            "encrypted bodies need an algorithm and a ciphertext",
        )),
        MessageBody::Custom { app, .. } if app.is_empty() || app.len() > 64 => Err(
            CoreError::invalid("custom bodies need an app name of 1 to 64 bytes"),
        ),
        // System events and tombstones are written by the server, never sent by clients.
        MessageBody::File { file_id, name, .. }
            if file_id.len() != 32 || name.chars().count() > 255 =>
        {
            Err(CoreError::invalid(
                "file bodies need a file_id of 32 hex characters and a name of at most 255",
            ))
        }
        MessageBody::System { .. } | MessageBody::Deleted {} | MessageBody::Call { .. } => Err(
            CoreError::invalid("system, deleted and call bodies are written by the server only"),
        ),
        MessageBody::Markdown { text } if text.trim().is_empty() => {
            Err(CoreError::invalid("markdown text must not be empty"))
        }
        _ => Ok(()),
    }
}

fn validate_client_msg_id(id: &str) -> CoreResult<()> {
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "client_msg_id must have 1 to 64 bytes without control characters",
        ));
    }
    Ok(())
}

/// A send's place among the sends one connection makes to one conversation. The checks before
/// the sequencer take different times (a file message reads the store, a text message whose
/// conversation is cached reads nothing), so sends a client pipelines could otherwise reach the
/// sequencer, and be committed, in another order than the client sent them. With a turn, a
/// send enters the sequencer only once the send before it has entered it or failed: the checks
/// still run side by side, the commits keep the client's order.
pub struct SendTurn {
    /// Resolves (or is dropped) once the previous send has entered the sequencer or failed.
    pub after: Option<oneshot::Receiver<()>>,
    /// Dropped once this send has entered the sequencer or failed, which lets the next go.
    pub done: oneshot::Sender<()>,
}

impl SendTurn {
    /// The turn after `previous` (`None`: the first send, or every earlier one is through),
    /// and what the send after this one waits on.
    pub fn after(previous: Option<oneshot::Receiver<()>>) -> (SendTurn, oneshot::Receiver<()>) {
        let (done, next) = oneshot::channel();
        (
            SendTurn {
                after: previous,
                done,
            },
            next,
        )
    }
}

impl Core {
    /// Sends a message: validated, committed durably, published, then acknowledged.
    pub async fn send(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        client_msg_id: String,
        body: MessageBody,
        relations: Relations,
    ) -> CoreResult<SendAck> {
        self.send_in_turn(
            caller,
            conversation_id,
            client_msg_id,
            body,
            relations,
            None,
        )
        .await
    }

    /// [`Core::send`], committed after the send before it in `turn` (see [`SendTurn`]).
    pub async fn send_in_turn(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        client_msg_id: String,
        mut body: MessageBody,
        mut relations: Relations,
        turn: Option<SendTurn>,
    ) -> CoreResult<SendAck> {
        let started = std::time::Instant::now();
        tidings_metrics::metrics().messages_received.inc();
        validate_client_msg_id(&client_msg_id)?;
        validate_body(&body, self.inner.config.limits.max_message_bytes)?;
        let info = self
            .authorize(caller, conversation_id, Action::SendMessage)
            .await?;
        if let Some(peer) = info.peer_of(caller.user_id) {
            crate::policy::direct_contact(info.direct_facts(caller.user_id, peer))?;
        }
        self.inner
            .message_limiter
            .check(&caller.user_id, self.now_ms())
            .map_err(|wait| CoreError::rate_limited("messages", wait))?;
        // Only a file message pays for the lookups that attaching a file needs, and only rich
        // messages for theirs.
        if let MessageBody::File { .. } = body {
            self.attach_file(caller, conversation_id, &mut body).await?;
        }
        if relations != Relations::default()
            || !matches!(
                body,
                MessageBody::Text { .. }
                    | MessageBody::Encrypted { .. }
                    | MessageBody::Custom { .. }
                    | MessageBody::File { .. }
            )
        {
            self.prepare_rich(caller, conversation_id, &info, &mut body, &mut relations)
                .await?;
        }
        let (reply, rx) = oneshot::channel();
        let request = SequencerRequest {
            message: NewMessage {
                conversation_id,
                sender_id: caller.user_id,
                sender_device_id: caller.device_id,
                client_msg_id,
                ts: self.now_ms(),
                body,
                relations,
            },
            recipients: info.member_ids.clone(),
            // The sending device learns the sequence from its ack.
            except_device: Some(caller.device_id),
            reply,
        };
        // Whatever happened to the send before (through or failed), this one may go now; its
        // own `done` is dropped when it has entered the sequencer (or on the error return).
        let done = match turn {
            Some(SendTurn { after, done }) => {
                if let Some(after) = after {
                    let _ = after.await;
                }
                Some(done)
            }
            None => None,
        };
        self.inner
            .sequencer
            .send(request)
            .await
            .map_err(|_| CoreError::new(ErrorCode::Unavailable, "server is shutting down"))?;
        drop(done);
        let appended = rx
            .await
            .map_err(|_| CoreError::new(ErrorCode::Unavailable, "server is shutting down"))?
            .map_err(|e| match e.code {
                // The store refuses effects on a target recalled in the meantime.
                ErrorCode::Conflict => {
                    CoreError::new(ErrorCode::Conflict, "the message was recalled")
                }
                ErrorCode::NotFound => CoreError::not_found("message"),
                _ => e,
            })?;
        tidings_metrics::metrics()
            .ack_latency
            .observe_duration(started.elapsed());
        Ok(SendAck {
            conversation_id,
            seq: appended.message.seq,
            message_id: appended.message.id,
            ts: appended.message.ts,
            duplicate: appended.duplicate,
        })
    }

    /// Checks that the sender may read the file a message carries, records that it is shared
    /// in the conversation (so its members may download it), and fills the body's size and
    /// type from the stored file rather than trusting the client.
    async fn attach_file(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        body: &mut MessageBody,
    ) -> CoreResult<()> {
        let MessageBody::File {
            file_id,
            size,
            content_type,
            width,
            height,
            ..
        } = body
        else {
            return Ok(());
        };
        let file = self
            .share_readable_file(caller, conversation_id, file_id)
            .await?;
        *size = file.size;
        *content_type = file.content_type;
        *width = file.width;
        *height = file.height;
        Ok(())
    }

    /// Shares a file the caller may read with a conversation the caller may post in, without
    /// a `file` message: for end-to-end-encrypted attachments, whose message the server cannot
    /// read (docs/protocol.md, 16.3).
    pub async fn share_file(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        file_id: &str,
    ) -> CoreResult<()> {
        self.authorize(caller, conversation_id, Action::SendMessage)
            .await?;
        self.share_readable_file(caller, conversation_id, file_id)
            .await
            .map(drop)
    }

    async fn share_readable_file(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        file_id: &str,
    ) -> CoreResult<tidings_store::FileRecord> {
        let store = &self.inner.store;
        let file = match store.file(file_id).await? {
            Some(file) if store.can_read_file(file_id, caller.user_id).await? => file,
            // Whether the file exists is nobody's business but its readers'.
            _ => return Err(CoreError::not_found("file")),
        };
        store.share_file(file_id, conversation_id).await?;
        Ok(file)
    }

    /// A page of history before `before` (newest first when omitted), returned oldest first.
    /// This device's own sync cursors, saved in the store, for a transport whose clients keep
    /// no cursors of their own (the XMPP gateway): a `sync` from them delivers what arrived
    /// while the device was away, once and in order. A device with none saved yet starts at
    /// the present: its cursors are set to every conversation's newest sequence (the archive
    /// stays in the history), so its first session is not flooded.
    pub async fn device_sync_cursors(&self, caller: &Caller) -> CoreResult<Vec<Cursor>> {
        let saved = self.inner.store.device_cursors(caller.device_id).await?;
        let cursors: Vec<(ConversationId, Seq)> = if let Some(saved) = saved {
            saved
        } else {
            let now: Vec<(ConversationId, Seq)> = self
                .inner
                .store
                .conversations_of(caller.user_id)
                .await?
                .iter()
                .map(|uc| (uc.conversation.id, uc.conversation.last_seq))
                .collect();
            // Started even when empty, so a conversation that appears while the device is
            // away is delivered from its start.
            self.inner
                .store
                .advance_device_cursors(caller.device_id, now.clone())
                .await?;
            now
        };
        Ok(cursors
            .into_iter()
            .map(|(conversation_id, seq)| Cursor {
                conversation_id,
                seq,
                peer_read_seq: None,
            })
            .collect())
    }

    /// Moves this device's saved sync cursors forward (see [`Core::device_sync_cursors`]);
    /// cursors never move back, so a late save from an older session cannot repeat messages.
    /// Only [`Core::device_sync_cursors`] starts a device's cursors: a save for a device that
    /// never synced from them does nothing (its positions could be partial, and conversations
    /// left out would later count from their start).
    pub async fn save_device_cursors(&self, caller: &Caller, cursors: &[Cursor]) -> CoreResult<()> {
        if cursors.is_empty()
            || self
                .inner
                .store
                .device_cursors(caller.device_id)
                .await?
                .is_none()
        {
            return Ok(());
        }
        let list = cursors.iter().map(|c| (c.conversation_id, c.seq)).collect();
        self.inner
            .store
            .advance_device_cursors(caller.device_id, list)
            .await?;
        Ok(())
    }

    pub async fn history(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        before: Option<Seq>,
        limit: Option<u32>,
    ) -> CoreResult<HistoryPage> {
        self.authorize(caller, conversation_id, Action::Read)
            .await?;
        let limit = limit
            .unwrap_or(50)
            .clamp(1, self.inner.config.limits.max_history_page);
        let mut messages = self
            .inner
            .store
            .messages_before(conversation_id, before, limit)
            .await?;
        self.apply_hidden(caller.user_id, conversation_id, &mut messages)
            .await?;
        let has_more = messages.first().is_some_and(|m| m.seq > 1);
        Ok(HistoryPage { messages, has_more })
    }

    /// Moves the caller's marker forward and tells the other members.
    pub async fn receipt(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        kind: ReceiptKind,
        seq: Seq,
    ) -> CoreResult<()> {
        let info = self
            .authorize(caller, conversation_id, Action::MoveMarker)
            .await?;
        let moved = self
            .inner
            .store
            .advance_marker(conversation_id, caller.user_id, kind, seq)
            .await?;
        if let Some(seq) = moved {
            let event = BusEvent::Deliver {
                users: info.member_ids.clone(),
                except_device: Some(caller.device_id),
                frame: OutFrame::new(ServerFrame::Receipt {
                    conversation_id,
                    user_id: caller.user_id,
                    receipt: kind,
                    seq,
                }),
            };
            self.publish(event).await;
        }
        Ok(())
    }

    /// Relays a typing indicator to the other members; nothing is stored.
    pub async fn typing(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        typing: bool,
    ) -> CoreResult<()> {
        let info = self
            .authorize(caller, conversation_id, Action::Typing)
            .await?;
        // Users the typer has blocked do not see it type (in groups too); in a direct
        // conversation where the policy refuses contact (a block either way, or a friends-only
        // peer who is not a friend) nobody does, and nobody is told.
        if let Some(peer) = info.peer_of(caller.user_id)
            && crate::policy::direct_contact(info.direct_facts(caller.user_id, peer)).is_err()
        {
            return Ok(());
        }
        let blocked: HashSet<UserId> = if info.kind == ConversationKind::Group {
            self.blocked_ids(caller.user_id).await?
        } else {
            HashSet::new()
        };
        let others: Arc<[UserId]> = info
            .member_ids
            .iter()
            .copied()
            .filter(|u| *u != caller.user_id && !blocked.contains(u))
            .collect();
        self.deliver(
            others,
            ServerFrame::Typing {
                conversation_id,
                user_id: caller.user_id,
                typing,
            },
        )
        .await;
        Ok(())
    }

    /// The presence of users who share a conversation with the caller or are their friends;
    /// others are left out.
    pub async fn presence_of(
        &self,
        caller: &Caller,
        users: &[UserId],
    ) -> CoreResult<Vec<Presence>> {
        if users.len() > 1000 {
            return Err(CoreError::invalid("ask for at most 1000 users at once"));
        }
        let visible: HashSet<UserId> = self
            .presence_watchers(caller.user_id)
            .await?
            .into_iter()
            .collect();
        let mut asked: Vec<UserId> = users
            .iter()
            .copied()
            .filter(|u| *u == caller.user_id || visible.contains(u))
            .collect();
        asked.sort();
        asked.dedup();
        // Someone who blocked the caller is left out as if unknown.
        let blockers: HashSet<UserId> = self
            .inner
            .store
            .blockers_of(caller.user_id)
            .await?
            .into_iter()
            .collect();
        asked.retain(|u| !blockers.contains(u));
        // Users whose setting hides them from the caller look like users who are away, without
        // a last-seen time.
        let hidden = self.presence_hidden_from(caller.user_id, &asked).await?;
        let seen = self.inner.store.last_seen(&asked).await?;
        Ok(asked
            .into_iter()
            .map(|user_id| {
                if hidden.contains(&user_id) {
                    return Presence {
                        user_id,
                        status: PresenceStatus::Offline,
                        last_seen: None,
                    };
                }
                let online = self.online_anywhere(user_id);
                Presence {
                    user_id,
                    status: if online {
                        PresenceStatus::Online
                    } else {
                        PresenceStatus::Offline
                    },
                    last_seen: seen.iter().find(|(u, _)| *u == user_id).map(|(_, t)| *t),
                }
            })
            .collect())
    }

    /// Announces that a user came online or went offline to everyone who shares a conversation.
    ///
    /// The status is read from the hub when the announcement is made, not passed in: a quick
    /// connect and disconnect spawn two announcements that may run in either order, and both
    /// then tell the truth as of their own moment, so the last one heard is the current state.
    pub(crate) async fn announce_presence(&self, user_id: UserId) {
        // The other nodes learn first whether the user is still here, so that their own
        // announcements (a device leaving there) take this node's connections into account.
        self.publish_node_presence(user_id).await;
        let blocked = match self.blocked_ids(user_id).await {
            Ok(blocked) => blocked,
            Err(e) => {
                tracing::debug!(%e, "Could not load the block list for presence.");
                return;
            }
        };
        let audience = match self.presence_watchers(user_id).await {
            Ok(mut users) => {
                // Users this one has blocked do not see them come and go.
                users.retain(|u| !blocked.contains(u));
                users
            }
            Err(e) => {
                // At shutdown the read is cancelled; nothing is lost, presence is ephemeral.
                tracing::debug!(%e, "Could not load the presence audience.");
                return;
            }
        };
        // Nor does anyone the user's presence setting leaves out.
        let audience = match self.presence_audience(user_id, audience).await {
            Ok(audience) => audience,
            Err(e) => {
                tracing::debug!(%e, "Could not load the presence setting.");
                return;
            }
        };
        // Read the status after the query, as close to the publication as possible. A user
        // still connected through another node is online, whatever happened here.
        let online = self.online_anywhere(user_id);
        let (status, last_seen) = if online {
            (PresenceStatus::Online, None)
        } else {
            let now = self.now_ms();
            if let Err(e) = self.inner.store.set_last_seen(user_id, now).await {
                tracing::warn!(%e, "Could not store last-seen time.");
            }
            (PresenceStatus::Offline, Some(now))
        };
        if audience.is_empty() {
            return;
        }
        self.deliver(
            audience,
            ServerFrame::Presence {
                presence: Presence {
                    user_id,
                    status,
                    last_seen,
                },
            },
        )
        .await;
    }

    /// The ids of the users `user` has blocked.
    pub(crate) async fn blocked_ids(&self, user: UserId) -> CoreResult<HashSet<UserId>> {
        Ok(self
            .inner
            .store
            .blocked_by(user)
            .await?
            .into_iter()
            .map(|b| b.user_id)
            .collect())
    }

    pub(crate) async fn publish(&self, event: BusEvent) {
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::warn!(%e, "Could not publish an event.");
        }
    }

    /// Appends a message the server writes (a call record) through the sequencer, like a
    /// client's send but without its checks, and delivers it to `recipients` on every device.
    /// `message.client_msg_id` makes it idempotent.
    pub(crate) async fn append_server_message(
        &self,
        message: NewMessage,
        recipients: Arc<[UserId]>,
    ) -> CoreResult<tidings_store::Appended> {
        let (reply, rx) = oneshot::channel();
        let request = SequencerRequest {
            message,
            recipients,
            except_device: None,
            reply,
        };
        self.inner
            .sequencer
            .send(request)
            .await
            .map_err(|_| CoreError::new(ErrorCode::Unavailable, "server is shutting down"))?;
        rx.await
            .map_err(|_| CoreError::new(ErrorCode::Unavailable, "server is shutting down"))?
    }

    /// Delivers a frame to every connection of `users`, on every node. The store stays the
    /// truth (a lost event is repaired by the next sync or listing), so a bus failure is only
    /// logged.
    pub(crate) async fn deliver(&self, users: impl Into<Arc<[UserId]>>, frame: ServerFrame) {
        self.publish(BusEvent::Deliver {
            users: users.into(),
            except_device: None,
            frame: OutFrame::new(frame),
        })
        .await;
    }

    /// The message at `seq`, or `not_found`.
    pub(crate) async fn message_at(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<tidings_proto::Message> {
        self.inner
            .store
            .messages_after(id, seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|m| m.seq == seq)
            .ok_or_else(|| CoreError::not_found("message"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rules() {
        let text = |t: &str| MessageBody::Text { text: t.into() };
        assert!(validate_body(&text("hi"), 100).is_ok());
        assert_eq!(
            validate_body(&text("  "), 100).unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            validate_body(&text(&"x".repeat(200)), 100)
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        assert!(validate_client_msg_id("abc-123").is_ok());
        assert!(validate_client_msg_id("").is_err());
        assert!(validate_client_msg_id("a\nb").is_err());
        assert!(validate_client_msg_id(&"x".repeat(65)).is_err());
    }
}
