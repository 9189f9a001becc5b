//! Named rooms and their occupants: the parts of XMPP Multi-User Chat (XEP-0045) a group's
//! membership does not already give.
//!
//! A group may have a room address, its public name on the MUC domain: joining an address no
//! group holds creates a group under it, owned by the joiner. Addresses are public names (as in
//! every MUC service, anyone may learn that a room exists); what a room holds stays the
//! members'. An occupant is one device in a group's room under a nick; only members may enter,
//! through the same `Action::Read` decision as reading the history. Nicks are unique per user
//! within a room, so a user's devices may share one, and no nick is another member's username
//! (members without a device in the room are shown under it). Occupancy lives in the store with the id
//! of the node holding the device's connection: rows a node left behind when it died stop
//! counting once the cluster stops hearing from it, and are swept by the heartbeat. Changes go
//! to the other occupants' devices as `occupant` frames. A temporary room's group is dissolved,
//! on its owner's behalf, when the last occupant leaves.

use crate::error::{CoreError, CoreResult};
use crate::policy::Action;
use crate::{Caller, Core};
use tidings_bus::{BusEvent, OutFrame};
use tidings_proto::rest::{CreateGroupRequest, Role};
use tidings_proto::ws::{Occupant, OccupantShow, ServerFrame};
use tidings_proto::{ConversationId, DeviceId, ErrorCode, UserId};
use tidings_store::{OccupantRecord, Occupied};

/// Longest room address, in characters (an XMPP localpart allows 1023 bytes; names people
/// type are short).
pub const MAX_ADDRESS_CHARS: usize = 64;
/// Longest nick, in characters.
pub const MAX_NICK_CHARS: usize = 64;
/// Longest status text sent with a room presence, in characters.
pub const MAX_STATUS_CHARS: usize = 512;

/// A room address, lowercased, if it is acceptable: 1 to [`MAX_ADDRESS_CHARS`] characters
/// without spaces, controls or the characters an XMPP localpart forbids, and not all digits
/// (those name groups by id).
pub fn normalize_address(address: &str) -> Option<String> {
    let address = address.to_lowercase();
    let count = address.chars().count();
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(c);
    let acceptable = (1..=MAX_ADDRESS_CHARS).contains(&count)
        && !address.chars().any(forbidden)
        && !address.chars().all(|c| c.is_ascii_digit());
    acceptable.then_some(address)
}

/// What entering a room did, with the room's occupants afterwards (the caller's device too).
#[derive(Clone, Debug)]
pub struct Entered {
    pub change: Change,
    pub occupants: Vec<Occupant>,
}

/// How an occupant changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Entered,
    Renamed {
        previous: String,
    },
    /// The device was there under that nick already: a presence update (status, show).
    Updated,
}

fn occupant(record: &OccupantRecord) -> Occupant {
    Occupant {
        user_id: record.user_id,
        device_id: record.device_id,
        nick: record.nick.clone(),
        show: record.show,
        status: record.status.clone(),
    }
}

