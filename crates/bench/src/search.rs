//! Search: one user sends N messages of mixed English and Chinese text into several
//! conversations; once the index has caught up, searches of several kinds are timed one after
//! another over REST, as a user would make them.

use crate::server::{Server, ServerLog, ServerOptions};
use crate::setup;
use crate::stats::{Latency, LatencySummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use tidings_proto::rest::SearchRequest;
use tidings_proto::ws::ServerFrame;
use tokio::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub messages: u64,
    pub conversations: usize,
    /// Searches timed per query kind.
    pub queries_per_kind: usize,
    /// Sends kept unacknowledged at most while loading.
    pub window: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindOutcome {
    /// Example queries of this kind.
    pub examples: Vec<String>,
    pub latency: LatencySummary,
    /// Mean hits per search (the page size caps it at 20).
    pub mean_hits: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub params: Params,
    pub load_secs: f64,
    pub load_rate: f64,
    pub send_errors: BTreeMap<String, u64>,
    /// From the last acknowledgement until the last message could be found.
    pub index_lag_secs: f64,
    pub kinds: BTreeMap<String, KindOutcome>,
    pub all: LatencySummary,
    pub server_rss_kib: u64,
    pub server_log: ServerLog,
}

const ENGLISH: &[&str] = &[
    "meeting",
    "lunch",
    "project",
    "release",
    "deploy",
    "review",
    "coffee",
    "weekend",
    "ticket",
    "server",
    "client",
    "database",
    "budget",
    "report",
    "design",
    "travel",
    "birthday",
    "music",
    "football",
    "weather",
    "invoice",
    "contract",
    "holiday",
    "camera",
    "garden",
    "kitchen",
    "library",
    "network",
    "printer",
    "schedule",
    "question",
    "answer",
    "morning",
    "evening",
    "tomorrow",
    "yesterday",
    "airport",
    "hotel",
    "station",
    "museum",
    "market",
    "doctor",
    "teacher",
    "student",
    "window",
    "coupon",
    "battery",
    "charger",
    "keyboard",
    "monitor",
];

const CHINESE: &[&str] = &[
    "你好",
    "通讯",
    "会议",
    "明天",
    "午饭",
    "项目",
    "发布",
    "服务器",
    "数据库",
    "预算",
    "报告",
    "设计",
    "旅行",
    "生日",
    "音乐",
    "足球",
    "天气",
    "合同",
    "假期",
    "相机",
    "花园",
    "厨房",
    "图书馆",
    "网络",
    "打印机",
    "日程",
    "问题",
    "答案",
    "早上",
    "晚上",
    "机场",
    "酒店",
    "车站",
    "博物馆",
    "市场",
    "医生",
    "老师",
    "学生",
    "窗户",
    "电池",
    "键盘",
    "显示器",
    "即时通讯",
    "软件",
    "消息",
    "朋友",
    "家人",
    "公司",
    "周末",
    "咖啡",
];

/// Makes one query of a kind from the generator.
type QueryMaker = Box<dyn Fn(&mut Words) -> String>;

/// A small deterministic generator, so every run stores the same texts.
struct Words(u64);

impl Words {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next() % list.len() as u64) as usize]
    }

    /// A message of 6 to 12 words, about half of them Chinese (written without spaces, as
    /// Chinese is).
    fn text(&mut self, out: &mut String) {
        let n = 6 + self.next() % 7;
        for i in 0..n {
            if self.next().is_multiple_of(2) {
                out.push_str(self.pick(CHINESE));
            } else {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(self.pick(ENGLISH));
                out.push(' ');
            }
        }
    }
}

