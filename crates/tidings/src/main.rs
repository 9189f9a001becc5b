//! `tidings`: the command line. Parses flags, reads configuration once, and runs a command.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use tidings::config::{self, Config, LogFormat, Overrides};
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
    CreateUser { username: String },
    /// Lists accounts.
    ListUsers {
        /// Start after this user id.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Sets a new password (read from stdin) and signs out every device of the account.
    ResetPassword { username: String },
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
        Command::Serve { common, listen } => {
            let config = load_config(&common, listen)?;
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
            let core = tidings::app::start_core(&config, config.listen).await?;
            match command {
                AdminCommand::CreateUser { username } => {
                    let password = read_password("Password")?;
                    let account = core
                        .admin_create_user(&username, password)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    println!("created user {} (id {})", account.username, account.user_id);
                }
                AdminCommand::ListUsers { after, limit } => {
                    let users = core
                        .admin_list_users(after.map(UserId), limit)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    println!("{:>8}  {:<32}  created", "id", "username");
                    for u in users {
                        println!("{:>8}  {:<32}  {}", u.user_id, u.username, u.created_at);
                    }
                }
                AdminCommand::ResetPassword { username } => {
                    let password = read_password("New password")?;
                    let signed_out = core
                        .admin_reset_password(&username, password)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    println!("password reset; {signed_out} device(s) signed out");
                }
                AdminCommand::CreateInvite { uses, valid_hours } => {
                    let code = core
                        .admin_create_invite(uses, valid_hours.saturating_mul(3600))
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    println!("{code}");
                }
            }
            Ok(())
        }
    }
}
