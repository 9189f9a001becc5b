//! Contacts: the block list, friends and friend requests, and privacy settings.
//!
//! - A block stops direct messages both ways (the blocked side is told only that the user does
//!   not accept its messages), hides the blocker's presence and typing from the blocked user,
//!   ends a friendship and drops pending requests between the two, and is kept in the member
//!   cache of their direct conversation so the send path needs no query.
//! - Friend requests carry an optional note; a request to someone who already asked the sender
//!   makes them friends at once. Every change is told live to every device of both users (a
//!   `contact` frame) and bumps both users' contacts version, so a client that was away gets a
//!   `contacts` snapshot on its next sync.
//! - Privacy settings decide who may write directly (everyone or friends), who sees presence
//!   (everyone, friends, nobody) and who may add the user to groups. Friendship and privacy
//!   changes invalidate the cached direct conversations they affect, on every node.
//!
//! Every decision is made in [`crate::policy`]; this module gathers the facts and carries out.

use crate::error::{CoreError, CoreResult};
use crate::policy::DirectFacts;
use crate::{Caller, Core};
use std::collections::HashSet;
use tidings_proto::contacts::{
    ContactEvent, ContactsSnapshot, Friend, FriendList, FriendRequest, FriendRequestList,
    FriendRequestOutcome, FriendRequestResult, MAX_FRIEND_NOTE_CHARS, PrivacySettings,
    SendFriendRequest, UpdatePrivacyRequest, Visibility,
};
use tidings_proto::rest::{BlockList, BlockedUser, UserSummary};
use tidings_proto::ws::{Presence, PresenceStatus, ServerFrame};
use tidings_proto::{ErrorCode, UserId};
use tidings_store::{FriendRecord, FriendRequestRecord, FriendRequestSent, StoreError};

fn friend_view(f: FriendRecord) -> Friend {
    Friend {
        user_id: f.user_id,
        username: f.username,
        since: f.since,
    }
}

fn request_view(r: FriendRequestRecord) -> FriendRequest {
    FriendRequest {
        from: UserSummary {
            user_id: r.from,
            username: r.from_username,
        },
        to: UserSummary {
            user_id: r.to,
            username: r.to_username,
        },
        note: r.note,
        created_at: r.created_at,
    }
}

/// Trims a request's note; an empty note is none.
fn clean_note(note: Option<&str>) -> CoreResult<Option<String>> {
    let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if note.chars().count() > MAX_FRIEND_NOTE_CHARS {
        return Err(CoreError::invalid(format!(
            "a note has at most {MAX_FRIEND_NOTE_CHARS} characters"
        )));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CoreError::invalid(
            "a note must not contain control characters other than line breaks",
        ));
    }
    Ok(Some(note.to_owned()))
}

impl Core {
    /// The caller's block list.
    pub async fn blocks(&self, caller: &Caller) -> CoreResult<BlockList> {
        let users = self
            .inner
            .store
            .blocked_by(caller.user_id)
            .await?
            .into_iter()
            .map(|b| BlockedUser {
                user_id: b.user_id,
                username: b.username,
                since: b.since,
            })
            .collect();
        Ok(BlockList { users })
    }

