//! Settings of uploads and file storage (`files.*`); the doc comments become the comments of
//! `tidings.example.toml`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Uploads and file storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Directory for uploaded bytes on local disk. Empty means "files" inside the data
    /// directory.
    pub dir: PathBuf,
    /// Largest file in bytes (advertised as `Tus-Max-Size`); larger uploads are refused before
    /// any byte is stored.
    pub max_file_bytes: u64,
    /// Bytes one user may store: their files plus the declared sizes of their unfinished
    /// uploads. An upload that would go over is refused before any byte is stored.
    pub user_quota_bytes: u64,
    /// Seconds an upload may stay unfinished; then it and its bytes are removed.
    pub upload_expiry_secs: u64,
    /// Seconds a signed download link (for `<img src>`) stays valid.
    pub link_ttl_secs: u64,
    /// Largest image in bytes that gets thumbnails; rendering holds the whole image in memory.
    pub max_thumbnail_source_bytes: u64,
    /// S3-compatible bucket to store bytes in instead of local disk; empty keeps them in
    /// `files.dir`.
    pub s3_bucket: String,
    /// Endpoint URL of an S3-compatible server, e.g. "http://127.0.0.1:9000"; empty means
    /// Amazon S3.
    pub s3_endpoint: String,
    /// S3 region; empty means "us-east-1".
    pub s3_region: String,
    /// S3 access key id; empty means the usual AWS environment variables.
    pub s3_access_key_id: String,
    /// S3 secret access key (better given as TIDINGS_FILES_S3_SECRET_ACCESS_KEY).
    pub s3_secret_access_key: String,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            dir: PathBuf::new(),
            max_file_bytes: 4 * 1024 * 1024 * 1024,
            user_quota_bytes: 20 * 1024 * 1024 * 1024,
            upload_expiry_secs: 24 * 3600,
            link_ttl_secs: 300,
            max_thumbnail_source_bytes: 32 * 1024 * 1024,
            s3_bucket: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
        }
    }
}
