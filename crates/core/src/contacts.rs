//! The block list: who refuses contact from whom.
//!
//! A block stops direct messages both ways (the blocked side is told only that the user does
//! not accept its messages), hides the blocker's presence and typing from the blocked user, and
//! is kept in the member cache of their direct conversation so the send path needs no query.

use crate::error::{CoreError, CoreResult};
use crate::{Caller, Core};
use tidings_proto::UserId;
use tidings_proto::rest::{BlockList, BlockedUser};

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
            core.inner
                .store
                .block_user(caller.user_id, user, core.now_ms())
                .await
                .map_err(|e| match e {
                    tidings_store::StoreError::NotFound => CoreError::not_found("user"),
                    other => other.into(),
                })?;
            core.forget_direct(caller.user_id, user).await
        })
        .await
    }

    /// Lifts a block. Unblocking someone not blocked is not an error.
    pub async fn unblock(&self, caller: &Caller, user: UserId) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move {
            core.inner.store.unblock_user(caller.user_id, user).await?;
            core.forget_direct(caller.user_id, user).await
        })
        .await
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
