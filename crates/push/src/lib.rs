//! Push providers behind the core's [`Pusher`](tidings_core::push::Pusher) trait.
//!
//! # Layout
//! - `ece`: RFC 8291 message encryption (`aes128gcm`).
//! - `vapid`: the VAPID key (RFC 8292), made on first start and kept 0600 in the data
//!   directory, and the ES256 JWT that authenticates each request.
//! - `webpush`: delivery to Web Push services (RFC 8030) and what their answers mean.
//!
//! All cryptography is aws-lc-rs, the provider rustls already uses; HTTP is reqwest.

pub mod ece;
pub mod vapid;
pub mod webpush;

pub use vapid::VapidKey;
pub use webpush::WebPusher;
