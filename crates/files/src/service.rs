//! [`Files`]: the upload state machine and downloads.
//!
//! An upload moves forward one append request at a time. Each request streams its body into a
//! new segment object; only after that object is stored does the store's offset move
//! (compare-and-set), so the offset a client reads back always describes bytes that exist.
//! A request cut off mid-way keeps what arrived (that is what makes a broken upload resume
//! from where it broke), unless it carried a checksum, which cannot be verified on part of a
//! body. When the offset reaches the length, the segments are assembled into one object while
//! hashing, the object is moved to its content address, and the file is recorded.

use crate::blobs::{BlobError, Blobs};
use crate::config::FilesConfig;
use crate::tus::{self, Checksum, ChecksumAlgorithm, Concat};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_core::{Caller, Clock, CoreError, CoreResult};
use tidings_proto::{ErrorCode, UserId};
use tidings_store::{FileRecord, Store, UploadKind, UploadRecord};
use tokio::task::JoinHandle;

/// A request body as the transport hands it over. An error item means the client went away.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Bytes read to sniff a file's type and an image's size (a JPEG's size can follow tens of
/// KiB of metadata).
const SNIFF_BYTES: u64 = 64 * 1024;
/// Upload states (locks and running hashes) kept in memory at most; beyond this, idle ones are
/// dropped and their hash is recomputed from storage when they complete.
const MAX_TRACKED_UPLOADS: usize = 10_000;
/// A request body that sends nothing for this long counts as cut off: its bytes so far are
/// kept and the upload's lock is released, so a stalled client cannot hold its upload (and
/// every `HEAD` waiting for it) forever.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// Expired uploads removed per store query by the janitor.
const EXPIRY_BATCH: u32 = 100;

/// What a client asks for when it creates an upload.
#[derive(Clone, Debug, Default)]
pub struct NewUpload {
    /// `Upload-Length`; required except for a final concatenation.
    pub length: Option<u64>,
    /// `Upload-Metadata`, unparsed.
    pub metadata: Option<String>,
    /// `Upload-Concat`, unparsed.
    pub concat: Option<String>,
}

/// An HTTP upload slot (XEP-0363): paths on the HTTP listener, with their signatures.
#[derive(Clone, Debug)]
pub struct UploadSlot {
    /// Where the client `PUT`s the file's bytes, until `expires_at`.
    pub put_path: String,
    /// Where anyone holding this path may `GET` the file once it is uploaded.
    pub get_path: String,
    /// When the `PUT` path stops working (ms since the epoch).
    pub expires_at: i64,
}

/// A file ready to stream: its record and the requested bytes.
pub struct Download {
    pub file: FileRecord,
    pub body: BoxStream<'static, Result<Bytes, BlobError>>,
}

/// What is kept in memory per upload between requests: a lock so one request at a time
/// appends, and the SHA-256 of the bytes so far, so a finished single-segment upload needs no
/// second read.
#[derive(Default)]
struct UploadState {
    /// The hash of the first `.0` bytes of the upload.
    hasher: Option<(u64, Sha256)>,
}

struct Inner {
    store: Arc<dyn Store>,
    blobs: Blobs,
    clock: Arc<dyn Clock>,
    config: FilesConfig,
    /// Signs download links; derived by the binary from the server's signing key, so every
    /// node of a deployment accepts the links any of them issued.
    link_key: [u8; 32],
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
    /// Held while bytes are moved to (or deleted from) their content address together with the
    /// store's reference count, so a deletion of the last reference cannot remove bytes a
    /// completing upload has just found in place.
    content: tokio::sync::Mutex<()>,
    /// Bounds how many thumbnails render at once (each holds a decoded image in memory).
    renderers: tokio::sync::Semaphore,
}

/// A thumbnail ready to serve.
pub struct Thumbnail {
    pub bytes: Bytes,
    pub content_type: &'static str,
    /// A strong validator: the source's hash and the size.
    pub etag: String,
}

/// The upload and download service; cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

