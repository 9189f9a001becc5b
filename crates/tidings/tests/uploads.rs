//! tus uploads and file downloads over real sockets: a hand-written tus client on reqwest (and
//! raw TCP for a connection cut mid-body) against the real server, with the storage directory
//! inspected to prove what was and was not kept.

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tidings_proto::MessageBody;
use tidings_sdk::UPLOADS_PATH;
use tidings_testkit::{TestServer, TestUser};
use tokio::io::AsyncWriteExt;

/// Deterministic bytes that do not repeat within a chunk (so a misplaced chunk shows).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn digest_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn offset_of(response: &reqwest::Response) -> u64 {
    header(response, "upload-offset")
        .parse()
        .expect("Upload-Offset")
}

/// Every regular file below `dir/sub`.
fn stored_files(dir: &Path, sub: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join(sub), &mut out);
    out
}

fn files_dir(server: &TestServer) -> PathBuf {
    server.data_dir().join("files")
}

/// Creates an upload of `length` bytes and returns its path (`/api/v1/uploads/<id>`).
async fn create(user: &TestUser, length: usize) -> String {
    let response = user
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", length)
        .header("upload-metadata", format!("filename {}", b64("data.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    let location = header(&response, "location").to_owned();
    assert!(location.starts_with(UPLOADS_PATH), "{location}");
    location
}

async fn patch(user: &TestUser, location: &str, offset: u64, bytes: &[u8]) -> reqwest::Response {
    user.api
        .tus(Method::PATCH, location)
        .header("upload-offset", offset)
        .header("content-type", "application/offset+octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn head(user: &TestUser, location: &str) -> reqwest::Response {
    user.api.tus(Method::HEAD, location).send().await.unwrap()
}

/// Sends a `PATCH` whose body stops after `sent` of the announced bytes, then closes the
/// socket: a network that breaks mid-upload.
async fn cut_patch(
    server: &TestServer,
    user: &TestUser,
    location: &str,
    offset: u64,
    body: &[u8],
    sent: usize,
) {
    let addr = server.base_url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        user.tokens.access_token,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&body[..sent]).await.unwrap();
    socket.flush().await.unwrap();
    // Let the bytes reach the server before the connection dies.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
}

/// The id of the file a finished upload became.
fn file_id(response: &reqwest::Response) -> String {
    let id = header(response, "tidings-file-id").to_owned();
    assert_eq!(id.len(), 32, "a finished upload names its file");
    id
}

#[tokio::test]
async fn options_advertise_exactly_what_is_supported() {
    let server = TestServer::start_with(|c| c.files.max_file_bytes = 123_456).await;
    let response = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}{UPLOADS_PATH}", server.base_url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert_eq!(
        header(&response, "tus-extension"),
        "creation,creation-with-upload,termination,checksum,expiration,concatenation"
    );
    assert_eq!(header(&response, "tus-max-size"), "123456");
    assert_eq!(header(&response, "tus-checksum-algorithm"), "sha1,sha256");

    // Any other request must speak our version.
    let alice = server.user("alice").await;
    let response = alice
        .api
        .request(Method::POST, UPLOADS_PATH)
        .header("upload-length", 10)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    let response = alice
        .api
        .request(Method::POST, UPLOADS_PATH)
        .header("tus-resumable", "0.2.2")
        .header("upload-length", 10)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    // Without a token, nothing.
    let response = reqwest::Client::new()
        .post(format!("{}{UPLOADS_PATH}", server.base_url))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn upload_in_pieces_survives_a_cut_and_downloads_byte_for_byte() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let content = data(3 * 1024 * 1024 + 17, 1);
    let location = create(&alice, content.len()).await;
    let response = head(&alice, &location).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(offset_of(&response), 0);
    assert_eq!(
        header(&response, "upload-length"),
        content.len().to_string()
    );
    assert_eq!(
        header(&response, "upload-metadata"),
        format!("filename {}", b64("data.bin"))
    );
    assert_eq!(header(&response, "cache-control"), "no-store");
    assert!(!header(&response, "upload-expires").is_empty());

    let first = 1024 * 1024;
    let response = patch(&alice, &location, 0, &content[..first]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&response), first as u64);

    // The network breaks after 600 KiB of a 1 MiB request: what arrived is kept.
    let second = &content[first..2 * first];
    cut_patch(&server, &alice, &location, first as u64, second, 600 * 1024).await;
    let resumed = offset_of(&head(&alice, &location).await);
    assert!(
        resumed > first as u64 && resumed <= (first + 600 * 1024) as u64,
        "the server kept what arrived before the cut: {resumed}"
    );

    // A patch at a stale offset is refused and changes nothing.
    let response = patch(&alice, &location, first as u64, second).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(offset_of(&head(&alice, &location).await), resumed);

    // Resume from the server's offset to the end.
    let response = patch(&alice, &location, resumed, &content[resumed as usize..]).await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        response.text().await
    );
    assert_eq!(offset_of(&response), content.len() as u64);
    let file = file_id(&response);

    // The bytes are stored once, under their SHA-256, and the segments are gone.
    let sha = Sha256::digest(&content);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let blob = files_dir(&server).join("sha256").join(&hex[..2]).join(&hex);
    assert_eq!(std::fs::read(&blob).unwrap(), content);
    assert!(stored_files(&files_dir(&server), "uploads").is_empty());

    // A download cut mid-way resumes with Range and matches byte for byte.
    let url = format!("{}/api/v1/files/{file}", server.base_url);
    let http = reqwest::Client::new();
    let full = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert_eq!(header(&full, "x-content-type-options"), "nosniff");
    let etag = header(&full, "etag").to_owned();
    assert_eq!(etag, format!("\"{hex}\""));
    let mut stream = full;
    let mut got = Vec::new();
    while got.len() < 1_000_000 {
        got.extend_from_slice(&stream.chunk().await.unwrap().unwrap());
    }
    drop(stream); // the connection breaks
    let rest = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .header("range", format!("bytes={}-", got.len()))
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&rest, "content-range"),
        format!(
            "bytes {}-{}/{}",
            got.len(),
            content.len() - 1,
            content.len()
        )
    );
    got.extend_from_slice(&rest.bytes().await.unwrap());
    assert!(got == content, "the resumed download matches byte for byte");

    // If-Range naming another version gets the whole file; a range past the end gets 416.
    let whole = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .header("range", "bytes=10-")
        .header("if-range", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap().len(), content.len());
    let past = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .header("range", format!("bytes={}-", content.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&past, "content-range"),
        format!("bytes */{}", content.len())
    );
    let tail = alice.api.download(&file, Some(100..200)).await.unwrap();
    assert_eq!(tail, content[100..200]);
}

