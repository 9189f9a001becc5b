//! Device signals: ephemeral payloads from one device to one live device of the same user or of
//! another (docs/protocol.md 5.9). The XMPP gateway routes IQs between users' resources as
//! these; native clients may use them for their own device-to-device exchanges.
//!
//! Nothing is stored: a signal goes over the bus as a `DeliverToDevice`, the path call
//! signalling uses once a call is answered, and reaches the device's connections on whichever
//! node holds them. A device with no live connection is refused with `not_found` before
//! anything is published, when the sender may see the user's presence; otherwise the signal is
//! accepted and goes nowhere (`policy::signal_reveals_absence`), so signals cannot probe a
//! hidden user's presence. With several nodes, a device in the background on another node is
//! not visible to this check (other nodes report the users they hold and their devices in the
//! foreground): while its user is online elsewhere the signal is published, and may reach no
//! one.
//!
//! The access decision is `policy::device_signal`: own devices always; another user's device
//! when the sender could write to them directly; and an answer to a device that signalled the
//! sender's connection first (the session keeps those, [`AnswerCredits`]).

use crate::error::{CoreError, CoreResult};
use crate::policy::{self, SignalFacts};
use crate::{Caller, Core};
use std::collections::VecDeque;
use std::time::Duration;
use tidings_bus::{BusEvent, OutFrame};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{DeviceId, ErrorCode, UserId};
use tokio::time::Instant;

/// Longest signal `kind`.
const MAX_KIND_BYTES: usize = 64;

/// How long a connection may answer a signal it received, at most.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(120);

/// Unanswered signals one connection remembers (the newest are kept).
const MAX_CREDITS: usize = 256;

/// The devices that signalled one connection and may get one answer each from it, even when
/// their user would not accept a message from this one (a friends-only user who asked).
#[derive(Debug, Default)]
pub(crate) struct AnswerCredits {
    /// (from user, from device, until), oldest first.
    credits: VecDeque<(UserId, DeviceId, Instant)>,
}

impl AnswerCredits {
    /// A signal from `user`'s `device` arrived.
    pub(crate) fn received(&mut self, user: UserId, device: DeviceId, now: Instant) {
        if self.credits.len() == MAX_CREDITS {
            self.credits.pop_front();
        }
        self.credits.push_back((user, device, now + ANSWER_WINDOW));
    }

    /// Spends one answer to `user`'s `device`, if one is left; expired ones are dropped.
    pub(crate) fn take(&mut self, user: UserId, device: DeviceId, now: Instant) -> bool {
        self.credits.retain(|(_, _, until)| *until > now);
        match self
            .credits
            .iter()
            .position(|(u, d, _)| *u == user && *d == device)
        {
            Some(at) => {
                self.credits.remove(at);
                true
            }
            None => false,
        }
    }
}

fn check_kind(kind: &str) -> CoreResult<()> {
    if kind.is_empty() || kind.len() > MAX_KIND_BYTES || !kind.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(CoreError::invalid(
            "kind must be 1 to 64 bytes of visible ASCII",
        ));
    }
    Ok(())
}

