//! Sign-in with an external OpenID Connect provider, once the transport has proved who the
//! provider says the person is: which account that identity is, whether a new account may be
//! made for it, and linking an identity to the account of a signed-in user. Accounts are found
//! only by the (issuer, subject) pair linked to them, never by e-mail address.

use crate::accounts::{DEFAULT_CLIENT_ID, first_party_scope, limit_key};
use crate::audit::kinds;
use crate::error::{CoreError, CoreResult};
use crate::passwords::normalize_username;
use crate::{Caller, Core, tokens};
use std::net::IpAddr;
use tidings_proto::ErrorCode;
use tidings_proto::rest::TokenResponse;
use tidings_store::{ExternalIdentity, StoreError, UserRecord};

/// The password hash of accounts made by single sign-on: not a PHC string, so no password
/// ever verifies against it (the person may set one later with an operator's reset).
const NO_PASSWORD: &str = "!sso";

/// An identity a provider vouched for, as the core needs it.
#[derive(Clone, Debug)]
pub struct SsoIdentity {
    /// The configured provider's id.
    pub provider: String,
    /// Whether the provider may create accounts for unknown identities.
    pub allow_create: bool,
    pub issuer: String,
    pub subject: String,
    /// The username the provider suggests for a new account.
    pub preferred_username: Option<String>,
}

fn unlinked() -> CoreError {
    CoreError::new(
        ErrorCode::InvalidCredentials,
        "no account is linked to this identity",
    )
}

impl Core {
    /// Signs in the account linked to `identity`, creating it first when the identity is new
    /// and its provider allows that. Issues first-party tokens for a new device, audited as a
    /// sign-in (`detail.method` is "oidc").
    pub async fn sso_sign_in(
        &self,
        identity: SsoIdentity,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        self.detached(move |core| async move { core.sso_sign_in_steps(identity, address).await })
            .await
    }

    /// Links `identity` to the caller's account (audited as `external_identity.link`).
    /// `Conflict` when the identity is linked already, to this account or another.
    pub async fn sso_link(
        &self,
        user: tidings_proto::UserId,
        identity: SsoIdentity,
        address: Option<IpAddr>,
    ) -> CoreResult<()> {
        let mut entry = self.new_audit(kinds::EXTERNAL_IDENTITY_LINK, Some(user), Some(user));
        entry.address = address.map(|a| a.to_string());
        entry.detail =
            serde_json::json!({ "provider": identity.provider, "issuer": identity.issuer });
        let link = self.external_identity(&identity);
        match self
            .inner
            .store
            .link_external_identity(user, &link, entry)
            .await
        {
            Ok(()) => {
                tracing::info!(user_id = %user, provider = %identity.provider, "External identity linked.");
                Ok(())
            }
            Err(StoreError::Conflict(_)) => Err(CoreError::new(
                ErrorCode::Conflict,
                "this identity is already linked to an account",
            )),
            Err(StoreError::NotFound) => Err(CoreError::not_found("account")),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts the start of a single sign-on flow as a sign-in attempt of `address`
    /// (`limits.sign_in_attempts_per_address_per_minute`), so one client cannot fill the
    /// relying party's table of pending flows.
    pub fn sso_attempt(&self, address: Option<IpAddr>) -> CoreResult<()> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        Ok(())
    }

    /// Records a refused single sign-on (a forged state, an id_token that failed validation, a
    /// provider error) in the audit log as a failed sign-in.
    pub async fn sso_refused(&self, provider: Option<&str>, reason: &str, address: Option<IpAddr>) {
        let reason = match provider {
            Some(p) => format!("oidc:{p}:{reason}"),
            None => format!("oidc:{reason}"),
        };
        self.audit_sign_in_failure(None, address, &reason).await;
    }

    /// The providers the caller's account is linked to, as (provider id, linked at).
    pub async fn sso_links(&self, caller: &Caller) -> CoreResult<Vec<(String, i64)>> {
        Ok(self
            .inner
            .store
            .external_identities_of(caller.user_id)
            .await?
            .into_iter()
            .map(|l| (l.provider, l.linked_at))
            .collect())
    }

    fn external_identity(&self, identity: &SsoIdentity) -> ExternalIdentity {
        ExternalIdentity {
            provider: identity.provider.clone(),
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            linked_at: self.now_ms(),
        }
    }

    async fn sso_sign_in_steps(
        &self,
        identity: SsoIdentity,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        let store = &self.inner.store;
        let user = match store
            .external_identity_user(&identity.issuer, &identity.subject)
            .await?
        {
            Some(id) => store
                .user_by_id(id)
                .await?
                .ok_or_else(|| CoreError::not_found("account"))?,
            None if identity.allow_create => self.sso_create_account(&identity, address).await?,
            None => {
                self.audit_sign_in_failure(None, address, "unlinked_identity")
                    .await;
                return Err(unlinked());
            }
        };
        if user.deleted_at.is_some() || user.disabled {
            self.audit_sign_in_failure(Some(user.id), address, "suspended")
                .await;
            return Err(CoreError::forbidden("account suspended"));
        }
        let name = "Single sign-on".to_owned();
        let refresh = tokens::random_token();
        let mut entry = self.new_audit(kinds::SIGN_IN_SUCCESS, Some(user.id), Some(user.id));
        entry.address = address.map(|a| a.to_string());
        entry.detail = serde_json::json!({
            "device_name": name, "method": "oidc", "provider": identity.provider,
        });
        let device = store
            .sign_in(
                user.id,
                &name,
                tokens::hash_token(&refresh),
                self.refresh_expiry(),
                self.now_ms(),
                entry,
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => CoreError::forbidden("account suspended"),
                other => other.into(),
            })?;
        tracing::info!(user_id = %user.id, device_id = %device.id, provider = %identity.provider, "Signed in with an external provider.");
        Ok(self.token_response(
            user.id,
            device.id,
            refresh,
            DEFAULT_CLIENT_ID,
            &first_party_scope(&user),
        ))
    }

