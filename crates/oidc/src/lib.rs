//! Sign-in with external OpenID Connect providers (enterprise SSO): the relying party.
//!
//! Layout: `lib.rs` has the configuration, discovery (`/.well-known/openid-configuration`),
//! the pending flows and the code exchange; `idtoken.rs` validates id_tokens. What an identity
//! may do (sign in, create an account, be linked) is the core's decision; this crate only
//! proves who the provider says the person is.
//!
//! A flow is the authorization code flow with PKCE (S256), a random `state` bound to the
//! browser by the transport (a cookie) and a random `nonce` checked in the id_token. Pending
//! flows live in this node's memory, bounded in number and time: the callback must reach the
//! node that started the flow.

pub mod idtoken;

pub use idtoken::VerifiedIdentity;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idtoken::{Expected, Jwks};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// External OpenID Connect providers people may sign in with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The providers, each a `[[oidc.providers]]` table. None by default: SSO is off.
    pub providers: Vec<ProviderConfig>,
}

/// One OpenID Connect provider. Register the server at the provider with the redirect URI
/// `<tokens.issuer>/oauth/oidc/callback`.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A short name used in URLs (letters, digits, `-`, `_`), e.g. "corp".
    pub id: String,
    /// The name the sign-in button shows, e.g. "Example Corp".
    pub display_name: String,
    /// The provider's issuer URL; its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration` and must name the same issuer.
    pub issuer: String,
    pub client_id: String,
    /// Sent with HTTP Basic authentication to the token endpoint.
    pub client_secret: String,
    /// Scopes asked for; "openid" is always added.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Whether a person without a linked account gets a new account on first sign-in. When
    /// false, only people who linked their account while signed in can sign in this way.
    #[serde(default)]
    pub allow_create: bool,
}

/// Everything but the secret, so a configuration printed for debugging never shows it.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("allow_create", &self.allow_create)
            .finish()
    }
}

impl OidcConfig {
    /// Checks what start-up can check without asking the providers: ids usable in URLs and
    /// unique, issuers `http(s)` URLs, client ids present.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.providers {
            let id_ok = !p.id.is_empty()
                && p.id.len() <= 32
                && p.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !id_ok {
                return Err(format!(
                    "oidc.providers: id {:?} must be 1 to 32 letters, digits, '-' or '_'",
                    p.id
                ));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(format!("oidc.providers: id {:?} is used twice", p.id));
            }
            let issuer_ok = reqwest::Url::parse(&p.issuer)
                .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
            if !issuer_ok {
                return Err(format!(
                    "oidc.providers ({}): issuer {:?} is not an http(s) URL",
                    p.id, p.issuer
                ));
            }
            if p.client_id.is_empty() {
                return Err(format!("oidc.providers ({}): client_id is empty", p.id));
            }
        }
        Ok(())
    }
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

/// Why a step of the flow failed. The transport shows none of these details to the person.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("unknown provider")]
    UnknownProvider,
    #[error("unknown or expired state")]
    UnknownState,
    #[error("too many sign-ins in progress")]
    TooManyPending,
    #[error("the provider answered with an error: {0}")]
    Provider(String),
    #[error("provider request failed: {0}")]
    Http(String),
    #[error("provider metadata is unusable: {0}")]
    Metadata(&'static str),
    #[error("id_token refused: {0}")]
    InvalidIdToken(&'static str),
    #[error("configuration: {0}")]
    Config(String),
}

/// What a flow is for, carried from its start to its callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Sign in (or create an account, when the provider allows it).
    SignIn,
    /// Link the identity to this account (a user signed in when the flow started).
    Link(i64),
}

/// The end of a successful flow.
#[derive(Clone, Debug)]
pub struct Finished {
    pub provider: ProviderConfig,
    pub purpose: Purpose,
    pub identity: VerifiedIdentity,
}

/// A flow's start: where to send the browser, and the state to bind to it.
#[derive(Clone, Debug)]
pub struct Started {
    pub authorize_url: String,
    pub state: String,
}

/// How long a started flow may take, through the provider's sign-in and consent.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// At most this many flows wait for their callback at once.
pub const MAX_PENDING: usize = 10_000;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Pending {
    provider: usize,
    nonce: String,
    verifier: String,
    purpose: Purpose,
    expires: SystemTime,
}

/// The relying party for every configured provider.
pub struct RelyingParty {
    providers: Vec<ProviderConfig>,
    redirect_uri: String,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
    /// Discovery documents and key sets, read on first use and kept (keys refreshed when a
    /// token names one the set lacks).
    metadata: tokio::sync::Mutex<HashMap<usize, (Discovery, Jwks)>>,
}

