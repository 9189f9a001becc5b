//! The Rust client of Tidings.
//!
//! # Layout
//! - [`Client`]: unauthenticated REST calls (register, OAuth token endpoint) and
//!   [`Client::authed`] for calls with an access token ([`AuthedClient`]).
//! - [`Connection`]: one native-protocol WebSocket connection. Requests are matched to their
//!   responses by id; server events arrive on [`Connection::next_event`].
//! - Files: [`AuthedClient::upload`] (tus 1.0.0, resuming from the server's offset after a
//!   failed request) and [`AuthedClient::download`] (with `Range`); end-to-end-encrypted
//!   attachments ([`encrypt_file`], [`AuthedClient::upload_encrypted`], scheme
//!   `tidings.file.v1`).
//! - [`Cursors`]: what a client holds per conversation, to resume with `sync` after a reconnect.
//!
//! Tests, the CLI and the load generator all use this crate, so it speaks only the public
//! protocol from `tidings-proto`.

mod connection;
mod e2e_file;
mod files;
mod groups;
mod push;
mod rest;
mod rich;

pub use connection::{ConnectOptions, Connection, Cursors};
pub use e2e_file::{CHUNK_BYTES, FILE_SCHEME, FileKey, decrypt_file, encrypt_file};
pub use files::{TUS_VERSION, UPLOADS_PATH};
pub use rest::{AuthedClient, Client};

use tidings_proto::ErrorCode;
use tidings_proto::rest::{OAuthError, Problem};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The server answered with a problem document.
    #[error("HTTP {status}: {} ({:?})", problem.detail.as_deref().unwrap_or(""), problem.code)]
    Problem { status: u16, problem: Problem },
    /// The OAuth token endpoint refused the grant.
    #[error("OAuth {status}: {}", error.error)]
    OAuth { status: u16, error: OAuthError },
    /// The server answered a WebSocket request with an error frame.
    #[error("server error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    /// The connection closed before the answer arrived.
    #[error("connection closed")]
    Closed,
    /// Network or protocol failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The server sent something this client does not understand.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl SdkError {
    /// The stable error code, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Problem { problem, .. } => Some(problem.code),
            SdkError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type SdkResult<T> = Result<T, SdkError>;
