//! Direct and group conversations, membership, and the in-memory member cache.

use crate::error::{CoreError, CoreResult};
use crate::policy::{Action, DirectFacts, Standing, decide};
use crate::{Caller, Core};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tidings_bus::BusEvent;
use tidings_proto::contacts::DirectMessages;
use tidings_proto::rest::GroupPermissions;
use tidings_proto::rest::{
    Conversation, ConversationKind, ConversationList, CreateGroupRequest, Member, MessageReaders,
    Role, UserSummary,
};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, ErrorCode, Seq, UserId};
use tidings_store::UserConversation;

/// What the hot path needs to know about a conversation: its kind and who is in it.
#[derive(Debug)]
pub struct ConvInfo {
    pub kind: ConversationKind,
    pub roles: HashMap<UserId, Role>,
    /// Members with a mute set, and until when (ms since the epoch); expired mutes may linger
    /// here and are ignored.
    pub muted_until: HashMap<UserId, i64>,
    /// For groups, who may do what (defaults for direct conversations, where they are unused).
    pub permissions: GroupPermissions,
    /// The same members as a shared slice, handed to the bus without copying.
    pub member_ids: Arc<[UserId]>,
    /// For direct conversations, the blocks between the two members as (blocker, blocked), so
    /// the send path needs no query. Blocking invalidates the entry.
    pub blocks: Vec<(UserId, UserId)>,
    /// For direct conversations, whether the two members are friends, and which of them accept
    /// direct messages only from friends. Friendship and privacy changes invalidate the entry.
    pub friends: bool,
    pub friends_only: Vec<UserId>,
}

impl ConvInfo {
    /// The user's standing at `now`.
    pub fn standing(&self, user: UserId, now: i64) -> Standing {
        Standing {
            role: self.roles.get(&user).copied(),
            muted: self
                .muted_until
                .get(&user)
                .is_some_and(|until| now < *until),
        }
    }

    /// For a direct conversation, the other member.
    pub fn peer_of(&self, user: UserId) -> Option<UserId> {
        match self.kind {
            ConversationKind::Direct => self.member_ids.iter().copied().find(|m| *m != user),
            ConversationKind::Group => None,
        }
    }

    pub fn has_blocked(&self, blocker: UserId, blocked: UserId) -> bool {
        self.blocks.contains(&(blocker, blocked))
    }

    /// What the direct-contact policy needs to decide whether `sender` may write to
    /// `recipient` here, without a query.
    pub fn direct_facts(&self, sender: UserId, recipient: UserId) -> DirectFacts {
        DirectFacts {
            sender_blocked_recipient: self.has_blocked(sender, recipient),
            recipient_blocked_sender: self.has_blocked(recipient, sender),
            recipient_accepts: if self.friends_only.contains(&recipient) {
                DirectMessages::Friends
            } else {
                DirectMessages::Everyone
            },
            friends: self.friends,
        }
    }
}

/// Member lists of recently used conversations, so sending a message needs no query.
///
/// Correctness does not depend on the cache being warm, only on it never being stale: every
/// membership change invalidates the entry (locally and, through the bus, on other nodes), and
/// a generation counter stops a load that raced with an invalidation from being stored.
pub struct MemberCache {
    entries: Mutex<HashMap<ConversationId, Arc<ConvInfo>>>,
    generation: AtomicU64,
    capacity: usize,
}

