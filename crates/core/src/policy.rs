//! The one place that decides who may do what in a conversation.
//!
//! Every service asks [`decide`] (and, for actions on another member, [`decide_on_member`]) or,
//! for server administration, [`decide_admin`] before acting; transports never decide. Table-driven tests walk every standing against every
//! action in every kind of conversation, and one table per contact rule (direct messages,
//! friend requests, presence, group adds) walks its inputs, as does one of every server role
//! against every admin action.

use crate::error::CoreError;
use tidings_proto::contacts::{DirectMessages, GroupAdds, Visibility};
use tidings_proto::rest::{ConversationKind, GroupPermissions, Role};

/// The caller's relation to a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// `None` for non-members.
    pub role: Option<Role>,
    /// Whether a mute is in force now.
    pub muted: bool,
}

impl Standing {
    pub const NON_MEMBER: Standing = Standing {
        role: None,
        muted: false,
    };

    pub fn member(role: Role) -> Self {
        Standing {
            role: Some(role),
            muted: false,
        }
    }
}

/// Something a caller wants to do in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// See the conversation, its members, settings and history.
    Read,
    SendMessage,
    /// Move one's own delivered or read marker.
    MoveMarker,
    Typing,
    /// Add members, and create, list and revoke invite links.
    Invite,
    ApproveJoins,
    /// Remove someone else.
    RemoveMember,
    /// Remove oneself.
    Leave,
    Mute,
    Ban,
    EditInfo,
    PinMessages,
    /// Delete (recall) another member's message.
    DeleteMessages,
    /// Mention everyone in a message.
    MentionAll,
    ChangeRoles,
    SetPermissions,
    TransferOwnership,
    Dissolve,
}

impl Action {
    /// The stable name used in audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::SendMessage => "send_message",
            Action::MoveMarker => "move_marker",
            Action::Typing => "typing",
            Action::Invite => "invite",
            Action::ApproveJoins => "approve_joins",
            Action::RemoveMember => "remove_member",
            Action::Leave => "leave",
            Action::Mute => "mute",
            Action::Ban => "ban",
            Action::EditInfo => "edit_info",
            Action::PinMessages => "pin_messages",
            Action::DeleteMessages => "delete_messages",
            Action::MentionAll => "mention_all",
            Action::ChangeRoles => "change_roles",
            Action::SetPermissions => "set_permissions",
            Action::TransferOwnership => "transfer_ownership",
            Action::Dissolve => "dissolve",
        }
    }

    /// The lowest role allowed to do this in a group with these settings; `None` when no role
    /// is needed beyond membership.
    fn min_role(self, permissions: &GroupPermissions) -> Option<Role> {
        match self {
            Action::Read | Action::SendMessage | Action::MoveMarker | Action::Typing => None,
            Action::Leave => None,
            Action::Invite => Some(permissions.invite),
            Action::ApproveJoins => Some(permissions.approve_joins),
            Action::RemoveMember => Some(permissions.remove_members),
            Action::Mute => Some(permissions.mute_members),
            Action::Ban => Some(permissions.ban_members),
            Action::EditInfo => Some(permissions.edit_info),
            Action::PinMessages => Some(permissions.pin_messages),
            Action::DeleteMessages => Some(permissions.delete_messages),
            Action::MentionAll => Some(permissions.mention_all),
            Action::ChangeRoles => Some(permissions.change_roles),
            // These stay with the owner whatever the settings say: otherwise an admin could
            // take the group from the person who made it.
            Action::SetPermissions | Action::TransferOwnership | Action::Dissolve => {
                Some(Role::Owner)
            }
        }
    }
}

/// Allows or refuses an action. Non-members learn nothing: they get `not_found`, the same
/// answer as for a conversation that does not exist.
pub fn decide(
    action: Action,
    kind: ConversationKind,
    standing: Standing,
    permissions: &GroupPermissions,
) -> Result<(), CoreError> {
    let Some(role) = standing.role else {
        return Err(CoreError::not_found("conversation"));
    };
    if kind == ConversationKind::Direct {
        // A direct conversation is always exactly its two users, with nothing to manage.
        return match action {
            // Either of the two may pin: there is nobody else to moderate.
            Action::Read
            | Action::SendMessage
            | Action::MoveMarker
            | Action::Typing
            | Action::PinMessages => Ok(()),
            _ => Err(CoreError::forbidden(format!(
                "{} is not possible in a direct conversation",
                action.as_str()
            ))),
        };
    }
    if standing.muted && matches!(action, Action::SendMessage | Action::Typing) {
        return Err(CoreError::forbidden("you are muted in this group"));
    }
    if action == Action::Leave && role == Role::Owner {
        // The group would be left without anyone able to manage it.
        return Err(CoreError::forbidden(
            "the owner cannot leave; transfer ownership or dissolve the group",
        ));
    }
    match action.min_role(permissions) {
        Some(min) if role < min => Err(CoreError::forbidden(format!(
            "{} needs the {} role or higher in this group",
            action.as_str(),
            role_name(min)
        ))),
        _ => Ok(()),
    }
}

/// Using a file as an avatar (a user's or a group's): the caller must be able to read it, and it
/// must be an image. An avatar is then readable by every signed-in user, so this is also the
/// decision to publish the picture.
pub fn use_as_avatar(readable: bool, image: bool) -> Result<(), CoreError> {
    if !readable {
        return Err(CoreError::not_found("file"));
    }
    if !image {
        return Err(CoreError::invalid(
            "an avatar is a PNG, JPEG, GIF or WebP image",
        ));
    }
    Ok(())
}

/// Editing a message: only its sender, and only within the edit window (`window_ms` 0 means
/// any time).
pub fn edit_message(own: bool, age_ms: i64, window_ms: i64) -> Result<(), CoreError> {
    if !own {
        return Err(CoreError::forbidden("only the sender may edit a message"));
    }
    if window_ms > 0 && age_ms > window_ms {
        return Err(CoreError::forbidden(format!(
            "messages can be edited for {} seconds after sending",
            window_ms / 1000
        )));
    }
    Ok(())
}

