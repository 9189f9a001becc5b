//! The one place that decides who may do what: in a conversation, and on the server.
//!
//! Every service asks [`decide`] (conversations) or [`decide_admin`] (server administration)
//! before acting; transports never decide. Table-driven tests walk every standing against every
//! action in every kind of conversation, and every server role against every admin action.

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

/// The caller's role on the server, read from the store on every request (never from a token),
/// so a demotion takes effect at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    User,
    Administrator,
}

/// Something only administrators may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAction {
    ListUsers,
    SuspendUser,
    ReactivateUser,
    DeleteUser,
    /// Sign out every device of a user.
    SignOutUser,
    GrantAdmin,
    RevokeAdmin,
    ReadAudit,
}

/// Allows or refuses an admin action; `on_self` when the target is the caller. Administrators
/// may not suspend, delete or demote themselves: that could leave the server without any, and
/// the command line (`tidings admin ...`) is there for an operator who means it.
pub fn decide_admin(action: AdminAction, role: ServerRole, on_self: bool) -> Result<(), CoreError> {
    use AdminAction::*;
    if role != ServerRole::Administrator {
        return Err(CoreError::forbidden(
            "only server administrators may do this",
        ));
    }
    if on_self && matches!(action, SuspendUser | DeleteUser | RevokeAdmin) {
        return Err(CoreError::forbidden(
            "administrators cannot suspend, delete or demote themselves",
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
    fn every_server_role_against_every_admin_action() {
        use AdminAction as A;
        use ServerRole::{Administrator, User};
        #[rustfmt::skip]
        let table = [
            // action            user (other, self)   administrator (other, self)
            (A::ListUsers,      [Out::F, Out::F,       Out::Ok, Out::Ok]),
            (A::SuspendUser,    [Out::F, Out::F,       Out::Ok, Out::F]),
            (A::ReactivateUser, [Out::F, Out::F,       Out::Ok, Out::Ok]),
            (A::DeleteUser,     [Out::F, Out::F,       Out::Ok, Out::F]),
            (A::SignOutUser,    [Out::F, Out::F,       Out::Ok, Out::Ok]),
            (A::GrantAdmin,     [Out::F, Out::F,       Out::Ok, Out::Ok]),
            (A::RevokeAdmin,    [Out::F, Out::F,       Out::Ok, Out::F]),
            (A::ReadAudit,      [Out::F, Out::F,       Out::Ok, Out::Ok]),
        ];
        for (action, expected) in table {
            let cases = [
                (User, false),
                (User, true),
                (Administrator, false),
                (Administrator, true),
            ];
            for ((role, on_self), want) in cases.into_iter().zip(expected) {
                let got = match decide_admin(action, role, on_self) {
                    Ok(()) => Out::Ok,
                    Err(e) if e.code == ErrorCode::Forbidden => Out::F,
                    Err(e) => panic!("unexpected {e:?}"),
                };
                assert_eq!(got, want, "{action:?} as {role:?} (on self: {on_self})");
            }
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
