//! Boots the real Tidings server for tests.
//!
//! - [`TestServer`] runs it in-process on `127.0.0.1:0` with a temporary data directory, exactly
//!   as `tidings serve` wires it, and talks to it over real sockets.
//! - [`ServerProcess`] runs the `tidings` binary as a child process, so a test can kill it with
//!   SIGKILL and start it again on the same data directory.
//!
//! Test servers use a cheap argon2id cost so suites that create many accounts stay fast; every
//! other setting is the default.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tidings::config::Config;
use tidings_proto::UserId;
use tidings_proto::rest::TokenResponse;
use tidings_sdk::{AuthedClient, Client, ConnectOptions, Connection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// The configuration tests start from: defaults, a cheap password hash, no per-user message
/// rate limit (suites send bursts far beyond a person's; the test of the limit turns it back
/// on), quiet logs.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("literal address"),
        ..Config::default()
    };
    config.accounts.argon2_memory_kib = 256;
    config.accounts.argon2_iterations = 1;
    config.limits.messages_per_minute = 0;
    config.log.level = "warn".into();
    // Suites sign many users in from 127.0.0.1; the tests of the limit turn it back on.
    config.limits.sign_in_attempts_per_address_per_minute = 0;
    // MQTT on a free port (Mosquitto may hold 1883), with the default broker rules.
    config.mqtt.enabled = true;
    config.mqtt.listen = "127.0.0.1:0".parse().expect("literal address");
    // The admin listener on a free port too (tests run in parallel).
    config.admin.listen = "127.0.0.1:0".parse().expect("literal address");
    // The embedded TURN server on a free port, so test servers can run side by side.
    config.rtc.turn_listen = "127.0.0.1:0".parse().expect("literal address");
    config
}

/// A signed-in test user.
pub struct TestUser {
    pub user_id: UserId,
    pub username: String,
    pub tokens: TokenResponse,
    pub api: AuthedClient,
}

/// A server running inside the test process.
pub struct TestServer {
    pub base_url: String,
    pub config: Config,
    running: Option<tidings::app::Running>,
    // Dropped last: the directory outlives the server.
    data_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the test configuration.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed the test configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind test listener");
        let running = tidings::app::start(config.clone(), listener)
            .await
            .expect("server starts");
        TestServer {
            base_url: format!(
                "{}://{}",
                if running.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                running.addr
            ),
            config,
            running: Some(running),
            data_dir,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn client(&self) -> Client {
        Client::new(self.base_url.clone())
    }

    /// The address of the MQTT listener.
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.running
            .as_ref()
            .expect("server running")
            .mqtt_addr
            .expect("MQTT enabled")
    }

    /// The address of the MQTT over TLS listener.
    pub fn mqtt_tls_addr(&self) -> std::net::SocketAddr {
        self.running
            .as_ref()
            .expect("server running")
            .mqtt_tls_addr
            .expect("MQTT over TLS enabled")
    }

    /// The admin listener's base URL (metrics, health), when it is enabled.
    pub fn admin_url(&self) -> Option<String> {
        self.running
            .as_ref()
            .expect("server running")
            .admin_addr
            .map(|a| format!("http://{a}"))
    }

    pub fn core(&self) -> &tidings_core::Core {
        &self.running.as_ref().expect("server running").core
    }

    /// The file store the server's HTTP listener serves.
    pub fn files(&self) -> &tidings_files::Files {
        &self.running.as_ref().expect("server running").files
    }

    /// Registers and signs in a user.
    pub async fn user(&self, username: &str) -> TestUser {
        signed_in_user(&self.client(), username).await
    }

    /// Creates a server administrator the way an operator does (`tidings admin create-user
    /// --admin`), then signs them in.
    pub async fn admin(&self, username: &str) -> TestUser {
        let account = self
            .core()
            .admin_create_user(username, PASSWORD.into(), true)
            .await
            .expect("create an administrator");
        let client = self.client();
        let tokens = client
            .login(username, PASSWORD, "console")
            .await
            .expect("login");
        TestUser {
            user_id: account.user_id,
            username: account.username,
            api: client.authed(tokens.access_token.clone()),
            tokens,
        }
    }

    /// Signs the user in again: a second device.
    pub async fn second_device(&self, user: &TestUser, device_name: &str) -> TestUser {
        let client = self.client();
        let tokens = client
            .login(&user.username, PASSWORD, device_name)
            .await
            .expect("login");
        TestUser {
            user_id: user.user_id,
            username: user.username.clone(),
            api: client.authed(tokens.access_token.clone()),
            tokens,
        }
    }

    /// Opens an authenticated connection for the user.
    pub async fn connect(&self, user: &TestUser) -> Connection {
        Connection::connect_with(
            &self.client().ws_url(),
            &user.tokens.access_token,
            &ConnectOptions::default(),
        )
        .await
        .expect("connect")
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("server stops cleanly");
        }
    }
}

/// Registers `username` with [`PASSWORD`] and signs in.
pub async fn signed_in_user(client: &Client, username: &str) -> TestUser {
    let account = client.register(username, PASSWORD).await.expect("register");
    let tokens = client
        .login(username, PASSWORD, "test device")
        .await
        .expect("login");
    TestUser {
        user_id: account.user_id,
        username: account.username,
        api: client.authed(tokens.access_token.clone()),
        tokens,
    }
}

/// The `tidings` binary running as a child process.
pub struct ServerProcess {
    pub base_url: String,
    child: Child,
}

impl ServerProcess {
    /// Starts `binary serve` on a free port with `data_dir`, and waits until it listens.
    /// `env` adds `TIDINGS_*` variables.
    pub async fn spawn(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .env("TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB", "256")
            .env("TIDINGS_ACCOUNTS_ARGON2_ITERATIONS", "1")
            .env("TIDINGS_LIMITS_MESSAGES_PER_MINUTE", "0")
            .env("TIDINGS_LOG_LEVEL", "warn")
            .env("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0")
            .env("TIDINGS_RTC_TURN_LISTEN", "127.0.0.1:0")
            .env(
                "TIDINGS_LIMITS_SIGN_IN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
                "0",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("Tidings is running at ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_string());
                }
            }
            anyhow::bail!("the server exited before listening")
        })
        .await??;
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess { base_url, child })
    }

    pub fn client(&self) -> Client {
        Client::new(self.base_url.clone())
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Asks the process to stop with SIGTERM and waits.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        Ok(self.child.wait().await?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The path of a binary built by this workspace (for crates whose tests cannot use
/// `CARGO_BIN_EXE_*`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// How long the helpers below wait for an event before failing the test.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The next `message` event on a connection, skipping other frames; fails the test when none
/// comes within [`EVENT_WAIT`] or the connection closes.
pub async fn next_message(conn: &mut Connection) -> tidings_proto::Message {
    loop {
        let event = tokio::time::timeout(EVENT_WAIT, conn.next_event())
            .await
            .expect("a message in time")
            .expect("the connection is open");
        if let tidings_proto::ws::ServerFrame::Message { message } = event {
            return message;
        }
    }
}

/// The protocol error code of a failed SDK call; fails the test when it has none.
pub fn error_code(err: tidings_sdk::SdkError) -> tidings_proto::ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("no error code in {err:?}"))
}
