//! Push notifications: who gets a push for what, the durable queue, and the worker that
//! delivers it through a [`Pusher`].
//!
//! When a message is committed, the store records it in the push outbox in the same
//! transaction, and the sequencer wakes this node's planner, so the sender's ack never waits for
//! it. The planner claims outbox rows (on several nodes at once, each row going to one of
//! them), finds the recipients' devices that have a subscription and are not awake anywhere
//! (no connection on any node, or only connections in the background), asks
//! [`policy::push_notification`] what each recipient may get under their settings, queues one
//! job per device in the [`Store`](tidings_store::Store), keyed by conversation so a burst
//! collapses into one push, and deletes the outbox rows. A planner that dies leaves its rows
//! leased; they become due again when the lease ends, so a crash between a commit and the
//! queueing of its pushes loses none. Friend requests and calls reach the planner over a
//! bounded in-memory channel instead (see `docs/push.md` for why).
//!
//! The worker claims due jobs (on several nodes at once, each job going to one of them),
//! delivers them with bounded concurrency, and retries with exponential backoff, honouring
//! `Retry-After`; a subscription the push service calls gone is deleted. Jobs live in the
//! store, so a restart loses none: a claimed job whose node died becomes due again when its
//! lease ends.

use crate::policy::{self, PushEvent as Event, PushFacts};
use crate::{Caller, Core, CoreError, CoreResult};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidings_proto::push::{
    DndWindow, PushKind, PushPayload, PushSettings, PushSubscription, PushSubscriptionInfo,
};
use tidings_proto::rest::{ConversationKind, NotifyLevel};
use tidings_proto::{ConversationId, DeviceId, ErrorCode, Message, MessageBody, UserId};
use tidings_store::{NewPushJob, PushJob, StoreError};
use tokio::sync::{Notify, Semaphore, mpsc};

/// Push notification settings (`[push]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Queue and send pushes. Off, subscriptions are still accepted but nothing is sent.
    pub enabled: bool,
    /// The VAPID `sub` claim: a `mailto:` or `https:` URL push services can reach the operator
    /// at.
    pub vapid_subject: String,
    /// Pushes in flight at once on this node.
    pub concurrency: usize,
    /// Jobs claimed per round.
    pub claim_batch: u32,
    /// How long a claimed job is reserved for this node before another may take it, in
    /// seconds (longer than a request to a push service can take).
    pub lease_secs: u64,
    /// How often the worker looks for due jobs when nothing woke it, in milliseconds.
    pub poll_interval_ms: u64,
    /// Attempts before a push is given up.
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubled per attempt.
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds (also caps a push service's `Retry-After`).
    pub backoff_max_ms: u64,
    /// How long a push service keeps an undelivered push (the Web Push `TTL`), in seconds.
    pub ttl_secs: u32,
    /// Characters of message text in a preview.
    pub preview_chars: usize,
    /// Friend requests and calls waiting for the planner; beyond this, their pushes are
    /// dropped (and logged). Messages wait in the store's outbox instead, which has no bound.
    pub planner_queue: usize,
    /// Firebase Cloud Messaging: the service-account JSON file from the Firebase console
    /// (Project settings, Service accounts). Empty, FCM subscriptions are stored but their
    /// pushes fail.
    pub fcm_service_account: String,
    /// The FCM API's origin.
    pub fcm_base_url: String,
    /// Apple Push Notification service: the `.p8` signing key from the Apple developer
    /// account. Empty, APNs subscriptions are stored but their pushes fail.
    pub apns_key_file: String,
    /// The id of that key (the JWT `kid`).
    pub apns_key_id: String,
    /// The Apple developer team id (the JWT `iss`).
    pub apns_team_id: String,
    /// The app's bundle id (the `apns-topic`).
    pub apns_topic: String,
    /// The APNs origin: `https://api.push.apple.com`, or `https://api.sandbox.push.apple.com`
    /// for development builds of the app.
    pub apns_base_url: String,
    /// Extra root certificates (PEM) trusted for FCM, its token endpoint and APNs, besides the
    /// system's (a TLS-inspecting proxy's, or a test's). Empty for none.
    pub provider_ca_file: String,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            vapid_subject: "mailto:admin@localhost".into(),
            concurrency: 16,
            claim_batch: 64,
            lease_secs: 60,
            poll_interval_ms: 1_000,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            ttl_secs: 86_400,
            preview_chars: 120,
            planner_queue: 4_096,
            fcm_service_account: String::new(),
            fcm_base_url: "https://fcm.googleapis.com".into(),
            apns_key_file: String::new(),
            apns_key_id: String::new(),
            apns_team_id: String::new(),
            apns_topic: String::new(),
            apns_base_url: "https://api.push.apple.com".into(),
            provider_ca_file: String::new(),
        }
    }
}

