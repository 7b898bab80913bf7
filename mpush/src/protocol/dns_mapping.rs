//! A DNS mapping target (`ip[:port]`, spec §12 step 2): a value of `mp.http.dns-mapping` and
//! of ZooKeeper's `/dns/mapping`, parsed here so config and the SPI share one reading.

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
