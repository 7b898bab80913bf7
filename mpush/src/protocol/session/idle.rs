//! Server idle detection (spec §7.2) as a pure rule: the driver owns the timer and the clock,
//! this decides what each firing means.

use std::time::Duration;

/// The check interval before a handshake negotiated a heartbeat.
pub const PRE_HANDSHAKE_CHECK: Duration = Duration::from_secs(10);

/// Slack past the heartbeat before a check counts as missed.
const GRACE_MS: i64 = 1000;

/// Consecutive missed checks of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleCheck {
    misses: u32,
    max_misses: u32,
}

/// What one firing of the idle timer concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleVerdict {
    /// Something was read within the heartbeat (plus 1 s): the count restarts.
    Alive,
    /// Nothing was read; this many consecutive misses so far, still within the limit.
    Missed(u32),
    /// More than `mp.core.max-hb-timeout-times` consecutive misses: close.
    TimedOut(u32),
}

impl IdleCheck {
    /// A fresh count; close after more than `max_misses` consecutive misses.
    pub fn new(max_misses: u32) -> Self {
        Self {
            misses: 0,
            max_misses,
        }
    }

    /// How long until the next check: the heartbeat, or 10 s before a handshake.
    pub fn interval(heartbeat: Option<Duration>) -> Duration {
        heartbeat.unwrap_or(PRE_HANDSHAKE_CHECK)
    }

    /// One firing at `now_ms`, with the time of the last inbound byte and the heartbeat in
    /// force (both clocks in the same milliseconds).
    pub fn check(&mut self, now_ms: i64, last_read_ms: i64, heartbeat: Duration) -> IdleVerdict {
        let limit = i64::try_from(heartbeat.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(GRACE_MS);
        if now_ms.saturating_sub(last_read_ms) <= limit {
            self.misses = 0;
            return IdleVerdict::Alive;
        }
        self.misses = self.misses.saturating_add(1);
        if self.misses > self.max_misses {
            IdleVerdict::TimedOut(self.misses)
        } else {
            IdleVerdict::Missed(self.misses)
        }
    }
}

impl IdleCheck {
    /// A check that the driver did not wake for, because it was sure to find the connection
    /// alive (see [`IdleCheck::alive_checks_ahead`]): the count restarts, as that check would
    /// have made it.
    pub fn skipped_alive(&mut self) {
        self.misses = 0;
    }