/// Who wrote the message someone wants to recall, and how they stand in the conversation.
#[derive(Clone, Copy, Debug)]
pub struct RecallFacts {
    pub own: bool,
    pub age_ms: i64,
    /// The sender's role, when they are still a member.
    pub sender_role: Option<Role>,
}

/// Recalling (deleting for everyone): the sender within the recall window (`window_ms` 0 means
/// any time); in groups, also anyone allowed to delete messages who outranks the sender (or
/// whose sender has left), at any time.
pub fn recall_message(
    kind: ConversationKind,
    actor: Standing,
    facts: RecallFacts,
    window_ms: i64,
    permissions: &GroupPermissions,
) -> Result<(), CoreError> {
    if facts.own && (window_ms == 0 || facts.age_ms <= window_ms) {
        return Ok(());
    }
    let moderator = kind == ConversationKind::Group
        && decide(Action::DeleteMessages, kind, actor, permissions).is_ok()
        && match (actor.role, facts.sender_role) {
            (Some(actor), Some(sender)) => facts.own || actor > sender,
            (Some(_), None) => true,
            _ => false,
        };
    if moderator {
        return Ok(());
    }
    Err(CoreError::forbidden(if facts.own {
        format!(
            "messages can be recalled for {} seconds after sending",
            window_ms / 1000
        )
    } else {
        "only the sender or a group moderator may recall a message".to_string()
    }))
}

/// For actions on another member (remove, mute, ban, change role): the actor must rank above
/// the target, so admins cannot act on each other or on the owner.
pub fn decide_on_member(action: Action, actor: Role, target: Role) -> Result<(), CoreError> {
    if actor > target {
        Ok(())
    } else {
        Err(CoreError::forbidden(format!(
            "{} needs a role above the member's ({})",
            action.as_str(),
            role_name(target)
        )))
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
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

/// What decides whether a device may hand a signal to another device (`device_signal`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalFacts {
    /// The target device is one of the sender's own.
    pub own_device: bool,
    /// The sending connection was signalled by the target device and has not answered yet (a
    /// reply to a question, say an XMPP IQ result).
    pub answering: bool,
    /// Between the two users (when they differ).
    pub direct: DirectFacts,
    /// The sender may see the target user's presence (they share a conversation or are
    /// friends, and the target's presence setting shows it to the sender).
    pub sees_presence: bool,
}

/// Whether a device may signal another device: always its user's own devices; another user's
/// when it could write to that user directly ([`direct_contact`]); and, unless either has
/// blocked the other, a device that signalled it first (its answer goes back even to a user who
/// accepts messages only from friends, who asked). Refusals read as for a message.
pub fn device_signal(facts: SignalFacts) -> Result<(), CoreError> {
    if facts.own_device {
        return Ok(());
    }
    if facts.answering
        && !facts.direct.sender_blocked_recipient
        && !facts.direct.recipient_blocked_sender
    {
        return Ok(());
    }
    direct_contact(facts.direct)
}

/// Whether a sender allowed to signal a device may learn that it has no live connection
/// (`not_found`). Whether a device is connected is presence: a sender who may not see the
/// target's presence gets `ok` either way, and a signal to a device that is away goes nowhere.
/// A device that signalled the sender first has shown itself already.
pub fn signal_reveals_absence(facts: SignalFacts) -> bool {
    facts.own_device || facts.answering || facts.sees_presence
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

/// Who may read one of a user's stored nodes besides the owner (see `userxml.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAccess {
    /// The owner alone: PEP nodes in general, private XML storage.
    Owner,
    /// The owner's friends too: what contacts need to show the user (avatar, nickname).
    Friends,
    /// Every signed-in user, as for the profile it extends: the vCard's stored fields.
    Everyone,
}

/// Reading one of a user's stored nodes: the owner reads all of them; others as the node's
/// access says. A refusal says `forbidden`, as XEP-0060 asks of a node whose access model the
/// requester does not meet.
pub fn read_user_node(own: bool, friends: bool, access: NodeAccess) -> Result<(), CoreError> {
    let allowed = own
        || match access {
            NodeAccess::Owner => false,
            NodeAccess::Friends => friends,
            NodeAccess::Everyone => true,
        };
    if allowed {
        Ok(())
    } else {
        Err(CoreError::forbidden(
            "only the owner (and, for shared nodes, their friends) may read this node",
        ))
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
    /// Replace any message in any conversation with a tombstone.
    RemoveMessage,
    /// Register, list and remove OAuth clients.
    ManageOAuthClients,
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

/// One access rule of MQTT broker mode (topics outside `tidings/`), from configuration.
/// `pattern` is an MQTT topic filter in which `%u` stands for the user's username and `%i`
/// for their user id, each allowed only as a whole topic level.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct BrokerRule {
    pub pattern: String,
    /// Subscribing to topics the pattern covers.
    #[serde(default)]
    pub read: bool,
    /// Publishing (and setting retained messages and wills) on topics the pattern matches.
    #[serde(default)]
    pub write: bool,
}

/// What a broker client wants to do with a topic or filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerAccess {
    /// Subscribe with this filter: every topic it can match must be readable.
    Subscribe,
    /// Publish to this topic name.
    Publish,
}

/// Allows or refuses a broker-mode subscribe or publish for `username` (id `user_id`) under the
/// configured rules. Topics under `tidings/` and `$`-topics are never broker topics. A user
/// name that is not a single clean topic level (it holds `/`, `+` or `#`) matches no
/// `%u` rule, so nobody can widen their prefix by choosing a strange name.
pub fn decide_broker(
    rules: &[BrokerRule],
    username: &str,
    user_id: i64,
    access: BrokerAccess,
    topic: &str,
) -> Result<(), CoreError> {
    let refused = || CoreError::forbidden("no broker rule allows this topic");
    let first = topic.split('/').next().unwrap_or("");
    if first == "tidings" || topic.starts_with('$') {
        return Err(refused());
    }
    let id = user_id.to_string();
    let clean_name = !username.is_empty() && !username.contains(['/', '+', '#']);
    for rule in rules {
        let wanted = match access {
            BrokerAccess::Subscribe => rule.read,
            BrokerAccess::Publish => rule.write,
        };
        if !wanted {
            continue;
        }
        let mut levels = Vec::new();
        let mut usable = true;
        for level in rule.pattern.split('/') {
            match level {
                "%u" if clean_name => levels.push(username),
                "%u" => usable = false,
                "%i" => levels.push(id.as_str()),
                other => levels.push(other),
            }
        }
        if usable && filter_covers(&levels, topic) {
            return Ok(());
        }
    }
    Err(refused())
}

/// Whether every topic `filter` can match is matched by `pattern` (a topic name is a filter
/// without wildcards, so this answers both publish and subscribe).
fn filter_covers(pattern: &[&str], filter: &str) -> bool {
    let mut filter = filter.split('/');
    for level in pattern {
        if *level == "#" {
            return true;
        }
        match filter.next() {
            None => return false,
            Some("#") => return false,
            Some(f) => {
                if *level != "+" && (*level != f || f == "+") {
                    return false;
                }
            }
        }
    }
    filter.next().is_none()
}

/// One OAuth scope (docs/oauth.md). Access tokens carry them in their `scope` claim; every
/// REST endpoint ([`rest_scope`]) and every WebSocket frame ([`frame_scope`]) needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    MessagesRead,
    MessagesWrite,
    Contacts,
    Groups,
    Files,
    Profile,
    Devices,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        SCOPES[self as usize]
    }
}

