//! Accounts, OAuth grants, devices and passwords.

use crate::admin::AdminActor;
use crate::audit::kinds;
use crate::config::RegistrationMode;
use crate::error::{CoreError, CoreResult};
use crate::passwords::{check_password, normalize_username};
use crate::tokens::{self, AccessClaims, TokenError};
use crate::{Caller, Core};
use std::net::IpAddr;
use tidings_bus::BusEvent;
use tidings_proto::rest::{
    Account, ChangePasswordRequest, Device, DeviceList, RegisterRequest, TokenResponse,
};
use tidings_proto::{DeviceId, ErrorCode, UserId};
use tidings_store::{NewInvite, NewRefreshToken, RotateOutcome, StoreError, UserRecord};

/// The OAuth client every first-party sign-in is attributed to until clients are registered.
pub const DEFAULT_CLIENT_ID: &str = "tidings";
/// The scope of first-party tokens of users who are not administrators: every scope but
/// `admin` (administrators' tokens add it, see [`first_party_scope`]).
pub const DEFAULT_SCOPE: &str = crate::policy::USER_SCOPES;

/// The scope a first-party sign-in (the password grant of the web client and apps) carries:
/// every user scope, plus `admin` for administrators, so first-party clients can do everything
/// the account's role allows.
pub fn first_party_scope(user: &UserRecord) -> String {
    if user.is_admin {
        format!("{DEFAULT_SCOPE} admin")
    } else {
        DEFAULT_SCOPE.to_owned()
    }
}

fn account(user: &UserRecord) -> Account {
    Account {
        user_id: user.id,
        username: user.username.clone(),
        created_at: user.created_at,
    }
}

fn invalid_grant(message: &str) -> CoreError {
    CoreError::new(ErrorCode::InvalidCredentials, message)
}

/// The answer to a suspended account's sign-in or refresh (the token endpoint turns it into
/// `invalid_grant`, as RFC 6749 requires).
fn suspended() -> CoreError {
    CoreError::forbidden("account suspended")
}

/// The key a sign-in attempt is counted under. An IPv6 client usually holds a whole /64 and
/// could try from a new address each time, so IPv6 addresses count by their /64; an IPv4
/// address mapped into IPv6 counts as itself.
pub(crate) fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(octets))
            }
        },
    }
}

/// What a correct password grant yields: tokens, or for an account with two-factor sign-in a
/// challenge to complete with a code ([`Core::complete_second_factor`]).
#[derive(Debug)]
pub enum PasswordGrant {
    Tokens(TokenResponse),
    SecondFactor(tidings_proto::account::SecondFactorRequired),
}

/// Why a password sign-in failed, for the audit log (never shown to the client).
enum CredentialFailure {
    UnknownUser,
    WrongPassword(UserId),
    Suspended(UserId),
    Deleted(UserId),
}

