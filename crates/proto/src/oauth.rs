//! Wire types of the OAuth authorization server beyond the token response: client registration
//! by administrators (`/api/v1/admin/oauth-clients`), token introspection (RFC 7662) and the
//! device authorization response (RFC 8628).

use crate::UserId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/admin/oauth-clients`: registers a third-party application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOAuthClient {
    /// Shown to users on the consent page (1 to 64 characters).
    pub name: String,
    /// A confidential client (a server-side application) gets a secret, shown once; a public
    /// client (a mobile or single-page application) gets none and must use PKCE.
    #[serde(default)]
    pub confidential: bool,
    /// Exact redirect URIs (absolute `https://`, or `http://` on a loopback address); at most 10.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes the client may ask for, space-separated; defaults to every non-admin scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Makes a bot client (client credentials grant): the server creates a bot account with
    /// this username, bound to the client, and the client's tokens act as that account. A bot
    /// client must be confidential and has no redirect URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_username: Option<String>,
}

/// A registered OAuth client (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OAuthClient {
    pub client_id: String,
    pub name: String,
    pub confidential: bool,
    pub redirect_uris: Vec<String>,
    /// The scopes the client may ask for, space-separated.
    pub scope: String,
    pub created_at: i64,
    /// For a bot client, the account its tokens act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_user_id: Option<UserId>,
}

/// The answer to a registration: the client and, for a confidential client, its secret. The
/// server keeps only a hash of the secret, so this is the only time it is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OAuthClientCreated {
    pub client: OAuthClient,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// `GET /api/v1/admin/oauth-clients`: a page in client id order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OAuthClientList {
    pub clients: Vec<OAuthClient>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// RFC 7662 token introspection response. An inactive token is `{"active": false}` and
/// nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Always `Bearer` for an active token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The user id, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
}

/// RFC 8628 section 3.2: the answer of `POST /oauth/device_authorization`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceAuthorizationResponse {
    /// Secret; the device polls the token endpoint with it.
    pub device_code: String,
    /// What the user types on the verification page (`XXXX-XXXX`, letters that cannot be
    /// confused with each other or with digits).
    pub user_code: String,
    pub verification_uri: String,
    /// The verification page with the user code filled in (for a QR code or a link).
    pub verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// The least number of seconds between polls of the token endpoint.
    pub interval: u64,
}

/// An external OpenID Connect provider people may sign in with (`GET /api/v1/oidc/providers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OidcProvider {
    /// Used in URLs: `/api/v1/oidc/providers/{id}/start`.
    pub id: String,
    /// What a "Sign in with …" button shows.
    pub display_name: String,
}

/// The configured providers, in configuration order (empty when single sign-on is off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OidcProviderList {
    pub providers: Vec<OidcProvider>,
}

/// `POST /api/v1/oidc/providers/{id}/link`: where to send the browser to link an identity of
/// that provider to the caller's account. The response also sets the cookie that binds the
/// flow to this browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OidcLinkStart {
    pub authorize_url: String,
}

/// `POST /api/v1/oidc/exchange`: trades the one-time code that the sign-in callback put in
/// the web app's URL fragment (`#oidc_code=...`) for tokens. A code works once, within 60 s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcExchangeRequest {
    pub code: String,
}
