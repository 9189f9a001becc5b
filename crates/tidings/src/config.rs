//! The configuration: defaults, then a TOML file, then `TIDINGS_*` variables, then flags.
//!
//! This is the only place that reads configuration. The environment comes in as a map, so
//! tests pass their own instead of mutating the process environment. Every key has an
//! environment variable: the key path in upper case joined by `_` (`limits.max_message_bytes`
//! is `TIDINGS_LIMITS_MAX_MESSAGE_BYTES`; top-level `listen` is `TIDINGS_LISTEN`).
//! A bad value stops start-up with a message naming the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tidings_core::config::{
    AccountsConfig, AuditConfig, CallsConfig, LimitsConfig, MessagesConfig, RtcConfig, TokensConfig,
};
use tidings_files::FilesConfig;
use tidings_http::HttpConfig;
use tidings_mqtt::MqttConfig;
use tidings_oidc::OidcConfig;
use tidings_tls::TlsConfig;
use tidings_xmpp::XmppConfig;

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. "info" or "info,tidings_core=debug".
    pub level: String,
    /// "text" for people, "json" for log collectors.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The embedded SQLite database (used when `store.kind` is "sqlite").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Read-only connections used for queries alongside the single writer.
    pub read_connections: u32,
    /// Page cache per connection in KiB.
    pub cache_size_kib: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            read_connections: 4,
            cache_size_kib: 16 * 1024,
        }
    }
}

/// Which database holds the durable state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory (one node).
    Sqlite,
    /// A PostgreSQL database, which several nodes can share.
    Postgres,
}

/// Where durable state lives: the embedded SQLite database (tuned under `[storage]`) for a
/// single node, or PostgreSQL for several nodes sharing one database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// "sqlite" or "postgres".
    pub kind: StoreKind,
    /// For "postgres": the database URL, e.g. "postgres://tidings@db.internal:5432/tidings"
    /// (TLS is not supported; keep the database on a private network). A password in the URL is
    /// never logged; prefer the TIDINGS_STORE_URL variable to a file for it.
    pub url: String,
    /// For "postgres": connections in this node's pool.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            url: String::new(),
            max_connections: 16,
        }
    }
}

/// Which bus carries events between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// In-process: one node.
    Local,
    /// NATS: every node publishes its events there and delivers what it hears.
    Nats,
}

/// How events (new messages, receipts, presence, typing) reach the connections of every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// "local" for a single node, "nats" for several.
    pub kind: BusKind,
    /// For "nats": the server URL, e.g. "nats://127.0.0.1:4222".
    pub url: String,
    /// For "nats": the subject prefix; every node of a deployment uses the same one, and two
    /// deployments sharing a NATS server must use different ones.
    pub subject_prefix: String,
    /// Events buffered between the bus and this node's dispatcher.
    pub capacity: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Local,
            url: String::new(),
            subject_prefix: "tidings".into(),
            capacity: 65_536,
        }
    }
}

/// The admin listener: Prometheus metrics (`/metrics`) and health checks (`/healthz`,
/// `/readyz`) for the operator, apart from the public listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether to serve the admin listener at all.
    pub enabled: bool,
    /// Its address. Metrics reveal traffic patterns: keep it on loopback or a private network.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// OpenTelemetry traces exported over OTLP (HTTP, protobuf): spans for HTTP requests,
/// WebSocket frames, commits and push deliveries, with request and connection ids. Spans never
/// carry tokens, passwords or message content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Whether to export traces at all.
    pub enabled: bool,
    /// The OTLP/HTTP traces endpoint of a collector, e.g. "http://127.0.0.1:4318/v1/traces".
    pub endpoint: String,
    /// The `service.name` resource attribute (tell nodes apart with `service_instance`).
    pub service_name: String,
    /// The `service.instance.id` resource attribute; empty leaves it out.
    pub service_instance: String,
    /// The share of traces kept, from 0.0 (none) to 1.0 (all). A span whose parent was sampled
    /// is always kept, so a trace is never cut in half.
    pub sampling_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            service_name: "tidings".into(),
            service_instance: String::new(),
            sampling_ratio: 1.0,
        }
    }
}

