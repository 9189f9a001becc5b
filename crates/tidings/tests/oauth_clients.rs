//! The OAuth authorization server against a real third-party client library: authlib
//! (scripts/oauth/authlib_flows.py) completes the authorization code flow with PKCE for a public
//! and a confidential client, refreshes, introspects and revokes, and checks the error answers.
//! Clients are registered here through the admin REST API, which a non-administrator may not use.
//!
//! `scripts/test` installs authlib in the Python virtual environment named in
//! `TEST_CLIENTS_PYTHON` and sets `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass
//! without running it. A plain `cargo test` on a machine without it says so and skips.

use serde_json::{Value, json};
use std::path::PathBuf;
use tidings_proto::{ErrorCode, MessageBody};
use tidings_sdk::{ConnectOptions, Connection};
use tidings_testkit::{PASSWORD, TestServer, error_code};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has authlib, if there is one.
async fn authlib_python() -> Option<PathBuf> {
    let python = match std::env::var_os("TEST_CLIENTS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => workspace_root().join("target/py-venv/bin/python"),
    };
    let has = tokio::process::Command::new(&python)
        .args(["-c", "import authlib, requests"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    has.then_some(python)
}

async fn register(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    http.post(format!("{base}/api/v1/admin/oauth-clients"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_completes_code_pkce_refresh_introspection_and_revocation() {
    let Some(python) = authlib_python().await else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with authlib was found"
        );
        eprintln!("SKIPPED: no Python with authlib; scripts/test prepares target/py-venv");
        return;
    };
    let server = TestServer::start().await;
    let root = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let direct = alice.api.open_direct(bob.user_id).await.unwrap();
    let http = reqwest::Client::new();
    let base = &server.base_url;
    let redirect = "http://127.0.0.1:9/callback";

    // Only administrators register clients.
    let refused = register(
        &http,
        base,
        &alice.tokens.access_token,
        json!({"name": "Nope", "redirect_uris": [redirect]}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let bad_uri = register(
        &http,
        base,
        &root.tokens.access_token,
        json!({"name": "Bad", "redirect_uris": ["http://app.example/cb"]}),
    )
    .await;
    assert_eq!(bad_uri.status(), 400, "plain http off loopback is refused");

    let public: Value = register(
        &http,
        base,
        &root.tokens.access_token,
        json!({"name": "Public <App>", "redirect_uris": [redirect], "scope": "messages:read profile"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(public.get("client_secret").is_none(), "{public}");
    assert_eq!(public["client"]["confidential"], false);
    let confidential: Value = register(
        &http,
        base,
        &root.tokens.access_token,
        json!({"name": "Server App", "confidential": true, "redirect_uris": [redirect]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let secret = confidential["client_secret"].as_str().expect("a secret");
    let list: Value = http
        .get(format!("{base}/api/v1/admin/oauth-clients"))
        .bearer_auth(&root.tokens.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["clients"].as_array().unwrap().len(), 2);
    assert!(
        !list.to_string().contains(secret),
        "the secret is never listed"
    );

    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/oauth/authlib_flows.py"))
        // `--name=value`: random ids and secrets may start with `-`, which argparse would take
        // for an option in the two-argument form.
        .arg(format!("--base={base}"))
        .arg(format!(
            "--public-client={}",
            public["client"]["client_id"].as_str().unwrap()
        ))
        .arg(format!(
            "--confidential-client={}",
            confidential["client"]["client_id"].as_str().unwrap()
        ))
        .arg(format!("--secret={secret}"))
        .arg(format!("--redirect-uri={redirect}"))
        .arg(format!("--username={}", alice.username))
        .arg(format!("--password={PASSWORD}"))
        .args(["--conversation", &direct.id.0.to_string()])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "authlib failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all authlib checks passed"), "{stdout}");
    eprintln!("{stdout}");

    // The same scope on the WebSocket: a `messages:read` token reads history but cannot send.
    let scoped = stdout
        .lines()
        .find_map(|l| l.strip_prefix("scoped_token: "))
        .expect("the script prints the scoped token");
    let conn = Connection::connect_with(
        &server.client().ws_url(),
        scoped,
        &ConnectOptions::default(),
    )
    .await
    .expect("a messages:read token may connect");
    conn.history(direct.id, None, Some(10))
        .await
        .expect("messages:read reads history");
    let refused = conn
        .send(
            direct.id,
            "scoped-1",
            MessageBody::Text { text: "hi".into() },
        )
        .await
        .expect_err("messages:read cannot send");
    assert_eq!(error_code(refused), ErrorCode::InsufficientScope);
    drop(conn);

    // The public client's devices are alice's, named after the client; removing the client
    // signs them out.
    let devices: Value = http
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_devices = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == "Public <App>")
        .count();
    assert!(app_devices >= 1, "{devices}");
    let public_id = public["client"]["client_id"].as_str().unwrap();
    let removed = http
        .delete(format!("{base}/api/v1/admin/oauth-clients/{public_id}"))
        .bearer_auth(&root.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let devices: Value = http
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !devices.to_string().contains("Public <App>"),
        "the removed client's devices are signed out: {devices}"
    );
    server.stop().await;
}

/// The device authorization grant and the client credentials grant, through authlib
/// (scripts/oauth/authlib_grants.py), then the bot's token on the WebSocket, then the bot
/// client's removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_completes_device_flow_and_client_credentials() {
    let Some(python) = authlib_python().await else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with authlib was found"
        );
        eprintln!("SKIPPED: no Python with authlib; scripts/test prepares target/py-venv");
        return;
    };
    let server = TestServer::start().await;
    let root = server.admin("root").await;
    let alice = server.user("alice").await;
    let http = reqwest::Client::new();
    let base = &server.base_url;
    let admin = &root.tokens.access_token;

    // A terminal application: public, no redirect URI, signs in with the device flow.
    let device: Value = register(
        &http,
        base,
        admin,
        json!({"name": "Terminal <App>", "scope": "messages:read profile"}),
    )
    .await
    .json()
    .await
    .unwrap();
    // A bot: confidential, bound to a new account.
    let refused = register(
        &http,
        base,
        admin,
        json!({"name": "Bot", "bot_username": "newsbot"}),
    )
    .await;
    assert_eq!(refused.status(), 400, "a bot client must be confidential");
    let refused = register(
        &http,
        base,
        admin,
        json!({"name": "Bot", "confidential": true, "bot_username": "newsbot",
               "redirect_uris": ["http://127.0.0.1:9/cb"]}),
    )
    .await;
    assert_eq!(refused.status(), 400, "a bot client has no redirect URIs");
    let taken = register(
        &http,
        base,
        admin,
        json!({"name": "Bot", "confidential": true, "bot_username": "alice"}),
    )
    .await;
    assert_eq!(taken.status(), 409, "the bot's username must be free");
    let bot: Value = register(
        &http,
        base,
        admin,
        json!({"name": "News Bot", "confidential": true, "bot_username": "NewsBot",
               "scope": "messages:read messages:write profile"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let bot_user = bot["client"]["bot_user_id"]
        .as_i64()
        .expect("a bot client names its account");
    let plain: Value = register(
        &http,
        base,
        admin,
        json!({"name": "Server App", "confidential": true,
               "redirect_uris": ["http://127.0.0.1:9/cb"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    // Nobody can sign in as the bot with a password.
    let password_grant = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "newsbot"),
            ("password", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(password_grant.status(), 400);

    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/oauth/authlib_grants.py"))
        .arg(format!("--base={base}"))
        .arg(format!(
            "--device-client={}",
            device["client"]["client_id"].as_str().unwrap()
        ))
        .arg("--device-client-name=Terminal &lt;App&gt;")
        .arg(format!(
            "--bot-client={}",
            bot["client"]["client_id"].as_str().unwrap()
        ))
        .arg(format!(
            "--bot-secret={}",
            bot["client_secret"].as_str().unwrap()
        ))
        .arg("--bot-username=newsbot")
        .arg(format!(
            "--plain-client={}",
            plain["client"]["client_id"].as_str().unwrap()
        ))
        .arg(format!(
            "--plain-secret={}",
            plain["client_secret"].as_str().unwrap()
        ))
        .arg(format!("--username={}", alice.username))
        .arg(format!("--password={PASSWORD}"))
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "authlib failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all authlib grant checks passed"),
        "{stdout}"
    );
    eprintln!("{stdout}");

    // The device sign-in is one of alice's devices, named after the client.
    let devices: Value = http
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "Terminal <App>"),
        "{devices}"
    );

    // The bot's `messages:write profile` token sends on the WebSocket into a conversation
    // alice opened with it, and cannot read history.
    let bot_token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("bot_token: "))
        .expect("the script prints the bot's token");
    let direct = alice
        .api
        .open_direct(tidings_proto::UserId(bot_user))
        .await
        .unwrap();
    let conn = Connection::connect_with(
        &server.client().ws_url(),
        bot_token,
        &ConnectOptions::default(),
    )
    .await
    .expect("a bot token connects");
    conn.send(
        direct.id,
        "bot-1",
        MessageBody::Text {
            text: "good morning".into(),
        },
    )
    .await
    .expect("messages:write sends");
    let refused = conn
        .history(direct.id, None, Some(10))
        .await
        .expect_err("no messages:read");
    assert_eq!(error_code(refused), ErrorCode::InsufficientScope);
    drop(conn);
    let page = alice.api.history(direct.id, None, 10).await.unwrap();
    assert!(
        page.messages.iter().any(|m| m.sender_id.0 == bot_user
            && m.body
                == MessageBody::Text {
                    text: "good morning".into()
                }),
        "{:?}",
        page.messages
    );

    // Removing the bot client signs its device out: its tokens stop working at once.
    let bot_id = bot["client"]["client_id"].as_str().unwrap();
    let removed = http
        .delete(format!("{base}/api/v1/admin/oauth-clients/{bot_id}"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let after = http
        .get(format!("{base}/api/v1/account"))
        .bearer_auth(bot_token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    server.stop().await;
}
