//! REST calls for rich messages: sends with replies, threads and mentions, edit histories,
//! reactions, pins, threads, per-conversation settings and retention.

use crate::SdkResult;
use crate::rest::AuthedClient;
use reqwest::Method;
use tidings_proto::rest::*;
use tidings_proto::{ConversationId, MessageBody, Relations, Seq};

impl AuthedClient {
    /// Sends a message that replies, posts in a thread or mentions users.
    pub async fn send_related(
        &self,
        id: ConversationId,
        client_msg_id: &str,
        body: MessageBody,
        relations: Relations,
    ) -> SdkResult<SendAck> {
        self.post(
            &format!("/api/v1/conversations/{id}/messages"),
            &SendMessageRequest {
                client_msg_id: client_msg_id.into(),
                body,
                reply_to: relations.reply_to,
                thread_root: relations.thread_root,
                mentions: relations.mentions,
            },
        )
        .await
    }

    pub async fn edit_history(&self, id: ConversationId, seq: Seq) -> SdkResult<EditHistory> {
        self.get(&format!("/api/v1/conversations/{id}/messages/{seq}/edits"))
            .await
    }

    pub async fn reactions(&self, id: ConversationId, seq: Seq) -> SdkResult<ReactionList> {
        self.get(&format!(
            "/api/v1/conversations/{id}/messages/{seq}/reactions"
        ))
        .await
    }

    pub async fn pins(&self, id: ConversationId) -> SdkResult<PinnedMessages> {
        self.get(&format!("/api/v1/conversations/{id}/pins")).await
    }

    pub async fn thread(
        &self,
        id: ConversationId,
        root: Seq,
        after: Seq,
        limit: u32,
    ) -> SdkResult<HistoryPage> {
        self.get(&format!(
            "/api/v1/conversations/{id}/threads/{root}?after={after}&limit={limit}"
        ))
        .await
    }

    pub async fn update_conversation_settings(
        &self,
        id: ConversationId,
        change: &UpdateConversationSettingsRequest,
    ) -> SdkResult<ConversationSettings> {
        self.json(
            Method::PATCH,
            &format!("/api/v1/conversations/{id}/settings"),
            change,
        )
        .await
    }

    pub async fn retention(&self, id: ConversationId) -> SdkResult<RetentionPolicy> {
        self.get(&format!("/api/v1/conversations/{id}/retention"))
            .await
    }

    pub async fn set_retention(
        &self,
        id: ConversationId,
        policy: &RetentionPolicy,
    ) -> SdkResult<RetentionPolicy> {
        self.json(
            Method::PUT,
            &format!("/api/v1/conversations/{id}/retention"),
            policy,
        )
        .await
    }

    pub async fn hide_message(&self, id: ConversationId, seq: Seq) -> SdkResult<()> {
        self.empty(
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages/{seq}/hide"),
        )
        .await
    }

    pub async fn threads(&self, id: ConversationId) -> SdkResult<ThreadList> {
        self.get(&format!("/api/v1/conversations/{id}/threads"))
            .await
    }

    pub async fn mark_thread_read(&self, id: ConversationId, root: Seq, seq: Seq) -> SdkResult<()> {
        self.json_empty(
            Method::POST,
            &format!("/api/v1/conversations/{id}/threads/{root}/read"),
            &ThreadReadRequest { seq },
        )
        .await
    }
}
