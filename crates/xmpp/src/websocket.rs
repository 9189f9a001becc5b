//! XMPP over WebSocket (RFC 7395): the `/xmpp-websocket` route of the HTTP listener and the
//! framing of a stream into one WebSocket message per element.
//!
//! The connection code (`conn.rs`) is the same as over TCP; only its input and output change.
//! Input: each text message is parsed on its own as one complete element (the restricted
//! parser of `xml.rs`, with the same limits), and the framing elements become the events a
//! TCP stream has: `<open/>` the stream header, `<close/>` the end of the stream. Output: what
//! the connection writes for a byte stream is cut into its top-level elements, which become
//! messages: the stream header becomes `<open/>`, `</stream:stream>` becomes `<close/>`, and
//! each element gets the namespace declarations it inherited from the header on TCP, since
//! every message must stand alone. The output is the gateway's own serializer's (text and
//! attribute values have `<` and `>` escaped), so cutting it needs no parser.
//!
//! TLS is the WebSocket's business: the route admits a socket only when the connection to the
//! client is encrypted (the listener serves HTTPS, or a trusted reverse proxy says it received
//! HTTPS), or the client is on this host (a local client, or a reverse proxy on the same
//! machine that does not say it took plain HTTP), or `xmpp.tls_required` is off. Such a stream counts as secure, so STARTTLS is never
//! offered and the SASL mechanisms are; `-PLUS` is not, having no TLS channel of its own.

use crate::Gateway;
use crate::xml::{self, Limits, NS_CLIENT, NS_STREAM, StreamEvent, XmlError};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use tidings_proto::ErrorCode;
use tidings_proto::rest::Problem;

/// The namespace of `<open/>` and `<close/>` (RFC 7395 3.3.1).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// The WebSocket subprotocol a client must offer (RFC 7395 3.1).
pub const SUBPROTOCOL: &str = "xmpp";
/// Where the route is on the HTTP listener (the name Prosody and ejabberd use, and the one
/// `deploy/nginx` forwards).
pub const PATH: &str = "/xmpp-websocket";

/// Bytes of a WebSocket message the socket reads at most. Past `xmpp.max_stanza_bytes` a
/// message is refused with a stream error; this hard limit, a little above it, only stops the
/// socket from buffering more than that.
const FRAME_SLACK: usize = 4 * 1024;
/// The socket's read buffer: an idle connection's main cost.
const READ_BUFFER: usize = 4 * 1024;
/// How long the closing frame may take to go out.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type TrustedProxy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;
type ClientAddress = Arc<dyn Fn(IpAddr, &HeaderMap) -> IpAddr + Send + Sync>;

/// What the route needs to know about the HTTP listener it is mounted on. The binary builds it
/// from the HTTP transport's configuration, which this crate does not import.
#[derive(Clone)]
pub struct HttpListener {
    /// The listener serves HTTPS itself.
    https: bool,
    /// Whether a peer is one of the operator's reverse proxies (`[http] trusted_proxies`).
    /// From those, `X-Forwarded-Proto` says whether the client used TLS.
    trusted_proxy: TrustedProxy,
    /// The client behind a peer, as the HTTP transport reads `X-Forwarded-For` (only from
    /// trusted proxies), for the per-address sign-in limit.
    client_address: ClientAddress,
}

impl HttpListener {
    /// `https`: the listener serves HTTPS itself; `trusted_proxy`: whether a peer is one of
    /// the operator's reverse proxies; `client_address`: the client behind a peer, from
    /// `X-Forwarded-For` as the HTTP transport reads it.
    pub fn new(
        https: bool,
        trusted_proxy: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
        client_address: impl Fn(IpAddr, &HeaderMap) -> IpAddr + Send + Sync + 'static,
    ) -> HttpListener {
        HttpListener {
            https,
            trusted_proxy: Arc::new(trusted_proxy),
            client_address: Arc::new(client_address),
        }
    }

    /// A listener without reverse proxies in front of it.
    pub fn direct(https: bool) -> HttpListener {
        HttpListener::new(https, |_| false, |peer, _| peer)
    }

