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
    setup_with(|_| {}, adjust).await
}

/// As [`setup`], with the server's configuration adjusted too.
async fn setup_with(
    server_adjust: impl FnOnce(&mut tidings::config::Config),
    adjust: impl FnOnce(&mut XmppConfig),
) -> Setup {
    let server = TestServer::start_with(server_adjust).await;
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
    let uploads = tidings_xmpp::conn::upload::Uploads {
        files: server.files().clone(),
        base_url: server.base_url.clone(),
    };
    let gateway = Gateway::with_uploads(
        server.core().clone(),
        config,
        Some(Arc::new(tls)),
        Some(uploads),
    );
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

/// STARTTLS on a new connection; returns the TLS stream and the features offered on it.
async fn starttls(setup: &Setup) -> (Tls, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    write(&mut tcp, HEADER).await;
    read_until(&mut tcp, "</stream:features>").await;
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
    (tls, features)
}

/// The TLS 1.3 `tls-exporter` channel binding the client sees (RFC 9266).
fn client_exporter(tls: &Tls) -> Vec<u8> {
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap()
}

/// Reads until a SASL outcome (`</challenge>`, `</success>`, `<success .../>`, `</failure>`).
async fn read_sasl(tls: &mut Tls) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if ["</challenge>", "</success>", "</failure>"]
            .iter()
            .any(|end| text.contains(end))
            || (text.contains("<success") && text.contains("/>"))
        {
            return text;
        }
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no SASL answer in time; got {text}"))
            .unwrap_or(0);
        assert!(n > 0, "closed; got {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The text content of the first `<tag ...>` ... `</tag>` in `xml`.
fn content<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml
        .find(&format!("<{tag}"))
        .unwrap_or_else(|| panic!("{tag} in {xml}"));
    let open_end = start + xml[start..].find('>').unwrap() + 1;
    let close = xml[open_end..].find(&format!("</{tag}>")).unwrap() + open_end;
    &xml[open_end..close]
}

/// How a test SCRAM client treats channel binding.
enum Binding<'a> {
    /// `n`: no binding.
    No,
    /// `y`: supports binding but says the server offered none.
    NotOffered,
    /// `p=tls-exporter` with these bytes.
    Exporter(&'a [u8]),
}

/// A SCRAM exchange as a client (RFC 5802 section 3). `Ok` when the server succeeded and its
/// signature verified; `Err` with the server's failure otherwise.
async fn scram_client(
    tls: &mut Tls,
    mechanism: &str,
    username: &str,
    password: &str,
    binding: Binding<'_>,
) -> Result<(), String> {
    use base64::Engine;
    use tidings_core::scram::ScramHash;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let hash = if mechanism.starts_with("SCRAM-SHA-256") {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let (gs2, data): (&str, &[u8]) = match binding {
        Binding::No => ("n,,", &[]),
        Binding::NotOffered => ("y,,", &[]),
        Binding::Exporter(data) => ("p=tls-exporter,,", data),
    };
    let bare = format!("n={username},r=clientnonce0123");
    write(
        tls,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            b64.encode(format!("{gs2}{bare}"))
        ),
    )
    .await;
    let answer = read_sasl(tls).await;
    if answer.contains("<failure") {
        return Err(answer);
    }
    let server_first =
        String::from_utf8(b64.decode(content(&answer, "challenge")).unwrap()).unwrap();
    let field = |key: &str| {
        server_first
            .split(',')
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {server_first}"))
            .to_owned()
    };
    let nonce = field("r=");
    assert!(nonce.starts_with("clientnonce0123") && nonce.len() > 15);
    let salt = b64.decode(field("s=")).unwrap();
    let iterations: u32 = field("i=").parse().unwrap();
    let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(data);
    let without_proof = format!("c={},r={nonce}", b64.encode(&cbind));
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let (proof, server_signature) = hash.client_proof(&salted, auth_message.as_bytes());
    write(
        tls,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(format!("{without_proof},p={}", b64.encode(proof)))
        ),
    )
    .await;
    let answer = read_sasl(tls).await;
    if answer.contains("<failure") {
        return Err(answer);
    }
    let server_final = String::from_utf8(b64.decode(content(&answer, "success")).unwrap()).unwrap();
    let expected = b64.encode(server_signature);
    assert_eq!(
        server_final,
        format!("v={expected}"),
        "the server proves it knows the keys"
    );
    Ok(())
}

/// SCRAM-SHA-1 and -256, with and without `tls-exporter` channel binding: the mechanisms
/// are offered, a correct proof succeeds with a server signature the client verifies, and a
/// wrong password, a wrong binding, or a downgrade (`y` while -PLUS was offered) fail.
#[tokio::test]
async fn scram_with_and_without_channel_binding() {
    let setup = setup(|_| {}).await;
    setup.server.user("alice").await;
    let (mut tls, features) = starttls(&setup).await;
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
    ] {
        assert!(
            features.contains(&format!("<mechanism>{m}</mechanism>")),
            "{m} in {features}"
        );
    }
    assert!(
        features.contains("<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/>"),
        "{features}"
    );
    let exporter = client_exporter(&tls);
    scram_client(
        &mut tls,
        "SCRAM-SHA-256-PLUS",
        "alice",
        PASSWORD,
        Binding::Exporter(&exporter),
    )
    .await
    .unwrap();

    for (mechanism, password, binding, condition) in [
        ("SCRAM-SHA-256", "wrong password", 0, "not-authorized"),
        ("SCRAM-SHA-1", "wrong password", 0, "not-authorized"),
        ("SCRAM-SHA-256-PLUS", PASSWORD, 1, "not-authorized"),
        ("SCRAM-SHA-256", PASSWORD, 2, "not-authorized"),
        ("SCRAM-SHA-256", PASSWORD, 3, "malformed-request"),
    ] {
        let (mut tls, _) = starttls(&setup).await;
        let exporter = client_exporter(&tls);
        let other = vec![0u8; 32];
        let binding = match binding {
            0 => Binding::No,
            1 => Binding::Exporter(&other),
            2 => Binding::NotOffered,
            _ => Binding::Exporter(&exporter),
        };
        let failure = scram_client(&mut tls, mechanism, "alice", password, binding)
            .await
            .expect_err(mechanism);
        assert!(
            failure.contains(&format!("<{condition}/>")),
            "{mechanism} {condition}: {failure}"
        );
    }
    for mechanism in ["SCRAM-SHA-1", "SCRAM-SHA-256"] {
        let (mut tls, _) = starttls(&setup).await;
        scram_client(&mut tls, mechanism, "alice", PASSWORD, Binding::No)
            .await
            .unwrap();
        // The stream restarts and a resource binds, as after PLAIN.
        write(&mut tls, HEADER).await;
        let features = read_until(&mut tls, "</stream:features>").await;
        assert!(features.contains("xmpp-bind"), "{features}");
    }
    // An unknown user gets a challenge like anyone (no user enumeration) and then fails.
    let (mut tls, _) = starttls(&setup).await;
    let failure = scram_client(&mut tls, "SCRAM-SHA-256", "nobody", PASSWORD, Binding::No)
        .await
        .unwrap_err();
    assert!(failure.contains("<not-authorized/>"), "{failure}");
}

/// An account without SCRAM credentials (made before they were stored) cannot use SCRAM but
/// signs in with PLAIN, which stores them; a password change replaces them, so the old
/// password no longer works with SCRAM and the new one does.
#[tokio::test]
async fn scram_credentials_follow_the_password() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let store = setup.server.core().store().clone();
    for algorithm in ["SHA-1", "SHA-256"] {
        let stored = store
            .scram_credential(alice.user_id, algorithm)
            .await
            .unwrap()
            .expect("registration stores SCRAM credentials");
        assert_eq!(stored.iterations, 4096);
    }
    store
        .set_scram_credentials(alice.user_id, Vec::new())
        .await
        .unwrap();
    let (mut tls, _) = starttls(&setup).await;
    scram_client(&mut tls, "SCRAM-SHA-256", "alice", PASSWORD, Binding::No)
        .await
        .unwrap_err();
    // PLAIN proves the password and the credentials are made.
    drop(sign_in(&setup, "alice", "plain").await);
    let (mut tls, _) = starttls(&setup).await;
    scram_client(&mut tls, "SCRAM-SHA-256", "alice", PASSWORD, Binding::No)
        .await
        .unwrap();

    let new_password = "a brand new passphrase";
    alice
        .api
        .change_password(PASSWORD, new_password)
        .await
        .unwrap();
    let (mut tls, _) = starttls(&setup).await;
    scram_client(&mut tls, "SCRAM-SHA-1", "alice", PASSWORD, Binding::No)
        .await
        .unwrap_err();
    let (mut tls, _) = starttls(&setup).await;
    scram_client(&mut tls, "SCRAM-SHA-1", "alice", new_password, Binding::No)
        .await
        .unwrap();
    // Credentials that outlived their password (a path that set the hash without refreshing
    // them) are not used: they are bound to the argon2 hash they were made with.
    let current = store.user_by_id(alice.user_id).await.unwrap().unwrap();
    store
        .set_password_hash(
            alice.user_id,
            "$argon2id$v=19$m=256,t=1,p=1$c29tZXNhbHQ$aGFzaA",
        )
        .await
        .unwrap();
    let (mut tls, _) = starttls(&setup).await;
    scram_client(&mut tls, "SCRAM-SHA-1", "alice", new_password, Binding::No)
        .await
        .unwrap_err();
    store
        .set_password_hash(alice.user_id, &current.password_hash)
        .await
        .unwrap();
}

/// Sends a MAM query on the archive with Bob and returns everything up to its `</iq>`.
async fn mam_query(tls: &mut Tls, id: &str, fields: &str, set: &str) -> String {
    let fields = format!("<field var='with'><value>bob@localhost</value></field>{fields}");
    archive_query(tls, id, &fields, set).await
}

/// Sends a MAM query on the user's archive with the given form fields and returns everything
/// up to its `</iq>`.
async fn archive_query(tls: &mut Tls, id: &str, fields: &str, set: &str) -> String {
    write(
        tls,
        &format!(
            "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='q-{id}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             {fields}</x>\
             <set xmlns='http://jabber.org/protocol/rsm'>{set}</set></query></iq>"
        ),
    )
    .await;
    // The results come first, then the `<iq type='result'>` that ends with `</fin></iq>`.
    let text = read_until(tls, "</fin></iq>").await;
    assert!(text.contains(&format!("type='result' id='{id}'")), "{text}");
    text
}

/// The bodies of the MAM results in `answer`, in order, and the `<last>` id.
fn mam_bodies(answer: &str) -> (Vec<String>, Option<String>) {
    let bodies = answer
        .split("<result ")
        .skip(1)
        .map(|r| content(r, "body").to_owned())
        .collect();
    let last = answer
        .contains("<last>")
        .then(|| content(answer, "last").to_owned());
    (bodies, last)
}

/// MAM (XEP-0313) over the history of a direct conversation: pages forward with `after`, the
/// last page with an empty `before`, `fin complete` at the ends, a `start` bound, and the
/// feature advertised on the account.
#[tokio::test]
async fn mam_pages_through_a_direct_conversation() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let bob_ws = setup.server.connect(&bob).await;
    for i in 0..5 {
        bob_ws
            .send_text(conversation, &format!("m{i}"), &format!("message {i}"))
            .await
            .unwrap();
    }
    let mut tls = sign_in(&setup, "alice", "mam").await;
    write(
        &mut tls,
        "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let disco = read_until(&mut tls, "</iq>").await;
    assert!(disco.contains("var='urn:xmpp:mam:2'"), "{disco}");

    let first = mam_query(&mut tls, "p1", "", "<max>2</max>").await;
    let (bodies, last) = mam_bodies(&first);
    assert_eq!(bodies, ["message 0", "message 1"], "{first}");
    assert!(!first.contains("complete='true'"), "{first}");
    let second = mam_query(
        &mut tls,
        "p2",
        "",
        &format!("<max>2</max><after>{}</after>", last.unwrap()),
    )
    .await;
    let (bodies, last) = mam_bodies(&second);
    assert_eq!(bodies, ["message 2", "message 3"], "{second}");
    let third = mam_query(
        &mut tls,
        "p3",
        "",
        &format!("<max>2</max><after>{}</after>", last.unwrap()),
    )
    .await;
    let (bodies, _) = mam_bodies(&third);
    assert_eq!(bodies, ["message 4"], "{third}");
    assert!(third.contains("complete='true'"), "{third}");

    let latest = mam_query(&mut tls, "p4", "", "<max>2</max><before/>").await;
    let (bodies, _) = mam_bodies(&latest);
    assert_eq!(bodies, ["message 3", "message 4"], "{latest}");
    assert!(!latest.contains("complete='true'"), "{latest}");

    // The result ids are the server's message ids, as in the history.
    let history = alice.api.history(conversation, None, 10).await.unwrap();
    assert!(
        latest.contains(&format!("id='{}'", history.messages[4].id)),
        "{latest}"
    );
    let future = mam_query(
        &mut tls,
        "p5",
        "<field var='start'><value>2100-01-01T00:00:00Z</value></field>",
        "",
    )
    .await;
    assert_eq!(mam_bodies(&future).0, Vec::<String>::new(), "{future}");
    assert!(future.contains("complete='true'"), "{future}");
}

