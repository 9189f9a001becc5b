//! The error every core operation returns: a stable code for the client and a message that is safe to show.

use tidings_proto::ErrorCode;
use tidings_store::StoreError;

/// A failed operation. `message` is shown to clients, so it never contains internals;
/// internal causes are logged where they happen.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CoreError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: how long to wait before trying again, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CoreError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Too many requests; `retry_after_ms` says when the next one will be accepted.
    pub fn rate_limited(what: &str, retry_after_ms: u64) -> Self {
        CoreError {
            code: ErrorCode::RateLimited,
            message: format!("too many {what}; retry in {} ms", retry_after_ms.max(1)),
            retry_after_ms: Some(retry_after_ms.max(1)),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// An internal failure: logs the cause and returns a message that reveals nothing.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, context, "Internal error.");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => CoreError::not_found("resource"),
            StoreError::Conflict(what) => {
                CoreError::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            StoreError::Backend(cause) => {
                tracing::error!(%cause, "Storage failed.");
                CoreError::new(ErrorCode::Unavailable, "storage unavailable, retry later")
            }
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
