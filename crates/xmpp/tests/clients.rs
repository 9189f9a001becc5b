//! slixmpp (a third-party XMPP client library) against the real server's XMPP gateway, next
//! to a WebSocket user of the Rust SDK.
//!
//! The gateway runs on the test server's core with a TLS certificate made for the test (the
//! binary's TLS configuration is not wired yet). `scripts/test` puts slixmpp in the Python
//! virtual environment named in `TEST_CLIENTS_PYTHON` and sets `REQUIRE_TEST_CLIENTS=1`, so the
//! one test command cannot pass without running these; a plain `cargo test` on a machine
//! without slixmpp says so and skips.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tidings_proto::MessageBody;
use tidings_proto::ws::{ClientFrame, ReceiptKind, ServerFrame};
use tidings_testkit::{PASSWORD, TestServer, TestUser, next_message};
use tidings_xmpp::{Gateway, XmppConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const WAIT: Duration = Duration::from_secs(20);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has slixmpp; `None` (after checking the test may skip) if none.
fn slixmpp_python() -> Option<PathBuf> {
    let python = std::env::var_os("TEST_CLIENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/py-venv/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import slixmpp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but slixmpp is missing"
        );
        eprintln!("SKIPPED: slixmpp is missing; scripts/test installs it");
    }
    ok.then_some(python)
}

