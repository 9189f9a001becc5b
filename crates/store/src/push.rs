//! Records of push notifications: device subscriptions and the durable job queue.
//!
//! A job is keyed by device and collapse key (one per conversation, say): queueing a job whose
//! key is already queued replaces its payload and bumps its version instead of adding a row,
//! so a burst of messages becomes one push. A claim leases a job by moving its `next_at` to the
//! end of the lease, so a worker that dies leaves jobs that become due again by themselves.

use tidings_proto::push::PushSubscription;
use tidings_proto::{DeviceId, UserId};

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
