//! Tells a client to open a new connection when a response leaves part of its request body
//! unread.
//!
//! A handler often answers before it reads the body: a token without the route's scope, a
//! body over the size limit, a tus `PATCH` at the wrong offset. hyper then drains what it has
//! already buffered and, when the rest has not arrived yet, closes the connection after the
//! response, because the unread bytes would otherwise be taken for the next request. A client
//! that keeps the connection alive does not know this and sends its next request into a
//! socket the server is closing; it sees "connection closed without response" on a request
//! that did nothing wrong. Whether the rest of the body had arrived is a matter of packet
//! timing, so the failure is intermittent. `Connection: close` on such responses (RFC 9112
//! section 9.6) makes the close part of the exchange: the client reads it and reconnects.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Middleware: wraps the request body to see whether it is read to its end, and marks the
/// response `Connection: close` when it was not.
pub async fn close_if_unread(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let finished = Arc::new(AtomicBool::new(body.is_end_stream()));
    let tracked = Tracked {
        inner: body,
        finished: finished.clone(),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
    // A WebSocket upgrade (101) ends HTTP on this connection anyway, and its request has no
    // body.
    if !finished.load(Ordering::Acquire)
        && response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.finished.store(true, Ordering::Release)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
