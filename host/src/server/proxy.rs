//! The client's real address behind a reverse proxy (`server.trusted_proxies`).
//!
//! `X-Forwarded-For` is believed only when the connection comes from a trusted
//! proxy, and only as far back as the chain of trusted proxies goes: read from the
//! right (the hop nearest to evhost), the first address that is not a trusted proxy
//! is the client. Anyone can write the header, so an address to the left of an
//! untrusted hop is never taken.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|net| net.contains(&ip))
}

/// The address a request comes from: the peer's, or, when the peer is a trusted
/// proxy, the one `X-Forwarded-For` names (port 0, since the client's port is not
/// known).
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, proxies: &[IpNet]) -> SocketAddr {
    if proxies.is_empty() || !trusted(peer.ip(), proxies) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer.ip();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Garbage: what lies further left cannot be trusted either.
            break;
        };
        client = ip.to_canonical();
        if !trusted(client, proxies) {
            break;
        }
    }
    if client == peer.ip() {
        peer
    } else {
        SocketAddr::new(client, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn client(peer: &str, xff: &[&str], proxies: &[&str]) -> String {
        client_address(peer.parse().unwrap(), &headers(xff), &nets(proxies))
            .ip()
            .to_string()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_only_past_them() {
        // No trusted proxies, or an untrusted peer: the header is ignored.
        assert_eq!(client("10.0.0.5:1", &["203.0.113.9"], &[]), "10.0.0.5");
        assert_eq!(
            client("192.0.2.1:1", &["203.0.113.9"], &["10.0.0.0/8"]),
            "192.0.2.1"
        );
        // One trusted proxy: the hop it names.
        assert_eq!(
            client("10.0.0.5:1", &["203.0.113.9"], &["10.0.0.0/8"]),
            "203.0.113.9"
        );
        // A forged address left of the real client is not taken.
        assert_eq!(
            client("10.0.0.5:1", &["1.1.1.1, 203.0.113.9"], &["10.0.0.0/8"]),
            "203.0.113.9"
        );
        // Chains of trusted proxies, across several headers.
        assert_eq!(
            client(
                "10.0.0.5:1",
                &["198.51.100.7, 10.1.1.1", "10.2.2.2"],
                &["10.0.0.0/8"]
            ),
            "198.51.100.7"
        );
        // Garbage stops the walk at the nearest good hop.
        assert_eq!(
            client("10.0.0.5:1", &["203.0.113.9, nonsense"], &["10.0.0.0/8"]),
            "10.0.0.5"
        );
        // IPv4-mapped IPv6 peers match IPv4 networks.
        assert_eq!(
            client("[::ffff:10.0.0.5]:1", &["203.0.113.9"], &["10.0.0.0/8"]),
            "203.0.113.9"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            client("10.0.0.5:1", &["10.9.9.9, 10.1.1.1"], &["10.0.0.0/8"]),
            "10.9.9.9"
        );
    }
}
