//! Settings of the domain core. The binary reads them from file, environment and flags;
//! the doc comments here become the comments of `tidings.example.toml`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may create an account through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Anyone who can reach the server.
    Open,
    /// Only holders of an invite code (`tidings admin create-invite`).
    Invite,
    /// Nobody; operators create accounts with `tidings admin create-user`.
    Closed,
}

/// What happens to a deleted account's messages: "keep" (shown as from a deleted user) or
/// "remove" (each replaced by a `deleted` tombstone in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeletedUserMessages {
    /// They stay, shown as from a deleted user.
    Keep,
    /// Their content is replaced by a `deleted` tombstone (each keeps its place in the order).
    Remove,
}

/// Accounts and sign-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Who may register: "open", "invite" or "closed".
    pub registration: RegistrationMode,
    /// Minimum password length in characters.
    pub min_password_length: u32,
    /// Argon2id memory cost in KiB (OWASP recommends at least 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// What deleting an account does to its messages: "keep" or "remove".
    pub deleted_user_messages: DeletedUserMessages,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            registration: RegistrationMode::Open,
            min_password_length: 10,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            deleted_user_messages: DeletedUserMessages::Keep,
        }
    }
}

/// OAuth token lifetimes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of access tokens in seconds. Short, because they cannot be recalled.
    pub access_ttl_secs: u64,
    /// Lifetime of refresh tokens in seconds; each use rotates the token.
    pub refresh_ttl_secs: u64,
    /// The `iss` claim and the issuer in the authorization server metadata. Empty means
    /// "derived from the listen address".
    pub issuer: String,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            issuer: String::new(),
        }
    }
}

/// Limits that protect the server and its users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message body in bytes, measured as its JSON encoding.
    pub max_message_bytes: usize,
    /// Largest device signal payload in bytes, measured as its JSON encoding (`device_signal`
    /// frames; XMPP IQs between users' resources travel as these).
    pub max_device_signal_bytes: usize,
    /// Largest group, owner included.
    pub max_group_members: u32,
    /// Largest page of history a client may ask for.
    pub max_history_page: u32,
    /// Messages read from the store per page while syncing a connection; bounds the memory
    /// one syncing connection holds.
    pub sync_page: u32,
    /// Events queued for one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Requests one connection may have in flight before the server stops reading from it.
    pub max_in_flight: usize,
    /// Messages committed together at most (group commit).
    pub max_commit_batch: usize,
    /// Conversations whose member lists are cached in memory.
    pub member_cache_entries: usize,
    /// Directory searches one user may make per minute (after a burst of ten); 0 turns the
    /// limit off. Keeps the directory from being used to list every account.
    pub directory_searches_per_minute: u32,
    /// Messages one user may send per minute, across all their devices, after a burst of
    /// `message_burst`; 0 turns the limit off.
    pub messages_per_minute: u32,
    /// Messages one user may send at once before `messages_per_minute` applies.
    pub message_burst: u32,
    /// Users one user may add to groups or invite per minute (after a burst of 100, enough to
    /// create a large group at once); 0 turns the limit off.
    pub group_invitations_per_minute: u32,
    /// Message searches one user may make per minute (after a burst of 20); 0 turns the limit
    /// off.
    pub searches_per_minute: u32,
    /// Friend requests one user may send per hour (after a burst of up to five); 0 turns the
    /// limit off. Keeps friend requests from being used for spam.
    pub friend_requests_per_hour: u32,
    /// Password sign-in attempts one network address (an IPv6 /64) may make per minute (up to
    /// this many at once); 0 turns the limit off. Behind a reverse proxy every client shares the
    /// proxy's address, so raise it there.
    pub sign_in_attempts_per_address_per_minute: u32,
    /// Second-factor codes (TOTP or recovery) tried per account per minute, wherever a code
    /// is checked (sign-in, confirming, disabling, deleting); a minute holds at most this many.
    pub second_factor_attempts_per_user_per_minute: u32,
    /// Largest item of a user's stored XML (an XMPP PEP item, private XML storage, the extra
    /// fields of a vCard), in bytes as serialized.
    pub max_user_xml_bytes: usize,
    /// Items of stored XML one user may hold across all their nodes.
    pub max_user_xml_items: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 * 1024,
            max_device_signal_bytes: 64 * 1024,
            max_group_members: 10_000,
            max_history_page: 500,
            sync_page: 256,
            outbound_queue: 1024,
            max_in_flight: 256,
            max_commit_batch: 512,
            member_cache_entries: 100_000,
            directory_searches_per_minute: 30,
            messages_per_minute: 600,
            message_burst: 100,
            group_invitations_per_minute: 20,
            searches_per_minute: 60,
            friend_requests_per_hour: 30,
            sign_in_attempts_per_address_per_minute: 20,
            second_factor_attempts_per_user_per_minute: 5,
            max_user_xml_bytes: 64 * 1024,
            max_user_xml_items: 256,
        }
    }
}

