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

/// IANA's IPv4 special-purpose registry, less the blocks it marks globally
/// reachable (AS112, AMT, 192.31.196.0/24, 192.175.48.0/24).
fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()                        // 127.0.0.0/8
        || ip.is_private()                         // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                      // 169.254/16, cloud metadata
        || ip.is_broadcast()
        || ip.is_multicast()                       // 224/4
        || ip.is_documentation()                   // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || a == 0                                  // "this network"
        || (a == 100 && (64..128).contains(&b))    // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)          // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99)        // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19))      // benchmarking
        || a >= 240 // reserved
}

/// IANA's IPv6 special-purpose registry, and every form that embeds an IPv4
/// address (mapped, compatible, NAT64, 6to4, Teredo), judged by that address.
fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated; `::` and `::1` among them): no
    // public host is reached that way.
    if seg[..6] == [0; 6] {
        return true;
    }
    // NAT64: the well-known prefix embeds the target; the local-use prefix
    // 64:ff9b:1::/48 is the operator's own network.
    if seg[0] == 0x64 && seg[1] == 0xff9b {
        return seg[2..6] != [0; 4] || is_internal_v4(v4(seg[6], seg[7]));
    }
    // 6to4 2002::/16 embeds the IPv4 address of its gateway.
    if seg[0] == 0x2002 {
        return is_internal_v4(v4(seg[1], seg[2]));
    }
    // Teredo 2001::/32: the server's IPv4 address, and the client's, inverted.
    if seg[0] == 0x2001 && seg[1] == 0 {
        return is_internal_v4(v4(seg[2], seg[3])) || is_internal_v4(v4(!seg[6], !seg[7]));
    }
    ip.is_multicast()                                 // ff00::/8
        || (seg[0] == 0x0100 && seg[1..4] == [0; 3])  // discard-only 100::/64
        || (seg[0] == 0x2001 && seg[1] < 0x0200)      // IETF protocol assignments 2001::/23
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)     // documentation
        || (seg[0] & 0xfff0) == 0x3ff0                // documentation 3fff::/20
        || seg[0] == 0x5f00                           // segment routing SIDs 5f00::/16
        || (seg[0] & 0xfe00) == 0xfc00                // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80                // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
}

