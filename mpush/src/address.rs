//! Address detection for the "auto" (empty) `mp.net.*` addresses (spec §11).
//!
//! The config keeps what the operator wrote; the servers and the UDP push SDK resolve an empty
//! `local-ip`, `public-ip` or register address here, from the machine's interfaces
//! (`if-addrs`) and the default route (`/proc/net/route` on Linux). It lives outside `server`
//! because the push SDK (`sender`) needs it too and must not import the server.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;

use crate::config::NetConfig;

/// The machine's LAN address: `local-ip` if configured, else the first site-local
/// (10/8, 172.16/12, 192.168/16) IPv4 address of this machine, else `127.0.0.1` (spec §11).
///
/// The default route's interface comes first, then the others in listing order, bridges
/// (docker0, virbr0, …) last. [`log_addresses`] logs the choice. Set `mp.net.local-ip` on
/// multi-homed hosts.
pub(crate) fn local_ip(net: &NetConfig) -> String {
    if !net.local_ip.is_empty() {
        return net.local_ip.clone();
    }
    machine_ips()
        .site_local
        .first()
        .map_or_else(|| Ipv4Addr::LOCALHOST.to_string(), Ipv4Addr::to_string)
}

/// The machine's public address (spec §11): `public-ip` if configured, else
/// `public-host-mapping[resolved local ip]`, else the first IPv4 address of this machine
/// that is neither site-local, loopback nor link-local, else [`local_ip`].
pub(crate) fn public_ip(net: &NetConfig) -> String {
    if !net.public_ip.is_empty() {
        return net.public_ip.clone();
    }
    let local = local_ip(net);
    if let Some(mapped) = net.public_host_mapping.get(&local) {
        if !mapped.is_empty() {
            return mapped.clone();
        }
    }
    machine_ips()
        .public
        .first()
        .map_or(local, Ipv4Addr::to_string)
}

/// The host registered for the connection server (ZK `/cluster/cs`):
/// `connect-server-register-ip` if configured, else [`public_ip`].
pub(crate) fn connect_register_ip(net: &NetConfig) -> String {
    if net.connect_server_register_ip.is_empty() {
        public_ip(net)
    } else {
        net.connect_server_register_ip.clone()
    }
}

/// The host registered for the gateway server (ZK `/cluster/gs`):
/// `gateway-server-register-ip` if configured, else [`local_ip`].
pub(crate) fn gateway_register_ip(net: &NetConfig) -> String {
    if net.gateway_server_register_ip.is_empty() {
        local_ip(net)
    } else {
        net.gateway_server_register_ip.clone()
    }
}

/// Logs the addresses a server will use and register (info; a warning when one is loopback or
/// on a bridge, because other machines then cannot reach it).
pub(crate) fn log_addresses(net: &NetConfig) {
    let ips = machine_ips();
    let addresses = [
        ("local-ip", local_ip(net)),
        ("public-ip", public_ip(net)),
        ("connect-server-register-ip", connect_register_ip(net)),
        ("gateway-server-register-ip", gateway_register_ip(net)),
    ];
    for (key, ip) in &addresses {
        let (how, suspicious) = describe_address(ips, ip);
        if suspicious {
            tracing::warn!(
                key = %format!("mp.net.{key}"),
                %ip,
                "address {how}; set mp.net.{key} if other machines must reach this server"
            );
        } else {
            tracing::info!(key = %format!("mp.net.{key}"), %ip, "address {how}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Machine addresses
// ---------------------------------------------------------------------------------------------

/// One IPv4 address of a network interface, as address detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InterfaceAddr {
    /// Interface name (`eth0`, `docker0`).
    name: String,
    ip: Ipv4Addr,
    /// A Linux bridge (`/sys/class/net/<name>/bridge`) or a container/VM bridge by name: its
    /// addresses are reachable from this host only, so they are the last choice.
    bridge: bool,
}

/// This machine's IPv4 addresses, split as spec §11 needs them, best first.
#[derive(Debug, Default)]
struct MachineIps {
    /// 10/8, 172.16/12, 192.168/16.
    site_local: Vec<Ipv4Addr>,
    /// Neither site-local, loopback, link-local, unspecified, broadcast nor multicast.
    public: Vec<Ipv4Addr>,
    /// The interface of each address above, and whether it is a bridge (for the start-up log).
    interfaces: Vec<(Ipv4Addr, String, bool)>,
}

impl MachineIps {
    fn interface_of(&self, ip: &str) -> Option<(&str, bool)> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.interfaces
            .iter()
            .find(|(a, _, _)| *a == ip)
            .map(|(_, name, bridge)| (name.as_str(), *bridge))
    }
}

fn machine_ips() -> &'static MachineIps {
    static IPS: OnceLock<MachineIps> = OnceLock::new();
    IPS.get_or_init(|| {
        let interfaces = match if_addrs::get_if_addrs() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces; using 127.0.0.1");
                Vec::new()
            }
        };
        let addrs: Vec<InterfaceAddr> = interfaces
            .into_iter()
            .filter_map(|i| match i.addr {
                if_addrs::IfAddr::V4(v4) => Some(InterfaceAddr {
                    bridge: is_bridge(&i.name),
                    name: i.name,
                    ip: v4.ip,
                }),
                if_addrs::IfAddr::V6(_) => None,
            })
            .collect();
        // Only the choice of interface comes from the routing table; "" when there is none.
        let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        choose_addresses(&addrs, default_route_interface(&route).as_deref())
    })
}

