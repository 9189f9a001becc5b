//! File storage on S3-compatible object storage: the same uploads, resumption, concatenation
//! and downloads against a real S3 API server (moto in server mode, from the Python environment
//! `scripts/test` prepares), with the bucket inspected to prove the bytes live there and not on
//! local disk.

use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use tidings_sdk::{Client, UPLOADS_PATH};
use tidings_testkit::{PASSWORD, ServerProcess, TestServer};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("TEST_CLIENTS_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join("target/py-venv/bin/python");
    venv.exists().then_some(venv)
}

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: tokio::process::Child,
    url: String,
}

impl Moto {
    async fn start(python: PathBuf) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while http.get(&url).send().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { child, url }
    }

    /// Keys in the bucket (moto answers unsigned requests).
    async fn keys(&self, bucket: &str) -> Vec<String> {
        let listing = reqwest::get(format!("{}/{bucket}?list-type=2", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_concatenate_and_download_on_s3() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with moto was found"
        );
        eprintln!("SKIPPED: no Python with moto; scripts/test prepares target/py-venv");
        return;
    };
    let moto = Moto::start(python).await;
    let bucket = "tidings-files";
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.url))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    let endpoint = moto.url.clone();
    let server = TestServer::start_with(|c| {
        c.files.s3_bucket = bucket.into();
        c.files.s3_endpoint = endpoint;
        c.files.s3_access_key_id = "test".into();
        c.files.s3_secret_access_key = "test".into();
    })
    .await;
    let alice = server.user("alice").await;

    // 7 MiB + 5 bytes: more than one 5 MiB multipart part, in two requests with a resume.
    let content = data(7 * 1024 * 1024 + 5);
    let created = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", content.len())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let patch = |offset: usize, end: usize| {
        alice
            .api
            .tus(Method::PATCH, &location)
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(content[offset..end].to_vec())
            .send()
    };
    assert_eq!(
        patch(0, 6_000_000).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let head = alice.api.tus(Method::HEAD, &location).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "6000000");
    let segments = moto.keys(bucket).await;
    assert!(
        segments.iter().any(|k| k.starts_with("uploads/")),
        "the segment is in the bucket: {segments:?}"
    );
    let done = patch(6_000_000, content.len()).await.unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let file = done.headers()["tidings-file-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let hex: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keys = moto.keys(bucket).await;
    assert_eq!(
        keys,
        [format!("sha256/{}/{hex}", &hex[..2])],
        "only the finished content"
    );
    assert!(
        !server.data_dir().join("files").exists(),
        "nothing on local disk"
    );

    assert_eq!(alice.api.download(&file, None).await.unwrap(), content);
    let range = alice
        .api
        .download(&file, Some(5_000_000..5_000_100))
        .await
        .unwrap();
    assert_eq!(range, content[5_000_000..5_000_100]);

    // Two parallel parts concatenated in the bucket, deduplicated against the first file.
    let mut parts = Vec::new();
    for (start, end) in [(0, 3_000_000), (3_000_000, content.len())] {
        let created = alice
            .api
            .tus(Method::POST, UPLOADS_PATH)
            .header("upload-length", end - start)
            .header("upload-concat", "partial")
            .header("content-type", "application/offset+octet-stream")
            .body(content[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        parts.push(created.headers()["location"].to_str().unwrap().to_owned());
    }
    let joined = alice
        .api
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-concat", format!("final;{} {}", parts[0], parts[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), StatusCode::CREATED);
    let second = joined.headers()["tidings-file-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(alice.api.download(&second, None).await.unwrap(), content);
    assert_eq!(
        moto.keys(bucket).await.len(),
        1,
        "the same content is stored once"
    );
    alice.api.delete_file(&file).await.unwrap();
    alice.api.delete_file(&second).await.unwrap();
    assert!(
        moto.keys(bucket).await.is_empty(),
        "the last reference took the bytes"
    );
    server.stop().await;
}

/// Two nodes on one PostgreSQL database, one NATS server and one bucket: an upload begun on
/// one node resumes on the other, and a file uploaded through one downloads through the other,
/// whole and by range. Nothing about an upload may live only in one node's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_uploads_and_files_through_the_bucket() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with moto was found"
        );
        eprintln!("SKIPPED: no Python with moto; scripts/test prepares target/py-venv");
        return;
    };
    let moto = Moto::start(python).await;
    let bucket = "tidings-cluster-files";
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.url))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let db = tidings_store_postgres::testing::TestDatabase::create().await;
    let nats = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("tidings-s3-test.{}", db.name);
    // The shared data directory holds the signing key both nodes must use; files are in S3.
    let data_dir = tempfile::tempdir().unwrap();
    let env = [
        ("TIDINGS_STORE_KIND", "postgres"),
        ("TIDINGS_STORE_URL", db.url.as_str()),
        ("TIDINGS_STORE_MAX_CONNECTIONS", "4"),
        ("TIDINGS_BUS_KIND", "nats"),
        ("TIDINGS_BUS_URL", nats.as_str()),
        ("TIDINGS_BUS_SUBJECT_PREFIX", prefix.as_str()),
        ("TIDINGS_TOKENS_ISSUER", "http://tidings.test"),
        ("TIDINGS_FILES_S3_BUCKET", bucket),
        ("TIDINGS_FILES_S3_ENDPOINT", moto.url.as_str()),
        ("TIDINGS_FILES_S3_ACCESS_KEY_ID", "test"),
        ("TIDINGS_FILES_S3_SECRET_ACCESS_KEY", "test"),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tidings"));
    let a = ServerProcess::spawn(binary, data_dir.path(), &env)
        .await
        .unwrap();
    let b = ServerProcess::spawn(binary, data_dir.path(), &env)
        .await
        .unwrap();
    let on_a = Client::new(&a.base_url);
    let on_b = Client::new(&b.base_url);
    on_a.register("alice", PASSWORD).await.unwrap();
    on_a.register("bob", PASSWORD).await.unwrap();
    let alice_tokens = on_a.login("alice", PASSWORD, "laptop").await.unwrap();
    let alice_a = on_a.authed(alice_tokens.access_token.clone());
    let alice_b = on_b.authed(alice_tokens.access_token);
    let bob_b = on_b.authed(
        on_b.login("bob", PASSWORD, "phone")
            .await
            .unwrap()
            .access_token,
    );

    // Begun on node A, interrupted, resumed on node B.
    let content = data(3 * 1024 * 1024 + 17);
    let created = alice_a
        .tus(Method::POST, UPLOADS_PATH)
        .header("upload-length", content.len())
        .header("content-type", "application/offset+octet-stream")
        .body(content[..1_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let head = alice_b.tus(Method::HEAD, &location).send().await.unwrap();
    assert_eq!(
        head.headers()["upload-offset"],
        "1000000",
        "node B sees A's offset"
    );
    let done = alice_b
        .tus(Method::PATCH, &location)
        .header("upload-offset", 1_000_000)
        .header("content-type", "application/offset+octet-stream")
        .body(content[1_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let file = done.headers()["tidings-file-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(alice_a.download(&file, None).await.unwrap(), content);

    // Shared in a conversation through node A, downloaded by bob through node B.
    let bob_id = bob_b.me().await.unwrap().user_id;
    let conv = alice_a.open_direct(bob_id).await.unwrap().id;
    alice_a.share_file(conv, &file).await.unwrap();
    assert_eq!(bob_b.download(&file, None).await.unwrap(), content);
    assert_eq!(
        bob_b
            .download(&file, Some(2_000_000..2_000_050))
            .await
            .unwrap(),
        content[2_000_000..2_000_050]
    );
    let hex: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        moto.keys(bucket).await,
        [format!("sha256/{}/{hex}", &hex[..2])]
    );
    a.terminate().await.unwrap();
    b.terminate().await.unwrap();
}
