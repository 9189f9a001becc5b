//! Call signalling: the frames that set up, run and end WebRTC calls (docs/calls.md).
//!
//! The server relays session descriptions and ICE candidates between the devices in a call and
//! keeps each call's state; media never passes through it (except relayed by TURN). Every
//! event names the user and device that caused it, and calls have their own ids rather than
//! being tied to a pair of users, so the same frames can serve calls with more participants.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A call: 32 lowercase hex characters chosen by the server.
pub type CallId = String;

/// How a finished call ended, as recorded in the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The callee accepted; the call ended with a hang-up.
    Answered,
    /// Nobody accepted before the ring timeout.
    Missed,
    /// The callee declined.
    Declined,
    /// The callee (or the caller) was already in a call.
    Busy,
    /// The caller gave up before anyone accepted.
    Cancelled,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Declined => "declined",
            CallOutcome::Busy => "busy",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// The type of a session description in renegotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SdpType {
    Offer,
    Answer,
}

/// One ICE candidate as `RTCIceCandidate.toJSON()` gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    /// The `candidate:` attribute line; empty for the end of candidates of a generation.
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "sdpMLineIndex"
    )]
    pub sdp_m_line_index: Option<u16>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "usernameFragment"
    )]
    pub username_fragment: Option<String>,
}

/// What a device in a call (or being called) tells the server, in a `call_signal` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallSignal {
    /// A callee's device is ringing; the caller hears it as `ringing`.
    Ringing {},
    /// A callee's device takes the call with its SDP answer. The first device wins; the
    /// others are told `answered_elsewhere`.
    Accept { sdp: String },
    /// The callee refuses the call (from any of their devices). With `busy`, the callee's
    /// device is busy with something else (the call is recorded as busy).
    Decline {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
    /// The caller gives up before anyone accepted.
    Cancel {},
    /// Either side ends an accepted call.
    Hangup {},
    /// A trickled ICE candidate for the other side.
    Ice { candidate: IceCandidate },
    /// A new offer or answer in an accepted call: video turned on or off, or an ICE restart
    /// after a network change.
    Renegotiate {
        sdp_type: SdpType,
        sdp: String,
        /// Whether the sender now sends video.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
        /// Whether the offer restarts ICE.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ice_restart: bool,
    },
}

impl CallSignal {
    /// The signal's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            CallSignal::Ringing {} => "ringing",
            CallSignal::Accept { .. } => "accept",
            CallSignal::Decline { .. } => "decline",
            CallSignal::Cancel {} => "cancel",
            CallSignal::Hangup {} => "hangup",
            CallSignal::Ice { .. } => "ice",
            CallSignal::Renegotiate { .. } => "renegotiate",
        }
    }
}

/// What the server tells a device about a call, in a `call` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEvent {
    /// To every online device of the callee: someone calls, with their SDP offer.
    Invite {
        sdp: String,
        video: bool,
        /// When the call stops ringing and counts as missed (ms since the epoch).
        ring_until: i64,
    },
    /// To the caller: a callee device rings.
    Ringing {},
    /// To the caller: the callee accepted on the named device, with its SDP answer.
    Accepted { sdp: String },
    /// To the callee's other devices: the call was taken on another device; stop ringing.
    AnsweredElsewhere {},
    /// To the caller, and to the callee's other devices: the callee declined.
    Declined {},
    /// To the caller, and to the callee's other devices: the callee is busy.
    Busy {},
    /// To the callee's devices: the caller gave up.
    Cancelled {},
    /// To the caller and the callee's devices: nobody accepted in time.
    Missed {},
    /// To the other side (and the callee's other devices): the call ended after
    /// `duration_ms` of talk.
    Ended { duration_ms: u64 },
    /// A trickled ICE candidate from the other side.
    Ice { candidate: IceCandidate },
    /// A new offer or answer from the other side.
    Renegotiate {
        sdp_type: SdpType,
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ice_restart: bool,
    },
}

/// `GET /api/v1/rtc/ice-servers`: what to pass as `iceServers` to `RTCPeerConnection`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    /// When the TURN credentials expire (ms since the epoch); ask again before then.
    pub expires_at: i64,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceServer {
    /// `stun:` or `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// For TURN: `expiry:user_id` in the TURN REST scheme (coturn's `use-auth-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// For TURN: base64(HMAC-SHA1(shared secret, username)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::ClientFrame;

    #[test]
    fn signal_frames_decode_as_browsers_write_them() {
        let text = r#"{"type":"call_signal","call_id":"ab","signal":{"kind":"ice",
            "candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host",
            "sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}}}"#;
        let frame: ClientFrame = serde_json::from_str(text).unwrap();
        let ClientFrame::CallSignal { id, signal, .. } = frame else {
            panic!("a call signal")
        };
        assert_eq!(id, None);
        let CallSignal::Ice { candidate } = signal else {
            panic!("an ICE candidate")
        };
        assert_eq!(candidate.sdp_m_line_index, Some(0));
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
    }
}
