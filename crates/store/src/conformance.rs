//! The conformance suite: the [`Store`] contract as executable cases that every backend runs.
//!
//! Each case is a `pub async fn` that takes a fresh, empty store and panics on the first broken
//! promise. A backend runs all of them with one line in its tests:
//!
//! ```ignore
//! tidings_store::store_conformance_tests!(fresh_store());
//! ```
//!
//! where `fresh_store()` is an expression evaluating to a future that yields a [`Fixture`]: an
//! `Arc<dyn Store>` on a new empty database, or a pair `(Arc<dyn Store>, guard)` whose guard
//! (say, a temporary directory) must outlive the store. The expression is pasted into each test,
//! so every case gets its own database. The backend's crate needs `tokio` among its
//! dev-dependencies, since each case becomes a `#[tokio::test]`.
//!
//! The cases check only what the trait documents. Where the documentation leaves a choice open
//! (the order of ids in `add_members`' answer, say), they compare as sets.

use crate::audit::{ChainVerifier, checkpoint_message};
use crate::{
    Appended, AuditFilter, AuditOutcome, AuditRecord, ConversationRecord, FriendRequestSent,
    GroupChange, NewAudit, NewInvite, NewInviteLink, NewMessage, NewRefreshToken, ProfileRecord,
    RotateOutcome, SearchQuery, Store, StoreError,
};
use crate::{
    AuthorizationCodeRecord, DeviceAuthorizationRecord, DeviceAuthorizationState, DeviceGrant,
    ExternalIdentity, OAuthClientRecord,
};
use crate::{CallRecord, CallState, FileRecord, UploadKind, UploadRecord, UserXmlRecord};
use crate::{OccupantRecord, Occupied};
use std::collections::BTreeSet;
use std::sync::Arc;
use tidings_proto::message::SystemEvent;
use tidings_proto::rest::{ConversationKind, GroupPermissions, Role};
use tidings_proto::ws::{OccupantShow, ReceiptKind};
use tidings_proto::{ConversationId, DeviceId, Message, MessageBody, Seq, UserId};

/// What a backend's test hands to a case: the store, plus anything that must live as long.
pub trait Fixture {
    fn store(&self) -> Arc<dyn Store>;
}

impl Fixture for Arc<dyn Store> {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self)
    }
}

impl<G> Fixture for (Arc<dyn Store>, G) {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.0)
    }
}

/// Expands to one `#[tokio::test]` per conformance case; see the module docs.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            ping,
            create_user_and_look_up,
            username_conflict,
            list_and_batch_lookup_users,
            set_password_hash,
            scram_credentials_replace,
            device_cursors_only_advance,
            user_xml_items_replace_and_count,
            room_addresses_are_unique_and_released,
            occupants_hold_nicks_per_user_and_live_node,
            invite_consumes_uses,
            invite_refuses_expired_and_unknown,
            invite_use_is_kept_on_username_conflict,
            devices_create_list_touch,
            revoke_device_only_own,
            revoke_other_devices_keeps_one,
            refresh_rotates_once,
            refresh_reuse_revokes_device,
            refresh_expired_is_invalid,
            refresh_prune_removes_only_expired,
            refresh_of_revoked_device_is_invalid,
            oauth_clients_register_list_delete,
            oauth_codes_are_single_use_and_expire,
            oauth_client_devices_record_their_grant,
            oauth_bot_clients_bind_an_account_and_device,
            oauth_device_authorizations_are_answered_once,
            external_identities_link_once_and_create_accounts,
            direct_is_unique_per_pair,
            group_roles_and_dedup,
            add_members_returns_only_new,
            remove_member,
            conversations_of_newest_activity_first,
            unread_counts_only_others,
            direct_peer_markers_follow_receipts,
            block_list_is_directional_and_idempotent,
            friend_request_accept_and_lists,
            crossing_friend_requests_make_friends,
            friend_request_conflicts_and_unknown_users,
            decline_cancel_and_remove_friend,
            contacts_version_counts_changes,
            blocking_ends_friendship_and_requests,
            privacy_defaults_and_updates,
            direct_conversations_of_lists_only_direct,
            profiles_default_empty_and_update,
            search_by_username_and_display_name_prefix,
            direct_between_never_creates,
            append_assigns_gap_free_seqs,
            append_moves_sender_markers,
            append_idempotent_across_batches,
            append_idempotent_within_batch,
            append_unknown_conversation_fails_alone,
            append_bodies_round_trip,
            history_paging,
            advance_marker_rules,
            co_members_distinct_without_self,
            last_seen_upsert,
            concurrent_appends_are_gap_free,
            group_settings_default_and_update,
            group_change_appends_its_event,
            group_change_failure_stores_nothing,
            group_roles_mutes_and_transfer,
            group_bans_block_every_way_back,
            group_invite_links_count_and_expire,
            group_join_requests_and_invitations,
            group_dissolve_removes_everyone,
            group_delete_message_leaves_tombstone,
            search_index_catches_up,
            search_english_words_any_case_and_prefix,
            search_chinese_inside_longer_text,
            search_only_what_the_user_can_read,
            search_filters_and_pages,
            search_forgets_deleted_and_skips_non_text,
            audit_chain_is_continuous_across_appends_and_actions,
            audit_filters_and_paging,
            audit_prune_keeps_the_chain_verifiable,
            failed_actions_write_no_audit_entry,
            sign_in_creates_device_token_and_entry,
            suspend_signs_out_and_reactivate_restores,
            admin_role_changes,
            replace_password_signs_out_others,
            delete_user_keeps_or_tombstones_messages,
            two_factor_enrol_confirm_spend_and_disable,
            files_of_pages_a_users_files,
            find_users_by_prefix_includes_suspended,
            upload_create_respects_quota,
            upload_advance_is_compare_and_set,
            upload_expiry_lists_only_expired,
            upload_complete_dedups_blobs_and_consumes_parts,
            file_delete_reports_last_reference,
            file_access_for_owner_and_share_members,
            edit_replaces_body_and_keeps_history,
            recall_removes_content_everywhere,
            reactions_aggregate_per_key,
            threads_and_replies_are_recorded,
            annotations_do_not_count_as_unread_and_mentions_count,
            effect_on_missing_or_recalled_target_fails_alone,
            conversation_settings_round_trip,
            retention_prunes_oldest_and_keeps_sequence,
            hidden_messages_are_per_member,
            threads_list_with_unread_per_member,
            avatars_are_readable_by_everyone,
            push_subscriptions_follow_their_device,
            push_jobs_merge_lease_and_retry,
            push_outbox_records_what_may_notify,
            calls_busy_accept_once_and_finish_once,
            mqtt_sessions_and_retained_round_trip,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $make.await;
                $crate::conformance::$case($crate::conformance::Fixture::store(&fixture)).await;
            }
        )*
    };
}

// --- Helpers ---------------------------------------------------------------------------------

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

async fn user(store: &Arc<dyn Store>, name: &str) -> UserId {
    store.create_user(name, HASH, 1_000).await.unwrap().id
}

async fn device(store: &Arc<dyn Store>, user: UserId) -> DeviceId {
    store.create_device(user, "laptop", 1_000).await.unwrap().id
}

fn token(n: u8, user: UserId, device: DeviceId, expires_at: i64) -> NewRefreshToken {
    NewRefreshToken {
        token_hash: [n; 32],
        device_id: device,
        user_id: user,
        created_at: 1_000,
        expires_at,
    }
}

fn text(
    conversation: ConversationId,
    sender: UserId,
    device: DeviceId,
    client_msg_id: &str,
    ts: i64,
) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device_id: device,
        client_msg_id: client_msg_id.to_owned(),
        ts,
        body: MessageBody::Text {
            text: format!("message {client_msg_id}"),
        },
        relations: Default::default(),
    }
}

/// Appends a batch whose items must all succeed.
async fn append(store: &Arc<dyn Store>, batch: Vec<NewMessage>) -> Vec<Appended> {
    store
        .append_messages(batch)
        .await
        .expect("the batch commits")
        .into_iter()
        .map(|item| item.expect("every item is stored"))
        .collect()
}

async fn append_one(store: &Arc<dyn Store>, message: NewMessage) -> Appended {
    append(store, vec![message]).await.remove(0)
}

/// A sender with a device, for cases about messages.
struct Sender {
    user: UserId,
    device: DeviceId,
}

async fn sender(store: &Arc<dyn Store>, name: &str) -> Sender {
    let user = user(store, name).await;
    Sender {
        user,
        device: device(store, user).await,
    }
}

async fn group(store: &Arc<dyn Store>, owner: UserId, members: &[UserId]) -> ConversationRecord {
    store
        .create_group(owner, "group", members, 1_000)
        .await
        .unwrap()
}

async fn unread(store: &Arc<dyn Store>, user: UserId, conversation: ConversationId) -> u64 {
    store
        .user_conversation(user, conversation)
        .await
        .unwrap()
        .expect("the user is a member")
        .unread
}

fn set<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    items.into_iter().collect()
}

/// An audit entry of `kind` at `ts`.
fn entry(kind: &str, ts: i64, actor: Option<UserId>, target: Option<UserId>) -> NewAudit {
    NewAudit {
        ts,
        actor,
        kind: kind.to_owned(),
        outcome: AuditOutcome::Done,
        target_user: target,
        conversation: None,
        address: Some("192.0.2.1".into()),
        detail: serde_json::json!({"n": ts}),
    }
}

fn reuse_entry() -> NewAudit {
    entry("token.reuse", 1_000, None, None)
}

/// Every stored entry, in id order, read a page at a time.
async fn all_entries(store: &Arc<dyn Store>, filter: &AuditFilter) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    loop {
        let page = store
            .audit_entries(filter, out.last().map(|r| r.id), 3)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Checks the whole stored chain from the newest checkpoint; returns how many entries it holds.
async fn verify(store: &Arc<dyn Store>) -> u64 {
    let checkpoints = store.audit_checkpoints().await.unwrap();
    let mut verifier = ChainVerifier::new(checkpoints.last());
    for record in all_entries(store, &AuditFilter::default()).await {
        verifier.push(&record).expect("the chain verifies");
    }
    verifier.checked()
}

// --- Accounts --------------------------------------------------------------------------------

pub async fn ping(store: Arc<dyn Store>) {
    store.ping().await.expect("a fresh store answers ping");
}

pub async fn create_user_and_look_up(store: Arc<dyn Store>) {
    let alice = store.create_user("alice", HASH, 1_234).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.password_hash, HASH);
    assert_eq!(alice.created_at, 1_234);
    assert!(!alice.disabled);

    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_name("bob").await.unwrap(), None);
    assert_eq!(
        store.user_by_id(UserId(alice.id.0 + 1_000)).await.unwrap(),
        None
    );

    let bob = store.create_user("bob", HASH, 1_235).await.unwrap();
    assert_ne!(alice.id, bob.id, "every user gets their own id");
}

pub async fn username_conflict(store: Arc<dyn Store>) {
    let alice = store.create_user("alice", HASH, 1_000).await.unwrap();
    let again = store.create_user("alice", "other-hash", 2_000).await;
    assert!(
        matches!(again, Err(StoreError::Conflict("username"))),
        "a taken username is Conflict(\"username\"), got {again:?}"
    );
    // The failed attempt changed nothing.
    assert_eq!(store.user_by_name("alice").await.unwrap(), Some(alice));
    assert_eq!(store.list_users(None, 10).await.unwrap().len(), 1);
}

pub async fn list_and_batch_lookup_users(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        ids.push(user(&store, name).await);
    }
    let mut sorted = ids.clone();
    sorted.sort();

    let all: Vec<UserId> = store
        .list_users(None, 100)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(all, sorted, "list_users is in id order");

    let first: Vec<UserId> = store
        .list_users(None, 2)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(first, sorted[..2]);
    let next: Vec<UserId> = store
        .list_users(Some(sorted[1]), 2)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(next, sorted[2..4], "paging continues after `after`");
    let rest = store.list_users(Some(sorted[4]), 2).await.unwrap();
    assert!(rest.is_empty());

    let unknown = UserId(sorted[4].0 + 1_000);
    let wanted = [sorted[3], unknown, sorted[0], sorted[3]];
    let found: Vec<UserId> = store
        .users_by_ids(&wanted)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(
        found,
        vec![sorted[0], sorted[3]],
        "users_by_ids skips unknown ids and answers in id order, once per user"
    );
    assert!(store.users_by_ids(&[]).await.unwrap().is_empty());
}

pub async fn set_password_hash(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    store.set_password_hash(alice, "new-hash").await.unwrap();
    let stored = store.user_by_id(alice).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "new-hash");
}

fn scram(algorithm: &str, fill: u8, password_hash: &str) -> crate::ScramCredential {
    crate::ScramCredential {
        algorithm: algorithm.into(),
        salt: vec![fill; 16],
        iterations: 4096 + u32::from(fill),
        stored_key: vec![fill.wrapping_add(1); 32],
        server_key: vec![fill.wrapping_add(2); 32],
        password_hash: password_hash.into(),
    }
}

