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

#[cfg(test)]
mod tests {
    use super::*;

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