impl RelyingParty {
    /// `redirect_uri` is the server's callback URL, as registered at every provider.
    pub fn new(config: &OidcConfig, redirect_uri: String) -> Result<RelyingParty, OidcError> {
        config.validate().map_err(OidcError::Config)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Http(e.to_string()))?;
        Ok(RelyingParty {
            providers: config.providers.clone(),
            redirect_uri,
            http,
            pending: Mutex::new(HashMap::new()),
            metadata: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configured providers.
    pub fn providers(&self) -> &[ProviderConfig] {
        &self.providers
    }

    fn provider(&self, id: &str) -> Result<usize, OidcError> {
        self.providers
            .iter()
            .position(|p| p.id == id)
            .ok_or(OidcError::UnknownProvider)
    }

    /// Starts a flow with provider `id`: a fresh state, nonce and PKCE verifier, and the
    /// provider's authorization URL carrying them.
    pub async fn start(&self, id: &str, purpose: Purpose) -> Result<Started, OidcError> {
        let index = self.provider(id)?;
        let provider = &self.providers[index];
        let authorization_endpoint = {
            self.load(index).await?;
            let metadata = self.metadata.lock().await;
            metadata[&index].0.authorization_endpoint.clone()
        };
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(provider.scopes.iter().filter(|s| *s != "openid").cloned());
        let mut url = reqwest::Url::parse(&authorization_endpoint)
            .map_err(|_| OidcError::Metadata("authorization_endpoint is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let now = SystemTime::now();
        let mut pending = self.pending.lock().expect("pending flows lock");
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(OidcError::TooManyPending);
        }
        pending.insert(
            state.clone(),
            Pending {
                provider: index,
                nonce,
                verifier,
                purpose,
                expires: now + FLOW_TTL,
            },
        );
        Ok(Started {
            authorize_url: url.into(),
            state,
        })
    }

    /// Finishes the flow `state` with the provider's `code`: the state is used up whatever
    /// happens, then the code is exchanged (with the PKCE verifier) and the id_token validated.
    /// `iss` is the callback's `iss` parameter (RFC 9207), when the provider sends one: it must
    /// name the provider the flow went to, which stops a provider from passing off another's
    /// code (the mix-up attack).
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        iss: Option<&str>,
    ) -> Result<Finished, OidcError> {
        let pending = self
            .pending
            .lock()
            .expect("pending flows lock")
            .remove(state)
            .filter(|p| p.expires > SystemTime::now())
            .ok_or(OidcError::UnknownState)?;
        let provider = &self.providers[pending.provider];
        if iss.is_some_and(|iss| iss != provider.issuer) {
            return Err(OidcError::InvalidIdToken(
                "the callback's iss is another issuer",
            ));
        }
        self.load(pending.provider).await?;
        let token_endpoint = self.metadata.lock().await[&pending.provider]
            .0
            .token_endpoint
            .clone();
        let response = self
            .http
            .post(&token_endpoint)
            .basic_auth(
                form_encode(&provider.client_id),
                Some(form_encode(&provider.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.redirect_uri.as_str()),
                ("code_verifier", pending.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Http(e.to_string()))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| OidcError::Http(e.to_string()))?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown").to_owned();
            return Err(OidcError::Provider(error));
        }
        let id_token = body["id_token"].as_str().ok_or(OidcError::InvalidIdToken(
            "the token response has no id_token",
        ))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut metadata = self.metadata.lock().await;
        let (discovery, jwks) = metadata
            .get_mut(&pending.provider)
            .ok_or(OidcError::Metadata("not loaded"))?;
        if idtoken::needs_key_refresh(id_token, jwks) {
            *jwks = self.fetch_json(&discovery.jwks_uri).await?;
        }
        let identity = idtoken::validate(
            id_token,
            jwks,
            &Expected {
                issuer: &discovery.issuer,
                client_id: &provider.client_id,
                nonce: &pending.nonce,
                now,
            },
        )?;
        Ok(Finished {
            provider: provider.clone(),
            purpose: pending.purpose,
            identity,
        })
    }

    /// Reads the provider's discovery document and key set unless already read.
    async fn load(&self, index: usize) -> Result<(), OidcError> {
        let mut metadata = self.metadata.lock().await;
        if metadata.contains_key(&index) {
            return Ok(());
        }
        let issuer = self.providers[index].issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .fetch_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer we asked.
        if discovery.issuer != self.providers[index].issuer {
            return Err(OidcError::Metadata(
                "issuer differs from the configured one",
            ));
        }
        let jwks: Jwks = self.fetch_json(&discovery.jwks_uri).await?;
        metadata.insert(index, (discovery, jwks));
        Ok(())
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(OidcError::Http(format!("{url}: {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| OidcError::Http(format!("{url}: {e}")))
    }
}

/// 32 random bytes, base64url: states, nonces and PKCE verifiers.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 6749 section 2.3.1: the client id and secret are form-encoded before HTTP Basic.
fn form_encode(value: &str) -> String {
    reqwest::Url::parse_with_params("x:", &[("v", value)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: &str, issuer: &str) -> ProviderConfig {
        ProviderConfig {
            id: id.into(),
            display_name: "Corp".into(),
            issuer: issuer.into(),
            client_id: "tidings".into(),
            client_secret: "top-secret".into(),
            scopes: default_scopes(),
            allow_create: false,
        }
    }

    #[test]
    fn config_is_checked_and_the_secret_never_printed() {
        let ok = OidcConfig {
            providers: vec![provider("corp", "https://idp.example")],
        };
        assert!(ok.validate().is_ok());
        assert!(!format!("{ok:?}").contains("top-secret"));
        for bad in [
            vec![provider("", "https://idp.example")],
            vec![provider("a/b", "https://idp.example")],
            vec![provider("corp", "idp.example")],
            vec![provider("corp", "ftp://idp.example")],
            vec![
                provider("corp", "https://a.example"),
                provider("corp", "https://b.example"),
            ],
        ] {
            assert!(OidcConfig { providers: bad }.validate().is_err());
        }
    }
}