/// Everything `tidings serve` can be configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Directory for the database and generated keys; created with owner-only permissions.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub store: StoreConfig,
    pub bus: BusConfig,
    pub accounts: AccountsConfig,
    pub tokens: TokensConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub messages: MessagesConfig,
    pub calls: CallsConfig,
    pub rtc: RtcConfig,
    pub files: FilesConfig,
    pub mqtt: MqttConfig,
    pub admin: AdminConfig,
    pub push: tidings_core::push::PushConfig,
    pub xmpp: XmppConfig,
    /// Sign-in with external OpenID Connect providers (docs/oauth.md).
    pub oidc: OidcConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("tidings-data"),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            storage: StorageConfig::default(),
            store: StoreConfig::default(),
            bus: BusConfig::default(),
            accounts: AccountsConfig::default(),
            tokens: TokensConfig::default(),
            limits: LimitsConfig::default(),
            audit: AuditConfig::default(),
            messages: MessagesConfig::default(),
            calls: CallsConfig::default(),
            rtc: RtcConfig::default(),
            files: FilesConfig::default(),
            mqtt: MqttConfig::default(),
            admin: AdminConfig::default(),
            push: tidings_core::push::PushConfig::default(),
            xmpp: XmppConfig::default(),
            oidc: OidcConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// The core's part of the configuration.
    pub fn core(&self) -> tidings_core::CoreConfig {
        tidings_core::CoreConfig {
            accounts: self.accounts.clone(),
            tokens: self.tokens.clone(),
            limits: self.limits.clone(),
            audit: self.audit.clone(),
            messages: self.messages.clone(),
            push: self.push.clone(),
            calls: self.calls.clone(),
            rtc: self.rtc.clone(),
        }
    }

    /// The OAuth issuer: configured, or derived from the listen address.
    pub fn issuer(&self, bound: SocketAddr) -> String {
        if self.tokens.issuer.is_empty() {
            format!("http://{bound}")
        } else {
            self.tokens.issuer.trim_end_matches('/').to_string()
        }
    }
}

/// Why configuration could not be loaded. Every message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var} (config key `{key}`): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown environment variable {0}: no config key has that name")]
    UnknownEnv(String),
}

/// Overrides given as command-line flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// Variables with the prefix that are not config keys but are still ours.
const NON_KEY_VARS: &[&str] = &["TIDINGS_CONFIG"];

/// Loads the configuration from the layers, in order of increasing precedence.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let text = match file {
        Some(path) => Some((
            path,
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        )),
        None => None,
    };
    from_text(
        text.as_ref().map(|(path, text)| (*path, text.as_str())),
        env,
        overrides,
    )
}

