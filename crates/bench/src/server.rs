//! The server under test: the real `tidings serve` as a child process with a fresh data
//! directory, and what `/proc` tells about it.

use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_sdk::Client;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Settings every benchmark server gets: a cheap password hash so thousands of test accounts
/// are created in seconds (sign-in cost is not what these scenarios measure), no per-user
/// message or search rate limit (a benchmark user does far more than a person may), no per-address
/// sign-in limit (every simulated user signs in from 127.0.0.1), and quiet logs.
pub const BENCH_ENV: &[(&str, &str)] = &[
    ("TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB", "256"),
    ("TIDINGS_ACCOUNTS_ARGON2_ITERATIONS", "1"),
    ("TIDINGS_LIMITS_MESSAGES_PER_MINUTE", "0"),
    ("TIDINGS_LIMITS_SEARCHES_PER_MINUTE", "0"),
    (
        "TIDINGS_LIMITS_SIGN_IN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
        "0",
    ),
    ("TIDINGS_LOG_LEVEL", "warn"),
    // The admin listener on a free port, so servers can run side by side.
    ("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0"),
];

/// How the server was started, for the results file.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub binary: PathBuf,
    /// Where the temporary data directory is created.
    pub data_parent: PathBuf,
    /// Extra `TIDINGS_*` variables given on the command line.
    pub env: Vec<(String, String)>,
    /// How long a timed phase may wait for other processes to leave the CPU (0: never waits).
    pub quiet_wait: Duration,
}

/// Warnings and errors the server logged while it ran.
#[derive(Debug, Default)]
struct LogTail {
    lines: u64,
    first: VecDeque<String>,
}

/// What the server logged, summarized for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerLog {
    /// Lines logged at WARN or ERROR (the server runs with `warn`).
    pub lines: u64,
    /// The first few of them.
    pub first: Vec<String>,
}

/// A running server.
pub struct Server {
    pub base_url: String,
    pub pid: u32,
    child: Child,
    log: Arc<Mutex<LogTail>>,
    data_path: PathBuf,
    // Removed after the child has stopped (field order: dropped last). A second node of a
    // cluster shares the first node's directory (for the signing key) and owns none.
    data_dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(options: &ServerOptions) -> anyhow::Result<Server> {
        let data_dir = tempfile::Builder::new()
            .prefix("tidings-bench-")
            .tempdir_in(&options.data_parent)
            .context("creating the data directory")?;
        Self::start_in(options, Some(data_dir), None, "127.0.0.1:0").await
    }

    /// Starts another node of a cluster on `first`'s data directory, so both use the same
    /// token signing key (the options must name a shared store and bus).
    pub async fn start_sharing(options: &ServerOptions, first: &Server) -> anyhow::Result<Server> {
        Self::start_in(options, None, Some(first.data_path.clone()), "127.0.0.1:0").await
    }

    /// Stops the server and starts a new process on the same data directory: a fresh heap
    /// with the same accounts and signing keys. It listens on the same port, because the token
    /// issuer is derived from the address, so tokens stay valid.
    pub async fn restart(self, options: &ServerOptions) -> anyhow::Result<Server> {
        let listen = self
            .base_url
            .strip_prefix("http://")
            .or_else(|| self.base_url.strip_prefix("https://"))
            .context("an http base URL")?
            .to_string();
        let (data_dir, _) = self.stop_keeping_data().await?;
        let data_dir = data_dir.context("only a node that owns its data directory restarts")?;
        Self::start_in(options, Some(data_dir), None, &listen).await
    }