/// How urgently a push should reach the device (RFC 8030 section 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    High,
}

/// One push for a provider to deliver.
#[derive(Debug)]
pub struct PushRequest<'a> {
    pub subscription: &'a PushSubscription,
    /// The JSON of a [`PushPayload`].
    pub payload: &'a [u8],
    /// Pushes with the same topic replace each other while undelivered (at most 32 characters
    /// of the URL-safe base64 alphabet).
    pub topic: &'a str,
    pub urgency: Urgency,
    pub ttl_secs: u32,
}

/// What became of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Delivered,
    /// The subscription no longer exists (404, 410, or the provider's equivalent).
    Gone,
    /// Try again later (5xx, 429, a network failure); the provider's `Retry-After` if it gave one.
    Retry {
        after_ms: Option<u64>,
    },
    /// Refused for good (a malformed subscription, a provider that is not configured).
    Failed(String),
}

/// Delivers pushes. Implemented outside the core (`tidings-push`), which does the I/O.
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// The VAPID public key clients subscribe with (uncompressed P-256, base64url).
    fn vapid_public_key(&self) -> Option<String>;
    async fn push(&self, request: PushRequest<'_>) -> PushOutcome;
}

/// What the planner is told.
pub(crate) enum Planned {
    Message {
        /// Boxed: the channel's slots are sized by the largest variant.
        message: Box<Message>,
        recipients: Arc<[UserId]>,
    },
    FriendRequest {
        from: UserId,
        to: UserId,
        ts: i64,
    },
    Call {
        caller: UserId,
        callee: UserId,
        conversation_id: ConversationId,
        ts: i64,
    },
}

/// The planner's channel and the wake-ups of the planner and the worker, held by the core.
pub(crate) struct PushState {
    pub(crate) planner: mpsc::Sender<Planned>,
    /// Rung by the sequencer when it committed messages that may notify, so the planner
    /// claims their outbox rows at once rather than at its next poll.
    pub(crate) outbox: Notify,
    /// Rung when jobs were queued on this node, so the worker need not wait for its poll.
    pub(crate) wake: Notify,
    pub(crate) pusher: std::sync::OnceLock<Arc<dyn Pusher>>,
}

impl PushState {
    pub(crate) fn new(queue: usize) -> (PushState, mpsc::Receiver<Planned>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            PushState {
                planner: tx,
                outbox: Notify::new(),
                wake: Notify::new(),
                pusher: std::sync::OnceLock::new(),
            },
            rx,
        )
    }
}

/// Whether local time `minute` (after midnight) falls in the window.
pub fn in_window(window: DndWindow, minute: u16) -> bool {
    let (start, end) = (window.start % 1440, window.end % 1440);
    if start <= end {
        start <= minute && minute < end
    } else {
        minute >= start || minute < end
    }
}

