//! The OAuth 2.0 authorization server beyond first-party sign-in: clients registered by an
//! administrator, the authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636,
//! S256 only), and token introspection (RFC 7662).
//!
//! The transport renders the sign-in and consent page and speaks the protocol; everything it
//! decides with (is this client known, is this redirect URI registered, may it have this scope,
//! does the verifier match the challenge) is here, and the scope rules are in
//! [`crate::policy`].

use crate::Core;
use crate::admin::AdminActor;
use crate::audit::kinds;
use crate::error::{CoreError, CoreResult};
use crate::policy::{self, AdminAction};
use crate::tokens;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use tidings_proto::ErrorCode;
use tidings_proto::oauth::{
    Introspection, NewOAuthClient, OAuthClient, OAuthClientCreated, OAuthClientList,
};
use tidings_proto::rest::TokenResponse;
use tidings_store::{AuthorizationCodeRecord, DeviceGrant, OAuthClientRecord, StoreError};

/// How long an authorization code may wait before it is exchanged (RFC 6749 recommends at most
/// ten minutes; a client exchanges it at once).
pub const CODE_TTL_MS: i64 = 60_000;
/// Largest page of `GET /api/v1/admin/oauth-clients`.
pub const MAX_CLIENT_PAGE: u32 = 200;
/// At most this many redirect URIs per client.
const MAX_REDIRECT_URIS: usize = 10;

/// The credentials a client presented at the token or introspection endpoint (HTTP Basic or
/// form fields; the transport does not care which).
#[derive(Clone, Debug)]
pub struct ClientAuth {
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// The parameters of an authorization request (`/oauth/authorize`), as received.
#[derive(Clone, Debug, Default)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// A valid authorization request: what the consent page shows and the approval binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub client_id: String,
    /// The client's name, for the consent page.
    pub client_name: String,
    pub redirect_uri: String,
    /// The scope the user is asked to grant, space-separated.
    pub scope: String,
    pub code_challenge: String,
    pub state: Option<String>,
}

/// Why an authorization request cannot go on (RFC 6749 section 4.1.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI is unknown, so the user must not be sent anywhere: the page
    /// shows this message instead.
    Page(String),
    /// Sent back to the client's redirect URI as `error`, `error_description` and `state`.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

fn client_view(client: &OAuthClientRecord) -> OAuthClient {
    OAuthClient {
        client_id: client.client_id.clone(),
        name: client.name.clone(),
        confidential: client.secret_hash.is_some(),
        redirect_uris: client.redirect_uris.clone(),
        scope: client.scope.clone(),
        created_at: client.created_at,
    }
}

/// A redirect URI a client may register: absolute, `https`, or `http` on a loopback address
/// (RFC 8252 native apps), no fragment (RFC 6749 section 3.1.2), no spaces.
pub fn valid_redirect_uri(uri: &str) -> bool {
    if uri.len() > 512 || uri.contains('#') || uri.chars().any(|c| c.is_whitespace()) {
        return false;
    }
    let host_start = if let Some(rest) = uri.strip_prefix("https://") {
        rest
    } else if let Some(rest) = uri.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let loopback = host.starts_with("127.")
            || host == "localhost"
            || host.starts_with("localhost:")
            || host.starts_with("[::1]");
        if !loopback {
            return false;
        }
        rest
    } else {
        return false;
    };
    !host_start.is_empty() && !host_start.starts_with('/')
}

/// Whether `verifier` hashes to `challenge` under S256 (RFC 7636 section 4.6). The verifier
/// must be 43 to 128 characters of the unreserved set (section 4.1).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && B64.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

fn invalid_client() -> CoreError {
    CoreError::unauthenticated("client authentication failed")
}

fn invalid_grant(message: &str) -> CoreError {
    CoreError::new(ErrorCode::InvalidCredentials, message)
}

impl Core {
    // --- Registration (administrators, or the operator at the command line) -----------------

