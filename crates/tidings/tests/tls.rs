//! HTTPS and WSS on the main listener with certificate files from the configuration: a real
//! HTTPS client (reqwest on rustls, trusting only the test CA) and `curl --cacert` get answers
//! with HSTS; a WebSocket over TLS authenticates; TLS 1.2 works as well as 1.3; and after the
//! files are replaced, a new connection sees the new certificate without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tidings_testkit::TestServer;

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // Key first, then the certificate: the reloader compares both, and a pair that does not
    // match is refused and retried, never served.
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
}

/// A fresh client (no pooled connection) that trusts only `ca_pem`.
fn client(ca_pem: &str, addr: std::net::SocketAddr, tls12_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if tls12_only {
        builder = builder.tls_version_max(reqwest::tls::Version::TLS_1_2);
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_reloaded_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate();
    write_pair(dir.path(), &first);
    let server = TestServer::start_with(|c| {
        c.tls.cert_file = dir.path().join("cert.pem");
        c.tls.key_file = dir.path().join("key.pem");
        c.tls.reload_interval_secs = 1;
    })
    .await;
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );
    let addr: std::net::SocketAddr = server
        .base_url
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", addr.port());

    // reqwest over TLS 1.3 (the default) and 1.2.
    for tls12 in [false, true] {
        let res = client(&first.0, addr, tls12)
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
    }
    // Plain HTTP on the TLS port is not served.
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );

    // curl, trusting the test CA.
    let ca = dir.path().join("ca-first.pem");
    std::fs::write(&ca, &first.0).unwrap();
    match tokio::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .arg(&url)
        .output()
        .await
    {
        Ok(out) => {
            let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(
                head.contains("strict-transport-security: max-age=31536000"),
                "{head}"
            );
        }
        Err(e) => assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but curl cannot run: {e}"
        ),
    }

    // The native protocol over WSS: the handshake, then an `auth` frame answered.
    server
        .core()
        .admin_create_user("secure", tidings_testkit::PASSWORD.into(), false)
        .await
        .unwrap();
    let tokens: serde_json::Value = client(&first.0, addr, false)
        .post(format!("https://localhost:{}/oauth/token", addr.port()))
        .form(&[
            ("grant_type", "password"),
            ("username", "secure"),
            ("password", tidings_testkit::PASSWORD),
            ("device_name", "wss"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = tokens["access_token"].as_str().unwrap().to_string();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(rcgen_der(&first.0)))
        .unwrap();
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", addr.port()), tls)
            .await
            .unwrap();
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let auth = serde_json::json!({"type": "auth", "id": "a1", "token": access_token});
        ws.send(Message::Text(auth.to_string().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
        assert_eq!(answer["id"], "a1", "{answer}");
        assert_ne!(answer["type"], "error", "{answer}");
    }

    // Replace the files: a new connection sees the new certificate, without a restart.
    let second = certificate();
    write_pair(dir.path(), &second);
    let mut switched = false;
    for _ in 0..100 {
        if client(&second.0, addr, false)
            .get(&url)
            .send()
            .await
            .is_ok()
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "new connections never saw the new certificate");
    // And the old certificate is no longer served.
    assert!(
        client(&first.0, addr, false)
            .get(&url)
            .send()
            .await
            .is_err()
    );
    server.stop().await;
}

/// The DER bytes of a PEM certificate.
fn rcgen_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}