/// Whether do-not-disturb is on at `now_ms` for these settings. An unknown time zone counts as
/// UTC (the REST handler refuses unknown names, so this only happens if the system's time zone
/// database lost one).
pub fn do_not_disturb(settings: &PushSettings, now_ms: i64) -> bool {
    let Some(window) = settings.dnd else {
        return false;
    };
    let tz = settings
        .time_zone
        .as_deref()
        .and_then(|name| jiff::tz::TimeZone::get(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else {
        return false;
    };
    let local = ts.to_zoned(tz);
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    in_window(window, minute)
}

/// The text a message shows in a preview, cut to `chars` characters; `None` for kinds without
/// text (and for end-to-end-encrypted ones, whose text the server cannot read).
fn preview_of(body: &MessageBody, chars: usize) -> Option<String> {
    let text = match body {
        MessageBody::Text { text } | MessageBody::Markdown { text } => text.clone(),
        MessageBody::File { .. } => "📎".to_string(),
        MessageBody::Location { .. } => "📍".to_string(),
        _ => return None,
    };
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push('…');
    }
    Some(out)
}

impl Core {
    /// Installs the provider and starts the worker that delivers queued pushes.
    pub fn start_push_worker(&self, pusher: Arc<dyn Pusher>) -> tokio::task::JoinHandle<()> {
        let _ = self.inner.push.pusher.set(pusher.clone());
        tokio::spawn(run_worker(self.clone(), pusher))
    }

    /// The VAPID public key, when a provider is installed.
    pub fn vapid_public_key(&self) -> CoreResult<String> {
        self.inner
            .push
            .pusher
            .get()
            .and_then(|p| p.vapid_public_key())
            .ok_or_else(|| CoreError::not_found("push service"))
    }

    /// Hook for incoming calls: queues a push that rings `callee`'s sleeping devices.
    pub fn push_incoming_call(
        &self,
        caller: UserId,
        callee: UserId,
        conversation_id: ConversationId,
    ) {
        self.plan(Planned::Call {
            caller,
            callee,
            conversation_id,
            ts: self.now_ms(),
        });
    }

    pub(crate) fn push_friend_request(&self, from: UserId, to: UserId) {
        self.plan(Planned::FriendRequest {
            from,
            to,
            ts: self.now_ms(),
        });
    }

    /// Tells the planner that a committed message is in the outbox. The outbox row, written
    /// with the message, is what carries it: the planner finds it there even if this node dies
    /// first.
    pub(crate) fn push_message(&self, message: &Message) {
        if tidings_store::push::notifies(&message.body) {
            self.inner.push.outbox.notify_one();
        }
    }

    fn plan(&self, planned: Planned) {
        if !self.inner.config.push.enabled {
            return;
        }
        if self.inner.push.planner.try_send(planned).is_err() {
            tracing::warn!("The push planner is full; a push was dropped.");
        }
    }

    /// Registers the caller's device's subscription.
    pub async fn set_push_subscription(
        &self,
        caller: &Caller,
        subscription: PushSubscription,
    ) -> CoreResult<()> {
        validate_subscription(&subscription)?;
        self.inner
            .store
            .set_push_subscription(
                caller.user_id,
                caller.device_id,
                subscription,
                self.now_ms(),
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => CoreError::not_found("device"),
                other => other.into(),
            })
    }

    /// The subscriptions of the caller's devices.
    pub async fn push_subscriptions(
        &self,
        caller: &Caller,
    ) -> CoreResult<Vec<PushSubscriptionInfo>> {
        Ok(self
            .inner
            .store
            .push_subscriptions_of(&[caller.user_id])
            .await?
            .into_iter()
            .map(|r| PushSubscriptionInfo {
                device_id: r.device_id,
                subscription: r.subscription,
                created_at: r.created_at,
            })
            .collect())
    }

    /// Deletes the subscription of `device` (the caller's own, or another device of theirs).
    pub async fn delete_push_subscription(
        &self,
        caller: &Caller,
        device: DeviceId,
    ) -> CoreResult<()> {
        let own = self
            .inner
            .store
            .push_subscriptions_of(&[caller.user_id])
            .await?
            .iter()
            .any(|s| s.device_id == device);
        if !own
            || !self
                .inner
                .store
                .delete_push_subscription(device, None)
                .await?
        {
            return Err(CoreError::not_found("push subscription"));
        }
        Ok(())
    }

    pub async fn push_settings(&self, caller: &Caller) -> CoreResult<PushSettings> {
        Ok(self.inner.store.push_settings(caller.user_id).await?)
    }

    pub async fn set_push_settings(
        &self,
        caller: &Caller,
        settings: PushSettings,
    ) -> CoreResult<PushSettings> {
        if let Some(name) = &settings.time_zone
            && jiff::tz::TimeZone::get(name).is_err()
        {
            return Err(CoreError::new(ErrorCode::InvalidField, "unknown time zone"));
        }
        if let Some(w) = settings.dnd
            && (w.start >= 1440 || w.end >= 1440)
        {
            return Err(CoreError::new(
                ErrorCode::InvalidField,
                "do-not-disturb minutes must be below 1440",
            ));
        }
        self.inner
            .store
            .set_push_settings(caller.user_id, settings.clone())
            .await?;
        Ok(settings)
    }

    /// Whether a device has a foreground connection on any node.
    fn device_awake(&self, user: UserId, device: DeviceId) -> bool {
        self.inner.hub.device_awake(user, device)
            || self.inner.cluster.device_awake_elsewhere(device)
    }

    /// Turns one event into jobs and queues them.
    async fn plan_jobs(&self, planned: Planned) -> CoreResult<()> {
        let store = &self.inner.store;
        let config = &self.inner.config.push;
        let (users, sender): (Vec<UserId>, UserId) = match &planned {
            Planned::Message {
                message,
                recipients,
            } => (
                recipients
                    .iter()
                    .copied()
                    .filter(|u| *u != message.sender_id)
                    .collect(),
                message.sender_id,
            ),
            Planned::FriendRequest { from, to, .. } => (vec![*to], *from),
            Planned::Call { caller, callee, .. } => (vec![*callee], *caller),
        };
        let mut by_user: HashMap<UserId, Vec<DeviceId>> = HashMap::new();
        for sub in store.push_subscriptions_of(&users).await? {
            if !self.device_awake(sub.user_id, sub.device_id) {
                by_user.entry(sub.user_id).or_default().push(sub.device_id);
            }
        }
        if by_user.is_empty() {
            return Ok(());
        }
        let sender_name = match store.profile(sender).await? {
            Some(p) if !p.display_name.is_empty() => p.display_name,
            Some(p) => p.username,
            None => String::new(),
        };
        let now = self.now_ms();
        let mut jobs = Vec::new();
        for (user, devices) in by_user {
            let settings = store.push_settings(user).await?;
            let conversations = store.conversations_of(user).await?;
            let badge: u64 = conversations.iter().map(|c| c.unread).sum();
            let blocked =
                store.is_blocked(user, sender).await? || store.is_blocked(sender, user).await?;
            let (event, kind, conversation, ts, collapse_key) = match &planned {
                Planned::Message { message, .. } => {
                    let mentioned = message
                        .mentions
                        .as_ref()
                        .is_some_and(|m| m.all || m.users.contains(&user));
                    (
                        Event::Message,
                        if mentioned {
                            PushKind::Mention
                        } else {
                            PushKind::Message
                        },
                        Some(message.conversation_id),
                        message.ts,
                        format!("c{}", message.conversation_id.0),
                    )
                }
                Planned::FriendRequest { ts, .. } => (
                    Event::FriendRequest,
                    PushKind::FriendRequest,
                    None,
                    *ts,
                    "friends".into(),
                ),
                Planned::Call {
                    conversation_id,
                    ts,
                    ..
                } => (
                    Event::Call,
                    PushKind::Call,
                    Some(*conversation_id),
                    *ts,
                    format!("call{}", conversation_id.0),
                ),
            };
            let here =
                conversation.and_then(|id| conversations.iter().find(|c| c.conversation.id == id));
            if conversation.is_some() && here.is_none() {
                continue; // No longer a member.
            }
            let facts = PushFacts {
                event,
                notify: here.map_or(NotifyLevel::All, |c| c.settings.notify),
                group: here.is_some_and(|c| c.conversation.kind == ConversationKind::Group),
                mentioned: kind == PushKind::Mention,
                muted: settings.muted,
                do_not_disturb: do_not_disturb(&settings, now),
                privacy: settings.privacy,
                encrypted: matches!(&planned, Planned::Message { message, .. }
                    if matches!(message.body, MessageBody::Encrypted { .. })),
                blocked,
            };
            let Some(shape) = policy::push_notification(facts) else {
                continue;
            };
            let payload = PushPayload {
                kind,
                conversation_id: conversation,
                sender: shape.sender.then(|| sender_name.clone()),
                title: here
                    .filter(|c| shape.sender && c.conversation.kind == ConversationKind::Group)
                    .map(|c| c.conversation.title.clone()),
                preview: match &planned {
                    Planned::Message { message, .. } if shape.preview => {
                        preview_of(&message.body, config.preview_chars)
                    }
                    _ => None,
                },
                count: here.map_or(1, |c| c.unread.clamp(1, u64::from(u32::MAX)) as u32),
                badge,
                ts,
            };
            let payload = serde_json::to_string(&payload)
                .map_err(|e| CoreError::internal("encoding a push payload", e))?;
            for device in devices {
                jobs.push(NewPushJob {
                    device_id: device,
                    collapse_key: collapse_key.clone(),
                    payload: payload.clone(),
                    due_at: now,
                });
            }
        }
        if !jobs.is_empty() {
            store.enqueue_push_jobs(jobs).await?;
            self.inner.push.wake.notify_one();
        }
        Ok(())
    }
}

