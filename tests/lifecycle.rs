//! The `launcher` example as a process: SIGTERM (what systemd and Kubernetes send) stops it
//! cleanly, and with the ZooKeeper registry it deregisters before exiting.
//!
//! The example binary is the one `cargo test` builds next to the test binaries
//! (`target/<profile>/examples/launcher`); `scripts/test-all.sh` builds it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use mpush::spi::{ServiceDiscovery, services};
use mpush_spi_zk::{ZkOptions, ZkServiceRegistry};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A running launcher; killed on drop so a failing test leaves no process behind.
struct Launcher {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Launcher {
    /// Starts the launcher with `extra` config lines on free loopback ports and waits until
    /// its client port accepts connections.
    fn start(name: &str, extra: &str) -> Self {
        let dir = TempDir::new(name);
        let (port, gateway) = (free_port(), free_port());
        let config = dir.0.join("mpush.conf");
        let extra = format!("mp.net.admin-server-port = 0\n{extra}");
        std::fs::write(&config, common::launcher_conf(&extra)).unwrap();
        let child = Command::new(common::launcher_binary())
            .arg("--config")
            .arg(&config)
            .args(["--port", &port.to_string()])
            .args(["--gateway-port", &gateway.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut launcher = Self {
            child,
            port,
            _dir: dir,
        };
        launcher.wait_listening();
        launcher
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("launcher exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "launcher not listening on {} within {WAIT:?}",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` (e.g. "TERM") with the `kill` command.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "launcher still running {WAIT:?} after the signal"
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mpush-lifecycle-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sigterm_and_sigint_stop_the_launcher_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut launcher =
            Launcher::start(&format!("sig{signal}"), "mp.spi.service-registry = memory");
        launcher.signal(signal);
        let status = launcher.wait_exit();
        assert!(status.success(), "SIG{signal}: exit status {status}");
        assert!(
            TcpStream::connect(("127.0.0.1", launcher.port)).is_err(),
            "port still open after SIG{signal}"
        );
    }
}

/// The connection servers registered under `namespace` (polled until `done` or [`WAIT`]).
async fn wait_registered(
    discovery: &Arc<ZkServiceRegistry>,
    what: &str,
    done: impl Fn(usize) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = discovery
            .lookup(services::CONNECT_SERVER)
            .await
            .map(|nodes| nodes.len())
            .unwrap_or(usize::MAX);
        if done(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {n} nodes after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_from_zookeeper() {
    let zk = match std::env::var("MPUSH_TEST_ZK") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("MPUSH_TEST_ZK is not set: run this test through scripts/test-all.sh"),
    };
    let namespace = format!("mpush-lifecycle-{}", rand::random::<u32>());
    // A long session: the node can only vanish within WAIT because the launcher removed it,
    // not because ZooKeeper expired a dead session.
    let mut launcher = Launcher::start(
        "zk",
        &format!(
            "mp.spi.service-registry = zk\n\
             mp.zk.server-address = \"{zk}\"\n\
             mp.zk.namespace = \"{namespace}\"\n\
             mp.zk.sessionTimeoutMs = 60s"
        ),
    );
    let mut options = ZkOptions::new(zk.as_str());
    options.namespace = namespace.clone();
    let discovery = Arc::new(ZkServiceRegistry::connect(options).await.unwrap());
    wait_registered(&discovery, "registration", |n| n == 1).await;

    launcher.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = launcher.wait_exit();
        drop(launcher);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status}");
    wait_registered(&discovery, "deregistration", |n| n == 0).await;
}
