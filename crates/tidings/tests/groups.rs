//! Groups end to end with real clients: roles and the permission matrix, mutes, bans, removal
//! stopping delivery at once, system events live and on sync, invite links, join requests,
//! invitations, dissolving, moderator deletion and the per-user message rate limit.

use std::time::Duration;
use tidings_proto::message::{JoinMethod, SystemEvent};
use tidings_proto::rest::{
    CreateInviteLinkRequest, GroupPermissions, JoinStatus, Role, UpdateGroupRequest,
};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ErrorCode, Message, MessageBody};
use tidings_sdk::{Connection, SdkError};
use tidings_testkit::{TestServer, error_code as code, next_message};

const WAIT: Duration = Duration::from_secs(10);

/// Waits for the next system event.
async fn next_system_event(conn: &mut Connection) -> (Message, SystemEvent) {
    loop {
        let message = next_message(conn).await;
        if let MessageBody::System { event } = &message.body {
            let event = (**event).clone();
            return (message, event);
        }
    }
}

/// Reads events until `quiet` passes without one; returns them.
async fn drain(conn: &mut Connection, quiet: Duration) -> Vec<ServerFrame> {
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(quiet, conn.next_event()).await {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn roles_follow_the_matrix_and_the_rank_rule() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let admin = server.user("admin").await;
    let a = server.user("member_a").await;
    let b = server.user("member_b").await;
    let group = owner
        .api
        .create_group("team", &[admin.user_id, a.user_id, b.user_id])
        .await
        .unwrap();
    let mut a_ws = server.connect(&a).await;

    // Only the owner may change roles by default; the change is a system event for everyone.
    assert_eq!(
        code(
            a.api
                .set_role(group.id, b.user_id, Role::Admin)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    owner
        .api
        .set_role(group.id, admin.user_id, Role::Admin)
        .await
        .unwrap();
    let (message, event) = next_system_event(&mut a_ws).await;
    assert_eq!(message.sender_id, owner.user_id);
    assert_eq!(
        event,
        SystemEvent::RoleChanged {
            user: admin.user_id,
            role: Role::Admin
        }
    );
    let members = admin.api.members(group.id).await.unwrap();
    let role_of = |user| members.iter().find(|m| m.user_id == user).unwrap().role;
    assert_eq!(role_of(admin.user_id), Role::Admin);
    assert_eq!(role_of(owner.user_id), Role::Owner);

    // Admins moderate members but not the owner, and not each other.
    assert_eq!(
        code(
            admin
                .api
                .remove_member(group.id, owner.user_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            admin
                .api
                .set_role(group.id, b.user_id, Role::Admin)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden,
        "changing roles is the owner's by default"
    );
    assert_eq!(
        code(
            a.api
                .update_group(
                    group.id,
                    &UpdateGroupRequest {
                        title: Some("mine".into()),
                        ..Default::default()
                    }
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    let info = admin
        .api
        .update_group(
            group.id,
            &UpdateGroupRequest {
                title: Some("team two".into()),
                announcement: Some("standup at ten".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(info.title, "team two");
    assert_eq!(info.announcement, "standup at ten");
    assert_eq!(info.role, Role::Admin);
    let (_, event) = next_system_event(&mut a_ws).await;
    assert!(matches!(
        event,
        SystemEvent::InfoChanged { title: Some(t), .. } if t == "team two"
    ));

    // The owner opens removal to members: now a member may remove another member, not an admin.
    let permissions = GroupPermissions {
        remove_members: Role::Member,
        ..GroupPermissions::default()
    };
    assert_eq!(
        code(
            admin
                .api
                .set_group_permissions(group.id, &permissions)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden,
        "only the owner sets permissions"
    );
    owner
        .api
        .set_group_permissions(group.id, &permissions)
        .await
        .unwrap();
    assert_eq!(
        code(
            a.api
                .remove_member(group.id, admin.user_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(a.api.remove_member(group.id, b.user_id).await.unwrap_err()),
        ErrorCode::Forbidden,
        "members are equals: the rank rule still applies"
    );

    // Ownership moves; the old owner becomes an admin and can now leave.
    owner
        .api
        .transfer_ownership(group.id, admin.user_id)
        .await
        .unwrap();
    let info = owner.api.group_info(group.id).await.unwrap();
    assert_eq!(info.role, Role::Admin);
    owner
        .api
        .remove_member(group.id, owner.user_id)
        .await
        .unwrap();
    assert_eq!(
        code(
            admin
                .api
                .remove_member(group.id, admin.user_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden,
        "the owner cannot leave"
    );
    server.stop().await;
}

#[tokio::test]
async fn mutes_hold_until_lifted_and_removal_stops_delivery_at_once() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let a = server.user("ann").await;
    let b = server.user("bob").await;
    let group = owner
        .api
        .create_group("room", &[a.user_id, b.user_id])
        .await
        .unwrap();
    let mut a_ws = server.connect(&a).await;
    let mut b_ws = server.connect(&b).await;

    owner.api.mute(group.id, a.user_id, 3600).await.unwrap();
    let (_, event) = next_system_event(&mut b_ws).await;
    assert!(matches!(event, SystemEvent::MemberMuted { user, .. } if user == a.user_id));
    let err = a_ws.send_text(group.id, "m1", "hello?").await.unwrap_err();
    assert_eq!(code(err), ErrorCode::Forbidden);
    let members = owner.api.members(group.id).await.unwrap();
    assert!(
        members
            .iter()
            .find(|m| m.user_id == a.user_id)
            .unwrap()
            .muted_until
            .is_some()
    );
    assert_eq!(
        code(a.api.mute(group.id, b.user_id, 60).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    owner.api.unmute(group.id, a.user_id).await.unwrap();
    a_ws.send_text(group.id, "m2", "thanks").await.unwrap();

    // Removing b: b gets the event that removed them, then nothing more.
    owner.api.remove_member(group.id, b.user_id).await.unwrap();
    loop {
        let (_, event) = next_system_event(&mut b_ws).await;
        if event == (SystemEvent::MemberRemoved { user: b.user_id }) {
            break;
        }
    }
    a_ws.send_text(group.id, "m3", "b is gone").await.unwrap();
    let after = drain(&mut b_ws, Duration::from_millis(500)).await;
    assert!(
        !after.iter().any(
            |f| matches!(f, ServerFrame::Message { message } if message.conversation_id == group.id)
        ),
        "a removed member receives nothing more: {after:?}"
    );
    assert_eq!(
        code(b.api.history(group.id, None, 10).await.unwrap_err()),
        ErrorCode::NotFound
    );
    // The group's history records it all, in order, for those still inside.
    let history = a.api.history(group.id, None, 50).await.unwrap();
    let events: Vec<SystemEvent> = history
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::System { event } => Some((**event).clone()),
            _ => None,
        })
        .collect();
    assert!(matches!(events[0], SystemEvent::MemberMuted { .. }));
    assert_eq!(events[1], SystemEvent::MemberUnmuted { user: a.user_id });
    assert_eq!(events[2], SystemEvent::MemberRemoved { user: b.user_id });
    let _ = next_message(&mut a_ws).await;
    server.stop().await;
}

#[tokio::test]
async fn bans_keep_users_out_of_every_door() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let troll = server.user("troll").await;
    let friend = server.user("friend").await;
    let group = owner
        .api
        .create_group("club", &[troll.user_id, friend.user_id])
        .await
        .unwrap();
    let link = owner
        .api
        .create_invite_link(group.id, &CreateInviteLinkRequest::default())
        .await
        .unwrap();
    let code_text = link.code.clone().expect("the code is shown once");

    owner
        .api
        .ban(group.id, troll.user_id, Some("spam"))
        .await
        .unwrap();
    let bans = owner.api.bans(group.id).await.unwrap();
    assert_eq!(bans.users.len(), 1);
    assert_eq!(bans.users[0].reason.as_deref(), Some("spam"));
    assert_eq!(
        code(troll.api.history(group.id, None, 5).await.unwrap_err()),
        ErrorCode::NotFound,
        "a ban removes the member"
    );
    assert_eq!(
        code(troll.api.join_group(&code_text, None).await.unwrap_err()),
        ErrorCode::Forbidden,
        "banned users cannot rejoin by link"
    );
    assert_eq!(
        code(
            friend
                .api
                .add_members(group.id, &[troll.user_id])
                .await
                .unwrap_err()
        ),
        ErrorCode::Conflict,
        "nor be added back until unbanned"
    );
    assert_eq!(
        code(friend.api.bans(group.id).await.unwrap_err()),
        ErrorCode::Forbidden
    );

    owner.api.unban(group.id, troll.user_id).await.unwrap();
    let joined = troll.api.join_group(&code_text, None).await.unwrap();
    assert_eq!(joined.status, JoinStatus::Joined);
    troll.api.history(group.id, None, 5).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn invite_links_and_join_requests() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let admin = server.user("admin").await;
    let guest = server.user("guest").await;
    let late = server.user("late").await;
    let group = owner
        .api
        .create_group("open house", &[admin.user_id])
        .await
        .unwrap();
    owner
        .api
        .set_role(group.id, admin.user_id, Role::Admin)
        .await
        .unwrap();
    let link = owner
        .api
        .create_invite_link(
            group.id,
            &CreateInviteLinkRequest {
                expires_in_secs: Some(3600),
                max_uses: Some(1),
            },
        )
        .await
        .unwrap();
    let code_text = link.code.unwrap();
    let listed = owner.api.invite_links(group.id).await.unwrap();
    assert_eq!(listed.links.len(), 1);
    assert_eq!(listed.links[0].code, None, "codes are never shown again");

    let preview = guest.api.preview_group(&code_text).await.unwrap();
    assert_eq!(preview.title, "open house");
    assert_eq!(preview.member_count, 2);
    let mut owner_ws = server.connect(&owner).await;
    let joined = guest.api.join_group(&code_text, None).await.unwrap();
    assert_eq!(joined.status, JoinStatus::Joined);
    let (message, event) = next_system_event(&mut owner_ws).await;
    assert_eq!(message.sender_id, guest.user_id);
    assert_eq!(
        event,
        SystemEvent::MemberJoined {
            user: guest.user_id,
            via: JoinMethod::Link
        }
    );
    assert_eq!(
        code(late.api.join_group(&code_text, None).await.unwrap_err()),
        ErrorCode::NotFound,
        "a used-up link is like no link"
    );

    // With approval on, a link makes a request that admins see live and decide on.
    owner
        .api
        .update_group(
            group.id,
            &UpdateGroupRequest {
                join_approval: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let link = owner
        .api
        .create_invite_link(group.id, &CreateInviteLinkRequest::default())
        .await
        .unwrap();
    let mut admin_ws = server.connect(&admin).await;
    let asked = late
        .api
        .join_group(link.code.as_deref().unwrap(), Some("hello"))
        .await
        .unwrap();
    assert_eq!(asked.status, JoinStatus::Requested);
    loop {
        let event = tokio::time::timeout(WAIT, admin_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::JoinRequest { request } = event {
            assert_eq!(request.user_id, late.user_id);
            assert_eq!(request.message, "hello");
            break;
        }
    }
    assert_eq!(
        code(late.api.history(group.id, None, 5).await.unwrap_err()),
        ErrorCode::NotFound,
        "a request is not membership"
    );
    assert_eq!(
        code(guest.api.join_requests(group.id).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    let requests = admin.api.join_requests(group.id).await.unwrap();
    assert_eq!(requests.requests.len(), 1);
    admin
        .api
        .approve_join_request(group.id, late.user_id)
        .await
        .unwrap();
    late.api.history(group.id, None, 5).await.unwrap();

    // Revoked links stop working.
    owner
        .api
        .revoke_invite_link(group.id, link.id)
        .await
        .unwrap();
    let stranger = server.user("stranger").await;
    assert_eq!(
        code(
            stranger
                .api
                .preview_group(link.code.as_deref().unwrap())
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn dissolving_and_moderator_deletion() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let a = server.user("ann").await;
    let group = owner
        .api
        .create_group("short lived", &[a.user_id])
        .await
        .unwrap();
    let mut a_ws = server.connect(&a).await;
    let owner_ws = server.connect(&owner).await;
    let (seq, _) = a_ws.send_text(group.id, "m1", "oops").await.unwrap();
    let (owner_seq, _) = owner_ws.send_text(group.id, "o1", "mine").await.unwrap();

    assert_eq!(
        code(a.api.delete_message(group.id, owner_seq).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    owner.api.delete_message(group.id, seq).await.unwrap();
    let history = a.api.history(group.id, None, 10).await.unwrap();
    let deleted = history.messages.iter().find(|m| m.seq == seq).unwrap();
    assert_eq!(deleted.body, MessageBody::Deleted {});
    loop {
        let (_, event) = next_system_event(&mut a_ws).await;
        if event == (SystemEvent::MessageDeleted { seq }) {
            break;
        }
    }

    assert_eq!(
        code(a.api.dissolve_group(group.id).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    owner.api.dissolve_group(group.id).await.unwrap();
    loop {
        let (_, event) = next_system_event(&mut a_ws).await;
        if event == (SystemEvent::GroupDissolved {}) {
            break;
        }
    }
    assert!(
        a.api
            .conversations()
            .await
            .unwrap()
            .conversations
            .is_empty()
    );
    assert_eq!(
        code(owner.api.group_info(group.id).await.unwrap_err()),
        ErrorCode::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn invitations_are_accepted_or_declined() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let shy = server.user("shy").await;
    let blocker = server.user("blocker").await;
    // `blocker` blocks the owner: an add request tells the owner the same as an invitation,
    // and nothing reaches `blocker`.
    blocker.api.block(owner.user_id).await.unwrap();
    let group = owner.api.create_group("g", &[]).await.unwrap();
    let result = owner
        .api
        .add_members(group.id, &[blocker.user_id])
        .await
        .unwrap();
    assert!(result.added.is_empty());
    assert_eq!(result.invited, vec![blocker.user_id]);
    assert!(
        blocker
            .api
            .group_invitations()
            .await
            .unwrap()
            .invitations
            .is_empty()
    );
    // A direct add of a user who allows it.
    let result = owner
        .api
        .add_members(group.id, &[shy.user_id])
        .await
        .unwrap();
    assert_eq!(result.added, vec![shy.user_id]);
    shy.api.remove_member(group.id, shy.user_id).await.unwrap();
    assert_eq!(
        code(shy.api.accept_group_invitation(group.id).await.unwrap_err()),
        ErrorCode::NotFound,
        "no invitation, nothing to accept"
    );
    assert_eq!(
        code(
            shy.api
                .decline_group_invitation(group.id)
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn the_message_rate_limit_answers_with_the_wait() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_minute = 60;
        config.limits.message_burst = 5;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let ws = server.connect(&alice).await;
    for n in 0..5 {
        ws.send_text(conv.id, &format!("m{n}"), "hi").await.unwrap();
    }
    match ws
        .send_text(conv.id, "m5", "one too many")
        .await
        .unwrap_err()
    {
        SdkError::Server { code, .. } => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("expected a rate-limit error frame, got {other:?}"),
    }
    // REST answers 429 with Retry-After, and the connection stays usable.
    let err = alice
        .api
        .send(conv.id, "m6", MessageBody::Text { text: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ws.send_text(conv.id, "m7", "later").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn privacy_settings_turn_adds_into_invitations() {
    use tidings_proto::contacts::{GroupAdds, UpdatePrivacyRequest};
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let careful = server.user("careful").await;
    careful
        .api
        .update_privacy(&UpdatePrivacyRequest {
            group_adds: Some(GroupAdds::Nobody),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut careful_ws = server.connect(&careful).await;
    // At creation and when adding later, the user is invited instead of added.
    let group = owner
        .api
        .create_group("book club", &[careful.user_id])
        .await
        .unwrap();
    assert_eq!(group.member_count, 1);
    loop {
        let event = tokio::time::timeout(WAIT, careful_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::GroupInvitation { invitation } = event {
            assert_eq!(invitation.conversation_id, group.id);
            assert_eq!(invitation.inviter.user_id, owner.user_id);
            break;
        }
    }
    let result = owner
        .api
        .add_members(group.id, &[careful.user_id])
        .await
        .unwrap();
    assert!(result.added.is_empty());
    assert_eq!(result.invited, vec![careful.user_id]);
    let invitations = careful.api.group_invitations().await.unwrap();
    assert_eq!(invitations.invitations.len(), 1, "one invitation, not two");
    assert_eq!(
        code(careful.api.history(group.id, None, 5).await.unwrap_err()),
        ErrorCode::NotFound
    );
    careful.api.accept_group_invitation(group.id).await.unwrap();
    let (message, event) = next_system_event(&mut careful_ws).await;
    assert_eq!(message.sender_id, careful.user_id);
    assert_eq!(
        event,
        SystemEvent::MemberJoined {
            user: careful.user_id,
            via: JoinMethod::Invitation
        }
    );
    assert!(
        careful
            .api
            .group_invitations()
            .await
            .unwrap()
            .invitations
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn moderation_and_refusals_are_in_the_audit_log() {
    let server = TestServer::start().await;
    let root = server.admin("root").await.api;
    let owner = server.user("owner").await;
    let member = server.user("member").await;
    let group = owner
        .api
        .create_group("g", &[member.user_id])
        .await
        .unwrap();
    owner.api.mute(group.id, member.user_id, 60).await.unwrap();
    assert_eq!(
        code(
            member
                .api
                .ban(group.id, owner.user_id, None)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    let ws = server.connect(&owner).await;
    let (seq, _) = ws.send_text(group.id, "m1", "rule breaking").await.unwrap();
    // A server administrator removes it without being a member.
    root.admin_remove_message(group.id, seq).await.unwrap();
    let history = owner.api.history(group.id, None, 10).await.unwrap();
    assert_eq!(
        history.messages.iter().find(|m| m.seq == seq).unwrap().body,
        MessageBody::Deleted {}
    );
    assert_eq!(
        code(
            owner
                .api
                .admin_remove_message(group.id, seq)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden,
        "group owners are not server administrators"
    );
    let page = root.admin_audit(&[]).await.unwrap();
    let find = |kind: &str, outcome: tidings_proto::rest::AuditOutcome| {
        page.entries
            .iter()
            .find(|e| e.kind == kind && e.outcome == outcome)
            .unwrap_or_else(|| panic!("no {kind} {outcome:?} entry in {:#?}", page.entries))
            .clone()
    };
    use tidings_proto::rest::AuditOutcome::{Done, Refused};
    let mute = find("group.mute", Done);
    assert_eq!(mute.actor, Some(owner.user_id));
    assert_eq!(mute.target_user, Some(member.user_id));
    assert_eq!(mute.conversation_id, Some(group.id));
    let refused = find("conversation.ban", Refused);
    assert_eq!(refused.actor, Some(member.user_id));
    let removed = find("message.remove", Done);
    assert_eq!(removed.detail["seq"], seq);
    find("message.remove", Refused);
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_owner_hands_the_group_on() {
    let server = TestServer::start().await;
    let root = server.admin("root").await.api;
    let owner = server.user("owner").await;
    let early = server.user("early").await;
    let deputy = server.user("deputy").await;
    let group = owner
        .api
        .create_group("club", &[early.user_id, deputy.user_id])
        .await
        .unwrap();
    owner
        .api
        .set_role(group.id, deputy.user_id, Role::Admin)
        .await
        .unwrap();
    let alone = owner.api.create_group("solo", &[]).await.unwrap();
    let mut early_ws = server.connect(&early).await;
    root.admin_delete_user(owner.user_id).await.unwrap();

    // The admin outranks the longer-standing member, so the admin becomes the owner.
    let (_, event) = next_system_event(&mut early_ws).await;
    assert_eq!(
        event,
        SystemEvent::OwnershipTransferred {
            user: deputy.user_id
        }
    );
    let (message, event) = next_system_event(&mut early_ws).await;
    assert_eq!(event, SystemEvent::MemberLeft {});
    assert_eq!(message.sender_id, owner.user_id);
    assert_eq!(
        deputy.api.group_info(group.id).await.unwrap().role,
        Role::Owner
    );
    assert_eq!(deputy.api.members(group.id).await.unwrap().len(), 2);
    // A group with nobody else left is dissolved.
    let store = server.core().store();
    assert!(store.conversation(alone.id).await.unwrap().is_some());
    assert_eq!(store.group(alone.id).await.unwrap(), None);
    assert!(store.group(group.id).await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn read_lists_come_from_the_markers() {
    use tidings_proto::ws::{ClientFrame, ReceiptKind};
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let reader = server.user("reader").await;
    let receiver = server.user("receiver").await;
    let away = server.user("away").await;
    let group = owner
        .api
        .create_group("g", &[reader.user_id, receiver.user_id, away.user_id])
        .await
        .unwrap();
    let owner_ws = server.connect(&owner).await;
    let (seq, _) = owner_ws
        .send_text(group.id, "m1", "did you see this?")
        .await
        .unwrap();
    let reader_ws = server.connect(&reader).await;
    reader_ws
        .request(|id| ClientFrame::Receipt {
            id,
            conversation_id: group.id,
            receipt: ReceiptKind::Read,
            seq,
        })
        .await
        .unwrap();
    let receiver_ws = server.connect(&receiver).await;
    receiver_ws
        .request(|id| ClientFrame::Receipt {
            id,
            conversation_id: group.id,
            receipt: ReceiptKind::Delivered,
            seq,
        })
        .await
        .unwrap();
    // Someone who joins later is not counted either way.
    let late = server.user("late").await;
    owner
        .api
        .add_members(group.id, &[late.user_id])
        .await
        .unwrap();
    let readers = owner.api.message_readers(group.id, seq).await.unwrap();
    let names = |list: &[tidings_proto::rest::UserSummary]| {
        list.iter().map(|u| u.username.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&readers.read), vec!["reader"]);
    assert_eq!(names(&readers.delivered), vec!["receiver"]);
    assert_eq!(names(&readers.unread), vec!["away"]);
    assert_eq!(
        code(
            server
                .user("stranger")
                .await
                .api
                .message_readers(group.id, seq)
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    server.stop().await;
}
