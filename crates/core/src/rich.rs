//! Rich messages: checks for replies, threads, mentions, edits, recalls, reactions, pins,
//! forwards and the newer body kinds before they enter the sequencer, and the per-member
//! conversation settings.
//!
//! Everything here is an ordinary message in the conversation's order, so it arrives live and
//! on sync like any other and retries are idempotent on `client_msg_id`. Messages that act on
//! another message (edit, recall, reaction, pin) have their effect applied by the store in the
//! same transaction as their append; this module only decides whether they are allowed.

use crate::conversations::ConvInfo;
use crate::error::{CoreError, CoreResult};
use crate::policy::{self, Action, RecallFacts};
use crate::{Caller, Core};
use tidings_proto::rest::{
    ConversationKind, ConversationSettings, EditHistory, MessageVersion, PinnedMessages,
    ReactionList, Reactors, UpdateConversationSettingsRequest,
};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, ErrorCode, Message, MessageBody, Relations, Seq};

/// Messages a forward may bundle.
const MAX_FORWARDED: usize = 100;
/// Users one message may mention by name.
const MAX_MENTIONS: usize = 100;
/// Longest reaction key in bytes (an emoji with modifiers fits easily).
const MAX_REACTION_KEY_BYTES: usize = 32;
/// Pinned messages listed at most.
const MAX_PINS_LISTED: u32 = 100;

/// Whether a stored message can be the target of a reply, thread, reaction or pin: content,
/// not an event about content.
fn is_content(message: &Message) -> bool {
    !matches!(
        message.body,
        MessageBody::System { .. } | MessageBody::Deleted {}
    ) && message.body.target().is_none()
}