/// A set of scopes, small enough to copy with every [`crate::Caller`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    /// Every scope: first-party tokens (the role still decides what `admin` allows).
    pub const ALL: Scopes = Scopes((1 << 8) - 1);
    /// Every scope plus the mark of a first-party token (the web client and apps signing in
    /// with the password), which no OAuth scope string can grant: account security (two-factor
    /// settings, export, deletion) is for the account holder's own clients only.
    pub const FIRST_PARTY: Scopes = Scopes((1 << 9) - 1);

    /// The known scopes in a space-separated list; unknown ones are ignored (they grant
    /// nothing).
    pub fn parse(scope: &str) -> Scopes {
        Scopes(
            scope
                .split(' ')
                .filter_map(|s| SCOPES.iter().position(|k| *k == s))
                .fold(0, |bits, i| bits | (1 << i)),
        )
    }

    pub fn has(self, scope: Scope) -> bool {
        self.0 & (1 << scope as usize) != 0
    }
}

/// Allows managing the account's own security (two-factor sign-in, data export, deletion) only
/// to first-party tokens: a third-party application holding the `profile` scope must not turn
/// off a second factor, take a copy of everything, or delete the account.
pub fn decide_account_security(held: Scopes) -> Result<(), CoreError> {
    if held.0 & Scopes::FIRST_PARTY.0 == Scopes::FIRST_PARTY.0 {
        Ok(())
    } else {
        Err(CoreError::new(
            tidings_proto::ErrorCode::InsufficientScope,
            "only the account's own clients may manage its security, export or deletion",
        ))
    }
}

/// Allows a request that needs `need` to a caller holding `held`.
pub fn decide_scope(held: Scopes, need: Scope) -> Result<(), CoreError> {
    if held.has(need) {
        Ok(())
    } else {
        Err(CoreError::new(
            tidings_proto::ErrorCode::InsufficientScope,
            format!("this token lacks the `{}` scope", need.as_str()),
        ))
    }
}

/// The scope each WebSocket frame needs. `None` for frames every connection may send (`auth`,
/// `ping`). The match has no wildcard, so a new frame does not compile until it is listed here.
pub fn frame_scope(frame: &tidings_proto::ws::ClientFrame) -> Option<Scope> {
    use tidings_proto::ws::ClientFrame as F;
    match frame {
        // Reporting the device in the foreground or background only steers its own pushes.
        F::Auth { .. } | F::Ping { .. } | F::SetActivity { .. } => None,
        F::Send { .. } => Some(Scope::MessagesWrite),
        F::Sync { .. } | F::History { .. } => Some(Scope::MessagesRead),
        // Read receipts and typing notices tell others what the user reads and writes.
        F::Receipt { .. } | F::Typing { .. } => Some(Scope::MessagesWrite),
        F::PresenceQuery { .. } => Some(Scope::Contacts),
        // A call is a conversation between the two, like a message (and ends as one).
        F::CallInvite { .. } | F::CallSignal { .. } => Some(Scope::MessagesWrite),
        // A signal reaches another user's device like a message (XMPP IQs between resources).
        F::DeviceSignal { .. } => Some(Scope::MessagesWrite),
    }
}

/// The scope each REST endpoint needs, by method and route pattern (as the router writes it).
/// `None` for a route not in the table: the transport refuses those, and a test checks every
/// route of the OpenAPI document is here.
pub fn rest_scope(method: &str, route: &str) -> Option<Scope> {
    use Scope::*;
    let read = method == "GET" || method == "HEAD";
    let messages = if read { MessagesRead } else { MessagesWrite };
    let rest = route.strip_prefix("/api/v1/")?;
    let first = rest.split('/').next().unwrap_or_default();
    Some(match first {
        // Linking an external identity to the account (the other single sign-on routes are
        // for clients not signed in yet, and need no token).
        "account" | "profile" | "users" | "oidc" => Profile,
        "privacy" | "blocks" | "friends" | "friend-requests" => Contacts,
        // Push subscriptions belong to a device; the push settings go with them.
        "devices" | "push" => Devices,
        // ICE servers with TURN credentials, for calls.
        "rtc" => MessagesWrite,
        "admin" => Admin,
        "search" => MessagesRead,
        "uploads" | "files" | "slots" => Files,
        "groups" | "group-invitations" => Groups,
        "conversations" => {
            let tail: Vec<&str> = rest.split('/').skip(1).collect();
            match tail.as_slice() {
                // Listing conversations and opening a direct one are reading and writing
                // messages; creating a group is group management.
                [] if read => MessagesRead,
                [] => Groups,
                ["direct"] => MessagesWrite,
                ["{id}"] if read => MessagesRead,
                ["{id}"] => Groups,
                ["{id}", "files", ..] => Files,
                ["{id}", "messages", ..]
                | ["{id}", "threads", ..]
                | ["{id}", "pins"]
                | ["{id}", "settings"] => messages,
                ["{id}", "retention"] if read => MessagesRead,
                _ => Groups,
            }
        }
        _ => return None,
    })
}

