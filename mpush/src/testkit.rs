//! Helpers for test suites that start real listeners on loopback (feature `testkit`).

use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port [`free_loopback_port`] hands out.
const LOWEST: u32 = 10_000;

/// A loopback TCP port nothing listens on (bound, then released): for a listener whose
/// port must be chosen before it starts (port 0 meaning "disabled", a child process's
/// config) and for a target known to refuse.
///
/// The port comes from below the kernel's ephemeral range, never from `bind(0)`: between
/// the release here and the listener's bind, any outgoing `connect()` in the machine may
/// take an ephemeral port as its local port, and the bind then fails with `AddrInUse`
/// (seen in CI while other tests connected hundreds of clients). `connect()` never picks a
/// port below the range, and one process never hands the same port out twice, so only
/// another process that binds fixed ports could still collide.
///
/// # Panics
/// When no port in the range binds.
#[must_use]
pub fn free_loopback_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = ephemeral_low();
    let span = ephemeral_low - LOWEST;
    // Processes that run one after another (test binaries) start at different offsets,
    // so a port the previous one used and left in TIME_WAIT is not tried first.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOWEST + (start.wrapping_add(n)) % span) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOWEST}..{ephemeral_low}");
}

/// The first port of the kernel's ephemeral range (Linux's default where it cannot be read,
/// or where it leaves too little room below it).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&low| low > LOWEST + 1_000 && low <= 65_536)
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let below = ephemeral_low();
        for p in ports {
            assert!((LOWEST..below).contains(&u32::from(p)), "{p}");
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
