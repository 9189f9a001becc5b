//! Push notifications end to end: user B registers a real Web Push subscription pointing at a
//! push service in this test (a small HTTP receiver on loopback), stays away, and A's messages
//! reach that service. Each request's VAPID JWT is verified here (signature with the server's
//! published key, audience, expiry, subject) and every body is decrypted by an independent
//! RFC 8291 implementation, the `http_ece` Python package (scripts/push/ece_decrypt.py), to the
//! expected payload. Mute, mentions-only, do-not-disturb, privacy mode and a foreground
//! connection each change what is sent; a 410 removes the subscription; a 503 is retried and
//! then delivered; a server killed while a push waits for its retry delivers it after restart;
//! and a server killed after acknowledging a message but before queueing its push (held there
//! by a lock on the queue's table, on PostgreSQL) delivers that push after restart, from the
//! outbox written with the message.
//!
//! A second, independent push service checks the same path: the npm package
//! `web-push-testing` (installed in scripts/push from its lockfile), which hands out
//! subscriptions, verifies each push's VAPID signature, decrypts it, and answers 410 for a
//! subscription it expired.
//!
//! `scripts/test` installs http-ece in target/py-venv and web-push-testing in scripts/push, and
//! sets `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass without them; a plain
//! `cargo test` without them says so and skips.

use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tidings_proto::push::{DndWindow, PushSettings, PushSubscription};
use tidings_proto::rest::{NotifyLevel, UpdateConversationSettingsRequest};
use tidings_proto::{Mentions, MessageBody, Relations};
use tidings_testkit::{ServerProcess, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SUBJECT: &str = "mailto:push-test@example.org";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has http_ece, if there is one.
fn ece_python() -> Option<PathBuf> {
    let python = match std::env::var_os("TEST_CLIENTS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => workspace_root().join("target/py-venv/bin/python"),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", "import http_ece"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
        "REQUIRE_TEST_CLIENTS is set but no Python with http_ece was found"
    );
    eprintln!("SKIPPED: no Python with http_ece; scripts/test prepares target/py-venv");
    None
}

/// One request the push service received.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What we answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Scripted answers: a status and an optional `Retry-After`.
type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>;

/// A push service on loopback: records each request and answers with the next scripted status
/// (201 when the script is empty).
#[derive(Clone)]
struct PushService {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Script,
}

impl PushService {
    async fn start() -> PushService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let service = PushService {
            base,
            received: Arc::default(),
            script: Arc::default(),
        };
        let this = service.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let _ = this.serve(stream).await;
                });
            }
        });
        service
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(buf.len() < 64 * 1024, "request head too large");
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let (status, retry_after) = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((201, None));
        self.received.lock().unwrap().push(Received {
            headers,
            body,
            status,
        });
        let extra = retry_after.map_or(String::new(), |r| format!("Retry-After: {r}\r\n"));
        let response =
            format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn answer(&self, status: u16, retry_after: Option<&'static str>) {
        self.script.lock().unwrap().push_back((status, retry_after));
    }

    /// Waits until `n` requests have arrived in all, and returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} pushes arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks that nothing more than `n` requests arrive within a while.
    async fn expect_no_more_than(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            self.count(),
            n,
            "a push arrived that the rules should have stopped"
        );
    }
}

/// A browser's side of a subscription: its key pair and auth secret.
struct Browser {
    key: PrivateKey,
    auth: [u8; 16],
    python: PathBuf,
}

impl Browser {
    fn new(python: PathBuf) -> Browser {
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::fill(&mut auth).unwrap();
        Browser {
            key: PrivateKey::generate(&ECDH_P256).unwrap(),
            auth,
            python,
        }
    }

    fn subscription(&self, endpoint: String) -> PushSubscription {
        PushSubscription::WebPush {
            endpoint,
            p256dh: B64.encode(self.key.compute_public_key().unwrap().as_ref()),
            auth: B64.encode(self.auth),
        }
    }

