//! Identifiers: small integer newtypes so a user id can never be passed where a conversation id is expected.
//!
//! They are JSON numbers. Every backend allocates them from a 63-bit sequence that stays far below
//! 2^53 in practice, so JavaScript clients read them exactly.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// One signed-in device (a browser, a phone, a bot); every login creates one.
    DeviceId
);
id_type!(
    /// A direct or group conversation.
    ConversationId
);
id_type!(
    /// The server-wide id of a stored message.
    MessageId
);

/// A position in a conversation: the first message has sequence 1, and sequences are gap-free.
pub type Seq = u64;
