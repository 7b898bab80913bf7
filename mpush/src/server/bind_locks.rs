//! One node's binds of a (user, client type), taken one at a time.
//!
//! A bind registers the local route, then writes the cluster route by compare-and-set. Two
//! binds of one (user, type) on one node could interleave those steps: A registers locally,
//! B registers (displacing A), B's write lands, B kicks A, then A's retried write lands last.
//! The cluster route then named A, whose session had lost its user, while the local route
//! named B: the next check displaced B too, and both devices were kicked. Taking the two
//! steps under a lock of the (user, type) makes the local order and the cluster order the
//! same. Binds on different nodes need no lock: the compare-and-set orders them, and the
//! later one kicks the earlier.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use tokio::sync::{Mutex, MutexGuard};

use crate::spi::ClientType;

/// Stripes: binds of different users share one with probability 1/STRIPES. A stripe is held
/// for one route write (a cache round trip, bounded by the cache's call timeout).
const STRIPES: usize = 1024;

/// Striped locks by (user, client type).
pub(crate) struct BindLocks {
    stripes: Box<[Mutex<()>]>,
    // Seeded per process: a peer choosing user ids cannot aim them all at one stripe.
    hasher: RandomState,
}

impl std::fmt::Debug for BindLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindLocks")
    }
}

impl Default for BindLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl BindLocks {
    /// Waits for the lock of (`user_id`, `client_type`).
    pub(crate) async fn lock(&self, user_id: &str, client_type: ClientType) -> MutexGuard<'_, ()> {
        let h = self.hasher.hash_one((user_id, client_type.code()));
        // The modulo of a u64 by the stripe count fits in usize.
        let i = (h % STRIPES as u64) as usize;
        self.stripes[i].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_user_waits_another_does_not() {
        let locks = BindLocks::default();
        let held = locks.lock("u", ClientType::MOBILE).await;
        let same = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            locks.lock("u", ClientType::MOBILE),
        )
        .await;
        assert!(same.is_err(), "a second bind of (u, mobile) did not wait");
        // Only its stripe is taken: other users' binds go on.
        let taken = locks
            .stripes
            .iter()
            .filter(|s| s.try_lock().is_err())
            .count();
        assert_eq!(taken, 1);
        drop(held);
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            locks.lock("u", ClientType::MOBILE),
        )
        .await;
        assert!(again.is_ok());
    }
}
