//! A small embedded STUN/TURN server (RFC 8489 binding, RFC 8656 TURN over UDP) for calls.
//!
//! # Layout
//! - [`stun`]: the message codec (attributes, XOR addresses, MESSAGE-INTEGRITY, FINGERPRINT,
//!   ChannelData).
//! - `server` (here): [`TurnServer`], one UDP socket for clients and one per allocation for
//!   its relayed address.
//!
//! Credentials follow the TURN REST scheme that coturn's `use-auth-secret` checks: the username
//! is `expiry:user` (expiry in seconds since the epoch) and the password
//! `base64(HMAC-SHA1(secret, username))`, so the server needs no user database: it recomputes
//! the password from the shared secret and checks MESSAGE-INTEGRITY with the long-term key
//! `MD5(username:realm:password)`. Nonces are stateless (a timestamp and its HMAC).
//!
//! Relaying follows the permissions a client installed: data from a peer address whose IP has
//! no permission is dropped, and so is data the client sends to one. Peers on loopback and other
//! special-purpose addresses are refused unless `allow_loopback_peers` is set (tests), so the
//! server cannot be used to reach services on its own host.

pub mod stun;

use base64::Engine;
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stun::{Builder, Class, Message, attr, method};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How the embedded server runs.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// Where clients reach the server (UDP).
    pub listen: SocketAddr,
    /// The address relay sockets are bound on.
    pub relay_ip: IpAddr,
    /// The address clients are told their relayed addresses have, when it differs from
    /// `relay_ip` (a server behind 1:1 NAT); `None` uses `relay_ip`.
    pub relay_advertise: Option<IpAddr>,
    /// The UDP ports relayed addresses are taken from, inclusive.
    pub relay_ports: (u16, u16),
    pub realm: String,
    /// The TURN REST shared secret.
    pub secret: String,
    /// Allocations one user (the part of the username after the colon) may hold at once.
    pub max_allocations_per_user: usize,
    /// Allocations the server holds at once.
    pub max_allocations: usize,
    /// Relay to peers on loopback and other special-purpose addresses (only for tests).
    pub allow_loopback_peers: bool,
}

const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a nonce stays fresh before the client is asked to take a new one (438).
const NONCE_LIFETIME: Duration = Duration::from_secs(600);
const MAX_PERMISSIONS: usize = 64;
const MAX_CHANNELS: usize = 64;
/// Largest datagram read; bigger ones are truncated by the kernel and then fail to decode.
const MAX_DATAGRAM: usize = 65_536;
const SOFTWARE: &[u8] = b"tidings-turn";

/// The TURN REST password for `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

struct Allocation {
    username: String,
    user: String,
    key: [u8; 16],
    relay: Arc<UdpSocket>,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    /// Channel number to (peer, expiry).
    channels: HashMap<u16, (SocketAddr, Instant)>,
    task: JoinHandle<()>,
}

impl Allocation {
    fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&peer)
            .is_some_and(|until| *until > now)
    }

    fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, (p, until))| *p == peer && *until > now)
            .map(|(n, _)| *n)
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    config: TurnConfig,
    socket: Arc<UdpSocket>,
    /// Keyed by the client's address (the 5-tuple, as there is one listening socket).
    allocations: Mutex<HashMap<SocketAddr, Allocation>>,
    nonce_key: [u8; 32],
}

/// A running embedded TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a peer address may be relayed to: not unspecified, multicast, broadcast,
/// link-local or (unless allowed) loopback.
fn peer_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_link_local() || v4.octets()[0] == 0),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

enum Reply {
    None,
    Send(Vec<u8>),
}

impl TurnServer {
    /// Binds the listening socket.
    pub async fn bind(config: TurnConfig) -> std::io::Result<TurnServer> {
        let socket = Arc::new(UdpSocket::bind(config.listen).await?);
        let mut nonce_key = [0u8; 32];
        getrandom_fill(&mut nonce_key);
        Ok(TurnServer {
            shared: Arc::new(Shared {
                config,
                socket,
                allocations: Mutex::new(HashMap::new()),
                nonce_key,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// Allocations held now (for tests and metrics).
    pub fn allocation_count(&self) -> usize {
        self.shared.allocations.lock().expect("turn lock").len()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let sweeper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    shared.sweep(Instant::now());
                }
            })
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        tokio::pin!(shutdown);
        loop {
            let (len, from) = tokio::select! {
                () = &mut shutdown => break,
                received = shared.socket.recv_from(&mut buf) => match received {
                    Ok(got) => got,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on some systems.
                        tracing::debug!(%e, "TURN socket receive error.");
                        continue;
                    }
                },
            };
            let datagram = &buf[..len];
            if let Reply::Send(bytes) = shared.handle(datagram, from).await
                && let Err(e) = shared.socket.send_to(&bytes, from).await
            {
                tracing::debug!(%e, %from, "Could not answer a TURN client.");
            }
        }
        sweeper.abort();
        shared.allocations.lock().expect("turn lock").clear();
    }
}

fn getrandom_fill(bytes: &mut [u8]) {
    use rand::RngCore;
    rand::rngs::OsRng.fill_bytes(bytes);
}

impl Shared {
    fn sweep(&self, now: Instant) {
        let mut allocations = self.allocations.lock().expect("turn lock");
        allocations.retain(|_, a| a.expires > now);
        for a in allocations.values_mut() {
            a.permissions.retain(|_, until| *until > now);
            a.channels.retain(|_, (_, until)| *until > now);
        }
    }

