//! The OpenAPI 3.1 document at `/api/openapi.json`.
//!
//! Schemas come from the protocol crate's types through `schemars`; this file lists the
//! operations. A test checks that every route in the router appears here and vice versa.

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;
use tidings_proto::account::{
    BeginTwoFactorRequest, DeleteAccountRequest, DisableTwoFactorRequest, RecoveryCodes,
    SecondFactorRequest, TwoFactorCodeRequest, TwoFactorEnrolment, TwoFactorStatus,
};
use tidings_proto::contacts::*;
use tidings_proto::rest::*;

/// One operation: method, path, summary, request body schema, success status and schema.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: bool,
    request: Option<Value>,
    form: Option<Value>,
    status: u16,
    response: Option<Value>,
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}})
}

/// Builds the document (once; it never changes while the process runs).
pub fn openapi_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn serve() -> Json<Value> {
    Json(openapi_document().clone())
}

fn build() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let g = &mut generator;
    let token_form = json!({
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": [
                "authorization_code",
                "client_credentials",
                tidings_core::oauth::DEVICE_CODE_GRANT,
                "password",
                "refresh_token"
            ]},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "refresh_token": {"type": "string"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string", "description": "client_secret_post; or use HTTP Basic."},
            "code": {"type": "string"},
            "redirect_uri": {"type": "string"},
            "code_verifier": {"type": "string", "description": "PKCE (S256)."},
            "device_code": {"type": "string", "description": "The device code grant (RFC 8628)."},
            "device_name": {"type": "string", "description": "Name shown in the device list."}
        }
    });
    let device_authorization_form = json!({
        "type": "object",
        "required": ["client_id"],
        "properties": {
            "client_id": {"type": "string"},
            "client_secret": {"type": "string", "description": "Confidential clients; or use HTTP Basic."},
            "scope": {"type": "string"}
        }
    });
    let revoke_form = json!({
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}
    });
    let introspect_form = json!({
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"}
        }
    });
    let ops = vec![
        Op {
            method: "post",
            path: "/oauth/introspect",
            summary: "RFC 7662 token introspection for registered clients (HTTP Basic or form credentials).",
            auth: false,
            request: None,
            form: Some(introspect_form),
            status: 200,
            response: Some(schema::<tidings_proto::oauth::Introspection>(g)),
        },
        Op {
            method: "get",
            path: "/healthz",
            summary: "Liveness: the process answers.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Health>(g)),
        },
        Op {
            method: "get",
            path: "/readyz",
            summary: "Readiness: storage answers (503 otherwise).",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Health>(g)),
        },
        Op {
            method: "post",
            path: "/oauth/token",
            summary: "RFC 6749 token endpoint: authorization_code (PKCE S256), client_credentials (bot clients), device_code (RFC 8628), password and refresh_token grants.",
            auth: false,
            request: None,
            form: Some(token_form),
            status: 200,
            response: Some(schema::<TokenResponse>(g)),
        },
        Op {
            method: "post",
            path: "/oauth/device_authorization",
            summary: "RFC 8628 device authorization: a device code to poll with and a user code to enter at /oauth/device.",
            auth: false,
            request: None,
            form: Some(device_authorization_form),
            status: 200,
            response: Some(schema::<tidings_proto::oauth::DeviceAuthorizationResponse>(
                g,
            )),
        },
        Op {
            method: "post",
            path: "/oauth/revoke",
            summary: "RFC 7009 revocation; signs the token's device out.",
            auth: false,
            request: None,
            form: Some(revoke_form),
            status: 200,
            response: None,
        },
        Op {
            method: "get",
            path: "/.well-known/oauth-authorization-server",
            summary: "RFC 8414 authorization server metadata.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(json!({"type": "object"})),
        },
        Op {
            method: "get",
            path: "/.well-known/jwks.json",
            summary: "The public keys that sign access tokens.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(json!({"type": "object"})),
        },
        Op {
            method: "post",
            path: "/api/v1/accounts",
            summary: "Register an account.",
            auth: false,
            request: Some(schema::<RegisterRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<Account>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/account",
            summary: "The caller's account.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Account>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/account/password",
            summary: "Change the password; signs out every other device.",
            auth: true,
            request: Some(schema::<ChangePasswordRequest>(g)),
            form: None,
            status: 204,
            response: None,
        },
        op(
            "delete",
            "/api/v1/account",
            "Delete the caller's account for good (password, and a code with two-factor sign-in).",
            Some(schema::<DeleteAccountRequest>(g)),
            204,
            None,
        ),
        op(
            "get",
            "/api/v1/account/two-factor",
            "Whether sign-ins need a second factor, and recovery codes left.",
            None,
            200,
            Some(schema::<TwoFactorStatus>(g)),
        ),
        op(
            "post",
            "/api/v1/account/two-factor",
            "Start a TOTP enrolment; the secret is returned this once.",
            Some(schema::<BeginTwoFactorRequest>(g)),
            201,
            Some(schema::<TwoFactorEnrolment>(g)),
        ),
        op(
            "post",
            "/api/v1/account/two-factor/confirm",
            "Confirm the enrolment with a first code; returns the recovery codes once.",
            Some(schema::<TwoFactorCodeRequest>(g)),
            200,
            Some(schema::<RecoveryCodes>(g)),
        ),
        op(
            "post",
            "/api/v1/account/two-factor/recovery-codes",
            "Replace the recovery codes (after a TOTP code); returns them once.",
            Some(schema::<TwoFactorCodeRequest>(g)),
            200,
            Some(schema::<RecoveryCodes>(g)),
        ),
        op(
            "post",
            "/api/v1/account/two-factor/disable",
            "Turn two-factor sign-in off (password and a code).",
            Some(schema::<DisableTwoFactorRequest>(g)),
            204,
            None,
        ),
        op(
            "get",
            "/api/v1/account/export",
            "Everything the server holds about the caller, as one streamed JSON document.",
            None,
            200,
            Some(json!({"type": "object"})),
        ),
        Op {
            method: "post",
            path: "/api/v1/sign-in/second-factor",
            summary: "Complete a password sign-in that answered mfa_required, with a TOTP or recovery code.",
            auth: false,
            request: Some(schema::<SecondFactorRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<TokenResponse>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/profile",
            summary: "The caller's profile.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "patch",
            path: "/api/v1/profile",
            summary: "Change the caller's display name or status text.",
            auth: true,
            request: Some(schema::<UpdateProfileRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/users",
            summary: "Directory search: users whose username or display name starts with `q` (2 to 64 characters); `limit` up to 50, default 20.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<UserSearchResults>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/users/{user_id}",
            summary: "A user's profile.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/blocks",
            summary: "The caller's block list.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<BlockList>(g)),
        },
        Op {
            method: "put",
            path: "/api/v1/blocks/{user_id}",
            summary: "Block a user: no direct messages either way; they stop seeing the caller's presence and typing.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "delete",
            path: "/api/v1/blocks/{user_id}",
            summary: "Lift a block.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/friends",
            summary: "The caller's friends, in user id order.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<FriendList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/friends/{user_id}",
            summary: "End a friendship; both users are told live.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/friend-requests",
            summary: "The caller's pending friend requests, incoming and outgoing, oldest first.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<FriendRequestList>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/friend-requests",
            summary: "Ask a user to be friends (with an optional note); if they had asked the caller, the two are friends at once. Rate limited per hour (429 with Retry-After).",
            auth: true,
            request: Some(schema::<SendFriendRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<FriendRequestResult>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/friend-requests/{user_id}",
            summary: "Withdraw the caller's pending request to a user.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "post",
            path: "/api/v1/friend-requests/{user_id}/accept",
            summary: "Accept the pending request from a user.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "post",
            path: "/api/v1/friend-requests/{user_id}/decline",
            summary: "Decline the pending request from a user; the sender is told.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/rtc/ice-servers",
            summary: "STUN and TURN servers for calls, with TURN credentials (TURN REST scheme) valid for rtc.credential_ttl_secs.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::call::IceServers>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/privacy",
            summary: "The caller's privacy settings.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<PrivacySettings>(g)),
        },
        Op {
            method: "patch",
            path: "/api/v1/privacy",
            summary: "Change some privacy settings; they take effect at once.",
            auth: true,
            request: Some(schema::<UpdatePrivacyRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<PrivacySettings>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/push/vapid",
            summary: "The VAPID public key to subscribe with (`applicationServerKey`).",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::push::VapidKey>(g)),
        },
        Op {
            method: "put",
            path: "/api/v1/push/subscription",
            summary: "Register the calling device's push subscription, replacing any it had.",
            auth: true,
            request: Some(schema::<tidings_proto::push::PushSubscription>(g)),
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "delete",
            path: "/api/v1/push/subscription",
            summary: "Delete the calling device's push subscription.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/push/subscriptions",
            summary: "The push subscriptions of the caller's devices.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::push::PushSubscriptionList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/push/subscriptions/{device_id}",
            summary: "Delete the push subscription of another device of the caller.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/push/settings",
            summary: "The caller's notification settings (mute, privacy mode, do-not-disturb).",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::push::PushSettings>(g)),
        },
        Op {
            method: "put",
            path: "/api/v1/push/settings",
            summary: "Replace the caller's notification settings.",
            auth: true,
            request: Some(schema::<tidings_proto::push::PushSettings>(g)),
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::push::PushSettings>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/devices",
            summary: "The caller's signed-in devices.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<DeviceList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/devices/{device_id}",
            summary: "Sign a device out.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/conversations",
            summary: "The caller's conversations, newest activity first.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<ConversationList>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations",
            summary: "Create a group owned by the caller.",
            auth: true,
            request: Some(schema::<CreateGroupRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/direct",
            summary: "The direct conversation with a user, created on first use.",
            auth: true,
            request: Some(schema::<CreateDirectRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}",
            summary: "One conversation.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}/members",
            summary: "Members and their markers.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Vec<Member>>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/{id}/members",
            summary: "Add members to a group (those with the invite power); users whose privacy settings do not allow it are invited instead.",
            auth: true,
            request: Some(schema::<AddMembersRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<AddMembersResult>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/conversations/{id}/members/{user_id}",
            summary: "Remove a member (those with the remove power, above the member's role) or leave (oneself).",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}/messages",
            summary: "A page of history before `before` (query), oldest first.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<HistoryPage>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/{id}/messages",
            summary: "Send a message (201; 200 for a retried client_msg_id).",
            auth: true,
            request: Some(schema::<SendMessageRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<SendAck>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/users",
            summary: "Administrators: accounts in id order, optionally by username prefix `q`; page with `after` and `limit` (up to 500).",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUserList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/admin/users/{user_id}",
            summary: "Administrators: delete an account (devices signed out, removed from its conversations, messages kept or tombstoned per accounts.deleted_user_messages).",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/suspend",
            summary: "Administrators: suspend an account; every device is signed out at once.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/reactivate",
            summary: "Administrators: let a suspended account sign in again.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/sign-out",
            summary: "Administrators: sign out every device of an account.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "put",
            path: "/api/v1/admin/users/{user_id}/admin",
            summary: "Administrators: grant the server administrator role.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/admin/users/{user_id}/admin",
            summary: "Administrators: revoke the server administrator role (not one's own).",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/audit",
            summary: "Administrators: a page of the audit log in id order, filtered by actor, target, kind and time range.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AuditPage>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/audit/export",
            summary: "Administrators: the audit log as JSON Lines (application/jsonl, one AuditEntry per line), with the same filters.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: None,
        },
        Op {
            method: "get",
            path: "/ws",
            summary: "Upgrade to the native WebSocket protocol (subprotocol tidings.v1); see docs/protocol.md.",
            auth: false,
            request: None,
            form: None,
            status: 101,
            response: None,
        },
    ];
    let mut ops = ops;
    ops.extend(group_ops(g));
    ops.push(op(
        "delete",
        "/api/v1/admin/conversations/{id}/messages/{seq}",
        "Remove any message (server administrators): its body becomes a tombstone and members see a message_deleted event; audited.",
        None,
        204,
        None,
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/messages/{seq}/readers",
        "Who has read, received or not yet received a message, from the members' markers.",
        None,
        200,
        Some(schema::<MessageReaders>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/messages/{seq}/edits",
        "Every version of a message's body, oldest first; the last is the current one.",
        None,
        200,
        Some(schema::<EditHistory>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/messages/{seq}/reactions",
        "Who reacted to a message, per reaction key.",
        None,
        200,
        Some(schema::<ReactionList>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/threads/{root}",
        "The replies in the thread under a message, oldest first (query: after, limit).",
        None,
        200,
        Some(schema::<HistoryPage>(g)),
    ));
    ops.push(op(
        "post",
        "/api/v1/conversations/{id}/messages/{seq}/hide",
        "Delete a message for the caller only: the caller's devices show a tombstone from now on.",
        None,
        204,
        None,
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/threads",
        "The conversation's threads, most recently active first, with the caller's unread replies in each.",
        None,
        200,
        Some(schema::<ThreadList>(g)),
    ));
    ops.push(op(
        "post",
        "/api/v1/conversations/{id}/threads/{root}/read",
        "Move the caller's read position in a thread forward.",
        Some(schema::<ThreadReadRequest>(g)),
        204,
        None,
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/pins",
        "The conversation's pinned messages, most recently pinned first.",
        None,
        200,
        Some(schema::<PinnedMessages>(g)),
    ));
    ops.push(op(
        "patch",
        "/api/v1/conversations/{id}/settings",
        "Change the caller's own settings for the conversation (notifications, pinned, archived, marked unread); synced to the caller's devices.",
        Some(schema::<UpdateConversationSettingsRequest>(g)),
        200,
        Some(schema::<ConversationSettings>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/conversations/{id}/retention",
        "The group's own retention policy (empty when it follows the server's).",
        None,
        200,
        Some(schema::<RetentionPolicy>(g)),
    ));
    ops.push(op(
        "put",
        "/api/v1/conversations/{id}/retention",
        "Set the group's own retention (who may edit the group's information); the server's policy still applies.",
        Some(schema::<RetentionPolicy>(g)),
        200,
        Some(schema::<RetentionPolicy>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/search",
        "Full-text search over every conversation the caller can read, best first; words match as case-insensitive prefixes, Chinese, Japanese and Korean text as substrings.",
        None,
        200,
        Some(schema::<SearchResults>(g)),
    ));
    ops.push(op(
        "get",
        "/api/v1/admin/oauth-clients",
        "Administrators: registered OAuth clients in id order; page with `after` and `limit` (up to 200).",
        None,
        200,
        Some(schema::<tidings_proto::oauth::OAuthClientList>(g)),
    ));
    ops.push(op(
        "post",
        "/api/v1/admin/oauth-clients",
        "Administrators: register an OAuth client; a confidential client's secret is in this answer only.",
        Some(schema::<tidings_proto::oauth::NewOAuthClient>(g)),
        201,
        Some(schema::<tidings_proto::oauth::OAuthClientCreated>(g)),
    ));
    ops.push(op(
        "delete",
        "/api/v1/admin/oauth-clients/{client_id}",
        "Administrators: remove an OAuth client and sign out every device signed in through it.",
        None,
        204,
        None,
    ));
    ops.extend(file_ops(g));
    ops.extend(oidc_ops(g));
    let problem = schema::<Problem>(g);
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(op.summary));
        let mut params = Vec::new();
        for name in ["id", "user_id", "device_id", "seq", "link_id", "root"] {
            if op.path.contains(&format!("{{{name}}}")) {
                params.push(id_param(name));
            }
        }
        if op.path == "/api/v1/search" {
            params.push(json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 100}}));
            for name in ["conversation_id", "sender_id", "since", "until"] {
                params.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": "integer", "format": "int64"}}));
            }
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 50}}));
            params.push(json!({"name": "offset", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}}));
        }
        if op.path.contains("{provider}") {
            params.push(json!({"name": "provider", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        if op.path.contains("{client_id}") {
            params.push(json!({"name": "client_id", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        if op.path == "/api/v1/admin/oauth-clients" && op.method == "get" {
            params.push(json!({"name": "after", "in": "query", "required": false, "schema": {"type": "string"}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 200}}));
        }
        for name in ["upload_id", "file_id"] {
            if op.path.contains(&format!("{{{name}}}")) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}));
            }
        }
        if op.path.starts_with("/api/v1/slots/") {
            params.push(json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}));
            if op.method == "put" {
                params.push(json!({"name": "expires", "in": "query", "required": true, "schema": {"type": "integer", "format": "int64"}}));
            }
            params.push(json!({"name": "signature", "in": "query", "required": true, "schema": {"type": "string"}}));
        }
        if op.path == "/api/v1/users" {
            params.push(json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string", "minLength": 2, "maxLength": 64}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 50}}));
        }
        if op.path.ends_with("/messages") && op.method == "get" {
            params.push(json!({"name": "before", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}}));
        }
        if op.path == "/api/v1/admin/users" {
            params.push(json!({"name": "q", "in": "query", "required": false, "schema": {"type": "string"}}));
            params.push(json!({"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "format": "int64"}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 500}}));
        }
        if op.path.starts_with("/api/v1/admin/audit") {
            for (name, kind) in [
                ("actor", "integer"),
                ("target", "integer"),
                ("kind", "string"),
                ("since", "integer"),
                ("until", "integer"),
                ("after", "integer"),
                ("limit", "integer"),
            ] {
                params.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}}));
            }
        }
        if !params.is_empty() {
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = op.request {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": body}}}),
            );
        }
        if let Some(form) = op.form {
            operation.insert("requestBody".into(), json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": form}}}));
        }
        if op.auth {
            operation.insert("security".into(), json!([{"bearer": []}]));
        }
        let success = match op.response {
            Some(s) => {
                json!({"description": "Success", "content": {"application/json": {"schema": s}}})
            }
            None => json!({"description": "Success"}),
        };
        operation.insert(
            "responses".into(),
            json!({
                op.status.to_string(): success,
                "default": {"description": "An RFC 9457 problem", "content": {"application/problem+json": {"schema": problem.clone()}}}
            }),
        );
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = Value::Object(operation);
    }
    let schemas = Value::Object(generator.take_definitions(true).into_iter().collect());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tidings",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of Tidings. Real-time traffic uses the WebSocket protocol at /ws (docs/protocol.md)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

