//! The server's metrics: one process-wide registry of atomic counters, gauges and fixed-bucket
//! histograms, and its rendering in the Prometheus text exposition format (version 0.0.4).
//!
//! Why our own and not a crate: what the server records is a fixed list known at compile time,
//! so every metric is a field of [`Metrics`] (names are constants in [`render`], in one place),
//! recording is one relaxed atomic add on the hot paths (send, deliver, commit), and nothing
//! here allocates after start-up except the one labelled family with an open key set (HTTP
//! requests by route), which is capped at [`MAX_HTTP_SERIES`]. See docs/dependencies.md.
//!
//! Labels stay bounded: transports and outcomes are enums; HTTP routes are the router's matched
//! paths (`/api/v1/conversations/{id}/messages`, never a concrete id) and the status code.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// At most this many (route, method, status) series; later new combinations count under the
/// route `other`, so a misbehaving router can never grow the registry without bound.
pub const MAX_HTTP_SERIES: usize = 1024;

/// A value that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency buckets in seconds: 0.5 ms to 10 s, for acks, deliveries and commits.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Batch-size buckets (messages per commit).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed upper bounds; the `+Inf` bucket is implied.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); the last slot is `+Inf`.
    buckets: Vec<AtomicU64>,
    /// The sum of observations, as the bits of an `f64`.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let slot = self.bounds.partition_point(|b| *b < value);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum());
        // The count is the +Inf bucket, read once, so the two always agree in one scrape.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The transports a connection can arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The native protocol over WebSocket.
    WebSocket,
    /// MQTT, over TCP or WebSocket.
    Mqtt,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::WebSocket, Transport::Mqtt];
    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Mqtt => "mqtt",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Holds one open connection in the gauge of its transport until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Transport);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics().connections[self.0.index()].dec();
    }
}

/// Every metric the server records.
#[derive(Debug)]
pub struct Metrics {
    connections: [Gauge; 2],
    connections_opened: [Counter; 2],
    /// Send requests that reached the core, whatever their outcome.
    pub messages_received: Counter,
    /// Messages handed to a recipient's connection live (not through sync or history).
    pub messages_delivered: Counter,
    /// From the server's timestamp of a message (taken when its send arrived) to the moment it
    /// is handed to a recipient's connection.
    pub delivery_latency: Histogram,
    /// From a send's arrival in the core to its acknowledgement (committed to disk).
    pub ack_latency: Histogram,
    /// Messages per store commit of the sequencer.
    pub commit_batch_size: Histogram,
    /// Duration of one `append_messages` call (one transaction, one fsync).
    pub commit_latency: Histogram,
    /// Frames that did not fit a connection's outbound queue (the connection is closed as a
    /// slow consumer).
    pub outbound_queue_drops: Counter,
    /// Pages read from the store for `sync` and hole filling.
    pub sync_pages: Counter,
    /// Push notifications handed to a push service, and those it refused or that failed.
    pub push_sent: Counter,
    pub push_failed: Counter,
    /// The TLS certificate's not-after time (Unix seconds); 0 when TLS is off.
    pub tls_cert_not_after: Gauge,
    /// Duration of HTTP requests, all routes together.
    pub http_duration: Histogram,
    http_requests: Mutex<HashMap<(String, &'static str, u16), u64>>,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            connections: Default::default(),
            connections_opened: Default::default(),
            messages_received: Counter::default(),
            messages_delivered: Counter::default(),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
            ack_latency: Histogram::new(LATENCY_BUCKETS),
            commit_batch_size: Histogram::new(BATCH_BUCKETS),
            commit_latency: Histogram::new(LATENCY_BUCKETS),
            outbound_queue_drops: Counter::default(),
            sync_pages: Counter::default(),
            push_sent: Counter::default(),
            push_failed: Counter::default(),
            tls_cert_not_after: Gauge::default(),
            http_duration: Histogram::new(LATENCY_BUCKETS),
            http_requests: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection as open on `transport` until the guard is dropped.
    pub fn connection_opened(&self, transport: Transport) -> ConnectionGuard {
        self.connections[transport.index()].inc();
        self.connections_opened[transport.index()].inc();
        ConnectionGuard(transport)
    }

    /// Open connections on `transport` right now.
    pub fn connections(&self, transport: Transport) -> i64 {
        self.connections[transport.index()].get()
    }

    /// Counts one HTTP request. `route` is the matched route pattern (or `unmatched`).
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_duration.observe_duration(took);
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        let mut map = self.http_requests.lock().unwrap_or_else(|e| e.into_inner());
        let key = (route.to_owned(), method, status);
        if let Some(n) = map.get_mut(&key) {
            *n += 1;
        } else if map.len() < MAX_HTTP_SERIES {
            map.insert(key, 1);
        } else {
            *map.entry(("other".to_owned(), method, status)).or_insert(0) += 1;
        }
    }

