//! REST calls for group management (settings, roles, moderation, invite links, join requests,
//! invitations) and message search.

use crate::SdkResult;
use crate::rest::AuthedClient;
use reqwest::Method;
use tidings_proto::rest::*;
use tidings_proto::{ConversationId, Seq, UserId};

impl AuthedClient {
    pub async fn group_info(&self, id: ConversationId) -> SdkResult<GroupInfo> {
        self.get(&format!("/api/v1/conversations/{id}/group")).await
    }

    pub async fn update_group(
        &self,
        id: ConversationId,
        req: &UpdateGroupRequest,
    ) -> SdkResult<GroupInfo> {
        self.json(
            Method::PATCH,
            &format!("/api/v1/conversations/{id}/group"),
            req,
        )
        .await
    }

    pub async fn set_group_permissions(
        &self,
        id: ConversationId,
        permissions: &GroupPermissions,
    ) -> SdkResult<GroupInfo> {
        self.json(
            Method::PUT,
            &format!("/api/v1/conversations/{id}/permissions"),
            permissions,
        )
        .await
    }

    pub async fn dissolve_group(&self, id: ConversationId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}")).await
    }

    pub async fn transfer_ownership(&self, id: ConversationId, to: UserId) -> SdkResult<()> {
        self.json_empty(
            Method::POST,
            &format!("/api/v1/conversations/{id}/transfer"),
            &TransferOwnershipRequest { user_id: to },
        )
        .await
    }

    pub async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> SdkResult<()> {
        self.json_empty(
            Method::PUT,
            &format!("/api/v1/conversations/{id}/members/{user}/role"),
            &SetRoleRequest { role },
        )
        .await
    }

    pub async fn mute(
        &self,
        id: ConversationId,
        user: UserId,
        duration_secs: u64,
    ) -> SdkResult<()> {
        self.json_empty(
            Method::PUT,
            &format!("/api/v1/conversations/{id}/members/{user}/mute"),
            &MuteRequest { duration_secs },
        )
        .await
    }

    pub async fn unmute(&self, id: ConversationId, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}/members/{user}/mute"))
            .await
    }

    pub async fn bans(&self, id: ConversationId) -> SdkResult<BanList> {
        self.get(&format!("/api/v1/conversations/{id}/bans")).await
    }

    pub async fn ban(
        &self,
        id: ConversationId,
        user: UserId,
        reason: Option<&str>,
    ) -> SdkResult<()> {
        self.json_empty(
            Method::PUT,
            &format!("/api/v1/conversations/{id}/bans/{user}"),
            &BanRequest {
                reason: reason.map(str::to_owned),
            },
        )
        .await
    }

    pub async fn unban(&self, id: ConversationId, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}/bans/{user}"))
            .await
    }

    pub async fn delete_message(&self, id: ConversationId, seq: Seq) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}/messages/{seq}"))
            .await
    }

    pub async fn create_invite_link(
        &self,
        id: ConversationId,
        req: &CreateInviteLinkRequest,
    ) -> SdkResult<InviteLink> {
        self.post(&format!("/api/v1/conversations/{id}/invite-links"), req)
            .await
    }

    pub async fn invite_links(&self, id: ConversationId) -> SdkResult<InviteLinkList> {
        self.get(&format!("/api/v1/conversations/{id}/invite-links"))
            .await
    }

    pub async fn revoke_invite_link(&self, id: ConversationId, link_id: i64) -> SdkResult<()> {
        self.delete(&format!(
            "/api/v1/conversations/{id}/invite-links/{link_id}"
        ))
        .await
    }

    pub async fn preview_group(&self, code: &str) -> SdkResult<GroupPreview> {
        self.post(
            "/api/v1/groups/preview",
            &JoinGroupRequest {
                code: code.into(),
                message: None,
            },
        )
        .await
    }

    pub async fn join_group(
        &self,
        code: &str,
        message: Option<&str>,
    ) -> SdkResult<JoinGroupResult> {
        self.post(
            "/api/v1/groups/join",
            &JoinGroupRequest {
                code: code.into(),
                message: message.map(str::to_owned),
            },
        )
        .await
    }

    pub async fn join_requests(&self, id: ConversationId) -> SdkResult<JoinRequestList> {
        self.get(&format!("/api/v1/conversations/{id}/join-requests"))
            .await
    }

    pub async fn approve_join_request(&self, id: ConversationId, user: UserId) -> SdkResult<()> {
        self.empty(
            Method::POST,
            &format!("/api/v1/conversations/{id}/join-requests/{user}/approve"),
        )
        .await
    }

    pub async fn decline_join_request(&self, id: ConversationId, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}/join-requests/{user}"))
            .await
    }

    pub async fn group_invitations(&self) -> SdkResult<GroupInvitationList> {
        self.get("/api/v1/group-invitations").await
    }

    pub async fn accept_group_invitation(&self, id: ConversationId) -> SdkResult<()> {
        self.empty(
            Method::POST,
            &format!("/api/v1/group-invitations/{id}/accept"),
        )
        .await
    }

    pub async fn decline_group_invitation(&self, id: ConversationId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/group-invitations/{id}"))
            .await
    }

    /// Full-text search over the caller's conversations.
    pub async fn search(&self, req: &SearchRequest) -> SdkResult<SearchResults> {
        let mut pairs = vec![("q", req.q.clone())];
        let optional = [
            ("conversation_id", req.conversation_id.map(|c| c.0)),
            ("sender_id", req.sender_id.map(|s| s.0)),
            ("since", req.since),
            ("until", req.until),
            ("limit", req.limit.map(i64::from)),
            ("offset", req.offset.map(i64::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                pairs.push((name, value.to_string()));
            }
        }
        self.get_query("/api/v1/search", &pairs).await
    }

    /// Removes any message (server administrators only).
    pub async fn admin_remove_message(&self, id: ConversationId, seq: Seq) -> SdkResult<()> {
        self.delete(&format!("/api/v1/admin/conversations/{id}/messages/{seq}"))
            .await
    }

    /// Who has read a message (from the members' markers).
    pub async fn message_readers(&self, id: ConversationId, seq: Seq) -> SdkResult<MessageReaders> {
        self.get(&format!(
            "/api/v1/conversations/{id}/messages/{seq}/readers"
        ))
        .await
    }
}
