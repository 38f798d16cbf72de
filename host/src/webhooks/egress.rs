//! Where webhooks may go: a guard against server-side request forgery.
//!
//! URLs whose addresses are loopback, private, link-local, shared (CGNAT),
//! multicast, unspecified, reserved or a cloud metadata service are refused, unless
//! `webhooks.allowed_networks` lists a network that holds the address itself. IPv6
//! forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
//! that address, and an allow-listed IPv4 network does not open its IPv6 disguises;
//! Teredo and local-use NAT64, whose IPv4 side cannot be judged here, are refused.
//! Optionally only `https` and some ports are allowed (`webhooks.https_only`,
//! `webhooks.allowed_ports`).
//!
//! The check runs on the address actually connected to: evhost's HTTP client
//! resolves names through [`GuardedResolver`], which drops refused addresses, so a
//! name that resolved to a public address at creation cannot be re-pointed at
//! 127.0.0.1 later (DNS rebinding). Literal addresses are checked before each send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;

/// A refused address, with what kind of address it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{ip} is a {kind} address; webhooks may not reach it unless webhooks.allowed_networks includes it"
)]
pub struct Refused {
    pub ip: IpAddr,
    pub kind: &'static str,
}

/// Why a webhook URL is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Against `webhooks.https_only` or `webhooks.allowed_ports`.
    #[error("{0}")]
    Policy(String),
    #[error("cannot resolve {host}: {message}")]
    Unresolvable { host: String, message: String },
}

/// The egress policy: which addresses webhooks may reach, and (when set) only over
/// HTTPS and only to some ports.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allowed: Arc<Vec<IpNet>>,
    https_only: bool,
    /// Empty: any port.
    ports: Arc<Vec<u16>>,
}

/// The longest URL an endpoint may have.
pub const MAX_URL_LEN: usize = 2048;

impl Egress {
    pub fn new(allowed: Vec<IpNet>) -> Egress {
        Egress {
            allowed: Arc::new(allowed),
            ..Egress::default()
        }
    }

    /// Only `https` URLs (`webhooks.https_only`), and only to `ports` if any are
    /// given (`webhooks.allowed_ports`).
    pub fn with_rules(mut self, https_only: bool, ports: Vec<u16>) -> Egress {
        self.https_only = https_only;
        self.ports = Arc::new(ports);
        self
    }

    /// The scheme and port rules, checked when a URL is stored and before each send
    /// (the configuration may have changed since).
    pub fn check_rules(&self, url: &Url) -> Result<(), UrlError> {
        if self.https_only && url.scheme() != "https" {
            return Err(UrlError::Policy(format!(
                "the URL must use https (webhooks.https_only); it uses {}",
                url.scheme()
            )));
        }
        let port = url.port_or_known_default().unwrap_or(0);
        if !self.ports.is_empty() && !self.ports.contains(&port) {
            return Err(UrlError::Policy(format!(
                "port {port} is not one of webhooks.allowed_ports {:?}",
                self.ports
            )));
        }
        Ok(())
    }

    /// Whether a webhook may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            Some(kind) => Err(Refused { ip, kind }),
            None => Ok(()),
        }
    }

    /// Checks a URL given for an endpoint: http or https, a host, no credentials, and
    /// at least one allowed address now (it is checked again at every connection).
    pub async fn check_url(&self, text: &str) -> Result<Url, UrlError> {
        if text.len() > MAX_URL_LEN {
            return Err(UrlError::Invalid(format!(
                "the URL is {} bytes long; at most {MAX_URL_LEN} are allowed",
                text.len()
            )));
        }
        let url = Url::parse(text)
            .map_err(|e| UrlError::Invalid(format!("{text:?} is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Invalid(format!(
                "the URL scheme {:?} is not supported; use http or https",
                url.scheme()
            )));
        }
        self.check_rules(&url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Invalid(
                "the URL must not carry credentials (they would show in lists and logs); receivers authenticate evhost by the signature".into(),
            ));
        }
        if let Some(ip) = literal_ip(&url) {
            self.check(ip)?;
            return Ok(url);
        }
        let host = url
            .host_str()
            .ok_or_else(|| UrlError::Invalid(format!("{text:?} has no host")))?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| UrlError::Unresolvable {
                host: host.clone(),
                message: e.to_string(),
            })?
            .collect();
        let mut refused = None;
        for addr in &addrs {
            match self.check(addr.ip()) {
                Ok(()) => return Ok(url),
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        Err(match refused {
            Some(e) => UrlError::Refused(e),
            None => UrlError::Unresolvable {
                host,
                message: "no addresses".into(),
            },
        })
    }
}