fn validate_subscription(subscription: &PushSubscription) -> CoreResult<()> {
    let bad = |what: &str| Err(CoreError::new(ErrorCode::InvalidField, what));
    match subscription {
        PushSubscription::WebPush {
            endpoint,
            p256dh,
            auth,
        } => {
            if endpoint.len() > 2048
                || !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
            {
                return bad("endpoint must be an http(s) URL of at most 2048 bytes");
            }
            if p256dh.len() > 100 || auth.len() > 40 {
                return bad("p256dh or auth is too long");
            }
        }
        PushSubscription::Fcm { token } | PushSubscription::Apns { token } => {
            if token.is_empty() || token.len() > 4096 {
                return bad("token must be 1 to 4096 bytes");
            }
        }
    }
    Ok(())
}

/// Runs the planner: works through the outbox whenever the sequencer rings (and at each poll,
/// for rows whose lease ran out, a dead node's among them), and plans friend requests and calls
/// as they arrive.
pub(crate) async fn run_planner(core: Core, mut rx: mpsc::Receiver<Planned>) {
    let poll = Duration::from_millis(core.inner.config.push.poll_interval_ms.max(10));
    loop {
        core.drain_outbox().await;
        tokio::select! {
            planned = rx.recv() => {
                let Some(planned) = planned else { return };
                if let Err(e) = core.plan_jobs(planned).await {
                    tracing::warn!(%e, "Could not queue pushes.");
                }
            }
            () = core.inner.push.outbox.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

impl Core {
    /// Claims due outbox rows a batch at a time, plans their pushes and deletes them, until
    /// none is due. A row whose planning failed stays leased and is tried again after the
    /// lease. With push disabled, rows are deleted unplanned.
    async fn drain_outbox(&self) {
        let store = &self.inner.store;
        let config = &self.inner.config.push;
        let batch = config.claim_batch.max(1);
        loop {
            let now = self.now_ms();
            let lease_until = now + (config.lease_secs.max(1) * 1000) as i64;
            let items = match store.claim_push_outbox(now, lease_until, batch).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(%e, "Could not claim the push outbox.");
                    return;
                }
            };
            if items.is_empty() {
                return;
            }
            let full = items.len() as u32 >= batch;
            let mut done = Vec::with_capacity(items.len());
            for item in items {
                if !config.enabled {
                    done.push(item);
                    continue;
                }
                match self.plan_outbox_item(item).await {
                    Ok(()) => done.push(item),
                    Err(e) => tracing::warn!(%e, conversation = item.conversation_id.0,
                        seq = item.seq, "Could not queue pushes; will try again."),
                }
            }
            if let Err(e) = store.delete_push_outbox(done).await {
                // The rows come back when their lease ends and are planned again; the queue
                // merges the copies by collapse key.
                tracing::warn!(%e, "Could not clear the push outbox.");
                return;
            }
            if !full {
                return;
            }
        }
    }

    async fn plan_outbox_item(&self, item: tidings_store::OutboxItem) -> CoreResult<()> {
        let store = &self.inner.store;
        let message = store
            .messages_after(item.conversation_id, item.seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|m| m.seq == item.seq);
        let Some(message) = message else {
            return Ok(()); // Removed by retention (or with its conversation) meanwhile.
        };
        let recipients: Arc<[UserId]> = store
            .members(item.conversation_id)
            .await?
            .iter()
            .map(|m| m.user_id)
            .collect();
        self.plan_jobs(Planned::Message {
            message: Box::new(message),
            recipients,
        })
        .await
    }
}

/// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, at least what the
/// push service asked for, at most `max`.
pub fn backoff_ms(config: &PushConfig, attempt: u32, retry_after_ms: Option<u64>) -> u64 {
    let exp = config
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    exp.max(retry_after_ms.unwrap_or(0))
        .min(config.backoff_max_ms)
}

async fn run_worker(core: Core, pusher: Arc<dyn Pusher>) {
    let config = core.inner.config.push.clone();
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let poll = Duration::from_millis(config.poll_interval_ms.max(10));
    loop {
        let now = core.now_ms();
        let lease_until = now + (config.lease_secs.max(1) * 1000) as i64;
        let jobs = match core
            .inner
            .store
            .claim_push_jobs(now, lease_until, config.claim_batch.max(1))
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(%e, "Could not claim push jobs.");
                Vec::new()
            }
        };
        let full_batch = jobs.len() as u32 >= config.claim_batch.max(1);
        for job in jobs {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let core = core.clone();
            let pusher = pusher.clone();
            let span = tracing::info_span!(
                target: tidings_metrics::TRACE_TARGET,
                parent: None,
                "push.deliver",
                device.id = job.key.device_id.0,
                attempt = i64::from(job.attempts),
                outcome = tracing::field::Empty,
            );
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    deliver(&core, pusher.as_ref(), job).await;
                    drop(permit);
                },
                span,
            ));
        }
        if !full_batch {
            // Sleep until woken by new jobs or the poll comes round (retries become due by time).
            let _ = tokio::time::timeout(poll, core.inner.push.wake.notified()).await;
        }
    }
}

