//! Third-party MQTT clients against the real server: paho-mqtt (Python), the Mosquitto
//! command-line clients and mqtt.js (Node), next to a WebSocket user of the Rust SDK.
//!
//! `scripts/test` prepares the clients (paho-mqtt in the Python virtual environment named in
//! `TEST_CLIENTS_PYTHON`, `mosquitto-clients` from apt, `npm ci` in scripts/mqtt) and sets
//! `REQUIRE_TEST_CLIENTS=1`, so the one test command cannot pass without running them. A plain
//! `cargo test` on a machine without them says so and skips.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tidings_proto::ws::{PresenceStatus, ServerFrame};
use tidings_proto::{ConversationId, MessageBody, UserId};
use tidings_sdk::Connection;
use tidings_testkit::{PASSWORD, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn skip(what: &str) -> bool {
    assert!(
        std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
        "REQUIRE_TEST_CLIENTS is set but {what} is missing"
    );
    eprintln!("SKIPPED: {what} is missing; scripts/test installs it");
    true
}

/// The Python interpreter that has paho-mqtt, if there is one.
fn paho_python() -> Option<PathBuf> {
    let python = std::env::var_os("TEST_CLIENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/py-venv/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import paho.mqtt"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs the paho script with `args` and returns its JSON lines.
async fn paho(python: &PathBuf, server: &TestServer, args: &[&str]) -> Vec<Value> {
    let port = server.mqtt_addr().port().to_string();
    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("scripts/mqtt/paho_im.py"))
        .args(["--port", &port, "--password", PASSWORD])
        .args(args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "paho failed:\n{stdout}\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn pubacks(lines: &[Value]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.get("rc").and_then(Value::as_i64))
        .collect()
}

fn message_texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.get("event"))
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["message"]["body"]["text"].as_str().map(String::from))
        .collect()
}

fn send_payload(client_msg_id: &str, text: &str) -> String {
    serde_json::json!({"client_msg_id": client_msg_id, "body": {"kind": "text", "text": text}})
        .to_string()
}

fn messages_topic(conv: ConversationId) -> String {
    format!("tidings/v1/conversations/{conv}/messages")
}

/// Waits for the next message event with a text on a WebSocket connection.
async fn next_text(ws: &mut Connection) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next_event())
            .await
            .expect("an event in time")
            .expect("connection open");
        if let ServerFrame::Message { message } = frame
            && let MessageBody::Text { text } = message.body
        {
            return text;
        }
    }
}