    /// Blocks a user. Blocking someone already blocked is not an error.
    pub async fn block(&self, caller: &Caller, user: UserId) -> CoreResult<()> {
        if user == caller.user_id {
            return Err(CoreError::invalid("you cannot block yourself"));
        }
        let caller = *caller;
        self.detached(move |core| async move {
            // What the block will end, read first so both sides can be told (the store ends it
            // atomically with the block; a race here only makes a message redundant).
            let store = &core.inner.store;
            let friends = store.are_friends(caller.user_id, user).await?;
            let mine = store.friend_request(caller.user_id, user).await?.is_some();
            let theirs = store.friend_request(user, caller.user_id).await?.is_some();
            let added = store
                .block_user(caller.user_id, user, core.now_ms())
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CoreError::not_found("user"),
                    other => other.into(),
                })?;
            core.forget_direct(caller.user_id, user).await?;
            if added {
                core.tell_block(caller.user_id, user, true).await;
            }
            // The blocked side sees what an ordinary removal, cancel or decline looks like.
            let pair = [caller.user_id, user];
            if friends {
                core.tell_both(pair, |me| ContactEvent::FriendRemoved {
                    user_id: other_of(pair, me),
                })
                .await;
            }
            if mine {
                core.tell_both(pair, |_| ContactEvent::RequestCancelled {
                    from: caller.user_id,
                    to: user,
                })
                .await;
            }
            if theirs {
                core.tell_both(pair, |_| ContactEvent::RequestDeclined {
                    from: user,
                    to: caller.user_id,
                })
                .await;
            }
            Ok(())
        })
        .await
    }

    /// Lifts a block. Unblocking someone not blocked is not an error.
    pub async fn unblock(&self, caller: &Caller, user: UserId) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move {
            let lifted = core.inner.store.unblock_user(caller.user_id, user).await?;
            core.forget_direct(caller.user_id, user).await?;
            if lifted {
                core.tell_block(caller.user_id, user, false).await;
            }
            Ok(())
        })
        .await
    }

    /// Tells the blocker's devices that their block list changed (XEP-0191 pushes, for one).
    async fn tell_block(&self, blocker: UserId, user: UserId, blocked: bool) {
        self.deliver(
            vec![blocker],
            tidings_proto::ws::ServerFrame::Blocked {
                user_id: user,
                blocked,
            },
        )
        .await;
    }

    /// Drops the cached view of the direct conversation between two users, on every node, so
    /// the next message sees the current blocks.
    async fn forget_direct(&self, a: UserId, b: UserId) -> CoreResult<()> {
        if let Some(conv) = self.inner.store.direct_between(a, b).await? {
            self.membership_changed(conv.id).await;
        }
        Ok(())
    }
}

/// The one of a pair who is not `me`.
fn other_of(pair: [UserId; 2], me: UserId) -> UserId {
    if pair[0] == me { pair[1] } else { pair[0] }
}

/// Friends and friend requests.
impl Core {
    /// The caller's friends, in user id order.
    pub async fn friends(&self, caller: &Caller) -> CoreResult<FriendList> {
        self.friend_list(caller.user_id).await
    }

    /// The caller's pending requests, both ways, oldest first.
    pub async fn friend_requests(&self, caller: &Caller) -> CoreResult<FriendRequestList> {
        self.request_lists(caller.user_id).await
    }

    async fn friend_list(&self, user: UserId) -> CoreResult<FriendList> {
        let friends = self.inner.store.friends_of(user).await?;
        Ok(FriendList {
            friends: friends.into_iter().map(friend_view).collect(),
        })
    }

    async fn request_lists(&self, user: UserId) -> CoreResult<FriendRequestList> {
        let store = &self.inner.store;
        Ok(FriendRequestList {
            incoming: store
                .friend_requests_to(user)
                .await?
                .into_iter()
                .map(request_view)
                .collect(),
            outgoing: store
                .friend_requests_from(user)
                .await?
                .into_iter()
                .map(request_view)
                .collect(),
        })
    }

    /// Everything the user's contacts hold, with the version it is current for.
    pub(crate) async fn contacts_snapshot(&self, user: UserId) -> CoreResult<ContactsSnapshot> {
        // The version is read first: a change landing in between makes the snapshot newer than
        // its version says, and the next sync sends it again, which is harmless.
        let version = self.inner.store.contacts_version(user).await?;
        let friends = self.friend_list(user).await?.friends;
        let requests = self.request_lists(user).await?;
        Ok(ContactsSnapshot {
            version,
            friends,
            incoming: requests.incoming,
            outgoing: requests.outgoing,
        })
    }

    /// The user's contacts snapshot, if its version is newer than `held` (what the client has).
    pub(crate) async fn contacts_if_newer(
        &self,
        user: UserId,
        held: u64,
    ) -> CoreResult<Option<ContactsSnapshot>> {
        if self.inner.store.contacts_version(user).await? <= held {
            return Ok(None);
        }
        self.contacts_snapshot(user).await.map(Some)
    }