/// The test server, an XMPP gateway on its core, and the certificate clients trust.
struct Setup {
    server: TestServer,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    (Arc::new(config), cert.cert.pem())
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(adjust: impl FnOnce(&mut XmppConfig)) -> Setup {
    let server = TestServer::start().await;
    let (tls, pem) = tls_config();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write the certificate");
    let mut config = XmppConfig {
        enabled: true,
        ..XmppConfig::default()
    };
    adjust(&mut config);
    let uploads = tidings_xmpp::conn::upload::Uploads {
        files: server.files().clone(),
        base_url: server.base_url.clone(),
    };
    let gateway = Gateway::with_uploads(server.core().clone(), config, Some(tls), Some(uploads));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls_port = tls_listener.local_addr().unwrap().port();
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(tidings_xmpp::serve(
        listener,
        gateway.clone(),
        wait(stopped.clone()),
    ));
    tokio::spawn(tidings_xmpp::serve_tls(
        tls_listener,
        gateway,
        wait(stopped),
    ));
    Setup {
        server,
        port,
        tls_port,
        ca,
        _dir: dir,
        _stop: stop,
    }
}

/// One running slixmpp client.
struct Xmpp {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every event read so far, for failure messages.
    seen: Vec<Value>,
}

impl Xmpp {
    async fn start(python: &PathBuf, setup: &Setup, args: &[&str]) -> Xmpp {
        let mut child = tokio::process::Command::new(python)
            .arg(workspace_root().join("scripts/xmpp/slixmpp_client.py"))
            .args(["--ca", setup.ca.to_str().unwrap()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Xmpp {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    async fn password(python: &PathBuf, setup: &Setup, user: &TestUser, resource: &str) -> Xmpp {
        let jid = format!("{}@localhost/{resource}", user.username);
        let port = setup.port.to_string();
        let mut client = Xmpp::start(
            python,
            setup,
            &["--jid", &jid, "--password", PASSWORD, "--port", &port],
        )
        .await;
        client.expect("session_start", |_| true).await;
        client
    }

    async fn command(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Reads events until one named `event` matches `check`.
    async fn expect(&mut self, event: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {event} event in time; saw {:#?}", self.seen))
                .expect("read")
                .unwrap_or_else(|| panic!("client exited before {event}; saw {:#?}", self.seen));
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            self.seen.push(value.clone());
            if value["event"] == event && check(&value) {
                return value;
            }
        }
    }

    async fn quit(mut self) {
        self.command(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

async fn befriend(a: &TestUser, b: &TestUser) {
    a.api.send_friend_request(b.user_id, None).await.unwrap();
    b.api.accept_friend_request(a.user_id).await.unwrap();
}

/// slixmpp's own XEP-0308, XEP-0424 and XEP-0444 plugins against a WebSocket user: each of
/// Alice's corrections, retractions and reactions reaches Bob as the core's edit, recall or
/// reaction of the right message (a retraction's fallback body never as a message), and each
/// of Bob's reaches slixmpp as the element its plugin understands, naming the id slixmpp got
/// the message with; correcting Bob's message is refused with `forbidden`.
#[tokio::test]
async fn slixmpp_corrects_retracts_and_reacts_with_a_websocket_user() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let mut bob_ws = setup.server.connect(&bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "laptop").await;
    xmpp.command(json!({"op": "disco"})).await;
    let disco = xmpp.expect("disco", |_| true).await;
    for feature in [
        "urn:xmpp:message-correct:0",
        "urn:xmpp:message-retract:1",
        "urn:xmpp:reactions:0",
    ] {
        assert!(
            disco["features"]
                .as_array()
                .unwrap()
                .contains(&json!(feature)),
            "{disco}"
        );
    }

    // Alice corrects, then retracts, her message.
    xmpp.command(json!({"op": "send", "to": "bob@localhost", "body": "teh cat", "id": "x-1"}))
        .await;
    let original = next_message(&mut bob_ws).await;
    assert_eq!(original.client_msg_id, "x-1");
    xmpp.command(json!({
        "op": "correct", "to": "bob@localhost", "replace": "x-1", "body": "the cat", "id": "x-2"
    }))
    .await;
    let edit = next_message(&mut bob_ws).await;
    assert_eq!(
        edit.body,
        MessageBody::Edit {
            target: original.seq,
            body: Box::new(MessageBody::Text {
                text: "the cat".into()
            })
        }
    );
    xmpp.command(json!({"op": "retract", "to": "bob@localhost", "id": "x-1"}))
        .await;
    let recall = next_message(&mut bob_ws).await;
    assert_eq!(
        recall.body,
        MessageBody::Recall {
            target: original.seq
        }
    );

    // Bob's message: Alice reacts, changes her reactions, and tries to correct it.
    let (seq, _) = bob_ws
        .send_text(conversation, "w-1", "lunch at noon")
        .await
        .unwrap();
    xmpp.expect("message", |m| m["body"] == "lunch at noon")
        .await;
    xmpp.command(json!({"op": "react", "to": "bob@localhost", "id": "w-1", "reactions": ["👍"]}))
        .await;
    let reaction = next_message(&mut bob_ws).await;
    assert_eq!(
        reaction.body,
        MessageBody::Reaction {
            target: seq,
            key: "👍".into(),
            remove: false
        }
    );
    xmpp.command(json!({"op": "react", "to": "bob@localhost", "id": "w-1", "reactions": []}))
        .await;
    let reaction = next_message(&mut bob_ws).await;
    assert_eq!(
        reaction.body,
        MessageBody::Reaction {
            target: seq,
            key: "👍".into(),
            remove: true
        }
    );
    xmpp.command(json!({
        "op": "correct", "to": "bob@localhost", "replace": "w-1", "body": "mine now", "id": "x-3"
    }))
    .await;
    let refused = xmpp
        .expect("message", |m| m["type"] == "error" && m["id"] == "x-3")
        .await;
    assert_eq!(refused["error"], json!(["forbidden"]), "{refused}");

    // Bob edits, reacts to and recalls his message: slixmpp sees each as its XEP.
    bob_ws
        .send(
            conversation,
            "w-2",
            MessageBody::Edit {
                target: seq,
                body: Box::new(MessageBody::Text {
                    text: "lunch at one".into(),
                }),
            },
        )
        .await
        .unwrap();
    let got = xmpp.expect("message", |m| m["replace"] == "w-1").await;
    assert_eq!(got["body"], "lunch at one");
    bob_ws
        .send(
            conversation,
            "w-3",
            MessageBody::Reaction {
                target: seq,
                key: "🎉".into(),
                remove: false,
            },
        )
        .await
        .unwrap();
    let got = xmpp.expect("message", |m| m["reactions"] == "w-1").await;
    assert_eq!(got["reaction_keys"], json!(["🎉"]));
    bob_ws
        .send(conversation, "w-4", MessageBody::Recall { target: seq })
        .await
        .unwrap();
    let got = xmpp.expect("message", |m| m["retract"] == "w-1").await;
    assert_eq!(got["fallback"], "urn:xmpp:message-retract:1");

    // No fallback body or correction became a message of its own.
    let history = bob.api.history(conversation, None, 50).await.unwrap();
    let texts: Vec<&MessageBody> = history
        .messages
        .iter()
        .map(|m| &m.body)
        .filter(|b| matches!(b, MessageBody::Text { .. }))
        .collect();
    assert!(texts.is_empty(), "{texts:?}");
    xmpp.quit().await;
}

/// An XMPP user and a WebSocket user in one direct conversation: messages both ways with ids
/// mapped (origin-id <-> client_msg_id, stanza-id = server id), typing, receipts and markers,
/// roster, presence, ping and disco, and both see the same history.
#[tokio::test]
async fn slixmpp_chats_with_a_websocket_user() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let mut bob_ws = setup.server.connect(&bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;

    let mut xmpp = Xmpp::password(&python, &setup, &alice, "laptop").await;
    // Bob is online (his WebSocket), and the answer to the initial presence says so.
    xmpp.expect("presence", |p| {
        p["from"] == "bob@localhost" && p["type"] == "available"
    })
    .await;
    xmpp.command(json!({"op": "roster"})).await;
    let roster = xmpp.expect("roster", |_| true).await;
    assert_eq!(roster["items"], json!([["bob@localhost", "both"]]));
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    xmpp.command(json!({"op": "disco"})).await;
    let disco = xmpp.expect("disco", |_| true).await;
    assert!(
        disco["features"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:xmpp:ping"))
    );

    // XMPP -> WebSocket: the origin-id becomes the client_msg_id.
    xmpp.command(
        json!({"op": "send", "to": "bob@localhost", "body": "hello from xmpp", "id": "x-1"}),
    )
    .await;
    let message = next_message(&mut bob_ws).await;
    assert_eq!(message.conversation_id, conversation);
    assert_eq!(message.client_msg_id, "x-1");
    assert_eq!(message.sender_id, alice.user_id);
    assert_eq!(
        message.body,
        MessageBody::Text {
            text: "hello from xmpp".into()
        }
    );
    // Bob's delivered receipt on it reaches Alice as an XEP-0184 receipt (markers only move
    // forward, so this comes before Bob sends anything himself).
    bob_ws
        .request(|id| ClientFrame::Receipt {
            id,
            conversation_id: conversation,
            receipt: ReceiptKind::Delivered,
            seq: message.seq,
        })
        .await
        .unwrap();
    xmpp.expect("message", |m| m["received"] == "x-1").await;

    // WebSocket -> XMPP: the stanza carries the client_msg_id and the server id.
    let (seq, _) = bob_ws
        .send_text(conversation, "w-1", "hello from the web")
        .await
        .unwrap();
    let got = xmpp
        .expect("message", |m| m["body"] == "hello from the web")
        .await;
    assert_eq!(got["from"], "bob@localhost");
    assert_eq!(got["id"], "w-1");
    assert_eq!(got["origin_id"], "w-1");
    assert!(got["stanza_id"].as_str().is_some_and(|s| !s.is_empty()));

    // Typing both ways.
    xmpp.command(json!({"op": "typing", "to": "bob@localhost", "state": "composing"}))
        .await;
    loop {
        match tokio::time::timeout(WAIT, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            ServerFrame::Typing {
                user_id, typing, ..
            } if user_id == alice.user_id => {
                assert!(typing);
                break;
            }
            _ => {}
        }
    }
    bob_ws
        .request(|id| ClientFrame::Typing {
            id: Some(id),
            conversation_id: conversation,
            typing: true,
        })
        .await
        .unwrap();
    xmpp.expect("message", |m| m["chatstate"] == "composing")
        .await;

    // Alice's marker on Bob's message becomes a read receipt at its sequence.
    xmpp.command(json!({"op": "displayed", "to": "bob@localhost", "id": "w-1"}))
        .await;
    loop {
        match tokio::time::timeout(WAIT, bob_ws.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            ServerFrame::Receipt {
                user_id,
                receipt,
                seq: at,
                ..
            } if user_id == alice.user_id => {
                assert_eq!((receipt, at), (ReceiptKind::Read, seq));
                break;
            }
            _ => {}
        }
    }

    // Both see the same history, in the same order.
    let history = bob.api.history(conversation, None, 50).await.unwrap();
    let ids: Vec<&str> = history
        .messages
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert_eq!(ids, ["x-1", "w-1"]);
    let alice_history = alice.api.history(conversation, None, 50).await.unwrap();
    assert_eq!(alice_history.messages, history.messages);
    xmpp.quit().await;
}

/// Two resources of one user: each is its own device, and Message Carbons copy what one sends
/// to the other.
#[tokio::test]
async fn carbons_between_two_resources() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let mut phone = Xmpp::password(&python, &setup, &alice, "phone").await;
    let mut laptop = Xmpp::password(&python, &setup, &alice, "laptop").await;
    laptop.command(json!({"op": "carbons"})).await;
    laptop.expect("carbons_enabled", |_| true).await;
    let mut bob_ws = setup.server.connect(&bob).await;
    phone
        .command(json!({"op": "send", "to": "bob@localhost", "body": "from my phone", "id": "p-1"}))
        .await;
    assert_eq!(next_message(&mut bob_ws).await.client_msg_id, "p-1");
    let carbon = laptop.expect("carbon_sent", |_| true).await;
    assert_eq!(carbon["body"], "from my phone");
    assert_eq!(carbon["to"], "bob@localhost");
    // Each resource is a device of its own.
    let devices = alice.api.devices().await.unwrap();
    let names: Vec<&str> = devices.devices.iter().map(|d| d.name.as_str()).collect();
    assert!(
        names.contains(&"XMPP phone") && names.contains(&"XMPP laptop"),
        "{names:?}"
    );
    phone.quit().await;
    laptop.quit().await;
}

/// IQs between two users' slixmpp clients: XEP-0092 software version and XEP-0030 disco#info
/// of the other client's full JID are answered by that client, through the server; a resource
/// that is not there gets `service-unavailable`.
#[tokio::test]
async fn slixmpp_asks_another_users_client_for_its_version() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let mut alice_xmpp = Xmpp::password(&python, &setup, &alice, "laptop").await;
    let mut bob_xmpp = Xmpp::password(&python, &setup, &bob, "phone").await;

    alice_xmpp
        .command(json!({"op": "version", "jid": "bob@localhost/phone"}))
        .await;
    let version = alice_xmpp.expect("version", |_| true).await;
    assert_eq!(version["from_"], "bob@localhost/phone");
    assert_eq!(version["name"], "TidingsTest");
    assert_eq!(version["version"], "1.2.3");

    bob_xmpp
        .command(json!({"op": "disco_of", "jid": "alice@localhost/laptop"}))
        .await;
    let disco = bob_xmpp.expect("disco_of", |_| true).await;
    assert_eq!(disco["from_"], "alice@localhost/laptop");
    let features = disco["features"].as_array().unwrap();
    assert!(
        features.contains(&json!("jabber:iq:version"))
            && features.contains(&json!("urn:xmpp:ping")),
        "{features:?}"
    );

    alice_xmpp
        .command(json!({"op": "version", "jid": "bob@localhost/elsewhere"}))
        .await;
    let refused = alice_xmpp.expect("iq_error", |_| true).await;
    assert_eq!(refused["condition"], "service-unavailable");
    alice_xmpp.quit().await;
    bob_xmpp.quit().await;
}

/// The blocking command (XEP-0191) is the Tidings block list, and vCard-temp shows profiles.
#[tokio::test]
async fn blocking_and_vcards() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "desk").await;
    xmpp.command(json!({"op": "block", "jid": "bob@localhost"}))
        .await;
    xmpp.expect("blocked", |_| true).await;
    let blocks = alice.api.blocks().await.unwrap();
    assert_eq!(
        blocks.users.iter().map(|u| u.user_id).collect::<Vec<_>>(),
        [bob.user_id]
    );
    xmpp.command(json!({"op": "blocklist"})).await;
    let list = xmpp.expect("blocklist", |_| true).await;
    assert_eq!(list["items"], json!(["bob@localhost"]));
    // Blocked: Bob's message is refused by the core.
    let conversation = bob.api.open_direct(alice.user_id).await;
    assert!(
        conversation.is_err(),
        "a blocked user cannot open a conversation"
    );
    xmpp.command(json!({"op": "unblock", "jid": "bob@localhost"}))
        .await;
    xmpp.expect("unblocked", |_| true).await;
    assert!(alice.api.blocks().await.unwrap().users.is_empty());
    xmpp.command(json!({"op": "vcard", "jid": "bob@localhost"}))
        .await;
    let vcard = xmpp.expect("vcard", |_| true).await;
    // slixmpp reads NICKNAME as a list; FN is the display name, or the username without one.
    assert_eq!(vcard["nickname"], json!(["bob"]));
    assert_eq!(vcard["fn"], "bob");
    xmpp.quit().await;
}

/// HTTP File Upload (XEP-0363) as slixmpp does it: it finds the service through disco, asks for
/// a slot, PUTs the bytes with aiohttp, and the GET URL it would share serves them back.
#[tokio::test]
async fn http_upload_with_slixmpp() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "desk").await;
    let data = "bytes from slixmpp, 中文 too";
    xmpp.command(json!({"op": "upload", "name": "report.txt", "data": data}))
        .await;
    let uploaded = xmpp.expect("uploaded", |_| true).await;
    assert_eq!(uploaded["service"], "upload.localhost");
    assert_eq!(uploaded["fetched"], data);
    let url = uploaded["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/api/v1/slots/", setup.server.base_url)),
        "{url}"
    );
    xmpp.quit().await;
}

/// OAUTHBEARER with a Tidings access token, and direct TLS (XEP-0368); a wrong password is
/// refused with a SASL failure.
#[tokio::test]
async fn oauthbearer_direct_tls_and_a_wrong_password() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let port = setup.tls_port.to_string();
    let mut client = Xmpp::start(
        &python,
        &setup,
        &[
            "--jid",
            "alice@localhost/token",
            "--token",
            &alice.tokens.access_token,
            "--mechanism",
            "OAUTHBEARER",
            "--port",
            &port,
            "--direct-tls",
        ],
    )
    .await;
    let started = client.expect("session_start", |_| true).await;
    assert_eq!(started["jid"], "alice@localhost/token");
    client.quit().await;

