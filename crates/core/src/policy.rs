//! The one place that decides who may do what in a conversation.
//!
//! Every service asks [`decide`] before acting; transports never decide. A table-driven test
//! walks every standing against every action in every kind of conversation, and one table per
//! contact rule (direct messages, friend requests, presence, group adds) walks its inputs.

use crate::error::CoreError;
use tidings_proto::contacts::{DirectMessages, GroupAdds, Visibility};
use tidings_proto::rest::{ConversationKind, Role};

/// The caller's relation to a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    NonMember,
    Member,
    Owner,
}

impl Standing {
    pub fn from_role(role: Option<Role>) -> Self {
        match role {
            None => Standing::NonMember,
            Some(Role::Member) => Standing::Member,
            Some(Role::Owner) => Standing::Owner,
        }
    }
}

/// Something a caller wants to do in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// See the conversation, its members and history.
    Read,
    SendMessage,
    /// Move one's own delivered or read marker.
    MoveMarker,
    Typing,
    AddMembers,
    /// Remove someone else.
    RemoveMember,
    /// Remove oneself.
    Leave,
}

/// Allows or refuses an action. Non-members learn nothing: they get `not_found`, the same
/// answer as for a conversation that does not exist.
pub fn decide(action: Action, kind: ConversationKind, standing: Standing) -> Result<(), CoreError> {
    use Action::*;
    use Standing::*;
    if standing == NonMember {
        return Err(CoreError::not_found("conversation"));
    }
    let allowed = match (action, kind) {
        (Read | SendMessage | MoveMarker | Typing, _) => true,
        // A direct conversation is always exactly its two users.
        (AddMembers | RemoveMember | Leave, ConversationKind::Direct) => false,
        (AddMembers | RemoveMember, ConversationKind::Group) => standing == Owner,
        // The owner would leave the group without anyone able to manage it.
        (Leave, ConversationKind::Group) => standing == Member,
    };
    if allowed {
        Ok(())
    } else {
        Err(CoreError::forbidden(format!(
            "{action:?} is not allowed for a {standing:?} of a {kind:?} conversation"
        )))
    }
}

/// The refusal a user gets from someone who does not accept their messages or requests: the
/// same words whether the reason is a block or a privacy setting, so a block is never revealed.
pub const NOT_ACCEPTED: &str = "this user does not accept messages from you";

/// What decides whether a sender may write to a recipient directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectFacts {
    pub sender_blocked_recipient: bool,
    pub recipient_blocked_sender: bool,
    /// The recipient's "who may message me directly" setting.
    pub recipient_accepts: DirectMessages,
    pub friends: bool,
}

/// Whether `sender` may write to `recipient` in their direct conversation (or open one), given
/// the blocks between them, the recipient's setting and their friendship. The blocked side
/// learns nothing: its refusal reads like that of any user who accepts messages only from
/// friends.
pub fn direct_contact(facts: DirectFacts) -> Result<(), CoreError> {
    if facts.recipient_blocked_sender {
        return Err(CoreError::forbidden(NOT_ACCEPTED));
    }
    if facts.sender_blocked_recipient {
        return Err(CoreError::forbidden(
            "you have blocked this user; unblock them to write to them",
        ));
    }
    if facts.recipient_accepts == DirectMessages::Friends && !facts.friends {
        return Err(CoreError::forbidden(NOT_ACCEPTED));
    }
    Ok(())
}

/// Whether `sender` may ask `recipient` to be friends, given the blocks between them. A
/// blocked sender gets the same refusal as for a message.
pub fn friend_request(
    sender_blocked_recipient: bool,
    recipient_blocked_sender: bool,
) -> Result<(), CoreError> {
    if recipient_blocked_sender {
        return Err(CoreError::forbidden(NOT_ACCEPTED));
    }
    if sender_blocked_recipient {
        return Err(CoreError::forbidden(
            "you have blocked this user; unblock them to send a friend request",
        ));
    }
    Ok(())
}

/// Whether a viewer may see a subject's presence and last-seen time, by the subject's setting.
/// Everyone sees their own. (Blocks are applied by the callers, which leave blockers out.)
pub fn presence_visible(setting: Visibility, viewer_is_subject: bool, friends: bool) -> bool {
    viewer_is_subject
        || match setting {
            Visibility::Everyone => true,
            Visibility::Friends => friends,
            Visibility::Nobody => false,
        }
}