    /// Asks a user to be friends; if they had already asked the caller, the two are friends
    /// at once. Limited to `limits.friend_requests_per_hour` per user.
    pub async fn send_friend_request(
        &self,
        caller: &Caller,
        req: SendFriendRequest,
    ) -> CoreResult<FriendRequestResult> {
        let to = req.user_id;
        if to == caller.user_id {
            return Err(CoreError::invalid(
                "you cannot send a friend request to yourself",
            ));
        }
        let note = clean_note(req.note.as_deref())?;
        self.inner
            .friend_request_limiter
            .check(&caller.user_id, self.now_ms())
            .map_err(|wait| CoreError::rate_limited("friend requests", wait))?;
        let from = caller.user_id;
        self.detached(move |core| async move {
            let store = &core.inner.store;
            if store.user_by_id(to).await?.is_none_or(|u| u.disabled) {
                return Err(CoreError::not_found("user"));
            }
            crate::policy::friend_request(
                store.is_blocked(from, to).await?,
                store.is_blocked(to, from).await?,
            )?;
            let now = core.now_ms();
            let sent = store
                .send_friend_request(from, to, note.as_deref(), now)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CoreError::not_found("user"),
                    StoreError::Conflict("friendship") => {
                        CoreError::new(ErrorCode::Conflict, "you are friends already")
                    }
                    StoreError::Conflict(_) => CoreError::new(
                        ErrorCode::Conflict,
                        "you have already sent this user a friend request",
                    ),
                    other => other.into(),
                })?;
            let outcome = match sent {
                FriendRequestSent::Pending => {
                    if let Some(request) = store.friend_request(from, to).await? {
                        let request = request_view(request);
                        core.tell(
                            from,
                            ContactEvent::RequestSent {
                                request: request.clone(),
                            },
                        )
                        .await;
                        core.tell(to, ContactEvent::RequestReceived { request })
                            .await;
                        core.push_friend_request(from, to);
                    }
                    FriendRequestOutcome::Sent
                }
                FriendRequestSent::BecameFriends => {
                    core.became_friends([from, to], now).await?;
                    FriendRequestOutcome::BecameFriends
                }
            };
            Ok(FriendRequestResult { outcome })
        })
        .await
    }

    /// Accepts the pending request from `from`.
    pub async fn accept_friend_request(&self, caller: &Caller, from: UserId) -> CoreResult<()> {
        let to = caller.user_id;
        self.detached(move |core| async move {
            let now = core.now_ms();
            if !core
                .inner
                .store
                .accept_friend_request(from, to, now)
                .await?
            {
                return Err(CoreError::not_found("friend request"));
            }
            core.became_friends([from, to], now).await
        })
        .await
    }

    /// Declines the pending request from `from`; the sender is told.
    pub async fn decline_friend_request(&self, caller: &Caller, from: UserId) -> CoreResult<()> {
        let to = caller.user_id;
        self.detached(move |core| async move {
            if !core.inner.store.delete_friend_request(from, to).await? {
                return Err(CoreError::not_found("friend request"));
            }
            core.tell_both([from, to], |_| ContactEvent::RequestDeclined { from, to })
                .await;
            Ok(())
        })
        .await
    }

    /// Withdraws the caller's pending request to `to`.
    pub async fn cancel_friend_request(&self, caller: &Caller, to: UserId) -> CoreResult<()> {
        let from = caller.user_id;
        self.detached(move |core| async move {
            if !core.inner.store.delete_friend_request(from, to).await? {
                return Err(CoreError::not_found("friend request"));
            }
            core.tell_both([from, to], |_| ContactEvent::RequestCancelled { from, to })
                .await;
            Ok(())
        })
        .await
    }

    /// Ends a friendship; both users are told.
    pub async fn remove_friend(&self, caller: &Caller, friend: UserId) -> CoreResult<()> {
        let me = caller.user_id;
        self.detached(move |core| async move {
            if !core.inner.store.remove_friend(me, friend).await? {
                return Err(CoreError::not_found("friend"));
            }
            // A friends-only recipient stops accepting the other's messages now.
            core.forget_direct(me, friend).await?;
            let pair = [me, friend];
            core.tell_both(pair, |who| ContactEvent::FriendRemoved {
                user_id: other_of(pair, who),
            })
            .await;
            Ok(())
        })
        .await
    }

    /// After a friendship began: refresh the cached direct conversation and tell both users.
    async fn became_friends(&self, pair: [UserId; 2], since: i64) -> CoreResult<()> {
        self.forget_direct(pair[0], pair[1]).await?;
        let users = self.inner.store.users_by_ids(&pair).await?;
        for me in pair {
            let other = other_of(pair, me);
            let Some(record) = users.iter().find(|u| u.id == other) else {
                continue;
            };
            let friend = Friend {
                user_id: other,
                username: record.username.clone(),
                since,
            };
            self.tell(me, ContactEvent::RequestAccepted { friend })
                .await;
        }
        Ok(())
    }

    /// Tells each user of a pair, on all their devices, the event as `event_for` words it
    /// for them.
    async fn tell_both(&self, pair: [UserId; 2], event_for: impl Fn(UserId) -> ContactEvent) {
        for user in pair {
            self.tell(user, event_for(user)).await;
        }
    }

    /// Sends one contact event to every device of `user`, with the user's current version.
    async fn tell(&self, user: UserId, event: ContactEvent) {
        let version = match self.inner.store.contacts_version(user).await {
            Ok(version) => version,
            Err(e) => {
                // The change is stored; the user's next sync sends a snapshot.
                tracing::warn!(%e, "Could not read a contacts version.");
                return;
            }
        };
        self.deliver(vec![user], ServerFrame::Contact { event, version })
            .await;
    }
}

