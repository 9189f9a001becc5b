//! FCM and APNs end to end. Google and Apple cannot be reached here, so this test runs an HTTPS
//! endpoint on loopback (HTTP/2 over rustls, trusted through `push.provider_ca_file`) that
//! stands in for the FCM token endpoint, the FCM `messages:send` API and APNs, and checks what
//! the server sends against the providers' documented request formats: the service account's
//! RS256 assertion (verified with the account's public key: `iss`, `scope`, `aud`, `iat`,
//! `exp`, `kid`), the bearer token it bought (fetched once and reused), the FCM message body;
//! the APNs ES256 provider token (verified with the `.p8` key's public half: `kid`, `iss`,
//! `iat`), the `apns-*` headers, HTTP/2 and the `aps` body. Then the content rules (privacy
//! mode, end-to-end-encrypted messages, collapse keys, badge, mute) and the answers: 503 and
//! 429 retried then delivered, FCM 404 `UNREGISTERED`, APNs 400 `BadDeviceToken` and 410
//! remove the subscription.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tidings_proto::MessageBody;
use tidings_proto::push::{PushSettings, PushSubscription};
use tidings_testkit::{TestServer, TestUser};

const PROJECT: &str = "tidings-test";
const CLIENT_EMAIL: &str = "push@tidings-test.iam.gserviceaccount.com";
const RSA_KEY_ID: &str = "0123456789abcdef";
const APNS_KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const BUNDLE: &str = "org.tidings.app";
const FCM_TOKEN: &str = "fcm-registration-token-1";
const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One request the endpoint accepted as well formed.
#[derive(Clone, Debug)]
struct Seen {
    /// `token`, `fcm` or `apns`.
    provider: &'static str,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
    status: u16,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
}

