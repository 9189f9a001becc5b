//! The authorization table, over the real HTTP and WebSocket paths: every standing a caller can
//! have towards a group or a direct conversation, against every action, checked for allow or
//! deny. Each cell runs against a fresh group so that one action's effects (a removal, a
//! dissolution) cannot change another cell's answer.

use tidings_proto::ErrorCode;
use tidings_proto::rest::{CreateInviteLinkRequest, Role, UpdateGroupRequest};
use tidings_proto::ws::{ClientFrame, ReceiptKind};
use tidings_proto::{ConversationId, MessageBody, Seq};
use tidings_sdk::{Connection, SdkError, SdkResult};
use tidings_testkit::{TestServer, TestUser};

/// Expected outcome of one cell: allowed, forbidden, not found (the caller may not know the
/// conversation exists), or unauthenticated (the caller has no valid session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Y,
    F,
    N,
    U,
}
use Out::*;

fn outcome<T>(result: SdkResult<T>) -> Out {
    match result {
        Ok(_) => Y,
        Err(e) => match e.code() {
            Some(ErrorCode::Forbidden) => F,
            Some(ErrorCode::NotFound) => N,
            Some(ErrorCode::Unauthenticated) => U,
            _ => panic!("unexpected error {e:?}"),
        },
    }
}

/// The standings of the group table, in column order. The server administrator is not a
/// member of the groups: the role gives no power inside them beyond removing messages. The
/// suspended user was signed in before being suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    NonMember,
    Member,
    Muted,
    Admin,
    Owner,
    ServerAdmin,
    Suspended,
}

const COLUMNS: [Who; 7] = [
    Who::NonMember,
    Who::Member,
    Who::Muted,
    Who::Admin,
    Who::Owner,
    Who::ServerAdmin,
    Who::Suspended,
];

/// What can be done to or in a group.
#[derive(Clone, Copy, Debug)]
enum Act {
    ReadHistoryRest,
    HistoryWs,
    SendRest,
    SendWs,
    TypingWs,
    ReceiptWs,
    Members,
    GroupInfo,
    Invite,
    CreateInviteLink,
    ListJoinRequests,
    RemoveMember,
    Leave,
    Mute,
    Ban,
    ListBans,
    EditInfo,
    DeleteOthersMessage,
    PromoteToAdmin,
    SetPermissions,
    TransferOwnership,
    Dissolve,
    /// The server administrators' removal of any message.
    AdminRemoveMessage,
    /// The audit log, also for server administrators only.
    ReadAudit,
}

/// One fresh group: the owner, an admin, a member, a muted member and a plain member to act
/// upon, plus a message by the target to delete.
struct Fixture {
    id: ConversationId,
    target_message: Seq,
}

struct Cast {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    muted: TestUser,
    target: TestUser,
    outsider: TestUser,
    newcomer: TestUser,
    server_admin: TestUser,
    suspended: TestUser,
}

impl Cast {
    fn user(&self, who: Who) -> &TestUser {
        match who {
            Who::NonMember => &self.outsider,
            Who::Member => &self.member,
            Who::Muted => &self.muted,
            Who::Admin => &self.admin,
            Who::Owner => &self.owner,
            Who::ServerAdmin => &self.server_admin,
            Who::Suspended => &self.suspended,
        }
    }

    async fn fixture(&self, server: &TestServer) -> Fixture {
        let members = [
            self.admin.user_id,
            self.member.user_id,
            self.muted.user_id,
            self.target.user_id,
        ];
        let group = self.owner.api.create_group("cell", &members).await.unwrap();
        self.owner
            .api
            .set_role(group.id, self.admin.user_id, Role::Admin)
            .await
            .unwrap();
        self.owner
            .api
            .mute(group.id, self.muted.user_id, 3600)
            .await
            .unwrap();
        let target_ws = server.connect(&self.target).await;
        let (seq, _) = target_ws
            .send_text(group.id, "target-1", "delete me")
            .await
            .unwrap();
        Fixture {
            id: group.id,
            target_message: seq,
        }
    }
}

