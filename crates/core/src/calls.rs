//! Voice and video calls: the call state machine, signalling between the devices in a call,
//! and the sweeper that turns unanswered calls into missed calls (docs/calls.md).
//!
//! A call's state lives in the store, not in a node's memory, so any node can take the next
//! frame of a call whose devices are connected elsewhere: every transition is a
//! compare-and-set there (the first accept wins; exactly one of several enders records the
//! call), and frames reach the other side through the bus like every other user-addressed
//! frame. While a call rings, the callee's devices are addressed as the user (every online
//! device rings); once a device accepted, both sides are addressed device to device.
//!
//! Each finished call becomes a `call` message in the direct conversation, appended through the
//! sequencer with the idempotency key `call-<id>`, so a record written twice is stored once.

use crate::error::{CoreError, CoreResult};
use crate::policy::{self, Action, CallParty, CallPhase, CallStep};
use crate::{Caller, Core};
use std::sync::Arc;
use std::time::Duration;
use tidings_bus::{BusEvent, OutFrame};
use tidings_proto::call::{CallEvent, CallId, CallOutcome, CallSignal, IceCandidate};
use tidings_proto::ws::ServerFrame;
use tidings_proto::{ConversationId, DeviceId, ErrorCode, MessageBody, Relations, UserId};
use tidings_store::{CallRecord, CallState, NewMessage};

/// Ringing calls ended per sweep at most; the rest wait for the next sweep.
const SWEEP_BATCH: u32 = 100;
/// Longest ICE candidate line accepted (real ones are about 100 to 200 bytes).
const MAX_CANDIDATE_BYTES: usize = 1024;

/// Who an event goes to.
enum To {
    /// Every connected device of the user.
    User(UserId),
    /// Every connected device of the user but one.
    UserExcept(UserId, DeviceId),
    /// One device.
    Device(UserId, DeviceId),
}