pub async fn scram_credentials_replace(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert_eq!(
        store.scram_credential(alice, "SHA-256").await.unwrap(),
        None
    );
    let first = vec![scram("SHA-1", 1, "h1"), scram("SHA-256", 2, "h1")];
    store
        .set_scram_credentials(alice, first.clone())
        .await
        .unwrap();
    store
        .set_scram_credentials(bob, vec![scram("SHA-256", 9, "hb")])
        .await
        .unwrap();
    assert_eq!(
        store.scram_credential(alice, "SHA-1").await.unwrap(),
        Some(first[0].clone())
    );
    assert_eq!(
        store.scram_credential(alice, "SHA-256").await.unwrap(),
        Some(first[1].clone())
    );
    // A new set replaces the old one entirely: an algorithm left out is gone.
    store
        .set_scram_credentials(alice, vec![scram("SHA-256", 5, "h2")])
        .await
        .unwrap();
    assert_eq!(store.scram_credential(alice, "SHA-1").await.unwrap(), None);
    assert_eq!(
        store.scram_credential(alice, "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 5, "h2"))
    );
    assert_eq!(
        store.scram_credential(bob, "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 9, "hb")),
        "another user's credentials are untouched"
    );
    assert!(matches!(
        store
            .set_scram_credentials(UserId(i64::MAX), vec![scram("SHA-1", 1, "x")])
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn device_cursors_only_advance(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let laptop = device(&store, alice).await;
    let phone = device(&store, alice).await;
    let first = group(&store, alice, &[bob]).await.id;
    let second = group(&store, alice, &[bob]).await.id;
    assert_eq!(store.device_cursors(laptop).await.unwrap(), None);
    // Started with nothing yet: known, and empty.
    store.advance_device_cursors(laptop, vec![]).await.unwrap();
    assert_eq!(store.device_cursors(laptop).await.unwrap(), Some(vec![]));
    store
        .advance_device_cursors(laptop, vec![(first, 3), (second, 1)])
        .await
        .unwrap();
    // Forward moves, backward is ignored, unlisted conversations keep theirs.
    store
        .advance_device_cursors(laptop, vec![(first, 2)])
        .await
        .unwrap();
    store
        .advance_device_cursors(laptop, vec![(second, 5)])
        .await
        .unwrap();
    let mut cursors = store.device_cursors(laptop).await.unwrap().unwrap();
    cursors.sort();
    assert_eq!(cursors, [(first, 3), (second, 5)]);
    assert!(
        store.device_cursors(phone).await.unwrap().is_none(),
        "another device's cursors are its own"
    );
    assert!(matches!(
        store
            .advance_device_cursors(DeviceId(i64::MAX), vec![(first, 1)])
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn user_xml_items_replace_and_count(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let item = |user: UserId, node: &str, id: &str, xml: &str, at: i64| UserXmlRecord {
        user_id: user,
        node: node.to_owned(),
        item_id: id.to_owned(),
        xml: xml.to_owned(),
        updated_at: at,
    };
    assert!(store.user_xml(alice, "nick").await.unwrap().is_empty());
    assert!(
        store
            .put_user_xml(item(alice, "nick", "current", "<a/>", 1), 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .put_user_xml(item(alice, "books", "x", "<b/>", 2), 2)
            .await
            .unwrap()
    );
    // A third item is over the limit of two; replacing one is not.
    assert!(
        !store
            .put_user_xml(item(alice, "books", "y", "<c/>", 3), 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .put_user_xml(item(alice, "nick", "current", "<d/>", 4), 2)
            .await
            .unwrap()
    );
    assert_eq!(
        store.user_xml(alice, "nick").await.unwrap(),
        [item(alice, "nick", "current", "<d/>", 4)]
    );
    // Another user's items are their own, and count against their own limit.
    assert!(
        store
            .put_user_xml(item(bob, "nick", "current", "<e/>", 5), 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .put_user_xml(item(bob, "nick", "older", "<f/>", 1), 2)
            .await
            .unwrap()
    );
    let ids: Vec<String> = store
        .user_xml(bob, "nick")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.item_id)
        .collect();
    assert_eq!(ids, ["current", "older"], "newest first");
    assert_eq!(store.user_xml(alice, "nick").await.unwrap().len(), 1);
    assert!(store.delete_user_xml(alice, "books", "x").await.unwrap());
    assert!(!store.delete_user_xml(alice, "books", "x").await.unwrap());
    assert!(
        store
            .put_user_xml(item(alice, "books", "y", "<c/>", 6), 2)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .put_user_xml(item(UserId(i64::MAX), "nick", "current", "<a/>", 1), 2)
            .await,
        Err(StoreError::NotFound)
    ));
    // A deleted account's stored XML goes with it.
    store
        .delete_user(bob, 7, false, entry("d", 7, None, Some(bob)))
        .await
        .unwrap();
    assert!(store.user_xml(bob, "nick").await.unwrap().is_empty());
    assert_eq!(store.user_xml(alice, "nick").await.unwrap().len(), 1);
}

pub async fn room_addresses_are_unique_and_released(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let first = group(&store, alice, &[]).await.id;
    let second = group(&store, alice, &[]).await.id;
    assert!(store.room_by_address("lounge").await.unwrap().is_none());
    assert!(
        store
            .claim_room_address(first, "lounge", false)
            .await
            .unwrap()
    );
    // An address has one group, and a group one address.
    assert!(
        !store
            .claim_room_address(second, "lounge", true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_room_address(first, "other", false)
            .await
            .unwrap()
    );
    let room = store.room_by_address("lounge").await.unwrap().unwrap();
    assert_eq!((room.conversation_id, room.temporary), (first, false));
    assert!(store.set_room_temporary(first, true).await.unwrap());
    assert!(
        !store.set_room_temporary(second, true).await.unwrap(),
        "no address"
    );
    assert!(
        store
            .claim_room_address(second, "kitchen", false)
            .await
            .unwrap()
    );
    let rooms = store
        .rooms_of(&[second, first, ConversationId(i64::MAX)])
        .await
        .unwrap();
    let listed: Vec<(ConversationId, &str, bool)> = rooms
        .iter()
        .map(|r| (r.conversation_id, r.address.as_str(), r.temporary))
        .collect();
    assert_eq!(
        listed,
        [(first, "lounge", true), (second, "kitchen", false)]
    );
    // Releasing the room frees the address and empties the room.
    let device = store.create_device(alice, "phone", 1_000).await.unwrap().id;
    let occupant = OccupantRecord {
        conversation_id: first,
        device_id: device,
        user_id: alice,
        nick: "al".into(),
        node: 7,
        joined_at: 1,
        show: None,
        status: None,
    };
    assert_eq!(
        store.occupy(occupant, &[7]).await.unwrap(),
        Occupied::Entered
    );
    store.delete_room(first).await.unwrap();
    assert!(store.room_by_address("lounge").await.unwrap().is_none());
    assert!(store.occupants(first, &[7]).await.unwrap().is_empty());
    assert!(
        !store
            .claim_room_address(second, "lounge", false)
            .await
            .unwrap()
    );
    let third = group(&store, alice, &[]).await.id;
    assert!(
        store
            .claim_room_address(third, "lounge", false)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .claim_room_address(ConversationId(i64::MAX), "nowhere", false)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn occupants_hold_nicks_per_user_and_live_node(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room = group(&store, alice, &[bob]).await.id;
    let phone = store.create_device(alice, "phone", 1_000).await.unwrap().id;
    let laptop = store
        .create_device(alice, "laptop", 1_000)
        .await
        .unwrap()
        .id;
    let bobs = store.create_device(bob, "bobs", 1_000).await.unwrap().id;
    let at =
        |device: DeviceId, user: UserId, nick: &str, node: i64, joined_at: i64| OccupantRecord {
            conversation_id: room,
            device_id: device,
            user_id: user,
            nick: nick.to_owned(),
            node,
            joined_at,
            show: None,
            status: None,
        };
    let live = [1, 2];
    assert_eq!(
        store
            .occupy(at(phone, alice, "al", 1, 10), &live)
            .await
            .unwrap(),
        Occupied::Entered
    );
    // The same user's other device may share the nick; another user may not take it.
    assert_eq!(
        store
            .occupy(at(laptop, alice, "al", 2, 20), &live)
            .await
            .unwrap(),
        Occupied::Entered
    );
    assert_eq!(
        store
            .occupy(at(bobs, bob, "al", 1, 30), &live)
            .await
            .unwrap(),
        Occupied::NickTaken
    );
    assert_eq!(
        store
            .occupy(at(bobs, bob, "bob", 1, 30), &live)
            .await
            .unwrap(),
        Occupied::Entered
    );
    // A presence update under the same nick keeps the device's new show and status, for
    // those who enter later.
    let away = OccupantRecord {
        show: Some(OccupantShow::Away),
        status: Some("at lunch".into()),
        ..at(phone, alice, "al", 1, 40)
    };
    assert_eq!(
        store.occupy(away, &live).await.unwrap(),
        Occupied::Unchanged
    );
    let list = store.occupants(room, &live).await.unwrap();
    let phone_row = list.iter().find(|o| o.device_id == phone).unwrap();
    assert_eq!(
        (phone_row.show, phone_row.status.as_deref()),
        (Some(OccupantShow::Away), Some("at lunch"))
    );
    assert_eq!(phone_row.joined_at, 10, "still ordered by when it entered");
    assert_eq!(
        store
            .occupy(at(phone, alice, "alice", 1, 50), &live)
            .await
            .unwrap(),
        Occupied::Renamed {
            previous: "al".into()
        }
    );
    let list = store.occupants(room, &live).await.unwrap();
    let phone_row = list.iter().find(|o| o.device_id == phone).unwrap();
    assert_eq!(
        (phone_row.show, phone_row.status.as_deref()),
        (None, None),
        "a nick change carries the presence it came with"
    );
    let names: Vec<(DeviceId, &str)> = list
        .iter()
        .map(|o| (o.device_id, o.nick.as_str()))
        .collect();
    assert_eq!(
        names,
        [(phone, "alice"), (laptop, "al"), (bobs, "bob")],
        "in order of entry"
    );
    // A node that is gone holds nobody: its occupants are not listed, their nicks are free,
    // and they can be swept.
    let only_one = [1];
    let list = store.occupants(room, &only_one).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        store
            .occupy(at(bobs, bob, "al", 1, 60), &only_one)
            .await
            .unwrap(),
        Occupied::Renamed {
            previous: "bob".into()
        }
    );
    assert_eq!(store.vacate_nodes_except(&only_one).await.unwrap(), 1);
    let gone = store.vacate(room, bobs).await.unwrap().unwrap();
    assert_eq!((gone.user_id, gone.nick.as_str()), (bob, "al"));
    assert!(store.vacate(room, bobs).await.unwrap().is_none());
    let list = store.occupants(room, &only_one).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].device_id, phone);
    assert!(matches!(
        store
            .occupy(
                OccupantRecord {
                    conversation_id: ConversationId(i64::MAX),
                    ..at(phone, alice, "x", 1, 1)
                },
                &live
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

fn invite(n: u8, expires_at: i64, uses: u32) -> NewInvite {
    NewInvite {
        code_hash: [n; 32],
        created_at: 1_000,
        expires_at,
        uses,
    }
}

pub async fn invite_consumes_uses(store: Arc<dyn Store>) {
    store.create_invite(invite(1, 10_000, 2)).await.unwrap();
    let a = store
        .create_user_with_invite("a", HASH, [1; 32], 2_000)
        .await
        .unwrap();
    assert_eq!(a.username, "a");
    assert_eq!(store.user_by_name("a").await.unwrap(), Some(a));
    store
        .create_user_with_invite("b", HASH, [1; 32], 2_000)
        .await
        .unwrap();
    let third = store
        .create_user_with_invite("c", HASH, [1; 32], 2_000)
        .await;
    assert!(
        matches!(third, Err(StoreError::NotFound)),
        "a used-up invite is NotFound, got {third:?}"
    );
    assert_eq!(store.user_by_name("c").await.unwrap(), None);

    let duplicate = store.create_invite(invite(1, 10_000, 5)).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "an invite code is unique, got {duplicate:?}"
    );
}

pub async fn invite_refuses_expired_and_unknown(store: Arc<dyn Store>) {
    store.create_invite(invite(1, 5_000, 3)).await.unwrap();
    let expired = store
        .create_user_with_invite("late", HASH, [1; 32], 9_000)
        .await;
    assert!(
        matches!(expired, Err(StoreError::NotFound)),
        "an expired invite is NotFound, got {expired:?}"
    );
    let unknown = store
        .create_user_with_invite("stranger", HASH, [2; 32], 2_000)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound)),
        "an unknown invite is NotFound, got {unknown:?}"
    );
    assert_eq!(store.user_by_name("late").await.unwrap(), None);
    assert_eq!(store.user_by_name("stranger").await.unwrap(), None);
    // The refusals consumed nothing: before expiry, all three uses are still there.
    for name in ["x", "y", "z"] {
        store
            .create_user_with_invite(name, HASH, [1; 32], 2_000)
            .await
            .unwrap();
    }
}

pub async fn invite_use_is_kept_on_username_conflict(store: Arc<dyn Store>) {
    user(&store, "taken").await;
    store.create_invite(invite(1, 10_000, 1)).await.unwrap();
    let clash = store
        .create_user_with_invite("taken", HASH, [1; 32], 2_000)
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict("username"))),
        "got {clash:?}"
    );
    // Atomic: the failed registration did not consume the only use.
    store
        .create_user_with_invite("fresh", HASH, [1; 32], 2_000)
        .await
        .expect("the invite's use survived the failed registration");
}

// --- Devices and tokens ----------------------------------------------------------------------

pub async fn devices_create_list_touch(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let phone = store.create_device(alice, "phone", 100).await.unwrap();
    assert_eq!(phone.user_id, alice);
    assert_eq!(phone.name, "phone");
    assert_eq!(phone.created_at, 100);
    assert_eq!(phone.last_active_at, 100);
    assert_eq!(phone.revoked_at, None);
    let laptop = store.create_device(alice, "laptop", 200).await.unwrap();
    let bobs = store.create_device(bob, "desk", 150).await.unwrap();

    assert_eq!(store.device(phone.id).await.unwrap(), Some(phone.clone()));
    assert_eq!(
        store.devices_of(alice).await.unwrap(),
        vec![phone.clone(), laptop.clone()],
        "devices_of lists the user's devices, oldest first"
    );
    assert_eq!(store.devices_of(bob).await.unwrap(), vec![bobs]);

    store.touch_device(phone.id, 500).await.unwrap();
    let touched = store.device(phone.id).await.unwrap().unwrap();
    assert_eq!(touched.last_active_at, 500);
    assert_eq!(touched.created_at, 100);
}

pub async fn revoke_device_only_own(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let mallory = user(&store, "mallory").await;
    let phone = device(&store, alice).await;
    let laptop = device(&store, alice).await;

    assert!(
        !store
            .revoke_device(mallory, phone, 2_000, None)
            .await
            .unwrap(),
        "nobody revokes someone else's device"
    );
    assert_eq!(store.device(phone).await.unwrap().unwrap().revoked_at, None);

    assert!(
        store
            .revoke_device(alice, phone, 2_000, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.device(phone).await.unwrap().unwrap().revoked_at,
        Some(2_000)
    );
    assert!(
        !store
            .revoke_device(alice, phone, 3_000, None)
            .await
            .unwrap(),
        "revoking twice reports false"
    );
    assert_eq!(
        store.device(phone).await.unwrap().unwrap().revoked_at,
        Some(2_000),
        "a second revocation does not move revoked_at"
    );
    assert!(
        !store
            .revoke_device(alice, DeviceId(laptop.0 + 1_000), 2_000, None)
            .await
            .unwrap()
    );
    let listed: Vec<DeviceId> = store
        .devices_of(alice)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, vec![laptop], "devices_of excludes revoked devices");
}

pub async fn revoke_other_devices_keeps_one(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let d1 = device(&store, alice).await;
    let d2 = device(&store, alice).await;
    let d3 = device(&store, alice).await;
    let bobs = device(&store, bob).await;
    store
        .insert_refresh_token(token(1, alice, d1, 10_000))
        .await
        .unwrap();

    let revoked = store
        .revoke_other_devices(alice, Some(d2), 2_000, None)
        .await
        .unwrap();
    assert_eq!(set(revoked), set([d1, d3]));
    let listed: Vec<DeviceId> = store
        .devices_of(alice)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, vec![d2]);
    assert_eq!(
        store.devices_of(bob).await.unwrap().len(),
        1,
        "other users' devices are untouched"
    );
    assert_eq!(
        store
            .rotate_refresh_token([1; 32], token(2, alice, d1, 10_000), 2_500, reuse_entry())
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "a revoked device's tokens are worthless"
    );

    let rest = store
        .revoke_other_devices(alice, None, 3_000, None)
        .await
        .unwrap();
    assert_eq!(rest, vec![d2], "with no device to keep, all are revoked");
    assert!(store.devices_of(alice).await.unwrap().is_empty());
    assert_eq!(store.device(bobs).await.unwrap().unwrap().revoked_at, None);
}

pub async fn refresh_rotates_once(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, phone, 10_000))
        .await
        .unwrap();
    assert_eq!(
        store.refresh_token_device([1; 32]).await.unwrap(),
        Some(phone)
    );

    let first = store
        .rotate_refresh_token(
            [1; 32],
            token(2, alice, phone, 10_000),
            2_000,
            reuse_entry(),
        )
        .await
        .unwrap();
    assert_eq!(
        first,
        RotateOutcome::Rotated {
            user_id: alice,
            device_id: phone
        }
    );
    assert_eq!(
        store.refresh_token_device([1; 32]).await.unwrap(),
        Some(phone),
        "a used token is still known"
    );
    assert_eq!(
        store.refresh_token_device([2; 32]).await.unwrap(),
        Some(phone),
        "the new token is stored"
    );
    let second = store
        .rotate_refresh_token(
            [2; 32],
            token(3, alice, phone, 10_000),
            3_000,
            reuse_entry(),
        )
        .await
        .unwrap();
    assert!(matches!(second, RotateOutcome::Rotated { .. }));

    assert_eq!(
        store
            .rotate_refresh_token(
                [9; 32],
                token(4, alice, phone, 10_000),
                3_000,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "an unknown token is invalid"
    );
    assert_eq!(store.refresh_token_device([9; 32]).await.unwrap(), None);
    assert_eq!(
        store.refresh_token_device([4; 32]).await.unwrap(),
        None,
        "a refused rotation stores no new token"
    );
}

pub async fn refresh_reuse_revokes_device(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    let laptop = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, phone, 10_000))
        .await
        .unwrap();
    store
        .insert_refresh_token(token(11, alice, laptop, 10_000))
        .await
        .unwrap();
    store
        .rotate_refresh_token(
            [1; 32],
            token(2, alice, phone, 10_000),
            2_000,
            reuse_entry(),
        )
        .await
        .unwrap();

    // Someone presents the old token again.
    let reuse = store
        .rotate_refresh_token(
            [1; 32],
            token(3, alice, phone, 10_000),
            3_000,
            reuse_entry(),
        )
        .await
        .unwrap();
    assert_eq!(
        reuse,
        RotateOutcome::ReuseDetected {
            user_id: alice,
            device_id: phone
        }
    );
    let revoked = store.device(phone).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some(), "reuse revokes the device");
    assert_eq!(
        store
            .rotate_refresh_token(
                [2; 32],
                token(4, alice, phone, 10_000),
                3_100,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "after reuse, even the device's newest token is invalid"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                [3; 32],
                token(5, alice, phone, 10_000),
                3_100,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "the token offered with the reused one was never stored"
    );

    // The user's other device is not affected.
    assert_eq!(
        store.device(laptop).await.unwrap().unwrap().revoked_at,
        None
    );
    assert!(matches!(
        store
            .rotate_refresh_token(
                [11; 32],
                token(12, alice, laptop, 10_000),
                3_200,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
}

pub async fn refresh_expired_is_invalid(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, phone, 5_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token(
                [1; 32],
                token(2, alice, phone, 20_000),
                9_000,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    assert_eq!(
        store.refresh_token_device([2; 32]).await.unwrap(),
        None,
        "no new token for an expired one"
    );
    assert_eq!(
        store.device(phone).await.unwrap().unwrap().revoked_at,
        None,
        "an expired token is not reuse"
    );
}

pub async fn refresh_prune_removes_only_expired(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, phone, 5_000))
        .await
        .unwrap();
    store
        .insert_refresh_token(token(2, alice, phone, 50_000))
        .await
        .unwrap();
    // Token 2 is used (rotated into 3) but not expired: it must stay, to detect reuse.
    assert!(matches!(
        store
            .rotate_refresh_token(
                [2; 32],
                token(3, alice, phone, 60_000),
                6_000,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    assert_eq!(store.prune_refresh_tokens(10_000).await.unwrap(), 1);
    assert_eq!(store.refresh_token_device([1; 32]).await.unwrap(), None);
    assert_eq!(
        store.refresh_token_device([2; 32]).await.unwrap(),
        Some(phone)
    );
    assert_eq!(
        store.refresh_token_device([3; 32]).await.unwrap(),
        Some(phone)
    );
    assert_eq!(store.prune_refresh_tokens(10_000).await.unwrap(), 0);
}

pub async fn refresh_of_revoked_device_is_invalid(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, phone, 10_000))
        .await
        .unwrap();
    assert!(
        store
            .revoke_device(alice, phone, 2_000, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.refresh_token_device([1; 32]).await.unwrap(),
        None,
        "revoking a device deletes its refresh tokens"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                [1; 32],
                token(2, alice, phone, 10_000),
                3_000,
                reuse_entry()
            )
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    assert_eq!(store.refresh_token_device([2; 32]).await.unwrap(), None);
}

// --- Conversations ---------------------------------------------------------------------------

pub async fn direct_is_unique_per_pair(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;

    let (ab, created) = store.get_or_create_direct(alice, bob, 500).await.unwrap();
    assert!(created);
    assert_eq!(ab.kind, ConversationKind::Direct);
    assert_eq!(ab.created_at, 500);
    assert_eq!(ab.last_seq, 0);
    assert_eq!(store.conversation(ab.id).await.unwrap(), Some(ab.clone()));

    let (ba, created) = store.get_or_create_direct(bob, alice, 600).await.unwrap();
    assert!(!created, "the pair is unordered: (b, a) finds (a, b)");
    assert_eq!(ba, ab);
    let (again, created) = store.get_or_create_direct(alice, bob, 700).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, ab.id);

    let (ac, created) = store.get_or_create_direct(alice, carol, 800).await.unwrap();
    assert!(created);
    assert_ne!(ac.id, ab.id);

    let members: Vec<UserId> = store
        .members(ab.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id)
        .collect();
    let mut both = vec![alice, bob];
    both.sort();
    assert_eq!(members, both, "members are in user id order");

    let seen_by_alice = store
        .user_conversation(alice, ab.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen_by_alice
            .peer
            .as_ref()
            .map(|p| (p.user_id, p.username.clone())),
        Some((bob, "bob".to_owned()))
    );
    assert_eq!(seen_by_alice.member_count, 2);
    assert_eq!(seen_by_alice.me.user_id, alice);
    assert_eq!(seen_by_alice.me.username, "alice");
    let seen_by_bob = store.user_conversation(bob, ab.id).await.unwrap().unwrap();
    assert_eq!(
        seen_by_bob
            .peer
            .as_ref()
            .map(|p| (p.user_id, p.username.clone())),
        Some((alice, "alice".to_owned()))
    );
    assert_eq!(store.user_conversation(carol, ab.id).await.unwrap(), None);
}

pub async fn group_roles_and_dedup(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let group = store
        .create_group(owner, "Team", &[a, b, a, owner, b], 900)
        .await
        .unwrap();
    assert_eq!(group.kind, ConversationKind::Group);
    assert_eq!(group.title, "Team");
    assert_eq!(group.created_at, 900);
    assert_eq!(group.last_seq, 0);
    assert_eq!(
        store.conversation(group.id).await.unwrap(),
        Some(group.clone())
    );

    let members = store.members(group.id).await.unwrap();
    let ids: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
    let mut expected = vec![owner, a, b];
    expected.sort();
    assert_eq!(ids, expected, "each member once, in user id order");
    for member in &members {
        let role = if member.user_id == owner {
            Role::Owner
        } else {
            Role::Member
        };
        assert_eq!(member.role, role, "role of {}", member.username);
        assert_eq!(member.conversation_id, group.id);
        assert_eq!(member.joined_at, 900);
        assert_eq!((member.delivered_seq, member.read_seq), (0, 0));
    }
    assert_eq!(
        store.member(group.id, owner).await.unwrap().unwrap().role,
        Role::Owner
    );
    let seen = store.user_conversation(a, group.id).await.unwrap().unwrap();
    assert_eq!(seen.member_count, 3);
    assert_eq!(
        seen.peer.as_ref().map(|p| (p.user_id, p.username.clone())),
        None,
        "groups have no peer"
    );

    let alone = store
        .create_group(owner, "Just me", &[], 901)
        .await
        .unwrap();
    assert_eq!(store.members(alone.id).await.unwrap().len(), 1);
}

pub async fn add_members_returns_only_new(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let c = user(&store, "c").await;
    let group = group(&store, owner, &[a]).await;

    let added = store
        .add_members(group.id, &[b, a, c, b, owner], 2_000)
        .await
        .unwrap();
    assert_eq!(
        added.len(),
        2,
        "each new member is reported once: {added:?}"
    );
    assert_eq!(set(added), set([b, c]));
    let ids = set(store
        .members(group.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id));
    assert_eq!(ids, set([owner, a, b, c]));
    let newcomer = store.member(group.id, b).await.unwrap().unwrap();
    assert_eq!(newcomer.role, Role::Member);
    assert_eq!(newcomer.joined_at, 2_000);
    assert_eq!(
        store.member(group.id, owner).await.unwrap().unwrap().role,
        Role::Owner,
        "re-adding the owner does not demote them"
    );
    assert!(
        store
            .add_members(group.id, &[a, c], 3_000)
            .await
            .unwrap()
            .is_empty(),
        "existing members are skipped"
    );
    assert_eq!(
        store
            .user_conversation(a, group.id)
            .await
            .unwrap()
            .unwrap()
            .member_count,
        4
    );
    let missing = store
        .add_members(ConversationId(group.id.0 + 1_000), &[a], 3_000)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound)),
        "adding to an unknown conversation is NotFound, got {missing:?}"
    );
}

pub async fn remove_member(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let group = group(&store, owner, &[a, b]).await;

    assert!(store.remove_member(group.id, a).await.unwrap());
    assert!(
        !store.remove_member(group.id, a).await.unwrap(),
        "removing a non-member reports false"
    );
    assert_eq!(store.member(group.id, a).await.unwrap(), None);
    assert_eq!(
        set(store
            .members(group.id)
            .await
            .unwrap()
            .iter()
            .map(|m| m.user_id)),
        set([owner, b])
    );
    assert!(store.conversations_of(a).await.unwrap().is_empty());
    assert_eq!(store.user_conversation(a, group.id).await.unwrap(), None);
    assert_eq!(
        store
            .user_conversation(b, group.id)
            .await
            .unwrap()
            .unwrap()
            .member_count,
        2
    );
}

pub async fn conversations_of_newest_activity_first(store: Arc<dyn Store>) {
    let alice = sender(&store, "alice").await;
    let bob = sender(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let (with_bob, _) = store
        .get_or_create_direct(alice.user, bob.user, 10)
        .await
        .unwrap();
    let team = store
        .create_group(alice.user, "team", &[bob.user, carol], 20)
        .await
        .unwrap();
    let (with_carol, _) = store
        .get_or_create_direct(carol, alice.user, 30)
        .await
        .unwrap();

    let order = |list: Vec<crate::UserConversation>| -> Vec<ConversationId> {
        list.iter().map(|c| c.conversation.id).collect()
    };
    assert_eq!(
        order(store.conversations_of(alice.user).await.unwrap()),
        vec![with_carol.id, team.id, with_bob.id],
        "without messages, the newest conversation comes first"
    );

    append_one(&store, text(with_bob.id, bob.user, bob.device, "m1", 40)).await;
    assert_eq!(
        order(store.conversations_of(alice.user).await.unwrap()),
        vec![with_bob.id, with_carol.id, team.id],
        "a new message moves its conversation to the top"
    );
    append_one(&store, text(team.id, alice.user, alice.device, "m2", 50)).await;
    let list = store.conversations_of(alice.user).await.unwrap();
    assert_eq!(
        order(list.clone()),
        vec![team.id, with_bob.id, with_carol.id]
    );
    assert_eq!(
        order(store.conversations_of(bob.user).await.unwrap()),
        vec![team.id, with_bob.id]
    );
    assert!(
        store
            .conversations_of(UserId(carol.0 + 1_000))
            .await
            .unwrap()
            .is_empty()
    );

    // Each entry is the conversation as seen by alice.
    for entry in &list {
        assert_eq!(entry.me.user_id, alice.user);
        assert_eq!(entry.me.username, "alice");
        assert_eq!(entry.me.conversation_id, entry.conversation.id);
    }
    let bob_entry = &list[1];
    assert_eq!(bob_entry.conversation.kind, ConversationKind::Direct);
    assert_eq!(bob_entry.conversation.last_seq, 1);
    assert_eq!(bob_entry.unread, 1);
    assert_eq!(
        bob_entry
            .peer
            .as_ref()
            .map(|p| (p.user_id, p.username.clone())),
        Some((bob.user, "bob".to_owned()))
    );
    assert_eq!(bob_entry.member_count, 2);
    let team_entry = &list[0];
    assert_eq!(team_entry.conversation.title, "team");
    assert_eq!(team_entry.me.role, Role::Owner);
    assert_eq!(team_entry.unread, 0);
    assert_eq!(team_entry.member_count, 3);
    assert_eq!(
        team_entry
            .peer
            .as_ref()
            .map(|p| (p.user_id, p.username.clone())),
        None
    );
    assert_eq!(
        list[2]
            .peer
            .as_ref()
            .map(|p| (p.user_id, p.username.clone())),
        Some((carol, "carol".to_owned())),
        "the peer is the other member, whoever created the conversation"
    );
}

pub async fn direct_peer_markers_follow_receipts(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let (direct, _) = store.get_or_create_direct(a.user, b.user, 1).await.unwrap();
    append(
        &store,
        (1..=3)
            .map(|i| text(direct.id, a.user, a.device, &format!("a{i}"), 100 + i))
            .collect(),
    )
    .await;
    let seen_by_a = store
        .user_conversation(a.user, direct.id)
        .await
        .unwrap()
        .unwrap();
    let peer = seen_by_a.peer.expect("a direct conversation has a peer");
    assert_eq!((peer.delivered_seq, peer.read_seq), (0, 0));
    store
        .advance_marker(direct.id, b.user, ReceiptKind::Delivered, 3)
        .await
        .unwrap();
    store
        .advance_marker(direct.id, b.user, ReceiptKind::Read, 2)
        .await
        .unwrap();
    let list = store.conversations_of(a.user).await.unwrap();
    let peer = list[0].peer.clone().unwrap();
    assert_eq!(
        (peer.user_id, peer.delivered_seq, peer.read_seq),
        (b.user, 3, 2)
    );
}

pub async fn profiles_default_empty_and_update(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let profile = store.profile(alice).await.unwrap().unwrap();
    assert_eq!(
        (
            profile.username.as_str(),
            profile.display_name.as_str(),
            profile.status_text.as_str()
        ),
        ("alice", "", "")
    );
    store
        .set_profile(alice, "Alice Liddell", "down the hole", 5)
        .await
        .unwrap();
    store
        .set_profile(alice, "Alice L.", "back", 6)
        .await
        .unwrap();
    let profile = store.profile(alice).await.unwrap().unwrap();
    assert_eq!(
        (profile.display_name.as_str(), profile.status_text.as_str()),
        ("Alice L.", "back")
    );
    assert_eq!(store.profile(UserId(999_999)).await.unwrap(), None);
    assert!(matches!(
        store.set_profile(UserId(999_999), "x", "", 1).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn search_by_username_and_display_name_prefix(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let alina = user(&store, "alina").await;
    let bob = user(&store, "bob").await;
    let wang = user(&store, "wang").await;
    store
        .set_profile(bob, "Alfred Bobson", "", 1)
        .await
        .unwrap();
    store.set_profile(wang, "王小明", "", 1).await.unwrap();
    let names =
        |found: Vec<ProfileRecord>| found.into_iter().map(|p| p.username).collect::<Vec<_>>();
    assert_eq!(
        names(store.search_users("al", 10).await.unwrap()),
        ["alice", "alina", "bob"]
    );
    assert_eq!(
        names(store.search_users("AL", 10).await.unwrap()),
        ["alice", "alina", "bob"]
    );
    assert_eq!(
        names(store.search_users("ali", 10).await.unwrap()),
        ["alice", "alina"]
    );
    assert_eq!(names(store.search_users("王", 10).await.unwrap()), ["wang"]);
    assert_eq!(names(store.search_users("al", 2).await.unwrap()).len(), 2);
    assert!(store.search_users("zz", 10).await.unwrap().is_empty());
    let _ = (alice, alina);
}

pub async fn block_list_is_directional_and_idempotent(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    assert!(store.block_user(alice, bob, 10).await.unwrap());
    assert!(
        !store.block_user(alice, bob, 11).await.unwrap(),
        "blocking twice changes nothing"
    );
    assert!(store.block_user(alice, carol, 12).await.unwrap());
    assert!(store.is_blocked(alice, bob).await.unwrap());
    assert!(
        !store.is_blocked(bob, alice).await.unwrap(),
        "a block has a direction"
    );
    let list = store.blocked_by(alice).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|b| (b.user_id, b.username.as_str(), b.since))
            .collect::<Vec<_>>(),
        vec![(bob, "bob", 10), (carol, "carol", 12)]
    );
    assert!(store.blocked_by(bob).await.unwrap().is_empty());
    assert_eq!(store.blockers_of(bob).await.unwrap(), vec![alice]);
    assert!(store.blockers_of(alice).await.unwrap().is_empty());
    assert!(store.unblock_user(alice, bob).await.unwrap());
    assert!(!store.unblock_user(alice, bob).await.unwrap());
    assert!(!store.is_blocked(alice, bob).await.unwrap());
    assert!(matches!(
        store.block_user(alice, UserId(999_999), 13).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn friend_request_accept_and_lists(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    assert_eq!(
        store
            .send_friend_request(alice, bob, Some("hi, it's alice"), 10)
            .await
            .unwrap(),
        FriendRequestSent::Pending
    );
    assert_eq!(
        store
            .send_friend_request(carol, bob, None, 11)
            .await
            .unwrap(),
        FriendRequestSent::Pending
    );
    let incoming = store.friend_requests_to(bob).await.unwrap();
    assert_eq!(
        incoming
            .iter()
            .map(|r| (
                r.from,
                r.from_username.as_str(),
                r.to_username.as_str(),
                r.note.as_deref(),
                r.created_at
            ))
            .collect::<Vec<_>>(),
        vec![
            (alice, "alice", "bob", Some("hi, it's alice"), 10),
            (carol, "carol", "bob", None, 11)
        ],
        "incoming requests, oldest first"
    );
    let outgoing = store.friend_requests_from(alice).await.unwrap();
    assert_eq!(outgoing.len(), 1);
    assert_eq!((outgoing[0].to, outgoing[0].created_at), (bob, 10));
    assert_eq!(
        store.friend_request(alice, bob).await.unwrap(),
        Some(outgoing[0].clone())
    );
    assert_eq!(store.friend_request(bob, alice).await.unwrap(), None);
    assert!(!store.are_friends(alice, bob).await.unwrap());

    assert!(store.accept_friend_request(alice, bob, 20).await.unwrap());
    assert!(
        !store.accept_friend_request(alice, bob, 21).await.unwrap(),
        "the request was consumed"
    );
    assert!(store.are_friends(alice, bob).await.unwrap());
    assert!(
        store.are_friends(bob, alice).await.unwrap(),
        "friendship is symmetric"
    );
    assert!(!store.are_friends(alice, carol).await.unwrap());
    assert!(store.friend_requests_from(alice).await.unwrap().is_empty());
    assert_eq!(store.friend_requests_to(bob).await.unwrap().len(), 1);
    let friends = store.friends_of(bob).await.unwrap();
    assert_eq!(
        friends
            .iter()
            .map(|f| (f.user_id, f.username.as_str(), f.since))
            .collect::<Vec<_>>(),
        vec![(alice, "alice", 20)]
    );
    // Both sides list the friendship, whichever id is smaller.
    assert!(store.accept_friend_request(carol, bob, 30).await.unwrap());
    let of_bob: Vec<UserId> = store
        .friends_of(bob)
        .await
        .unwrap()
        .iter()
        .map(|f| f.user_id)
        .collect();
    assert_eq!(of_bob, vec![alice, carol], "in user id order");
    assert_eq!(store.friends_of(carol).await.unwrap()[0].user_id, bob);
    // Accepting a request that was never sent does nothing.
    assert!(!store.accept_friend_request(bob, alice, 40).await.unwrap());
}

pub async fn crossing_friend_requests_make_friends(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert_eq!(
        store
            .send_friend_request(bob, alice, None, 10)
            .await
            .unwrap(),
        FriendRequestSent::Pending
    );
    assert_eq!(
        store
            .send_friend_request(alice, bob, Some("me too"), 11)
            .await
            .unwrap(),
        FriendRequestSent::BecameFriends
    );
    assert!(store.are_friends(alice, bob).await.unwrap());
    assert!(store.friend_requests_to(alice).await.unwrap().is_empty());
    assert!(store.friend_requests_to(bob).await.unwrap().is_empty());
    assert_eq!(store.friends_of(alice).await.unwrap()[0].since, 11);
}

pub async fn friend_request_conflicts_and_unknown_users(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    store
        .send_friend_request(alice, bob, None, 10)
        .await
        .unwrap();
    assert!(matches!(
        store.send_friend_request(alice, bob, None, 11).await,
        Err(StoreError::Conflict("friend_request"))
    ));
    store.accept_friend_request(alice, bob, 12).await.unwrap();
    for (from, to) in [(alice, bob), (bob, alice)] {
        assert!(matches!(
            store.send_friend_request(from, to, None, 13).await,
            Err(StoreError::Conflict("friendship"))
        ));
    }
    assert!(matches!(
        store
            .send_friend_request(alice, UserId(999_999), None, 14)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store.friend_requests_from(alice).await.unwrap().is_empty());
}

pub async fn decline_cancel_and_remove_friend(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    // Declined (deleted by the recipient) and cancelled (by the sender) look the same here.
    store
        .send_friend_request(alice, bob, None, 10)
        .await
        .unwrap();
    assert!(store.delete_friend_request(alice, bob).await.unwrap());
    assert!(!store.delete_friend_request(alice, bob).await.unwrap());
    assert!(store.friend_request(alice, bob).await.unwrap().is_none());
    assert!(!store.are_friends(alice, bob).await.unwrap());
    // A declined request may be sent again.
    store
        .send_friend_request(alice, bob, None, 11)
        .await
        .unwrap();
    assert!(
        !store.delete_friend_request(bob, alice).await.unwrap(),
        "requests have a direction"
    );
    store.accept_friend_request(alice, bob, 12).await.unwrap();
    assert!(store.remove_friend(bob, alice).await.unwrap());
    assert!(!store.remove_friend(alice, bob).await.unwrap());
    assert!(!store.are_friends(alice, bob).await.unwrap());
    assert!(store.friends_of(alice).await.unwrap().is_empty());
    assert!(store.friends_of(bob).await.unwrap().is_empty());
}

pub async fn contacts_version_counts_changes(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let versions = || async {
        (
            store.contacts_version(alice).await.unwrap(),
            store.contacts_version(bob).await.unwrap(),
            store.contacts_version(carol).await.unwrap(),
        )
    };
    assert_eq!(versions().await, (0, 0, 0));
    store
        .send_friend_request(alice, bob, None, 10)
        .await
        .unwrap();
    let (a1, b1, c1) = versions().await;
    assert!(a1 > 0 && b1 > 0, "both sides of a request move");
    assert_eq!(c1, 0, "bystanders do not");
    store.accept_friend_request(alice, bob, 11).await.unwrap();
    let (a2, b2, _) = versions().await;
    assert!(a2 > a1 && b2 > b1);
    // Failures and no-ops change nothing.
    let _ = store.send_friend_request(alice, bob, None, 12).await;
    assert!(!store.delete_friend_request(alice, carol).await.unwrap());
    assert_eq!(versions().await, (a2, b2, 0));
    store.remove_friend(alice, bob).await.unwrap();
    let (a3, b3, _) = versions().await;
    assert!(a3 > a2 && b3 > b2);
    store
        .send_friend_request(carol, alice, None, 13)
        .await
        .unwrap();
    store.delete_friend_request(carol, alice).await.unwrap();
    let (a4, b4, c4) = versions().await;
    assert!(a4 > a3 + 1, "sending and deleting are two changes");
    assert_eq!(b4, b3);
    assert!(c4 > 0);
}

pub async fn blocking_ends_friendship_and_requests(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    // A friendship ends with a block.
    store
        .send_friend_request(alice, bob, None, 10)
        .await
        .unwrap();
    store.accept_friend_request(alice, bob, 11).await.unwrap();
    let before = store.contacts_version(bob).await.unwrap();
    assert!(store.block_user(bob, alice, 12).await.unwrap());
    assert!(!store.are_friends(alice, bob).await.unwrap());
    assert!(store.contacts_version(bob).await.unwrap() > before);
    // Pending requests in either direction are dropped with a block.
    store
        .send_friend_request(carol, alice, None, 13)
        .await
        .unwrap();
    assert!(store.block_user(alice, carol, 16).await.unwrap());
    assert!(store.friend_requests_to(alice).await.unwrap().is_empty());
    assert!(store.friend_requests_from(carol).await.unwrap().is_empty());
    store.unblock_user(alice, carol).await.unwrap();
    store
        .send_friend_request(alice, carol, None, 17)
        .await
        .unwrap();
    assert!(store.block_user(alice, carol, 18).await.unwrap());
    assert!(store.friend_requests_from(alice).await.unwrap().is_empty());
    assert!(store.friend_requests_to(carol).await.unwrap().is_empty());
    // A block that changes no contacts leaves the versions alone.
    let before = store.contacts_version(carol).await.unwrap();
    assert!(!store.block_user(alice, carol, 19).await.unwrap());
    assert_eq!(store.contacts_version(carol).await.unwrap(), before);
}

pub async fn privacy_defaults_and_updates(store: Arc<dyn Store>) {
    use tidings_proto::contacts::{DirectMessages, GroupAdds, PrivacySettings, Visibility};
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert_eq!(
        store
            .privacy_of(&[bob, UserId(999_999), alice])
            .await
            .unwrap(),
        vec![
            (alice, PrivacySettings::default()),
            (bob, PrivacySettings::default())
        ],
        "defaults, in user id order, unknown ids skipped"
    );
    assert_eq!(
        PrivacySettings::default(),
        PrivacySettings {
            direct_messages: DirectMessages::Everyone,
            presence: Visibility::Everyone,
            group_adds: GroupAdds::Everyone,
        }
    );
    let closed = PrivacySettings {
        direct_messages: DirectMessages::Friends,
        presence: Visibility::Nobody,
        group_adds: GroupAdds::Friends,
    };
    store.set_privacy(alice, closed, 10).await.unwrap();
    assert_eq!(
        store.privacy_of(&[alice, bob]).await.unwrap(),
        vec![(alice, closed), (bob, PrivacySettings::default())]
    );
    let partly = PrivacySettings {
        presence: Visibility::Friends,
        group_adds: GroupAdds::Nobody,
        ..PrivacySettings::default()
    };
    store.set_privacy(alice, partly, 11).await.unwrap();
    assert_eq!(
        store.privacy_of(&[alice]).await.unwrap(),
        vec![(alice, partly)]
    );
    assert!(store.privacy_of(&[]).await.unwrap().is_empty());
    assert!(matches!(
        store.set_privacy(UserId(999_999), closed, 12).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn direct_conversations_of_lists_only_direct(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let (with_bob, _) = store.get_or_create_direct(alice, bob, 1).await.unwrap();
    group(&store, alice, &[bob, carol]).await;
    let (with_carol, _) = store.get_or_create_direct(carol, alice, 2).await.unwrap();
    assert_eq!(
        store.direct_conversations_of(alice).await.unwrap(),
        vec![with_bob.id, with_carol.id]
    );
    assert_eq!(
        store.direct_conversations_of(bob).await.unwrap(),
        vec![with_bob.id]
    );
}

pub async fn direct_between_never_creates(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert_eq!(store.direct_between(alice, bob).await.unwrap(), None);
    let (created, _) = store.get_or_create_direct(bob, alice, 5).await.unwrap();
    assert_eq!(
        store.direct_between(alice, bob).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.direct_between(bob, alice).await.unwrap(),
        Some(created)
    );
}

pub async fn unread_counts_only_others(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await.id;

    append(
        &store,
        (1..=3)
            .map(|i| text(g, b.user, b.device, &format!("b{i}"), 100 + i))
            .collect(),
    )
    .await;
    assert_eq!(unread(&store, a.user, g).await, 3);
    assert_eq!(
        unread(&store, b.user, g).await,
        0,
        "own messages never count"
    );

    append_one(&store, text(g, a.user, a.device, "a1", 200)).await;
    assert_eq!(
        unread(&store, a.user, g).await,
        0,
        "sending moves the sender's read marker past what they answered"
    );
    assert_eq!(unread(&store, b.user, g).await, 1);

    append(
        &store,
        vec![
            text(g, b.user, b.device, "b4", 300),
            text(g, b.user, b.device, "b5", 301),
        ],
    )
    .await;
    assert_eq!(unread(&store, a.user, g).await, 2);
    assert_eq!(
        store
            .advance_marker(g, a.user, ReceiptKind::Read, 5)
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(unread(&store, a.user, g).await, 1);
    assert_eq!(
        store
            .advance_marker(g, a.user, ReceiptKind::Delivered, 6)
            .await
            .unwrap(),
        Some(6)
    );
    assert_eq!(unread(&store, a.user, g).await, 1, "delivered is not read");
    let listed = store.conversations_of(a.user).await.unwrap();
    assert_eq!(listed[0].unread, 1, "conversations_of agrees");
    assert_eq!(
        store
            .user_conversation(b.user, g)
            .await
            .unwrap()
            .unwrap()
            .unread,
        0
    );
}

// --- Messages --------------------------------------------------------------------------------

pub async fn append_assigns_gap_free_seqs(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let c = user(&store, "c").await;
    let (x, _) = store.get_or_create_direct(a.user, b, 1_000).await.unwrap();
    let (y, _) = store.get_or_create_direct(a.user, c, 1_000).await.unwrap();

    let batch = vec![
        text(x.id, a.user, a.device, "1", 2_001),
        text(y.id, a.user, a.device, "2", 2_002),
        text(x.id, a.user, a.device, "3", 2_003),
        text(x.id, a.user, a.device, "4", 2_004),
        text(y.id, a.user, a.device, "5", 2_005),
    ];
    let appended = append(&store, batch.clone()).await;
    let seqs: Vec<(ConversationId, Seq)> = appended
        .iter()
        .map(|r| (r.message.conversation_id, r.message.seq))
        .collect();
    assert_eq!(
        seqs,
        vec![(x.id, 1), (y.id, 1), (x.id, 2), (x.id, 3), (y.id, 2)],
        "per-conversation seqs start at 1 and follow input order"
    );
    for (result, input) in appended.iter().zip(&batch) {
        assert!(!result.duplicate);
        let m = &result.message;
        assert_eq!(m.sender_id, input.sender_id);
        assert_eq!(m.sender_device_id, input.sender_device_id);
        assert_eq!(m.client_msg_id, input.client_msg_id);
        assert_eq!(m.ts, input.ts, "the store keeps ts as given");
        assert_eq!(m.body, input.body);
    }
    let ids = set(appended.iter().map(|r| r.message.id));
    assert_eq!(ids.len(), appended.len(), "message ids are unique");

    let more = append(
        &store,
        vec![
            text(y.id, a.user, a.device, "6", 2_006),
            text(x.id, a.user, a.device, "7", 2_007),
        ],
    )
    .await;
    assert_eq!(
        (more[0].message.seq, more[1].message.seq),
        (3, 4),
        "the next batch continues where the last one stopped"
    );
    assert_eq!(store.conversation(x.id).await.unwrap().unwrap().last_seq, 4);
    assert_eq!(store.conversation(y.id).await.unwrap().unwrap().last_seq, 3);

    let stored = store.messages_after(x.id, 0, 100).await.unwrap();
    let expected: Vec<Message> = appended
        .iter()
        .chain(&more)
        .map(|r| r.message.clone())
        .filter(|m| m.conversation_id == x.id)
        .collect();
    assert_eq!(stored, expected, "what was acknowledged is what is stored");
    assert!(store.append_messages(Vec::new()).await.unwrap().is_empty());
}

pub async fn append_moves_sender_markers(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await.id;
    append(
        &store,
        vec![
            text(g, b.user, b.device, "b1", 1),
            text(g, a.user, a.device, "a1", 2),
            text(g, b.user, b.device, "b2", 3),
        ],
    )
    .await;
    let a_marks = store.member(g, a.user).await.unwrap().unwrap();
    assert_eq!((a_marks.delivered_seq, a_marks.read_seq), (2, 2));
    let b_marks = store.member(g, b.user).await.unwrap().unwrap();
    assert_eq!((b_marks.delivered_seq, b_marks.read_seq), (3, 3));
}

pub async fn append_idempotent_across_batches(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let (x, _) = store.get_or_create_direct(a.user, b.user, 1).await.unwrap();
    let g = group(&store, a.user, &[b.user]).await.id;

    let original = append_one(&store, text(x.id, a.user, a.device, "k1", 100)).await;
    assert!(!original.duplicate);

    let mut retry = text(x.id, a.user, a.device, "k1", 999);
    retry.body = MessageBody::Text {
        text: "a different body".into(),
    };
    let again = append_one(&store, retry).await;
    assert!(again.duplicate, "the same client_msg_id is a duplicate");
    assert_eq!(
        again.message, original.message,
        "a duplicate returns the stored original, not the retry"
    );
    assert_eq!(store.conversation(x.id).await.unwrap().unwrap().last_seq, 1);
    assert_eq!(store.messages_after(x.id, 0, 10).await.unwrap().len(), 1);

    // The key is (conversation, sender, client_msg_id): change any part and it is new.
    let other_sender = append_one(&store, text(x.id, b.user, b.device, "k1", 101)).await;
    assert!(!other_sender.duplicate);
    assert_eq!(other_sender.message.seq, 2);
    let other_conversation = append_one(&store, text(g, a.user, a.device, "k1", 102)).await;
    assert!(!other_conversation.duplicate);
    assert_eq!(other_conversation.message.seq, 1);
}

pub async fn append_idempotent_within_batch(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let (x, _) = store.get_or_create_direct(a.user, b, 1).await.unwrap();
    let results = append(
        &store,
        vec![
            text(x.id, a.user, a.device, "k1", 100),
            text(x.id, a.user, a.device, "k2", 101),
            text(x.id, a.user, a.device, "k1", 102),
        ],
    )
    .await;
    assert!(!results[0].duplicate);
    assert!(!results[1].duplicate);
    assert!(
        results[2].duplicate,
        "a second copy in the same batch is a duplicate"
    );
    assert_eq!(results[2].message, results[0].message);
    assert_eq!((results[0].message.seq, results[1].message.seq), (1, 2));
    assert_eq!(store.conversation(x.id).await.unwrap().unwrap().last_seq, 2);
}

pub async fn append_unknown_conversation_fails_alone(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let (x, _) = store.get_or_create_direct(a.user, b, 1).await.unwrap();
    let nowhere = ConversationId(x.id.0 + 1_000);
    let results = store
        .append_messages(vec![
            text(x.id, a.user, a.device, "k1", 100),
            text(nowhere, a.user, a.device, "k2", 101),
            text(x.id, a.user, a.device, "k3", 102),
        ])
        .await
        .expect("one bad item does not fail the batch");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().message.seq, 1);
    assert!(
        matches!(results[1], Err(StoreError::NotFound)),
        "got {:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().message.seq, 2);
    assert_eq!(store.conversation(nowhere).await.unwrap(), None);
    assert!(
        store
            .messages_after(nowhere, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.messages_after(x.id, 0, 10).await.unwrap().len(), 2);
}

pub async fn append_bodies_round_trip(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let (x, _) = store.get_or_create_direct(a.user, b, 1).await.unwrap();
    let bodies = vec![
        MessageBody::Text {
            text: String::new(),
        },
        MessageBody::Text {
            text: "héllo \"wörld\"\n\ttabs, emoji 🎉, NUL-free \\ backslash, 中文".into(),
        },
        MessageBody::Encrypted {
            algorithm: "tidings.e2e.v1".into(),
            ciphertext: "q83vEjRWeJA=".into(),
            session_id: Some("session-7".into()),
        },
        MessageBody::Encrypted {
            algorithm: "m.megolm.v1.aes-sha2".into(),
            ciphertext: "AAAA".into(),
            session_id: None,
        },
        MessageBody::Custom {
            app: "com.example.poll".into(),
            data: serde_json::json!({
                "question": "Lunch?",
                "options": ["pizza", "sushi", null],
                "nested": {"deep": {"n": -42, "big": 9_007_199_254_740_991_i64, "half": 0.5}},
                "flag": true,
                "empty": {}
            }),
        },
        MessageBody::Custom {
            app: "bare".into(),
            data: serde_json::json!("just a string"),
        },
    ];
    let batch: Vec<NewMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| NewMessage {
            body: body.clone(),
            ..text(x.id, a.user, a.device, &format!("k{i}"), 100)
        })
        .collect();
    let appended = append(&store, batch).await;
    let stored = store.messages_after(x.id, 0, 100).await.unwrap();
    let read_back: Vec<MessageBody> = stored.into_iter().map(|m| m.body).collect();
    assert_eq!(read_back, bodies, "bodies come back exactly as sent");
    let acked: Vec<MessageBody> = appended.into_iter().map(|r| r.message.body).collect();
    assert_eq!(acked, bodies);

    // A duplicate's body is read back from storage, so it must round-trip too.
    let dup = append_one(
        &store,
        NewMessage {
            body: MessageBody::Text { text: "x".into() },
            ..text(x.id, a.user, a.device, "k4", 100)
        },
    )
    .await;
    assert!(dup.duplicate);
    assert_eq!(dup.message.body, bodies[4]);
}

pub async fn history_paging(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let (x, _) = store.get_or_create_direct(a.user, b, 1).await.unwrap();
    let (empty, _) = store
        .get_or_create_direct(b, user(&store, "c").await, 1)
        .await
        .unwrap();
    append(
        &store,
        (1..=10)
            .map(|i| text(x.id, a.user, a.device, &format!("k{i}"), i))
            .collect(),
    )
    .await;
    let seqs = |messages: Vec<Message>| -> Vec<Seq> { messages.iter().map(|m| m.seq).collect() };

    assert_eq!(
        seqs(store.messages_after(x.id, 0, 3).await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs(store.messages_after(x.id, 3, 100).await.unwrap()),
        (4..=10).collect::<Vec<_>>()
    );
    assert!(
        store
            .messages_after(x.id, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.messages_after(x.id, 0, 0).await.unwrap().is_empty());
    assert!(
        store
            .messages_after(empty.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        seqs(store.messages_before(x.id, None, 3).await.unwrap()),
        vec![8, 9, 10],
        "before = None pages back from the newest, answered ascending"
    );
    assert_eq!(
        seqs(store.messages_before(x.id, Some(8), 3).await.unwrap()),
        vec![5, 6, 7]
    );
    assert_eq!(
        seqs(store.messages_before(x.id, Some(3), 5).await.unwrap()),
        vec![1, 2]
    );
    assert!(
        store
            .messages_before(x.id, Some(1), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        seqs(store.messages_before(x.id, None, 100).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(
        store
            .messages_before(empty.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn advance_marker_rules(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let b = sender(&store, "b").await;
    let c = user(&store, "c").await;
    let outsider = user(&store, "outsider").await;
    let g = group(&store, b.user, &[a, c]).await.id;
    append(
        &store,
        (1..=5)
            .map(|i| text(g, b.user, b.device, &format!("k{i}"), i))
            .collect(),
    )
    .await;
    let marks = |m: crate::MemberRecord| (m.delivered_seq, m.read_seq);

    let advance = |user: UserId, kind: ReceiptKind, seq: Seq| {
        let store = Arc::clone(&store);
        async move { store.advance_marker(g, user, kind, seq).await.unwrap() }
    };
    assert_eq!(advance(a, ReceiptKind::Delivered, 3).await, Some(3));
    assert_eq!(
        advance(a, ReceiptKind::Delivered, 2).await,
        None,
        "never backwards"
    );
    assert_eq!(
        advance(a, ReceiptKind::Delivered, 3).await,
        None,
        "no move, no news"
    );
    assert_eq!(
        advance(a, ReceiptKind::Delivered, 99).await,
        Some(5),
        "clamped to last_seq"
    );
    assert_eq!(advance(a, ReceiptKind::Delivered, 99).await, None);
    assert_eq!(marks(store.member(g, a).await.unwrap().unwrap()), (5, 0));

    assert_eq!(advance(a, ReceiptKind::Read, 2).await, Some(2));
    assert_eq!(
        marks(store.member(g, a).await.unwrap().unwrap()),
        (5, 2),
        "reading does not pull delivered back"
    );
    assert_eq!(advance(a, ReceiptKind::Read, 1).await, None);
    assert_eq!(advance(a, ReceiptKind::Read, u64::MAX).await, Some(5));
    assert_eq!(marks(store.member(g, a).await.unwrap().unwrap()), (5, 5));

    assert_eq!(advance(c, ReceiptKind::Read, 4).await, Some(4));
    assert_eq!(
        marks(store.member(g, c).await.unwrap().unwrap()),
        (4, 4),
        "what was read was delivered"
    );
    assert_eq!(
        advance(c, ReceiptKind::Delivered, 4).await,
        None,
        "delivered is already there"
    );

    let stranger = store
        .advance_marker(g, outsider, ReceiptKind::Read, 1)
        .await;
    assert!(
        matches!(stranger, Err(StoreError::NotFound)),
        "a non-member has no marker: got {stranger:?}"
    );
    let nowhere = store
        .advance_marker(ConversationId(g.0 + 1_000), a, ReceiptKind::Read, 1)
        .await;
    assert!(
        matches!(nowhere, Err(StoreError::NotFound)),
        "got {nowhere:?}"
    );
}

// --- Presence --------------------------------------------------------------------------------

pub async fn co_members_distinct_without_self(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let c = user(&store, "c").await;
    let d = user(&store, "d").await;
    let loner = user(&store, "loner").await;
    store.get_or_create_direct(a, b, 1).await.unwrap();
    group(&store, a, &[b, c]).await;
    group(&store, c, &[a, b]).await;
    group(&store, d, &[b]).await;

    let mut of_a = store.co_members(a).await.unwrap();
    of_a.sort();
    let mut expected = vec![b, c];
    expected.sort();
    assert_eq!(of_a, expected, "each co-member once, never oneself");
    assert_eq!(set(store.co_members(b).await.unwrap()), set([a, c, d]));
    assert_eq!(store.co_members(b).await.unwrap().len(), 3);
    assert!(store.co_members(loner).await.unwrap().is_empty());
}

pub async fn last_seen_upsert(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let never = user(&store, "never").await;
    store.set_last_seen(a, 100).await.unwrap();
    store.set_last_seen(b, 200).await.unwrap();
    assert_eq!(
        set(store.last_seen(&[a, b, never]).await.unwrap()),
        set([(a, 100), (b, 200)]),
        "users never seen are absent"
    );
    store.set_last_seen(a, 300).await.unwrap();
    assert_eq!(store.last_seen(&[a]).await.unwrap(), vec![(a, 300)]);
    assert!(store.last_seen(&[]).await.unwrap().is_empty());
}

// --- Concurrency -----------------------------------------------------------------------------

pub async fn concurrent_appends_are_gap_free(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 200;
    let owner = sender(&store, "owner").await;
    let mut senders = Vec::new();
    for i in 0..TASKS {
        senders.push(sender(&store, &format!("sender{i}")).await);
    }
    let ids: Vec<UserId> = senders.iter().map(|s| s.user).collect();
    let g = group(&store, owner.user, &ids).await.id;

    let mut tasks = Vec::new();
    for s in senders {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let appended = append_one(
                    &store,
                    text(g, s.user, s.device, &format!("m{i}"), i as i64),
                )
                .await;
                seqs.push(appended.message.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("an append task panicked");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's sequential appends get increasing seqs"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let total = (TASKS * PER_TASK) as Seq;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "seqs are exactly 1..=N"
    );

    let stored = store.messages_after(g, 0, u32::MAX).await.unwrap();
    assert_eq!(stored.len() as Seq, total);
    assert!(
        stored.iter().zip(1..).all(|(m, seq)| m.seq == seq),
        "history is gap-free and ordered"
    );
    assert_eq!(
        store.conversation(g).await.unwrap().unwrap().last_seq,
        total
    );
}

// --- Groups ----------------------------------------------------------------------------------

/// A system message for `change_group`, with a unique client id.
fn event(conversation: ConversationId, actor: UserId, n: u32, ts: i64) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: actor,
        sender_device_id: DeviceId(0),
        client_msg_id: format!("system:{n}"),
        ts,
        body: MessageBody::System {
            event: Box::new(SystemEvent::MemberLeft {}),
        },
        relations: Default::default(),
    }
}

fn link(conversation: ConversationId, by: UserId, n: u8) -> NewInviteLink {
    NewInviteLink {
        conversation_id: conversation,
        code_hash: [n; 32],
        created_by: by,
        created_at: 1_000,
        expires_at: None,
        max_uses: None,
    }
}

fn member_ids(members: &[crate::MemberRecord]) -> BTreeSet<UserId> {
    members.iter().map(|m| m.user_id).collect()
}

pub async fn group_settings_default_and_update(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let peer = user(&store, "peer").await;
    let g = group(&store, owner, &[]).await;
    let record = store.group(g.id).await.unwrap().expect("a group");
    assert_eq!(record.description, "");
    assert!(!record.join_approval);
    assert_eq!(record.permissions, GroupPermissions::default());
    assert_eq!(record.member_count, 1);
    let (direct, _) = store
        .get_or_create_direct(owner, peer, 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.group(direct.id).await.unwrap(),
        None,
        "direct is no group"
    );
    assert_eq!(store.group(ConversationId(9_999)).await.unwrap(), None);

    let change = GroupChange::UpdateInfo {
        title: None,
        description: Some("about".into()),
        avatar: None,
        announcement: Some("read the rules".into()),
        join_approval: Some(true),
    };
    store
        .change_group(change, event(g.id, owner, 1, 2_000), None)
        .await
        .unwrap();
    let permissions = GroupPermissions {
        invite: Role::Admin,
        ..GroupPermissions::default()
    };
    store
        .change_group(
            GroupChange::SetPermissions(permissions.clone()),
            event(g.id, owner, 2, 2_000),
            None,
        )
        .await
        .unwrap();
    let record = store.group(g.id).await.unwrap().unwrap();
    assert_eq!(
        record.conversation.title, g.title,
        "unset fields keep their value"
    );
    assert_eq!(record.description, "about");
    assert_eq!(record.announcement, "read the rules");
    assert!(record.join_approval);
    assert_eq!(record.permissions, permissions);
}

pub async fn group_change_appends_its_event(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let d = device(&store, owner).await;
    let g = group(&store, owner, &[]).await;
    store
        .append_messages(vec![text(g.id, owner, d, "m1", 1_500)])
        .await
        .unwrap();
    let changed = store
        .change_group(
            GroupChange::AddMembers { users: vec![a] },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.added, vec![a]);
    assert!(changed.removed.is_empty());
    assert_eq!(changed.event.seq, 2, "the event takes the next sequence");
    assert_eq!(changed.event.sender_id, owner);
    let stored = store.messages_after(g.id, 1, 10).await.unwrap();
    assert_eq!(stored, vec![changed.event.clone()]);
    // The new member's markers start before the event that announces them, so they see it.
    let member = store.member(g.id, a).await.unwrap().unwrap();
    assert_eq!(member.read_seq, 1);
    // Sequences stay gap-free across plain appends and group changes.
    let next = store
        .append_messages(vec![text(g.id, a, d, "m2", 2_500)])
        .await
        .unwrap();
    assert_eq!(next[0].as_ref().unwrap().message.seq, 3);
    // A notice records an event and changes nothing (but the actor's markers, as for any
    // message they send).
    let roles = |members: Vec<crate::MemberRecord>| {
        members
            .into_iter()
            .map(|m| (m.user_id, m.role))
            .collect::<Vec<_>>()
    };
    let before = roles(store.members(g.id).await.unwrap());
    let notice = store
        .change_group(GroupChange::Notice, event(g.id, a, 2, 3_000), None)
        .await
        .unwrap();
    assert_eq!(notice.event.seq, 4);
    assert!(notice.added.is_empty() && notice.removed.is_empty());
    assert_eq!(roles(store.members(g.id).await.unwrap()), before);
}

pub async fn group_change_failure_stores_nothing(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let stranger = user(&store, "stranger").await;
    let g = group(&store, owner, &[]).await;
    for change in [
        GroupChange::RemoveMember { user: stranger },
        GroupChange::Mute {
            user: stranger,
            until: Some(5_000),
        },
        GroupChange::SetRole {
            user: stranger,
            role: Role::Admin,
        },
        GroupChange::Unban { user: stranger },
        GroupChange::AcceptInvitation { user: stranger },
        GroupChange::ApproveJoinRequest { user: stranger },
        GroupChange::DeleteMessage { seq: 7 },
    ] {
        let err = store
            .change_group(change.clone(), event(g.id, owner, 1, 2_000), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{change:?}: {err:?}");
    }
    let err = store
        .change_group(
            GroupChange::SetRole {
                user: owner,
                role: Role::Owner,
            },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.conversation(g.id).await.unwrap().unwrap().last_seq,
        0,
        "no event was stored for a change that failed"
    );
    let err = store
        .change_group(
            GroupChange::AddMembers {
                users: vec![stranger],
            },
            event(ConversationId(9_999), owner, 1, 2_000),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
}

pub async fn group_roles_mutes_and_transfer(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let g = group(&store, owner, &[a]).await;
    store
        .change_group(
            GroupChange::SetRole {
                user: a,
                role: Role::Admin,
            },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.member(g.id, a).await.unwrap().unwrap().role,
        Role::Admin
    );
    store
        .change_group(
            GroupChange::Mute {
                user: a,
                until: Some(9_000),
            },
            event(g.id, owner, 2, 2_000),
            None,
        )
        .await
        .unwrap();
    let members = store.members(g.id).await.unwrap();
    let muted = members.iter().find(|m| m.user_id == a).unwrap();
    assert_eq!(muted.muted_until, Some(9_000));
    assert_eq!(
        store
            .user_conversation(a, g.id)
            .await
            .unwrap()
            .unwrap()
            .me
            .muted_until,
        Some(9_000)
    );
    store
        .change_group(
            GroupChange::Mute {
                user: a,
                until: None,
            },
            event(g.id, owner, 3, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.member(g.id, a).await.unwrap().unwrap().muted_until,
        None
    );

    store
        .change_group(
            GroupChange::TransferOwnership { from: owner, to: a },
            event(g.id, owner, 4, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.member(g.id, a).await.unwrap().unwrap().role,
        Role::Owner
    );
    assert_eq!(
        store.member(g.id, owner).await.unwrap().unwrap().role,
        Role::Admin,
        "the old owner stays as an admin"
    );
}

pub async fn group_bans_block_every_way_back(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let g = group(&store, owner, &[a]).await;
    let l = store
        .create_invite_link(link(g.id, owner, 1))
        .await
        .unwrap();
    store
        .create_group_invitation(g.id, a, owner, 1_500)
        .await
        .unwrap();
    let changed = store
        .change_group(
            GroupChange::Ban {
                user: a,
                by: owner,
                reason: Some("spam".into()),
            },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.removed, vec![a], "a banned member is removed");
    assert!(store.is_banned(g.id, a).await.unwrap());
    let bans = store.group_bans(g.id).await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (
            bans[0].user_id,
            bans[0].banned_by,
            bans[0].reason.as_deref()
        ),
        (a, owner, Some("spam"))
    );
    assert!(
        store.group_invitations_of(a).await.unwrap().is_empty(),
        "a ban withdraws pending invitations"
    );
    let err = store
        .change_group(
            GroupChange::JoinByLink {
                user: a,
                link_id: l.id,
            },
            event(g.id, a, 2, 2_000),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    store
        .create_join_request(g.id, a, "let me in", 2_100)
        .await
        .unwrap();
    let err = store
        .change_group(
            GroupChange::ApproveJoinRequest { user: a },
            event(g.id, owner, 3, 2_200),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.invite_links(g.id).await.unwrap()[0].uses, 0);

    store
        .change_group(
            GroupChange::Unban { user: a },
            event(g.id, owner, 4, 2_300),
            None,
        )
        .await
        .unwrap();
    assert!(!store.is_banned(g.id, a).await.unwrap());
    store
        .change_group(
            GroupChange::JoinByLink {
                user: a,
                link_id: l.id,
            },
            event(g.id, a, 5, 2_400),
            None,
        )
        .await
        .unwrap();
    assert!(store.member(g.id, a).await.unwrap().is_some());
}

pub async fn group_invite_links_count_and_expire(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let users = [
        user(&store, "a").await,
        user(&store, "b").await,
        user(&store, "c").await,
    ];
    let g = group(&store, owner, &[]).await;
    let other = group(&store, owner, &[]).await;
    let mut limited = link(g.id, owner, 1);
    limited.max_uses = Some(2);
    let limited = store.create_invite_link(limited).await.unwrap();
    let mut expiring = link(g.id, owner, 2);
    expiring.expires_at = Some(3_000);
    let expiring = store.create_invite_link(expiring).await.unwrap();
    assert!(matches!(
        store.create_invite_link(link(g.id, owner, 1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.invite_link_by_code([1; 32]).await.unwrap(),
        Some(limited.clone())
    );
    assert_eq!(store.invite_link_by_code([9; 32]).await.unwrap(), None);

    let join = |user: UserId, link_id: i64, n: u32, ts: i64| {
        let store = store.clone();
        async move {
            store
                .change_group(
                    GroupChange::JoinByLink { user, link_id },
                    event(g.id, user, n, ts),
                    None,
                )
                .await
        }
    };
    join(users[0], limited.id, 1, 2_000).await.unwrap();
    join(users[1], limited.id, 2, 2_000).await.unwrap();
    assert!(matches!(
        join(users[2], limited.id, 3, 2_000).await,
        Err(StoreError::NotFound)
    ));
    let stored = store.invite_link_by_code([1; 32]).await.unwrap().unwrap();
    assert_eq!(stored.uses, 2);
    assert!(!stored.usable(2_000), "used up");
    assert!(matches!(
        join(users[2], expiring.id, 4, 3_000).await,
        Err(StoreError::NotFound)
    ));
    // A link works only for its own group.
    assert!(matches!(
        store
            .change_group(
                GroupChange::JoinByLink {
                    user: users[2],
                    link_id: expiring.id,
                },
                event(other.id, users[2], 5, 2_000),
                None,
            )
            .await,
        Err(StoreError::NotFound)
    ));
    join(users[2], expiring.id, 6, 2_999).await.unwrap();
    assert_eq!(
        member_ids(&store.members(g.id).await.unwrap()),
        set([owner, users[0], users[1], users[2]])
    );

    assert!(
        store
            .revoke_invite_link(g.id, expiring.id, 4_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invite_link(g.id, expiring.id, 4_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invite_link(other.id, limited.id, 4_000)
            .await
            .unwrap(),
        "a link is revoked only through its own group"
    );
    let listed: Vec<i64> = store
        .invite_links(g.id)
        .await
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed, vec![limited.id], "revoked links are not listed");
    assert!(
        store
            .invite_link_by_code([2; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
}

pub async fn group_join_requests_and_invitations(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let g = group(&store, owner, &[]).await;
    assert!(
        store
            .create_join_request(g.id, a, "hi", 1_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_join_request(g.id, a, "again", 1_100)
            .await
            .unwrap(),
        "one pending request per user"
    );
    assert!(store.create_join_request(g.id, b, "", 1_200).await.unwrap());
    let requests = store.join_requests(g.id).await.unwrap();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.user_id, r.message.as_str()))
            .collect::<Vec<_>>(),
        vec![(a, "hi"), (b, "")]
    );
    assert!(store.delete_join_request(g.id, b).await.unwrap());
    assert!(!store.delete_join_request(g.id, b).await.unwrap());
    let changed = store
        .change_group(
            GroupChange::ApproveJoinRequest { user: a },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.added, vec![a]);
    assert!(store.join_requests(g.id).await.unwrap().is_empty());

    assert!(
        store
            .create_group_invitation(g.id, b, owner, 3_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_group_invitation(g.id, b, a, 3_100)
            .await
            .unwrap()
    );
    let invitations = store.group_invitations_of(b).await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].inviter_id, owner);
    assert_eq!(invitations[0].inviter_username, "owner");
    assert_eq!(invitations[0].title, g.title);
    let changed = store
        .change_group(
            GroupChange::AcceptInvitation { user: b },
            event(g.id, b, 2, 3_200),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.added, vec![b]);
    assert!(store.group_invitations_of(b).await.unwrap().is_empty());
    assert!(matches!(
        store
            .create_join_request(ConversationId(9_999), a, "", 1)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !store.delete_group_invitation(g.id, b).await.unwrap(),
        "accepting consumed the invitation"
    );
}

pub async fn group_dissolve_removes_everyone(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let g = group(&store, owner, &[a]).await;
    store
        .create_invite_link(link(g.id, owner, 1))
        .await
        .unwrap();
    store.create_join_request(g.id, b, "", 1_000).await.unwrap();
    let changed = store
        .change_group(GroupChange::Dissolve, event(g.id, owner, 1, 2_000), None)
        .await
        .unwrap();
    assert_eq!(set(changed.removed.iter().copied()), set([owner, a]));
    assert!(store.members(g.id).await.unwrap().is_empty());
    assert!(store.conversations_of(a).await.unwrap().is_empty());
    assert_eq!(
        store.group(g.id).await.unwrap(),
        None,
        "a dissolved group is gone"
    );
    assert!(store.invite_links(g.id).await.unwrap().is_empty());
    assert!(store.join_requests(g.id).await.unwrap().is_empty());
    // History stays, ending with the event that dissolved the group.
    let history = store.messages_before(g.id, None, 10).await.unwrap();
    assert_eq!(history.last().unwrap().seq, changed.event.seq);
}

pub async fn group_delete_message_leaves_tombstone(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let a = user(&store, "a").await;
    let d = device(&store, a).await;
    let g = group(&store, owner, &[a]).await;
    store
        .append_messages(vec![text(g.id, a, d, "m1", 1_500)])
        .await
        .unwrap();
    let changed = store
        .change_group(
            GroupChange::DeleteMessage { seq: 1 },
            event(g.id, owner, 1, 2_000),
            None,
        )
        .await
        .unwrap();
    let history = store.messages_after(g.id, 0, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].body, MessageBody::Deleted {});
    assert_eq!(
        history[0].sender_id, a,
        "the envelope keeps its sender and place"
    );
    assert_eq!(history[1], changed.event);
    // System messages are the group's record and cannot be deleted.
    let err = store
        .change_group(
            GroupChange::DeleteMessage {
                seq: changed.event.seq,
            },
            event(g.id, owner, 2, 2_100),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
}

// --- Search ----------------------------------------------------------------------------------

fn said(conversation: ConversationId, sender: UserId, n: usize, ts: i64, text: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device_id: DeviceId(1),
        client_msg_id: format!("s{n}"),
        ts,
        body: MessageBody::Text { text: text.into() },
        relations: Default::default(),
    }
}

/// Appends texts (one message each, ts = 1000 + index) and indexes everything.
async fn say_all(
    store: &Arc<dyn Store>,
    conversation: ConversationId,
    sender: UserId,
    texts: &[&str],
) -> Vec<Seq> {
    let batch = texts
        .iter()
        .enumerate()
        .map(|(n, t)| said(conversation, sender, n, 1_000 + n as i64, t))
        .collect();
    let seqs = store
        .append_messages(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().message.seq)
        .collect();
    while store.index_pending(100).await.unwrap() > 0 {}
    seqs
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        conversation: None,
        sender: None,
        since: None,
        until: None,
        limit: 20,
        offset: 0,
    }
}

async fn found(store: &Arc<dyn Store>, user: UserId, q: SearchQuery) -> Vec<String> {
    store
        .search_messages(user, q)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| match hit.message.body {
            MessageBody::Text { text } => text,
            other => panic!("a non-text hit {other:?}"),
        })
        .collect()
}

pub async fn search_index_catches_up(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let g = group(&store, a, &[]).await;
    assert_eq!(
        store.index_pending(10).await.unwrap(),
        0,
        "nothing to index"
    );
    let batch = (0..5).map(|n| said(g.id, a, n, 1_000, "word")).collect();
    store.append_messages(batch).await.unwrap();
    assert_eq!(store.index_pending(3).await.unwrap(), 3);
    assert_eq!(
        found(&store, a, query("word")).await.len(),
        3,
        "indexed so far"
    );
    assert_eq!(store.index_pending(3).await.unwrap(), 2);
    assert_eq!(store.index_pending(3).await.unwrap(), 0);
    assert_eq!(found(&store, a, query("word")).await.len(), 5);
}

pub async fn search_english_words_any_case_and_prefix(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let g = group(&store, a, &[]).await;
    say_all(
        &store,
        g.id,
        a,
        &[
            "Meeting at NOON",
            "no meeting today",
            "Café opens",
            "noonday sun",
        ],
    )
    .await;
    let mut hits = found(&store, a, query("meeting")).await;
    hits.sort();
    assert_eq!(hits, vec!["Meeting at NOON", "no meeting today"]);
    assert_eq!(
        found(&store, a, query("MEETING noon")).await,
        vec!["Meeting at NOON"]
    );
    let mut hits = found(&store, a, query("noon")).await;
    hits.sort();
    assert_eq!(
        hits,
        vec!["Meeting at NOON", "noonday sun"],
        "words match as prefixes"
    );
    assert_eq!(
        found(&store, a, query("cafe")).await,
        vec!["Café opens"],
        "diacritics fold"
    );
    assert!(found(&store, a, query("evening")).await.is_empty());
    assert!(found(&store, a, query("!!!")).await.is_empty());
    // Query syntax from users is taken literally, never as operators.
    assert!(found(&store, a, query("meeting OR sun")).await.is_empty());
    assert!(found(&store, a, query("\"unbalanced")).await.is_empty());
}

pub async fn search_chinese_inside_longer_text(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let g = group(&store, a, &[]).await;
    say_all(
        &store,
        g.id,
        a,
        &[
            "大家好，你好吗？",
            "我们的通讯软件很好用",
            "通 讯录 软件",
            "Tidings是一个即时通讯服务",
            "hello 世界",
        ],
    )
    .await;
    assert_eq!(
        found(&store, a, query("你好")).await,
        vec!["大家好，你好吗？"]
    );
    let mut hits = found(&store, a, query("通讯")).await;
    hits.sort();
    assert_eq!(
        hits,
        vec!["Tidings是一个即时通讯服务", "我们的通讯软件很好用"],
        "two characters inside longer text, and beside Latin letters"
    );
    assert_eq!(
        found(&store, a, query("通讯软件")).await,
        vec!["我们的通讯软件很好用"],
        "longer words match only where contiguous"
    );
    assert_eq!(found(&store, a, query("世界")).await, vec!["hello 世界"]);
    assert_eq!(found(&store, a, query("tidings 即时")).await.len(), 1);
    assert_eq!(
        found(&store, a, query("吗")).await.len(),
        1,
        "single characters"
    );
}

pub async fn search_only_what_the_user_can_read(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let outsider = user(&store, "outsider").await;
    let shared = group(&store, a, &[b]).await;
    let private = group(&store, a, &[]).await;
    say_all(&store, shared.id, a, &["secret plans shared"]).await;
    say_all(&store, private.id, a, &["secret plans private"]).await;
    assert_eq!(found(&store, a, query("secret")).await.len(), 2);
    assert_eq!(
        found(&store, b, query("secret")).await,
        vec!["secret plans shared"]
    );
    assert!(found(&store, outsider, query("secret")).await.is_empty());
    store.remove_member(shared.id, b).await.unwrap();
    assert!(
        found(&store, b, query("secret")).await.is_empty(),
        "leaving ends access to the conversation's messages"
    );
}

pub async fn search_filters_and_pages(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let g1 = group(&store, a, &[b]).await;
    let g2 = group(&store, a, &[b]).await;
    say_all(&store, g1.id, a, &["apple one", "apple two", "apple three"]).await;
    say_all(&store, g2.id, b, &["apple four"]).await;
    let mut q = query("apple");
    q.conversation = Some(g2.id);
    assert_eq!(found(&store, a, q).await, vec!["apple four"]);
    let mut q = query("apple");
    q.sender = Some(b);
    assert_eq!(found(&store, a, q).await, vec!["apple four"]);
    let mut q = query("apple");
    q.conversation = Some(g1.id);
    q.since = Some(1_001);
    q.until = Some(1_002);
    assert_eq!(found(&store, a, q).await, vec!["apple two"]);
    // Pages do not overlap and together hold every hit.
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let mut q = query("apple");
        q.limit = 2;
        q.offset = offset;
        seen.extend(found(&store, a, q).await);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["apple four", "apple one", "apple three", "apple two"]
    );
    // Pages of confirmed CJK hits work the same way.
    say_all(&store, g1.id, b, &["通讯软件一", "通讯 软件", "通讯软件二"]).await;
    let mut pages = Vec::new();
    for offset in [0, 1, 2] {
        let mut q = query("通讯软件");
        q.limit = 1;
        q.offset = offset;
        pages.push(found(&store, a, q).await);
    }
    assert_eq!(pages[0].len() + pages[1].len(), 2);
    assert!(pages[2].is_empty());
    assert_ne!(pages[0], pages[1]);
}

pub async fn search_forgets_deleted_and_skips_non_text(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let g = group(&store, a, &[]).await;
    let seqs = say_all(&store, g.id, a, &["remove this word", "keep this word"]).await;
    store
        .append_messages(vec![NewMessage {
            body: MessageBody::Custom {
                app: "x".into(),
                data: serde_json::json!({"text": "word"}),
            },
            ..said(g.id, a, 99, 2_000, "")
        }])
        .await
        .unwrap();
    while store.index_pending(100).await.unwrap() > 0 {}
    assert_eq!(found(&store, a, query("word")).await.len(), 2);
    store
        .change_group(
            GroupChange::DeleteMessage { seq: seqs[0] },
            event(g.id, a, 1, 3_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        found(&store, a, query("word")).await,
        vec!["keep this word"]
    );
    assert!(found(&store, a, query("remove")).await.is_empty());
}

// --- Rich messages ---------------------------------------------------------------------------

/// A message from `from` with this body, as the core would append it.
fn acting(
    conversation: ConversationId,
    from: &Sender,
    client_msg_id: &str,
    ts: i64,
    body: MessageBody,
) -> NewMessage {
    NewMessage {
        body,
        ..text(conversation, from.user, from.device, client_msg_id, ts)
    }
}

async fn message_at(store: &Arc<dyn Store>, conversation: ConversationId, seq: Seq) -> Message {
    let found = store
        .messages_after(conversation, seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "a message at {seq}");
    assert_eq!(found[0].seq, seq);
    found.into_iter().next().unwrap()
}

fn plain(text: &str) -> MessageBody {
    MessageBody::Text { text: text.into() }
}

pub async fn edit_replaces_body_and_keeps_history(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let g = group(&store, a.user, &[]).await;
    let original = append_one(&store, acting(g.id, &a, "m", 1_000, plain("helo wrold"))).await;
    store.index_pending(100).await.unwrap();
    let edit = append_one(
        &store,
        acting(
            g.id,
            &a,
            "e1",
            2_000,
            MessageBody::Edit {
                target: original.message.seq,
                body: Box::new(plain("hello world")),
            },
        ),
    )
    .await;
    assert_eq!(
        edit.message.seq,
        original.message.seq + 1,
        "the edit is an event"
    );
    let now = message_at(&store, g.id, original.message.seq).await;
    assert_eq!(now.body, plain("hello world"));
    assert_eq!(now.edited_at, Some(2_000));
    append_one(
        &store,
        acting(
            g.id,
            &a,
            "e2",
            3_000,
            MessageBody::Edit {
                target: original.message.seq,
                body: Box::new(plain("hello, world")),
            },
        ),
    )
    .await;
    let history = store
        .edit_history(g.id, original.message.seq)
        .await
        .unwrap();
    let bodies: Vec<_> = history.iter().map(|v| (v.ts, v.body.clone())).collect();
    assert_eq!(
        bodies,
        vec![
            (1_000, plain("helo wrold")),
            (2_000, plain("hello world")),
            (3_000, plain("hello, world")),
        ]
    );
    assert!(history.iter().all(|v| v.editor_id == a.user));
    // The search index follows the edit, whether or not the indexer had passed the message.
    while store.index_pending(100).await.unwrap() > 0 {}
    assert!(found(&store, a.user, query("wrold")).await.is_empty());
    assert_eq!(
        found(&store, a.user, query("hello")).await,
        vec!["hello, world"]
    );
    // A message never edited has one version: itself.
    let other = append_one(&store, acting(g.id, &a, "n", 4_000, plain("once"))).await;
    let history = store.edit_history(g.id, other.message.seq).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, plain("once"));
}

pub async fn recall_removes_content_everywhere(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await;
    let mut secret = acting(g.id, &a, "m", 1_000, plain("secret plan"));
    secret.relations.mentions = Some(tidings_proto::Mentions {
        users: vec![b.user],
        all: false,
    });
    let secret = append_one(&store, secret).await.message.seq;
    let at = |n: &str, ts, body| acting(g.id, &a, n, ts, body);
    append(
        &store,
        vec![
            at(
                "e",
                1_100,
                MessageBody::Edit {
                    target: secret,
                    body: Box::new(plain("secret plan v2")),
                },
            ),
            // From the sender: a reaction of b's would move b's read marker past the mention.
            acting(
                g.id,
                &a,
                "r",
                1_200,
                MessageBody::Reaction {
                    target: secret,
                    key: "👍".into(),
                    remove: false,
                },
            ),
            at(
                "p",
                1_300,
                MessageBody::Pin {
                    target: secret,
                    unpin: false,
                },
            ),
        ],
    )
    .await;
    while store.index_pending(100).await.unwrap() > 0 {}
    assert_eq!(found(&store, b.user, query("plan")).await.len(), 1);
    let mentions = |store: Arc<dyn Store>| async move {
        store
            .user_conversation(b.user, g.id)
            .await
            .unwrap()
            .unwrap()
            .mentions
    };
    assert_eq!(mentions(store.clone()).await, 1);
    append_one(
        &store,
        at("x", 2_000, MessageBody::Recall { target: secret }),
    )
    .await;
    let gone = message_at(&store, g.id, secret).await;
    assert_eq!(gone.body, MessageBody::Deleted {});
    assert!(gone.reactions.is_empty() && gone.pinned_at.is_none() && gone.edited_at.is_none());
    assert!(gone.mentions.is_none());
    let edit_event = message_at(&store, g.id, secret + 1).await;
    assert_eq!(
        edit_event.body,
        MessageBody::Deleted {},
        "the edit event carried the text, so it goes too"
    );
    assert!(store.edit_history(g.id, secret).await.unwrap().is_empty());
    assert!(store.reactions(g.id, secret).await.unwrap().is_empty());
    assert!(store.pinned_messages(g.id, 10).await.unwrap().is_empty());
    assert!(found(&store, b.user, query("plan")).await.is_empty());
    assert_eq!(mentions(store.clone()).await, 0);
}

pub async fn reactions_aggregate_per_key(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let c = sender(&store, "c").await;
    let g = group(&store, a.user, &[b.user, c.user]).await;
    let target = append_one(&store, acting(g.id, &a, "m", 1_000, plain("hi")))
        .await
        .message
        .seq;
    let react = |who: &Sender, n: &str, key: &str, remove: bool| {
        acting(
            g.id,
            who,
            n,
            1_100,
            MessageBody::Reaction {
                target,
                key: key.into(),
                remove,
            },
        )
    };
    append(
        &store,
        vec![
            react(&a, "1", "❤", false),
            react(&b, "2", "👍", false),
            react(&c, "3", "👍", false),
            // A second identical reaction changes nothing.
            react(&b, "4", "👍", false),
        ],
    )
    .await;
    let message = message_at(&store, g.id, target).await;
    let summary: Vec<_> = message
        .reactions
        .iter()
        .map(|r| (r.key.as_str(), r.count, r.users.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![("👍", 2, vec![b.user, c.user]), ("❤", 1, vec![a.user]),],
        "most used first"
    );
    append_one(&store, react(&b, "5", "👍", true)).await;
    append_one(&store, react(&a, "6", "❤", true)).await;
    let message = message_at(&store, g.id, target).await;
    assert_eq!(message.reactions.len(), 1);
    assert_eq!(message.reactions[0].count, 1);
    assert_eq!(message.reactions[0].users, vec![c.user]);
    assert_eq!(
        store.reactions(g.id, target).await.unwrap(),
        vec![("👍".to_string(), vec![c.user])]
    );
}

pub async fn threads_and_replies_are_recorded(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await;
    let root = append_one(&store, acting(g.id, &a, "root", 1_000, plain("topic")))
        .await
        .message
        .seq;
    let mut replies = Vec::new();
    for (n, who) in [&b, &a, &b].into_iter().enumerate() {
        let mut reply = acting(
            g.id,
            who,
            &format!("t{n}"),
            2_000 + n as i64,
            plain("in thread"),
        );
        reply.relations.thread_root = Some(root);
        reply.relations.reply_to = Some(root);
        let stored = append_one(&store, reply).await.message;
        assert_eq!(stored.thread_root, Some(root));
        assert_eq!(stored.reply_to, Some(root));
        replies.push(stored.seq);
    }
    append_one(&store, acting(g.id, &a, "main", 3_000, plain("outside"))).await;
    let root_now = message_at(&store, g.id, root).await;
    let thread = root_now.thread.expect("a thread summary");
    assert_eq!(thread.replies, 3);
    assert_eq!(thread.last_seq, replies[2]);
    assert_eq!(thread.last_ts, 2_002);
    let listed: Vec<Seq> = store
        .thread_messages(g.id, root, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(listed, replies);
    let after_first: Vec<Seq> = store
        .thread_messages(g.id, root, replies[0], 1)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(after_first, vec![replies[1]]);
    let reloaded = message_at(&store, g.id, replies[1]).await;
    assert_eq!(reloaded.reply_to, Some(root));
}

pub async fn annotations_do_not_count_as_unread_and_mentions_count(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await;
    let first = append_one(&store, acting(g.id, &a, "1", 1_000, plain("one")))
        .await
        .message
        .seq;
    let mut mention = acting(g.id, &a, "2", 1_001, plain("hey @b"));
    mention.relations.mentions = Some(tidings_proto::Mentions {
        users: vec![b.user],
        all: false,
    });
    append_one(&store, mention).await;
    let mut everyone = acting(g.id, &a, "3", 1_002, plain("hey all"));
    everyone.relations.mentions = Some(tidings_proto::Mentions {
        users: vec![],
        all: true,
    });
    let third = append_one(&store, everyone).await.message.seq;
    append_one(
        &store,
        acting(
            g.id,
            &a,
            "4",
            1_003,
            MessageBody::Reaction {
                target: first,
                key: "👍".into(),
                remove: false,
            },
        ),
    )
    .await;
    let view = store
        .user_conversation(b.user, g.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.unread, 3, "the reaction does not count");
    assert_eq!(view.mentions, 2, "by name and by all");
    assert_eq!(
        view.last_message_seq, third,
        "the reaction is not the last message"
    );
    assert_eq!(view.conversation.last_seq, third + 1);
    let sender_view = store
        .user_conversation(a.user, g.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sender_view.unread, sender_view.mentions), (0, 0));
    // Reading up to the second message leaves one unread and the `all` mention.
    store
        .advance_marker(g.id, b.user, ReceiptKind::Read, first + 1)
        .await
        .unwrap();
    let view = store
        .user_conversation(b.user, g.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.unread, view.mentions), (1, 1));
    // Reading everything, including the reaction event, leaves nothing.
    store
        .advance_marker(g.id, b.user, ReceiptKind::Read, third + 1)
        .await
        .unwrap();
    let view = store
        .user_conversation(b.user, g.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.unread, view.mentions), (0, 0));
    // A member who joins later starts with nothing unread.
    let c = user(&store, "c").await;
    store.add_members(g.id, &[c], 2_000).await.unwrap();
    let view = store.user_conversation(c, g.id).await.unwrap().unwrap();
    assert_eq!((view.unread, view.mentions), (0, 0));
}

pub async fn effect_on_missing_or_recalled_target_fails_alone(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let g = group(&store, a.user, &[]).await;
    let target = append_one(&store, acting(g.id, &a, "m", 1_000, plain("x")))
        .await
        .message
        .seq;
    append_one(
        &store,
        acting(g.id, &a, "r", 1_001, MessageBody::Recall { target }),
    )
    .await;
    let results = store
        .append_messages(vec![
            acting(g.id, &a, "1", 1_002, plain("before")),
            acting(
                g.id,
                &a,
                "2",
                1_003,
                MessageBody::Reaction {
                    target: 999,
                    key: "x".into(),
                    remove: false,
                },
            ),
            acting(
                g.id,
                &a,
                "3",
                1_004,
                MessageBody::Edit {
                    target,
                    body: Box::new(plain("y")),
                },
            ),
            acting(g.id, &a, "4", 1_005, plain("after")),
        ])
        .await
        .unwrap();
    assert!(matches!(results[1], Err(StoreError::NotFound)));
    assert!(matches!(results[2], Err(StoreError::Conflict("deleted"))));
    let first = results[0].as_ref().unwrap().message.seq;
    let last = results[3].as_ref().unwrap().message.seq;
    assert_eq!(last, first + 1, "refused items take no sequence");
    assert!(store.edit_history(g.id, target).await.unwrap().is_empty());
}

pub async fn conversation_settings_round_trip(store: Arc<dyn Store>) {
    use tidings_proto::rest::{NotifyLevel, UpdateConversationSettingsRequest};
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let g = group(&store, a.user, &[b]).await;
    let view = store.user_conversation(b, g.id).await.unwrap().unwrap();
    assert_eq!(view.settings, Default::default());
    let changed = store
        .update_conversation_settings(
            g.id,
            b,
            UpdateConversationSettingsRequest {
                notify: Some(NotifyLevel::Mentions),
                pinned: Some(true),
                archived: Some(true),
                marked_unread: Some(true),
            },
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(changed.notify, NotifyLevel::Mentions);
    assert_eq!(changed.pinned_at, Some(5_000));
    assert!(changed.archived && changed.marked_unread);
    // Pinning again keeps the first pin time; other fields stay as they were.
    let again = store
        .update_conversation_settings(
            g.id,
            b,
            UpdateConversationSettingsRequest {
                pinned: Some(true),
                ..Default::default()
            },
            6_000,
        )
        .await
        .unwrap();
    assert_eq!(again, changed);
    let view = store.user_conversation(b, g.id).await.unwrap().unwrap();
    assert_eq!(view.settings, changed);
    assert_eq!(
        store
            .user_conversation(a.user, g.id)
            .await
            .unwrap()
            .unwrap()
            .settings,
        Default::default(),
        "settings are per member"
    );
    // Reading clears the unread mark.
    append_one(&store, acting(g.id, &a, "m", 7_000, plain("x"))).await;
    store
        .advance_marker(g.id, b, ReceiptKind::Read, 1)
        .await
        .unwrap();
    assert!(
        !store
            .user_conversation(b, g.id)
            .await
            .unwrap()
            .unwrap()
            .settings
            .marked_unread
    );
    let unpinned = store
        .update_conversation_settings(
            g.id,
            b,
            UpdateConversationSettingsRequest {
                pinned: Some(false),
                ..Default::default()
            },
            8_000,
        )
        .await
        .unwrap();
    assert_eq!(unpinned.pinned_at, None);
    let stranger = user(&store, "c").await;
    assert!(matches!(
        store
            .update_conversation_settings(g.id, stranger, Default::default(), 1)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn retention_prunes_oldest_and_keeps_sequence(store: Arc<dyn Store>) {
    use crate::{Prune, Retention};
    let a = sender(&store, "a").await;
    let g = group(&store, a.user, &[]).await;
    let h = group(&store, a.user, &[]).await;
    let batch: Vec<_> = (0..10)
        .map(|n| acting(g.id, &a, &format!("g{n}"), 1_000 + n, plain("old words")))
        .collect();
    append(&store, batch).await;
    let first = store.messages_after(g.id, 0, 1).await.unwrap()[0].seq;
    append_one(
        &store,
        acting(
            g.id,
            &a,
            "react",
            1_100,
            MessageBody::Reaction {
                target: first,
                key: "x".into(),
                remove: false,
            },
        ),
    )
    .await;
    while store.index_pending(100).await.unwrap() > 0 {}
    // Keep the last 4 of 11; at most 5 go per call.
    let keep = Prune {
        before_ts: None,
        keep_last: Some(4),
    };
    assert_eq!(store.prune_conversation(g.id, keep, 5).await.unwrap(), 5);
    assert_eq!(store.prune_conversation(g.id, keep, 5).await.unwrap(), 2);
    assert_eq!(store.prune_conversation(g.id, keep, 5).await.unwrap(), 0);
    let left: Vec<Seq> = store
        .messages_after(g.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, vec![8, 9, 10, 11]);
    assert!(store.reactions(g.id, first).await.unwrap().is_empty());
    assert_eq!(found(&store, a.user, query("old")).await.len(), 3);
    // New messages continue the sequence.
    let next = append_one(&store, acting(g.id, &a, "new", 5_000, plain("new")))
        .await
        .message;
    assert_eq!(next.seq, 12);
    // Age: everything before ts 1_008 goes from the whole store.
    append_one(&store, acting(h.id, &a, "h", 1_001, plain("h old"))).await;
    append_one(&store, acting(h.id, &a, "h2", 9_000, plain("h new"))).await;
    let gone = store.prune_before(1_009, 100).await.unwrap();
    // Ids 8 and 9 (ts 1_007 and 1_008) go; the pass stops at the first younger message, so
    // h's old one (a larger id) waits for a later pass.
    assert_eq!(gone, 2);
    // A conversation's own retention is stored and listed.
    let policy = Retention {
        max_age_ms: Some(86_400_000),
        keep_last: Some(100),
    };
    store.set_retention(h.id, policy).await.unwrap();
    assert_eq!(store.retention(h.id).await.unwrap(), policy);
    assert_eq!(store.retention(g.id).await.unwrap(), Retention::default());
    assert_eq!(
        store.retentions(ConversationId(0), 10).await.unwrap(),
        vec![(h.id, policy)]
    );
    store
        .set_retention(h.id, Retention::default())
        .await
        .unwrap();
    assert!(
        store
            .retentions(ConversationId(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The newest message of the store is never deleted.
    assert_eq!(store.prune_before(i64::MAX, 100).await.unwrap(), 4);
    let newest_left = store.messages_after(h.id, 0, 10).await.unwrap();
    assert_eq!(newest_left.len(), 1);
}

pub async fn hidden_messages_are_per_member(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = user(&store, "b").await;
    let g = group(&store, a.user, &[b]).await;
    let seqs: Vec<Seq> = append(
        &store,
        (0..4)
            .map(|n| acting(g.id, &a, &format!("m{n}"), 1_000 + n, plain("x")))
            .collect(),
    )
    .await
    .iter()
    .map(|m| m.message.seq)
    .collect();
    store.hide_message(b, g.id, seqs[1]).await.unwrap();
    store.hide_message(b, g.id, seqs[3]).await.unwrap();
    store.hide_message(b, g.id, seqs[3]).await.unwrap();
    assert_eq!(
        store
            .hidden_messages(b, g.id, seqs[0], seqs[3])
            .await
            .unwrap(),
        vec![seqs[1], seqs[3]]
    );
    assert_eq!(
        store
            .hidden_messages(b, g.id, seqs[2], seqs[2])
            .await
            .unwrap(),
        Vec::<Seq>::new()
    );
    assert!(
        store
            .hidden_messages(a.user, g.id, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "hiding is per member"
    );
    assert!(matches!(
        store.hide_message(b, g.id, 999).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn threads_list_with_unread_per_member(store: Arc<dyn Store>) {
    let a = sender(&store, "a").await;
    let b = sender(&store, "b").await;
    let g = group(&store, a.user, &[b.user]).await;
    let first = append_one(&store, acting(g.id, &a, "r1", 1_000, plain("one")))
        .await
        .message
        .seq;
    let second = append_one(&store, acting(g.id, &a, "r2", 1_001, plain("two")))
        .await
        .message
        .seq;
    let reply = |who: &Sender, n: &str, root: Seq| {
        let mut m = acting(g.id, who, n, 2_000, plain("reply"));
        m.relations.thread_root = Some(root);
        m
    };
    let mine = append_one(&store, reply(&b, "b1", first)).await.message.seq;
    append_one(&store, reply(&a, "a1", first)).await;
    append_one(&store, reply(&a, "a2", second)).await;
    let last = append_one(&store, reply(&a, "a3", first)).await.message.seq;
    let threads = store.threads(g.id, b.user, 10).await.unwrap();
    let view: Vec<_> = threads.iter().map(|t| (t.root.seq, t.unread)).collect();
    assert_eq!(
        view,
        vec![(first, 2), (second, 1)],
        "newest activity first; b's own reply is not unread"
    );
    store
        .mark_thread_read(g.id, first, b.user, mine + 1)
        .await
        .unwrap();
    // Read positions never move back.
    store
        .mark_thread_read(g.id, first, b.user, 1)
        .await
        .unwrap();
    let threads = store.threads(g.id, b.user, 1).await.unwrap();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].root.seq, first);
    assert_eq!(threads[0].unread, 1);
    assert_eq!(threads[0].read_seq, mine + 1);
    assert!(last > mine + 1);
    let for_a = store.threads(g.id, a.user, 10).await.unwrap();
    assert_eq!(
        for_a.iter().map(|t| t.unread).collect::<Vec<_>>(),
        vec![1, 0]
    );
}

// --- Audit log and administration ------------------------------------------------------------

pub async fn audit_chain_is_continuous_across_appends_and_actions(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    assert_eq!(verify(&store).await, 0, "an empty log verifies");
    let first = store
        .append_audit(entry("sign_in.failure", 1_000, None, Some(alice)))
        .await
        .unwrap();
    assert_eq!(first, 1, "ids start at 1");
    store
        .set_suspended(
            alice,
            true,
            1_100,
            entry("user.suspend", 1_100, None, Some(alice)),
        )
        .await
        .unwrap();
    store
        .append_audit(entry("user.suspend", 1_200, Some(alice), None))
        .await
        .unwrap();
    let records = all_entries(&store, &AuditFilter::default()).await;
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(records[1].entry.kind, "user.suspend");
    assert_eq!(records[1].entry.address.as_deref(), Some("192.0.2.1"));
    assert_eq!(records[1].entry.detail, serde_json::json!({"n": 1_100}));
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(verify(&store).await, 3);
}

pub async fn audit_filters_and_paging(store: Arc<dyn Store>) {
    let (a, b) = (UserId(1), UserId(2));
    for (i, (kind, actor, target)) in [
        ("x", Some(a), Some(b)),
        ("y", Some(b), Some(a)),
        ("x", None, Some(b)),
        ("z", Some(a), None),
        ("x", Some(a), Some(a)),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .append_audit(entry(kind, 1_000 + i as i64 * 100, actor, target))
            .await
            .unwrap();
    }
    let ids = |records: Vec<AuditRecord>| records.iter().map(|r| r.id).collect::<Vec<_>>();
    let filter = |actor, target, kind: Option<&str>, since, until| AuditFilter {
        actor,
        target_user: target,
        kind: kind.map(str::to_owned),
        since,
        until,
    };
    for (f, want) in [
        (filter(Some(a), None, None, None, None), vec![1, 4, 5]),
        (filter(None, Some(b), None, None, None), vec![1, 3]),
        (filter(None, None, Some("x"), None, None), vec![1, 3, 5]),
        (filter(Some(a), None, Some("x"), None, None), vec![1, 5]),
        (filter(None, Some(a), Some("x"), None, None), vec![5]),
        (
            filter(None, None, None, Some(1_100), Some(1_300)),
            vec![2, 3],
        ),
        (filter(None, None, Some("x"), Some(1_100), None), vec![3, 5]),
        (filter(Some(a), None, None, None, Some(1_400)), vec![1, 4]),
        (filter(None, None, None, Some(9_000), None), vec![]),
    ] {
        assert_eq!(ids(all_entries(&store, &f).await), want, "{f:?}");
    }
    // Paging: `after` is exclusive and `limit` is honoured.
    let page = store
        .audit_entries(&filter(Some(a), None, None, None, None), Some(1), 1)
        .await
        .unwrap();
    assert_eq!(ids(page), vec![4]);
    let page = store
        .audit_entries(&AuditFilter::default(), Some(2), 2)
        .await
        .unwrap();
    assert_eq!(ids(page), vec![3, 4]);
}

pub async fn audit_prune_keeps_the_chain_verifiable(store: Arc<dyn Store>) {
    for i in 0..6 {
        store
            .append_audit(entry("k", 1_000 + i * 100, None, None))
            .await
            .unwrap();
    }
    let before = all_entries(&store, &AuditFilter::default()).await;
    let signed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = signed.clone();
    let checkpoint = store
        .prune_audit(
            1_250,
            5_000,
            Box::new(move |message: &[u8]| {
                seen.lock().unwrap().push(message.to_vec());
                ("key-1".to_owned(), b"signature".to_vec())
            }),
        )
        .await
        .unwrap()
        .expect("entries older than the cut exist");
    // Entries 1..=3 (ts 1000, 1100, 1200) are gone; the checkpoint names the last of them.
    assert_eq!(checkpoint.last_id, 3);
    assert_eq!(checkpoint.last_hash, before[2].hash);
    assert_eq!(checkpoint.pruned, 3);
    assert_eq!(checkpoint.created_at, 5_000);
    assert_eq!(
        signed.lock().unwrap().as_slice(),
        &[checkpoint_message(3, &before[2].hash, 3, 5_000)]
    );
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![checkpoint.clone()]
    );
    let left = all_entries(&store, &AuditFilter::default()).await;
    assert_eq!(left.first().map(|r| r.id), Some(4));
    assert_eq!(verify(&store).await, 3);
    // Nothing older than the cut: no checkpoint.
    let none = store
        .prune_audit(
            1_250,
            5_100,
            Box::new(|_: &[u8]| (String::new(), Vec::new())),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    // Pruning everything, then appending: the new entry chains from the checkpoint.
    store
        .prune_audit(99_999, 6_000, Box::new(|_: &[u8]| ("k".into(), vec![1])))
        .await
        .unwrap()
        .unwrap();
    assert!(
        all_entries(&store, &AuditFilter::default())
            .await
            .is_empty()
    );
    let id = store
        .append_audit(entry("after", 7_000, None, None))
        .await
        .unwrap();
    assert_eq!(id, 7, "ids continue after a prune");
    assert_eq!(store.audit_checkpoints().await.unwrap().len(), 2);
    assert_eq!(verify(&store).await, 1);
}

pub async fn failed_actions_write_no_audit_entry(store: Arc<dyn Store>) {
    let unknown = UserId(999);
    let audit = || entry("x", 1_000, None, Some(unknown));
    assert!(matches!(
        store.set_suspended(unknown, true, 1_000, audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_admin(unknown, true, audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_user(unknown, 1_000, false, audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .sign_in(unknown, "x", [1; 32], 9_000, 1_000, audit())
            .await,
        Err(StoreError::NotFound)
    ));
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    assert!(
        !store
            .revoke_device(unknown, phone, 1_000, Some(audit()))
            .await
            .unwrap()
    );
    assert!(
        all_entries(&store, &AuditFilter::default())
            .await
            .is_empty()
    );
    // A rotation without reuse writes nothing either; a reuse writes its entry.
    store
        .insert_refresh_token(token(1, alice, phone, 9_000))
        .await
        .unwrap();
    let rotated = store
        .rotate_refresh_token([1; 32], token(2, alice, phone, 9_000), 2_000, audit())
        .await
        .unwrap();
    assert!(matches!(rotated, RotateOutcome::Rotated { .. }));
    assert!(
        all_entries(&store, &AuditFilter::default())
            .await
            .is_empty()
    );
    store
        .rotate_refresh_token([1; 32], token(3, alice, phone, 9_000), 2_100, reuse_entry())
        .await
        .unwrap();
    let entries = all_entries(&store, &AuditFilter::default()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.kind, "token.reuse");
}

pub async fn sign_in_creates_device_token_and_entry(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let device = store
        .sign_in(
            alice,
            "phone",
            [7; 32],
            9_000,
            2_000,
            entry("sign_in.success", 2_000, Some(alice), None),
        )
        .await
        .unwrap();
    assert_eq!(device.user_id, alice);
    assert_eq!(device.name, "phone");
    assert_eq!(
        store.refresh_token_device([7; 32]).await.unwrap(),
        Some(device.id)
    );
    assert_eq!(store.devices_of(alice).await.unwrap().len(), 1);
    let entries = all_entries(&store, &AuditFilter::default()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.actor, Some(alice));
    // Suspended and deleted users cannot sign in.
    store
        .set_suspended(alice, true, 2_100, entry("s", 2_100, None, Some(alice)))
        .await
        .unwrap();
    assert!(matches!(
        store
            .sign_in(
                alice,
                "x",
                [8; 32],
                9_000,
                2_200,
                entry("x", 2_200, None, None)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let bob = user(&store, "bob").await;
    store
        .delete_user(bob, 2_300, false, entry("d", 2_300, None, Some(bob)))
        .await
        .unwrap();
    assert!(matches!(
        store
            .sign_in(
                bob,
                "x",
                [9; 32],
                9_000,
                2_400,
                entry("x", 2_400, None, None)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.refresh_token_device([8; 32]).await.unwrap(), None);
}

pub async fn suspend_signs_out_and_reactivate_restores(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let d1 = device(&store, alice).await;
    let d2 = device(&store, alice).await;
    store
        .insert_refresh_token(token(1, alice, d1, 9_000))
        .await
        .unwrap();
    let revoked = store
        .set_suspended(
            alice,
            true,
            2_000,
            entry("user.suspend", 2_000, None, Some(alice)),
        )
        .await
        .unwrap();
    assert_eq!(set(revoked), set([d1, d2]));
    assert!(store.devices_of(alice).await.unwrap().is_empty());
    assert_eq!(store.refresh_token_device([1; 32]).await.unwrap(), None);
    let record = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(record.disabled);
    assert!(record.deleted_at.is_none());
    let revoked = store
        .set_suspended(
            alice,
            false,
            3_000,
            entry("user.reactivate", 3_000, None, Some(alice)),
        )
        .await
        .unwrap();
    assert!(revoked.is_empty());
    assert!(!store.user_by_id(alice).await.unwrap().unwrap().disabled);
    let kinds: Vec<String> = all_entries(&store, &AuditFilter::default())
        .await
        .into_iter()
        .map(|r| r.entry.kind)
        .collect();
    assert_eq!(kinds, vec!["user.suspend", "user.reactivate"]);
}

pub async fn admin_role_changes(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    assert!(!store.user_by_id(alice).await.unwrap().unwrap().is_admin);
    let grant = || entry("role.grant_admin", 2_000, None, Some(alice));
    assert!(store.set_admin(alice, true, grant()).await.unwrap());
    assert!(
        !store.set_admin(alice, true, grant()).await.unwrap(),
        "already an admin"
    );
    assert!(store.user_by_id(alice).await.unwrap().unwrap().is_admin);
    assert!(store.user_by_name("alice").await.unwrap().unwrap().is_admin);
    assert!(store.set_admin(alice, false, grant()).await.unwrap());
    assert!(!store.user_by_id(alice).await.unwrap().unwrap().is_admin);
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 3);
}

pub async fn replace_password_signs_out_others(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let keep = device(&store, alice).await;
    let other = device(&store, alice).await;
    let revoked = store
        .replace_password(
            alice,
            "new-hash",
            Some(keep),
            2_000,
            entry("password.change", 2_000, Some(alice), None),
        )
        .await
        .unwrap();
    assert_eq!(revoked, vec![other]);
    assert_eq!(
        store
            .user_by_id(alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
    assert_eq!(store.devices_of(alice).await.unwrap().len(), 1);
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 1);
    assert!(matches!(
        store
            .replace_password(UserId(999), "h", None, 2_000, entry("p", 2_000, None, None))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 1);
}

pub async fn delete_user_keeps_or_tombstones_messages(store: Arc<dyn Store>) {
    let alice = sender(&store, "alice").await;
    let bob = sender(&store, "bob").await;
    let carol = sender(&store, "carol").await;
    let g = group(&store, alice.user, &[bob.user, carol.user]).await;
    append(
        &store,
        vec![
            text(g.id, bob.user, bob.device, "b1", 1_100),
            text(g.id, carol.user, carol.device, "c1", 1_200),
            text(g.id, bob.user, bob.device, "b2", 1_300),
        ],
    )
    .await;
    store
        .set_profile(bob.user, "Bob B.", "around", 1_400)
        .await
        .unwrap();
    store.set_last_seen(bob.user, 1_500).await.unwrap();
    // Keep: bob leaves every conversation, his messages stay as they were.
    let deleted = store
        .delete_user(
            bob.user,
            2_000,
            false,
            entry("user.delete", 2_000, None, Some(bob.user)),
        )
        .await
        .unwrap();
    assert_eq!(deleted.devices, vec![bob.device]);
    assert_eq!(deleted.conversations, vec![g.id]);
    assert_eq!(deleted.messages_removed, 0);
    assert!(store.member(g.id, bob.user).await.unwrap().is_none());
    assert_eq!(store.members(g.id).await.unwrap().len(), 2);
    let record = store.user_by_id(bob.user).await.unwrap().unwrap();
    assert_eq!(record.deleted_at, Some(2_000));
    assert!(record.disabled);
    let history = store.messages_after(g.id, 0, 10).await.unwrap();
    assert!(history.iter().all(|m| m.body.kind() == "text"));
    let profile = store.profile(bob.user).await.unwrap().unwrap();
    assert_eq!(
        (profile.display_name.as_str(), profile.status_text.as_str()),
        ("", "")
    );
    assert!(store.last_seen(&[bob.user]).await.unwrap().is_empty());
    // Deleting twice is NotFound; the name stays taken.
    assert!(matches!(
        store
            .delete_user(bob.user, 2_100, false, entry("d", 2_100, None, None))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create_user("bob", HASH, 2_200).await,
        Err(StoreError::Conflict("username"))
    ));
    // Remove: carol's messages become tombstones in place; others' are untouched.
    let deleted = store
        .delete_user(
            carol.user,
            3_000,
            true,
            entry("user.delete", 3_000, None, Some(carol.user)),
        )
        .await
        .unwrap();
    assert_eq!(deleted.messages_removed, 1);
    let history = store.messages_after(g.id, 0, 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| (m.seq, m.body.kind()))
            .collect::<Vec<_>>(),
        vec![(1, "text"), (2, "deleted"), (3, "text")]
    );
    assert_eq!(history[1].body, MessageBody::Deleted {});
    assert_eq!(history[1].sender_id, carol.user);
    assert_eq!(store.members(g.id).await.unwrap().len(), 1);
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 2);
}

pub async fn find_users_by_prefix_includes_suspended(store: Arc<dyn Store>) {
    let anna = user(&store, "anna").await;
    let andy = user(&store, "andy").await;
    let bert = user(&store, "bert").await;
    store
        .set_suspended(andy, true, 2_000, entry("s", 2_000, None, Some(andy)))
        .await
        .unwrap();
    let ids = |users: Vec<crate::UserRecord>| users.iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.find_users("an", None, 10).await.unwrap()),
        vec![anna, andy]
    );
    assert_eq!(
        ids(store.find_users("AN", Some(anna), 10).await.unwrap()),
        vec![andy]
    );
    assert_eq!(
        ids(store.find_users("", None, 10).await.unwrap()),
        vec![anna, andy, bert]
    );
    assert_eq!(
        ids(store.find_users("", None, 1).await.unwrap()),
        vec![anna]
    );
    assert!(store.find_users("zz", None, 10).await.unwrap().is_empty());
}

// --- Uploads and files -----------------------------------------------------------------------

fn new_upload(id: &str, owner: UserId, length: u64, expires_at: i64) -> UploadRecord {
    UploadRecord {
        id: id.to_owned(),
        owner,
        length,
        offset: 0,
        kind: UploadKind::Single,
        parts: Vec::new(),
        metadata: "filename aGVsbG8udHh0".to_owned(),
        name: "hello.txt".to_owned(),
        created_at: 1_000,
        expires_at,
        file_id: None,
    }
}

fn new_file(id: &str, owner: UserId, sha: u8, size: u64) -> FileRecord {
    FileRecord {
        id: id.to_owned(),
        owner,
        sha256: [sha; 32],
        size,
        content_type: "image/png".to_owned(),
        name: "picture.png".to_owned(),
        created_at: 2_000,
        width: Some(640),
        height: Some(480),
    }
}

pub async fn upload_create_respects_quota(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert!(
        store
            .create_upload(new_upload("u1", alice, 600, 9_000), 1_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_upload(new_upload("u2", alice, 401, 9_000), 1_000)
            .await
            .unwrap(),
        "600 + 401 is over a quota of 1000"
    );
    assert!(
        store.upload("u2").await.unwrap().is_none(),
        "a refused upload stores nothing"
    );
    assert!(
        store
            .create_upload(new_upload("u3", alice, 400, 9_000), 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .create_upload(new_upload("u4", bob, 1_000, 9_000), 1_000)
            .await
            .unwrap()
    );
    assert_eq!(store.storage_usage(alice).await.unwrap(), 1_000);
    assert_eq!(store.storage_usage(bob).await.unwrap(), 1_000);
    assert!(
        matches!(
            store
                .create_upload(new_upload("u1", bob, 1, 9_000), u64::MAX)
                .await,
            Err(StoreError::Conflict("upload"))
        ),
        "ids are unique"
    );
    let stored = store.upload("u1").await.unwrap().unwrap();
    assert_eq!(stored, new_upload("u1", alice, 600, 9_000));
    assert!(store.delete_upload("u1").await.unwrap());
    assert!(!store.delete_upload("u1").await.unwrap());
    assert_eq!(store.storage_usage(alice).await.unwrap(), 400);
}

pub async fn upload_advance_is_compare_and_set(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    store
        .create_upload(new_upload("u1", alice, 100, 9_000), u64::MAX)
        .await
        .unwrap();
    assert!(store.advance_upload("u1", 0, 40).await.unwrap());
    assert!(
        !store.advance_upload("u1", 0, 50).await.unwrap(),
        "the offset is no longer 0"
    );
    assert!(
        !store.advance_upload("u1", 40, 101).await.unwrap(),
        "never past the length"
    );
    assert!(store.advance_upload("u1", 40, 100).await.unwrap());
    assert_eq!(store.upload("u1").await.unwrap().unwrap().offset, 100);
    assert!(!store.advance_upload("nope", 0, 1).await.unwrap());
}

pub async fn upload_expiry_lists_only_expired(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    for (id, expires_at) in [("late", 5_000), ("early", 3_000), ("later", 9_000)] {
        store
            .create_upload(new_upload(id, alice, 1, expires_at), u64::MAX)
            .await
            .unwrap();
    }
    let ids = |list: Vec<UploadRecord>| list.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.expired_uploads(5_000, 10).await.unwrap()),
        ["early", "late"]
    );
    assert_eq!(
        ids(store.expired_uploads(5_000, 1).await.unwrap()),
        ["early"]
    );
    assert!(store.expired_uploads(2_999, 10).await.unwrap().is_empty());
}

pub async fn upload_complete_dedups_blobs_and_consumes_parts(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    for part in ["p1", "p2"] {
        let mut upload = new_upload(part, alice, 50, 9_000);
        upload.kind = UploadKind::Partial;
        store.create_upload(upload, u64::MAX).await.unwrap();
    }
    let mut last = new_upload("final", alice, 100, 9_000);
    last.kind = UploadKind::Final;
    last.parts = vec!["p1".to_owned(), "p2".to_owned()];
    store.create_upload(last.clone(), u64::MAX).await.unwrap();
    assert_eq!(
        store.upload("final").await.unwrap().unwrap().parts,
        last.parts
    );
    let parts = ["p1".to_owned(), "p2".to_owned()];
    assert!(
        store
            .complete_upload("final", &parts, new_file("f1", alice, 7, 100))
            .await
            .unwrap(),
        "the first reference to these bytes"
    );
    assert!(
        store.upload("p1").await.unwrap().is_none(),
        "parts are consumed"
    );
    assert!(store.upload("p2").await.unwrap().is_none());
    let done = store.upload("final").await.unwrap().unwrap();
    assert_eq!((done.offset, done.file_id.as_deref()), (100, Some("f1")));
    assert_eq!(
        store.storage_usage(alice).await.unwrap(),
        100,
        "the file, not the upload"
    );
    assert!(
        matches!(
            store
                .complete_upload("final", &[], new_file("f9", alice, 7, 100))
                .await,
            Err(StoreError::NotFound)
        ),
        "an upload completes once"
    );
    assert!(store.file("f9").await.unwrap().is_none());

    store
        .create_upload(new_upload("same", bob, 100, 9_000), u64::MAX)
        .await
        .unwrap();
    assert!(
        !store
            .complete_upload("same", &[], new_file("f2", bob, 7, 100))
            .await
            .unwrap(),
        "the same bytes are already stored"
    );
    assert_eq!(
        store.file("f1").await.unwrap().unwrap(),
        new_file("f1", alice, 7, 100)
    );
    assert_eq!(store.file("f2").await.unwrap().unwrap().owner, bob);
    assert!(matches!(
        store
            .complete_upload("missing", &[], new_file("f3", bob, 8, 1))
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn file_delete_reports_last_reference(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    for (upload, file) in [("u1", "f1"), ("u2", "f2")] {
        store
            .create_upload(new_upload(upload, alice, 10, 9_000), u64::MAX)
            .await
            .unwrap();
        store
            .complete_upload(upload, &[], new_file(file, alice, 3, 10))
            .await
            .unwrap();
    }
    let (record, last) = store.delete_file("f1").await.unwrap().unwrap();
    assert_eq!(
        (record.id.as_str(), last),
        ("f1", false),
        "f2 still refers to the bytes"
    );
    assert!(store.delete_file("f1").await.unwrap().is_none());
    let (_, last) = store.delete_file("f2").await.unwrap().unwrap();
    assert!(last, "the last reference");
    // The bytes may be stored again from scratch.
    store
        .create_upload(new_upload("u3", alice, 10, 9_000), u64::MAX)
        .await
        .unwrap();
    assert!(
        store
            .complete_upload("u3", &[], new_file("f3", alice, 3, 10))
            .await
            .unwrap()
    );
}

pub async fn file_access_for_owner_and_share_members(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    store
        .create_upload(new_upload("u1", alice, 10, 9_000), u64::MAX)
        .await
        .unwrap();
    store
        .complete_upload("u1", &[], new_file("f1", alice, 1, 10))
        .await
        .unwrap();
    assert!(
        store.can_read_file("f1", alice).await.unwrap(),
        "the owner reads"
    );
    assert!(!store.can_read_file("f1", bob).await.unwrap());
    let (direct, _) = store.get_or_create_direct(alice, bob, 1_000).await.unwrap();
    assert!(store.share_file("f1", direct.id).await.unwrap());
    assert!(
        store.share_file("f1", direct.id).await.unwrap(),
        "sharing twice is fine"
    );
    assert!(
        store.can_read_file("f1", bob).await.unwrap(),
        "a member of the conversation"
    );
    assert!(
        !store.can_read_file("f1", carol).await.unwrap(),
        "not a member"
    );
    assert!(
        !store.share_file("nope", direct.id).await.unwrap(),
        "no such file"
    );
    assert!(!store.can_read_file("nope", alice).await.unwrap());
    store.remove_member(direct.id, bob).await.unwrap();
    assert!(
        !store.can_read_file("f1", bob).await.unwrap(),
        "access ends with membership"
    );
}

pub async fn avatars_are_readable_by_everyone(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let carol = user(&store, "carol").await;
    for (upload, file) in [("u1", "f1"), ("u2", "f2")] {
        store
            .create_upload(new_upload(upload, alice, 10, 9_000), u64::MAX)
            .await
            .unwrap();
        store
            .complete_upload(upload, &[], new_file(file, alice, 1, 10))
            .await
            .unwrap();
    }
    assert!(!store.can_read_file("f1", carol).await.unwrap());
    store.set_avatar(alice, "f1", 2_000).await.unwrap();
    assert_eq!(store.profile(alice).await.unwrap().unwrap().avatar, "f1");
    assert!(
        store.can_read_file("f1", carol).await.unwrap(),
        "a user's avatar is public"
    );
    // Setting the avatar keeps the rest of the profile.
    store
        .set_profile(alice, "Alice", "hi", 2_100)
        .await
        .unwrap();
    store.set_avatar(alice, "", 2_200).await.unwrap();
    let profile = store.profile(alice).await.unwrap().unwrap();
    assert_eq!(
        (profile.display_name.as_str(), profile.avatar.as_str()),
        ("Alice", "")
    );
    assert!(!store.can_read_file("f1", carol).await.unwrap());
    // A group's avatar is public too.
    let g = group(&store, alice, &[]).await;
    store
        .change_group(
            GroupChange::UpdateInfo {
                title: None,
                description: None,
                avatar: Some("f2".into()),
                announcement: None,
                join_approval: None,
            },
            event(g.id, alice, 1, 3_000),
            None,
        )
        .await
        .unwrap();
    assert!(store.can_read_file("f2", carol).await.unwrap());
    assert!(matches!(
        store.set_avatar(UserId(999_999), "f1", 1).await,
        Err(StoreError::NotFound)
    ));
}

// --- OAuth clients and authorization codes ---------------------------------------------------

fn oauth_client(id: &str, secret: Option<[u8; 32]>) -> OAuthClientRecord {
    OAuthClientRecord {
        client_id: id.to_owned(),
        name: format!("App {id}"),
        secret_hash: secret,
        redirect_uris: vec![
            "https://app.example/cb".into(),
            "http://127.0.0.1:9/cb".into(),
        ],
        scope: "messages:read profile".into(),
        created_at: 1_000,
        bot: None,
    }
}

fn code(n: u8, client: &str, user: UserId, expires_at: i64) -> AuthorizationCodeRecord {
    AuthorizationCodeRecord {
        code_hash: [n; 32],
        client_id: client.to_owned(),
        user_id: user,
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scope: "profile".into(),
        expires_at,
    }
}

pub async fn oauth_clients_register_list_delete(store: Arc<dyn Store>) {
    let before = all_entries(&store, &AuditFilter::default()).await.len();
    let confidential = oauth_client("bot", Some([7; 32]));
    let public = oauth_client("app", None);
    store
        .create_oauth_client(
            confidential.clone(),
            entry("oauth_client.add", 1_000, None, None),
        )
        .await
        .unwrap();
    store
        .create_oauth_client(public.clone(), entry("oauth_client.add", 1_001, None, None))
        .await
        .unwrap();
    let again = store
        .create_oauth_client(public.clone(), entry("oauth_client.add", 1_002, None, None))
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict("client_id"))),
        "a taken client id is Conflict(\"client_id\"), got {again:?}"
    );
    assert_eq!(
        all_entries(&store, &AuditFilter::default()).await.len(),
        before + 2,
        "each registration writes its entry; the refused one none"
    );
    assert_eq!(
        store.oauth_client("bot").await.unwrap(),
        Some(confidential.clone())
    );
    assert_eq!(
        store.oauth_client("app").await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(store.oauth_client("nobody").await.unwrap(), None);
    assert_eq!(
        store.oauth_clients(None, 10).await.unwrap(),
        vec![public.clone(), confidential.clone()],
        "listed in id order"
    );
    assert_eq!(
        store.oauth_clients(Some("app"), 10).await.unwrap(),
        vec![confidential.clone()]
    );
    assert_eq!(store.oauth_clients(None, 1).await.unwrap(), vec![public]);

    let deleted = store
        .delete_oauth_client(
            "app",
            2_000,
            entry("oauth_client.remove", 2_000, None, None),
        )
        .await
        .unwrap();
    assert!(deleted.is_empty(), "no device was signed in through it");
    assert_eq!(store.oauth_client("app").await.unwrap(), None);
    let unknown = store
        .delete_oauth_client(
            "app",
            2_000,
            entry("oauth_client.remove", 2_000, None, None),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound)),
        "got {unknown:?}"
    );
    assert_eq!(
        store.oauth_clients(None, 10).await.unwrap(),
        vec![confidential]
    );
}

pub async fn oauth_codes_are_single_use_and_expire(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    store
        .create_oauth_client(oauth_client("app", None), entry("k", 1_000, None, None))
        .await
        .unwrap();
    store
        .create_authorization_code(code(1, "app", alice, 5_000), 1_000)
        .await
        .unwrap();
    store
        .create_authorization_code(code(2, "app", alice, 3_000), 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.take_authorization_code([1; 32], 2_000).await.unwrap(),
        Some(code(1, "app", alice, 5_000))
    );
    assert_eq!(
        store.take_authorization_code([1; 32], 2_000).await.unwrap(),
        None,
        "a code is taken once"
    );
    assert_eq!(
        store.take_authorization_code([2; 32], 3_000).await.unwrap(),
        None,
        "an expired code is refused"
    );
    assert_eq!(
        store.take_authorization_code([9; 32], 1_000).await.unwrap(),
        None
    );
    // A code of a removed client is gone with it.
    store
        .create_authorization_code(code(3, "app", alice, 9_000), 2_000)
        .await
        .unwrap();
    store
        .delete_oauth_client("app", 2_500, entry("k", 2_500, None, None))
        .await
        .unwrap();
    assert_eq!(
        store.take_authorization_code([3; 32], 2_600).await.unwrap(),
        None
    );
}

pub async fn oauth_client_devices_record_their_grant(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let phone = device(&store, alice).await;
    store
        .create_oauth_client(oauth_client("app", None), entry("k", 1_000, None, None))
        .await
        .unwrap();
    let grant = DeviceGrant {
        client_id: "app".into(),
        scope: "profile".into(),
    };
    let app_device = store
        .sign_in_client(
            alice,
            "App app",
            grant.clone(),
            [5; 32],
            90_000,
            2_000,
            entry("sign_in", 2_000, Some(alice), Some(alice)),
        )
        .await
        .unwrap();
    assert_eq!(app_device.user_id, alice);
    assert_eq!(app_device.name, "App app");
    assert_eq!(
        store.device_grant(app_device.id).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        store.device_grant(phone).await.unwrap(),
        None,
        "first-party device"
    );
    assert_eq!(
        store.refresh_token_device([5; 32]).await.unwrap(),
        Some(app_device.id)
    );
    let unknown = store
        .sign_in_client(
            alice,
            "x",
            DeviceGrant {
                client_id: "nobody".into(),
                scope: "profile".into(),
            },
            [6; 32],
            90_000,
            2_000,
            entry("sign_in", 2_000, Some(alice), Some(alice)),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound)),
        "got {unknown:?}"
    );
    assert_eq!(store.refresh_token_device([6; 32]).await.unwrap(), None);

    let revoked = store
        .delete_oauth_client("app", 3_000, entry("k", 3_000, None, None))
        .await
        .unwrap();
    assert_eq!(revoked, vec![(alice, app_device.id)]);
    assert_eq!(
        store
            .device(app_device.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(3_000)
    );
    assert_eq!(
        store.refresh_token_device([5; 32]).await.unwrap(),
        None,
        "the removed client's refresh tokens are gone"
    );
    assert_eq!(
        store.device(phone).await.unwrap().unwrap().revoked_at,
        None,
        "other devices stay signed in"
    );
}

pub async fn oauth_bot_clients_bind_an_account_and_device(store: Arc<dyn Store>) {
    let before = all_entries(&store, &AuditFilter::default()).await.len();
    let taken = user(&store, "alice").await;
    let mut bot = oauth_client("bot", Some([7; 32]));
    bot.redirect_uris.clear();
    let created = store
        .create_bot_client(
            bot.clone(),
            "newsbot",
            "!",
            entry("oauth_client.add", 1_000, None, None),
        )
        .await
        .unwrap();
    let binding = created.bot.expect("a bot client is bound to its account");
    assert_eq!(
        OAuthClientRecord {
            bot: None,
            ..created.clone()
        },
        bot
    );
    assert_eq!(
        store.oauth_client("bot").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.oauth_clients(None, 10).await.unwrap(),
        vec![created.clone()]
    );
    let account = store.user_by_id(binding.user_id).await.unwrap().unwrap();
    assert_eq!(account.username, "newsbot");
    assert_eq!(account.password_hash, "!");
    assert_ne!(binding.user_id, taken);
    let device = store.device(binding.device_id).await.unwrap().unwrap();
    assert_eq!(
        (device.user_id, device.name.as_str()),
        (binding.user_id, "App bot")
    );
    assert_eq!(
        store.device_grant(binding.device_id).await.unwrap(),
        Some(DeviceGrant {
            client_id: "bot".into(),
            scope: "messages:read profile".into(),
        })
    );
    assert_eq!(
        all_entries(&store, &AuditFilter::default()).await.len(),
        before + 1
    );

    // A taken username undoes everything: no client, no audit entry.
    let clash = store
        .create_bot_client(
            oauth_client("bot2", Some([8; 32])),
            "alice",
            "!",
            entry("oauth_client.add", 1_001, None, None),
        )
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict("username"))),
        "got {clash:?}"
    );
    assert_eq!(store.oauth_client("bot2").await.unwrap(), None);
    assert_eq!(
        all_entries(&store, &AuditFilter::default()).await.len(),
        before + 1
    );

    // Removing the client signs its device out; the account stays.
    let revoked = store
        .delete_oauth_client("bot", 2_000, entry("k", 2_000, None, None))
        .await
        .unwrap();
    assert_eq!(revoked, vec![(binding.user_id, binding.device_id)]);
    assert!(store.user_by_id(binding.user_id).await.unwrap().is_some());
}

fn device_authorization(n: u8, code: &str, expires_at: i64) -> DeviceAuthorizationRecord {
    DeviceAuthorizationRecord {
        device_code_hash: [n; 32],
        user_code: code.to_owned(),
        client_id: "app".into(),
        scope: "profile".into(),
        expires_at,
        interval_secs: 5,
        last_polled_at: None,
        state: DeviceAuthorizationState::Pending,
    }
}

pub async fn oauth_device_authorizations_are_answered_once(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    store
        .create_oauth_client(oauth_client("app", None), entry("k", 1_000, None, None))
        .await
        .unwrap();
    let first = device_authorization(1, "BCDFGHJK", 100_000);
    store
        .create_device_authorization(first.clone(), 1_000)
        .await
        .unwrap();
    let clash = store
        .create_device_authorization(device_authorization(2, "BCDFGHJK", 100_000), 1_000)
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict("user_code"))),
        "got {clash:?}"
    );
    assert_eq!(
        store.device_authorization("BCDFGHJK", 2_000).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.device_authorization("BCDFGHJL", 2_000).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .device_authorization("BCDFGHJK", 100_000)
            .await
            .unwrap(),
        None,
        "expired"
    );

    // Polls: the first is on time; one 2 s later is early and adds 5 s to the interval; one
    // 10 s after that is on time again.
    let polled = store
        .poll_device_authorization([1; 32], 10_000)
        .await
        .unwrap();
    assert_eq!(polled, Some(first.clone()));
    let polled = store
        .poll_device_authorization([1; 32], 12_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (polled.last_polled_at, polled.interval_secs),
        (Some(10_000), 5)
    );
    let polled = store
        .poll_device_authorization([1; 32], 22_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (polled.last_polled_at, polled.interval_secs),
        (Some(12_000), 10)
    );
    assert_eq!(polled.state, DeviceAuthorizationState::Pending);

    // The answer is given once and collected once.
    assert!(
        store
            .decide_device_authorization(
                "BCDFGHJK",
                DeviceAuthorizationState::Approved(alice),
                23_000
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .decide_device_authorization("BCDFGHJK", DeviceAuthorizationState::Denied, 23_000)
            .await
            .unwrap(),
        "already answered"
    );
    let polled = store
        .poll_device_authorization([1; 32], 40_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(polled.state, DeviceAuthorizationState::Approved(alice));
    assert_eq!(
        store
            .poll_device_authorization([1; 32], 50_000)
            .await
            .unwrap(),
        None,
        "collected"
    );

    // A denial is reported once too.
    store
        .create_device_authorization(device_authorization(3, "CDFGHJKL", 100_000), 1_000)
        .await
        .unwrap();
    assert!(
        store
            .decide_device_authorization("CDFGHJKL", DeviceAuthorizationState::Denied, 2_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .device_authorization("CDFGHJKL", 2_000)
            .await
            .unwrap()
            .unwrap()
            .state,
        DeviceAuthorizationState::Denied
    );
    let polled = store
        .poll_device_authorization([3; 32], 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(polled.state, DeviceAuthorizationState::Denied);
    assert_eq!(
        store
            .poll_device_authorization([3; 32], 9_000)
            .await
            .unwrap(),
        None
    );

    // An expired one cannot be answered, is reported as it was once, then is gone.
    store
        .create_device_authorization(device_authorization(4, "DFGHJKLM", 5_000), 1_000)
        .await
        .unwrap();
    assert!(
        !store
            .decide_device_authorization("DFGHJKLM", DeviceAuthorizationState::Denied, 5_000)
            .await
            .unwrap()
    );
    let polled = store
        .poll_device_authorization([4; 32], 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (polled.expires_at, polled.state),
        (5_000, DeviceAuthorizationState::Pending)
    );
    assert_eq!(
        store
            .poll_device_authorization([4; 32], 7_000)
            .await
            .unwrap(),
        None
    );

    // Removing the client removes its pending authorizations.
    store
        .create_device_authorization(device_authorization(5, "FGHJKLMN", 100_000), 8_000)
        .await
        .unwrap();
    store
        .delete_oauth_client("app", 9_000, entry("k", 9_000, None, None))
        .await
        .unwrap();
    assert_eq!(
        store.device_authorization("FGHJKLMN", 9_000).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .poll_device_authorization([5; 32], 9_000)
            .await
            .unwrap(),
        None
    );
}

// --- Push notifications ----------------------------------------------------------------------

fn web_push(n: u8) -> tidings_proto::push::PushSubscription {
    tidings_proto::push::PushSubscription::WebPush {
        endpoint: format!("https://push.example/{n}"),
        p256dh: "BCVxsr7N".into(),
        auth: "BTBZMqHH".into(),
    }
}

fn push_job(device: DeviceId, key: &str, payload: &str, due_at: i64) -> crate::NewPushJob {
    crate::NewPushJob {
        device_id: device,
        collapse_key: key.into(),
        payload: payload.into(),
        due_at,
    }
}

pub async fn push_subscriptions_follow_their_device(store: Arc<dyn Store>) {
    use tidings_proto::push::{DndWindow, PushSettings};
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let (a1, a2, b1) = (
        device(&store, alice).await,
        device(&store, alice).await,
        device(&store, bob).await,
    );
    // Someone else's device cannot be given a subscription.
    assert!(matches!(
        store.set_push_subscription(alice, b1, web_push(0), 1).await,
        Err(StoreError::NotFound)
    ));
    store
        .set_push_subscription(alice, a1, web_push(1), 1)
        .await
        .unwrap();
    store
        .set_push_subscription(alice, a2, web_push(2), 2)
        .await
        .unwrap();
    store
        .set_push_subscription(bob, b1, web_push(3), 3)
        .await
        .unwrap();
    // Registering again replaces.
    store
        .set_push_subscription(alice, a1, web_push(4), 4)
        .await
        .unwrap();
    let subs = store.push_subscriptions_of(&[alice]).await.unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(
        (subs[0].device_id, &subs[0].subscription, subs[0].created_at),
        (a1, &web_push(4), 4)
    );
    assert_eq!(subs[1].device_id, a2);
    assert_eq!(
        store
            .push_subscriptions_of(&[alice, bob])
            .await
            .unwrap()
            .len(),
        3
    );
    // A conditional delete spares a subscription registered since.
    assert!(
        !store
            .delete_push_subscription(a1, Some(web_push(1)))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_push_subscription(a1, Some(web_push(4)))
            .await
            .unwrap()
    );
    assert!(!store.delete_push_subscription(a1, None).await.unwrap());
    // Revoking a device removes its subscription and its queued pushes.
    store
        .enqueue_push_jobs(vec![push_job(a2, "c1", "{}", 10)])
        .await
        .unwrap();
    assert!(store.revoke_device(alice, a2, 20, None).await.unwrap());
    assert!(
        store
            .push_subscriptions_of(&[alice])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_push_jobs(100, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .set_push_subscription(alice, a2, web_push(5), 30)
            .await,
        Err(StoreError::NotFound)
    ));
    // Settings default, then round-trip.
    assert_eq!(
        store.push_settings(bob).await.unwrap(),
        PushSettings::default()
    );
    let settings = PushSettings {
        muted: false,
        privacy: true,
        dnd: Some(DndWindow {
            start: 1320,
            end: 420,
        }),
        time_zone: Some("Europe/Paris".into()),
    };
    store
        .set_push_settings(bob, settings.clone())
        .await
        .unwrap();
    store
        .set_push_settings(bob, settings.clone())
        .await
        .unwrap();
    assert_eq!(store.push_settings(bob).await.unwrap(), settings);
    assert_eq!(
        store.push_settings(alice).await.unwrap(),
        PushSettings::default()
    );
}

pub async fn push_outbox_records_what_may_notify(store: Arc<dyn Store>) {
    use crate::OutboxItem;
    let alice = sender(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let (direct, _) = store
        .get_or_create_direct(alice.user, bob, 10)
        .await
        .unwrap();
    let item = |seq| OutboxItem {
        conversation_id: direct.id,
        seq,
    };
    // Only the sender can be pushed: nothing is recorded.
    store
        .set_push_subscription(alice.user, alice.device, web_push(7), 1)
        .await
        .unwrap();
    append(
        &store,
        vec![text(direct.id, alice.user, alice.device, "m0", 50)],
    )
    .await;
    assert!(
        store
            .claim_push_outbox(i64::MAX, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no member but the sender has a push subscription"
    );
    let bob_phone = device(&store, bob).await;
    store
        .set_push_subscription(bob, bob_phone, web_push(8), 2)
        .await
        .unwrap();
    let first = append(
        &store,
        vec![
            text(direct.id, alice.user, alice.device, "m1", 100),
            text(direct.id, alice.user, alice.device, "m2", 200),
        ],
    )
    .await;
    // A reaction changes its target and notifies nobody; a copy of m1 is a duplicate.
    let mut reaction = text(direct.id, alice.user, alice.device, "r1", 300);
    reaction.body = MessageBody::Reaction {
        target: first[0].message.seq,
        key: "👍".into(),
        remove: false,
    };
    let more = append(
        &store,
        vec![
            reaction,
            text(direct.id, alice.user, alice.device, "m1", 400),
        ],
    )
    .await;
    assert!(more[1].duplicate);
    // Rows are due at their message's time, oldest first, and leased by a claim.
    let (s1, s2) = (first[0].message.seq, first[1].message.seq);
    assert_eq!(
        store.claim_push_outbox(150, 1_000, 10).await.unwrap(),
        vec![item(s1)]
    );
    assert_eq!(
        store.claim_push_outbox(500, 1_000, 10).await.unwrap(),
        vec![item(s2)],
        "the claimed row waits for its lease; the reaction and the duplicate have none"
    );
    assert!(
        store
            .claim_push_outbox(999, 2_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A lease that ran out (its planner died) is claimed again, up to the limit.
    assert_eq!(
        store
            .claim_push_outbox(1_000, 3_000, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim_push_outbox(1_000, 3_000, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Deleted rows are gone for good; deleting twice is harmless.
    store
        .delete_push_outbox(vec![item(s1), item(s2)])
        .await
        .unwrap();
    store.delete_push_outbox(vec![item(s1)]).await.unwrap();
    assert!(
        store
            .claim_push_outbox(i64::MAX, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn push_jobs_merge_lease_and_retry(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let (d1, d2, bare) = (
        device(&store, alice).await,
        device(&store, alice).await,
        device(&store, alice).await,
    );
    store
        .set_push_subscription(alice, d1, web_push(1), 1)
        .await
        .unwrap();
    store
        .set_push_subscription(alice, d2, web_push(2), 1)
        .await
        .unwrap();
    store
        .enqueue_push_jobs(vec![
            push_job(d1, "c1", "first", 100),
            push_job(d1, "c2", "other", 150),
            push_job(d2, "c1", "late", 500),
            // A device without a subscription gets no job.
            push_job(bare, "c1", "nowhere", 100),
        ])
        .await
        .unwrap();
    // A second push on the same key merges into the first.
    store
        .enqueue_push_jobs(vec![push_job(d1, "c1", "second", 120)])
        .await
        .unwrap();
    let claimed = store.claim_push_jobs(200, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let c1 = claimed.iter().find(|j| j.key.collapse_key == "c1").unwrap();
    let c2 = claimed.iter().find(|j| j.key.collapse_key == "c2").unwrap();
    assert_eq!(
        (c1.payload.as_str(), c1.key.version, c1.attempts),
        ("second", 2, 0)
    );
    assert_eq!((c1.user_id, &c1.subscription), (alice, &web_push(1)));
    assert_eq!(c2.key.device_id, d1);
    // Leased jobs are not handed out again until the lease ends.
    assert!(
        store
            .claim_push_jobs(300, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Delivered: gone. A push merged in meanwhile is due again at once, for its new content.
    store.finish_push_job(c2.key.clone(), 300).await.unwrap();
    store
        .enqueue_push_jobs(vec![push_job(d1, "c1", "third", 300)])
        .await
        .unwrap();
    store.finish_push_job(c1.key.clone(), 310).await.unwrap();
    let again = store.claim_push_jobs(320, 2_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].payload.as_str(), again[0].key.version),
        ("third", 3)
    );
    // A failure counts the attempt and waits; a new push keeps waiting out the backoff.
    store
        .retry_push_job(again[0].key.clone(), 5_000)
        .await
        .unwrap();
    store
        .enqueue_push_jobs(vec![push_job(d1, "c1", "fourth", 400)])
        .await
        .unwrap();
    let due = store.claim_push_jobs(4_999, 6_000, 10).await.unwrap();
    assert_eq!(due.len(), 1, "only d2's job is due: {due:?}");
    assert_eq!(due[0].key.device_id, d2);
    let later = store.claim_push_jobs(5_000, 9_000, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].payload.as_str(), later[0].attempts),
        ("fourth", 1)
    );
    // A lease that ran out (the claimer died) makes the job due again.
    let retaken = store.claim_push_jobs(9_000, 10_000, 10).await.unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    // The limit holds.
    assert_eq!(
        store
            .claim_push_jobs(10_000, 11_000, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Deleting a subscription drops its jobs.
    assert!(store.delete_push_subscription(d1, None).await.unwrap());
    let rest = store.claim_push_jobs(20_000, 21_000, 10).await.unwrap();
    assert!(rest.iter().all(|j| j.key.device_id == d2), "{rest:?}");
}

// --- Calls -----------------------------------------------------------------------------------

fn ringing_call(id: &str, caller: (UserId, DeviceId), callee: UserId, deadline: i64) -> CallRecord {
    CallRecord {
        id: id.into(),
        conversation_id: ConversationId(7),
        caller_id: caller.0,
        caller_device: caller.1,
        callee_id: callee,
        callee_device: None,
        video: true,
        state: CallState::Ringing,
        created_at: 1_000,
        ring_deadline: deadline,
        answered_at: None,
    }
}

pub async fn calls_busy_accept_once_and_finish_once(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let (a1, b1, b2, c1) = (
        device(&store, alice).await,
        device(&store, bob).await,
        device(&store, bob).await,
        device(&store, carol).await,
    );
    let call = ringing_call("c1", (alice, a1), bob, 5_000);
    assert!(store.create_call(call.clone()).await.unwrap());
    assert_eq!(store.call("c1").await.unwrap(), Some(call.clone()));
    // Both users are now busy, whether they would call or be called.
    for (id, from, to) in [("c2", (carol, c1), bob), ("c3", (carol, c1), alice)] {
        assert!(
            !store
                .create_call(ringing_call(id, from, to, 5_000))
                .await
                .unwrap()
        );
        assert_eq!(
            store.call(id).await.unwrap(),
            None,
            "a busy call stores nothing"
        );
    }
    assert!(
        !store
            .create_call(ringing_call("c4", (bob, b1), carol, 5_000))
            .await
            .unwrap(),
        "a callee cannot call out while ringing"
    );
    // The sweep sees the call only once its deadline has come.
    assert!(
        store
            .calls_ringing_until(4_999, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.calls_ringing_until(5_000, 10).await.unwrap(),
        vec![call.clone()]
    );
    // The first accept wins; a second device's accept finds it no longer ringing.
    let accepted = store.accept_call("c1", b2, 2_000).await.unwrap().unwrap();
    assert_eq!(accepted.state, CallState::Active);
    assert_eq!(accepted.callee_device, Some(b2));
    assert_eq!(accepted.answered_at, Some(2_000));
    assert_eq!(store.accept_call("c1", b1, 2_001).await.unwrap(), None);
    assert_eq!(store.call("c1").await.unwrap(), Some(accepted.clone()));
    assert!(
        store
            .calls_ringing_until(9_999, 10)
            .await
            .unwrap()
            .is_empty(),
        "an active call is never swept as missed"
    );
    // Ending is compare-and-set on the state, and happens once.
    assert_eq!(
        store.finish_call("c1", CallState::Ringing).await.unwrap(),
        None
    );
    assert_eq!(
        store.finish_call("c1", CallState::Active).await.unwrap(),
        Some(accepted)
    );
    assert_eq!(
        store.finish_call("c1", CallState::Active).await.unwrap(),
        None
    );
    assert_eq!(store.call("c1").await.unwrap(), None);
    assert_eq!(store.accept_call("c1", b1, 3_000).await.unwrap(), None);
    // Once it ended, both are free again.
    assert!(
        store
            .create_call(ringing_call("c5", (carol, c1), bob, 6_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_call(ringing_call("c6", (alice, a1), carol, 6_000))
            .await
            .unwrap(),
        "carol is in the new call"
    );
}

pub async fn mqtt_sessions_and_retained_round_trip(store: Arc<dyn Store>) {
    use crate::{MqttRetainedRecord, MqttSessionRecord};
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let session = |user: UserId, client: &str, state: &[u8], at: i64| MqttSessionRecord {
        user_id: user,
        client_id: client.into(),
        state: state.to_vec(),
        updated_at: at,
    };
    assert!(store.mqtt_sessions().await.unwrap().is_empty());
    // The same client id under two users is two sessions; bytes come back exactly (with a
    // zero byte and invalid UTF-8 in them).
    store
        .save_mqtt_sessions(
            vec![
                session(bob, "dev", b"b\0\xff", 10),
                session(alice, "dev", b"a1", 10),
                session(alice, "other", b"o", 10),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        store.mqtt_sessions().await.unwrap(),
        vec![
            session(alice, "dev", b"a1", 10),
            session(alice, "other", b"o", 10),
            session(bob, "dev", b"b\0\xff", 10),
        ]
    );
    // A write replaces; a delete removes only its own user's session; deleting what is not
    // there is no error.
    store
        .save_mqtt_sessions(
            vec![session(alice, "dev", b"a2", 20)],
            vec![(alice, "other".into()), (bob, "missing".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        store.mqtt_sessions().await.unwrap(),
        vec![
            session(alice, "dev", b"a2", 20),
            session(bob, "dev", b"b\0\xff", 10),
        ]
    );
    store.save_mqtt_sessions(vec![], vec![]).await.unwrap();

    let retained = |topic: &str, message: &[u8]| MqttRetainedRecord {
        topic: topic.into(),
        message: message.to_vec(),
    };
    assert!(store.mqtt_retained().await.unwrap().is_empty());
    store
        .save_mqtt_retained(
            vec![
                retained("b/x", b"1"),
                retained("a/\u{e9}t\u{e9}", b"\0\x01"),
            ],
            vec![],
        )
        .await
        .unwrap();
    store
        .save_mqtt_retained(vec![retained("b/x", b"2")], vec!["nothing/here".into()])
        .await
        .unwrap();
    assert_eq!(
        store.mqtt_retained().await.unwrap(),
        vec![
            retained("a/\u{e9}t\u{e9}", b"\0\x01"),
            retained("b/x", b"2")
        ]
    );
    store
        .save_mqtt_retained(vec![], vec!["a/\u{e9}t\u{e9}".into()])
        .await
        .unwrap();
    assert_eq!(
        store.mqtt_retained().await.unwrap(),
        vec![retained("b/x", b"2")]
    );
}

pub async fn two_factor_enrol_confirm_spend_and_disable(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    assert!(store.two_factor(alice).await.unwrap().is_none());
    assert!(
        !store.use_totp_step(alice, 5).await.unwrap(),
        "no step is accepted without an enrolment"
    );
    store
        .begin_two_factor(alice, b"sealed-1".to_vec(), 1_000)
        .await
        .unwrap();
    // A pending enrolment is replaced by a new one, and accepts no step yet.
    store
        .begin_two_factor(alice, b"sealed-2".to_vec(), 1_100)
        .await
        .unwrap();
    let pending = store.two_factor(alice).await.unwrap().unwrap();
    assert_eq!(
        (
            pending.secret.as_slice(),
            pending.confirmed_at,
            pending.last_step
        ),
        (&b"sealed-2"[..], None, 0)
    );
    assert!(!store.use_totp_step(alice, 5).await.unwrap());
    assert!(
        !store
            .use_recovery_code(alice, [1; 32], 1_150)
            .await
            .unwrap()
    );

    let codes: Vec<[u8; 32]> = (1..=10u8).map(|n| [n; 32]).collect();
    store
        .confirm_two_factor(
            alice,
            100,
            codes,
            1_200,
            entry("2fa.enable", 1_200, Some(alice), Some(alice)),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            store
                .confirm_two_factor(alice, 101, vec![], 1_300, entry("x", 1_300, None, None))
                .await,
            Err(StoreError::NotFound)
        ),
        "an enrolment is confirmed once"
    );
    assert!(
        matches!(
            store
                .begin_two_factor(alice, b"other".to_vec(), 1_300)
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a confirmed enrolment is not replaced by a new one"
    );
    let on = store.two_factor(alice).await.unwrap().unwrap();
    assert_eq!(
        (
            on.secret.as_slice(),
            on.confirmed_at,
            on.last_step,
            on.recovery_codes_left
        ),
        (&b"sealed-2"[..], Some(1_200), 100, 10)
    );

    // Steps only move forward: the confirming step and older ones are refused.
    assert!(!store.use_totp_step(alice, 100).await.unwrap());
    assert!(!store.use_totp_step(alice, 99).await.unwrap());
    assert!(store.use_totp_step(alice, 101).await.unwrap());
    assert!(!store.use_totp_step(alice, 101).await.unwrap(), "replay");

    // Recovery codes are single-use.
    assert!(
        store
            .use_recovery_code(alice, [3; 32], 1_400)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery_code(alice, [3; 32], 1_401)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery_code(alice, [42; 32], 1_402)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .two_factor(alice)
            .await
            .unwrap()
            .unwrap()
            .recovery_codes_left,
        9
    );

    // Regenerating replaces every code.
    store
        .replace_recovery_codes(
            alice,
            vec![[50; 32], [51; 32]],
            entry("2fa.codes", 1_500, Some(alice), Some(alice)),
        )
        .await
        .unwrap();
    assert!(
        !store
            .use_recovery_code(alice, [4; 32], 1_501)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_recovery_code(alice, [50; 32], 1_502)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .two_factor(alice)
            .await
            .unwrap()
            .unwrap()
            .recovery_codes_left,
        1
    );

    let bob = user(&store, "bob").await;
    assert!(
        matches!(
            store
                .replace_recovery_codes(bob, vec![[1; 32]], entry("x", 1_600, None, None))
                .await,
            Err(StoreError::NotFound)
        ),
        "no codes without a confirmed enrolment"
    );

    assert!(
        store
            .disable_two_factor(alice, entry("2fa.disable", 1_700, Some(alice), Some(alice)))
            .await
            .unwrap()
    );
    assert!(store.two_factor(alice).await.unwrap().is_none());
    assert!(
        !store
            .disable_two_factor(alice, entry("2fa.disable", 1_800, Some(alice), Some(alice)))
            .await
            .unwrap()
    );

    // Deleting an account removes its enrolment with everything else it kept about itself.
    store
        .begin_two_factor(bob, b"bob".to_vec(), 1_900)
        .await
        .unwrap();
    store
        .delete_user(
            bob,
            2_000,
            false,
            entry("user.delete", 2_000, None, Some(bob)),
        )
        .await
        .unwrap();
    assert!(store.two_factor(bob).await.unwrap().is_none());
    assert!(
        matches!(
            store.begin_two_factor(bob, b"again".to_vec(), 2_100).await,
            Err(StoreError::NotFound)
        ),
        "a deleted account cannot enrol"
    );
}

pub async fn files_of_pages_a_users_files(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    for (id, owner, n) in [
        ("f3", alice, 3u8),
        ("f1", alice, 1),
        ("f2", bob, 2),
        ("f4", alice, 4),
    ] {
        let mut upload = new_upload(&format!("u-{id}"), owner, 10, 9_000);
        upload.kind = UploadKind::Final;
        store.create_upload(upload, u64::MAX).await.unwrap();
        store
            .complete_upload(&format!("u-{id}"), &[], new_file(id, owner, n, 10))
            .await
            .unwrap();
    }
    let ids = |files: Vec<FileRecord>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.files_of(alice, None, 2).await.unwrap()),
        ["f1", "f3"]
    );
    assert_eq!(
        ids(store.files_of(alice, Some("f3".into()), 2).await.unwrap()),
        ["f4"]
    );
    assert_eq!(ids(store.files_of(bob, None, 10).await.unwrap()), ["f2"]);
}

pub async fn external_identities_link_once_and_create_accounts(store: Arc<dyn Store>) {
    let identity = |subject: &str, at: i64| ExternalIdentity {
        provider: "corp".into(),
        issuer: "https://idp.example".into(),
        subject: subject.into(),
        linked_at: at,
    };
    let alice = user(&store, "alice").await;
    assert_eq!(
        store
            .external_identity_user("https://idp.example", "s-1")
            .await
            .unwrap(),
        None
    );
    store
        .link_external_identity(
            alice,
            &identity("s-1", 2_000),
            entry("external_identity.link", 2_000, Some(alice), Some(alice)),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .external_identity_user("https://idp.example", "s-1")
            .await
            .unwrap(),
        Some(alice)
    );
    // The same subject at another issuer is another identity.
    assert_eq!(
        store
            .external_identity_user("https://other.example", "s-1")
            .await
            .unwrap(),
        None
    );
    // An identity is linked to one account only, and a refused link writes no audit entry.
    let bob = user(&store, "bob").await;
    let again = store
        .link_external_identity(
            bob,
            &identity("s-1", 3_000),
            entry("external_identity.link", 3_000, Some(bob), Some(bob)),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict("external_identity"))),
        "got {again:?}"
    );
    let unknown = store
        .link_external_identity(
            UserId(999_999),
            &identity("s-9", 3_000),
            entry("external_identity.link", 3_000, None, None),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound)),
        "got {unknown:?}"
    );
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 1);

    // First sign-in creates the account and its link together, and audits as the new account.
    let carol = store
        .create_linked_user(
            "carol",
            "!",
            &identity("s-2", 4_000),
            entry("sign_in.success", 4_000, None, None),
        )
        .await
        .unwrap();
    assert_eq!(carol.username, "carol");
    assert_eq!(
        store
            .external_identity_user("https://idp.example", "s-2")
            .await
            .unwrap(),
        Some(carol.id)
    );
    let entries = all_entries(&store, &AuditFilter::default()).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].entry.actor, Some(carol.id));
    assert_eq!(entries[1].entry.target_user, Some(carol.id));
    // A taken username or a linked identity leaves neither account nor link behind.
    let taken = store
        .create_linked_user(
            "carol",
            "!",
            &identity("s-3", 5_000),
            entry("sign_in.success", 5_000, None, None),
        )
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("username"))),
        "got {taken:?}"
    );
    assert_eq!(
        store
            .external_identity_user("https://idp.example", "s-3")
            .await
            .unwrap(),
        None
    );
    let linked = store
        .create_linked_user(
            "dave",
            "!",
            &identity("s-1", 5_000),
            entry("sign_in.success", 5_000, None, None),
        )
        .await;
    assert!(
        matches!(linked, Err(StoreError::Conflict("external_identity"))),
        "got {linked:?}"
    );
    assert_eq!(store.user_by_name("dave").await.unwrap(), None);
    assert_eq!(all_entries(&store, &AuditFilter::default()).await.len(), 2);

    store
        .link_external_identity(
            alice,
            &identity("s-4", 6_000),
            entry("external_identity.link", 6_000, Some(alice), Some(alice)),
        )
        .await
        .unwrap();
    let links = store.external_identities_of(alice).await.unwrap();
    assert_eq!(links, vec![identity("s-1", 2_000), identity("s-4", 6_000)]);
    assert!(store.external_identities_of(bob).await.unwrap().is_empty());

    // Deleting the account removes its links, so the identity may be linked afresh.
    store
        .delete_user(
            alice,
            7_000,
            false,
            entry("user.delete", 7_000, None, Some(alice)),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .external_identity_user("https://idp.example", "s-1")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .external_identities_of(alice)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .link_external_identity(
            bob,
            &identity("s-1", 8_000),
            entry("external_identity.link", 8_000, Some(bob), Some(bob)),
        )
        .await
        .unwrap();
}
