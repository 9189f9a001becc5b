//! Account security against the running server: two-factor sign-in with codes from pyotp (an
//! independent TOTP implementation, scripts/account/totp.py), its rate limit, the refusal of
//! password-only transports, the account export, and self-deletion as the other party sees it
//! (docs/accounts.md).
//!
//! `scripts/test` installs pyotp in the Python virtual environment named in
//! `TEST_CLIENTS_PYTHON` and sets `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass
//! without running the pyotp tests. A plain `cargo test` without it says so and skips them.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidings_proto::{ErrorCode, MessageBody};
use tidings_testkit::{PASSWORD, TestServer, TestUser};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has pyotp, if there is one.
async fn pyotp_python() -> Option<PathBuf> {
    let python = match std::env::var_os("TEST_CLIENTS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => workspace_root().join("target/py-venv/bin/python"),
    };
    let has = tokio::process::Command::new(&python)
        .args(["-c", "import pyotp"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    has.then_some(python)
}

/// pyotp, or a skip (a failure under `REQUIRE_TEST_CLIENTS`).
async fn require_pyotp() -> Option<PathBuf> {
    let python = pyotp_python().await;
    if python.is_none() {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but no Python with pyotp was found"
        );
        eprintln!("SKIPPED: no Python with pyotp; scripts/test prepares target/py-venv");
    }
    python
}

async fn totp_script(python: &PathBuf, args: &[&str]) -> String {
    let out = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/account/totp.py"))
        .args(args)
        .output()
        .await
        .expect("run totp.py");
    assert!(
        out.status.success(),
        "totp.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// pyotp's code for the step `offset` steps from now.
async fn code(python: &PathBuf, secret: &str, offset: i64) -> String {
    totp_script(python, &["code", secret, &offset.to_string()]).await
}

/// Waits until at least 12 s of the current 30 s step remain, so the codes a test computes
/// (now, and one step either side) stay valid while it runs.
async fn wait_for_fresh_step() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into_step = now.as_secs_f64() % 30.0;
    if into_step > 18.0 {
        tokio::time::sleep(Duration::from_secs_f64(30.0 - into_step + 0.2)).await;
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: server.base_url.clone(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    async fn password_grant(&self, username: &str, password: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// The challenge of a two-factor password sign-in.
    async fn challenge(&self, username: &str) -> String {
        let (status, body) = self.password_grant(username, PASSWORD).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "mfa_required");
        assert!(body.get("access_token").is_none());
        body["mfa_token"].as_str().unwrap().to_owned()
    }

    async fn second_factor(&self, mfa_token: &str, code: &str) -> (u16, Value) {
        self.post(
            "/api/v1/sign-in/second-factor",
            None,
            json!({"mfa_token": mfa_token, "code": code, "device_name": "second step"}),
        )
        .await
    }
}

/// Enrols `user` with a code from pyotp for the previous step (so the current and next steps
/// stay free for the test). Returns the secret and the recovery codes.
async fn enrol(http: &Http, python: &PathBuf, user: &TestUser) -> (String, Vec<String>) {
    let token = user.tokens.access_token.as_str();
    let (status, enrolment) = http
        .post(
            "/api/v1/account/two-factor",
            Some(token),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let earlier = code(python, &secret, -1).await;
    let (status, codes) = http
        .post(
            "/api/v1/account/two-factor/confirm",
            Some(token),
            json!({"code": earlier}),
        )
        .await;
    assert_eq!(status, 200, "{codes}");
    let codes = codes["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyotp_codes_enrol_sign_in_and_are_never_accepted_twice() {
    let Some(python) = require_pyotp().await else {
        return;
    };
    // This test makes more attempts than a minute's limit allows; the next test checks it.
    let server = TestServer::start_with(|config| {
        config.limits.second_factor_attempts_per_user_per_minute = 100;
    })
    .await;
    let alice = server.user("alice").await;
    let token = alice.tokens.access_token.clone();
    let http = Http::new(&server);
    wait_for_fresh_step().await;

    // Enrolment needs the password.
    let (status, body) = http
        .post(
            "/api/v1/account/two-factor",
            Some(&token),
            json!({"password": "not the password"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, enrolment) = http
        .post(
            "/api/v1/account/two-factor",
            Some(&token),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 32, "160 bits in base32");

    // pyotp reads the key URI as an authenticator app would.
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(&totp_script(&python, &["uri", uri]).await).unwrap();
    assert_eq!(
        parsed,
        json!({"secret": secret, "digits": 6, "interval": 30, "issuer": "Tidings",
               "name": "alice", "digest": "sha1"})
    );
    let (_, status_body) = http.get("/api/v1/account/two-factor", &token).await;
    assert_eq!(
        status_body,
        json!({"enabled": false, "pending": true, "recovery_codes_left": 0})
    );
    // Until confirmed, the password alone still signs in.
    assert_eq!(http.password_grant("alice", PASSWORD).await.0, 200);

    // A code five steps ahead is outside the accepted window.
    let far = code(&python, &secret, 5).await;
    let (status, _) = http
        .post(
            "/api/v1/account/two-factor/confirm",
            Some(&token),
            json!({"code": far}),
        )
        .await;
    assert_eq!(status, 401);
    let earlier = code(&python, &secret, -1).await;
    let (status, codes) = http
        .post(
            "/api/v1/account/two-factor/confirm",
            Some(&token),
            json!({"code": earlier}),
        )
        .await;
    assert_eq!(status, 200, "{codes}");
    let recovery: Vec<String> = codes["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert!(recovery.iter().all(|c| c.len() == 14));
    let (_, status_body) = http.get("/api/v1/account/two-factor", &token).await;
    assert_eq!(
        status_body,
        json!({"enabled": true, "pending": false, "recovery_codes_left": 10})
    );
    // The secret is never shown again: starting over is refused while enrolled.
    let (status, _) = http
        .post(
            "/api/v1/account/two-factor",
            Some(&token),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 409);

    // The password now yields a challenge, not tokens; a forged challenge is refused.
    let challenge = http.challenge("alice").await;
    let now_code = code(&python, &secret, 0).await;
    let forged = challenge.replacen(&alice.user_id.0.to_string(), "999", 1);
    assert_eq!(http.second_factor(&forged, &now_code).await.0, 401);
    // The confirming code (an older step) cannot be used to sign in.
    let (status, _) = http.second_factor(&challenge, &earlier).await;
    assert_eq!(status, 401);
    let (status, tokens) = http.second_factor(&challenge, &now_code).await;
    assert_eq!(status, 200, "{tokens}");
    let second = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, me) = http.get("/api/v1/account", &second).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("alice")));
    // The same code again, even with a fresh challenge, is a replay.
    let fresh = http.challenge("alice").await;
    let (status, body) = http.second_factor(&fresh, &now_code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );

    // A recovery code signs in once.
    let (status, _) = http
        .second_factor(&fresh, &recovery[0].to_uppercase())
        .await;
    assert_eq!(status, 200);
    let again = http.challenge("alice").await;
    assert_eq!(http.second_factor(&again, &recovery[0]).await.0, 401);

    // Password-only transports cannot carry a second factor: XMPP SASL PLAIN and MQTT
    // CONNECT passwords are refused (access tokens still work there).
    let core = server.core();
    let refused = core
        .verify_password("alice", PASSWORD.into(), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::SecondFactorRequired);
    let refused = core
        .device_sign_in("alice", PASSWORD.into(), "MQTT c1".into(), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::SecondFactorRequired);
    // Nor SCRAM: even with a correct proof, the password alone does not sign this account in.
    let lookup = core
        .scram_lookup("alice", tidings_core::scram::ScramHash::Sha256, None)
        .await
        .unwrap();
    let refused = core.scram_finish(&lookup, true, None).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::SecondFactorRequired);

    // New recovery codes need a TOTP code; the old ones stop working.
    let next = code(&python, &secret, 1).await;
    let (status, renewed) = http
        .post(
            "/api/v1/account/two-factor/recovery-codes",
            Some(&token),
            json!({"code": next}),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    let renewed: Vec<String> = renewed["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let challenge = http.challenge("alice").await;
    assert_eq!(http.second_factor(&challenge, &recovery[1]).await.0, 401);

    // Deleting the account needs a code too.
    let (status, body) = http
        .send(
            reqwest::Method::DELETE,
            "/api/v1/account",
            Some(&token),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("second_factor_required"))
    );

    // Disabling needs the password and a code.
    let (status, _) = http
        .post(
            "/api/v1/account/two-factor/disable",
            Some(&token),
            json!({"password": "wrong password", "code": renewed[0]}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = http
        .post(
            "/api/v1/account/two-factor/disable",
            Some(&token),
            json!({"password": PASSWORD, "code": renewed[0]}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(http.password_grant("alice", PASSWORD).await.0, 200);
    assert!(
        core.verify_password("alice", PASSWORD.into(), None)
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factor_attempts_are_limited_per_account() {
    let Some(python) = require_pyotp().await else {
        return;
    };
    // The default: five codes a minute per account.
    let server = TestServer::start().await;
    let bob = server.user("bob").await;
    let http = Http::new(&server);
    wait_for_fresh_step().await;
    // Enrolling took two attempts (the password, the first code).
    let (secret, _) = enrol(&http, &python, &bob).await;
    let challenge = http.challenge("bob").await;
    for _ in 0..3 {
        let (status, _) = http.second_factor(&challenge, "not-a-code").await;
        assert_eq!(status, 401);
    }
    // The sixth attempt of the minute is refused even with the right code.
    let right = code(&python, &secret, 0).await;
    let (status, body) = http.second_factor(&challenge, &right).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_the_users_data_and_deletion_keeps_the_other_partys_history() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let http = Http::new(&server);
    let direct = alice.api.open_direct(bob.user_id).await.unwrap();
    for (user, text) in [(&alice, "hello from alice"), (&bob, "hello back")] {
        user.api
            .send(
                direct.id,
                &format!("m-{text}"),
                MessageBody::Text { text: text.into() },
            )
            .await
            .unwrap();
    }
    alice
        .api
        .block(tidings_proto::UserId(bob.user_id.0))
        .await
        .ok();

    // The export is one JSON document with everything about alice.
    let response = http
        .client
        .get(format!("{}/api/v1/account/export", http.base))
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let export: Value = response.json().await.unwrap();
    assert_eq!(export["format"], "tidings-account-export/1");
    assert_eq!(export["account"]["username"], "alice");
    assert_eq!(export["two_factor"]["enabled"], false);
    assert!(!export["devices"].as_array().unwrap().is_empty());
    assert!(export["files"].as_array().unwrap().is_empty());
    let conversations = export["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1);
    let texts: Vec<&str> = conversations[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello from alice", "hello back"]);
    assert_eq!(conversations[0]["members"].as_array().unwrap().len(), 2);

    // Deletion needs the password.
    let token = alice.tokens.access_token.clone();
    let (status, _) = http
        .send(
            reqwest::Method::DELETE,
            "/api/v1/account",
            Some(&token),
            Some(json!({"password": "wrong password"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = http
        .send(
            reqwest::Method::DELETE,
            "/api/v1/account",
            Some(&token),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 204);

    // Alice's tokens and password no longer work, and her name stays taken.
    let (status, _) = http.get("/api/v1/account", &token).await;
    assert_eq!(status, 401);
    let (status, body) = http.password_grant("alice", PASSWORD).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = http
        .post(
            "/api/v1/accounts",
            None,
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 409);

    // Bob keeps the whole conversation; alice's message is from an account that is gone.
    let page = bob.api.history(direct.id, None, 50).await.unwrap();
    let kept: Vec<(i64, String)> = page
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Text { text } => Some((m.sender_id.0, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        kept,
        [
            (alice.user_id.0, "hello from alice".to_owned()),
            (bob.user_id.0, "hello back".to_owned())
        ]
    );
    let (status, _) = http
        .get(
            &format!("/api/v1/users/{}", alice.user_id.0),
            &bob.tokens.access_token,
        )
        .await;
    assert_eq!(status, 404, "a deleted account has no profile");
    server.stop().await;
}
