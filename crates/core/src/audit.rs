//! The audit log as the core uses it: the stable kinds, building entries, recording refused
//! attempts, reading and exporting for administrators, verifying the chain, and pruning with a
//! signed checkpoint.
//!
//! **Invariant:** an audited change and its entry commit together. Every store method that
//! changes state on behalf of an audited action takes its [`NewAudit`] and writes it in the same
//! transaction; [`Store::append_audit`](tidings_store::Store::append_audit) is only for events
//! that change nothing else (a failed sign-in, a refused attempt).

use crate::Core;
use crate::admin::AdminActor;
use crate::error::{CoreError, CoreResult};
use crate::policy::AdminAction;
use futures_util::Stream;
use std::net::IpAddr;
use tidings_proto::rest::{AuditEntry, AuditPage};
use tidings_proto::{ConversationId, UserId};
use tidings_store::audit::{ChainBreak, ChainVerifier, checkpoint_message, hex};
use tidings_store::{AuditOutcome, AuditRecord, NewAudit};

/// The filters of an audit query, re-exported so transports need not depend on the store.
pub use tidings_store::AuditFilter;

/// The stable names of audited events. Clients filter on them; never rename one.
pub mod kinds {
    pub const SIGN_IN_SUCCESS: &str = "sign_in.success";
    pub const SIGN_IN_FAILURE: &str = "sign_in.failure";
    /// A signed-in user linked an external OpenID Connect identity to their account.
    pub const EXTERNAL_IDENTITY_LINK: &str = "external_identity.link";
    /// A first sign-in with an external identity created an account for it.
    pub const EXTERNAL_IDENTITY_CREATE: &str = "external_identity.create";
    pub const TOKEN_REUSE: &str = "token.reuse";
    pub const PASSWORD_CHANGE: &str = "password.change";
    pub const PASSWORD_RESET: &str = "password.reset";
    pub const DEVICE_SIGN_OUT: &str = "device.sign_out";
    pub const USER_SUSPEND: &str = "user.suspend";
    pub const USER_REACTIVATE: &str = "user.reactivate";
    pub const USER_DELETE: &str = "user.delete";
    /// The account deleted itself (docs/accounts.md).
    pub const ACCOUNT_DELETE: &str = "account.delete";
    pub const TWO_FACTOR_ENABLE: &str = "two_factor.enable";
    pub const TWO_FACTOR_DISABLE: &str = "two_factor.disable";
    pub const RECOVERY_CODES_REGENERATE: &str = "two_factor.recovery_codes";
    pub const ACCOUNT_EXPORT: &str = "account.export";
    pub const USER_SIGN_OUT: &str = "user.sign_out";
    pub const USERS_LIST: &str = "users.list";
    pub const ROLE_GRANT_ADMIN: &str = "role.grant_admin";
    pub const ROLE_REVOKE_ADMIN: &str = "role.revoke_admin";
    pub const AUDIT_READ: &str = "audit.read";
    pub const AUDIT_EXPORT: &str = "audit.export";
    pub const MESSAGE_REMOVE: &str = "message.remove";
    pub const OAUTH_CLIENT_ADD: &str = "oauth_client.add";
    pub const OAUTH_CLIENT_REMOVE: &str = "oauth_client.remove";
    /// A refused attempt to register, list or remove OAuth clients.
    pub const OAUTH_CLIENT_MANAGE: &str = "oauth_client.manage";
    pub const GROUP_KICK: &str = "group.kick";
    /// A moderator took a member's devices out of a group's room (XMPP MUC); they stay a member.
    pub const ROOM_KICK: &str = "room.kick";
    pub const GROUP_BAN: &str = "group.ban";
    pub const GROUP_UNBAN: &str = "group.unban";
    pub const GROUP_MUTE: &str = "group.mute";
    pub const GROUP_UNMUTE: &str = "group.unmute";
    pub const GROUP_ROLE: &str = "group.role";
    pub const GROUP_TRANSFER: &str = "group.transfer";
    pub const GROUP_INFO: &str = "group.info";
    pub const GROUP_PERMISSIONS: &str = "group.permissions";
    pub const GROUP_DISSOLVE: &str = "group.dissolve";
    pub const GROUP_DELETE_MESSAGE: &str = "group.delete_message";
    /// A refused attempt in a conversation is recorded as `conversation.<action>` (for
    /// example `conversation.ban`), with the refusal's reason in the detail.
    pub const CONVERSATION_PREFIX: &str = "conversation.";
}