    /// HTTP requests counted for one series.
    pub fn http_requests(&self, route: &str, method: &str, status: u16) -> u64 {
        let map = self.http_requests.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .find(|((r, m, s), _)| r == route && *m == method && *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The `tracing` target of spans that exist for trace export only (`ws.frame`, `store.commit`,
/// `push.deliver`): the log output leaves them out (they would add a span to every line),
/// and with `[telemetry]` off no layer wants them, so they cost nothing.
pub const TRACE_TARGET: &str = "tidings::otel";

/// A process-unique id for a request or connection, for the spans of log lines (16 hex digits: the start
/// time's low bits, so ids from restarts rarely collide, then a counter).
pub fn next_log_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (t & 0xffff_ffff) << 32
    });
    format!(
        "{:016x}",
        base | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
    )
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// What `/proc` says about this process (Linux); `None` elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Reads the resident set size, open file descriptors and their limit from `/proc/self`.
pub fn process_stats() -> ProcessStats {
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    ProcessStats {
        resident_bytes,
        open_fds,
        max_fds,
    }
}

/// The whole registry in the Prometheus text format.
pub fn render() -> String {
    let m = metrics();
    let mut out = String::with_capacity(8 * 1024);

    header(
        &mut out,
        "tidings_connections",
        "gauge",
        "Open client connections by transport.",
    );
    for t in Transport::ALL {
        let _ = writeln!(
            out,
            "tidings_connections{{transport=\"{}\"}} {}",
            t.label(),
            m.connections[t.index()].get()
        );
    }
    header(
        &mut out,
        "tidings_connections_opened_total",
        "counter",
        "Client connections accepted by transport.",
    );
    for t in Transport::ALL {
        let _ = writeln!(
            out,
            "tidings_connections_opened_total{{transport=\"{}\"}} {}",
            t.label(),
            m.connections_opened[t.index()].get()
        );
    }
    scalar(
        &mut out,
        "tidings_messages_received_total",
        "counter",
        "Send requests that reached the core, whatever their outcome.",
        m.messages_received.get(),
    );
    scalar(
        &mut out,
        "tidings_messages_delivered_total",
        "counter",
        "Messages handed live to a recipient's connection.",
        m.messages_delivered.get(),
    );
    for (name, help, h) in [
        (
            "tidings_delivery_latency_seconds",
            "From a message's arrival to its hand-over to a recipient's connection.",
            &m.delivery_latency,
        ),
        (
            "tidings_ack_latency_seconds",
            "From a send's arrival in the core to its acknowledgement (durable).",
            &m.ack_latency,
        ),
        (
            "tidings_commit_batch_size",
            "Messages per store commit of the sequencer.",
            &m.commit_batch_size,
        ),
        (
            "tidings_commit_latency_seconds",
            "Duration of one message commit (one transaction, one fsync).",
            &m.commit_latency,
        ),
        (
            "tidings_http_request_duration_seconds",
            "Duration of HTTP requests (until the response head).",
            &m.http_duration,
        ),
    ] {
        header(&mut out, name, "histogram", help);
        h.render(&mut out, name, "");
    }
    scalar(
        &mut out,
        "tidings_outbound_queue_drops_total",
        "counter",
        "Frames that did not fit a connection's outbound queue (slow consumers closed).",
        m.outbound_queue_drops.get(),
    );
    scalar(
        &mut out,
        "tidings_sync_pages_total",
        "counter",
        "Pages read from the store for sync and hole filling.",
        m.sync_pages.get(),
    );
    header(
        &mut out,
        "tidings_push_notifications_total",
        "counter",
        "Push notifications by outcome.",
    );
    let _ = writeln!(
        out,
        "tidings_push_notifications_total{{outcome=\"sent\"}} {}",
        m.push_sent.get()
    );
    let _ = writeln!(
        out,
        "tidings_push_notifications_total{{outcome=\"failed\"}} {}",
        m.push_failed.get()
    );
    header(
        &mut out,
        "tidings_http_requests_total",
        "counter",
        "HTTP requests by matched route, method and status.",
    );
    {
        let map = m.http_requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut series: Vec<_> = map.iter().collect();
        series.sort();
        for ((route, method, status), n) in series {
            let _ = writeln!(
                out,
                "tidings_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
    }
    let not_after = m.tls_cert_not_after.get();
    if not_after > 0 {
        scalar(
            &mut out,
            "tidings_tls_certificate_not_after_seconds",
            "gauge",
            "The not-after time of the serving TLS certificate (Unix seconds).",
            not_after,
        );
    }
    let process = process_stats();
    if let Some(v) = process.resident_bytes {
        scalar(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            v,
        );
    }
    if let Some(v) = process.open_fds {
        scalar(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            v,
        );
    }
    if let Some(v) = process.max_fds {
        scalar(
            &mut out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            v,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_agree_with_their_count() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert_eq!(
            out,
            "x_bucket{le=\"1\"} 3\nx_bucket{le=\"2\"} 4\nx_bucket{le=\"+Inf\"} 5\nx_sum 6\nx_count 5\n"
        );
    }

    #[test]
    fn http_series_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_HTTP_SERIES + 10 {
            m.http_request(&format!("/r{i}"), "GET", 200, Duration::ZERO);
        }
        m.http_request("/r0", "BREW", 418, Duration::ZERO);
        let map = m.http_requests.lock().unwrap();
        // The cap, plus the two overflow series (GET 200, and the unknown method's 418).
        assert_eq!(map.len(), MAX_HTTP_SERIES + 2);
        assert_eq!(map[&("other".to_owned(), "GET", 200)], 10);
        drop(map);
        assert_eq!(m.http_requests("other", "other", 418), 1);
    }

    #[test]
    fn connections_are_counted_while_open() {
        let before = metrics().connections(Transport::Mqtt);
        let guard = metrics().connection_opened(Transport::Mqtt);
        assert_eq!(metrics().connections(Transport::Mqtt), before + 1);
        drop(guard);
        assert_eq!(metrics().connections(Transport::Mqtt), before);
        assert!(render().contains("tidings_connections{transport=\"mqtt\"}"));
    }

    #[test]
    fn process_stats_come_from_proc() {
        if std::path::Path::new("/proc/self/status").exists() {
            let s = process_stats();
            assert!(s.resident_bytes.unwrap() > 1024 * 1024);
            assert!(s.open_fds.unwrap() >= 3);
            assert!(s.max_fds.unwrap() > 0);
        }
    }
}
