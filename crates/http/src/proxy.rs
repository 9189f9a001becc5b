//! The client's address behind a reverse proxy or load balancer: `X-Forwarded-For`, believed
//! only from the proxies the operator lists in `[http] trusted_proxies`.
//!
//! Behind nginx every connection comes from the proxy's address, so without this the
//! per-address sign-in limit would throttle all users together and the audit log would name
//! the proxy. The header is trivially forged by a client, so it is read only when the direct
//! peer is a trusted proxy, and then from the right: each trusted proxy appends the address it
//! saw, and the first entry from the right that is not a trusted proxy is the client.

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Address ranges whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

/// The client address the proxy layer resolved, for [`crate::extract::ClientAddr`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResolvedClient(pub IpAddr);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`). The error
    /// names the entry at fault.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry.as_str(), None),
            };
            let address: IpAddr = address
                .trim()
                .parse()
                .map_err(|_| format!("`{entry}` is not an IP address or CIDR range"))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(prefix) => prefix
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or_else(|| format!("`{entry}`: the prefix length must be 0 to {max}"))?,
            };
            ranges.push((address, prefix));
        }
        Ok(TrustedProxies { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` lies in one of the ranges. An IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges.iter().any(|&(net, prefix)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), prefix)
            }
            _ => false,
        })
    }

    /// The client behind `peer`: `peer` itself unless it is trusted, else the rightmost
    /// untrusted entry of the `X-Forwarded-For` values (all header lines, in order). An entry
    /// that does not parse ends the walk at the last trusted hop: what lies left of garbage
    /// cannot be attributed to anyone.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for.flat_map(|line| line.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_forwarded_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:5678`), as some proxies write it.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    net[full] & mask == ip[full] & mask
}

/// Middleware: resolves the client address once per request, for every handler.
pub(crate) async fn resolve_client(
    State(proxies): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
    {
        let client = proxies.client(
            peer,
            request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok()),
        );
        request.extensions_mut().insert(ResolvedClient(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges_and_names_bad_entries() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(p.contains(ip("10.200.3.4")));
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(p.contains(ip("192.168.1.7")));
        assert!(!p.contains(ip("192.168.1.8")));
        assert!(p.contains(ip("fd12::1")));
        assert!(!p.contains(ip("fe80::1")));
        assert!(
            p.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        let odd = proxies(&["172.16.0.0/12"]);
        assert!(odd.contains(ip("172.31.255.255")));
        assert!(!odd.contains(ip("172.32.0.0")));
        for bad in ["10.0.0.0/33", "nginx", "10.0.0.0/x", "::/129"] {
            let err = TrustedProxies::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        // A client that writes the header itself is not believed.
        assert_eq!(
            p.client(ip("203.0.113.9"), ["198.51.100.1"].into_iter()),
            ip("203.0.113.9")
        );
        // Through one proxy.
        assert_eq!(
            p.client(ip("10.0.0.2"), ["198.51.100.1"].into_iter()),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client_even_when_forged_on_the_left() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client forged "1.1.1.1"; the proxy appended the address it saw.
        assert_eq!(
            p.client(ip("10.0.0.2"), ["1.1.1.1, 198.51.100.1"].into_iter()),
            ip("198.51.100.1")
        );
        // Two proxies, over two header lines.
        assert_eq!(
            p.client(ip("10.0.0.2"), ["198.51.100.1", "10.0.0.9"].into_iter()),
            ip("198.51.100.1")
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            p.client(ip("10.0.0.2"), ["[2001:db8::1]:443"].into_iter()),
            ip("2001:db8::1")
        );
        // Garbage ends the walk at the last trusted hop; only trusted hops: the leftmost.
        assert_eq!(
            p.client(ip("10.0.0.2"), ["1.1.1.1, nonsense"].into_iter()),
            ip("10.0.0.2")
        );
        assert_eq!(
            p.client(ip("10.0.0.2"), ["10.0.0.7, 10.0.0.8"].into_iter()),
            ip("10.0.0.7")
        );
        // No header at all: the proxy itself.
        assert_eq!(p.client(ip("10.0.0.2"), std::iter::empty()), ip("10.0.0.2"));
    }
}
