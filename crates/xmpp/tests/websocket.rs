//! XMPP over WebSocket (RFC 7395) on the real server's HTTP listener, wired as `tidings serve`
//! wires it: the raw framing with tokio-tungstenite (subprotocol, `<open/>` and `<close/>`,
//! standalone elements, stream errors for bad messages, sign-in, chat with a native user,
//! Stream Management resumption across sockets), and xmpp.js, a third-party client that speaks
//! RFC 7395 natively.
//!
//! `scripts/test` runs `npm ci` in scripts/xmpp and sets `REQUIRE_TEST_CLIENTS=1`, so the one
//! test command cannot pass without running xmpp.js; a plain `cargo test` on a machine without
//! it says so and skips that test.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tidings_proto::MessageBody;
use tidings_testkit::{PASSWORD, TestServer, TestUser, next_message};
use tidings_xmpp::xml::{Element, Limits, NS_CLIENT, NS_STREAM, parse_element};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(20);
const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SM: &str = "urn:xmpp:sm:3";
const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";
const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server with XMPP on (its TCP listener on a free port) and so the WebSocket route too.
async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.xmpp.enabled = true;
        c.xmpp.listen = "127.0.0.1:0".parse().unwrap();
    })
    .await
}

fn url(server: &TestServer) -> String {
    format!(
        "{}/xmpp-websocket",
        server.base_url.replacen("http", "ws", 1)
    )
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect_with(
    server: &TestServer,
    protocol: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = url(server).into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "xmpp"
    );
    Ok(ws)
}

async fn connect(server: &TestServer) -> Ws {
    connect_with(server, Some("xmpp")).await.expect("upgrade")
}

