//! The shipped nginx configuration (`deploy/nginx/tidings.conf`) in front of two real nodes on
//! PostgreSQL + NATS, as the compose file deploys them: nginx terminates TLS and upgrades
//! WebSockets; users whose connections land on different nodes chat through it; the nodes see
//! the client's address (from `X-Forwarded-For`, trusted only from the proxy) rather than the
//! proxy's; and when a node is killed, requests and reconnections go to the other one.
//!
//! Only the lines the file marks as rewritable are changed (upstream addresses, listen ports,
//! certificate paths); the test fails if one of them is missing, so the file cannot drift from
//! what is tested. Needs nginx (Debian package `nginx`, installed by `scripts/test`),
//! PostgreSQL and NATS; without nginx the test is skipped unless `REQUIRE_TEST_CLIENTS` is set.

use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tidings_proto::ws::{ClientFrame, ServerFrame};
use tidings_proto::{ConversationId, MessageBody};
use tidings_store_postgres::testing::TestDatabase;
use tidings_testkit::{PASSWORD, ServerProcess};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BIN: &str = env!("CARGO_BIN_EXE_tidings");
/// The address clients connect from; the proxy (and the nodes' peer) is 127.0.0.1.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `deploy/nginx/tidings.conf` with the marked lines pointed at this test's nodes, ports and
/// certificate. Panics when a marked line is missing.
fn rendered_site(nodes: &[SocketAddr], https: u16, http: u16, tls_dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/tidings.conf");
    let mut site = std::fs::read_to_string(&path).unwrap();
    let mut replace = |from: &str, to: &str| {
        assert!(
            site.contains(from),
            "{} no longer has `{from}`",
            path.display()
        );
        site = site.replace(from, to);
    };
    replace("server tidings-1:8080", &format!("server {}", nodes[0]));
    replace("server tidings-2:8080", &format!("server {}", nodes[1]));
    replace(
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{https} ssl http2;"),
    );
    replace("listen [::]:443 ssl http2;", "");
    replace("listen 80;", &format!("listen 127.0.0.1:{http};"));
    replace("listen [::]:80;", "");
    replace("/etc/nginx/tls/", &format!("{}/", tls_dir.display()));
    site
}

/// nginx as a foreground child with everything under `dir`.
struct Nginx {
    /// Killed on drop.
    _child: tokio::process::Child,
}

