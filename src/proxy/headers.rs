//! Header hygiene between client, proxy and upstream.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that describe one connection rather than the message (RFC 9110 §7.6.1), plus
/// their common non-standard kin. They must not be forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers: the fixed list, `upgrade`, and every header that a
/// `Connection` header names (RFC 9110 §7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::UPGRADE);
}

/// Headers in which a client states who it is: believed only from a trusted front.
const CLIENT_CLAIMS: [&str; 2] = ["forwarded", "x-real-ip"];

/// Sets `X-Forwarded-For` for the upstream. A peer in `trusted` (a load balancer, a CDN, Fly's
/// edge) had its own list, which is kept and extended with the peer, as Go's reverse proxy
/// does. Anyone else's list, and its `Forwarded` and `X-Real-IP`, are claims it made about
/// itself: they are dropped and the list starts with the peer's own address.
pub fn forwarded_for(headers: &mut HeaderMap, peer: IpAddr, trusted: &[IpNet]) {
    const XFF: &str = "x-forwarded-for";
    let peer = peer.to_canonical();
    let believed = trusted.iter().any(|net| net.contains(&peer));
    if !believed {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
    let prior: Vec<&str> = match believed {
        true => headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        false => Vec::new(),
    };
    let value = match prior.as_slice() {
        [] => peer.to_string(),
        prior => format!("{}, {peer}", prior.join(", ")),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(XFF, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private-hop".parse().unwrap());
        h.insert("x-private-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("content-type", "image/png".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn forwarded_for_is_extended_for_trusted_peers_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let claims = || {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
            h.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
            h.insert("x-real-ip", "1.2.3.4".parse().unwrap());
            h
        };
        let mut h = claims();
        forwarded_for(&mut h, "10.1.2.3".parse().unwrap(), &trusted);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.1.2.3");
        assert!(h.contains_key("x-real-ip"));

        let mut h = claims();
        forwarded_for(&mut h, "::ffff:192.0.2.1".parse().unwrap(), &trusted);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert!(!h.contains_key("x-real-ip"));
    }
}
