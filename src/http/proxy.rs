//! Who the client is behind a reverse proxy. `X-Forwarded-For` and
//! `X-Forwarded-Proto` are believed only when the connection comes from a
//! configured trusted proxy; then the client is the right-most address in
//! `X-Forwarded-For` that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

pub use crate::cidr::Cidr;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(list: &[String]) -> Self {
        TrustedProxies(list.iter().filter_map(|s| Cidr::parse(s)).collect())
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address and scheme as far as we can trust them.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> (Option<IpAddr>, &'static str) {
        let Some(peer) = peer.map(|p| p.ip()) else {
            return (None, "http");
        };
        if !self.trusted(peer) {
            return (Some(peer), "http");
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect();
        let client = forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusted(**ip))
            .copied()
            .or(forwarded.first().copied());
        let proto = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
            Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        (client.or(Some(peer)), proto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(&["127.0.0.1/32".into(), "10.0.0.0/8".into()]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.1.2.3".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let from_proxy: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let from_stranger: SocketAddr = "198.51.100.9:5555".parse().unwrap();
        assert_eq!(
            proxies.client(Some(from_proxy), &h),
            (Some("203.0.113.7".parse().unwrap()), "https")
        );
        assert_eq!(
            proxies.client(Some(from_stranger), &h),
            (Some("198.51.100.9".parse().unwrap()), "http")
        );
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(Cidr::parse("nonsense").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