    /// Whether the client's connection is encrypted, or never left this host.
    fn secure(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        if self.https {
            return true;
        }
        // What a proxy says the client used (the first hop's scheme).
        let forwarded = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim);
        if canonical(peer).is_loopback() {
            // A local client, or a proxy on this host, unless it says it took plain HTTP.
            return !forwarded.is_some_and(|proto| proto.eq_ignore_ascii_case("http"));
        }
        (self.trusted_proxy)(peer) && forwarded.is_some_and(|p| p.eq_ignore_ascii_case("https"))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

struct Route {
    gateway: Arc<Gateway>,
    listener: HttpListener,
}

/// The axum route for XMPP over WebSocket (`/xmpp-websocket`, subprotocol `xmpp`), for the
/// binary to merge into the HTTP router, so the HTTP transport never imports this crate.
pub fn websocket_router(gateway: Arc<Gateway>, listener: HttpListener) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::get(upgrade))
        .with_state(Arc::new(Route { gateway, listener }))
}

/// A refusal of the upgrade as the HTTP listener words them (RFC 9457 problem+json).
fn problem(code: ErrorCode, detail: &str) -> Response {
    let problem = Problem::new(code, detail);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_vec(&problem).expect("problems serialize");
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

async fn upgrade(
    State(route): State<Arc<Route>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // RFC 7395 3.1: without the subprotocol this is not an XMPP stream; a client that did not
    // ask for it would not understand our framing.
    let offers_xmpp = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offers_xmpp {
        return problem(
            ErrorCode::MalformedRequest,
            "XMPP over WebSocket needs the `xmpp` subprotocol (Sec-WebSocket-Protocol: xmpp)",
        );
    }
    let gateway = route.gateway.clone();
    if gateway.config.tls_required && !route.listener.secure(peer.ip(), &headers) {
        return problem(
            ErrorCode::Forbidden,
            "XMPP over WebSocket needs TLS here: connect with wss://",
        );
    }
    let client = (route.listener.client_address)(peer.ip(), &headers);
    let limits = gateway.config.limits();
    let hard_limit = limits.max_stanza_bytes + FRAME_SLACK;
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            let framed = Framed {
                socket,
                limits,
                opened: false,
            };
            crate::conn::run_framed(gateway, framed, Some(SocketAddr::new(client, peer.port())))
        })
}

/// Why reading a framed stream stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Not an XMPP stream: the stream error condition and a text for the client.
    Stream(&'static str, String),
    /// The WebSocket closed without `<close/>`; the session may be resumed.
    Closed,
    /// The WebSocket failed.
    Io,
}

impl From<XmlError> for ReadError {
    fn from(e: XmlError) -> ReadError {
        ReadError::Stream(e.condition(), e.to_string())
    }
}

/// A stream over a WebSocket: one element per message each way.
pub(crate) struct Framed {
    socket: WebSocket,
    limits: Limits,
    /// The client's `<open/>` of the current stream was read; another before a restart ends
    /// the stream, as a second header would on TCP.
    opened: bool,
}

impl Framed {
    /// A new stream begins (after SASL): the client opens it again.
    pub(crate) fn restart(&mut self) {
        self.opened = false;
    }

    /// The next event from the client. Cancel-safe: a message is taken from the socket only
    /// together with the event it makes.
    pub(crate) async fn next_event(&mut self) -> Result<StreamEvent, ReadError> {
        loop {
            let message = match self.socket.recv().await {
                None => return Err(ReadError::Closed),
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    // Past the hard size limit the socket refuses to read on; anything else
                    // (a reset, a protocol violation) leaves nothing to talk to.
                    tracing::debug!(%e, "XMPP WebSocket read failed.");
                    // axum wraps tungstenite's error (the same crate and version as ours).
                    let too_big = matches!(
                        e.into_inner()
                            .downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
                        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                    );
                    return Err(if too_big {
                        XmlError::TooBig(self.limits.max_stanza_bytes).into()
                    } else {
                        ReadError::Io
                    });
                }
            };
            match message {
                Message::Text(text) => {
                    if let Some(event) = decode(text.as_str(), self.limits, &mut self.opened)? {
                        return Ok(event);
                    }
                }
                Message::Binary(_) => {
                    return Err(ReadError::Stream(
                        "unsupported-encoding",
                        "XMPP over WebSocket is sent in text messages".into(),
                    ));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// Sends what the connection wrote for a byte stream, one message per element, and
    /// flushes once.
    pub(crate) async fn write(&mut self, text: &str) -> Result<(), axum::Error> {
        for message in encode(text) {
            self.socket.feed(Message::Text(message.into())).await?;
        }
        self.socket.flush().await
    }

    /// Closes the WebSocket (after `<close/>` or a stream error was sent). A client that
    /// reads nothing more does not hold the connection's task: the close frame gets a moment.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.close()).await;
    }
}

/// Declarations every client message is read with: `jabber:client` by default and the
/// `stream:` prefix, as on a TCP stream. RFC 7395 asks clients to declare them on every
/// message; the few that leave `xmlns='jabber:client'` out are understood rather than cut off.
static CLIENT_SCOPE: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    HashMap::from([
        (String::new(), NS_CLIENT.to_owned()),
        ("stream".to_owned(), NS_STREAM.to_owned()),
    ])
});