/// Whether `name` is a bridge: a Linux bridge device, or a name Docker, libvirt, LXC or a
/// CNI plugin gives its bridges.
fn is_bridge(name: &str) -> bool {
    const BRIDGE_PREFIXES: [&str; 6] = ["docker", "br-", "virbr", "lxcbr", "cni", "podman"];
    BRIDGE_PREFIXES.iter().any(|p| name.starts_with(p))
        || Path::new("/sys/class/net")
            .join(name)
            .join("bridge")
            .is_dir()
}

/// The interface of the IPv4 default route with the lowest metric in a `/proc/net/route`
/// dump (columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...), if any.
fn default_route_interface(route: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (
                cols.first()?,
                cols.get(1)?,
                cols.get(3)?,
                cols.get(6)?,
                cols.get(7)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u32 = metric.parse().ok()?;
            (*dest == "00000000" && *mask == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, iface.to_string()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// Orders the addresses for spec §11: the default route's interface first, then the other
/// interfaces in listing order, bridges last; loopback and link-local are never chosen.
fn choose_addresses(addrs: &[InterfaceAddr], default_if: Option<&str>) -> MachineIps {
    let rank = |a: &InterfaceAddr| {
        if Some(a.name.as_str()) == default_if {
            0
        } else if a.bridge {
            2
        } else {
            1
        }
    };
    let mut ordered: Vec<&InterfaceAddr> = addrs.iter().collect();
    // Stable: listing order is kept within a rank.
    ordered.sort_by_key(|a| rank(a));
    let mut m = MachineIps::default();
    for a in ordered {
        let ip = a.ip;
        let list = if ip.is_private() {
            &mut m.site_local
        } else if ip.is_loopback()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
        {
            continue;
        } else {
            &mut m.public
        };
        if !list.contains(&ip) {
            list.push(ip);
            m.interfaces.push((ip, a.name.clone(), a.bridge));
        }
    }
    m
}

/// Describes how `ip` was chosen, for the start-up log, and whether it deserves a warning
/// (loopback: other machines cannot reach it; bridge: only this host can).
fn describe_address(ips: &MachineIps, ip: &str) -> (String, bool) {
    if ip.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback()) {
        return ("loopback: other machines cannot reach it".into(), true);
    }
    match ips.interface_of(ip) {
        Some((name, true)) => (
            format!("on bridge {name}: likely reachable from this host only"),
            true,
        ),
        Some((name, false)) => (format!("on {name}"), false),
        None => ("configured".into(), false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: [u8; 4], bridge: bool) -> InterfaceAddr {
        InterfaceAddr {
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            bridge,
        }
    }

    #[test]
    fn address_choice_prefers_the_default_route_and_avoids_bridges() {
        // docker0 sorts first by address (what the old fib_trie scan took); eth0 carries the
        // default route.
        let addrs = [
            iface("lo", [127, 0, 0, 1], false),
            iface("docker0", [172, 17, 0, 1], true),
            iface("eth1", [10, 9, 0, 5], false),
            iface("eth0", [192, 168, 1, 7], false),
            iface("eth0", [8, 8, 4, 4], false),
            iface("eth1", [169, 254, 3, 3], false),
        ];
        let m = choose_addresses(&addrs, Some("eth0"));
        assert_eq!(
            m.site_local,
            [
                Ipv4Addr::new(192, 168, 1, 7),
                Ipv4Addr::new(10, 9, 0, 5),
                Ipv4Addr::new(172, 17, 0, 1)
            ]
        );
        assert_eq!(m.public, [Ipv4Addr::new(8, 8, 4, 4)]);
        // No default route: listing order, bridges still last.
        let m = choose_addresses(&addrs, None);
        assert_eq!(m.site_local[0], Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(m.site_local[2], Ipv4Addr::new(172, 17, 0, 1));
        // Only a bridge and loopback: the bridge, flagged for a warning.
        let m = choose_addresses(&addrs[..2], None);
        assert_eq!(m.site_local, [Ipv4Addr::new(172, 17, 0, 1)]);
        assert!(describe_address(&m, "172.17.0.1").1);
        assert!(describe_address(&m, "127.0.0.1").1);
        assert!(choose_addresses(&[], None).site_local.is_empty());
        let m = choose_addresses(&addrs, Some("eth0"));
        assert_eq!(
            describe_address(&m, "192.168.1.7"),
            ("on eth0".into(), false)
        );
    }

    #[test]
    fn default_route_interface_takes_the_lowest_metric_up_route() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
down0\t00000000\t0103A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0
";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface(""), None);
        assert_eq!(
            default_route_interface("Iface Destination\ngarbage line"),
            None
        );
    }

    #[test]
    fn address_helpers() {
        let mut n = NetConfig::default();
        // Auto values are well-formed IPv4 addresses; register ips follow §11.
        let local = local_ip(&n);
        local.parse::<Ipv4Addr>().unwrap();
        let public = public_ip(&n);
        public.parse::<Ipv4Addr>().unwrap();
        assert_eq!(connect_register_ip(&n), public);
        assert_eq!(gateway_register_ip(&n), local);
        // public-host-mapping applies to the resolved local ip.
        n.local_ip = "10.1.2.3".into();
        n.public_host_mapping
            .insert("10.1.2.3".into(), "203.0.113.9".into());
        assert_eq!(local_ip(&n), "10.1.2.3");
        assert_eq!(public_ip(&n), "203.0.113.9");
        assert_eq!(connect_register_ip(&n), "203.0.113.9");
        assert_eq!(gateway_register_ip(&n), "10.1.2.3");
        // Configured values win.
        n.public_ip = "198.51.100.1".into();
        assert_eq!(public_ip(&n), "198.51.100.1");
        n.connect_server_register_ip = "cs.example".into();
        n.gateway_server_register_ip = "gs.internal".into();
        assert_eq!(connect_register_ip(&n), "cs.example");
        assert_eq!(gateway_register_ip(&n), "gs.internal");
    }
}
