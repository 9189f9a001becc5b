//! tus 1.0.0 uploads (`/api/v1/uploads/`) and file downloads (`/api/v1/files/{file_id}`):
//! headers in, [`tidings_files::Files`] calls, headers out. Bodies are streamed both ways,
//! never held whole.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Authed;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};
use tidings_files::tus;
use tidings_files::{ByteStream, NewUpload};
use tidings_proto::ErrorCode;
use tidings_proto::rest::Problem;
use tidings_store::UploadRecord;

type ApiResult<T> = Result<T, ApiError>;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Where uploads live; `Location` answers are this plus the id.
pub const UPLOADS_PATH: &str = "/api/v1/uploads/";

/// Every tus response says which version it speaks; every request other than `OPTIONS` must
/// speak ours (412 otherwise, naming the versions we support).
pub async fn tus_headers(request: Request, next: Next) -> Response {
    if request.method() != Method::OPTIONS {
        let version = request.headers().get(TUS_RESUMABLE);
        if version.and_then(|v| v.to_str().ok()) != Some(tus::VERSION) {
            let mut response = problem(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::VersionUnsupported,
                "Tus-Resumable must be 1.0.0",
            );
            response.headers_mut().insert(
                HeaderName::from_static("tus-version"),
                HeaderValue::from_static(tus::VERSION),
            );
            return response;
        }
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
    response
}

/// A problem document with a status the error code alone does not give (tus's 415 and 412).
fn problem(status: StatusCode, code: ErrorCode, detail: &str) -> Response {
    let mut problem = Problem::new(code, detail);
    problem.status = status.as_u16();
    let body = serde_json::to_vec(&problem).expect("problems serialize");
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// `OPTIONS`: exactly what this server supports.
pub async fn options(State(state): State<AppState>) -> Response {
    let max = state.files.config().max_file_bytes.to_string();
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(tus::CHECKSUM_ALGORITHMS),
    );
    if let Ok(max) = HeaderValue::from_str(&max) {
        headers.insert("tus-max-size", max);
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

fn header_str(headers: &HeaderMap, name: &HeaderName) -> ApiResult<Option<String>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::new(ErrorCode::InvalidField, format!("{name} is not text")))
        })
        .transpose()
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> ApiResult<Option<u64>> {
    header_str(headers, name)?
        .map(|v| {
            // tus numbers are non-negative decimal integers: no sign, no spaces.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("{name} must be a non-negative integer"),
                ));
            }
            v.parse::<u64>().map_err(|_| {
                ApiError::new(ErrorCode::InvalidField, format!("{name} is out of range"))
            })
        })
        .transpose()
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// The request body as chunks; an error item means the client went away mid-body.
fn body_stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

/// The body of an append or creation-with-upload request, with its length and checksum.
fn upload_body(
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Option<u64>, Option<tus::Checksum>, ByteStream)> {
    let content_length = header_u64(headers, &header::CONTENT_LENGTH)?;
    let checksum = header_str(headers, &UPLOAD_CHECKSUM)?
        .map(|v| tus::parse_checksum(&v))
        .transpose()?;
    Ok((content_length, checksum, body_stream(body)))
}

/// The headers that describe an upload's state.
fn upload_headers(upload: &UploadRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(upload.offset));
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(upload.length));
    if upload.file_id.is_none() {
        let expires =
            UNIX_EPOCH + Duration::from_millis(u64::try_from(upload.expires_at).unwrap_or(0));
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
            headers.insert(UPLOAD_EXPIRES, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(file_id) = &upload.file_id
        && let Ok(value) = HeaderValue::from_str(file_id)
    {
        // Not part of tus: tells the client which file its finished upload became.
        headers.insert("tidings-file-id", value);
    }
    headers
}

/// `POST /api/v1/uploads/`: creation, creation-with-upload, concatenation.
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let request = NewUpload {
        length: header_u64(&headers, &UPLOAD_LENGTH)?,
        metadata: header_str(&headers, &UPLOAD_METADATA)?,
        concat: header_str(&headers, &UPLOAD_CONCAT)?,
    };
    let first_bytes = if is_offset_stream(&headers) {
        Some(upload_body(&headers, body)?)
    } else {
        None
    };
    let upload = state.files.create(&caller, request, first_bytes).await?;
    let mut out = upload_headers(&upload);
    let location = format!("{UPLOADS_PATH}{}", upload.id);
    out.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ids are hex"),
    );
    Ok((StatusCode::CREATED, out).into_response())
}

