//! Group management: membership changes, roles, mutes, bans, settings, invite links, join
//! requests and invitations.
//!
//! Every change goes through [`Core::change_group`], which asks the store to apply it together
//! with the system message that records it (and its audit entry) in one transaction, then
//! refreshes member caches on every node and delivers the message to everyone it concerns,
//! including members who were just removed, so they learn why the conversation went quiet.
//! The decisions themselves are in [`crate::policy`].

use crate::audit::kinds;
use crate::conversations::ConvInfo;
use crate::error::{CoreError, CoreResult};
use crate::policy::{Action, decide_on_member};
use crate::{Caller, Core, tokens};
use std::sync::Arc;
use tidings_proto::message::{JoinMethod, SystemEvent};
use tidings_proto::rest::{
    AddMembersResult, BanList, BannedUser, CreateInviteLinkRequest, GroupInfo, GroupInvitation,
    GroupInvitationList, GroupPermissions, GroupPreview, InviteLink, InviteLinkList,
    JoinGroupResult, JoinRequest, JoinRequestList, JoinStatus, Role, UpdateGroupRequest,
    UserSummary,
};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, ErrorCode, MessageBody, Seq, UserId};
use tidings_store::{
    AuditOutcome, GroupChange, GroupChanged, GroupRecord, InviteLinkRecord, NewAudit,
    NewInviteLink, NewMessage, StoreError,
};

/// The longest mute, and the longest an invite link may stay valid.
const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;

/// How an add request treats one user, given their privacy settings and blocks.
enum Addable {
    /// Added at once.
    Add,
    /// Sent an invitation to accept.
    Invite,
    /// The user blocked the inviter: nothing is sent, and the inviter is told the same as for an
    /// invitation so the block stays private.
    Silently,
}

fn check_len(field: &str, value: &str, min: usize, max: usize) -> CoreResult<()> {
    let len = value.chars().count();
    if len < min || len > max || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CoreError::invalid(format!(
            "{field} has {min} to {max} characters without control characters"
        )));
    }
    Ok(())
}

fn duration_ms(secs: u64, what: &str) -> CoreResult<i64> {
    if secs == 0 || secs > MAX_DURATION_SECS {
        return Err(CoreError::invalid(format!(
            "{what} lasts 1 second to 366 days"
        )));
    }
    Ok(secs as i64 * 1000)
}

fn link_view(link: &InviteLinkRecord, code: Option<String>) -> InviteLink {
    InviteLink {
        id: link.id,
        conversation_id: link.conversation_id,
        code,
        created_by: link.created_by,
        created_at: link.created_at,
        expires_at: link.expires_at,
        max_uses: link.max_uses,
        uses: link.uses,
        revoked: link.revoked,
    }
}

fn group_view(group: &GroupRecord, role: Role) -> GroupInfo {
    GroupInfo {
        conversation_id: group.conversation.id,
        title: group.conversation.title.clone(),
        description: group.description.clone(),
        avatar: group.avatar.clone(),
        announcement: group.announcement.clone(),
        join_approval: group.join_approval,
        permissions: group.permissions.clone(),
        member_count: group.member_count,
        role,
    }
}

impl Core {
    /// Authorizes `action` in a group (direct conversations refuse every group action) and
    /// returns the group's info with the caller's role.
    pub(crate) async fn authorize_group(
        &self,
        caller: &Caller,
        id: ConversationId,
        action: Action,
    ) -> CoreResult<(Arc<ConvInfo>, Role)> {
        let info = self.authorize(caller, id, action).await?;
        let role = info
            .roles
            .get(&caller.user_id)
            .copied()
            .ok_or_else(|| CoreError::not_found("conversation"))?;
        Ok((info, role))
    }

    /// Checks the rank rule for acting on `target`, who must be a member; refusals are
    /// audited.
    pub(crate) async fn outranks(
        &self,
        caller: &Caller,
        info: &ConvInfo,
        id: ConversationId,
        action: Action,
        actor: Role,
        target: UserId,
    ) -> CoreResult<Role> {
        let target_role = info
            .roles
            .get(&target)
            .copied()
            .ok_or_else(|| CoreError::not_found("member"))?;
        let decision = decide_on_member(action, actor, target_role);
        self.audited(caller, id, action, Some(target), decision)
            .await?;
        Ok(target_role)
    }

