//! Who a request is charged to: a user, an API key, or a client address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderName, Request};

/// Finds the subject a request is charged to; `None` leaves the request unlimited.
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The subject of `request`.
    fn extract<B>(&self, request: &Request<B>) -> Option<String>;
}

/// The subject an authentication layer found, put in the request's extensions by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

/// Charges requests to the [`Subject`] extension (a user id set by the auth middleware).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectKey;

impl KeyExtractor for SubjectKey {
    fn extract<B>(&self, request: &Request<B>) -> Option<String> {
        request.extensions().get::<Subject>().map(|s| s.0.clone())
    }
}

/// Charges requests to the value of a header, such as an API key.
#[derive(Debug, Clone)]
pub struct HeaderKey(pub HeaderName);

impl KeyExtractor for HeaderKey {
    fn extract<B>(&self, request: &Request<B>) -> Option<String> {
        let value = request.headers().get(&self.0)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }
}

/// Charges requests to the client's address.
///
/// The peer address comes from a `SocketAddr` request extension (copy axum's `ConnectInfo`
/// into one). `X-Forwarded-For` is believed only from trusted proxies and is walked from the
/// right: the first address not in a trusted network is the client, so a client cannot forge
/// its way out of its limit by prepending addresses. IPv6 clients are grouped by /56, the
/// smallest block one customer usually holds.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<(IpAddr, u8)>,
}

impl ClientIp {
    /// Trusts no proxy: the peer address is the client.
    pub fn new() -> Self {
        ClientIp::default()
    }

    /// Trusts proxies in these networks (`10.0.0.0/8`, `::1/128`, or a bare address).
    pub fn with_trusted_proxies<I, S>(mut self, networks: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for network in networks {
            self.trusted.push(parse_network(network.as_ref())?);
        }
        Ok(self)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|(network, bits)| in_network(ip, *network, *bits))
    }

    /// The client address for a peer and an `X-Forwarded-For` value.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let mut client = peer;
        if self.is_trusted(peer)
            && let Some(chain) = forwarded_for
        {
            for hop in chain.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
                client = ip;
                if !self.is_trusted(ip) {
                    break;
                }
            }
        }
        client
    }
}

impl KeyExtractor for ClientIp {
    fn extract<B>(&self, request: &Request<B>) -> Option<String> {
        let peer = request.extensions().get::<SocketAddr>()?.ip();
        let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Some(group(self.client(peer, forwarded)).to_string())
    }
}

/// IPv6 addresses reduced to their /56; IPv4 (and IPv4-mapped) addresses as they are.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 72) - 1))),
        },
        v4 => v4,
    }
}

fn parse_network(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, bits) = match text.split_once('/') {
        Some((address, bits)) => (address, Some(bits)),
        None => (text, None),
    };
    let ip: IpAddr = address.trim().parse().map_err(|_| format!("`{text}` is not an IP network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(bits) => bits
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
        None => max,
    };
    Ok((ip, bits))
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let mask = |width: u32, bits: u8| if bits == 0 { 0 } else { u128::MAX << (width - u32::from(bits)) };
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(32, bits) as u32;
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(128, bits);
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_read_from_the_right() -> Result<(), String> {
        let client = ClientIp::new().with_trusted_proxies(["10.0.0.0/8"])?;
        // Untrusted peer: its header is ignored.
        assert_eq!(client.client(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"));
        // Trusted proxy: the rightmost untrusted hop is the client, whatever was prepended.
        assert_eq!(client.client(ip("10.0.0.2"), Some("6.6.6.6, 198.51.100.7, 10.0.0.9")), ip("198.51.100.7"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(client.client(ip("10.0.0.2"), Some("x, 10.0.0.3")), ip("10.0.0.3"));
        Ok(())
    }

    #[test]
    fn ipv6_clients_are_grouped_by_56() {
        assert_eq!(group(ip("2001:db8:aa:bbcc:1::1")), ip("2001:db8:aa:bb00::"));
        assert_eq!(group(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn bad_networks_are_refused() {
        assert!(ClientIp::new().with_trusted_proxies(["10.0.0.0/33"]).is_err());
        assert!(ClientIp::new().with_trusted_proxies(["ten"]).is_err());
    }
}