/// `HEAD /api/v1/uploads/{upload_id}`: where to resume.
pub async fn status(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(upload_id): Path<String>,
) -> ApiResult<Response> {
    let upload = state.files.status(&caller, &upload_id).await?;
    let mut headers = upload_headers(&upload);
    if !upload.metadata.is_empty()
        && let Ok(value) = HeaderValue::from_str(&upload.metadata)
    {
        headers.insert(UPLOAD_METADATA, value);
    }
    let concat = match upload.kind {
        tidings_store::UploadKind::Single => None,
        tidings_store::UploadKind::Partial => Some("partial".to_owned()),
        tidings_store::UploadKind::Final => Some(format!(
            "final;{}",
            upload
                .parts
                .iter()
                .map(|p| format!("{UPLOADS_PATH}{p}"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    };
    if let Some(value) = concat.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(UPLOAD_CONCAT, value);
    }
    Ok((StatusCode::OK, headers).into_response())
}

/// `PATCH /api/v1/uploads/{upload_id}`: append bytes at `Upload-Offset`.
pub async fn append(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(upload_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !is_offset_stream(&headers) {
        return Ok(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MalformedRequest,
            "Content-Type must be application/offset+octet-stream",
        ));
    }
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidField, "Upload-Offset is required"))?;
    let (content_length, checksum, body) = upload_body(&headers, body)?;
    let upload = state
        .files
        .append(&caller, &upload_id, offset, content_length, checksum, body)
        .await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&upload)).into_response())
}

/// `DELETE /api/v1/uploads/{upload_id}`: termination.
pub async fn terminate(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(upload_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.files.terminate(&caller, &upload_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The single byte range a `Range` header asks for within `size` bytes: `Ok(None)` for the
/// whole file (no header, or one we do not serve, such as several ranges), `Err(())` when the
/// range lies outside the file (416).
fn requested_range(value: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let parse = |s: &str| s.trim().parse::<u64>();
    let range = match (start.trim().is_empty(), end.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let Ok(n) = parse(end) else { return Ok(None) };
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (false, true) => {
            let Ok(start) = parse(start) else {
                return Ok(None);
            };
            start..size
        }
        (false, false) => {
            let (Ok(start), Ok(end)) = (parse(start), parse(end)) else {
                return Ok(None);
            };
            if end < start {
                return Ok(None);
            }
            start..end.saturating_add(1).min(size)
        }
        (true, true) => return Ok(None),
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// The query of a signed download link.
#[derive(serde::Deserialize)]
pub struct LinkQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// `GET /api/v1/files/{file_id}`: the file, or one byte range of it (206), for its owner and
/// the members of conversations it was shared in, or for anyone holding a valid signed link
/// (`?expires=&signature=`, from `POST /api/v1/files/{file_id}/link`).
pub async fn download(
    State(state): State<AppState>,
    authed: Result<Authed, ApiError>,
    Path(file_id): Path<String>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok());
    let mut unsatisfiable = false;
    let mut served = None;
    let pick_range = |file: &tidings_store::FileRecord| {
        let etag = etag(file);
        // A range is only valid against the version the client has: If-Range names it.
        if if_range.is_some_and(|v| v.trim() != etag) {
            return None;
        }
        match requested_range(range_header, file.size) {
            Ok(range) => {
                served = range.clone();
                range
            }
            Err(()) => {
                unsatisfiable = true;
                // Nothing is read: an empty range.
                Some(0..0)
            }
        }
    };
    let download = match (link.expires, link.signature) {
        (Some(expires), Some(signature)) => {
            state
                .files
                .download_linked(&file_id, expires, &signature, pick_range)
                .await?
        }
        _ => {
            let Authed(caller) = authed?;
            state.files.download(&caller, &file_id, pick_range).await?
        }
    };
    let file = &download.file;
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag(file)) {
        out.insert(header::ETAG, value);
    }
    // Never let a browser guess a type, and never let it render anything but a raster image
    // from our origin: an uploaded HTML page must not run as us.
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    if unsatisfiable {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
            out.insert(header::CONTENT_RANGE, value);
        }
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
    }
    // Only a raster image keeps its type; anything else is an opaque download, so a browser
    // has no type under which it would render it.
    let inline = tus::is_safe_inline(&file.content_type);
    let served_type = if inline {
        file.content_type.as_str()
    } else {
        "application/octet-stream"
    };
    if let Ok(value) = HeaderValue::from_str(served_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    out.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(inline, &file.name),
    );
    let (status, length) = match &served {
        Some(range) => {
            let value = format!("bytes {}-{}/{}", range.start, range.end - 1, file.size);
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, range.end - range.start)
        }
        None => (StatusCode::OK, file.size),
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = Body::from_stream(download.body.map_err(std::io::Error::other));
    Ok((status, out, body).into_response())
}

/// The query of a thumbnail request: the size, and optionally a signed link to the file.
#[derive(serde::Deserialize)]
pub struct ThumbnailQuery {
    size: Option<u32>,
    expires: Option<i64>,
    signature: Option<String>,
}

/// `GET /api/v1/files/{file_id}/thumbnail?size=96|320|800`: a JPEG (or, with transparency, PNG)
/// rendering of an image that fits in the size, for whoever may download the image (a signed
/// link to the image works too).
pub async fn thumbnail(
    State(state): State<AppState>,
    authed: Result<Authed, ApiError>,
    Path(file_id): Path<String>,
    query: Result<Query<ThumbnailQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let px = query.size.unwrap_or(320);
    let thumb = match (query.expires, query.signature) {
        (Some(expires), Some(signature)) => {
            state
                .files
                .thumbnail_linked(&file_id, expires, &signature, px)
                .await?
        }
        _ => {
            let Authed(caller) = authed?;
            state.files.thumbnail(&caller, &file_id, px).await?
        }
    };
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(thumb.content_type),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    if let Ok(value) = HeaderValue::from_str(&thumb.etag) {
        out.insert(header::ETAG, value);
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == thumb.etag));
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(thumb.bytes.len()));
    Ok((StatusCode::OK, out, thumb.bytes).into_response())
}

