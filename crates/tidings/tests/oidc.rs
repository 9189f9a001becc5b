//! Single sign-on against a real OpenID provider: `oidc-provider` (npm, certified by the OpenID
//! Foundation) started from `scripts/oidc/provider.mjs` on loopback. A small cookie-keeping
//! HTTP client walks every redirect and submits the provider's own sign-in and consent forms,
//! as a browser would: first sign-in creating an account, linking an existing account, a
//! provider that may not create accounts, a forged `state`, and a tampered id_token.
//!
//! `scripts/test` installs the provider (`npm ci` in scripts/oidc) and sets
//! `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass without running this. A plain
//! `cargo test` on a machine without it says so and skips.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tidings_oidc::ProviderConfig;
use tidings_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oidc")
}

/// The running provider; it exits when its standard input closes (on drop, or killed).
struct Idp {
    issuer: String,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _child: Child,
}

async fn start_idp() -> Option<Idp> {
    if !scripts().join("node_modules/oidc-provider").is_dir() {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but scripts/oidc/node_modules has no oidc-provider"
        );
        eprintln!(
            "SKIPPED: oidc-provider is not installed; scripts/test runs npm ci in scripts/oidc"
        );
        return None;
    }
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(scripts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("provider starts within 30 s")
        .unwrap()
        .expect("provider prints READY");
    let issuer = ready
        .strip_prefix("READY ")
        .expect("READY <issuer>")
        .to_owned();
    Some(Idp {
        issuer,
        stdin,
        lines,
        _child: child,
    })
}

fn provider(idp: &Idp, id: &str, client: &str, allow_create: bool) -> ProviderConfig {
    ProviderConfig {
        id: id.into(),
        display_name: format!("Provider {id}"),
        issuer: idp.issuer.clone(),
        client_id: client.into(),
        client_secret: format!("secret-of-{client}"),
        scopes: vec!["openid".into(), "profile".into()],
        allow_create,
    }
}

/// A browser, as far as these flows need one: it keeps cookies (loopback only, so by name) and
/// follows redirects itself, stopping at the redirect into the web app.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

/// Where a flow ended: the fragment the callback put on the web app's URL.
type Fragment = String;

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let (name, val) = pair.split_once('=').unwrap();
            let attributes = attributes.to_ascii_lowercase();
            if val.is_empty()
                || attributes.contains("max-age=0")
                || attributes.contains("expires=thu, 01 jan 1970")
            {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().into(), val.into());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        response
    }

    /// Follows redirects from `url`; submits the provider's sign-in form as `login` and its
    /// consent form; returns the fragment of the final redirect into the web app.
    async fn walk(&mut self, url: &str, login: &str) -> Fragment {
        let mut next = reqwest::Url::parse(url).unwrap();
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let request = match form.take() {
                Some(fields) => self.http.post(next.clone()).form(&fields),
                None => self.http.get(next.clone()),
            };
            let response = self.send(request).await;
            if response.status().is_redirection() {
                let location = response.headers()["location"].to_str().unwrap();
                let target = next.join(location).unwrap();
                if let Some(fragment) = target.fragment().filter(|f| f.starts_with("oidc_")) {
                    return fragment.to_owned();
                }
                next = target;
                continue;
            }
            let status = response.status();
            let html = response.text().await.unwrap();
            assert!(status.is_success(), "{status} at {next}: {html}");
            let action = html
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no form at {next}: {html}"))
                .replace("&#x2F;", "/")
                .replace("&amp;", "&");
            let prompt = if html.contains("value=\"login\"") {
                vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "any".into()),
                ]
            } else if html.contains("value=\"consent\"") {
                vec![("prompt".into(), "consent".into())]
            } else {
                panic!("an unexpected page at {next}: {html}");
            };
            next = next.join(&action).unwrap();
            form = Some(prompt);
        }
        panic!("the flow did not end within 20 steps");
    }
}

async fn exchange(base: &str, code: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/oidc/exchange"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
}

async fn sign_in(base: &str, provider: &str, login: &str) -> Fragment {
    Browser::new()
        .walk(
            &format!("{base}/api/v1/oidc/providers/{provider}/start"),
            login,
        )
        .await
}

async fn tokens_for(base: &str, provider: &str, login: &str) -> Value {
    let fragment = sign_in(base, provider, login).await;
    let code = fragment
        .strip_prefix("oidc_code=")
        .unwrap_or_else(|| panic!("sign-in as {login} at {provider} ended with #{fragment}"));
    let response = exchange(base, code).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    // A code works once.
    assert_eq!(exchange(base, code).await.status(), 401);
    tokens
}

