//! What the store keeps for the OAuth authorization server: registered clients (and the bot
//! account a client-credentials client acts as), pending authorization codes, pending device
//! authorizations (RFC 8628), and which client a device was signed in through.

use tidings_proto::{DeviceId, UserId};

/// An OAuth client registered by an administrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClientRecord {
    /// The public identifier the client sends as `client_id`.
    pub client_id: String,
    /// Shown to users on the consent page.
    pub name: String,
    /// SHA-256 of the client secret for confidential clients; `None` for public clients, which
    /// authenticate nothing and must use PKCE.
    pub secret_hash: Option<[u8; 32]>,
    /// The redirect URIs, compared exactly (no prefix or pattern matching).
    pub redirect_uris: Vec<String>,
    /// The scopes the client may ask for, space-separated.
    pub scope: String,
    pub created_at: i64,
    /// For a bot client (client credentials grant): the bot account it acts as and the one
    /// device its tokens are issued to. Both are created with the client, in one transaction.
    pub bot: Option<BotBinding>,
}

/// The account and device a bot client acts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BotBinding {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

/// Where a device authorization (RFC 8628) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAuthorizationState {
    /// The user has not answered yet.
    Pending,
    /// The user signed in as this account and approved.
    Approved(UserId),
    /// The user denied.
    Denied,
}

/// A device authorization request (RFC 8628 section 3.1) waiting for the user. Only the
/// SHA-256 of the device code is kept; the user code is kept as normalized (upper case, no
/// separator) because the user types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAuthorizationRecord {
    pub device_code_hash: [u8; 32],
    pub user_code: String,
    pub client_id: String,
    /// The scope the user is asked to grant, space-separated.
    pub scope: String,
    pub expires_at: i64,
    /// The least number of seconds between two polls; grows by 5 on each poll that comes too
    /// early (RFC 8628 section 3.5, `slow_down`).
    pub interval_secs: i64,
    /// When the client last polled, in milliseconds; `None` before the first poll.
    pub last_polled_at: Option<i64>,
    pub state: DeviceAuthorizationState,
}

/// An authorization code waiting to be exchanged at the token endpoint. Only the SHA-256 of the
/// code is kept; it is single-use and short-lived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCodeRecord {
    pub code_hash: [u8; 32],
    pub client_id: String,
    pub user_id: UserId,
    /// The exact `redirect_uri` of the authorization request; the token request must repeat it.
    pub redirect_uri: String,
    /// The PKCE S256 challenge (base64url of the SHA-256 of the verifier).
    pub code_challenge: String,
    /// The scope the user consented to.
    pub scope: String,
    pub expires_at: i64,
}

/// How a device was signed in through a registered client, and with which scope. Devices
/// without one are first-party sign-ins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGrant {
    pub client_id: String,
    pub scope: String,
}