#[tokio::test]
async fn checksums_are_verified_and_a_mismatch_keeps_the_offset() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let content = data(300_000, 2);
    let location = create(&alice, content.len()).await;
    let send = |offset: u64, bytes: Vec<u8>, checksum: String| {
        alice
            .api
            .tus(Method::PATCH, &location)
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", checksum)
            .body(bytes)
            .send()
    };
    let a = &content[..100_000];
    let b = &content[100_000..200_000];
    let c = &content[200_000..];
    let sha1 = sha1_digest(a);
    let response = send(0, a.to_vec(), format!("sha1 {}", digest_b64(&sha1)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&response), 100_000);

    // A wrong sha256: 460, and nothing of that request is kept.
    let wrong = Sha256::digest(c);
    let response = send(
        100_000,
        b.to_vec(),
        format!("sha256 {}", digest_b64(&wrong)),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 460);
    assert_eq!(offset_of(&head(&alice, &location).await), 100_000);
    let segments = stored_files(&files_dir(&server), "uploads");
    assert_eq!(
        segments.len(),
        1,
        "only the first, verified segment: {segments:?}"
    );

    // The right one is accepted.
    let right = Sha256::digest(b);
    let response = send(
        100_000,
        b.to_vec(),
        format!("sha256 {}", digest_b64(&right)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&response), 200_000);

    // Unknown algorithms and malformed digests are bad requests that store nothing.
    for checksum in ["md5 1B2M2Y8AsgTpgAmY7PhCfg==", "sha256 not-base64!", "sha1"] {
        let response = send(200_000, c.to_vec(), checksum.to_owned())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{checksum}");
    }
    assert_eq!(offset_of(&head(&alice, &location).await), 200_000);
    let response = send(
        200_000,
        c.to_vec(),
        format!("sha1 {}", digest_b64(&sha1_digest(c))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let file = file_id(&response);
    assert_eq!(alice.api.download(&file, None).await.unwrap(), content);
}

fn sha1_digest(bytes: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes).to_vec()
}

