//! Wiring: opens the data directory, builds the store, bus and core, and serves HTTP.

use crate::config::{BusKind, Config, StoreKind};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tidings_bus::{Bus, InProcessBus};
use tidings_bus_nats::{NatsBus, NatsOptions};
use tidings_core::{Core, Deps, Keyring, SystemClock};
use tidings_files::{Blobs, Files};
use tidings_http::{AppState, HttpConfig};
use tidings_store::Store;
use tidings_store_postgres::{PgOptions, PgStore};
use tidings_store_sqlite::{SqliteOptions, SqliteStore};
use tidings_tls::Tls;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Creates the data directory with owner-only permissions.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Loads the token signing key, generating and persisting it (mode 0600) on first start.
pub fn load_or_create_key(data_dir: &Path) -> anyhow::Result<Keyring> {
    let path = data_dir.join("token-signing.ed25519");
    if path.exists() {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte Ed25519 seed", path.display()))?;
        return Ok(Keyring::from_seed(seed));
    }
    let seed = Keyring::generate_seed();
    // Write to a temporary name with 0600 from the start, then rename, so the secret is never
    // readable by others and a crash never leaves a truncated key behind.
    let tmp = data_dir.join("token-signing.ed25519.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(&seed)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    tracing::info!(path = %path.display(), "Generated a token signing key.");
    Ok(Keyring::from_seed(seed))
}

/// The TURN REST shared secret: configured, or loaded from `turn-secret` in the data directory,
/// generated (mode 0600) on first start.
pub fn load_or_create_turn_secret(config: &Config) -> anyhow::Result<String> {
    if !config.rtc.shared_secret.is_empty() {
        return Ok(config.rtc.shared_secret.clone());
    }
    let path = config.data_dir.join("turn-secret");
    if path.exists() {
        let secret =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let secret = secret.trim().to_string();
        anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
        return Ok(secret);
    }
    // The embedded TURN server starts before the store, so the directory may not exist yet.
    prepare_data_dir(&config.data_dir)?;
    let secret = tidings_core::tokens::random_token();
    let tmp = config.data_dir.join("turn-secret.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    tracing::info!(path = %path.display(), "Generated a TURN shared secret.");
    Ok(secret)
}

/// Binds the embedded STUN/TURN server when `rtc.turn_enabled`, and returns the configuration
/// with its URLs offered to clients first. A port that cannot be bound is an error an operator
/// must fix, but calls still work without relays, so the server starts anyway.
async fn start_turn(
    mut config: Config,
) -> anyhow::Result<(Config, Option<tidings_turn::TurnServer>)> {
    if !config.rtc.turn_enabled {
        return Ok((config, None));
    }
    let rtc = &config.rtc;
    let public_ip: std::net::IpAddr = match rtc.turn_public_ip.parse() {
        Ok(ip) => ip,
        Err(_) if !rtc.turn_listen.ip().is_unspecified() => rtc.turn_listen.ip(),
        Err(_) => std::net::IpAddr::from([127, 0, 0, 1]),
    };
    // Relay sockets bind where the listener does; clients are told the public address.
    let relay_ip = rtc.turn_listen.ip();
    let secret = load_or_create_turn_secret(&config)?;
    let turn_config = tidings_turn::TurnConfig {
        listen: rtc.turn_listen,
        relay_ip,
        relay_advertise: Some(public_ip),
        relay_ports: (rtc.turn_relay_port_min, rtc.turn_relay_port_max),
        realm: rtc.turn_realm.clone(),
        secret: secret.clone(),
        max_allocations_per_user: rtc.turn_max_allocations_per_user as usize,
        max_allocations: rtc.turn_max_allocations as usize,
        allow_loopback_peers: rtc.turn_allow_loopback_peers,
    };
    let server = match tidings_turn::TurnServer::bind(turn_config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(listen = %rtc.turn_listen, %e, "Cannot start the embedded TURN server; calls get no relay.");
            return Ok((config, None));
        }
    };
    let port = server.local_addr()?.port();
    let host = match public_ip {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    tracing::info!(addr = %server.local_addr()?, %public_ip, "The embedded TURN server is listening.");
    config.rtc.shared_secret = secret;
    config
        .rtc
        .stun_urls
        .insert(0, format!("stun:{host}:{port}"));
    config
        .rtc
        .turn_urls
        .insert(0, format!("turn:{host}:{port}?transport=udp"));
    Ok((config, Some(server)))
}

/// Opens the SQLite database in the data directory.
pub fn open_sqlite(config: &Config) -> anyhow::Result<SqliteStore> {
    prepare_data_dir(&config.data_dir)?;
    let path: PathBuf = config.data_dir.join("tidings.db");
    let options = SqliteOptions {
        read_connections: config.storage.read_connections as usize,
        cache_size_kib: config.storage.cache_size_kib,
        ..SqliteOptions::default()
    };
    SqliteStore::open(&path, options)
        .with_context(|| format!("cannot open database {}", path.display()))
}

/// Connects to PostgreSQL at `url` and brings its schema up to date.
pub async fn open_postgres(url: &str, max_connections: u32) -> anyhow::Result<PgStore> {
    let mut options = PgOptions::new(url);
    options.max_connections = max_connections.max(1) as usize;
    // The URL may carry a password: errors name the database by host only.
    PgStore::connect(options)
        .await
        .with_context(|| format!("cannot open the PostgreSQL database at {}", redact_url(url)))
}

/// A database URL without its user information (which may hold a password), for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Opens the configured store: SQLite in the data directory, or PostgreSQL.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store.kind {
        StoreKind::Sqlite => {
            let config = config.clone();
            // Opening runs migrations and file I/O: keep it off the async workers.
            let store = tokio::task::spawn_blocking(move || open_sqlite(&config)).await??;
            Arc::new(store)
        }
        StoreKind::Postgres => {
            prepare_data_dir(&config.data_dir)?;
            Arc::new(open_postgres(&config.store.url, config.store.max_connections).await?)
        }
    })
}

