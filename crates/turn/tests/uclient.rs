//! The embedded TURN server against a real third-party client: coturn's `turnutils_uclient`
//! allocates relays with TURN REST credentials, binds channels and sends packets between two
//! relayed addresses, counting what comes back.
//!
//! `scripts/test` installs Debian's `coturn` package and sets `REQUIRE_TEST_CLIENTS=1`, so the
//! one test command cannot pass without this client; a plain `cargo test` without it skips.

use std::net::SocketAddr;
use std::time::Duration;
use tidings_turn::{TurnConfig, TurnServer};

const SECRET: &str = "north";

fn uclient() -> Option<&'static str> {
    let path = "/usr/bin/turnutils_uclient";
    std::path::Path::new(path).exists().then_some(path)
}

async fn start(max_per_user: usize) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = TurnServer::bind(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_ip: "127.0.0.1".parse().unwrap(),
        relay_advertise: None,
        relay_ports: (42_000, 42_999),
        realm: "tidings.test".into(),
        secret: SECRET.into(),
        max_allocations_per_user: max_per_user,
        max_allocations: 100,
        allow_loopback_peers: true,
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn run_uclient(addr: SocketAddr, secret: &str, extra: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(uclient().unwrap());
    command
        .args(["-y", "-c", "-n", "30", "-l", "200", "-z", "5"])
        .args(["-W", secret, "-u", "alice"])
        .args(["-p", &addr.port().to_string()])
        .args(extra)
        .arg("127.0.0.1")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("turnutils_uclient finishes in time")
        .expect("turnutils_uclient runs")
}

/// A number from the client's summary ("tot_send_msgs=40, tot_recv_msgs=40",
/// "Total lost packets 0"), its last occurrence.
fn stat(output: &str, label: &str) -> Option<u64> {
    let at = output.rfind(label)? + label.len();
    output[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn coturn_uclient_relays_through_channels_and_send_indications() {
    if uclient().is_none() {
        assert!(
            std::env::var_os("REQUIRE_TEST_CLIENTS").is_none(),
            "REQUIRE_TEST_CLIENTS is set but turnutils_uclient (Debian coturn) is missing"
        );
        eprintln!("SKIPPED: turnutils_uclient is missing; scripts/test installs coturn");
        return;
    }
    let (addr, _stop) = start(10).await;
    // ChannelData by default, Send and Data indications with -s.
    for extra in [&[][..], &["-s"][..]] {
        let output = run_uclient(addr, SECRET, extra).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let sent = stat(&text, "tot_send_msgs=");
        let received = stat(&text, "tot_recv_msgs=");
        let lost = stat(&text, "Total lost packets ");
        assert!(
            sent.is_some_and(|s| s >= 30) && received == sent && lost == Some(0),
            "{extra:?}: sent {sent:?}, received {received:?}, lost {lost:?}\n{text}"
        );
    }
}

#[tokio::test]
async fn coturn_uclient_with_the_wrong_secret_relays_nothing() {
    if uclient().is_none() {
        assert!(std::env::var_os("REQUIRE_TEST_CLIENTS").is_none());
        return;
    }
    let (addr, _stop) = start(10).await;
    let output = run_uclient(addr, "not-the-secret", &[]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let received = stat(&text, "tot_recv_msgs=").unwrap_or(0);
    assert_eq!(received, 0, "{text}");
}