/// MAM without `with` reads the whole archive: every direct conversation merged by message id,
/// paged forward and backward, without the group's messages; a client catching up `after` its
/// last id gets exactly what came since.
#[tokio::test]
async fn mam_reads_the_whole_archive_merged_by_id() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let carol = setup.server.user("carol").await;
    let with_bob = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let with_carol = carol.api.open_direct(alice.user_id).await.unwrap().id;
    let group = bob
        .api
        .create_group("Team", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let bob_ws = setup.server.connect(&bob).await;
    let carol_ws = setup.server.connect(&carol).await;
    let alice_ws = setup.server.connect(&alice).await;
    // Interleaved, so the merged order differs from either conversation's.
    bob_ws.send_text(with_bob, "b0", "one").await.unwrap();
    carol_ws.send_text(with_carol, "c0", "two").await.unwrap();
    bob_ws.send_text(group, "g0", "in the group").await.unwrap();
    alice_ws.send_text(with_carol, "a0", "three").await.unwrap();
    bob_ws.send_text(with_bob, "b1", "four").await.unwrap();
    carol_ws.send_text(with_carol, "c1", "five").await.unwrap();

    let mut tls = sign_in(&setup, "alice", "archive").await;
    let first = archive_query(&mut tls, "w1", "", "<max>3</max>").await;
    let (bodies, last) = mam_bodies(&first);
    assert_eq!(bodies, ["one", "two", "three"], "{first}");
    assert!(!first.contains("complete='true'"), "{first}");
    // Each result names its conversation's peer.
    assert!(
        first.contains("from='bob@localhost' to='alice@localhost'"),
        "{first}"
    );
    assert!(
        first.contains("from='alice@localhost' to='carol@localhost'"),
        "{first}"
    );
    let second = archive_query(
        &mut tls,
        "w2",
        "",
        &format!("<max>3</max><after>{}</after>", last.unwrap()),
    )
    .await;
    let (bodies, _) = mam_bodies(&second);
    assert_eq!(bodies, ["four", "five"], "{second}");
    assert!(second.contains("complete='true'"), "{second}");

    let latest = archive_query(&mut tls, "w3", "", "<max>2</max><before/>").await;
    let (bodies, _) = mam_bodies(&latest);
    assert_eq!(bodies, ["four", "five"], "{latest}");
    assert!(!latest.contains("complete='true'"), "{latest}");
    let earlier = archive_query(
        &mut tls,
        "w4",
        "",
        &format!("<max>5</max><before>{}</before>", content(&latest, "first")),
    )
    .await;
    let (bodies, _) = mam_bodies(&earlier);
    assert_eq!(bodies, ["one", "two", "three"], "{earlier}");
    assert!(earlier.contains("complete='true'"), "{earlier}");

    // Catching up: nothing new, then exactly the message that came since.
    let newest = content(&latest, "last").to_owned();
    let idle = archive_query(&mut tls, "w5", "", &format!("<after>{newest}</after>")).await;
    assert_eq!(mam_bodies(&idle).0, Vec::<String>::new(), "{idle}");
    assert!(idle.contains("complete='true'"), "{idle}");
    bob_ws.send_text(with_bob, "b2", "six").await.unwrap();
    let since = archive_query(&mut tls, "w6", "", &format!("<after>{newest}</after>")).await;
    assert_eq!(mam_bodies(&since).0, ["six"], "{since}");
    write(
        &mut tls,
        "<iq type='set' id='w7'><query xmlns='urn:xmpp:mam:2'>\
         <set xmlns='http://jabber.org/protocol/rsm'><after>not-an-id</after></set></query></iq>",
    )
    .await;
    let unknown = read_until(&mut tls, "</iq>").await;
    assert!(unknown.contains("type='error' id='w7'"), "{unknown}");
    assert!(unknown.contains("<item-not-found"), "{unknown}");
}

