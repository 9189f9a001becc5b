//! Accounts, conversations and connections for a scenario, created concurrently.

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream;
use std::net::{IpAddr, Ipv4Addr};
use tidings_proto::{ConversationId, UserId};
use tidings_sdk::{Client, ConnectOptions, Connection};

/// The password of every benchmark account.
pub const PASSWORD: &str = "bench password 1234";

/// Requests in flight while setting up.
const SETUP_CONCURRENCY: usize = 32;

/// A signed-in benchmark account.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: UserId,
    pub token: String,
}

/// The source address of the `i`-th client socket: 127.0.x.y, cycling over 1,000 addresses
/// so no (source, destination) pair comes near the ~28k ephemeral ports.
pub fn source_ip(i: usize) -> IpAddr {
    let k = i % 1000;
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (k / 200) as u8,
        1 + (k % 200) as u8,
    ))
}

/// Registers and signs in `n` users named `{prefix}{i}`, one device each.
pub async fn create_users(client: &Client, prefix: &str, n: usize) -> anyhow::Result<Vec<User>> {
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let username = format!("{prefix}{i}");
            async move {
                let account = client
                    .register(&username, PASSWORD)
                    .await
                    .with_context(|| format!("registering {username}"))?;
                let tokens = client
                    .login(&username, PASSWORD, "bench")
                    .await
                    .with_context(|| format!("signing in {username}"))?;
                Ok(User {
                    user_id: account.user_id,
                    token: tokens.access_token,
                })
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<anyhow::Result<User>>>()
        .await
        .into_iter()
        .collect()
}

/// Opens the direct conversation of each `(a, b)` pair, as `a`.
pub async fn open_directs(
    client: &Client,
    pairs: &[(User, User)],
) -> anyhow::Result<Vec<ConversationId>> {
    stream::iter(pairs)
        .map(|(a, b)| {
            let api = client.authed(a.token.clone());
            async move {
                Ok(api
                    .open_direct(b.user_id)
                    .await
                    .context("opening a direct conversation")?
                    .id)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<anyhow::Result<ConversationId>>>()
        .await
        .into_iter()
        .collect()
}

/// Opens and authenticates one connection per token, the `i`-th from [`source_ip`]`(first + i)`.
pub async fn connect_all(
    ws_url: &str,
    tokens: &[&str],
    first: usize,
    read_buffer: usize,
    event_buffer: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Connection>> {
    stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let options = ConnectOptions {
                local_ip: Some(source_ip(first + i)),
                read_buffer,
                event_buffer,
            };
            async move {
                Connection::connect_with(ws_url, token, &options)
                    .await
                    .with_context(|| {
                        format!("connection {} from {:?}", first + i, options.local_ip)
                    })
            }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<anyhow::Result<Connection>>>()
        .await
        .into_iter()
        .collect()
}