    fn system_message(
        &self,
        caller: &Caller,
        id: ConversationId,
        event: SystemEvent,
    ) -> NewMessage {
        NewMessage {
            conversation_id: id,
            sender_id: caller.user_id,
            sender_device_id: caller.device_id,
            client_msg_id: format!("sys:{}", tokens::random_token()),
            ts: self.now_ms(),
            body: MessageBody::System {
                event: Box::new(event),
            },
            relations: Default::default(),
        }
    }

    pub(crate) fn audit_entry(
        &self,
        caller: &Caller,
        id: ConversationId,
        kind: &str,
        target: Option<UserId>,
        detail: serde_json::Value,
    ) -> NewAudit {
        NewAudit {
            ts: self.now_ms(),
            actor: Some(caller.user_id),
            kind: kind.to_owned(),
            outcome: AuditOutcome::Done,
            target_user: target,
            conversation: Some(id),
            address: None,
            detail,
        }
    }

    /// Applies a change with its system message, then refreshes caches and delivers the
    /// message to current members and to anyone the change removed.
    async fn change_group(
        &self,
        caller: &Caller,
        id: ConversationId,
        change: GroupChange,
        event: SystemEvent,
        audit: Option<NewAudit>,
    ) -> CoreResult<GroupChanged> {
        let message = self.system_message(caller, id, event);
        let dissolving = matches!(change, GroupChange::Dissolve);
        let changed = self
            .inner
            .store
            .change_group(change, message, audit)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => CoreError::not_found("member"),
                StoreError::Conflict("banned") => {
                    CoreError::forbidden("this user is banned from the group")
                }
                other => other.into(),
            })?;
        self.membership_changed(id).await;
        if dissolving {
            // A dissolved group's room address is free for a new room.
            if let Err(e) = self.inner.store.delete_room(id).await {
                tracing::warn!(%e, "Could not release a dissolved group's room.");
            }
        }
        let mut recipients: Vec<UserId> = match self.conv_info(id).await {
            Ok(info) => info.member_ids.to_vec(),
            Err(e) if e.code == ErrorCode::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        recipients.extend(changed.removed.iter().copied());
        recipients.sort();
        recipients.dedup();
        let message = changed.event.clone();
        self.deliver(recipients, ServerFrame::Message { message })
            .await;
        if !changed.added.is_empty() {
            self.announce_conversation(id, &changed.added).await;
        }
        Ok(changed)
    }

    async fn group_record(&self, id: ConversationId) -> CoreResult<GroupRecord> {
        self.inner
            .store
            .group(id)
            .await?
            .ok_or_else(|| CoreError::not_found("conversation"))
    }

    fn check_room(&self, info: &ConvInfo, adding: usize) -> CoreResult<()> {
        let max = self.inner.config.limits.max_group_members as usize;
        if info.roles.len() + adding > max {
            return Err(CoreError::new(
                ErrorCode::LimitExceeded,
                format!("a group has at most {max} members"),
            ));
        }
        Ok(())
    }

    /// Takes one invitation token for the caller, or says how long to wait.
    fn check_invite_rate(&self, caller: &Caller) -> CoreResult<()> {
        self.inner
            .invite_limiter
            .check(&caller.user_id, self.now_ms())
            .map_err(|wait| CoreError::rate_limited("invitations", wait))
    }

    /// Whether `adder` may add `target` to a group directly, must invite them, or must send
    /// nothing at all.
    async fn addable(&self, adder: UserId, target: UserId) -> CoreResult<Addable> {
        if self.inner.store.is_blocked(target, adder).await? {
            return Ok(Addable::Silently);
        }
        if self.inner.store.is_blocked(adder, target).await? {
            return Err(CoreError::forbidden(format!(
                "you have blocked user {target}; unblock them to add them"
            )));
        }
        if self.may_add_to_group(adder, target).await? {
            Ok(Addable::Add)
        } else {
            Ok(Addable::Invite)
        }
    }

    /// Sends `users` invitations to the group (skipping ones already pending).
    pub(crate) async fn invite_users_to(
        &self,
        caller: &Caller,
        id: ConversationId,
        title: &str,
        users: &[UserId],
    ) -> CoreResult<()> {
        let inviter = self
            .inner
            .store
            .user_by_id(caller.user_id)
            .await?
            .ok_or_else(|| CoreError::unauthenticated("account no longer exists"))?;
        for &user in users {
            let now = self.now_ms();
            if !self
                .inner
                .store
                .create_group_invitation(id, user, caller.user_id, now)
                .await?
            {
                continue;
            }
            let invitation = GroupInvitation {
                conversation_id: id,
                title: title.to_owned(),
                inviter: UserSummary {
                    user_id: inviter.id,
                    username: inviter.username.clone(),
                },
                created_at: now,
            };
            self.deliver(vec![user], ServerFrame::GroupInvitation { invitation })
                .await;
        }
        Ok(())
    }

    /// Splits the users a creator or member wants to add into those added at once and those
    /// invited, after checking they exist and are not banned.
    pub(crate) async fn sort_additions(
        &self,
        caller: &Caller,
        id: Option<ConversationId>,
        users: &[UserId],
    ) -> CoreResult<(Vec<UserId>, Vec<UserId>, Vec<UserId>)> {
        self.check_users_exist(users).await?;
        let (mut add, mut invite, mut silent) = (Vec::new(), Vec::new(), Vec::new());
        for &user in users {
            if let Some(id) = id
                && self.inner.store.is_banned(id, user).await?
            {
                return Err(CoreError::new(
                    ErrorCode::Conflict,
                    format!("user {user} is banned from this group; unban them first"),
                ));
            }
            self.check_invite_rate(caller)?;
            match self.addable(caller.user_id, user).await? {
                Addable::Add => add.push(user),
                Addable::Invite => invite.push(user),
                Addable::Silently => silent.push(user),
            }
        }
        Ok((add, invite, silent))
    }

    // --- The steps of each operation; the public faces below run them detached. ------------

    async fn add_members_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        users: Vec<UserId>,
    ) -> CoreResult<AddMembersResult> {
        let (info, _) = self.authorize_group(caller, id, Action::Invite).await?;
        let mut users = users;
        users.sort();
        users.dedup();
        users.retain(|u| !info.roles.contains_key(u));
        self.check_room(&info, users.len())?;
        let (add, invite, silent) = self.sort_additions(caller, Some(id), &users).await?;
        let mut added = Vec::new();
        if !add.is_empty() {
            let changed = self
                .change_group(
                    caller,
                    id,
                    GroupChange::AddMembers { users: add.clone() },
                    SystemEvent::MembersAdded { users: add },
                    None,
                )
                .await?;
            added = changed.added;
        }
        if !invite.is_empty() {
            let title = self.group_record(id).await?.conversation.title;
            self.invite_users_to(caller, id, &title, &invite).await?;
        }
        let mut invited = invite;
        invited.extend(silent);
        invited.sort();
        Ok(AddMembersResult { added, invited })
    }

    async fn remove_member_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        if user == caller.user_id {
            self.authorize_group(caller, id, Action::Leave).await?;
            self.change_group(
                caller,
                id,
                GroupChange::RemoveMember { user },
                SystemEvent::MemberLeft {},
                None,
            )
            .await?;
            return Ok(());
        }
        let (info, role) = self
            .authorize_group(caller, id, Action::RemoveMember)
            .await?;
        self.outranks(caller, &info, id, Action::RemoveMember, role, user)
            .await?;
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_KICK,
            Some(user),
            serde_json::json!({}),
        );
        self.change_group(
            caller,
            id,
            GroupChange::RemoveMember { user },
            SystemEvent::MemberRemoved { user },
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn mute_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        duration_secs: Option<u64>,
    ) -> CoreResult<()> {
        let (info, role) = self.authorize_group(caller, id, Action::Mute).await?;
        self.outranks(caller, &info, id, Action::Mute, role, user)
            .await?;
        let (until, event, kind) = match duration_secs {
            Some(secs) => {
                let until = self.now_ms() + duration_ms(secs, "a mute")?;
                (
                    Some(until),
                    SystemEvent::MemberMuted { user, until },
                    kinds::GROUP_MUTE,
                )
            }
            None => (
                None,
                SystemEvent::MemberUnmuted { user },
                kinds::GROUP_UNMUTE,
            ),
        };
        let audit = self.audit_entry(
            caller,
            id,
            kind,
            Some(user),
            serde_json::json!({ "until": until }),
        );
        self.change_group(
            caller,
            id,
            GroupChange::Mute { user, until },
            event,
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn ban_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        reason: Option<String>,
    ) -> CoreResult<()> {
        let (info, role) = self.authorize_group(caller, id, Action::Ban).await?;
        if user == caller.user_id {
            return Err(CoreError::invalid("you cannot ban yourself"));
        }
        if info.roles.contains_key(&user) {
            self.outranks(caller, &info, id, Action::Ban, role, user)
                .await?;
        } else {
            // Users who are not members can be banned ahead of time, so a link cannot bring
            // them in.
            self.check_users_exist(&[user]).await?;
        }
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if let Some(reason) = &reason {
            check_len("a ban reason", reason, 1, 200)?;
        }
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_BAN,
            Some(user),
            serde_json::json!({ "reason": reason }),
        );
        self.change_group(
            caller,
            id,
            GroupChange::Ban {
                user,
                by: caller.user_id,
                reason: reason.clone(),
            },
            SystemEvent::MemberBanned { user, reason },
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn unban_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        self.authorize_group(caller, id, Action::Ban).await?;
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_UNBAN,
            Some(user),
            serde_json::json!({}),
        );
        self.change_group(
            caller,
            id,
            GroupChange::Unban { user },
            SystemEvent::MemberUnbanned { user },
            Some(audit),
        )
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound => CoreError::not_found("ban"),
            _ => e,
        })?;
        Ok(())
    }

    async fn set_role_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        new_role: Role,
    ) -> CoreResult<()> {
        let (info, role) = self
            .authorize_group(caller, id, Action::ChangeRoles)
            .await?;
        if new_role == Role::Owner {
            return Err(CoreError::invalid(
                "ownership moves only by transfer (POST .../transfer)",
            ));
        }
        self.outranks(caller, &info, id, Action::ChangeRoles, role, user)
            .await?;
        // Nobody hands out a role as high as their own: an admin allowed to change roles can
        // make members, not more admins.
        let decision = decide_on_member(Action::ChangeRoles, role, new_role);
        self.audited(caller, id, Action::ChangeRoles, Some(user), decision)
            .await?;
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_ROLE,
            Some(user),
            serde_json::json!({ "role": new_role }),
        );
        self.change_group(
            caller,
            id,
            GroupChange::SetRole {
                user,
                role: new_role,
            },
            SystemEvent::RoleChanged {
                user,
                role: new_role,
            },
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn transfer_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        to: UserId,
    ) -> CoreResult<()> {
        let (info, _) = self
            .authorize_group(caller, id, Action::TransferOwnership)
            .await?;
        if to == caller.user_id || !info.roles.contains_key(&to) {
            return Err(CoreError::invalid(
                "ownership goes to another member of the group",
            ));
        }
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_TRANSFER,
            Some(to),
            serde_json::json!({}),
        );
        self.change_group(
            caller,
            id,
            GroupChange::TransferOwnership {
                from: caller.user_id,
                to,
            },
            SystemEvent::OwnershipTransferred { user: to },
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn update_group_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        req: UpdateGroupRequest,
    ) -> CoreResult<GroupInfo> {
        let (_, role) = self.authorize_group(caller, id, Action::EditInfo).await?;
        let title = req.title.map(|t| t.trim().to_owned());
        if let Some(title) = &title {
            check_len("a group title", title, 1, 128)?;
        }
        if let Some(description) = &req.description {
            check_len("a description", description, 0, 1000)?;
        }
        if let Some(avatar) = &req.avatar {
            self.check_avatar(caller, avatar).await?;
        }
        if let Some(announcement) = &req.announcement {
            check_len("an announcement", announcement, 0, 2000)?;
        }
        if title.is_none()
            && req.description.is_none()
            && req.avatar.is_none()
            && req.announcement.is_none()
            && req.join_approval.is_none()
        {
            return Err(CoreError::invalid("nothing to change"));
        }
        let audit = self.audit_entry(caller, id, kinds::GROUP_INFO, None, serde_json::json!({}));
        self.change_group(
            caller,
            id,
            GroupChange::UpdateInfo {
                title: title.clone(),
                description: req.description.clone(),
                avatar: req.avatar.clone(),
                announcement: req.announcement.clone(),
                join_approval: req.join_approval,
            },
            SystemEvent::InfoChanged {
                title,
                description: req.description,
                avatar: req.avatar,
                announcement: req.announcement,
                join_approval: req.join_approval,
            },
            Some(audit),
        )
        .await?;
        Ok(group_view(&self.group_record(id).await?, role))
    }

    async fn set_permissions_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        permissions: GroupPermissions,
    ) -> CoreResult<GroupInfo> {
        let (_, role) = self
            .authorize_group(caller, id, Action::SetPermissions)
            .await?;
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_PERMISSIONS,
            None,
            serde_json::to_value(&permissions).unwrap_or_default(),
        );
        self.change_group(
            caller,
            id,
            GroupChange::SetPermissions(permissions.clone()),
            SystemEvent::PermissionsChanged { permissions },
            Some(audit),
        )
        .await?;
        Ok(group_view(&self.group_record(id).await?, role))
    }

    async fn dissolve_steps(&self, caller: &Caller, id: ConversationId) -> CoreResult<()> {
        self.authorize_group(caller, id, Action::Dissolve).await?;
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_DISSOLVE,
            None,
            serde_json::json!({}),
        );
        self.change_group(
            caller,
            id,
            GroupChange::Dissolve,
            SystemEvent::GroupDissolved {},
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn delete_message_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<()> {
        let (info, role) = self
            .authorize_group(caller, id, Action::DeleteMessages)
            .await?;
        let message = self.message_at(id, seq).await?;
        if matches!(
            message.body,
            MessageBody::System { .. } | MessageBody::Deleted {}
        ) {
            return Err(CoreError::not_found("message"));
        }
        if message.sender_id != caller.user_id
            && let Some(sender_role) = info.roles.get(&message.sender_id)
        {
            // Moderators cannot delete the messages of those above or beside them.
            let decision = decide_on_member(Action::DeleteMessages, role, *sender_role);
            self.audited(
                caller,
                id,
                Action::DeleteMessages,
                Some(message.sender_id),
                decision,
            )
            .await?;
        }
        let audit = self.audit_entry(
            caller,
            id,
            kinds::GROUP_DELETE_MESSAGE,
            Some(message.sender_id),
            serde_json::json!({ "seq": seq }),
        );
        self.change_group(
            caller,
            id,
            GroupChange::DeleteMessage { seq },
            SystemEvent::MessageDeleted { seq },
            Some(audit),
        )
        .await?;
        Ok(())
    }

    async fn create_link_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        req: CreateInviteLinkRequest,
    ) -> CoreResult<InviteLink> {
        self.authorize_group(caller, id, Action::Invite).await?;
        let now = self.now_ms();
        let expires_at = match req.expires_in_secs {
            Some(secs) => Some(now + duration_ms(secs, "an invite link")?),
            None => None,
        };
        if req.max_uses == Some(0) {
            return Err(CoreError::invalid("max_uses is at least 1"));
        }
        let code = tokens::random_token();
        let link = self
            .inner
            .store
            .create_invite_link(NewInviteLink {
                conversation_id: id,
                code_hash: tokens::hash_token(&code),
                created_by: caller.user_id,
                created_at: now,
                expires_at,
                max_uses: req.max_uses,
            })
            .await?;
        Ok(link_view(&link, Some(code)))
    }

    /// The usable link behind a code, or `not_found` (for unknown, revoked, expired and used-up
    /// links alike).
    async fn usable_link(&self, code: &str) -> CoreResult<InviteLinkRecord> {
        match self
            .inner
            .store
            .invite_link_by_code(tokens::hash_token(code))
            .await?
        {
            Some(link) if link.usable(self.now_ms()) => Ok(link),
            _ => Err(CoreError::not_found("invite link")),
        }
    }

    async fn join_steps(
        &self,
        caller: &Caller,
        code: String,
        message: Option<String>,
    ) -> CoreResult<JoinGroupResult> {
        let link = self.usable_link(&code).await?;
        let id = link.conversation_id;
        let group = self.group_record(id).await?;
        let info = self.conv_info(id).await?;
        if info.roles.contains_key(&caller.user_id) {
            return Err(CoreError::new(
                ErrorCode::Conflict,
                "you are already a member of this group",
            ));
        }
        if self.inner.store.is_banned(id, caller.user_id).await? {
            return Err(CoreError::forbidden("you cannot join this group"));
        }
        self.check_room(&info, 1)?;
        if group.join_approval {
            let message = message.unwrap_or_default().trim().to_owned();
            check_len("a join message", &message, 0, 200)?;
            let now = self.now_ms();
            if self
                .inner
                .store
                .create_join_request(id, caller.user_id, &message, now)
                .await?
            {
                self.announce_join_request(&info, caller, id, message, now)
                    .await;
            }
            return Ok(JoinGroupResult {
                conversation_id: id,
                status: JoinStatus::Requested,
            });
        }
        self.change_group(
            caller,
            id,
            GroupChange::JoinByLink {
                user: caller.user_id,
                link_id: link.id,
            },
            SystemEvent::MemberJoined {
                user: caller.user_id,
                via: JoinMethod::Link,
            },
            None,
        )
        .await
        .map_err(|e| match e.code {
            // The link ran out between the check and the join.
            ErrorCode::NotFound => CoreError::not_found("invite link"),
            _ => e,
        })?;
        Ok(JoinGroupResult {
            conversation_id: id,
            status: JoinStatus::Joined,
        })
    }

    /// Tells the members who may approve joins that someone asked.
    async fn announce_join_request(
        &self,
        info: &ConvInfo,
        caller: &Caller,
        id: ConversationId,
        message: String,
        now: i64,
    ) {
        let approvers: Vec<UserId> = info
            .roles
            .iter()
            .filter(|(_, role)| **role >= info.permissions.approve_joins)
            .map(|(user, _)| *user)
            .collect();
        let username = match self.inner.store.user_by_id(caller.user_id).await {
            Ok(Some(user)) => user.username,
            _ => return,
        };
        let request = JoinRequest {
            conversation_id: id,
            user_id: caller.user_id,
            username,
            message,
            created_at: now,
        };
        self.deliver(approvers, ServerFrame::JoinRequest { request })
            .await;
    }

    async fn approve_steps(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        let (info, _) = self
            .authorize_group(caller, id, Action::ApproveJoins)
            .await?;
        self.check_room(&info, 1)?;
        self.change_group(
            caller,
            id,
            GroupChange::ApproveJoinRequest { user },
            SystemEvent::MemberJoined {
                user,
                via: JoinMethod::Request,
            },
            None,
        )
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound => CoreError::not_found("join request"),
            _ => e,
        })?;
        Ok(())
    }

    async fn accept_invitation_steps(&self, caller: &Caller, id: ConversationId) -> CoreResult<()> {
        let info = self.conv_info(id).await.map_err(|e| match e.code {
            ErrorCode::NotFound => CoreError::not_found("invitation"),
            _ => e,
        })?;
        self.check_room(&info, 1)?;
        self.change_group(
            caller,
            id,
            GroupChange::AcceptInvitation {
                user: caller.user_id,
            },
            SystemEvent::MemberJoined {
                user: caller.user_id,
                via: JoinMethod::Invitation,
            },
            None,
        )
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound => CoreError::not_found("invitation"),
            _ => e,
        })?;
        Ok(())
    }
}

