//! The Tidings domain core: it decides, backends store, transports translate.
//!
//! # Layout
//! - [`Core`] is the handle transports hold; it is cheap to clone.
//! - [`accounts`]: registration, OAuth grants, devices, passwords.
//! - [`admin`]: server administration (roles, suspension, deletion, forced sign-out).
//! - [`audit`]: the tamper-evident audit log: kinds, refusals, queries, export, verify, prune.
//! - [`calls`]: call signalling and the call state machine; the ring-timeout sweeper.
//! - [`device_signals`]: ephemeral signals from one device to another live device (XMPP IQs
//!   between resources travel as these).
//! - [`contacts`]: the block list, friends and friend requests, privacy settings.
//! - [`conversations`]: direct and group conversations, membership, the member cache.
//! - [`groups`]: group management: roles, mutes, bans, settings, invite links, join requests,
//!   invitations, and the system messages that record each change.
//! - [`messaging`]: sending (through the group-commit sequencer), history, receipts, typing, presence.
//! - [`session`]: the transport-independent state machine of one connection of the native
//!   protocol: authentication, live delivery without gaps or duplicates, sync, flow control.
//! - [`hub`]: the connections this node holds and the dispatcher that feeds them from the bus.
//! - [`profiles`]: profiles and the user directory.
//! - [`oauth`]: registered OAuth clients, the authorization code grant with PKCE, introspection.
//! - [`push`]: push notifications: who gets one, the durable queue, the delivery worker.
//! - [`policy`]: every access decision.
//! - [`rooms`]: named rooms and their occupants (XMPP Multi-User Chat).
//! - [`rtc`]: ICE servers and TURN REST credentials for calls.
//! - [`search`]: full-text message search, and the background indexer that feeds it.
//!
//! The core reaches the world only through [`tidings_store::Store`], [`tidings_bus::Bus`] and
//! [`Clock`]; it never opens a socket, a file or a database handle.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod calls;
pub mod clock;
mod cluster;
pub mod config;
pub mod contacts;
pub mod conversations;
pub mod device_signals;
pub mod error;
pub mod groups;
pub mod hub;
pub mod messaging;
pub mod oauth;
pub mod passwords;
pub mod policy;
pub mod profiles;
pub mod push;
pub mod ratelimit;
pub mod rich;
pub mod rooms;
pub mod rtc;
pub mod scram;
pub mod search;
pub mod selfservice;
pub mod session;
pub mod sso;
pub mod tokens;
pub mod twofactor;
pub mod userxml;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::CoreConfig;
pub use error::{CoreError, CoreResult};
pub use tokens::Keyring;

use std::sync::Arc;
use tidings_bus::Bus;
use tidings_proto::{DeviceId, UserId};
use tidings_store::Store;
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;

/// An authenticated caller: who, from which device, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// When the access token expires, in ms since the epoch.
    pub expires_at: i64,
    /// The OAuth scopes of the token: all of them for first-party sign-ins, what the user
    /// consented to for a registered client. Transports check them through
    /// [`policy::decide_scope`] before each request.
    pub scopes: policy::Scopes,
}

/// What the core needs from the outside world.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub clock: Arc<dyn Clock>,
    pub keys: Keyring,
}

pub(crate) struct Inner {
    pub(crate) config: CoreConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: Keyring,
    pub(crate) issuer: String,
    pub(crate) hashing: passwords::PasswordHashing,
    /// Verified against when a username is unknown, so failures take the same time.
    pub(crate) dummy_hash: OnceCell<String>,
    pub(crate) hub: hub::Hub,
    /// The other nodes' online users (for presence across a cluster).
    pub(crate) cluster: cluster::ClusterPresence,
    pub(crate) members: conversations::MemberCache,
    /// Requests to the single group-commit writer of this node.
    pub(crate) sequencer: mpsc::Sender<messaging::SequencerRequest>,
    /// Directory searches per user.
    pub(crate) search_limiter: ratelimit::RateLimiter<UserId>,
    /// Messages sent per user.
    pub(crate) message_limiter: ratelimit::RateLimiter<UserId>,
    /// Users added to groups or invited, per inviting user.
    pub(crate) invite_limiter: ratelimit::RateLimiter<UserId>,
    /// Message searches per user.
    pub(crate) message_search_limiter: ratelimit::RateLimiter<UserId>,
    /// Friend requests per user.
    pub(crate) friend_request_limiter: ratelimit::RateLimiter<UserId>,
    /// Password sign-in attempts per client address.
    pub(crate) sign_in_limiter: ratelimit::RateLimiter<std::net::IpAddr>,
    /// Second-factor codes tried per account, so the 10^6 TOTP codes cannot be walked.
    pub(crate) second_factor_limiter: ratelimit::RateLimiter<UserId>,
    /// The push planner's queue, the worker's wake-up and the provider.
    pub(crate) push: push::PushState,
    /// Where MQTT broker publications made on other nodes go (set by the MQTT gateway, the
    /// only transport with a broker; without one they are dropped).
    pub(crate) broker_relay: std::sync::OnceLock<mpsc::Sender<Arc<tidings_bus::BrokerPublication>>>,
}