/// Privacy settings and the decisions that depend on them.
impl Core {
    /// The privacy settings of one user (the defaults if never changed).
    async fn privacy_settings(&self, user: UserId) -> CoreResult<PrivacySettings> {
        Ok(self
            .inner
            .store
            .privacy_of(&[user])
            .await?
            .into_iter()
            .next()
            .map(|(_, p)| p)
            .unwrap_or_default())
    }

    pub async fn privacy(&self, caller: &Caller) -> CoreResult<PrivacySettings> {
        self.privacy_settings(caller.user_id).await
    }

    /// Changes some of the caller's privacy settings. A change takes effect at once: cached
    /// direct conversations are refreshed on every node, and users who may no longer see the
    /// caller's presence are shown them offline.
    pub async fn update_privacy(
        &self,
        caller: &Caller,
        req: UpdatePrivacyRequest,
    ) -> CoreResult<PrivacySettings> {
        let user = caller.user_id;
        self.detached(move |core| async move {
            let before = core.privacy_settings(user).await?;
            let after = PrivacySettings {
                direct_messages: req.direct_messages.unwrap_or(before.direct_messages),
                presence: req.presence.unwrap_or(before.presence),
                group_adds: req.group_adds.unwrap_or(before.group_adds),
            };
            core.inner
                .store
                .set_privacy(user, after, core.now_ms())
                .await?;
            if after.direct_messages != before.direct_messages {
                for conversation in core.inner.store.direct_conversations_of(user).await? {
                    core.membership_changed(conversation).await;
                }
            }
            if after.presence != before.presence {
                core.presence_setting_changed(user, before.presence, after.presence)
                    .await?;
            }
            Ok(after)
        })
        .await
    }

    /// The facts the direct-contact policy needs, read from the store (for opening a direct
    /// conversation; the send path reads them from the member cache).
    pub(crate) async fn direct_facts(
        &self,
        sender: UserId,
        recipient: UserId,
    ) -> CoreResult<DirectFacts> {
        let store = &self.inner.store;
        Ok(DirectFacts {
            sender_blocked_recipient: store.is_blocked(sender, recipient).await?,
            recipient_blocked_sender: store.is_blocked(recipient, sender).await?,
            recipient_accepts: self.privacy_settings(recipient).await?.direct_messages,
            friends: store.are_friends(sender, recipient).await?,
        })
    }