fn new_call_id() -> CallId {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn step_of(signal: &CallSignal) -> CallStep {
    match signal {
        CallSignal::Ringing {} => CallStep::Ringing,
        CallSignal::Accept { .. } => CallStep::Accept,
        CallSignal::Decline { .. } => CallStep::Decline,
        CallSignal::Cancel {} => CallStep::Cancel,
        CallSignal::Hangup {} => CallStep::Hangup,
        CallSignal::Ice { .. } => CallStep::Ice,
        CallSignal::Renegotiate { .. } => CallStep::Renegotiate,
    }
}

/// Where the sending device stands in `call`.
fn party_of(call: &CallRecord, user: UserId, device: DeviceId) -> CallParty {
    if user == call.caller_id {
        if device == call.caller_device {
            CallParty::Caller
        } else {
            CallParty::CallerOtherDevice
        }
    } else if user == call.callee_id {
        match (call.state, call.callee_device) {
            (CallState::Active, Some(accepted)) if accepted != device => {
                CallParty::CalleeOtherDevice
            }
            _ => CallParty::Callee,
        }
    } else {
        CallParty::Outsider
    }
}

fn phase_of(call: &CallRecord) -> CallPhase {
    match call.state {
        CallState::Ringing => CallPhase::Ringing,
        CallState::Active => CallPhase::Active,
    }
}

impl Core {
    fn check_sdp(&self, sdp: &str) -> CoreResult<()> {
        let limit = self.inner.config.limits.max_message_bytes;
        if sdp.trim().is_empty() {
            return Err(CoreError::invalid("sdp must not be empty"));
        }
        if sdp.len() > limit {
            return Err(CoreError::new(
                ErrorCode::TooLarge,
                format!("sdp is limited to {limit} bytes"),
            ));
        }
        Ok(())
    }

    /// Calls the other member of the direct conversation `conversation_id` with an SDP offer.
    /// Returns the call's id and whether the call ended at once as busy (the caller or the
    /// callee already takes part in a call); otherwise every online device of the callee rings.
    pub async fn call_invite(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        sdp: String,
        video: bool,
    ) -> CoreResult<(CallId, bool)> {
        self.check_sdp(&sdp)?;
        // A call is a message's worth of contact: the same membership, block and privacy
        // rules apply, and invites count against the message rate.
        let info = self
            .authorize(caller, conversation_id, Action::SendMessage)
            .await?;
        let Some(callee) = info.peer_of(caller.user_id) else {
            return Err(CoreError::invalid(
                "calls are possible in direct conversations only",
            ));
        };
        policy::direct_contact(info.direct_facts(caller.user_id, callee))?;
        let now = self.now_ms();
        self.inner
            .message_limiter
            .check(&caller.user_id, now)
            .map_err(|wait| CoreError::rate_limited("messages", wait))?;
        let ring_ms = i64::try_from(
            self.inner
                .config
                .calls
                .ring_timeout_secs
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        let call = CallRecord {
            id: new_call_id(),
            conversation_id,
            caller_id: caller.user_id,
            caller_device: caller.device_id,
            callee_id: callee,
            callee_device: None,
            video,
            state: CallState::Ringing,
            created_at: now,
            ring_deadline: now.saturating_add(ring_ms),
            answered_at: None,
        };
        if !self.inner.store.create_call(call.clone()).await? {
            tracing::debug!(call_id = %call.id, "Call refused as busy.");
            self.record_call(&call, CallOutcome::Busy, 0).await;
            return Ok((call.id, true));
        }
        self.call_event(
            &call,
            To::User(callee),
            caller.user_id,
            Some(caller.device_id),
            CallEvent::Invite {
                sdp,
                video,
                ring_until: call.ring_deadline,
            },
        )
        .await;
        // Devices of the callee that are away or in the background learn of it by push (the
        // rules let a call through unless the caller is muted or blocked).
        self.push_incoming_call(caller.user_id, callee, call.conversation_id);
        Ok((call.id, false))
    }

    /// Takes one signal from a device about a call, after checking it against the call's
    /// state and the two participants.
    pub async fn call_signal(
        &self,
        caller: &Caller,
        call_id: &str,
        signal: CallSignal,
    ) -> CoreResult<()> {
        let call = self
            .inner
            .store
            .call(call_id)
            .await?
            .ok_or_else(|| CoreError::not_found("call"))?;
        let party = party_of(&call, caller.user_id, caller.device_id);
        policy::call_signal(party, phase_of(&call), step_of(&signal))?;
        let me = (caller.user_id, Some(caller.device_id));
        // The other side of the sender, once the call is active: one device each way.
        let other = if caller.user_id == call.caller_id {
            match call.callee_device {
                Some(device) => To::Device(call.callee_id, device),
                None => To::User(call.callee_id),
            }
        } else {
            To::Device(call.caller_id, call.caller_device)
        };
        let to_caller = To::Device(call.caller_id, call.caller_device);
        match signal {
            CallSignal::Ringing {} => {
                self.call_event(&call, to_caller, me.0, me.1, CallEvent::Ringing {})
                    .await;
            }
            CallSignal::Accept { sdp } => {
                self.check_sdp(&sdp)?;
                let now = self.now_ms();
                let Some(accepted) = self
                    .inner
                    .store
                    .accept_call(call_id, caller.device_id, now)
                    .await?
                else {
                    return Err(CoreError::new(
                        ErrorCode::Conflict,
                        "the call was answered on another device or has ended",
                    ));
                };
                self.call_event(
                    &accepted,
                    to_caller,
                    me.0,
                    me.1,
                    CallEvent::Accepted { sdp },
                )
                .await;
                self.call_event(
                    &accepted,
                    To::UserExcept(call.callee_id, caller.device_id),
                    me.0,
                    me.1,
                    CallEvent::AnsweredElsewhere {},
                )
                .await;
            }
            CallSignal::Decline { busy } => {
                let ended = self.finish(&call, CallState::Ringing).await?;
                let (outcome, event) = if busy {
                    (CallOutcome::Busy, CallEvent::Busy {})
                } else {
                    (CallOutcome::Declined, CallEvent::Declined {})
                };
                self.call_event(&ended, to_caller, me.0, me.1, event.clone())
                    .await;
                self.call_event(
                    &ended,
                    To::UserExcept(call.callee_id, caller.device_id),
                    me.0,
                    me.1,
                    event,
                )
                .await;
                self.record_call(&ended, outcome, 0).await;
            }
            CallSignal::Cancel {} | CallSignal::Hangup {} if call.state == CallState::Ringing => {
                let ended = self.finish(&call, CallState::Ringing).await?;
                self.call_event(
                    &ended,
                    To::User(call.callee_id),
                    me.0,
                    me.1,
                    CallEvent::Cancelled {},
                )
                .await;
                self.record_call(&ended, CallOutcome::Cancelled, 0).await;
            }
            CallSignal::Cancel {} | CallSignal::Hangup {} => {
                let ended = self.finish(&call, CallState::Active).await?;
                let duration_ms = ended
                    .answered_at
                    .map_or(0, |at| u64::try_from(self.now_ms() - at).unwrap_or(0));
                self.call_event(&ended, other, me.0, me.1, CallEvent::Ended { duration_ms })
                    .await;
                self.record_call(&ended, CallOutcome::Answered, duration_ms)
                    .await;
            }
            CallSignal::Ice { candidate } => {
                check_candidate(&candidate)?;
                self.call_event(&call, other, me.0, me.1, CallEvent::Ice { candidate })
                    .await;
            }
            CallSignal::Renegotiate {
                sdp_type,
                sdp,
                video,
                ice_restart,
            } => {
                self.check_sdp(&sdp)?;
                self.call_event(
                    &call,
                    other,
                    me.0,
                    me.1,
                    CallEvent::Renegotiate {
                        sdp_type,
                        sdp,
                        video,
                        ice_restart,
                    },
                )
                .await;
            }
        }
        Ok(())
    }

    /// Ends the calls `device` took part in when it has not come back within the reconnect
    /// grace, as if it had hung up. Called when a connection of a device in a call closes.
    pub(crate) fn leave_calls_later(&self, caller: Caller, calls: Vec<CallId>) {
        if calls.is_empty() {
            return;
        }
        let core = self.clone();
        let grace = Duration::from_secs(self.inner.config.calls.reconnect_grace_secs);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if core
                .inner
                .hub
                .device_online(caller.user_id, caller.device_id)
            {
                return;
            }
            for id in calls {
                // The call may have ended meanwhile, or never have been accepted by this device:
                // then there is nothing to end for it.
                let Ok(Some(call)) = core.inner.store.call(&id).await else {
                    continue;
                };
                let party = party_of(&call, caller.user_id, caller.device_id);
                let ours = party == CallParty::Caller
                    || (party == CallParty::Callee && call.callee_device == Some(caller.device_id));
                if ours && let Err(e) = core.call_signal(&caller, &id, CallSignal::Hangup {}).await
                {
                    tracing::debug!(call_id = %id, %e, "Could not end a left call.");
                }
            }
        });
    }

    /// Removes `call` if it is still in `state`; `conflict` when something else ended or
    /// answered it first.
    async fn finish(&self, call: &CallRecord, state: CallState) -> CoreResult<CallRecord> {
        self.inner
            .store
            .finish_call(&call.id, state)
            .await?
            .ok_or_else(|| CoreError::new(ErrorCode::Conflict, "the call has changed or ended"))
    }

    async fn call_event(
        &self,
        call: &CallRecord,
        to: To,
        user_id: UserId,
        device_id: Option<DeviceId>,
        event: CallEvent,
    ) {
        let frame = OutFrame::new(ServerFrame::Call {
            call_id: call.id.clone(),
            conversation_id: call.conversation_id,
            user_id,
            device_id,
            event,
        });
        let event = match to {
            To::User(user) => BusEvent::Deliver {
                users: Arc::from(vec![user]),
                except_device: None,
                frame,
            },
            To::UserExcept(user, device) => BusEvent::Deliver {
                users: Arc::from(vec![user]),
                except_device: Some(device),
                frame,
            },
            To::Device(user, device) => BusEvent::DeliverToDevice {
                user,
                device,
                frame,
            },
        };
        if let Err(e) = self.inner.bus.publish(event).await {
            tracing::warn!(%e, "Could not publish a call event.");
        }
    }

    /// Writes the finished call into its conversation. The call is already over in the store;
    /// a failure here loses only the record, and is logged.
    async fn record_call(&self, call: &CallRecord, outcome: CallOutcome, duration_ms: u64) {
        let message = NewMessage {
            conversation_id: call.conversation_id,
            sender_id: call.caller_id,
            sender_device_id: call.caller_device,
            client_msg_id: format!("call-{}", call.id),
            ts: self.now_ms(),
            body: MessageBody::Call {
                call_id: call.id.clone(),
                caller: call.caller_id,
                outcome,
                video: call.video,
                duration_ms,
            },
            relations: Relations::default(),
        };
        let recipients: Arc<[UserId]> = Arc::from(vec![call.caller_id, call.callee_id]);
        if let Err(e) = self.append_server_message(message, recipients).await {
            tracing::warn!(call_id = %call.id, outcome = outcome.as_str(), %e.message, "Could not record a call.");
        }
    }

    /// Ends the calls whose ring timeout passed as missed. Safe on every node at once: each
    /// call is ended by a compare-and-set, and only the node that won tells and records it.
    async fn sweep_missed_calls(&self) -> CoreResult<usize> {
        let due = self
            .inner
            .store
            .calls_ringing_until(self.now_ms(), SWEEP_BATCH)
            .await?;
        let mut ended = 0;
        for call in due {
            let Some(call) = self
                .inner
                .store
                .finish_call(&call.id, CallState::Ringing)
                .await?
            else {
                continue;
            };
            ended += 1;
            let caller = call.caller_id;
            self.call_event(
                &call,
                To::Device(caller, call.caller_device),
                caller,
                None,
                CallEvent::Missed {},
            )
            .await;
            self.call_event(
                &call,
                To::User(call.callee_id),
                caller,
                None,
                CallEvent::Missed {},
            )
            .await;
            self.record_call(&call, CallOutcome::Missed, 0).await;
        }
        Ok(ended)
    }
}

