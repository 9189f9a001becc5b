//! `tidings-bench`: starts the real server and measures it under load.
//!
//! # Layout
//! - [`server`]: the server as a child process (fresh data directory, cheap password hashing)
//!   and what `/proc` says about it.
//! - [`setup`]: accounts, conversations and connections, spread over 127.0.x.y source addresses.
//! - [`throughput`]: open-loop senders, ack and end-to-end latency, completeness, rate sweep.
//! - [`idle`]: server memory per idle authenticated connection.
//! - [`catchup`]: one offline user syncing a large backlog.
//! - [`cluster`]: the 1:1 scenario on SQLite, PostgreSQL, and two nodes on PostgreSQL + NATS
//!   (same node and cross node), in one run.
//! - [`mqtt`]: MQTT against Tidings and Mosquitto in one run: idle memory, QoS 1, fan-out.
//! - [`compare`]: Tidings (WebSocket, XMPP, MQTT) beside ejabberd, Prosody and Mosquitto:
//!   idle sessions and the 1:1 durable rate sweep, through [`link`] (one client interface
//!   over the three protocols) and [`xmpp`] (a small XMPP client); [`charts`] draws them.
//! - [`stats`]: histograms, regression and the completeness check (the unit-tested parts).
//!
//! The load generator is one process with one multi-threaded tokio runtime; see
//! `docs/benchmarks.md` for why, and for the method and the results.

mod catchup;
mod charts;
mod cluster;
mod compare;
mod idle;
mod link;
mod mqtt;
mod search;
mod server;
mod setup;
mod stats;
mod throughput;
mod xmpp;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::{Machine, ServerOptions};
use std::path::{Path, PathBuf};

/// Load scenarios against a real `tidings serve` started by this tool.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The server binary; build it with `cargo build --release -p tidings`.
    #[arg(long, global = true, default_value = "target/release/tidings")]
    server: PathBuf,
    /// Results file (JSON): results are merged into it under the commit (see --rev).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// The commit the server binary was built from, as the results key. Defaults to
    /// `git rev-parse HEAD` when the tool starts (others may commit during a long run).
    #[arg(long, global = true)]
    rev: Option<String>,
    /// Where the server's temporary data directory is created (a real disk: acks wait for fsync).
    #[arg(long, global = true, default_value_os_t = std::env::temp_dir())]
    data_parent: PathBuf,
    /// Extra server settings as `TIDINGS_KEY=value` (none by default: the defaults are measured).
    #[arg(long = "server-env", global = true, value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Seconds a timed phase waits for other processes on the machine to go quiet (0: no wait).
    #[arg(long, global = true, default_value_t = 60.0)]
    quiet_wait: f64,
    #[command(subcommand)]
    scenario: Scenario,
}