/// Waits until `user` is reported with `status` on `ws`.
async fn wait_presence(ws: &mut Connection, user: UserId, status: PresenceStatus) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next_event())
            .await
            .unwrap_or_else(|_| panic!("presence {status:?} in time"))
            .expect("connection open");
        if let ServerFrame::Presence { presence } = frame
            && presence.user_id == user
            && presence.status == status
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_device_sends_is_refused_catches_up_and_its_will_sets_it_offline() {
    let Some(python) = paho_python() else {
        skip("paho-mqtt");
        return;
    };
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    let not_mine = bob.api.open_direct(carol.user_id).await.unwrap().id;
    let mut bob_ws = server.connect(&bob).await;

    // A persistent session: one message goes through, one to a conversation alice is not in
    // is refused as not authorized, one with a payload that is not a message as invalid.
    let lines = paho(
        &python,
        &server,
        &[
            "--user",
            "alice",
            "--client-id",
            "phone",
            "--persistent",
            "--publish",
            &messages_topic(direct),
            &send_payload("c1", "hello from paho"),
            "--publish",
            &messages_topic(not_mine),
            &send_payload("c2", "sneaky"),
            "--publish",
            &messages_topic(direct),
            "not json",
        ],
    )
    .await;
    assert_eq!(lines[0]["connack"], 0, "{lines:?}");
    assert_eq!(lines[0]["session_present"], false);
    assert_eq!(pubacks(&lines), [0x00, 0x87, 0x99], "{lines:?}");
    assert_eq!(next_text(&mut bob_ws).await, "hello from paho");

    // While the device is away, bob writes three messages; the device comes back to the same
    // session (without subscribing again) and gets them in order, and not its own again.
    for i in 1..=3 {
        bob_ws
            .send_text(direct, &format!("b{i}"), &format!("away {i}"))
            .await
            .unwrap();
    }
    let lines = paho(
        &python,
        &server,
        &[
            "--user",
            "alice",
            "--client-id",
            "phone",
            "--persistent",
            "--no-subscribe",
            "--wait-messages",
            "3",
        ],
    )
    .await;
    assert_eq!(lines[0]["session_present"], true, "{lines:?}");
    assert_eq!(
        message_texts(&lines),
        ["away 1", "away 2", "away 3"],
        "{lines:?}"
    );

    // A device with a will on the presence topic that loses its connection goes offline.
    while bob_ws.try_next_event().is_some() {}
    let python2 = python.clone();
    let port = server.mqtt_addr().port().to_string();
    let device = tokio::spawn(async move {
        tokio::process::Command::new(python2)
            .arg(workspace_root().join("scripts/mqtt/paho_im.py"))
            .args(["--port", &port, "--password", PASSWORD, "--user", "alice"])
            .args(["--client-id", "sensor", "--no-subscribe", "--die"])
            .args([
                "--will-topic",
                "tidings/v1/me/presence",
                "--wait-for",
                "never",
                "--timeout",
                "1.5",
            ])
            .output()
            .await
            .expect("python runs")
    });
    wait_presence(&mut bob_ws, alice.user_id, PresenceStatus::Online).await;
    wait_presence(&mut bob_ws, alice.user_id, PresenceStatus::Offline).await;
    assert!(device.await.unwrap().status.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v311_device_chats_in_a_group_and_learns_of_refusals_on_the_events_topic() {
    let Some(python) = paho_python() else {
        skip("paho-mqtt");
        return;
    };
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let group = bob
        .api
        .create_group("climbers", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let not_mine = bob.api.open_direct(carol.user_id).await.unwrap().id;
    let mut bob_ws = server.connect(&bob).await;
    let responder = tokio::spawn(async move {
        let text = next_text(&mut bob_ws).await;
        bob_ws
            .send_text(group, "r1", &format!("re: {text}"))
            .await
            .unwrap();
        bob_ws
    });
    // An access token as the password, no user name.
    let lines = paho(
        &python,
        &server,
        &[
            "--v311",
            "--client-id",
            "v311",
            "--user",
            "",
            "--password",
            &alice.tokens.access_token,
            "--publish",
            &messages_topic(group),
            &send_payload("g1", "hi group"),
            "--publish",
            &messages_topic(not_mine),
            &send_payload("g2", "sneaky"),
            "--wait-for",
            "re: hi group",
        ],
    )
    .await;
    let _ = responder.await.unwrap();
    assert_eq!(lines[0]["connack"], 0, "{lines:?}");
    // 3.1.1 acknowledgements carry no reason; the refusal arrives as an error frame.
    assert_eq!(pubacks(&lines), [0, 0], "{lines:?}");
    assert!(
        message_texts(&lines).contains(&"re: hi group".to_string()),
        "{lines:?}"
    );
    let error = lines
        .iter()
        .filter_map(|l| l.get("event"))
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("an error event: {lines:?}"));
    assert!(
        matches!(error["code"].as_str(), Some("forbidden" | "not_found")),
        "{error}"
    );
    server.stop().await;
}

/// Runs a Mosquitto client to completion as alice (MQTT 5) and returns (success, stdout+stderr).
async fn mosquitto(program: &str, server: &TestServer, args: &[&str]) -> (bool, String) {
    let port = server.mqtt_addr().port().to_string();
    let output = tokio::process::Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5"])
        .args(["-u", "alice", "-P", PASSWORD])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("mosquitto client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Reads lines of a running client until one contains `needle`.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    let mut seen = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} in time; saw:\n{seen}"))
            .expect("read")
            .unwrap_or_else(|| panic!("client ended before {needle:?}; saw:\n{seen}"));
        if line.contains(needle) {
            return line;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_chat_with_a_websocket_user_and_use_the_broker() {
    if !have("mosquitto_sub") {
        skip("mosquitto-clients");
        return;
    }
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let group = bob
        .api
        .create_group("lamps", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let not_mine = bob.api.open_direct(carol.user_id).await.unwrap().id;
    let mut bob_ws = server.connect(&bob).await;
    let port = server.mqtt_addr().port().to_string();

    // alice's device listens with mosquitto_sub; bob writes from the WebSocket.
    // Line-buffered, so the debug lines (SUBACK) arrive while it runs.
    let mut sub = tokio::process::Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "alice",
        ])
        .args([
            "-P",
            PASSWORD,
            "-i",
            "alice-sub",
            "-q",
            "1",
            "-d",
            "-W",
            "20",
        ])
        .args(["-t", "tidings/v1/me/events"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    read_until(&mut lines, "SUBACK").await;
    bob_ws
        .send_text(group, "w1", "hello mosquitto")
        .await
        .unwrap();
    let line = read_until(&mut lines, "hello mosquitto").await;
    let event: Value = serde_json::from_str(&line).expect("the event is the native JSON frame");
    assert_eq!(event["type"], "message");
    assert_eq!(event["message"]["conversation_id"], group.0);

    // mosquitto_pub writes into the group at QoS 1; bob reads it.
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &server,
        &[
            "-q",
            "1",
            "-t",
            &messages_topic(group),
            "-m",
            &send_payload("m1", "hello bob"),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(next_text(&mut bob_ws).await, "hello bob");
    let (_, out) = mosquitto(
        "mosquitto_pub",
        &server,
        &[
            "-q",
            "1",
            "-t",
            &messages_topic(not_mine),
            "-m",
            &send_payload("m2", "x"),
        ],
    )
    .await;
    assert!(out.to_lowercase().contains("not authorized"), "{out}");
    drop(sub);

    // Broker mode: a retained message reaches a later wildcard subscriber.
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &server,
        &["-q", "1", "-r", "-t", "users/alice/lamp/state", "-m", "on"],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &[
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "5",
            "-v",
            "-t",
            "users/alice/+/state",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "users/alice/lamp/state on");

    // Live wildcard delivery at QoS 2.
    // Line-buffered, so the debug lines (SUBACK) arrive while it runs.
    let mut sub = tokio::process::Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "alice",
        ])
        .args(["-P", PASSWORD, "-q", "2", "-d", "-v", "-C", "2", "-W", "10"])
        .args(["-t", "users/alice/#", "-T", "users/alice/lamp/state"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    read_until(&mut lines, "SUBACK").await;
    for (topic, payload) in [("users/alice/a", "one"), ("users/alice/b/c", "two")] {
        let (ok, out) = mosquitto(
            "mosquitto_pub",
            &server,
            &["-q", "2", "-t", topic, "-m", payload],
        )
        .await;
        assert!(ok, "{out}");
    }
    read_until(&mut lines, "users/alice/a one").await;
    read_until(&mut lines, "users/alice/b/c two").await;

    // Access rules: another user's prefix is closed; shared/ is read-only.
    let (_, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &["-C", "1", "-W", "3", "-t", "users/bob/#"],
    )
    .await;
    assert!(out.to_lowercase().contains("denied"), "{out}");
    let (_, out) = mosquitto(
        "mosquitto_pub",
        &server,
        &["-q", "1", "-t", "shared/news", "-m", "x"],
    )
    .await;
    assert!(out.to_lowercase().contains("not authorized"), "{out}");
    server.stop().await;
}

/// Whether mqtt.js is installed (`npm ci` in scripts/mqtt, which `scripts/test` runs).
fn mqtt_js() -> bool {
    workspace_root()
        .join("scripts/mqtt/node_modules/mqtt")
        .exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_chats_over_tcp_and_websocket_and_uses_retained_and_shared_subscriptions() {
    if !mqtt_js() {
        skip("mqtt.js (scripts/mqtt/node_modules)");
        return;
    }
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let direct = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut bob_ws = server.connect(&bob).await;
    let ws_url = format!("{}/mqtt", server.base_url.replacen("http", "ws", 1));
    let tcp_url = format!("mqtt://{}", server.mqtt_addr());
    for (tag, url) in [("tcp", tcp_url), ("ws", ws_url)] {
        let mut node = tokio::process::Command::new("node")
            .arg(workspace_root().join("scripts/mqtt/mqttjs_im.mjs"))
            .args([&url, "alice", PASSWORD, &direct.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
        read_until(&mut lines, "READY").await;
        assert_eq!(
            next_text(&mut bob_ws).await,
            format!("hello from mqtt.js over {tag}")
        );
        bob_ws
            .send_text(direct, &format!("r-{tag}"), &format!("reply over {tag}"))
            .await
            .unwrap();
        read_until(&mut lines, &format!("GOT reply over {tag}")).await;
        read_until(&mut lines, "BROKER users/alice/js/state js-on").await;
        let shared = read_until(&mut lines, "SHARED").await;
        assert_eq!(
            shared, "SHARED 2 2",
            "each member of the group takes its turn"
        );
        let refused = read_until(&mut lines, "REFUSED").await;
        assert_eq!(refused, "REFUSED 135", "not authorized");
        assert!(node.wait().await.unwrap().success());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_chat_over_tls_and_cleartext_is_refused_there() {
    if !have("mosquitto_sub") {
        skip("mosquitto-clients");
        return;
    }
    let server = TestServer::start_with(|c| {
        c.tls.dev = true;
        c.mqtt.tls_enabled = true;
        c.mqtt.tls_listen = "127.0.0.1:0".parse().unwrap();
    })
    .await;
    // With TLS on, the HTTP listener speaks HTTPS too, with the development certificate (which
    // names 127.0.0.1); every client here trusts only it.
    let ca = server.data_dir().join("dev-tls/cert.pem");
    let ca_pem = std::fs::read(&ca).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .build()
        .unwrap();
    let base = &server.base_url;
    assert!(base.starts_with("https://"), "{base}");
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let account: Value = https
            .post(format!("{base}/api/v1/accounts"))
            .json(&serde_json::json!({ "username": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(account["user_id"].as_i64().unwrap());
    }
    let token: Value = https
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv: Value = https
        .post(format!("{base}/api/v1/conversations/direct"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&serde_json::json!({ "user_id": ids[1] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = ConversationId(conv["id"].as_i64().unwrap());
    let port = server.mqtt_tls_addr().port().to_string();
    let ca = ca.to_str().unwrap();
    let tls_args = |user: &'static str| {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            ca,
            "-V",
            "mqttv5",
            "-u",
            user,
            "-P",
            PASSWORD,
        ]
        .map(str::to_owned)
    };

    // bob's device listens over TLS; alice's device writes over TLS at QoS 1.
    let mut sub = tokio::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(tls_args("bob"))
        .args(["-i", "bob-tls", "-q", "1", "-d", "-W", "20"])
        .args(["-t", "tidings/v1/me/events"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    read_until(&mut lines, "SUBACK").await;
    let output = tokio::process::Command::new("mosquitto_pub")
        .args(tls_args("alice"))
        .args(["-q", "1", "-t", &messages_topic(conv)])
        .args(["-m", &send_payload("tls-1", "hello through tls")])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let line = read_until(&mut lines, "hello through tls").await;
    let event: Value = serde_json::from_str(&line).expect("the native JSON frame");
    assert_eq!(event["message"]["conversation_id"], conv.0);

    // A cleartext client on the TLS port gets no MQTT session.
    let output = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "alice",
            "-P",
        ])
        .args([PASSWORD, "-q", "1", "-t", "users/alice/x", "-m", "x"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        !output.status.success(),
        "cleartext accepted on the TLS port"
    );
    server.stop().await;
}

/// A persistent session and a retained message survive a restart of the server: mosquitto_sub
/// subscribes with a session expiry and leaves, mosquitto_pub publishes while it is away, the
/// server stops and starts again on the same data, and the device reconnecting gets what it
/// missed, in order; a new subscriber gets the retained message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_persistent_session_and_retained_message_survive_a_restart() {
    if !have("mosquitto_sub") {
        skip("mosquitto-clients");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let server = TestServer::start_with(|c| c.data_dir = dir.clone()).await;
    server.user("alice").await;
    // Subscribe with a persistent session (no clean start, one hour of expiry) and leave.
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &[
            "-i",
            "alice-dev",
            "-c",
            "-x",
            "3600",
            "-q",
            "2",
            "-t",
            "users/alice/#",
            "-E",
        ],
    )
    .await;
    assert!(ok, "{out}");
    for (topic, payload, retain) in [
        ("users/alice/state", "on", true),
        ("users/alice/inbox", "m1", false),
        ("users/alice/inbox", "m2", false),
        ("users/alice/inbox", "m3", false),
    ] {
        let mut args = vec!["-i", "alice-pub", "-q", "1", "-t", topic, "-m", payload];
        if retain {
            args.push("-r");
        }
        let (ok, out) = mosquitto("mosquitto_pub", &server, &args).await;
        assert!(ok, "{out}");
    }
    server.stop().await;

    let server = TestServer::start_with(|c| c.data_dir = dir.clone()).await;
    // The device comes back to its session: the messages it missed first, in order, then the
    // retained message again for its renewed subscription.
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &[
            "-i",
            "alice-dev",
            "-c",
            "-x",
            "3600",
            "-q",
            "2",
            "-t",
            "users/alice/#",
            "-v",
            "-C",
            "5",
            "-W",
            "10",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "users/alice/state on",
            "users/alice/inbox m1",
            "users/alice/inbox m2",
            "users/alice/inbox m3",
            "users/alice/state on",
        ],
        "{out}"
    );
    // A new subscriber gets the retained message.
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &[
            "-i",
            "alice-new",
            "-t",
            "users/alice/state",
            "-v",
            "-C",
            "1",
            "-W",
            "10",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "users/alice/state on");
    // A clean start ends the stored session: after another restart, nothing is waiting.
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &["-i", "alice-dev", "-t", "users/alice/none", "-E"],
    )
    .await;
    assert!(ok, "{out}");
    server.stop().await;
    let server = TestServer::start_with(|c| c.data_dir = dir.clone()).await;
    let (_, out) = mosquitto(
        "mosquitto_sub",
        &server,
        &[
            "-i",
            "alice-dev",
            "-c",
            "-x",
            "3600",
            "-t",
            "users/alice/inbox",
            "-v",
            "-W",
            "2",
        ],
    )
    .await;
    assert!(!out.contains("users/alice/inbox"), "{out}");
    server.stop().await;
}