/// The address in a URL whose host is an IP literal.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// What kind of non-public address `ip` is, if it is one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        // AWS, GCP, Azure and OpenStack (169.254.169.254), Alibaba (100.100.100.200),
        // Azure's wire server (168.63.129.16).
        _ if ip == Ipv4Addr::new(169, 254, 169, 254)
            || ip == Ipv4Addr::new(100, 100, 100, 200)
            || ip == Ipv4Addr::new(168, 63, 129, 16) =>
        {
            "cloud metadata"
        }
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (0, _, _) => "unspecified",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "reserved"
        }
        // The 6to4 relay anycast prefix, deprecated (RFC 7526).
        (192, 88, 99) => "reserved (6to4 relay)",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4).map(|_| "IPv4-mapped non-public");
    }
    let s = ip.segments();
    // The IPv4-compatible form (::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4
    // address in the last 32 bits; 6to4 (2002::/16) in bits 16 to 48.
    let last32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] => "cloud metadata",
        // Deprecated since 2006; nothing legitimate uses it.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (deprecated)",
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return classify_v4(last32).map(|_| "NAT64 non-public");
        }
        // Local-use NAT64 (RFC 8215) translates to whatever the local network
        // chooses, private networks included.
        [0x64, 0xff9b, 1, ..] => "NAT64 (local use)",
        // Teredo carries an IPv4 address (obfuscated) and tunnels through a relay.
        [0x2001, 0, ..] => "Teredo tunnel",
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return classify_v4(v4).map(|_| "6to4 non-public");
        }
        [first, ..] if first & 0xfe00 == 0xfc00 => "private (unique local)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local",
        [first, ..] if first & 0xffc0 == 0xfec0 => "reserved (site-local)",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "reserved (documentation)",
        [0x0100, 0, 0, 0, ..] => "reserved (discard)",
        _ => return None,
    })
}

/// Resolves names for the webhook client and keeps only allowed addresses, so the
/// check covers the address the connection really uses.
pub struct GuardedResolver {
    pub egress: Egress,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let mut allowed = Vec::new();
            let mut refused = None;
            for addr in addrs {
                match egress.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => refused = refused.or(Some(e)),
                }
            }
            if allowed.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(refused) => Box::new(refused),
                    None => format!("{} has no addresses", name.as_str()).into(),
                };
                return Err(error);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_kind() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::808:808",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "192.88.99.1",
            "168.63.129.16",
        ] {
            assert!(kind(ip).is_some(), "{ip} should be refused");
        }
        assert_eq!(kind("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(kind("fd00:ec2::254"), Some("cloud metadata"));
        assert_eq!(kind("168.63.129.16"), Some("cloud metadata"));
        assert_eq!(kind("2001::1"), Some("Teredo tunnel"));
    }

    #[tokio::test]
    async fn https_and_ports_can_be_required() {
        let egress = Egress::default().with_rules(true, vec![443, 8443]);
        let err = egress.check_url("http://8.8.8.8/").await.unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = egress.check_url("https://8.8.8.8:9000/").await.unwrap_err();
        assert!(err.to_string().contains("port 9000"), "{err}");
        assert!(egress.check_url("https://8.8.8.8/").await.is_ok());
        assert!(egress.check_url("https://8.8.8.8:8443/").await.is_ok());
        assert!(
            Egress::default()
                .check_url("http://8.8.8.8:9000/")
                .await
                .is_ok()
        );
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700::1111",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(kind(ip), None, "{ip} should be allowed");
        }
    }

    #[test]
    fn allow_list_opens_exactly_its_networks() {
        let egress = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(egress.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(egress.check("::ffff:127.0.0.1".parse().unwrap()).is_err());
        assert!(egress.check("::1".parse().unwrap()).is_err());
        assert!(egress.check("10.0.0.1".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn urls_are_checked_before_they_are_stored() {
        let open = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let closed = Egress::default();
        assert!(open.check_url("http://127.0.0.1:9/hook").await.is_ok());
        assert!(open.check_url("http://localhost:9/hook").await.is_ok());
        let err = closed
            .check_url("http://localhost:9/hook")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        for (url, says) in [
            ("ftp://example.com/", "scheme"),
            ("not a url", "not a valid URL"),
            ("http://user:pw@127.0.0.1/", "credentials"),
            ("http://[::1]:9/", "loopback"),
            ("http://[::ffff:127.0.0.1]:9/", "IPv4-mapped"),
            ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
            ("http://10.0.0.1/", "private"),
        ] {
            let err = open.check_url(url).await.unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