impl Core {
    /// `POST /api/v1/accounts`: self-service registration, subject to the registration mode.
    pub async fn register(&self, req: RegisterRequest) -> CoreResult<Account> {
        let mode = self.inner.config.accounts.registration;
        if mode == RegistrationMode::Closed {
            return Err(CoreError::new(
                ErrorCode::RegistrationClosed,
                "registration is closed on this server",
            ));
        }
        let username = normalize_username(&req.username)?;
        let invite = match (mode, req.invite_code) {
            (RegistrationMode::Invite, Some(code)) => Some(tokens::hash_token(&code)),
            (RegistrationMode::Invite, None) => {
                return Err(CoreError::new(
                    ErrorCode::RegistrationClosed,
                    "registration needs an invite code",
                ));
            }
            _ => None,
        };
        let password = req.password;
        let hash = self.new_password_hash(&username, password.clone()).await?;
        let now = self.now_ms();
        let created = match invite {
            Some(invite) => self
                .inner
                .store
                .create_user_with_invite(&username, &hash, invite, now)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CoreError::new(
                        ErrorCode::RegistrationClosed,
                        "the invite code is unknown, expired or used up",
                    ),
                    other => other.into(),
                })?,
            None => self.inner.store.create_user(&username, &hash, now).await?,
        };
        self.refresh_scram_credentials(created.id, &password, &hash)
            .await;
        tracing::info!(user_id = %created.id, "Account registered.");
        Ok(account(&created))
    }

    /// Creates an account regardless of the registration mode (operators only); with
    /// `admin`, it also gets the server administrator role (how the first one is made).
    pub async fn admin_create_user(
        &self,
        username: &str,
        password: String,
        admin: bool,
    ) -> CoreResult<Account> {
        let username = normalize_username(username)?;
        let hash = self.new_password_hash(&username, password.clone()).await?;
        let created = self
            .inner
            .store
            .create_user(&username, &hash, self.now_ms())
            .await?;
        self.refresh_scram_credentials(created.id, &password, &hash)
            .await;
        if admin {
            self.set_server_admin(AdminActor::Operator, created.id, true)
                .await?;
        }
        Ok(account(&created))
    }

    /// Lists accounts in id order (operators only).
    pub async fn admin_list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> CoreResult<Vec<Account>> {
        let users = self.inner.store.list_users(after, limit).await?;
        Ok(users.iter().map(account).collect())
    }

    /// The steps of [`Core::admin_reset_password`], which runs them detached.
    async fn admin_reset_password_steps(
        &self,
        username: &str,
        password: String,
    ) -> CoreResult<usize> {
        let username = normalize_username(username)?;
        let user = self
            .inner
            .store
            .user_by_name(&username)
            .await?
            .ok_or_else(|| CoreError::not_found("user"))?;
        let hash = self.new_password_hash(&username, password.clone()).await?;
        let entry = self.new_audit(kinds::PASSWORD_RESET, None, Some(user.id));
        let revoked = self
            .inner
            .store
            .replace_password(user.id, &hash, None, self.now_ms(), entry)
            .await?;
        self.refresh_scram_credentials(user.id, &password, &hash)
            .await;
        for device_id in &revoked {
            self.announce_revoked(user.id, *device_id).await;
        }
        Ok(revoked.len())
    }

    /// Creates an invite code valid for `uses` registrations during `ttl_secs`.
    pub async fn admin_create_invite(&self, uses: u32, ttl_secs: u64) -> CoreResult<String> {
        let code = tokens::random_token();
        let now = self.now_ms();
        self.inner
            .store
            .create_invite(NewInvite {
                code_hash: tokens::hash_token(&code),
                created_at: now,
                expires_at: now.saturating_add((ttl_secs as i64).saturating_mul(1000)),
                uses: uses.max(1),
            })
            .await?;
        Ok(code)
    }

    /// Checks a new password against the policy and hashes it: the one path every password
    /// that gets stored goes through. Once the hash is stored, the caller passes the same
    /// password and hash to [`Core::refresh_scram_credentials`] (SCRAM keys for XMPP).
    async fn new_password_hash(&self, username: &str, password: String) -> CoreResult<String> {
        check_password(
            &password,
            username,
            self.inner.config.accounts.min_password_length,
        )?;
        self.inner.hashing.hash(password).await
    }

    /// Checks a username and password; on success returns the user. Unknown users cost the
    /// same hashing time as known ones. A suspended account is named as such only to someone
    /// who knows its password.
    async fn check_credentials(
        &self,
        username: &str,
        password: String,
    ) -> CoreResult<Result<UserRecord, CredentialFailure>> {
        let user = match normalize_username(username) {
            Ok(name) => self.inner.store.user_by_name(&name).await?,
            Err(_) => None,
        };
        let phc = match &user {
            Some(u) if u.deleted_at.is_none() => u.password_hash.clone(),
            _ => self
                .inner
                .dummy_hash
                .get_or_try_init(|| self.inner.hashing.dummy_hash())
                .await?
                .clone(),
        };
        let ok = self.inner.hashing.verify(password.clone(), phc).await?;
        Ok(match user {
            None => Err(CredentialFailure::UnknownUser),
            Some(u) if u.deleted_at.is_some() => Err(CredentialFailure::Deleted(u.id)),
            Some(u) if !ok => Err(CredentialFailure::WrongPassword(u.id)),
            Some(u) if u.disabled => Err(CredentialFailure::Suspended(u.id)),
            Some(u) => {
                // Accounts made before SCRAM was supported get their keys at the first
                // sign-in that proves the password.
                self.ensure_scram_credentials(&u, &password).await;
                Ok(u)
            }
        })
    }

    /// Checks a username and password for a sign-in through another path than the password
    /// grant (the authorization page); failures are audited and answered like the password
    /// grant's.
    pub(crate) async fn sign_in_check(
        &self,
        username: &str,
        password: String,
        second_factor: Option<&str>,
        address: Option<IpAddr>,
    ) -> CoreResult<UserRecord> {
        match self.check_credentials(username, password).await? {
            Ok(user) => {
                // A two-factor account approves only with a code as well (the page asks).
                if self.needs_second_factor(user.id).await? {
                    let Some(code) = second_factor.filter(|c| !c.trim().is_empty()) else {
                        return Err(CoreError::new(
                            ErrorCode::SecondFactorRequired,
                            "this account needs a code from its authenticator app",
                        ));
                    };
                    if let Err(e) = self.spend_second_factor(user.id, code, true).await {
                        if e.code == ErrorCode::InvalidCredentials {
                            self.audit_sign_in_failure(
                                Some(user.id),
                                address,
                                "wrong_second_factor",
                            )
                            .await;
                        }
                        return Err(e);
                    }
                }
                Ok(user)
            }
            Err(failure) => {
                let (user, reason, error) = match failure {
                    CredentialFailure::UnknownUser => (None, "unknown_user", None),
                    CredentialFailure::WrongPassword(id) => (Some(id), "wrong_password", None),
                    CredentialFailure::Deleted(id) => (Some(id), "deleted", None),
                    CredentialFailure::Suspended(id) => (Some(id), "suspended", Some(suspended())),
                };
                self.audit_sign_in_failure(user, address, reason).await;
                Err(error.unwrap_or_else(|| invalid_grant("wrong username or password")))
            }
        }
    }

    /// The steps of [`Core::password_grant`], which runs them detached.
    async fn password_grant_steps(
        &self,
        username: &str,
        password: String,
        device_name: Option<String>,
        address: Option<IpAddr>,
    ) -> CoreResult<PasswordGrant> {
        let user = match self.check_credentials(username, password).await? {
            Ok(user) => user,
            Err(failure) => {
                let (user, reason, error) = match failure {
                    CredentialFailure::UnknownUser => (None, "unknown_user", None),
                    CredentialFailure::WrongPassword(id) => (Some(id), "wrong_password", None),
                    CredentialFailure::Deleted(id) => (Some(id), "deleted", None),
                    CredentialFailure::Suspended(id) => (Some(id), "suspended", Some(suspended())),
                };
                self.audit_sign_in_failure(user, address, reason).await;
                return Err(error.unwrap_or_else(|| invalid_grant("wrong username or password")));
            }
        };
        if self.needs_second_factor(user.id).await? {
            // No device and no tokens yet: the second step signs in (twofactor.rs).
            return Ok(PasswordGrant::SecondFactor(
                self.second_factor_challenge(user.id),
            ));
        }
        self.issue_sign_in(&user, device_name, address, None)
            .await
            .map(PasswordGrant::Tokens)
    }

    /// Signs `user` in as a new device after every check passed: the device, its first
    /// refresh token and the audit entry (naming the second factor used, if any) in one
    /// transaction.
    pub(crate) async fn issue_sign_in(
        &self,
        user: &UserRecord,
        device_name: Option<String>,
        address: Option<IpAddr>,
        second_factor: Option<&str>,
    ) -> CoreResult<TokenResponse> {
        let name = device_name
            .map(|n| n.trim().chars().take(64).collect::<String>())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Unnamed device".to_string());
        let refresh = tokens::random_token();
        let mut entry = self.new_audit(kinds::SIGN_IN_SUCCESS, Some(user.id), Some(user.id));
        entry.address = address.map(|a| a.to_string());
        entry.detail = match second_factor {
            Some(factor) => serde_json::json!({ "device_name": name, "second_factor": factor }),
            None => serde_json::json!({ "device_name": name }),
        };
        let device = self
            .inner
            .store
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
                // Suspended or deleted after the password check.
                StoreError::NotFound => suspended(),
                other => other.into(),
            })?;
        tracing::info!(user_id = %user.id, device_id = %device.id, "Signed in.");
        Ok(self.token_response(
            user.id,
            device.id,
            refresh,
            DEFAULT_CLIENT_ID,
            &first_party_scope(user),
        ))
    }

    /// The steps of [`Core::device_sign_in`], which runs them detached.
    async fn device_sign_in_steps(
        &self,
        username: &str,
        password: String,
        device_name: String,
        address: Option<IpAddr>,
    ) -> CoreResult<String> {
        let user = self
            .verify_password_steps(username, password, address)
            .await?;
        self.named_device_steps(user, device_name, address).await
    }

    /// Checks a username and password, auditing a failure. Returns the account's id.
    async fn verify_password_steps(
        &self,
        username: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> CoreResult<UserId> {
        match self.check_credentials(username, password).await? {
            // Password-only transports (XMPP SASL PLAIN, MQTT CONNECT) cannot carry a second
            // factor: a two-factor account signs in there with an access token instead.
            Ok(user) if self.needs_second_factor(user.id).await? => Err(CoreError::new(
                ErrorCode::SecondFactorRequired,
                "this account uses two-factor sign-in: use an access token instead of the password",
            )),
            Ok(user) => Ok(user.id),
            Err(failure) => {
                let (user, reason, error) = match failure {
                    CredentialFailure::UnknownUser => (None, "unknown_user", None),
                    CredentialFailure::WrongPassword(id) => (Some(id), "wrong_password", None),
                    CredentialFailure::Deleted(id) => (Some(id), "deleted", None),
                    CredentialFailure::Suspended(id) => (Some(id), "suspended", Some(suspended())),
                };
                self.audit_sign_in_failure(user, address, reason).await;
                Err(error.unwrap_or_else(|| invalid_grant("wrong username or password")))
            }
        }
    }

    /// An access token for the device of `user` named `device_name`, creating the device (and
    /// auditing the sign-in) the first time. The caller has verified the user's credentials.
    async fn named_device_steps(
        &self,
        user: UserId,
        device_name: String,
        address: Option<IpAddr>,
    ) -> CoreResult<String> {
        let name: String = device_name.trim().chars().take(64).collect();
        let existing = self
            .inner
            .store
            .devices_of(user)
            .await?
            .into_iter()
            .find(|d| d.name == name);
        let device_id = match existing {
            Some(device) => device.id,
            None => {
                // The device gets a refresh token like any other, which nobody holds: it
                // expires unused, and the device signs in again with its password.
                let refresh = tokens::random_token();
                let mut entry = self.new_audit(kinds::SIGN_IN_SUCCESS, Some(user), Some(user));
                entry.address = address.map(|a| a.to_string());
                entry.detail = serde_json::json!({ "device_name": name });
                self.inner
                    .store
                    .sign_in(
                        user,
                        &name,
                        tokens::hash_token(&refresh),
                        self.refresh_expiry(),
                        self.now_ms(),
                        entry,
                    )
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound => suspended(),
                        other => other.into(),
                    })?
                    .id
            }
        };
        // The scope of a first-party sign-in follows the account's role, read now.
        let record = self
            .inner
            .store
            .user_by_id(user)
            .await?
            .ok_or_else(suspended)?;
        Ok(self.access_token(user, device_id, &first_party_scope(&record)))
    }

    /// The steps of [`Core::refresh_grant`], which runs them detached.
    async fn refresh_grant_steps(
        &self,
        refresh_token: &str,
        client: Option<&crate::oauth::ClientAuth>,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        let old_hash = tokens::hash_token(refresh_token);
        let Some(device_id) = self.inner.store.refresh_token_device(old_hash).await? else {
            return Err(invalid_grant("unknown refresh token"));
        };
        let Some(device) = self.inner.store.device(device_id).await? else {
            return Err(invalid_grant("unknown refresh token"));
        };
        // Suspension revokes every device, so this only answers a token that raced it, with
        // the clearer reason.
        let Some(user) = self.inner.store.user_by_id(device.user_id).await? else {
            return Err(invalid_grant("unknown refresh token"));
        };
        if user.disabled {
            return Err(suspended());
        }
        // A device signed in through a registered client keeps that client's id and the scope
        // the user consented to; a confidential client must authenticate to refresh.
        let grant = self.inner.store.device_grant(device.id).await?;
        if let Some(grant) = &grant {
            self.check_refreshing_client(grant, client).await?;
        }
        let fresh = tokens::random_token();
        let mut on_reuse = self.new_audit(kinds::TOKEN_REUSE, None, Some(device.user_id));
        on_reuse.address = address.map(|a| a.to_string());
        on_reuse.detail = serde_json::json!({ "device_id": device.id.0 });
        let outcome = self
            .inner
            .store
            .rotate_refresh_token(
                old_hash,
                self.new_refresh(&fresh, device.user_id, device.id),
                self.now_ms(),
                on_reuse,
            )
            .await?;
        match outcome {
            RotateOutcome::Rotated { user_id, device_id } => {
                self.inner
                    .store
                    .touch_device(device_id, self.now_ms())
                    .await?;
                Ok(match &grant {
                    Some(grant) => self.token_response(
                        user_id,
                        device_id,
                        fresh,
                        &grant.client_id,
                        &grant.scope,
                    ),
                    None => self.token_response(
                        user_id,
                        device_id,
                        fresh,
                        DEFAULT_CLIENT_ID,
                        &first_party_scope(&user),
                    ),
                })
            }
            RotateOutcome::ReuseDetected { user_id, device_id } => {
                tracing::warn!(%user_id, %device_id, "Refresh token reused; device signed out.");
                self.announce_revoked(user_id, device_id).await;
                Err(invalid_grant(
                    "refresh token was already used; the device is signed out",
                ))
            }
            RotateOutcome::Invalid => Err(invalid_grant("refresh token is expired or revoked")),
        }
    }

    /// The steps of [`Core::revoke_token`], which runs them detached.
    async fn revoke_token_steps(&self, token: &str) -> CoreResult<()> {
        let device = match self
            .inner
            .store
            .refresh_token_device(tokens::hash_token(token))
            .await?
        {
            Some(device_id) => self.inner.store.device(device_id).await?,
            None => match self.verify_claims(token) {
                Ok(claims) => self.inner.store.device(claims.device_id()).await?,
                Err(_) => None,
            },
        };
        if let Some(device) = device {
            let mut entry = self.new_audit(
                kinds::DEVICE_SIGN_OUT,
                Some(device.user_id),
                Some(device.user_id),
            );
            entry.detail = serde_json::json!({ "device_id": device.id.0, "via": "revocation" });
            if !self
                .inner
                .store
                .revoke_device(device.user_id, device.id, self.now_ms(), Some(entry))
                .await?
            {
                return Ok(());
            }
            self.announce_revoked(device.user_id, device.id).await;
        }
        Ok(())
    }

    fn verify_claims(&self, token: &str) -> Result<AccessClaims, TokenError> {
        tokens::verify_access(
            &self.inner.keys,
            token,
            &self.inner.issuer,
            self.now_ms().div_euclid(1000),
        )
    }

    /// Validates an access token and the device behind it.
    pub async fn authenticate(&self, access_token: &str) -> CoreResult<Caller> {
        let claims = self.verify_claims(access_token).map_err(|e| match e {
            TokenError::Expired => CoreError::new(ErrorCode::TokenExpired, "access token expired"),
            _ => CoreError::unauthenticated("invalid access token"),
        })?;
        let user_id = claims
            .user_id()
            .ok_or_else(|| CoreError::unauthenticated("invalid access token"))?;
        match self.inner.store.device(claims.device_id()).await? {
            Some(d) if d.user_id == user_id && d.revoked_at.is_none() => Ok(Caller {
                user_id,
                device_id: d.id,
                expires_at: claims.exp.saturating_mul(1000),
                // First-party tokens may do whatever the account's role allows, including
                // tokens issued before scopes were split (`messages profile devices`).
                scopes: if claims.client_id == DEFAULT_CLIENT_ID {
                    crate::policy::Scopes::FIRST_PARTY
                } else {
                    crate::policy::Scopes::parse(&claims.scope)
                },
            }),
            _ => Err(CoreError::unauthenticated("the device has been signed out")),
        }
    }

    /// The caller's account.
    pub async fn me(&self, caller: &Caller) -> CoreResult<Account> {
        let user = self
            .inner
            .store
            .user_by_id(caller.user_id)
            .await?
            .ok_or_else(|| CoreError::unauthenticated("account no longer exists"))?;
        Ok(account(&user))
    }

    pub async fn devices(&self, caller: &Caller) -> CoreResult<DeviceList> {
        let devices = self.inner.store.devices_of(caller.user_id).await?;
        Ok(DeviceList {
            devices: devices
                .into_iter()
                .map(|d| Device {
                    current: d.id == caller.device_id,
                    device_id: d.id,
                    name: d.name,
                    created_at: d.created_at,
                    last_active_at: d.last_active_at,
                })
                .collect(),
        })
    }

    /// The steps of [`Core::sign_out_device`], which runs them detached.
    async fn sign_out_device_steps(&self, caller: &Caller, device: DeviceId) -> CoreResult<()> {
        let mut entry = self.new_audit(
            kinds::DEVICE_SIGN_OUT,
            Some(caller.user_id),
            Some(caller.user_id),
        );
        entry.detail = serde_json::json!({ "device_id": device.0 });
        if !self
            .inner
            .store
            .revoke_device(caller.user_id, device, self.now_ms(), Some(entry))
            .await?
        {
            return Err(CoreError::not_found("device"));
        }
        self.announce_revoked(caller.user_id, device).await;
        Ok(())
    }

    /// The steps of [`Core::change_password`], which runs them detached.
    async fn change_password_steps(
        &self,
        caller: &Caller,
        req: ChangePasswordRequest,
    ) -> CoreResult<()> {
        let user = self.me(caller).await?;
        if self
            .check_credentials(&user.username, req.current_password)
            .await?
            .is_err()
        {
            return Err(CoreError::new(
                ErrorCode::InvalidCredentials,
                "current password is wrong",
            ));
        }
        let new_password = req.new_password;
        let hash = self
            .new_password_hash(&user.username, new_password.clone())
            .await?;
        let entry = self.new_audit(
            kinds::PASSWORD_CHANGE,
            Some(caller.user_id),
            Some(caller.user_id),
        );
        let revoked = self
            .inner
            .store
            .replace_password(
                caller.user_id,
                &hash,
                Some(caller.device_id),
                self.now_ms(),
                entry,
            )
            .await?;
        self.refresh_scram_credentials(caller.user_id, &new_password, &hash)
            .await;
        for device_id in revoked {
            self.announce_revoked(caller.user_id, device_id).await;
        }
        Ok(())
    }

    /// When a refresh token issued now expires.
    pub(crate) fn refresh_expiry(&self) -> i64 {
        let ttl_ms = (self.inner.config.tokens.refresh_ttl_secs as i64).saturating_mul(1000);
        self.now_ms().saturating_add(ttl_ms)
    }

    fn new_refresh(&self, token: &str, user: UserId, device: DeviceId) -> NewRefreshToken {
        NewRefreshToken {
            token_hash: tokens::hash_token(token),
            device_id: device,
            user_id: user,
            created_at: self.now_ms(),
            expires_at: self.refresh_expiry(),
        }
    }

    /// A signed first-party access token for `device` of `user`, valid for
    /// `tokens.access_ttl_secs`.
    fn access_token(&self, user: UserId, device: DeviceId, scope: &str) -> String {
        self.token_response(user, device, String::new(), DEFAULT_CLIENT_ID, scope)
            .access_token
    }

    /// Signs an access token for `device` of `user` issued to `client_id` with `scope`, and
    /// wraps it with `refresh` (empty when none is issued) in a token response.
    pub(crate) fn token_response(
        &self,
        user: UserId,
        device: DeviceId,
        refresh: String,
        client_id: &str,
        scope: &str,
    ) -> TokenResponse {
        let ttl = self.inner.config.tokens.access_ttl_secs;
        self.signed_token_response(user, device, refresh, client_id, scope, ttl)
    }

    /// [`Core::token_response`] with an access token valid for `ttl` seconds.
    pub(crate) fn signed_token_response(
        &self,
        user: UserId,
        device: DeviceId,
        refresh: String,
        client_id: &str,
        scope: &str,
        ttl: u64,
    ) -> TokenResponse {
        let now_secs = self.now_ms().div_euclid(1000);
        let claims = AccessClaims {
            iss: self.inner.issuer.clone(),
            sub: user.0.to_string(),
            did: device.0,
            client_id: client_id.into(),
            scope: scope.into(),
            iat: now_secs,
            exp: now_secs.saturating_add(ttl as i64),
            jti: tokens::random_token(),
        };
        TokenResponse {
            access_token: tokens::sign_access(&self.inner.keys, &claims),
            token_type: "Bearer".into(),
            expires_in: ttl,
            refresh_token: refresh,
            scope: scope.into(),
            device_id: device,
            user_id: user,
        }
    }

    /// Tells every node to close the device's connections.
    pub(crate) async fn announce_revoked(&self, user_id: UserId, device_id: DeviceId) {
        if let Err(e) = self
            .inner
            .bus
            .publish(BusEvent::DeviceRevoked { user_id, device_id })
            .await
        {
            tracing::warn!(%e, %device_id, "Could not announce a signed-out device.");
        }
    }
}