#[tokio::test]
async fn termination_removes_the_upload_and_its_bytes() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let content = data(50_000, 3);
    let location = create(&alice, content.len()).await;
    let response = patch(&alice, &location, 0, &content[..20_000]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(stored_files(&files_dir(&server), "uploads").len(), 1);
    let response = alice
        .api
        .tus(Method::DELETE, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(
        head(&alice, &location).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&alice, &location, 20_000, &content[20_000..])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(stored_files(&files_dir(&server), "uploads").is_empty());
}

#[tokio::test]
async fn expired_uploads_are_removed_by_the_background_task() {
    let server = TestServer::start_with(|c| c.files.upload_expiry_secs = 1).await;
    let alice = server.user("alice").await;
    let location = create(&alice, 10_000).await;
    assert_eq!(
        patch(&alice, &location, 0, &data(4_000, 4)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(stored_files(&files_dir(&server), "uploads").len(), 1);
    // Expired: gone (410) until the janitor removes it, then unknown (404).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = head(&alice, &location).await.status();
        assert!(
            [StatusCode::OK, StatusCode::GONE, StatusCode::NOT_FOUND].contains(&status),
            "{status}"
        );
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stored_files(&files_dir(&server), "uploads").is_empty(),
        "its bytes went with it"
    );
    let response = patch(&alice, &location, 4_000, &data(10, 5)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn size_and_quota_are_refused_before_any_byte_is_stored() {
    let server = TestServer::start_with(|c| {
        c.files.max_file_bytes = 100_000;
        c.files.user_quota_bytes = 150_000;
    })
    .await;
    let alice = server.user("alice").await;
    let too_big = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", 100_001)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Even with the bytes attached (creation-with-upload), nothing is stored.
    let too_big = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", 200_000)
        .header("content-type", "application/offset+octet-stream")
        .body(data(200_000, 6))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(stored_files(&files_dir(&server), "").is_empty());

    // 100 000 fits; another 60 000 would pass the quota of 150 000.
    let first = create(&alice, 100_000).await;
    let over = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", 60_000)
        .header("content-type", "application/offset+octet-stream")
        .body(data(60_000, 7))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: serde_json::Value = over.json().await.unwrap();
    assert_eq!(problem["code"], "quota_exceeded");
    assert!(stored_files(&files_dir(&server), "").is_empty());
    // Bytes beyond the declared length are refused too, and not kept.
    let response = patch(&alice, &first, 0, &data(100_001, 8)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset_of(&head(&alice, &first).await), 0);
    assert!(stored_files(&files_dir(&server), "").is_empty());
    // Finishing within the quota works, and the file keeps counting against it.
    let done = patch(&alice, &first, 0, &data(100_000, 8)).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let over = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", 60_000)
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn someone_elses_upload_and_path_like_ids_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    let content = data(10_000, 9);
    let location = create(&alice, content.len()).await;
    assert_eq!(
        patch(&alice, &location, 0, &content[..5_000])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        head(&mallory, &location).await.status(),
        StatusCode::FORBIDDEN
    );
    let response = patch(&mallory, &location, 5_000, &content[5_000..]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = mallory
        .api
        .tus(Method::DELETE, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A final upload cannot take someone else's parts either.
    let response = mallory
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-concat", format!("final;{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        offset_of(&head(&alice, &location).await),
        5_000,
        "alice's upload is intact"
    );

    for path in [
        "/api/v1/uploads/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/uploads/....",
        "/api/v1/uploads/%2e%2e",
        "/api/v1/uploads/0123456789ABCDEF0123456789ABCDEF",
        "/api/v1/uploads/0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(
            head(&alice, path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            patch(&alice, path, 0, b"x").await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let response = alice.api.tus(Method::DELETE, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in ["/api/v1/files/..%2F..%2Ftidings.db", "/api/v1/files/%2e%2e"] {
        let response = alice.api.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(server.data_dir().join("tidings.db").exists());
    assert_eq!(stored_files(&files_dir(&server), "uploads").len(), 1);
}

#[tokio::test]
async fn bogus_upload_metadata_and_headers_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for metadata in [
        "filename not*base64!".to_owned(),
        format!("filename {0},filename {0}", b64("a")),
        ",".to_owned(),
        "a b c".to_owned(),
        "x".repeat(5000),
    ] {
        let response = alice
            .api
            .tus(Method::POST, UPLOADS_PATH)
            .header("upload-length", 10)
            .header("upload-metadata", &metadata)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{metadata:.40}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_field");
    }
    for length in ["-1", "ten", "1e3", ""] {
        let response = alice
            .api
            .tus(Method::POST, UPLOADS_PATH)
            .header("upload-length", length)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{length:?}");
    }
    // Deferred lengths are not supported.
    let response = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-defer-length", 1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A PATCH needs the tus content type.
    let location = create(&alice, 10).await;
    let response = alice
        .api
        .tus(Method::PATCH, &location)
        .header("upload-offset", 0)
        .header("content-type", "application/octet-stream")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(stored_files(&files_dir(&server), "").is_empty());
}

#[tokio::test]
async fn four_parallel_parts_concatenate_into_one_file() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let content = data(4 * 700_000 + 3, 10);
    let bounds = [0, 700_000, 1_400_000, 2_100_000, content.len()];
    let mut parts = Vec::new();
    for window in bounds.windows(2) {
        let response = alice
            .api
            .tus(Method::POST, UPLOADS_PATH)
            .header("upload-length", window[1] - window[0])
            .header("upload-concat", "partial")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        parts.push(header(&response, "location").to_owned());
    }
    // All four parts go up at once, each in two requests.
    let uploads = parts.iter().enumerate().map(|(i, location)| {
        let piece = &content[bounds[i]..bounds[i + 1]];
        let alice = &alice;
        async move {
            let half = piece.len() / 2;
            assert_eq!(
                patch(alice, location, 0, &piece[..half]).await.status(),
                StatusCode::NO_CONTENT
            );
            let last = patch(alice, location, half as u64, &piece[half..]).await;
            assert_eq!(last.status(), StatusCode::NO_CONTENT);
            assert!(
                last.headers().get("tidings-file-id").is_none(),
                "a part is not a file"
            );
        }
    });
    join_all(uploads).await;
    let partial = head(&alice, &parts[0]).await;
    assert_eq!(header(&partial, "upload-concat"), "partial");

    // The final upload names the parts in order, with full URLs or paths alike.
    let list = format!(
        "{}{} {} {} {}",
        server.base_url, parts[0], parts[1], parts[2], parts[3]
    );
    let response = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-concat", format!("final;{list}"))
        .header("upload-metadata", format!("filename {}", b64("joined.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let file = file_id(&response);
    let final_location = header(&response, "location").to_owned();
    let done = head(&alice, &final_location).await;
    assert_eq!(offset_of(&done), content.len() as u64);
    assert!(header(&done, "upload-concat").starts_with("final;/api/v1/uploads/"));
    assert_eq!(alice.api.download(&file, None).await.unwrap(), content);
    // The parts were consumed.
    for location in &parts {
        assert_eq!(head(&alice, location).await.status(), StatusCode::NOT_FOUND);
    }
    assert!(stored_files(&files_dir(&server), "uploads").is_empty());
    assert!(stored_files(&files_dir(&server), "staging").is_empty());
}

#[tokio::test]
async fn files_shared_in_a_conversation_are_readable_by_its_members_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let html = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>".to_vec();
    let file = alice.api.upload(&html, "evil.html").await.unwrap();

    // Nobody but the owner may read it yet: not found, so ids cannot be probed.
    let error = bob.api.download(&file, None).await.unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::NotFound));
    // Nor may anyone else share it.
    let direct = bob.api.open_direct(carol.user_id).await.unwrap();
    let body = |file: &str| MessageBody::File {
        file_id: file.to_owned(),
        name: "evil.html".into(),
        size: 1,
        content_type: "text/plain".into(),
        width: None,
        height: None,
    };
    let error = bob
        .api
        .send(direct.id, "m1", body(&file))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::NotFound));

    let ab = alice.api.open_direct(bob.user_id).await.unwrap();
    alice.api.send(ab.id, "m1", body(&file)).await.unwrap();
    let history = bob.api.history(ab.id, None, 50).await.unwrap();
    let MessageBody::File {
        size, content_type, ..
    } = &history.messages[0].body
    else {
        panic!("a file message: {:?}", history.messages[0].body);
    };
    assert_eq!(
        (*size, content_type.as_str()),
        (html.len() as u64, "text/html"),
        "size and type come from the stored file, not the client"
    );
    assert_eq!(bob.api.download(&file, None).await.unwrap(), html);
    assert!(
        carol.api.download(&file, None).await.is_err(),
        "carol is not in that conversation"
    );

    // HTML is never served as HTML from our origin: an opaque download, never sniffed.
    let response = bob
        .api
        .request(Method::GET, &format!("/api/v1/files/{file}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert!(header(&response, "content-disposition").starts_with("attachment;"));
    // A PNG is an image, shown inline.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    png.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89]);
    let image = alice.api.upload(&png, "dot.png").await.unwrap();
    let response = alice
        .api
        .request(Method::GET, &format!("/api/v1/files/{image}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "content-type"), "image/png");
    assert!(header(&response, "content-disposition").starts_with("inline;"));
    // Its pixel size travels in the message, from the image's header, not the client.
    alice.api.send(ab.id, "m2", body(&image)).await.unwrap();
    let history = bob.api.history(ab.id, None, 50).await.unwrap();
    let MessageBody::File {
        width,
        height,
        content_type,
        ..
    } = &history.messages[1].body
    else {
        panic!("a file message");
    };
    assert_eq!(
        (*width, *height, content_type.as_str()),
        (Some(1), Some(1), "image/png")
    );
}

#[tokio::test]
async fn identical_content_is_stored_once_and_deleted_with_its_last_file() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let content = data(200_000, 11);
    let first = alice.api.upload(&content, "a.bin").await.unwrap();
    let second = bob.api.upload(&content, "b.bin").await.unwrap();
    assert_ne!(first, second, "two files");
    assert_eq!(
        stored_files(&files_dir(&server), "sha256").len(),
        1,
        "one copy of the bytes"
    );
    assert!(
        bob.api.delete_file(&first).await.is_err(),
        "only the owner deletes"
    );
    alice.api.delete_file(&first).await.unwrap();
    assert!(alice.api.download(&first, None).await.is_err());
    assert_eq!(bob.api.download(&second, None).await.unwrap(), content);
    assert_eq!(stored_files(&files_dir(&server), "sha256").len(), 1);
    bob.api.delete_file(&second).await.unwrap();
    assert!(
        stored_files(&files_dir(&server), "sha256").is_empty(),
        "the last reference took the bytes"
    );
}

#[tokio::test]
async fn encrypted_attachments_are_ciphertext_on_the_server_and_open_for_the_recipient() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let secret = b"Quarterly numbers: do not leak. ".repeat(10_000);
    let (file, key) = alice
        .api
        .upload_encrypted(&secret, "numbers.txt")
        .await
        .unwrap();

    // What the server stored is the ciphertext: same size plus one tag per chunk, no
    // plaintext in it, and its SHA-256 is not the plaintext's.
    let blobs = stored_files(&files_dir(&server), "sha256");
    assert_eq!(blobs.len(), 1);
    let stored = std::fs::read(&blobs[0]).unwrap();
    let chunks = secret.len().div_ceil(tidings_sdk::CHUNK_BYTES);
    assert_eq!(stored.len(), secret.len() + chunks * 16);
    assert!(
        !stored.windows(16).any(|w| w == &secret[..16]),
        "no plaintext on the server"
    );
    let plain_hex: String = Sha256::digest(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!blobs[0].ends_with(&plain_hex));

    // The key travels inside an encrypted message (sealed by the conversation's end-to-end
    // scheme in a real client; here the payload stands for that sealed box), and the
    // ciphertext file is shared explicitly, since the server cannot read the message.
    let direct = alice.api.open_direct(bob.user_id).await.unwrap();
    let descriptor = serde_json::json!({
        "kind": "file", "file_id": file, "name": "numbers.txt", "size": secret.len(),
        "content_type": "text/plain", "encryption": key,
    });
    let body = MessageBody::Encrypted {
        algorithm: "test.sealed-box".into(),
        ciphertext: b64(&descriptor.to_string()),
        session_id: None,
    };
    alice.api.send(direct.id, "e1", body).await.unwrap();
    assert!(
        bob.api.download(&file, None).await.is_err(),
        "not shared yet"
    );
    alice.api.share_file(direct.id, &file).await.unwrap();

    // Bob opens the message, downloads the ciphertext, decrypts and verifies the hash.
    let history = bob.api.history(direct.id, None, 50).await.unwrap();
    let MessageBody::Encrypted { ciphertext, .. } = &history.messages[0].body else {
        panic!("an encrypted message");
    };
    use base64::Engine;
    let opened: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(ciphertext)
            .unwrap(),
    )
    .unwrap();
    let key: tidings_sdk::FileKey = serde_json::from_value(opened["encryption"].clone()).unwrap();
    let file_id = opened["file_id"].as_str().unwrap();
    assert_eq!(
        bob.api.download_decrypted(file_id, &key).await.unwrap(),
        secret
    );
    // A wrong key opens nothing.
    let (_, other) = tidings_sdk::encrypt_file(b"x");
    assert!(bob.api.download_decrypted(file_id, &other).await.is_err());
}

#[tokio::test]
async fn signed_links_serve_images_without_a_token_until_they_expire() {
    let server = TestServer::start_with(|c| c.files.link_ttl_secs = 1).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let png =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x02\0\0\0\x02\x08\x06\0\0\0\x72\xb6\x0d\x24".to_vec();
    let image = alice.api.upload(&png, "avatar.png").await.unwrap();
    let link: serde_json::Value = alice
        .api
        .request(Method::POST, &format!("/api/v1/files/{image}/link"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}{}", server.base_url, link["url"].as_str().unwrap());
    assert!(link["expires_at"].as_i64().unwrap() > 0);
    // No Authorization header: the link itself is the credential.
    let plain = reqwest::Client::new();
    let response = plain.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "image/png");
    assert_eq!(response.bytes().await.unwrap(), png);
    // An altered signature, or the signature on another file, is nothing.
    let other = alice.api.upload(b"another file", "x.txt").await.unwrap();
    for bad in [
        url.replace("signature=", "signature=A"),
        url.replace(&image, &other),
    ] {
        assert_eq!(
            plain.get(&bad).send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }
    // Only someone who can read the file gets a link to it.
    let refused = bob
        .api
        .request(Method::POST, &format!("/api/v1/files/{image}/link"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    // Without a link, a token is still required.
    let bare = plain
        .get(format!("{}/api/v1/files/{image}", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        plain.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "expired"
    );
}

/// An image of `width` × `height` pixels encoded as PNG.
fn png_of(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 77])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encodes");
    out.into_inner()
}

#[tokio::test]
async fn images_get_cached_thumbnails_for_those_who_may_read_them() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let photo = alice
        .api
        .upload(&png_of(1200, 600), "photo.png")
        .await
        .unwrap();
    let direct = alice.api.open_direct(bob.user_id).await.unwrap();
    alice
        .api
        .send(
            direct.id,
            "photo",
            MessageBody::File {
                file_id: photo.clone(),
                name: "photo.png".into(),
                size: 0,
                content_type: String::new(),
                width: None,
                height: None,
            },
        )
        .await
        .unwrap();

    // Bob, who may download the photo, gets thumbnails that fit each size.
    for (size, expected) in [(96, (96, 48)), (320, (320, 160)), (800, (800, 400))] {
        let (content_type, bytes) = bob.api.thumbnail(&photo, size).await.unwrap();
        assert_eq!(content_type, "image/jpeg");
        let thumb = image::load_from_memory(&bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), expected, "size {size}");
    }
    // Rendered once: kept in storage, served the same the next time, revalidated by ETag.
    let thumbs = stored_files(&files_dir(&server), "thumbs");
    assert_eq!(thumbs.len(), 3, "{thumbs:?}");
    let again = bob.api.thumbnail(&photo, 320).await.unwrap();
    assert_eq!(again, bob.api.thumbnail(&photo, 320).await.unwrap());
    let response = bob
        .api
        .request(
            Method::GET,
            &format!("/api/v1/files/{photo}/thumbnail?size=320"),
        )
        .send()
        .await
        .unwrap();
    let etag = header(&response, "etag").to_string();
    let response = bob
        .api
        .request(
            Method::GET,
            &format!("/api/v1/files/{photo}/thumbnail?size=320"),
        )
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    // Carol may not read the photo, so she gets no thumbnail either.
    let error = carol.api.thumbnail(&photo, 96).await.unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::NotFound));
    // Sizes are fixed; non-images have none.
    let error = bob.api.thumbnail(&photo, 100).await.unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::InvalidField));
    let text = alice.api.upload(b"just text", "notes.txt").await.unwrap();
    let error = alice.api.thumbnail(&text, 96).await.unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::InvalidField));

    // A signed link to the image covers its thumbnails, without a token.
    let link: serde_json::Value = alice
        .api
        .request(Method::POST, &format!("/api/v1/files/{photo}/link"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}{}&size=96",
        server.base_url,
        link["url"]
            .as_str()
            .unwrap()
            .replacen("?", "/thumbnail?", 1)
    );
    let response = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "image/jpeg");

    // Deleting the last file with those bytes deletes the thumbnails too.
    alice.api.delete_file(&photo).await.unwrap();
    assert!(stored_files(&files_dir(&server), "thumbs").is_empty());
}