/// Every OAuth scope the server knows, in the order it lists them (docs/oauth.md says what
/// each allows).
pub const SCOPES: &[&str] = &[
    "messages:read",
    "messages:write",
    "contacts",
    "groups",
    "files",
    "profile",
    "devices",
    "admin",
];

/// Every scope but `admin`: what a registered client may ask for unless the administrator who
/// registered it says otherwise, and what first-party sign-ins of non-administrators carry.
pub const USER_SCOPES: &str = "messages:read messages:write contacts groups files profile devices";

/// Parses a space-separated scope list, refusing unknown scopes; duplicates collapse and the
/// result follows the order of [`SCOPES`].
pub fn parse_scope(scope: &str) -> Result<Vec<&'static str>, CoreError> {
    let mut wanted = Vec::new();
    for item in scope.split(' ').filter(|s| !s.is_empty()) {
        let Some(known) = SCOPES.iter().find(|s| **s == item) else {
            return Err(CoreError::new(
                tidings_proto::ErrorCode::InsufficientScope,
                format!(
                    "unknown scope `{}`",
                    item.chars().take(40).collect::<String>()
                ),
            ));
        };
        wanted.push(*known);
    }
    Ok(SCOPES
        .iter()
        .copied()
        .filter(|s| wanted.contains(s))
        .collect())
}

/// The scope a registered client gets: what it asked for (everything it may have when it asked
/// for nothing), refused when it asks for anything outside `allowed` or for nothing at all.
pub fn grant_scope(requested: Option<&str>, allowed: &str) -> Result<String, CoreError> {
    let allowed = parse_scope(allowed)?;
    let requested = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        Some(requested) => parse_scope(requested)?,
        None => allowed.clone(),
    };
    if let Some(extra) = requested.iter().find(|s| !allowed.contains(s)) {
        return Err(CoreError::new(
            tidings_proto::ErrorCode::InsufficientScope,
            format!("this client may not ask for `{extra}`"),
        ));
    }
    if requested.is_empty() {
        return Err(CoreError::new(
            tidings_proto::ErrorCode::InsufficientScope,
            "no scope to grant",
        ));
    }
    Ok(requested.join(" "))
}

/// What a push is about, for [`push_notification`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushEvent {
    Message,
    FriendRequest,
    Call,
}

/// Everything [`push_notification`] weighs for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushFacts {
    pub event: PushEvent,
    /// The recipient's setting for the conversation (`All` outside conversations).
    pub notify: tidings_proto::rest::NotifyLevel,
    pub group: bool,
    /// The message mentions the recipient or everyone.
    pub mentioned: bool,
    /// The recipient muted all pushes.
    pub muted: bool,
    /// The recipient's do-not-disturb hours are running.
    pub do_not_disturb: bool,
    /// The recipient chose privacy mode.
    pub privacy: bool,
    /// The message is end-to-end encrypted (the server cannot read it anyway).
    pub encrypted: bool,
    /// Either user blocks the other.
    pub blocked: bool,
}

/// What a push may show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushShape {
    /// Sender and conversation title.
    pub sender: bool,
    /// The start of the text.
    pub preview: bool,
}

/// Whether a recipient gets a push, and what it may show; `None` for no push.
///
/// A call rings through mute, mentions-only and do-not-disturb: only a blocked caller or a
/// conversation muted outright silences it. Everything else respects, in this order, the
/// user's mute, do-not-disturb, the conversation's level (mentions-only applies to groups; in a
/// direct conversation every message is addressed to the recipient). Privacy mode hides sender
/// and text; an end-to-end-encrypted message never has a preview.
pub fn push_notification(facts: PushFacts) -> Option<PushShape> {
    use tidings_proto::rest::NotifyLevel;
    if facts.blocked {
        return None;
    }
    let shape = PushShape {
        sender: !facts.privacy,
        preview: !facts.privacy && !facts.encrypted,
    };
    if facts.event == PushEvent::Call {
        return (facts.notify != NotifyLevel::None).then_some(shape);
    }
    if facts.muted || facts.do_not_disturb {
        return None;
    }
    match facts.notify {
        NotifyLevel::None => None,
        NotifyLevel::Mentions if facts.group && !facts.mentioned => None,
        NotifyLevel::All | NotifyLevel::Mentions => Some(shape),
    }
}

/// Who sends a call signal, as seen from the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallParty {
    /// The device that placed the call.
    Caller,
    /// Another device of the caller.
    CallerOtherDevice,
    /// The callee: any of their devices while the call rings, the device that accepted after.
    Callee,
    /// Another device of the callee once one device accepted.
    CalleeOtherDevice,
    /// Anyone else.
    Outsider,
}

/// Where a call stands, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    Ringing,
    Active,
}

/// What a call signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStep {
    Ringing,
    Accept,
    Decline,
    Cancel,
    Hangup,
    Ice,
    Renegotiate,
}