impl Files {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Blobs,
        clock: Arc<dyn Clock>,
        config: FilesConfig,
        link_key: [u8; 32],
    ) -> Files {
        Files {
            inner: Arc::new(Inner {
                store,
                blobs,
                clock,
                config,
                link_key,
                uploads: Mutex::new(HashMap::new()),
                content: tokio::sync::Mutex::new(()),
                renderers: tokio::sync::Semaphore::new(crate::thumbs::RENDERERS),
            }),
        }
    }

    pub fn config(&self) -> &FilesConfig {
        &self.inner.config
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Creates an upload; with `body` (creation-with-upload) its first bytes are appended at
    /// once. A final concatenation is assembled and completed before this returns.
    pub async fn create(
        &self,
        caller: &Caller,
        request: NewUpload,
        body: Option<(Option<u64>, Option<Checksum>, ByteStream)>,
    ) -> CoreResult<UploadRecord> {
        let metadata = tus::parse_metadata(request.metadata.as_deref().unwrap_or_default())?;
        let concat = request
            .concat
            .as_deref()
            .map(tus::parse_concat)
            .transpose()?;
        let now = self.now();
        let expires_at = now.saturating_add(
            i64::try_from(self.inner.config.upload_expiry_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        );
        let mut record = UploadRecord {
            id: tus::new_id(),
            owner: caller.user_id,
            length: 0,
            offset: 0,
            kind: UploadKind::Single,
            parts: Vec::new(),
            metadata: metadata.raw,
            name: metadata.name,
            created_at: now,
            expires_at,
            file_id: None,
        };
        if let Some(Concat::Final(parts)) = concat {
            if request.length.is_some() {
                return Err(CoreError::invalid(
                    "a final concatenation takes no Upload-Length",
                ));
            }
            if body.is_some() {
                return Err(CoreError::forbidden("a final concatenation takes no body"));
            }
            return self.concatenate(caller, record, parts).await;
        }
        let length = request.length.ok_or_else(|| {
            CoreError::invalid("Upload-Length is required (deferred lengths are not supported)")
        })?;
        self.check_size(length)?;
        record.length = length;
        if concat == Some(Concat::Partial) {
            record.kind = UploadKind::Partial;
        }
        let quota = self.inner.config.user_quota_bytes;
        if !self
            .inner
            .store
            .create_upload(record.clone(), quota)
            .await?
        {
            return Err(CoreError::new(
                ErrorCode::QuotaExceeded,
                "this upload would exceed your storage quota",
            ));
        }
        match body {
            Some((content_length, checksum, body)) => {
                self.append(caller, &record.id, 0, content_length, checksum, body)
                    .await
            }
            None if length == 0 && record.kind == UploadKind::Single => {
                // Nothing will ever be appended: the empty file is complete now.
                let files = self.clone();
                let upload = record.clone();
                self.detached(async move { files.complete(&upload, None).await })
                    .await?;
                self.owned_upload(caller.user_id, &record.id).await
            }
            None => Ok(record),
        }
    }

    fn check_size(&self, length: u64) -> CoreResult<()> {
        let max = self.inner.config.max_file_bytes;
        if length > max {
            return Err(CoreError::new(
                ErrorCode::TooLarge,
                format!("files may be at most {max} bytes"),
            ));
        }
        Ok(())
    }

    /// The caller's upload, for `HEAD`: unknown and malformed ids are `not_found`, someone
    /// else's is `forbidden`, an expired one is `gone`.
    pub async fn status(&self, caller: &Caller, id: &str) -> CoreResult<UploadRecord> {
        let state = self.state(id)?;
        // Waiting for an append in progress means the offset answered is the one it leaves.
        let _guard = state.lock().await;
        self.owned_upload(caller.user_id, id).await
    }

    async fn owned_upload(&self, owner: UserId, id: &str) -> CoreResult<UploadRecord> {
        if !tus::is_valid_id(id) {
            return Err(CoreError::not_found("upload"));
        }
        let upload = self
            .inner
            .store
            .upload(id)
            .await?
            .ok_or_else(|| CoreError::not_found("upload"))?;
        if upload.owner != owner {
            return Err(CoreError::forbidden("this upload belongs to someone else"));
        }
        if upload.file_id.is_none() && upload.expires_at <= self.now() {
            return Err(CoreError::new(ErrorCode::Gone, "this upload has expired"));
        }
        Ok(upload)
    }

    /// The in-memory state of an upload, created on first use.
    fn state(&self, id: &str) -> CoreResult<Arc<tokio::sync::Mutex<UploadState>>> {
        if !tus::is_valid_id(id) {
            return Err(CoreError::not_found("upload"));
        }
        let mut uploads = self.inner.uploads.lock().expect("upload states");
        if uploads.len() >= MAX_TRACKED_UPLOADS && !uploads.contains_key(id) {
            uploads.retain(|_, state| Arc::strong_count(state) > 1);
        }
        Ok(Arc::clone(uploads.entry(id.to_owned()).or_default()))
    }

    fn forget(&self, id: &str) {
        self.inner.uploads.lock().expect("upload states").remove(id);
    }

    /// Runs `work` as its own task: a client that disconnects drops the request's future, and
    /// an append must still record the bytes that did arrive.
    async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = CoreResult<T>> + Send + 'static,
    ) -> CoreResult<T> {
        tokio::spawn(work)
            .await
            .map_err(|e| CoreError::internal("upload task", e))?
    }

    /// Appends `body` at `offset` (`PATCH`). Returns the upload as it now stands.
    pub async fn append(
        &self,
        caller: &Caller,
        id: &str,
        offset: u64,
        content_length: Option<u64>,
        checksum: Option<Checksum>,
        body: ByteStream,
    ) -> CoreResult<UploadRecord> {
        self.append_as(caller.user_id, id, offset, content_length, checksum, body)
            .await
    }

    /// [`append`](Self::append) for the upload of `owner`, whoever proved the right to it.
    async fn append_as(
        &self,
        owner: UserId,
        id: &str,
        offset: u64,
        content_length: Option<u64>,
        checksum: Option<Checksum>,
        body: ByteStream,
    ) -> CoreResult<UploadRecord> {
        let state = self.state(id)?;
        let files = self.clone();
        let id = id.to_owned();
        self.detached(async move {
            let mut state = state.lock().await;
            let upload = files.owned_upload(owner, &id).await?;
            if upload.kind == UploadKind::Final {
                return Err(CoreError::forbidden(
                    "a final concatenation cannot be patched",
                ));
            }
            if upload.file_id.is_some() {
                return Err(CoreError::new(
                    ErrorCode::Conflict,
                    "the upload is complete",
                ));
            }
            if offset != upload.offset {
                return Err(CoreError::new(
                    ErrorCode::Conflict,
                    format!("the upload is at offset {}, not {offset}", upload.offset),
                ));
            }
            let remaining = upload.length - upload.offset;
            if content_length.is_some_and(|n| n > remaining) {
                return Err(CoreError::new(
                    ErrorCode::TooLarge,
                    format!("only {remaining} more bytes fit in this upload"),
                ));
            }
            let hasher = match (&state.hasher, upload.kind, upload.offset) {
                (_, UploadKind::Single, 0) => Some(Sha256::new()),
                (Some((at, hasher)), UploadKind::Single, offset) if *at == offset => {
                    Some(hasher.clone())
                }
                _ => None,
            };
            let (written, hasher) = files
                .write_segment(&upload, remaining, checksum, hasher, body)
                .await?;
            let new_offset = upload.offset + written;
            if written > 0
                && !files
                    .inner
                    .store
                    .advance_upload(&upload.id, upload.offset, new_offset)
                    .await?
            {
                // Another node moved the offset meanwhile; our segment describes nothing.
                let path = Blobs::segment_path(&upload.id, upload.offset);
                files.inner.blobs.delete(&path).await.map_err(storage)?;
                return Err(CoreError::new(ErrorCode::Conflict, "the upload moved on"));
            }
            state.hasher = hasher.map(|h| (new_offset, h));
            let mut upload = upload;
            upload.offset = new_offset;
            if new_offset == upload.length && upload.kind == UploadKind::Single {
                let hasher = state.hasher.take().map(|(_, h)| h);
                files.complete(&upload, hasher).await?;
                drop(state);
                files.forget(&upload.id);
                return files.owned_upload(owner, &upload.id).await;
            }
            Ok(upload)
        })
        .await
    }

    /// Streams a request body into a new segment. Returns how many bytes were stored and the
    /// running hash after them; stores nothing on a checksum mismatch, an overrun, or a cut
    /// request that carried a checksum.
    async fn write_segment(
        &self,
        upload: &UploadRecord,
        remaining: u64,
        checksum: Option<Checksum>,
        mut hasher: Option<Sha256>,
        mut body: ByteStream,
    ) -> CoreResult<(u64, Option<Sha256>)> {
        enum Check {
            Sha1(Sha1),
            Sha256(Sha256),
        }
        let mut check = checksum.as_ref().map(|c| match c.algorithm {
            ChecksumAlgorithm::Sha1 => Check::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Check::Sha256(Sha256::new()),
        });
        let path = Blobs::segment_path(&upload.id, upload.offset);
        let mut writer = None;
        let mut cut = false;
        loop {
            let chunk = match tokio::time::timeout(BODY_IDLE, body.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    tracing::debug!(upload = %upload.id, %e, "Upload request cut off.");
                    cut = true;
                    break;
                }
                Err(_) => {
                    tracing::debug!(upload = %upload.id, "Upload request stalled.");
                    cut = true;
                    break;
                }
            };
            if chunk.is_empty() {
                continue;
            }
            let written = writer
                .as_ref()
                .map_or(0, |w: &crate::blobs::ObjectWriter| w.written());
            if written + chunk.len() as u64 > remaining {
                if let Some(writer) = writer {
                    writer.abort().await;
                }
                return Err(CoreError::new(
                    ErrorCode::TooLarge,
                    format!("only {remaining} more bytes fit in this upload"),
                ));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            match check.as_mut() {
                Some(Check::Sha1(h)) => h.update(&chunk),
                Some(Check::Sha256(h)) => h.update(&chunk),
                None => {}
            }
            if writer.is_none() {
                writer = Some(self.inner.blobs.writer(&path).await.map_err(storage)?);
            }
            if let Some(w) = writer.as_mut() {
                w.write(chunk).await.map_err(storage)?;
            }
        }
        if let (Some(expected), Some(check)) = (checksum, check) {
            let actual = match check {
                Check::Sha1(h) => h.finalize().to_vec(),
                Check::Sha256(h) => h.finalize().to_vec(),
            };
            if cut || actual != expected.digest {
                if let Some(writer) = writer {
                    writer.abort().await;
                }
                return Err(CoreError::new(
                    ErrorCode::ChecksumMismatch,
                    "the body does not match Upload-Checksum; nothing was stored",
                ));
            }
        }
        let Some(writer) = writer else {
            return Ok((0, hasher));
        };
        let written = writer.written();
        writer.finish().await.map_err(storage)?;
        Ok((written, hasher))
    }

    /// Turns a fully received upload into a file: assembles and hashes its bytes (unless one
    /// segment and a running hash make that unnecessary), moves them to their content address,
    /// and records the file.
    async fn complete(&self, upload: &UploadRecord, hasher: Option<Sha256>) -> CoreResult<()> {
        let blobs = &self.inner.blobs;
        let sources: Vec<(String, u64)> = match upload.kind {
            UploadKind::Final => {
                let mut sources = Vec::with_capacity(upload.parts.len());
                for part in &upload.parts {
                    let record = self.inner.store.upload(part).await?;
                    let record = record.ok_or_else(|| CoreError::not_found("partial upload"))?;
                    sources.push((record.id, record.length));
                }
                sources
            }
            _ => vec![(upload.id.clone(), upload.length)],
        };
        let segments = blobs.segments(&upload.id).await.map_err(storage)?;
        let (source, sha256) = match hasher {
            Some(hasher) if segments.len() == 1 && upload.kind == UploadKind::Single => {
                (segments[0].path.clone(), hasher.finalize().into())
            }
            _ => {
                let staging = Blobs::staging_path(&upload.id);
                let sha256 = self.assemble(&staging, &sources).await?;
                (staging, sha256)
            }
        };
        let target = Blobs::blob_path(&sha256);
        {
            let _content = self.inner.content.lock().await;
            if blobs.exists(&target).await.map_err(storage)? {
                blobs.delete(&source).await.map_err(storage)?;
            } else {
                blobs.rename(&source, &target).await.map_err(storage)?;
            }
            let head = blobs
                .head_bytes(&target, SNIFF_BYTES)
                .await
                .map_err(storage)?;
            let content_type = tus::sniff_content_type(&head);
            let (width, height) = tus::image_size(content_type, &head).unzip();
            let file = FileRecord {
                id: tus::new_id(),
                owner: upload.owner,
                sha256,
                size: upload.length,
                content_type: content_type.to_owned(),
                name: upload.name.clone(),
                created_at: self.now(),
                width,
                height,
            };
            let consumed: Vec<String> = if upload.kind == UploadKind::Final {
                upload.parts.clone()
            } else {
                Vec::new()
            };
            self.inner
                .store
                .complete_upload(&upload.id, &consumed, file)
                .await?;
        }
        for (id, _) in &sources {
            blobs.delete_upload(id).await.map_err(storage)?;
        }
        Ok(())
    }

    /// Copies the segments of `sources` in order into one object at `staging`, hashing as it
    /// goes, and checks that they are contiguous and complete.
    async fn assemble(
        &self,
        staging: &object_store::path::Path,
        sources: &[(String, u64)],
    ) -> CoreResult<[u8; 32]> {
        let blobs = &self.inner.blobs;
        let mut writer = blobs.writer(staging).await.map_err(storage)?;
        let mut hasher = Sha256::new();
        for (id, length) in sources {
            let mut expected = 0;
            for segment in blobs.segments(id).await.map_err(storage)? {
                if segment.offset != expected {
                    writer.abort().await;
                    return Err(CoreError::internal(
                        "assembling an upload",
                        format!("upload {id} has a hole at {expected}"),
                    ));
                }
                expected += segment.size;
                let mut stream = blobs.read(&segment.path, None).await.map_err(storage)?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(storage)?;
                    hasher.update(&chunk);
                    writer.write(chunk).await.map_err(storage)?;
                }
            }
            if expected != *length {
                writer.abort().await;
                return Err(CoreError::internal(
                    "assembling an upload",
                    format!("upload {id} holds {expected} of {length} bytes"),
                ));
            }
        }
        writer.finish().await.map_err(storage)?;
        Ok(hasher.finalize().into())
    }

    /// Creates and completes a final upload from the caller's finished partial uploads.
    async fn concatenate(
        &self,
        caller: &Caller,
        mut record: UploadRecord,
        parts: Vec<String>,
    ) -> CoreResult<UploadRecord> {
        let mut length: u64 = 0;
        for part in &parts {
            let upload = self.owned_upload(caller.user_id, part).await?;
            if upload.kind != UploadKind::Partial {
                return Err(CoreError::invalid(
                    "only partial uploads can be concatenated",
                ));
            }
            if upload.offset != upload.length || upload.file_id.is_some() {
                return Err(CoreError::invalid(
                    "every partial upload must be finished before concatenation",
                ));
            }
            if parts.iter().filter(|p| *p == part).count() > 1 {
                return Err(CoreError::invalid("a partial upload may be used once"));
            }
            length = length.saturating_add(upload.length);
        }
        self.check_size(length)?;
        record.kind = UploadKind::Final;
        record.length = length;
        record.parts = parts;
        // The parts already count against the quota and are consumed by this upload.
        self.inner
            .store
            .create_upload(record.clone(), u64::MAX)
            .await?;
        let files = self.clone();
        let upload = record.clone();
        self.detached(async move { files.complete(&upload, None).await })
            .await?;
        self.owned_upload(caller.user_id, &record.id).await
    }

    /// Removes the caller's upload and its bytes (termination extension).
    pub async fn terminate(&self, caller: &Caller, id: &str) -> CoreResult<()> {
        let state = self.state(id)?;
        let files = self.clone();
        let owner = caller.user_id;
        let id = id.to_owned();
        self.detached(async move {
            let _guard = state.lock().await;
            let upload = files.owned_upload(owner, &id).await?;
            files.remove_upload(&upload).await?;
            files.forget(&id);
            Ok(())
        })
        .await
    }

    async fn remove_upload(&self, upload: &UploadRecord) -> CoreResult<()> {
        // The record goes first: a crash in between leaves unreferenced bytes, never a record
        // whose bytes are gone.
        self.inner.store.delete_upload(&upload.id).await?;
        if upload.file_id.is_none() {
            self.inner
                .blobs
                .delete_upload(&upload.id)
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Removes expired uploads and their bytes; returns how many.
    pub async fn remove_expired(&self) -> CoreResult<usize> {
        let mut removed = 0;
        loop {
            let expired = self
                .inner
                .store
                .expired_uploads(self.now(), EXPIRY_BATCH)
                .await?;
            let batch = expired.len();
            for upload in expired {
                let state = self.state(&upload.id)?;
                // An upload busy with a request is left for the next round.
                let Ok(_guard) = state.try_lock() else {
                    continue;
                };
                self.remove_upload(&upload).await?;
                self.forget(&upload.id);
                removed += 1;
            }
            if batch < EXPIRY_BATCH as usize {
                return Ok(removed);
            }
        }
    }

    /// Starts the background task that removes expired uploads, checking at half the expiry
    /// time (at least every minute, at most four times a second).
    pub fn spawn_janitor(&self) -> JoinHandle<()> {
        let files = self.clone();
        let half = Duration::from_millis(self.inner.config.upload_expiry_secs.saturating_mul(500));
        let period = half.clamp(Duration::from_millis(250), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match files.remove_expired().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "Removed expired uploads."),
                    Err(e) => tracing::warn!(%e, "Could not remove expired uploads."),
                }
            }
        })
    }

    /// The file, if the caller may read it: its owner, or a member of a conversation it was
    /// shared in. Anyone else gets `not_found`, so ids cannot be probed.
    pub async fn file_for(&self, caller: &Caller, id: &str) -> CoreResult<FileRecord> {
        if !tus::is_valid_id(id) {
            return Err(CoreError::not_found("file"));
        }
        let store = &self.inner.store;
        let file = store.file(id).await?;
        match file {
            Some(file) if store.can_read_file(id, caller.user_id).await? => Ok(file),
            _ => Err(CoreError::not_found("file")),
        }
    }

    /// Streams a file the caller may read, whole or the bytes in `range`.
    pub async fn download(
        &self,
        caller: &Caller,
        id: &str,
        range: impl FnOnce(&FileRecord) -> Option<Range<u64>>,
    ) -> CoreResult<Download> {
        let file = self.file_for(caller, id).await?;
        self.stream(file, range).await
    }

    /// A link to a file the caller may read that works without a token until it expires:
    /// `(path with query, expires_at)`.
    pub async fn link(&self, caller: &Caller, id: &str) -> CoreResult<(String, i64)> {
        let file = self.file_for(caller, id).await?;
        Ok(self.signed_link(&file.id))
    }

    /// A signed link to the file `id`, valid for `link_ttl_secs`: `(path with query,
    /// expires_at)`. Whoever asks has already been allowed to read the file.
    fn signed_link(&self, id: &str) -> (String, i64) {
        let ttl_ms = self.inner.config.link_ttl_secs.saturating_mul(1000);
        let expires_at = self
            .now()
            .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let signature = self.link_signature(id, expires_at);
        let url = format!("/api/v1/files/{id}?expires={expires_at}&signature={signature}");
        (url, expires_at)
    }

    fn link_signature(&self, id: &str, expires_at: i64) -> String {
        self.sign(&format!("tidings.file-link.v1:{id}:{expires_at}"))
    }

    /// The URL-safe HMAC-SHA256 of `message` under the link key, for signed URLs.
    fn sign(&self, message: &str) -> String {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.inner.link_key)
            .expect("HMAC takes any key length");
        mac.update(message.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// An HTTP upload slot (XEP-0363) for a file of `size` bytes: an upload of the caller's,
    /// with a URL to `PUT` its bytes to without a token until the upload expires, and a URL
    /// anyone holding it may `GET` the finished file from. Size limits and the quota are those
    /// of any upload.
    pub async fn upload_slot(
        &self,
        caller: &Caller,
        filename: &str,
        size: u64,
        content_type: Option<&str>,
    ) -> CoreResult<UploadSlot> {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let filename = filename.trim();
        if filename.is_empty() || filename.len() > 255 || filename.chars().any(char::is_control) {
            return Err(CoreError::invalid(
                "the file name must be 1 to 255 bytes without control characters",
            ));
        }
        let mut metadata = format!("filename {}", b64(filename));
        if let Some(kind) = content_type.filter(|t| !t.is_empty() && t.len() <= 255) {
            metadata.push_str(&format!(",filetype {}", b64(kind)));
        }
        let upload = self
            .create(
                caller,
                NewUpload {
                    length: Some(size),
                    metadata: Some(metadata),
                    concat: None,
                },
                None,
            )
            .await?;
        // The path's last segment is only for clients that guess a type from it; the name
        // itself is kept in the upload's metadata.
        let segment: String = filename
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let expires_at = upload.expires_at;
        let put = self.slot_signature("put", &upload.id, expires_at);
        let get = self.slot_signature("get", &upload.id, 0);
        Ok(UploadSlot {
            put_path: format!(
                "/api/v1/slots/{}/{segment}?expires={expires_at}&signature={put}",
                upload.id
            ),
            get_path: format!("/api/v1/slots/{}/{segment}?signature={get}", upload.id),
            expires_at,
        })
    }

    /// Signs a slot URL: `purpose` keeps a download URL from being used to upload.
    fn slot_signature(&self, purpose: &str, id: &str, expires_at: i64) -> String {
        self.sign(&format!(
            "tidings.upload-slot.v1:{purpose}:{id}:{expires_at}"
        ))
    }

    fn check_slot(&self, purpose: &str, id: &str, expires_at: i64, signature: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.slot_signature(purpose, id, expires_at);
        tus::is_valid_id(id) && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    }

    /// Receives the whole body of a slot's upload (`PUT`). The body must be exactly the size
    /// the slot was asked for; a slot is filled once. An expired, altered or foreign URL is
    /// `not_found`.
    pub async fn put_slot(
        &self,
        id: &str,
        expires_at: i64,
        signature: &str,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> CoreResult<FileRecord> {
        if !self.check_slot("put", id, expires_at, signature) || expires_at <= self.now() {
            return Err(CoreError::not_found("upload slot"));
        }
        let upload = self
            .inner
            .store
            .upload(id)
            .await?
            .ok_or_else(|| CoreError::not_found("upload slot"))?;
        if upload.file_id.is_some() || upload.offset > 0 {
            return Err(CoreError::new(
                ErrorCode::Conflict,
                "this slot has already been used",
            ));
        }
        if content_length != Some(upload.length) {
            let too_large = content_length.is_some_and(|n| n > upload.length);
            return Err(CoreError::new(
                if too_large {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::InvalidField
                },
                format!(
                    "the body must be exactly the {} bytes the slot was requested for",
                    upload.length
                ),
            ));
        }
        let done = self
            .append_as(upload.owner, id, 0, content_length, None, body)
            .await?;
        let file_id = done
            .file_id
            .ok_or_else(|| CoreError::invalid("the upload ended before all its bytes came"))?;
        self.inner
            .store
            .file(&file_id)
            .await?
            .ok_or_else(|| CoreError::not_found("file"))
    }

    /// Where a slot's download URL leads: a signed link to the finished file, valid for
    /// `link_ttl_secs`. `not_found` for an altered URL or a slot not filled (yet).
    pub async fn slot_link(&self, id: &str, signature: &str) -> CoreResult<String> {
        if !self.check_slot("get", id, 0, signature) {
            return Err(CoreError::not_found("file"));
        }
        let file_id = self
            .inner
            .store
            .upload(id)
            .await?
            .and_then(|u| u.file_id)
            .ok_or_else(|| CoreError::not_found("file"))?;
        Ok(self.signed_link(&file_id).0)
    }

    /// Streams a file through a signed link; an expired, altered or foreign link is
    /// `not_found`.
    pub async fn download_linked(
        &self,
        id: &str,
        expires_at: i64,
        signature: &str,
        range: impl FnOnce(&FileRecord) -> Option<Range<u64>>,
    ) -> CoreResult<Download> {
        let file = self.linked_file(id, expires_at, signature).await?;
        self.stream(file, range).await
    }

    /// The file a signed link names; an expired, altered or foreign link is `not_found`.
    async fn linked_file(
        &self,
        id: &str,
        expires_at: i64,
        signature: &str,
    ) -> CoreResult<FileRecord> {
        use subtle::ConstantTimeEq;
        let expected = self.link_signature(id, expires_at);
        let valid = tus::is_valid_id(id)
            && expires_at > self.now()
            && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
        if !valid {
            return Err(CoreError::not_found("file"));
        }
        self.inner
            .store
            .file(id)
            .await?
            .ok_or_else(|| CoreError::not_found("file"))
    }

    async fn stream(
        &self,
        file: FileRecord,
        range: impl FnOnce(&FileRecord) -> Option<Range<u64>>,
    ) -> CoreResult<Download> {
        let range = range(&file).filter(|r| r.start < r.end);
        let path = Blobs::blob_path(&file.sha256);
        let body = self.inner.blobs.read(&path, range).await.map_err(storage)?;
        Ok(Download { file, body })
    }

    /// A thumbnail of an image the caller may read, fitting in `px`×`px` (one of
    /// [`crate::thumbs::THUMBNAIL_SIZES`]).
    pub async fn thumbnail(&self, caller: &Caller, id: &str, px: u32) -> CoreResult<Thumbnail> {
        check_size(px)?;
        let file = self.file_for(caller, id).await?;
        self.thumbnail_of(&file, px).await
    }

    /// A thumbnail through a signed link to the file (a link to a file covers its thumbnails).
    pub async fn thumbnail_linked(
        &self,
        id: &str,
        expires_at: i64,
        signature: &str,
        px: u32,
    ) -> CoreResult<Thumbnail> {
        check_size(px)?;
        let file = self.linked_file(id, expires_at, signature).await?;
        self.thumbnail_of(&file, px).await
    }

    async fn thumbnail_of(&self, file: &FileRecord, px: u32) -> CoreResult<Thumbnail> {
        use crate::thumbs;
        use futures_util::TryStreamExt;
        if !thumbs::can_thumbnail(&file.content_type) {
            return Err(CoreError::invalid("thumbnails exist only for images"));
        }
        let etag = format!("\"{}-{px}\"", tus::hex(&file.sha256));
        let path = thumbs::thumb_path(&file.sha256, px);
        let blobs = &self.inner.blobs;
        let read_all = |path: object_store::path::Path| async move {
            let chunks: Vec<Bytes> = blobs.read(&path, None).await?.try_collect().await?;
            Ok::<Bytes, BlobError>(Bytes::from(chunks.concat()))
        };
        if blobs.exists(&path).await.map_err(storage)? {
            let bytes = read_all(path).await.map_err(storage)?;
            let content_type = thumbs::stored_type(&bytes);
            return Ok(Thumbnail {
                bytes,
                content_type,
                etag,
            });
        }
        if file.size > self.inner.config.max_thumbnail_source_bytes {
            return Err(CoreError::new(
                ErrorCode::TooLarge,
                "the image is too large to make a thumbnail of",
            ));
        }
        let _permit = self
            .inner
            .renderers
            .acquire()
            .await
            .map_err(|_| CoreError::new(ErrorCode::Unavailable, "server is shutting down"))?;
        let source = read_all(Blobs::blob_path(&file.sha256))
            .await
            .map_err(storage)?;
        let rendered = tokio::task::spawn_blocking(move || thumbs::render(&source, px))
            .await
            .map_err(|e| CoreError::internal("rendering a thumbnail", e))?
            .map_err(|e| match e {
                thumbs::ThumbError::TooLarge => CoreError::new(ErrorCode::TooLarge, e.to_string()),
                thumbs::ThumbError::Undecodable => CoreError::invalid(e.to_string()),
            })?;
        let bytes = Bytes::from(rendered.bytes);
        // Two requests may render the same thumbnail at once; both write the same bytes.
        let mut writer = blobs.writer(&path).await.map_err(storage)?;
        writer.write(bytes.clone()).await.map_err(storage)?;
        writer.finish().await.map_err(storage)?;
        Ok(Thumbnail {
            bytes,
            content_type: rendered.content_type,
            etag,
        })
    }

    /// Deletes the caller's file; the bytes go with the last file that refers to them.
    pub async fn delete_file(&self, caller: &Caller, id: &str) -> CoreResult<()> {
        let file = self.file_for(caller, id).await?;
        if file.owner != caller.user_id {
            return Err(CoreError::forbidden("only the owner may delete a file"));
        }
        let _content = self.inner.content.lock().await;
        if let Some((file, true)) = self.inner.store.delete_file(id).await? {
            let blobs = &self.inner.blobs;
            blobs
                .delete(&Blobs::blob_path(&file.sha256))
                .await
                .map_err(storage)?;
            for px in crate::thumbs::THUMBNAIL_SIZES {
                blobs
                    .delete(&crate::thumbs::thumb_path(&file.sha256, px))
                    .await
                    .map_err(storage)?;
            }
        }
        Ok(())
    }
}

fn check_size(px: u32) -> CoreResult<()> {
    if crate::thumbs::THUMBNAIL_SIZES.contains(&px) {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "size is one of {:?}",
            crate::thumbs::THUMBNAIL_SIZES
        )))
    }
}

fn storage(e: BlobError) -> CoreError {
    CoreError::internal("object storage", e)
}