/// The public faces of group management. Changes run detached (see [`Core::detached`]), so a
/// client that goes away cannot leave a change stored but unannounced.
impl Core {
    /// The group's information and settings, with the caller's role.
    pub async fn group_info(&self, caller: &Caller, id: ConversationId) -> CoreResult<GroupInfo> {
        let (_, role) = self.authorize_group(caller, id, Action::Read).await?;
        Ok(group_view(&self.group_record(id).await?, role))
    }

    /// Adds members: those whose privacy settings allow it at once, the others by invitation.
    pub async fn add_members(
        &self,
        caller: &Caller,
        id: ConversationId,
        users: Vec<UserId>,
    ) -> CoreResult<AddMembersResult> {
        let caller = *caller;
        self.detached(move |core| async move { core.add_members_steps(&caller, id, users).await })
            .await
    }

    /// Removes a member, or (with the caller's own id) leaves the group.
    pub async fn remove_member(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.remove_member_steps(&caller, id, user).await })
            .await
    }

    /// Mutes a member for `duration_secs`, or lifts the mute with `None`.
    pub async fn mute_member(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        duration_secs: Option<u64>,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(
            move |core| async move { core.mute_steps(&caller, id, user, duration_secs).await },
        )
        .await
    }

    /// Bans a user (removing them if a member).
    pub async fn ban(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        reason: Option<String>,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.ban_steps(&caller, id, user, reason).await })
            .await
    }

    pub async fn unban(&self, caller: &Caller, id: ConversationId, user: UserId) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.unban_steps(&caller, id, user).await })
            .await
    }

    /// The group's banned users (for those who may ban).
    pub async fn bans(&self, caller: &Caller, id: ConversationId) -> CoreResult<BanList> {
        self.authorize_group(caller, id, Action::Ban).await?;
        let users = self
            .inner
            .store
            .group_bans(id)
            .await?
            .into_iter()
            .map(|b| BannedUser {
                user_id: b.user_id,
                username: b.username,
                banned_by: b.banned_by,
                since: b.since,
                reason: b.reason,
            })
            .collect();
        Ok(BanList { users })
    }

    pub async fn set_role(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        role: Role,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.set_role_steps(&caller, id, user, role).await })
            .await
    }

    /// Hands ownership to another member; the caller becomes an admin.
    pub async fn transfer_ownership(
        &self,
        caller: &Caller,
        id: ConversationId,
        to: UserId,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.transfer_steps(&caller, id, to).await })
            .await
    }

    pub async fn update_group(
        &self,
        caller: &Caller,
        id: ConversationId,
        req: UpdateGroupRequest,
    ) -> CoreResult<GroupInfo> {
        let caller = *caller;
        self.detached(move |core| async move { core.update_group_steps(&caller, id, req).await })
            .await
    }

    pub async fn set_group_permissions(
        &self,
        caller: &Caller,
        id: ConversationId,
        permissions: GroupPermissions,
    ) -> CoreResult<GroupInfo> {
        let caller = *caller;
        self.detached(move |core| async move {
            core.set_permissions_steps(&caller, id, permissions).await
        })
        .await
    }

    /// Dissolves the group: everyone stops being a member; the history is kept.
    pub async fn dissolve_group(&self, caller: &Caller, id: ConversationId) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.dissolve_steps(&caller, id).await })
            .await
    }

    /// Replaces another member's message with a tombstone (moderators).
    pub async fn delete_message(
        &self,
        caller: &Caller,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.delete_message_steps(&caller, id, seq).await })
            .await
    }

    /// Makes an invite link; its code is in this answer only.
    pub async fn create_invite_link(
        &self,
        caller: &Caller,
        id: ConversationId,
        req: CreateInviteLinkRequest,
    ) -> CoreResult<InviteLink> {
        self.create_link_steps(caller, id, req).await
    }

    pub async fn invite_links(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<InviteLinkList> {
        self.authorize_group(caller, id, Action::Invite).await?;
        let links = self
            .inner
            .store
            .invite_links(id)
            .await?
            .iter()
            .map(|l| link_view(l, None))
            .collect();
        Ok(InviteLinkList { links })
    }

    pub async fn revoke_invite_link(
        &self,
        caller: &Caller,
        id: ConversationId,
        link_id: i64,
    ) -> CoreResult<()> {
        self.authorize_group(caller, id, Action::Invite).await?;
        if !self
            .inner
            .store
            .revoke_invite_link(id, link_id, self.now_ms())
            .await?
        {
            return Err(CoreError::not_found("invite link"));
        }
        Ok(())
    }

    /// What a link leads to, for someone deciding whether to join.
    pub async fn preview_group(&self, _caller: &Caller, code: &str) -> CoreResult<GroupPreview> {
        let link = self.usable_link(code).await?;
        let group = self.group_record(link.conversation_id).await?;
        Ok(GroupPreview {
            conversation_id: group.conversation.id,
            title: group.conversation.title,
            description: group.description,
            member_count: group.member_count,
            join_approval: group.join_approval,
        })
    }

    /// Joins with an invite link, or asks to when the group needs approval.
    pub async fn join_group(
        &self,
        caller: &Caller,
        code: String,
        message: Option<String>,
    ) -> CoreResult<JoinGroupResult> {
        let caller = *caller;
        self.detached(move |core| async move { core.join_steps(&caller, code, message).await })
            .await
    }

    pub async fn join_requests(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<JoinRequestList> {
        self.authorize_group(caller, id, Action::ApproveJoins)
            .await?;
        let requests = self
            .inner
            .store
            .join_requests(id)
            .await?
            .into_iter()
            .map(|r| JoinRequest {
                conversation_id: r.conversation_id,
                user_id: r.user_id,
                username: r.username,
                message: r.message,
                created_at: r.created_at,
            })
            .collect();
        Ok(JoinRequestList { requests })
    }

    pub async fn approve_join_request(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.approve_steps(&caller, id, user).await })
            .await
    }

    pub async fn decline_join_request(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
    ) -> CoreResult<()> {
        self.authorize_group(caller, id, Action::ApproveJoins)
            .await?;
        if !self.inner.store.delete_join_request(id, user).await? {
            return Err(CoreError::not_found("join request"));
        }
        Ok(())
    }

    /// The caller's pending group invitations.
    pub async fn group_invitations(&self, caller: &Caller) -> CoreResult<GroupInvitationList> {
        let invitations = self
            .inner
            .store
            .group_invitations_of(caller.user_id)
            .await?
            .into_iter()
            .map(|i| GroupInvitation {
                conversation_id: i.conversation_id,
                title: i.title,
                inviter: UserSummary {
                    user_id: i.inviter_id,
                    username: i.inviter_username,
                },
                created_at: i.created_at,
            })
            .collect();
        Ok(GroupInvitationList { invitations })
    }

    pub async fn accept_group_invitation(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.accept_invitation_steps(&caller, id).await })
            .await
    }

    pub async fn decline_group_invitation(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<()> {
        if !self
            .inner
            .store
            .delete_group_invitation(id, caller.user_id)
            .await?
        {
            return Err(CoreError::not_found("invitation"));
        }
        Ok(())
    }

    /// Replaces any message in any conversation with a tombstone (server administrators, over
    /// the API). The members see a `message_deleted` event from the administrator.
    pub async fn admin_remove_message(
        &self,
        caller: &Caller,
        address: Option<std::net::IpAddr>,
        id: ConversationId,
        seq: Seq,
    ) -> CoreResult<()> {
        let acting = self
            .authorize_admin(
                crate::admin::AdminActor::User(caller, address),
                crate::policy::AdminAction::RemoveMessage,
                None,
            )
            .await?;
        let caller = *caller;
        self.detached(move |core| async move {
            let message = core.message_at(id, seq).await?;
            let mut audit = acting.entry(&core, kinds::MESSAGE_REMOVE, Some(message.sender_id));
            audit.conversation = Some(id);
            audit.detail = serde_json::json!({ "seq": seq });
            core.change_group(
                &caller,
                id,
                GroupChange::DeleteMessage { seq },
                SystemEvent::MessageDeleted { seq },
                Some(audit),
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotFound => CoreError::not_found("message"),
                _ => e,
            })?;
            Ok(())
        })
        .await
    }

    /// Hands on the groups a user who is being deleted owns: each passes to the
    /// highest-ranking, longest-standing other member (or is dissolved when nobody else is
    /// left). Without this a deleted owner would leave groups nobody can manage. Returns the
    /// groups the user is still in, for [`Core::announce_departure`] once the account is gone.
    pub(crate) async fn hand_on_groups_of(&self, user: UserId) -> CoreResult<Vec<ConversationId>> {
        let departing = Self::on_behalf_of(user);
        let mut remaining = Vec::new();
        for uc in self.inner.store.conversations_of(user).await? {
            if uc.conversation.kind != tidings_proto::rest::ConversationKind::Group {
                continue;
            }
            let id = uc.conversation.id;
            if uc.me.role == Role::Owner {
                let mut others: Vec<_> = self
                    .inner
                    .store
                    .members(id)
                    .await?
                    .into_iter()
                    .filter(|m| m.user_id != user)
                    .collect();
                others.sort_by_key(|m| (std::cmp::Reverse(m.role), m.joined_at, m.user_id));
                let Some(successor) = others.first() else {
                    self.change_group(
                        &departing,
                        id,
                        GroupChange::Dissolve,
                        SystemEvent::GroupDissolved {},
                        None,
                    )
                    .await?;
                    continue;
                };
                let to = successor.user_id;
                self.change_group(
                    &departing,
                    id,
                    GroupChange::TransferOwnership { from: user, to },
                    SystemEvent::OwnershipTransferred { user: to },
                    None,
                )
                .await?;
            }
            remaining.push(id);
        }
        Ok(remaining)
    }

    /// Tells each group that a deleted user has left (the deletion removed the membership).
    pub(crate) async fn announce_departure(&self, user: UserId, groups: &[ConversationId]) {
        let departing = Self::on_behalf_of(user);
        for &id in groups {
            if let Err(e) = self
                .change_group(
                    &departing,
                    id,
                    GroupChange::Notice,
                    SystemEvent::MemberLeft {},
                    None,
                )
                .await
            {
                tracing::warn!(%e, "Could not tell a group that a deleted member left.");
            }
        }
    }

    /// The caller a change is attributed to when no device of the user made it: a deleted
    /// user's last events (their devices are revoked), or what a user's standing instruction
    /// does later (a temporary room dissolved when it empties, `rooms.rs`).
    pub(crate) fn on_behalf_of(user: UserId) -> Caller {
        Caller {
            user_id: user,
            device_id: tidings_proto::DeviceId(0),
            expires_at: 0,
            scopes: crate::policy::Scopes::ALL,
        }
    }
}