impl MemberCache {
    pub fn new(capacity: usize) -> Self {
        MemberCache {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    pub fn invalidate(&self, id: ConversationId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .expect("cache lock poisoned")
            .remove(&id);
    }

    fn get(&self, id: ConversationId) -> Option<Arc<ConvInfo>> {
        self.entries
            .lock()
            .expect("cache lock poisoned")
            .get(&id)
            .cloned()
    }

    fn insert_if_current(&self, id: ConversationId, info: Arc<ConvInfo>, generation: u64) {
        let mut entries = self.entries.lock().expect("cache lock poisoned");
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity {
            // Evict one arbitrary entry (the map's iteration order is effectively random), so a
            // cache at capacity keeps most of its entries instead of reloading everything.
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(id, info);
    }
}

fn role_of(kind: ConversationKind, standing_role: Role) -> Role {
    match kind {
        ConversationKind::Direct => Role::Member,
        ConversationKind::Group => standing_role,
    }
}

impl Core {
    /// The conversation's kind and members, from the cache or the store.
    pub(crate) async fn conv_info(&self, id: ConversationId) -> CoreResult<Arc<ConvInfo>> {
        if let Some(info) = self.inner.members.get(id) {
            return Ok(info);
        }
        let generation = self.inner.members.generation.load(Ordering::Acquire);
        let conv = self
            .inner
            .store
            .conversation(id)
            .await?
            .ok_or_else(|| CoreError::not_found("conversation"))?;
        let permissions = match conv.kind {
            ConversationKind::Group => self
                .inner
                .store
                .group(id)
                .await?
                .map(|g| g.permissions)
                .unwrap_or_default(),
            ConversationKind::Direct => GroupPermissions::default(),
        };
        let members = self.inner.store.members(id).await?;
        let mut blocks = Vec::new();
        let mut friends = false;
        let mut friends_only = Vec::new();
        if conv.kind == ConversationKind::Direct
            && let [a, b] = members.as_slice()
        {
            for (blocker, blocked) in [(a.user_id, b.user_id), (b.user_id, a.user_id)] {
                if self.inner.store.is_blocked(blocker, blocked).await? {
                    blocks.push((blocker, blocked));
                }
            }
            friends = self.inner.store.are_friends(a.user_id, b.user_id).await?;
            friends_only = self
                .inner
                .store
                .privacy_of(&[a.user_id, b.user_id])
                .await?
                .into_iter()
                .filter(|(_, p)| p.direct_messages == DirectMessages::Friends)
                .map(|(user, _)| user)
                .collect();
        }
        let info = Arc::new(ConvInfo {
            blocks,
            permissions,
            muted_until: members
                .iter()
                .filter_map(|m| m.muted_until.map(|until| (m.user_id, until)))
                .collect(),
            friends,
            friends_only,
            kind: conv.kind,
            member_ids: members.iter().map(|m| m.user_id).collect(),
            roles: members
                .iter()
                .map(|m| (m.user_id, role_of(conv.kind, m.role)))
                .collect(),
        });
        self.inner
            .members
            .insert_if_current(id, info.clone(), generation);
        Ok(info)
    }

    /// Checks the policy for the caller in a conversation and returns the conversation's info.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        id: ConversationId,
        action: Action,
    ) -> CoreResult<Arc<ConvInfo>> {
        let info = match self.conv_info(id).await {
            Ok(info) => info,
            // Unknown conversations and ones the caller is not in look the same.
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(CoreError::not_found("conversation"));
            }
            Err(e) => return Err(e),
        };
        let standing = info.standing(caller.user_id, self.now_ms());
        let decision = decide(action, info.kind, standing, &info.permissions);
        self.audited(caller, id, action, None, decision).await?;
        Ok(info)
    }

    /// Passes `result` through, recording a refusal (`forbidden`) in the audit log first.
    /// Refused reads and sends of members are recorded too: a muted member trying to post is
    /// exactly what moderators want to see. Not-found answers are not refusals of a forbidden
    /// action but of an unknown one, and are not recorded.
    pub(crate) async fn audited<T>(
        &self,
        caller: &Caller,
        id: ConversationId,
        action: Action,
        target: Option<UserId>,
        result: CoreResult<T>,
    ) -> CoreResult<T> {
        if let Err(refusal) = &result
            && refusal.code == ErrorCode::Forbidden
        {
            let kind = format!(
                "{}{}",
                crate::audit::kinds::CONVERSATION_PREFIX,
                action.as_str()
            );
            self.audit_refused(
                Some(caller.user_id),
                &kind,
                target,
                Some(id),
                serde_json::json!({ "reason": refusal.message }),
            )
            .await;
        }
        result
    }

    pub(crate) fn conversation_view(uc: &UserConversation) -> Conversation {
        Conversation {
            id: uc.conversation.id,
            kind: uc.conversation.kind,
            title: uc.conversation.title.clone(),
            created_at: uc.conversation.created_at,
            last_seq: uc.conversation.last_seq,
            read_seq: uc.me.read_seq,
            unread: uc.unread,
            mentions: uc.mentions,
            settings: uc.settings.clone(),
            last_message: None,
            peer: uc.peer.as_ref().map(|p| UserSummary {
                user_id: p.user_id,
                username: p.username.clone(),
            }),
            peer_delivered_seq: uc.peer.as_ref().map(|p| p.delivered_seq),
            peer_read_seq: uc.peer.as_ref().map(|p| p.read_seq),
            member_count: uc.member_count,
        }
    }

    /// The newest message that is content, not an edit, reaction, recall or pin.
    async fn last_message(
        &self,
        uc: &UserConversation,
    ) -> CoreResult<Option<tidings_proto::Message>> {
        if uc.last_message_seq == 0 {
            return Ok(None);
        }
        Ok(self
            .inner
            .store
            .messages_after(uc.conversation.id, uc.last_message_seq - 1, 1)
            .await?
            .into_iter()
            .find(|m| m.seq == uc.last_message_seq))
    }

    /// One conversation as the caller sees it, with its last message.
    pub async fn conversation(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<Conversation> {
        self.authorize(caller, id, Action::Read).await?;
        let uc = self
            .inner
            .store
            .user_conversation(caller.user_id, id)
            .await?
            .ok_or_else(|| CoreError::not_found("conversation"))?;
        let mut view = Self::conversation_view(&uc);
        view.last_message = self.last_message(&uc).await?;
        Ok(view)
    }

    /// The caller's conversations, newest activity first, with last messages and unread counts.
    pub async fn conversations(&self, caller: &Caller) -> CoreResult<ConversationList> {
        let list = self.inner.store.conversations_of(caller.user_id).await?;
        let mut conversations = Vec::with_capacity(list.len());
        for uc in &list {
            let mut view = Self::conversation_view(uc);
            view.last_message = self.last_message(uc).await?;
            conversations.push(view);
        }
        // Pinned conversations first, by when they were pinned; the rest keep the store's
        // order (newest activity first).
        conversations.sort_by_key(|c| c.settings.pinned_at.map_or(i64::MAX, |at| -at));
        Ok(ConversationList { conversations })
    }

    pub async fn members(&self, caller: &Caller, id: ConversationId) -> CoreResult<Vec<Member>> {
        let info = self.authorize(caller, id, Action::Read).await?;
        let members = self.inner.store.members(id).await?;
        let now = self.now_ms();
        Ok(members
            .into_iter()
            .map(|m| Member {
                role: role_of(info.kind, m.role),
                user_id: m.user_id,
                username: m.username,
                delivered_seq: m.delivered_seq,
                read_seq: m.read_seq,
                muted_until: m.muted_until.filter(|until| *until > now),
            })
            .collect())
    }

    /// Who has read, received or not yet received the message at `seq`, from the members'
    /// markers: a marker at or past `seq` covers it, since markers only move forward.
    pub async fn message_readers(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<MessageReaders> {
        self.authorize(caller, id, Action::Read).await?;
        let message = self.message_at(id, seq).await?;
        let mut readers = MessageReaders {
            conversation_id: id,
            seq,
            read: Vec::new(),
            delivered: Vec::new(),
            unread: Vec::new(),
        };
        for m in self.inner.store.members(id).await? {
            // Members start with their markers at the end of the conversation when they join,
            // so a later joiner's marker says nothing about this message.
            if m.user_id == message.sender_id || m.joined_at > message.ts {
                continue;
            }
            let who = UserSummary {
                user_id: m.user_id,
                username: m.username,
            };
            if m.read_seq >= seq {
                readers.read.push(who);
            } else if m.delivered_seq >= seq {
                readers.delivered.push(who);
            } else {
                readers.unread.push(who);
            }
        }
        Ok(readers)
    }

    /// The steps of [`Core::open_direct`], which runs them detached.
    async fn open_direct_steps(&self, caller: &Caller, peer: UserId) -> CoreResult<Conversation> {
        if peer == caller.user_id {
            return Err(CoreError::invalid(
                "a direct conversation needs another user",
            ));
        }
        let exists = self.inner.store.user_by_id(peer).await?;
        if exists.is_none_or(|u| u.disabled) {
            return Err(CoreError::not_found("user"));
        }
        crate::policy::direct_contact(self.direct_facts(caller.user_id, peer).await?)?;
        let (conv, created) = self
            .inner
            .store
            .get_or_create_direct(caller.user_id, peer, self.now_ms())
            .await?;
        if created {
            self.announce_conversation(conv.id, &[caller.user_id, peer])
                .await;
        }
        self.conversation(caller, conv.id).await
    }

    /// The steps of [`Core::create_group`], which runs them detached.
    async fn create_group_steps(
        &self,
        caller: &Caller,
        req: CreateGroupRequest,
    ) -> CoreResult<Conversation> {
        let title = req.title.trim();
        if title.is_empty() || title.chars().count() > 128 {
            return Err(CoreError::invalid("a group title has 1 to 128 characters"));
        }
        let mut members = req.members;
        members.retain(|m| *m != caller.user_id);
        members.sort();
        members.dedup();
        let max = self.inner.config.limits.max_group_members as usize;
        if members.len() + 1 > max {
            return Err(CoreError::new(
                ErrorCode::LimitExceeded,
                format!("a group has at most {max} members"),
            ));
        }
        // Privacy settings apply from the start: users who do not accept direct adds from the
        // creator get an invitation instead.
        let (add, invite, _silent) = self.sort_additions(caller, None, &members).await?;
        let conv = self
            .inner
            .store
            .create_group(caller.user_id, title, &add, self.now_ms())
            .await?;
        let mut everyone = add;
        everyone.push(caller.user_id);
        self.announce_conversation(conv.id, &everyone).await;
        if !invite.is_empty() {
            self.invite_users_to(caller, conv.id, title, &invite)
                .await?;
        }
        self.conversation(caller, conv.id).await
    }

    pub(crate) async fn check_users_exist(&self, users: &[UserId]) -> CoreResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let found = self.inner.store.users_by_ids(users).await?;
        if found.iter().filter(|u| !u.disabled).count() != users.len() {
            return Err(CoreError::not_found("user"));
        }
        Ok(())
    }

    pub(crate) async fn membership_changed(&self, id: ConversationId) {
        self.inner.members.invalidate(id);
        if let Err(e) = self
            .inner
            .bus
            .publish(BusEvent::MembershipChanged {
                conversation_id: id,
            })
            .await
        {
            tracing::warn!(%e, "Could not announce a membership change.");
        }
    }

    /// Sends each user their view of a conversation they just joined.
    pub(crate) async fn announce_conversation(&self, id: ConversationId, users: &[UserId]) {
        for user in users {
            match self.inner.store.user_conversation(*user, id).await {
                Ok(Some(uc)) => {
                    let conversation = Self::conversation_view(&uc);
                    self.deliver(vec![*user], ServerFrame::Conversation { conversation })
                        .await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%e, "Could not load a conversation to announce."),
            }
        }
    }
}

/// The public faces of the membership changes above, run detached (see [`Core::detached`]): a
/// change stored but never announced would leave member caches stale, so new members could not
/// post and removed ones would still receive.
impl Core {
    /// The one direct conversation between the caller and `peer`, created on first use.
    pub async fn open_direct(&self, caller: &Caller, peer: UserId) -> CoreResult<Conversation> {
        let caller = *caller;
        self.detached(move |core| async move { core.open_direct_steps(&caller, peer).await })
            .await
    }

    /// Creates a group owned by the caller.
    pub async fn create_group(
        &self,
        caller: &Caller,
        req: CreateGroupRequest,
    ) -> CoreResult<Conversation> {
        let caller = *caller;
        self.detached(move |core| async move { core.create_group_steps(&caller, req).await })
            .await
    }
}
