//! Records of push notifications: device subscriptions and the durable job queue.
//!
//! A job is keyed by device and collapse key (one per conversation, say): queueing a job whose
//! key is already queued replaces its payload and bumps its version instead of adding a row,
//! so a burst of messages becomes one push. A claim leases a job by moving its `next_at` to the
//! end of the lease, so a worker that dies leaves jobs that become due again by themselves.
//!
//! Between a commit and its jobs sits the **outbox**: `append_messages` records each new
//! message that may notify (see [`notifies`]) as an outbox row in the transaction that commits
//! it, and the planner claims rows (leasing them the same way), queues their jobs and then
//! deletes them. A node that dies between the commit and the queueing leaves rows that another
//! node, or the same one restarted, claims when they are due; so an acknowledged message's
//! pushes survive a crash (at least once: a planner that dies after queueing but before
//! deleting queues them again, and the queue's merging absorbs most of that).

use tidings_proto::push::PushSubscription;
use tidings_proto::{ConversationId, DeviceId, MessageBody, Seq, UserId};

/// Whether a message may notify anyone, so `append_messages` records it in the outbox. Edits,
/// reactions, recalls and pins change what was already notified; system messages record group
/// changes. Neither is worth waking a phone for.
pub fn notifies(body: &MessageBody) -> bool {
    body.target().is_none() && !matches!(body, MessageBody::System { .. })
}

/// A committed message whose pushes are still to be planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboxItem {
    pub conversation_id: ConversationId,
    pub seq: Seq,
}

/// A device's subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSubscriptionRecord {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub subscription: PushSubscription,
    pub created_at: i64,
}

/// A push to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPushJob {
    pub device_id: DeviceId,
    /// Jobs of one device with the same key are merged (see the module docs).
    pub collapse_key: String,
    /// The JSON payload (a `PushPayload`).
    pub payload: String,
    /// When the job is due, ms since the epoch.
    pub due_at: i64,
}

/// Names one version of a queued job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushJobKey {
    pub device_id: DeviceId,
    pub collapse_key: String,
    /// Bumped each time a newer push is merged into the job.
    pub version: i64,
}

/// A claimed job, with the subscription to deliver it to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushJob {
    pub key: PushJobKey,
    pub user_id: UserId,
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub subscription: PushSubscription,
}
