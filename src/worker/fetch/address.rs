//! SSRF defence: which resolved addresses a source download may connect to, and the DNS
//! resolver that enforces it.
//!
//! The decision is made on the IP the connection will actually use: [`VettingResolver`]
//! resolves the host itself, drops every address the policy refuses, and hands the rest to the
//! connector, which connects to exactly those. There is no second lookup that a DNS-rebinding
//! attacker could answer differently. IP-literal hosts never reach a resolver, so the HTTP
//! fetcher checks them with [`check`] before each hop.
//!
//! Lookups run `getaddrinfo` (so `/etc/hosts`, `nsswitch.conf` and search domains behave as
//! for any other program) on a [`DnsPool`] of their own: tokio's `lookup_host` would run them
//! on the runtime's blocking pool, which image jobs also use, so a slow resolver could hold
//! threads the image jobs need, and busy image jobs could stall every download's lookup.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

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

/// Threads that run source host name lookups ([`DnsPool`]). A lookup takes a thread for as
/// long as the system resolver needs (seconds when a name server is slow); four keep a few
/// slow names from delaying every other download without holding many idle threads.
pub const DNS_THREADS: usize = 4;

/// Decides whether `ip` may be connected to, with imgproxy's categories: loopback and
/// unspecified (`0.0.0.0`, `::`), link-local unicast and multicast, private networks — to
/// which we add carrier-grade NAT (`100.64.0.0/10`), benchmarking (`198.18.0.0/15`), reserved
/// (`240.0.0.0/4`), site-local IPv6 (`fec0::/10`) and local-use NAT64 (`64:ff9b:1::/48`) as
/// private. An IPv6 address that carries an IPv4 one is judged as
/// that IPv4 address ([`embedded_ipv4`]), so `64:ff9b::7f00:1` is loopback.
///
/// # Errors
/// The category that refuses it.
pub fn check(policy: &AddressPolicy, ip: IpAddr) -> Result<(), Denied> {
    let ip = ip.to_canonical();
    let judged = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    if !policy.allow_loopback && is_loopback(judged) {
        return Err(Denied::Loopback(ip));
    }
    if !policy.allow_link_local && is_link_local(judged) {
        return Err(Denied::LinkLocal(ip));
    }
    if !policy.allow_private && is_private(judged) {
        return Err(Denied::Private(ip));
    }
    Ok(())
}

/// The IPv4 address an IPv6 one stands for, where the packet may end up there: NAT64's
/// well-known prefix `64:ff9b::/96` (RFC 6052: a DNS64 resolver hands these out for IPv4-only
/// names, and the gateway connects to the IPv4 address in the last 32 bits), 6to4
/// `2002:AABB:CCDD::/48` (RFC 3056: relayed to `AA.BB.CC.DD`) and the deprecated
/// IPv4-compatible `::a.b.c.d` (RFC 4291). IPv4-mapped `::ffff:a.b.c.d` is handled by
/// [`IpAddr::to_canonical`] before this.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let last_32 = Ipv4Addr::from_bits(v6.to_bits() as u32);
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last_32),
        [0x2002, high, low, ..] => Some(Ipv4Addr::from_bits(
            (u32::from(high) << 16) | u32::from(low),
        )),
        [0, 0, 0, 0, 0, 0, _, _] => Some(last_32),
        _ => None,
    }
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
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                // 198.18.0.0/15 (RFC 2544 benchmarking) and 240.0.0.0/4 (reserved, with the
                // broadcast address): never on the internet, so only ever an internal network.
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let [first, second, third, ..] = v6.segments();
            (first & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (first & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated, still routed)
                || (first, second, third) == (0x64, 0xff9b, 1) // 64:ff9b:1::/48 local-use NAT64
        }
    }
}

/// A `hyper-util` resolver that resolves with the system resolver (on `pool`) and returns
/// only the addresses `policy` allows.
#[derive(Clone, Debug)]
pub struct VettingResolver {
    pub policy: AddressPolicy,
    pub pool: DnsPool,
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
        let pool = self.pool.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = pool.lookup(host.clone()).await?;
            Ok(vet(&policy, &host, resolved)?.into_iter())
        })
    }
}

/// A few threads of our own that run `getaddrinfo` for source downloads, fed by a queue.
///
/// A lookup whose download stopped waiting (timeout, client gone) before a thread took it is
/// skipped, so abandoned lookups don't pile up behind a slow name server. The queue itself is
/// bounded by the requests in flight (`IMGPROXY_MAX_CLIENTS`): each waits for one lookup at a
/// time. The threads end when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct DnsPool {
    jobs: mpsc::Sender<Lookup>,
}

