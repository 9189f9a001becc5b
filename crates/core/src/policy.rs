//! The one place that decides who may do what in a conversation.
//!
//! Every service asks [`decide`] before acting; transports never decide. A table-driven test
//! walks every standing against every action in every kind of conversation.

use crate::error::CoreError;
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

/// Whether `sender` may write to `recipient` in their direct conversation, given the blocks
/// between them. The blocked side learns nothing: its refusal reads like any user's who does
/// not accept messages from it.
pub fn direct_contact(
    sender_blocked_recipient: bool,
    recipient_blocked_sender: bool,
) -> Result<(), CoreError> {
    if recipient_blocked_sender {
        return Err(CoreError::forbidden(
            "this user does not accept messages from you",
        ));
    }
    if sender_blocked_recipient {
        return Err(CoreError::forbidden(
            "you have blocked this user; unblock them to write to them",
        ));
    }
    Ok(())
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
    fn direct_contact_under_every_block() {
        // (sender blocked recipient, recipient blocked sender) -> allowed
        for (mine, theirs, allowed) in [
            (false, false, true),
            (true, false, false),
            (false, true, false),
            (true, true, false),
        ] {
            assert_eq!(
                direct_contact(mine, theirs).is_ok(),
                allowed,
                "{mine} {theirs}"
            );
        }
        // The blocked sender's refusal does not mention blocking.
        let refusal = direct_contact(false, true).unwrap_err();
        assert!(!refusal.message.contains("block"));
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