    fn nonce(&self) -> String {
        let ts = format!("{:016x}", unix_secs());
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.nonce_key).expect("any key");
        mac.update(ts.as_bytes());
        let tag = mac.finalize().into_bytes();
        let tag: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{ts}{tag}")
    }

    /// `Some(true)` for a fresh nonce of ours, `Some(false)` for an expired one, `None` for a
    /// forged one.
    fn nonce_fresh(&self, nonce: &str) -> Option<bool> {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return None;
        }
        let (ts, tag) = nonce.split_at(16);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.nonce_key).expect("any key");
        mac.update(ts.as_bytes());
        let expected: String = mac.finalize().into_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if expected != tag {
            return None;
        }
        let issued = u64::from_str_radix(ts, 16).ok()?;
        Some(unix_secs().saturating_sub(issued) < NONCE_LIFETIME.as_secs())
    }

    fn error(&self, request: &Message, code: u16, reason: &str, key: Option<&[u8]>) -> Reply {
        let mut builder = Builder::new(request.method, Class::Error, request.transaction_id)
            .add(attr::SOFTWARE, SOFTWARE)
            .add_error(code, reason);
        if code == 401 || code == 438 {
            builder = builder
                .add(attr::REALM, self.config.realm.as_bytes())
                .add(attr::NONCE, self.nonce().as_bytes());
        }
        Reply::Send(builder.finish(key, true))
    }

    /// Checks the long-term credential of a request. `Ok(key)` when it passes; otherwise the
    /// error reply to send.
    fn authenticate(&self, raw: &[u8], request: &Message) -> Result<(String, [u8; 16]), Reply> {
        let (Some(username), Some(realm), Some(nonce)) = (
            request.text(attr::USERNAME),
            request.text(attr::REALM),
            request.text(attr::NONCE),
        ) else {
            if request.has_integrity() {
                return Err(self.error(request, 400, "Bad Request", None));
            }
            return Err(self.error(request, 401, "Unauthorized", None));
        };
        if !request.has_integrity() {
            return Err(self.error(request, 400, "Bad Request", None));
        }
        match self.nonce_fresh(nonce) {
            Some(true) => {}
            Some(false) => return Err(self.error(request, 438, "Stale Nonce", None)),
            None => return Err(self.error(request, 401, "Unauthorized", None)),
        }
        if realm != self.config.realm {
            return Err(self.error(request, 401, "Unauthorized", None));
        }
        let expiry = username
            .split_once(':')
            .and_then(|(expiry, _)| expiry.parse::<u64>().ok());
        if expiry.is_none_or(|e| e < unix_secs()) {
            return Err(self.error(request, 401, "Unauthorized", None));
        }
        let password = rest_password(self.config.secret.as_bytes(), username);
        let key = stun::long_term_key(username, realm, &password);
        if !request.verify_integrity(raw, &key) {
            return Err(self.error(request, 401, "Unauthorized", None));
        }
        Ok((username.to_owned(), key))
    }

    async fn handle(self: &Arc<Self>, datagram: &[u8], from: SocketAddr) -> Reply {
        if !stun::is_stun(datagram) {
            self.relay_channel_data(datagram, from).await;
            return Reply::None;
        }
        let Ok(request) = stun::decode(datagram) else {
            return Reply::None;
        };
        if !request.verify_fingerprint(datagram) {
            return Reply::None;
        }
        match (request.class, request.method) {
            (Class::Request, method::BINDING) => Reply::Send(
                Builder::new(method::BINDING, Class::Success, request.transaction_id)
                    .add(attr::SOFTWARE, SOFTWARE)
                    .add_xor_address(attr::XOR_MAPPED_ADDRESS, from)
                    .finish(None, true),
            ),
            (Class::Indication, method::SEND) => {
                self.relay_send_indication(&request, from).await;
                Reply::None
            }
            (Class::Request, m)
                if matches!(
                    m,
                    method::ALLOCATE
                        | method::REFRESH
                        | method::CREATE_PERMISSION
                        | method::CHANNEL_BIND
                ) =>
            {
                if let Some(unknown) = unknown_required(&request) {
                    let mut value = Vec::new();
                    for kind in unknown {
                        value.extend_from_slice(&kind.to_be_bytes());
                    }
                    return Reply::Send(
                        Builder::new(m, Class::Error, request.transaction_id)
                            .add_error(420, "Unknown Attribute")
                            .add(attr::UNKNOWN_ATTRIBUTES, &value)
                            .finish(None, true),
                    );
                }
                let (username, key) = match self.authenticate(datagram, &request) {
                    Ok(found) => found,
                    Err(reply) => return reply,
                };
                match m {
                    method::ALLOCATE => self.allocate(&request, from, username, key).await,
                    method::REFRESH => self.refresh(&request, from, &username, key),
                    method::CREATE_PERMISSION => {
                        self.create_permission(&request, from, &username, key)
                    }
                    _ => self.channel_bind(&request, from, &username, key),
                }
            }
            // Responses, and indications or requests of other methods, are ignored.
            _ => Reply::None,
        }
    }

    fn success(&self, request: &Message) -> Builder {
        Builder::new(request.method, Class::Success, request.transaction_id)
            .add(attr::SOFTWARE, SOFTWARE)
    }

    fn lifetime_of(request: &Message) -> Duration {
        request
            .get(attr::LIFETIME)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(|v| Duration::from_secs(u64::from(u32::from_be_bytes(v))))
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME)
    }

    async fn allocate(
        self: &Arc<Self>,
        request: &Message,
        from: SocketAddr,
        username: String,
        key: [u8; 16],
    ) -> Reply {
        let k = Some(&key[..]);
        if request
            .get(attr::REQUESTED_TRANSPORT)
            .and_then(|v| v.first())
            != Some(&17)
        {
            return self.error(request, 442, "Unsupported Transport Protocol", k);
        }
        if let Some(family) = request.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let wanted_v6 = family.first() == Some(&2);
            if wanted_v6 != self.config.relay_ip.is_ipv6() {
                return self.error(request, 440, "Address Family not Supported", k);
            }
        }
        let user = username
            .split_once(':')
            .map_or(String::new(), |(_, u)| u.to_owned());
        {
            let allocations = self.allocations.lock().expect("turn lock");
            if allocations.contains_key(&from) {
                return self.error(request, 437, "Allocation Mismatch", k);
            }
            if allocations.values().filter(|a| a.user == user).count()
                >= self.config.max_allocations_per_user
            {
                return self.error(request, 486, "Allocation Quota Reached", k);
            }
            if allocations.len() >= self.config.max_allocations {
                return self.error(request, 508, "Insufficient Capacity", k);
            }
        }
        // EVEN-PORT asks for an even relay port (RTP); reserving the next one (its R bit) is
        // not offered, so the bit is ignored, as RFC 8656 allows a server that has no port.
        let even = request.get(attr::EVEN_PORT).is_some();
        let Some(relay) = self.bind_relay(even).await else {
            return self.error(request, 508, "Insufficient Capacity", k);
        };
        let relay = Arc::new(relay);
        let Ok(mut relay_addr) = relay.local_addr() else {
            return self.error(request, 508, "Insufficient Capacity", k);
        };
        if let Some(ip) = self.config.relay_advertise {
            relay_addr.set_ip(ip);
        }
        let lifetime = Self::lifetime_of(request).max(Duration::from_secs(1));
        let task = tokio::spawn(relay_from_peers(self.clone(), relay.clone(), from));
        let allocation = Allocation {
            username,
            user,
            key,
            relay,
            expires: Instant::now() + lifetime,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            task,
        };
        {
            let mut allocations = self.allocations.lock().expect("turn lock");
            // Another request from the same address may have won while the port was bound.
            if allocations.contains_key(&from) {
                return self.error(request, 437, "Allocation Mismatch", k);
            }
            allocations.insert(from, allocation);
        }
        tracing::debug!(%from, %relay_addr, "TURN allocation created.");
        Reply::Send(
            self.success(request)
                .add_xor_address(attr::XOR_RELAYED_ADDRESS, relay_addr)
                .add_u32(attr::LIFETIME, lifetime.as_secs() as u32)
                .add_xor_address(attr::XOR_MAPPED_ADDRESS, from)
                .finish(k, true),
        )
    }

    /// Binds a relay socket on a port of the configured range, trying from a random start.
    async fn bind_relay(&self, even: bool) -> Option<UdpSocket> {
        let (low, high) = self.config.relay_ports;
        let span = u32::from(high.saturating_sub(low)) + 1;
        let mut start = [0u8; 4];
        getrandom_fill(&mut start);
        let start = u32::from_be_bytes(start) % span;
        // Bounded: at most 128 attempts (64 for even ports), so a full range answers quickly with 508.
        for i in 0..span.min(128) {
            let port = low + ((start + i) % span) as u16;
            if even && !port.is_multiple_of(2) {
                continue;
            }
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(self.config.relay_ip, port)).await {
                return Some(socket);
            }
        }
        None
    }

    /// Runs `f` on the client's allocation after checking the request's username matches it.
    fn with_allocation(
        &self,
        request: &Message,
        from: SocketAddr,
        username: &str,
        key: [u8; 16],
        f: impl FnOnce(&mut Allocation) -> Result<Builder, (u16, &'static str)>,
    ) -> Reply {
        let k = Some(&key[..]);
        let mut allocations = self.allocations.lock().expect("turn lock");
        let Some(allocation) = allocations.get_mut(&from) else {
            drop(allocations);
            return self.error(request, 437, "Allocation Mismatch", k);
        };
        if allocation.username != username || allocation.key != key {
            drop(allocations);
            return self.error(request, 441, "Wrong Credentials", k);
        }
        match f(allocation) {
            Ok(builder) => Reply::Send(builder.finish(k, true)),
            Err((code, reason)) => {
                drop(allocations);
                self.error(request, code, reason, k)
            }
        }
    }

    fn refresh(&self, request: &Message, from: SocketAddr, username: &str, key: [u8; 16]) -> Reply {
        let lifetime = Self::lifetime_of(request);
        let reply = self.with_allocation(request, from, username, key, |a| {
            a.expires = Instant::now() + lifetime;
            Ok(self
                .success(request)
                .add_u32(attr::LIFETIME, lifetime.as_secs() as u32))
        });
        if lifetime.is_zero() {
            self.allocations.lock().expect("turn lock").remove(&from);
        }
        reply
    }

    fn create_permission(
        &self,
        request: &Message,
        from: SocketAddr,
        username: &str,
        key: [u8; 16],
    ) -> Reply {
        let peers: Option<Vec<SocketAddr>> = request
            .all(attr::XOR_PEER_ADDRESS)
            .map(|v| stun::decode_xor_address(v, &request.transaction_id))
            .collect();
        let peers = match peers {
            Some(peers) if !peers.is_empty() => peers,
            _ => return self.error(request, 400, "Bad Request", Some(&key)),
        };
        if peers
            .iter()
            .any(|p| !peer_allowed(p.ip(), self.config.allow_loopback_peers))
        {
            return self.error(request, 403, "Forbidden", Some(&key));
        }
        self.with_allocation(request, from, username, key, |a| {
            let now = Instant::now();
            for peer in &peers {
                if !a.permissions.contains_key(&peer.ip()) && a.permissions.len() >= MAX_PERMISSIONS
                {
                    return Err((508, "Insufficient Capacity"));
                }
                a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
            }
            Ok(self.success(request))
        })
    }

    fn channel_bind(
        &self,
        request: &Message,
        from: SocketAddr,
        username: &str,
        key: [u8; 16],
    ) -> Reply {
        let channel = request
            .get(attr::CHANNEL_NUMBER)
            .filter(|v| v.len() == 4)
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = request.xor_address(attr::XOR_PEER_ADDRESS);
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return self.error(request, 400, "Bad Request", Some(&key));
        };
        if !(0x4000..=0x7FFF).contains(&channel) {
            return self.error(request, 400, "Bad Request", Some(&key));
        }
        if !peer_allowed(peer.ip(), self.config.allow_loopback_peers) {
            return self.error(request, 403, "Forbidden", Some(&key));
        }
        self.with_allocation(request, from, username, key, |a| {
            let now = Instant::now();
            // A channel stays with its peer, and a peer with its channel, while bound.
            if let Some((bound, _)) = a.channels.get(&channel)
                && *bound != peer
            {
                return Err((400, "Bad Request"));
            }
            if a.channel_of(peer, now).is_some_and(|n| n != channel) {
                return Err((400, "Bad Request"));
            }
            if !a.channels.contains_key(&channel) && a.channels.len() >= MAX_CHANNELS {
                return Err((508, "Insufficient Capacity"));
            }
            a.channels.insert(channel, (peer, now + CHANNEL_LIFETIME));
            a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
            Ok(self.success(request))
        })
    }

    /// The relay socket of the client's allocation, if the peer is permitted.
    fn relay_for(&self, from: SocketAddr, peer: SocketAddr) -> Option<Arc<UdpSocket>> {
        let allocations = self.allocations.lock().expect("turn lock");
        let allocation = allocations.get(&from)?;
        allocation
            .permitted(peer.ip(), Instant::now())
            .then(|| allocation.relay.clone())
    }

    async fn relay_send_indication(&self, request: &Message, from: SocketAddr) {
        let (Some(peer), Some(data)) = (
            request.xor_address(attr::XOR_PEER_ADDRESS),
            request.get(attr::DATA),
        ) else {
            return;
        };
        if let Some(relay) = self.relay_for(from, peer) {
            let _ = relay.send_to(data, peer).await;
        }
    }

    async fn relay_channel_data(&self, datagram: &[u8], from: SocketAddr) {
        let Some((channel, data)) = stun::decode_channel_data(datagram) else {
            return;
        };
        let target = {
            let allocations = self.allocations.lock().expect("turn lock");
            allocations.get(&from).and_then(|a| {
                let now = Instant::now();
                let (peer, until) = a.channels.get(&channel)?;
                (*until > now && a.permitted(peer.ip(), now)).then(|| (a.relay.clone(), *peer))
            })
        };
        if let Some((relay, peer)) = target {
            let _ = relay.send_to(data, peer).await;
        }
    }
}