impl Core {
    /// Checks a message's relations and kind-specific rules, and completes bodies the server
    /// fills in (forwards). Called by [`Core::send`] after the caller may post.
    pub(crate) async fn prepare_rich(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        info: &ConvInfo,
        body: &mut MessageBody,
        relations: &mut Relations,
    ) -> CoreResult<()> {
        self.check_relations(caller, conversation_id, info, relations)
            .await?;
        let now = self.now_ms();
        let messages = &self.inner.config.messages;
        match body {
            MessageBody::Markdown { text } if text.trim().is_empty() => {
                return Err(CoreError::invalid("markdown text must not be empty"));
            }
            MessageBody::Location {
                latitude,
                longitude,
                name,
            } => {
                let valid = latitude.is_finite()
                    && longitude.is_finite()
                    && (-90.0..=90.0).contains(latitude)
                    && (-180.0..=180.0).contains(longitude);
                if !valid {
                    return Err(CoreError::invalid(
                        "latitude must be within ±90 and longitude within ±180",
                    ));
                }
                if name.chars().count() > 255 {
                    return Err(CoreError::invalid(
                        "a location name has at most 255 characters",
                    ));
                }
            }
            MessageBody::Contact { user_id } => {
                let known = self.inner.store.user_by_id(*user_id).await?;
                if known.is_none_or(|u| u.deleted_at.is_some()) {
                    return Err(CoreError::not_found("user"));
                }
            }
            MessageBody::Forward { messages } => {
                self.complete_forward(caller, messages).await?;
            }
            MessageBody::Edit { target, body: new } => {
                let original = self.message_at(conversation_id, *target).await?;
                policy::edit_message(
                    original.sender_id == caller.user_id,
                    now - original.ts,
                    secs_to_ms(messages.edit_window_secs),
                )?;
                let editable = matches!(
                    original.body,
                    MessageBody::Text { .. }
                        | MessageBody::Markdown { .. }
                        | MessageBody::Location { .. }
                        | MessageBody::Custom { .. }
                        // A recalled target is refused by the store, atomically with the edit.
                        | MessageBody::Deleted {}
                );
                if !editable {
                    return Err(CoreError::invalid(
                        "only text, markdown, location and custom messages can be edited",
                    ));
                }
                if !matches!(original.body, MessageBody::Deleted {})
                    && original.body.kind() != new.kind()
                {
                    return Err(CoreError::invalid(format!(
                        "an edit must keep the message's kind ({})",
                        original.body.kind()
                    )));
                }
                // The new body obeys the same rules as a new message.
                super::messaging::validate_body(new, self.inner.config.limits.max_message_bytes)?;
                if new.target().is_some() || matches!(**new, MessageBody::Forward { .. }) {
                    return Err(CoreError::invalid("an edit carries plain content"));
                }
            }
            MessageBody::Recall { target } => {
                let original = self.message_at(conversation_id, *target).await?;
                if matches!(original.body, MessageBody::System { .. })
                    || original.body.target().is_some()
                {
                    return Err(CoreError::invalid("only content messages can be recalled"));
                }
                let facts = RecallFacts {
                    own: original.sender_id == caller.user_id,
                    age_ms: now - original.ts,
                    sender_role: info.roles.get(&original.sender_id).copied(),
                };
                policy::recall_message(
                    info.kind,
                    info.standing(caller.user_id, now),
                    facts,
                    secs_to_ms(messages.recall_window_secs),
                    &info.permissions,
                )?;
            }
            MessageBody::Reaction {
                target,
                key,
                remove,
            } => {
                if key.is_empty()
                    || key.len() > MAX_REACTION_KEY_BYTES
                    || key.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(CoreError::invalid(format!(
                        "a reaction key has 1 to {MAX_REACTION_KEY_BYTES} bytes without spaces"
                    )));
                }
                let original = self.message_at(conversation_id, *target).await?;
                if !is_content(&original) && !matches!(original.body, MessageBody::Deleted {}) {
                    return Err(CoreError::invalid("only content messages take reactions"));
                }
                let new_key = !original.reactions.iter().any(|r| &r.key == key);
                if !*remove && new_key && original.reactions.len() >= messages.max_reaction_keys {
                    return Err(CoreError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "a message carries at most {} different reactions",
                            messages.max_reaction_keys
                        ),
                    ));
                }
            }
            MessageBody::Pin { target, .. } => {
                policy::decide(
                    Action::PinMessages,
                    info.kind,
                    info.standing(caller.user_id, now),
                    &info.permissions,
                )?;
                let original = self.message_at(conversation_id, *target).await?;
                if !is_content(&original) && !matches!(original.body, MessageBody::Deleted {}) {
                    return Err(CoreError::invalid("only content messages can be pinned"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn check_relations(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        info: &ConvInfo,
        relations: &mut Relations,
    ) -> CoreResult<()> {
        for (what, seq) in [
            ("reply_to", relations.reply_to),
            ("thread_root", relations.thread_root),
        ] {
            let Some(seq) = seq else { continue };
            let target = self
                .message_at(conversation_id, seq)
                .await
                .map_err(|_| CoreError::invalid(format!("{what} names no message here")))?;
            if !is_content(&target) {
                return Err(CoreError::invalid(format!(
                    "{what} must name a content message"
                )));
            }
            if what == "thread_root" && target.thread_root.is_some() {
                // Threads are one level deep, as in Slack and Zulip: a reply in a thread
                // belongs to the thread's root.
                return Err(CoreError::invalid(
                    "thread_root must be a root, not a reply in a thread",
                ));
            }
        }
        if let Some(mentions) = &mut relations.mentions {
            mentions.users.sort_unstable();
            mentions.users.dedup();
            if mentions.users.len() > MAX_MENTIONS {
                return Err(CoreError::invalid(format!(
                    "a message mentions at most {MAX_MENTIONS} users by name"
                )));
            }
            if let Some(stranger) = mentions.users.iter().find(|u| !info.roles.contains_key(u)) {
                return Err(CoreError::invalid(format!(
                    "user {stranger} is not a member and cannot be mentioned here"
                )));
            }
            if mentions.all {
                if info.kind == ConversationKind::Direct {
                    return Err(CoreError::invalid("mentioning everyone needs a group"));
                }
                policy::decide(
                    Action::MentionAll,
                    info.kind,
                    info.standing(caller.user_id, self.now_ms()),
                    &info.permissions,
                )?;
            }
            if mentions.users.is_empty() && !mentions.all {
                relations.mentions = None;
            }
        }
        Ok(())
    }

    /// Fills each forwarded message from its original, which the caller must be able to read.
    async fn complete_forward(
        &self,
        caller: &Caller,
        items: &mut [tidings_proto::ForwardedMessage],
    ) -> CoreResult<()> {
        if items.is_empty() || items.len() > MAX_FORWARDED {
            return Err(CoreError::invalid(format!(
                "a forward bundles 1 to {MAX_FORWARDED} messages"
            )));
        }
        for item in items.iter_mut() {
            self.authorize(caller, item.conversation_id, Action::Read)
                .await?;
            let original = self.message_at(item.conversation_id, item.seq).await?;
            let forwardable = match &original.body {
                MessageBody::Encrypted { .. } => false,
                body => is_content(&original) && !matches!(body, MessageBody::Deleted {}),
            };
            if !forwardable {
                return Err(CoreError::invalid(
                    "only readable content can be forwarded (not encrypted, recalled or event messages)",
                ));
            }
            item.sender_id = Some(original.sender_id);
            item.ts = Some(original.ts);
            item.body = Some(Box::new(original.body));
        }
        Ok(())
    }

    /// Every version of a message's body (the edit history).
    pub async fn edit_history(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<EditHistory> {
        self.authorize(caller, id, Action::Read).await?;
        let versions = self.inner.store.edit_history(id, seq).await?;
        if versions.is_empty() {
            return Err(CoreError::not_found("message"));
        }
        Ok(EditHistory {
            versions: versions
                .into_iter()
                .map(|v| MessageVersion {
                    ts: v.ts,
                    editor_id: v.editor_id,
                    body: v.body,
                })
                .collect(),
        })
    }

    /// Who reacted to a message, per key.
    pub async fn reactions(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<ReactionList> {
        self.authorize(caller, id, Action::Read).await?;
        self.message_at(id, seq).await?;
        let reactions = self.inner.store.reactions(id, seq).await?;
        Ok(ReactionList {
            reactions: reactions
                .into_iter()
                .map(|(key, users)| Reactors { key, users })
                .collect(),
        })
    }

    /// The conversation's pinned messages, most recently pinned first.
    pub async fn pinned_messages(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<PinnedMessages> {
        self.authorize(caller, id, Action::Read).await?;
        Ok(PinnedMessages {
            messages: self
                .inner
                .store
                .pinned_messages(id, MAX_PINS_LISTED)
                .await?,
        })
    }

    /// A page of the replies in a thread, oldest first, after `after`.
    pub async fn thread(
        &self,
        caller: &Caller,
        id: ConversationId,
        root: Seq,
        after: Seq,
        limit: u32,
    ) -> CoreResult<tidings_proto::rest::HistoryPage> {
        self.authorize(caller, id, Action::Read).await?;
        let limit = limit.clamp(1, self.inner.config.limits.max_history_page);
        let mut messages = self
            .inner
            .store
            .thread_messages(id, root, after, limit + 1)
            .await?;
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        Ok(tidings_proto::rest::HistoryPage { messages, has_more })
    }

    /// Changes the caller's own settings for a conversation; the caller's other devices hear of
    /// it live.
    pub async fn update_conversation_settings(
        &self,
        caller: &Caller,
        id: ConversationId,
        change: UpdateConversationSettingsRequest,
    ) -> CoreResult<ConversationSettings> {
        self.authorize(caller, id, Action::Read).await?;
        let settings = self
            .inner
            .store
            .update_conversation_settings(id, caller.user_id, change, self.now_ms())
            .await
            .map_err(|e| match e {
                tidings_store::StoreError::NotFound => CoreError::not_found("conversation"),
                other => other.into(),
            })?;
        self.deliver(
            vec![caller.user_id],
            ServerFrame::ConversationSettings {
                conversation_id: id,
                settings: settings.clone(),
            },
        )
        .await;
        Ok(settings)
    }
}

impl Core {
    /// Shows the messages `user` deleted for themselves as tombstones in a page bound for them.
    pub(crate) async fn apply_hidden(
        &self,
        user: tidings_proto::UserId,
        conversation: ConversationId,
        messages: &mut [Message],
    ) -> CoreResult<()> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let hidden = self
            .inner
            .store
            .hidden_messages(user, conversation, first.seq, last.seq)
            .await?;
        if hidden.is_empty() {
            return Ok(());
        }
        for message in messages.iter_mut() {
            if hidden.binary_search(&message.seq).is_ok() {
                hide(message);
            }
        }
        Ok(())
    }

    /// Deletes a message for the caller only: the caller's devices show a tombstone from now
    /// on (they hear of it live), everyone else still sees it.
    pub async fn hide_message(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<()> {
        self.authorize(caller, id, Action::Read).await?;
        self.inner
            .store
            .hide_message(caller.user_id, id, seq)
            .await
            .map_err(|e| match e {
                tidings_store::StoreError::NotFound => CoreError::not_found("message"),
                other => other.into(),
            })?;
        self.deliver(
            vec![caller.user_id],
            ServerFrame::MessageHidden {
                conversation_id: id,
                seq,
            },
        )
        .await;
        Ok(())
    }

    /// The threads of a conversation with the caller's unread replies in each.
    pub async fn threads(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<tidings_proto::rest::ThreadList> {
        self.authorize(caller, id, Action::Read).await?;
        let threads = self.inner.store.threads(id, caller.user_id, 100).await?;
        let mut list = Vec::with_capacity(threads.len());
        for thread in threads {
            let mut root = [thread.root];
            self.apply_hidden(caller.user_id, id, &mut root).await?;
            let [root] = root;
            list.push(tidings_proto::rest::ThreadView {
                root,
                unread: thread.unread,
                read_seq: thread.read_seq,
            });
        }
        Ok(tidings_proto::rest::ThreadList { threads: list })
    }

    /// Moves the caller's read position in a thread forward.
    pub async fn mark_thread_read(
        &self,
        caller: &Caller,
        id: ConversationId,
        root: Seq,
        seq: Seq,
    ) -> CoreResult<()> {
        self.authorize(caller, id, Action::MoveMarker).await?;
        self.inner
            .store
            .mark_thread_read(id, root, caller.user_id, seq)
            .await?;
        Ok(())
    }
}

/// What a hidden message looks like to the member who hid it.
fn hide(message: &mut Message) {
    message.body = MessageBody::Deleted {};
    message.mentions = None;
    message.edited_at = None;
    message.reactions.clear();
    message.pinned_at = None;
}

/// Conversations with their own retention read per store call.
const RETENTION_PAGE: u32 = 200;

/// Applies the retention policies for as long as the core runs: the server's, then each
/// conversation's own. Deletes go in small transactions with a pause between them, so live
/// traffic always finds the writer free.
pub(crate) async fn run_retention(core: Core) {
    let config = core.inner.config.messages.clone();
    let interval = std::time::Duration::from_secs(config.retention_interval_secs.max(1));
    loop {
        tokio::time::sleep(interval).await;
        match core.apply_retention().await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "Deleted messages past their retention."),
            Err(e) => tracing::warn!(code = ?e.code, "Could not apply message retention."),
        }
    }
}

impl Core {
    /// One retention pass over the whole store; returns how many messages it deleted.
    pub async fn apply_retention(&self) -> CoreResult<u64> {
        let config = &self.inner.config.messages;
        let batch = config.retention_batch.max(1);
        let pause = std::time::Duration::from_millis(20);
        let store = &self.inner.store;
        let now = self.now_ms();
        let mut deleted = 0u64;
        if config.retention_days > 0 {
            let before = now.saturating_sub(i64::from(config.retention_days) * 86_400_000);
            loop {
                let n = store.prune_before(before, batch).await?;
                deleted += u64::from(n);
                if n < batch {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
        }
        let mut after = ConversationId(0);
        loop {
            let page = store.retentions(after, RETENTION_PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (conversation, retention) in &page {
                let prune = tidings_store::Prune {
                    before_ts: retention.max_age_ms.map(|age| now.saturating_sub(age)),
                    keep_last: retention.keep_last,
                };
                loop {
                    let n = match store.prune_conversation(*conversation, prune, batch).await {
                        Err(tidings_store::StoreError::NotFound) => 0,
                        other => other?,
                    };
                    deleted += u64::from(n);
                    if n < batch {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
            if page.len() < RETENTION_PAGE as usize {
                break;
            }
        }
        Ok(deleted)
    }

    /// Sets a group's own retention (who may change the group's information may set it); the
    /// server's policy still applies on top.
    pub async fn set_retention(
        &self,
        caller: &Caller,
        id: ConversationId,
        retention: tidings_proto::rest::RetentionPolicy,
    ) -> CoreResult<tidings_proto::rest::RetentionPolicy> {
        let info = self.authorize(caller, id, Action::Read).await?;
        policy::decide(
            Action::EditInfo,
            info.kind,
            info.standing(caller.user_id, self.now_ms()),
            &info.permissions,
        )?;
        if retention.max_age_days == Some(0) || retention.keep_last == Some(0) {
            return Err(CoreError::invalid(
                "max_age_days and keep_last are at least 1 (leave them out for no limit)",
            ));
        }
        self.inner
            .store
            .set_retention(
                id,
                tidings_store::Retention {
                    max_age_ms: retention
                        .max_age_days
                        .map(|days| i64::from(days) * 86_400_000),
                    keep_last: retention.keep_last,
                },
            )
            .await?;
        Ok(retention)
    }

    /// A conversation's own retention (empty when it follows the server's).
    pub async fn retention(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<tidings_proto::rest::RetentionPolicy> {
        self.authorize(caller, id, Action::Read).await?;
        let retention = self.inner.store.retention(id).await?;
        Ok(tidings_proto::rest::RetentionPolicy {
            max_age_days: retention
                .max_age_ms
                .map(|ms| u32::try_from(ms / 86_400_000).unwrap_or(u32::MAX)),
            keep_last: retention.keep_last,
        })
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
