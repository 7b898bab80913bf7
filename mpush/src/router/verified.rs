//! Route checks a unicast push can skip: a local connection that the cluster route was read
//! and found to name stays verified until the cache reports a change of the user's route key.
//!
//! A push to a local connection reads the cluster route to find out whether a bind elsewhere
//! displaced it while its kick was lost (issue 7). Reading it for every push costs a cache
//! round trip per push; with a backend that reports changes
//! ([`crate::spi::CacheManager::watch_prefix`]) the answer is kept per connection and thrown
//! away on the first change notice for the user, or when the backend loses its watch.
//!
//! Each connection holds one [`RouteCheck`] word: the watch epoch it was verified in (high 32
//! bits), a change counter (bits 1..=31) and a verified bit (bit 0). A change notice bumps the
//! counter and clears the bit; a verification is written with a compare-and-set against the
//! word read *before* the route was read, so a notice that arrives while the read is in
//! flight wins. The epoch of [`RouteWatchState`] is 0 while the backend has no watch in
//! place, and new after every (re)established watch, so a loss voids every verification.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const VERIFIED: u64 = 1;
/// The change counter's bits (31 of them above the verified bit).
const COUNTER: u64 = 0xFFFF_FFFE;

/// One connection's verification (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RouteCheck(AtomicU64);

impl RouteCheck {
    /// Not verified.
    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// The user's route may have changed: the next push reads it again.
    pub(crate) fn invalidate(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let counter = (w & COUNTER).wrapping_add(2) & COUNTER;
                Some((w & !(COUNTER | VERIFIED)) | counter)
            });
    }
}

/// What [`RouteWatchState::begin`] saw before the route was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    word: u64,
    epoch: u32,
}

/// Whether route changes are being reported, and in which epoch (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RouteWatchState {
    /// 0: no watch in place, nothing is verified.
    epoch: AtomicU32,
    /// The last epoch handed out.
    last: AtomicU32,
}

impl RouteWatchState {
    /// The watch is (again) in place: a new epoch, so nothing verified before counts.
    pub(crate) fn watching(&self) {
        let mut e = self.last.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if e == 0 {
            e = self.last.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        }
        self.epoch.store(e, Ordering::Release);
    }

    /// Notices may be missed from now on: nothing is verified until the next
    /// [`Self::watching`].
    pub(crate) fn lost(&self) {
        self.epoch.store(0, Ordering::Release);
    }

    /// `true` while the cache reports route changes.
    pub(crate) fn is_watching(&self) -> bool {
        self.epoch.load(Ordering::Acquire) != 0
    }

    /// `true` when `check` was verified in the current epoch and no change was reported since.
    pub(crate) fn is_verified(&self, check: &RouteCheck) -> bool {
        let w = check.0.load(Ordering::Acquire);
        let epoch = self.epoch.load(Ordering::Acquire);
        epoch != 0 && w & VERIFIED != 0 && (w >> 32) as u32 == epoch
    }

    /// Called before the route is read; `None` while no watch is in place.
    pub(crate) fn begin(&self, check: &RouteCheck) -> Option<Ticket> {
        let word = check.0.load(Ordering::Acquire);
        let epoch = self.epoch.load(Ordering::Acquire);
        (epoch != 0).then_some(Ticket { word, epoch })
    }

    /// The route read after `ticket` named the connection: verified, unless a change was
    /// reported or the watch was lost or renewed meanwhile.
    pub(crate) fn confirm(&self, check: &RouteCheck, ticket: Ticket) {
        if self.epoch.load(Ordering::Acquire) != ticket.epoch {
            return;
        }
        let verified = (u64::from(ticket.epoch) << 32) | (ticket.word & COUNTER) | VERIFIED;
        let _ =
            check
                .0
                .compare_exchange(ticket.word, verified, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn verified(state: &RouteWatchState, check: &RouteCheck) -> bool {
        match state.begin(check) {
            Some(t) => {
                state.confirm(check, t);
                state.is_verified(check)
            }
            None => false,
        }
    }

    #[test]
    fn nothing_is_verified_without_a_watch() {
        let (state, check) = (RouteWatchState::default(), RouteCheck::default());
        assert!(state.begin(&check).is_none());
        assert!(!state.is_verified(&check));
        state.watching();
        assert!(!state.is_verified(&check), "never read: not verified");
        assert!(verified(&state, &check));
    }

    #[test]
    fn a_change_notice_voids_the_verification() {
        let (state, check) = (RouteWatchState::default(), RouteCheck::default());
        state.watching();
        assert!(verified(&state, &check));
        check.invalidate();
        assert!(!state.is_verified(&check));
        assert!(verified(&state, &check), "read again: verified again");
    }

    #[test]
    fn a_notice_during_the_read_wins() {
        let (state, check) = (RouteWatchState::default(), RouteCheck::default());
        state.watching();
        let ticket = state.begin(&check).unwrap();
        check.invalidate(); // the route changed after it was read, before the reply came
        state.confirm(&check, ticket);
        assert!(!state.is_verified(&check));
    }

    #[test]
    fn a_lost_or_renewed_watch_voids_everything() {
        let (state, check) = (RouteWatchState::default(), RouteCheck::default());
        state.watching();
        assert!(verified(&state, &check));
        state.lost();
        assert!(!state.is_verified(&check));
        assert!(state.begin(&check).is_none());
        state.watching();
        assert!(!state.is_verified(&check), "verified in an older epoch");

        // Lost and back while a read was in flight: the read's answer is from the old epoch.
        let ticket = state.begin(&check).unwrap();
        state.lost();
        state.watching();
        state.confirm(&check, ticket);
        assert!(!state.is_verified(&check));
    }

    #[test]
    fn the_counter_wraps_without_touching_the_epoch() {
        let (state, check) = (RouteWatchState::default(), RouteCheck::default());
        state.watching();
        check.0.store((1 << 32) | COUNTER, Ordering::Relaxed);
        check.invalidate();
        assert_eq!(check.0.load(Ordering::Relaxed), 1 << 32);
        assert!(verified(&state, &check));
    }
}
