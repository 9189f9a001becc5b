//! One native-protocol connection: a reader task that routes answers by request id and
//! events to a channel, and a writer task that batches outgoing frames.

use crate::{SdkError, SdkResult};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tidings_proto::ws::{ClientFrame, Cursor, SUBPROTOCOL, ServerFrame};
use tidings_proto::{ConversationId, DeviceId, Message, MessageBody, Relations, Seq, UserId};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Requests waiting for their answers; `None` once the connection is gone, so a request made
/// after the reader stopped fails at once instead of waiting forever.
type Pending = Arc<Mutex<Option<HashMap<String, oneshot::Sender<ServerFrame>>>>>;

/// How to open a connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bind the client socket to this local address first (load tests spread connections over
    /// 127.0.x.y so they do not run out of ports).
    pub local_ip: Option<IpAddr>,
    /// The client's WebSocket read buffer; small for tests that hold many idle connections.
    pub read_buffer: usize,
    /// Events buffered before the reader stops reading (and the server's queue fills).
    pub event_buffer: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            local_ip: None,
            read_buffer: 64 * 1024,
            event_buffer: 65_536,
        }
    }
}

/// An authenticated native-protocol connection.
pub struct Connection {
    writer: mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    events: mpsc::Receiver<ServerFrame>,
    next_id: AtomicU64,
    close: Arc<Mutex<Option<(u16, String)>>>,
    pub user_id: UserId,
    pub device_id: DeviceId,
}

fn request_for(url: &str) -> SdkResult<Request> {
    let mut request = url
        .into_client_request()
        .map_err(|e| SdkError::Transport(e.to_string()))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(request)
}

