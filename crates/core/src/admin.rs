//! Server administration: listing accounts, suspending and reactivating them, deleting them,
//! signing all their devices out, and granting or revoking the administrator role.
//!
//! Every operation is open to two kinds of actor: an administrator over the API (checked through
//! [`policy::decide_admin`] against the role read fresh from the store, with refusals recorded
//! in the audit log), and the operator at the command line, who has the data directory and so
//! needs no role. Each change is written with its audit entry in one store transaction.

use crate::audit::kinds;
use crate::config::DeletedUserMessages;
use crate::error::{CoreError, CoreResult};
use crate::policy::{self, AdminAction, ServerRole};
use crate::{Caller, Core};
use std::net::IpAddr;
use tidings_proto::UserId;
use tidings_proto::rest::{AdminUser, AdminUserList};
use tidings_store::{AuditOutcome, NewAudit, StoreError, UserRecord};

/// Who asks for an admin operation.
#[derive(Clone, Copy, Debug)]
pub enum AdminActor<'a> {
    /// The operator, through `tidings admin ...` on the data directory.
    Operator,
    /// A signed-in user over the API, from this network address; must hold the administrator
    /// role.
    User(&'a Caller, Option<IpAddr>),
}

/// Who was allowed to act, for stamping the audit entries of what they do.
#[derive(Clone, Debug)]
pub(crate) struct Acting {
    /// `None` for the operator.
    pub(crate) user: Option<UserId>,
    pub(crate) address: Option<String>,
}

impl Acting {
    /// An entry of `kind` about `target`, by this actor.
    pub(crate) fn entry(&self, core: &Core, kind: &str, target: Option<UserId>) -> NewAudit {
        let mut entry = core.new_audit(kind, self.user, target);
        entry.address = self.address.clone();
        entry
    }
}

/// Largest page of `GET /api/v1/admin/users`.
pub const MAX_USER_PAGE: u32 = 500;

fn admin_view(user: &UserRecord) -> AdminUser {
    AdminUser {
        user_id: user.id,
        username: user.username.clone(),
        created_at: user.created_at,
        is_admin: user.is_admin,
        suspended: user.disabled && user.deleted_at.is_none(),
        deleted: user.deleted_at.is_some(),
    }
}

/// The audit kind that names an attempt at `action`.
fn action_kind(action: AdminAction) -> &'static str {
    match action {
        AdminAction::ListUsers => kinds::USERS_LIST,
        AdminAction::SuspendUser => kinds::USER_SUSPEND,
        AdminAction::ReactivateUser => kinds::USER_REACTIVATE,
        AdminAction::DeleteUser => kinds::USER_DELETE,
        AdminAction::SignOutUser => kinds::USER_SIGN_OUT,
        AdminAction::GrantAdmin => kinds::ROLE_GRANT_ADMIN,
        AdminAction::RevokeAdmin => kinds::ROLE_REVOKE_ADMIN,
        AdminAction::ReadAudit => kinds::AUDIT_READ,
        AdminAction::RemoveMessage => kinds::MESSAGE_REMOVE,
        AdminAction::ManageOAuthClients => kinds::OAUTH_CLIENT_MANAGE,
    }
}

fn unknown_user(e: StoreError) -> CoreError {
    match e {
        StoreError::NotFound => CoreError::not_found("user"),
        other => other.into(),
    }
}

impl Core {
    /// Allows or refuses `action` on `target` for `actor`; refusals are recorded in the audit
    /// log. Returns who acts.
    pub(crate) async fn authorize_admin(
        &self,
        actor: AdminActor<'_>,
        action: AdminAction,
        target: Option<UserId>,
    ) -> CoreResult<Acting> {
        let (caller, address) = match actor {
            AdminActor::Operator => {
                return Ok(Acting {
                    user: None,
                    address: None,
                });
            }
            AdminActor::User(caller, address) => (caller.user_id, address.map(|a| a.to_string())),
        };
        let acting = Acting {
            user: Some(caller),
            address,
        };
        // Read the role now rather than trusting a claim, so a demotion takes effect at once.
        let role = match self.inner.store.user_by_id(caller).await? {
            Some(u) if u.is_admin && u.deleted_at.is_none() && !u.disabled => {
                ServerRole::Administrator
            }
            _ => ServerRole::User,
        };
        if let Err(refusal) = policy::decide_admin(action, role, target == Some(caller)) {
            let mut entry = acting.entry(self, action_kind(action), target);
            entry.outcome = AuditOutcome::Refused;
            entry.detail = serde_json::json!({ "reason": refusal.message });
            if let Err(e) = self.inner.store.append_audit(entry).await {
                tracing::error!(%e, "Could not record a refused admin action in the audit log.");
            }
            return Err(refusal);
        }
        Ok(acting)
    }

    /// The id of the account named `username` (for the command line).
    pub async fn user_id_by_name(&self, username: &str) -> CoreResult<UserId> {
        self.inner
            .store
            .user_by_name(username)
            .await?
            .map(|u| u.id)
            .ok_or_else(|| CoreError::not_found("user"))
    }

    /// One account as administrators see it.
    async fn admin_user(&self, user: UserId) -> CoreResult<AdminUser> {
        self.inner
            .store
            .user_by_id(user)
            .await?
            .map(|u| admin_view(&u))
            .ok_or_else(|| CoreError::not_found("user"))
    }

