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

/// MPush's grid of heartbeat checks for one connection (one every heartbeat from the
/// connect), run lazily: the driver wakes only for a check that could find a miss, sleeping
/// through the ones [`IdleCheck::alive_checks_ahead`] rules out, and the outcome is the
/// eager grid's (tested below against a driver that wakes for every check). Times are
/// offsets from one origin on the driver's clock (the connection's start), in whole
/// milliseconds, the unit the heartbeat has on the wire: the server keeps one grid per
/// connection, and millisecond integers make it 24 bytes where `Duration`s made it 40.
#[derive(Debug, Clone)]
pub struct CheckGrid {
    idle: IdleCheck,
    /// The interval in force, in milliseconds (at most `u32::MAX`, ≈ 49 days).
    every_ms: u32,
    /// The grid's next check, in milliseconds from the origin.
    next_ms: u64,
}

/// What the driver does after a [`CheckGrid::plan`] step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPlan {
    /// More than `mp.core.max-hb-timeout-times` misses in a row: close.
    TimedOut(u32),
    /// Sleep until `until` at the latest. `checked`: a check ran or was passed, which is
    /// when the driver releases an idle connection's buffers.
    Wait {
        /// When to wake for the next check.
        until: Duration,
        /// A check ran or was passed in this step.
        checked: bool,
    },
}

impl CheckGrid {
    /// The grid of a connection that started at offset zero, checked every `every`.
    pub fn new(max_misses: u32, every: Duration) -> Self {
        let every_ms = interval_ms(every);
        Self {
            idle: IdleCheck::new(max_misses),
            every_ms,
            next_ms: u64::from(every_ms),
        }
    }

    /// The check interval in force (the last `heartbeat` [`CheckGrid::plan`] was given).
    pub fn every(&self) -> Duration {
        Duration::from_millis(u64::from(self.every_ms))
    }

    /// Stores the interval and the next check, rounding the check up to a whole
    /// millisecond (never earlier than the grid has it).
    fn store(&mut self, every: Duration, next: Duration) {
        self.every_ms = interval_ms(every);
        let ceil = next.as_millis() + u128::from(!next.subsec_nanos().is_multiple_of(1_000_000));
        self.next_ms = u64::try_from(ceil).unwrap_or(u64::MAX);
    }

    /// One step at `now`, after any event: `deadline` is the wakeup the previous step
    /// planned (reached or not), `last_read` the last inbound byte, `heartbeat` the
    /// interval in force, `wake_each_check` whether the connection holds something the next
    /// check releases (then the driver wakes for it even if it is sure to be alive).
    pub fn plan(
        &mut self,
        now: Duration,
        deadline: Duration,
        last_read: Duration,
        heartbeat: Duration,
        wake_each_check: bool,
    ) -> CheckPlan {
        let heartbeat = Duration::from_millis(u64::from(interval_ms(heartbeat)));
        let mut every = self.every();
        let mut next = Duration::from_millis(self.next_ms);
        if heartbeat != every {
            // A handshake replaces the 10 s pre-handshake interval: don't wait out the old one.
            every = heartbeat;
            next = next.min(now + heartbeat);
        }
        let mut checked = false;
        if now >= deadline {
            if deadline > next {
                // The checks before this one were slept through: each found it alive.
                self.idle.skipped_alive();
            }
            let (now_ms, read_ms) = (millis(now), millis(last_read));
            if let IdleVerdict::TimedOut(misses) = self.idle.check(now_ms, read_ms, heartbeat) {
                self.store(every, next);
                return CheckPlan::TimedOut(misses);
            }
            checked = true;
            next = now + heartbeat;
        } else if now >= next {
            // Checks slept through, seen on the way by another event: each found it alive.
            self.idle.skipped_alive();
            checked = true;
            let behind = (now - next).as_nanos() / heartbeat.as_nanos().max(1);
            next += heartbeat.saturating_mul(u32::try_from(behind + 1).unwrap_or(u32::MAX));
        }
        self.store(every, next);
        let next = Duration::from_millis(self.next_ms);
        let until = if wake_each_check {
            next
        } else {
            let gap = next.saturating_sub(last_read);
            next + heartbeat.saturating_mul(IdleCheck::alive_checks_ahead(gap, heartbeat))
        };
        CheckPlan::Wait { until, checked }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A check interval in whole milliseconds, as the wire carries it (at most `u32::MAX`).
pub(super) fn interval_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the lazy driver of `server/connection.rs` with [`CheckGrid`]: it plans after
    /// every read and wakes otherwise only when its planned deadline comes. Returns when it
    /// closed and how many times the timer woke it.
    fn lazy_closed_at(heartbeat: Duration, reads: &[i64], until_ms: i64) -> (Option<i64>, u32) {
        let ms = |t: i64| Duration::from_millis(t.unsigned_abs());
        let mut grid = CheckGrid::new(2, heartbeat);
        let mut deadline = heartbeat;
        let mut last_read = 0i64;
        let mut reads = reads.iter().copied().peekable();
        let mut woke = 0;
        loop {
            let timer_at = i64::try_from(deadline.as_millis()).expect("small");
            // The next event: a read, or the timer if it comes first (a read at the same
            // instant is taken first, as the driver polls input before the timer).
            let now = match reads.peek() {
                Some(&r) if r <= timer_at => {
                    reads.next();
                    last_read = r;
                    r
                }
                _ => {
                    woke += 1;
                    timer_at
                }
            };
            if now > until_ms {
                return (None, woke);
            }
            match grid.plan(ms(now), deadline, ms(last_read), heartbeat, false) {
                CheckPlan::TimedOut(_) => return (Some(now), woke),
                CheckPlan::Wait { until, .. } => deadline = until,
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

    /// The grid keeps whole milliseconds: a check planned between two is rounded up, so
    /// it never comes before the grid's time; the interval in force is kept.
    #[test]
    fn sub_millisecond_times_round_up_never_early() {
        let hb = Duration::from_secs(1);
        let mut grid = CheckGrid::new(2, hb);
        let now = Duration::from_micros(1_000_400);
        let plan = grid.plan(now, hb, Duration::from_millis(1_000), hb, true);
        assert_eq!(
            plan,
            CheckPlan::Wait {
                until: Duration::from_millis(2_001),
                checked: true
            }
        );
        assert_eq!(grid.every(), hb);
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