    let port = setup.port.to_string();
    let mut wrong = Xmpp::start(
        &python,
        &setup,
        &[
            "--jid",
            "alice@localhost/x",
            "--password",
            "not the password",
            "--port",
            &port,
        ],
    )
    .await;
    wrong.expect("failed_auth", |_| true).await;
}

/// A stanza claiming another user's JID ends that stream with `invalid-from`; bad XML ends it
/// with `not-well-formed`; neither disturbs another session.
#[tokio::test]
async fn spoofed_and_malformed_stanzas_end_only_their_stream() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let mut bystander = Xmpp::password(&python, &setup, &bob, "desk").await;

    let mut spoofer = Xmpp::password(&python, &setup, &alice, "a").await;
    spoofer
        .command(json!({"op": "raw", "xml": "<message from='bob@localhost/desk' to='alice@localhost' type='chat'><body>x</body></message>"}))
        .await;
    let error = spoofer.expect("stream_error", |_| true).await;
    assert_eq!(error["condition"], "invalid-from");

    let mut broken = Xmpp::password(&python, &setup, &alice, "b").await;
    broken
        .command(json!({"op": "raw", "xml": "<message><!-- no --></message>"}))
        .await;
    let error = broken.expect("stream_error", |_| true).await;
    assert_eq!(error["condition"], "restricted-xml");

    // Bob's session still works.
    let alice_ws = setup.server.connect(&alice).await;
    let conversation = alice.api.open_direct(bob.user_id).await.unwrap().id;
    alice_ws
        .send_text(conversation, "after", "still here?")
        .await
        .unwrap();
    bystander
        .expect("message", |m| m["body"] == "still here?")
        .await;
    bystander.quit().await;
}