/// Largest page of `GET /api/v1/admin/audit`.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// Entries read from the store per step of an export: bounds its memory.
const EXPORT_PAGE: u32 = 500;

/// The outcome of `tidings admin audit verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerified {
    /// Entries checked (those left after pruning).
    pub entries: u64,
    /// Checkpoints whose signatures were checked.
    pub checkpoints: usize,
    /// The hash of the newest entry: record it elsewhere to make truncation of the tail
    /// detectable too.
    pub head: String,
}

/// Converts a stored entry to its wire form.
pub fn entry_view(record: AuditRecord) -> AuditEntry {
    let e = record.entry;
    AuditEntry {
        id: record.id,
        ts: e.ts,
        actor: e.actor,
        kind: e.kind,
        outcome: match e.outcome {
            AuditOutcome::Done => tidings_proto::rest::AuditOutcome::Done,
            AuditOutcome::Refused => tidings_proto::rest::AuditOutcome::Refused,
        },
        target_user: e.target_user,
        conversation_id: e.conversation,
        address: e.address,
        detail: e.detail,
        prev_hash: hex(&record.prev_hash),
        hash: hex(&record.hash),
    }
}

impl Core {
    /// A new entry of `kind` stamped now, done, with an empty detail; callers fill in the rest.
    pub fn new_audit(
        &self,
        kind: &str,
        actor: Option<UserId>,
        target_user: Option<UserId>,
    ) -> NewAudit {
        NewAudit {
            ts: self.now_ms(),
            actor,
            kind: kind.to_owned(),
            outcome: AuditOutcome::Done,
            target_user,
            conversation: None,
            address: None,
            detail: serde_json::json!({}),
        }
    }

    /// Records a refused attempt at a forbidden action, e.g. a member trying to ban someone in
    /// a group, or a user calling an admin endpoint. `kind` names the action attempted. The
    /// refusal itself is still answered if the entry cannot be written; the failure is logged.
    pub async fn audit_refused(
        &self,
        actor: Option<UserId>,
        kind: &str,
        target_user: Option<UserId>,
        conversation: Option<ConversationId>,
        detail: serde_json::Value,
    ) {
        let mut entry = self.new_audit(kind, actor, target_user);
        entry.outcome = AuditOutcome::Refused;
        entry.conversation = conversation;
        entry.detail = detail;
        if let Err(e) = self.inner.store.append_audit(entry).await {
            tracing::error!(%e, kind, "Could not record a refused attempt in the audit log.");
        }
    }

    /// Records a failed password sign-in with the client's address.
    pub(crate) async fn audit_sign_in_failure(
        &self,
        user: Option<UserId>,
        address: Option<IpAddr>,
        reason: &str,
    ) {
        let mut entry = self.new_audit(kinds::SIGN_IN_FAILURE, None, user);
        entry.outcome = AuditOutcome::Refused;
        entry.address = address.map(|a| a.to_string());
        entry.detail = serde_json::json!({ "reason": reason });
        if let Err(e) = self.inner.store.append_audit(entry).await {
            tracing::error!(%e, "Could not record a failed sign-in in the audit log.");
        }
    }

    /// A page of the audit log for an administrator.
    pub async fn admin_audit(
        &self,
        actor: AdminActor<'_>,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> CoreResult<AuditPage> {
        self.authorize_admin(actor, AdminAction::ReadAudit, None)
            .await?;
        let limit = limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
        let records = self.inner.store.audit_entries(filter, after, limit).await?;
        let next_after = (records.len() == limit as usize)
            .then(|| records.last().map(|r| r.id))
            .flatten();
        Ok(AuditPage {
            entries: records.into_iter().map(entry_view).collect(),
            next_after,
        })
    }

