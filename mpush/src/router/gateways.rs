//! The gateways the service registry lists right now (`/cluster/gs`), as this node sees them.
//!
//! A route naming a gateway that has left the registry (its ephemeral node is gone: the
//! server died or lost its session) is a dead route: pushes to it answer OFFLINE, not
//! FAILURE, and a surviving node marks it offline.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The set of live gateway `host:port`s, kept in step with discovery by the server.
#[derive(Debug, Default)]
pub(crate) struct LiveGateways {
    nodes: RwLock<HashSet<String>>,
    /// Set once discovery delivered a first snapshot: before that, an absent gateway
    /// proves nothing.
    known: AtomicBool,
}

impl LiveGateways {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the view with a full snapshot.
    pub(crate) fn reset(&self, nodes: impl IntoIterator<Item = String>) {
        *self.write() = nodes.into_iter().collect();
        self.known.store(true, Ordering::Release);
    }

    /// A gateway appeared.
    pub(crate) fn added(&self, host_port: String) {
        self.write().insert(host_port);
    }

    /// A gateway left.
    pub(crate) fn removed(&self, host_port: &str) {
        self.write().remove(host_port);
    }

    /// `true` only if discovery has answered and does not list `host_port`.
    pub(crate) fn is_gone(&self, host_port: &str) -> bool {
        self.known.load(Ordering::Acquire) && !self.read().contains(host_port)
    }

    /// `true` if discovery lists `host_port`.
    pub(crate) fn contains(&self, host_port: &str) -> bool {
        self.read().contains(host_port)
    }

    /// The listed gateways, sorted (every node computes the same order).
    #[cfg(test)]
    pub(crate) fn sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().iter().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_the_first_snapshot() {
        let g = LiveGateways::default();
        assert!(
            !g.is_gone("a:1"),
            "no snapshot yet: nothing is known to be gone"
        );
        g.reset(["a:1".to_string(), "b:2".to_string()]);
        assert!(!g.is_gone("a:1"));
        assert!(g.is_gone("c:3"));
        g.removed("a:1");
        assert!(g.is_gone("a:1"));
        g.added("a:1".into());
        assert!(!g.is_gone("a:1"));
        assert_eq!(g.sorted(), vec!["a:1".to_string(), "b:2".to_string()]);
    }
}