async fn perform(
    act: Act,
    cast: &Cast,
    who: Who,
    ws: Option<&Connection>,
    server: &TestServer,
    f: &Fixture,
) -> Out {
    let is_ws = matches!(
        act,
        Act::HistoryWs | Act::SendWs | Act::TypingWs | Act::ReceiptWs
    );
    if !is_ws {
        return perform_rest(act, cast, who, f).await;
    }
    let Some(ws) = ws else {
        // No session: a WebSocket action starts by authenticating, which must fail.
        let token = &cast.user(who).tokens.access_token;
        return outcome(Connection::connect(&server.client().ws_url(), token).await);
    };
    match act {
        Act::HistoryWs => outcome(ws.history(f.id, None, Some(10)).await),
        Act::SendWs => outcome(ws.send_text(f.id, "ws-1", "hi").await),
        Act::TypingWs => outcome(
            ws.request(|rid| ClientFrame::Typing {
                id: Some(rid),
                conversation_id: f.id,
                typing: true,
            })
            .await,
        ),
        _ => outcome(
            ws.request(|rid| ClientFrame::Receipt {
                id: rid,
                conversation_id: f.id,
                receipt: ReceiptKind::Read,
                seq: f.target_message,
            })
            .await,
        ),
    }
}

async fn perform_rest(act: Act, cast: &Cast, who: Who, f: &Fixture) -> Out {
    let me = cast.user(who);
    let api = &me.api;
    let id = f.id;
    let target = cast.target.user_id;
    match act {
        Act::ReadHistoryRest => outcome(api.history(id, None, 10).await),
        Act::SendRest => outcome(
            api.send(id, "rest-1", MessageBody::Text { text: "hi".into() })
                .await,
        ),
        Act::Members => outcome(api.members(id).await),
        Act::GroupInfo => outcome(api.group_info(id).await),
        Act::Invite => outcome(api.add_members(id, &[cast.newcomer.user_id]).await),
        Act::CreateInviteLink => outcome(
            api.create_invite_link(id, &CreateInviteLinkRequest::default())
                .await,
        ),
        Act::ListJoinRequests => outcome(api.join_requests(id).await),
        Act::RemoveMember => outcome(api.remove_member(id, target).await),
        Act::Leave => outcome(api.remove_member(id, me.user_id).await),
        Act::Mute => outcome(api.mute(id, target, 60).await),
        Act::Ban => outcome(api.ban(id, target, None).await),
        Act::ListBans => outcome(api.bans(id).await),
        Act::EditInfo => outcome(
            api.update_group(
                id,
                &UpdateGroupRequest {
                    description: Some("edited".into()),
                    ..Default::default()
                },
            )
            .await,
        ),
        Act::DeleteOthersMessage => outcome(api.delete_message(id, f.target_message).await),
        Act::PromoteToAdmin => outcome(api.set_role(id, target, Role::Admin).await),
        Act::SetPermissions => outcome(api.set_group_permissions(id, &Default::default()).await),
        Act::TransferOwnership => outcome(api.transfer_ownership(id, target).await),
        Act::Dissolve => outcome(api.dissolve_group(id).await),
        Act::AdminRemoveMessage => outcome(api.admin_remove_message(id, f.target_message).await),
        Act::ReadAudit => outcome(api.admin_audit(&[]).await),
        Act::HistoryWs | Act::SendWs | Act::TypingWs | Act::ReceiptWs => {
            unreachable!("WebSocket actions are performed over the connection")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_standing_against_every_action() {
    // The table creates a group per cell, far more additions than the invitation limit allows.
    let server =
        TestServer::start_with(|config| config.limits.group_invitations_per_minute = 0).await;
    let cast = Cast {
        owner: server.user("owner").await,
        admin: server.user("admin").await,
        member: server.user("member").await,
        muted: server.user("muted").await,
        target: server.user("target").await,
        outsider: server.user("outsider").await,
        newcomer: server.user("newcomer").await,
        server_admin: server.admin("root").await,
        suspended: server.user("suspended").await,
    };
    let root = &cast.server_admin.api;
    root.admin_suspend(cast.suspended.user_id).await.unwrap();
    #[rustfmt::skip]
    let table: &[(Act, [Out; 7])] = &[
        // action                    non-member member muted admin owner server-admin suspended
        (Act::ReadHistoryRest,       [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::HistoryWs,             [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::SendRest,              [N,         Y,     F,    Y,    Y,    N,           U]),
        (Act::SendWs,                [N,         Y,     F,    Y,    Y,    N,           U]),
        (Act::TypingWs,              [N,         Y,     F,    Y,    Y,    N,           U]),
        (Act::ReceiptWs,             [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::Members,               [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::GroupInfo,             [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::Invite,                [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::CreateInviteLink,      [N,         Y,     Y,    Y,    Y,    N,           U]),
        (Act::ListJoinRequests,      [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::RemoveMember,          [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::Leave,                 [N,         Y,     Y,    Y,    F,    N,           U]),
        (Act::Mute,                  [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::Ban,                   [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::ListBans,              [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::EditInfo,              [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::DeleteOthersMessage,   [N,         F,     F,    Y,    Y,    N,           U]),
        (Act::PromoteToAdmin,        [N,         F,     F,    F,    Y,    N,           U]),
        (Act::SetPermissions,        [N,         F,     F,    F,    Y,    N,           U]),
        (Act::TransferOwnership,     [N,         F,     F,    F,    Y,    N,           U]),
        (Act::Dissolve,              [N,         F,     F,    F,    Y,    N,           U]),
        (Act::AdminRemoveMessage,    [F,         F,     F,    F,    F,    Y,           U]),
        (Act::ReadAudit,             [F,         F,     F,    F,    F,    Y,           U]),
    ];
    let mut connections = Vec::new();
    for who in COLUMNS {
        connections.push(match who {
            Who::Suspended => None,
            _ => Some(server.connect(cast.user(who)).await),
        });
    }
    let mut failures = Vec::new();
    for (act, expected) in table {
        for (column, who) in COLUMNS.iter().enumerate() {
            let fixture = cast.fixture(&server).await;
            let got = perform(
                *act,
                &cast,
                *who,
                connections[column].as_ref(),
                &server,
                &fixture,
            )
            .await;
            if got != expected[column] {
                failures.push(format!(
                    "{act:?} as {who:?}: expected {:?}, got {got:?}",
                    expected[column]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

#[tokio::test]
async fn direct_conversations_under_blocks() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let blocked = server.user("blocked").await;
    let stranger = server.user("stranger").await;
    let conv = alice.api.open_direct(blocked.user_id).await.unwrap();
    alice.api.block(blocked.user_id).await.unwrap();
    let alice_ws = server.connect(&alice).await;
    let blocked_ws = server.connect(&blocked).await;
    let stranger_ws = server.connect(&stranger).await;

    // (who, action) -> expected: the blocked user may still read what was said, but not write
    // or reopen; their typing is accepted and silently not relayed (refusing it would reveal
    // the block); the blocker is refused too until they unblock; strangers see nothing.
    async fn send(ws: &Connection, conv: ConversationId, n: &str) -> Out {
        outcome(ws.send_text(conv, n, "hi").await)
    }
    async fn typing(ws: &Connection, conv: ConversationId) -> Out {
        outcome(
            ws.request(|rid| ClientFrame::Typing {
                id: Some(rid),
                conversation_id: conv,
                typing: true,
            })
            .await,
        )
    }
    let cells: Vec<(&str, Out, Out)> = vec![
        ("blocked sends", send(&blocked_ws, conv.id, "b1").await, F),
        ("blocked types", typing(&blocked_ws, conv.id).await, Y),
        (
            "blocked reopens",
            outcome(blocked.api.open_direct(alice.user_id).await),
            F,
        ),
        (
            "blocked reads",
            outcome(blocked.api.history(conv.id, None, 5).await),
            Y,
        ),
        ("blocker sends", send(&alice_ws, conv.id, "a1").await, F),
        ("stranger sends", send(&stranger_ws, conv.id, "s1").await, N),
        (
            "stranger reads",
            outcome(stranger.api.history(conv.id, None, 5).await),
            N,
        ),
        (
            "group action in a direct conversation",
            outcome(alice.api.mute(conv.id, blocked.user_id, 60).await),
            F,
        ),
    ];
    let failures: Vec<String> = cells
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(what, got, want)| format!("{what}: expected {want:?}, got {got:?}"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The blocked user's refusal reads like any user's who does not accept messages.
    match blocked_ws.send_text(conv.id, "b2", "hi").await.unwrap_err() {
        SdkError::Server { message, .. } => {
            assert_eq!(message, "this user does not accept messages from you")
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}