/// slixmpp signs in with SCRAM-SHA-1 and SCRAM-SHA-256 (it checks the server's signature, so
/// a session start means both sides proved the keys); a wrong password fails under SCRAM.
#[tokio::test]
async fn slixmpp_signs_in_with_scram() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    setup.server.user("alice").await;
    let port = setup.port.to_string();
    for mechanism in ["SCRAM-SHA-1", "SCRAM-SHA-256"] {
        let resource = format!("alice@localhost/{mechanism}");
        let mut client = Xmpp::start(
            &python,
            &setup,
            &[
                "--jid",
                &resource,
                "--password",
                PASSWORD,
                "--mechanism",
                mechanism,
                "--port",
                &port,
            ],
        )
        .await;
        let started = client.expect("session_start", |_| true).await;
        assert_eq!(started["jid"], resource);
        client.command(json!({"op": "ping"})).await;
        client.expect("pong", |_| true).await;
        client.quit().await;
    }
    let mut wrong = Xmpp::start(
        &python,
        &setup,
        &[
            "--jid",
            "alice@localhost/x",
            "--password",
            "not the password",
            "--mechanism",
            "SCRAM-SHA-256",
            "--port",
            &port,
        ],
    )
    .await;
    wrong.expect("failed_auth", |_| true).await;
}

