//! Helpers shared by the Redis integration tests: test server addresses from the
//! environment, unique key prefixes, and a private redis-server that a test can kill.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mpush_spi_redis::{RedisNode, RedisSettings, parse_nodes};

/// `MPUSH_TEST_REDIS` as single-server settings, or `None` after printing why the test skips.
pub fn single() -> Option<RedisSettings> {
    let Ok(addr) = std::env::var("MPUSH_TEST_REDIS") else {
        println!("skipping: MPUSH_TEST_REDIS not set");
        return None;
    };
    Some(RedisSettings::single(RedisNode::parse(&addr).unwrap()))
}

/// `MPUSH_TEST_REDIS_CLUSTER` (comma-separated seeds) as cluster settings, or `None` after
/// printing why the test skips.
pub fn cluster() -> Option<RedisSettings> {
    let Ok(addrs) = std::env::var("MPUSH_TEST_REDIS_CLUSTER") else {
        println!("skipping: MPUSH_TEST_REDIS_CLUSTER not set");
        return None;
    };
    let seeds: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    Some(RedisSettings::cluster(parse_nodes(&seeds).unwrap()))
}

/// A key prefix unique to this run and `name`, so a shared Redis is safe to use.
pub fn prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mpush-rs-test:{name}:{}-{nanos}:", std::process::id())
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A redis-server started by the test; killed on drop (also when the test panics).
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port; `None` (after printing why) if it is not installed.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipping: redis-server is not installed");
            return None;
        }
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.restart();
        Some(server)
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