    /// Whether `adder` may put `target` into a group directly (by the target's setting,
    /// friendship and blocks); when not, the group code invites them instead.
    // The group membership code is its only caller; until it lands only the tests call this.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn may_add_to_group(&self, adder: UserId, target: UserId) -> CoreResult<bool> {
        if adder == target {
            return Ok(true);
        }
        let store = &self.inner.store;
        let blocked =
            store.is_blocked(target, adder).await? || store.is_blocked(adder, target).await?;
        let friends = store.are_friends(adder, target).await?;
        let setting = self.privacy_settings(target).await?.group_adds;
        Ok(crate::policy::group_add(setting, friends, blocked))
    }

    /// Everyone who may follow `user`'s presence before settings and blocks apply: the members
    /// of their conversations and their friends (a friend one has never written to still shows
    /// as online in the contact list). The relation is symmetric, so it also says whose
    /// presence `user` may ask for.
    pub(crate) async fn presence_watchers(&self, user: UserId) -> CoreResult<Vec<UserId>> {
        let mut watchers = self.inner.store.co_members(user).await?;
        watchers.extend(self.friend_ids(user).await?);
        watchers.sort_unstable();
        watchers.dedup();
        Ok(watchers)
    }

    /// Of `watchers`, those who may see `subject`'s presence by the subject's setting.
    pub(crate) async fn presence_audience(
        &self,
        subject: UserId,
        watchers: Vec<UserId>,
    ) -> CoreResult<Vec<UserId>> {
        let setting = self.privacy_settings(subject).await?.presence;
        self.presence_audience_under(subject, setting, watchers)
            .await
    }

    /// Of `watchers`, those who may see `subject`'s presence under `setting`.
    async fn presence_audience_under(
        &self,
        subject: UserId,
        setting: Visibility,
        mut watchers: Vec<UserId>,
    ) -> CoreResult<Vec<UserId>> {
        let friends: HashSet<UserId> = if setting == Visibility::Friends {
            self.friend_ids(subject).await?
        } else {
            HashSet::new()
        };
        watchers.retain(|w| {
            crate::policy::presence_visible(setting, *w == subject, friends.contains(w))
        });
        Ok(watchers)
    }

    /// Of `subjects`, those whose presence `viewer` may not see by their settings.
    pub(crate) async fn presence_hidden_from(
        &self,
        viewer: UserId,
        subjects: &[UserId],
    ) -> CoreResult<HashSet<UserId>> {
        let settings = self.inner.store.privacy_of(subjects).await?;
        let friends = if settings
            .iter()
            .any(|(_, p)| p.presence == Visibility::Friends)
        {
            self.friend_ids(viewer).await?
        } else {
            HashSet::new()
        };
        Ok(settings
            .into_iter()
            .filter(|(subject, p)| {
                !crate::policy::presence_visible(
                    p.presence,
                    *subject == viewer,
                    friends.contains(subject),
                )
            })
            .map(|(subject, _)| subject)
            .collect())
    }

    pub(crate) async fn friend_ids(&self, user: UserId) -> CoreResult<HashSet<UserId>> {
        Ok(self
            .inner
            .store
            .friends_of(user)
            .await?
            .into_iter()
            .map(|f| f.user_id)
            .collect())
    }

    /// After a presence setting changed: those who could see the user and no longer may are
    /// shown them offline without a last-seen time, as for anyone hidden (those hidden before
    /// hear nothing, so they learn nothing of the change); those who may see the user get the
    /// current presence again, which announces it to anyone who just gained sight.
    async fn presence_setting_changed(
        &self,
        user: UserId,
        before: Visibility,
        after: Visibility,
    ) -> CoreResult<()> {
        let blocked = self.blocked_ids(user).await?;
        let mut everyone = self.presence_watchers(user).await?;
        everyone.retain(|u| !blocked.contains(u));
        let still: HashSet<UserId> = self
            .presence_audience_under(user, after, everyone.clone())
            .await?
            .into_iter()
            .collect();
        let hidden: Vec<UserId> = self
            .presence_audience_under(user, before, everyone)
            .await?
            .into_iter()
            .filter(|u| !still.contains(u))
            .collect();
        if !hidden.is_empty() {
            self.deliver(
                hidden,
                ServerFrame::Presence {
                    presence: Presence {
                        user_id: user,
                        status: PresenceStatus::Offline,
                        last_seen: None,
                    },
                },
            )
            .await;
        }
        if self.inner.hub.is_online(user) {
            self.announce_presence(user).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A core on a real SQLite store in a temporary directory.
    async fn core_on_sqlite() -> (Core, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = tidings_store_sqlite::SqliteStore::open(
            &dir.path().join("contacts.db"),
            Default::default(),
        )
        .unwrap();
        let mut config = crate::CoreConfig::default();
        config.accounts.argon2_memory_kib = 256;
        config.accounts.argon2_iterations = 1;
        let deps = crate::Deps {
            store: Arc::new(store),
            bus: Arc::new(tidings_bus::InProcessBus::new(64)),
            clock: Arc::new(crate::SystemClock),
            keys: crate::Keyring::from_seed([7; 32]),
        };
        let (core, _tasks) = Core::start(config, deps, "http://test".into())
            .await
            .unwrap();
        (core, dir)
    }

    #[tokio::test]
    async fn group_adds_follow_the_targets_setting_friendship_and_blocks() {
        use tidings_proto::contacts::GroupAdds;
        let (core, _dir) = core_on_sqlite().await;
        let store = core.inner.store.clone();
        let mut ids = Vec::new();
        for name in ["adder", "friend", "target"] {
            ids.push(store.create_user(name, "x", 1).await.unwrap().id);
        }
        let [adder, friend, target] = ids[..] else {
            unreachable!()
        };
        store
            .send_friend_request(adder, friend, None, 2)
            .await
            .unwrap();
        store.accept_friend_request(adder, friend, 3).await.unwrap();
        let set = |user, group_adds| {
            let store = store.clone();
            async move {
                let settings = PrivacySettings {
                    group_adds,
                    ..PrivacySettings::default()
                };
                store.set_privacy(user, settings, 4).await.unwrap();
            }
        };
        // By default anyone may add anyone.
        assert!(core.may_add_to_group(adder, target).await.unwrap());
        set(target, GroupAdds::Friends).await;
        set(friend, GroupAdds::Friends).await;
        assert!(!core.may_add_to_group(adder, target).await.unwrap());
        assert!(core.may_add_to_group(adder, friend).await.unwrap());
        set(friend, GroupAdds::Nobody).await;
        assert!(!core.may_add_to_group(adder, friend).await.unwrap());
        // A block either way says no whatever the setting.
        set(target, GroupAdds::Everyone).await;
        store.block_user(target, adder, 5).await.unwrap();
        assert!(!core.may_add_to_group(adder, target).await.unwrap());
        store.unblock_user(target, adder).await.unwrap();
        store.block_user(adder, target, 6).await.unwrap();
        assert!(!core.may_add_to_group(adder, target).await.unwrap());
        store.unblock_user(adder, target).await.unwrap();
        assert!(core.may_add_to_group(adder, target).await.unwrap());
    }

    #[test]
    fn notes_are_trimmed_and_checked() {
        assert_eq!(clean_note(None).unwrap(), None);
        assert_eq!(clean_note(Some("  ")).unwrap(), None);
        assert_eq!(
            clean_note(Some(" hi\nit's me ")).unwrap().as_deref(),
            Some("hi\nit's me")
        );
        assert!(clean_note(Some(&"é".repeat(MAX_FRIEND_NOTE_CHARS))).is_ok());
        assert!(clean_note(Some(&"x".repeat(MAX_FRIEND_NOTE_CHARS + 1))).is_err());
        assert!(clean_note(Some("bell\u{7}")).is_err());
    }
}
