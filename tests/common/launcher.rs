//! The `launcher` example as a child process on free loopback ports, killed on drop so a
//! failing test leaves no process behind. Used by the tests of what only the binary does:
//! signals, the console's `shutdown`, the OpenTelemetry exporter.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a launcher gets to start listening or to exit after a signal.
pub const LAUNCHER_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A running launcher.
pub struct Launcher {
    child: Child,
    /// Its client (connection server) port.
    pub port: u16,
    /// Its gateway port.
    pub gateway: u16,
    _dir: TempDir,
}

impl Launcher {
    /// Starts the launcher with `extra` config lines and `args` on free loopback ports and
    /// waits until its client port accepts connections.
    pub fn start(name: &str, extra: &str, args: &[&str]) -> Self {
        let dir = TempDir::new(name);
        let (port, gateway) = (super::free_port(), super::free_port());
        let config = dir.0.join("mpush.conf");
        let extra = format!("mp.net.admin-server-port = 0\n{extra}");
        std::fs::write(&config, super::launcher_conf(&extra)).unwrap();
        let child = Command::new(super::launcher_binary())
            .arg("--config")
            .arg(&config)
            .args(["--port", &port.to_string()])
            .args(["--gateway-port", &gateway.to_string()])
            .args(args)
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
            gateway,
            _dir: dir,
        };
        launcher.wait_listening();
        launcher
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + LAUNCHER_WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("launcher exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "launcher not listening on {} within {LAUNCHER_WAIT:?}",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` (e.g. "TERM") with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LAUNCHER_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "launcher still running {LAUNCHER_WAIT:?} after the signal"
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
            "mpush-launcher-{name}-{}-{}",
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