/// The next text message; `None` once the server closed the WebSocket.
async fn recv(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// The next message, parsed on its own as RFC 7395 requires (no declarations inherited).
async fn recv_element(ws: &mut Ws) -> Element {
    let text = recv(ws).await.expect("a message before the close");
    parse_element(text.as_bytes(), &HashMap::new(), Limits::default())
        .unwrap_or_else(|e| panic!("not a standalone element: {text}: {e}"))
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// Opens a stream and returns the server's `<open/>` and features.
async fn open(ws: &mut Ws) -> (Element, Element) {
    send(ws, OPEN).await;
    let open = recv_element(ws).await;
    assert!(open.is("open", NS_FRAMING), "{open:?}");
    let features = recv_element(ws).await;
    assert!(features.is("features", NS_STREAM), "{features:?}");
    (open, features)
}

/// Expects the stream error `condition`, then `<close/>`, then the end of the WebSocket.
async fn expect_stream_error(ws: &mut Ws, condition: &str) {
    let error = recv_element(ws).await;
    assert!(error.is("error", NS_STREAM), "{error:?}");
    assert!(error.find(condition, NS_STREAMS).is_some(), "{error:?}");
    assert!(recv_element(ws).await.is("close", NS_FRAMING));
    assert_eq!(recv(ws).await, None, "the WebSocket closes after <close/>");
}

/// Signs in with `auth` (a SASL `<auth/>`), restarts the stream, binds `resource`; returns the
/// features of the restarted stream and the bound JID.
async fn sign_in(ws: &mut Ws, auth: &str, resource: &str) -> (Element, String) {
    open(ws).await;
    send(ws, auth).await;
    let success = recv_element(ws).await;
    assert!(success.is("success", NS_SASL), "{success:?}");
    let (_, features) = open(ws).await;
    assert!(features.find("bind", NS_BIND).is_some());
    send(
        ws,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{NS_BIND}'>\
             <resource>{resource}</resource></bind></iq>"
        ),
    )
    .await;
    let bound = recv_element(ws).await;
    assert!(bound.is("iq", NS_CLIENT), "{bound:?}");
    let jid = bound
        .find("bind", NS_BIND)
        .and_then(|b| b.find("jid", NS_BIND))
        .expect("a bound JID")
        .text_content();
    (features, jid)
}

async fn befriend(a: &TestUser, b: &TestUser) {
    a.api.send_friend_request(b.user_id, None).await.unwrap();
    b.api.accept_friend_request(a.user_id).await.unwrap();
}

fn plain(username: &str) -> String {
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{PASSWORD}"));
    format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{response}</auth>")
}

fn oauthbearer(user: &TestUser) -> String {
    let response = base64::engine::general_purpose::STANDARD.encode(format!(
        "n,,\x01auth=Bearer {}\x01\x01",
        user.tokens.access_token
    ));
    format!("<auth xmlns='{NS_SASL}' mechanism='OAUTHBEARER'>{response}</auth>")
}

/// Waits for a `<message>` with a body, skipping presence and other stanzas.
async fn next_chat(ws: &mut Ws) -> Element {
    loop {
        let element = recv_element(ws).await;
        if element.is("message", NS_CLIENT) && element.find("body", NS_CLIENT).is_some() {
            return element;
        }
    }
}

#[tokio::test]
async fn the_upgrade_needs_the_xmpp_subprotocol() {
    let server = server().await;
    for offered in [None, Some("mqtt"), Some("tidings.v1")] {
        match connect_with(&server, offered).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{offered:?}");
            }
            other => panic!("{offered:?}: not refused: {:?}", other.map(|_| ())),
        }
    }
    // The refusal says why, as a problem document.
    let refused = reqwest::Client::new()
        .get(format!("{}/xmpp-websocket", server.base_url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body = refused.text().await.unwrap();
    assert!(body.contains("`xmpp` subprotocol"), "{body}");
    // Offered among others, it is chosen.
    connect_with(&server, Some("foo, xmpp")).await.unwrap();
    server.stop().await;

    // No route when XMPP is off, or its WebSocket is.
    let off = TestServer::start().await;
    assert!(connect_with(&off, Some("xmpp")).await.is_err());
    off.stop().await;
    let no_websocket = TestServer::start_with(|c| {
        c.xmpp.enabled = true;
        c.xmpp.listen = "127.0.0.1:0".parse().unwrap();
        c.xmpp.websocket = false;
    })
    .await;
    assert!(connect_with(&no_websocket, Some("xmpp")).await.is_err());
    no_websocket.stop().await;
}

#[tokio::test]
async fn a_stream_opens_with_features_and_closes_on_close() {
    let server = server().await;
    let mut ws = connect(&server).await;
    let (open, features) = open(&mut ws).await;
    assert_eq!(open.get_attr("from"), Some("localhost"));
    assert_eq!(open.get_attr("version"), Some("1.0"));
    assert_eq!(open.get_attr("xml:lang"), Some("en"));
    assert!(open.get_attr("id").is_some_and(|id| id.len() >= 16));
    // TLS is the WebSocket's: no STARTTLS, and SASL is offered (this client is on loopback).
    assert!(
        features
            .find("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_none()
    );
    let mechanisms: Vec<String> = features
        .find("mechanisms", NS_SASL)
        .expect("mechanisms")
        .elements()
        .map(Element::text_content)
        .collect();
    assert_eq!(
        mechanisms,
        ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "OAUTHBEARER"]
    );
    send(&mut ws, CLOSE).await;
    assert!(recv_element(&mut ws).await.is("close", NS_FRAMING));
    assert_eq!(recv(&mut ws).await, None);
    server.stop().await;
}

/// Binary frames, text that is not one element, and oversized messages each end their own
/// stream with the stream error TCP would get, and leave a signed-in stream beside them alone.
#[tokio::test]
async fn bad_messages_end_only_their_stream() {
    let server = server().await;
    let alice = server.user("alice").await;
    let mut bystander = connect(&server).await;
    sign_in(&mut bystander, &plain(&alice.username), "bystander").await;

    // Before the stream is open: our `<open/>` comes first, then the error.
    let mut ws = connect(&server).await;
    ws.send(Message::Binary(vec![0x3c, 0x78, 0x2f, 0x3e].into()))
        .await
        .unwrap();
    assert!(recv_element(&mut ws).await.is("open", NS_FRAMING));
    expect_stream_error(&mut ws, "unsupported-encoding").await;

    let big = format!(
        "<message xmlns='jabber:client' to='bob@localhost'><body>{}</body></message>",
        // Over max_stanza_bytes (256 KiB), under what the socket reads at most.
        "x".repeat(257 * 1024)
    );
    let cases: [(&str, &str); 6] = [
        ("hello", "not-well-formed"),
        (
            "<message xmlns='jabber:client'><body>half",
            "not-well-formed",
        ),
        (
            "<iq xmlns='jabber:client' id='1'/><iq xmlns='jabber:client' id='2'/>",
            "not-well-formed",
        ),
        (
            "<message xmlns='jabber:client'><!-- c --></message>",
            "restricted-xml",
        ),
        (OPEN, "not-well-formed"),
        (&big, "policy-violation"),
    ];
    for (text, condition) in cases {
        let mut ws = connect(&server).await;
        open(&mut ws).await;
        send(&mut ws, text).await;
        expect_stream_error(&mut ws, condition).await;
    }
    // Past the socket's own limit too (the message is not even read whole). The sending goes
    // on in a task, since the server stops reading before the message ends.
    let mut ws = connect(&server).await;
    open(&mut ws).await;
    let (mut tx, mut rx) = ws.split();
    let sending = tokio::spawn(async move {
        let _ = tx
            .send(Message::Text("x".repeat(2 * 1024 * 1024).into()))
            .await;
        tx
    });
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("an end in time")
        {
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    sending.abort();
    assert_eq!(texts.len(), 2, "{texts:?}");
    let error = parse_element(texts[0].as_bytes(), &HashMap::new(), Limits::default()).unwrap();
    assert!(
        error.find("policy-violation", NS_STREAMS).is_some(),
        "{texts:?}"
    );
    assert_eq!(texts[1], CLOSE);

    // The bystander's stream still works.
    send(
        &mut bystander,
        "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let pong = recv_element(&mut bystander).await;
    assert_eq!(pong.get_attr("id"), Some("p1"));
    assert_eq!(pong.get_attr("type"), Some("result"));
    server.stop().await;
}

/// PLAIN and OAUTHBEARER over the WebSocket, resource binding, and chat both ways with a user
/// of the native protocol; every stanza arrives as its own standalone message.
#[tokio::test]
async fn signs_in_and_chats_with_a_native_user() {
    let server = server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let mut bob_native = server.connect(&bob).await;
    let mut carol_native = server.connect(&carol).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;

    let mut ws = connect(&server).await;
    let (features, jid) = sign_in(&mut ws, &plain("alice"), "browser").await;
    assert_eq!(jid, "alice@localhost/browser");
    assert!(features.find("sm", NS_SM).is_some());
    send(&mut ws, "<presence xmlns='jabber:client'/>").await;
    send(
        &mut ws,
        "<message xmlns='jabber:client' type='chat' to='bob@localhost' id='m1'>\
         <body>hello over a websocket</body></message>",
    )
    .await;
    let message = next_message(&mut bob_native).await;
    assert_eq!(message.conversation_id, conversation);
    assert_eq!(message.sender_id, alice.user_id);
    assert_eq!(
        message.body,
        MessageBody::Text {
            text: "hello over a websocket".into()
        }
    );
    bob_native
        .send_text(conversation, "r1", "and back")
        .await
        .unwrap();
    let reply = next_chat(&mut ws).await;
    assert_eq!(
        reply.get_attr("from").unwrap().split('/').next(),
        Some("bob@localhost")
    );
    assert_eq!(
        reply.find("body", NS_CLIENT).unwrap().text_content(),
        "and back"
    );
    // A message sent right before the close still goes through: the close waits for it. (To
    // a new conversation, so the core has work to do for it after the close is read.)
    send(&mut ws, &format!("<enable xmlns='{NS_SM}'/>")).await;
    send(
        &mut ws,
        "<message xmlns='jabber:client' type='chat' to='carol@localhost' id='m2'>\
         <body>last words</body></message>",
    )
    .await;
    send(&mut ws, CLOSE).await;
    loop {
        // Whatever was on its way (presence, receipts), then the close.
        let element = recv_element(&mut ws).await;
        if element.is("close", NS_FRAMING) {
            break;
        }
    }
    assert_eq!(
        next_message(&mut carol_native).await.body,
        MessageBody::Text {
            text: "last words".into()
        }
    );

    // An access token instead of a password.
    let mut ws = connect(&server).await;
    let (_, jid) = sign_in(&mut ws, &oauthbearer(&alice), "tokened").await;
    assert_eq!(jid, "alice@localhost/tokened");
    server.stop().await;
}

/// Stream Management (XEP-0198) resumption works across WebSocket connections as over TCP:
/// what arrived while the socket was gone is resent on the new one.
#[tokio::test]
async fn stream_management_resumes_on_a_new_websocket() {
    let server = server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    befriend(&alice, &bob).await;
    let bob_native = server.connect(&bob).await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;

    let mut ws = connect(&server).await;
    sign_in(&mut ws, &plain("alice"), "phone").await;
    send(&mut ws, &format!("<enable xmlns='{NS_SM}' resume='true'/>")).await;
    let enabled = recv_element(&mut ws).await;
    assert!(enabled.is("enabled", NS_SM), "{enabled:?}");
    let id = enabled.get_attr("id").expect("a resumption id").to_owned();
    send(&mut ws, "<presence xmlns='jabber:client'/>").await;
    // The reflected presence is stanza 1. An acknowledgement behind an earlier one (xmpp.js
    // sends one when it resets its count late) changes nothing and ends nothing.
    let reflected = recv_element(&mut ws).await;
    assert!(reflected.is("presence", NS_CLIENT), "{reflected:?}");
    send(&mut ws, &format!("<a xmlns='{NS_SM}' h='1'/>")).await;
    send(&mut ws, &format!("<a xmlns='{NS_SM}' h='0'/>")).await;
    send(
        &mut ws,
        "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    loop {
        let element = recv_element(&mut ws).await;
        if element.is("iq", NS_CLIENT) {
            assert_eq!(element.get_attr("id"), Some("p1"));
            break;
        }
    }
    // The socket is lost without a <close/>.
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob_native
        .send_text(conversation, "away-1", "while you were away")
        .await
        .unwrap();

    let mut ws = connect(&server).await;
    open(&mut ws).await;
    send(&mut ws, &plain("alice")).await;
    assert!(recv_element(&mut ws).await.is("success", NS_SASL));
    open(&mut ws).await;
    send(
        &mut ws,
        &format!("<resume xmlns='{NS_SM}' previd='{id}' h='0'/>"),
    )
    .await;
    let resumed = recv_element(&mut ws).await;
    assert!(resumed.is("resumed", NS_SM), "{resumed:?}");
    let message = next_chat(&mut ws).await;
    assert_eq!(
        message.find("body", NS_CLIENT).unwrap().text_content(),
        "while you were away"
    );
    // An acknowledgement of more than was sent still ends the stream (XEP-0198).
    send(&mut ws, &format!("<a xmlns='{NS_SM}' h='99'/>")).await;
    loop {
        let element = recv_element(&mut ws).await;
        if element.is("error", NS_STREAM) {
            assert!(element.find("undefined-condition", NS_STREAMS).is_some());
            break;
        }
    }
    drop(bob_native);
    server.stop().await;
}

/// Whether xmpp.js is installed (`npm ci` in scripts/xmpp, which `scripts/test` runs).
fn xmpp_js() -> bool {
    let ok = workspace_root()
        .join("scripts/xmpp/node_modules/@xmpp/client")
        .exists();
    if !ok {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but xmpp.js (scripts/xmpp/node_modules) is missing"
        );
        eprintln!("SKIPPED: xmpp.js is missing; scripts/test installs it");
    }
    ok
}

struct Node {
    child: tokio::process::Child,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Node {
    fn start(server: &TestServer, user: &TestUser, peer: &str, role: &str) -> Node {
        let mut child = tokio::process::Command::new("node")
            .arg("--experimental-websocket")
            .arg(workspace_root().join("scripts/xmpp/xmppjs_ws.mjs"))
            .args([
                &url(server),
                "localhost",
                &user.username,
                PASSWORD,
                peer,
                role,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Node { child, lines }
    }

    /// The next line starting with `prefix`; fails on TIMEOUT, ERROR or the end of output.
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {prefix} in time"))
                .unwrap()
                .unwrap_or_else(|| panic!("xmpp.js ended before {prefix}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
            assert!(
                !line.starts_with("TIMEOUT") && !line.starts_with("ERROR"),
                "xmpp.js: {line} (waiting for {prefix})"
            );
        }
    }

    async fn finish(mut self) {
        self.expect("CLOSED").await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }
}

/// xmpp.js, a third-party client, signs in over ws:// (SCRAM, as it prefers), binds, reads
/// its roster, and two of them chat; the native history holds the conversation.
#[tokio::test]
async fn xmpp_js_signs_in_and_chats_over_websocket() {
    if !xmpp_js() {
        return;
    }
    let server = server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    befriend(&alice, &bob).await;

    let mut bob_js = Node::start(&server, &bob, "alice@localhost", "reply");
    let mechanism = bob_js.expect("MECHANISM").await;
    assert!(mechanism.starts_with("SCRAM-SHA-"), "{mechanism}");
    assert!(bob_js.expect("ONLINE").await.starts_with("bob@localhost/"));
    assert_eq!(bob_js.expect("ROSTER").await, "alice@localhost");

    let mut alice_js = Node::start(&server, &alice, "bob@localhost", "first");
    alice_js.expect("MECHANISM").await;
    assert!(
        alice_js
            .expect("ONLINE")
            .await
            .starts_with("alice@localhost/")
    );
    assert_eq!(alice_js.expect("ROSTER").await, "bob@localhost");
    alice_js.expect("SENT").await;
    assert_eq!(
        bob_js.expect("GOT").await,
        "alice@localhost hello from xmpp.js as alice"
    );
    assert_eq!(
        alice_js.expect("GOT").await,
        "bob@localhost re: hello from xmpp.js as alice"
    );
    alice_js.finish().await;
    bob_js.finish().await;

    let conversation = alice.api.open_direct(bob.user_id).await.unwrap().id;
    let mut history = alice.api.history(conversation, None, 10).await.unwrap();
    history.messages.sort_by_key(|m| m.seq);
    let texts: Vec<String> = history
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [
            "hello from xmpp.js as alice",
            "re: hello from xmpp.js as alice"
        ]
    );
    server.stop().await;
}