/// Opens the configured bus: in-process, or NATS.
pub async fn open_bus(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    let capacity = config.bus.capacity as usize;
    Ok(match config.bus.kind {
        BusKind::Local => Arc::new(InProcessBus::new(capacity)),
        BusKind::Nats => {
            let mut options = NatsOptions::new(config.bus.url.clone());
            options.subject_prefix = config.bus.subject_prefix.clone();
            options.capacity = capacity;
            Arc::new(NatsBus::connect(options).await.with_context(|| {
                format!("cannot connect to NATS at {}", redact_url(&config.bus.url))
            })?)
        }
    })
}

/// Builds a core for an operator command: like [`start_core`], with its janitor stopped, so
/// that no background pruning runs while the command reads or changes the data.
pub async fn start_core_without_janitor(
    config: &Config,
    bound: SocketAddr,
) -> anyhow::Result<Core> {
    let (core, tasks) = start_core_with_tasks(config, bound).await?;
    tasks.janitor.abort();
    tasks.retention.abort();
    Ok(core)
}

/// Builds a core on the configured store and bus without serving anything.
pub async fn start_core(config: &Config, bound: SocketAddr) -> anyhow::Result<Core> {
    Ok(start_core_with_tasks(config, bound).await?.0)
}

async fn start_core_with_tasks(
    config: &Config,
    bound: SocketAddr,
) -> anyhow::Result<(Core, tidings_core::CoreTasks)> {
    let store = open_store(config).await?;
    let bus = open_bus(config).await?;
    let keys = load_or_create_key(&config.data_dir)?;
    let deps = Deps {
        store,
        bus,
        clock: Arc::new(SystemClock),
        keys,
    };
    let mut core_config = config.core();
    core_config.rtc.shared_secret = load_or_create_turn_secret(config)?;
    Core::start(core_config, deps, config.issuer(bound))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the core: {e}"))
}

/// Opens file storage: the S3 bucket `files.s3_bucket` when set, else local disk under
/// `files.dir` (default: `files` in the data directory).
pub fn open_files(config: &Config, core: &Core) -> anyhow::Result<Files> {
    let dir = if config.files.dir.as_os_str().is_empty() {
        config.data_dir.join("files")
    } else {
        config.files.dir.clone()
    };
    let blobs = if config.files.s3_bucket.is_empty() {
        Blobs::local(&dir)
            .with_context(|| format!("cannot open file storage in {}", dir.display()))?
    } else {
        Blobs::s3(&config.files)
            .with_context(|| format!("cannot open S3 bucket {}", config.files.s3_bucket))?
    };
    // Download links are signed with a key derived from the token signing seed, which every
    // node of a deployment shares, so a link issued by one node works on all of them.
    let seed = fs::read(config.data_dir.join("token-signing.ed25519"))
        .context("cannot read the token signing key")?;
    let link_key: [u8; 32] =
        Sha256::digest([b"tidings.file-link-key.v1:".as_slice(), &seed].concat()).into();
    Ok(Files::new(
        Arc::clone(core.store()),
        blobs,
        Arc::new(SystemClock),
        config.files.clone(),
        link_key,
    ))
}

