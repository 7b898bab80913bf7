//! Helpers shared by the Redis integration tests: test server addresses from the
//! environment, unique key prefixes, and a private redis-server that a test can kill.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mpush_spi_redis::{RedisNode, RedisSettings, parse_nodes};

/// The value of the environment variable `name`. Panics when it is unset: the tests that need
/// a server are `#[ignore]`d (plain `cargo test` lists them as ignored) and
/// `scripts/test-all.sh` runs them with `--include-ignored`; once run, they must not pass
/// without their server.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("{name} is not set: run this test through scripts/test-all.sh"),
    }
}

/// `MPUSH_TEST_REDIS` as single-server settings (panics when unset).
pub fn single() -> RedisSettings {
    let addr = required_env("MPUSH_TEST_REDIS");
    RedisSettings::single(RedisNode::parse(&addr).unwrap())
}

/// `MPUSH_TEST_REDIS_CLUSTER` (comma-separated seeds) as cluster settings (panics when unset).
pub fn cluster() -> RedisSettings {
    let addrs = required_env("MPUSH_TEST_REDIS_CLUSTER");
    let seeds: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    RedisSettings::cluster(parse_nodes(&seeds).unwrap())
}

/// A key prefix unique to this run and `name`, so a shared Redis is safe to use.
pub fn prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mpush-rs-test:{name}:{}-{nanos}:", std::process::id())
}

pub use mpush::testkit::free_loopback_port as free_port;

/// A redis-server started by the test; killed on drop (also when the test panics).
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port; panics if it is not installed.
    pub fn start() -> Self {
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "redis-server is not installed: run this test through scripts/test-all.sh"
        );
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: clients see the connection drop) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings::single(RedisNode::new("127.0.0.1", self.port))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
