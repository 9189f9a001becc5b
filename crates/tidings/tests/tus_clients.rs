//! Third-party tus clients against the real server (scripts/tus/): tuspy (Python) uploads a large
//! file with a connection cut mid-request and resumes; tus-js-client (Node) resumes an aborted
//! upload and uploads four parallel parts that the server concatenates. Every stored file is
//! checked by SHA-256.
//!
//! `scripts/test` prepares the clients (a Python virtual environment named in
//! `TEST_CLIENTS_PYTHON`, and `npm ci` in scripts/tus) and sets
//! `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass without running them.
//! A plain `cargo test` on a machine without them says so and skips.

use std::path::PathBuf;
use tidings_testkit::TestServer;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has tuspy, if there is one.
fn tus_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("TEST_CLIENTS_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join("target/py-venv/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_resumes_after_a_cut_and_the_bytes_match() {
    let Some(python) = tus_python() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with tuspy was found"
        );
        eprintln!("SKIPPED: no Python with tuspy; scripts/test prepares target/py-venv");
        return;
    };
    let size_mb = std::env::var("TUS_TEST_SIZE_MB").unwrap_or_else(|_| "200".into());
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/tus/tuspy_upload.py"))
        .args(["--base", &server.base_url])
        .args(["--token", &alice.tokens.access_token])
        .args(["--size-mb", &size_mb])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tuspy failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("matches"), "{stdout}");
    eprintln!("{stdout}");
    server.stop().await;
}

/// Whether tus-js-client is installed (`npm ci` in scripts/tus, which `scripts/test` runs).
fn tus_js_client() -> bool {
    workspace_root()
        .join("scripts/tus/node_modules/tus-js-client")
        .exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_resumes_an_aborted_upload_and_uploads_four_parallel_parts() {
    if !tus_js_client() {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "the tus clients are required but scripts/tus/node_modules is missing"
        );
        eprintln!(
            "SKIPPED: tus-js-client is not installed; scripts/test runs npm ci in scripts/tus"
        );
        return;
    }
    let size_mb = std::env::var("TUS_TEST_SIZE_MB").unwrap_or_else(|_| "200".into());
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let output = tokio::process::Command::new("node")
        .arg(workspace_root().join("scripts/tus/tus_js_client_upload.mjs"))
        .args([&server.base_url, &alice.tokens.access_token, &size_mb])
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tus-js-client failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("sha256 matches").count(), 2, "{stdout}");
    eprintln!("{stdout}");
    server.stop().await;
}