/// A scripted answer: status, `Retry-After`, JSON body.
type Answer = (u16, Option<&'static str>, Value);

#[derive(Clone)]
struct Endpoint {
    base: String,
    rsa_public: Arc<Vec<u8>>,
    ec_public: Arc<Vec<u8>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// What was wrong with a request, if anything: the test fails on any.
    problems: Arc<Mutex<Vec<String>>>,
    fcm_script: Arc<Mutex<VecDeque<Answer>>>,
    apns_script: Arc<Mutex<VecDeque<Answer>>>,
    tokens_issued: Arc<Mutex<u32>>,
}

impl Endpoint {
    fn problem(&self, what: String) {
        self.problems.lock().unwrap().push(what);
    }

    fn of(&self, provider: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.provider == provider)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, provider: &str, n: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.assert_no_problems();
            let seen = self.of(provider);
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{provider}: {} of {n} requests",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn expect_no_more(&self, provider: &str, n: usize) {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            self.of(provider).len(),
            n,
            "{provider}: unexpected requests"
        );
    }

    fn assert_no_problems(&self) {
        let problems = self.problems.lock().unwrap();
        assert!(problems.is_empty(), "malformed requests: {problems:#?}");
    }

    /// Checks a JWT's signature and returns its header and claims.
    fn jwt(&self, token: &str, rsa: bool) -> Option<(Value, Value)> {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return None;
        }
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = B64.decode(parts[2]).ok()?;
        let verified = if rsa {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, self.rsa_public.as_slice())
                .verify(signed.as_bytes(), &signature)
        } else {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.ec_public.as_slice())
                .verify(signed.as_bytes(), &signature)
        };
        verified.ok()?;
        let header = serde_json::from_slice(&B64.decode(parts[0]).ok()?).ok()?;
        let claims = serde_json::from_slice(&B64.decode(parts[1]).ok()?).ok()?;
        Some((header, claims))
    }

    async fn handle(
        &self,
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
    ) {
        let (parts, mut stream) = request.into_parts();
        let mut body = Vec::new();
        while let Some(Ok(chunk)) = stream.data().await {
            let _ = stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let body = Bytes::from(body);
        let path = parts.uri.path().to_string();
        let (provider, answer) = if path == "/token" {
            ("token", self.token(&parts.headers, &body))
        } else if path == format!("/v1/projects/{PROJECT}/messages:send") {
            ("fcm", self.fcm(&parts.headers, &body))
        } else if let Some(device) = path.strip_prefix("/3/device/") {
            ("apns", self.apns(&parts, device, &body))
        } else {
            self.problem(format!("unknown path {path}"));
            ("unknown", (404, None, json!({})))
        };
        if parts.method != http::Method::POST {
            self.problem(format!("{provider}: method {}", parts.method));
        }
        if provider == "apns" && parts.version != http::Version::HTTP_2 {
            self.problem("apns: not HTTP/2".into());
        }
        let (status, retry_after, answer_body) = answer;
        self.seen.lock().unwrap().push(Seen {
            provider,
            path,
            headers: parts.headers,
            body,
            status,
        });
        let mut response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json");
        if let Some(after) = retry_after {
            response = response.header("retry-after", after);
        }
        if provider == "apns" {
            response = response.header("apns-id", "EC1BF194-B3B2-424A-89A8-C4BBDC3EA2A6");
        }
        let Ok(mut send) = respond.send_response(response.body(()).unwrap(), false) else {
            return;
        };
        let _ = send.send_data(Bytes::from(answer_body.to_string()), true);
    }

    /// The OAuth token endpoint: a JWT-bearer grant (RFC 7523) with the account's assertion.
    fn token(&self, headers: &http::HeaderMap, body: &[u8]) -> Answer {
        let form: Vec<(String, String)> = form_decode(body);
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let content_type = headers
            .get("content-type")
            .map_or("", |v| v.to_str().unwrap());
        if content_type != "application/x-www-form-urlencoded" {
            self.problem(format!("token: content-type {content_type}"));
        }
        if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            self.problem(format!("token: grant_type {}", field("grant_type")));
        }
        let Some((header, claims)) = self.jwt(&field("assertion"), true) else {
            self.problem("token: the assertion does not verify".into());
            return (400, None, json!({"error": "invalid_grant"}));
        };
        let now = now_secs();
        let iat = claims["iat"].as_i64().unwrap_or(0);
        let checks = [
            (header["alg"] == "RS256", "alg"),
            (header["kid"] == RSA_KEY_ID, "kid"),
            (claims["iss"] == CLIENT_EMAIL, "iss"),
            (
                claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging",
                "scope",
            ),
            (claims["aud"] == format!("{}/token", self.base), "aud"),
            ((iat - now).abs() < 60, "iat"),
            (claims["exp"].as_i64() == Some(iat + 3600), "exp"),
        ];
        for (ok, what) in checks {
            if !ok {
                self.problem(format!("token: bad {what} in {header} {claims}"));
            }
        }
        let mut issued = self.tokens_issued.lock().unwrap();
        *issued += 1;
        (
            200,
            None,
            json!({"access_token": format!("ya29.token-{}", *issued), "expires_in": 3599,
                   "token_type": "Bearer"}),
        )
    }

    fn fcm(&self, headers: &http::HeaderMap, body: &[u8]) -> Answer {
        let issued = *self.tokens_issued.lock().unwrap();
        let authorization = headers
            .get("authorization")
            .map_or("", |v| v.to_str().unwrap());
        if authorization != format!("Bearer ya29.token-{issued}") {
            self.problem(format!("fcm: authorization {authorization:?}"));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(message) => {
                let m = &message["message"];
                let data_are_strings = m["data"]
                    .as_object()
                    .is_some_and(|d| d.values().all(Value::is_string));
                if m["token"] != FCM_TOKEN
                    || !data_are_strings
                    || !m["notification"]["title"].is_string()
                    || !m["android"]["collapse_key"].is_string()
                    || !m["android"]["ttl"]
                        .as_str()
                        .is_some_and(|t| t.ends_with('s'))
                    || !matches!(m["android"]["priority"].as_str(), Some("HIGH" | "NORMAL"))
                {
                    self.problem(format!("fcm: body {message}"));
                }
            }
            Err(e) => self.problem(format!("fcm: body is not JSON: {e}")),
        }
        self.fcm_script.lock().unwrap().pop_front().unwrap_or((
            200,
            None,
            json!({"name": format!("projects/{PROJECT}/messages/0:1")}),
        ))
    }

    fn apns(&self, parts: &http::request::Parts, device: &str, body: &[u8]) -> Answer {
        let h = |name: &str| {
            parts
                .headers
                .get(name)
                .map_or(String::new(), |v| v.to_str().unwrap().to_string())
        };
        let now = now_secs();
        match h("authorization")
            .strip_prefix("bearer ")
            .and_then(|t| self.jwt(t, false))
        {
            Some((header, claims)) => {
                let iat = claims["iat"].as_i64().unwrap_or(0);
                if header["alg"] != "ES256"
                    || header["kid"] != APNS_KEY_ID
                    || claims["iss"] != TEAM_ID
                    || (iat - now).abs() > 3600
                {
                    self.problem(format!("apns: token {header} {claims}"));
                }
            }
            None => self.problem(format!("apns: authorization {:?}", h("authorization"))),
        }
        let expiration: i64 = h("apns-expiration").parse().unwrap_or(0);
        if h("apns-topic") != BUNDLE
            || h("apns-push-type") != "alert"
            || !matches!(h("apns-priority").as_str(), "10" | "5")
            || expiration <= now
            || h("apns-collapse-id").is_empty()
            || h("apns-collapse-id").len() > 64
            || !device.bytes().all(|b| b.is_ascii_hexdigit())
        {
            self.problem(format!("apns: headers {:?}", parts.headers));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v["aps"]["alert"]["title"].is_string() => {}
            _ => self.problem(format!("apns: body {}", String::from_utf8_lossy(body))),
        }
        self.apns_script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, None, json!({})))
    }
}