    /// Decrypts bodies with http_ece (Python), to JSON payloads.
    async fn decrypt(&self, bodies: &[&[u8]]) -> Vec<Value> {
        let private: EcPrivateKeyBin = self.key.as_be_bytes().unwrap();
        let input = serde_json::json!({
            "private_key": B64.encode(private.as_ref()),
            "auth": B64.encode(self.auth),
            "bodies": bodies.iter().map(|b| B64.encode(b)).collect::<Vec<_>>(),
        });
        let mut child = tokio::process::Command::new(&self.python)
            .arg(workspace_root().join("scripts/push/ece_decrypt.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "http_ece could not decrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plaintexts: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        plaintexts
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect()
    }
}

/// Checks a request's headers and VAPID JWT: ES256 signature by the server's published key,
/// `aud` = the push service's origin, `exp` in the future and at most 24 hours away, `sub`.
fn check_vapid(request: &Received, vapid_key: &str, origin: &str) {
    assert_eq!(request.header("content-encoding"), Some("aes128gcm"));
    assert!(
        request
            .header("ttl")
            .is_some_and(|t| t.parse::<u32>().is_ok())
    );
    let auth = request
        .header("authorization")
        .expect("Authorization header");
    let rest = auth.strip_prefix("vapid ").expect("vapid scheme");
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = Some(t);
        } else if let Some(k) = part.strip_prefix("k=") {
            key = Some(k);
        }
    }
    let (token, key) = (token.expect("t="), key.expect("k="));
    assert_eq!(key, vapid_key, "k= is the key clients subscribed with");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], origin);
    assert_eq!(claims["sub"], SUBJECT);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = claims["exp"].as_i64().expect("numeric exp");
    assert!(
        exp > now && exp <= now + 24 * 3600,
        "exp {exp} vs now {now}"
    );
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, B64.decode(key).unwrap())
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &B64.decode(parts[2]).unwrap(),
        )
        .expect("the VAPID signature verifies");
}

fn text(t: &str) -> MessageBody {
    MessageBody::Text { text: t.into() }
}

