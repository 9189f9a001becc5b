//! Schemathesis (PyPI) against the running server's own OpenAPI document, with a valid token:
//! generated requests to every operation must never get a 5xx and every response must match
//! the schema the document declares for it. Bounded by a small example count and a wall-clock
//! limit so it fits the test command.
//!
//! `scripts/test` installs schemathesis in target/py-venv and sets `REQUIRE_TEST_CLIENTS=1`.

use std::path::PathBuf;
use std::time::Duration;
use tidings_testkit::TestServer;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `schemathesis` command beside the test clients' Python, if it is installed.
fn schemathesis() -> Option<PathBuf> {
    let python = std::env::var_os("TEST_CLIENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/py-venv/bin/python"));
    let st = python.parent()?.join("schemathesis");
    st.exists().then_some(st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_schema_conformant_answers() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but schemathesis is not installed in target/py-venv"
        );
        eprintln!("SKIPPED: no schemathesis; scripts/test installs it in target/py-venv");
        return;
    };
    let server = TestServer::start().await;
    let user = server.user("fuzzer").await;
    let other = server.user("target").await;
    // Something to find: a conversation with a message.
    let conv = user.api.open_direct(other.user_id).await.unwrap();
    let conn = server.connect(&user).await;
    conn.send_text(conv.id, "seed", "hello").await.unwrap();
    let examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "8".into());
    let report = tempfile::tempdir().unwrap();
    // Schemathesis keeps a cache in its working directory: the temporary one, not the crate.
    let run = tokio::process::Command::new(&st)
        .current_dir(report.path())
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.base_url))
        .args(["--url", &server.base_url])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", user.tokens.access_token),
        ])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        // Operations that end the run's own session (revoking its token, signing out its
        // device, changing its password) would turn the rest of the run into 401s.
        .args(["--exclude-path", "/oauth/revoke"])
        .args(["--exclude-path", "/api/v1/devices/{device_id}"])
        .args(["--exclude-path", "/api/v1/account/password"])
        .args(["--max-examples", &examples])
        .args(["--seed", "20261127"])
        .args(["--request-timeout", "10"])
        .args(["--workers", "2"])
        .arg("--no-color")
        .env("SCHEMATHESIS_REPORT_DIR", report.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("schemathesis finishes within 4 minutes")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    drop(conn);
    server.stop().await;
}