    /// The audit log as JSON Lines (one entry per line), read a page at a time so an export
    /// of any size holds one page in memory. The export itself is recorded first.
    pub async fn admin_audit_export(
        &self,
        actor: AdminActor<'_>,
        filter: AuditFilter,
    ) -> CoreResult<impl Stream<Item = CoreResult<String>> + Send + 'static> {
        let by = self
            .authorize_admin(actor, AdminAction::ReadAudit, None)
            .await?;
        let mut entry = by.entry(self, kinds::AUDIT_EXPORT, None);
        entry.detail = serde_json::json!({
            "actor": filter.actor.map(|u| u.0),
            "target_user": filter.target_user.map(|u| u.0),
            "kind": filter.kind,
            "since": filter.since,
            "until": filter.until,
        });
        self.inner.store.append_audit(entry).await?;
        let core = self.clone();
        Ok(futures_util::stream::try_unfold(Some(0i64), move |after| {
            let core = core.clone();
            let filter = filter.clone();
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let records = core
                    .inner
                    .store
                    .audit_entries(&filter, Some(after), EXPORT_PAGE)
                    .await?;
                if records.is_empty() {
                    return Ok(None);
                }
                let next = (records.len() == EXPORT_PAGE as usize)
                    .then(|| records.last().map(|r| r.id))
                    .flatten();
                let mut lines = String::new();
                for record in records {
                    let line = serde_json::to_string(&entry_view(record))
                        .map_err(|e| CoreError::internal("encoding an audit entry", e))?;
                    lines.push_str(&line);
                    lines.push('\n');
                }
                Ok(Some((lines, next)))
            }
        }))
    }

    /// Checks the whole audit log: every checkpoint's signature, then the chain from the newest
    /// checkpoint (or the start) to the newest entry. `Ok(Err(_))` names the first broken entry.
    pub async fn verify_audit(&self) -> CoreResult<Result<AuditVerified, ChainBreak>> {
        let checkpoints = self.inner.store.audit_checkpoints().await?;
        for c in &checkpoints {
            let message = checkpoint_message(c.last_id, &c.last_hash, c.pruned, c.created_at);
            if c.key_id != self.inner.keys.kid()
                || !self.inner.keys.verify_bytes(&message, &c.signature)
            {
                return Ok(Err(ChainBreak {
                    id: c.last_id,
                    reason: "its pruning checkpoint is not signed by this server's key".into(),
                }));
            }
        }
        let mut verifier = ChainVerifier::new(checkpoints.last());
        let mut after = checkpoints.last().map(|c| c.last_id);
        loop {
            let page = self
                .inner
                .store
                .audit_entries(&AuditFilter::default(), after, EXPORT_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for record in &page {
                if let Err(broken) = verifier.push(record) {
                    return Ok(Err(broken));
                }
            }
        }
        Ok(Ok(AuditVerified {
            entries: verifier.checked(),
            checkpoints: checkpoints.len(),
            head: hex(&verifier.head()),
        }))
    }

    /// Removes entries older than `audit.retention_days` (if set), leaving a checkpoint signed
    /// by the server key. Returns how many entries were removed.
    pub async fn prune_audit(&self) -> CoreResult<u64> {
        let days = self.inner.config.audit.retention_days;
        if days == 0 {
            return Ok(0);
        }
        let cut = self
            .now_ms()
            .saturating_sub(i64::from(days).saturating_mul(86_400_000));
        self.prune_audit_before(cut).await
    }

    /// Removes the entries older than `cut` (ms since the epoch), leaving a checkpoint signed by
    /// the server key. Returns how many entries were removed.
    pub async fn prune_audit_before(&self, cut: i64) -> CoreResult<u64> {
        let now = self.now_ms();
        let keys = self.inner.keys.clone();
        let checkpoint = self
            .inner
            .store
            .prune_audit(
                cut,
                now,
                Box::new(move |message: &[u8]| (keys.kid().to_owned(), keys.sign_bytes(message))),
            )
            .await?;
        Ok(checkpoint.map_or(0, |c| c.pruned))
    }
}
