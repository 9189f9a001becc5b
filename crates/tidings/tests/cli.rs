//! The command line as an operator uses it: help, bad configuration, admin commands.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use tidings_sdk::Client;
use tidings_testkit::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB", "256")
        .env("TIDINGS_ACCOUNTS_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_help_lists_the_documented_flags() {
    let out = run(&["serve", "--help"], &[], "");
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "TIDINGS_LISTEN",
        "TIDINGS_DATA_DIR",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn a_bad_config_value_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(
        &["serve", "--data-dir", data],
        &[("TIDINGS_LIMITS_MAX_MESSAGE_BYTES", "-5")],
        "",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("limits.max_message_bytes"), "{err}");

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
    let out = run(&["serve", "--config", file.to_str().unwrap()], &[], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("listen"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn admin_commands_manage_accounts_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let env = [("TIDINGS_ACCOUNTS_REGISTRATION", "closed")];
    let out = run(
        &["admin", "--data-dir", data, "create-user", "Operator"],
        &env,
        "a long enough password\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user operator"));
    let out = run(
        &["admin", "--data-dir", data, "create-user", "operator"],
        &env,
        "a long enough password\n",
    );
    assert!(!out.status.success(), "duplicate usernames are refused");
    let out = run(
        &["admin", "--data-dir", data, "create-user", "weak"],
        &env,
        "short\n",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("password"));
    let out = run(&["admin", "--data-dir", data, "list-users"], &env, "");
    assert!(text(&out.stdout).contains("operator"));

    // The server on the same directory accepts the account; a reset signs its devices out.
    let server = ServerProcess::spawn(std::path::Path::new(BIN), dir.path(), &env)
        .await
        .unwrap();
    let client = Client::new(server.base_url.clone());
    let tokens = client
        .login("operator", "a long enough password", "laptop")
        .await
        .unwrap();
    let out = run(
        &["admin", "--data-dir", data, "reset-password", "operator"],
        &env,
        "another long password\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 device(s) signed out"));
    assert!(client.authed(tokens.access_token).me().await.is_err());
    assert!(
        client
            .login("operator", "a long enough password", "x")
            .await
            .is_err()
    );
    client
        .login("operator", "another long password", "x")
        .await
        .unwrap();

    // Invite codes work with invite-only registration.
    let out = run(&["admin", "--data-dir", data, "create-invite"], &env, "");
    assert!(out.status.success());
    assert!(!text(&out.stdout).trim().is_empty());
    server.terminate().await.unwrap();
}
