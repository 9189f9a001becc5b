//! Rich messages end to end with real clients: mentions and unread counts, replies and threads,
//! edits with history, reactions, pins, recalls, forwards, location and contact cards, live and
//! on sync; per-member conversation settings across devices; retention.

use std::time::Duration;
use tidings_proto::rest::{
    NotifyLevel, RetentionPolicy, Role, SearchRequest, UpdateConversationSettingsRequest,
};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ErrorCode, ForwardedMessage, Mentions, MessageBody, Relations};
use tidings_testkit::{TestServer, error_code as code, next_message};

const WAIT: Duration = Duration::from_secs(10);

fn text(t: &str) -> MessageBody {
    MessageBody::Text { text: t.into() }
}

#[tokio::test]
async fn rich_messages_live_and_on_sync() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let a = server.user("alice").await;
    let b = server.user("bob").await;
    let group = owner
        .api
        .create_group("team", &[a.user_id, b.user_id])
        .await
        .unwrap();
    let mut a_ws = server.connect(&a).await;
    let owner_ws = server.connect(&owner).await;

    // A mention of bob by name raises bob's mention count; the message arrives live with it.
    let mention = Relations {
        mentions: Some(Mentions {
            users: vec![b.user_id],
            all: false,
        }),
        ..Relations::default()
    };
    let (topic, _) = owner_ws
        .send_related(group.id, "topic", text("plans for the launch"), mention)
        .await
        .unwrap();
    let live = next_message(&mut a_ws).await;
    assert_eq!(live.seq, topic);
    assert_eq!(live.mentions.as_ref().unwrap().users, vec![b.user_id]);
    // `@all` needs the role the group asks for (admin by default).
    let all = Relations {
        mentions: Some(Mentions {
            users: vec![],
            all: true,
        }),
        ..Relations::default()
    };
    assert_eq!(
        code(
            a.api
                .send_related(group.id, "all", text("hey everyone"), all.clone())
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    owner
        .api
        .send_related(group.id, "all", text("standup in 5"), all)
        .await
        .unwrap();
    next_message(&mut a_ws).await;

    // Alice reacts and replies in a thread; reactions do not count as unread.
    let reaction = MessageBody::Reaction {
        target: topic,
        key: "🎉".into(),
        remove: false,
    };
    let first = a.api.send(group.id, "r1", reaction.clone()).await.unwrap();
    let retry = a.api.send(group.id, "r1", reaction).await.unwrap();
    assert!(
        retry.duplicate && retry.seq == first.seq,
        "retries are idempotent"
    );
    let in_thread = Relations {
        thread_root: Some(topic),
        reply_to: Some(topic),
        ..Relations::default()
    };
    let reply = a
        .api
        .send_related(group.id, "t1", text("I'll take the docs"), in_thread)
        .await
        .unwrap();
    let view = b.api.conversation(group.id).await.unwrap();
    assert_eq!(
        view.unread, 3,
        "topic, standup and the reply; not the reaction"
    );
    assert_eq!(view.mentions, 2, "by name and @all");
    assert_eq!(
        view.last_message.as_ref().map(|m| m.seq),
        Some(reply.seq),
        "the last message is content, not a reaction"
    );

    // The owner edits the topic; history keeps both versions; the index follows.
    owner_ws
        .send(
            group.id,
            "edit",
            MessageBody::Edit {
                target: topic,
                body: Box::new(text("plans for the 上线 launch")),
            },
        )
        .await
        .unwrap();
    // Alice sees, in order: her own reaction and reply were acked to her; the edit arrives.
    loop {
        let m = next_message(&mut a_ws).await;
        if let MessageBody::Edit { target, .. } = m.body {
            assert_eq!(target, topic);
            break;
        }
    }
    let history = b.api.edit_history(group.id, topic).await.unwrap();
    assert_eq!(history.versions.len(), 2);
    assert_eq!(history.versions[0].body, text("plans for the launch"));
    // Only the sender edits.
    assert_eq!(
        code(
            a.api
                .send(
                    group.id,
                    "steal",
                    MessageBody::Edit {
                        target: topic,
                        body: Box::new(text("mine now")),
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    // An edit must keep the kind.
    assert_eq!(
        code(
            owner
                .api
                .send(
                    group.id,
                    "kind",
                    MessageBody::Edit {
                        target: topic,
                        body: Box::new(MessageBody::Markdown { text: "*x*".into() }),
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidField
    );

    // The page of history shows the aggregated state on the topic.
    let page = b.api.history(group.id, None, 50).await.unwrap();
    let shown = page.messages.iter().find(|m| m.seq == topic).unwrap();
    assert_eq!(shown.body, text("plans for the 上线 launch"));
    assert!(shown.edited_at.is_some());
    assert_eq!(shown.reactions.len(), 1);
    assert_eq!(shown.reactions[0].users, vec![a.user_id]);
    assert_eq!(shown.thread.unwrap().replies, 1);
    let thread = b.api.thread(group.id, topic, 0, 10).await.unwrap();
    assert_eq!(thread.messages.len(), 1);
    assert_eq!(thread.messages[0].reply_to, Some(topic));

    // Pins: members may not pin by default, admins and the owner may.
    let pin = MessageBody::Pin {
        target: topic,
        unpin: false,
    };
    assert_eq!(
        code(a.api.send(group.id, "pin", pin.clone()).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    owner
        .api
        .set_role(group.id, a.user_id, Role::Admin)
        .await
        .unwrap();
    a.api.send(group.id, "pin2", pin).await.unwrap();
    let pins = b.api.pins(group.id).await.unwrap();
    assert_eq!(pins.messages.len(), 1);
    assert_eq!(pins.messages[0].seq, topic);

    // Forward the reply into a direct conversation; the server fills in the original.
    let direct = a.api.open_direct(b.user_id).await.unwrap();
    let forward = a
        .api
        .send(
            direct.id,
            "fwd",
            MessageBody::Forward {
                messages: vec![ForwardedMessage {
                    conversation_id: group.id,
                    seq: reply.seq,
                    sender_id: None,
                    ts: None,
                    body: None,
                }],
            },
        )
        .await
        .unwrap();
    let page = b.api.history(direct.id, None, 10).await.unwrap();
    let MessageBody::Forward { messages } = &page
        .messages
        .iter()
        .find(|m| m.seq == forward.seq)
        .unwrap()
        .body
    else {
        panic!("a forward");
    };
    assert_eq!(messages[0].sender_id, Some(a.user_id));
    assert_eq!(
        messages[0].body.as_deref(),
        Some(&text("I'll take the docs"))
    );
    // Nobody forwards what they cannot read.
    let outsider = server.user("outsider").await;
    let to_outsider = outsider.api.open_direct(b.user_id).await.unwrap();
    assert_eq!(
        code(
            outsider
                .api
                .send(
                    to_outsider.id,
                    "leak",
                    MessageBody::Forward {
                        messages: vec![ForwardedMessage {
                            conversation_id: group.id,
                            seq: topic,
                            sender_id: None,
                            ts: None,
                            body: None,
                        }],
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );

    // Location and contact cards are checked.
    b.api
        .send(
            group.id,
            "loc",
            MessageBody::Location {
                latitude: 31.23,
                longitude: 121.47,
                name: "上海".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            b.api
                .send(
                    group.id,
                    "badloc",
                    MessageBody::Location {
                        latitude: 91.0,
                        longitude: 0.0,
                        name: String::new(),
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidField
    );
    b.api
        .send(
            group.id,
            "card",
            MessageBody::Contact {
                user_id: owner.user_id,
            },
        )
        .await
        .unwrap();

    // Recall: bob may not recall the owner's message; the owner may, and the content leaves
    // history and search.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let search = |q: &str| SearchRequest {
        q: q.into(),
        conversation_id: Some(group.id),
        sender_id: None,
        since: None,
        until: None,
        limit: None,
        offset: None,
    };
    assert_eq!(b.api.search(&search("上线")).await.unwrap().hits.len(), 1);
    assert_eq!(
        code(
            b.api
                .send(group.id, "rc", MessageBody::Recall { target: topic })
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    owner
        .api
        .send(group.id, "rc", MessageBody::Recall { target: topic })
        .await
        .unwrap();
    let page = b.api.history(group.id, None, 50).await.unwrap();
    let gone = page.messages.iter().find(|m| m.seq == topic).unwrap();
    assert_eq!(gone.body, MessageBody::Deleted {});
    assert!(gone.reactions.is_empty() && gone.pinned_at.is_none());
    assert!(b.api.search(&search("上线")).await.unwrap().hits.is_empty());
    assert!(b.api.pins(group.id).await.unwrap().messages.is_empty());
    assert_eq!(
        code(b.api.edit_history(group.id, topic).await.unwrap_err()),
        ErrorCode::NotFound
    );
    // Reacting to a recalled message is refused with a conflict.
    assert_eq!(
        code(
            b.api
                .send(
                    group.id,
                    "late",
                    MessageBody::Reaction {
                        target: topic,
                        key: "👍".into(),
                        remove: false,
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::Conflict
    );

    // A fresh device syncing from zero gets everything in order, effects included.
    let b2 = server.second_device(&b, "tablet").await;
    let mut b2_ws = server.connect(&b2).await;
    b2_ws
        .sync(&tidings_sdk::Cursors::default(), None)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), b2_ws.next_event()).await
    {
        if let ServerFrame::Message { message } = event
            && message.conversation_id == group.id
        {
            seqs.push(message.seq);
        }
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "in order, no duplicates");
    assert_eq!(*seqs.first().unwrap(), 1);
    assert_eq!(seqs.len() as u64, *seqs.last().unwrap(), "no gaps");
}

#[tokio::test]
async fn conversation_settings_follow_the_user_across_devices() {
    let server = TestServer::start().await;
    let a = server.user("alice").await;
    let b = server.user("bob").await;
    let first = a.api.create_group("first", &[b.user_id]).await.unwrap();
    let second = a.api.create_group("second", &[b.user_id]).await.unwrap();
    let tablet = server.second_device(&b, "tablet").await;
    let mut tablet_ws = server.connect(&tablet).await;

    let settings = b
        .api
        .update_conversation_settings(
            first.id,
            &UpdateConversationSettingsRequest {
                notify: Some(NotifyLevel::Mentions),
                pinned: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(settings.notify, NotifyLevel::Mentions);
    assert!(settings.pinned_at.is_some());
    // The other device hears of it live.
    let event = loop {
        let event = tokio::time::timeout(WAIT, tablet_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::ConversationSettings {
            conversation_id,
            settings,
        } = event
        {
            break (conversation_id, settings);
        }
    };
    assert_eq!(event, (first.id, settings.clone()));
    // Pinned conversations come first although the other one is newer.
    a.api.send(second.id, "new", text("newer")).await.unwrap();
    let list = tablet.api.conversations().await.unwrap();
    assert_eq!(list.conversations[0].id, first.id);
    assert_eq!(list.conversations[0].settings, settings);
    // Marked unread until read.
    b.api
        .update_conversation_settings(
            second.id,
            &UpdateConversationSettingsRequest {
                marked_unread: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        tablet
            .api
            .conversation(second.id)
            .await
            .unwrap()
            .settings
            .marked_unread
    );
    // Only members have settings.
    let stranger = server.user("carol").await;
    assert_eq!(
        code(
            stranger
                .api
                .update_conversation_settings(first.id, &Default::default())
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn group_retention_deletes_old_messages_in_the_background() {
    let server = TestServer::start_with(|config| {
        config.messages.retention_interval_secs = 1;
    })
    .await;
    let owner = server.user("owner").await;
    let member = server.user("member").await;
    let group = owner
        .api
        .create_group("ephemeral", &[member.user_id])
        .await
        .unwrap();
    assert_eq!(
        code(
            member
                .api
                .set_retention(
                    group.id,
                    &RetentionPolicy {
                        max_age_days: None,
                        keep_last: Some(2),
                    },
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    let policy = RetentionPolicy {
        max_age_days: None,
        keep_last: Some(2),
    };
    owner.api.set_retention(group.id, &policy).await.unwrap();
    assert_eq!(member.api.retention(group.id).await.unwrap(), policy);
    let mut last = 0;
    for n in 0..5 {
        last = owner
            .api
            .send(group.id, &format!("m{n}"), text(&format!("message {n}")))
            .await
            .unwrap()
            .seq;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = member.api.history(group.id, None, 50).await.unwrap();
        let seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
        if seqs.len() == 2 {
            assert_eq!(page.messages[1].body, text("message 4"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run: {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sequence continues after the deleted messages.
    let next = owner
        .api
        .send(group.id, "after", text("after"))
        .await
        .unwrap();
    assert_eq!(next.seq, last + 1);
}

#[tokio::test]
async fn delete_for_me_and_thread_unread_state() {
    let server = TestServer::start().await;
    let a = server.user("alice").await;
    let b = server.user("bob").await;
    let group = a.api.create_group("g", &[b.user_id]).await.unwrap();
    let root = a
        .api
        .send(group.id, "root", text("question"))
        .await
        .unwrap()
        .seq;
    let secret = a
        .api
        .send(group.id, "oops", text("embarrassing"))
        .await
        .unwrap()
        .seq;
    let phone = server.second_device(&b, "phone").await;
    let mut phone_ws = server.connect(&phone).await;

    // Bob deletes the message for himself: his devices see a tombstone, Alice does not.
    b.api.hide_message(group.id, secret).await.unwrap();
    let hidden = loop {
        let event = tokio::time::timeout(WAIT, phone_ws.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::MessageHidden {
            conversation_id,
            seq,
        } = event
        {
            break (conversation_id, seq);
        }
    };
    assert_eq!(hidden, (group.id, secret));
    let bobs = phone.api.history(group.id, None, 10).await.unwrap();
    let shown = bobs.messages.iter().find(|m| m.seq == secret).unwrap();
    assert_eq!(shown.body, MessageBody::Deleted {});
    let alices = a.api.history(group.id, None, 10).await.unwrap();
    let shown = alices.messages.iter().find(|m| m.seq == secret).unwrap();
    assert_eq!(shown.body, text("embarrassing"));
    // A sync of Bob's new device also shows the tombstone, with no gap.
    let mut laptop = server
        .connect(&server.second_device(&b, "laptop").await)
        .await;
    laptop
        .sync(&tidings_sdk::Cursors::default(), None)
        .await
        .unwrap();
    let mut synced = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), laptop.next_event()).await
    {
        if let ServerFrame::Message { message } = event {
            synced.push(message);
        }
    }
    let hidden_synced = synced.iter().find(|m| m.seq == secret).unwrap();
    assert_eq!(hidden_synced.body, MessageBody::Deleted {});
    assert_eq!(
        code(b.api.hide_message(group.id, 999).await.unwrap_err()),
        ErrorCode::NotFound
    );

    // Threads carry their own unread state per member.
    let in_thread = |n: u32| Relations {
        thread_root: Some(root),
        reply_to: if n == 0 { Some(root) } else { None },
        ..Relations::default()
    };
    let mut last = 0;
    for n in 0..3 {
        last = a
            .api
            .send_related(group.id, &format!("t{n}"), text("answer"), in_thread(n))
            .await
            .unwrap()
            .seq;
    }
    let threads = b.api.threads(group.id).await.unwrap();
    assert_eq!(threads.threads.len(), 1);
    assert_eq!(threads.threads[0].root.seq, root);
    assert_eq!(threads.threads[0].unread, 3);
    assert_eq!(threads.threads[0].root.thread.unwrap().replies, 3);
    b.api
        .mark_thread_read(group.id, root, last - 1)
        .await
        .unwrap();
    assert_eq!(b.api.threads(group.id).await.unwrap().threads[0].unread, 1);
    assert_eq!(a.api.threads(group.id).await.unwrap().threads[0].unread, 0);
    let stranger = server.user("carol").await;
    assert_eq!(
        code(stranger.api.threads(group.id).await.unwrap_err()),
        ErrorCode::NotFound
    );
}
