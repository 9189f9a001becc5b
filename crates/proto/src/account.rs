//! REST bodies of account security: two-factor sign-in (TOTP and recovery codes), the
//! second step of a password sign-in, and account deletion (docs/accounts.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/account/two-factor`: whether sign-ins of this account need a second factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TwoFactorStatus {
    /// A confirmed enrolment: password sign-ins need a code.
    pub enabled: bool,
    /// An enrolment was started and waits for its first code.
    pub pending: bool,
    /// Recovery codes not spent yet (0 unless enabled).
    pub recovery_codes_left: u32,
}

/// `POST /api/v1/account/two-factor`: starts an enrolment (the password proves it is the user).
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginTwoFactorRequest {
    pub password: String,
}

/// The new TOTP secret, shown once: the server never returns it again.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TwoFactorEnrolment {
    /// The secret in base32 (RFC 4648, no padding), for typing into an authenticator app.
    pub secret: String,
    /// The same as a key URI (`otpauth://totp/...`, SHA-1, 6 digits, 30 s), for a QR code.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TwoFactorEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwoFactorEnrolment { .. }")
    }
}

/// A body carrying one code: a 6-digit TOTP code, or (where the operation allows it) a
/// recovery code.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwoFactorCodeRequest {
    pub code: String,
}

impl std::fmt::Debug for TwoFactorCodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwoFactorCodeRequest { .. }")
    }
}

/// Single-use recovery codes, shown once; each replaces a TOTP code for one sign-in.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecoveryCodes {
    pub codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.codes.len())
    }
}

/// `POST /api/v1/account/two-factor/disable`: needs the password and a code (TOTP or
/// recovery).
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableTwoFactorRequest {
    pub password: String,
    pub code: String,
}

/// What the token endpoint answers (HTTP 401) to a correct password of an account with
/// two-factor sign-in: no tokens yet, but a short-lived challenge to complete with
/// `POST /api/v1/sign-in/second-factor`.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecondFactorRequired {
    /// Always `mfa_required`.
    pub error: String,
    pub error_description: String,
    /// The challenge; valid for `expires_in` seconds, for this account only.
    pub mfa_token: String,
    pub expires_in: u64,
}

/// `POST /api/v1/sign-in/second-factor`: completes a password sign-in with a TOTP code or a
/// recovery code; answers a `TokenResponse` like the password grant.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    pub mfa_token: String,
    pub code: String,
    /// The new device's name, as in the password grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// `DELETE /api/v1/account`: deletes the caller's account for good (docs/accounts.md). The
/// password is required, and a code when two-factor sign-in is on.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Bodies holding passwords, codes or challenges print only their type name, so a stray
/// `{:?}` can never put one in a log.
macro_rules! redacted_debug {
    ($($name:ident),*) => {$(
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), " { .. }"))
            }
        }
    )*};
}

redacted_debug!(
    BeginTwoFactorRequest,
    DisableTwoFactorRequest,
    SecondFactorRequired,
    SecondFactorRequest,
    DeleteAccountRequest
);