pub async fn run(server_options: &ServerOptions, params: Params) -> anyhow::Result<Outcome> {
    let server = Server::start(server_options).await?;
    let client = server.client();
    let users = setup::create_users(&client, "search", 2).await?;
    let (a, b) = (&users[0], &users[1]);
    let api = client.authed(a.token.clone());
    let mut conversations = Vec::with_capacity(params.conversations);
    for i in 0..params.conversations {
        conversations.push(
            api.create_group(&format!("room {i}"), &[b.user_id])
                .await?
                .id,
        );
    }
    let ws_url = server.ws_url();
    let mut sender = setup::connect_all(&ws_url, &[a.token.as_str()], 0, 64 * 1024, 65_536, 1)
        .await?
        .pop()
        .expect("one connection");

    // Load: one pipelined connection, at most `window` sends unacknowledged.
    let n = params.messages;
    let mut words = Words(0x9E37_79B9_7F4A_7C15);
    let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    let mut body = String::new();
    while answered < n {
        while sent < n && sent - answered < params.window {
            body.clear();
            if sent == n - 1 {
                // A word found nowhere else marks the last message, to see when it is indexed.
                body.push_str("zzfinalmarker ");
            }
            words.text(&mut body);
            let conversation = conversations[(sent % conversations.len() as u64) as usize];
            let text = serde_json::to_string(&body)?;
            let mut frame = String::with_capacity(160 + text.len());
            let _ = write!(
                frame,
                r#"{{"type":"send","id":"{sent}","conversation_id":{conversation},"client_msg_id":"c{sent}","body":{{"kind":"text","text":{text}}}}}"#
            );
            sender.send_raw(frame)?;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(30), sender.next_event()).await {
            Ok(Some(ServerFrame::Ack { .. })) => answered += 1,
            Ok(Some(ServerFrame::Error {
                id: Some(_), code, ..
            })) => {
                answered += 1;
                *send_errors.entry(code.as_str().to_string()).or_default() += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("the sender's connection closed after {answered} answers"),
            Err(_) => anyhow::bail!("no answer for 30 s after {answered} answers"),
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "search: stored {n} messages in {load_secs:.1} s ({:.0} msg/s), errors {send_errors:?}",
        n as f64 / load_secs
    );
    sender.close();

    // Wait for the indexer to reach the last message.
    let acked_at = Instant::now();
    let marker = SearchRequest {
        q: "zzfinalmarker".into(),
        ..Default::default()
    };
    loop {
        if !api.search(&marker).await?.hits.is_empty() {
            break;
        }
        if acked_at.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the index did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index_lag_secs = acked_at.elapsed().as_secs_f64();
    println!("search: index caught up {index_lag_secs:.1} s after the last acknowledgement");
    crate::server::wait_for_quiet(server_options.quiet_wait).await;

    // Searches, one at a time, by kind.
    let mut picks = Words(42);
    let mut kinds = BTreeMap::new();
    let mut all = Latency::default();
    let generators: Vec<(&str, QueryMaker)> = vec![
        (
            "english_word",
            Box::new(|w: &mut Words| w.pick(ENGLISH).to_string()),
        ),
        (
            "english_two_words",
            Box::new(|w: &mut Words| format!("{} {}", w.pick(ENGLISH), w.pick(ENGLISH))),
        ),
        (
            "english_prefix",
            Box::new(|w: &mut Words| w.pick(ENGLISH)[..4].to_string()),
        ),
        (
            "chinese_two_chars",
            Box::new(|w: &mut Words| {
                let word = w.pick(CHINESE);
                word.chars().take(2).collect()
            }),
        ),
        (
            "chinese_phrase",
            Box::new(|w: &mut Words| format!("{}{}", w.pick(CHINESE), w.pick(CHINESE))),
        ),
        (
            "in_one_conversation",
            Box::new(|w: &mut Words| w.pick(ENGLISH).to_string()),
        ),
    ];
    for (kind, generate) in &generators {
        let mut latency = Latency::default();
        let mut hits = 0usize;
        let mut examples = Vec::new();
        for i in 0..params.queries_per_kind {
            let q = generate(&mut picks);
            if i < 3 {
                examples.push(q.clone());
            }
            let req = SearchRequest {
                q,
                conversation_id: (*kind == "in_one_conversation")
                    .then(|| conversations[i % conversations.len()]),
                ..Default::default()
            };
            let began = Instant::now();
            let results = api.search(&req).await?;
            let ns = began.elapsed().as_nanos() as i64;
            latency.record_ns(ns);
            all.record_ns(ns);
            hits += results.hits.len();
        }
        let summary = latency.summary();
        println!(
            "search: {kind:<20} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  mean hits {:.1}",
            summary.p50_ms,
            summary.p99_ms,
            summary.max_ms,
            hits as f64 / params.queries_per_kind as f64
        );
        kinds.insert(
            kind.to_string(),
            KindOutcome {
                examples,
                latency: summary,
                mean_hits: hits as f64 / params.queries_per_kind as f64,
            },
        );
    }
    let server_rss_kib = server.rss_kib()?;
    let server_log = server.stop().await?;
    Ok(Outcome {
        load_rate: n as f64 / load_secs,
        params,
        load_secs,
        send_errors,
        index_lag_secs,
        kinds,
        all: all.summary(),
        server_rss_kib,
        server_log,
    })
}

pub fn print(outcome: &Outcome) {
    let all = &outcome.all;
    println!(
        "search: {} messages, all {} searches: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        outcome.params.messages, all.count, all.p50_ms, all.p90_ms, all.p99_ms
    );
}