fn check_status(status: &Option<String>) -> CoreResult<()> {
    if status
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_STATUS_CHARS)
    {
        return Err(CoreError::new(
            ErrorCode::TooLarge,
            format!("a room status is limited to {MAX_STATUS_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Core {
    /// The group holding the room address `address`, if any.
    pub async fn room_by_address(&self, address: &str) -> CoreResult<Option<ConversationId>> {
        let Some(address) = normalize_address(address) else {
            return Ok(None);
        };
        Ok(self
            .inner
            .store
            .room_by_address(&address)
            .await?
            .map(|room| room.conversation_id))
    }

    /// The room addresses of those of `conversations` the caller may read that have one.
    pub async fn room_addresses(
        &self,
        caller: &Caller,
        conversations: &[ConversationId],
    ) -> CoreResult<Vec<(ConversationId, String)>> {
        let mut rooms = Vec::new();
        for room in self.inner.store.rooms_of(conversations).await? {
            if self
                .authorize(caller, room.conversation_id, Action::Read)
                .await
                .is_ok()
            {
                rooms.push((room.conversation_id, room.address));
            }
        }
        Ok(rooms)
    }

    /// Creates a group named by the room address `address`, owned by the caller, its title the
    /// address as given. `conflict` when another group took the address first.
    pub async fn create_room(&self, caller: &Caller, address: &str) -> CoreResult<ConversationId> {
        let Some(normalized) = normalize_address(address) else {
            return Err(CoreError::invalid(format!(
                "a room address is 1 to {MAX_ADDRESS_CHARS} characters, not all digits, \
                 without spaces or any of \"&'/:<>@"
            )));
        };
        if self
            .inner
            .store
            .room_by_address(&normalized)
            .await?
            .is_some()
        {
            return Err(CoreError::new(ErrorCode::Conflict, "that room exists"));
        }
        let title: String = address.chars().take(128).collect();
        let group = self
            .create_group(
                caller,
                CreateGroupRequest {
                    title,
                    members: Vec::new(),
                },
            )
            .await?;
        if !self
            .inner
            .store
            .claim_room_address(group.id, &normalized, false)
            .await?
        {
            // Another node created the room between our check and our claim: ours goes.
            self.dissolve_group(caller, group.id).await?;
            return Err(CoreError::new(ErrorCode::Conflict, "that room exists"));
        }
        Ok(group.id)
    }

    /// Makes a group's room temporary (dissolved when its last occupant leaves) or not. Only
    /// those who may dissolve the group may decide that; `not_found` when the group has no room
    /// address (a group without one is never temporary).
    pub async fn set_room_temporary(
        &self,
        caller: &Caller,
        id: ConversationId,
        temporary: bool,
    ) -> CoreResult<()> {
        self.authorize(caller, id, Action::Dissolve).await?;
        if !self.inner.store.set_room_temporary(id, temporary).await? {
            return Err(CoreError::not_found("room"));
        }
        Ok(())
    }

    /// Whether a group's room is temporary.
    pub async fn room_is_temporary(&self, caller: &Caller, id: ConversationId) -> CoreResult<bool> {
        self.authorize(caller, id, Action::Read).await?;
        self.temporary(id).await
    }

    async fn temporary(&self, id: ConversationId) -> CoreResult<bool> {
        Ok(self
            .inner
            .store
            .rooms_of(&[id])
            .await?
            .first()
            .is_some_and(|room| room.temporary))
    }

    fn live_nodes(&self) -> Vec<i64> {
        self.inner.cluster.live_nodes()
    }

    /// The occupants of a group's room, in the order they entered; only members may look.
    pub async fn occupants(
        &self,
        caller: &Caller,
        id: ConversationId,
    ) -> CoreResult<Vec<Occupant>> {
        let info = self.authorize(caller, id, Action::Read).await?;
        let records = self.inner.store.occupants(id, &self.live_nodes()).await?;
        // A member removed while in the room stops being listed at once, before their
        // connections take themselves out.
        Ok(records
            .iter()
            .filter(|r| info.roles.contains_key(&r.user_id))
            .map(occupant)
            .collect())
    }

    /// Puts the caller's device in a group's room under `nick`, or changes its nick there.
    /// `conflict` when another user holds the nick in the room, or it is another member's
    /// username. The other occupants' devices
    /// are told; of a nick change, the caller's device too, last.
    pub async fn enter_room(
        &self,
        caller: &Caller,
        id: ConversationId,
        nick: &str,
        status: Option<String>,
        show: Option<OccupantShow>,
    ) -> CoreResult<Entered> {
        let nick = nick.trim();
        if nick.is_empty()
            || nick.chars().count() > MAX_NICK_CHARS
            || nick.chars().any(char::is_control)
        {
            return Err(CoreError::invalid(format!(
                "a nick is 1 to {MAX_NICK_CHARS} characters without control characters"
            )));
        }
        check_status(&status)?;
        let info = self.authorize(caller, id, Action::Read).await?;
        // Members who are not in the room (web users) show under their usernames, so another
        // member's username is taken too.
        if let Some(other) = self.inner.store.user_by_name(&nick.to_lowercase()).await?
            && other.id != caller.user_id
            && info.roles.contains_key(&other.id)
        {
            return Err(CoreError::new(
                ErrorCode::Conflict,
                "that nick is another member's username",
            ));
        }
        let record = OccupantRecord {
            conversation_id: id,
            device_id: caller.device_id,
            user_id: caller.user_id,
            nick: nick.to_owned(),
            node: self.inner.cluster.node as i64,
            joined_at: self.now_ms(),
            show,
            status: status.clone(),
        };
        let change = match self
            .inner
            .store
            .occupy(record.clone(), &self.live_nodes())
            .await?
        {
            Occupied::NickTaken => {
                return Err(CoreError::new(
                    ErrorCode::Conflict,
                    "another member has that nick in this room",
                ));
            }
            Occupied::Unchanged => Change::Updated,
            Occupied::Entered => Change::Entered,
            Occupied::Renamed { previous } => Change::Renamed { previous },
        };
        let occupants = self.occupants(caller, id).await?;
        let previous_nick = match &change {
            Change::Renamed { previous } => Some(previous.clone()),
            Change::Entered | Change::Updated => None,
        };
        let renamed = previous_nick.is_some();
        let frame = ServerFrame::Occupant {
            conversation_id: id,
            occupant: occupant(&record),
            previous_nick,
            present: true,
            status,
            kicked_by: None,
        };
        if renamed {
            // A nick change reaches the device that made it too, after everyone else
            // (XEP-0045 7.6: the room tells the others, then the occupant), so clients that act
            // on their own confirmation find the others already told.
            let mut everyone = occupants.clone();
            everyone.retain(|o| o.device_id != caller.device_id);
            everyone.push(occupant(&record));
            self.tell_occupants(None, &everyone, frame).await;
        } else {
            // Entering, or a presence update (XEP-0045 7.7), goes to the others.
            self.tell_occupants(Some(caller.device_id), &occupants, frame)
                .await;
        }
        Ok(Entered { change, occupants })
    }

    /// Takes the caller's device out of a group's room, if it was there. With `announce`, the
    /// other occupants are told (a member removed from the group is not announced here: the
    /// group's system message already says so). A temporary room left empty is dissolved.
    pub async fn leave_room(
        &self,
        caller: &Caller,
        id: ConversationId,
        status: Option<String>,
        announce: bool,
    ) -> CoreResult<()> {
        check_status(&status)?;
        // Leaving is always allowed: it only removes the caller's own device.
        let Some(record) = self.inner.store.vacate(id, caller.device_id).await? else {
            return Ok(());
        };
        let occupants = self.inner.store.occupants(id, &self.live_nodes()).await?;
        if announce {
            let others: Vec<Occupant> = occupants.iter().map(occupant).collect();
            self.tell_occupants(
                Some(caller.device_id),
                &others,
                ServerFrame::Occupant {
                    conversation_id: id,
                    occupant: occupant(&record),
                    previous_nick: None,
                    present: false,
                    status,
                    kicked_by: None,
                },
            )
            .await;
        }
        if occupants.is_empty() {
            self.dissolve_if_temporary(id).await?;
        }
        Ok(())
    }

    /// Takes every device of `user` out of a group's room (an XMPP kick): they stay a member
    /// and may enter again. Decided like removing the member (`Action::RemoveMember` and the
    /// rank rule), and audited. Everyone in the room is told, the kicked devices included.
    /// `not_found` when the user has no device in the room.
    pub async fn kick_from_room(
        &self,
        caller: &Caller,
        id: ConversationId,
        user: UserId,
        reason: Option<String>,
    ) -> CoreResult<()> {
        check_status(&reason)?;
        let (info, role) = self
            .authorize_group(caller, id, Action::RemoveMember)
            .await?;
        self.outranks(caller, &info, id, Action::RemoveMember, role, user)
            .await?;
        let before = self.inner.store.occupants(id, &self.live_nodes()).await?;
        let kicked: Vec<&OccupantRecord> = before.iter().filter(|o| o.user_id == user).collect();
        if kicked.is_empty() {
            return Err(CoreError::not_found("occupant"));
        }
        let audit = self.audit_entry(
            caller,
            id,
            crate::audit::kinds::ROOM_KICK,
            Some(user),
            serde_json::json!({}),
        );
        self.inner.store.append_audit(audit).await?;
        let everyone: Vec<Occupant> = before.iter().map(occupant).collect();
        for record in kicked {
            self.inner.store.vacate(id, record.device_id).await?;
            self.tell_occupants(
                None,
                &everyone,
                ServerFrame::Occupant {
                    conversation_id: id,
                    occupant: occupant(record),
                    previous_nick: None,
                    present: false,
                    status: reason.clone(),
                    kicked_by: Some(caller.user_id),
                },
            )
            .await;
        }
        if before.iter().all(|o| o.user_id == user) {
            self.dissolve_if_temporary(id).await?;
        }
        Ok(())
    }

    /// Sends `frame` to the occupants' devices, but for `skip` (the device whose own
    /// connection already answered for itself).
    async fn tell_occupants(
        &self,
        skip: Option<DeviceId>,
        occupants: &[Occupant],
        frame: ServerFrame,
    ) {
        let frame = OutFrame::new(frame);
        for other in occupants.iter().filter(|o| Some(o.device_id) != skip) {
            self.publish(BusEvent::DeliverToDevice {
                user: other.user_id,
                device: other.device_id,
                frame: frame.clone(),
            })
            .await;
        }
    }

    /// Dissolves a temporary room's group, on its owner's behalf (the owner, or someone the
    /// owner let dissolve the group, made it temporary).
    async fn dissolve_if_temporary(&self, id: ConversationId) -> CoreResult<()> {
        if !self.temporary(id).await? {
            return Ok(());
        }
        let info = match self.conv_info(id).await {
            Ok(info) => info,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(owner) = info
            .roles
            .iter()
            .find(|(_, role)| **role == Role::Owner)
            .map(|(user, _)| *user)
        else {
            return Ok(());
        };
        self.dissolve_group(&Self::on_behalf_of(owner), id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_lowercase_names_not_ids() {
        assert_eq!(normalize_address("Lounge").as_deref(), Some("lounge"));
        assert_eq!(normalize_address("a.b-c_d").as_deref(), Some("a.b-c_d"));
        assert_eq!(
            normalize_address("12"),
            None,
            "all digits name groups by id"
        );
        assert_eq!(normalize_address("a b"), None);
        assert_eq!(normalize_address("a@b"), None);
        assert_eq!(normalize_address(""), None);
        assert_eq!(normalize_address(&"x".repeat(65)), None);
        assert_eq!(
            normalize_address(&"x".repeat(64)).map(|a| a.len()),
            Some(64)
        );
    }
}
