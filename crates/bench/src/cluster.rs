//! The 1:1 scenario on the scale-out backends, in one run beside the embedded default: SQLite on
//! one node, PostgreSQL on one node, and two nodes on PostgreSQL + NATS with senders and
//! receivers on the same node and then on different nodes. The difference between the last two
//! is what one cross-node hop (publish to NATS, delivery by the other node) adds to latency.
//!
//! Each configuration runs the same open-loop load as `throughput` (same code: `run_on`), on
//! fresh servers and a fresh database, so only the backend and the placement differ.

use crate::server::{Server, ServerOptions};
use crate::throughput::{self, Outcome, Params};
use serde::Serialize;
use tidings_store_postgres::testing::TestDatabase;

#[derive(Clone, Debug, Serialize)]
pub struct ClusterParams {
    pub load: Params,
    /// Offered rates, each run in every configuration.
    pub rates: Vec<u64>,
    pub nats_url: String,
}

/// One offered rate in the four configurations.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub rate: u64,
    pub sqlite: Outcome,
    pub postgres: Outcome,
    pub two_nodes_same_node: Outcome,
    pub two_nodes_cross_node: Outcome,
    /// Cross-node minus same-node end-to-end latency at p50 and p99 (ms): the cost of a hop.
    pub hop_added_p50_ms: f64,
    pub hop_added_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterOutcome {
    pub params: ClusterParams,
    pub steps: Vec<Step>,
}

/// The options of a node on `db` (and on NATS under `prefix`, when given).
fn node_options(
    base: &ServerOptions,
    db: &TestDatabase,
    bus: Option<(&str, &str)>,
) -> ServerOptions {
    let mut options = base.clone();
    options
        .env
        .push(("TIDINGS_STORE_KIND".into(), "postgres".into()));
    options
        .env
        .push(("TIDINGS_STORE_URL".into(), db.url.clone()));
    options
        .env
        .push(("TIDINGS_STORE_MAX_CONNECTIONS".into(), "16".into()));
    if let Some((url, prefix)) = bus {
        options.env.push(("TIDINGS_BUS_KIND".into(), "nats".into()));
        options.env.push(("TIDINGS_BUS_URL".into(), url.into()));
        options
            .env
            .push(("TIDINGS_BUS_SUBJECT_PREFIX".into(), prefix.into()));
        // Tokens are checked by whichever node a client reaches: one issuer for both.
        options.env.push((
            "TIDINGS_TOKENS_ISSUER".into(),
            "http://bench.cluster".into(),
        ));
    }
    options
}

async fn two_nodes(
    base: &ServerOptions,
    params: &ClusterParams,
    load: Params,
    cross: bool,
) -> anyhow::Result<Outcome> {
    let db = TestDatabase::create().await;
    let prefix = format!("tidings-bench.{}", db.name);
    let options = node_options(base, &db, Some((&params.nats_url, &prefix)));
    let first = Server::start(&options).await?;
    let second = Server::start_sharing(&options, &first).await?;
    let receivers_on = if cross { 1 } else { 0 };
    throughput::run_on(&options, load, vec![first, second], 0, receivers_on).await
}

pub async fn run(base: &ServerOptions, params: ClusterParams) -> anyhow::Result<ClusterOutcome> {
    let mut steps = Vec::new();
    for &rate in &params.rates {
        let load = Params {
            rate,
            ..params.load.clone()
        };
        println!("== {rate} msg/s: SQLite, one node");
        let sqlite = throughput::run(base, load.clone()).await?;
        throughput::print(&sqlite);

        println!("== {rate} msg/s: PostgreSQL, one node");
        let postgres = {
            let db = TestDatabase::create().await;
            let options = node_options(base, &db, None);
            let server = Server::start(&options).await?;
            throughput::run_on(&options, load.clone(), vec![server], 0, 0).await?
        };
        throughput::print(&postgres);

        println!("== {rate} msg/s: two nodes (PostgreSQL + NATS), sender and receiver on one node");
        let same = two_nodes(base, &params, load.clone(), false).await?;
        throughput::print(&same);

        println!("== {rate} msg/s: two nodes, sender and receiver on different nodes");
        let cross = two_nodes(base, &params, load, true).await?;
        throughput::print(&cross);

        steps.push(Step {
            rate,
            hop_added_p50_ms: cross.e2e_latency.p50_ms - same.e2e_latency.p50_ms,
            hop_added_p99_ms: cross.e2e_latency.p99_ms - same.e2e_latency.p99_ms,
            sqlite,
            postgres,
            two_nodes_same_node: same,
            two_nodes_cross_node: cross,
        });
    }
    Ok(ClusterOutcome { params, steps })
}

pub fn print(outcome: &ClusterOutcome) {
    println!(
        "cluster summary ({} pairs, {} s per run; ms from the intended send time):",
        outcome.params.load.pairs, outcome.params.load.duration_secs
    );
    println!(
        "  {:>7}  {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "offered", "configuration", "acks/s", "ack p99", "e2e p50", "e2e p99", "cpu s", "pass"
    );
    for step in &outcome.steps {
        for (name, o) in [
            ("sqlite, 1 node", &step.sqlite),
            ("postgres, 1 node", &step.postgres),
            ("pg+nats, same node", &step.two_nodes_same_node),
            ("pg+nats, cross node", &step.two_nodes_cross_node),
        ] {
            println!(
                "  {:>7}  {:<24} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>6}",
                step.rate,
                name,
                o.achieved_ack_rate,
                o.ack_latency.p99_ms,
                o.e2e_latency.p50_ms,
                o.e2e_latency.p99_ms,
                o.server_cpu_secs,
                o.passed
            );
        }
        println!(
            "  {:>7}  cross-node hop adds {:.2} ms at p50, {:.2} ms at p99",
            step.rate, step.hop_added_p50_ms, step.hop_added_p99_ms
        );
    }
}