/// Whether `party` may send `step` in a call in `phase`. Outsiders learn nothing about the
/// call (`not_found`); a party sending what its role never sends is refused (`forbidden`); a
/// party's own step at the wrong moment (say, a hang-up racing an accept) is a `conflict`.
pub fn call_signal(party: CallParty, phase: CallPhase, step: CallStep) -> Result<(), CoreError> {
    use CallPhase::{Active, Ringing};
    use CallStep as S;
    let (ringing, active): (&[CallStep], &[CallStep]) = match party {
        CallParty::Outsider => return Err(CoreError::not_found("call")),
        CallParty::CallerOtherDevice => {
            return Err(CoreError::forbidden(
                "the call is on another of your devices",
            ));
        }
        CallParty::CalleeOtherDevice => {
            return Err(CoreError::forbidden(
                "the call was answered on another of your devices",
            ));
        }
        CallParty::Caller => (
            &[S::Cancel, S::Hangup, S::Ice],
            &[S::Hangup, S::Ice, S::Renegotiate],
        ),
        CallParty::Callee => (
            &[S::Ringing, S::Accept, S::Decline],
            &[S::Hangup, S::Ice, S::Renegotiate],
        ),
    };
    let allowed = match phase {
        Ringing => ringing,
        Active => active,
    };
    if allowed.contains(&step) {
        Ok(())
    } else if ringing.contains(&step) || active.contains(&step) {
        Err(CoreError::new(
            tidings_proto::ErrorCode::Conflict,
            format!(
                "cannot {step:?} a call that is {}",
                match phase {
                    Ringing => "still ringing",
                    Active => "already answered",
                }
            )
            .to_lowercase(),
        ))
    } else {
        Err(CoreError::forbidden(format!(
            "the {} of a call cannot {step:?}",
            if party == CallParty::Caller {
                "caller"
            } else {
                "callee"
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::ErrorCode;

    /// Expected outcome: `Y` (allowed), `F` (forbidden) or `N` (not found).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Out {
        Y,
        F,
        N,
    }
    use Out::*;

    fn outcome(result: Result<(), CoreError>) -> Out {
        match result {
            Ok(()) => Y,
            Err(e) if e.code == ErrorCode::Forbidden => F,
            Err(e) if e.code == ErrorCode::NotFound => N,
            Err(e) => panic!("unexpected {e:?}"),
        }
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
    fn device_signals_under_blocks_settings_and_answers() {
        use DirectMessages::{Everyone as All, Friends as OnlyFriends};
        #[rustfmt::skip]
        let table = [
            // own    answering mine   theirs setting      friends allowed
            (true,  false, false, false, All,         false, true),
            // Own devices regardless of anything else (the facts are those of a user and
            // themselves, which never block).
            (true,  false, true,  true,  OnlyFriends, false, true),
            (false, false, false, false, All,         false, true),
            (false, false, false, false, OnlyFriends, false, false),
            (false, false, false, false, OnlyFriends, true,  true),
            (false, false, true,  false, All,         false, false),
            (false, false, false, true,  All,         false, false),
            // An answer goes back to a friends-only asker, but never across a block.
            (false, true,  false, false, OnlyFriends, false, true),
            (false, true,  true,  false, All,         false, false),
            (false, true,  false, true,  All,         false, false),
            (false, true,  false, true,  OnlyFriends, true,  false),
        ];
        for (own, answering, mine, theirs, setting, friends, allowed) in table {
            let facts = SignalFacts {
                own_device: own,
                answering,
                direct: DirectFacts {
                    sender_blocked_recipient: mine,
                    recipient_blocked_sender: theirs,
                    recipient_accepts: setting,
                    friends,
                },
                sees_presence: false,
            };
            assert_eq!(device_signal(facts).is_ok(), allowed, "{facts:?}");
        }
        // A refusal by a block reads like a friends-only refusal.
        let blocked = device_signal(SignalFacts {
            direct: DirectFacts {
                recipient_blocked_sender: true,
                ..DirectFacts::default()
            },
            ..SignalFacts::default()
        })
        .unwrap_err();
        assert_eq!(blocked.message, NOT_ACCEPTED);
    }

    #[test]
    fn only_senders_who_see_presence_learn_a_device_is_away() {
        #[rustfmt::skip]
        let table = [
            // own    answering sees   reveals
            (true,  false, false, true),
            (false, true,  false, true),
            (false, false, true,  true),
            (false, false, false, false),
        ];
        for (own_device, answering, sees_presence, reveals) in table {
            let facts = SignalFacts {
                own_device,
                answering,
                sees_presence,
                ..SignalFacts::default()
            };
            assert_eq!(signal_reveals_absence(facts), reveals, "{facts:?}");
        }
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
    fn user_nodes_by_ownership_friendship_and_access() {
        use NodeAccess::*;
        #[rustfmt::skip]
        let table = [
            // own   friends access    outcome
            (true,  false, Owner,    Y),
            (true,  false, Friends,  Y),
            (true,  false, Everyone, Y),
            (false, true,  Owner,    F),
            (false, true,  Friends,  Y),
            (false, true,  Everyone, Y),
            (false, false, Owner,    F),
            (false, false, Friends,  F),
            (false, false, Everyone, Y),
        ];
        for (own, friends, access, expected) in table {
            assert_eq!(
                outcome(read_user_node(own, friends, access)),
                expected,
                "own={own} friends={friends} access={access:?}"
            );
        }
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

    /// Every action against every standing, in a direct conversation and in a group with the
    /// default permissions.
    #[test]
    fn every_standing_against_every_action() {
        use Action::*;
        let standings = [
            Standing::NON_MEMBER,
            Standing {
                role: Some(Role::Member),
                muted: true,
            },
            Standing::member(Role::Member),
            Standing::member(Role::Admin),
            Standing::member(Role::Owner),
        ];
        #[rustfmt::skip]
        let group = [
            // action            non-member  muted  member  admin  owner
            (Read,               [N,         Y,     Y,      Y,     Y]),
            (SendMessage,        [N,         F,     Y,      Y,     Y]),
            (MoveMarker,         [N,         Y,     Y,      Y,     Y]),
            (Typing,             [N,         F,     Y,      Y,     Y]),
            (Invite,             [N,         Y,     Y,      Y,     Y]),
            (ApproveJoins,       [N,         F,     F,      Y,     Y]),
            (RemoveMember,       [N,         F,     F,      Y,     Y]),
            (Leave,              [N,         Y,     Y,      Y,     F]),
            (Mute,               [N,         F,     F,      Y,     Y]),
            (Ban,                [N,         F,     F,      Y,     Y]),
            (EditInfo,           [N,         F,     F,      Y,     Y]),
            (PinMessages,        [N,         F,     F,      Y,     Y]),
            (DeleteMessages,     [N,         F,     F,      Y,     Y]),
            (MentionAll,         [N,         F,     F,      Y,     Y]),
            (ChangeRoles,        [N,         F,     F,      F,     Y]),
            (SetPermissions,     [N,         F,     F,      F,     Y]),
            (TransferOwnership,  [N,         F,     F,      F,     Y]),
            (Dissolve,           [N,         F,     F,      F,     Y]),
        ];
        let defaults = GroupPermissions::default();
        for (action, expected) in group {
            for (standing, want) in standings.iter().zip(expected) {
                let got = outcome(decide(
                    action,
                    ConversationKind::Group,
                    *standing,
                    &defaults,
                ));
                assert_eq!(got, want, "{action:?} in a group as {standing:?}");
            }
            // In a direct conversation members may only talk (and pin).
            let direct_want = match action {
                Read | SendMessage | MoveMarker | Typing | PinMessages => Y,
                _ => F,
            };
            let got = outcome(decide(
                action,
                ConversationKind::Direct,
                Standing::member(Role::Member),
                &defaults,
            ));
            assert_eq!(got, direct_want, "{action:?} in a direct conversation");
            let got = outcome(decide(
                action,
                ConversationKind::Direct,
                Standing::NON_MEMBER,
                &defaults,
            ));
            assert_eq!(got, N, "{action:?} in a direct conversation as a stranger");
        }
    }

    /// The owner's settings move the adjustable powers, never the owner's own.
    #[test]
    fn owner_adjusts_the_matrix() {
        let open = GroupPermissions {
            remove_members: Role::Member,
            change_roles: Role::Admin,
            ..GroupPermissions::default()
        };
        let closed = GroupPermissions {
            invite: Role::Owner,
            ..GroupPermissions::default()
        };
        let member = Standing::member(Role::Member);
        let admin = Standing::member(Role::Admin);
        let group = ConversationKind::Group;
        assert_eq!(
            outcome(decide(Action::RemoveMember, group, member, &open)),
            Y
        );
        assert_eq!(outcome(decide(Action::ChangeRoles, group, admin, &open)), Y);
        assert_eq!(outcome(decide(Action::Invite, group, member, &closed)), F);
        assert_eq!(outcome(decide(Action::Invite, group, admin, &closed)), F);
        for action in [
            Action::SetPermissions,
            Action::TransferOwnership,
            Action::Dissolve,
        ] {
            assert_eq!(
                outcome(decide(action, group, admin, &open)),
                F,
                "{action:?}"
            );
        }
    }

    #[test]
    fn avatars_are_readable_images() {
        assert_eq!(outcome(use_as_avatar(true, true)), Y);
        assert_eq!(
            use_as_avatar(true, false).unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert_eq!(outcome(use_as_avatar(false, true)), N);
        assert_eq!(outcome(use_as_avatar(false, false)), N);
    }

    #[test]
    fn edits_by_sender_within_window() {
        #[rustfmt::skip]
        let table = [
            // own    age      window  allowed
            (true,  1_000,   5_000,  Y),
            (true,  5_000,   5_000,  Y),
            (true,  5_001,   5_000,  F),
            (true,  i64::MAX, 0,     Y),
            (false, 0,       5_000,  F),
            (false, 0,       0,      F),
        ];
        for (own, age, window, want) in table {
            assert_eq!(
                outcome(edit_message(own, age, window)),
                want,
                "own={own} age={age} window={window}"
            );
        }
    }

    #[test]
    fn recalls_by_sender_in_window_or_by_outranking_moderators() {
        use ConversationKind::{Direct, Group};
        use Role::*;
        let member = Standing::member(Member);
        let admin = Standing::member(Admin);
        let owner = Standing::member(Owner);
        let defaults = GroupPermissions::default();
        let facts = |own, age_ms, sender_role| RecallFacts {
            own,
            age_ms,
            sender_role,
        };
        #[rustfmt::skip]
        let table = [
            // kind    actor   own    age     sender role    allowed
            (Group,  member, true,  10,     Some(Member),  Y),
            (Group,  member, true,  10_000, Some(Member),  F),
            (Group,  admin,  true,  10_000, Some(Admin),   Y),
            (Group,  member, false, 10,     Some(Member),  F),
            (Group,  admin,  false, 10_000, Some(Member),  Y),
            (Group,  admin,  false, 10,     Some(Admin),   F),
            (Group,  admin,  false, 10,     Some(Owner),   F),
            (Group,  owner,  false, 10,     Some(Admin),   Y),
            (Group,  admin,  false, 10,     None,          Y),
            (Direct, member, true,  10,     Some(Member),  Y),
            (Direct, member, true,  10_000, Some(Member),  F),
            (Direct, member, false, 10,     Some(Member),  F),
        ];
        for (kind, actor, own, age, sender_role, want) in table {
            assert_eq!(
                outcome(recall_message(
                    kind,
                    actor,
                    facts(own, age, sender_role),
                    5_000,
                    &defaults
                )),
                want,
                "{kind:?} {actor:?} own={own} age={age} sender={sender_role:?}"
            );
        }
    }

    #[test]
    fn actors_must_outrank_their_targets() {
        use Role::*;
        #[rustfmt::skip]
        let table = [
            // actor   target   allowed
            (Owner,  Admin,  Y),
            (Owner,  Member, Y),
            (Owner,  Owner,  F),
            (Admin,  Member, Y),
            (Admin,  Admin,  F),
            (Admin,  Owner,  F),
            (Member, Member, F),
            (Member, Admin,  F),
        ];
        for (actor, target, want) in table {
            assert_eq!(
                outcome(decide_on_member(Action::Ban, actor, target)),
                want,
                "{actor:?} on {target:?}"
            );
        }
    }

    #[test]
    fn every_server_role_against_every_admin_action() {
        use AdminAction as A;
        use ServerRole::{Administrator, User};
        #[rustfmt::skip]
        let table = [
            // action            user (other, self)   administrator (other, self)
            (A::ListUsers,      [F, F,       Y, Y]),
            (A::SuspendUser,    [F, F,       Y, F]),
            (A::ReactivateUser, [F, F,       Y, Y]),
            (A::DeleteUser,     [F, F,       Y, F]),
            (A::SignOutUser,    [F, F,       Y, Y]),
            (A::GrantAdmin,     [F, F,       Y, Y]),
            (A::RevokeAdmin,    [F, F,       Y, F]),
            (A::ReadAudit,      [F, F,       Y, Y]),
            (A::RemoveMessage,  [F, F,       Y, Y]),
            (A::ManageOAuthClients, [F, F,   Y, Y]),
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
                    Ok(()) => Y,
                    Err(e) if e.code == ErrorCode::Forbidden => F,
                    Err(e) => panic!("unexpected {e:?}"),
                };
                assert_eq!(got, want, "{action:?} as {role:?} (on self: {on_self})");
            }
        }
    }
    #[test]
    fn broker_rules_cover_what_they_say_and_nothing_more() {
        let rules = vec![
            BrokerRule {
                pattern: "users/%u/#".into(),
                read: true,
                write: true,
            },
            BrokerRule {
                pattern: "shared/#".into(),
                read: true,
                write: false,
            },
            BrokerRule {
                pattern: "devices/%i/+/state".into(),
                read: true,
                write: true,
            },
        ];
        use BrokerAccess::{Publish as P, Subscribe as S};
        let table: &[(&str, BrokerAccess, &str, bool)] = &[
            ("alice", P, "users/alice/lamp", true),
            ("alice", S, "users/alice/#", true),
            ("alice", S, "users/alice/+/x", true),
            ("alice", P, "users/bob/lamp", false),
            ("alice", S, "users/+/lamp", false),
            ("alice", S, "users/#", false),
            ("alice", S, "#", false),
            ("alice", S, "shared/news", true),
            ("alice", S, "shared/#", true),
            ("alice", P, "shared/news", false),
            ("alice", P, "devices/7/a/state", true),
            ("alice", S, "devices/7/+/state", true),
            ("alice", S, "devices/7/#", false),
            ("alice", P, "devices/8/a/state", false),
            ("alice", P, "tidings/v1/x", false),
            ("alice", S, "$SYS/#", false),
            // A user name that is not one clean level matches no %u rule.
            ("a/b", P, "users/a/b/x", false),
            ("+", S, "users/+/x", false),
        ];
        for (user, access, topic, allowed) in table {
            let got = decide_broker(&rules, user, 7, *access, topic).is_ok();
            assert_eq!(got, *allowed, "{user} {access:?} {topic}");
        }
    }

    #[test]
    fn granted_scope_is_what_was_asked_within_what_the_client_may_have() {
        let allowed = "messages:read profile contacts";
        #[rustfmt::skip]
        let table: &[(Option<&str>, Option<&str>)] = &[
            // requested                     granted (None: refused)
            (None,                           Some("messages:read contacts profile")),
            (Some(""),                       Some("messages:read contacts profile")),
            (Some("profile"),                Some("profile")),
            (Some("profile messages:read"),  Some("messages:read profile")),
            (Some("profile  profile"),       Some("profile")),
            (Some("messages:write"),         None),
            (Some("admin"),                  None),
            (Some("profile admin"),          None),
            (Some("root"),                   None),
            (Some("PROFILE"),                None),
        ];
        for (requested, want) in table {
            let got = grant_scope(*requested, allowed).ok();
            assert_eq!(got.as_deref(), *want, "{requested:?}");
        }
        assert!(
            grant_scope(None, "").is_err(),
            "a client with no scope gets nothing"
        );
        assert_eq!(
            parse_scope(USER_SCOPES).unwrap().len(),
            SCOPES.len() - 1,
            "user scopes are every scope but admin"
        );
    }

    #[test]
    fn scopes_parse_and_decide() {
        let held = Scopes::parse("messages:read profile bogus");
        assert!(held.has(Scope::MessagesRead) && held.has(Scope::Profile));
        assert!(!held.has(Scope::MessagesWrite) && !held.has(Scope::Admin));
        assert!(decide_scope(held, Scope::MessagesRead).is_ok());
        assert_eq!(
            decide_scope(held, Scope::MessagesWrite).unwrap_err().code,
            tidings_proto::ErrorCode::InsufficientScope
        );
        for (i, name) in SCOPES.iter().enumerate() {
            assert!(Scopes::ALL.has(SCOPES_IN_ORDER[i]), "{name}");
            assert_eq!(SCOPES_IN_ORDER[i].as_str(), *name);
            assert!(Scopes::parse(name).has(SCOPES_IN_ORDER[i]));
        }
        assert_eq!(Scopes::parse(""), Scopes(0));
    }

    const SCOPES_IN_ORDER: [Scope; 8] = [
        Scope::MessagesRead,
        Scope::MessagesWrite,
        Scope::Contacts,
        Scope::Groups,
        Scope::Files,
        Scope::Profile,
        Scope::Devices,
        Scope::Admin,
    ];

    #[test]
    fn account_security_is_for_first_party_tokens_only() {
        assert!(decide_account_security(Scopes::FIRST_PARTY).is_ok());
        // A registered client with every scope, `admin` included, is still not first-party.
        assert!(decide_account_security(Scopes::ALL).is_err());
        assert!(decide_account_security(Scopes::parse(USER_SCOPES)).is_err());
        assert!(decide_account_security(Scopes::parse("profile")).is_err());
        // The first-party mark includes every scope.
        assert!(SCOPES.iter().all(|s| {
            let one = Scopes::parse(s);
            one.0 != 0 && one.0 & Scopes::FIRST_PARTY.0 == one.0
        }));
    }

    #[test]
    fn every_kind_of_route_needs_the_scope_the_docs_name() {
        use Scope::*;
        #[rustfmt::skip]
        let table: &[(&str, &str, Option<Scope>)] = &[
            ("GET",    "/api/v1/account",                                  Some(Profile)),
            ("POST",   "/api/v1/account/password",                         Some(Profile)),
            ("DELETE", "/api/v1/account",                                  Some(Profile)),
            ("POST",   "/api/v1/account/two-factor",                       Some(Profile)),
            ("POST",   "/api/v1/account/two-factor/disable",               Some(Profile)),
            ("GET",    "/api/v1/account/export",                           Some(Profile)),
            ("POST",   "/api/v1/sign-in/second-factor",                    None),
            ("GET",    "/api/v1/users/{user_id}",                          Some(Profile)),
            ("PUT",    "/api/v1/blocks/{user_id}",                         Some(Contacts)),
            ("POST",   "/api/v1/friend-requests",                          Some(Contacts)),
            ("GET",    "/api/v1/devices",                                  Some(Devices)),
            ("GET",    "/api/v1/admin/users",                              Some(Admin)),
            ("POST",   "/api/v1/admin/oauth-clients",                      Some(Admin)),
            ("GET",    "/api/v1/search",                                   Some(MessagesRead)),
            ("GET",    "/api/v1/conversations",                            Some(MessagesRead)),
            ("POST",   "/api/v1/conversations",                            Some(Groups)),
            ("POST",   "/api/v1/conversations/direct",                     Some(MessagesWrite)),
            ("GET",    "/api/v1/conversations/{id}/messages",              Some(MessagesRead)),
            ("POST",   "/api/v1/conversations/{id}/messages",              Some(MessagesWrite)),
            ("DELETE", "/api/v1/conversations/{id}/messages/{seq}",        Some(MessagesWrite)),
            ("GET",    "/api/v1/conversations/{id}/messages/{seq}/readers", Some(MessagesRead)),
            ("PUT",    "/api/v1/conversations/{id}/members/{user_id}/role", Some(Groups)),
            ("GET",    "/api/v1/conversations/{id}/members",               Some(Groups)),
            ("PUT",    "/api/v1/conversations/{id}/files/{file_id}",       Some(Files)),
            ("PATCH",  "/api/v1/uploads/{upload_id}",                      Some(Files)),
            ("GET",    "/api/v1/files/{file_id}",                          Some(Files)),
            ("POST",   "/api/v1/groups/join",                              Some(Groups)),
            ("GET",    "/api/v1/elsewhere",                                None),
            ("GET",    "/healthz",                                         None),
        ];
        for (method, route, want) in table {
            assert_eq!(rest_scope(method, route), *want, "{method} {route}");
        }
    }

    #[test]
    fn push_notification_table() {
        use tidings_proto::rest::NotifyLevel::{self, All, Mentions, None as Off};
        let full = Some(PushShape {
            sender: true,
            preview: true,
        });
        let hidden = Some(PushShape {
            sender: false,
            preview: false,
        });
        let no_text = Some(PushShape {
            sender: true,
            preview: false,
        });
        let base = PushFacts {
            event: PushEvent::Message,
            notify: All,
            group: true,
            mentioned: false,
            muted: false,
            do_not_disturb: false,
            privacy: false,
            encrypted: false,
            blocked: false,
        };
        // (event, notify, group, mentioned, muted, dnd, privacy, encrypted, blocked) -> shape
        type Row = (
            PushEvent,
            NotifyLevel,
            bool,
            bool,
            bool,
            bool,
            bool,
            bool,
            bool,
            Option<PushShape>,
        );
        use PushEvent::{Call, FriendRequest as Friend, Message as Msg};
        let table: &[Row] = &[
            (
                Msg, All, true, false, false, false, false, false, false, full,
            ),
            (
                Msg, All, false, false, false, false, false, false, false, full,
            ),
            (
                Msg, Mentions, true, false, false, false, false, false, false, None,
            ),
            (
                Msg, Mentions, true, true, false, false, false, false, false, full,
            ),
            (
                Msg, Mentions, false, false, false, false, false, false, false, full,
            ),
            (
                Msg, Off, true, true, false, false, false, false, false, None,
            ),
            (
                Msg, Off, false, false, false, false, false, false, false, None,
            ),
            (Msg, All, true, true, true, false, false, false, false, None),
            (Msg, All, true, true, false, true, false, false, false, None),
            (
                Msg, All, true, false, false, false, true, false, false, hidden,
            ),
            (
                Msg, All, true, false, false, false, false, true, false, no_text,
            ),
            (
                Msg, All, true, false, false, false, true, true, false, hidden,
            ),
            (
                Msg, All, false, false, false, false, false, false, true, None,
            ),
            (
                Friend, All, false, false, false, false, false, false, false, full,
            ),
            (
                Friend, All, false, false, true, false, false, false, false, None,
            ),
            (
                Friend, All, false, false, false, true, false, false, false, None,
            ),
            (
                Friend, All, false, false, false, false, true, false, false, hidden,
            ),
            (
                Call, All, false, false, true, true, false, false, false, full,
            ),
            (
                Call, Mentions, true, false, false, false, false, false, false, full,
            ),
            (
                Call, Off, false, false, false, false, false, false, false, None,
            ),
            (
                Call, All, false, false, false, false, false, false, true, None,
            ),
            (
                Call, All, false, false, false, false, true, false, false, hidden,
            ),
        ];
        for &(event, notify, group, mentioned, muted, dnd, privacy, encrypted, blocked, want) in
            table
        {
            let facts = PushFacts {
                event,
                notify,
                group,
                mentioned,
                muted,
                do_not_disturb: dnd,
                privacy,
                encrypted,
                blocked,
            };
            assert_eq!(push_notification(facts), want, "{facts:?}");
        }
        assert_eq!(push_notification(base), full);
    }

    #[test]
    fn call_signals_by_party_phase_and_step() {
        use CallParty::*;
        use CallPhase::{Active as A, Ringing as R};
        use CallStep as S;
        // Outcome per step, in the order Ringing, Accept, Decline, Cancel, Hangup, Ice,
        // Renegotiate: Y allowed, F forbidden, N not found, C conflict.
        let steps = [
            S::Ringing,
            S::Accept,
            S::Decline,
            S::Cancel,
            S::Hangup,
            S::Ice,
            S::Renegotiate,
        ];
        #[rustfmt::skip]
        let table = [
            (Caller,            R, "FFFYYYC"),
            (Caller,            A, "FFFCYYY"),
            (Callee,            R, "YYYFCCC"),
            (Callee,            A, "CCCFYYY"),
            (CallerOtherDevice, R, "FFFFFFF"),
            (CallerOtherDevice, A, "FFFFFFF"),
            (CalleeOtherDevice, A, "FFFFFFF"),
            (Outsider,          R, "NNNNNNN"),
            (Outsider,          A, "NNNNNNN"),
        ];
        for (party, phase, expected) in table {
            for (step, want) in steps.iter().zip(expected.chars()) {
                let got = match call_signal(party, phase, *step) {
                    Ok(()) => 'Y',
                    Err(e) if e.code == ErrorCode::Forbidden => 'F',
                    Err(e) if e.code == ErrorCode::NotFound => 'N',
                    Err(e) if e.code == ErrorCode::Conflict => 'C',
                    Err(e) => panic!("unexpected {e:?}"),
                };
                assert_eq!(got, want, "{party:?} {phase:?} {step:?}");
            }
        }
    }
}
