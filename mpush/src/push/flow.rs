//! Flow control (spec §9.6): at most `limit` sends per window of `duration`, at most `max`
//! in total (0 = unlimited).
//!
//! MPush counts in fixed windows and delays the task to the next window when one is full;
//! this reproduces that rather than a smoothed rate (e.g. governor's GCRA), so operators'
//! existing `limit`/`duration` settings mean the same thing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::FlowControlConfig;

/// A fixed-window limiter with a total cap.
#[derive(Debug)]
pub(crate) struct FlowControl {
    limit: u64,
    max: u64,
    duration: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u64,
    total: u64,
}

impl FlowControl {
    /// A limiter from config.
    pub(crate) fn new(cfg: FlowControlConfig) -> Self {
        Self::with(u64::from(cfg.limit.max(1)), cfg.max, cfg.duration)
    }

    /// A limiter with explicit values (`max` 0 = unlimited).
    pub(crate) fn with(limit: u64, max: u64, duration: Duration) -> Self {
        Self {
            limit: limit.max(1),
            max,
            duration: duration.max(Duration::from_millis(1)),
            state: Mutex::new(Window {
                start: Instant::now(),
                count: 0,
                total: 0,
            }),
        }
    }

    /// Takes one send: `Ok(())` to go now, `Err(Some(wait))` to retry after `wait`, or
    /// `Err(None)` when the total cap is reached.
    pub(crate) fn try_acquire(&self) -> Result<(), Option<Duration>> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.max > 0 && w.total >= self.max {
            return Err(None);
        }
        let now = Instant::now();
        let elapsed = now.duration_since(w.start);
        if elapsed >= self.duration {
            w.start = now;
            w.count = 0;
        }
        if w.count >= self.limit {
            return Err(Some(
                self.duration.saturating_sub(now.duration_since(w.start)),
            ));
        }
        w.count += 1;
        w.total += 1;
        Ok(())
    }

    /// Waits for a send slot; `false` when the total cap is reached. A caller must refuse
    /// the send on `false`: sending anyway would leave it unlimited from then on.
    #[must_use = "false means the total cap is reached and the send must not happen"]
    pub(crate) async fn acquire(&self) -> bool {
        loop {
            match self.try_acquire() {
                Ok(()) => return true,
                Err(None) => return false,
                Err(Some(wait)) => {
                    crate::metrics::incr(&crate::metrics::FLOW_WAITS);
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await
                }
            }
        }
    }

    /// Sends taken so far.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Changes the per-window limit (Redis-driven broadcast QPS).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn windows_and_cap() {
        let f = FlowControl::with(3, 7, Duration::from_secs(1));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(f.try_acquire().is_ok());
        }
        assert!(matches!(f.try_acquire(), Err(Some(_))));
        for _ in 0..4 {
            assert!(f.acquire().await);
        }
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert!(!f.acquire().await, "cap of 7 reached");
        assert_eq!(f.total(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_cap_stays_refused_across_windows() {
        let f = FlowControl::with(2, 3, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(f.acquire().await);
        }
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(matches!(f.try_acquire(), Err(None)));
            assert!(!f.acquire().await);
        }
        assert_eq!(f.total(), 3);
    }
}