/// Why the policy refuses `url` before any name is resolved: its host is an
/// IP literal in a blocked range (`None` for names, which are checked after
/// resolution, at connect time, and for URLs that do not parse).
pub fn literal_refusal(policy: &TargetPolicy, url: &str) -> Option<String> {
    let ip = match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!policy.permits(ip)).then(|| {
        format!(
            "{ip} is a private, loopback, link-local or otherwise reserved address; webhooks cannot \
             target it (allow it with --allow-private-targets or --allow-subnet)"
        )
    })
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
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// An IPv4 address is judged the same in every IPv6 form that
        /// embeds it, and no URL text makes the check panic.
        #[test]
        fn embedded_ipv4_is_judged_as_itself(a in any::<u32>(), url in "\\PC{0,60}") {
            let v4 = Ipv4Addr::from(a);
            prop_assert_eq!(is_internal(IpAddr::V6(v4.to_ipv6_mapped())), is_internal(IpAddr::V4(v4)));
            let [x, y, z, w] = v4.octets();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([x, y]), u16::from_be_bytes([z, w]));
            prop_assert_eq!(is_internal(IpAddr::V6(nat64)), is_internal(IpAddr::V4(v4)));
            if is_internal(IpAddr::V4(v4)) {
                let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([x, y]), u16::from_be_bytes([z, w]), 0, 0, 0, 0, 1);
                prop_assert!(is_internal(IpAddr::V6(six_to_four)));
                prop_assert!(is_internal(IpAddr::V6(v4.to_ipv6_compatible())));
            }
            let _ = literal_refusal(&TargetPolicy::default(), &url);
        }
    }

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

    /// One address of every special-purpose block, IPv4 and IPv6, and of
    /// every IPv6 form that embeds a blocked IPv4 address.
    #[test]
    fn every_special_purpose_range_is_internal() {
        for (s, what) in [
            ("0.1.2.3", "this network 0/8"),
            ("10.255.0.1", "private 10/8"),
            ("100.64.0.1", "shared address space 100.64/10"),
            ("100.127.255.254", "shared address space, top"),
            ("127.0.0.2", "loopback 127/8"),
            ("169.254.169.254", "link-local, cloud metadata"),
            ("172.31.255.255", "private 172.16/12"),
            ("192.0.0.8", "IETF protocol assignments 192.0.0/24"),
            ("192.0.2.1", "documentation TEST-NET-1"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.0.1", "private 192.168/16"),
            ("198.18.0.1", "benchmarking 198.18/15"),
            ("198.19.255.1", "benchmarking, top"),
            ("198.51.100.1", "documentation TEST-NET-2"),
            ("203.0.113.1", "documentation TEST-NET-3"),
            ("224.0.0.1", "multicast 224/4"),
            ("239.255.255.250", "multicast, SSDP"),
            ("240.0.0.1", "reserved 240/4"),
            ("255.255.255.255", "limited broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible loopback"),
            ("::10.0.0.1", "IPv4-compatible private"),
            ("::8.8.8.8", "IPv4-compatible (deprecated form)"),
            ("::ffff:10.0.0.1", "IPv4-mapped private"),
            ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
            ("64:ff9b::127.0.0.1", "NAT64 of loopback"),
            ("64:ff9b::169.254.169.254", "NAT64 of metadata"),
            ("64:ff9b:1::1", "NAT64 local-use 64:ff9b:1::/48"),
            ("100::1", "discard-only 100::/64"),
            ("2001:2::1", "benchmarking 2001:2::/48"),
            ("2001:10::1", "ORCHID 2001:10::/28"),
            ("2001:20::1", "ORCHIDv2 2001:20::/28"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo with client 127.0.0.1"),
            ("2001:0:a00:1::1", "Teredo with server 10.0.0.1"),
            ("2001:db8::1", "documentation 2001:db8::/32"),
            ("2002:7f00:1::1", "6to4 of 127.0.0.1"),
            ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
            ("2002:c0a8:101::1", "6to4 of 192.168.1.1"),
            ("3fff::1", "documentation 3fff::/20"),
            ("5f00::1", "segment routing 5f00::/16"),
            ("fc00::1", "unique local fc00::/7"),
            ("fd00:ec2::254", "unique local, AWS metadata"),
            ("fe80::1", "link-local fe80::/10"),
            ("fec0::1", "site-local fec0::/10"),
            ("ff02::1", "multicast ff00::/8"),
        ] {
            assert!(is_internal(ip(s)), "{s} ({what}) should be internal");
        }
    }

    #[test]
    fn public_addresses() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.31.196.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:808:808:8000:63bf:f7f7:f7f7",
        ] {
            assert!(!is_internal(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn literal_hosts_are_refused_before_resolution() {
        let strict = TargetPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:7f00:1]:8080/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "https://169.254.169.254/latest/meta-data",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::1]/",
        ] {
            let why = literal_refusal(&strict, url).unwrap_or_else(|| panic!("{url} should be refused"));
            assert!(why.contains("--allow-private-targets"), "{why}");
        }
        for url in ["http://localhost/", "https://example.com/", "http://8.8.8.8/", "not a url"] {
            assert_eq!(literal_refusal(&strict, url), None, "{url}");
        }
        let open = TargetPolicy { allow_private: true, allowed: vec![] };
        assert_eq!(literal_refusal(&open, "http://127.0.0.1/"), None);
        let subnet = TargetPolicy { allow_private: false, allowed: vec!["10.0.0.0/8".parse().unwrap()] };
        assert_eq!(literal_refusal(&subnet, "http://10.1.2.3/"), None);
        assert!(literal_refusal(&subnet, "http://192.168.1.1/").is_some());
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