/// What one text message from the client means: the stream's opening, its end, or a stanza
/// (or nonza). `None` for whitespace, which RFC 7395 3.3.6 forbids as a keepalive but which
/// harms nobody. `opened` tracks whether the current stream has been opened.
pub(crate) fn decode(
    text: &str,
    limits: Limits,
    opened: &mut bool,
) -> Result<Option<StreamEvent>, XmlError> {
    if text.len() > limits.max_stanza_bytes {
        return Err(XmlError::TooBig(limits.max_stanza_bytes));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    let element = xml::parse_element(text.as_bytes(), &CLIENT_SCOPE, limits)?;
    if element.ns != NS_FRAMING {
        return Ok(Some(StreamEvent::Stanza(element)));
    }
    match element.name.as_str() {
        "open" if !*opened => {
            *opened = true;
            Ok(Some(StreamEvent::Open(element)))
        }
        "open" => Err(XmlError::NotWellFormed("the stream is already open".into())),
        "close" => Ok(Some(StreamEvent::Close)),
        _ => Err(XmlError::NotWellFormed(format!(
            "unknown framing element {}",
            element.name
        ))),
    }
}

const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

/// Cuts what the connection wrote for a byte stream into WebSocket messages: one per
/// top-level element, each with the declarations it needs to stand alone. The stream header
/// becomes `<open/>` and its end `<close/>`; the XML declaration and whitespace go.
pub(crate) fn encode(text: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut depth = 0usize;
    // Where the current top-level element starts.
    let mut start = 0;
    let mut at = 0;
    while let Some(lt) = text[at..].find('<').map(|i| at + i) {
        let Some(gt) = text[lt..].find('>').map(|i| lt + i) else {
            break;
        };
        let tag = &text[lt..=gt];
        at = gt + 1;
        if tag.starts_with("<?") {
            continue;
        }
        if tag.starts_with("</") {
            if depth == 0 {
                // Only the stream's end tag closes what no element opened.
                if tag == "</stream:stream>" {
                    messages.push(CLOSE.to_owned());
                }
                continue;
            }
            depth -= 1;
            if depth == 0 {
                messages.push(standalone(&text[start..at]));
            }
            continue;
        }
        let empty = tag.ends_with("/>");
        if depth == 0 {
            if !empty && tag_name(tag) == "stream:stream" {
                messages.push(open_from_header(tag));
                continue;
            }
            start = lt;
            if empty {
                messages.push(standalone(tag));
                continue;
            }
        }
        if !empty {
            depth += 1;
        }
    }
    if depth > 0 || text[at..].contains('<') {
        // The connection writes whole elements; a cut one would be a bug, not the client's.
        tracing::warn!("XMPP WebSocket output ended inside an element; the rest was dropped.");
    }
    messages
}

/// The name of a start tag (`<name ...>`).
fn tag_name(tag: &str) -> &str {
    let rest = &tag[1..];
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A top-level element made to stand alone: on TCP a stanza inherits `jabber:client` and the
/// `stream:` prefix from the header; here it must declare what it uses.
fn standalone(element: &str) -> String {
    let name = tag_name(element);
    let after_name = 1 + name.len();
    let mut out = String::with_capacity(element.len() + 64);
    out.push_str(&element[..after_name]);
    if name.starts_with("stream:") {
        // Children of stream features and errors that are in `jabber:client` inherit it too.
        out.push_str(" xmlns:stream='");
        out.push_str(NS_STREAM);
        out.push_str("' xmlns='");
        out.push_str(NS_CLIENT);
        out.push('\'');
    } else if !element[after_name..].starts_with(" xmlns='") {
        // The serializer declares an element's namespace right after its name unless it is
        // the stream's default, `jabber:client`.
        out.push_str(" xmlns='");
        out.push_str(NS_CLIENT);
        out.push('\'');
    }
    out.push_str(&element[after_name..]);
    out
}

/// `<open/>` answering the client's, from the stream header the connection wrote: the same
/// attributes (from, to, id, version, xml:lang), without the header's namespace declarations.
fn open_from_header(tag: &str) -> String {
    let mut out = String::from("<open xmlns='");
    out.push_str(NS_FRAMING);
    out.push('\'');
    let body = tag[1 + tag_name(tag).len()..].trim_end_matches('>');
    for (name, quoted) in attributes(body) {
        if name == "xmlns" || name.starts_with("xmlns:") {
            continue;
        }
        out.push(' ');
        out.push_str(name);
        out.push('=');
        out.push_str(quoted);
    }
    out.push_str("/>");
    out
}

/// The attributes of a tag's body as (name, quoted value), values left escaped.
fn attributes(body: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim();
        let value = rest[eq + 1..].trim_start();
        let Some(quote) = value.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            break;
        };
        let Some(end) = value[1..].find(quote) else {
            break;
        };
        out.push((name, &value[..end + 2]));
        rest = &value[end + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;

    fn limits() -> Limits {
        Limits {
            max_stanza_bytes: 300,
            max_depth: 4,
            max_attributes: 8,
        }
    }

    /// Each message parsed on its own, as a client would.
    fn parse_alone(message: &str) -> Element {
        xml::parse_element(message.as_bytes(), &HashMap::new(), limits())
            .unwrap_or_else(|e| panic!("{message}: {e}"))
    }

    #[test]
    fn the_header_becomes_open_and_the_end_close() {
        let out = "<?xml version='1.0'?><stream:stream from='example.com' to='a@example.com' \
                   id='abc' version='1.0' xml:lang='en' xmlns='jabber:client' \
                   xmlns:stream='http://etherx.jabber.org/streams'>";
        let messages = encode(out);
        assert_eq!(
            messages,
            [
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.com' \
              to='a@example.com' id='abc' version='1.0' xml:lang='en'/>"
            ]
        );
        let open = parse_alone(&messages[0]);
        assert!(open.is("open", NS_FRAMING));
        assert_eq!(open.get_attr("xml:lang"), Some("en"));
        assert_eq!(encode("</stream:stream>"), [CLOSE]);
    }

    #[test]
    fn concatenated_output_is_split_into_standalone_elements() {
        let message = Element::new("message", NS_CLIENT)
            .attr("to", "b@x")
            .attr("id", "a>b<'c'")
            .child(Element::new("body", NS_CLIENT).text("1 < 2 > 0 </message> <x/>"))
            .child(Element::new("request", "urn:xmpp:receipts"));
        let r = Element::new("r", "urn:xmpp:sm:3");
        let iq = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", "1");
        let mut out = String::new();
        for element in [&message, &r, &iq] {
            element.write_to(&mut out, NS_CLIENT);
        }
        out.push_str("\n ");
        let messages = encode(&out);
        assert_eq!(messages.len(), 3, "{messages:?}");
        // Each stands alone, with its namespace declared, and reads back as what was written.
        assert_eq!(parse_alone(&messages[0]), message);
        assert_eq!(parse_alone(&messages[1]), r);
        assert_eq!(parse_alone(&messages[2]), iq);
        assert!(messages[0].starts_with("<message xmlns='jabber:client' "));
        assert!(messages[1].starts_with("<r xmlns='urn:xmpp:sm:3'"));
    }

    #[test]
    fn stream_elements_declare_the_stream_prefix() {
        let features = Element::new("features", NS_STREAM)
            .child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
            .child(Element::new("sm", "urn:xmpp:sm:3"));
        let error = Element::new("error", NS_STREAM).child(Element::new(
            "policy-violation",
            "urn:ietf:params:xml:ns:xmpp-streams",
        ));
        let out = format!("{}{}</stream:stream>", features.to_xml(), error.to_xml());
        let messages = encode(&out);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0]
                .starts_with("<stream:features xmlns:stream='http://etherx.jabber.org/streams'")
        );
        assert_eq!(parse_alone(&messages[0]), features);
        assert_eq!(parse_alone(&messages[1]), error);
        assert_eq!(messages[2], CLOSE);
    }

    #[test]
    fn client_messages_become_stream_events() {
        let mut opened = false;
        let open = decode(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
            limits(),
            &mut opened,
        )
        .unwrap();
        let Some(StreamEvent::Open(open)) = open else {
            panic!("{open:?}")
        };
        assert_eq!(open.get_attr("to"), Some("example.com"));
        assert!(opened);
        // A second opening without a restart is an error, as a second header is on TCP.
        let again = decode(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
            limits(),
            &mut opened,
        );
        assert_eq!(again.unwrap_err().condition(), "not-well-formed");
        let Some(StreamEvent::Stanza(message)) = decode(
            "<message xmlns='jabber:client' to='b@x'><body>hi</body></message>",
            limits(),
            &mut opened,
        )
        .unwrap() else {
            panic!()
        };
        assert!(message.is("message", NS_CLIENT));
        // Without the declaration a stanza is still read as jabber:client.
        let Some(StreamEvent::Stanza(iq)) =
            decode("<iq type='get' id='1'/>", limits(), &mut opened).unwrap()
        else {
            panic!()
        };
        assert!(iq.is("iq", NS_CLIENT));
        let auth = decode(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>",
            limits(),
            &mut opened,
        );
        assert!(matches!(auth, Ok(Some(StreamEvent::Stanza(a))) if a.ns.ends_with("xmpp-sasl")));
        assert_eq!(decode(" \n", limits(), &mut opened), Ok(None));
        assert_eq!(
            decode(
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
                limits(),
                &mut opened
            ),
            Ok(Some(StreamEvent::Close))
        );
    }

    #[test]
    fn a_socket_is_secure_when_its_client_connection_is_encrypted_or_local() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = HeaderMap::new();
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mut http = HeaderMap::new();
        http.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let plain = HttpListener::direct(false);
        assert!(!plain.secure(ip("203.0.113.9"), &none));
        assert!(plain.secure(ip("127.0.0.1"), &none));
        assert!(plain.secure(ip("::1"), &none));
        assert!(plain.secure(ip("::ffff:127.0.0.1"), &none));
        // A proxy on this host that took plain HTTP says so.
        assert!(!plain.secure(ip("127.0.0.1"), &http));
        assert!(plain.secure(ip("127.0.0.1"), &https));
        // Nobody is a trusted proxy here: the header is the client's own word.
        assert!(!plain.secure(ip("203.0.113.9"), &https));
        assert!(HttpListener::direct(true).secure(ip("203.0.113.9"), &none));
        let proxy = ip("10.0.0.2");
        let proxied = HttpListener::new(false, move |peer| peer == proxy, |peer, _| peer);
        assert!(proxied.secure(ip("10.0.0.2"), &https));
        assert!(!proxied.secure(ip("10.0.0.2"), &http));
        assert!(!proxied.secure(ip("10.0.0.2"), &none));
        assert!(!proxied.secure(ip("10.0.0.3"), &https));
    }

    #[test]
    fn bad_messages_get_the_stream_error_tcp_would() {
        let cases = [
            ("hello", "not-well-formed"),
            ("<message><body>half", "not-well-formed"),
            ("<iq id='1'/><iq id='2'/>", "not-well-formed"),
            ("<message><!-- c --></message>", "restricted-xml"),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "restricted-xml"),
            ("<?xml version='1.0'?><iq id='1'/>", "restricted-xml"),
            ("<message><body>&lol;</body></message>", "restricted-xml"),
            (
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><x/></open><y/>",
                "not-well-formed",
            ),
            ("<a><b><c><d><e/></d></c></b></a>", "policy-violation"),
        ];
        for (text, condition) in cases {
            let err = decode(text, limits(), &mut true).expect_err(text);
            assert_eq!(err.condition(), condition, "{text}: {err}");
        }
        let big = format!("<message><body>{}</body></message>", "x".repeat(300));
        assert_eq!(
            decode(&big, limits(), &mut true),
            Err(XmlError::TooBig(300))
        );
    }
}
