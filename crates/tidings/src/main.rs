//! `tidings`: the command line. Parses flags, reads configuration once, and runs a command.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use tidings::config::{self, Config, LogFormat, Overrides};
use tidings_core::admin::AdminActor;
use tidings_proto::UserId;

/// Tidings: a self-hosted instant-messaging server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (TOML). Defaults need none. [env: TIDINGS_CONFIG]
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory for the database and keys. [env: TIDINGS_DATA_DIR] [default: tidings-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server (HTTP, WebSocket and the embedded database).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on. [env: TIDINGS_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Serve TLS with a self-signed certificate for localhost, generated once into the data
        /// directory. For development; production deployments set `[tls] cert_file` and `key_file`.
        /// [env: TIDINGS_TLS_DEV]
        #[arg(long)]
        dev_tls: bool,
    },
    /// Operator commands that work on the data directory directly (the server may be running).
    Admin {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Prints the documented example configuration.
    ExampleConfig,
    /// Probes a running server's readiness endpoint and exits 0 when it answers 200, 1
    /// otherwise: a container health check for images without curl.
    Health {
        /// The readiness URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Creates an account, whatever the registration mode. Reads the password from stdin.
    /// `--admin` makes it a server administrator: run this once to bootstrap a new server.
    CreateUser {
        username: String,
        #[arg(long)]
        admin: bool,
    },
    /// Grants the server administrator role.
    GrantAdmin { username: String },
    /// Revokes the server administrator role.
    RevokeAdmin { username: String },
    /// Suspends an account: signs out every device at once; it cannot sign in until reactivated.
    Suspend { username: String },
    /// Lets a suspended account sign in again.
    Reactivate { username: String },
    /// Deletes an account (see `accounts.deleted_user_messages` for its messages).
    DeleteUser { username: String },
    /// Signs out every device of an account.
    SignOut { username: String },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Lists accounts with their role and status (suspended and deleted ones too).
    ListUsers {
        /// Only usernames starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Start after this user id.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Sets a new password (read from stdin) and signs out every device of the account.
    ResetPassword { username: String },
    /// Copies a single-node deployment's SQLite database into an empty PostgreSQL database
    /// (then set `store.kind = "postgres"`). Stop the server first for a cut-over: what it
    /// writes after the copy starts is not copied.
    MigrateStore {
        /// The source: `sqlite:PATH` (the tidings.db of the data directory).
        #[arg(long)]
        from: String,
        /// The target: a `postgres://` URL of an empty database.
        #[arg(long)]
        to: String,
    },
    /// OAuth clients (third-party applications and bots).
    OauthClient {
        #[command(subcommand)]
        command: OAuthClientCommand,
    },
    /// Takes a consistent online backup (database, local file store, signing key) into a new
    /// directory while the server runs. The backup holds the signing key: keep it private.
    Backup {
        /// The directory to create (it must be empty or not exist).
        dir: PathBuf,
    },
    /// Restores a backup into the data directory, which must be empty or not exist. Start the
    /// server on it afterwards.
    Restore {
        /// A directory written by `admin backup`.
        dir: PathBuf,
    },
    /// Creates an invite code for invite-only registration.
    CreateInvite {
        /// How many registrations the code allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long the code stays valid, in hours.
        #[arg(long, default_value_t = 168)]
        valid_hours: u64,
    },
}

#[derive(Subcommand)]
enum OAuthClientCommand {
    /// Registers a client and prints its id (and, with --confidential, its secret: shown only
    /// this once).
    Add {
        /// Shown to users on the consent page.
        name: String,
        /// A server-side application that can keep a secret; public clients use PKCE only.
        #[arg(long)]
        confidential: bool,
        /// An exact redirect URI (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// The scopes it may ask for, space-separated (default: every scope but admin).
        #[arg(long)]
        scope: Option<String>,
        /// Makes a bot client (client credentials grant) acting as a new bot account with this
        /// username; implies --confidential.
        #[arg(long = "bot")]
        bot_username: Option<String>,
    },
    /// Lists registered clients.
    List,
    /// Removes a client and signs out every device signed in through it.
    Remove { client_id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the hash chain and the signed pruning checkpoints. Exits 0 with the entry count
    /// when intact; fails naming the first broken entry otherwise.
    Verify,
    /// Writes entries to stdout as JSON Lines.
    Export {
        /// Only entries at or after this time: milliseconds since the epoch, or an age such as
        /// `30m`, `24h` or `7d`.
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only entries of this kind, e.g. `sign_in.failure`.
        #[arg(long)]
        kind: Option<String>,
        /// Only entries by this user (username).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries about this user (username).
        #[arg(long)]
        target: Option<String>,
    },
}

/// A point in time given as ms since the epoch, or as an age (`30m`, `24h`, `7d`) before now.
fn parse_time(value: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("`{value}` is neither milliseconds nor an age like 24h or 7d"),
    };
    let count: i64 = number
        .parse()
        .with_context(|| format!("`{value}` is neither milliseconds nor an age like 24h or 7d"))?;
    Ok(now_ms.saturating_sub(count.saturating_mul(unit_ms)))
}

fn core_error(e: tidings_core::CoreError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

fn load_config(common: &Common, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let file = common
        .config
        .clone()
        .or_else(|| env.get("TIDINGS_CONFIG").map(PathBuf::from));
    let overrides = Overrides {
        listen,
        data_dir: common.data_dir.clone(),
    };
    Ok(config::load(file.as_deref(), &env, &overrides)?)
}

/// Changes the log filter of the running process (SIGHUP applies `log.level` again).
type LogLevelHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log output's filter: `log.level`, less the spans that exist for trace export only.
fn log_filter(
    level: &str,
) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    let only_traces = format!("{}=off", tidings_metrics::TRACE_TARGET)
        .parse()
        .expect("a valid directive");
    Ok(tracing_subscriber::EnvFilter::try_new(level)?.add_directive(only_traces))
}

/// Installs the log output and, when given, the trace exporter's layer. The log level filters
/// the log output only: traces keep their spans whatever `log.level` says.
fn init_logging(
    config: &Config,
    telemetry: Option<&tidings::telemetry::Telemetry>,
) -> LogLevelHandle {
    use tracing_subscriber::prelude::*;
    let filter =
        log_filter(&config.log.level).unwrap_or_else(|_| log_filter("info").expect("valid"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => {
            let registry = tracing_subscriber::registry().with(fmt.json().with_filter(filter));
            let traces = telemetry.map(|t| t.layer());
            registry.with(traces).init();
        }
        LogFormat::Text => {
            let registry = tracing_subscriber::registry().with(
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            );
            let traces = telemetry.map(|t| t.layer());
            registry.with(traces).init();
        }
    }
    handle
}

/// On every SIGHUP: reloads the TLS certificate files if they changed, reads the configuration
/// again and applies what can change while running (the log level). Everything else needs a
/// restart, which the log line says.
#[cfg(unix)]
fn reload_on_hangup(
    common: Common,
    listen: Option<SocketAddr>,
    log: LogLevelHandle,
    tls: Option<tidings_tls::Tls>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot listen for SIGHUP; reloading is unavailable.");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Some(tls) = &tls {
                tls.reload_and_log();
            }
            match load_config(&common, listen) {
                Ok(config) => match log_filter(&config.log.level) {
                    Ok(filter) => {
                        let _ = log.reload(filter);
                        tracing::info!(level = %config.log.level, "Reloaded on SIGHUP: log level applied (other settings need a restart).");
                    }
                    Err(e) => {
                        tracing::warn!(%e, "SIGHUP: log.level is not a valid filter; kept the current one.")
                    }
                },
                Err(e) => {
                    tracing::warn!(%e, "SIGHUP: the configuration has an error; nothing reloaded.")
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_hangup(
    _common: Common,
    _listen: Option<SocketAddr>,
    _log: LogLevelHandle,
    _tls: Option<tidings_tls::Tls>,
) {
}

/// Reads a password: from stdin when piped, or prompted (echoed; use a pipe to avoid that).
fn read_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password given on stdin");
    Ok(password)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ExampleConfig => {
            print!("{}", config::example_toml());
            Ok(())
        }
        Command::Health { url, timeout_secs } => {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(timeout_secs))
                .build()
                .context("cannot build an HTTP client")?;
            let status = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("{url} did not answer"))?
                .status();
            if !status.is_success() {
                anyhow::bail!("{url} answered {status}");
            }
            println!("{url}: {status}");
            Ok(())
        }
        Command::Serve {
            common,
            listen,
            dev_tls,
        } => {
            let mut config = load_config(&common, listen)?;
            config.tls.dev |= dev_tls;
            let telemetry = if config.telemetry.enabled {
                Some(tidings::telemetry::Telemetry::start(&config.telemetry)?)
            } else {
                None
            };
            let log_level = init_logging(&config, telemetry.as_ref());
            if telemetry.is_some() {
                tracing::info!(endpoint = %config.telemetry.endpoint, "Exporting traces over OTLP.");
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {} (config key `listen`)", config.listen)
                })?;
            let running = tidings::app::start(config, listener).await?;
            reload_on_hangup(common.clone(), listen, log_level, running.tls.clone());
            if let Some(admin) = running.admin_addr {
                eprintln!("Metrics and health checks at http://{admin}/metrics");
            }
            let scheme = if running.tls.is_some() {
                "https"
            } else {
                "http"
            };
            eprintln!("Tidings is running at {scheme}://{}", running.addr);
            let stopped = running.run_until(shutdown_signal()).await;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown().await;
            }
            stopped
        }
        Command::Admin { common, command } => {
            let config = load_config(&common, None)?;
            let _ = init_logging(
                &Config {
                    log: config::LogConfig {
                        level: "warn".into(),
                        ..config.log.clone()
                    },
                    ..config.clone()
                },
                None,
            );
            if let AdminCommand::MigrateStore { from, to } = &command {
                let copied = tidings::migrate::migrate_store(from, to).await?;
                for (table, rows) in copied {
                    println!("{table}: {rows} rows");
                }
                println!("copied; the search index is rebuilt by the server in the background");
                return Ok(());
            }
            match &command {
                AdminCommand::Backup { dir } => {
                    let (config, dir) = (config.clone(), dir.clone());
                    let m =
                        tokio::task::spawn_blocking(move || tidings::backup::backup(&config, &dir))
                            .await??;
                    println!(
                        "backed up: database {} bytes, {} file(s) of {} bytes{}",
                        m.database_bytes,
                        m.files,
                        m.file_bytes,
                        if m.files_included {
                            ""
                        } else {
                            " (files are in S3: not included)"
                        }
                    );
                    if m.vanished > 0 {
                        println!("{} file(s) were deleted while copying", m.vanished);
                    }
                    return Ok(());
                }
                AdminCommand::Restore { dir } => {
                    let (target, dir) = (config.clone(), dir.clone());
                    let m = tokio::task::spawn_blocking(move || {
                        tidings::backup::restore(&target, &dir)
                    })
                    .await??;
                    println!(
                        "restored the backup of {} ms since the epoch ({} file(s)) into {}",
                        m.created_at_ms,
                        m.files,
                        config.data_dir.display()
                    );
                    return Ok(());
                }
                _ => {}
            }
            // No background pruning while an operator command reads the log.
            let core = tidings::app::start_core_without_janitor(&config, config.listen).await?;
            let operator = AdminActor::Operator;
            match command {
                AdminCommand::CreateUser { username, admin } => {
                    let password = read_password("Password")?;
                    let account = core
                        .admin_create_user(&username, password, admin)
                        .await
                        .map_err(core_error)?;
                    let role = if admin { " as an administrator" } else { "" };
                    println!(
                        "created user {} (id {}){role}",
                        account.username, account.user_id
                    );
                }
                AdminCommand::GrantAdmin { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    core.set_server_admin(operator, user, true)
                        .await
                        .map_err(core_error)?;
                    println!("{username} is now an administrator");
                }
                AdminCommand::RevokeAdmin { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    core.set_server_admin(operator, user, false)
                        .await
                        .map_err(core_error)?;
                    println!("{username} is no longer an administrator");
                }
                AdminCommand::Suspend { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    core.suspend_user(operator, user)
                        .await
                        .map_err(core_error)?;
                    println!("{username} is suspended; every device is signed out");
                }
                AdminCommand::Reactivate { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    core.reactivate_user(operator, user)
                        .await
                        .map_err(core_error)?;
                    println!("{username} is active again");
                }
                AdminCommand::DeleteUser { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    core.delete_user(operator, user).await.map_err(core_error)?;
                    println!("{username} is deleted");
                }
                AdminCommand::SignOut { username } => {
                    let user = core.user_id_by_name(&username).await.map_err(core_error)?;
                    let n = core
                        .sign_out_user(operator, user)
                        .await
                        .map_err(core_error)?;
                    println!("{n} device(s) of {username} signed out");
                }
                AdminCommand::Audit {
                    command: AuditCommand::Verify,
                } => match core.verify_audit().await.map_err(core_error)? {
                    Ok(verified) => println!(
                        "audit log intact: {} entries checked, {} checkpoint(s); head {}",
                        verified.entries, verified.checkpoints, verified.head
                    ),
                    Err(broken) => {
                        anyhow::bail!("audit log broken: {broken}")
                    }
                },
                AdminCommand::Audit {
                    command:
                        AuditCommand::Export {
                            since,
                            until,
                            kind,
                            actor,
                            target,
                        },
                } => {
                    use futures_util::TryStreamExt;
                    use std::io::Write;
                    let now = core.now_ms();
                    let mut filter = tidings_core::audit::AuditFilter {
                        kind,
                        since: since.map(|v| parse_time(&v, now)).transpose()?,
                        until: until.map(|v| parse_time(&v, now)).transpose()?,
                        ..Default::default()
                    };
                    if let Some(name) = actor {
                        filter.actor = Some(core.user_id_by_name(&name).await.map_err(core_error)?);
                    }
                    if let Some(name) = target {
                        filter.target_user =
                            Some(core.user_id_by_name(&name).await.map_err(core_error)?);
                    }
                    let lines = core
                        .admin_audit_export(operator, filter)
                        .await
                        .map_err(core_error)?;
                    let mut lines = std::pin::pin!(lines);
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    while let Some(chunk) = lines.try_next().await.map_err(core_error)? {
                        out.write_all(chunk.as_bytes())?;
                    }
                    out.flush()?;
                }
                AdminCommand::ListUsers {
                    prefix,
                    after,
                    limit,
                } => {
                    let list = core
                        .admin_users(operator, &prefix, after.map(UserId), Some(limit))
                        .await
                        .map_err(core_error)?;
                    println!("{:>8}  {:<32}  {:<9}  created", "id", "username", "status");
                    for u in list.users {
                        let status = match (u.deleted, u.suspended, u.is_admin) {
                            (true, _, _) => "deleted",
                            (_, true, _) => "suspended",
                            (_, _, true) => "admin",
                            _ => "active",
                        };
                        println!(
                            "{:>8}  {:<32}  {:<9}  {}",
                            u.user_id, u.username, status, u.created_at
                        );
                    }
                }
                AdminCommand::ResetPassword { username } => {
                    let password = read_password("New password")?;
                    let signed_out = core
                        .admin_reset_password(&username, password)
                        .await
                        .map_err(core_error)?;
                    println!("password reset; {signed_out} device(s) signed out");
                }
                // Handled above, before a core starts on the configured store.
                AdminCommand::MigrateStore { .. }
                | AdminCommand::Backup { .. }
                | AdminCommand::Restore { .. } => {}
                AdminCommand::OauthClient {
                    command:
                        OAuthClientCommand::Add {
                            name,
                            confidential,
                            redirect_uris,
                            scope,
                            bot_username,
                        },
                } => {
                    let created = core
                        .add_oauth_client(
                            operator,
                            tidings_proto::oauth::NewOAuthClient {
                                name,
                                confidential: confidential || bot_username.is_some(),
                                redirect_uris,
                                scope,
                                bot_username,
                            },
                        )
                        .await
                        .map_err(core_error)?;
                    println!("client_id: {}", created.client.client_id);
                    if let Some(secret) = created.client_secret {
                        println!("client_secret: {secret}");
                        println!("(the secret is not stored and will not be shown again)");
                    }
                    println!("scope: {}", created.client.scope);
                    if let Some(bot) = created.client.bot_user_id {
                        println!("bot user_id: {bot}");
                    }
                }
                AdminCommand::OauthClient {
                    command: OAuthClientCommand::List,
                } => {
                    let mut after: Option<String> = None;
                    println!(
                        "{:<24}  {:<12}  {:<32}  redirect URIs",
                        "client_id", "type", "name"
                    );
                    loop {
                        let page = core
                            .oauth_clients(operator, after.as_deref(), None)
                            .await
                            .map_err(core_error)?;
                        for c in &page.clients {
                            let kind = if c.bot_user_id.is_some() {
                                "bot"
                            } else if c.confidential {
                                "confidential"
                            } else {
                                "public"
                            };
                            println!(
                                "{:<24}  {:<12}  {:<32}  {}",
                                c.client_id,
                                kind,
                                c.name,
                                c.redirect_uris.join(" ")
                            );
                        }
                        match page.next_after {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                }
                AdminCommand::OauthClient {
                    command: OAuthClientCommand::Remove { client_id },
                } => {
                    let signed_out = core
                        .remove_oauth_client(operator, &client_id)
                        .await
                        .map_err(core_error)?;
                    println!("client removed; {signed_out} device(s) signed out");
                }
                AdminCommand::CreateInvite { uses, valid_hours } => {
                    let code = core
                        .admin_create_invite(uses, valid_hours.saturating_mul(3600))
                        .await
                        .map_err(core_error)?;
                    println!("{code}");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_milliseconds_or_ages() {
        let now = 10_000_000_000;
        assert_eq!(parse_time("1234", now).unwrap(), 1234);
        assert_eq!(parse_time("30s", now).unwrap(), now - 30_000);
        assert_eq!(parse_time("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_time("7d", now).unwrap(), now - 604_800_000);
        for bad in ["", "d", "7w", "x7d", "1.5h"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