/// Loads (or makes, mode 0600) the VAPID key in the data directory and starts the push worker.
/// Several nodes must share this key as they share the token signing key: clients subscribed
/// with its public half.
fn start_push(config: &Config, core: &Core) -> anyhow::Result<JoinHandle<()>> {
    let path = config.data_dir.join("vapid.p256");
    let key = tidings_push::VapidKey::load_or_create(&path)
        .with_context(|| format!("cannot load the VAPID key {}", path.display()))?;
    let push = &config.push;
    let web = tidings_push::WebPusher::new(key, push.vapid_subject.clone())
        .context("cannot build the push HTTP client")?;
    fn configured(path: &str) -> Option<&std::path::Path> {
        (!path.is_empty()).then(|| std::path::Path::new(path))
    }
    let roots = match configured(&push.provider_ca_file) {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read push.provider_ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let fcm = match configured(&push.fcm_service_account) {
        Some(path) => {
            let client = tidings_push::provider_client(roots.as_deref(), false)
                .context("cannot build the FCM HTTP client")?;
            Some(
                tidings_push::FcmPusher::from_file(path, &push.fcm_base_url, client)
                    .context("cannot load push.fcm_service_account")?,
            )
        }
        None => None,
    };
    let apns = match configured(&push.apns_key_file) {
        Some(path) => {
            let client = tidings_push::provider_client(roots.as_deref(), true)
                .context("cannot build the APNs HTTP client")?;
            Some(
                tidings_push::ApnsPusher::from_file(
                    path,
                    &push.apns_key_id,
                    &push.apns_team_id,
                    &push.apns_topic,
                    &push.apns_base_url,
                    client,
                )
                .context("cannot load push.apns_key_file")?,
            )
        }
        None => None,
    };
    let providers = tidings_push::Providers { web, fcm, apns };
    Ok(core.start_push_worker(Arc::new(providers)))
}

/// A server that is running; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub addr: SocketAddr,
    /// The MQTT listener's address, when MQTT over TCP is enabled.
    pub mqtt_addr: Option<SocketAddr>,
    /// The XMPP client listener's address (STARTTLS), when XMPP is enabled.
    pub xmpp_addr: Option<SocketAddr>,
    /// The MQTT over TLS listener's address, when it is enabled.
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// The admin listener's address (metrics, health), when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The TLS identity every listener serves, when TLS is on.
    pub tls: Option<Tls>,
    pub core: Core,
    /// The file store the HTTP listener serves.
    pub files: Files,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, closes connections, waits for open requests, and returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.core.close_all_connections();
        self.task.await??;
        Ok(())
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }

    /// Stops when `signal` resolves.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Running {
            core,
            stop,
            mut task,
            ..
        } = self;
        tokio::select! {
            result = &mut task => { result??; return Ok(()); }
            () = signal => {}
        }
        tracing::info!("Shutting down.");
        let _ = stop.send(());
        core.close_all_connections();
        // Upgraded WebSocket connections are not the HTTP server's to wait for: give each a
        // moment to write its close frame (1001) before the process can exit under it.
        let drained = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while core.connection_count() > 0 && tokio::time::Instant::now() < drained {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        task.await??;
        Ok(())
    }
}

/// Loads the TLS identity the configuration asks for (files, or the development certificate),
/// and keeps it reloading when its files change.
pub fn open_tls(config: &Config) -> anyhow::Result<Option<Tls>> {
    let Some(tls) = Tls::from_config(&config.tls, &config.data_dir)? else {
        return Ok(None);
    };
    if config.tls.reload_interval_secs > 0 {
        tls.spawn_reloader(std::time::Duration::from_secs(
            config.tls.reload_interval_secs,
        ));
    }
    Ok(Some(tls))
}