/// Replies (XEP-0461) both ways: an XMPP reply becomes a core reply to the message its id
/// names, without the quote its fallback marks; a native reply reaches the XMPP client naming
/// the answered message by the id it knows, with a quoting fallback.
#[tokio::test]
async fn replies_map_to_the_core_both_ways() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    pc.send("<presence/>").await;
    pc.expect(&["<presence", "from='alice@localhost/pc'"]).await;
    let bob_ws = setup.server.connect(&bob).await;
    bob_ws
        .send_text(conversation, "b1", "Shall we bake a cake?")
        .await
        .unwrap();
    pc.expect(&["<body>Shall we bake a cake?</body>"]).await;

    let quote = "> bob:\n> Shall we bake a cake?\n";
    pc.send(&format!(
        "<message type='chat' to='bob@localhost' id='a1'><body>{}Yes, chocolate!</body>\
         <reply xmlns='urn:xmpp:reply:0' to='bob@localhost' id='b1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='{}'/></fallback></message>",
        quote.replace('>', "&gt;"),
        quote.chars().count()
    ))
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let history = loop {
        let history = bob.api.history(conversation, None, 10).await.unwrap();
        if history.messages.len() == 2 || tokio::time::Instant::now() > deadline {
            break history;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let [asked, answer] = &history.messages[..] else {
        panic!("{history:?}");
    };
    assert_eq!(answer.reply_to, Some(asked.seq), "{answer:?}");
    assert_eq!(
        answer.body,
        tidings_proto::MessageBody::Text {
            text: "Yes, chocolate!".into()
        }
    );

    // A native reply names alice's message by her id, with a quote for older clients.
    bob.api
        .send_related(
            conversation,
            "b2",
            tidings_proto::MessageBody::Text {
                text: "Great".into(),
            },
            tidings_proto::Relations {
                reply_to: Some(answer.seq),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let reply = pc
        .expect(&["<message", "urn:xmpp:reply:0", "Great</body>"])
        .await;
    assert!(reply.contains("to='alice@localhost' id='a1'"), "{reply}");
    assert!(reply.contains("for='urn:xmpp:reply:0'"), "{reply}");
    assert!(
        reply.contains("&gt; alice:") || reply.contains("> alice:"),
        "{reply}"
    );
}

/// A client stream read stanza by stanza: stanzas read while waiting for another are kept, so
/// interleaved presences and results can be expected in any order.
struct Stanzas {
    tls: Tls,
    buf: String,
    seen: Vec<String>,
}

impl Stanzas {
    fn new(tls: Tls) -> Stanzas {
        Stanzas {
            tls,
            buf: String::new(),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        write(&mut self.tls, text).await;
    }

    /// The first complete top-level stanza in the buffer, taken out of it.
    fn take_stanza(&mut self) -> Option<String> {
        let start = self.buf.find('<')?;
        let rest = &self.buf[start..];
        let name_end = rest.find([' ', '>', '/'])?;
        let name = rest[1..name_end].to_owned();
        let open_end = rest.find('>')?;
        let end = if rest[..open_end].ends_with('/') {
            open_end + 1
        } else {
            rest.find(&format!("</{name}>"))? + name.len() + 3
        };
        let stanza = rest[..end].to_owned();
        self.buf.drain(..start + end);
        Some(stanza)
    }

    /// The next stanza that contains every one of `needles`, from those already read first.
    async fn expect(&mut self, needles: &[&str]) -> String {
        let matches = |s: &str| needles.iter().all(|n| s.contains(n));
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = self.seen.iter().position(|s| matches(s)) {
                return self.seen.remove(i);
            }
            if let Some(stanza) = self.take_stanza() {
                self.seen.push(stanza);
                continue;
            }
            let n = tokio::time::timeout_at(deadline, self.tls.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no stanza with {needles:?}; got {:#?}", self.seen))
                .unwrap_or(0);
            assert!(n > 0, "closed before {needles:?}; got {:#?}", self.seen);
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Everything unread up to and including `needle`, raw (for answers whose stanzas nest
    /// `<message>`, such as MAM results).
    async fn raw_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(at) = self.buf.find(needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            let n = tokio::time::timeout_at(deadline, self.tls.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?}; got {}", self.buf))
                .unwrap_or(0);
            assert!(n > 0, "closed before {needle:?}; got {}", self.buf);
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Sends an IQ and returns its answer (matched by id).
    async fn iq(&mut self, id: &str, iq: &str) -> String {
        self.send(iq).await;
        self.expect(&["<iq ", &format!("id='{id}'")]).await
    }

    /// Joins a room and waits for the subject that ends the join.
    async fn join(&mut self, room: &str, nick: &str) {
        self.send(&format!(
            "<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
        self.expect(&["<subject>"]).await;
        // The join's presences are not what later expectations look for.
        self.seen.clear();
    }
}

fn admin_iq(id: &str, room: &str, kind: &str, items: &str) -> String {
    format!(
        "<iq type='{kind}' id='{id}' to='{room}'>\
         <query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
    )
}

/// Moderation through `muc#admin` (XEP-0045 §8, §9) is the core's group management: voice is
/// the mute, a kick removes the member, affiliations are Tidings roles, outcast is the ban.
/// Refusals are the core's, changes are seen by the web client through the REST API, and every
/// occupant joined over XMPP sees the resulting presence with its status code, also for a
/// change made on the web.
#[tokio::test]
async fn muc_admin_moderates_through_the_core() {
    let setup = setup(|_| {}).await;
    let bob = setup.server.user("bob").await;
    let alice = setup.server.user("alice").await;
    let carol = setup.server.user("carol").await;
    let dave = setup.server.user("dave").await;
    let group = bob
        .api
        .create_group("Team", &[alice.user_id, carol.user_id, dave.user_id])
        .await
        .unwrap()
        .id;
    let room = format!("{group}@conference.localhost");
    let mut owner = Stanzas::new(sign_in(&setup, "bob", "mod").await);
    owner.join(&room, "bob").await;
    let mut member = Stanzas::new(sign_in(&setup, "alice", "mod").await);
    member.join(&room, "alice").await;
    // Carol and dave are occupants too: presence is only for devices in the room.
    let mut carol_xmpp = Stanzas::new(sign_in(&setup, "carol", "mod").await);
    carol_xmpp.join(&room, "carol").await;
    let mut dave_xmpp = Stanzas::new(sign_in(&setup, "dave", "mod").await);
    dave_xmpp.join(&room, "dave").await;

    // A member without the right to mute is refused by the core's policy.
    let refused = member
        .iq(
            "m0",
            &admin_iq("m0", &room, "set", "<item nick='carol' role='visitor'/>"),
        )
        .await;
    assert!(refused.contains("type='error'"), "{refused}");
    assert!(refused.contains("<forbidden "), "{refused}");
    let members = bob.api.members(group).await.unwrap();
    let muted = |members: &[tidings_proto::rest::Member], id| {
        members
            .iter()
            .find(|m| m.user_id == id)
            .unwrap()
            .muted_until
            .is_some()
    };
    assert!(!muted(&members, carol.user_id));

    // Revoking voice mutes; both occupants see carol as a visitor.
    let done = owner
        .iq(
            "m1",
            &admin_iq("m1", &room, "set", "<item nick='carol' role='visitor'/>"),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let carol_from = format!("from='{room}/carol'");
    for client in [&mut owner, &mut member] {
        client.expect(&[&carol_from, "role='visitor'"]).await;
    }
    assert!(muted(&bob.api.members(group).await.unwrap(), carol.user_id));
    let visitors = owner
        .iq(
            "l1",
            &admin_iq("l1", &room, "get", "<item role='visitor'/>"),
        )
        .await;
    assert!(visitors.contains("nick='carol'"), "{visitors}");
    assert!(!visitors.contains("nick='dave'"), "{visitors}");

    // Granting voice lifts the mute.
    let done = owner
        .iq(
            "m2",
            &admin_iq(
                "m2",
                &room,
                "set",
                "<item nick='carol' role='participant'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    member.expect(&[&carol_from, "role='participant'"]).await;
    assert!(!muted(
        &bob.api.members(group).await.unwrap(),
        carol.user_id
    ));

    // The admin affiliation is the Tidings admin role.
    let done = owner
        .iq(
            "a1",
            &admin_iq(
                "a1",
                &room,
                "set",
                "<item jid='alice@localhost' affiliation='admin'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let own = member
        .expect(&[&format!("from='{room}/alice'"), "affiliation='admin'"])
        .await;
    assert!(own.contains("role='moderator'"), "{own}");
    assert!(own.contains("code='110'"), "{own}");
    let role_of = |members: &[tidings_proto::rest::Member], id| {
        members.iter().find(|m| m.user_id == id).map(|m| m.role)
    };
    let members = carol.api.members(group).await.unwrap();
    assert_eq!(
        role_of(&members, alice.user_id),
        Some(tidings_proto::rest::Role::Admin)
    );
    let admins = member
        .iq(
            "l2",
            &admin_iq("l2", &room, "get", "<item affiliation='admin'/>"),
        )
        .await;
    assert!(admins.contains("jid='alice@localhost'"), "{admins}");
    // An admin still cannot act on the owner: the core's rank rule.
    let refused = member
        .iq(
            "m3",
            &admin_iq("m3", &room, "set", "<item nick='bob' role='visitor'/>"),
        )
        .await;
    assert!(refused.contains("<forbidden "), "{refused}");

    // A mute made on the web reaches XMPP occupants the same way.
    bob.api.mute(group, dave.user_id, 60).await.unwrap();
    member
        .expect(&[&format!("from='{room}/dave'"), "role='visitor'"])
        .await;

    // A kick takes dave's device out of the room: status 307 with the actor, for everyone in
    // it and for dave himself; he stays a member (removal is affiliation `none`, below).
    let done = owner
        .iq(
            "k1",
            &admin_iq("k1", &room, "set", "<item nick='dave' role='none'/>"),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let dave_from = format!("from='{room}/dave'");
    for client in [&mut owner, &mut member] {
        let gone = client
            .expect(&[&dave_from, "type='unavailable'", "code='307'"])
            .await;
        assert!(gone.contains("<actor nick='bob'/>"), "{gone}");
    }
    let own = dave_xmpp
        .expect(&[&dave_from, "type='unavailable'", "code='307'"])
        .await;
    assert!(own.contains("code='110'"), "{own}");
    let members = bob.api.members(group).await.unwrap();
    assert_eq!(
        role_of(&members, dave.user_id),
        Some(tidings_proto::rest::Role::Member)
    );

    // Outcast is the core's ban: status 301 with the reason, and the ban list on both sides.
    let done = member
        .iq(
            "b1",
            &admin_iq(
                "b1",
                &room,
                "set",
                "<item jid='carol@localhost' affiliation='outcast'><reason>spam</reason></item>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let banned = owner
        .expect(&[&carol_from, "type='unavailable'", "code='301'"])
        .await;
    assert!(banned.contains("affiliation='outcast'"), "{banned}");
    assert!(banned.contains("<reason>spam</reason>"), "{banned}");
    let bans = bob.api.bans(group).await.unwrap();
    assert_eq!(bans.users.len(), 1);
    assert_eq!(bans.users[0].user_id, carol.user_id);
    let outcasts = owner
        .iq(
            "l3",
            &admin_iq("l3", &room, "get", "<item affiliation='outcast'/>"),
        )
        .await;
    assert!(outcasts.contains("jid='carol@localhost'"), "{outcasts}");
    assert!(outcasts.contains("<reason>spam</reason>"), "{outcasts}");
    // Affiliation none on a banned non-member lifts the ban.
    let done = owner
        .iq(
            "b2",
            &admin_iq(
                "b2",
                &room,
                "set",
                "<item jid='carol@localhost' affiliation='none'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    assert!(bob.api.bans(group).await.unwrap().users.is_empty());

    // Removing alice's affiliation removes her; her own client learns it with 110.
    let done = owner
        .iq(
            "r1",
            &admin_iq(
                "r1",
                &room,
                "set",
                "<item jid='alice@localhost' affiliation='none'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let own = member
        .expect(&[&format!("from='{room}/alice'"), "type='unavailable'"])
        .await;
    assert!(own.contains("code='307'"), "{own}");
    assert!(own.contains("code='110'"), "{own}");
    let members = bob.api.members(group).await.unwrap();
    assert_eq!(role_of(&members, alice.user_id), None);
}

/// Rooms by name and their occupants (XEP-0045 §7, §10.1): joining a name no group holds
/// creates a group owned by the joiner (status 201); occupants are the devices in the room,
/// each under a nick unique per user that may not be another member's username; joins, nick
/// changes (303) and departures (with their status) reach the other occupants; a private
/// message to an occupant is a direct message; self-ping (XEP-0410) answers while joined; a
/// kick (XEP-0045 §8.2) takes the devices out but keeps the membership; a moderator's
/// retraction (XEP-0425) is the core's deletion; a temporary room is dissolved when its last
/// occupant leaves, which frees the name.
#[tokio::test]
async fn rooms_by_name_with_occupants_nicks_and_private_messages() {
    let setup = setup(|_| {}).await;
    let bob = setup.server.user("bob").await;
    let alice = setup.server.user("alice").await;
    let carol = setup.server.user("carol").await;
    let room = "lounge@conference.localhost";
    let mut owner = Stanzas::new(sign_in(&setup, "bob", "room").await);
    owner
        .send(&format!(
            "<presence to='{room}/bobby'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    let created = owner
        .expect(&[&format!("from='{room}/bobby'"), "code='110'"])
        .await;
    assert!(created.contains("code='201'"), "{created}");
    assert!(created.contains("affiliation='owner'"), "{created}");
    owner.expect(&["<subject>lounge</subject>"]).await;
    let groups = bob.api.conversations().await.unwrap().conversations;
    let group = groups
        .iter()
        .find(|c| c.title == "lounge")
        .expect("the room is a group")
        .id;

    // A non-member cannot enter; the owner adds alice through the affiliation list.
    let mut outsider = Stanzas::new(sign_in(&setup, "carol", "room").await);
    outsider
        .send(&format!(
            "<presence to='{room}/c'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    outsider.expect(&["<registration-required "]).await;
    let done = owner
        .iq(
            "a1",
            &admin_iq(
                "a1",
                room,
                "set",
                "<item jid='alice@localhost' affiliation='member'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");

    // Alice joins (the name is case-insensitive) and sees bob under his nick.
    let mut member = Stanzas::new(sign_in(&setup, "alice", "room").await);
    member
        .send(
            "<presence to='Lounge@conference.localhost/al'>             <x xmlns='http://jabber.org/protocol/muc'/></presence>",
        )
        .await;
    let bobby = member.expect(&[&format!("from='{room}/bobby'")]).await;
    // Occupants carry their photo hash (XEP-0153; bob has no avatar: empty).
    assert!(bobby.contains("vcard-temp:x:update"), "{bobby}");
    let own = member
        .expect(&[&format!("from='{room}/al'"), "code='110'"])
        .await;
    assert!(!own.contains("code='201'"), "{own}");
    member.expect(&["<subject>"]).await;
    owner
        .expect(&[&format!("from='{room}/al'"), "jid='alice@localhost'"])
        .await;
    assert_eq!(
        bob.api
            .members(group)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.user_id == alice.user_id)
            .count(),
        1
    );

    // An occupant's vCard, asked through the room, is the vCard of the user behind the nick.
    let card = member
        .iq(
            "vc1",
            &format!("<iq type='get' id='vc1' to='{room}/bobby'><vCard xmlns='vcard-temp'/></iq>"),
        )
        .await;
    assert!(card.contains("type='result'"), "{card}");
    assert!(card.contains(&format!("from='{room}/bobby'")), "{card}");
    assert!(card.contains("<NICKNAME>bob</NICKNAME>"), "{card}");
    let nobody = member
        .iq(
            "vc2",
            &format!("<iq type='get' id='vc2' to='{room}/nobody'><vCard xmlns='vcard-temp'/></iq>"),
        )
        .await;
    assert!(nobody.contains("<item-not-found "), "{nobody}");

    // Another occupant's nick, and another member's username, are taken.
    for taken in ["bobby", "bob"] {
        member
            .send(&format!("<presence to='{room}/{taken}'/>"))
            .await;
        member.expect(&["type='error'", "<conflict "]).await;
    }
    // A nick change: 303 with the new nick, then the new presence, for both.
    member.send(&format!("<presence to='{room}/ally'/>")).await;
    let old = member
        .expect(&[&format!("from='{room}/al'"), "code='303'"])
        .await;
    assert!(
        old.contains("code='110'") && old.contains("nick='ally'"),
        "{old}"
    );
    member
        .expect(&[&format!("from='{room}/ally'"), "code='110'"])
        .await;
    let old = owner
        .expect(&[&format!("from='{room}/al'"), "code='303'"])
        .await;
    assert!(old.contains("nick='ally'"), "{old}");
    owner.expect(&[&format!("from='{room}/ally'")]).await;
    // A presence update under the same nick reaches the others with its show and status
    // (XEP-0045 7.7).
    member
        .send(&format!(
            "<presence to='{room}/ally'><show>away</show><status>at lunch</status></presence>"
        ))
        .await;
    let update = owner
        .expect(&[&format!("from='{room}/ally'"), "<show>away</show>"])
        .await;
    assert!(update.contains("<status>at lunch</status>"), "{update}");
    assert!(!update.contains("type='unavailable'"), "{update}");

    // Group messages come from the sender's nick; a web member's from their username.
    member
        .send(&format!(
            "<message to='{room}' type='groupchat' id='g1'><body>hello room</body></message>"
        ))
        .await;
    owner
        .expect(&[&format!("from='{room}/ally'"), "<body>hello room</body>"])
        .await;
    bob.api.add_members(group, &[carol.user_id]).await.unwrap();
    carol
        .api
        .send(group, "w1", text("from the web"))
        .await
        .unwrap();
    member
        .expect(&[&format!("from='{room}/carol'"), "<body>from the web</body>"])
        .await;
    // Whoever enters later sees the others' show and status: the core keeps them with the
    // occupant.
    outsider
        .send(&format!(
            "<presence to='{room}/carol'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    let ally = outsider.expect(&[&format!("from='{room}/ally'")]).await;
    assert!(
        ally.contains("<show>away</show>") && ally.contains("<status>at lunch</status>"),
        "{ally}"
    );
    let bobby = outsider.expect(&[&format!("from='{room}/bobby'")]).await;
    assert!(!bobby.contains("<show>"), "{bobby}");
    outsider
        .expect(&[&format!("from='{room}/carol'"), "code='110'"])
        .await;
    // Carol leaves again: the room is temporary and must empty below.
    outsider
        .send(&format!("<presence to='{room}/carol' type='unavailable'/>"))
        .await;
    outsider
        .expect(&[&format!("from='{room}/carol'"), "type='unavailable'"])
        .await;

    // A private message to an occupant is a direct message between the two users.
    member
        .send(&format!(
            "<message to='{room}/bobby' type='chat' id='p1'><body>psst</body></message>"
        ))
        .await;
    owner
        .expect(&["from='alice@localhost", "<body>psst</body>"])
        .await;
    let direct = alice.api.open_direct(bob.user_id).await.unwrap().id;
    let history = bob.api.history(direct, None, 10).await.unwrap();
    assert!(
        history.messages.iter().any(|m| m.body == text("psst")),
        "{history:?}"
    );

    // Self-ping: answered while joined under that nick.
    let pong = member
        .iq(
            "sp1",
            &format!("<iq type='get' id='sp1' to='{room}/ally'><ping xmlns='urn:xmpp:ping'/></iq>"),
        )
        .await;
    assert!(pong.contains("type='result'"), "{pong}");
    let stale = member
        .iq(
            "sp2",
            &format!(
                "<iq type='get' id='sp2' to='{room}/nobody'><ping xmlns='urn:xmpp:ping'/></iq>"
            ),
        )
        .await;
    assert!(stale.contains("<not-acceptable "), "{stale}");

    // A moderator's retraction deletes alice's message through the core.
    let reflected = member.expect(&["id='g1'", "<stanza-id"]).await;
    let stanza_id = attr_value(&reflected[reflected.find("<stanza-id").unwrap()..], "id");
    let done = owner
        .iq(
            "md1",
            &format!(
                "<iq type='set' id='md1' to='{room}'>                 <moderate id='{stanza_id}' xmlns='urn:xmpp:message-moderate:1'>                 <retract xmlns='urn:xmpp:message-retract:1'/></moderate></iq>"
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let notice = member.expect(&["<moderated", "message-retract:1"]).await;
    assert!(notice.contains(&format!("id='{stanza_id}'")), "{notice}");
    assert!(notice.contains(&format!("by='{room}/bobby'")), "{notice}");
    let history = bob.api.history(group, None, 20).await.unwrap();
    assert!(
        history
            .messages
            .iter()
            .any(|m| m.client_msg_id == "g1" && m.body == tidings_proto::MessageBody::Deleted {}),
        "{history:?}"
    );

    // A kick takes alice's device out; she stays a member and may come back.
    let done = owner
        .iq(
            "k1",
            &admin_iq("k1", room, "set", "<item nick='ally' role='none'/>"),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let kicked = member
        .expect(&[&format!("from='{room}/ally'"), "code='307'"])
        .await;
    assert!(kicked.contains("code='110'"), "{kicked}");
    assert!(kicked.contains("<actor nick='bobby'/>"), "{kicked}");
    owner
        .expect(&[&format!("from='{room}/ally'"), "code='307'"])
        .await;
    assert!(
        bob.api
            .members(group)
            .await
            .unwrap()
            .iter()
            .any(|m| m.user_id == alice.user_id)
    );
    member
        .send(&format!(
            "<presence to='{room}/ally'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    member
        .expect(&[&format!("from='{room}/ally'"), "code='110'"])
        .await;
    owner.expect(&[&format!("from='{room}/ally'")]).await;

    // The owner makes the room temporary; alice leaves with a status, then bob leaves, and the
    // group is dissolved: the name is free for a new room.
    let owner_form = format!(
        "<iq type='set' id='t1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>         <x xmlns='jabber:x:data' type='submit'>         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>         <field var='muc#roomconfig_persistentroom'><value>0</value></field></x></query></iq>"
    );
    let done = owner.iq("t1", &owner_form).await;
    assert!(done.contains("type='result'"), "{done}");
    member
        .send(&format!(
            "<presence to='{room}/ally' type='unavailable'><status>bye now</status></presence>"
        ))
        .await;
    let gone = owner
        .expect(&[&format!("from='{room}/ally'"), "type='unavailable'"])
        .await;
    assert!(gone.contains("<status>bye now</status>"), "{gone}");
    owner
        .send(&format!("<presence to='{room}/bobby' type='unavailable'/>"))
        .await;
    owner
        .expect(&[
            &format!("from='{room}/bobby'"),
            "type='unavailable'",
            "code='110'",
        ])
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = bob.api.group_info(group).await;
        if info.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dissolved: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    member
        .send(&format!(
            "<presence to='{room}/first'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    let again = member
        .expect(&[&format!("from='{room}/first'"), "code='110'"])
        .await;
    assert!(again.contains("code='201'"), "{again}");
    assert!(again.contains("affiliation='owner'"), "{again}");
}

/// Room configuration (`muc#owner`, XEP-0045 §10) and subject changes are the group's title:
/// the form carries it and the fixed features, a new room name renames the group through the
/// core, a subject message does too, occupants get the new subject, and a member without the
/// right to edit the group is refused.
#[tokio::test]
async fn muc_owner_config_and_subject_rename_the_group() {
    let setup = setup(|_| {}).await;
    let bob = setup.server.user("bob").await;
    let alice = setup.server.user("alice").await;
    let group = bob
        .api
        .create_group("Team", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let room = format!("{group}@conference.localhost");
    let mut owner = Stanzas::new(sign_in(&setup, "bob", "cfg").await);
    owner.join(&room, "bob").await;
    let mut member = Stanzas::new(sign_in(&setup, "alice", "cfg").await);
    member.join(&room, "alice").await;
    let owner_iq = |id: &str, kind: &str, body: &str| {
        format!(
            "<iq type='{kind}' id='{id}' to='{room}'>\
             <query xmlns='http://jabber.org/protocol/muc#owner'>{body}</query></iq>"
        )
    };
    let form = owner.iq("c1", &owner_iq("c1", "get", "")).await;
    assert!(form.contains("var='muc#roomconfig_roomname'"), "{form}");
    assert!(form.contains("<value>Team</value>"), "{form}");
    assert!(form.contains("var='muc#roomconfig_membersonly'"), "{form}");

    let submit = |name: &str, extra: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_roomname'><value>{name}</value></field>{extra}</x>"
        )
    };
    // Features a group cannot change are refused, and nothing is renamed.
    let refused = owner
        .iq(
            "c2",
            &owner_iq(
                "c2",
                "set",
                &submit(
                    "Other",
                    "<field var='muc#roomconfig_membersonly'><value>0</value></field>",
                ),
            ),
        )
        .await;
    assert!(refused.contains("<not-acceptable "), "{refused}");
    assert_eq!(bob.api.group_info(group).await.unwrap().title, "Team");

    let done = owner
        .iq("c3", &owner_iq("c3", "set", &submit("Renamed", "")))
        .await;
    assert!(done.contains("type='result'"), "{done}");
    assert_eq!(alice.api.group_info(group).await.unwrap().title, "Renamed");
    for client in [&mut owner, &mut member] {
        client
            .expect(&["<subject>Renamed</subject>", &format!("from='{room}/bob'")])
            .await;
    }

    // A member may not edit the group by default: the core refuses, as on the web.
    member
        .send(&format!(
            "<message type='groupchat' to='{room}' id='s1'><subject>Mine</subject></message>"
        ))
        .await;
    let refused = member.expect(&["id='s1'", "type='error'"]).await;
    assert!(refused.contains("<forbidden "), "{refused}");
    let refused = member
        .iq("c4", &owner_iq("c4", "set", &submit("Mine", "")))
        .await;
    assert!(refused.contains("<forbidden "), "{refused}");

    // The owner's subject change renames the group.
    owner
        .send(&format!(
            "<message type='groupchat' to='{room}' id='s2'><subject>Lunch</subject></message>"
        ))
        .await;
    member.expect(&["<subject>Lunch</subject>"]).await;
    assert_eq!(bob.api.group_info(group).await.unwrap().title, "Lunch");
}

/// The value of `attr='...'` in the first element of `text` that has it.
fn attr_value<'a>(text: &'a str, attr: &str) -> &'a str {
    let start = text
        .find(&format!("{attr}='"))
        .unwrap_or_else(|| panic!("no {attr} in {text}"))
        + attr.len()
        + 2;
    let end = start + text[start..].find('\'').unwrap();
    &text[start..end]
}

#[tokio::test]
async fn http_upload_slots_put_files_in_the_file_store() {
    let setup = setup(|c| c.upload_domain = "upload.localhost".into()).await;
    setup.server.user("alice").await;
    let mut alice = sign_in(&setup, "alice", "laptop").await;

    // Discovery: the server lists the service, which says what it is and its size limit.
    write(
        &mut alice,
        "<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    let items = read_until(&mut alice, "</iq>").await;
    assert!(items.contains("jid='upload.localhost'"), "{items}");
    write(
        &mut alice,
        "<iq type='get' id='i2' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let info = read_until(&mut alice, "</iq>").await;
    assert!(
        info.contains("category='store'") && info.contains("type='file'"),
        "{info}"
    );
    assert!(
        info.contains("<feature var='urn:xmpp:http:upload:0'/>"),
        "{info}"
    );
    let max = setup.server.config.files.max_file_bytes;
    assert!(info.contains(&format!("<value>{max}</value>")), "{info}");
    // Clients walk every listed service's items: an empty list, not an error.
    write(
        &mut alice,
        "<iq type='get' id='i3' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    let no_items = read_until(&mut alice, "</iq>").await;
    assert!(
        no_items.contains("type='result'") && !no_items.contains("<item"),
        "{no_items}"
    );

    // A slot beyond the limit is refused with the limit.
    write(
        &mut alice,
        &format!("<iq type='get' id='big' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='huge.bin' size='{}'/></iq>", max + 1),
    )
    .await;
    let refused = read_until(&mut alice, "</iq>").await;
    assert!(
        refused.contains("type='error'") && refused.contains("<file-too-large"),
        "{refused}"
    );

    // A slot, then the bytes PUT without a token, then the file from the GET URL.
    let body = "hello, xmpp";
    write(
        &mut alice,
        &format!("<iq type='get' id='s1' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='notes from me.txt' size='{}' content-type='text/plain'/></iq>", body.len()),
    )
    .await;
    let slot = read_until(&mut alice, "</iq>").await;
    assert!(
        slot.contains("type='result'") && slot.contains("<slot"),
        "{slot}"
    );
    let put = attr_value(&slot[slot.find("<put").unwrap()..], "url").replace("&amp;", "&");
    let get = attr_value(&slot[slot.find("<get").unwrap()..], "url").replace("&amp;", "&");
    assert!(put.starts_with(&setup.server.base_url), "{put}");
    let http = reqwest::Client::new();

    // The wrong size, and an altered signature, are refused and leave the slot usable.
    let short = http.put(&put).body("hello").send().await.unwrap();
    assert_eq!(short.status(), 400);
    assert_eq!(short.headers()["content-type"], "application/problem+json");
    let forged = put.replace("signature=", "signature=x");
    assert_eq!(
        http.put(&forged).body(body).send().await.unwrap().status(),
        404
    );
    // The download URL cannot upload.
    assert_eq!(
        http.put(&get).body(body).send().await.unwrap().status(),
        404
    );
    // Nothing to download before the bytes came.
    assert_eq!(http.get(&get).send().await.unwrap().status(), 404);

    let stored = http.put(&put).body(body).send().await.unwrap();
    assert_eq!(stored.status(), 201);
    let again = http.put(&put).body(body).send().await.unwrap();
    assert_eq!(again.status(), 409, "a slot is filled once");

    let fetched = http.get(&get).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().await.unwrap(), body);
    let forged_get = get.replace("signature=", "signature=x");
    assert_eq!(http.get(&forged_get).send().await.unwrap().status(), 404);
}

/// IQs to another user's full JID reach that resource with the sender's full JID as `from`,
/// and its answer comes back (XEP-0092 software version, XEP-0030 disco#info, an error); only
/// answers to IQs actually asked are routed; a native device takes part through
/// `device_signal`; an IQ to a resource that is not there, or to a user who blocked the
/// sender, gets `service-unavailable`.
#[tokio::test]
async fn iqs_between_resources_are_routed_to_the_resource_and_back() {
    use serde_json::json;
    use tidings_proto::ws::ServerFrame;
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    // They share a conversation, so alice may learn that a resource of bob's went away.
    bob.api.open_direct(alice.user_id).await.unwrap();
    let mut a = sign_in(&setup, "alice", "pc").await;
    let mut b = sign_in(&setup, "bob", "phone").await;

    // Software version, asked of bob's resource and answered by it.
    write(
        &mut a,
        "<iq type='get' id='v1' to='bob@localhost/phone'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let asked = read_until(&mut b, "</iq>").await;
    for part in [
        "type='get'",
        "id='v1'",
        "from='alice@localhost/pc'",
        "to='bob@localhost/phone'",
        "<query xmlns='jabber:iq:version'/>",
    ] {
        assert!(asked.contains(part), "{part} missing: {asked}");
    }
    write(
        &mut b,
        "<iq type='result' id='v1' to='alice@localhost/pc'><query xmlns='jabber:iq:version'>\
         <name>BobClient</name><version>1.0</version></query></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    for part in [
        "type='result'",
        "id='v1'",
        "from='bob@localhost/phone'",
        "to='alice@localhost/pc'",
        "<name>BobClient</name>",
    ] {
        assert!(answer.contains(part), "{part} missing: {answer}");
    }

    // Service discovery of the client, and an error as the answer.
    write(
        &mut a,
        "<iq type='get' id='d1' to='bob@localhost/phone'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    read_until(&mut b, "disco#info'/></iq>").await;
    write(
        &mut b,
        "<iq type='result' id='d1' to='alice@localhost/pc'>\
         <query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='client' type='phone' name='BobClient'/>\
         <feature var='jabber:iq:version'/></query></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    assert!(
        answer.contains("id='d1'") && answer.contains("<identity category='client' type='phone'"),
        "{answer}"
    );
    write(
        &mut a,
        "<iq type='set' id='e1' to='bob@localhost/phone'><nothing xmlns='urn:example'/></iq>",
    )
    .await;
    read_until(&mut b, "urn:example'/></iq>").await;
    write(
        &mut b,
        "<iq type='error' id='e1' to='alice@localhost/pc'><error type='cancel'>\
         <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    assert!(
        answer.contains("type='error'")
            && answer.contains("id='e1'")
            && answer.contains("from='bob@localhost/phone'")
            && answer.contains("<feature-not-implemented"),
        "{answer}"
    );

    // Answers to questions never asked, or asked and answered already, go nowhere: not from
    // an XMPP client (its connection drops them) ...
    write(
        &mut b,
        "<iq type='result' id='v1' to='alice@localhost/pc'/>\
         <iq type='result' id='spoof1' to='alice@localhost/pc'/>\
         <iq type='get' id='bp'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    read_until(&mut b, "id='bp'").await;
    // ... nor from a native device (the receiving connection drops them). A question from the
    // native device gets through, with the device's name as the resource, and is answered.
    let mut native = setup.server.connect(&bob).await;
    let alice_pc = setup
        .server
        .core()
        .device_named(alice.user_id, "XMPP pc")
        .await
        .unwrap()
        .expect("the resource's device");
    native
        .device_signal(
            alice.user_id,
            alice_pc,
            "xmpp.iq",
            json!("<iq xmlns='jabber:client' type='result' id='spoof2'/>"),
        )
        .await
        .unwrap();
    native
        .device_signal(
            alice.user_id,
            alice_pc,
            "xmpp.iq",
            json!(
                "<iq xmlns='jabber:client' type='get' id='n1'><ping xmlns='urn:xmpp:ping'/></iq>"
            ),
        )
        .await
        .unwrap();
    let got = read_until(&mut a, "</iq>").await;
    assert!(
        got.contains("id='n1'") && got.contains("from='bob@localhost/test device'"),
        "{got}"
    );
    assert!(
        !got.contains("spoof") && !got.contains("id='v1'"),
        "an answer nobody asked for was delivered: {got}"
    );
    write(
        &mut a,
        "<iq type='result' id='n1' to='bob@localhost/test device'/>",
    )
    .await;
    let payload = loop {
        let event = tokio::time::timeout(WAIT, native.next_event())
            .await
            .expect("the answer in time")
            .expect("open");
        if let ServerFrame::DeviceSignal {
            from_user,
            from_device,
            kind,
            payload,
        } = event
        {
            assert_eq!((from_user, from_device), (alice.user_id, alice_pc));
            assert_eq!(kind, "xmpp.iq");
            break payload;
        }
    };
    let xml = payload.as_str().unwrap();
    assert!(
        xml.contains("type='result'") && xml.contains("id='n1'"),
        "{xml}"
    );

    // A resource nobody bound, and one bound before but gone now.
    write(
        &mut a,
        "<iq type='get' id='o1' to='bob@localhost/nowhere'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    assert!(
        answer.contains("id='o1'")
            && answer.contains("from='bob@localhost/nowhere'")
            && answer.contains("<service-unavailable"),
        "{answer}"
    );
    let mut laptop = sign_in(&setup, "bob", "laptop").await;
    let bob_laptop = setup
        .server
        .core()
        .device_named(bob.user_id, "XMPP laptop")
        .await
        .unwrap()
        .unwrap();
    write(&mut laptop, "</stream:stream>").await;
    read_until(&mut laptop, "</stream:stream>").await;
    drop(laptop);
    // Wait until the core no longer counts the device as connected.
    let deadline = tokio::time::Instant::now() + WAIT;
    while native
        .device_signal(bob.user_id, bob_laptop, "test.probe", json!(1))
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write(
        &mut a,
        "<iq type='get' id='o2' to='bob@localhost/laptop'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    assert!(
        answer.contains("id='o2'") && answer.contains("<service-unavailable"),
        "{answer}"
    );

    // Blocked: refused the same way, and nothing reaches bob's resource.
    bob.api.block(alice.user_id).await.unwrap();
    write(
        &mut a,
        "<iq type='get' id='x1' to='bob@localhost/phone'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let answer = read_until(&mut a, "</iq>").await;
    assert!(
        answer.contains("id='x1'") && answer.contains("<service-unavailable"),
        "{answer}"
    );
    write(
        &mut b,
        "<iq type='get' id='bp2'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let got = read_until(&mut b, "id='bp2'").await;
    assert!(!got.contains("id='x1'"), "{got}");
}

/// Bodiless messages to another resource that the core cannot keep (a marker for an unknown
/// message, a reaction, a retraction) reach that resource from the sender's full JID; and a
/// blocked sender's relay is refused.
#[tokio::test]
async fn bodiless_extensions_are_relayed_to_the_addressed_resource() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    bob.api.open_direct(alice.user_id).await.unwrap();
    let mut a = sign_in(&setup, "alice", "pc").await;
    let mut b = sign_in(&setup, "bob", "phone").await;

    write(
        &mut a,
        "<message to='bob@localhost/phone' id='m1'><displayed xmlns='urn:xmpp:chat-markers:0' id='toto'/></message>",
    )
    .await;
    let marker = read_until(&mut b, "<displayed").await;
    assert!(
        marker.contains("from='alice@localhost/pc'") && marker.contains("<displayed"),
        "{marker}"
    );
    write(
        &mut a,
        "<message to='bob@localhost/phone' id='m2' type='chat'><reactions xmlns='urn:xmpp:reactions:0' id='toto'><reaction>🦙</reaction></reactions><store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    let reaction = read_until(&mut b, "</reactions>").await;
    assert!(
        reaction.contains("from='alice@localhost/pc'") && reaction.contains("🦙"),
        "{reaction}"
    );
    write(
        &mut a,
        "<message to='bob@localhost/phone' id='m3'><retract xmlns='urn:xmpp:message-retract:1' id='toto'/></message>",
    )
    .await;
    let retraction = read_until(&mut b, "message-retract").await;
    assert!(retraction.contains("id='m3'"), "{retraction}");
    // With the fallback body clients send along, the retraction is relayed without it: a
    // relayed message never carries content the core did not store.
    write(
        &mut a,
        "<message to='bob@localhost/phone' id='m5'><body>Twas a mistake</body>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
         <retract xmlns='urn:xmpp:message-retract:1' id='toto'/></message>",
    )
    .await;
    let mut relayed = read_until(&mut b, "id='m5'").await;
    while !relayed[relayed.find("id='m5'").unwrap()..].contains("</message>") {
        relayed.push_str(&read_until(&mut b, "</message>").await);
    }
    let relayed = &relayed[relayed.find("id='m5'").unwrap()..];
    assert!(
        relayed.contains("message-retract") && relayed.contains("toto"),
        "{relayed}"
    );
    assert!(
        !relayed.contains("Twas a mistake") && !relayed.contains("urn:xmpp:fallback"),
        "{relayed}"
    );

    // Blocked: the core refuses the relay (quietly: an ephemeral message gets no error).
    bob.api.block(alice.user_id).await.unwrap();
    write(
        &mut a,
        "<message to='bob@localhost/phone' id='m4'><retract xmlns='urn:xmpp:message-retract:1' id='x'/></message>",
    )
    .await;
    // Alice's next request is answered after the relay was decided.
    write(
        &mut a,
        "<iq type='get' id='p0'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    read_until(&mut a, "id='p0'").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Bob's stream saw nothing of it: a ping round trip comes back with nothing before it.
    write(
        &mut b,
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let after = read_until(&mut b, "id='p1'").await;
    assert!(!after.contains("id='m4'"), "{after}");
}

/// Polls the history of `conversation` (as `user`) until `check` holds for it.
async fn history_until(
    user: &tidings_testkit::TestUser,
    conversation: tidings_proto::ConversationId,
    what: &str,
    check: impl Fn(&[tidings_proto::Message]) -> bool,
) -> Vec<tidings_proto::Message> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let messages = user
            .api
            .history(conversation, None, 100)
            .await
            .unwrap()
            .messages;
        if check(&messages) {
            return messages;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The MAM result in `answer` whose archived message has the id `id`.
fn mam_result<'a>(answer: &'a str, id: &str) -> &'a str {
    answer
        .split("<result ")
        .skip(1)
        .find(|r| r.contains(&format!("type='chat' id='{id}'")))
        .unwrap_or_else(|| panic!("no result for {id} in {answer}"))
}

fn by_id<'a>(messages: &'a [tidings_proto::Message], id: &str) -> &'a tidings_proto::Message {
    messages
        .iter()
        .find(|m| m.client_msg_id == id)
        .unwrap_or_else(|| panic!("no {id} in {messages:#?}"))
}

fn text(text: &str) -> tidings_proto::MessageBody {
    tidings_proto::MessageBody::Text { text: text.into() }
}

/// XEP-0308 both ways: an XMPP correction is the core's edit (the web client sees the new body
/// and the edit time, and no new message), a native edit reaches the XMPP client as a
/// correction naming the id it knows the message by, and a correction of someone else's or of
/// an unknown message is refused with a stanza error while the stream goes on. The archive
/// shows the latest body.
#[tokio::test]
async fn corrections_are_edits_both_ways() {
    use tidings_proto::MessageBody;
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut a = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    a.send("<presence/>").await;

    a.send(
        "<message to='bob@localhost' type='chat' id='a1'><body>helo</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='a1'/></message>",
    )
    .await;
    history_until(&bob, conversation, "a1 stored", |m| {
        m.iter().any(|m| m.client_msg_id == "a1")
    })
    .await;
    a.send(
        "<message to='bob@localhost' type='chat' id='a2'><body>hello</body>\
         <replace id='a1' xmlns='urn:xmpp:message-correct:0'/></message>",
    )
    .await;
    let messages = history_until(&bob, conversation, "the correction", |m| {
        m.iter()
            .any(|m| m.client_msg_id == "a1" && m.edited_at.is_some())
    })
    .await;
    assert_eq!(by_id(&messages, "a1").body, text("hello"));
    // The correction is the edit, not a message of its own.
    assert!(matches!(
        by_id(&messages, "a2").body,
        MessageBody::Edit { .. }
    ));

    // A native edit: the XMPP client gets a correction of the id it got the message with.
    let sent = bob
        .api
        .send(conversation, "b1", text("good morning"))
        .await
        .unwrap();
    a.expect(&["<body>good morning</body>"]).await;
    bob.api
        .send(
            conversation,
            "b2",
            MessageBody::Edit {
                target: sent.seq,
                body: Box::new(text("good evening")),
            },
        )
        .await
        .unwrap();
    let correction = a
        .expect(&["<replace xmlns='urn:xmpp:message-correct:0' id='b1'/>"])
        .await;
    assert!(
        correction.contains("<body>good evening</body>")
            && correction.contains("from='bob@localhost'"),
        "{correction}"
    );

    // Bob's message is not Alice's to correct; an unknown id names nothing.
    a.send(
        "<message to='bob@localhost' type='chat' id='a3'><body>hacked</body>\
         <replace id='b1' xmlns='urn:xmpp:message-correct:0'/></message>",
    )
    .await;
    let refused = a.expect(&["type='error'", "id='a3'"]).await;
    assert!(refused.contains("<forbidden"), "{refused}");
    a.send(
        "<message to='bob@localhost' type='chat' id='a4'><body>what</body>\
         <replace id='nope' xmlns='urn:xmpp:message-correct:0'/></message>",
    )
    .await;
    let refused = a.expect(&["type='error'", "id='a4'"]).await;
    assert!(refused.contains("<item-not-found"), "{refused}");
    let pong = a
        .iq(
            "p1",
            "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    assert!(pong.contains("type='result'"), "{pong}");
    let messages = bob
        .api
        .history(conversation, None, 100)
        .await
        .unwrap()
        .messages;
    assert_eq!(by_id(&messages, "b1").body, text("good evening"));
    assert!(
        !messages
            .iter()
            .any(|m| m.client_msg_id == "a3" || m.client_msg_id == "a4")
    );

    // The archive: the latest body, and the edits as corrections.
    a.send(
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='q1'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>bob@localhost</value></field></x></query></iq>",
    )
    .await;
    let answer = a.raw_until("</fin>").await;
    let archived = mam_result(&answer, "a1");
    assert!(archived.contains("<body>hello</body>"), "{archived}");
    let archived = mam_result(&answer, "b2");
    assert!(
        archived.contains("<replace xmlns='urn:xmpp:message-correct:0' id='b1'/>")
            && archived.contains("<body>good evening</body>"),
        "{archived}"
    );
}

/// XEP-0424 both ways: an XMPP retraction (current, or the older fastening form) is the
/// core's recall and its fallback body no message; a native recall reaches the XMPP client as
/// a retraction with a fallback body; retracting the peer's message is refused; the archive
/// shows a tombstone.
#[tokio::test]
async fn retractions_are_recalls_both_ways() {
    use tidings_proto::MessageBody;
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut a = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    a.send("<presence/>").await;

    a.send(
        "<message to='bob@localhost' type='chat' id='a1'><body>oops</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='a1'/></message>\
         <message to='bob@localhost' type='chat' id='a2'><body>old style</body></message>",
    )
    .await;
    history_until(&bob, conversation, "a1 and a2 stored", |m| {
        m.iter().any(|m| m.client_msg_id == "a2")
    })
    .await;
    a.send(
        "<message to='bob@localhost' type='chat' id='r1'>\
         <retract id='a1' xmlns='urn:xmpp:message-retract:1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
         <body>This person attempted to retract a previous message.</body>\
         <store xmlns='urn:xmpp:hints'/></message>\
         <message to='bob@localhost' type='chat' id='r2'>\
         <apply-to id='a2' xmlns='urn:xmpp:fasten:0'>\
         <retract xmlns='urn:xmpp:message-retract:0'/></apply-to>\
         <body>retracted</body></message>",
    )
    .await;
    let messages = history_until(&bob, conversation, "both recalls", |m| {
        m.iter()
            .filter(|m| matches!(m.body, MessageBody::Deleted {}))
            .count()
            == 2
    })
    .await;
    assert_eq!(by_id(&messages, "a1").body, MessageBody::Deleted {});
    assert_eq!(by_id(&messages, "a2").body, MessageBody::Deleted {});
    assert!(
        messages
            .iter()
            .all(|m| !matches!(&m.body, MessageBody::Text { text } if text.contains("retract"))),
        "a fallback body became a message: {messages:#?}"
    );

    // A native recall: a retraction of the id the client knows, with a fallback body.
    let sent = bob
        .api
        .send(conversation, "b1", text("secret"))
        .await
        .unwrap();
    a.expect(&["<body>secret</body>"]).await;
    bob.api
        .send(conversation, "b2", MessageBody::Recall { target: sent.seq })
        .await
        .unwrap();
    let retraction = a
        .expect(&["<retract xmlns='urn:xmpp:message-retract:1' id='b1'/>"])
        .await;
    assert!(
        retraction.contains("<fallback xmlns='urn:xmpp:fallback:0'")
            && retraction.contains("<body>"),
        "{retraction}"
    );

    // Bob's message is not Alice's to retract.
    bob.api
        .send(conversation, "b3", text("mine"))
        .await
        .unwrap();
    a.expect(&["<body>mine</body>"]).await;
    a.send(
        "<message to='bob@localhost' type='chat' id='r3'>\
         <retract id='b3' xmlns='urn:xmpp:message-retract:1'/></message>",
    )
    .await;
    let refused = a.expect(&["type='error'", "id='r3'"]).await;
    assert!(refused.contains("<forbidden"), "{refused}");
    let messages = bob
        .api
        .history(conversation, None, 100)
        .await
        .unwrap()
        .messages;
    assert_eq!(by_id(&messages, "b3").body, text("mine"));

    // The archive shows the recalled message as a tombstone.
    a.send(
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='q1'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>bob@localhost</value></field></x></query></iq>",
    )
    .await;
    let answer = a.raw_until("</fin>").await;
    let archived = mam_result(&answer, "a1");
    assert!(
        archived.contains("<retracted xmlns='urn:xmpp:message-retract:1'")
            && !archived.contains("oops"),
        "{archived}"
    );
    let archived = mam_result(&answer, "r1");
    assert!(
        archived.contains("<retract xmlns='urn:xmpp:message-retract:1' id='a1'/>"),
        "{archived}"
    );
}

/// Service Outage Status (XEP-0455): the configured status addresses are in the server's
/// disco#info as a `urn:xmpp:sos:0` form; without any, there is no form.
#[tokio::test]
async fn outage_status_addresses_are_discoverable() {
    let address = "https://status.example.net/xmpp.json";
    let setup = setup(|c| c.status_addresses = vec![address.into()]).await;
    setup.server.user("alice").await;
    let mut a = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    let disco = a
        .iq(
            "d1",
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        .await;
    assert!(disco.contains("<value>urn:xmpp:sos:0</value>"), "{disco}");
    assert!(
        disco.contains(&format!(
            "var='external-status-addresses' type='list-multi'><value>{address}</value>"
        )),
        "{disco}"
    );

    let plain = setup_with(|_| {}, |_| {}).await;
    plain.server.user("alice").await;
    let mut b = Stanzas::new(sign_in(&plain, "alice", "pc").await);
    let disco = b
        .iq(
            "d2",
            "<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        .await;
    assert!(!disco.contains("urn:xmpp:sos:0"), "{disco}");
}

/// XEP-0444 both ways: an XMPP reactions element sets the user's full set (adds and removes
/// against what the core holds), a native reaction reaches the XMPP client as the reacting
/// user's full set, reacting to an unknown message is refused, and the features are in
/// service discovery.
#[tokio::test]
async fn reactions_are_full_sets_both_ways() {
    use tidings_proto::MessageBody;
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let conversation = bob.api.open_direct(alice.user_id).await.unwrap().id;
    let mut a = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    a.send("<presence/>").await;

    let disco = a
        .iq(
            "d1",
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        .await;
    for feature in [
        "urn:xmpp:message-correct:0",
        "urn:xmpp:message-retract:1",
        "urn:xmpp:reactions:0",
    ] {
        assert!(disco.contains(&format!("var='{feature}'")), "{disco}");
    }

    let sent = bob
        .api
        .send(conversation, "b1", text("react to me"))
        .await
        .unwrap();
    a.expect(&["<body>react to me</body>"]).await;
    let mine = |list: &tidings_proto::rest::ReactionList| {
        let mut keys: Vec<String> = list
            .reactions
            .iter()
            .filter(|r| r.users.contains(&alice.user_id))
            .map(|r| r.key.clone())
            .collect();
        keys.sort();
        keys
    };
    let reactions_until = |want: Vec<&'static str>| {
        let bob = &bob;
        let mine = &mine;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let list = bob.api.reactions(conversation, sent.seq).await.unwrap();
                let mut want: Vec<String> = want.iter().map(|k| (*k).to_owned()).collect();
                want.sort();
                if mine(&list) == want {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reactions {list:?}, wanted {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    a.send(
        "<message to='bob@localhost' type='chat' id='x1'>\
         <reactions id='b1' xmlns='urn:xmpp:reactions:0'>\
         <reaction>👍</reaction><reaction>🎉</reaction></reactions>\
         <store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    reactions_until(vec!["👍", "🎉"]).await;
    a.send(
        "<message to='bob@localhost' type='chat' id='x2'>\
         <reactions id='b1' xmlns='urn:xmpp:reactions:0'><reaction>🎉</reaction></reactions>\
         </message>",
    )
    .await;
    reactions_until(vec!["🎉"]).await;
    a.send(
        "<message to='bob@localhost' type='chat' id='x3'>\
         <reactions id='b1' xmlns='urn:xmpp:reactions:0'/></message>",
    )
    .await;
    reactions_until(vec![]).await;

    // Native reactions: the XMPP client gets Bob's full set each time.
    bob.api
        .send(
            conversation,
            "b2",
            MessageBody::Reaction {
                target: sent.seq,
                key: "🔥".into(),
                remove: false,
            },
        )
        .await
        .unwrap();
    let got = a
        .expect(&["<reactions xmlns='urn:xmpp:reactions:0' id='b1'>", "🔥"])
        .await;
    assert!(got.contains("from='bob@localhost'"), "{got}");
    bob.api
        .send(
            conversation,
            "b3",
            MessageBody::Reaction {
                target: sent.seq,
                key: "👀".into(),
                remove: false,
            },
        )
        .await
        .unwrap();
    let got = a.expect(&["<reactions ", "👀"]).await;
    assert!(
        got.contains("<reaction>🔥</reaction>") && got.contains("<reaction>👀</reaction>"),
        "{got}"
    );
    bob.api
        .send(
            conversation,
            "b4",
            MessageBody::Reaction {
                target: sent.seq,
                key: "🔥".into(),
                remove: true,
            },
        )
        .await
        .unwrap();
    let got = a.expect(&["<reactions ", "id='b4'"]).await;
    assert!(
        !got.contains("🔥") && got.contains("<reaction>👀</reaction>"),
        "{got}"
    );

    // An unknown message takes no reactions; the stream goes on.
    a.send(
        "<message to='bob@localhost' type='chat' id='x4'>\
         <reactions id='nope' xmlns='urn:xmpp:reactions:0'><reaction>👍</reaction></reactions>\
         </message>",
    )
    .await;
    let refused = a.expect(&["type='error'", "id='x4'"]).await;
    assert!(refused.contains("<item-not-found"), "{refused}");
    let pong = a
        .iq(
            "p1",
            "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    assert!(pong.contains("type='result'"), "{pong}");
}

/// In a room (XEP-0045) the same mapping: a correction and a retraction from XMPP are the
/// core's edit and recall (and reflected), reactions name the room's stanza-id, and a native
/// recall reaches occupants as a retraction of the stanza-id.
#[tokio::test]
async fn room_corrections_retractions_and_reactions() {
    use tidings_proto::MessageBody;
    let setup = setup(|_| {}).await;
    let bob = setup.server.user("bob").await;
    let alice = setup.server.user("alice").await;
    let group = bob
        .api
        .create_group("Team", &[alice.user_id])
        .await
        .unwrap()
        .id;
    let room = format!("{group}@conference.localhost");
    let mut a = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    a.send("<presence/>").await;
    a.join(&room, "alice").await;

    a.send(&format!(
        "<message to='{room}' type='groupchat' id='g1'><body>teh plan</body></message>"
    ))
    .await;
    a.expect(&["type='groupchat'", "id='g1'", "<stanza-id"])
        .await;
    a.send(&format!(
        "<message to='{room}' type='groupchat' id='g2'><body>the plan</body>\
         <replace id='g1' xmlns='urn:xmpp:message-correct:0'/></message>"
    ))
    .await;
    let reflected = a.expect(&["id='g2'", "<stanza-id"]).await;
    assert!(reflected.contains("<replace"), "{reflected}");
    let messages = history_until(&bob, group, "the room correction", |m| {
        m.iter()
            .any(|m| m.client_msg_id == "g1" && m.edited_at.is_some())
    })
    .await;
    assert_eq!(by_id(&messages, "g1").body, text("the plan"));

    // Reactions in a room name the message by the room's stanza-id.
    let sent = bob.api.send(group, "b1", text("lunch?")).await.unwrap();
    a.expect(&["<body>lunch?</body>"]).await;
    a.send(&format!(
        "<message to='{room}' type='groupchat' id='g3'>\
         <reactions id='{}' xmlns='urn:xmpp:reactions:0'><reaction>🍕</reaction></reactions></message>",
        sent.message_id
    ))
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = bob.api.reactions(group, sent.seq).await.unwrap();
        if list
            .reactions
            .iter()
            .any(|r| r.key == "🍕" && r.users.contains(&alice.user_id))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.api
        .send(group, "b2", MessageBody::Recall { target: sent.seq })
        .await
        .unwrap();
    let retraction = a
        .expect(&[&format!(
            "<retract xmlns='urn:xmpp:message-retract:1' id='{}'/>",
            sent.message_id
        )])
        .await;
    assert!(
        retraction.contains(&format!("from='{room}/bob'")),
        "{retraction}"
    );

    // Alice retracts her own message in the room.
    a.send(&format!(
        "<message to='{room}' type='groupchat' id='g4'>\
         <retract id='g1' xmlns='urn:xmpp:message-retract:1'/><body>fallback</body></message>"
    ))
    .await;
    history_until(&bob, group, "the room recall", |m| {
        m.iter()
            .any(|m| m.client_msg_id == "g1" && m.body == MessageBody::Deleted {})
    })
    .await;
}

/// Reads until the whole `<iq>` with this id arrived (an empty one closes itself); returns it.
async fn read_iq<S: AsyncRead + Unpin>(stream: &mut S, id: &str) -> String {
    let needle = format!("id='{id}'");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(at) = text.find(&needle) {
            let start = text[..at].rfind("<iq").unwrap_or(0);
            let rest = &text[at..];
            if let Some(end) = rest.find('>') {
                if rest[..end].ends_with('/') {
                    return text[start..at + end + 1].to_owned();
                }
                if let Some(close) = rest.find("</iq>") {
                    return text[start..at + close + 5].to_owned();
                }
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no iq {id:?} in time; got {text}"))
            .unwrap_or(0);
        if n == 0 {
            panic!("closed before iq {id:?}; got {text}");
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A 1×1 PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn png() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(PNG_B64)
        .unwrap()
}

/// Makes two test users friends.
async fn befriend(a: &tidings_testkit::TestUser, b: &tidings_testkit::TestUser) {
    a.api.send_friend_request(b.user_id, None).await.unwrap();
    b.api.accept_friend_request(a.user_id).await.unwrap();
}

/// A vCard set over XMPP changes the Tidings profile (display name, and the avatar through the
/// file store), keeps the fields a profile has no place for, and a native profile change shows
/// in the vCard.
#[tokio::test]
async fn vcards_are_profiles_both_ways() {
    let setup = setup(|_| {}).await;
    let alice_user = setup.server.user("alice").await;
    let bob_user = setup.server.user("bob").await;
    let mut alice = sign_in(&setup, "alice", "laptop").await;

    write(
        &mut alice,
        &format!("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><URL>https://alice.example/</URL><PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG_B64}</BINVAL></PHOTO></vCard></iq>"),
    )
    .await;
    let set = read_iq(&mut alice, "v1").await;
    assert!(
        set.contains("id='v1'") && set.contains("type='result'"),
        "{set}"
    );
    let profile = alice_user.api.my_profile().await.unwrap();
    assert_eq!(profile.display_name, "Alice Liddell");
    assert!(!profile.avatar.is_empty(), "{profile:?}");
    // Another user downloads the avatar natively: the bytes the vCard carried.
    assert_eq!(
        bob_user.api.download(&profile.avatar, None).await.unwrap(),
        png()
    );

    // The same photo again (clients resend the whole vCard) is the same file.
    write(
        &mut alice,
        &format!("<iq type='set' id='v7'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><URL>https://alice.example/</URL><PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG_B64}</BINVAL></PHOTO></vCard></iq>"),
    )
    .await;
    let again = read_iq(&mut alice, "v7").await;
    assert!(again.contains("type='result'"), "{again}");
    assert_eq!(
        alice_user.api.my_profile().await.unwrap().avatar,
        profile.avatar
    );

    write(
        &mut alice,
        "<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let own = read_iq(&mut alice, "v2").await;
    assert!(own.contains("<FN>Alice Liddell</FN>"), "{own}");
    assert!(
        own.contains(&format!("<BINVAL>{PNG_B64}</BINVAL>")),
        "{own}"
    );
    assert!(own.contains("<TYPE>image/png</TYPE>"), "{own}");
    assert!(own.contains("<URL>https://alice.example/</URL>"), "{own}");

    // Another user (not a friend) reads the same vCard, as the profile is readable.
    let mut bob = sign_in(&setup, "bob", "phone").await;
    write(
        &mut bob,
        "<iq type='get' id='v6' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let alices = read_iq(&mut bob, "v6").await;
    assert!(alices.contains("<FN>Alice Liddell</FN>"), "{alices}");
    assert!(
        alices.contains("<URL>https://alice.example/</URL>"),
        "{alices}"
    );
    assert!(
        alices.contains(&format!("<BINVAL>{PNG_B64}</BINVAL>")),
        "{alices}"
    );

    // A native change shows in the vCard another user reads.
    bob_user
        .api
        .update_profile(&tidings_proto::rest::UpdateProfileRequest {
            display_name: Some("Bobby".into()),
            status_text: None,
            avatar: None,
        })
        .await
        .unwrap();
    write(
        &mut alice,
        "<iq type='get' id='v3' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let bobs = read_iq(&mut alice, "v3").await;
    assert!(
        bobs.contains("<FN>Bobby</FN>") && bobs.contains("from='bob@localhost'"),
        "{bobs}"
    );
    assert!(!bobs.contains("<PHOTO"), "{bobs}");

    // Nobody sets another user's vCard, and a photo that is not an image is refused.
    write(
        &mut alice,
        "<iq type='set' id='v4' to='bob@localhost'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
    )
    .await;
    let foreign = read_iq(&mut alice, "v4").await;
    assert!(
        foreign.contains("type='error'") && foreign.contains("<forbidden"),
        "{foreign}"
    );
    write(
        &mut alice,
        "<iq type='set' id='v5'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>",
    )
    .await;
    let text = read_iq(&mut alice, "v5").await;
    assert!(
        text.contains("id='v5'") && text.contains("type='error'"),
        "{text}"
    );
    assert_eq!(
        bob_user
            .api
            .profile(bob_user.user_id)
            .await
            .unwrap()
            .display_name,
        "Bobby"
    );
}

/// The value of attribute `name` in the first tag of `stanza`.
fn attr_of<'a>(stanza: &'a str, name: &str) -> &'a str {
    let tag = &stanza[..stanza.find('>').unwrap_or(stanza.len())];
    let start = tag
        .find(&format!(" {name}='"))
        .unwrap_or_else(|| panic!("{name} in {stanza}"))
        + name.len()
        + 3;
    &tag[start..start + tag[start..].find('\'').unwrap()]
}

/// PEP notifications (XEP-0163 4.3) follow the interests a client states through entity
/// capabilities (XEP-0115): the gateway asks the client's disco#info once its presence
/// carries `<c/>`, sends the last items of the nodes it wants (a friend's nickname), then
/// live changes: a friend's nickname and avatar (a profile change), the user's own bookmarks
/// (XEP-0402) from another resource and their retraction. Nothing comes from a user who is no
/// friend, and nothing to a resource that stated no interest.
#[tokio::test]
async fn pep_notifications_follow_caps_interests() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    setup.server.user("carol").await;
    befriend(&alice, &bob).await;
    let publish = |id: &str, node: &str, item: &str| {
        format!(
            "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='{node}'>{item}</publish></pubsub></iq>"
        )
    };
    let nick = |text: &str| {
        format!("<item><nick xmlns='http://jabber.org/protocol/nick'>{text}</nick></item>")
    };
    const NICK: &str = "http://jabber.org/protocol/nick";
    let mut bob_x = Stanzas::new(sign_in(&setup, "bob", "desk").await);
    let done = bob_x.iq("n1", &publish("n1", NICK, &nick("Bobby"))).await;
    assert!(done.contains("type='result'"), "{done}");

    let mut phone = Stanzas::new(sign_in(&setup, "alice", "phone").await);
    phone.send("<presence/>").await;
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    pc.send(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
         node='https://client.example' ver='v1'/></presence>",
    )
    .await;
    let query = pc
        .expect(&[
            "<iq",
            "type='get'",
            "http://jabber.org/protocol/disco#info",
            "node='https://client.example#v1'",
        ])
        .await;
    let id = attr_of(&query, "id").to_owned();
    pc.send(&format!(
        "<iq type='result' id='{id}' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info' node='https://client.example#v1'>\
         <identity category='client' type='pc'/>\
         <feature var='http://jabber.org/protocol/nick+notify'/>\
         <feature var='urn:xmpp:avatar:metadata+notify'/>\
         <feature var='urn:xmpp:bookmarks:1+notify'/></query></iq>"
    ))
    .await;
    let last = pc
        .expect(&["<event", "from='bob@localhost'", "Bobby"])
        .await;
    assert!(last.contains("type='headline'"), "{last}");
    assert!(last.contains(&format!("<items node='{NICK}'>")), "{last}");

    // Live: a friend's new nickname, and the avatar a vCard set gives him.
    bob_x.iq("n2", &publish("n2", NICK, &nick("Robert"))).await;
    pc.expect(&["<event", "from='bob@localhost'", "Robert"])
        .await;
    let done = bob_x
        .iq(
            "v1",
            &format!(
                "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>\
                 <BINVAL>{PNG_B64}</BINVAL></PHOTO></vCard></iq>"
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let avatar = pc
        .expect(&[
            "<event",
            "from='bob@localhost'",
            "urn:xmpp:avatar:metadata",
            "<info",
        ])
        .await;
    let hash: String = {
        use sha1::Digest;
        sha1::Sha1::digest(png())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert!(avatar.contains(&format!("id='{hash}'")), "{avatar}");

    // The user's own bookmarks, published and retracted from the other resource.
    const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
    let done = phone
        .iq(
            "b1",
            &publish(
                "b1",
                BOOKMARKS,
                "<item id='team@conference.localhost'>\
                 <conference xmlns='urn:xmpp:bookmarks:1' name='Team' autojoin='true'/></item>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let mark = pc
        .expect(&[
            "<event",
            "from='alice@localhost'",
            "id='team@conference.localhost'",
        ])
        .await;
    assert!(mark.contains("name='Team'"), "{mark}");
    let done = phone
        .iq(
            "b2",
            "<iq type='set' id='b2'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <retract node='urn:xmpp:bookmarks:1'><item id='team@conference.localhost'/></retract>\
             </pubsub></iq>",
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    pc.expect(&["<event", "<retract id='team@conference.localhost'/>"])
        .await;

    // Someone who is no friend publishes; the next friend's change arrives, theirs never.
    let mut carol_x = Stanzas::new(sign_in(&setup, "carol", "desk").await);
    carol_x.iq("n3", &publish("n3", NICK, &nick("Caz"))).await;
    bob_x
        .iq("n4", &publish("n4", NICK, &nick("Bob again")))
        .await;
    pc.expect(&["<event", "Bob again"]).await;
    assert!(
        !pc.seen.iter().any(|s| s.contains("carol@localhost")),
        "{:#?}",
        pc.seen
    );
    // The resource that stated no interest got no notification at all.
    phone
        .iq(
            "p1",
            "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    assert!(
        !phone.seen.iter().any(|s| s.contains("pubsub#event")),
        "{:#?}",
        phone.seen
    );
}

/// A friend's presence carries the hash of their avatar (XEP-0153): empty without one, the
/// image's SHA-1 once a photo is set (a new presence is sent when it changes), empty again once
/// it is taken down.
#[tokio::test]
async fn presence_carries_the_avatar_hash() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    befriend(&alice, &bob).await;
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    pc.send("<presence/>").await;
    pc.expect(&["<presence", "from='alice@localhost/pc'"]).await;
    let _bob_ws = setup.server.connect(&bob).await;
    let online = pc
        .expect(&["<presence", "from='bob@localhost'", "vcard-temp:x:update"])
        .await;
    assert!(!online.contains("type='unavailable'"), "{online}");
    assert!(
        online.contains("<photo></photo>") || online.contains("<photo/>"),
        "{online}"
    );

    let mut bob_x = Stanzas::new(sign_in(&setup, "bob", "desk").await);
    let done = bob_x
        .iq(
            "v1",
            &format!(
                "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>\
                 <BINVAL>{PNG_B64}</BINVAL></PHOTO></vCard></iq>"
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let hash: String = {
        use sha1::Digest;
        sha1::Sha1::digest(png())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    pc.expect(&[
        "<presence",
        "from='bob@localhost'",
        &format!("<photo>{hash}</photo>"),
    ])
    .await;
    // What came before that presence is not what the next expectation may match.
    pc.seen.clear();

    let done = bob_x
        .iq(
            "v2",
            "<iq type='set' id='v2'><vCard xmlns='vcard-temp'><PHOTO/></vCard></iq>",
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let cleared = pc
        .expect(&["<presence", "from='bob@localhost'", "vcard-temp:x:update"])
        .await;
    assert!(
        cleared.contains("<photo></photo>") || cleared.contains("<photo/>"),
        "{cleared}"
    );
}

/// PEP nodes and private XML storage are kept per user, within the configured limits; the
/// avatar nodes are the profile avatar; friends read only the shared nodes, others nothing.
#[tokio::test]
async fn pep_nodes_and_private_storage() {
    let setup = setup_with(
        |c| {
            c.limits.max_user_xml_bytes = 300;
            c.limits.max_user_xml_items = 3;
        },
        |_| {},
    )
    .await;
    let alice_user = setup.server.user("alice").await;
    let bob_user = setup.server.user("bob").await;
    setup.server.user("carol").await;
    befriend(&alice_user, &bob_user).await;
    let mut alice = sign_in(&setup, "alice", "laptop").await;
    let mut bob = sign_in(&setup, "bob", "phone").await;
    let mut carol = sign_in(&setup, "carol", "desk").await;

    // Discovery: the account is a PEP service and says what it stores.
    write(
        &mut alice,
        "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let info = read_iq(&mut alice, "d1").await;
    assert!(
        info.contains("category='pubsub'") && info.contains("type='pep'"),
        "{info}"
    );
    assert!(
        info.contains("var='http://jabber.org/protocol/pubsub#publish'"),
        "{info}"
    );
    assert!(info.contains("var='vcard-temp'"), "{info}");

    // Private XML storage: a round trip, and an empty answer for what was never stored.
    write(
        &mut alice,
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='tea@rooms.localhost' autojoin='true'/></storage></query></iq>",
    )
    .await;
    let stored = read_iq(&mut alice, "p1").await;
    assert!(stored.contains("type='result'"), "{stored}");
    write(
        &mut alice,
        "<iq type='get' id='p2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    let got = read_iq(&mut alice, "p2").await;
    assert!(
        got.contains("<conference jid='tea@rooms.localhost' autojoin='true'/>"),
        "{got}"
    );
    write(
        &mut alice,
        "<iq type='get' id='p3'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    )
    .await;
    let empty = read_iq(&mut alice, "p3").await;
    assert!(
        empty.contains("<prefs xmlns='urn:example:prefs'/>"),
        "{empty}"
    );
    // An item over the byte limit is refused.
    let big = "x".repeat(400);
    write(
        &mut alice,
        &format!("<iq type='set' id='p4'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>{big}</prefs></query></iq>"),
    )
    .await;
    let refused = read_iq(&mut alice, "p4").await;
    assert!(
        refused.contains("type='error'") && refused.contains("<policy-violation"),
        "{refused}"
    );

    // PEP: a nickname (shared with friends) and a private node.
    write(
        &mut alice,
        "<iq type='set' id='n1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'><item><nick xmlns='http://jabber.org/protocol/nick'>Ally</nick></item></publish></pubsub></iq>",
    )
    .await;
    let published = read_iq(&mut alice, "n1").await;
    assert!(
        published.contains("type='result'") && published.contains("<item id='current'/>"),
        "{published}"
    );
    write(
        &mut alice,
        "<iq type='set' id='b1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'><item id='tea@rooms.localhost'><conference xmlns='urn:xmpp:bookmarks:1' name='Tea'/></item></publish></pubsub></iq>",
    )
    .await;
    let published = read_iq(&mut alice, "b1").await;
    assert!(published.contains("type='result'"), "{published}");
    write(
        &mut alice,
        "<iq type='get' id='b2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    )
    .await;
    let own = read_iq(&mut alice, "b2").await;
    assert!(own.contains("<item id='tea@rooms.localhost'><conference xmlns='urn:xmpp:bookmarks:1' name='Tea'/></item>"), "{own}");

    let nick = "<iq type='get' id='r1' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='http://jabber.org/protocol/nick'/></pubsub></iq>";
    write(&mut bob, nick).await;
    let friend = read_iq(&mut bob, "r1").await;
    assert!(
        friend.contains("<nick xmlns='http://jabber.org/protocol/nick'>Ally</nick>"),
        "{friend}"
    );
    write(&mut carol, nick).await;
    let stranger = read_iq(&mut carol, "r1").await;
    assert!(
        stranger.contains("type='error'") && stranger.contains("<forbidden"),
        "{stranger}"
    );
    let bookmarks = "<iq type='get' id='r2' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>";
    write(&mut bob, bookmarks).await;
    let friend = read_iq(&mut bob, "r2").await;
    assert!(
        friend.contains("<forbidden") && !friend.contains("Tea"),
        "{friend}"
    );
    write(&mut carol, bookmarks).await;
    let stranger = read_iq(&mut carol, "r2").await;
    assert!(
        stranger.contains("<forbidden") && !stranger.contains("Tea"),
        "{stranger}"
    );
    // Nobody publishes to another user's nodes.
    write(
        &mut carol,
        "<iq type='set' id='x1' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'><item><nick xmlns='http://jabber.org/protocol/nick'>Evil</nick></item></publish></pubsub></iq>",
    )
    .await;
    let foreign = read_iq(&mut carol, "x1").await;
    assert!(foreign.contains("<forbidden"), "{foreign}");

    // Alice holds three items (the private bookmarks, the nickname, one bookmark): a fourth
    // is over the limit, replacing one is not.
    write(
        &mut alice,
        "<iq type='set' id='b3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'><item id='cake@rooms.localhost'><conference xmlns='urn:xmpp:bookmarks:1'/></item></publish></pubsub></iq>",
    )
    .await;
    let full = read_iq(&mut alice, "b3").await;
    assert!(
        full.contains("type='error'") && full.contains("<resource-constraint"),
        "{full}"
    );
    write(
        &mut alice,
        "<iq type='set' id='n2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'><item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Al</nick></item></publish></pubsub></iq>",
    )
    .await;
    let replaced = read_iq(&mut alice, "n2").await;
    assert!(replaced.contains("type='result'"), "{replaced}");

    // User Avatar: publishing the data sets the profile avatar (no item limit: it is a file),
    // and friends read data and metadata from the profile.
    write(
        &mut alice,
        &format!("<iq type='set' id='a1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:data'><item id='ignored'><data xmlns='urn:xmpp:avatar:data'>{PNG_B64}</data></item></publish></pubsub></iq>"),
    )
    .await;
    let data = read_iq(&mut alice, "a1").await;
    assert!(data.contains("type='result'"), "{data}");
    let avatar = alice_user.api.my_profile().await.unwrap().avatar;
    assert!(!avatar.is_empty());
    assert_eq!(bob_user.api.download(&avatar, None).await.unwrap(), png());
    write(
        &mut bob,
        "<iq type='get' id='a2' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:metadata'/></pubsub></iq>",
    )
    .await;
    let metadata = read_iq(&mut bob, "a2").await;
    assert!(
        metadata.contains("type='image/png'")
            && metadata.contains(&format!("bytes='{}'", png().len())),
        "{metadata}"
    );
    write(
        &mut bob,
        "<iq type='get' id='a3' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'/></pubsub></iq>",
    )
    .await;
    let data = read_iq(&mut bob, "a3").await;
    assert!(data.contains(&format!(">{PNG_B64}</data>")), "{data}");
    // Empty metadata turns the avatar off.
    write(
        &mut alice,
        "<iq type='set' id='a4'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'><item><metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub></iq>",
    )
    .await;
    let off = read_iq(&mut alice, "a4").await;
    assert!(off.contains("type='result'"), "{off}");
    assert_eq!(alice_user.api.my_profile().await.unwrap().avatar, "");
}

/// A room's occupants on two nodes sharing PostgreSQL and NATS: an occupant on one node sees
/// those on the other when joining and as they come, change nicks, post and are kicked.
/// Needs PostgreSQL (`PG_TEST_URL`) and NATS (`NATS_TEST_URL`), like the other cluster tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_occupants_span_nodes() {
    use tidings::config::{BusKind, StoreKind};
    let db = tidings_store_postgres::testing::TestDatabase::create().await;
    let nats = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("tidings-xmpp-rooms-test.{}", db.name);
    // One data directory for both nodes: it holds the token signing key they share.
    let data = tempfile::tempdir().unwrap();
    let node = |dir: std::path::PathBuf| {
        let (url, nats, prefix) = (db.url.clone(), nats.clone(), prefix.clone());
        move |c: &mut tidings::config::Config| {
            c.data_dir = dir;
            c.store.kind = StoreKind::Postgres;
            c.store.url = url;
            c.store.max_connections = 4;
            c.bus.kind = BusKind::Nats;
            c.bus.url = nats;
            c.bus.subject_prefix = prefix;
            c.tokens.issuer = "http://tidings.test".into();
        }
    };
    let a = setup_with(node(data.path().into()), |_| {}).await;
    let b = setup_with(node(data.path().into()), |_| {}).await;
    let bob = a.server.user("bob").await;
    a.server.user("alice").await;
    let room = "hall@conference.localhost";

    let mut owner = Stanzas::new(sign_in(&a, "bob", "span").await);
    owner
        .send(&format!(
            "<presence to='{room}/bobby'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    owner
        .expect(&[&format!("from='{room}/bobby'"), "code='201'"])
        .await;
    let done = owner
        .iq(
            "a1",
            &admin_iq(
                "a1",
                room,
                "set",
                "<item jid='alice@localhost' affiliation='member'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");

    // Alice, on the other node, finds bob in the room, and bob learns of her over NATS.
    let mut member = Stanzas::new(sign_in(&b, "alice", "span").await);
    member
        .send(&format!(
            "<presence to='{room}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    member.expect(&[&format!("from='{room}/bobby'")]).await;
    member
        .expect(&[&format!("from='{room}/al'"), "code='110'"])
        .await;
    owner.expect(&[&format!("from='{room}/al'")]).await;
    // bob's nick is held across nodes.
    member.send(&format!("<presence to='{room}/bobby'/>")).await;
    member.expect(&["type='error'", "<conflict "]).await;

    member.send(&format!("<presence to='{room}/ally'/>")).await;
    owner
        .expect(&[&format!("from='{room}/al'"), "code='303'", "nick='ally'"])
        .await;
    member
        .expect(&[&format!("from='{room}/al'"), "code='303'", "code='110'"])
        .await;
    member
        .send(&format!(
            "<message to='{room}' type='groupchat' id='x1'><body>across</body></message>"
        ))
        .await;
    owner
        .expect(&[&format!("from='{room}/ally'"), "<body>across</body>"])
        .await;

    let done = owner
        .iq(
            "k1",
            &admin_iq("k1", room, "set", "<item nick='ally' role='none'/>"),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    let kicked = member
        .expect(&[&format!("from='{room}/ally'"), "code='307'"])
        .await;
    assert!(kicked.contains("code='110'"), "{kicked}");
    owner
        .expect(&[&format!("from='{room}/ally'"), "code='307'"])
        .await;
    drop(bob);
}

/// Pending friend requests (RFC 6121 3.1): one the user sent is a roster item with
/// `ask='subscribe'` until it is answered; one sent to the user arrives as a `subscribe`
/// presence when the user becomes available; a decline and a withdrawal are told as
/// `unsubscribed` and `unsubscribe`.
#[tokio::test]
async fn pending_friend_requests_show_in_roster_and_presence() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let carol = setup.server.user("carol").await;
    carol
        .api
        .send_friend_request(alice.user_id, None)
        .await
        .unwrap();
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    pc.send("<presence/>").await;
    pc.expect(&["<presence", "type='subscribe'", "from='carol@localhost'"])
        .await;

    pc.send("<presence type='subscribe' to='bob@localhost'/>")
        .await;
    let push = pc
        .expect(&["type='set'", "jid='bob@localhost'", "ask='subscribe'"])
        .await;
    assert!(push.contains("subscription='none'"), "{push}");
    let roster = pc
        .iq(
            "r1",
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
    assert!(
        roster.contains("jid='bob@localhost' subscription='none' ask='subscribe'"),
        "{roster}"
    );
    assert!(!roster.contains("carol@localhost"), "{roster}");

    bob.api.decline_friend_request(alice.user_id).await.unwrap();
    pc.expect(&["<presence", "type='unsubscribed'", "from='bob@localhost'"])
        .await;
    pc.expect(&["jid='bob@localhost'", "subscription='remove'"])
        .await;
    carol
        .api
        .cancel_friend_request(alice.user_id)
        .await
        .unwrap();
    pc.expect(&["<presence", "type='unsubscribe'", "from='carol@localhost'"])
        .await;
}

/// The blocking command (XEP-0191): users of this server are Tidings blocks, other addresses are
/// kept so the list reads back whole; every change, from XMPP or the web, is pushed to each
/// resource that asked for the list; bad items change nothing; an empty unblock clears all.
#[tokio::test]
async fn block_lists_hold_users_and_other_addresses_with_pushes() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    let carol = setup.server.user("carol").await;
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    let mut phone = Stanzas::new(sign_in(&setup, "alice", "phone").await);
    let get =
        |id: &str| format!("<iq type='get' id='{id}'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    let set = |id: &str, change: &str, jids: &[&str]| {
        let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
        format!(
            "<iq type='set' id='{id}'><{change} xmlns='urn:xmpp:blocking'>{items}</{change}></iq>"
        )
    };
    for (client, id) in [(&mut pc, "g1"), (&mut phone, "g2")] {
        let list = client.iq(id, &get(id)).await;
        assert!(
            list.contains("<blocklist xmlns='urn:xmpp:blocking'/>"),
            "{list}"
        );
    }

    let done = pc
        .iq(
            "b1",
            &set("b1", "block", &["bob@localhost", "Toto@Example.com"]),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    for client in [&mut pc, &mut phone] {
        client
            .expect(&["type='set'", "<block ", "jid='bob@localhost'"])
            .await;
        client
            .expect(&["type='set'", "<block ", "jid='toto@example.com'"])
            .await;
    }
    let list = phone.iq("g3", &get("g3")).await;
    assert!(list.contains("<item jid='bob@localhost'/>"), "{list}");
    assert!(list.contains("<item jid='toto@example.com'/>"), "{list}");
    let blocks = alice.api.blocks().await.unwrap();
    assert_eq!(
        blocks.users.iter().map(|u| u.user_id).collect::<Vec<_>>(),
        [bob.user_id]
    );

    // A block from the web is pushed too.
    alice.api.block(carol.user_id).await.unwrap();
    phone
        .expect(&["type='set'", "<block ", "jid='carol@localhost'"])
        .await;

    // Bad items are refused and change nothing.
    for (id, jid, condition) in [
        ("x1", "nobody@localhost", "<item-not-found "),
        ("x2", "team@conference.localhost", "<item-not-found "),
        ("x3", "not a jid", "<jid-malformed "),
        ("x4", "@example.com", "<jid-malformed "),
    ] {
        let refused = pc
            .iq(id, &set(id, "block", &["dave@example.org", jid]))
            .await;
        assert!(refused.contains(condition), "{jid}: {refused}");
    }
    let list = pc.iq("g4", &get("g4")).await;
    assert!(!list.contains("dave@example.org"), "{list}");

    // An unblock without items clears everything, and says so item by item.
    let done = pc.iq("u1", &set("u1", "unblock", &[])).await;
    assert!(done.contains("type='result'"), "{done}");
    for jid in ["bob@localhost", "carol@localhost", "toto@example.com"] {
        phone
            .expect(&["type='set'", "<unblock ", &format!("jid='{jid}'")])
            .await;
    }
    let list = phone.iq("g5", &get("g5")).await;
    assert!(
        list.contains("<blocklist xmlns='urn:xmpp:blocking'/>"),
        "{list}"
    );
    assert!(alice.api.blocks().await.unwrap().users.is_empty());
}

/// Roster sets (RFC 6121 §2): a friend's name and groups are kept and pushed to every
/// resource; a user who is not a friend stays in the roster with subscription `none`; removing
/// a contact ends the friendship; bad sets are refused; the roster's storage is not a PEP node.
#[tokio::test]
async fn roster_sets_keep_names_and_groups() {
    let setup = setup(|_| {}).await;
    let alice = setup.server.user("alice").await;
    let bob = setup.server.user("bob").await;
    setup.server.user("carol").await;
    befriend(&alice, &bob).await;
    let mut pc = Stanzas::new(sign_in(&setup, "alice", "pc").await);
    let mut phone = Stanzas::new(sign_in(&setup, "alice", "phone").await);
    let roster_iq = |id: &str, kind: &str, items: &str| {
        format!("<iq type='{kind}' id='{id}'><query xmlns='jabber:iq:roster'>{items}</query></iq>")
    };

    let done = pc
        .iq(
            "r1",
            &roster_iq(
                "r1",
                "set",
                "<item jid='bob@localhost' name='Bobby'><group>Work</group></item>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    for client in [&mut pc, &mut phone] {
        let push = client
            .expect(&["type='set'", "jid='bob@localhost'", "name='Bobby'"])
            .await;
        assert!(push.contains("subscription='both'"), "{push}");
        assert!(push.contains("<group>Work</group>"), "{push}");
    }
    // A contact who is not a friend is kept without a subscription.
    let done = pc
        .iq(
            "r2",
            &roster_iq("r2", "set", "<item jid='carol@localhost' name='Caz'/>"),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    phone
        .expect(&["jid='carol@localhost'", "subscription='none'", "name='Caz'"])
        .await;
    let roster = phone.iq("r3", &roster_iq("r3", "get", "")).await;
    assert!(
        roster.contains("jid='bob@localhost' subscription='both' name='Bobby'><group>Work</group>"),
        "{roster}"
    );
    assert!(
        roster.contains("jid='carol@localhost' subscription='none' name='Caz'"),
        "{roster}"
    );

    // Removing bob ends the friendship, for the web too, and every resource learns it.
    let done = pc
        .iq(
            "r4",
            &roster_iq(
                "r4",
                "set",
                "<item jid='bob@localhost' subscription='remove'/>",
            ),
        )
        .await;
    assert!(done.contains("type='result'"), "{done}");
    phone
        .expect(&["jid='bob@localhost'", "subscription='remove'"])
        .await;
    assert!(bob.api.friends().await.unwrap().friends.is_empty());
    let roster = pc.iq("r5", &roster_iq("r5", "get", "")).await;
    assert!(!roster.contains("bob@localhost"), "{roster}");

    // Refusals: two items at once, a remote contact, oneself.
    let refused = pc
        .iq(
            "r6",
            &roster_iq(
                "r6",
                "set",
                "<item jid='bob@localhost'/><item jid='carol@localhost'/>",
            ),
        )
        .await;
    assert!(refused.contains("<bad-request "), "{refused}");
    let refused = pc
        .iq(
            "r7",
            &roster_iq("r7", "set", "<item jid='dan@example.org'/>"),
        )
        .await;
    assert!(refused.contains("<item-not-found "), "{refused}");
    let refused = pc
        .iq(
            "r8",
            &roster_iq("r8", "set", "<item jid='alice@localhost'/>"),
        )
        .await;
    assert!(refused.contains("<not-allowed "), "{refused}");
    // The roster's storage is not reachable as a PEP node.
    let refused = pc
        .iq(
            "p1",
            "<iq type='get' id='p1' to='alice@localhost'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='roster'/></pubsub></iq>",
        )
        .await;
    assert!(refused.contains("<not-allowed "), "{refused}");
}
