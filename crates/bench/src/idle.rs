//! Memory per idle connection: the server's RSS at increasing numbers of authenticated, idle
//! WebSocket connections, and the slope of the line through those points.

use crate::server::{Server, ServerLog, ServerOptions, status_kib};
use crate::setup;
use crate::stats::{Line, regression};
use serde::Serialize;
use std::time::Duration;
use tidings_proto::ws::{ClientFrame, ServerFrame};
use tidings_sdk::Connection;
use tokio::time::Instant;

/// The server-side target, KiB per idle authenticated connection.
pub const TARGET_KIB_PER_CONNECTION: f64 = 8.0;

#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub counts: Vec<usize>,
    /// Client WebSocket read buffer per connection, bytes.
    pub read_buffer: usize,
    /// Wait after the last connection of a step before reading RSS.
    pub settle_secs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub connections: usize,
    pub server_rss_kib: u64,
    /// Seconds the step took to open its connections.
    pub connect_secs: f64,
    pub bench_rss_kib: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub params: Params,
    /// Server RSS after a restart with every account created and no connection open.
    pub baseline_rss_kib: u64,
    pub points: Vec<Point>,
    /// Server RSS against connections, over the points (slope in KiB per connection).
    pub fit: Option<Line>,
    /// Connections that did not answer a ping after the last reading.
    pub lost_connections: usize,
    pub server_log: ServerLog,
    pub passed: bool,
}

async fn settled_rss(server: &Server, settle: Duration) -> anyhow::Result<u64> {
    tokio::time::sleep(settle).await;
    // Then wait (at most 10 more seconds) until two readings 500 ms apart agree within 0.5%.
    let mut last = server.rss_kib()?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server.rss_kib()?;
        if now.abs_diff(last) * 200 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

pub async fn run(server_options: &ServerOptions, mut params: Params) -> anyhow::Result<Outcome> {
    params.counts.sort_unstable();
    params.counts.dedup();
    let max = params.counts.last().copied().unwrap_or(0);
    let server = Server::start(server_options).await?;
    let client = server.client();
    let started = Instant::now();
    let users = setup::create_users(&client, "idle", max).await?;
    println!(
        "idle: created {max} accounts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A fresh process on the same data: the heap left over from creating the accounts (argon2
    // buffers, allocator free lists) would otherwise absorb the first connections and bend
    // the line.
    let server = server.restart(server_options).await?;
    let settle = Duration::from_secs_f64(params.settle_secs);
    let baseline_rss_kib = settled_rss(&server, settle).await?;
    println!("idle: baseline server RSS {baseline_rss_kib} KiB");
    let ws_url = server.ws_url();
    let mut connections: Vec<Connection> = Vec::with_capacity(max);
    let mut points = Vec::new();
    for &count in &params.counts {
        let started = Instant::now();
        let tokens: Vec<&str> = users[connections.len()..count]
            .iter()
            .map(|u| u.token.as_str())
            .collect();
        let first = connections.len();
        connections
            .extend(setup::connect_all(&ws_url, &tokens, first, params.read_buffer, 8, 128).await?);
        let connect_secs = started.elapsed().as_secs_f64();
        let server_rss_kib = settled_rss(&server, settle).await?;
        let bench_rss_kib = status_kib(std::process::id(), "VmRSS")?;
        println!(
            "idle: {count:>6} connections (opened in {connect_secs:.1} s): server RSS {server_rss_kib} KiB, bench RSS {bench_rss_kib} KiB"
        );
        points.push(Point {
            connections: count,
            server_rss_kib,
            connect_secs,
            bench_rss_kib,
        });
    }
    // Every connection should still be open and answering.
    let mut lost_connections = 0;
    for conn in &connections {
        let pong = tokio::time::timeout(
            Duration::from_secs(10),
            conn.request(|id| ClientFrame::Ping { id }),
        )
        .await;
        if !matches!(pong, Ok(Ok(ServerFrame::Pong { .. }))) {
            lost_connections += 1;
        }
    }
    let fit = regression(
        &points
            .iter()
            .map(|p| (p.connections as f64, p.server_rss_kib as f64))
            .collect::<Vec<_>>(),
    );
    for conn in &connections {
        conn.close();
    }
    drop(connections);
    let server_log = server.stop().await?;
    let passed = fit.is_some_and(|f| f.slope <= TARGET_KIB_PER_CONNECTION) && lost_connections == 0;
    Ok(Outcome {
        params,
        baseline_rss_kib,
        points,
        fit,
        lost_connections,
        server_log,
        passed,
    })
}

pub fn print(outcome: &Outcome) {
    println!("idle connections (one user and one device per connection):");
    println!(
        "  {:>12} {:>16} {:>18} {:>14}",
        "connections", "server RSS KiB", "KiB/conn vs base", "bench RSS KiB"
    );
    for p in &outcome.points {
        let per = (p.server_rss_kib as f64 - outcome.baseline_rss_kib as f64)
            / p.connections.max(1) as f64;
        println!(
            "  {:>12} {:>16} {:>18.2} {:>14}",
            p.connections, p.server_rss_kib, per, p.bench_rss_kib
        );
    }
    match outcome.fit {
        Some(f) => println!(
            "  slope {:.2} KiB per connection (intercept {:.0} KiB, r² {:.4}); target <= {TARGET_KIB_PER_CONNECTION} KiB",
            f.slope, f.intercept, f.r_squared
        ),
        None => println!("  need at least two distinct counts for a slope"),
    }
    println!(
        "  connections lost: {}; server log lines: {}",
        outcome.lost_connections, outcome.server_log.lines
    );
    println!("  {}", if outcome.passed { "PASS" } else { "FAIL" });
}
