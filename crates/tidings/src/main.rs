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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
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
        Command::Serve {
            common,
            listen,
            dev_tls,
        } => {
            let mut config = load_config(&common, listen)?;
            config.tls.dev |= dev_tls;
            init_logging(&config);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {} (config key `listen`)", config.listen)
                })?;
            let running = tidings::app::start(config, listener).await?;
            eprintln!("Tidings is running at http://{}", running.addr);
            running.run_until(shutdown_signal()).await
        }
        Command::Admin { common, command } => {
            let config = load_config(&common, None)?;
            init_logging(&Config {
                log: config::LogConfig {
                    level: "warn".into(),
                    ..config.log.clone()
                },
                ..config.clone()
            });
            if let AdminCommand::MigrateStore { from, to } = &command {
                let copied = tidings::migrate::migrate_store(from, to).await?;
                for (table, rows) in copied {
                    println!("{table}: {rows} rows");
                }
                println!("copied; the search index is rebuilt by the server in the background");
                return Ok(());
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
                AdminCommand::MigrateStore { .. } => {}
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
