//! REST calls: accounts, OAuth, profiles, contacts, devices, conversations and history.

use crate::{SdkError, SdkResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_proto::contacts::{
    FriendList, FriendRequestList, FriendRequestOutcome, FriendRequestResult, PrivacySettings,
    SendFriendRequest, UpdatePrivacyRequest,
};
use tidings_proto::rest::*;
use tidings_proto::{ConversationId, DeviceId, MessageBody, Seq, UserId};

/// An unauthenticated client of one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

pub(crate) async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> SdkResult<T> {
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| SdkError::Transport(e.to_string()))?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|e| {
            SdkError::Unexpected(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
        });
    }
    if let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) {
        return Err(SdkError::Problem { status, problem });
    }
    if let Ok(error) = serde_json::from_slice::<OAuthError>(&bytes) {
        return Err(SdkError::OAuth { status, error });
    }
    Err(SdkError::Unexpected(format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes)
    )))
}

pub(crate) async fn expect_empty(response: reqwest::Response) -> SdkResult<()> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    decode::<serde_json::Value>(response).await.map(|_| ())
}

pub(crate) fn transport(e: reqwest::Error) -> SdkError {
    SdkError::Transport(e.to_string())
}

impl Client {
    /// `base` is the server's root URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL of the native protocol.
    pub fn ws_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/ws")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn register(&self, username: &str, password: &str) -> SdkResult<Account> {
        self.register_with(RegisterRequest {
            username: username.into(),
            password: password.into(),
            invite_code: None,
        })
        .await
    }

    pub async fn register_with(&self, req: RegisterRequest) -> SdkResult<Account> {
        let r = self
            .http
            .post(self.url("/api/v1/accounts"))
            .json(&req)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// Signs in with the password grant; each sign-in is a new device.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: &str,
    ) -> SdkResult<TokenResponse> {
        self.token(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("device_name", device_name),
        ])
        .await
    }

    /// Exchanges a refresh token for a new pair (the old refresh token stops working).
    pub async fn refresh(&self, refresh_token: &str) -> SdkResult<TokenResponse> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// A form POST to the token endpoint.
    async fn token(&self, form: &[(&str, &str)]) -> SdkResult<TokenResponse> {
        let r = self
            .http
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// RFC 7009 revocation.
    pub async fn revoke(&self, token: &str) -> SdkResult<()> {
        let r = self
            .http
            .post(self.url("/oauth/revoke"))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(transport)?;
        expect_empty(r).await
    }

    /// A GET returning JSON, for unauthenticated endpoints such as metadata and health.
    pub async fn get_json(&self, path: &str) -> SdkResult<serde_json::Value> {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub fn authed(&self, access_token: impl Into<String>) -> AuthedClient {
        AuthedClient {
            client: self.clone(),
            token: access_token.into(),
        }
    }
}

/// A client that sends a bearer token.
#[derive(Clone, Debug)]
pub struct AuthedClient {
    client: Client,
    token: String,
}

impl AuthedClient {
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = token.into();
    }

    /// A request to `path` carrying the bearer token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .http
            .request(method, self.client.url(path))
            .bearer_auth(&self.token)
    }

    /// A GET with query parameters.
    pub(crate) async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> SdkResult<T> {
        let r = self
            .request(reqwest::Method::GET, path)
            .query(query)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> SdkResult<T> {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> SdkResult<T> {
        self.json(reqwest::Method::POST, path, body).await
    }

    /// A request with a JSON body and a JSON answer.
    pub(crate) async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> SdkResult<T> {
        let r = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// A request with a JSON body whose success has no body (`204`).
    pub(crate) async fn json_empty<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> SdkResult<()> {
        let r = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        expect_empty(r).await
    }

    /// A request whose success has no body (`204`).
    pub(crate) async fn empty(&self, method: reqwest::Method, path: &str) -> SdkResult<()> {
        let r = self.request(method, path).send().await.map_err(transport)?;
        expect_empty(r).await
    }

    pub(crate) async fn delete(&self, path: &str) -> SdkResult<()> {
        self.empty(reqwest::Method::DELETE, path).await
    }

    pub async fn me(&self) -> SdkResult<Account> {
        self.get("/api/v1/account").await
    }

    pub async fn change_password(&self, current: &str, new: &str) -> SdkResult<()> {
        let r = self
            .request(reqwest::Method::POST, "/api/v1/account/password")
            .json(&ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            })
            .send()
            .await
            .map_err(transport)?;
        expect_empty(r).await
    }

    pub async fn my_profile(&self) -> SdkResult<Profile> {
        self.get("/api/v1/profile").await
    }

    pub async fn profile(&self, user: UserId) -> SdkResult<Profile> {
        self.get(&format!("/api/v1/users/{user}")).await
    }

    pub async fn update_profile(&self, req: &UpdateProfileRequest) -> SdkResult<Profile> {
        let r = self
            .request(reqwest::Method::PATCH, "/api/v1/profile")
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub async fn search_users(&self, query: &str, limit: u32) -> SdkResult<UserSearchResults> {
        let r = self
            .request(reqwest::Method::GET, "/api/v1/users")
            .query(&[("q", query.to_string()), ("limit", limit.to_string())])
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// STUN and TURN servers for calls, with TURN credentials.
    pub async fn ice_servers(&self) -> SdkResult<tidings_proto::call::IceServers> {
        self.get("/api/v1/rtc/ice-servers").await
    }

    pub async fn blocks(&self) -> SdkResult<BlockList> {
        self.get("/api/v1/blocks").await
    }

    pub async fn block(&self, user: UserId) -> SdkResult<()> {
        self.empty(reqwest::Method::PUT, &format!("/api/v1/blocks/{user}"))
            .await
    }

    pub async fn unblock(&self, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/blocks/{user}")).await
    }

    pub async fn friends(&self) -> SdkResult<FriendList> {
        self.get("/api/v1/friends").await
    }

    pub async fn remove_friend(&self, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/friends/{user}")).await
    }

    pub async fn friend_requests(&self) -> SdkResult<FriendRequestList> {
        self.get("/api/v1/friend-requests").await
    }

    /// Asks `user` to be friends; the answer says whether they are friends already (when
    /// `user` had asked first).
    pub async fn send_friend_request(
        &self,
        user: UserId,
        note: Option<&str>,
    ) -> SdkResult<FriendRequestOutcome> {
        let body = SendFriendRequest {
            user_id: user,
            note: note.map(String::from),
        };
        let result: FriendRequestResult = self.post("/api/v1/friend-requests", &body).await?;
        Ok(result.outcome)
    }

    pub async fn accept_friend_request(&self, from: UserId) -> SdkResult<()> {
        self.empty(
            reqwest::Method::POST,
            &format!("/api/v1/friend-requests/{from}/accept"),
        )
        .await
    }

    pub async fn decline_friend_request(&self, from: UserId) -> SdkResult<()> {
        self.empty(
            reqwest::Method::POST,
            &format!("/api/v1/friend-requests/{from}/decline"),
        )
        .await
    }

    pub async fn cancel_friend_request(&self, to: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/friend-requests/{to}")).await
    }

    pub async fn privacy(&self) -> SdkResult<PrivacySettings> {
        self.get("/api/v1/privacy").await
    }

    pub async fn update_privacy(&self, req: &UpdatePrivacyRequest) -> SdkResult<PrivacySettings> {
        let r = self
            .request(reqwest::Method::PATCH, "/api/v1/privacy")
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub async fn devices(&self) -> SdkResult<DeviceList> {
        self.get("/api/v1/devices").await
    }

    pub async fn sign_out_device(&self, device: DeviceId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/devices/{device}")).await
    }

    pub async fn conversations(&self) -> SdkResult<ConversationList> {
        self.get("/api/v1/conversations").await
    }

    pub async fn conversation(&self, id: ConversationId) -> SdkResult<Conversation> {
        self.get(&format!("/api/v1/conversations/{id}")).await
    }

    pub async fn open_direct(&self, peer: UserId) -> SdkResult<Conversation> {
        self.post(
            "/api/v1/conversations/direct",
            &CreateDirectRequest { user_id: peer },
        )
        .await
    }

    pub async fn create_group(&self, title: &str, members: &[UserId]) -> SdkResult<Conversation> {
        self.post(
            "/api/v1/conversations",
            &CreateGroupRequest {
                title: title.into(),
                members: members.to_vec(),
            },
        )
        .await
    }

    pub async fn members(&self, id: ConversationId) -> SdkResult<Vec<Member>> {
        self.get(&format!("/api/v1/conversations/{id}/members"))
            .await
    }

    pub async fn add_members(
        &self,
        id: ConversationId,
        users: &[UserId],
    ) -> SdkResult<AddMembersResult> {
        self.post(
            &format!("/api/v1/conversations/{id}/members"),
            &AddMembersRequest {
                members: users.to_vec(),
            },
        )
        .await
    }

    pub async fn remove_member(&self, id: ConversationId, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/conversations/{id}/members/{user}"))
            .await
    }

    pub async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> SdkResult<HistoryPage> {
        let mut path = format!("/api/v1/conversations/{id}/messages?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        self.get(&path).await
    }

    pub async fn send(
        &self,
        id: ConversationId,
        client_msg_id: &str,
        body: MessageBody,
    ) -> SdkResult<SendAck> {
        self.post(
            &format!("/api/v1/conversations/{id}/messages"),
            &SendMessageRequest {
                client_msg_id: client_msg_id.into(),
                body,
                reply_to: None,
                thread_root: None,
                mentions: None,
            },
        )
        .await
    }

    // --- Server administration (administrators only) ---------------------------------------

    /// Accounts whose username starts with `prefix` (all when empty), in id order after `after`.
    pub async fn admin_users(
        &self,
        prefix: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> SdkResult<AdminUserList> {
        let mut query = vec![("q", prefix.to_string()), ("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let r = self
            .request(reqwest::Method::GET, "/api/v1/admin/users")
            .query(&query)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    async fn admin_post(&self, path: &str) -> SdkResult<AdminUser> {
        let r = self
            .request(reqwest::Method::POST, path)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    pub async fn admin_suspend(&self, user: UserId) -> SdkResult<AdminUser> {
        self.admin_post(&format!("/api/v1/admin/users/{user}/suspend"))
            .await
    }

    pub async fn admin_reactivate(&self, user: UserId) -> SdkResult<AdminUser> {
        self.admin_post(&format!("/api/v1/admin/users/{user}/reactivate"))
            .await
    }

    pub async fn admin_delete_user(&self, user: UserId) -> SdkResult<()> {
        self.delete(&format!("/api/v1/admin/users/{user}")).await
    }

    /// Signs out every device of `user`.
    pub async fn admin_sign_out(&self, user: UserId) -> SdkResult<()> {
        self.empty(
            reqwest::Method::POST,
            &format!("/api/v1/admin/users/{user}/sign-out"),
        )
        .await
    }

    /// Grants (`true`) or revokes (`false`) the server administrator role.
    pub async fn admin_set_admin(&self, user: UserId, is_admin: bool) -> SdkResult<AdminUser> {
        let method = if is_admin {
            reqwest::Method::PUT
        } else {
            reqwest::Method::DELETE
        };
        let r = self
            .request(method, &format!("/api/v1/admin/users/{user}/admin"))
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// A page of the audit log. `query` holds the filters and cursor as query parameters:
    /// `actor`, `target`, `kind`, `since`, `until`, `after`, `limit`.
    pub async fn admin_audit(&self, query: &[(&str, String)]) -> SdkResult<AuditPage> {
        let r = self
            .request(reqwest::Method::GET, "/api/v1/admin/audit")
            .query(query)
            .send()
            .await
            .map_err(transport)?;
        decode(r).await
    }

    /// The audit log as JSON Lines, with the same filters as [`AuthedClient::admin_audit`].
    pub async fn admin_audit_export(&self, query: &[(&str, String)]) -> SdkResult<String> {
        let r = self
            .request(reqwest::Method::GET, "/api/v1/admin/audit/export")
            .query(query)
            .send()
            .await
            .map_err(transport)?;
        if !r.status().is_success() {
            return decode::<String>(r).await;
        }
        r.text().await.map_err(transport)
    }
}
