//! Wire types of the Tidings protocol: the only place that defines what goes on the wire.
//!
//! # Layout
//! - [`ids`]: the identifiers every other type refers to.
//! - [`message`]: the message envelope and its extensible body.
//! - [`ws`]: frames of the native WebSocket protocol (`/ws`, subprotocol [`ws::SUBPROTOCOL`]).
//! - [`rest`]: request and response bodies of the REST API, including RFC 9457 problems
//!   and RFC 6749 token responses.
//! - [`oauth`]: OAuth client registration and token introspection.
//! - [`call`]: call signalling (invites, answers, ICE candidates) and call outcomes.
//! - [`contacts`]: friends, friend requests, privacy settings and their live events.
//! - [`push`]: push subscriptions, notification settings and push payloads.
//! - [`error`]: the stable error codes shared by WebSocket error frames and problem documents.
//!
//! Every type derives `serde` and `schemars::JsonSchema`; `cargo xtask codegen` writes the
//! JSON Schema (`docs/schema/tidings.schema.json`) and the TypeScript declarations
//! (`sdk-ts/src/protocol.ts`) from them, so no type is written twice.

pub mod account;
pub mod call;
pub mod contacts;
pub mod error;
pub mod ids;
pub mod message;
pub mod oauth;
pub mod push;
pub mod rest;
pub mod ws;

pub use error::ErrorCode;
pub use ids::{ConversationId, DeviceId, MessageId, Seq, UserId};
pub use message::{
    FileKey, ForwardedMessage, Mentions, Message, MessageBody, ReactionCount, Relations,
    ThreadSummary,
};