/// The public faces of the multi-step operations above. Each runs detached (see
/// [`Core::detached`]): a client that hangs up must not leave a device without its token, a new
/// password with the old devices still signed in, or a sign-out that nobody announced.
impl Core {
    /// Sets a new password and signs out every device (operators only).
    /// Returns how many devices were signed out.
    pub async fn admin_reset_password(
        &self,
        username: &str,
        password: String,
    ) -> CoreResult<usize> {
        let username = username.to_owned();
        self.detached(move |core| async move {
            core.admin_reset_password_steps(&username, password).await
        })
        .await
    }

    /// RFC 6749 resource owner password grant: signs in and creates a device. `address` is
    /// the client's network address: attempts are limited per address
    /// (`limits.sign_in_attempts_per_address_per_minute`) and recorded in the audit log.
    pub async fn password_grant(
        &self,
        username: &str,
        password: String,
        device_name: Option<String>,
        address: Option<IpAddr>,
    ) -> CoreResult<PasswordGrant> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        let username = username.to_owned();
        self.detached(move |core| async move {
            core.password_grant_steps(&username, password, device_name, address)
                .await
        })
        .await
    }

    /// Signs in with a password as the device named `device_name`, creating that device the
    /// first time: for transports where the client names its device on every connection (an
    /// MQTT client id) rather than holding tokens. Returns an access token for the device.
    /// Attempts are limited per address and audited like the password grant.
    pub async fn device_sign_in(
        &self,
        username: &str,
        password: String,
        device_name: String,
        address: Option<IpAddr>,
    ) -> CoreResult<String> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        let username = username.to_owned();
        self.detached(move |core| async move {
            core.device_sign_in_steps(&username, password, device_name, address)
                .await
        })
        .await
    }

    /// Checks a username and password without signing in a device: for transports whose
    /// authentication step comes before the client names its device (XMPP authenticates with
    /// SASL, then binds a resource). Limited per address and audited like the password grant;
    /// follow it with [`Core::device_of_verified_user`].
    pub async fn verify_password(
        &self,
        username: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> CoreResult<UserId> {
        if let Some(address) = address {
            self.inner
                .sign_in_limiter
                .check(&limit_key(address), self.now_ms())
                .map_err(|wait| CoreError::rate_limited("sign-in attempts", wait))?;
        }
        let username = username.to_owned();
        self.detached(move |core| async move {
            core.verify_password_steps(&username, password, address)
                .await
        })
        .await
    }

    /// An access token for the device of `user` named `device_name` (created the first time),
    /// for a user whose credentials were just checked by [`Core::verify_password`]. Refused for
    /// suspended or deleted accounts.
    pub async fn device_of_verified_user(
        &self,
        user: UserId,
        device_name: String,
        address: Option<IpAddr>,
    ) -> CoreResult<String> {
        match self.inner.store.user_by_id(user).await? {
            Some(u) if u.disabled => return Err(suspended()),
            Some(u) if u.deleted_at.is_none() => {}
            _ => return Err(CoreError::unauthenticated("this account no longer exists")),
        }
        self.detached(move |core| async move {
            core.named_device_steps(user, device_name, address).await
        })
        .await
    }

    /// A fresh access token for the caller's device, for a connection that signed in with a
    /// password (see [`Core::device_sign_in`]) and stays open past its token's lifetime. Refused
    /// once the device is signed out or the account suspended or deleted, so renewal never
    /// outlives the rights it renews.
    pub async fn renew_device_token(&self, caller: &Caller) -> CoreResult<String> {
        let device = self.inner.store.device(caller.device_id).await?;
        if device.is_none_or(|d| d.revoked_at.is_some() || d.user_id != caller.user_id) {
            return Err(CoreError::unauthenticated(
                "this device has been signed out",
            ));
        }
        match self.inner.store.user_by_id(caller.user_id).await? {
            Some(user) if user.disabled => Err(suspended()),
            Some(user) if user.deleted_at.is_none() => {
                Ok(self.access_token(caller.user_id, caller.device_id, &first_party_scope(&user)))
            }
            _ => Err(CoreError::unauthenticated("this account no longer exists")),
        }
    }

    /// RFC 6749 refresh grant with rotation; a reused token revokes its device (and is recorded
    /// with `address` in the audit log).
    pub async fn refresh_grant(
        &self,
        refresh_token: &str,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        self.refresh_grant_as(refresh_token, None, address).await
    }

    /// [`Core::refresh_grant`] with the client credentials the token request carried (needed
    /// for tokens of confidential registered clients).
    pub async fn refresh_grant_as(
        &self,
        refresh_token: &str,
        client: Option<crate::oauth::ClientAuth>,
        address: Option<IpAddr>,
    ) -> CoreResult<TokenResponse> {
        let token = refresh_token.to_owned();
        self.detached(move |core| async move {
            core.refresh_grant_steps(&token, client.as_ref(), address)
                .await
        })
        .await
    }

    /// RFC 7009 revocation. Revoking a refresh token signs its device out; revoking an access
    /// token signs out the device it was issued to. Unknown tokens are not an error.
    pub async fn revoke_token(&self, token: &str) -> CoreResult<()> {
        let token = token.to_owned();
        self.detached(move |core| async move { core.revoke_token_steps(&token).await })
            .await
    }

    /// Signs out one of the caller's devices (possibly the current one).
    pub async fn sign_out_device(&self, caller: &Caller, device: DeviceId) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.sign_out_device_steps(&caller, device).await })
            .await
    }

    /// Changes the password after checking the current one; signs out every other device.
    pub async fn change_password(
        &self,
        caller: &Caller,
        req: ChangePasswordRequest,
    ) -> CoreResult<()> {
        let caller = *caller;
        self.detached(move |core| async move { core.change_password_steps(&caller, req).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::limit_key;
    use std::net::IpAddr;

    #[test]
    fn ipv6_attempts_count_per_64_and_mapped_ipv4_as_itself() {
        let key = |s: &str| limit_key(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
