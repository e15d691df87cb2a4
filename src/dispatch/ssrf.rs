//! Which network addresses webhooks may be sent to.
//!
//! By default Hookline refuses loopback, private, link-local (including the
//! cloud metadata address 169.254.169.254), shared, multicast and reserved
//! addresses: otherwise anyone who can create an endpoint could make the
//! server probe its own network. The check runs on the addresses the name
//! actually resolved to, right before connecting, so DNS rebinding does not
//! get around it. Operators open chosen subnets with an allow-list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    /// Allow every address (local development and tests).
    pub allow_private: bool,
    /// Subnets allowed even though they are internal.
    pub allowed: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// Is `ip` an address that is not on the public Internet?
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0                                   // "this network"
        || (a == 100 && (64..128).contains(&b))     // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))       // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        return is_internal_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
}

/// The refusal, reported as the attempt's error text.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused to connect to {addr} ({host}): private, loopback and link-local addresses are blocked; \
     allow them with --allow-private-targets or --allow-subnet"
)]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
}

/// The DNS resolver of the outbound HTTP client: drops the addresses the
/// policy forbids, and refuses the name when none is left.
#[derive(Clone)]
pub struct GuardedResolver {
    pub policy: Arc<TargetPolicy>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GuardedResolver {
    pub async fn resolve(&self, host: String) -> Result<std::vec::IntoIter<SocketAddr>, BoxError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
        let allowed: Vec<SocketAddr> =
            resolved.iter().copied().filter(|a| self.policy.permits(a.ip())).collect();
        match (allowed.is_empty(), resolved.first()) {
            (false, _) => Ok(allowed.into_iter()),
            (true, Some(first)) => Err(Box::new(Refused { host, addr: first.ip() })),
            (true, None) => Err(format!("{host} did not resolve to any address").into()),
        }
    }
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.resolve(name.as_str().to_owned()).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_internal(ip(s)), "{s} should be internal");
        }
    }

    #[test]
    fn public_addresses() {
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(!is_internal(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn policy_allow_list() {
        let deny = TargetPolicy::default();
        assert!(!deny.permits(ip("127.0.0.1")));
        assert!(deny.permits(ip("8.8.8.8")));
        let subnet = TargetPolicy { allow_private: false, allowed: vec!["10.0.0.0/8".parse().unwrap()] };
        assert!(subnet.permits(ip("10.9.9.9")));
        assert!(!subnet.permits(ip("192.168.0.1")));
        let all = TargetPolicy { allow_private: true, allowed: vec![] };
        assert!(all.permits(ip("127.0.0.1")));
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_by_default() {
        let r = GuardedResolver { policy: Arc::new(TargetPolicy::default()) };
        let err = match r.resolve("localhost".into()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("refused to connect"), "{err}");
        let open =
            GuardedResolver { policy: Arc::new(TargetPolicy { allow_private: true, allowed: vec![] }) };
        assert!(open.resolve("localhost".into()).await.is_ok());
    }
}
