//! The XMPP transport: client-to-server XMPP (RFC 6120/6121) through core sessions.
//!
//! # Layout
//! - [`xml`]: the restricted streaming XML parser and the element tree.
//! - [`sasl`]: the SASL mechanisms (SCRAM-SHA-1/-256 and their `-PLUS`, PLAIN, OAUTHBEARER),
//!   pure functions over the client's bytes; SCRAM keys and proofs are the core's.
//! - [`sm`]: Stream Management resumption: the unacknowledged stanzas and the handoff of a
//!   session to the connection that resumes it.
//! - [`conn`]: one connection: stream negotiation (STARTTLS, SASL, resource binding), then
//!   stanzas translated to native frames for the connection's core
//!   [`tidings_core::session::Session`] and the session's output translated back. Its child
//!   modules answer MAM queries (`mam.rs`), serve groups as MUC rooms (`muc.rs`,
//!   `muc_admin.rs`) and hand out HTTP File Upload slots (`upload.rs`).
//! - [`websocket`]: XMPP over WebSocket (RFC 7395): the route, and the framing that puts one
//!   element in each message around the same connection code.
//!
//! The transport holds no business rules: sending, delivery order, receipts, typing, presence
//! and friends are the core's. [`serve`] runs the STARTTLS listener and [`serve_tls`] the
//! direct-TLS one (XEP-0368); [`websocket_router`] gives the binary an axum route for XMPP
//! over WebSocket, so the HTTP transport never depends on this crate.

pub mod conn;
pub mod sasl;
pub mod sm;
pub mod websocket;
pub mod xml;

pub use websocket::{HttpListener, websocket_router};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tidings_core::Core;
use tidings_proto::UserId;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// XMPP: standard XMPP clients sign in with their Tidings account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct XmppConfig {
    /// Whether to serve XMPP client connections (needs TLS configured unless
    /// `xmpp.tls_required` is false).
    pub enabled: bool,
    /// Address and port of the client listener with STARTTLS (5222 is the standard port).
    pub listen: SocketAddr,
    /// Whether to serve direct TLS (XEP-0368) on `xmpp.tls_listen` as well.
    pub direct_tls: bool,
    /// Address and port of the direct-TLS listener (5223 is the usual port).
    pub tls_listen: SocketAddr,
    /// Whether to serve XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP
    /// listener (subprotocol `xmpp`). With `xmpp.tls_required`, only over HTTPS, from a
    /// trusted proxy that received HTTPS, or from this host.
    pub websocket: bool,
    /// The XMPP domain: users are `username@domain`.
    pub domain: String,
    /// The domain of group chat rooms (XEP-0045): the group with id N is the room
    /// `N@muc_domain`.
    pub muc_domain: String,
    /// The domain of the HTTP File Upload service (XEP-0363), which hands out upload slots in
    /// the Tidings file store.
    pub upload_domain: String,
    /// The base URL of the HTTP listener as XMPP clients reach it, for upload slot URLs (for
    /// example `https://chat.example.com`). Empty: `https://` (or `http://` without TLS),
    /// `xmpp.domain` and the HTTP listener's port.
    pub upload_base_url: String,
    /// Whether a client must start TLS before authenticating. Without TLS only
    /// non-plaintext mechanisms could be offered, and none are implemented yet.
    pub tls_required: bool,
    /// Largest stanza accepted, in bytes; a larger one ends the stream with
    /// `policy-violation`.
    pub max_stanza_bytes: u32,
    /// Deepest element nesting inside a stanza.
    pub max_depth: u16,
    /// Most attributes on one element.
    pub max_attributes: u16,
    /// Stanzas per second a connection may send on average; beyond it the connection is read
    /// more slowly.
    pub stanzas_per_second: u32,
    /// Stanzas a connection may send in a burst above the rate.
    pub stanza_burst: u32,
    /// Seconds a new connection has to authenticate and bind a resource.
    pub negotiation_timeout_secs: u16,
    /// Seconds a session that enabled Stream Management resumption (XEP-0198) is kept after
    /// its connection drops, for the client to resume it; 0 turns resumption off.
    pub resume_timeout_secs: u32,
    /// HTTP(S) addresses of status documents hosted apart from this server, which clients
    /// fetch to learn of an outage when they cannot reach it (XEP-0455), e.g.
    /// `["https://status.example.com/xmpp.json"]`. Advertised in the server's service
    /// discovery; empty advertises none.
    pub status_addresses: Vec<String>,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 5222)),
            direct_tls: true,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 5223)),
            websocket: true,
            domain: "localhost".into(),
            muc_domain: "conference.localhost".into(),
            upload_domain: "upload.localhost".into(),
            upload_base_url: String::new(),
            tls_required: true,
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 32,
            stanzas_per_second: 50,
            stanza_burst: 200,
            negotiation_timeout_secs: 30,
            resume_timeout_secs: 300,
            status_addresses: Vec::new(),
        }
    }
}

