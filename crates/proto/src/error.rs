//! Stable error codes: the contract clients branch on, shared by WebSocket error frames and problem documents.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A machine-readable error code. Codes are never renamed; new ones may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body is not valid JSON, or does not match the expected shape.
    MalformedRequest,
    /// The frame's `type` is not one this server knows.
    UnknownFrame,
    /// The frame or body exceeds the configured size limit.
    TooLarge,
    /// A field has a value outside its rules (username format, password policy, empty text...).
    InvalidField,
    /// No valid credentials were presented, or the connection has not authenticated yet.
    Unauthenticated,
    /// The access token has expired; refresh it and authenticate again.
    TokenExpired,
    /// Username or password is wrong.
    InvalidCredentials,
    /// The caller may not do this.
    Forbidden,
    /// The thing does not exist, or the caller may not know it exists.
    NotFound,
    /// The username is taken, or the request conflicts with existing state.
    Conflict,
    /// Registration is closed, or needs a valid invite code.
    RegistrationClosed,
    /// The conversation has reached its member limit.
    LimitExceeded,
    /// Too many requests; retry later.
    RateLimited,
    /// The connection's outbound queue overflowed; reconnect and sync.
    SlowConsumer,
    /// The server is shutting down or a dependency is unavailable; retry later.
    Unavailable,
    /// Something failed inside the server; the details are in the server log, not here.
    Internal,
    /// The bytes of an upload request do not match the checksum the client sent (tus 460);
    /// nothing of that request was kept.
    ChecksumMismatch,
    /// The thing existed but is gone for good (an expired upload).
    Gone,
    /// The request would take the user over their storage quota.
    QuotaExceeded,
    /// The client speaks a protocol version this server does not (tus `Tus-Resumable`).
    VersionUnsupported,
    /// The access token does not carry the OAuth scope this request needs (RFC 6750
    /// `insufficient_scope`), or a client asked for a scope it may not have.
    InsufficientScope,
    /// The password was right, but this account needs a second factor (a TOTP or recovery
    /// code) too; password-only sign-in paths (XMPP, MQTT, the password grant without its
    /// second step) are refused with it.
    SecondFactorRequired,
}

impl ErrorCode {
    /// The HTTP status a problem document with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedRequest | ErrorCode::UnknownFrame | ErrorCode::InvalidField => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::InvalidCredentials
            | ErrorCode::SecondFactorRequired => 401,
            ErrorCode::Forbidden | ErrorCode::RegistrationClosed | ErrorCode::InsufficientScope => {
                403
            }
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::LimitExceeded => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::SlowConsumer | ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::ChecksumMismatch => 460,
            ErrorCode::Gone => 410,
            ErrorCode::QuotaExceeded => 413,
            ErrorCode::VersionUnsupported => 412,
        }
    }

    /// The snake_case name, as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::UnknownFrame => "unknown_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::Gone => "gone",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::VersionUnsupported => "version_unsupported",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::SecondFactorRequired => "second_factor_required",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_name() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::UnknownFrame,
            ErrorCode::TooLarge,
            ErrorCode::InvalidField,
            ErrorCode::Unauthenticated,
            ErrorCode::TokenExpired,
            ErrorCode::InvalidCredentials,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::RegistrationClosed,
            ErrorCode::LimitExceeded,
            ErrorCode::RateLimited,
            ErrorCode::SlowConsumer,
            ErrorCode::Unavailable,
            ErrorCode::ChecksumMismatch,
            ErrorCode::Gone,
            ErrorCode::QuotaExceeded,
            ErrorCode::VersionUnsupported,
            ErrorCode::InsufficientScope,
            ErrorCode::SecondFactorRequired,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
