//! REST handlers: each one decodes, calls the core, and encodes.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed, ClientAddr};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidings_core::admin::AdminActor;
use tidings_core::audit::AuditFilter;
use tidings_proto::account::{
    BeginTwoFactorRequest, DeleteAccountRequest, DisableTwoFactorRequest, SecondFactorRequest,
    TwoFactorCodeRequest, TwoFactorStatus,
};
use tidings_proto::contacts::{
    FriendList, FriendRequestList, FriendRequestResult, PrivacySettings, SendFriendRequest,
    UpdatePrivacyRequest,
};
use tidings_proto::rest::{
    Account, AddMembersRequest, AddMembersResult, AdminUser, AdminUserList, AuditPage, BanList,
    BanRequest, BlockList, ChangePasswordRequest, Conversation, ConversationList,
    CreateDirectRequest, CreateGroupRequest, CreateInviteLinkRequest, DeviceList, GroupInfo,
    GroupInvitationList, GroupPermissions, GroupPreview, Health, HistoryPage, InviteLink,
    InviteLinkList, JoinGroupRequest, JoinGroupResult, JoinRequestList, Member, MuteRequest,
    Profile, RegisterRequest, SearchRequest, SearchResults, SendAck, SendMessageRequest,
    SetRoleRequest, TransferOwnershipRequest, UpdateGroupRequest, UpdateProfileRequest,
    UserSearchResults,
};
use tidings_proto::{ConversationId, DeviceId, ErrorCode, Seq, UserId};

type ApiResult<T> = Result<T, ApiError>;

pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.core.ready().await.is_ok();
    let body = Json(Health {
        status: if ready { "ok" } else { "unavailable" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    Ok((StatusCode::CREATED, Json(state.core.register(req).await?)))
}

pub async fn me(State(state): State<AppState>, Authed(caller): Authed) -> ApiResult<Json<Account>> {
    Ok(Json(state.core.me(&caller).await?))
}

pub async fn change_password(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    state.core.change_password(&caller, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- Account security (docs/accounts.md) ------------------------------------------------------

pub async fn two_factor_status(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<TwoFactorStatus>> {
    Ok(Json(state.core.two_factor_status(&caller).await?))
}

pub async fn begin_two_factor(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<BeginTwoFactorRequest>,
) -> ApiResult<Response> {
    let enrolment = state.core.begin_two_factor(&caller, req.password).await?;
    // The secret is shown this once; no cache may keep it.
    Ok(private(
        (StatusCode::CREATED, Json(enrolment)).into_response(),
    ))
}

pub async fn confirm_two_factor(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<TwoFactorCodeRequest>,
) -> ApiResult<Response> {
    let codes = state.core.confirm_two_factor(&caller, &req.code).await?;
    Ok(private(Json(codes).into_response()))
}

pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<TwoFactorCodeRequest>,
) -> ApiResult<Response> {
    let codes = state
        .core
        .regenerate_recovery_codes(&caller, &req.code)
        .await?;
    Ok(private(Json(codes).into_response()))
}

pub async fn disable_two_factor(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<DisableTwoFactorRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .disable_two_factor(&caller, req.password, &req.code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The second step of a password sign-in of a two-factor account (no bearer token: the
/// challenge from the token endpoint stands for the password).
pub async fn second_factor_sign_in(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    ApiJson(req): ApiJson<SecondFactorRequest>,
) -> ApiResult<Response> {
    let tokens = state
        .core
        .complete_second_factor(&req.mfa_token, req.code, req.device_name, address)
        .await?;
    Ok(private(Json(tokens).into_response()))
}

/// Streams the caller's data as one JSON document, downloaded as a file.
pub async fn export_account(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Response> {
    use futures_util::TryStreamExt;
    let chunks = state.core.export_account(&caller).await?;
    // A failure after the first chunk can only cut the document short (it then does not
    // parse); the cause is logged.
    let body = axum::body::Body::from_stream(chunks.map_err(ApiError));
    Ok(private(
        (
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tidings-export.json\"",
                ),
            ],
            body,
        )
            .into_response(),
    ))
}

pub async fn delete_account(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<DeleteAccountRequest>,
) -> ApiResult<StatusCode> {
    state.core.delete_own_account(&caller, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks a response that carries secrets (codes, tokens, an export) as not to be stored.
fn private(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

pub async fn my_profile(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.core.profile(&caller, caller.user_id).await?))
}

pub async fn update_profile(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.core.update_profile(&caller, req).await?))
}

pub async fn profile(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.core.profile(&caller, UserId(user_id)).await?))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    limit: Option<u32>,
}

pub async fn search_users(
    State(state): State<AppState>,
    Authed(caller): Authed,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<UserSearchResults>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    Ok(Json(
        state
            .core
            .search_users(&caller, &query.q, query.limit)
            .await?,
    ))
}

pub async fn ice_servers(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<tidings_proto::call::IceServers>> {
    Ok(Json(state.core.ice_servers(&caller)))
}

pub async fn blocks(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<BlockList>> {
    Ok(Json(state.core.blocks(&caller).await?))
}

pub async fn block(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.core.block(&caller, UserId(user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unblock(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.core.unblock(&caller, UserId(user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn friends(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<FriendList>> {
    Ok(Json(state.core.friends(&caller).await?))
}

pub async fn remove_friend(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.core.remove_friend(&caller, UserId(user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn friend_requests(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<FriendRequestList>> {
    Ok(Json(state.core.friend_requests(&caller).await?))
}

pub async fn send_friend_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<SendFriendRequest>,
) -> ApiResult<Json<FriendRequestResult>> {
    Ok(Json(state.core.send_friend_request(&caller, req).await?))
}

pub async fn accept_friend_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .accept_friend_request(&caller, UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn decline_friend_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .decline_friend_request(&caller, UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn cancel_friend_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .cancel_friend_request(&caller, UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn privacy(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<PrivacySettings>> {
    Ok(Json(state.core.privacy(&caller).await?))
}

pub async fn update_privacy(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<UpdatePrivacyRequest>,
) -> ApiResult<Json<PrivacySettings>> {
    Ok(Json(state.core.update_privacy(&caller, req).await?))
}

pub async fn devices(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(state.core.devices(&caller).await?))
}

pub async fn sign_out_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(device_id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .sign_out_device(&caller, DeviceId(device_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn conversations(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<ConversationList>> {
    Ok(Json(state.core.conversations(&caller).await?))
}

pub async fn create_group(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<Conversation>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.core.create_group(&caller, req).await?),
    ))
}

pub async fn open_direct(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<CreateDirectRequest>,
) -> ApiResult<Json<Conversation>> {
    Ok(Json(state.core.open_direct(&caller, req.user_id).await?))
}

pub async fn conversation(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<Conversation>> {
    Ok(Json(
        state.core.conversation(&caller, ConversationId(id)).await?,
    ))
}

pub async fn members(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Member>>> {
    Ok(Json(state.core.members(&caller, ConversationId(id)).await?))
}

pub async fn add_members(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<AddMembersRequest>,
) -> ApiResult<Json<AddMembersResult>> {
    Ok(Json(
        state
            .core
            .add_members(&caller, ConversationId(id), req.members)
            .await?,
    ))
}

pub async fn remove_member(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .remove_member(&caller, ConversationId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    before: Option<Seq>,
    limit: Option<u32>,
}

pub async fn history(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<HistoryPage>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    Ok(Json(
        state
            .core
            .history(&caller, ConversationId(id), query.before, query.limit)
            .await?,
    ))
}

pub async fn send(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<(StatusCode, Json<SendAck>)> {
    let relations = req.relations();
    let ack = state
        .core
        .send(
            &caller,
            ConversationId(id),
            req.client_msg_id,
            req.body,
            relations,
        )
        .await?;
    let status = if ack.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ack)))
}

// --- Groups ----------------------------------------------------------------------------------

pub async fn group_info(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(
        state.core.group_info(&caller, ConversationId(id)).await?,
    ))
}

pub async fn update_group(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<UpdateGroupRequest>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(
        state
            .core
            .update_group(&caller, ConversationId(id), req)
            .await?,
    ))
}

pub async fn dissolve_group(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .dissolve_group(&caller, ConversationId(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_permissions(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<GroupPermissions>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(
        state
            .core
            .set_group_permissions(&caller, ConversationId(id), req)
            .await?,
    ))
}

pub async fn transfer_ownership(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<TransferOwnershipRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .transfer_ownership(&caller, ConversationId(id), req.user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_role(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .set_role(&caller, ConversationId(id), UserId(user_id), req.role)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mute_member(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
    ApiJson(req): ApiJson<MuteRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .mute_member(
            &caller,
            ConversationId(id),
            UserId(user_id),
            Some(req.duration_secs),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unmute_member(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .mute_member(&caller, ConversationId(id), UserId(user_id), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn bans(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<BanList>> {
    Ok(Json(state.core.bans(&caller, ConversationId(id)).await?))
}

pub async fn ban(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
    ApiJson(req): ApiJson<BanRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .ban(&caller, ConversationId(id), UserId(user_id), req.reason)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unban(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .unban(&caller, ConversationId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_message(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .delete_message(&caller, ConversationId(id), seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn invite_links(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<InviteLinkList>> {
    Ok(Json(
        state.core.invite_links(&caller, ConversationId(id)).await?,
    ))
}

pub async fn create_invite_link(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<CreateInviteLinkRequest>,
) -> ApiResult<(StatusCode, Json<InviteLink>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            state
                .core
                .create_invite_link(&caller, ConversationId(id), req)
                .await?,
        ),
    ))
}

pub async fn revoke_invite_link(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, link_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .revoke_invite_link(&caller, ConversationId(id), link_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn join_requests(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<JoinRequestList>> {
    Ok(Json(
        state
            .core
            .join_requests(&caller, ConversationId(id))
            .await?,
    ))
}

pub async fn approve_join_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .approve_join_request(&caller, ConversationId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn decline_join_request(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .decline_join_request(&caller, ConversationId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn preview_group(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<JoinGroupRequest>,
) -> ApiResult<Json<GroupPreview>> {
    Ok(Json(state.core.preview_group(&caller, &req.code).await?))
}

pub async fn join_group(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<JoinGroupRequest>,
) -> ApiResult<Json<JoinGroupResult>> {
    Ok(Json(
        state
            .core
            .join_group(&caller, req.code, req.message)
            .await?,
    ))
}

pub async fn group_invitations(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<GroupInvitationList>> {
    Ok(Json(state.core.group_invitations(&caller).await?))
}

pub async fn accept_group_invitation(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .accept_group_invitation(&caller, ConversationId(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn decline_group_invitation(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .core
        .decline_group_invitation(&caller, ConversationId(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- Search ----------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct SearchParams {
    q: String,
    conversation_id: Option<i64>,
    sender_id: Option<i64>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<u32>,
    offset: Option<u32>,
}

pub async fn search(
    State(state): State<AppState>,
    Authed(caller): Authed,
    query: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SearchResults>> {
    let Query(p) = query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let req = SearchRequest {
        q: p.q,
        conversation_id: p.conversation_id.map(ConversationId),
        sender_id: p.sender_id.map(UserId),
        since: p.since,
        until: p.until,
        limit: p.limit,
        offset: p.offset,
    };
    Ok(Json(state.core.search(&caller, req).await?))
}

// --- Server administration (administrators only; the core checks the role) ----------------

#[derive(Deserialize)]
pub struct AdminUsersQuery {
    q: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

pub async fn admin_users(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    query: Result<Query<AdminUsersQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AdminUserList>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let prefix = query.q.unwrap_or_default();
    Ok(Json(
        state
            .core
            .admin_users(
                AdminActor::User(&caller, address),
                &prefix,
                query.after.map(UserId),
                query.limit,
            )
            .await?,
    ))
}

pub async fn admin_suspend(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<Json<AdminUser>> {
    let actor = AdminActor::User(&caller, address);
    Ok(Json(state.core.suspend_user(actor, UserId(user_id)).await?))
}

pub async fn admin_reactivate(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<Json<AdminUser>> {
    let actor = AdminActor::User(&caller, address);
    Ok(Json(
        state.core.reactivate_user(actor, UserId(user_id)).await?,
    ))
}

pub async fn admin_delete_user(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    let actor = AdminActor::User(&caller, address);
    state.core.delete_user(actor, UserId(user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn admin_sign_out(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<StatusCode> {
    let actor = AdminActor::User(&caller, address);
    state.core.sign_out_user(actor, UserId(user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn admin_grant(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<Json<AdminUser>> {
    let actor = AdminActor::User(&caller, address);
    Ok(Json(
        state
            .core
            .set_server_admin(actor, UserId(user_id), true)
            .await?,
    ))
}

pub async fn admin_revoke(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(user_id): Path<i64>,
) -> ApiResult<Json<AdminUser>> {
    let actor = AdminActor::User(&caller, address);
    Ok(Json(
        state
            .core
            .set_server_admin(actor, UserId(user_id), false)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct OAuthClientsQuery {
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn admin_oauth_clients(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    query: Result<Query<OAuthClientsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<tidings_proto::oauth::OAuthClientList>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let actor = AdminActor::User(&caller, address);
    Ok(Json(
        state
            .core
            .oauth_clients(actor, query.after.as_deref(), query.limit)
            .await?,
    ))
}

pub async fn admin_add_oauth_client(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    ApiJson(req): ApiJson<tidings_proto::oauth::NewOAuthClient>,
) -> ApiResult<(StatusCode, Json<tidings_proto::oauth::OAuthClientCreated>)> {
    let actor = AdminActor::User(&caller, address);
    let created = state.core.add_oauth_client(actor, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn admin_remove_oauth_client(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path(client_id): Path<String>,
) -> ApiResult<StatusCode> {
    let actor = AdminActor::User(&caller, address);
    state.core.remove_oauth_client(actor, &client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The filters and cursor of the audit endpoints; times are ms since the Unix epoch.
#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<i64>,
    target: Option<i64>,
    kind: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    after: Option<i64>,
    limit: Option<u32>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            actor: self.actor.map(UserId),
            target_user: self.target.map(UserId),
            kind: self.kind.clone().filter(|k| !k.is_empty()),
            since: self.since,
            until: self.until,
        }
    }
}

pub async fn admin_audit(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    Ok(Json(
        state
            .core
            .admin_audit(
                AdminActor::User(&caller, address),
                &query.filter(),
                query.after,
                query.limit,
            )
            .await?,
    ))
}

/// The audit log as JSON Lines, streamed a page at a time.
pub async fn admin_audit_export(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    use futures_util::TryStreamExt;
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let lines = state
        .core
        .admin_audit_export(AdminActor::User(&caller, address), query.filter())
        .await?;
    // A failure after the first page can only cut the stream short; the client sees a
    // truncated body (no final newline-terminated entry is ever split), and the cause is logged.
    let body = axum::body::Body::from_stream(lines.map_err(ApiError));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
        body,
    )
        .into_response())
}

pub async fn admin_remove_message(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ClientAddr(address): ClientAddr,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .admin_remove_message(&caller, address, ConversationId(id), seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn message_readers(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<Json<tidings_proto::rest::MessageReaders>> {
    Ok(Json(
        state
            .core
            .message_readers(&caller, ConversationId(id), seq)
            .await?,
    ))
}

// --- Rich messages ---------------------------------------------------------------------------

pub async fn edit_history(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<Json<tidings_proto::rest::EditHistory>> {
    Ok(Json(
        state
            .core
            .edit_history(&caller, ConversationId(id), seq)
            .await?,
    ))
}

pub async fn reactions(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<Json<tidings_proto::rest::ReactionList>> {
    Ok(Json(
        state
            .core
            .reactions(&caller, ConversationId(id), seq)
            .await?,
    ))
}

pub async fn pins(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<tidings_proto::rest::PinnedMessages>> {
    Ok(Json(
        state
            .core
            .pinned_messages(&caller, ConversationId(id))
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct ThreadQuery {
    after: Option<Seq>,
    limit: Option<u32>,
}

pub async fn thread(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, root)): Path<(i64, Seq)>,
    query: Result<Query<ThreadQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<HistoryPage>> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    Ok(Json(
        state
            .core
            .thread(
                &caller,
                ConversationId(id),
                root,
                query.after.unwrap_or(0),
                query.limit.unwrap_or(50),
            )
            .await?,
    ))
}

pub async fn update_conversation_settings(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<tidings_proto::rest::UpdateConversationSettingsRequest>,
) -> ApiResult<Json<tidings_proto::rest::ConversationSettings>> {
    Ok(Json(
        state
            .core
            .update_conversation_settings(&caller, ConversationId(id), req)
            .await?,
    ))
}

pub async fn retention(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<tidings_proto::rest::RetentionPolicy>> {
    Ok(Json(
        state.core.retention(&caller, ConversationId(id)).await?,
    ))
}

pub async fn set_retention(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<tidings_proto::rest::RetentionPolicy>,
) -> ApiResult<Json<tidings_proto::rest::RetentionPolicy>> {
    Ok(Json(
        state
            .core
            .set_retention(&caller, ConversationId(id), req)
            .await?,
    ))
}

pub async fn hide_message(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, seq)): Path<(i64, Seq)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .hide_message(&caller, ConversationId(id), seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn threads(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<i64>,
) -> ApiResult<Json<tidings_proto::rest::ThreadList>> {
    Ok(Json(state.core.threads(&caller, ConversationId(id)).await?))
}

pub async fn mark_thread_read(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((id, root)): Path<(i64, Seq)>,
    ApiJson(req): ApiJson<tidings_proto::rest::ThreadReadRequest>,
) -> ApiResult<StatusCode> {
    state
        .core
        .mark_thread_read(&caller, ConversationId(id), root, req.seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
