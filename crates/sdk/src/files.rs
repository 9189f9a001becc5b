//! Files: uploading with tus 1.0.0 and downloading with `Range`.

use crate::rest::{AuthedClient, expect_empty, transport};
use crate::{SdkError, SdkResult};
use reqwest::Method;
use std::ops::Range;

/// The tus version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus endpoint; uploads live below it.
pub const UPLOADS_PATH: &str = "/api/v1/uploads/";

/// Bytes sent per `PATCH`; a failed request costs at most this much again.
const CHUNK: usize = 4 * 1024 * 1024;
/// Attempts per chunk before giving up.
const ATTEMPTS: usize = 5;

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl AuthedClient {
    /// A tus request: bearer token and `Tus-Resumable`.
    pub fn tus(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("tus-resumable", TUS_VERSION)
    }

    /// Uploads `data` as a file named `name` and returns the file's id. Each chunk that fails
    /// is retried from the offset the server reports, so a broken connection costs at most one
    /// chunk again.
    pub async fn upload(&self, data: &[u8], name: &str) -> SdkResult<String> {
        use base64::Engine;
        let metadata = format!(
            "filename {}",
            base64::engine::general_purpose::STANDARD.encode(name)
        );
        let created = self
            .tus(Method::POST, UPLOADS_PATH)
            .header("upload-length", data.len())
            .header("upload-metadata", metadata)
            .send()
            .await
            .map_err(transport)?;
        if created.status().as_u16() != 201 {
            expect_empty(created).await?;
            return Err(SdkError::Unexpected("upload not created".into()));
        }
        let location = created
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SdkError::Unexpected("no Location".into()))?
            .to_owned();
        let mut file_id = created
            .headers()
            .get("tidings-file-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut offset = 0usize;
        let mut failures = 0;
        while offset < data.len() {
            let end = (offset + CHUNK).min(data.len());
            let sent = self
                .tus(Method::PATCH, &location)
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .body(data[offset..end].to_vec())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 204 => {
                    offset = header_u64(&r, "upload-offset").unwrap_or(end as u64) as usize;
                    file_id = r
                        .headers()
                        .get("tidings-file-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    failures = 0;
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 409 => {
                    expect_empty(r).await?;
                }
                _ => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(SdkError::Transport("upload keeps failing".into()));
                    }
                    // Ask the server how far it got, and go on from there.
                    let head = self
                        .tus(Method::HEAD, &location)
                        .send()
                        .await
                        .map_err(transport)?;
                    offset = header_u64(&head, "upload-offset")
                        .ok_or_else(|| SdkError::Unexpected("no Upload-Offset".into()))?
                        as usize;
                }
            }
        }
        file_id.ok_or_else(|| SdkError::Unexpected("the upload did not become a file".into()))
    }

    /// Downloads a file, or the bytes in `range`.
    pub async fn download(&self, file_id: &str, range: Option<Range<u64>>) -> SdkResult<Vec<u8>> {
        let mut request = self.request(Method::GET, &format!("/api/v1/files/{file_id}"));
        if let Some(range) = range {
            request = request.header("range", format!("bytes={}-{}", range.start, range.end - 1));
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if status != 200 && status != 206 {
            expect_empty(response).await?;
            return Err(SdkError::Unexpected(format!("HTTP {status}")));
        }
        Ok(response.bytes().await.map_err(transport)?.to_vec())
    }

    /// A thumbnail of an image file: `(content type, bytes)`.
    pub async fn thumbnail(&self, file_id: &str, size: u32) -> SdkResult<(String, Vec<u8>)> {
        let response = self
            .request(
                Method::GET,
                &format!("/api/v1/files/{file_id}/thumbnail?size={size}"),
            )
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        if status != 200 {
            expect_empty(response).await?;
            return Err(SdkError::Unexpected(format!("HTTP {status}")));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((
            content_type,
            response.bytes().await.map_err(transport)?.to_vec(),
        ))
    }

    /// Deletes one of the caller's files.
    pub async fn delete_file(&self, file_id: &str) -> SdkResult<()> {
        self.delete(&format!("/api/v1/files/{file_id}")).await
    }
}
