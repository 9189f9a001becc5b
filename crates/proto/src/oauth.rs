//! Wire types of the OAuth authorization server beyond the token response: client registration
//! by administrators (`/api/v1/admin/oauth-clients`) and token introspection (RFC 7662).

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