/// Stream Management resumption (XEP-0198) through slixmpp: the TCP connection drops without a
/// closing tag, a WebSocket user sends three messages meanwhile, and the resumed stream brings
/// each exactly once; chat continues both ways afterwards.
#[tokio::test]
async fn slixmpp_resumes_a_dropped_stream_without_loss_or_duplicates() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let bob_ws = setup.server.connect(&bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let port = setup.port.to_string();
    let mut xmpp = Xmpp::start(
        &python,
        &setup,
        &[
            "--jid",
            "alice@localhost/phone",
            "--password",
            PASSWORD,
            "--port",
            &port,
            "--sm",
        ],
    )
    .await;
    xmpp.expect("session_start", |_| true).await;
    let enabled = xmpp.expect("sm_enabled", |_| true).await;
    assert_eq!(enabled["resume"], true, "{enabled}");
    bob_ws
        .send_text(conversation, "before", "before the drop")
        .await
        .unwrap();
    xmpp.expect("message", |m| m["body"] == "before the drop")
        .await;

    xmpp.command(json!({"op": "drop"})).await;
    xmpp.expect("dropped", |_| true).await;
    for i in 0..3 {
        bob_ws
            .send_text(
                conversation,
                &format!("away-{i}"),
                &format!("while away {i}"),
            )
            .await
            .unwrap();
    }
    xmpp.command(json!({"op": "reconnect"})).await;
    xmpp.expect("session_resumed", |_| true).await;
    for i in 0..3 {
        xmpp.expect("message", |m| m["body"] == format!("while away {i}"))
            .await;
    }
    // Alice answers on the resumed stream and Bob receives it.
    xmpp.command(json!({"op": "send", "to": "bob@localhost", "body": "back", "id": "back-1"}))
        .await;
    let mut bob_ws = bob_ws;
    let got = next_message(&mut bob_ws).await;
    assert!(
        matches!(&got.body, MessageBody::Text { text } if text == "back"),
        "{got:?}"
    );
    // A round trip later, nothing arrived twice.
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    let bodies: Vec<&str> = xmpp
        .seen
        .iter()
        .filter(|e| e["event"] == "message")
        .filter_map(|e| e["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        [
            "before the drop",
            "while away 0",
            "while away 1",
            "while away 2"
        ]
    );
    xmpp.quit().await;
}

/// After the resumption timeout the session is gone: the client's resume fails and it starts
/// a new session, and what was sent meanwhile is in the history.
#[tokio::test]
async fn slixmpp_starts_over_after_the_resumption_timeout() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup_with(|c| c.resume_timeout_secs = 1).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let bob_ws = setup.server.connect(&bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let port = setup.port.to_string();
    let mut xmpp = Xmpp::start(
        &python,
        &setup,
        &[
            "--jid",
            "alice@localhost/phone",
            "--password",
            PASSWORD,
            "--port",
            &port,
            "--sm",
        ],
    )
    .await;
    xmpp.expect("session_start", |_| true).await;
    let enabled = xmpp.expect("sm_enabled", |_| true).await;
    assert_eq!(enabled["resume"], true, "{enabled}");
    // The session is established once the server reflected the initial presence: that is
    // when the device's delivery cursors start. Dropping before it would leave a device that
    // never came online, which starts at the present on its first session (a loaded machine
    // made this test race that).
    xmpp.expect("presence", |p| p["from"] == "alice@localhost/phone")
        .await;
    xmpp.command(json!({"op": "drop"})).await;
    xmpp.expect("dropped", |_| true).await;
    bob_ws
        .send_text(conversation, "late", "while the session expired")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    xmpp.command(json!({"op": "reconnect"})).await;
    xmpp.expect("sm_failed", |_| true).await;
    xmpp.expect("session_start", |_| true).await;
    let history = alice.api.history(conversation, None, 10).await.unwrap();
    assert!(
        history.messages.iter().any(|m| m.client_msg_id == "late"),
        "the message is in the history"
    );
    // The expired session never handed it to the client, so the new session delivers it
    // (offline delivery from the device's saved cursors).
    let late = xmpp
        .expect("message", |m| m["body"] == "while the session expired")
        .await;
    assert_eq!(late["id"], "late");
    xmpp.quit().await;
}