async fn account(base: &str, tokens: &Value) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/account"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_signs_in_creates_links_and_refuses_forgeries() {
    let Some(mut idp) = start_idp().await else {
        return;
    };
    let providers = vec![
        provider(&idp, "corp", "tidings-rs", true),
        provider(&idp, "ec", "tidings-es", false),
        provider(&idp, "tamper", "tidings-tamper", true),
    ];
    let server = TestServer::start_with(|config| config.oidc.providers = providers).await;
    let base = server.base_url.clone();
    idp.stdin
        .write_all(format!("{base}/oauth/oidc/callback\n").as_bytes())
        .await
        .unwrap();
    let configured = tokio::time::timeout(Duration::from_secs(30), idp.lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(configured.as_deref(), Some("CONFIGURED"));

    let listed: Value = reqwest::get(format!("{base}/api/v1/oidc/providers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["providers"][0]["id"], "corp");
    assert_eq!(listed["providers"][1]["display_name"], "Provider ec");

    // First sign-in (RS256) creates the account, named as the provider suggests.
    let ann = tokens_for(&base, "corp", "ann").await;
    let ann_account = account(&base, &ann).await;
    assert_eq!(ann_account["username"], "ann");
    // The second sign-in finds the same account.
    let again = tokens_for(&base, "corp", "ann").await;
    assert_eq!(again["user_id"], ann["user_id"]);

    // A provider that may not create accounts refuses a person nobody linked.
    assert_eq!(sign_in(&base, "ec", "zed").await, "oidc_error=unlinked");

    // Linking (ES256): bob, signed in with a password, links his identity "bob-at-ec" and can
    // then sign in with it.
    let bob = server.user("bob").await;
    let mut browser = Browser::new();
    let response = browser
        .send(
            browser
                .http
                .post(format!("{base}/api/v1/oidc/providers/ec/link"))
                .bearer_auth(&bob.tokens.access_token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let url = response.json::<Value>().await.unwrap()["authorize_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(browser.walk(&url, "bob-at-ec").await, "oidc_linked=ec");
    let bob_sso = tokens_for(&base, "ec", "bob-at-ec").await;
    assert_eq!(bob_sso["user_id"], json!(bob.user_id.0));
    // Linking needs a token with the profile scope.
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/api/v1/oidc/providers/ec/link"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // An identity already linked to ann cannot be linked to carol as well.
    let carol = server.user("carol").await;
    let mut browser = Browser::new();
    let response = browser
        .send(
            browser
                .http
                .post(format!("{base}/api/v1/oidc/providers/corp/link"))
                .bearer_auth(&carol.tokens.access_token),
        )
        .await;
    let url = response.json::<Value>().await.unwrap()["authorize_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(browser.walk(&url, "ann").await, "oidc_error=conflict");

    // A forged state: the callback with a state this browser's cookie does not hold, and the
    // real state from a browser without the cookie.
    let mut browser = Browser::new();
    let started = browser
        .send(
            browser
                .http
                .get(format!("{base}/api/v1/oidc/providers/corp/start")),
        )
        .await;
    assert_eq!(started.status(), 303);
    let authorize = reqwest::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    assert!(
        authorize
            .query_pairs()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );
    assert!(authorize.query_pairs().any(|(k, _)| k == "nonce"));
    let forged = browser
        .send(browser.http.get(format!(
            "{base}/oauth/oidc/callback?state=forged-state&code=whatever"
        )))
        .await;
    assert_eq!(
        forged.headers()["location"].to_str().unwrap(),
        "/#oidc_error=invalid_state"
    );
    let mut stranger = Browser::new();
    let planted = stranger
        .send(stranger.http.get(format!(
            "{base}/oauth/oidc/callback?state={state}&code=whatever"
        )))
        .await;
    assert_eq!(
        planted.headers()["location"].to_str().unwrap(),
        "/#oidc_error=invalid_state"
    );

    // A callback whose RFC 9207 `iss` names another issuer is refused (mix-up), even with the
    // right state and cookie.
    let mixed = browser
        .send(browser.http.get(format!(
            "{base}/oauth/oidc/callback?state={state}&code=whatever&iss=https%3A%2F%2Fevil.example"
        )))
        .await;
    assert_eq!(
        mixed.headers()["location"].to_str().unwrap(),
        "/#oidc_error=refused"
    );

    // The provider's id_token for this client has its `sub` changed after signing: refused,
    // and no account is made for either subject.
    assert_eq!(
        sign_in(&base, "tamper", "mallory").await,
        "oidc_error=refused"
    );
    let root = server.admin("root").await;
    for name in ["mallory", "someone-else"] {
        let found = root.api.admin_users(name, None, 50).await.unwrap();
        assert!(
            found.users.iter().all(|u| u.username != name),
            "an account {name} was created"
        );
    }

    // Every sign-in and refusal is in the audit log.
    let audit = |kind: &'static str| {
        let root = &root;
        async move {
            let page = root
                .api
                .admin_audit(&[("kind", kind.into()), ("limit", "500".into())])
                .await
                .unwrap();
            serde_json::to_string(&page.entries).unwrap()
        }
    };
    let successes = audit("sign_in.success").await;
    // ann twice, then bob through his linked identity.
    assert_eq!(
        successes.matches("\"method\":\"oidc\"").count(),
        3,
        "{successes}"
    );
    let failures = audit("sign_in.failure").await;
    for reason in [
        "oidc:state_mismatch",
        "oidc:invalid_id_token",
        "unlinked_identity",
    ] {
        assert!(failures.contains(reason), "no {reason} in {failures}");
    }
    assert!(audit("external_identity.create").await.contains("corp"));
    assert!(
        audit("external_identity.link")
            .await
            .contains("\"provider\":\"ec\"")
    );
    server.stop().await;

    // Starting flows counts as sign-in attempts of the address: with a limit of 2 a minute,
    // the third start is refused before any pending flow is made.
    let providers = vec![provider(&idp, "corp", "tidings-rs", true)];
    let limited = TestServer::start_with(|config| {
        config.oidc.providers = providers;
        config.limits.sign_in_attempts_per_address_per_minute = 2;
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = format!("{}/api/v1/oidc/providers/corp/start", limited.base_url);
    for expected in [303, 303, 429] {
        assert_eq!(http.get(&start).send().await.unwrap().status(), expected);
    }
    limited.stop().await;
}