    /// A new account linked to `identity`: named as the provider suggests when that name is a
    /// valid, free username, else the provider id and a random suffix.
    async fn sso_create_account(
        &self,
        identity: &SsoIdentity,
        address: Option<IpAddr>,
    ) -> CoreResult<UserRecord> {
        let suggested = identity
            .preferred_username
            .as_deref()
            .and_then(|name| normalize_username(name).ok());
        let link = self.external_identity(identity);
        for attempt in 0..4 {
            let username = match (&suggested, attempt) {
                (Some(name), 0) => name.clone(),
                _ => {
                    let prefix: String = identity.provider.chars().take(16).collect();
                    let prefix = normalize_username(&format!("{prefix}-user"))
                        .map(|_| prefix)
                        .unwrap_or_else(|_| "sso".into());
                    let suffix = &tokens::random_token()
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                        .to_ascii_lowercase();
                    format!("{prefix}-{}", &suffix[..8.min(suffix.len())])
                }
            };
            let Ok(username) = normalize_username(&username) else {
                continue;
            };
            let mut entry = self.new_audit(kinds::EXTERNAL_IDENTITY_CREATE, None, None);
            entry.address = address.map(|a| a.to_string());
            entry.detail =
                serde_json::json!({ "provider": identity.provider, "issuer": identity.issuer });
            match self
                .inner
                .store
                .create_linked_user(&username, NO_PASSWORD, &link, entry)
                .await
            {
                Ok(user) => {
                    tracing::info!(user_id = %user.id, provider = %identity.provider, "Account created by single sign-on.");
                    return Ok(user);
                }
                Err(StoreError::Conflict("username")) => continue,
                // Another sign-in of the same person created it first.
                Err(StoreError::Conflict(_)) => {
                    let id = self
                        .inner
                        .store
                        .external_identity_user(&identity.issuer, &identity.subject)
                        .await?
                        .ok_or_else(unlinked)?;
                    return self
                        .inner
                        .store
                        .user_by_id(id)
                        .await?
                        .ok_or_else(|| CoreError::not_found("account"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::new(
            ErrorCode::Conflict,
            "no free username could be found for the new account",
        ))
    }
}