/// Whether `adder` may put a user into a group directly, by the user's setting; when not, the
/// group code sends an invitation the user may accept. A block either way always says no.
pub fn group_add(setting: GroupAdds, friends: bool, blocked_either_way: bool) -> bool {
    !blocked_either_way
        && match setting {
            GroupAdds::Everyone => true,
            GroupAdds::Friends => friends,
            GroupAdds::Nobody => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use ConversationKind::*;
    use Standing::*;
    use tidings_proto::ErrorCode;

    /// Expected outcome: `Ok`, `F` (forbidden) or `N` (not found).
    #[derive(Debug, PartialEq)]
    enum Out {
        Ok,
        F,
        N,
    }

    #[test]
    fn direct_contact_under_every_block_setting_and_friendship() {
        use DirectMessages::{Everyone as All, Friends as OnlyFriends};
        #[rustfmt::skip]
        let table = [
            // mine   theirs  setting      friends  allowed
            (false, false, All,         false, true),
            (true,  false, All,         false, false),
            (false, true,  All,         false, false),
            (true,  true,  All,         false, false),
            (false, false, OnlyFriends, false, false),
            (false, false, OnlyFriends, true,  true),
            (false, false, All,         true,  true),
            (false, true,  OnlyFriends, true,  false),
            (true,  false, OnlyFriends, true,  false),
        ];
        for (mine, theirs, setting, friends, allowed) in table {
            let facts = DirectFacts {
                sender_blocked_recipient: mine,
                recipient_blocked_sender: theirs,
                recipient_accepts: setting,
                friends,
            };
            assert_eq!(direct_contact(facts).is_ok(), allowed, "{facts:?}");
        }
        // The blocked sender's refusal is word for word the friends-only refusal.
        let blocked = direct_contact(DirectFacts {
            recipient_blocked_sender: true,
            ..DirectFacts::default()
        })
        .unwrap_err();
        let friends_only = direct_contact(DirectFacts {
            recipient_accepts: OnlyFriends,
            ..DirectFacts::default()
        })
        .unwrap_err();
        assert_eq!(blocked.message, friends_only.message);
        assert_eq!(blocked.code, friends_only.code);
        assert!(!blocked.message.contains("block"));
    }

    #[test]
    fn friend_requests_under_every_block() {
        for (mine, theirs, allowed) in [
            (false, false, true),
            (true, false, false),
            (false, true, false),
            (true, true, false),
        ] {
            assert_eq!(
                friend_request(mine, theirs).is_ok(),
                allowed,
                "{mine} {theirs}"
            );
        }
        let refusal = friend_request(false, true).unwrap_err();
        assert_eq!(refusal.message, NOT_ACCEPTED);
        assert!(
            friend_request(true, false)
                .unwrap_err()
                .message
                .contains("unblock")
        );
    }

    #[test]
    fn presence_by_setting_and_friendship() {
        use Visibility::*;
        #[rustfmt::skip]
        let table = [
            // setting   self   friends  visible
            (Everyone, false, false, true),
            (Everyone, false, true,  true),
            (Friends,  false, false, false),
            (Friends,  false, true,  true),
            (Nobody,   false, false, false),
            (Nobody,   false, true,  false),
            (Nobody,   true,  false, true),
            (Friends,  true,  false, true),
        ];
        for (setting, own, friends, visible) in table {
            assert_eq!(
                presence_visible(setting, own, friends),
                visible,
                "{setting:?} self={own} friends={friends}"
            );
        }
    }

    #[test]
    fn group_adds_by_setting_friendship_and_blocks() {
        use GroupAdds::*;
        #[rustfmt::skip]
        let table = [
            // setting  friends blocked  allowed
            (Everyone, false, false, true),
            (Everyone, true,  false, true),
            (Everyone, true,  true,  false),
            (Friends,  false, false, false),
            (Friends,  true,  false, true),
            (Friends,  true,  true,  false),
            (Nobody,   false, false, false),
            (Nobody,   true,  false, false),
        ];
        for (setting, friends, blocked, allowed) in table {
            assert_eq!(
                group_add(setting, friends, blocked),
                allowed,
                "{setting:?} friends={friends} blocked={blocked}"
            );
        }
    }

    #[test]
    fn every_standing_against_every_action() {
        #[rustfmt::skip]
        let table = [
            // action        kind    non-member  member   owner
            (Read,          Direct, [Out::N, Out::Ok, Out::Ok]),
            (SendMessage,   Direct, [Out::N, Out::Ok, Out::Ok]),
            (MoveMarker,    Direct, [Out::N, Out::Ok, Out::Ok]),
            (Typing,        Direct, [Out::N, Out::Ok, Out::Ok]),
            (AddMembers,    Direct, [Out::N, Out::F,  Out::F]),
            (RemoveMember,  Direct, [Out::N, Out::F,  Out::F]),
            (Leave,         Direct, [Out::N, Out::F,  Out::F]),
            (Read,          Group,  [Out::N, Out::Ok, Out::Ok]),
            (SendMessage,   Group,  [Out::N, Out::Ok, Out::Ok]),
            (MoveMarker,    Group,  [Out::N, Out::Ok, Out::Ok]),
            (Typing,        Group,  [Out::N, Out::Ok, Out::Ok]),
            (AddMembers,    Group,  [Out::N, Out::F,  Out::Ok]),
            (RemoveMember,  Group,  [Out::N, Out::F,  Out::Ok]),
            (Leave,         Group,  [Out::N, Out::Ok, Out::F]),
        ];
        for (action, kind, expected) in table {
            for (standing, want) in [NonMember, Member, Owner].into_iter().zip(expected) {
                let got = match decide(action, kind, standing) {
                    Ok(()) => Out::Ok,
                    Err(e) if e.code == ErrorCode::Forbidden => Out::F,
                    Err(e) if e.code == ErrorCode::NotFound => Out::N,
                    Err(e) => panic!("unexpected {e:?}"),
                };
                assert_eq!(got, want, "{action:?} in {kind:?} as {standing:?}");
            }
        }
    }
}
