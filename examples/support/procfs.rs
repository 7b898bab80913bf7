//! Reading a measured process from `/proc`, shared by `bench` and `echo_floor` (included
//! with `#[path]`, so each example compiles only this, not `support`'s logging and config).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// Microseconds since the epoch: timestamps that several processes compare.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The server process's CPU (utime + stime of all its threads) and RSS.
pub struct Proc {
    /// The process id.
    pub pid: u32,
    tick: f64,
}

impl Proc {
    /// Reads process `pid`.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            tick: clock_ticks(),
        }
    }

    /// utime + stime of all its threads.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = s.rsplit_once(')').context("odd /proc stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / self.tick))
    }

    /// Context switches of each of the server's threads, by thread id (voluntary: the
    /// thread parked or waited; involuntary: it was preempted). Counted by the kernel, so
    /// unlike CPU time they barely move with the load other processes put on the machine:
    /// they show the wakeups an operation costs.
    pub fn switches(&self) -> anyhow::Result<HashMap<u64, u64>> {
        let mut by_thread = HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let task = task?;
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that ended meanwhile has no status left to read.
            let Ok(s) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let n = s
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
            by_thread.insert(tid, n);
        }
        Ok(by_thread)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .context("no VmRSS")
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}