fn check_candidate(candidate: &IceCandidate) -> CoreResult<()> {
    let too_long = candidate.candidate.len() > MAX_CANDIDATE_BYTES
        || candidate.sdp_mid.as_ref().is_some_and(|m| m.len() > 64)
        || candidate
            .username_fragment
            .as_ref()
            .is_some_and(|u| u.len() > 256);
    if too_long {
        return Err(CoreError::invalid("the ICE candidate is too long"));
    }
    Ok(())
}

/// Sweeps for missed calls a few times per ring timeout (at least once a second).
pub(crate) async fn run_sweeper(core: Core) {
    let timeout_ms = core
        .inner
        .config
        .calls
        .ring_timeout_secs
        .saturating_mul(1000);
    let period = Duration::from_millis((timeout_ms / 4).clamp(100, 1000));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match core.sweep_missed_calls().await {
            Ok(0) => {}
            Ok(ended) => tracing::debug!(ended, "Ended unanswered calls as missed."),
            Err(e) => tracing::warn!(%e.message, "Could not sweep unanswered calls."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(state: CallState, callee_device: Option<DeviceId>) -> CallRecord {
        CallRecord {
            id: new_call_id(),
            conversation_id: ConversationId(1),
            caller_id: UserId(1),
            caller_device: DeviceId(10),
            callee_id: UserId(2),
            callee_device,
            video: false,
            state,
            created_at: 0,
            ring_deadline: 1,
            answered_at: None,
        }
    }

    #[test]
    fn parties_follow_the_accepting_device() {
        let ringing = call(CallState::Ringing, None);
        assert_eq!(ringing.id.len(), 32);
        assert_eq!(
            party_of(&ringing, UserId(1), DeviceId(10)),
            CallParty::Caller
        );
        assert_eq!(
            party_of(&ringing, UserId(1), DeviceId(11)),
            CallParty::CallerOtherDevice
        );
        assert_eq!(
            party_of(&ringing, UserId(2), DeviceId(20)),
            CallParty::Callee
        );
        assert_eq!(
            party_of(&ringing, UserId(2), DeviceId(21)),
            CallParty::Callee
        );
        assert_eq!(
            party_of(&ringing, UserId(3), DeviceId(30)),
            CallParty::Outsider
        );
        let active = call(CallState::Active, Some(DeviceId(21)));
        assert_eq!(
            party_of(&active, UserId(2), DeviceId(21)),
            CallParty::Callee
        );
        assert_eq!(
            party_of(&active, UserId(2), DeviceId(20)),
            CallParty::CalleeOtherDevice
        );
    }
}
