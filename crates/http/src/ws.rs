//! The WebSocket endpoint: moves frames between the socket and a core `Session`.
//!
//! One task per connection and no per-connection buffers beyond the configured read buffer keep
//! an idle connection cheap. Output is written with `feed` and flushed once per burst, so a
//! busy connection costs one syscall per burst rather than one per frame.

use crate::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::time::Duration;
use tidings_core::session::{Output, Session};
use tidings_proto::ErrorCode;
use tidings_proto::ws::SUBPROTOCOL;
use tokio::time::Instant;

/// Frames written before one flush, at most.
const BURST: usize = 64;

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A client that offers subprotocols must offer ours; one that offers none gets v1, so
    // simple tools can connect. Accepting a client that asked only for, say, `tidings.v2`
    // would let it believe it speaks a protocol we do not.
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return ApiError::new(
            ErrorCode::MalformedRequest,
            format!("unsupported subprotocol; this server speaks {SUBPROTOCOL}"),
        )
        .into_response();
    }
    let hard_limit = state.config.ws_max_frame_bytes.saturating_mul(4);
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(state.config.ws_read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            use tracing::Instrument;
            // The upgraded connection outlives the request: it gets its own span and id.
            let span = tracing::info_span!("connection", id = %tidings_metrics::next_log_id(), transport = "websocket");
            run(socket, state).instrument(span)
        })
}

async fn run(socket: WebSocket, state: AppState) {
    let _counted =
        tidings_metrics::metrics().connection_opened(tidings_metrics::Transport::WebSocket);
    let (mut sink, mut stream) = socket.split();
    tracing::debug!("Connection opened.");
    let mut session = Session::new(state.core.clone());
    let soft_limit = state.config.ws_max_frame_bytes;
    let ping_every = Duration::from_secs(state.config.ws_ping_interval_secs.max(1));
    let keepalive = tokio::time::sleep(ping_every);
    tokio::pin!(keepalive);
    // Intervals since the client last sent anything; three in a row mean it is gone.
    let mut quiet_intervals = 0u32;
    // The same patience for writes: a client that takes none of our bytes for three ping
    // intervals is gone (`[http] ws_ping_interval_secs` sets both).
    let write_limit = ping_every * 3;
    loop {
        tokio::select! {
            biased;
            out = session.next_output() => {
                // A client that takes no bytes for `write_limit` while we have some for it is
                // gone or stuck: without the limit this task would wait in the write for ever,
                // and would never see that the hub has closed it as a slow consumer.
                match tokio::time::timeout(write_limit, write_burst(&mut sink, &mut session, out)).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => {
                        tracing::debug!(?write_limit, "The client took no write in time; dropping the connection.");
                        break;
                    }
                }
            }
            incoming = stream.next(), if session.can_read() => {
                quiet_intervals = 0;
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // One exported span per frame (see `tidings::telemetry`); its type is
                        // recorded once the session has decoded it. Not a log span.
                        let frame_span = tracing::info_span!(
                            target: tidings_metrics::TRACE_TARGET,
                            "ws.frame",
                            frame.type = tracing::field::Empty,
                            // OTLP has no unsigned integers: a u64 would be exported as a string.
                            bytes = i64::try_from(text.len()).unwrap_or(i64::MAX),
                        );
                        let _in_frame = frame_span.enter();
                        if text.len() > soft_limit {
                            session.handle_oversized(text.as_str(), soft_limit);
                        } else {
                            session.handle_text(text.as_str());
                        }
                    }
                    Some(Ok(Message::Binary(_))) => session.handle_binary(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the closing handshake's reply; send it.
                        let _ = tokio::time::timeout(write_limit, sink.flush()).await;
                        break;
                    }
                    None => break,
                    Some(Err(e)) => {
                        // Frames past the hard limit, protocol violations, resets: the
                        // stream cannot continue. Try to say why before leaving.
                        tracing::debug!(%e, "WebSocket read failed.");
                        let frame = CloseFrame { code: 1009, reason: "frame too large or invalid".into() };
                        let _ = tokio::time::timeout(write_limit, sink.send(Message::Close(Some(frame)))).await;
                        break;
                    }
                }
            }
            () = &mut keepalive => {
                // While flow control has paused reading, silence is ours, not the client's.
                quiet_intervals = if session.can_read() { quiet_intervals + 1 } else { 0 };
                if quiet_intervals >= 3 {
                    let frame = CloseFrame { code: 1001, reason: "keepalive timeout".into() };
                    let _ = tokio::time::timeout(write_limit, sink.send(Message::Close(Some(frame)))).await;
                    break;
                }
                match tokio::time::timeout(write_limit, sink.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
                keepalive.as_mut().reset(Instant::now() + ping_every);
            }
        }
    }
    if let Some(caller) = session.caller() {
        tracing::debug!(user = caller.user_id.0, "Connection ended.");
    } else {
        tracing::debug!("Connection ended.");
    }
}

/// Writes `first` and whatever else the session has ready (up to [`BURST`] frames), then
/// flushes. Returns whether the connection goes on.
async fn write_burst(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    session: &mut Session,
    first: Output,
) -> bool {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(out) = next.take() {
        match out {
            Output::Frame(text) => {
                if sink
                    .feed(Message::Text(String::from(text).into()))
                    .await
                    .is_err()
                {
                    return false;
                }
                written += 1;
                if written < BURST {
                    next = session.next_output().now_or_never();
                }
            }
            Output::Close { code, reason } => {
                tracing::debug!(code, reason, "Closing the connection.");
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return false;
            }
        }
    }
    sink.flush().await.is_ok()
}