/// Comprehension-required attributes (below 0x8000) this server does not process.
fn unknown_required(request: &Message) -> Option<Vec<u16>> {
    const KNOWN: &[u16] = &[
        attr::USERNAME,
        attr::MESSAGE_INTEGRITY,
        attr::REALM,
        attr::NONCE,
        attr::LIFETIME,
        attr::XOR_PEER_ADDRESS,
        attr::CHANNEL_NUMBER,
        attr::REQUESTED_TRANSPORT,
        attr::REQUESTED_ADDRESS_FAMILY,
        attr::DONT_FRAGMENT,
        attr::EVEN_PORT,
        attr::DATA,
    ];
    let unknown: Vec<u16> = request
        .attributes
        .iter()
        .map(|a| a.kind)
        .filter(|k| *k < 0x8000 && !KNOWN.contains(k))
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}

/// Forwards what peers send to an allocation's relayed address to its client, as ChannelData
/// when the peer has a channel and as a Data indication otherwise; data from peers without a
/// permission is dropped.
async fn relay_from_peers(shared: Arc<Shared>, relay: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, peer)) = relay.recv_from(&mut buf).await else {
            // An ICMP error from an earlier send; pause so a persistent one cannot spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let framed = {
            let allocations = shared.allocations.lock().expect("turn lock");
            let Some(allocation) = allocations.get(&client) else {
                return;
            };
            let now = Instant::now();
            if !allocation.permitted(peer.ip(), now) {
                continue;
            }
            match allocation.channel_of(peer, now) {
                Some(channel) => stun::encode_channel_data(channel, &buf[..len]),
                None => {
                    let mut id = [0u8; 12];
                    getrandom_fill(&mut id);
                    Builder::new(method::DATA, Class::Indication, id)
                        .add_xor_address(attr::XOR_PEER_ADDRESS, peer)
                        .add(attr::DATA, &buf[..len])
                        .finish(None, false)
                }
            }
        };
        let _ = shared.socket.send_to(&framed, client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's `hmac` and `base64` modules.
    #[test]
    fn rest_password_matches_a_reference() {
        assert_eq!(
            rest_password(b"north", "1764243600:42"),
            "KBQZUm/ggKV9n+ilmSb6IRc+nzs="
        );
    }

    #[test]
    fn special_peers_are_refused() {
        for (ip, loopback_ok, allowed) in [
            ("127.0.0.1", false, false),
            ("127.0.0.1", true, true),
            ("::1", false, false),
            ("0.0.0.0", true, false),
            ("224.0.0.1", true, false),
            ("169.254.1.1", true, false),
            ("255.255.255.255", true, false),
            ("fe80::1", true, false),
            ("192.0.2.7", false, true),
            ("2001:db8::1", false, true),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(peer_allowed(ip, loopback_ok), allowed, "{ip} {loopback_ok}");
        }
    }
}
