//! Translating PostgreSQL errors into [`StoreError`]: the only place that knows constraint names
//! and SQLSTATE codes.

use tidings_store::StoreError;
use tokio_postgres::error::SqlState;

/// Why a query inside a transaction failed: a database error (which may call for a retry of the
/// whole transaction) or a decision of our own code (`NotFound`, `Conflict`, ...).
#[derive(Debug)]
pub(crate) enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(err: tokio_postgres::Error) -> Self {
        Fail::Db(err)
    }
}

impl From<StoreError> for Fail {
    fn from(err: StoreError) -> Self {
        Fail::Store(err)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => Fail::Db(err),
            other => Fail::Store(StoreError::Backend(format!(
                "no PostgreSQL connection: {other}"
            ))),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Fail>;

impl Fail {
    /// Whether running the transaction again may succeed: PostgreSQL aborted it to break a
    /// deadlock or a serialization conflict with a concurrent transaction (another node, say).
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Fail::Db(err) => matches!(
                err.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
            ),
            Fail::Store(_) => false,
        }
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Fail::Store(err) => err,
            Fail::Db(err) => map_db(err),
        }
    }
}

/// Maps a database error. Uniqueness violations become `Conflict` naming the rule, a missing
/// referenced row (foreign key) becomes `NotFound`, and everything else is a backend failure.
pub(crate) fn map_db(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(unique_rule(db.constraint().unwrap_or_default()));
        }
        if *db.code() == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound;
        }
        return StoreError::Backend(format!(
            "{}: {} ({})",
            db.severity(),
            db.message(),
            db.code().code()
        ));
    }
    StoreError::Backend(err.to_string())
}

/// Names a uniqueness rule from the constraint's name (see the migrations). The names are the
/// ones the `Store` docs use, the same the SQLite backend reports.
fn unique_rule(constraint: &str) -> &'static str {
    match constraint {
        "users_username_key" => "username",
        "users_pkey" => "user",
        "invites_pkey" => "invite",
        "devices_pkey" => "device",
        "refresh_tokens_pkey" => "refresh_token",
        "conversations_direct_key_key" => "direct_conversation",
        "conversations_pkey" => "conversation",
        "members_pkey" => "member",
        "blocks_pkey" => "block",
        "profiles_pkey" => "profile",
        "friend_requests_pkey" => "friend_request",
        "friendships_pkey" => "friendship",
        "uploads_pkey" => "upload",
        "files_pkey" => "file",
        "messages_seq_key" => "seq",
        "messages_client_id_key" => "client_msg_id",
        "external_identities_pkey" => "external_identity",
        "messages_pkey" => "message",
        "last_seen_pkey" => "last_seen",
        "oauth_clients_pkey" => "client_id",
        "device_authorizations_user_code_key" => "user_code",
        _ => "unique",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_uniqueness_rules() {
        assert_eq!(unique_rule("users_username_key"), "username");
        assert_eq!(unique_rule("messages_client_id_key"), "client_msg_id");
        assert_eq!(unique_rule("something_else"), "unique");
    }
}