async fn deliver(core: &Core, pusher: &dyn Pusher, job: PushJob) {
    let config = &core.inner.config.push;
    let store = &core.inner.store;
    let urgency = if job.key.collapse_key.starts_with("call") {
        Urgency::High
    } else {
        Urgency::Normal
    };
    let outcome = pusher
        .push(PushRequest {
            subscription: &job.subscription,
            payload: job.payload.as_bytes(),
            topic: &job.key.collapse_key,
            urgency,
            ttl_secs: config.ttl_secs,
        })
        .await;
    let device = job.key.device_id;
    let outcome_name = match &outcome {
        PushOutcome::Delivered => "delivered",
        PushOutcome::Gone => "gone",
        PushOutcome::Retry { .. } => "retry",
        PushOutcome::Failed(_) => "failed",
    };
    tracing::Span::current().record("outcome", outcome_name);
    let result = match outcome {
        PushOutcome::Delivered => {
            tracing::debug!(device = device.0, "Push delivered.");
            store.finish_push_job(job.key, core.now_ms()).await
        }
        PushOutcome::Gone => {
            tracing::info!(device = device.0, "Push subscription gone; removing it.");
            store
                .delete_push_subscription(device, Some(job.subscription))
                .await
                .map(drop)
        }
        PushOutcome::Retry { after_ms } => {
            let attempt = job.attempts + 1;
            if attempt >= config.max_attempts {
                tracing::warn!(device = device.0, attempt, "Push given up after retries.");
                store.finish_push_job(job.key, core.now_ms()).await
            } else {
                let delay = backoff_ms(config, attempt, after_ms);
                tracing::debug!(device = device.0, attempt, delay, "Push will be retried.");
                store
                    .retry_push_job(job.key, core.now_ms() + delay as i64)
                    .await
            }
        }
        PushOutcome::Failed(reason) => {
            tracing::warn!(device = device.0, %reason, "Push refused for good.");
            store.finish_push_job(job.key, core.now_ms()).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(%e, "Could not record a push outcome.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_span_midnight() {
        let night = DndWindow {
            start: 22 * 60,
            end: 7 * 60,
        };
        let lunch = DndWindow {
            start: 12 * 60,
            end: 13 * 60,
        };
        for (window, minute, want) in [
            (night, 23 * 60, true),
            (night, 0, true),
            (night, 7 * 60 - 1, true),
            (night, 7 * 60, false),
            (night, 12 * 60, false),
            (lunch, 12 * 60, true),
            (lunch, 13 * 60, false),
            (lunch, 11 * 60, false),
            (DndWindow { start: 5, end: 5 }, 5, false),
        ] {
            assert_eq!(in_window(window, minute), want, "{window:?} {minute}");
        }
    }

    #[test]
    fn dnd_follows_the_users_time_zone() {
        // 2026-01-15 22:30 UTC is 23:30 in Paris and 07:30 (next day) in Tokyo.
        let now = jiff::Timestamp::from_second(1_768_516_200)
            .unwrap()
            .as_millisecond();
        let night = PushSettings {
            dnd: Some(DndWindow {
                start: 23 * 60,
                end: 7 * 60,
            }),
            ..Default::default()
        };
        let zone = |name: &str| PushSettings {
            time_zone: Some(name.into()),
            ..night.clone()
        };
        assert!(
            !do_not_disturb(&night, now),
            "22:30 UTC is outside 23:00-07:00"
        );
        assert!(do_not_disturb(&zone("Europe/Paris"), now));
        assert!(!do_not_disturb(&zone("Asia/Tokyo"), now));
        assert!(!do_not_disturb(&PushSettings::default(), now));
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_caps() {
        let config = PushConfig {
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            ..Default::default()
        };
        assert_eq!(backoff_ms(&config, 1, None), 1_000);
        assert_eq!(backoff_ms(&config, 2, None), 2_000);
        assert_eq!(backoff_ms(&config, 4, None), 8_000);
        assert_eq!(backoff_ms(&config, 1, Some(30_000)), 30_000);
        assert_eq!(backoff_ms(&config, 3, Some(10)), 4_000);
        assert_eq!(backoff_ms(&config, 20, None), 60_000);
        assert_eq!(backoff_ms(&config, 1, Some(10_000_000)), 60_000);
    }

    #[test]
    fn previews_are_cut_and_never_of_encrypted_bodies() {
        let text = MessageBody::Text {
            text: "héllo wörld".into(),
        };
        assert_eq!(preview_of(&text, 5).as_deref(), Some("héllo…"));
        assert_eq!(preview_of(&text, 50).as_deref(), Some("héllo wörld"));
        let sealed = MessageBody::Encrypted {
            algorithm: "x".into(),
            ciphertext: "y".into(),
            session_id: None,
        };
        assert_eq!(preview_of(&sealed, 50), None);
    }
}
