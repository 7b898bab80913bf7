//! The demo page of the WebSocket port (`/index.html`, spec §1.9) in a real browser: headless
//! Chromium opens it with `?user=<id>&echo=1`, the page handshakes and binds, a push sent
//! through the gateway with `PushSender` is shown on the page, and the page sends the text it
//! displayed back as an upstream push, which the server's push handler sees.
//!
//! Needs Debian's `chromium` (`scripts/test-all.sh` installs it): ignored by plain
//! `cargo test`, run by `scripts/test-all.sh` (`--include-ignored`), and failing when the
//! browser is missing. `MPUSH_TEST_CHROMIUM` overrides the binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use mpush::AckModel;
use mpush::MPushServer;
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::spi::{PushHandler, UpstreamPush};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryServiceRegistry};
use tokio::sync::mpsc;

/// Upper bound for the browser to start, load the page and bind (slow on a loaded machine).
const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// Forwards upstream pushes to the test.
struct Echoes(mpsc::UnboundedSender<UpstreamPush>);

#[async_trait]
impl PushHandler for Echoes {
    async fn on_push(&self, push: UpstreamPush) {
        let _ = self.0.send(push);
    }
}

/// The browser binary: `MPUSH_TEST_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("MPUSH_TEST_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium not found (install Debian's `chromium` package, or run \
                 scripts/test-all.sh, which does; CI={:?})",
                std::env::var("CI").unwrap_or_default()
            )
        })
}

/// A headless browser in its own process group with its own profile directory; dropping it
/// kills the whole group (renderers included) and removes the directory.
struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    fn open(url: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("mpush-demo-page-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        Self { child, dir }
    }

    /// Panics (with the browser's log) if it exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("chromium exited early ({status}):\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read(self.dir.join("chromium.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chromium log (tail):\n{}", self.log());
        }
        // The group id is the browser's pid (process_group(0)): this ends only what it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test-all.sh"]
async fn a_push_through_the_gateway_appears_on_the_demo_page_in_chromium() {
    let hub = MemoryHub::new();
    let (tx, mut echoes) = mpsc::unbounded_channel();
    let mut config = test_config();
    config.net.ws_server_port = free_port();
    config.net.ws_path = "/push-ws".into();
    let builder = MPushServer::builder()
        .config(config)
        .push_handler(Arc::new(Echoes(tx)));
    let (server, _) = start_with(&hub, builder).await;
    let ws = server.ws_addr().unwrap();
    let sender = PushSender::builder()
        .config(test_config())
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .discovery(Arc::new(MemoryServiceRegistry::new(hub.clone())))
        .start()
        .await
        .unwrap();

    let user = format!("browser-{}", std::process::id());
    let mut browser = Browser::open(&format!(
        "http://127.0.0.1:{}/index.html?user={user}&echo=1",
        ws.port()
    ));

    // The page loaded, connected on ws-path, handshook and bound the user from the URL.
    let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
    let session = loop {
        if let Some(s) = server.local_sessions(&user).into_iter().next() {
            break s;
        }
        browser.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not bind {user} within {BROWSER_WAIT:?}:\n{}",
            browser.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(session.os_name.as_deref(), Some("web"));
    assert_eq!(session.client_version.as_deref(), Some("demo-1.0"));

    // AUTO_ACK: SUCCESS only once the page acknowledged it.
    let content = format!("héllo from the gateway <{}>", std::process::id());
    let result = sender
        .send(
            PushContext::to_user(&user, content.clone().into_bytes())
                .ack(AckModel::AutoAck)
                .timeout(Duration::from_secs(20)),
        )
        .await;
    assert_eq!(
        result.iter().map(|r| r.code).collect::<Vec<_>>(),
        [ResultCode::Success],
        "{result:?}"
    );

    // The text the page put on screen for that push, sent back by the page.
    let echo = tokio::time::timeout(BROWSER_WAIT, echoes.recv())
        .await
        .expect("the page echoed nothing")
        .unwrap();
    assert_eq!(
        String::from_utf8(echo.content.to_vec()).unwrap(),
        format!("push: {content}")
    );
    assert_eq!(echo.user_id.as_deref(), Some(user.as_str()));
    assert_eq!(echo.conn_id, session.conn_id);

    drop(browser);
    // The browser is gone: its connection closes and the user goes offline.
    wait_not_local(&server, &user).await;
    server.shutdown().await;
}
