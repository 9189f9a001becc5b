//! The OAuth 2.0 authorization server beyond first-party sign-in: clients registered by an
//! administrator, the authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636,
//! S256 only), the client credentials grant for bot clients (section 4.4), the device
//! authorization grant (RFC 8628), and token introspection (RFC 7662).
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
    DeviceAuthorizationResponse, Introspection, NewOAuthClient, OAuthClient, OAuthClientCreated,
    OAuthClientList,
};
use tidings_proto::rest::TokenResponse;
use tidings_store::{
    AuthorizationCodeRecord, DeviceAuthorizationRecord, DeviceAuthorizationState, DeviceGrant,
    OAuthClientRecord, StoreError,
};

/// How long an authorization code may wait before it is exchanged (RFC 6749 recommends at most
/// ten minutes; a client exchanges it at once).
pub const CODE_TTL_MS: i64 = 60_000;
/// Largest page of `GET /api/v1/admin/oauth-clients`.
pub const MAX_CLIENT_PAGE: u32 = 200;
/// At most this many redirect URIs per client.
const MAX_REDIRECT_URIS: usize = 10;
/// The longest life of a client credentials (bot) access token, in seconds. A bot can always
/// ask for a new one, so there is no refresh token and nothing long-lived to steal.
pub const BOT_TOKEN_TTL_SECS: u64 = 300;
/// How long a device authorization waits for the user (RFC 8628 section 3.2 `expires_in`).
pub const DEVICE_CODE_TTL_MS: i64 = 600_000;
/// The least number of seconds between polls (RFC 8628 section 3.2 `interval`; 5 is the
/// default the RFC gives).
pub const DEVICE_POLL_INTERVAL_SECS: i64 = 5;
/// The letters of user codes: RFC 8628 section 6.1's base-20 set, consonants without vowels
/// (no words) and without letters that look like digits. Eight of them carry about 34.6 bits,
/// which, with attempts rate limited per address and a 10-minute life, is out of reach of
/// guessing.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;
/// The grant type URN of the device code grant (RFC 8628 section 3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Why the token endpoint refused a client credentials or device code grant with an error the
/// protocol names (beyond the errors a [`CoreError`] already maps to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantRefusal {
    /// RFC 8628 section 3.5: the user has not answered yet.
    AuthorizationPending,
    /// RFC 8628 section 3.5: the client polls faster than its interval, which grew by 5 s.
    SlowDown,
    /// RFC 8628 section 3.5: the device code expired; start again.
    ExpiredToken,
    /// RFC 8628 section 3.5: the user denied.
    AccessDenied,
    /// RFC 6749 section 5.2: this client may not use this grant type.
    UnauthorizedClient,
}

impl GrantRefusal {
    /// The `error` of the token response.
    pub fn code(self) -> &'static str {
        match self {
            GrantRefusal::AuthorizationPending => "authorization_pending",
            GrantRefusal::SlowDown => "slow_down",
            GrantRefusal::ExpiredToken => "expired_token",
            GrantRefusal::AccessDenied => "access_denied",
            GrantRefusal::UnauthorizedClient => "unauthorized_client",
        }
    }

    /// The `error_description` of the token response.
    pub fn description(self) -> &'static str {
        match self {
            GrantRefusal::AuthorizationPending => "the user has not answered yet",
            GrantRefusal::SlowDown => "polling too fast; wait 5 seconds more between polls",
            GrantRefusal::ExpiredToken => "the device code expired; start again",
            GrantRefusal::AccessDenied => "the user denied the request",
            GrantRefusal::UnauthorizedClient => "this client may not use this grant type",
        }
    }
}

/// The outcome of a grant that can be refused in a protocol-specific way.
#[derive(Debug)]
pub enum GrantError {
    Refused(GrantRefusal),
    Core(CoreError),
}

impl From<CoreError> for GrantError {
    fn from(e: CoreError) -> Self {
        GrantError::Core(e)
    }
}