/// Loads the configuration from the text of a config file (named by its path in errors)
/// instead of reading it: the part of [`load`] that parses untrusted bytes, apart so the
/// fuzzer (`fuzz/fuzz_targets/config_toml.rs`) drives it without touching the disk.
pub fn from_text(
    file: Option<(&Path, &str)>,
    env: &BTreeMap<String, String>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut value = toml::Value::try_from(Config::default()).expect("defaults serialize");
    if let Some((path, text)) = file {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        merge(&mut value, toml::Value::Table(table));
    }
    apply_env(&mut value, env)?;
    if let Some(listen) = overrides.listen {
        value["listen"] = toml::Value::String(listen.to_string());
    }
    if let Some(dir) = &overrides.data_dir {
        value["data_dir"] = toml::Value::String(dir.display().to_string());
    }
    let config: Config =
        serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            key: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    validate(&config)?;
    Ok(config)
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (k, v) in overlay {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    // Unknown keys stay so deserialization can name them.
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Every leaf key of the defaults as a dotted path, with its default value.
fn leaves(value: &toml::Value, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn env_name(key: &str) -> String {
    format!("TIDINGS_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn apply_env(value: &mut toml::Value, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut keys = Vec::new();
    leaves(
        &toml::Value::try_from(Config::default()).expect("defaults serialize"),
        "",
        &mut keys,
    );
    let known: BTreeMap<String, (String, toml::Value)> = keys
        .into_iter()
        .map(|(key, default)| (env_name(&key), (key, default)))
        .collect();
    for (var, raw) in env.iter().filter(|(k, _)| k.starts_with("TIDINGS_")) {
        if NON_KEY_VARS.contains(&var.as_str()) {
            continue;
        }
        let Some((key, default)) = known.get(var) else {
            return Err(ConfigError::UnknownEnv(var.clone()));
        };
        let env_err = |message: String| ConfigError::Env {
            var: var.clone(),
            key: key.clone(),
            message,
        };
        let parsed = match default {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|e| env_err(format!("expected an integer: {e}")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                raw.trim()
                    .parse()
                    .map_err(|_| env_err("expected true or false".into()))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                raw.trim()
                    .parse()
                    .map_err(|e| env_err(format!("expected a number: {e}")))?,
            ),
            // Lists (such as `mqtt.broker_rules`) are written as a TOML inline array.
            toml::Value::Array(_) => format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(toml::Value::is_array)
                .ok_or_else(|| {
                    env_err("expected a TOML array, e.g. [{ pattern = \"#\", read = true }]".into())
                })?,
            _ => toml::Value::String(raw.clone()),
        };
        let mut slot = &mut *value;
        for part in key.split('.') {
            slot = slot
                .get_mut(part)
                .ok_or_else(|| env_err("no such key".into()))?;
        }
        *slot = parsed;
    }
    Ok(())
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: &str| {
        Err(ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        })
    };
    for origin in &config.http.cors_origins {
        let plain = origin == "*"
            || ((origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').contains(['?', '#', ' ', ','])
                && origin.split("://").nth(1).is_some_and(|rest| {
                    !rest.trim_end_matches('/').is_empty()
                        && !rest.trim_end_matches('/').contains('/')
                }));
        if !plain {
            return invalid(
                "http.cors_origins",
                "each entry must be an origin such as \"https://chat.example.com\" (scheme, host, optional port) or \"*\"",
            );
        }
    }
    if let Err(message) = config.oidc.validate() {
        return invalid("oidc.providers", &message);
    }

    let telemetry = &config.telemetry;
    // `contains` is false for NaN, so a NaN ratio is refused too.
    if !(0.0..=1.0).contains(&telemetry.sampling_ratio) {
        return invalid("telemetry.sampling_ratio", "must be between 0.0 and 1.0");
    }
    if telemetry.enabled
        && !(telemetry.endpoint.starts_with("http://")
            || telemetry.endpoint.starts_with("https://"))
    {
        return invalid(
            "telemetry.endpoint",
            "must be an http:// or https:// URL of an OTLP/HTTP traces endpoint",
        );
    }
    if telemetry.enabled && telemetry.service_name.trim().is_empty() {
        return invalid("telemetry.service_name", "must not be empty");
    }
    if config.files.max_file_bytes == 0 {
        return invalid("files.max_file_bytes", "must be greater than 0");
    }
    if config.files.upload_expiry_secs == 0 {
        return invalid("files.upload_expiry_secs", "must be at least 1");
    }
    let push = &config.push;
    if push.concurrency == 0 || push.claim_batch == 0 || push.max_attempts == 0 {
        return invalid(
            "push",
            "concurrency, claim_batch and max_attempts must be at least 1",
        );
    }
    if !(push.vapid_subject.starts_with("mailto:") || push.vapid_subject.starts_with("https:")) {
        return invalid("push.vapid_subject", "must be a mailto: or https: URL");
    }
    let mqtt = &config.mqtt;
    if mqtt.max_packet_bytes < 128 {
        return invalid("mqtt.max_packet_bytes", "must be at least 128");
    }
    if mqtt.receive_maximum == 0 {
        return invalid("mqtt.receive_maximum", "must be at least 1");
    }
    if mqtt.max_inflight == 0 || mqtt.max_inflight > 10_000 {
        return invalid("mqtt.max_inflight", "must be between 1 and 10000");
    }
    let xmpp = &config.xmpp;
    if xmpp.max_stanza_bytes < 1024 {
        return invalid("xmpp.max_stanza_bytes", "must be at least 1024");
    }
    if xmpp.max_depth == 0 || xmpp.max_attributes == 0 {
        return invalid("xmpp.max_depth", "depth and attributes must be at least 1");
    }
    if xmpp.stanzas_per_second == 0 || xmpp.stanza_burst == 0 {
        return invalid(
            "xmpp.stanzas_per_second",
            "rate and burst must be at least 1",
        );
    }
    if xmpp.domain.is_empty() || xmpp.domain.contains(['@', '/', ' ']) {
        return invalid("xmpp.domain", "must be a domain name");
    }
    if xmpp.status_addresses.iter().any(|a| {
        !(a.starts_with("https://") || a.starts_with("http://"))
            || a.len() > 2048
            || a.contains(char::is_whitespace)
    }) {
        return invalid(
            "xmpp.status_addresses",
            "each must be an http:// or https:// URL of at most 2048 bytes",
        );
    }
    let limits = &config.limits;
    if limits.max_message_bytes == 0 {
        return invalid("limits.max_message_bytes", "must be greater than 0");
    }
    if limits.max_message_bytes + 1024 > config.http.ws_max_frame_bytes {
        return invalid(
            "http.ws_max_frame_bytes",
            "must exceed limits.max_message_bytes by at least 1024 bytes of envelope",
        );
    }
    if limits.max_device_signal_bytes == 0 {
        return invalid("limits.max_device_signal_bytes", "must be greater than 0");
    }
    if limits.max_device_signal_bytes + 1024 > config.http.ws_max_frame_bytes {
        return invalid(
            "http.ws_max_frame_bytes",
            "must exceed limits.max_device_signal_bytes by at least 1024 bytes of envelope",
        );
    }
    if limits.max_group_members < 2 {
        return invalid("limits.max_group_members", "must be at least 2");
    }
    for (key, v) in [
        ("limits.sync_page", limits.sync_page as usize),
        ("limits.outbound_queue", limits.outbound_queue),
        ("limits.max_in_flight", limits.max_in_flight),
        ("limits.max_commit_batch", limits.max_commit_batch),
        ("limits.max_history_page", limits.max_history_page as usize),
        ("limits.max_user_xml_bytes", limits.max_user_xml_bytes),
        (
            "limits.max_user_xml_items",
            limits.max_user_xml_items as usize,
        ),
        (
            "messages.retention_interval_secs",
            config.messages.retention_interval_secs as usize,
        ),
        (
            "rtc.credential_ttl_secs",
            config.rtc.credential_ttl_secs as usize,
        ),
        (
            "calls.ring_timeout_secs",
            config.calls.ring_timeout_secs as usize,
        ),
        (
            "messages.retention_batch",
            config.messages.retention_batch as usize,
        ),
        (
            "messages.max_reaction_keys",
            config.messages.max_reaction_keys,
        ),
        (
            "storage.read_connections",
            config.storage.read_connections as usize,
        ),
    ] {
        if v == 0 {
            return invalid(key, "must be greater than 0");
        }
    }
    if config.store.kind == StoreKind::Postgres {
        if config.store.url.is_empty() {
            return invalid("store.url", "is required when store.kind is \"postgres\"");
        }
        if tidings_store_postgres::validate_url(&config.store.url).is_err() {
            return invalid("store.url", "is not a valid PostgreSQL URL");
        }
        if config.store.max_connections == 0 {
            return invalid("store.max_connections", "must be greater than 0");
        }
    }
    if config.bus.kind == BusKind::Nats && config.bus.url.is_empty() {
        return invalid("bus.url", "is required when bus.kind is \"nats\"");
    }
    let rtc = &config.rtc;
    if rtc.turn_relay_port_min == 0 || rtc.turn_relay_port_min > rtc.turn_relay_port_max {
        return invalid(
            "rtc.turn_relay_port_min",
            "must be at least 1 and at most rtc.turn_relay_port_max",
        );
    }
    if !rtc.turn_public_ip.is_empty() && rtc.turn_public_ip.parse::<std::net::IpAddr>().is_err() {
        return invalid("rtc.turn_public_ip", "must be an IP address");
    }
    if rtc.turn_realm.is_empty() {
        return invalid("rtc.turn_realm", "must not be empty");
    }
    if config.bus.capacity == 0 {
        return invalid("bus.capacity", "must be greater than 0");
    }
    if config.tokens.access_ttl_secs < 10 {
        return invalid("tokens.access_ttl_secs", "must be at least 10 seconds");
    }
    if config.tokens.refresh_ttl_secs < config.tokens.access_ttl_secs {
        return invalid(
            "tokens.refresh_ttl_secs",
            "must be at least tokens.access_ttl_secs",
        );
    }
    if let Err(message) = tidings_http::TrustedProxies::parse(&config.http.trusted_proxies) {
        return invalid("http.trusted_proxies", &message);
    }
    if config.http.ws_read_buffer_bytes < 256 {
        return invalid("http.ws_read_buffer_bytes", "must be at least 256");
    }
    if config.accounts.min_password_length < 8 {
        return invalid("accounts.min_password_length", "must be at least 8");
    }
    if tidings_core::passwords::PasswordHashing::new(
        config.accounts.argon2_memory_kib,
        config.accounts.argon2_iterations,
    )
    .is_err()
    {
        return invalid(
            "accounts.argon2_memory_kib",
            "argon2 rejects this memory and iteration cost",
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&config.log.level).is_err() {
        return invalid("log.level", "not a valid tracing filter");
    }
    Ok(())
}

/// The documented example configuration, generated from the structs' doc comments and
/// defaults. `cargo xtask codegen` writes it to `tidings.example.toml`.
pub fn example_toml() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schema serializes");
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut out = String::from(
        "# Tidings configuration. Every key is optional; the values shown are the defaults.\n\
         # Generated by `cargo xtask codegen` from crates/tidings/src/config.rs; do not edit.\n\
         # Each key can also be set through an environment variable named after its path:\n\
         # `listen` is TIDINGS_LISTEN, `limits.max_message_bytes` is TIDINGS_LIMITS_MAX_MESSAGE_BYTES.\n\
         # Pass this file with `tidings serve --config FILE` or TIDINGS_CONFIG=FILE.\n",
    );
    let defs = &schema["$defs"];
    let resolve = |s: &serde_json::Value| -> serde_json::Value {
        match s.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => defs[r.trim_start_matches("#/$defs/")].clone(),
            None => s.clone(),
        }
    };
    let table = defaults.as_table().expect("config is a table");
    let props = &schema["properties"];
    // Top-level scalars first, then one section per table, as TOML requires.
    for (key, value) in table.iter().filter(|(_, v)| !v.is_table()) {
        write_key(&mut out, key, value, &resolve(&props[key]));
    }
    for (section, value) in table.iter().filter(|(_, v)| v.is_table()) {
        let section_schema = resolve(&props[section]);
        out.push('\n');
        if let Some(doc) = section_schema["description"].as_str() {
            for line in doc.lines() {
                out.push_str(&format!("# {line}\n"));
            }
        }
        out.push_str(&format!("[{section}]\n"));
        for (key, v) in value.as_table().expect("section is a table") {
            write_key(
                &mut out,
                key,
                v,
                &resolve(&section_schema["properties"][key]),
            );
        }
    }
    out
}

fn write_key(out: &mut String, key: &str, value: &toml::Value, schema: &serde_json::Value) {
    if let Some(doc) = schema["description"].as_str() {
        for line in doc.lines() {
            out.push_str(&format!("# {line}\n"));
        }
    }
    // A list of tables is written inline: as `[[key]]` it would have to come after every
    // plain key of its section.
    if let Some(items) = value.as_array()
        && items.iter().all(toml::Value::is_table)
    {
        out.push_str(&format!("{key} = [\n"));
        for item in items {
            out.push_str(&format!("    {item},\n"));
        }
        out.push_str("]\n");
        return;
    }
    let mut table = toml::Table::new();
    table.insert(key.to_string(), value.clone());
    out.push_str(&toml::to_string(&table).expect("value serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        for name in ["single-node.toml", "cluster-node.toml"] {
            let config = load(
                Some(&dir.join(name)),
                &BTreeMap::new(),
                &Overrides::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(config.admin.enabled, "{name}");
        }
    }

    #[test]
    fn cors_origins_must_be_origins() {
        for good in ["https://chat.example.com", "http://127.0.0.1:8080", "*"] {
            let vars = env(&[("TIDINGS_HTTP_CORS_ORIGINS", &format!("[\"{good}\"]"))]);
            assert!(load(None, &vars, &Overrides::default()).is_ok(), "{good}");
        }
        for bad in [
            "chat.example.com",
            "https://a.b/path",
            "https://",
            "https://a b",
        ] {
            let vars = env(&[("TIDINGS_HTTP_CORS_ORIGINS", &format!("[\"{bad}\"]"))]);
            let err = load(None, &vars, &Overrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("http.cors_origins"),
                "{bad}: {err}"
            );
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn xmpp_status_addresses_must_be_http_urls() {
        let vars = env(&[(
            "TIDINGS_XMPP_STATUS_ADDRESSES",
            r#"["https://status.example.com/xmpp.json"]"#,
        )]);
        let config = load(None, &vars, &Overrides::default()).unwrap();
        assert_eq!(
            config.xmpp.status_addresses,
            ["https://status.example.com/xmpp.json"]
        );
        let bad = env(&[("TIDINGS_XMPP_STATUS_ADDRESSES", r#"["status.example.com"]"#)]);
        let err = load(None, &bad, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("xmpp.status_addresses"), "{err}");
    }

    #[test]
    fn broker_rules_come_from_the_environment_as_a_toml_array() {
        let vars = env(&[(
            "TIDINGS_MQTT_BROKER_RULES",
            r##"[{ pattern = "#", read = true, write = true }]"##,
        )]);
        let config = load(None, &vars, &Overrides::default()).unwrap();
        assert_eq!(config.mqtt.broker_rules.len(), 1);
        assert_eq!(config.mqtt.broker_rules[0].pattern, "#");
        assert!(config.mqtt.broker_rules[0].write);
        let bad = env(&[("TIDINGS_MQTT_BROKER_RULES", "users/#")]);
        assert!(load(None, &bad, &Overrides::default()).is_err());
    }

    #[test]
    fn defaults_need_nothing() {
        let config = load(None, &BTreeMap::new(), &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("tidings-data"));
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[limits]\nmax_message_bytes = 1000\n",
        )
        .unwrap();
        let vars = env(&[
            ("TIDINGS_LISTEN", "127.0.0.1:9001"),
            ("TIDINGS_LIMITS_MAX_GROUP_MEMBERS", "50"),
            ("TIDINGS_ACCOUNTS_REGISTRATION", "invite"),
            ("PATH", "/usr/bin"),
        ]);
        let config = load(Some(&file), &vars, &Overrides::default()).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.limits.max_message_bytes, 1000);
        assert_eq!(config.limits.max_group_members, 50);
        let flags = Overrides {
            listen: Some("127.0.0.1:9002".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
        };
        let config = load(Some(&file), &vars, &flags).unwrap();
        assert_eq!(config.listen.port(), 9002);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn device_signal_limit_is_checked() {
        let path = Path::new("t.toml");
        let load_text =
            |text: &str| from_text(Some((path, text)), &env(&[]), &Overrides::default());
        let ok = load_text("[limits]\nmax_device_signal_bytes = 1000\n").unwrap();
        assert_eq!(ok.limits.max_device_signal_bytes, 1000);
        for (text, key) in [
            (
                "[limits]\nmax_device_signal_bytes = 0\n",
                "limits.max_device_signal_bytes",
            ),
            (
                "[limits]\nmax_device_signal_bytes = 262144\n",
                "http.ws_max_frame_bytes",
            ),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn telemetry_settings_are_checked() {
        let path = Path::new("t.toml");
        let load_text =
            |text: &str| from_text(Some((path, text)), &env(&[]), &Overrides::default());
        let on = load_text(
            "[telemetry]\nenabled = true\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nsampling_ratio = 0.25\n",
        )
        .unwrap();
        assert!(on.telemetry.enabled);
        assert_eq!(on.telemetry.sampling_ratio, 0.25);
        for (text, key) in [
            (
                "[telemetry]\nsampling_ratio = nan\n",
                "telemetry.sampling_ratio",
            ),
            (
                "[telemetry]\nsampling_ratio = 1.5\n",
                "telemetry.sampling_ratio",
            ),
            (
                "[telemetry]\nenabled = true\nendpoint = \"127.0.0.1:4318\"\n",
                "telemetry.endpoint",
            ),
            (
                "[telemetry]\nenabled = true\nservice_name = \" \"\n",
                "telemetry.service_name",
            ),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load(
            None,
            &env(&[("TIDINGS_LIMITS_MAX_MESSAGE_BYTES", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.max_message_bytes"), "{err}");
        assert!(err.contains("TIDINGS_LIMITS_MAX_MESSAGE_BYTES"), "{err}");

        let err = load(
            None,
            &env(&[("TIDINGS_LISTEN", "nowhere")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen"), "{err}");

        let err = load(
            None,
            &env(&[("TIDINGS_LIMITS_SYNC_PAGE", "0")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.sync_page"), "{err}");

        let err = load(
            None,
            &env(&[("TIDINGS_LIMTS_X", "1")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TIDINGS_LIMTS_X"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[limits]\nmax_mesage_bytes = 5\n").unwrap();
        let err = load(Some(&file), &BTreeMap::new(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_mesage_bytes"), "{err}");

        std::fs::write(&file, "[accounts]\nregistration = \"sometimes\"\n").unwrap();
        let err = load(Some(&file), &BTreeMap::new(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("accounts.registration"), "{err}");
    }

    #[test]
    fn scaled_out_backends_need_their_urls() {
        let vars = env(&[
            ("TIDINGS_STORE_KIND", "postgres"),
            (
                "TIDINGS_STORE_URL",
                "postgres://tidings@127.0.0.1:5432/tidings",
            ),
            ("TIDINGS_BUS_KIND", "nats"),
            ("TIDINGS_BUS_URL", "nats://127.0.0.1:4222"),
        ]);
        let config = load(None, &vars, &Overrides::default()).unwrap();
        assert_eq!(config.store.kind, StoreKind::Postgres);
        assert_eq!(config.bus.kind, BusKind::Nats);

        let err = load(
            None,
            &env(&[("TIDINGS_STORE_KIND", "postgres")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store.url"), "{err}");
        let err = load(
            None,
            &env(&[("TIDINGS_BUS_KIND", "nats")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bus.url"), "{err}");
        let err = load(
            None,
            &env(&[("TIDINGS_STORE_KIND", "mysql")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store.kind"), "{err}");
    }

    #[test]
    fn example_parses_back_to_the_defaults() {
        let text = example_toml();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("example.toml");
        std::fs::write(&file, &text).unwrap();
        let config = load(Some(&file), &BTreeMap::new(), &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
        assert!(text.contains("# Largest message body in bytes"));
        assert!(text.contains("[limits]"));
    }

    #[test]
    fn checked_in_example_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tidings.example.toml");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == example_toml(),
            "tidings.example.toml is stale: run `cargo xtask codegen`"
        );
    }
}