/// An authenticated JSON operation.
fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    status: u16,
    response: Option<Value>,
) -> Op {
    Op {
        method,
        path,
        summary,
        auth: true,
        request,
        form: None,
        status,
        response,
    }
}

/// Single sign-on with external OpenID Connect providers (docs/oauth.md). The provider's
/// callback, `/oauth/oidc/callback`, is a browser redirect target and not part of the API.
fn oidc_ops(g: &mut SchemaGenerator) -> Vec<Op> {
    vec![
        Op {
            method: "get",
            path: "/api/v1/oidc/providers",
            summary: "The external OpenID Connect providers people may sign in with.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<tidings_proto::oauth::OidcProviderList>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/oidc/providers/{provider}/start",
            summary: "Browser navigation: redirects to the provider to sign in; the callback returns to the web app with `#oidc_code=...`.",
            auth: false,
            request: None,
            form: None,
            status: 303,
            response: None,
        },
        op(
            "post",
            "/api/v1/oidc/providers/{provider}/link",
            "Start linking an identity of the provider to the caller's account: send the browser to `authorize_url`.",
            None,
            200,
            Some(schema::<tidings_proto::oauth::OidcLinkStart>(g)),
        ),
        Op {
            method: "post",
            path: "/api/v1/oidc/exchange",
            summary: "Trade the one-time code of a finished single sign-on (valid once, for 60 s) for tokens.",
            auth: false,
            request: Some(schema::<tidings_proto::oauth::OidcExchangeRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<TokenResponse>(g)),
        },
    ]
}

