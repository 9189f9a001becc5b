//! A small XMPP client for the benchmark: TCP, STARTTLS, SASL SCRAM (PLAIN where a server
//! offers nothing else), resource binding, Stream Management acknowledgements (XEP-0198) and
//! chat messages. It drives Tidings' XMPP gateway, ejabberd and Prosody with the same code.
//!
//! It signs in with SCRAM, as Conversations, Gajim and Dino do, so every server checks a proof
//! against stored SCRAM keys instead of hashing a password per sign-in: with PLAIN, Tidings
//! verifies its argon2id hash on every connection, and a benchmark of a thousand connections
//! would measure argon2 instead of the server.
//!
//! Stanzas are framed and parsed with Tidings' own restricted XML parser
//! (`tidings_xmpp::xml`), which reads a server's stream as well as a client's. Certificates
//! are not checked: every server here is on loopback with a self-signed certificate, and the
//! benchmark measures servers, not the authenticity of their names.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tidings_core::scram::ScramHash;
use tidings_xmpp::xml::{Element, Limits, StreamEvent, StreamParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_SM: &str = "urn:xmpp:sm:3";

/// A byte stream: plain TCP before STARTTLS, TLS after.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The XMPP domain (`to` of the stream header, the part after `@`).
    pub domain: String,
    /// Whether to upgrade with STARTTLS (when offered; required if true).
    pub starttls: bool,
}

/// A negotiated stream: authenticated, bound, Stream Management enabled.
pub struct Negotiated {
    pub io: BoxIo,
    pub parser: StreamParser,
}

fn parser() -> StreamParser {
    StreamParser::new(Limits {
        max_stanza_bytes: 1 << 20,
        max_depth: 64,
        max_attributes: 64,
    })
}

/// Reads until the next stanza (stream headers are skipped).
pub async fn read_stanza(io: &mut BoxIo, parser: &mut StreamParser) -> anyhow::Result<Element> {
    let mut buf = [0u8; 8192];
    loop {
        match parser.next_event().context("parsing the server's stream")? {
            Some(StreamEvent::Stanza(e)) => return Ok(e),
            Some(StreamEvent::Open(_)) => continue,
            Some(StreamEvent::Close) => bail!("the server closed the stream"),
            None => {}
        }
        let n = io.read(&mut buf).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        parser.feed(&buf[..n]);
    }
}

/// Writes and flushes (TLS holds written bytes until flushed).
async fn send(io: &mut BoxIo, bytes: &[u8]) -> anyhow::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await?;
    Ok(())
}

async fn open_stream(io: &mut BoxIo, domain: &str) -> anyhow::Result<StreamParser> {
    send(
        io,
        format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        .as_bytes(),
    )
    .await?;
    Ok(parser())
}

/// Stream error or SASL failure text, for messages.
fn describe(e: &Element) -> String {
    let mut s = e.to_xml();
    s.truncate(300);
    s
}

/// Accepts any certificate: see the module comment.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// Connects from `source`, secures the stream, signs in with PLAIN, binds `resource`, enables
/// Stream Management and sends initial presence; gives up after 30 s.
pub async fn connect(
    endpoint: &Endpoint,
    source: IpAddr,
    username: &str,
    password: &str,
    resource: &str,
) -> anyhow::Result<Negotiated> {
    // The step under way, so a timeout says where the exchange stalled.
    let mut step = "connecting";
    let negotiated = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        negotiate(endpoint, source, username, password, resource, &mut step),
    )
    .await;
    match negotiated {
        Ok(result) => result,
        Err(_) => bail!("no session within 30 s (stalled at: {step})"),
    }
}