impl Core {
    /// Hands `payload` to the live connections of `to_device` of `to_user` as a
    /// `device_signal` event from the caller's device. `answering` says the caller's
    /// connection holds an unanswered signal from that device (see [`AnswerCredits`]).
    pub async fn device_signal(
        &self,
        caller: &Caller,
        to_user: UserId,
        to_device: DeviceId,
        kind: String,
        payload: serde_json::Value,
        answering: bool,
    ) -> CoreResult<()> {
        check_kind(&kind)?;
        let limit = self.inner.config.limits.max_device_signal_bytes;
        let size = serde_json::to_string(&payload).map_or(usize::MAX, |s| s.len());
        if size > limit {
            return Err(CoreError::new(
                ErrorCode::TooLarge,
                format!("a device signal's payload is limited to {limit} bytes"),
            ));
        }
        let own_device = to_user == caller.user_id;
        let mut facts = SignalFacts {
            own_device,
            answering,
            ..SignalFacts::default()
        };
        if !own_device {
            facts.direct = self.direct_facts(caller.user_id, to_user).await?;
        }
        policy::device_signal(facts)?;
        if !own_device {
            // Signals to others count against the message rate: a flood of them would
            // otherwise close the target's connections as slow consumers.
            self.inner
                .message_limiter
                .check(&caller.user_id, self.now_ms())
                .map_err(|wait| CoreError::rate_limited("messages", wait))?;
        }
        let live = self.inner.hub.device_connected(to_user, to_device)
            || self.inner.cluster.device_awake_elsewhere(to_device)
            || self.inner.cluster.online_elsewhere(to_user);
        if !live {
            if !own_device && !answering {
                facts.sees_presence = self.sees_presence_of(caller.user_id, to_user).await?;
            }
            if policy::signal_reveals_absence(facts) {
                return Err(CoreError::new(
                    ErrorCode::NotFound,
                    "that device has no live connection",
                ));
            }
            // The sender may not know whether the user is online: the signal goes nowhere.
            return Ok(());
        }
        let frame = OutFrame::new(ServerFrame::DeviceSignal {
            from_user: caller.user_id,
            from_device: caller.device_id,
            kind,
            payload,
        });
        self.inner
            .bus
            .publish(BusEvent::DeliverToDevice {
                user: to_user,
                device: to_device,
                frame,
            })
            .await
            .map_err(|e| {
                tracing::warn!(%e, "Could not publish a device signal.");
                CoreError::new(ErrorCode::Unavailable, "the signal could not be sent")
            })
    }

    /// Whether `viewer` may see `subject`'s presence: they share a conversation or are friends,
    /// and the subject's setting shows it to the viewer (blocks are refused before this).
    async fn sees_presence_of(&self, viewer: UserId, subject: UserId) -> CoreResult<bool> {
        if !self.presence_watchers(viewer).await?.contains(&subject) {
            return Ok(false);
        }
        Ok(!self
            .presence_hidden_from(viewer, &[subject])
            .await?
            .contains(&subject))
    }

    /// The id of `user`'s device named `name`, if it is not signed out (XMPP resources are
    /// devices named after them).
    pub async fn device_named(&self, user: UserId, name: &str) -> CoreResult<Option<DeviceId>> {
        Ok(self
            .inner
            .store
            .devices_of(user)
            .await?
            .into_iter()
            .find(|d| d.name == name)
            .map(|d| d.id))
    }

    /// The name of `user`'s device `device`, if it is theirs.
    pub async fn device_name(&self, user: UserId, device: DeviceId) -> CoreResult<Option<String>> {
        Ok(self
            .inner
            .store
            .device(device)
            .await?
            .filter(|d| d.user_id == user)
            .map(|d| d.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_per_signal_and_expire() {
        let mut credits = AnswerCredits::default();
        let now = Instant::now();
        let (alice, phone, laptop) = (UserId(1), DeviceId(10), DeviceId(11));
        assert!(!credits.take(alice, phone, now));
        credits.received(alice, phone, now);
        credits.received(alice, phone, now);
        assert!(!credits.take(alice, laptop, now));
        assert!(credits.take(alice, phone, now));
        assert!(credits.take(alice, phone, now));
        assert!(!credits.take(alice, phone, now));
        credits.received(alice, phone, now);
        assert!(!credits.take(alice, phone, now + ANSWER_WINDOW));
    }

    #[test]
    fn credits_are_bounded() {
        let mut credits = AnswerCredits::default();
        let now = Instant::now();
        for d in 0..(MAX_CREDITS as i64 + 10) {
            credits.received(UserId(1), DeviceId(d), now);
        }
        assert_eq!(credits.credits.len(), MAX_CREDITS);
        assert!(!credits.take(UserId(1), DeviceId(0), now));
        assert!(credits.take(UserId(1), DeviceId(MAX_CREDITS as i64 + 9), now));
    }

    #[test]
    fn kinds_are_short_visible_ascii() {
        assert!(check_kind("xmpp.iq").is_ok());
        assert!(check_kind("").is_err());
        assert!(check_kind("a b").is_err());
        assert!(check_kind(&"k".repeat(65)).is_err());
        assert!(check_kind("é").is_err());
    }
}
