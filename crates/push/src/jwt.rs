//! What the FCM and APNs providers share: PEM files, JWT assembly, and reading a provider's
//! answer into a [`PushOutcome`].

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use tidings_core::push::PushOutcome;

/// Why a provider's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(&'static str),
}

/// The DER inside the first PEM block labelled `label` (`PRIVATE KEY`).
pub(crate) fn pem_der(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

/// `base64url(header).base64url(claims)`, the part of a JWT its signature covers.
pub(crate) fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

/// `signing_input.base64url(signature)`.
pub(crate) fn assemble(signing_input: String, signature: &[u8]) -> String {
    format!("{signing_input}.{}", B64.encode(signature))
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads a file an operator supplied, naming it in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, CredentialError> {
    std::fs::read_to_string(path).map_err(|source| CredentialError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Retry for 429 and 5xx (with the provider's `Retry-After`), the given outcome otherwise.
pub(crate) fn retry_or(
    status: u16,
    retry_after_ms: Option<u64>,
    otherwise: PushOutcome,
) -> PushOutcome {
    match status {
        429 | 500..=599 => PushOutcome::Retry {
            after_ms: retry_after_ms,
        },
        _ => otherwise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_among_others() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nAQID\nBA==\n-----END PRIVATE KEY-----\n";
        assert_eq!(pem_der(text, "PRIVATE KEY"), Some(vec![1, 2, 3, 4]));
        assert_eq!(pem_der(text, "EC PRIVATE KEY"), None);
    }
}
