//! Admission of client connections: a cap on connections served at once, a per-source-IP
//! connection rate, and a bounded queue in front of the RSA handshake slots.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::NetConfig;

/// Source IPs the rate limiter tracks at most. Past it, idle entries are pruned (at most
/// once per [`PRUNE_EVERY`]); if that is not enough, connections from new IPs are refused
/// rather than letting the map grow without bound.
pub(crate) const MAX_TRACKED_IPS: usize = 65_536;
/// How often a full limiter map may be pruned (pruning walks the whole map).
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// `mp.net.connect-server-max-connections` connections are open.
    #[error("too many connections (mp.net.connect-server-max-connections)")]
    Full,
    /// The source IP connects faster than `mp.net.connect-server-ip-connect-rate`.
    #[error("connection rate of this IP exceeded (mp.net.connect-server-ip-connect-rate)")]
    Rate,
}

struct IpRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    last_prune: Mutex<Instant>,
}

/// The server's admission state.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    ip_rate: Option<IpRate>,
    handshakes_queued: AtomicUsize,
    max_queued_handshakes: usize,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("free_slots", &self.slots.available_permits())
            .field("handshakes_queued", &self.handshakes_queued)
            .finish_non_exhaustive()
    }
}

/// A handshake's place in the RSA queue; leaving it (drop) frees the place.
#[derive(Debug)]
pub(crate) struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission for `net`'s limits.
    pub(crate) fn new(net: &NetConfig) -> Self {
        let ip_rate = NonZeroU32::new(net.connect_server_ip_connect_rate).map(|rate| IpRate {
            limiter: RateLimiter::dashmap(Quota::per_second(rate)),
            last_prune: Mutex::new(Instant::now()),
        });
        Self {
            slots: Arc::new(Semaphore::new(
                net.connect_server_max_connections
                    .min(Semaphore::MAX_PERMITS),
            )),
            ip_rate,
            handshakes_queued: AtomicUsize::new(0),
            max_queued_handshakes: net.connect_server_max_pending_handshakes,
        }
    }

    /// [`admit`](Self::admit) for a listener's accept: a refusal is logged (at debug: a
    /// flood must not flood the log) with the listener's name, and `None` means "drop it".
    pub(crate) fn admit_peer(
        &self,
        peer: std::net::SocketAddr,
        listener: &'static str,
    ) -> Option<OwnedSemaphorePermit> {
        self.admit(peer.ip())
            .map_err(|why| tracing::debug!(%peer, listener, reason = %why, "connection refused"))
            .ok()
    }

    /// Admits a new connection from `ip`: the returned permit is its slot, held for the
    /// connection's life.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<OwnedSemaphorePermit, Refused> {
        if let Some(r) = &self.ip_rate {
            if r.limiter.len() >= MAX_TRACKED_IPS {
                let mut last = r.last_prune.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= PRUNE_EVERY {
                    *last = Instant::now();
                    r.limiter.retain_recent();
                    r.limiter.shrink_to_fit();
                }
                if r.limiter.len() >= MAX_TRACKED_IPS {
                    return Err(Refused::Rate);
                }
            }
            if r.limiter.check_key(&ip).is_err() {
                return Err(Refused::Rate);
            }
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)
    }

    /// A place in the RSA handshake queue; `None` when
    /// `mp.net.connect-server-max-pending-handshakes` handshakes already wait or run.
    pub(crate) fn queue_handshake(&self) -> Option<Queued<'_>> {
        let before = self.handshakes_queued.fetch_add(1, Ordering::AcqRel);
        let place = Queued(&self.handshakes_queued);
        (before < self.max_queued_handshakes).then_some(place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(max_conn: usize, rate: u32, handshakes: usize) -> NetConfig {
        NetConfig {
            connect_server_max_connections: max_conn,
            connect_server_ip_connect_rate: rate,
            connect_server_max_pending_handshakes: handshakes,
            ..NetConfig::default()
        }
    }

    #[test]
    fn connection_slots_are_returned() {
        let a = Admission::new(&net(2, 0, 1));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let one = a.admit(ip).ok();
        let two = a.admit(ip).ok();
        assert!(one.is_some() && two.is_some());
        assert_eq!(a.admit(ip).err(), Some(Refused::Full));
        drop(one);
        assert!(a.admit(ip).is_ok());
    }

    #[test]
    fn rate_is_per_ip() {
        let a = Admission::new(&net(100, 2, 1));
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let held: Vec<_> = (0..2).filter_map(|_| a.admit(x).ok()).collect();
        assert_eq!(held.len(), 2, "a burst of the rate is allowed");
        assert_eq!(a.admit(x).err(), Some(Refused::Rate));
        assert!(a.admit(y).is_ok(), "another IP has its own budget");
    }

    #[test]
    fn handshake_queue_is_bounded_and_freed() {
        let a = Admission::new(&net(10, 0, 2));
        let p1 = a.queue_handshake();
        let p2 = a.queue_handshake();
        assert!(p1.is_some() && p2.is_some());
        assert!(a.queue_handshake().is_none());
        drop(p1);
        assert!(a.queue_handshake().is_some());
        drop(p2);
        assert_eq!(a.handshakes_queued.load(Ordering::Acquire), 0);
    }
}
