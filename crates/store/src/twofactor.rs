//! Records of two-factor sign-in: a user's TOTP enrolment and its recovery codes.
//!
//! The store keeps the TOTP secret as the opaque bytes the core hands it (the core encrypts
//! them), the last time step a code was accepted for (so a code is never accepted twice), and
//! SHA-256 hashes of recovery codes (each spent at most once).

use tidings_proto::UserId;

/// A user's TOTP enrolment, pending (not yet confirmed with a first code) or confirmed.
#[derive(Clone, PartialEq, Eq)]
pub struct TwoFactorRecord {
    pub user_id: UserId,
    /// The secret as the core sealed it; never shown to anyone.
    pub secret: Vec<u8>,
    pub created_at: i64,
    /// When the first code confirmed the enrolment; sign-ins need a second factor from then on.
    pub confirmed_at: Option<i64>,
    /// The latest TOTP time step a code was accepted for (0 when none).
    pub last_step: i64,
    /// Recovery codes not spent yet.
    pub recovery_codes_left: u32,
}

impl std::fmt::Debug for TwoFactorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of every log and panic message, even sealed.
        f.debug_struct("TwoFactorRecord")
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .field("recovery_codes_left", &self.recovery_codes_left)
            .finish_non_exhaustive()
    }
}
