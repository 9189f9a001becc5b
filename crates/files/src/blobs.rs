//! Where bytes live: an object layout over any `object_store` backend.
//!
//! `object_store::ObjectStore` is already the storage trait (local disk, S3, memory); `Blobs`
//! adds the layout this crate relies on:
//! - `uploads/<upload id>/<offset, 20 digits>`: one segment per append request. Object stores
//!   cannot append, so each request writes its own object, named by where it starts; a request
//!   retried at the same offset overwrites the same name, and names sort in byte order.
//! - `staging/<upload id>`: the whole content while it is assembled and hashed.
//! - `sha256/<first two hex digits>/<hex>`: finished content, stored once per distinct value.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use std::ops::Range;
use std::sync::Arc;

/// Bytes buffered per part before a part is written. S3 requires at least 5 MiB for every part
/// but the last; with one part in flight an upload holds at most about twice this in memory.
const PART_BYTES: usize = 5 * 1024 * 1024;

/// A storage failure; the message is for logs only.
#[derive(Debug, thiserror::Error)]
#[error("object storage failed: {0}")]
pub struct BlobError(#[from] pub object_store::Error);

/// A contiguous run of an upload's bytes as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub size: u64,
    pub path: Path,
}

/// The object layout over a backend; cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.store)
    }
}

impl Blobs {
    pub fn new(store: Arc<dyn ObjectStore>) -> Blobs {
        Blobs { store }
    }

    /// Bytes on local disk under `dir` (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Blobs, BlobError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            BlobError(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })
        })?;
        // Cleaning up empty directories keeps finished uploads from leaving one behind each.
        // fsync before a write returns: an offset the server reports (and a file it records)
        // must describe bytes that survive a power cut, as they would on S3.
        let store = LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Blobs::new(Arc::new(store)))
    }

    /// Bytes in an S3-compatible bucket.
    pub fn s3(config: &crate::FilesConfig) -> Result<Blobs, BlobError> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&config.s3_bucket)
            .with_region(if config.s3_region.is_empty() {
                "us-east-1"
            } else {
                &config.s3_region
            });
        if !config.s3_endpoint.is_empty() {
            // Self-hosted servers are addressed by path (http://host/bucket/key), and may be
            // plain HTTP on a private network.
            builder = builder
                .with_endpoint(&config.s3_endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(config.s3_endpoint.starts_with("http://"));
        }
        if !config.s3_access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&config.s3_access_key_id)
                .with_secret_access_key(&config.s3_secret_access_key);
        }
        Ok(Blobs::new(Arc::new(builder.build()?)))
    }

    pub fn segment_path(upload: &str, offset: u64) -> Path {
        Path::from(format!("uploads/{upload}/{offset:020}"))
    }

    pub fn staging_path(upload: &str) -> Path {
        Path::from(format!("staging/{upload}"))
    }

    pub fn blob_path(sha256: &[u8; 32]) -> Path {
        let hex = crate::tus::hex(sha256);
        Path::from(format!("sha256/{}/{hex}", &hex[..2]))
    }

    /// Starts writing an object; nothing is visible at `path` until [`ObjectWriter::finish`].
    pub async fn writer(&self, path: &Path) -> Result<ObjectWriter, BlobError> {
        let upload = self.store.put_multipart(path).await?;
        Ok(ObjectWriter {
            inner: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
            written: 0,
        })
    }

    /// The segments of an upload, in order of offset.
    pub async fn segments(&self, upload: &str) -> Result<Vec<Segment>, BlobError> {
        let prefix = Path::from(format!("uploads/{upload}"));
        let mut listed = self.store.list(Some(&prefix));
        let mut segments = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta?;
            let Some(offset) = meta
                .location
                .filename()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push(Segment {
                offset,
                size: meta.size,
                path: meta.location,
            });
        }
        segments.sort_by_key(|s| s.offset);
        Ok(segments)
    }

    /// Deletes every segment of an upload (and its staging object, if any).
    pub async fn delete_upload(&self, upload: &str) -> Result<(), BlobError> {
        for segment in self.segments(upload).await? {
            self.delete(&segment.path).await?;
        }
        self.delete(&Self::staging_path(upload)).await
    }

    /// Deletes an object; deleting what is not there succeeds.
    pub async fn delete(&self, path: &Path) -> Result<(), BlobError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, path: &Path) -> Result<bool, BlobError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn rename(&self, from: &Path, to: &Path) -> Result<(), BlobError> {
        Ok(self.store.rename(from, to).await?)
    }

    /// Streams an object, or the part of it in `range`.
    pub async fn read(
        &self,
        path: &Path,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(path, options).await?;
        Ok(read_stream(result))
    }

    /// The first `len` bytes of an object (fewer if it is shorter), for sniffing its type.
    pub async fn head_bytes(&self, path: &Path, len: u64) -> Result<Bytes, BlobError> {
        let size = self.store.head(path).await?.size;
        if size == 0 {
            return Ok(Bytes::new());
        }
        Ok(self.store.get_range(path, 0..len.min(size)).await?)
    }
}

/// Larger reads than object_store's own 8 KiB for local files: one blocking-pool round trip per
/// 256 KiB instead of per 8 KiB is what lets a download run near the disk's speed.
const LOCAL_READ_BYTES: usize = 256 * 1024;

fn read_stream(result: object_store::GetResult) -> BoxStream<'static, Result<Bytes, BlobError>> {
    match result.payload {
        object_store::GetResultPayload::File(file, _path) => {
            let range = result.range;
            let state = (Some(file), range.start, range.end);
            futures_util::stream::unfold(state, |(file, pos, end)| async move {
                let mut file = file?;
                if pos >= end {
                    return None;
                }
                let want = usize::try_from(end - pos)
                    .unwrap_or(usize::MAX)
                    .min(LOCAL_READ_BYTES);
                let read = tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut buf = vec![0u8; want];
                    file.seek(SeekFrom::Start(pos))?;
                    let n = file.read(&mut buf)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>((file, buf))
                })
                .await;
                match read {
                    Ok(Ok((_, buf))) if buf.is_empty() => Some((
                        Err(io_error(std::io::ErrorKind::UnexpectedEof.into())),
                        (None, end, end),
                    )),
                    Ok(Ok((file, buf))) => {
                        let next = pos + buf.len() as u64;
                        Some((Ok(Bytes::from(buf)), (Some(file), next, end)))
                    }
                    Ok(Err(e)) => Some((Err(io_error(e)), (None, end, end))),
                    Err(e) => Some((Err(io_error(std::io::Error::other(e))), (None, end, end))),
                }
            })
            .boxed()
        }
        object_store::GetResultPayload::Stream(stream) => {
            stream.map(|chunk| chunk.map_err(BlobError)).boxed()
        }
    }
}

fn io_error(e: std::io::Error) -> BlobError {
    BlobError(object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    })
}

/// An object being written in parts; memory stays bounded by waiting for each part.
pub struct ObjectWriter {
    inner: WriteMultipart,
    written: u64,
}

impl ObjectWriter {
    /// Appends bytes, first waiting until at most one part is still being written.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.inner.wait_for_capacity(1).await?;
        self.written += bytes.len() as u64;
        self.inner.put(bytes);
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the object visible with everything written so far.
    pub async fn finish(self) -> Result<(), BlobError> {
        self.inner.finish().await?;
        Ok(())
    }

    /// Discards everything written; nothing appears at the path.
    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(%e, "Could not abort a partial object write.");
        }
    }
}