/// The audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an audit entry is kept; 0 keeps entries forever. Pruning leaves a checkpoint signed
    /// by the server key, so `tidings admin audit verify` still checks what remains.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 365,
        }
    }
}

/// Rich messages: edits, recalls, reactions, and how long messages are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    /// Seconds after sending during which a sender may edit a message; 0 allows edits at any
    /// time.
    pub edit_window_secs: u64,
    /// Seconds after sending during which a sender may recall (delete for everyone) a message;
    /// 0 allows it at any time. Group moderators may recall members' messages at any time.
    pub recall_window_secs: u64,
    /// Different reaction keys one message may carry.
    pub max_reaction_keys: usize,
    /// Messages older than this many days are deleted from every conversation; 0 keeps them
    /// forever. Conversations may set a shorter retention of their own.
    pub retention_days: u32,
    /// Seconds between retention passes.
    pub retention_interval_secs: u64,
    /// Messages deleted per retention transaction; small batches keep the writer free for
    /// live traffic.
    pub retention_batch: u32,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            edit_window_secs: 2 * 24 * 3600,
            recall_window_secs: 24 * 3600,
            max_reaction_keys: 50,
            retention_days: 0,
            retention_interval_secs: 3600,
            retention_batch: 500,
        }
    }
}

/// Voice and video calls (docs/calls.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// Seconds a call rings before it counts as missed.
    pub ring_timeout_secs: u64,
    /// Seconds a device in a call may stay disconnected from the server (say, while its
    /// network changes) before its call is ended for it.
    pub reconnect_grace_secs: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            ring_timeout_secs: 45,
            reconnect_grace_secs: 20,
        }
    }
}

/// ICE servers offered to call clients (docs/calls.md, "TURN").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// STUN URLs offered to clients, for example "stun:stun.example.org:3478".
    pub stun_urls: Vec<String>,
    /// TURN URLs offered to clients with credentials of the TURN REST scheme, for example
    /// "turn:turn.example.org:3478?transport=udp" of a coturn started with `use-auth-secret`
    /// and `static-auth-secret` set to `shared_secret`.
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN servers. Empty: generated on first start and kept in
    /// `turn-secret` in the data directory (mode 0600); nodes of one deployment must share
    /// it, so set it (preferably as TIDINGS_RTC_SHARED_SECRET) when running several.
    pub shared_secret: String,
    /// Seconds a TURN credential stays valid.
    pub credential_ttl_secs: u64,
    /// Run the embedded STUN/TURN server (UDP), offered to clients before `stun_urls` and
    /// `turn_urls`.
    pub turn_enabled: bool,
    /// Where the embedded TURN server listens (UDP).
    pub turn_listen: std::net::SocketAddr,
    /// The address clients reach the embedded TURN server at, used in its URLs and in the
    /// relayed addresses it hands out. Empty: the listen address when it names one, else
    /// 127.0.0.1 (set this on any server that others reach over a network).
    pub turn_public_ip: String,
    /// The lowest UDP port of relayed addresses.
    pub turn_relay_port_min: u16,
    /// The highest UDP port of relayed addresses.
    pub turn_relay_port_max: u16,
    /// The realm of the embedded TURN server's long-term credentials.
    pub turn_realm: String,
    /// Relayed addresses one user may hold at once (a call uses one or two per device).
    pub turn_max_allocations_per_user: u32,
    /// Relayed addresses the embedded TURN server holds at once.
    pub turn_max_allocations: u32,
    /// Let the embedded TURN server relay to peers on loopback addresses. Only for tests and
    /// single-host setups: otherwise a relay could reach services bound to the host's loopback.
    pub turn_allow_loopback_peers: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            shared_secret: String::new(),
            credential_ttl_secs: 24 * 3600,
            turn_enabled: true,
            turn_listen: std::net::SocketAddr::from(([0, 0, 0, 0], 3478)),
            turn_public_ip: String::new(),
            turn_relay_port_min: 49152,
            turn_relay_port_max: 65535,
            turn_realm: "tidings".into(),
            turn_max_allocations_per_user: 10,
            turn_max_allocations: 1000,
            turn_allow_loopback_peers: false,
        }
    }
}

/// Everything the core is configured with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    pub accounts: AccountsConfig,
    pub tokens: TokensConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub messages: MessagesConfig,
    pub push: crate::push::PushConfig,
    pub calls: CallsConfig,
    pub rtc: RtcConfig,
}