impl Nginx {
    async fn start(binary: &Path, dir: &Path, site: &str) -> Nginx {
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "pid {d}/nginx.pid;\nworker_processes 1;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let conf = dir.join("nginx.conf");
        let error_log = dir.join("error.log");
        // `nginx -t` first: a configuration error is reported as such, not as a refused connection.
        let check = tokio::process::Command::new(binary)
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .output()
            .await
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            // One process: killing it on drop leaves no orphaned worker holding the port.
            .args(["-g", "daemon off; master_process off;"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Nginx { _child: child }
    }
}

struct Https {
    http: reqwest::Client,
    base: String,
}

impl Https {
    fn new(ca_pem: &str, port: u16) -> Https {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .local_address(IpAddr::from(CLIENT_IP))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Https {
            http,
            base: format!("https://localhost:{port}"),
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> serde_json::Value {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    async fn register_and_sign_in(&self, name: &str, forged: Option<&str>) -> (i64, String) {
        let account = self
            .json(
                self.http
                    .post(format!("{}/api/v1/accounts", self.base))
                    .json(&serde_json::json!({"username": name, "password": PASSWORD})),
            )
            .await;
        (
            account["user_id"].as_i64().unwrap(),
            self.sign_in(name, forged).await,
        )
    }

    async fn sign_in(&self, name: &str, forged: Option<&str>) -> String {
        let mut request = self.http.post(format!("{}/oauth/token", self.base)).form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", PASSWORD),
            ("device_name", "behind nginx"),
        ]);
        if let Some(forged) = forged {
            request = request.header("x-forwarded-for", forged);
        }
        let tokens = self.json(request).await;
        tokens["access_token"].as_str().unwrap().to_string()
    }
}

/// A native-protocol connection over WSS through nginx, with raw frames.
struct Wss {
    ws: tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Wss {
    async fn connect(ca_der: Vec<u8>, port: u16, token: &str) -> Wss {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(ca_der))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((CLIENT_IP, 0))).unwrap();
        let tcp = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
            .await
            .expect("the WebSocket upgrade passes through nginx");
        let mut conn = Wss { ws, next_id: 0 };
        let id = conn.id();
        conn.send(ClientFrame::Auth {
            id: id.clone(),
            token: token.to_string(),
        })
        .await;
        match conn.answer(&id).await {
            ServerFrame::AuthOk { .. } => conn,
            other => panic!("auth through nginx: {other:?}"),
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    async fn send(&mut self, frame: ClientFrame) {
        let text = serde_json::to_string(&frame).unwrap();
        self.ws.send(WsMessage::Text(text.into())).await.unwrap();
    }

    async fn next_frame(&mut self) -> serde_json::Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("a frame within 15 s")
                .expect("the connection is open")
                .expect("a WebSocket message");
            if let WsMessage::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// The answer to request `id`, skipping events.
    async fn answer(&mut self, id: &str) -> ServerFrame {
        loop {
            let frame = self.next_frame().await;
            if frame["id"] == id {
                return serde_json::from_value(frame).unwrap();
            }
        }
    }

    async fn send_text(&mut self, conversation: ConversationId, text: &str) {
        let id = self.id();
        self.send(ClientFrame::Send {
            id: id.clone(),
            conversation_id: conversation,
            client_msg_id: format!("{text}-{id}"),
            body: MessageBody::Text { text: text.into() },
            reply_to: None,
            thread_root: None,
            mentions: None,
        })
        .await;
        match self.answer(&id).await {
            ServerFrame::Ack { .. } => {}
            other => panic!("send through nginx: {other:?}"),
        }
    }

    /// The texts of the next `n` message events in `conversation`, in arrival order.
    async fn texts(&mut self, conversation: ConversationId, n: usize) -> Vec<String> {
        let mut texts = Vec::new();
        while texts.len() < n {
            if let Ok(ServerFrame::Message { message }) =
                serde_json::from_value(self.next_frame().await)
                && message.conversation_id == conversation
                && let MessageBody::Text { text } = message.body
            {
                texts.push(text);
            }
        }
        texts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_nginx_config_fronts_two_nodes() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but nginx is not installed"
        );
        eprintln!("nginx is not installed; skipping");
        return;
    };
    let db = TestDatabase::create().await;
    let nats = std::env::var("NATS_TEST_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("tidings-deploy-test.{}", db.name);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("TIDINGS_STORE_KIND", "postgres"),
        ("TIDINGS_STORE_URL", db.url.as_str()),
        ("TIDINGS_STORE_MAX_CONNECTIONS", "4"),
        ("TIDINGS_BUS_KIND", "nats"),
        ("TIDINGS_BUS_URL", nats.as_str()),
        ("TIDINGS_BUS_SUBJECT_PREFIX", prefix.as_str()),
        ("TIDINGS_TOKENS_ISSUER", "https://chat.example.test"),
        // The proxy connects from 127.0.0.1; clients come from 127.0.0.2.
        ("TIDINGS_HTTP_TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
    ];
    let first = ServerProcess::spawn(Path::new(BIN), data.path(), &env)
        .await
        .unwrap();
    let second = ServerProcess::spawn(Path::new(BIN), data.path(), &env)
        .await
        .unwrap();
    let node_addr = |p: &ServerProcess| -> SocketAddr {
        p.base_url.trim_start_matches("http://").parse().unwrap()
    };
    let nodes = [node_addr(&first), node_addr(&second)];

    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca_pem = cert.cert.pem();
    std::fs::write(tls_dir.join("fullchain.pem"), &ca_pem).unwrap();
    std::fs::write(
        tls_dir.join("privkey.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let (https_port, http_port) = (free_port(), free_port());
    let _nginx = Nginx::start(
        &nginx,
        dir.path(),
        &rendered_site(&nodes, https_port, http_port, &tls_dir),
    )
    .await;
    let client = Https::new(&ca_pem, https_port);
    let mut up = false;
    for _ in 0..100 {
        if let Ok(response) = client
            .http
            .get(format!("{}/healthz", client.base))
            .send()
            .await
        {
            assert_eq!(response.status(), 200);
            assert!(
                response.headers()["strict-transport-security"]
                    .to_str()
                    .unwrap()
                    .starts_with("max-age="),
                "HSTS at the TLS terminator"
            );
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "nginx never answered over HTTPS");
    // Plain HTTP is redirected to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{http_port}/api/v1/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 308);
    assert!(
        plain.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://")
    );

    // Accounts and sign-ins through the proxy. Alice's sign-in carries a forged
    // X-Forwarded-For: nginx appends the real client, and only that is believed.
    client.register_and_sign_in("alice", None).await;
    let (bob_id, bob_token) = client.register_and_sign_in("bob", None).await;
    let granted = std::process::Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(data.path())
        .args(["grant-admin", "alice"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let alice_token = client.sign_in("alice", Some("203.0.113.7")).await;
    let audit = client
        .json(
            client
                .http
                .get(format!(
                    "{}/api/v1/admin/audit?kind=sign_in.success",
                    client.base
                ))
                .bearer_auth(&alice_token),
        )
        .await;
    let addresses: Vec<&str> = audit["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert!(addresses.len() >= 3, "{audit}");
    assert!(
        addresses.iter().all(|a| *a == "127.0.0.2"),
        "the nodes record the client behind the proxy, never the proxy or a forged entry: {addresses:?}"
    );

    // A direct conversation; two connections each. least_conn spreads the four WebSockets over
    // both nodes, so messages cross between nodes over NATS.
    let conversation = client
        .json(
            client
                .http
                .post(format!("{}/api/v1/conversations/direct", client.base))
                .bearer_auth(&alice_token)
                .json(&serde_json::json!({"user_id": bob_id})),
        )
        .await;
    let conversation = ConversationId(conversation["id"].as_i64().unwrap());
    let ca_der = cert.cert.der().to_vec();
    let mut alice_a = Wss::connect(ca_der.clone(), https_port, &alice_token).await;
    let mut bob_a = Wss::connect(ca_der.clone(), https_port, &bob_token).await;
    // Her second device: the sending device itself gets only the ack, not the event.
    let alice_phone = client.sign_in("alice", None).await;
    let mut alice_b = Wss::connect(ca_der.clone(), https_port, &alice_phone).await;
    let mut bob_b = Wss::connect(ca_der.clone(), https_port, &bob_token).await;
    let sent: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    for text in &sent {
        alice_a.send_text(conversation, text).await;
    }
    assert_eq!(bob_a.texts(conversation, 20).await, sent);
    assert_eq!(bob_b.texts(conversation, 20).await, sent);
    assert_eq!(alice_b.texts(conversation, 20).await, sent);
    let replies: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    for text in &replies {
        bob_b.send_text(conversation, text).await;
    }
    assert_eq!(alice_a.texts(conversation, 20).await, replies);
    assert_eq!(alice_b.texts(conversation, 20).await, replies);
    drop((alice_a, alice_b, bob_a, bob_b));

    // One node dies: every request through the proxy still succeeds (nginx tries the other),
    // and new WebSockets land on the survivor.
    first.kill().await.unwrap();
    for _ in 0..10 {
        let response = client
            .http
            .get(format!("{}/api/v1/account", client.base))
            .bearer_auth(&bob_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let mut alice = Wss::connect(ca_der.clone(), https_port, &alice_token).await;
    let mut bob = Wss::connect(ca_der, https_port, &bob_token).await;
    alice.send_text(conversation, "still here").await;
    assert_eq!(bob.texts(conversation, 1).await, ["still here"]);
    drop((alice, bob));
    second.kill().await.unwrap();
}

/// Every `TIDINGS_*` variable the deployment files set names a real configuration key (the
/// server refuses unknown ones at start, which in a cluster would surface only on rollout).
#[test]
fn deployment_files_name_only_real_config_keys() {
    let example = std::process::Command::new(BIN)
        .arg("example-config")
        .output()
        .unwrap();
    assert!(example.status.success());
    let table: toml::Table = String::from_utf8(example.stdout).unwrap().parse().unwrap();
    let mut known = std::collections::BTreeSet::new();
    fn flatten(prefix: &str, table: &toml::Table, known: &mut std::collections::BTreeSet<String>) {
        for (key, value) in table {
            let name = format!("{prefix}_{}", key.to_ascii_uppercase());
            match value {
                toml::Value::Table(inner) => flatten(&name, inner, known),
                _ => {
                    known.insert(name);
                }
            }
        }
    }
    flatten("TIDINGS", &table, &mut known);
    assert!(known.contains("TIDINGS_STORE_URL"), "{known:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let files = [
        "deploy/compose/docker-compose.yml",
        "deploy/docker/Dockerfile",
        "deploy/k8s/configmap.yaml",
        "deploy/k8s/secret.example.yaml",
        "deploy/systemd/tidings.service",
    ];
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("TIDINGS_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            // `TIDINGS_*` in prose names the family, not a variable.
            if name.ends_with('_') {
                continue;
            }
            assert!(
                known.contains(&name),
                "{file}: {name} is not a configuration key"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} variables found");
}