/// A strong validator: the content's SHA-256, which changes exactly when the bytes do.
fn etag(file: &tidings_store::FileRecord) -> String {
    format!("\"{}\"", tus::hex(&file.sha256))
}

/// `inline` or `attachment`, with the name both as ASCII and as RFC 8187 UTF-8.
fn content_disposition(inline: bool, name: &str) -> HeaderValue {
    let kind = if inline { "inline" } else { "attachment" };
    if name.is_empty() {
        return HeaderValue::from_static(if inline { "inline" } else { "attachment" });
    }
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `PUT /api/v1/conversations/{id}/files/{file_id}`: share a file with a conversation without
/// a `file` message (end-to-end-encrypted attachments).
pub async fn share(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path((conversation_id, file_id)): Path<(tidings_proto::ConversationId, String)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .share_file(&caller, conversation_id, &file_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/files/{file_id}/link`: a short-lived signed link for `<img src>`.
pub async fn link(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(file_id): Path<String>,
) -> ApiResult<axum::Json<tidings_proto::rest::FileLink>> {
    let (url, expires_at) = state.files.link(&caller, &file_id).await?;
    Ok(axum::Json(tidings_proto::rest::FileLink {
        url,
        expires_at,
    }))
}

/// `DELETE /api/v1/files/{file_id}`: the owner deletes a file.
pub async fn delete_file(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(file_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.files.delete_file(&caller, &file_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/slots/{upload_id}/{name}`: the bytes of an HTTP upload slot (XEP-0363), whole,
/// authorised by the signature in the URL the slot was issued with (XMPP clients hold no
/// bearer token). 201 once the file is stored.
pub async fn slot_put(
    State(state): State<AppState>,
    Path((upload_id, _name)): Path<(String, String)>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let (Some(expires), Some(signature)) = (link.expires, link.signature) else {
        return Err(tidings_core::CoreError::not_found("upload slot").into());
    };
    let content_length = header_u64(&headers, &header::CONTENT_LENGTH)?;
    state
        .files
        .put_slot(
            &upload_id,
            expires,
            &signature,
            content_length,
            body_stream(body),
        )
        .await?;
    Ok(StatusCode::CREATED)
}

/// `GET /api/v1/slots/{upload_id}/{name}`: the file of a filled upload slot, for anyone holding
/// the URL (it is shared in messages): a redirect to a short-lived signed link to the file.
pub async fn slot_get(
    State(state): State<AppState>,
    Path((upload_id, _name)): Path<(String, String)>,
    Query(link): Query<LinkQuery>,
) -> ApiResult<Response> {
    let signature = link.signature.unwrap_or_default();
    let target = state.files.slot_link(&upload_id, &signature).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, target),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::requested_range;

    #[test]
    fn ranges() {
        type Expected = Result<Option<std::ops::Range<u64>>, ()>;
        let cases: &[(Option<&str>, Expected)] = &[
            (None, Ok(None)),
            (Some("bytes=0-9"), Ok(Some(0..10))),
            (Some("bytes=90-"), Ok(Some(90..100))),
            (Some("bytes=-10"), Ok(Some(90..100))),
            (Some("bytes=-1000"), Ok(Some(0..100))),
            (Some("bytes=50-5000"), Ok(Some(50..100))),
            (Some("bytes=100-"), Err(())),
            (Some("bytes=-0"), Err(())),
            (Some("bytes=0-1,5-6"), Ok(None)),
            (Some("bytes=9-3"), Ok(None)),
            (Some("items=0-1"), Ok(None)),
            (Some("bytes=x-1"), Ok(None)),
        ];
        for (header, expected) in cases {
            assert_eq!(&requested_range(*header, 100), expected, "{header:?}");
        }
    }
}
