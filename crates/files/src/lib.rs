//! Uploads and file storage: one crate, one responsibility.
//!
//! # Layout
//! - [`config`]: [`FilesConfig`], the `files.*` settings (limits, expiry, where bytes live).
//! - [`tus`]: parsing and validating the tus 1.0.0 headers (metadata, checksums, concatenation)
//!   and the ids this crate hands out; pure functions, unit-tested.
//! - [`blobs`]: [`Blobs`], the object layout over any `object_store` backend (local disk by
//!   default, S3-compatible storage by configuration): upload segments, staging objects and content-addressed bytes under
//!   `sha256/<hex>`.
//! - [`thumbs`]: rendering image thumbnails (a few fixed sizes, within decoding limits).
//! - [`service`]: [`Files`], the upload state machine (create, append, terminate, concatenate,
//!   complete, expire) and downloads. It decides; the HTTP layer only translates.
//!
//! Durable facts (offsets, owners, files, references, shares) live in the
//! [`tidings_store::Store`]; bytes live in object storage. The store is written only after the
//! bytes it describes are safely stored, so a crash leaves at most unreferenced bytes, never a
//! record pointing at bytes that are not there.

pub mod blobs;
pub mod config;
pub mod service;
pub mod thumbs;
pub mod tus;

pub use blobs::Blobs;
pub use config::FilesConfig;
pub use service::{ByteStream, Download, Files, NewUpload, Thumbnail, UploadSlot};
