//! Bad input never crashes a task, poisons a neighbour, or touches stored data: each case gets
//! a clear error with a stable code, and the connection survives where it can.

use std::time::Duration;
use tidings_proto::ws::{ClientFrame, ServerFrame};
use tidings_proto::{ConversationId, ErrorCode, MessageBody};
use tidings_sdk::{ConnectOptions, Connection, SdkError};
use tidings_testkit::TestServer;

const WAIT: Duration = Duration::from_secs(10);

async fn next_error(conn: &mut Connection) -> (Option<String>, ErrorCode) {
    loop {
        match tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("event in time")
        {
            Some(ServerFrame::Error { id, code, .. }) => return (id, code),
            Some(_) => continue,
            None => panic!("connection closed: {:?}", conn.close_reason()),
        }
    }
}

async fn still_alive(conn: &Connection) {
    let pong = conn.request(|id| ClientFrame::Ping { id }).await.unwrap();
    assert!(matches!(pong, ServerFrame::Pong { .. }));
}

#[tokio::test]
async fn malformed_unknown_and_binary_frames_get_errors_and_the_connection_survives() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let mut ws = server.connect(&alice).await;
    let mut neighbour = server.connect(&bob).await;

    ws.send_raw("{not json").unwrap();
    assert_eq!(
        next_error(&mut ws).await,
        (None, ErrorCode::MalformedRequest)
    );
    ws.send_raw(r#"{"type":"teleport","id":"t1"}"#).unwrap();
    assert_eq!(
        next_error(&mut ws).await,
        (Some("t1".into()), ErrorCode::UnknownFrame)
    );
    ws.send_raw(r#"{"type":"send","id":"s1","conversation_id":"seven"}"#)
        .unwrap();
    assert_eq!(
        next_error(&mut ws).await,
        (Some("s1".into()), ErrorCode::MalformedRequest)
    );
    ws.send_raw(r#"[1,2,3]"#).unwrap();
    assert_eq!(next_error(&mut ws).await.1, ErrorCode::MalformedRequest);
    ws.send_raw(r#"{"type":"ping","id":"p","extra":true}"#)
        .unwrap();
    assert_eq!(next_error(&mut ws).await.1, ErrorCode::MalformedRequest);
    ws.send_binary(vec![0, 159, 146, 150]).unwrap();
    assert_eq!(next_error(&mut ws).await.1, ErrorCode::MalformedRequest);
    still_alive(&ws).await;

    // Messages to conversations the user is not in, or that do not exist.
    let err = ws
        .send_text(ConversationId(999_999), "c1", "hello?")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    // Invalid bodies and ids.
    let err = ws.send_text(conv.id, "c2", "   ").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let err = ws.send_text(conv.id, "", "hi").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let big = "x".repeat(70 * 1024);
    let err = ws.send_text(conv.id, "c3", &big).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    still_alive(&ws).await;

    // None of it touched stored data, and the neighbour saw nothing but the one good message.
    ws.send_text(conv.id, "good", "the only message")
        .await
        .unwrap();
    let history = alice.api.history(conv.id, None, 50).await.unwrap();
    assert_eq!(history.messages.len(), 1);
    loop {
        let event = tokio::time::timeout(WAIT, neighbour.next_event())
            .await
            .unwrap()
            .unwrap();
        if let ServerFrame::Message { message } = event {
            assert_eq!(message.client_msg_id, "good");
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_frames_are_refused_then_closed_past_the_hard_limit() {
    let server = TestServer::start_with(|c| {
        c.http.ws_max_frame_bytes = 80 * 1024;
    })
    .await;
    let alice = server.user("alice").await;
    let mut ws = server.connect(&alice).await;
    // Over the soft limit: refused, connection kept.
    let padding = "y".repeat(100 * 1024);
    ws.send_raw(format!(
        r#"{{"type":"ping","id":"big","padding":"{padding}"}}"#
    ))
    .unwrap();
    // The request keeps its one answer: the id is recovered from the oversized frame.
    assert_eq!(
        next_error(&mut ws).await,
        (Some("big".into()), ErrorCode::TooLarge)
    );
    still_alive(&ws).await;
    // Over four times the soft limit: the stream cannot continue; it closes with 1009.
    ws.send_raw("z".repeat(400 * 1024)).unwrap();
    let closed =
        tokio::time::timeout(WAIT, async { while ws.next_event().await.is_some() {} }).await;
    assert!(closed.is_ok());
    assert_eq!(ws.close_reason().map(|r| r.0), Some(1009));
    // The server itself is fine.
    still_alive(&server.connect(&alice).await).await;
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_connections_can_only_authenticate() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut ws = Connection::open(&server.client().ws_url(), &ConnectOptions::default())
        .await
        .unwrap();
    let err = ws
        .request(|id| ClientFrame::Sync {
            id,
            cursors: vec![],
            limit_per_conversation: None,
            contacts_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    let err = ws
        .authenticate("eyJhbGciOiJub25lIn0.e30.")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    // A forged token: real header and payload of another key's making are refused too.
    let err = ws
        .authenticate(&alice.tokens.access_token.replace('.', ".x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    ws.authenticate(&alice.tokens.access_token).await.unwrap();
    still_alive(&ws).await;
    server.stop().await;
}

#[tokio::test]
async fn rest_bodies_that_are_malformed_or_too_large_get_problems() {
    let server = TestServer::start_with(|c| c.http.max_body_bytes = 4096).await;
    let alice = server.user("alice").await;
    let http = reqwest_like(&server.base_url);
    let (status, body) = http.post_json("/api/v1/accounts", "{\"username\":").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "malformed_request");
    let (status, body) = http
        .post_json(
            "/api/v1/accounts",
            &format!(
                "{{\"username\":\"{}\",\"password\":\"x\"}}",
                "a".repeat(5000)
            ),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "too_large");
    let err = alice
        .api
        .send(
            ConversationId(1),
            "x",
            MessageBody::Text {
                text: "x".repeat(5000),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::Problem { status: 413, .. }),
        "{err:?}"
    );
    server.stop().await;
}

/// A minimal raw HTTP helper, so the test controls the exact bytes sent.
struct RawHttp(String);

fn reqwest_like(base: &str) -> RawHttp {
    RawHttp(base.trim_start_matches("http://").to_string())
}

impl RawHttp {
    async fn post_json(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.0).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.0,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let status = text[9..12].parse().unwrap();
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{text}"
        );
        let json_start = text.find("\r\n\r\n").unwrap() + 4;
        (status, serde_json::from_str(&text[json_start..]).unwrap())
    }
}

#[tokio::test]
async fn a_client_asking_for_another_protocol_version_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let mut request = server.client().ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "tidings.v2".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    server.stop().await;
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from a kept-alive
/// connection; returns the lower-cased head and the body.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

#[tokio::test]
async fn a_response_that_leaves_the_body_unread_says_the_connection_closes() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let addr = server.base_url.trim_start_matches("http://").to_string();

    // Refused before its body is read (no token): the body has not even been sent yet, so the
    // server cannot reuse the connection, and says so instead of closing it unannounced.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"client_msg_id":"a","body":{"kind":"text","text":"hi"}}"#;
    stream
        .write_all(
            format!(
                "POST /api/v1/conversations/1/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");

    // A request whose body is read keeps its connection: two requests on one socket.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        let malformed = "{\"username\":";
        stream
            .write_all(
                format!(
                    "POST /api/v1/accounts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{malformed}",
                    malformed.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "malformed_request");
    }
    server.stop().await;
}
