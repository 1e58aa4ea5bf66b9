//! SSRF defence: which resolved addresses a source download may connect to, and the DNS
//! resolver that enforces it.
//!
//! The decision is made on the IP the connection will actually use: [`VettingResolver`]
//! resolves the host itself, drops every address the policy refuses, and hands the rest to the
//! connector, which connects to exactly those. There is no second lookup that a DNS-rebinding
//! attacker could answer differently. IP-literal hosts never reach a resolver, so the HTTP
//! fetcher checks them with [`check`] before each hop.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use crate::worker::config::AddressPolicy;

/// Why an address was refused; the variable that would allow it is named for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "source address {0} is loopback or unspecified (IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES)"
    )]
    Loopback(IpAddr),
    #[error("source address {0} is link-local (IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES)")]
    LinkLocal(IpAddr),
    #[error("source address {0} is private (IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES)")]
    Private(IpAddr),
    #[error("source host {0} resolves to no address")]
    NoAddress(String),
}

/// Decides whether `ip` may be connected to, with imgproxy's categories: loopback and
/// unspecified (`0.0.0.0`, `::`), link-local unicast and multicast, private networks.
/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address they carry.
///
/// # Errors
/// The category that refuses it.
pub fn check(policy: &AddressPolicy, ip: IpAddr) -> Result<(), Denied> {
    let ip = ip.to_canonical();
    if !policy.allow_loopback && is_loopback(ip) {
        return Err(Denied::Loopback(ip));
    }
    if !policy.allow_link_local && is_link_local(ip) {
        return Err(Denied::LinkLocal(ip));
    }
    if !policy.allow_private && is_private(ip) {
        return Err(Denied::Private(ip));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        // All of 0.0.0.0/8, not only 0.0.0.0: Linux connects 0.x.y.z to the local host too.
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() || (v4.octets()[..3] == [224, 0, 0]) // link-local multicast
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xffc0) == 0xfe80 // fe80::/10 unicast
                || (first & 0xff0f) == 0xff02 // link-local multicast scope
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00, // fc00::/7
    }
}

/// A `hyper-util` resolver that resolves with the system resolver and returns only the
/// addresses `policy` allows.
#[derive(Clone, Debug)]
pub struct VettingResolver {
    pub policy: AddressPolicy,
}

impl tower_service::Service<Name> for VettingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is replaced by the connector with the URL's.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(vet(&policy, &host, resolved)?.into_iter())
        })
    }
}

/// Keeps the allowed addresses of a lookup; when none is left, the first refusal explains why.
///
/// # Errors
/// Every address refused, or none resolved.
pub fn vet(
    policy: &AddressPolicy,
    host: &str,
    resolved: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Denied> {
    let mut first_refusal = None;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| match check(policy, addr.ip()) {
            Ok(()) => true,
            Err(denied) => {
                first_refusal.get_or_insert(denied);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        return Err(first_refusal.unwrap_or_else(|| Denied::NoAddress(host.to_owned())));
    }
    Ok(allowed)
}

/// The IP of a URL host written as a literal (`127.0.0.1`, `[::1]`), if it is one.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| bare.parse::<Ipv6Addr>().map(IpAddr::V6))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const DEFAULTS: AddressPolicy = AddressPolicy {
        allow_loopback: false,
        allow_link_local: false,
        allow_private: true,
    };

    #[test]
    fn defaults_refuse_loopback_and_link_local_only() {
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "fe80::1",
            "ff02::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(check(&DEFAULTS, ip(refused)).is_err(), "{refused}");
        }
        for allowed in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "fd00::1",
            "93.184.216.34",
            "2606:2800:220:1::1",
        ] {
            assert_eq!(check(&DEFAULTS, ip(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn each_switch_opens_its_category() {
        let open = AddressPolicy {
            allow_loopback: true,
            allow_link_local: true,
            allow_private: false,
        };
        assert_eq!(check(&open, ip("127.0.0.1")), Ok(()));
        assert_eq!(check(&open, ip("169.254.1.1")), Ok(()));
        assert_eq!(
            check(&open, ip("10.1.1.1")),
            Err(Denied::Private(ip("10.1.1.1")))
        );
        assert_eq!(
            check(&open, ip("::ffff:192.168.0.1")),
            Err(Denied::Private(ip("192.168.0.1")))
        );
    }

    #[test]
    fn vetting_keeps_allowed_addresses_and_explains_refusals() {
        let a = |s: &str| SocketAddr::new(ip(s), 0);
        assert_eq!(
            vet(&DEFAULTS, "h", vec![a("127.0.0.1"), a("93.184.216.34")]).unwrap(),
            vec![a("93.184.216.34")]
        );
        assert_eq!(
            vet(&DEFAULTS, "h", vec![a("127.0.0.1"), a("::1")]),
            Err(Denied::Loopback(ip("127.0.0.1")))
        );
        assert_eq!(
            vet(&DEFAULTS, "h", vec![]),
            Err(Denied::NoAddress("h".into()))
        );
    }

    #[test]
    fn literal_hosts() {
        assert_eq!(literal_ip("127.0.0.1"), Some(ip("127.0.0.1")));
        assert_eq!(literal_ip("[::1]"), Some(ip("::1")));
        assert_eq!(literal_ip("example.com"), None);
    }

    // The resolver really resolves: `localhost` is refused by default.
    #[tokio::test]
    async fn resolver_refuses_localhost_by_default() {
        use tower_service::Service;
        let mut resolver = VettingResolver { policy: DEFAULTS };
        let name: Name = "localhost".parse().unwrap();
        let err = resolver.call(name).await.unwrap_err();
        assert!(err.downcast_ref::<Denied>().is_some(), "{err}");
    }
}