/// tus uploads and file downloads. Their bodies are raw bytes, and their state travels in tus
/// headers (docs/protocol.md, "Files"), so these operations have no JSON schemas.
fn file_ops(g: &mut SchemaGenerator) -> Vec<Op> {
    let raw = |method, path, summary, auth, status| Op {
        method,
        path,
        summary,
        auth,
        request: None,
        form: None,
        status,
        response: None,
    };
    vec![
        Op {
            method: "post",
            path: "/api/v1/files/{file_id}/link",
            summary: "A short-lived signed link to a file the caller may read, for <img src>: GET it without a token until expires_at.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<FileLink>(g)),
        },
        raw(
            "options",
            "/api/v1/uploads/",
            "tus discovery: Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm.",
            false,
            204,
        ),
        raw(
            "post",
            "/api/v1/uploads/",
            "Create an upload (Upload-Length, Upload-Metadata, Upload-Concat); with Content-Type application/offset+octet-stream the body is its first bytes. Also at /api/v1/uploads.",
            true,
            201,
        ),
        raw(
            "head",
            "/api/v1/uploads/{upload_id}",
            "An upload's state: Upload-Offset (where to resume), Upload-Length, Upload-Expires; Tidings-File-Id once complete.",
            true,
            200,
        ),
        raw(
            "patch",
            "/api/v1/uploads/{upload_id}",
            "Append the body (application/offset+octet-stream) at Upload-Offset, optionally verified by Upload-Checksum (460 on mismatch).",
            true,
            204,
        ),
        raw(
            "delete",
            "/api/v1/uploads/{upload_id}",
            "Terminate an upload and delete its bytes.",
            true,
            204,
        ),
        raw(
            "get",
            "/api/v1/files/{file_id}",
            "Download a file (Range, If-Range, ETag); for its owner and members of conversations it was shared in, or without a token through a signed link (?expires=&signature=).",
            true,
            200,
        ),
        raw(
            "get",
            "/api/v1/files/{file_id}/thumbnail",
            "A thumbnail of an image (?size=96|320|800, default 320): JPEG, or PNG with transparency; rendered once and cached. For whoever may download the image, or through a signed link to it.",
            true,
            200,
        ),
        raw(
            "put",
            "/api/v1/slots/{upload_id}/{name}",
            "The whole body of an XMPP HTTP upload slot (XEP-0363), exactly the size requested; authorised by the URL's signature (?expires=&signature=), not a token. 201 once stored; 409 if the slot was filled.",
            false,
            201,
        ),
        raw(
            "get",
            "/api/v1/slots/{upload_id}/{name}",
            "The file of a filled upload slot, for anyone holding the URL (?signature=): a 302 redirect to a short-lived signed link to the file.",
            false,
            302,
        ),
        raw(
            "delete",
            "/api/v1/files/{file_id}",
            "Delete one of the caller's files; the bytes go with the last file that refers to them.",
            true,
            204,
        ),
    ]
}