// The command line is parsed once; `compare`'s many options make its variant large, and boxing
// them would only make clap's derive harder to read.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Scenario {
    /// Open-loop messaging between user pairs: latency percentiles and completeness.
    Throughput {
        /// User pairs, each with a direct conversation; one user sends, the other receives.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages per second offered, all senders together.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Filler characters per message text.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// Seconds to wait for outstanding answers after the schedule ends.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        /// Run increasing rates (see --rates), each on a fresh server, and report the highest
        /// whose end-to-end p99 stays within 50 ms with nothing lost.
        #[arg(long)]
        sweep: bool,
        /// Rates for --sweep.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "5000,10000,15000,20000,25000,30000,35000,40000,50000"
        )]
        rates: Vec<u64>,
    },
    /// The 1:1 load on SQLite, on PostgreSQL, and on two nodes (PostgreSQL + NATS) with
    /// sender and receiver on the same node and on different nodes, at each rate. Needs
    /// PostgreSQL (PG_TEST_URL, default postgres://postgres@127.0.0.1:5432/test) and NATS.
    Cluster {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Offered rates, each run in all four configurations.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        rates: Vec<u64>,
        /// Seconds of sending per run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
    },
    /// Server memory per idle authenticated WebSocket connection.
    Idle {
        /// Connection counts to measure at, in increasing order.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,15000")]
        counts: Vec<usize>,
        /// Client read buffer per connection, bytes.
        #[arg(long, default_value_t = 2048)]
        read_buffer: usize,
        /// Seconds to wait before reading the server's RSS at each count.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
    },
    /// An offline user's catch-up from cursor 0 through one sync.
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Unacknowledged sends the sender keeps in flight.
        #[arg(long, default_value_t = 1024)]
        window: u64,
        /// Filler characters per message text.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
    },
    /// MQTT: idle connections, QoS 1 publish→deliver (broker and durable IM), fan-out;
    /// against Tidings and, in the same run, a running Mosquitto.
    Mqtt {
        /// A Mosquitto broker to measure too (anonymous access on loopback); empty to skip.
        #[arg(long, default_value = "127.0.0.1:1883")]
        mosquitto: String,
        /// Idle connections for the memory measurement.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// Publisher/subscriber pairs for QoS 1.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// QoS 1 publications each publisher keeps unacknowledged.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Subscribers of the fan-out topic.
        #[arg(long, default_value_t = 500)]
        fanout: usize,
        /// Payload bytes per publication.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
    },
    /// Tidings beside ejabberd, Prosody and Mosquitto (started by `bench/peers/run`): idle
    /// session memory (scenario 1), the 1:1 durable rate sweep (scenario 2), group fan-out
    /// (scenario 3, Tidings' native protocol only), offline catch-up (scenario 4) and the sign-in
    /// storm (scenario 5), same code for every server; results, then SVG charts in --charts.
    Compare {
        /// Servers and protocols to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = compare::Target::ALL)]
        targets: Vec<compare::Target>,
        /// Idle session counts (scenario 1); 0 to skip the scenario.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        idle_counts: Vec<usize>,
        /// Offered rates, increasing (scenario 2); 0 to skip the scenario.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,50,100,500,1000,2000,5000,10000,15000,20000,30000,40000"
        )]
        rates: Vec<u64>,
        #[arg(long, default_value_t = 500)]
        pairs: usize,
        /// Seconds of sending per rate.
        #[arg(long, default_value_t = 10.0)]
        step: f64,
        /// Seconds to wait for outstanding answers after a step.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// A target's sweep stops after this many failed rates in a row.
        #[arg(long, default_value_t = 2)]
        stop_after_failures: usize,
        /// Group sizes of the fan-out (scenario 3, native protocol only), the sender included;
        /// 0 to skip the scenario. 10000 fits one load generator (one socket per member).
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        fanout_members: Vec<usize>,
        /// Messages per second the fan-out's sender sends.
        #[arg(long, default_value_t = 100)]
        fanout_rate: u64,
        /// Seconds of sending per fan-out phase (all reading; one member stalled).
        #[arg(long, default_value_t = 10.0)]
        fanout_step: f64,
        #[arg(long, default_value_t = 64)]
        fanout_payload_bytes: usize,
        /// The fan-out server's per-connection queue in frames (`limits.outbound_queue`); the
        /// server's default if not given. The stalled member is closed once it overflows.
        #[arg(long)]
        fanout_outbound_queue: Option<usize>,
        /// Messages of the offline catch-up's backlog (scenario 4); 0 to skip the scenario.
        #[arg(long, default_value_t = 100_000)]
        catchup_messages: u64,
        /// Seconds the catch-up's sender may take to have the backlog stored; a server that
        /// stores fewer in that time is caught up on what it stored.
        #[arg(long, default_value_t = 300.0)]
        catchup_send_secs: f64,
        /// Users of the mixed soak (scenario 6, native protocol only); 0 to skip the scenario.
        #[arg(long, default_value_t = 2000)]
        soak_users: usize,
        /// Minutes of the soak.
        #[arg(long, default_value_t = 30.0)]
        soak_minutes: f64,
        /// Messages per second into the soak's direct conversations (pairs of users).
        #[arg(long, default_value_t = 200)]
        soak_direct_rate: u64,
        /// Messages per second into the soak's groups.
        #[arg(long, default_value_t = 20)]
        soak_group_rate: u64,
        /// Groups of the soak, their sizes spread evenly from 50 to 500 members.
        #[arg(long, default_value_t = 10)]
        soak_groups: usize,
        /// Users that go away and come back per minute, in percent.
        #[arg(long, default_value_t = 1.0)]
        soak_churn_percent: f64,
        /// Clients of the sign-in storm (scenario 5); 0 to skip the scenario.
        #[arg(long, default_value_t = 15_000)]
        storm_clients: usize,
        /// Seconds within which the storm's clients all come back.
        #[arg(long, default_value_t = 10.0)]
        storm_window: f64,
        /// The scenarios to run (1 to 6), also with --smoke.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6")]
        scenarios: Vec<u8>,
        /// The smoke profile: 50 and 100 idle sessions; 10 pairs at 20 msg/s for 3 s; a group
        /// of 6 (Tidings' own protocol) at 60 msg/s for 2 s per phase with 4 KiB messages; a
        /// catch-up of 200 messages; a 20 s soak of 40 users (groups of 5 to 20, 60% churning
        /// per minute); a storm of 200 clients within 1 s (native protocol only). Passes on completeness alone (never on
        /// speed). Overrides the sizes above.
        #[arg(long)]
        smoke: bool,
        /// The script that starts and stops the peers.
        #[arg(long, default_value = "bench/peers/run")]
        peers_script: PathBuf,
        /// Where the peers' data directories are made (fresh for every measurement).
        #[arg(long, default_value_os_t = std::env::temp_dir().join("tidings-bench-peers"))]
        peers_dir: PathBuf,
        /// Directory for the SVG charts; empty for none.
        #[arg(long, default_value = "docs/benchmarks")]
        charts: PathBuf,
    },
    /// Draws the comparison's charts from a results file (every `compare*` entry of the commit).
    Charts {
        /// The results file (JSON) written with --out.
        #[arg(long, default_value = "crates/bench/results.json")]
        from: PathBuf,
        /// Directory for the SVG files.
        #[arg(long, default_value = "docs/benchmarks")]
        dir: PathBuf,
    },
    /// Full-text search latency over many stored messages of mixed English and Chinese.
    Search {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Group conversations the messages are spread over.
        #[arg(long, default_value_t = 50)]
        conversations: usize,
        /// Searches timed per query kind.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Unacknowledged sends kept in flight while loading.
        #[arg(long, default_value_t = 1024)]
        window: u64,
    },
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=value")?;
    if !k.starts_with("TIDINGS_") {
        return Err("server settings start with TIDINGS_".into());
    }
    Ok((k.to_string(), v.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Charts { from, dir } = &cli.scenario {
        let commit = match &cli.rev {
            Some(rev) => rev.clone(),
            None => server::git_revision().0,
        };
        charts::from_results(from, &commit, dir)?;
        println!("charts for {commit} written to {}", dir.display());
        return Ok(());
    }
    let (head, dirty) = server::git_revision();
    let revision = Revision {
        dirty: cli.rev.is_none() && dirty,
        commit: cli.rev.clone().unwrap_or(head),
    };
    let open_files = server::raise_open_files_limit().context("raising RLIMIT_NOFILE")?;
    let options = ServerOptions {
        binary: server::check_binary(&cli.server)?,
        data_parent: cli.data_parent.clone(),
        env: cli.server_env.clone(),
        quiet_wait: std::time::Duration::from_secs_f64(cli.quiet_wait),
    };
    let machine = Machine::describe();
    println!(
        "machine: {} x {}, {:.1} GiB, Linux {}; open files limit {open_files}",
        machine.cores, machine.cpu_model, machine.memory_gib, machine.kernel
    );
    let (key, value) = match cli.scenario {
        Scenario::Throughput {
            pairs,
            rate,
            duration,
            payload_bytes,
            drain,
            sweep,
            rates,
        } => {
            let params = throughput::Params {
                pairs,
                rate,
                duration_secs: duration,
                payload_bytes,
                drain_secs: drain,
            };
            if sweep {
                let result = throughput::sweep(&options, params, &rates).await?;
                (
                    format!("throughput_sweep_pairs{pairs}"),
                    serde_json::to_value(result)?,
                )
            } else {
                let result = throughput::run(&options, params).await?;
                throughput::print(&result);
                (
                    format!("throughput_pairs{pairs}_rate{rate}"),
                    serde_json::to_value(result)?,
                )
            }
        }
        Scenario::Cluster {
            pairs,
            rates,
            duration,
            payload_bytes,
            drain,
            nats,
        } => {
            let result = cluster::run(
                &options,
                cluster::ClusterParams {
                    load: throughput::Params {
                        pairs,
                        rate: 0,
                        duration_secs: duration,
                        payload_bytes,
                        drain_secs: drain,
                    },
                    rates,
                    nats_url: nats,
                },
            )
            .await?;
            cluster::print(&result);
            (
                format!("cluster_pairs{pairs}"),
                serde_json::to_value(result)?,
            )
        }
        Scenario::Idle {
            counts,
            read_buffer,
            settle,
        } => {
            let result = idle::run(
                &options,
                idle::Params {
                    counts,
                    read_buffer,
                    settle_secs: settle,
                },
            )
            .await?;
            idle::print(&result);
            ("idle".to_string(), serde_json::to_value(result)?)
        }
        Scenario::Catchup {
            messages,
            window,
            payload_bytes,
        } => {
            let result = catchup::run(
                &options,
                catchup::Params {
                    messages,
                    window,
                    payload_bytes,
                },
            )
            .await?;
            catchup::print(&result);
            (format!("catchup_{messages}"), serde_json::to_value(result)?)
        }
        Scenario::Mqtt {
            mosquitto,
            connections,
            pairs,
            window,
            duration,
            fanout,
            payload_bytes,
        } => {
            let mosquitto = if mosquitto.is_empty() {
                None
            } else {
                Some(mosquitto.parse().context("--mosquitto is HOST:PORT")?)
            };
            let result = mqtt::run(
                &options,
                mqtt::Params {
                    mosquitto,
                    connections,
                    pairs,
                    window,
                    duration_secs: duration,
                    fanout,
                    payload_bytes,
                },
            )
            .await?;
            mqtt::print(&result);
            ("mqtt".to_string(), serde_json::to_value(result)?)
        }
        Scenario::Compare {
            targets,
            idle_counts,
            rates,
            pairs,
            step,
            drain,
            payload_bytes,
            stop_after_failures,
            fanout_members,
            fanout_rate,
            fanout_step,
            fanout_payload_bytes,
            fanout_outbound_queue,
            catchup_messages,
            catchup_send_secs,
            soak_users,
            soak_minutes,
            soak_direct_rate,
            soak_group_rate,
            soak_groups,
            soak_churn_percent,
            storm_clients,
            storm_window,
            scenarios,
            smoke,
            peers_script,
            peers_dir,
            charts,
        } => {
            let mut params = if smoke {
                compare::Params {
                    targets,
                    idle_counts: vec![50, 100],
                    rates: vec![20],
                    pairs: 10,
                    step_secs: 3.0,
                    drain_secs: 10.0,
                    payload_bytes,
                    stop_after_failures: 1,
                    fanout_members: vec![6],
                    fanout_rate: 60,
                    fanout_step_secs: 2.0,
                    // The stalled member's backlog (120 small messages) stays within the
                    // sockets' buffers and the server's queue: overflowing them takes megabytes
                    // on loopback, and with a queue small enough for that, members that do read
                    // fell behind it too on this shared machine. The smoke profile checks
                    // completeness beside a stalled member and after its sync, not the close.
                    fanout_payload_bytes: 4096,
                    fanout_outbound_queue: None,
                    catchup_messages: 200,
                    catchup_send_secs: 30.0,
                    soak: compare::SoakParams {
                        users: 40,
                        minutes: 1.0 / 3.0,
                        direct_rate: 20,
                        group_rate: 5,
                        groups: 4,
                        group_min: 5,
                        group_max: 20,
                        churn_percent_per_minute: 60.0,
                        away_max_secs: 3.0,
                        sample_secs: 5.0,
                        payload_bytes,
                    },
                    storm_clients: 200,
                    storm_window_secs: 1.0,
                    storm_targets: vec![compare::Target::TidingsWs],
                    completeness_only: true,
                }
            } else {
                compare::Params {
                    storm_targets: targets.clone(),
                    targets,
                    idle_counts: idle_counts.into_iter().filter(|&c| c > 0).collect(),
                    rates: rates.into_iter().filter(|&r| r > 0).collect(),
                    pairs,
                    step_secs: step,
                    drain_secs: drain,
                    payload_bytes,
                    stop_after_failures,
                    fanout_members: fanout_members.into_iter().filter(|&m| m > 0).collect(),
                    fanout_rate,
                    fanout_step_secs: fanout_step,
                    fanout_payload_bytes,
                    fanout_outbound_queue,
                    catchup_messages,
                    catchup_send_secs,
                    soak: compare::SoakParams {
                        users: soak_users,
                        minutes: soak_minutes,
                        direct_rate: soak_direct_rate,
                        group_rate: soak_group_rate,
                        groups: soak_groups,
                        group_min: 50,
                        group_max: 500,
                        churn_percent_per_minute: soak_churn_percent,
                        away_max_secs: 30.0,
                        sample_secs: 60.0,
                        payload_bytes,
                    },
                    storm_clients,
                    storm_window_secs: storm_window,
                    completeness_only: false,
                }
            };
            if !scenarios.contains(&1) {
                params.idle_counts.clear();
            }
            if !scenarios.contains(&2) {
                params.rates.clear();
            }
            if !scenarios.contains(&3) {
                params.fanout_members.clear();
            }
            if !scenarios.contains(&4) {
                params.catchup_messages = 0;
            }
            if !scenarios.contains(&6) {
                params.soak.users = 0;
            }
            if !scenarios.contains(&5) {
                params.storm_clients = 0;
            }
            let env = compare::Env {
                server: options.clone(),
                peers_script: peers_script
                    .canonicalize()
                    .with_context(|| format!("{}", peers_script.display()))?,
                peers_dir,
            };
            let result = compare::run(&env, params).await?;
            // The charts show scenarios 1 and 2; a run of the others draws none.
            let chartable = !result.sweeps.is_empty() || !result.idle.is_empty();
            if !smoke && chartable && !charts.as_os_str().is_empty() {
                let short: String = revision.commit.chars().take(7).collect();
                let note = format!(
                    "commit {short}, load {}",
                    load_average(&result.uptime_before)
                );
                charts::draw(&charts, &result.sweeps, &result.idle, &note)?;
                println!("charts written to {}", charts.display());
            }
            let passed = result.passed;
            // One key per set of scenarios, so a run of some scenarios does not replace another's.
            let ran = [
                !result.idle.is_empty(),
                !result.sweeps.is_empty(),
                !result.fanout.is_empty(),
                !result.catchups.is_empty(),
                !result.storms.is_empty(),
                !result.soaks.is_empty(),
            ];
            let key = match ran {
                _ if smoke => "compare_smoke".to_string(),
                [true, false, false, false, false, false] => "compare_idle".to_string(),
                [false, true, false, false, false, false] => {
                    format!("compare_sweep_pairs{}", result.params.pairs)
                }
                [false, false, true, false, false, false] => "compare_fanout".to_string(),
                [false, false, false, true, false, false] => "compare_catchup".to_string(),
                [false, false, false, false, true, false] => "compare_storm".to_string(),
                [false, false, false, false, false, true] => "compare_soak".to_string(),
                _ => format!("compare_pairs{}", result.params.pairs),
            };
            if let Some(out) = &cli.out {
                let command: Vec<String> = std::env::args().collect();
                save(
                    out,
                    &revision,
                    &machine,
                    &key,
                    serde_json::to_value(&result)?,
                    &command,
                )?;
                println!("results written to {} under {key}", out.display());
            }
            if !passed {
                anyhow::bail!("the comparison did not pass (see above)");
            }
            return Ok(());
        }
        Scenario::Charts { .. } => unreachable!("handled before the server is checked"),
        Scenario::Search {
            messages,
            conversations,
            queries,
            window,
        } => {
            let result = search::run(
                &options,
                search::Params {
                    messages,
                    conversations,
                    queries_per_kind: queries,
                    window,
                },
            )
            .await?;
            search::print(&result);
            (format!("search_{messages}"), serde_json::to_value(result)?)
        }
    };
    if let Some(out) = &cli.out {
        let command: Vec<String> = std::env::args().collect();
        save(out, &revision, &machine, &key, value, &command)?;
        println!("results written to {} under {key}", out.display());
    }
    Ok(())
}

/// "load average: 1.2, 0.9, 0.7" → "1.2, 0.9, 0.7".
fn load_average(uptime: &str) -> String {
    uptime
        .split_once("load average:")
        .map_or(String::new(), |(_, l)| l.trim().to_string())
}

/// The results key: a commit, and whether tracked files differed from it.
struct Revision {
    commit: String,
    dirty: bool,
}

/// Merges one scenario's results into the file: `{ "<commit>": { "<scenario>": {...} } }`.
fn save(
    path: &Path,
    revision: &Revision,
    machine: &Machine,
    key: &str,
    value: serde_json::Value,
    command: &[String],
) -> anyhow::Result<()> {
    let mut root: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a results file", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    let entry = root
        .as_object_mut()
        .context("the results file holds an object")?
        .entry(revision.commit.clone())
        .or_insert_with(|| serde_json::json!({}));
    let entry = entry
        .as_object_mut()
        .context("a commit entry is an object")?;
    entry.insert("machine".into(), serde_json::to_value(machine)?);
    let recorded_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    entry.insert(
        key.into(),
        serde_json::json!({
            "command": command.join(" "),
            "recorded_at_unix": recorded_at,
            "tracked_files_modified": revision.dirty,
            "result": value,
        }),
    );
    std::fs::write(path, serde_json::to_string_pretty(&root)? + "\n")?;
    Ok(())
}
