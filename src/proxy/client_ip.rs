//! The client's address behind trusted proxies.
//!
//! `X-Forwarded-For` and `Forwarded` are written by whoever sends the request, so they are only
//! believed when the direct peer is one of the configured trusted proxies. Then the chain is read
//! from the right (the entry the nearest proxy added) to the left, skipping trusted proxies; the
//! first untrusted address is the client. When every entry is trusted, the leftmost one is. An
//! entry that is not an IP address (`unknown`, an obfuscated `_name`, garbage) ends the walk at the
//! last address that was believed, so a client cannot pick its key by sending junk.
//!
//! `X-Forwarded-For` is what trusted proxies maintain unless the operator says otherwise. Many
//! proxies append to `X-Forwarded-For` but pass a client's `Forwarded` (RFC 7239) through untouched,
//! so believing `Forwarded` from such a proxy would let any client choose its address, and with it
//! its bucket. `Forwarded` is therefore read only with `GUBER_PROXY_TRUST_FORWARDED=true`
//! ([`TrustedProxies::trusting_forwarded`]), and then in preference to `X-Forwarded-For`. Multiple
//! header lines of one kind form a single list, in order.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// The networks whose forwarding headers are believed, and which header they maintain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    forwarded: bool,
}

/// A trusted-proxy entry that is neither an IP address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IP address or CIDR (e.g. 10.0.0.0/8, 127.0.0.1, ::1/128)")]
pub struct TrustedProxyError(pub String);

impl FromStr for TrustedProxies {
    type Err = TrustedProxyError;

    /// Comma- or whitespace-separated CIDRs or single addresses; empty trusts nobody.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let networks = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| TrustedProxyError(entry.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            networks,
            forwarded: false,
        })
    }
}

impl TrustedProxies {
    /// Whether `address` is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The same proxies, believed to maintain `Forwarded` (RFC 7239) when `trust` is set
    /// (`GUBER_PROXY_TRUST_FORWARDED`); otherwise only their `X-Forwarded-For` is read.
    pub fn trusting_forwarded(mut self, trust: bool) -> Self {
        self.forwarded = trust;
        self
    }

    /// Whether the trusted proxies' `Forwarded` header is believed.
    pub fn trusts_forwarded(&self) -> bool {
        self.forwarded
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers, self.forwarded);
        let mut client = peer;
        for entry in chain.iter().rev() {
            let Some(address) = entry else {
                break;
            };
            client = *address;
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// The forwarding chain, left (original client) to right (nearest proxy): `Forwarded`'s `for=`
/// values when `use_forwarded` and that header is present, else `X-Forwarded-For`'s entries.
/// `None` is an entry that is not an IP address.
pub fn forwarded_chain(headers: &HeaderMap, use_forwarded: bool) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = if use_forwarded {
        header_lines(headers, "forwarded")
    } else {
        Vec::new()
    };
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|line| line.split(','))
            .map(|element| forwarded_for(element).and_then(parse_node))
            .collect();
    }
    header_lines(headers, "x-forwarded-for")
        .iter()
        .flat_map(|line| line.split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

fn header_lines<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        // A line that is not text is one unusable entry.
        .map(|value| value.to_str().unwrap_or("\u{0}"))
        .collect()
}

/// The `for=` parameter of one `Forwarded` element (`for=192.0.2.1;proto=http`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn parses_cidrs_and_addresses() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1 ::1/128,fd00::/8".parse().unwrap();
        assert!(trusted.contains(ip("10.1.2.3")));
        assert!(trusted.contains(ip("127.0.0.1")));
        assert!(!trusted.contains(ip("127.0.0.2")));
        assert!(trusted.contains(ip("::1")));
        assert!(trusted.contains(ip("::ffff:10.9.9.9")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert_eq!(
            "10.0.0.0/8,nope".parse::<TrustedProxies>(),
            Err(TrustedProxyError("nope".into()))
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

    /// The client address of a request that proxy 10.0.0.1 sent with these header lines.
    fn via_proxy(trusted: &TrustedProxies, lines: &[(&'static str, &str)]) -> IpAddr {
        trusted.client_ip(ip("10.0.0.1"), &headers(lines))
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_hops() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        for (lines, expected) in [
            // A client-supplied spoof on the left is not believed past the first untrusted hop.
            (
                vec![("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")],
                "203.0.113.9",
            ),
            // Several lines form one list.
            (
                vec![
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "10.0.0.3"),
                ],
                "203.0.113.9",
            ),
            // Every hop trusted: the leftmost.
            (vec![("x-forwarded-for", "10.0.0.7, 10.0.0.3")], "10.0.0.7"),
            // Junk stops the walk at the last believed address.
            (
                vec![("x-forwarded-for", "203.0.113.9, garbage, 10.0.0.3")],
                "10.0.0.3",
            ),
            // No header: the peer itself.
            (vec![], "10.0.0.1"),
        ] {
            assert_eq!(via_proxy(&trusted, &lines), ip(expected), "{lines:?}");
        }
    }

    #[test]
    fn forwarded_is_ignored_unless_the_operator_trusts_it() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert!(!trusted.trusts_forwarded());
        let forwarded = ("forwarded", "for=203.0.113.66");
        assert_eq!(via_proxy(&trusted, &[forwarded]), ip("10.0.0.1"));
        let both = [forwarded, ("x-forwarded-for", "198.51.100.50")];
        assert_eq!(via_proxy(&trusted, &both), ip("198.51.100.50"));
    }

    #[test]
    fn forwarded_is_preferred_and_understood_when_trusted() {
        let trusted: TrustedProxies = "10.0.0.0/8"
            .parse::<TrustedProxies>()
            .unwrap()
            .trusting_forwarded(true);
        for (lines, expected) in [
            (
                vec![
                    (
                        "forwarded",
                        "for=\"[2001:db8::7]:4711\";proto=https, For=10.0.0.9:80",
                    ),
                    ("x-forwarded-for", "198.51.100.50"),
                ],
                "2001:db8::7",
            ),
            (
                vec![("forwarded", "for=192.0.2.60;by=10.0.0.1")],
                "192.0.2.60",
            ),
            (vec![("forwarded", "for=unknown")], "10.0.0.1"),
        ] {
            assert_eq!(via_proxy(&trusted, &lines), ip(expected), "{lines:?}");
        }
    }

    #[test]
    fn nodes_with_ports_and_brackets_parse() {
        assert_eq!(parse_node("192.0.2.1:4711"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("[::1]"), Some(ip("::1")));
        assert_eq!(parse_node("[::1]:80"), Some(ip("::1")));
        assert_eq!(parse_node(" 2001:db8::1 "), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("_hidden"), None);
        assert_eq!(parse_node("host:80"), None);
    }
}