/// Offline delivery: messages sent while no resource of the user is bound reach the device's
/// next session once, in order, with the stanza-ids MAM gives them (so a client that also
/// pages MAM can tell them apart), and a session after that gets nothing again. A new device
/// starts at the present rather than receiving the whole archive.
#[tokio::test]
async fn slixmpp_gets_what_arrived_while_offline_once() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let bob_ws = setup.server.connect(&bob).await;
    bob_ws
        .send_text(conversation, "before", "before the first session")
        .await
        .unwrap();
    let group = bob
        .api
        .create_group("Team", &[alice.user_id])
        .await
        .unwrap()
        .id;

    // The first session of a new device: nothing from before, then a live message.
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "phone").await;
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    bob_ws
        .send_text(conversation, "live", "while online")
        .await
        .unwrap();
    let live = xmpp
        .expect("message", |m| m["body"] == "while online")
        .await;
    assert!(live.get("delay").is_none(), "{live}");
    xmpp.quit().await;

    // Away: three direct messages, and one in the group.
    for i in 0..3 {
        bob_ws
            .send_text(conversation, &format!("off-{i}"), &format!("offline {i}"))
            .await
            .unwrap();
    }
    bob_ws
        .send_text(group, "team-1", "to the team")
        .await
        .unwrap();
    // A conversation opened while away is delivered from its start.
    let carol = setup.server.user("carol").await;
    befriend(&carol, &alice).await;
    let with_carol = carol.api.open_direct(alice.user_id).await.unwrap().id;
    let carol_ws = setup.server.connect(&carol).await;
    carol_ws
        .send_text(with_carol, "c-1", "hello from carol")
        .await
        .unwrap();

    let mut xmpp = Xmpp::password(&python, &setup, &alice, "phone").await;
    // The conversations catch up in either order; each in its own order.
    xmpp.expect("message", |m| m["body"] == "offline 2").await;
    if !xmpp.seen.iter().any(|e| e["body"] == "hello from carol") {
        xmpp.expect("message", |m| m["body"] == "hello from carol")
            .await;
    }
    // After the catch-up, a marker to be sure nothing else is on its way.
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    let bodies: Vec<&str> = xmpp
        .seen
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == "bob@localhost")
        .filter_map(|e| e["body"].as_str())
        .collect();
    assert_eq!(bodies, ["offline 0", "offline 1", "offline 2"]);
    // Offline messages say when they were sent (XEP-0203); live ones do not.
    assert!(
        xmpp.seen
            .iter()
            .filter(|e| e["event"] == "message" && e["from"] == "bob@localhost")
            .all(|e| e["delay"].is_string()),
        "{:#?}",
        xmpp.seen
    );
    let delivered_ids: Vec<String> = xmpp
        .seen
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == "bob@localhost")
        .map(|e| e["stanza_id"].as_str().unwrap().to_owned())
        .collect();
    // Group messages wait in the room's history (sent on join), not as offline messages.
    assert!(
        !xmpp.seen.iter().any(|e| e["body"] == "to the team"),
        "group messages are not pushed outside the room"
    );
    // MAM gives the same messages the same ids.
    xmpp.command(json!({"op": "mam", "with": "bob@localhost", "max": 10}))
        .await;
    let archive = xmpp.expect("mam", |_| true).await;
    let ids = archive["ids"].as_array().unwrap();
    let tail: Vec<String> = ids[ids.len() - 3..]
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tail, delivered_ids);
    xmpp.quit().await;

    // Once only: the next session gets nothing again.
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "phone").await;
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    xmpp.command(json!({"op": "ping"})).await;
    xmpp.expect("pong", |_| true).await;
    assert!(
        !xmpp.seen.iter().any(|e| e["event"] == "message"),
        "nothing is delivered twice: {:#?}",
        xmpp.seen
    );
    xmpp.quit().await;
}

/// slixmpp's MAM client (XEP-0313 with RSM paging, two results a page) reads the history of a
/// conversation with a WebSocket user, forwards and in reverse, with the server's message ids.
#[tokio::test]
async fn slixmpp_pages_through_the_archive() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let bob_ws = setup.server.connect(&bob).await;
    for i in 0..4 {
        bob_ws
            .send_text(conversation, &format!("b{i}"), &format!("from bob {i}"))
            .await
            .unwrap();
    }
    let mut xmpp = Xmpp::password(&python, &setup, &alice, "archive").await;
    xmpp.command(json!({"op": "send", "to": "bob@localhost", "body": "from alice", "id": "a0"}))
        .await;
    // The reply is committed once Bob's history holds it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let history = loop {
        let history = bob.api.history(conversation, None, 10).await.unwrap();
        if history.messages.len() == 5 {
            break history;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reply was not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = [
        "from bob 0",
        "from bob 1",
        "from bob 2",
        "from bob 3",
        "from alice",
    ];
    xmpp.command(json!({"op": "mam", "with": "bob@localhost", "max": 2}))
        .await;
    let pages = xmpp.expect("mam", |_| true).await;
    assert_eq!(pages["bodies"], json!(expected));
    let ids: Vec<String> = history.messages.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(
        pages["ids"],
        json!(ids),
        "result ids are the server's message ids"
    );
    xmpp.command(json!({"op": "mam", "with": "bob@localhost", "max": 2, "reverse": true}))
        .await;
    let reversed = xmpp.expect("mam", |_| true).await;
    let mut backwards = expected.to_vec();
    backwards.reverse();
    assert_eq!(reversed["bodies"], json!(backwards));
    xmpp.quit().await;
}

