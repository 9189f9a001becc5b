//! A WebSocket client that stops reading is let go: the server does not wait in a write to it
//! for ever, so the connection's socket, buffers and queue are freed. (Alone in its test
//! binary: it reads the process-wide connection gauge.)

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tidings_metrics::Transport;
use tidings_proto::MessageBody;
use tidings_proto::ws::SUBPROTOCOL;
use tidings_testkit::TestServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_three_ping_intervals() {
    let server = TestServer::start_with(|c| {
        c.http.ws_ping_interval_secs = 1;
        c.limits.messages_per_minute = 0;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let conv = bob.api.open_direct(alice.user_id).await.unwrap().id;

    let mut request = server.client().ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let auth = serde_json::json!({"type": "auth", "id": "a", "token": alice.tokens.access_token});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("auth answered")
            .expect("open")
            .unwrap();
        if frame.to_text().unwrap_or_default().contains("auth_ok") {
            break;
        }
    }
    let gauge = || tidings_metrics::metrics().connections(Transport::WebSocket);
    assert_eq!(gauge(), 1);
    // Alice keeps talking (a protocol ping every 200 ms), so the keepalive never finds her
    // quiet; she just never reads. Only a limit on writes can let her go.
    let (mut to_server, from_server) = ws.split();
    let talking = tokio::spawn(async move {
        for i in 0.. {
            let ping = serde_json::json!({"type": "ping", "id": format!("p{i}")});
            if to_server
                .send(Message::Text(ping.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // From here Alice reads nothing. Bob sends far more than the socket buffers between them
    // hold, so the server's writes to her block.
    let text = "x".repeat(40 * 1024);
    for i in 0..400 {
        bob.api
            .send(
                conv,
                &format!("m{i}"),
                MessageBody::Text { text: text.clone() },
            )
            .await
            .unwrap();
        if gauge() == 0 {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge() != 0 {
        assert!(
            Instant::now() < deadline,
            "the server still holds the connection of a client that stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    talking.abort();
    drop(from_server);
    server.stop().await;
}
