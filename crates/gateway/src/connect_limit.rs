//! The per-address connection rate limit (`SWITCHBOARD_CONNECT_RATE_PER_IP`): a token bucket per
//! client address, checked before an upgrade or a stream opens, so one address opening
//! connections in a loop gets HTTP 429 instead of a session each.
//!
//! Behind a proxy every connection comes from the proxy: its address is not the client's. Proxies
//! listed in `SWITCHBOARD_TRUSTED_PROXIES` are believed about the client: the rightmost address of
//! `X-Forwarded-For` that is not itself a trusted proxy, else `X-Real-IP`. Anyone else's headers
//! are ignored, so a client cannot pick the address it is limited under.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use http::HeaderMap;
use tokio::time::Instant;

use crate::limiter::RateLimiter;

/// Most addresses tracked at once. Past it, buckets that refilled are forgotten; if none did, a
/// new address is admitted untracked (and logged) rather than refused for others' load.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct ConnectLimiter {
    per_sec: u32,
    burst: u32,
    trusted: Vec<Cidr>,
    buckets: Mutex<HashMap<IpAddr, RateLimiter>>,
}

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or CIDR range");
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Self { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let prefix = |a: u128, b: u128, width: u32| {
            let shift = width - u32::from(self.bits);
            shift >= width || (a >> shift) == (b >> shift)
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix(u128::from(u32::from(net)), u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix(u128::from(net), u128::from(ip), 128),
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|ip| {
                prefix(u128::from(u32::from(net)), u128::from(u32::from(ip)), 32)
            }),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl ConnectLimiter {
    /// `per_sec` 0 turns the limit off (the client address is still resolved, for the log).
    pub fn new(per_sec: u32, burst: u32, trusted: Vec<Cidr>) -> Self {
        Self {
            per_sec,
            burst: burst.max(1),
            trusted,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The client's address: `peer`, or what a trusted proxy says about it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        if let Some(client) = forwarded.iter().rev().find(|a| !self.is_trusted(**a)) {
            return *client;
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|range| range.contains(ip))
    }

    /// Whether a new connection from `peer` (with these request headers) may open now.
    pub fn admit(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let client = self.client(peer, headers);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            // Forget the addresses whose buckets are full again: they are idle.
            buckets.retain(|_, bucket| !bucket.is_full(now));
            if buckets.len() >= MAX_TRACKED {
                tracing::warn!(%client, "too many addresses to rate-limit: admitted untracked");
                return true;
            }
        }
        buckets
            .entry(client)
            .or_insert_with(|| RateLimiter::new(self.per_sec, self.burst, u32::MAX))
            .admit(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn cidr_ranges_contain_their_addresses() {
        let net = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(
            Cidr::parse("127.0.0.1")
                .expect("valid")
                .contains(ip("127.0.0.1"))
        );
        assert!(
            !Cidr::parse("127.0.0.1")
                .expect("valid")
                .contains(ip("127.0.0.2"))
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("valid")
                .contains(ip("8.8.8.8"))
        );
        assert!(
            Cidr::parse("fd00::/8")
                .expect("valid")
                .contains(ip("fd12::1"))
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_trusted_proxies_name_the_client() {
        let limiter = ConnectLimiter::new(1, 1, vec![Cidr::parse("10.0.0.0/8").expect("valid")]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.0.0.2".parse().expect("value"),
        );
        headers.insert("x-real-ip", "198.51.100.1".parse().expect("value"));
        assert_eq!(
            limiter.client(ip("10.0.0.1"), &headers),
            ip("203.0.113.7"),
            "rightmost untrusted"
        );
        assert_eq!(
            limiter.client(ip("192.0.2.1"), &headers),
            ip("192.0.2.1"),
            "not a proxy"
        );
        headers.remove("x-forwarded-for");
        assert_eq!(limiter.client(ip("10.0.0.1"), &headers), ip("198.51.100.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn each_address_has_its_own_bucket() {
        let limiter = ConnectLimiter::new(2, 3, Vec::new());
        let headers = HeaderMap::new();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!((0..3).all(|_| limiter.admit(a, &headers)), "the burst");
        assert!(!limiter.admit(a, &headers));
        assert!(
            limiter.admit(b, &headers),
            "another address is not limited by a's"
        );
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(limiter.admit(a, &headers), "refilled at 2 per second");
        assert!(!limiter.admit(a, &headers));
        assert!(
            ConnectLimiter::new(0, 1, Vec::new()).admit(a, &headers),
            "off"
        );
    }
}