impl XmppConfig {
    pub fn limits(&self) -> xml::Limits {
        xml::Limits {
            max_stanza_bytes: self.max_stanza_bytes as usize,
            max_depth: usize::from(self.max_depth.max(1)),
            max_attributes: usize::from(self.max_attributes),
        }
    }
}

/// A bound resource: the connection holding it, and how to tell it a newer one took over.
struct Bound {
    conn_id: u64,
    kick: Arc<Notify>,
}

/// What every XMPP connection of this node shares.
pub struct Gateway {
    pub core: Core,
    pub config: XmppConfig,
    /// The TLS configuration for STARTTLS and direct TLS; `None` when TLS is not configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Resources bound on this node, so a second connection binding the same resource takes
    /// it over (RFC 6120 7.7.2.2) rather than both receiving as one device.
    resources: Mutex<HashMap<(UserId, String), Bound>>,
    /// Sessions that can be resumed (XEP-0198), by their stream management id: the user, and
    /// where to ask the holder for the session.
    resumable: Mutex<HashMap<String, (UserId, tokio::sync::mpsc::Sender<conn::Handoff>)>>,
    next_conn: AtomicU64,
    /// The HTTP File Upload service (XEP-0363); `None` when the server has no file store here.
    pub uploads: Option<conn::upload::Uploads>,
    /// SHA-1 of avatar images by file id, for the XEP-0153 photo hash in presence. Files never
    /// change, so an entry stays true; the map is emptied when it reaches its bound.
    avatar_hashes: Mutex<HashMap<String, String>>,
}

/// The most avatar hashes kept (about 100 bytes each).
const MAX_AVATAR_HASHES: usize = 4096;

impl Gateway {
    pub fn new(
        core: Core,
        config: XmppConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Arc<Gateway> {
        Self::with_uploads(core, config, tls, None)
    }

    /// A gateway that also serves HTTP File Upload (XEP-0363) from `uploads`.
    pub fn with_uploads(
        core: Core,
        config: XmppConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        uploads: Option<conn::upload::Uploads>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            core,
            config,
            tls,
            uploads,
            resources: Mutex::new(HashMap::new()),
            resumable: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            avatar_hashes: Mutex::new(HashMap::new()),
        })
    }

    /// The SHA-1 of the avatar file `file_id`, if known.
    fn avatar_hash(&self, file_id: &str) -> Option<String> {
        self.avatar_hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(file_id)
            .cloned()
    }

    fn remember_avatar_hash(&self, file_id: &str, hash: String) {
        let mut hashes = self.avatar_hashes.lock().unwrap_or_else(|e| e.into_inner());
        if hashes.len() >= MAX_AVATAR_HASHES {
            hashes.clear();
        }
        hashes.insert(file_id.to_owned(), hash);
    }

    fn conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `resource` for the connection `conn_id`, kicking a connection that held it.
    fn bind(&self, user: UserId, resource: &str, conn_id: u64, kick: Arc<Notify>) {
        let old = self
            .resources
            .lock()
            .expect("resource table")
            .insert((user, resource.to_owned()), Bound { conn_id, kick });
        if let Some(old) = old {
            old.kick.notify_one();
        }
    }

    fn add_resumable(
        &self,
        id: String,
        user: UserId,
        handoff: tokio::sync::mpsc::Sender<conn::Handoff>,
    ) {
        self.resumable
            .lock()
            .expect("resumable table")
            .insert(id, (user, handoff));
    }

    /// Where to ask for the session `id`, if it exists and belongs to `user`.
    fn resumable(
        &self,
        id: &str,
        user: UserId,
    ) -> Option<tokio::sync::mpsc::Sender<conn::Handoff>> {
        let table = self.resumable.lock().expect("resumable table");
        table
            .get(id)
            .filter(|(owner, _)| *owner == user)
            .map(|(_, tx)| tx.clone())
    }

    fn forget_resumable(&self, id: &str) {
        self.resumable.lock().expect("resumable table").remove(id);
    }

    /// Releases `resource` if `conn_id` still holds it.
    /// Forgets a binding if it is still this connection's; `false` when a newer connection
    /// bound the resource since.
    fn unbind(&self, user: UserId, resource: &str, conn_id: u64) -> bool {
        let mut table = self.resources.lock().expect("resource table");
        let key = (user, resource.to_owned());
        if table.get(&key).is_some_and(|b| b.conn_id == conn_id) {
            table.remove(&key);
            return true;
        }
        false
    }
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    direct_tls: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%e, "Could not accept an XMPP connection.");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%e, "Could not set TCP_NODELAY.");
                }
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    if direct_tls {
                        conn::run_direct_tls(gateway, stream, peer).await;
                    } else {
                        conn::run(gateway, Box::new(stream), Some(peer), None).await;
                    }
                });
            }
        }
    }
}

/// Accepts XMPP client connections (STARTTLS) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(listener, gateway, false, shutdown).await
}

/// Accepts direct-TLS XMPP client connections (XEP-0368) on `listener` until `shutdown`
/// resolves. The gateway must have a TLS configuration.
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(listener, gateway, true, shutdown).await
}