    /// Registers a client. A confidential client's secret is returned here once; only its hash
    /// is stored.
    pub async fn add_oauth_client(
        &self,
        actor: AdminActor<'_>,
        req: NewOAuthClient,
    ) -> CoreResult<OAuthClientCreated> {
        let acting = self
            .authorize_admin(actor, AdminAction::ManageOAuthClients, None)
            .await?;
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(CoreError::invalid("name must be 1 to 64 characters"));
        }
        if req.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(CoreError::invalid("at most 10 redirect URIs"));
        }
        if let Some(bad) = req.redirect_uris.iter().find(|u| !valid_redirect_uri(u)) {
            return Err(CoreError::invalid(format!(
                "redirect URI `{}` must be absolute https, or http on a loopback address, \
                 without a fragment",
                bad.chars().take(80).collect::<String>()
            )));
        }
        let scope = policy::grant_scope(req.scope.as_deref(), policy::USER_SCOPES)
            .or_else(|_| {
                // An administrator may let a client ask for `admin` too.
                policy::grant_scope(req.scope.as_deref(), &policy::SCOPES.join(" "))
            })
            .map_err(|e| CoreError::invalid(e.message))?;
        let secret = req.confidential.then(tokens::random_token);
        // 128 random bits: ids are public, they only need to be unique and unguessable enough
        // not to invite enumeration.
        let client_id = tokens::random_token()[..22].to_owned();
        let record = OAuthClientRecord {
            client_id: client_id.clone(),
            name,
            secret_hash: secret.as_deref().map(tokens::hash_token),
            redirect_uris: req.redirect_uris,
            scope,
            created_at: self.now_ms(),
        };
        let mut entry = acting.entry(self, kinds::OAUTH_CLIENT_ADD, None);
        entry.detail = serde_json::json!({ "client_id": client_id, "name": record.name });
        self.inner
            .store
            .create_oauth_client(record.clone(), entry)
            .await?;
        tracing::info!(%client_id, "OAuth client registered.");
        Ok(OAuthClientCreated {
            client: client_view(&record),
            client_secret: secret,
        })
    }

    /// A page of registered clients in id order.
    pub async fn oauth_clients(
        &self,
        actor: AdminActor<'_>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> CoreResult<OAuthClientList> {
        self.authorize_admin(actor, AdminAction::ManageOAuthClients, None)
            .await?;
        let limit = limit.unwrap_or(MAX_CLIENT_PAGE).clamp(1, MAX_CLIENT_PAGE);
        let clients = self.inner.store.oauth_clients(after, limit).await?;
        let next_after = (clients.len() == limit as usize)
            .then(|| clients.last().map(|c| c.client_id.clone()))
            .flatten();
        Ok(OAuthClientList {
            clients: clients.iter().map(client_view).collect(),
            next_after,
        })
    }

    /// Removes a client and signs out every device signed in through it.
    pub async fn remove_oauth_client(
        &self,
        actor: AdminActor<'_>,
        client_id: &str,
    ) -> CoreResult<usize> {
        let acting = self
            .authorize_admin(actor, AdminAction::ManageOAuthClients, None)
            .await?;
        let mut entry = acting.entry(self, kinds::OAUTH_CLIENT_REMOVE, None);
        entry.detail = serde_json::json!({ "client_id": client_id });
        let revoked = self
            .inner
            .store
            .delete_oauth_client(client_id, self.now_ms(), entry)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => CoreError::not_found("OAuth client"),
                other => other.into(),
            })?;
        for (user, device) in &revoked {
            self.announce_revoked(*user, *device).await;
        }
        tracing::info!(%client_id, devices = revoked.len(), "OAuth client removed.");
        Ok(revoked.len())
    }

    // --- Client authentication ------------------------------------------------------------

    /// Authenticates a client at the token or introspection endpoint: a confidential client
    /// must present its secret; a public client presents only its id and must not claim a
    /// secret.
    pub async fn authenticate_client(&self, auth: &ClientAuth) -> CoreResult<OAuthClientRecord> {
        let client = self
            .inner
            .store
            .oauth_client(&auth.client_id)
            .await?
            .ok_or_else(invalid_client)?;
        match (&client.secret_hash, &auth.client_secret) {
            (Some(hash), Some(secret)) if tokens::hash_token(secret) == *hash => Ok(client),
            (None, None) => Ok(client),
            _ => Err(invalid_client()),
        }
    }

    /// A refresh of a device signed in through a registered client: the client that presents
    /// the token must be that client (authenticated when confidential).
    pub(crate) async fn check_refreshing_client(
        &self,
        grant: &DeviceGrant,
        auth: Option<&ClientAuth>,
    ) -> CoreResult<()> {
        let client = self
            .inner
            .store
            .oauth_client(&grant.client_id)
            .await?
            .ok_or_else(|| invalid_grant("the client of this token was removed"))?;
        let Some(auth) = auth else {
            return if client.secret_hash.is_some() {
                Err(invalid_client())
            } else {
                Ok(())
            };
        };
        if auth.client_id != grant.client_id {
            return Err(invalid_grant("the token was issued to another client"));
        }
        self.authenticate_client(auth).await.map(drop)
    }

    // --- Authorization code with PKCE -----------------------------------------------------

    /// Checks an authorization request. Errors that concern the client or its redirect URI are
    /// shown on the page; the others go back to the client.
    pub async fn validate_authorization(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<Authorization, AuthorizeError> {
        let Some(client_id) = req.client_id.as_deref().filter(|s| !s.is_empty()) else {
            return Err(AuthorizeError::Page("the request names no client".into()));
        };
        let client = match self.inner.store.oauth_client(client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => return Err(AuthorizeError::Page("this client is not registered".into())),
            Err(e) => {
                tracing::error!(%e, "Could not read an OAuth client.");
                return Err(AuthorizeError::Page("the server failed; try again".into()));
            }
        };
        // RFC 6749 section 3.1.2.3: with several registered URIs the request must name one;
        // whichever it names must match one exactly.
        let redirect_uri = match req.redirect_uri.as_deref() {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            _ => {
                return Err(AuthorizeError::Page(
                    "the redirect URI is not registered for this client".into(),
                ));
            }
        };
        let back = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: req.state.clone(),
        };
        if req.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        let Some(challenge) = req.code_challenge.as_deref() else {
            return Err(back("invalid_request", "code_challenge (PKCE) is required"));
        };
        if req.code_challenge_method.as_deref() != Some("S256") {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256 (plain is refused)",
            ));
        }
        if challenge.len() != 43 || B64.decode(challenge).is_err() {
            return Err(back(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the verifier",
            ));
        }
        let scope = match policy::grant_scope(req.scope.as_deref(), &client.scope) {
            Ok(scope) => scope,
            Err(e) => return Err(back("invalid_scope", &e.message)),
        };
        Ok(Authorization {
            client_id: client.client_id,
            client_name: client.name,
            redirect_uri,
            scope,
            code_challenge: challenge.to_owned(),
            state: req.state.clone(),
        })
    }

    /// The user signed in on the authorization page and approved: returns the authorization
    /// code for the redirect. Attempts count against the per-address sign-in limit and
    /// failures are audited like password grants.
    pub async fn approve_authorization(
        &self,
        auth: &Authorization,
        username: &str,
        password: String,
        second_factor: Option<&str>,
        address: Option<IpAddr>,
    ) -> CoreResult<String> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&crate::accounts::limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        let user = self
            .sign_in_check(username, password, second_factor, address)
            .await?;
        let code = tokens::random_token();
        let now = self.now_ms();
        self.inner
            .store
            .create_authorization_code(
                AuthorizationCodeRecord {
                    code_hash: tokens::hash_token(&code),
                    client_id: auth.client_id.clone(),
                    user_id: user.id,
                    redirect_uri: auth.redirect_uri.clone(),
                    code_challenge: auth.code_challenge.clone(),
                    scope: auth.scope.clone(),
                    expires_at: now.saturating_add(CODE_TTL_MS),
                },
                now,
            )
            .await?;
        Ok(code)
    }

    /// RFC 6749 section 4.1.3: exchanges a code for tokens. The code is spent by the first
    /// attempt whatever its outcome, and must have been issued to this client for this
    /// redirect URI, with a challenge the verifier matches.
    pub async fn authorization_code_grant(
        &self,
        auth: ClientAuth,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        let client = self.authenticate_client(&auth).await?;
        let taken = self
            .inner
            .store
            .take_authorization_code(tokens::hash_token(code), self.now_ms())
            .await?
            .ok_or_else(|| invalid_grant("unknown, used or expired authorization code"))?;
        if taken.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if redirect_uri != Some(taken.redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !code_verifier.is_some_and(|v| pkce_matches(v, &taken.code_challenge)) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let grant = DeviceGrant {
            client_id: client.client_id.clone(),
            scope: taken.scope.clone(),
        };
        let refresh = tokens::random_token();
        let mut entry = self.new_audit(
            kinds::SIGN_IN_SUCCESS,
            Some(taken.user_id),
            Some(taken.user_id),
        );
        entry.address = address.map(|a| a.to_string());
        entry.detail = serde_json::json!({
            "device_name": client.name,
            "client_id": client.client_id,
            "scope": taken.scope,
        });
        let device = self
            .inner
            .store
            .sign_in_client(
                taken.user_id,
                &client.name,
                grant,
                tokens::hash_token(&refresh),
                self.refresh_expiry(),
                self.now_ms(),
                entry,
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => invalid_grant("the account or client is gone"),
                other => other.into(),
            })?;
        tracing::info!(user_id = %taken.user_id, device_id = %device.id, client_id = %client.client_id,
            "Signed in through an OAuth client.");
        Ok(self.token_response(
            taken.user_id,
            device.id,
            refresh,
            &client.client_id,
            &taken.scope,
        ))
    }

    // --- Introspection --------------------------------------------------------------------

    /// RFC 7662: what a registered client may learn about a token. The caller must be an
    /// authenticated client; a token that is invalid, expired or whose device was signed out
    /// is `{"active": false}`.
    pub async fn introspect(&self, auth: &ClientAuth, token: &str) -> CoreResult<Introspection> {
        self.authenticate_client(auth).await?;
        let inactive = Introspection {
            active: false,
            scope: None,
            client_id: None,
            username: None,
            token_type: None,
            exp: None,
            iat: None,
            sub: None,
            iss: None,
            user_id: None,
        };
        let Ok(claims) = tokens::verify_access(
            &self.inner.keys,
            token,
            &self.inner.issuer,
            self.now_ms().div_euclid(1000),
        ) else {
            return Ok(inactive);
        };
        let Ok(caller) = self.authenticate(token).await else {
            return Ok(inactive);
        };
        let username = self
            .inner
            .store
            .user_by_id(caller.user_id)
            .await?
            .map(|u| u.username);
        Ok(Introspection {
            active: true,
            scope: Some(claims.scope),
            client_id: Some(claims.client_id),
            username,
            token_type: Some("Bearer".into()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            sub: Some(claims.sub),
            iss: Some(claims.iss),
            user_id: Some(caller.user_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example_and_nothing_else() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(&verifier.replace('d', "e"), challenge));
        assert!(!pkce_matches(challenge, challenge), "plain is not S256");
        assert!(!pkce_matches(
            "short",
            &B64.encode(Sha256::digest(b"short"))
        ));
        let spaced = "a b".repeat(20);
        assert!(!pkce_matches(
            &spaced,
            &B64.encode(Sha256::digest(spaced.as_bytes()))
        ));
    }

    #[test]
    fn redirect_uris_are_https_or_loopback_http_without_fragments() {
        for good in [
            "https://app.example/cb",
            "https://app.example:8443/oauth/cb?x=1",
            "http://127.0.0.1:8000/cb",
            "http://localhost:3000/cb",
            "http://[::1]:9/cb",
        ] {
            assert!(valid_redirect_uri(good), "{good}");
        }
        for bad in [
            "",
            "app.example/cb",
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "https:///cb",
            "javascript:alert(1)",
            "https://app.example/c b",
            "ftp://app.example/cb",
        ] {
            assert!(!valid_redirect_uri(bad), "{bad}");
        }
    }
}