async fn negotiate(
    endpoint: &Endpoint,
    source: IpAddr,
    username: &str,
    password: &str,
    resource: &str,
    step: &mut &'static str,
) -> anyhow::Result<Negotiated> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(endpoint.addr).await.context("connecting")?;
    tcp.set_nodelay(true)?;
    let mut io: BoxIo = Box::new(tcp);
    *step = "stream features";
    let mut parser = open_stream(&mut io, &endpoint.domain).await?;
    let mut features = read_stanza(&mut io, &mut parser).await?;
    if endpoint.starttls {
        if features.find("starttls", NS_TLS).is_none() {
            bail!("the server offers no STARTTLS: {}", describe(&features));
        }
        *step = "STARTTLS";
        send(&mut io, format!("<starttls xmlns='{NS_TLS}'/>").as_bytes()).await?;
        let answer = read_stanza(&mut io, &mut parser).await?;
        if answer.name != "proceed" {
            bail!("STARTTLS refused: {}", describe(&answer));
        }
        let name = rustls::pki_types::ServerName::try_from(endpoint.domain.clone())
            .context("the domain as a TLS server name")?;
        *step = "TLS handshake";
        let tls = tls_connector()
            .connect(name, io)
            .await
            .context("TLS handshake")?;
        io = Box::new(tls);
        *step = "stream features after TLS";
        parser = open_stream(&mut io, &endpoint.domain).await?;
        features = read_stanza(&mut io, &mut parser).await?;
    }
    let mechanisms = features
        .find("mechanisms", NS_SASL)
        .map(|m| m.elements().map(|e| e.text_content()).collect::<Vec<_>>())
        .unwrap_or_default();
    *step = "SASL";
    let offered = |name: &str| mechanisms.iter().any(|m| m == name);
    if offered("SCRAM-SHA-256") {
        scram(&mut io, &mut parser, ScramHash::Sha256, username, password).await?;
    } else if offered("SCRAM-SHA-1") {
        scram(&mut io, &mut parser, ScramHash::Sha1, username, password).await?;
    } else if offered("PLAIN") {
        plain(&mut io, &mut parser, username, password).await?;
    } else {
        bail!("the server offers neither SCRAM nor PLAIN (offers {mechanisms:?})");
    }
    *step = "stream features after SASL";
    parser = open_stream(&mut io, &endpoint.domain).await?;
    let features = read_stanza(&mut io, &mut parser).await?;
    if features.find("bind", NS_BIND).is_none() {
        bail!("no resource binding offered: {}", describe(&features));
    }
    *step = "resource binding";
    send(&mut io,
        format!(
            "<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>"
        )
        .as_bytes(),
    )
    .await?;
    let answer = read_stanza(&mut io, &mut parser).await?;
    if answer
        .find("bind", NS_BIND)
        .and_then(|b| b.elements().find(|e| e.name == "jid"))
        .is_none()
    {
        bail!("binding a resource: {}", describe(&answer));
    }
    // The old session establishment (RFC 3921); servers that still list it as required need it.
    if let Some(session) = features.find("session", NS_SESSION)
        && session.elements().all(|e| e.name != "optional")
    {
        send(
            &mut io,
            format!("<iq type='set' id='sess1'><session xmlns='{NS_SESSION}'/></iq>").as_bytes(),
        )
        .await?;
        let answer = read_stanza(&mut io, &mut parser).await?;
        if answer.get_attr("type") != Some("result") {
            bail!("session establishment: {}", describe(&answer));
        }
    }
    if features.find("sm", NS_SM).is_none() {
        bail!("the server offers no Stream Management");
    }
    *step = "Stream Management";
    send(&mut io, format!("<enable xmlns='{NS_SM}'/>").as_bytes()).await?;
    let answer = read_stanza(&mut io, &mut parser).await?;
    if answer.name != "enabled" {
        bail!("enabling Stream Management: {}", describe(&answer));
    }
    // Initial presence: what every real client sends, and the first stanza Stream
    // Management counts (the link subtracts it from the server's `h`).
    send(&mut io, b"<presence/>").await?;
    Ok(Negotiated { io, parser })
}