/// The handle to the running core.
#[derive(Clone)]
pub struct Core {
    pub(crate) inner: Arc<Inner>,
}

/// The background tasks of a running core, for orderly shutdown.
pub struct CoreTasks {
    pub sequencer: JoinHandle<()>,
    pub dispatcher: JoinHandle<()>,
    pub janitor: JoinHandle<()>,
    pub indexer: JoinHandle<()>,
    /// Publishes this node's online users for the other nodes (see `cluster`).
    pub presence: JoinHandle<()>,
    pub retention: JoinHandle<()>,
    /// Turns committed messages into queued pushes (see `push`).
    pub push_planner: JoinHandle<()>,
    /// Turns calls nobody answered in time into missed calls.
    pub calls: JoinHandle<()>,
}

/// How often expired state (refresh tokens, audit entries past retention) is pruned.
const JANITOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl Core {
    /// Starts the core: subscribes to the bus and starts the group-commit sequencer.
    /// `issuer` is the OAuth issuer URL (the `iss` of every token).
    pub async fn start(
        config: CoreConfig,
        deps: Deps,
        issuer: String,
    ) -> CoreResult<(Core, CoreTasks)> {
        let hashing = passwords::PasswordHashing::new(
            config.accounts.argon2_memory_kib,
            config.accounts.argon2_iterations,
        )?;
        let (seq_tx, seq_rx) = mpsc::channel(config.limits.max_commit_batch.max(1) * 8);
        let mut bus_rx = deps
            .bus
            .subscribe()
            .await
            .map_err(|e| CoreError::internal("subscribing to the bus", e))?;
        let (push_state, push_rx) = push::PushState::new(config.push.planner_queue);
        let inner = Arc::new(Inner {
            push: push_state,
            hub: hub::Hub::new(config.limits.outbound_queue),
            cluster: cluster::ClusterPresence::new(),
            search_limiter: ratelimit::RateLimiter::new(
                config.limits.directory_searches_per_minute,
                10,
                100_000,
            ),
            message_limiter: ratelimit::RateLimiter::new(
                config.limits.messages_per_minute,
                config.limits.message_burst,
                100_000,
            ),
            invite_limiter: ratelimit::RateLimiter::new(
                config.limits.group_invitations_per_minute,
                100,
                100_000,
            ),
            message_search_limiter: ratelimit::RateLimiter::new(
                config.limits.searches_per_minute,
                20,
                100_000,
            ),
            friend_request_limiter: ratelimit::RateLimiter::per_hour(
                config.limits.friend_requests_per_hour,
                config.limits.friend_requests_per_hour.clamp(1, 5),
                100_000,
            ),
            sign_in_limiter: ratelimit::RateLimiter::new(
                config.limits.sign_in_attempts_per_address_per_minute,
                config.limits.sign_in_attempts_per_address_per_minute,
                100_000,
            ),
            second_factor_limiter: ratelimit::RateLimiter::new(
                config.limits.second_factor_attempts_per_user_per_minute,
                config.limits.second_factor_attempts_per_user_per_minute,
                100_000,
            ),
            members: conversations::MemberCache::new(config.limits.member_cache_entries),
            config,
            store: deps.store,
            bus: deps.bus,
            clock: deps.clock,
            keys: deps.keys,
            issuer,
            hashing,
            dummy_hash: OnceCell::new(),
            sequencer: seq_tx,
            broker_relay: std::sync::OnceLock::new(),
        });
        let core = Core { inner };
        let sequencer = tokio::spawn(messaging::run_sequencer(core.clone(), seq_rx));
        let dispatch_core = core.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(event) = bus_rx.recv().await {
                if let tidings_bus::BusEvent::MembershipChanged { conversation_id } = &event {
                    dispatch_core.inner.members.invalidate(*conversation_id);
                }
                if let tidings_bus::BusEvent::BrokerPublish { node, publication } = &event {
                    // Our own publications were routed here already; the bus echoes them.
                    if *node != dispatch_core.inner.cluster.node
                        && let Some(relay) = dispatch_core.inner.broker_relay.get()
                    {
                        // Waiting here slows the bus rather than growing memory, as the bus
                        // itself does; the relay's reader only routes in memory.
                        let _ = relay.send(publication.clone()).await;
                    }
                    continue;
                }
                if dispatch_core.inner.cluster.apply(&event) {
                    // A node that just started learns this one's picture now.
                    let core = dispatch_core.clone();
                    tokio::spawn(async move { core.publish_snapshot().await });
                }
                dispatch_core.inner.hub.dispatch(&event);
            }
        });
        // Used refresh tokens are kept until they expire (to recognise reuse); without pruning
        // the table would grow by one row per refresh forever.
        let janitor_core = core.clone();
        let janitor = tokio::spawn(async move {
            let mut interval = tokio::time::interval(JANITOR_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let now = janitor_core.now_ms();
                match janitor_core.inner.store.prune_refresh_tokens(now).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "Pruned expired refresh tokens."),
                    Err(e) => tracing::warn!(%e, "Could not prune expired refresh tokens."),
                }
                match janitor_core.prune_audit().await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "Pruned old audit entries."),
                    Err(e) => tracing::warn!(%e, "Could not prune the audit log."),
                }
            }
        });
        let indexer = tokio::spawn(search::run_indexer(core.clone()));
        let presence = tokio::spawn(cluster::run_heartbeat(core.clone()));
        let retention = tokio::spawn(rich::run_retention(core.clone()));
        let push_planner = tokio::spawn(push::run_planner(core.clone(), push_rx));
        let calls = tokio::spawn(calls::run_sweeper(core.clone()));
        Ok((
            core,
            CoreTasks {
                sequencer,
                dispatcher,
                janitor,
                indexer,
                presence,
                retention,
                push_planner,
                calls,
            },
        ))
    }

    pub fn config(&self) -> &CoreConfig {
        &self.inner.config
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn keys(&self) -> &Keyring {
        &self.inner.keys
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Publishes an MQTT broker publication made on this node to the other nodes.
    pub async fn publish_broker(&self, publication: tidings_bus::BrokerPublication) {
        let event = tidings_bus::BusEvent::BrokerPublish {
            node: self.inner.cluster.node,
            publication: Arc::new(publication),
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::warn!(%e, "Could not publish an MQTT publication to the other nodes.");
        }
    }

    /// Whether this node's bus reaches other nodes (a cluster on NATS) rather than staying
    /// within the process.
    pub fn is_clustered(&self) -> bool {
        self.inner.bus.spans_nodes()
    }

    /// The MQTT broker publications other nodes make, from now on. Only the first caller (the
    /// node's MQTT gateway) gets them; later calls return `None`.
    pub fn broker_publications(
        &self,
        capacity: usize,
    ) -> Option<mpsc::Receiver<Arc<tidings_bus::BrokerPublication>>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner.broker_relay.set(tx).ok().map(|()| rx)
    }

    /// Number of live connections on this node.
    pub fn connection_count(&self) -> usize {
        self.inner.hub.connection_count()
    }

    /// Asks every connection to close (for shutdown); in-flight sends still complete.
    pub fn close_all_connections(&self) {
        self.inner.hub.close_all();
    }

    /// Checks that storage answers, for readiness probes.
    pub async fn ready(&self) -> CoreResult<()> {
        self.inner.store.ping().await.map_err(CoreError::from)
    }

    /// Runs `op` as its own task and waits for it. The operation finishes even if the caller
    /// stops waiting: a client that disconnects cancels its request's future, and a multi-step
    /// change cut off half-way is worse than one whose answer nobody reads.
    pub(crate) async fn detached<T, F>(&self, op: impl FnOnce(Core) -> F) -> CoreResult<T>
    where
        F: std::future::Future<Output = CoreResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(op(self.clone()))
            .await
            .map_err(|e| CoreError::internal("detached operation", e))?
    }

    /// Direct access to the store for operator commands that bypass client-facing rules.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
}