/// Group management: settings, roles, moderation, invite links, join requests, invitations.
fn group_ops(g: &mut SchemaGenerator) -> Vec<Op> {
    vec![
        op(
            "get",
            "/api/v1/conversations/{id}/group",
            "The group's information, settings and the caller's role.",
            None,
            200,
            Some(schema::<GroupInfo>(g)),
        ),
        op(
            "patch",
            "/api/v1/conversations/{id}/group",
            "Change the title, description, avatar, announcement or join approval (edit_info power).",
            Some(schema::<UpdateGroupRequest>(g)),
            200,
            Some(schema::<GroupInfo>(g)),
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}",
            "Dissolve the group (owner): every member is removed; history is kept.",
            None,
            204,
            None,
        ),
        op(
            "put",
            "/api/v1/conversations/{id}/permissions",
            "Set who may do what (owner).",
            Some(schema::<GroupPermissions>(g)),
            200,
            Some(schema::<GroupInfo>(g)),
        ),
        op(
            "post",
            "/api/v1/conversations/{id}/transfer",
            "Hand ownership to another member (owner); the caller becomes an admin.",
            Some(schema::<TransferOwnershipRequest>(g)),
            204,
            None,
        ),
        op(
            "put",
            "/api/v1/conversations/{id}/members/{user_id}/role",
            "Make a member an admin or an admin a member (change_roles power, above both roles).",
            Some(schema::<SetRoleRequest>(g)),
            204,
            None,
        ),
        op(
            "put",
            "/api/v1/conversations/{id}/members/{user_id}/mute",
            "Mute a member for a while (mute power): they cannot post or type.",
            Some(schema::<MuteRequest>(g)),
            204,
            None,
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}/members/{user_id}/mute",
            "Lift a mute.",
            None,
            204,
            None,
        ),
        op(
            "get",
            "/api/v1/conversations/{id}/bans",
            "Banned users (ban power).",
            None,
            200,
            Some(schema::<BanList>(g)),
        ),
        op(
            "put",
            "/api/v1/conversations/{id}/bans/{user_id}",
            "Ban a user, removing them if a member; they cannot rejoin by link, request or invitation.",
            Some(schema::<BanRequest>(g)),
            204,
            None,
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}/bans/{user_id}",
            "Lift a ban.",
            None,
            204,
            None,
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}/messages/{seq}",
            "Delete another member's message (delete_messages power): its body becomes a tombstone.",
            None,
            204,
            None,
        ),
        op(
            "get",
            "/api/v1/conversations/{id}/invite-links",
            "The group's live invite links (invite power); codes are not shown again.",
            None,
            200,
            Some(schema::<InviteLinkList>(g)),
        ),
        op(
            "post",
            "/api/v1/conversations/{id}/invite-links",
            "Make an invite link (invite power); the answer holds its code, once.",
            Some(schema::<CreateInviteLinkRequest>(g)),
            201,
            Some(schema::<InviteLink>(g)),
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}/invite-links/{link_id}",
            "Revoke an invite link.",
            None,
            204,
            None,
        ),
        op(
            "get",
            "/api/v1/conversations/{id}/join-requests",
            "Pending join requests (approve_joins power).",
            None,
            200,
            Some(schema::<JoinRequestList>(g)),
        ),
        op(
            "post",
            "/api/v1/conversations/{id}/join-requests/{user_id}/approve",
            "Approve a join request.",
            None,
            204,
            None,
        ),
        op(
            "delete",
            "/api/v1/conversations/{id}/join-requests/{user_id}",
            "Decline a join request.",
            None,
            204,
            None,
        ),
        op(
            "post",
            "/api/v1/groups/preview",
            "What an invite link leads to.",
            Some(schema::<JoinGroupRequest>(g)),
            200,
            Some(schema::<GroupPreview>(g)),
        ),
        op(
            "post",
            "/api/v1/groups/join",
            "Join with an invite link, or ask to when the group needs approval.",
            Some(schema::<JoinGroupRequest>(g)),
            200,
            Some(schema::<JoinGroupResult>(g)),
        ),
        op(
            "get",
            "/api/v1/group-invitations",
            "The caller's pending group invitations.",
            None,
            200,
            Some(schema::<GroupInvitationList>(g)),
        ),
        op(
            "post",
            "/api/v1/group-invitations/{id}/accept",
            "Accept an invitation and join the group.",
            None,
            204,
            None,
        ),
        op(
            "delete",
            "/api/v1/group-invitations/{id}",
            "Decline an invitation.",
            None,
            204,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = openapi_document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        assert!(schemas.contains_key("Problem"));
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// Every authenticated endpoint has an entry in the scope table, so a new one cannot be
    /// forgotten (the bearer extractor refuses routes without one).
    #[test]
    fn every_authenticated_operation_needs_a_scope() {
        let doc = openapi_document();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation.get("security").is_none() {
                    continue;
                }
                let method = method.to_ascii_uppercase();
                assert!(
                    tidings_core::policy::rest_scope(&method, path).is_some(),
                    "{method} {path} has no scope in core::policy::rest_scope"
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} operations checked");
    }

    /// Schemathesis found `{root}` undeclared: every `{name}` in a path is a declared path
    /// parameter of each of its operations.
    #[test]
    fn every_path_parameter_is_declared() {
        let doc = openapi_document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let names: Vec<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|p| p.split('}').next())
                .collect();
            for (method, operation) in item.as_object().unwrap() {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                for name in &names {
                    assert!(declared.contains(name), "{method} {path}: {{{name}}}");
                }
            }
        }
    }
}