async fn tcp_connect(url: &str, local_ip: Option<IpAddr>) -> SdkResult<TcpStream> {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| SdkError::Transport(format!("bad URL {url}")))?;
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| SdkError::Transport(e.to_string()))?
        .next()
        .ok_or_else(|| SdkError::Transport(format!("cannot resolve {authority}")))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| SdkError::Transport(e.to_string()))?;
    if let Some(ip) = local_ip {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| SdkError::Transport(format!("bind {ip}: {e}")))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| SdkError::Transport(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Connection {
    /// Opens `ws_url` (see [`crate::Client::ws_url`]) and authenticates with `access_token`.
    pub async fn connect(ws_url: &str, access_token: &str) -> SdkResult<Connection> {
        Self::connect_with(ws_url, access_token, &ConnectOptions::default()).await
    }

    /// Opens a connection without authenticating (for tests of the unauthenticated state).
    pub async fn open(ws_url: &str, options: &ConnectOptions) -> SdkResult<Connection> {
        let stream = tcp_connect(ws_url, options.local_ip).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(options.read_buffer.max(256))
            .write_buffer_size(0);
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request_for(ws_url)?, stream, Some(config))
                .await
                .map_err(|e| SdkError::Transport(e.to_string()))?;
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if agreed != Some(SUBPROTOCOL) {
            return Err(SdkError::Unexpected(format!(
                "server did not agree to {SUBPROTOCOL}: {agreed:?}"
            )));
        }
        let (mut sink, mut stream) = ws.split();
        let (writer, mut outgoing) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(first) = outgoing.recv().await {
                if sink.feed(first).await.is_err() {
                    return;
                }
                // Batch whatever else is queued into one flush.
                while let Ok(more) = outgoing.try_recv() {
                    if sink.feed(more).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let close: Arc<Mutex<Option<(u16, String)>>> = Arc::default();
        let (events_tx, events) = mpsc::channel(options.event_buffer.max(1));
        let reader_pending = pending.clone();
        let reader_close = close.clone();
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let text = match message {
                    Ok(WsMessage::Text(text)) => text,
                    Ok(WsMessage::Close(frame)) => {
                        if let Some(frame) = frame {
                            *reader_close.lock().expect("close lock") =
                                Some((frame.code.into(), frame.reason.to_string()));
                        }
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = response_id(&frame) {
                    let waiter = reader_pending
                        .lock()
                        .expect("pending lock")
                        .as_mut()
                        .and_then(|p| p.remove(id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(frame);
                        continue;
                    }
                }
                if events_tx.send(frame).await.is_err() {
                    // Nobody listens to events any more; keep routing answers.
                    continue;
                }
            }
            // Dropping the waiters tells every open request the connection is gone.
            reader_pending.lock().expect("pending lock").take();
        });
        Ok(Connection {
            writer,
            pending,
            events,
            next_id: AtomicU64::new(1),
            close,
            user_id: UserId(0),
            device_id: DeviceId(0),
        })
    }

    /// Opens and authenticates with options.
    pub async fn connect_with(
        ws_url: &str,
        access_token: &str,
        options: &ConnectOptions,
    ) -> SdkResult<Connection> {
        let mut conn = Self::open(ws_url, options).await?;
        conn.authenticate(access_token).await?;
        Ok(conn)
    }

    /// Sends `auth`; also used to extend the session with a refreshed token.
    pub async fn authenticate(&mut self, access_token: &str) -> SdkResult<i64> {
        let token = access_token.to_string();
        match self.request(|id| ClientFrame::Auth { id, token }).await? {
            ServerFrame::AuthOk {
                user_id,
                device_id,
                expires_at,
                ..
            } => {
                self.user_id = user_id;
                self.device_id = device_id;
                Ok(expires_at)
            }
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    fn new_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Sends a request built from a fresh id and waits for its answer. Error frames become
    /// [`SdkError::Server`].
    pub async fn request(
        &self,
        make: impl FnOnce(String) -> ClientFrame,
    ) -> SdkResult<ServerFrame> {
        let id = self.new_id();
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().expect("pending lock").as_mut() {
            Some(pending) => pending.insert(id.clone(), tx),
            None => return Err(SdkError::Closed),
        };
        let frame = make(id);
        let text =
            serde_json::to_string(&frame).map_err(|e| SdkError::Unexpected(e.to_string()))?;
        self.writer
            .send(WsMessage::Text(text.into()))
            .map_err(|_| SdkError::Closed)?;
        match rx.await.map_err(|_| SdkError::Closed)? {
            ServerFrame::Error { code, message, .. } => Err(SdkError::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Sends any text as a frame, unvalidated (for tests of bad input).
    pub fn send_raw(&self, text: impl Into<String>) -> SdkResult<()> {
        self.writer
            .send(WsMessage::Text(text.into().into()))
            .map_err(|_| SdkError::Closed)
    }

    /// Sends a binary frame (the protocol refuses them; for tests).
    pub fn send_binary(&self, bytes: Vec<u8>) -> SdkResult<()> {
        self.writer
            .send(WsMessage::Binary(bytes.into()))
            .map_err(|_| SdkError::Closed)
    }

    /// Sends a message and waits for its ack: `(seq, duplicate)`.
    pub async fn send(
        &self,
        conversation_id: ConversationId,
        client_msg_id: &str,
        body: MessageBody,
    ) -> SdkResult<(Seq, bool)> {
        self.send_related(conversation_id, client_msg_id, body, Relations::default())
            .await
    }

    /// Sends a message that replies, posts in a thread or mentions users.
    pub async fn send_related(
        &self,
        conversation_id: ConversationId,
        client_msg_id: &str,
        body: MessageBody,
        relations: Relations,
    ) -> SdkResult<(Seq, bool)> {
        let client_msg_id = client_msg_id.to_string();
        match self
            .request(|id| ClientFrame::Send {
                id,
                conversation_id,
                client_msg_id,
                body,
                reply_to: relations.reply_to,
                thread_root: relations.thread_root,
                mentions: relations.mentions,
            })
            .await?
        {
            ServerFrame::Ack { seq, duplicate, .. } => Ok((seq, duplicate)),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn send_text(
        &self,
        conversation_id: ConversationId,
        client_msg_id: &str,
        text: &str,
    ) -> SdkResult<(Seq, bool)> {
        self.send(
            conversation_id,
            client_msg_id,
            MessageBody::Text { text: text.into() },
        )
        .await
    }

    /// Calls the other member of a direct conversation with an SDP offer. Returns the call's id
    /// and whether the call ended at once as busy.
    pub async fn call_invite(
        &self,
        conversation_id: ConversationId,
        sdp: &str,
        video: bool,
    ) -> SdkResult<(tidings_proto::call::CallId, bool)> {
        match self
            .request(|id| ClientFrame::CallInvite {
                id,
                conversation_id,
                sdp: sdp.into(),
                video,
            })
            .await?
        {
            ServerFrame::CallStarted { call_id, busy, .. } => Ok((call_id, busy)),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends a signal about a call and waits for the server's `ok`.
    pub async fn call_signal(
        &self,
        call_id: &str,
        signal: tidings_proto::call::CallSignal,
    ) -> SdkResult<()> {
        match self
            .request(|id| ClientFrame::CallSignal {
                id: Some(id),
                call_id: call_id.into(),
                signal,
            })
            .await?
        {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Hands `payload` to one live device (`device_signal`) and waits for the server's `ok`.
    pub async fn device_signal(
        &self,
        to_user: UserId,
        to_device: DeviceId,
        kind: &str,
        payload: serde_json::Value,
    ) -> SdkResult<()> {
        match self
            .request(|id| ClientFrame::DeviceSignal {
                id,
                to_user,
                to_device,
                kind: kind.into(),
                payload,
            })
            .await?
        {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks for everything after `cursors`; the messages arrive as events before this returns.
    /// Returns `(conversations, messages)` as counted by the server.
    pub async fn sync(
        &self,
        cursors: &Cursors,
        limit_per_conversation: Option<u32>,
    ) -> SdkResult<(u32, u64)> {
        self.sync_with_contacts(cursors, limit_per_conversation, None)
            .await
    }

    /// Like [`Connection::sync`], and with `contacts_version` (the version of the contacts
    /// snapshot the client holds, 0 for none) a `contacts` event arrives first when the
    /// server's contacts are newer.
    pub async fn sync_with_contacts(
        &self,
        cursors: &Cursors,
        limit_per_conversation: Option<u32>,
        contacts_version: Option<u64>,
    ) -> SdkResult<(u32, u64)> {
        let cursors = cursors.to_vec();
        match self
            .request(|id| ClientFrame::Sync {
                id,
                cursors,
                limit_per_conversation,
                contacts_version,
            })
            .await?
        {
            ServerFrame::SyncDone {
                conversations,
                messages,
                ..
            } => Ok((conversations, messages)),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn history(
        &self,
        conversation_id: ConversationId,
        before_seq: Option<Seq>,
        limit: Option<u32>,
    ) -> SdkResult<(Vec<Message>, bool)> {
        match self
            .request(|id| ClientFrame::History {
                id,
                conversation_id,
                before_seq,
                limit,
            })
            .await?
        {
            ServerFrame::History {
                messages, has_more, ..
            } => Ok((messages, has_more)),
            other => Err(SdkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The next server event, or `None` once the connection has closed and all events are read.
    pub async fn next_event(&mut self) -> Option<ServerFrame> {
        self.events.recv().await
    }

    /// An event if one is already here.
    pub fn try_next_event(&mut self) -> Option<ServerFrame> {
        self.events.try_recv().ok()
    }

    /// The close code and reason the server sent, once it has closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close.lock().expect("close lock").clone()
    }

    /// Closes the connection politely.
    pub fn close(&self) {
        let _ = self.writer.send(WsMessage::Close(None));
    }
}

fn response_id(frame: &ServerFrame) -> Option<&str> {
    match frame {
        ServerFrame::AuthOk { id, .. }
        | ServerFrame::Ack { id, .. }
        | ServerFrame::Ok { id }
        | ServerFrame::SyncDone { id, .. }
        | ServerFrame::History { id, .. }
        | ServerFrame::PresenceList { id, .. }
        | ServerFrame::CallStarted { id, .. }
        | ServerFrame::Pong { id } => Some(id),
        ServerFrame::Error { id, .. } => id.as_deref(),
        _ => None,
    }
}

/// What a client holds: the highest contiguous sequence per conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursors(HashMap<ConversationId, Seq>);

impl Cursors {
    /// Records a message; returns false for one already held.
    pub fn observe(&mut self, conversation_id: ConversationId, seq: Seq) -> bool {
        let cursor = self.0.entry(conversation_id).or_insert(0);
        if seq <= *cursor {
            return false;
        }
        *cursor = seq;
        true
    }

    pub fn get(&self, conversation_id: ConversationId) -> Seq {
        self.0.get(&conversation_id).copied().unwrap_or(0)
    }

    pub fn to_vec(&self) -> Vec<Cursor> {
        self.0
            .iter()
            .map(|(c, s)| Cursor {
                conversation_id: *c,
                seq: *s,
                peer_read_seq: None,
            })
            .collect()
    }
}