#[derive(Debug)]
struct Lookup {
    host: String,
    answer: oneshot::Sender<std::io::Result<Vec<SocketAddr>>>,
}

impl DnsPool {
    /// Starts `threads` lookup threads.
    ///
    /// # Panics
    /// When the OS refuses to start a thread: the worker cannot run without them.
    pub fn new(threads: usize) -> DnsPool {
        let (jobs, queue) = mpsc::channel::<Lookup>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("source-dns-{n}"))
                .spawn(move || {
                    loop {
                        // Only `recv` runs under the lock, so it can't be poisoned by a lookup.
                        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(Lookup { host, answer }) = next else {
                            return; // every handle is gone
                        };
                        if answer.is_closed() {
                            continue;
                        }
                        // The port is replaced by the connector with the URL's.
                        let resolved: std::io::Result<Vec<SocketAddr>> =
                            (host.as_str(), 0).to_socket_addrs().map(Iterator::collect);
                        let _ = answer.send(resolved);
                    }
                })
                .expect("the OS starts the worker's DNS threads");
        }
        DnsPool { jobs }
    }

    /// Resolves `host` on the pool's threads.
    ///
    /// # Errors
    /// The system resolver's error.
    pub async fn lookup(&self, host: String) -> std::io::Result<Vec<SocketAddr>> {
        let (answer, answered) = oneshot::channel();
        let gone = || std::io::Error::other("the DNS threads have stopped");
        self.jobs
            .send(Lookup { host, answer })
            .map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
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

    // IPv6 forms that carry an IPv4 address are judged as that address; the new private
    // ranges are refused when private sources are off.
    #[test]
    fn embedded_ipv4_and_the_extra_private_ranges() {
        for (v6, v4) in [
            ("64:ff9b::7f00:1", Some("127.0.0.1")),
            ("64:ff9b::a9fe:a9fe", Some("169.254.169.254")),
            ("64:ff9b::8.8.8.8", Some("8.8.8.8")),
            ("2002:7f00:1::", Some("127.0.0.1")),
            ("2002:a9fe:a9fe:1:2:3:4:5", Some("169.254.169.254")),
            ("::127.0.0.1", Some("127.0.0.1")),
            ("::10.1.2.3", Some("10.1.2.3")),
            ("64:ff9b:1::7f00:1", None),
            ("2001:db8::7f00:1", None),
            ("::ffff:127.0.0.1", None), // mapped: to_canonical's job
        ] {
            let v6: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(embedded_ipv4(v6), v4.map(|a| a.parse().unwrap()), "{v6}");
        }
        for (addr, denied) in [
            ("64:ff9b::7f00:1", Denied::Loopback(ip("64:ff9b::7f00:1"))),
            ("2002:7f00:1::1", Denied::Loopback(ip("2002:7f00:1::1"))),
            ("::127.0.0.1", Denied::Loopback(ip("::127.0.0.1"))),
            ("::", Denied::Loopback(ip("::"))),
            (
                "64:ff9b::a9fe:a9fe",
                Denied::LinkLocal(ip("64:ff9b::a9fe:a9fe")),
            ),
            (
                "2002:a9fe:a9fe::",
                Denied::LinkLocal(ip("2002:a9fe:a9fe::")),
            ),
        ] {
            assert_eq!(check(&DEFAULTS, ip(addr)), Err(denied), "{addr}");
        }
        let no_private = AddressPolicy {
            allow_private: false,
            ..DEFAULTS
        };
        for private in [
            "100.64.0.1",
            "100.127.255.254",
            "fec0::1",
            "feff::1",
            "64:ff9b:1::1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::",
            "::10.0.0.1",
            "::ffff:100.64.0.1",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "64:ff9b::c612:1",
        ] {
            assert_eq!(
                check(&no_private, ip(private)),
                Err(Denied::Private(ip(private).to_canonical())),
                "{private}"
            );
            assert_eq!(check(&DEFAULTS, ip(private)), Ok(()), "{private}");
        }
        // Just outside the ranges, and embedded public addresses.
        for public in [
            "100.63.255.255",
            "100.128.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "239.255.255.255",
            "fe7f::1",
            "64:ff9b::8.8.8.8",
            "64:ff9b:2::1",
            "2002:808:808::",
            "2001::1",
        ] {
            assert_eq!(check(&no_private, ip(public)), Ok(()), "{public}");
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
        let mut resolver = VettingResolver {
            policy: DEFAULTS,
            pool: DnsPool::new(1),
        };
        let name: Name = "localhost".parse().unwrap();
        let err = resolver.call(name).await.unwrap_err();
        assert!(err.downcast_ref::<Denied>().is_some(), "{err}");
    }
}
