//! TLS for every Tidings listener (HTTPS and WSS, and the XMPP and MQTT gateways): certificates
//! from files that are reloaded when they change, or a self-signed development certificate.
//!
//! One [`Tls`] is built by the binary and handed to each listener, which asks it for a
//! `rustls::ServerConfig` with its own ALPN protocols. All those configurations share one
//! certificate resolver, so a reload (a changed file, or `SIGHUP`) reaches every listener at
//! once, and connections that are already open keep the certificate they started with.

mod der;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// TLS for the listeners. With neither files nor `dev`, TLS is off and the server speaks plain
/// HTTP (fine on loopback or behind a TLS-terminating proxy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes, in seconds (0: only on SIGHUP). A renewed
    /// certificate is served to new connections without a restart.
    pub reload_interval_secs: u64,
    /// Serve a self-signed certificate for localhost, generated once into the data directory
    /// (`tidings serve --dev-tls`). For development only; ignored when files are configured.
    pub dev: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            reload_interval_secs: 60,
            dev: false,
        }
    }
}

impl TlsConfig {
    /// Whether certificate files are configured.
    pub fn is_configured(&self) -> bool {
        !self.cert_file.as_os_str().is_empty() || !self.key_file.as_os_str().is_empty()
    }
}

/// Why TLS could not be set up. The messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: both cert_file and key_file must be set")]
    Incomplete,
    #[error("tls: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("tls: {path} holds no usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("tls: the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("tls: cannot write the development certificate into {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls: cannot generate a certificate: {0}")]
    Generate(String),
}

/// Certificate files and what was last loaded from them.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The bytes of both files at the last load. The files are a few kilobytes, so comparing
    /// contents is cheap, and unlike modification times it cannot miss a rewrite that lands in
    /// the same clock tick.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<Files>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The server's TLS identity, shared by every listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tls {
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
}

/// What a development or test certificate is issued for.
const LOCAL_NAMES: [&str; 4] = ["localhost", "127.0.0.1", "::1", "tidings.localhost"];

impl Tls {
    /// Loads the configured files, or the development certificate from `data_dir` when `dev`
    /// is set, or `None` when TLS is off.
    pub fn from_config(config: &TlsConfig, data_dir: &Path) -> Result<Option<Tls>, TlsError> {
        if !config.is_configured() {
            return if config.dev {
                Tls::dev(data_dir).map(Some)
            } else {
                Ok(None)
            };
        }
        if config.cert_file.as_os_str().is_empty() || config.key_file.as_os_str().is_empty() {
            return Err(TlsError::Incomplete);
        }
        Tls::from_files(&config.cert_file, &config.key_file).map(Some)
    }

    /// Loads a certificate chain and key from PEM files; [`Tls::reload`] reads them again.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let provider = provider();
        let (cert_pem, key_pem) = read_pair(cert, key)?;
        let certified = load(&provider, cert, key, &cert_pem, &key_pem)?;
        Ok(Tls {
            resolver: Arc::new(Resolver {
                current: RwLock::new(Arc::new(certified)),
                files: Some(Files {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    loaded: Mutex::new((cert_pem, key_pem)),
                }),
            }),
            provider,
        })
    }

    /// The development certificate of `tidings serve --dev-tls`: generated on first use into
    /// `<data_dir>/dev-tls/` (the key with owner-only permissions) and reused afterwards, so a
    /// browser exception made once keeps working. Valid for localhost and the loopback addresses.
    pub fn dev(data_dir: &Path) -> Result<Tls, TlsError> {
        let dir = data_dir.join("dev-tls");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        if !cert.exists() || !key.exists() {
            let (cert_pem, key_pem) = generate_self_signed()?;
            std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write {
                path: dir.clone(),
                source,
            })?;
            write_private(&key, key_pem.as_bytes())?;
            std::fs::write(&cert, cert_pem).map_err(|source| TlsError::Write {
                path: cert.clone(),
                source,
            })?;
        }
        Tls::from_files(&cert, &key)
    }

    /// A fresh in-memory self-signed identity for tests, with the certificate a client should
    /// trust.
    pub fn self_signed_for_tests() -> (Tls, CertificateDer<'static>) {
        let (cert_pem, key_pem) = generate_self_signed().expect("generate a test certificate");
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("parse it back");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("parse the key back");
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .expect("load the test key");
        let certified = CertifiedKey::new(vec![cert.clone()], signing);
        let tls = Tls {
            resolver: Arc::new(Resolver {
                current: RwLock::new(Arc::new(certified)),
                files: None,
            }),
            provider,
        };
        (tls, cert)
    }

    /// A server configuration offering `alpn` (e.g. `[b"h2", b"http/1.1"]`, or `[b"xmpp-client"]`),
    /// TLS 1.3 and 1.2 with the provider's modern cipher suites only (AEAD, forward secrecy).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A tokio acceptor over [`Tls::server_config`].
    pub fn acceptor(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config(alpn))
    }

    /// The certificate chain currently served, leaf first.
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.resolver
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .clone()
    }

    /// When the leaf certificate expires, in seconds since the Unix epoch (for the expiry metric
    /// and alert); `None` if the certificate cannot be read that far.
    pub fn not_after_unix(&self) -> Option<i64> {
        let chain = self.certificate_chain();
        der::not_after_unix(chain.first()?.as_ref())
    }

    /// Reads the files again if they changed since the last load. Returns whether a new
    /// certificate is now served. On an error the previous certificate stays in service (a
    /// half-written file during a renewal must not take the server down); the caller logs it.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.resolver.files else {
            return Ok(false);
        };
        let now = read_pair(&files.cert, &files.key)?;
        let mut last = files.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now == *last {
            return Ok(false);
        }
        let certified = load(&self.provider, &files.cert, &files.key, &now.0, &now.1)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        *last = now;
        Ok(true)
    }

    /// Checks the files every `interval` and reloads them when they change, logging the
    /// outcome. Runs until the runtime shuts down.
    pub fn spawn_reloader(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                tls.reload_and_log();
            }
        })
    }

    /// [`Tls::reload`], with its outcome in the log (for the reloader and `SIGHUP`).
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(true) => {
                tracing::info!(not_after = ?self.not_after_unix(), "tls: certificate reloaded")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%err, "tls: reload failed; the previous certificate stays in service")
            }
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn load(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let bad_key = |reason: String| TlsError::BadKey {
        path: key.to_path_buf(),
        reason,
    };
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| bad_key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // A key type the check cannot inspect is accepted; a key that is known not to match
        // would fail every handshake, so it is refused here, at start-up or reload.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
    }
}

/// A self-signed ECDSA P-256 certificate for the local names, as PEM (certificate, key).
fn generate_self_signed() -> Result<(String, String), TlsError> {
    let names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.pem(), signing_key.serialize_pem()))
}

/// Writes a secret file readable by its owner only, created with that mode so it is never
/// briefly readable by others.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
