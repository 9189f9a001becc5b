//! What the store keeps for the OAuth authorization server: registered clients, pending
//! authorization codes, and which client a device was signed in through.

use tidings_proto::UserId;

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
