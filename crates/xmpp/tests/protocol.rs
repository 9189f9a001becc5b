//! The XMPP gateway over raw sockets: the exact bytes of negotiation, Stream Management
//! acknowledgements that wait for the commit, and the stream errors for oversized stanzas and
//! XML the gateway refuses. The gateway runs on the real test server's core.

use std::sync::Arc;
use std::time::Duration;
use tidings_testkit::{PASSWORD, TestServer};
use tidings_xmpp::{Gateway, XmppConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

struct Setup {
    server: TestServer,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn setup(adjust: impl FnOnce(&mut XmppConfig)) -> Setup {
    let server = TestServer::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = XmppConfig {
        enabled: true,
        ..XmppConfig::default()
    };
    adjust(&mut config);
    let gateway = Gateway::new(server.core().clone(), config, Some(Arc::new(tls)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(tidings_xmpp::serve(listener, gateway, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Setup {
        server,
        port,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        _stop: stop,
    }
}

/// Reads until the text received so far contains `needle`; returns all of it.
async fn read_until<S: AsyncRead + Unpin>(stream: &mut S, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains(needle) {
            return text;
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; got {text}"))
            .unwrap_or(0);
        if n == 0 {
            panic!("closed before {needle:?}; got {text}");
        }
        got.extend_from_slice(&buf[..n]);
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, text: &str) {
    stream.write_all(text.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// STARTTLS, SASL PLAIN and resource binding, as `username`.
async fn sign_in(setup: &Setup, username: &str, resource: &str) -> Tls {
    use base64::Engine;
    let mut tcp = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    write(&mut tcp, HEADER).await;
    let features = read_until(&mut tcp, "</stream:features>").await;
    assert!(features.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"));
    assert!(
        !features.contains("mechanisms"),
        "no SASL before TLS: {features}"
    );
    write(
        &mut tcp,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )
    .await;
    read_until(&mut tcp, "<proceed").await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = setup.connector.connect(name, tcp).await.unwrap();
    write(&mut tls, HEADER).await;
    let features = read_until(&mut tls, "</stream:features>").await;
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{PASSWORD}"));
    write(
        &mut tls,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{response}</auth>"
        ),
    )
    .await;
    read_until(&mut tls, "<success").await;
    write(&mut tls, HEADER).await;
    let features = read_until(&mut tls, "</stream:features>").await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    write(
        &mut tls,
        &format!("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
    )
    .await;
    let bound = read_until(&mut tls, "</iq>").await;
    assert!(
        bound.contains(&format!("<jid>{username}@localhost/{resource}</jid>")),
        "{bound}"
    );
    tls
}

/// `<a h=.../>` counts a message only once the core acknowledged it, so the message is in the
/// history when the client learns it was handled.
#[tokio::test]
async fn stream_management_acks_only_committed_messages() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut tls = sign_in(&setup, "alice", "sm").await;
    write(&mut tls, "<enable xmlns='urn:xmpp:sm:3'/>").await;
    read_until(&mut tls, "<enabled").await;
    write(
        &mut tls,
        "<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>\
         <message to='bob@localhost' type='chat' id='m2'><body>two</body></message>\
         <r xmlns='urn:xmpp:sm:3'/>",
    )
    .await;
    let answer = read_until(&mut tls, "<a ").await;
    let h: u32 = answer
        .split("h='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no h in {answer}"));
    let history = bob.api.history(conversation, None, 50).await.unwrap();
    let stored: Vec<&str> = history
        .messages
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    // Every message the count covers is stored (the count may lag, never lead).
    assert!(h as usize <= stored.len(), "h={h} but stored {stored:?}");
    // Once both are answered the count covers both.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        write(&mut tls, "<r xmlns='urn:xmpp:sm:3'/>").await;
        let answer = read_until(&mut tls, "<a ").await;
        if answer.contains("h='2'") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "h never reached 2: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = bob.api.history(conversation, None, 50).await.unwrap();
    let stored: Vec<&str> = history
        .messages
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert_eq!(stored, ["m1", "m2"]);
}

/// An oversized stanza, a DTD and an entity each end their stream with the right condition.
#[tokio::test]
async fn refused_xml_gets_the_proper_stream_error() {
    let setup = setup(|c| c.max_stanza_bytes = 2048).await;
    setup.server.user("alice").await;
    let cases = [
        (
            format!(
                "<message to='bob@localhost'><body>{}</body></message>",
                "x".repeat(4096)
            ),
            "policy-violation",
        ),
        (
            "<message><body>&xxe;</body></message>".to_owned(),
            "restricted-xml",
        ),
        ("<message><!-- c --></message>".to_owned(), "restricted-xml"),
        ("<message></iq>".to_owned(), "not-well-formed"),
    ];
    for (stanza, condition) in cases {
        let mut tls = sign_in(&setup, "alice", "bad").await;
        write(&mut tls, &stanza).await;
        let got = read_until(&mut tls, "</stream:stream>").await;
        assert!(
            got.contains(&format!(
                "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            )),
            "{condition}: {got}"
        );
    }
    // A DTD before the stream header, on a fresh connection.
    let mut tcp = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    write(
        &mut tcp,
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>",
    )
    .await;
    let got = read_until(&mut tcp, "</stream:stream>").await;
    assert!(got.contains("<restricted-xml"), "{got}");
    // A stream to another domain.
    let mut tcp = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    write(
        &mut tcp,
        &HEADER.replace("to='localhost'", "to='elsewhere.example'"),
    )
    .await;
    let got = read_until(&mut tcp, "</stream:stream>").await;
    assert!(got.contains("<host-unknown"), "{got}");
}

/// A client over its stanza rate is read more slowly: with 5 stanzas per second and a burst of
/// 5, the answer to the 15th ping cannot come before about two seconds.
#[tokio::test]
async fn the_stanza_rate_slows_a_flooding_client() {
    let setup = setup(|c| {
        c.stanzas_per_second = 5;
        c.stanza_burst = 5;
    })
    .await;
    setup.server.user("alice").await;
    let mut tls = sign_in(&setup, "alice", "flood").await;
    // The bind used one token; wait for the bucket to fill again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = std::time::Instant::now();
    let mut pings = String::new();
    for i in 0..15 {
        pings.push_str(&format!(
            "<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
    }
    write(&mut tls, &pings).await;
    read_until(&mut tls, "id='p14'").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "15 stanzas answered in {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "throttled far more than the rate: {took:?}"
    );
}

/// Binding a resource another connection holds takes it over: the old stream ends with
/// `conflict` (RFC 6120 7.7.2.2).
#[tokio::test]
async fn a_second_bind_of_a_resource_ends_the_first_with_conflict() {
    let setup = setup(|_| {}).await;
    setup.server.user("alice").await;
    let mut first = sign_in(&setup, "alice", "same").await;
    let _second = sign_in(&setup, "alice", "same").await;
    let got = read_until(&mut first, "</stream:stream>").await;
    assert!(
        got.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{got}"
    );
}