/// A Tidings group as a MUC room: slixmpp discovers it, joins (occupants are the devices in
/// the room, with roles from the Tidings roles; self-presence 110, history from the archive, the title as subject), chats
/// with a WebSocket member both ways with ids mapped, pages the room's archive with MAM, and
/// leaves; a user who is not a member can neither join nor read the room.
#[tokio::test]
async fn slixmpp_joins_a_group_and_chats_with_a_websocket_user() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let carol = setup.server.user("carol").await;
    befriend(&alice, &bob).await;
    let group = bob
        .api
        .create_group("Lunch", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let room = format!("{group}@conference.localhost");
    let mut bob_ws = setup.server.connect(&bob).await;
    for i in 0..3 {
        bob_ws
            .send_text(group, &format!("early-{i}"), &format!("early {i}"))
            .await
            .unwrap();
    }

    let mut xmpp = Xmpp::password(&python, &setup, &alice, "muc").await;
    xmpp.command(json!({"op": "rooms"})).await;
    let rooms = xmpp.expect("rooms", |_| true).await;
    // The server lists its services (the upload service has no items); slixmpp keeps disco
    // items in a set, so their order is its own.
    let mut services: Vec<&str> = rooms["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["conference.localhost", "upload.localhost"]);
    assert_eq!(rooms["rooms"], json!([[room.clone(), "Lunch"]]));
    xmpp.command(json!({"op": "room_info", "room": room})).await;
    let info = xmpp.expect("room_info", |_| true).await;
    let features = info["features"].as_array().unwrap();
    for feature in [
        "http://jabber.org/protocol/muc",
        "muc_membersonly",
        "urn:xmpp:mam:2",
    ] {
        assert!(features.contains(&json!(feature)), "{feature} in {info}");
    }

    // Join with the last two messages of history; the nick is the username.
    xmpp.command(json!({"op": "join", "room": room, "nick": "alice", "maxstanzas": 2}))
        .await;
    let joined = xmpp.expect("joined", |_| true).await;
    assert_eq!(joined["nick"], "alice");
    assert!(joined["codes"].as_array().unwrap().contains(&json!(110)));
    assert_eq!(
        (&joined["affiliation"], &joined["role"]),
        (&json!("member"), &json!("participant"))
    );
    assert_eq!(joined["subject"], "Lunch");
    // slixmpp counts its own presence among the occupants; bob, on the web, is a member but
    // has no device in the room.
    assert_eq!(
        joined["occupants"],
        json!([["alice", "member", "participant"]])
    );
    assert_eq!(joined["history"], json!(["early 1", "early 2"]));

    // XMPP -> WebSocket, and the reflection to the sender carries the server id.
    xmpp.command(json!({"op": "groupchat", "room": room, "body": "hi all", "id": "g-1"}))
        .await;
    let message = next_message(&mut bob_ws).await;
    assert_eq!(
        (message.conversation_id, message.client_msg_id.as_str()),
        (group, "g-1")
    );
    let reflected = xmpp
        .expect("message", |m| m["type"] == "groupchat" && m["id"] == "g-1")
        .await;
    assert_eq!(reflected["from"], format!("{room}/alice"));
    assert_eq!(reflected["stanza_id"], message.id.to_string());

    // WebSocket -> XMPP.
    bob_ws
        .send_text(group, "w-1", "from the web")
        .await
        .unwrap();
    let got = xmpp
        .expect("message", |m| m["body"] == "from the web")
        .await;
    assert_eq!(got["from"], format!("{room}/bob"));
    assert_eq!(got["type"], "groupchat");
    assert_eq!(got["origin_id"], "w-1");

    // The room's archive through MAM, two a page, is the group's history.
    let history = bob.api.history(group, None, 50).await.unwrap();
    let texts: Vec<(String, String)> = history
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Text { text } => Some((text.clone(), m.id.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 5);
    xmpp.command(json!({"op": "mam", "room": room, "max": 2}))
        .await;
    let pages = xmpp.expect("mam", |_| true).await;
    let bodies: Vec<&str> = texts.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<&str> = texts.iter().map(|(_, i)| i.as_str()).collect();
    assert_eq!(pages["bodies"], json!(bodies));
    assert_eq!(pages["ids"], json!(ids));

    // Leaving: the self-presence goes unavailable, and group messages stop.
    xmpp.command(json!({"op": "leave", "room": room, "nick": "alice"}))
        .await;
    xmpp.expect("presence", |p| {
        p["from"] == format!("{room}/alice") && p["type"] == "unavailable"
    })
    .await;

    // Carol is not a member: no join, no disco, no archive.
    let mut outsider = Xmpp::password(&python, &setup, &carol, "muc").await;
    outsider
        .command(json!({"op": "join", "room": room, "nick": "carol"}))
        .await;
    let refused = outsider.expect("join_error", |_| true).await;
    assert_eq!(refused["condition"], "registration-required");
    outsider
        .command(json!({"op": "room_info", "room": room}))
        .await;
    let error = outsider.expect("iq_error", |_| true).await;
    assert!(
        error["error"].as_str().unwrap().contains("forbidden"),
        "{error}"
    );
    outsider.quit().await;
    xmpp.quit().await;
}

/// Moderation and configuration of a group from slixmpp's MUC plugin: a member without the
/// right is refused with `forbidden`; the owner revokes voice (the web sees the mute), makes a
/// member an admin (the web sees the role), bans with a reason (the web sees the ban), renames
/// the room through the configuration form (the web sees the title) and kicks (out of the
/// room, not the group); the other
/// occupant sees each change as presence with XEP-0045's status codes, and a subject change by
/// the new admin renames the group.
#[tokio::test]
async fn slixmpp_moderates_a_group_through_the_core() {
    let Some(python) = slixmpp_python() else {
        return;
    };
    let setup = setup().await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let carol = setup.server.user("carol").await;
    let group = bob
        .api
        .create_group("Lunch", &[alice.user_id, carol.user_id])
        .await
        .unwrap()
        .id;
    let room = format!("{group}@conference.localhost");
    let mut owner = Xmpp::password(&python, &setup, &bob, "mod").await;
    owner
        .command(json!({"op": "join", "room": room, "nick": "bob"}))
        .await;
    owner.expect("joined", |_| true).await;
    let mut member = Xmpp::password(&python, &setup, &alice, "mod").await;
    member
        .command(json!({"op": "join", "room": room, "nick": "alice"}))
        .await;
    member.expect("joined", |_| true).await;
    let mut third = Xmpp::password(&python, &setup, &carol, "mod").await;
    third
        .command(json!({"op": "join", "room": room, "nick": "carol"}))
        .await;
    third.expect("joined", |_| true).await;
    let presence_of = |nick: &str| format!("{room}/{nick}");

    // A member may not revoke voice: the core's policy refuses.
    member
        .command(json!({"op": "set_role", "room": room, "nick": "carol", "role": "visitor"}))
        .await;
    let refused = member.expect("iq_error", |_| true).await;
    assert_eq!(refused["condition"], "forbidden", "{refused}");

    owner
        .command(json!({"op": "set_role", "room": room, "nick": "carol", "role": "visitor"}))
        .await;
    owner.expect("done", |d| d["op"] == "set_role").await;
    member
        .expect("presence", |p| {
            p["from"] == presence_of("carol") && p["role"] == "visitor"
        })
        .await;
    let members = carol.api.members(group).await.unwrap();
    let carol_member = members.iter().find(|m| m.user_id == carol.user_id).unwrap();
    assert!(carol_member.muted_until.is_some());
    owner
        .command(json!({"op": "role_list", "room": room, "role": "visitor"}))
        .await;
    let visitors = owner.expect("role_list", |_| true).await;
    assert_eq!(visitors["nicks"], json!(["carol"]));

    owner
        .command(json!({"op": "set_affiliation", "room": room, "jid": "alice@localhost", "affiliation": "admin"}))
        .await;
    owner.expect("done", |d| d["op"] == "set_affiliation").await;
    let own = member
        .expect("presence", |p| {
            p["from"] == presence_of("alice") && p["affiliation"] == "admin"
        })
        .await;
    assert_eq!(own["role"], "moderator");
    assert_eq!(own["codes"], json!([110]));
    let members = bob.api.members(group).await.unwrap();
    let role = members
        .iter()
        .find(|m| m.user_id == alice.user_id)
        .unwrap()
        .role;
    assert_eq!(role, tidings_proto::rest::Role::Admin);
    owner
        .command(json!({"op": "affiliation_list", "room": room, "affiliation": "admin"}))
        .await;
    let admins = owner.expect("affiliation_list", |_| true).await;
    assert_eq!(admins["jids"], json!(["alice@localhost"]));

    owner
        .command(json!({"op": "set_affiliation", "room": room, "jid": "carol@localhost", "affiliation": "outcast", "reason": "spam"}))
        .await;
    owner.expect("done", |d| d["op"] == "set_affiliation").await;
    let banned = member
        .expect("presence", |p| {
            p["from"] == presence_of("carol") && p["type"] == "unavailable"
        })
        .await;
    assert_eq!(banned["codes"], json!([301]));
    assert_eq!(banned["affiliation"], "outcast");
    assert_eq!(
        (&banned["actor"], &banned["reason"]),
        (&json!("bob"), &json!("spam"))
    );
    let bans = bob.api.bans(group).await.unwrap();
    assert_eq!(bans.users.len(), 1);
    assert_eq!(bans.users[0].reason.as_deref(), Some("spam"));

    // The configuration form carries the title; submitting a new name renames the group.
    owner
        .command(json!({"op": "room_config", "room": room}))
        .await;
    let config = owner.expect("room_config", |_| true).await;
    assert_eq!(
        config["values"]["muc#roomconfig_roomname"], "Lunch",
        "{config}"
    );
    owner
        .command(json!({"op": "set_room_config", "room": room, "fields": {"muc#roomconfig_roomname": "Dinner"}}))
        .await;
    owner.expect("done", |d| d["op"] == "set_room_config").await;
    member.expect("message", |m| m["subject"] == "Dinner").await;
    assert_eq!(alice.api.group_info(group).await.unwrap().title, "Dinner");

    // The new admin may edit the group: a subject change renames it.
    member
        .command(json!({"op": "subject", "room": room, "subject": "Brunch"}))
        .await;
    let subject = owner.expect("message", |m| m["subject"] == "Brunch").await;
    assert_eq!(subject["from"], presence_of("alice"));
    assert_eq!(bob.api.group_info(group).await.unwrap().title, "Brunch");

    // A kick takes the member's device out of the room (their own client sees 307 with 110);
    // they stay a member of the group and may enter again.
    owner
        .command(json!({"op": "set_role", "room": room, "nick": "alice", "role": "none"}))
        .await;
    owner.expect("done", |d| d["op"] == "set_role").await;
    let kicked = member
        .expect("presence", |p| {
            p["from"] == presence_of("alice") && p["type"] == "unavailable"
        })
        .await;
    assert_eq!(kicked["codes"], json!([110, 307]));
    let members = bob.api.members(group).await.unwrap();
    assert!(members.iter().any(|m| m.user_id == alice.user_id));
    third.quit().await;
    member.quit().await;
    owner.quit().await;
}