/// SASL PLAIN: the password in the clear, inside TLS.
async fn plain(
    io: &mut BoxIo,
    parser: &mut StreamParser,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let response = B64.encode(format!("\0{username}\0{password}").as_bytes());
    send(
        io,
        format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{response}</auth>").as_bytes(),
    )
    .await?;
    let answer = read_stanza(io, parser).await?;
    if answer.name != "success" {
        bail!("signing in as {username}: {}", describe(&answer));
    }
    Ok(())
}

/// SASL SCRAM (RFC 5802) without channel binding: proves the password with a proof the server
/// checks against its stored key, and checks the server's signature in turn. The benchmark's
/// passwords are ASCII, which SASLprep leaves as they are, and its user names have no `,` or
/// `=` to escape.
async fn scram(
    io: &mut BoxIo,
    parser: &mut StreamParser,
    hash: ScramHash,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    use rand::RngCore;
    let mut nonce_bytes = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut nonce_bytes);
    let client_nonce = B64.encode(nonce_bytes);
    let client_first_bare = format!("n={username},r={client_nonce}");
    send(
        io,
        format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-{}'>{}</auth>",
            hash.name(),
            B64.encode(format!("n,,{client_first_bare}"))
        )
        .as_bytes(),
    )
    .await?;
    let challenge = read_stanza(io, parser).await?;
    if challenge.name != "challenge" {
        bail!("signing in as {username}: {}", describe(&challenge));
    }
    let server_first = String::from_utf8(
        B64.decode(challenge.text_content().trim())
            .context("the SCRAM challenge is not base64")?,
    )
    .context("the SCRAM challenge is not UTF-8")?;
    let attribute = |name: char| {
        server_first
            .split(',')
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
    };
    let nonce = attribute('r').context("the SCRAM challenge has no nonce")?;
    if !nonce.starts_with(&client_nonce) {
        bail!("the server's SCRAM nonce does not extend ours");
    }
    let salt = B64
        .decode(attribute('s').context("the SCRAM challenge has no salt")?)
        .context("the SCRAM salt is not base64")?;
    let iterations: u32 = attribute('i')
        .context("the SCRAM challenge has no iteration count")?
        .parse()
        .context("the SCRAM iteration count")?;
    let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
    // `biws` is base64 of the GS2 header `n,,`: no channel binding, no authorization identity.
    let client_final_bare = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{client_final_bare}");
    let (proof, server_signature) = hash.client_proof(&salted, auth_message.as_bytes());
    send(
        io,
        format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(format!("{client_final_bare},p={}", B64.encode(proof)))
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = read_stanza(io, parser).await?;
    let expected = B64.encode(server_signature);
    let check = |e: &Element| -> anyhow::Result<()> {
        let server_final =
            String::from_utf8(B64.decode(e.text_content().trim()).unwrap_or_default())
                .unwrap_or_default();
        if server_final.strip_prefix("v=") != Some(expected.as_str()) {
            bail!("the server's SCRAM signature is wrong: {server_final:?}");
        }
        Ok(())
    };
    // RFC 6120 lets a server send the final message as a challenge answered by an empty
    // response, instead of as additional data with success.
    if answer.name == "challenge" {
        check(&answer)?;
        send(io, format!("<response xmlns='{NS_SASL}'/>").as_bytes()).await?;
        answer = read_stanza(io, parser).await?;
        if answer.name != "success" {
            bail!("signing in as {username}: {}", describe(&answer));
        }
        return Ok(());
    }
    if answer.name != "success" {
        bail!("signing in as {username}: {}", describe(&answer));
    }
    check(&answer)
}

/// A chat message stanza with `text` as body, XML-escaped.
pub fn chat_stanza(to: &str, id: &str, text: &str) -> String {
    let mut out = String::with_capacity(96 + to.len() + text.len());
    out.push_str("<message type='chat' to='");
    out.push_str(to);
    out.push_str("' id='");
    out.push_str(id);
    out.push_str("'><body>");
    tidings_xmpp::xml::escape_into(&mut out, text);
    out.push_str("</body></message>");
    out
}