    async fn start_in(
        options: &ServerOptions,
        data_dir: Option<tempfile::TempDir>,
        shared_path: Option<PathBuf>,
        listen: &str,
    ) -> anyhow::Result<Server> {
        let data_path = match (&data_dir, shared_path) {
            (Some(dir), _) => dir.path().to_path_buf(),
            (None, Some(path)) => path,
            (None, None) => bail!("a data directory is needed"),
        };
        let mut command = Command::new(&options.binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&data_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in BENCH_ENV {
            command.env(k, v);
        }
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", options.binary.display()))?;
        let pid = child.id().context("the server has a pid")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("Tidings is running at ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_string());
                }
                eprintln!("server: {line}");
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not start listening within 30 s")??;
        let log: Arc<Mutex<LogTail>> = Arc::default();
        let tail = log.clone();
        // Keep draining stderr so the server never blocks on a full pipe; count what it says.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().expect("log lock");
                tail.lines += 1;
                if tail.first.len() < 10 {
                    tail.first.push_back(line);
                }
            }
        });
        Ok(Server {
            base_url,
            pid,
            child,
            log,
            data_path,
            data_dir,
        })
    }

    /// The server's data directory.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    pub fn client(&self) -> Client {
        Client::new(self.base_url.clone())
    }

    pub fn ws_url(&self) -> String {
        self.client().ws_url()
    }

    pub fn log(&self) -> ServerLog {
        let tail = self.log.lock().expect("log lock");
        ServerLog {
            lines: tail.lines,
            first: tail.first.iter().cloned().collect(),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    pub fn hwm_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Resets the peak RSS (VmHWM) to the current RSS.
    pub fn reset_hwm(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .context("writing 5 to /proc/<pid>/clear_refs")
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// CPU seconds per thread so far, by thread id, with the thread's name.
    pub fn thread_cpu(&self) -> BTreeMap<u32, (String, f64)> {
        let mut out = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if let Ok(secs) = cpu_seconds(&path.join("stat").to_string_lossy()) {
                out.insert(tid, (name.trim().to_string(), secs));
            }
        }
        out
    }

    /// Asks the server to stop (SIGTERM) and waits up to 10 s, then kills it.
    pub async fn stop(self) -> anyhow::Result<ServerLog> {
        Ok(self.stop_keeping_data().await?.1)
    }

    async fn stop_keeping_data(mut self) -> anyhow::Result<(Option<tempfile::TempDir>, ServerLog)> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("The server did not stop within 10 s of SIGTERM; killing it.");
            self.child.start_kill()?;
            self.child.wait().await?;
        }
        // Let the log reader see the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = self.log();
        Ok((self.data_dir, log))
    }
}

/// A `kB` line of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User plus system CPU time of a process from its `stat` file (all threads).
pub fn cpu_seconds(stat_path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat_path)?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// CPU time of this process so far.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub open_files_limit: u64,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) as f64
                / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            open_files_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map_or(0, |(soft, _)| soft),
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit; returns the new limit.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    Ok(hard)
}

/// `git rev-parse HEAD` of the working directory, and whether tracked files differ from it.
pub fn git_revision() -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (rev, dirty)
}

/// Resolves the server binary path, refusing a missing file early.
pub fn check_binary(path: &Path) -> anyhow::Result<PathBuf> {
    let path = path
        .canonicalize()
        .with_context(|| format!("server binary {}", path.display()))?;
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let text = "Name:\ttidings\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(51234));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }
}

/// CPU time the whole machine has spent busy (not idle, not waiting for I/O), all cores.
pub fn machine_busy_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks() as f64
}

/// Waits (at most `max`) until the machine is nearly idle, so other work on this shared box
/// does not steal the two cores mid-run. Returns the busy cores of the last second measured.
pub async fn wait_for_quiet(max: Duration) -> f64 {
    if max.is_zero() {
        return 0.0;
    }
    let deadline = tokio::time::Instant::now() + max;
    let mut warned = false;
    loop {
        let before = machine_busy_seconds();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = machine_busy_seconds() - before;
        if busy < 0.15 || tokio::time::Instant::now() >= deadline {
            if busy >= 0.15 {
                eprintln!("The machine is still busy ({busy:.2} cores); running anyway.");
            }
            return busy;
        }
        if !warned {
            eprintln!("Other processes use {busy:.2} cores; waiting for the machine to be quiet.");
            warned = true;
        }
    }
}

/// CPU a group of same-named server threads used during a phase.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadCpu {
    pub name: String,
    pub threads: usize,
    pub cpu_secs: f64,
    /// The busiest single thread of the group.
    pub max_thread_cpu_secs: f64,
}

/// Per-thread CPU between two [`Server::thread_cpu`] readings, grouped by thread name,
/// busiest first.
pub fn thread_cpu_delta(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> Vec<ThreadCpu> {
    let mut groups: BTreeMap<String, ThreadCpu> = BTreeMap::new();
    for (tid, (name, secs)) in after {
        let used = secs - before.get(tid).map_or(0.0, |b| b.1);
        let group = groups.entry(name.clone()).or_insert_with(|| ThreadCpu {
            name: name.clone(),
            threads: 0,
            cpu_secs: 0.0,
            max_thread_cpu_secs: 0.0,
        });
        group.threads += 1;
        group.cpu_secs += used;
        group.max_thread_cpu_secs = group.max_thread_cpu_secs.max(used);
    }
    let mut list: Vec<ThreadCpu> = groups.into_values().filter(|g| g.cpu_secs > 0.0).collect();
    list.sort_by(|a, b| b.cpu_secs.total_cmp(&a.cpu_secs));
    list
}