    /// Accounts whose username starts with `prefix` (all when empty), in id order after `after`.
    pub async fn admin_users(
        &self,
        actor: AdminActor<'_>,
        prefix: &str,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> CoreResult<AdminUserList> {
        self.authorize_admin(actor, AdminAction::ListUsers, None)
            .await?;
        let limit = limit.unwrap_or(100).clamp(1, MAX_USER_PAGE);
        let users = self
            .inner
            .store
            .find_users(prefix.trim(), after, limit)
            .await?;
        let next_after = (users.len() == limit as usize)
            .then(|| users.last().map(|u| u.id))
            .flatten();
        Ok(AdminUserList {
            users: users.iter().map(admin_view).collect(),
            next_after,
        })
    }

    /// Suspends an account: every device is signed out at once (live connections close) and
    /// the account cannot sign in or refresh until reactivated.
    pub async fn suspend_user(
        &self,
        actor: AdminActor<'_>,
        target: UserId,
    ) -> CoreResult<AdminUser> {
        self.set_suspended(actor, target, true).await
    }

    /// Lets a suspended account sign in again.
    pub async fn reactivate_user(
        &self,
        actor: AdminActor<'_>,
        target: UserId,
    ) -> CoreResult<AdminUser> {
        self.set_suspended(actor, target, false).await
    }

    async fn set_suspended(
        &self,
        actor: AdminActor<'_>,
        target: UserId,
        suspended: bool,
    ) -> CoreResult<AdminUser> {
        let (action, kind) = if suspended {
            (AdminAction::SuspendUser, kinds::USER_SUSPEND)
        } else {
            (AdminAction::ReactivateUser, kinds::USER_REACTIVATE)
        };
        let by = self.authorize_admin(actor, action, Some(target)).await?;
        let entry = by.entry(self, kind, Some(target));
        self.detached(move |core| async move {
            let revoked = core
                .inner
                .store
                .set_suspended(target, suspended, core.now_ms(), entry)
                .await
                .map_err(unknown_user)?;
            for device in revoked {
                core.announce_revoked(target, device).await;
            }
            tracing::info!(user_id = %target, suspended, "Account suspension changed.");
            core.admin_user(target).await
        })
        .await
    }

    /// Deletes an account: it can never sign in again, its devices are signed out, it leaves
    /// every conversation, and its messages are kept or replaced by tombstones according to
    /// `accounts.deleted_user_messages`. The username stays reserved.
    pub async fn delete_user(&self, actor: AdminActor<'_>, target: UserId) -> CoreResult<()> {
        let by = self
            .authorize_admin(actor, AdminAction::DeleteUser, Some(target))
            .await?;
        let remove =
            self.inner.config.accounts.deleted_user_messages == DeletedUserMessages::Remove;
        let mut entry = by.entry(self, kinds::USER_DELETE, Some(target));
        entry.detail = serde_json::json!({ "messages": if remove { "remove" } else { "keep" } });
        self.detached(move |core| async move {
            if core.inner.store.user_by_id(target).await?.is_none() {
                return Err(CoreError::not_found("user"));
            }
            core.remove_account(target, remove, entry).await
        })
        .await
    }

    /// The steps of deleting an account, shared by the administrator's deletion and the
    /// account's own ([`Core::delete_own_account`]): group ownership handed on, the store's
    /// deletion, then the announcements. Run detached by the callers.
    pub(crate) async fn remove_account(
        &self,
        target: UserId,
        remove: bool,
        entry: tidings_store::NewAudit,
    ) -> CoreResult<()> {
        let groups = self.hand_on_groups_of(target).await?;
        let deleted = self
            .inner
            .store
            .delete_user(target, self.now_ms(), remove, entry)
            .await
            .map_err(unknown_user)?;
        for device in deleted.devices {
            self.announce_revoked(target, device).await;
        }
        for conversation_id in deleted.conversations {
            self.membership_changed(conversation_id).await;
        }
        self.announce_departure(target, &groups).await;
        tracing::info!(user_id = %target, removed = deleted.messages_removed, "Account deleted.");
        Ok(())
    }

    /// Signs out every device of an account. Returns how many were signed out.
    pub async fn sign_out_user(&self, actor: AdminActor<'_>, target: UserId) -> CoreResult<usize> {
        let by = self
            .authorize_admin(actor, AdminAction::SignOutUser, Some(target))
            .await?;
        if self.inner.store.user_by_id(target).await?.is_none() {
            return Err(CoreError::not_found("user"));
        }
        let entry = by.entry(self, kinds::USER_SIGN_OUT, Some(target));
        self.detached(move |core| async move {
            let revoked = core
                .inner
                .store
                .revoke_other_devices(target, None, core.now_ms(), Some(entry))
                .await?;
            for device in &revoked {
                core.announce_revoked(target, *device).await;
            }
            Ok(revoked.len())
        })
        .await
    }

    /// Grants or revokes the server administrator role.
    pub async fn set_server_admin(
        &self,
        actor: AdminActor<'_>,
        target: UserId,
        is_admin: bool,
    ) -> CoreResult<AdminUser> {
        let (action, kind) = if is_admin {
            (AdminAction::GrantAdmin, kinds::ROLE_GRANT_ADMIN)
        } else {
            (AdminAction::RevokeAdmin, kinds::ROLE_REVOKE_ADMIN)
        };
        let by = self.authorize_admin(actor, action, Some(target)).await?;
        let entry = by.entry(self, kind, Some(target));
        self.inner
            .store
            .set_admin(target, is_admin, entry)
            .await
            .map_err(unknown_user)?;
        tracing::info!(user_id = %target, is_admin, "Server role changed.");
        self.admin_user(target).await
    }
}