    /// How many checks in a row, starting with the next one, are sure to find the connection
    /// alive, when the next one comes `read_to_check` after the last inbound byte and the
    /// rest follow every `heartbeat`. A check within the heartbeat (plus the grace) of a read
    /// is alive, and reads only ever move later, so the driver may sleep through those
    /// checks and wake first for one that can find a miss: with a client heartbeating every
    /// interval that is never, where checking on MPush's fixed grid wakes every connection
    /// once per interval. The close happens at the same check either way (the equivalence
    /// is tested below).
    pub fn alive_checks_ahead(read_to_check: Duration, heartbeat: Duration) -> u32 {
        let limit = heartbeat.saturating_add(Duration::from_millis(GRACE_MS.unsigned_abs()));
        if heartbeat.is_zero() || read_to_check > limit {
            return 0;
        }
        let ahead = (limit - read_to_check).as_nanos() / heartbeat.as_nanos() + 1;
        u32::try_from(ahead).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the lazy driver of `server/connection.rs`: checks on the same grid as
    /// `closed_at`, but it wakes only for a check that `alive_checks_ahead` cannot rule
    /// out, and counts the ones it slept through as alive. Returns when it closed and how
    /// many checks it woke for.
    fn lazy_closed_at(heartbeat: Duration, reads: &[i64], until_ms: i64) -> (Option<i64>, u32) {
        let mut idle = IdleCheck::new(2);
        let hb = heartbeat.as_millis() as i64;
        let mut next_check = hb;
        let mut woke = 0;
        loop {
            // The driver re-plans after every event; here after every read before the check.
            let last_read = reads
                .iter()
                .copied()
                .filter(|r| *r <= next_check)
                .max()
                .unwrap_or(0);
            let gap = Duration::from_millis((next_check - last_read).unsigned_abs());
            let skip = i64::from(IdleCheck::alive_checks_ahead(gap, heartbeat));
            if skip > 0 {
                // Sure to be alive: slept through (re-planned with later reads on the way).
                idle.skipped_alive();
                next_check += hb;
                if next_check > until_ms {
                    return (None, woke);
                }
                continue;
            }
            woke += 1;
            if let IdleVerdict::TimedOut(_) = idle.check(next_check, last_read, heartbeat) {
                return (Some(next_check), woke);
            }
            next_check += hb;
            if next_check > until_ms {
                return (None, woke);
            }
        }
    }

    /// Reads at pseudo-random times (a fixed LCG, so the test is deterministic): bursts,
    /// regular heartbeats, gaps of one to four intervals.
    fn reads(seed: u64, heartbeat_ms: i64, until_ms: i64) -> Vec<i64> {
        let mut x = seed;
        let mut t = 0;
        let mut out = Vec::new();
        while t < until_ms {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = match (x >> 33) % 4 {
                0 => heartbeat_ms / 10,
                1 | 2 => heartbeat_ms - 500 + ((x >> 40) % 1000) as i64,
                _ => heartbeat_ms * (1 + ((x >> 45) % 4) as i64),
            };
            t += step.max(1);
            out.push(t);
        }
        out
    }

    #[test]
    fn sleeping_through_alive_checks_closes_at_the_same_check() {
        for hb_s in [10u64, 180] {
            let hb = Duration::from_secs(hb_s);
            let hb_ms = hb.as_millis() as i64;
            for seed in 0..200 {
                let until = hb_ms * 40;
                let r = reads(seed, hb_ms, until);
                let eager = closed_at(Some(hb), &r, until);
                let (lazy, _) = lazy_closed_at(hb, &r, until);
                assert_eq!(eager, lazy, "heartbeat {hb_s} s, seed {seed}, reads {r:?}");
            }
        }
    }

    #[test]
    fn a_client_heartbeating_every_interval_never_wakes_the_check() {
        let hb = Duration::from_secs(10);
        let r: Vec<i64> = (1..=100).map(|i| i * 9_500).collect();
        let (closed, woke) = lazy_closed_at(hb, &r, 900_000);
        assert_eq!((closed, woke), (None, 0));
        // Silence after the last heartbeat: it wakes for the three misses and closes there.
        assert_eq!(
            lazy_closed_at(hb, &r, 2_000_000),
            (closed_at(Some(hb), &r, 2_000_000), 3)
        );
    }

    #[test]
    fn alive_checks_ahead_counts_the_checks_within_heartbeat_plus_grace() {
        let hb = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(IdleCheck::alive_checks_ahead(s(0), hb), 2); // checks at +0 s and +10 s
        assert_eq!(IdleCheck::alive_checks_ahead(s(5), hb), 1); // +5 s alive, +15 s not
        assert_eq!(IdleCheck::alive_checks_ahead(s(11), hb), 1); // exactly the limit
        assert_eq!(IdleCheck::alive_checks_ahead(s(12), hb), 0);
        assert_eq!(IdleCheck::alive_checks_ahead(s(0), Duration::ZERO), 0);
    }

    /// Plays the driver's timer: first check one interval after `start`, re-armed with the
    /// interval in force; `reads` are the times of inbound bytes. Returns when it closed.
    fn closed_at(heartbeat: Option<Duration>, reads: &[i64], until_ms: i64) -> Option<i64> {
        let mut idle = IdleCheck::new(2);
        let mut last_read = 0;
        let mut now = 0i64;
        loop {
            now += IdleCheck::interval(heartbeat).as_millis() as i64;
            if now > until_ms {
                return None;
            }
            if let Some(r) = reads.iter().copied().filter(|r| *r <= now).max() {
                last_read = last_read.max(r);
            }
            let hb = IdleCheck::interval(heartbeat);
            if let IdleVerdict::TimedOut(n) = idle.check(now, last_read, hb) {
                assert_eq!(n, 3);
                return Some(now);
            }
        }
    }

    #[test]
    fn a_silent_connection_closes_at_the_fourth_pre_handshake_check() {
        // Checks at 10, 20, 30, 40 s: the first is within 10 s + 1 s, then three misses.
        assert_eq!(closed_at(None, &[], 120_000), Some(40_000));
    }

    #[test]
    fn a_handshaken_connection_closes_within_nine_to_twelve_minutes() {
        let at = closed_at(Some(Duration::from_secs(180)), &[], 3_600_000).expect("never closed");
        assert!((540_000..=720_000).contains(&at), "closed at {at} ms");
    }

    #[test]
    fn a_heartbeat_per_interval_keeps_it_open() {
        let reads: Vec<i64> = (1..=60).map(|i| i * 9_000).collect();
        assert_eq!(closed_at(None, &reads, 540_000), None);
    }

    #[test]
    fn one_read_restarts_the_count() {
        let mut idle = IdleCheck::new(2);
        let hb = Duration::from_secs(10);
        assert_eq!(idle.check(20_000, 0, hb), IdleVerdict::Missed(1));
        assert_eq!(idle.check(30_000, 0, hb), IdleVerdict::Missed(2));
        assert_eq!(idle.check(40_000, 35_000, hb), IdleVerdict::Alive);
        assert_eq!(idle.check(60_000, 35_000, hb), IdleVerdict::Missed(1));
        // A clock that went backwards is not idleness.
        assert_eq!(idle.check(0, 35_000, hb), IdleVerdict::Alive);
    }
}
