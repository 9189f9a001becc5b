//! Tests of loading, reloading and serving certificates over a real TLS handshake.

use super::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let (cert_pem, key_pem) = generate_self_signed().unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    (cert, key, der)
}

/// Performs a handshake against `tls` trusting only `trusted`, returning the certificate the
/// server presented.
async fn handshake(tls: &Tls, trusted: &CertificateDer<'static>) -> Result<Vec<u8>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.acceptor(&[b"http/1.1"]);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut stream) = acceptor.accept(tcp).await {
            let _ = stream.write_all(b"hi").await;
            let _ = stream.shutdown().await;
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    let out = match result {
        Ok(mut stream) => {
            let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await.unwrap();
            assert_eq!(buf, b"hi");
            Ok(presented)
        }
        Err(err) => Err(err.to_string()),
    };
    server.await.unwrap();
    out
}

#[tokio::test]
async fn serves_the_file_certificate_and_reloads_it_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = write_pair(dir.path(), "a");
    let tls = Tls::from_files(&cert, &key).unwrap();
    assert_eq!(handshake(&tls, &first).await.unwrap(), first.to_vec());
    assert!(!tls.reload().unwrap(), "unchanged files are not read again");

    // A renewal replaces both files; new connections get the new certificate.
    let (new_cert, new_key, second) = write_pair(dir.path(), "b");
    std::fs::rename(&new_cert, &cert).unwrap();
    std::fs::rename(&new_key, &key).unwrap();
    assert!(tls.reload().unwrap());
    assert_eq!(handshake(&tls, &second).await.unwrap(), second.to_vec());
    assert!(
        handshake(&tls, &first).await.is_err(),
        "the old certificate is gone"
    );
}

#[tokio::test]
async fn a_broken_renewal_keeps_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = write_pair(dir.path(), "a");
    let tls = Tls::from_files(&cert, &key).unwrap();
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::NoCertificate { .. })));
    assert_eq!(handshake(&tls, &first).await.unwrap(), first.to_vec());
}

#[test]
fn configuration_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = write_pair(dir.path(), "a");
    let (_, other_key, _) = write_pair(dir.path(), "b");
    assert!(
        Tls::from_config(&TlsConfig::default(), dir.path())
            .unwrap()
            .is_none()
    );
    let half = TlsConfig {
        cert_file: cert.clone(),
        ..TlsConfig::default()
    };
    assert!(matches!(
        Tls::from_config(&half, dir.path()),
        Err(TlsError::Incomplete)
    ));
    assert!(matches!(
        Tls::from_files(&cert, &other_key),
        Err(TlsError::Mismatch { .. })
    ));
    assert!(matches!(
        Tls::from_files(&key, &key),
        Err(TlsError::NoCertificate { .. })
    ));
    assert!(matches!(
        Tls::from_files(&dir.path().join("missing"), &key),
        Err(TlsError::Read { .. })
    ));
}

#[tokio::test]
async fn the_development_certificate_is_generated_once_with_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::dev(dir.path()).unwrap();
    let chain = tls.certificate_chain();
    assert_eq!(handshake(&tls, &chain[0]).await.unwrap(), chain[0].to_vec());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dev-tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = Tls::dev(dir.path()).unwrap();
    assert_eq!(again.certificate_chain(), chain, "reused, not regenerated");
}

#[test]
fn not_after_reads_the_generated_certificate() {
    let (tls, _) = Tls::self_signed_for_tests();
    // rcgen's default validity runs to 4096-01-01.
    assert_eq!(tls.not_after_unix(), Some(67_090_118_400));
}