/// `application/x-www-form-urlencoded` into pairs.
fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Starts the endpoint; returns it with the certificate (PEM) clients must trust.
async fn start_endpoint(rsa_public: Vec<u8>, ec_public: Vec<u8>) -> (Endpoint, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certified.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint {
        base: format!("https://{}", listener.local_addr().unwrap()),
        rsa_public: Arc::new(rsa_public),
        ec_public: Arc::new(ec_public),
        seen: Arc::default(),
        problems: Arc::default(),
        fcm_script: Arc::default(),
        apns_script: Arc::default(),
        tokens_issued: Arc::default(),
    };
    let this = endpoint.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, this) = (acceptor.clone(), this.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    let this = this.clone();
                    tokio::spawn(async move { this.handle(request, respond).await });
                }
            });
        }
    });
    (endpoint, cert_pem)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

async fn wait_until_unsubscribed(user: &TestUser, device_count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = user.api.push_subscriptions().await.unwrap().subscriptions;
        if left.len() == device_count {
            return;
        }
        assert!(Instant::now() < deadline, "subscriptions left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(t: &str) -> MessageBody {
    MessageBody::Text { text: t.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_and_apns_requests_follow_the_documented_formats_and_answers() {
    // The operator's credentials: a service-account file with an RSA key, and a .p8 key.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa_pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
    let p8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, p8.as_ref()).unwrap();
    let (endpoint, cert_pem) = start_endpoint(
        rsa.public_key().as_ref().to_vec(),
        ec.public_key().as_ref().to_vec(),
    )
    .await;
    let files = tempfile::tempdir().unwrap();
    let account = files.path().join("service-account.json");
    std::fs::write(
        &account,
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": RSA_KEY_ID,
            "private_key": pem("PRIVATE KEY", rsa_pkcs8.as_ref()),
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": format!("{}/token", endpoint.base),
        })
        .to_string(),
    )
    .unwrap();
    let p8_file = files.path().join("AuthKey.p8");
    std::fs::write(&p8_file, pem("PRIVATE KEY", p8.as_ref())).unwrap();
    let ca = files.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).unwrap();

    let base = endpoint.base.clone();
    let server = TestServer::start_with(|config| {
        let push = &mut config.push;
        push.backoff_base_ms = 200;
        push.poll_interval_ms = 100;
        push.fcm_service_account = account.display().to_string();
        push.fcm_base_url = base.clone();
        push.apns_key_file = p8_file.display().to_string();
        push.apns_key_id = APNS_KEY_ID.into();
        push.apns_team_id = TEAM_ID.into();
        push.apns_topic = BUNDLE.into();
        push.apns_base_url = base.clone();
        push.provider_ca_file = ca.display().to_string();
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bob_iphone = server.second_device(&bob, "iphone").await;
    bob.api
        .set_push_subscription(&PushSubscription::Fcm {
            token: FCM_TOKEN.into(),
        })
        .await
        .unwrap();
    bob_iphone
        .api
        .set_push_subscription(&PushSubscription::Apns {
            token: APNS_TOKEN.into(),
        })
        .await
        .unwrap();
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    let key = format!("c{}", direct.0);

    // A message reaches both, with sender and preview.
    alice
        .api
        .send(direct, "m1", text("hello bob"))
        .await
        .unwrap();
    let fcm = endpoint.wait_for("fcm", 1).await;
    let apns = endpoint.wait_for("apns", 1).await;
    let m = &fcm[0].json()["message"];
    assert_eq!(m["data"]["kind"], "message");
    assert_eq!(m["data"]["sender"], "alice");
    assert_eq!(m["data"]["preview"], "hello bob");
    assert_eq!(m["data"]["conversation_id"], direct.0.to_string());
    assert_eq!(
        (&m["data"]["count"], &m["data"]["badge"]),
        (&json!("1"), &json!("1"))
    );
    assert_eq!(
        m["notification"],
        json!({"title": "alice", "body": "hello bob"})
    );
    assert_eq!(m["android"]["collapse_key"], key);
    assert_eq!(m["android"]["notification"]["tag"], key);
    assert_eq!(m["android"]["notification"]["notification_count"], 1);
    assert_eq!(m["android"]["ttl"], "86400s");
    assert_eq!(m["android"]["priority"], "NORMAL");
    assert_eq!(apns[0].path, format!("/3/device/{APNS_TOKEN}"));
    assert_eq!(apns[0].header("apns-collapse-id"), key);
    let expiration: i64 = apns[0].header("apns-expiration").parse().unwrap();
    assert!((expiration - (now_secs() + 86_400)).abs() < 60);
    let a = apns[0].json();
    assert_eq!(
        a["aps"]["alert"],
        json!({"title": "alice", "body": "hello bob"})
    );
    assert_eq!(
        (&a["aps"]["badge"], &a["aps"]["thread-id"]),
        (&json!(1), &json!(key))
    );
    assert_eq!(a["tidings"]["preview"], "hello bob");

    // Privacy mode: neither the sender nor the text leaves the server; the burst is counted.
    bob.api
        .set_push_settings(&PushSettings {
            privacy: true,
            ..Default::default()
        })
        .await
        .unwrap();
    alice
        .api
        .send(direct, "m2", text("secret plans"))
        .await
        .unwrap();
    let fcm = endpoint.wait_for("fcm", 2).await;
    let apns = endpoint.wait_for("apns", 2).await;
    for raw in [&fcm[1].body, &apns[1].body] {
        let raw = String::from_utf8_lossy(raw);
        assert!(
            !raw.contains("secret") && !raw.contains("alice"),
            "privacy mode leaks: {raw}"
        );
    }
    let m = &fcm[1].json()["message"];
    assert_eq!(
        m["notification"],
        json!({"title": "Tidings", "body": "2 new messages"})
    );
    assert_eq!(m["android"]["notification"]["notification_count"], 2);
    assert_eq!(apns[1].json()["aps"]["badge"], 2);
    // One access token served both pushes.
    assert_eq!(endpoint.of("token").len(), 1);

    // An end-to-end-encrypted message: the sender shows, no preview, never the ciphertext.
    bob.api
        .set_push_settings(&PushSettings::default())
        .await
        .unwrap();
    let sealed = MessageBody::Encrypted {
        algorithm: "m.megolm.v1.aes-sha2".into(),
        ciphertext: "Q2lwaGVydGV4dEJsb2I".into(),
        session_id: None,
    };
    alice.api.send(direct, "m3", sealed).await.unwrap();
    let fcm = endpoint.wait_for("fcm", 3).await;
    let apns = endpoint.wait_for("apns", 3).await;
    for raw in [&fcm[2].body, &apns[2].body] {
        assert!(!String::from_utf8_lossy(raw).contains("Q2lwaGVydGV4dEJsb2I"));
    }
    let m = &fcm[2].json()["message"];
    assert_eq!(m["data"]["sender"], "alice");
    assert!(m["data"].get("preview").is_none(), "{m}");
    assert!(apns[2].json()["tidings"].get("preview").is_none());

    // Muted: nothing to either.
    bob.api
        .set_push_settings(&PushSettings {
            muted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    alice
        .api
        .send(direct, "m4", text("while muted"))
        .await
        .unwrap();
    endpoint.expect_no_more("fcm", 3).await;
    endpoint.expect_no_more("apns", 3).await;
    bob.api
        .set_push_settings(&PushSettings::default())
        .await
        .unwrap();

    // 503 (FCM, with Retry-After) and 429 (APNs) are retried, then delivered unchanged.
    endpoint.fcm_script.lock().unwrap().push_back((
        503,
        Some("1"),
        json!({"error": {"code": 503, "status": "UNAVAILABLE"}}),
    ));
    endpoint.apns_script.lock().unwrap().push_back((
        429,
        None,
        json!({"reason": "TooManyRequests"}),
    ));
    alice
        .api
        .send(direct, "m5", text("retry me"))
        .await
        .unwrap();
    let fcm = endpoint.wait_for("fcm", 5).await;
    let apns = endpoint.wait_for("apns", 5).await;
    assert_eq!((fcm[3].status, fcm[4].status), (503, 200));
    assert_eq!((apns[3].status, apns[4].status), (429, 200));
    assert_eq!(fcm[3].body, fcm[4].body);
    assert_eq!(apns[3].json(), apns[4].json());
    assert_eq!(fcm[4].json()["message"]["data"]["preview"], "retry me");

    // FCM 404 UNREGISTERED and APNs 400 BadDeviceToken: both subscriptions are removed.
    endpoint.fcm_script.lock().unwrap().push_back((
        404,
        None,
        json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "UNREGISTERED"}]}}),
    ));
    endpoint.apns_script.lock().unwrap().push_back((
        400,
        None,
        json!({"reason": "BadDeviceToken"}),
    ));
    alice.api.send(direct, "m6", text("anyone?")).await.unwrap();
    endpoint.wait_for("fcm", 6).await;
    endpoint.wait_for("apns", 6).await;
    wait_until_unsubscribed(&bob, 0).await;

    // APNs 410 Unregistered removes a subscription too.
    bob_iphone
        .api
        .set_push_subscription(&PushSubscription::Apns {
            token: APNS_TOKEN.into(),
        })
        .await
        .unwrap();
    endpoint.apns_script.lock().unwrap().push_back((
        410,
        None,
        json!({"reason": "Unregistered", "timestamp": 1}),
    ));
    alice
        .api
        .send(direct, "m7", text("still there?"))
        .await
        .unwrap();
    endpoint.wait_for("apns", 7).await;
    wait_until_unsubscribed(&bob, 0).await;
    alice
        .api
        .send(direct, "m8", text("into the void"))
        .await
        .unwrap();
    endpoint.expect_no_more("fcm", 6).await;
    endpoint.expect_no_more("apns", 7).await;
    endpoint.assert_no_problems();
    assert_eq!(endpoint.of("token").len(), 1, "the access token is cached");
    server.stop().await;
}
