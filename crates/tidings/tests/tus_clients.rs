//! Third-party tus clients against the real server: tuspy (Python) uploads a large file with a
//! broken connection in the middle, resumes, and checks the stored bytes (scripts/tus/).
//!
//! The clients live in a Python virtual environment that `scripts/test` prepares and names in
//! `TIDINGS_TEST_PYTHON` (with `TIDINGS_REQUIRE_PYTHON_CLIENTS=1`, so the one test command cannot
//! pass without running them). A plain `cargo test` on a machine without that environment says
//! so and skips; `target/py-venv` is used when present.

use std::path::PathBuf;
use tidings_testkit::TestServer;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has tuspy, if there is one.
fn tus_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("TIDINGS_TEST_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join("target/py-venv/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_resumes_after_a_cut_and_the_bytes_match() {
    let Some(python) = tus_python() else {
        assert!(
            std::env::var_os("TIDINGS_REQUIRE_PYTHON_CLIENTS").is_none(),
            "TIDINGS_REQUIRE_PYTHON_CLIENTS is set but no Python with tuspy was found"
        );
        eprintln!("SKIPPED: no Python with tuspy; scripts/test prepares target/py-venv");
        return;
    };
    let size_mb = std::env::var("TIDINGS_TUS_SIZE_MB").unwrap_or_else(|_| "20".into());
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
