//! Records of the MQTT gateway: persistent sessions and retained messages, so both outlive a
//! restart of the server.
//!
//! The store keeps them as opaque bytes: the MQTT transport owns their encoding (it changes
//! with the protocol, not with the schema), and the store only needs to find them by key.

use tidings_proto::UserId;

/// One persistent MQTT session (a session with an expiry: MQTT 5 session expiry, or an MQTT
/// 3.1.1 connection without clean session): subscriptions, unacknowledged deliveries, queued
/// messages, QoS 2 packet ids received, IM positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSessionRecord {
    /// A session belongs to its user: two users may use the same client id.
    pub user_id: UserId,
    pub client_id: String,
    /// The session's state, as the MQTT transport encoded it.
    pub state: Vec<u8>,
    /// When it was last written, ms since the epoch.
    pub updated_at: i64,
}

/// One retained message of a broker topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttRetainedRecord {
    pub topic: String,
    /// The message, as the MQTT transport encoded it.
    pub message: Vec<u8>,
}
