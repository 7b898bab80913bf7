//! `DnsMappingManager` (spec §12 step 2, §15): where the HTTP proxy sends a request for a
//! domain instead of resolving it.

/// One upstream address a domain maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsMapping {
    /// IP address (or host name) to connect to.
    pub ip: String,
    /// Port (80 when a mapping omits it).
    pub port: u16,
}

impl DnsMapping {
    /// Parses `ip[:port]` (also `[v6]:port`) as `mp.http.dns-mapping` writes it; the port
    /// defaults to 80. `None` for an empty host, a bad port or stray characters.
    pub fn parse(s: &str) -> Option<DnsMapping> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
            return Some(DnsMapping {
                ip: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Some(DnsMapping {
                ip: ip.to_string(),
                port: 80,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()?),
            None => (s, 80),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        valid.then(|| DnsMapping {
            ip: host.to_string(),
            port,
        })
    }

    /// `ip:port`, with brackets around an IPv6 address (for a URL authority).
    pub fn authority(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// Maps a domain to an upstream address for the HTTP proxy. Lookups run on every proxied
/// request, so implementations answer from memory (a watched copy, a health-checked list)
/// and never block.
pub trait DnsMappingManager: Send + Sync + std::fmt::Debug {
    /// One healthy mapping for `host` (lower-case domain), chosen at random among several;
    /// `None` when the domain is not mapped (the URL is then used as is).
    fn lookup(&self, host: &str) -> Option<DnsMapping>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mapping_targets() {
        let m = |ip: &str, port| Some(DnsMapping { ip: ip.into(), port });
        assert_eq!(DnsMapping::parse("127.0.0.1:8080"), m("127.0.0.1", 8080));
        assert_eq!(DnsMapping::parse("10.0.0.1"), m("10.0.0.1", 80));
        assert_eq!(DnsMapping::parse("[::1]:81"), m("::1", 81));
        assert_eq!(DnsMapping::parse("backend.local:90"), m("backend.local", 90));
        assert_eq!(DnsMapping::parse("::1").map(|d| d.authority()), Some("[::1]:80".into()));
        for bad in ["", ":80", "h:99999", "h:x", "a b:1", "h/x:1"] {
            assert_eq!(DnsMapping::parse(bad), None, "{bad:?}");
        }
    }
}
