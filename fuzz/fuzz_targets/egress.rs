//! The egress address classifier and URL rules. An IPv4 address and its IPv6
//! disguises (mapped, NAT64, 6to4) are judged alike; a literal URL host is the
//! address it names.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use evhost::webhooks::Egress;
use evhost::webhooks::egress::{classify, literal_ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ([u8; 4], [u8; 16], &str, bool, Vec<u16>)| {
    let (v4, v6, url, https, ports) = input;
    let v4 = Ipv4Addr::from(v4);
    let public = classify(IpAddr::V4(v4)).is_none();
    let [a, b, c, d] = v4.octets();
    let word = |x: u8, y: u8| (u16::from(x) << 8) | u16::from(y);
    let disguises = [
        v4.to_ipv6_mapped(),
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, word(a, b), word(c, d)),
        Ipv6Addr::new(0x2002, word(a, b), word(c, d), 0, 0, 0, 0, 1),
    ];
    for v6 in disguises {
        assert_eq!(classify(IpAddr::V6(v6)).is_none(), public, "{v4} as {v6}");
    }
    let v6 = Ipv6Addr::from(v6);
    let egress = Egress::new(Vec::new());
    for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
        assert_eq!(egress.check(ip).is_ok(), classify(ip).is_none());
        let url = url::Url::parse(&format!("http://{}/", bracket(ip))).unwrap();
        assert_eq!(literal_ip(&url), Some(ip));
    }
    if let Ok(url) = url::Url::parse(url) {
        let _ = literal_ip(&url);
        let _ = Egress::new(Vec::new())
            .with_rules(https, ports.into_iter().take(4).collect())
            .check_rules(&url);
    }
});

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