/// Starts the server on an already bound listener.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let (config, turn) = start_turn(config).await?;
    let core = start_core(&config, addr).await?;
    // After the core, which prepares the data directory the development certificate goes in.
    let tls = open_tls(&config)?;
    let push_worker = start_push(&config, &core)?;
    let http: HttpConfig = config.http.clone();
    let files = open_files(&config, &core)?;
    let janitor = files.spawn_janitor();
    let oidc = tidings_http::oidc::Oidc::new(&config.oidc, core.issuer())
        .context("cannot set up single sign-on ([oidc])")?
        .map(std::sync::Arc::new);
    let mut app = tidings_http::router(AppState {
        core: core.clone(),
        config: http,
        files: files.clone(),
        oidc,
    });
    // MQTT is wired here rather than in the HTTP transport, so neither transport imports the
    // other: the HTTP router only gains a route.
    let gateway = tidings_mqtt::Gateway::new(core.clone(), config.mqtt.clone());
    // Persistent sessions and retained messages of the last run, before any client connects.
    gateway
        .restore()
        .await
        .context("cannot restore MQTT sessions from the store")?;
    let saving_gateway = gateway.clone();
    if config.mqtt.websocket {
        app = app.merge(tidings_mqtt::websocket_router(gateway.clone()));
    }
    let tls_gateway = gateway.clone();
    // The XMPP gateway, when XMPP is on: its listeners start below, and its WebSocket route
    // (RFC 7395) joins the HTTP router here, before the router is finished.
    let xmpp_gateway = if config.xmpp.enabled {
        // STARTTLS and direct TLS serve the server's one certificate; `xmpp-client` is the
        // ALPN protocol of direct TLS (XEP-0368), which STARTTLS clients simply do not send.
        let xmpp_tls = tls.as_ref().map(|t| t.server_config(&[b"xmpp-client"]));
        if xmpp_tls.is_none() && config.xmpp.tls_required {
            tracing::warn!(
                "XMPP requires TLS but none is configured ([tls] or --dev-tls): clients cannot sign in over TCP."
            );
        }
        // Upload slots (XEP-0363) point at the HTTP listener, as clients reach it.
        let base_url = if config.xmpp.upload_base_url.is_empty() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}:{}", config.xmpp.domain, addr.port())
        } else {
            config.xmpp.upload_base_url.trim_end_matches('/').to_owned()
        };
        let uploads = tidings_xmpp::conn::upload::Uploads {
            files: files.clone(),
            base_url,
        };
        let gateway = tidings_xmpp::Gateway::with_uploads(
            core.clone(),
            config.xmpp.clone(),
            xmpp_tls,
            Some(uploads),
        );
        if config.xmpp.websocket {
            // The route asks the HTTP transport's reading of `[http] trusted_proxies` whether
            // a client's TLS ended at a proxy of ours, and who is behind it.
            let proxies = std::sync::Arc::new(
                tidings_http::TrustedProxies::parse(&config.http.trusted_proxies)
                    .map_err(anyhow::Error::msg)
                    .context("http.trusted_proxies")?,
            );
            let behind = proxies.clone();
            let listener = tidings_xmpp::HttpListener::new(
                tls.is_some(),
                move |peer| proxies.contains(peer),
                move |peer, headers| {
                    behind.client(
                        peer,
                        headers
                            .get_all("x-forwarded-for")
                            .iter()
                            .filter_map(|value| value.to_str().ok()),
                    )
                },
            );
            app = app.merge(tidings_xmpp::websocket_router(gateway.clone(), listener));
        }
        Some(gateway)
    } else {
        None
    };
    // Last, so the merged routes get the security headers too (HSTS only when TLS is on).
    let app = tidings_http::finish(app, &config.http, tls.is_some());
    let (mqtt_stop, mqtt_stopped) = oneshot::channel::<()>();
    let mut mqtt_addr = None;
    let mqtt_task = if config.mqtt.enabled {
        let mqtt_listener = TcpListener::bind(config.mqtt.listen)
            .await
            .with_context(|| format!("cannot listen for MQTT on {}", config.mqtt.listen))?;
        mqtt_addr = Some(mqtt_listener.local_addr()?);
        tracing::info!(addr = %config.mqtt.listen, "MQTT is listening.");
        Some(tokio::spawn(tidings_mqtt::serve(
            mqtt_listener,
            gateway,
            async move {
                let _ = mqtt_stopped.await;
            },
        )))
    } else {
        None
    };
    let (xmpp_stop, xmpp_stopped) = tokio::sync::watch::channel(false);
    let mut xmpp_addr = None;
    let mut xmpp_tasks = Vec::new();
    if let Some(gateway) = xmpp_gateway {
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let xmpp_listener = TcpListener::bind(config.xmpp.listen)
            .await
            .with_context(|| format!("cannot listen for XMPP on {}", config.xmpp.listen))?;
        xmpp_addr = Some(xmpp_listener.local_addr()?);
        tracing::info!(addr = %config.xmpp.listen, "XMPP is listening.");
        xmpp_tasks.push(tokio::spawn(tidings_xmpp::serve(
            xmpp_listener,
            gateway.clone(),
            stopped(xmpp_stopped.clone()),
        )));
        if config.xmpp.direct_tls && gateway.tls.is_some() {
            let tls_listener = TcpListener::bind(config.xmpp.tls_listen)
                .await
                .with_context(|| format!("cannot listen for XMPP on {}", config.xmpp.tls_listen))?;
            tracing::info!(addr = %config.xmpp.tls_listen, "XMPP (direct TLS) is listening.");
            xmpp_tasks.push(tokio::spawn(tidings_xmpp::serve_tls(
                tls_listener,
                gateway,
                stopped(xmpp_stopped),
            )));
        }
    }
    let (mqtt_tls_stop, mqtt_tls_stopped) = oneshot::channel::<()>();
    let mut mqtt_tls_addr = None;
    let mqtt_tls_task = if config.mqtt.tls_enabled {
        let Some(tls) = &tls else {
            anyhow::bail!(
                "mqtt.tls_enabled needs a certificate: set [tls] cert_file and key_file, or start with --dev-tls"
            );
        };
        let tls_listener = TcpListener::bind(config.mqtt.tls_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for MQTT over TLS on {}",
                    config.mqtt.tls_listen
                )
            })?;
        mqtt_tls_addr = Some(tls_listener.local_addr()?);
        tracing::info!(addr = %config.mqtt.tls_listen, "MQTT over TLS is listening.");
        Some(tokio::spawn(tidings_mqtt::serve_tls(
            tls_listener,
            tls_gateway,
            tls.acceptor(&[b"mqtt"]),
            async move {
                let _ = mqtt_tls_stopped.await;
            },
        )))
    } else {
        None
    };
    let mut admin_addr = None;
    let admin_task = if config.admin.enabled {
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (config key `admin.listen`)",
                    config.admin.listen
                )
            })?;
        admin_addr = Some(admin_listener.local_addr()?);
        tracing::info!(addr = %config.admin.listen, "The admin listener (metrics, health) is listening.");
        let admin = tidings_http::admin_router(core.clone());
        Some(tokio::spawn(async move {
            let served = tidings_http::serve(admin_listener, admin, std::future::pending()).await;
            if let Err(e) = served {
                tracing::error!(%e, "The admin listener failed.");
            }
        }))
    } else {
        None
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (turn_stop, turn_stopped) = oneshot::channel::<()>();
    if let Some(turn) = turn {
        tokio::spawn(turn.run(async move {
            let _ = turn_stopped.await;
        }));
    }
    let shutdown = async move {
        let _ = stopped.await;
        let _ = mqtt_stop.send(());
        let _ = xmpp_stop.send(true);
        let _ = mqtt_tls_stop.send(());
        let _ = turn_stop.send(());
    };
    // The certificate's expiry as a metric (for the expiry alert), kept current across reloads.
    let expiry_task = tls.clone().map(|tls| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Some(not_after) = tls.not_after_unix() {
                    tidings_metrics::metrics().tls_cert_not_after.set(not_after);
                }
            }
        })
    });
    let task = match &tls {
        // HTTP/1.1 only: the transport is built on axum's http1 server.
        Some(tls) => tokio::spawn(tidings_http::serve_tls(
            listener,
            tls.server_config(&[b"http/1.1"]),
            app,
            shutdown,
        )),
        None => tokio::spawn(tidings_http::serve(listener, app, shutdown)),
    };
    // The janitor only deletes expired uploads; it stops with the server.
    let task = tokio::spawn(async move {
        let served = task.await;
        janitor.abort();
        // Metrics and health answer until the main listener has drained.
        if let Some(admin) = admin_task {
            admin.abort();
        }
        if let Some(expiry) = expiry_task {
            expiry.abort();
        }
        // Jobs it holds stay in the store, leased: they become due again for the next start.
        push_worker.abort();
        for mqtt in [mqtt_task, mqtt_tls_task].into_iter().flatten() {
            mqtt.await.map_err(std::io::Error::other)??;
        }
        // What changed in MQTT sessions since the last periodic save.
        saving_gateway.save().await;
        for xmpp in xmpp_tasks {
            xmpp.await.map_err(std::io::Error::other)??;
        }
        served.map_err(std::io::Error::other)?
    });
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        store = ?config.store.kind,
        bus = ?config.bus.kind,
        "Tidings is listening."
    );
    Ok(Running {
        addr,
        mqtt_addr,
        xmpp_addr,
        mqtt_tls_addr,
        admin_addr,
        tls,
        core,
        files,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            super::redact_url("postgres://u:secret@db:5432/t"),
            "postgres://***@db:5432/t"
        );
        assert_eq!(super::redact_url("postgres://db/t"), "postgres://db/t");
    }
}