impl From<StoreError> for GrantError {
    fn from(e: StoreError) -> Self {
        GrantError::Core(e.into())
    }
}

/// What the device verification page shows for a user code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConsent {
    /// The code as the user should see it (`XXXX-XXXX`).
    pub user_code: String,
    pub client_name: String,
    /// The scope the user is asked to grant, space-separated.
    pub scope: String,
}

/// A fresh user code (`XXXXXXXX`, normalized form).
fn new_user_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..USER_CODE_LEN)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())]))
        .collect()
}

/// A user code as typed (any case, with or without the dash or spaces) in normalized form;
/// `None` if it cannot be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// A normalized user code as shown to people: `XXXX-XXXX`.
pub fn display_user_code(code: &str) -> String {
    let (a, b) = code.split_at(code.len().min(USER_CODE_LEN / 2));
    format!("{a}-{b}")
}

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
        bot_user_id: client.bot.map(|b| b.user_id),
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
        let bot_username = match req.bot_username.as_deref() {
            Some(raw) => {
                if !req.confidential {
                    return Err(CoreError::invalid("a bot client must be confidential"));
                }
                if !req.redirect_uris.is_empty() {
                    return Err(CoreError::invalid(
                        "a bot client signs in without a browser, so it has no redirect URIs",
                    ));
                }
                Some(crate::passwords::normalize_username(raw)?)
            }
            None => None,
        };
        let secret = req.confidential.then(tokens::random_token);
        // 128 random bits: ids are public, they only need to be unique and unguessable enough
        // not to invite enumeration.
        let client_id = tokens::random_token()[..22].to_owned();
        let mut record = OAuthClientRecord {
            client_id: client_id.clone(),
            name,
            secret_hash: secret.as_deref().map(tokens::hash_token),
            redirect_uris: req.redirect_uris,
            scope,
            created_at: self.now_ms(),
            bot: None,
        };
        let mut entry = acting.entry(self, kinds::OAUTH_CLIENT_ADD, None);
        entry.detail = serde_json::json!({
            "client_id": client_id,
            "name": record.name,
            "bot_username": bot_username,
        });
        match bot_username {
            // The bot account has no password: "!" is not a PHC string, so no password ever
            // verifies against it and the account signs in only through its client.
            Some(username) => {
                record = self
                    .inner
                    .store
                    .create_bot_client(record, &username, "!", entry)
                    .await?;
            }
            None => {
                self.inner
                    .store
                    .create_oauth_client(record.clone(), entry)
                    .await?;
            }
        }
        tracing::info!(%client_id, bot = record.bot.is_some(), "OAuth client registered.");
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
        self.sign_in_through_client(&client, taken.user_id, &taken.scope, address)
            .await
    }

    // --- Client credentials (bots) ---------------------------------------------------------

    /// RFC 6749 section 4.4: a bot client gets a short-lived access token for its bot account,
    /// with the scope it asks for (all it was granted when it asks for nothing) and no refresh
    /// token. Other clients are `unauthorized_client`.
    pub async fn client_credentials_grant(
        &self,
        auth: ClientAuth,
        scope: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let client = self.authenticate_client(&auth).await?;
        let (Some(bot), Some(_)) = (client.bot, client.secret_hash) else {
            return Err(GrantError::Refused(GrantRefusal::UnauthorizedClient));
        };
        let scope = policy::grant_scope(scope, &client.scope)?;
        let user = self.inner.store.user_by_id(bot.user_id).await?;
        if !user.is_some_and(|u| !u.disabled && u.deleted_at.is_none()) {
            return Err(invalid_grant("the bot account is suspended or deleted").into());
        }
        // A token for a signed-out device would be refused everywhere; say why here instead.
        let device = self.inner.store.device(bot.device_id).await?;
        if device.is_none_or(|d| d.revoked_at.is_some()) {
            return Err(invalid_grant(
                "the bot's device was signed out; register the bot client again",
            )
            .into());
        }
        let ttl = self
            .inner
            .config
            .tokens
            .access_ttl_secs
            .min(BOT_TOKEN_TTL_SECS);
        tracing::debug!(client_id = %client.client_id, user_id = %bot.user_id,
            "Issued a client credentials token.");
        Ok(self.signed_token_response(
            bot.user_id,
            bot.device_id,
            String::new(),
            &client.client_id,
            &scope,
            ttl,
        ))
    }

    // --- Device authorization grant (RFC 8628) ----------------------------------------------

    /// RFC 8628 section 3.1: a device asks to be authorized. Requests count against the
    /// per-address sign-in limit. Bot clients have no users to ask, so they are refused.
    pub async fn device_authorization(
        &self,
        auth: &ClientAuth,
        scope: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<DeviceAuthorizationResponse, GrantError> {
        self.check_sign_in_limit(address)?;
        let client = self.authenticate_client(auth).await?;
        if client.bot.is_some() {
            return Err(GrantError::Refused(GrantRefusal::UnauthorizedClient));
        }
        let scope = policy::grant_scope(scope, &client.scope)?;
        let device_code = tokens::random_token();
        let now = self.now_ms();
        // A clash of user codes is rare (1 in 2^34 per live code); try a few times.
        let mut attempt = 0;
        let user_code = loop {
            let user_code = new_user_code();
            let record = DeviceAuthorizationRecord {
                device_code_hash: tokens::hash_token(&device_code),
                user_code: user_code.clone(),
                client_id: client.client_id.clone(),
                scope: scope.clone(),
                expires_at: now.saturating_add(DEVICE_CODE_TTL_MS),
                interval_secs: DEVICE_POLL_INTERVAL_SECS,
                last_polled_at: None,
                state: DeviceAuthorizationState::Pending,
            };
            match self
                .inner
                .store
                .create_device_authorization(record, now)
                .await
            {
                Ok(()) => break user_code,
                Err(StoreError::Conflict("user_code")) if attempt < 3 => attempt += 1,
                Err(e) => return Err(CoreError::from(e).into()),
            }
        };
        let issuer = self.inner.issuer.trim_end_matches('/');
        let shown = display_user_code(&user_code);
        Ok(DeviceAuthorizationResponse {
            device_code,
            verification_uri: format!("{issuer}/oauth/device"),
            verification_uri_complete: format!("{issuer}/oauth/device?user_code={shown}"),
            user_code: shown,
            expires_in: (DEVICE_CODE_TTL_MS / 1000) as u64,
            interval: DEVICE_POLL_INTERVAL_SECS as u64,
        })
    }

    /// What the verification page shows for a typed user code. Each look-up counts against
    /// the per-address sign-in limit, so user codes cannot be guessed by trying them here.
    pub async fn device_consent(
        &self,
        typed: &str,
        address: Option<IpAddr>,
    ) -> CoreResult<DeviceConsent> {
        self.check_sign_in_limit(address)?;
        let unknown = || CoreError::not_found("code (check it, or start again on the device)");
        let code = normalize_user_code(typed).ok_or_else(unknown)?;
        let pending = self
            .inner
            .store
            .device_authorization(&code, self.now_ms())
            .await?
            .filter(|a| a.state == DeviceAuthorizationState::Pending)
            .ok_or_else(unknown)?;
        let client = self
            .inner
            .store
            .oauth_client(&pending.client_id)
            .await?
            .ok_or_else(unknown)?;
        Ok(DeviceConsent {
            user_code: display_user_code(&code),
            client_name: client.name,
            scope: pending.scope,
        })
    }

    /// The user's answer on the verification page: approving signs in with username and
    /// password, and the second factor of a two-factor account (limited and audited like every
    /// sign-in); denying needs no sign-in. Either
    /// way the answer is final. On failure, the consent is returned with the error when the
    /// code is still pending, so the page can ask again without another look-up.
    pub async fn decide_device(
        &self,
        typed: &str,
        approve: Option<(&str, String, Option<&str>)>,
        address: Option<IpAddr>,
    ) -> Result<(), (CoreError, Option<DeviceConsent>)> {
        let consent = self
            .device_consent(typed, address)
            .await
            .map_err(|e| (e, None))?;
        let code = normalize_user_code(&consent.user_code).unwrap_or_default();
        let state = match approve {
            Some((username, password, second_factor)) => {
                match self
                    .sign_in_check(username, password, second_factor, address)
                    .await
                {
                    Ok(user) => DeviceAuthorizationState::Approved(user.id),
                    Err(e) => return Err((e, Some(consent))),
                }
            }
            None => DeviceAuthorizationState::Denied,
        };
        match self
            .inner
            .store
            .decide_device_authorization(&code, state, self.now_ms())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err((
                CoreError::not_found("code (it expired or was answered already)"),
                None,
            )),
            Err(e) => Err((e.into(), None)),
        }
    }

    /// RFC 8628 section 3.4: the device polls with its device code. Once the user approved,
    /// the first poll signs in (a device named after the client, with a refresh token); the
    /// answer, approval or denial, is collected once.
    pub async fn device_code_grant(
        &self,
        auth: ClientAuth,
        device_code: &str,
        address: Option<IpAddr>,
    ) -> Result<TokenResponse, GrantError> {
        let client = self.authenticate_client(&auth).await?;
        let now = self.now_ms();
        let polled = self
            .inner
            .store
            .poll_device_authorization(tokens::hash_token(device_code), now)
            .await?
            .filter(|a| a.client_id == client.client_id)
            .ok_or_else(|| invalid_grant("unknown or used device code"))?;
        if polled.expires_at <= now {
            return Err(GrantError::Refused(GrantRefusal::ExpiredToken));
        }
        let user = match polled.state {
            DeviceAuthorizationState::Pending => {
                let early = polled
                    .last_polled_at
                    .is_some_and(|t| now - t < polled.interval_secs.saturating_mul(1000));
                return Err(GrantError::Refused(if early {
                    GrantRefusal::SlowDown
                } else {
                    GrantRefusal::AuthorizationPending
                }));
            }
            DeviceAuthorizationState::Denied => {
                return Err(GrantError::Refused(GrantRefusal::AccessDenied));
            }
            DeviceAuthorizationState::Approved(user) => user,
        };
        let token = self
            .sign_in_through_client(&client, user, &polled.scope, address)
            .await?;
        Ok(token)
    }

    /// Creates the device of a sign-in through a registered client (authorization code or
    /// device code) and issues its tokens.
    async fn sign_in_through_client(
        &self,
        client: &OAuthClientRecord,
        user: tidings_proto::UserId,
        scope: &str,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        let grant = DeviceGrant {
            client_id: client.client_id.clone(),
            scope: scope.to_owned(),
        };
        let refresh = tokens::random_token();
        let mut entry = self.new_audit(kinds::SIGN_IN_SUCCESS, Some(user), Some(user));
        entry.address = address.map(|a| a.to_string());
        entry.detail = serde_json::json!({
            "device_name": client.name,
            "client_id": client.client_id,
            "scope": scope,
        });
        let device = self
            .inner
            .store
            .sign_in_client(
                user,
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
        tracing::info!(user_id = %user, device_id = %device.id, client_id = %client.client_id,
            "Signed in through an OAuth client.");
        Ok(self.token_response(user, device.id, refresh, &client.client_id, scope))
    }

    fn check_sign_in_limit(&self, address: Option<IpAddr>) -> CoreResult<()> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&crate::accounts::limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        Ok(())
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
    fn user_codes_are_eight_unambiguous_letters_typed_any_way() {
        for _ in 0..100 {
            let code = new_user_code();
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(&shown[4..5], "-");
            assert_eq!(normalize_user_code(&shown.to_lowercase()), Some(code));
        }
        assert_eq!(
            normalize_user_code(" bcdf ghjk ").as_deref(),
            Some("BCDFGHJK")
        );
        for bad in [
            "",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "BCDF-GHJA",
            "BCDF-GHJ1",
            "BCDF_GHJK",
        ] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
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