/// Every type that ends up in the generated schema, by name.
///
/// The code generator walks this list; adding a wire type means adding it here.
pub fn schema_roots() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("ClientFrame", schema_for!(ws::ClientFrame)),
        ("ServerFrame", schema_for!(ws::ServerFrame)),
        ("Message", schema_for!(Message)),
        ("FileKey", schema_for!(message::FileKey)),
        ("PushSubscription", schema_for!(push::PushSubscription)),
        (
            "PushSubscriptionList",
            schema_for!(push::PushSubscriptionList),
        ),
        ("VapidKey", schema_for!(push::VapidKey)),
        ("PushSettings", schema_for!(push::PushSettings)),
        ("PushPayload", schema_for!(push::PushPayload)),
        ("Problem", schema_for!(rest::Problem)),
        ("RegisterRequest", schema_for!(rest::RegisterRequest)),
        ("Account", schema_for!(rest::Account)),
        ("TokenResponse", schema_for!(rest::TokenResponse)),
        ("OAuthError", schema_for!(rest::OAuthError)),
        ("OidcProvider", schema_for!(oauth::OidcProvider)),
        ("OidcProviderList", schema_for!(oauth::OidcProviderList)),
        ("OidcLinkStart", schema_for!(oauth::OidcLinkStart)),
        (
            "OidcExchangeRequest",
            schema_for!(oauth::OidcExchangeRequest),
        ),
        ("Device", schema_for!(rest::Device)),
        ("DeviceList", schema_for!(rest::DeviceList)),
        (
            "ChangePasswordRequest",
            schema_for!(rest::ChangePasswordRequest),
        ),
        ("TwoFactorStatus", schema_for!(account::TwoFactorStatus)),
        (
            "BeginTwoFactorRequest",
            schema_for!(account::BeginTwoFactorRequest),
        ),
        (
            "TwoFactorEnrolment",
            schema_for!(account::TwoFactorEnrolment),
        ),
        (
            "TwoFactorCodeRequest",
            schema_for!(account::TwoFactorCodeRequest),
        ),
        ("RecoveryCodes", schema_for!(account::RecoveryCodes)),
        (
            "DisableTwoFactorRequest",
            schema_for!(account::DisableTwoFactorRequest),
        ),
        (
            "SecondFactorRequired",
            schema_for!(account::SecondFactorRequired),
        ),
        (
            "SecondFactorRequest",
            schema_for!(account::SecondFactorRequest),
        ),
        (
            "DeleteAccountRequest",
            schema_for!(account::DeleteAccountRequest),
        ),
        (
            "CreateDirectRequest",
            schema_for!(rest::CreateDirectRequest),
        ),
        ("CreateGroupRequest", schema_for!(rest::CreateGroupRequest)),
        ("AddMembersRequest", schema_for!(rest::AddMembersRequest)),
        ("Conversation", schema_for!(rest::Conversation)),
        ("ConversationList", schema_for!(rest::ConversationList)),
        (
            "ConversationSettings",
            schema_for!(rest::ConversationSettings),
        ),
        (
            "UpdateConversationSettingsRequest",
            schema_for!(rest::UpdateConversationSettingsRequest),
        ),
        ("EditHistory", schema_for!(rest::EditHistory)),
        ("ThreadList", schema_for!(rest::ThreadList)),
        ("ThreadReadRequest", schema_for!(rest::ThreadReadRequest)),
        ("RetentionPolicy", schema_for!(rest::RetentionPolicy)),
        ("ReactionList", schema_for!(rest::ReactionList)),
        ("PinnedMessages", schema_for!(rest::PinnedMessages)),
        ("Member", schema_for!(rest::Member)),
        ("SendMessageRequest", schema_for!(rest::SendMessageRequest)),
        ("SendAck", schema_for!(rest::SendAck)),
        ("HistoryPage", schema_for!(rest::HistoryPage)),
        ("UserSummary", schema_for!(rest::UserSummary)),
        ("Health", schema_for!(rest::Health)),
        ("FileLink", schema_for!(rest::FileLink)),
        ("BlockedUser", schema_for!(rest::BlockedUser)),
        ("Profile", schema_for!(rest::Profile)),
        (
            "UpdateProfileRequest",
            schema_for!(rest::UpdateProfileRequest),
        ),
        ("UserSearchResults", schema_for!(rest::UserSearchResults)),
        ("BlockList", schema_for!(rest::BlockList)),
        ("AddMembersResult", schema_for!(rest::AddMembersResult)),
        ("GroupPermissions", schema_for!(rest::GroupPermissions)),
        ("GroupInfo", schema_for!(rest::GroupInfo)),
        ("UpdateGroupRequest", schema_for!(rest::UpdateGroupRequest)),
        ("MuteRequest", schema_for!(rest::MuteRequest)),
        ("BanRequest", schema_for!(rest::BanRequest)),
        ("BanList", schema_for!(rest::BanList)),
        ("SetRoleRequest", schema_for!(rest::SetRoleRequest)),
        (
            "TransferOwnershipRequest",
            schema_for!(rest::TransferOwnershipRequest),
        ),
        (
            "CreateInviteLinkRequest",
            schema_for!(rest::CreateInviteLinkRequest),
        ),
        ("InviteLink", schema_for!(rest::InviteLink)),
        ("InviteLinkList", schema_for!(rest::InviteLinkList)),
        ("JoinGroupRequest", schema_for!(rest::JoinGroupRequest)),
        ("GroupPreview", schema_for!(rest::GroupPreview)),
        ("JoinGroupResult", schema_for!(rest::JoinGroupResult)),
        ("JoinRequestList", schema_for!(rest::JoinRequestList)),
        (
            "GroupInvitationList",
            schema_for!(rest::GroupInvitationList),
        ),
        ("SearchRequest", schema_for!(rest::SearchRequest)),
        ("SearchResults", schema_for!(rest::SearchResults)),
        ("MessageReaders", schema_for!(rest::MessageReaders)),
        ("FriendList", schema_for!(contacts::FriendList)),
        (
            "FriendRequestList",
            schema_for!(contacts::FriendRequestList),
        ),
        (
            "SendFriendRequest",
            schema_for!(contacts::SendFriendRequest),
        ),
        (
            "FriendRequestResult",
            schema_for!(contacts::FriendRequestResult),
        ),
        ("PrivacySettings", schema_for!(contacts::PrivacySettings)),
        (
            "UpdatePrivacyRequest",
            schema_for!(contacts::UpdatePrivacyRequest),
        ),
        ("AdminUser", schema_for!(rest::AdminUser)),
        ("AdminUserList", schema_for!(rest::AdminUserList)),
        ("NewOAuthClient", schema_for!(oauth::NewOAuthClient)),
        ("OAuthClient", schema_for!(oauth::OAuthClient)),
        ("OAuthClientCreated", schema_for!(oauth::OAuthClientCreated)),
        ("OAuthClientList", schema_for!(oauth::OAuthClientList)),
        ("Introspection", schema_for!(oauth::Introspection)),
        (
            "DeviceAuthorizationResponse",
            schema_for!(oauth::DeviceAuthorizationResponse),
        ),
        ("AuditEntry", schema_for!(rest::AuditEntry)),
        ("AuditPage", schema_for!(rest::AuditPage)),
        ("IceServers", schema_for!(call::IceServers)),
    ]
}
