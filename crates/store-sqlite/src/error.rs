//! Translating SQLite errors into [`StoreError`]: the only place that knows constraint names.

use rusqlite::ErrorCode;
use rusqlite::ffi;
use tidings_store::StoreError;

/// Maps any SQLite error. Uniqueness violations become `Conflict` naming the rule, a missing
/// referenced row (foreign key) becomes `NotFound`, and everything else is a backend failure.
pub(crate) fn backend(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &err
        && failure.code == ErrorCode::ConstraintViolation
    {
        let message = message.as_deref().unwrap_or_default();
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return StoreError::Conflict(unique_rule(message));
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound,
            _ => {}
        }
    }
    StoreError::Backend(err.to_string())
}

/// Names a uniqueness rule from SQLite's message ("UNIQUE constraint failed: users.username").
/// The names are the ones the `Store` docs use, not table names, so callers can match on them.
fn unique_rule(message: &str) -> &'static str {
    let columns = message.rsplit(": ").next().unwrap_or_default();
    match columns {
        "users.username" => "username",
        "users.id" => "user",
        "invites.code_hash" => "invite",
        "devices.id" => "device",
        "refresh_tokens.token_hash" => "refresh_token",
        "conversations.direct_key" => "direct_conversation",
        "conversations.id" => "conversation",
        "members.conversation_id, members.user_id" => "member",
        "blocks.blocker_id, blocks.blocked_id" => "block",
        "profiles.user_id" => "profile",
        "friend_requests.from_id, friend_requests.to_id" => "friend_request",
        "friendships.low_id, friendships.high_id" => "friendship",
        "uploads.id" => "upload",
        "files.id" => "file",
        "messages.conversation_id, messages.seq" => "seq",
        "messages.conversation_id, messages.sender_id, messages.client_msg_id" => "client_msg_id",
        "messages.id" => "message",
        "last_seen.user_id" => "last_seen",
        "oauth_clients.client_id" => "client_id",
        "device_authorizations.user_code" => "user_code",
        "external_identities.issuer, external_identities.subject" => "external_identity",
        _ => "unique",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_uniqueness_rules() {
        assert_eq!(
            unique_rule("UNIQUE constraint failed: users.username"),
            "username"
        );
        assert_eq!(
            unique_rule(
                "UNIQUE constraint failed: messages.conversation_id, messages.sender_id, messages.client_msg_id"
            ),
            "client_msg_id"
        );
        assert_eq!(unique_rule("something else"), "unique");
    }
}