fn fast_push(config: &mut tidings::config::Config) {
    config.push.vapid_subject = SUBJECT.into();
    config.push.backoff_base_ms = 200;
    config.push.poll_interval_ms = 100;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_reaches_an_away_device_under_its_rules() {
    let Some(python) = ece_python() else {
        return;
    };
    let service = PushService::start().await;
    let server = TestServer::start_with(fast_push).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let browser = Browser::new(python);
    bob.api
        .set_push_subscription(&browser.subscription(format!("{}/push/bob", service.base)))
        .await
        .unwrap();
    let listed = bob.api.push_subscriptions().await.unwrap().subscriptions;
    assert_eq!(listed.len(), 1);
    let vapid = server.client().authed("").vapid_key().await.unwrap();
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;

    // Away: the push arrives, signed and decryptable, with sender and preview.
    alice
        .api
        .send(direct, "m1", text("hello bob"))
        .await
        .unwrap();
    let got = service.wait_for(1).await;
    check_vapid(&got[0], &vapid, &service.base);
    assert_eq!(
        got[0].header("topic"),
        Some(format!("c{}", direct.0).as_str())
    );
    let payload = &browser.decrypt(&[&got[0].body]).await[0];
    assert_eq!(payload["kind"], "message");
    assert_eq!(payload["sender"], "alice");
    assert_eq!(payload["preview"], "hello bob");
    assert_eq!(payload["conversation_id"], direct.0);
    assert_eq!(
        (payload["count"].as_u64(), payload["badge"].as_u64()),
        (Some(1), Some(1))
    );

    // Privacy mode: only that there is something new.
    let privacy = PushSettings {
        privacy: true,
        ..Default::default()
    };
    bob.api.set_push_settings(&privacy).await.unwrap();
    alice
        .api
        .send(direct, "m2", text("secret plans"))
        .await
        .unwrap();
    let got = service.wait_for(2).await;
    let payload = &browser.decrypt(&[&got[1].body]).await[0];
    assert_eq!(payload["kind"], "message");
    assert!(
        payload.get("sender").is_none() && payload.get("preview").is_none(),
        "{payload}"
    );
    assert_eq!(payload["count"], 2, "a burst is counted: {payload}");
    assert_eq!(payload["badge"], 2);

    // Muted: nothing.
    let muted = PushSettings {
        muted: true,
        ..Default::default()
    };
    bob.api.set_push_settings(&muted).await.unwrap();
    alice
        .api
        .send(direct, "m3", text("while muted"))
        .await
        .unwrap();
    service.expect_no_more_than(2).await;

    // Do-not-disturb hours around the current time in Tokyo: nothing.
    let tokyo_minute = {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (((now + 9 * 3600) / 60) % 1440) as u16
    };
    let dnd = PushSettings {
        dnd: Some(DndWindow {
            start: (tokyo_minute + 1440 - 10) % 1440,
            end: (tokyo_minute + 10) % 1440,
        }),
        time_zone: Some("Asia/Tokyo".into()),
        ..Default::default()
    };
    bob.api.set_push_settings(&dnd).await.unwrap();
    alice
        .api
        .send(direct, "m4", text("at night"))
        .await
        .unwrap();
    service.expect_no_more_than(2).await;
    // The same hours in a zone where they are not now: pushed again.
    let elsewhere = PushSettings {
        time_zone: Some("America/New_York".into()),
        ..dnd.clone()
    };
    bob.api.set_push_settings(&elsewhere).await.unwrap();
    alice
        .api
        .send(direct, "m5", text("daytime there"))
        .await
        .unwrap();
    let got = service.wait_for(3).await;
    let payload = &browser.decrypt(&[&got[2].body]).await[0];
    assert_eq!(payload["preview"], "daytime there");
    bob.api
        .set_push_settings(&PushSettings::default())
        .await
        .unwrap();

    // A group on mentions-only: a plain message is not pushed, a mention is.
    let group = alice
        .api
        .create_group("plans", &[bob.user_id, carol.user_id])
        .await
        .unwrap()
        .id;
    bob.api
        .update_conversation_settings(
            group,
            &UpdateConversationSettingsRequest {
                notify: Some(NotifyLevel::Mentions),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    alice.api.send(group, "g1", text("lunch?")).await.unwrap();
    service.expect_no_more_than(3).await;
    alice
        .api
        .send_related(
            group,
            "g2",
            text("@bob lunch?"),
            Relations {
                mentions: Some(Mentions {
                    users: vec![bob.user_id],
                    all: false,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = service.wait_for(4).await;
    let payload = &browser.decrypt(&[&got[3].body]).await[0];
    assert_eq!(payload["kind"], "mention");
    assert_eq!(payload["title"], "plans");
    assert_eq!(payload["preview"], "@bob lunch?");

    // Connected in the foreground: nothing; in the background: pushed.
    let conn = server.connect(&bob).await;
    alice
        .api
        .send(direct, "m6", text("you are here"))
        .await
        .unwrap();
    service.expect_no_more_than(4).await;
    conn.set_activity(false).await.unwrap();
    alice
        .api
        .send(direct, "m7", text("in the background"))
        .await
        .unwrap();
    let got = service.wait_for(5).await;
    let payload = &browser.decrypt(&[&got[4].body]).await[0];
    assert_eq!(payload["preview"], "in the background");
    drop(conn);

    // A friend request is pushed too.
    carol
        .api
        .send_friend_request(bob.user_id, None)
        .await
        .unwrap();
    let got = service.wait_for(6).await;
    let payload = &browser.decrypt(&[&got[5].body]).await[0];
    assert_eq!(
        (payload["kind"].as_str(), payload["sender"].as_str()),
        (Some("friend_request"), Some("carol"))
    );

    // 503 then delivered: the same push comes again after the Retry-After.
    service.answer(503, Some("1"));
    alice
        .api
        .send(direct, "m8", text("retry me"))
        .await
        .unwrap();
    let got = service.wait_for(8).await;
    assert_eq!((got[6].status, got[7].status), (503, 201));
    let payloads = browser.decrypt(&[&got[6].body, &got[7].body]).await;
    assert_eq!(payloads[0]["preview"], "retry me");
    assert_eq!(payloads[0], payloads[1]);

    // 410: the subscription is gone, and so is ours.
    service.answer(410, None);
    alice.api.send(direct, "m9", text("anyone?")).await.unwrap();
    service.wait_for(9).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bob
        .api
        .push_subscriptions()
        .await
        .unwrap()
        .subscriptions
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the subscription was not removed after 410"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice
        .api
        .send(direct, "m10", text("into the void"))
        .await
        .unwrap();
    service.expect_no_more_than(9).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waiting_for_its_retry_survives_a_killed_server() {
    let Some(python) = ece_python() else {
        return;
    };
    let service = PushService::start().await;
    let dir = tempfile::tempdir().unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tidings"));
    let env = [
        ("TIDINGS_PUSH_VAPID_SUBJECT", SUBJECT),
        ("TIDINGS_PUSH_POLL_INTERVAL_MS", "100"),
        ("TIDINGS_PUSH_LEASE_SECS", "2"),
    ];
    let server = ServerProcess::spawn(binary, dir.path(), &env)
        .await
        .unwrap();
    let client = server.client();
    let alice = tidings_testkit::signed_in_user(&client, "alice").await;
    let bob = tidings_testkit::signed_in_user(&client, "bob").await;
    let browser = Browser::new(python);
    bob.api
        .set_push_subscription(&browser.subscription(format!("{}/push/bob", service.base)))
        .await
        .unwrap();
    let vapid = client.authed("").vapid_key().await.unwrap();
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    // The push service is down for a while: the push waits 5 s for its retry.
    service.answer(503, Some("5"));
    alice
        .api
        .send(direct, "m1", text("survive this"))
        .await
        .unwrap();
    service.wait_for(1).await;
    server.kill().await.unwrap();

    let server = ServerProcess::spawn(binary, dir.path(), &env)
        .await
        .unwrap();
    let got = service.wait_for(2).await;
    assert_eq!((got[0].status, got[1].status), (503, 201));
    // The same key after the restart: it was persisted.
    assert_eq!(server.client().authed("").vapid_key().await.unwrap(), vapid);
    check_vapid(&got[1], &vapid, &service.base);
    let payload = &browser.decrypt(&[&got[1].body]).await[0];
    assert_eq!(payload["preview"], "survive this");
    server.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_messages_push_survives_a_kill_before_it_was_queued() {
    let Some(python) = ece_python() else {
        return;
    };
    let service = PushService::start().await;
    let db = tidings_store_postgres::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tidings"));
    let env = [
        ("TIDINGS_STORE_KIND", "postgres"),
        ("TIDINGS_STORE_URL", db.url.as_str()),
        ("TIDINGS_PUSH_VAPID_SUBJECT", SUBJECT),
        ("TIDINGS_PUSH_POLL_INTERVAL_MS", "100"),
        ("TIDINGS_PUSH_LEASE_SECS", "2"),
    ];
    let server = ServerProcess::spawn(binary, dir.path(), &env)
        .await
        .unwrap();
    let client = server.client();
    let alice = tidings_testkit::signed_in_user(&client, "alice").await;
    let bob = tidings_testkit::signed_in_user(&client, "bob").await;
    let browser = Browser::new(python);
    bob.api
        .set_push_subscription(&browser.subscription(format!("{}/push/bob", service.base)))
        .await
        .unwrap();
    let vapid = client.authed("").vapid_key().await.unwrap();
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    alice.api.send(direct, "m0", text("before")).await.unwrap();
    service.wait_for(1).await;

    // Hold the job queue's table: the planner can claim the message's outbox row and read
    // what it needs, but its INSERT into push_jobs waits for this lock.
    let (pg, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    pg.batch_execute("BEGIN; LOCK TABLE push_jobs IN EXCLUSIVE MODE")
        .await
        .unwrap();
    // Another connection watches: inside the locking transaction, pg_stat_activity would be
    // the snapshot taken at its first read.
    let (watch, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    alice
        .api
        .send(direct, "m1", text("survive the kill"))
        .await
        .expect("the message is acknowledged");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO push_jobs%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        if Instant::now() >= deadline {
            let rows = watch
                .query(
                    "SELECT coalesce(wait_event_type, ''), coalesce(state, ''), query \
                     FROM pg_stat_activity WHERE datname = current_database()",
                    &[],
                )
                .await
                .unwrap();
            let rows: Vec<(String, String, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            panic!("the planner never tried to queue the push: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().await.unwrap();
    pg.batch_execute("ROLLBACK").await.unwrap();
    // The push was not queued; the outbox row written with the message is all that is left.
    let queued: i64 = pg
        .query_one("SELECT count(*) FROM push_jobs", &[])
        .await
        .unwrap()
        .get(0);
    let outbox: i64 = pg
        .query_one("SELECT count(*) FROM push_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((queued, outbox), (0, 1));
    assert_eq!(service.count(), 1, "nothing was pushed before the kill");

    let server = ServerProcess::spawn(binary, dir.path(), &env)
        .await
        .unwrap();
    let got = service.wait_for(2).await;
    check_vapid(&got[1], &vapid, &service.base);
    let payload = &browser.decrypt(&[&got[1].body]).await[0];
    assert_eq!(payload["preview"], "survive the kill");
    assert_eq!(payload["sender"], "alice");
    service.expect_no_more_than(2).await;
    let outbox: i64 = pg
        .query_one("SELECT count(*) FROM push_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outbox, 0, "the planned row is deleted");
    server.kill().await.unwrap();
}

/// The server script of the npm package web-push-testing, if it is installed.
fn web_push_testing() -> Option<PathBuf> {
    let script =
        workspace_root().join("scripts/push/node_modules/web-push-testing/src/bin/server.js");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && script.exists() {
        return Some(script);
    }
    assert!(
        std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
        "REQUIRE_TEST_CLIENTS is set but web-push-testing is not installed in scripts/push"
    );
    eprintln!(
        "SKIPPED: web-push-testing is not installed; scripts/test runs npm ci in scripts/push"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_testing_decrypts_and_verifies_what_the_server_sends() {
    let Some(script) = web_push_testing() else {
        return;
    };
    // It builds its endpoints from the port it is given, so it needs a fixed one: a free port
    // from the system, released just before the service binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut service = tokio::process::Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(service.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Server running") {
                return;
            }
        }
        panic!("web-push-testing exited before listening");
    })
    .await
    .expect("web-push-testing starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let server = TestServer::start_with(fast_push).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let vapid = server.client().authed("").vapid_key().await.unwrap();
    // Subscribe as a browser would, with the server's VAPID key: pushes signed by another key
    // are refused by the service.
    let subscribed: Value = http
        .post(format!("{api}/subscribe"))
        .json(&serde_json::json!({"applicationServerKey": vapid, "userVisibleOnly": "true"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = &subscribed["data"];
    let client_hash = data["clientHash"]
        .as_str()
        .expect("a subscription")
        .to_string();
    bob.api
        .set_push_subscription(&PushSubscription::WebPush {
            endpoint: data["endpoint"].as_str().unwrap().into(),
            p256dh: data["keys"]["p256dh"].as_str().unwrap().into(),
            auth: data["keys"]["auth"].as_str().unwrap().into(),
        })
        .await
        .unwrap();
    let received = |n: usize| {
        let (http, api, client_hash) = (http.clone(), api.clone(), client_hash.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let got: Value = http
                    .post(format!("{api}/get-notifications"))
                    .json(&serde_json::json!({"clientHash": client_hash}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let messages = got["data"]["messages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if messages.len() >= n {
                    return messages
                        .iter()
                        .map(|m| serde_json::from_str::<Value>(m.as_str().unwrap()).unwrap())
                        .collect::<Vec<Value>>();
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {n} pushes decrypted",
                    messages.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    alice
        .api
        .send(direct, "w1", text("through web-push-testing"))
        .await
        .unwrap();
    let payloads = received(1).await;
    assert_eq!(payloads[0]["kind"], "message");
    assert_eq!(payloads[0]["sender"], "alice");
    assert_eq!(payloads[0]["preview"], "through web-push-testing");
    assert_eq!(payloads[0]["conversation_id"], direct.0);

    // Privacy mode, decrypted by the same independent implementation: no sender, no text.
    bob.api
        .set_push_settings(&PushSettings {
            privacy: true,
            ..Default::default()
        })
        .await
        .unwrap();
    alice
        .api
        .send(direct, "w2", text("hidden text"))
        .await
        .unwrap();
    let payloads = received(2).await;
    assert!(
        payloads[1].get("sender").is_none() && payloads[1].get("preview").is_none(),
        "{}",
        payloads[1]
    );
    assert_eq!(payloads[1]["count"], 2);

    // The service expires the subscription and answers 410: ours is removed.
    let expired = http
        .post(format!("{api}/expire-subscription/{client_hash}"))
        .send()
        .await
        .unwrap();
    assert!(expired.status().is_success());
    alice.api.send(direct, "w3", text("gone")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bob
        .api
        .push_subscriptions()
        .await
        .unwrap()
        .subscriptions
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the subscription was not removed after 410"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    let _ = service.kill().await;
}