#[tokio::test]
async fn avatars_are_image_files_everyone_may_see() {
    use tidings_proto::rest::{UpdateGroupRequest, UpdateProfileRequest};
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let stranger = server.user("stranger").await;
    let picture = alice.api.upload(&png_of(400, 400), "me.png").await.unwrap();
    // Before it is an avatar, nobody else may read it.
    assert!(stranger.api.download(&picture, None).await.is_err());
    let avatar = |id: &str| UpdateProfileRequest {
        display_name: None,
        status_text: None,
        avatar: Some(id.to_owned()),
    };
    let profile = alice.api.update_profile(&avatar(&picture)).await.unwrap();
    assert_eq!(profile.avatar, picture);
    assert_eq!(
        stranger.api.profile(alice.user_id).await.unwrap().avatar,
        picture
    );
    // Now anyone signed in may see it, in full or as a thumbnail.
    assert_eq!(
        stranger.api.download(&picture, None).await.unwrap().len(),
        png_of(400, 400).len()
    );
    let (_, thumb) = stranger.api.thumbnail(&picture, 96).await.unwrap();
    let thumb = image::load_from_memory(&thumb).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (96, 96));

    // Only readable images: not someone else's file, not a text file, not a made-up id.
    let others = stranger
        .api
        .upload(&png_of(10, 10), "theirs.png")
        .await
        .unwrap();
    let error = alice
        .api
        .update_profile(&avatar(&others))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::NotFound));
    let text = alice.api.upload(b"not a picture", "a.txt").await.unwrap();
    let error = alice.api.update_profile(&avatar(&text)).await.unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::InvalidField));
    let error = alice
        .api
        .update_profile(&avatar("../etc"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::NotFound));
    // Clearing it works.
    let cleared = alice.api.update_profile(&avatar("")).await.unwrap();
    assert!(cleared.avatar.is_empty());

    // Groups take the same kind of avatar.
    let group = alice.api.create_group("team", &[]).await.unwrap();
    let info = alice
        .api
        .update_group(
            group.id,
            &UpdateGroupRequest {
                avatar: Some(picture.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(info.avatar, picture);
    let error = alice
        .api
        .update_group(
            group.id,
            &UpdateGroupRequest {
                avatar: Some(text),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tidings_proto::ErrorCode::InvalidField));
}
