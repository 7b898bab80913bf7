//! The telnet admin console (spec §13) end to end: greeting, every command's reply against a
//! server with bound clients, the line limit, the connection limit, a flooding client, and
//! `shutdown` (in process, and as the launcher process that exits on it).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mpush::server::{CONSOLE_MAX_CONNECTIONS as MAX_CONNECTIONS, CONSOLE_MAX_LINE as MAX_LINE};
use mpush_spi_memory::MemoryHub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn console_server(hub: &Arc<MemoryHub>) -> (mpush::RunningServer, SocketAddr, SocketAddr) {
    let cfg = config_with(|c| c.net.admin_server_port = free_port());
    let (server, addr) = start_server(hub, cfg).await;
    let admin = server.admin_addr().expect("console enabled");
    assert!(admin.ip().is_loopback(), "console bound to {admin}");
    (server, addr, admin)
}

/// A console session: reads replies as the blocks the server ends with CRLF CRLF.
struct Console {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Console {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// The next block (without its CRLF CRLF), or `None` at EOF.
    async fn block(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let block: Vec<u8> = self.buf.drain(..pos + 4).collect();
                    return Some(String::from_utf8(block[..pos].to_vec()).unwrap());
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("console reply within WAIT")
    }

    /// The two blocks of the greeting.
    async fn greeting(&mut self) -> (String, String) {
        let a = self.block().await.expect("greeting");
        let b = self.block().await.expect("greeting date");
        (a, b)
    }

    async fn ask(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.block()
            .await
            .unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    /// `true` once the server closed the connection (EOF or reset) with nothing more to say.
    async fn closed(&mut self) -> bool {
        self.block().await.is_none() && self.buf.is_empty()
    }
}

#[tokio::test]
async fn greeting_and_every_command() {
    let hub = MemoryHub::new();
    let (server, addr, admin) = console_server(&hub).await;
    let gateway = server.gateway_addr();
    let _a = bound_client(addr, "dev-a", "android", "user-a", None).await;
    let _b = bound_client(addr, "dev-b", "ios", "user-b", None).await;
    let _pc = bound_client(addr, "dev-c", "windows", "user-a", None).await;
    let _unbound = RawClient::handshaken(addr, "dev-d", "android").await;

    let mut c = Console::connect(admin).await;
    let (welcome, now) = c.greeting().await;
    let mut lines = welcome.lines();
    assert_eq!(lines.next(), Some("Welcome to MPush Console [127.0.0.1]!"));
    let since = lines.next().unwrap();
    assert!(
        since.starts_with("since ") && since.ends_with(" has running 0(h)"),
        "{since}"
    );
    assert!(now.starts_with("It is ") && now.ends_with(" now."), "{now}");

    // Counts: what the server itself reports.
    let conns = server.connection_count();
    assert_eq!(conns, 4);
    assert_eq!(c.ask("count conn").await, conns.to_string());
    // The online set is written after the bind's OK is flushed: wait for both users.
    let deadline = tokio::time::Instant::now() + WAIT;
    let online = loop {
        let n = server.online_user_count().await.unwrap();
        if n == 2 {
            break n;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} users online");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(c.ask("count online").await, online.to_string());
    assert_eq!(c.ask("count users").await, "[users] unsupported, try help.");
    assert_eq!(c.ask("count").await, "[] unsupported, try help.");

    // Routes: both client types of user-a, as MPush's RemoteRouter beans.
    let routes: serde_json::Value = serde_json::from_str(&c.ask("route user-a").await).unwrap();
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), 2, "{routes:?}");
    let sessions = server.local_sessions("user-a");
    for r in routes {
        assert_eq!(r["routeType"], "REMOTE");
        assert_eq!(r["online"], true);
        assert_eq!(r["offline"], false);
        let v = &r["routeValue"];
        assert_eq!(v["host"], gateway.ip().to_string());
        assert_eq!(v["port"], gateway.port());
        assert_eq!(v["hostAndPort"], gateway.to_string());
        let (device, conn) = (v["deviceId"].as_str(), v["connId"].as_str());
        assert!(
            sessions
                .iter()
                .any(|s| s.device_id.as_deref() == device && Some(s.conn_id.as_str()) == conn),
            "{v} is not one of {sessions:?}"
        );
    }
    assert_eq!(c.ask("route nobody").await, "user [nobody] offline now.");
    assert_eq!(c.ask("route").await, "please input userId");
    // An argument only with exactly two tokens.
    assert_eq!(c.ask("route user-a extra").await, "please input userId");

    // Config.
    assert_eq!(c.ask("conf mp.net.public-ip").await, "127.0.0.1");
    assert_eq!(
        c.ask("conf mp.net.admin-server-port").await,
        admin.port().to_string()
    );
    assert_eq!(
        c.ask("conf mp.no.such").await,
        "key [mp.no.such] not find in config"
    );
    let whole: serde_json::Value = serde_json::from_str(&c.ask("conf").await).unwrap();
    assert_eq!(whole["mp"]["net"]["local-ip"], "127.0.0.1");
    assert_eq!(whole["mp"]["security"]["private-key"], "******");

    // Profile, help, unknown options.
    assert_eq!(c.ask("profile 1").await, "Profiler enabled");
    assert_eq!(c.ask("profile 0").await, "Profiler disabled");
    assert_eq!(c.ask("profile").await, "Profiler disabled");
    let help = c.ask("help").await;
    for option in [
        "help", "quit", "shutdown", "count", "route", "conf", "profile",
    ] {
        assert!(
            help.lines().any(|l| l.starts_with(option)),
            "{option} in {help}"
        );
    }
    assert_eq!(c.ask("").await, help, "an empty line means help");
    assert_eq!(c.ask("HELP").await, help, "options are case-insensitive");
    for unknown in ["restart", "zk cs", "push u hi", "monitor", "bogus"] {
        assert_eq!(c.ask(unknown).await, "unsupported option", "{unknown}");
    }
    // LF alone ends a line too.
    c.stream.write_all(b"count conn\n").await.unwrap();
    assert_eq!(c.block().await.unwrap(), conns.to_string());

    assert_eq!(c.ask("quit").await, "have a good day!");
    assert!(c.closed().await, "quit closes the connection");
    assert!(server.is_running(), "quit does not stop the server");
    server.shutdown().await;
}

#[tokio::test]
async fn an_over_long_line_is_refused_and_closed() {
    let hub = MemoryHub::new();
    let (server, _, admin) = console_server(&hub).await;

    // The longest line is served.
    let mut c = Console::connect(admin).await;
    c.greeting().await;
    let longest = "x".repeat(MAX_LINE);
    assert_eq!(c.ask(&longest).await, "unsupported option");

    // One byte more, with no line break in sight: refused without waiting for the rest.
    let mut c = Console::connect(admin).await;
    c.greeting().await;
    c.stream
        .write_all("y".repeat(MAX_LINE + 2).as_bytes())
        .await
        .unwrap();
    let reply = c.block().await.unwrap();
    assert!(reply.starts_with("line too long"), "{reply}");
    assert!(reply.contains(&MAX_LINE.to_string()), "{reply}");
    assert!(c.closed().await);

    // The console still serves others.
    let mut c = Console::connect(admin).await;
    c.greeting().await;
    assert_eq!(c.ask("count conn").await, "0");
    server.shutdown().await;
}

#[tokio::test]
async fn console_connections_are_bounded_and_a_flooder_costs_only_its_own() {
    let hub = MemoryHub::new();
    let (server, _, admin) = console_server(&hub).await;

    // A client that writes requests and never reads its replies.
    let mut flooder = TcpStream::connect(admin).await.unwrap();
    let flood = tokio::spawn(async move {
        let lines = "conf\r\n".repeat(1000);
        // Ends when the server closes it (its replies stall) or the test aborts it.
        while flooder.write_all(lines.as_bytes()).await.is_ok() {}
    });

    let mut open = Vec::new();
    for _ in 1..MAX_CONNECTIONS {
        let mut c = Console::connect(admin).await;
        c.greeting().await;
        open.push(c);
    }
    // The flooder holds the last slot: one more connection is closed at once.
    let mut refused = Console::connect(admin).await;
    assert!(
        refused.closed().await,
        "connection over the limit is closed"
    );
    // Every admitted client is answered while the flooder floods.
    for c in &mut open {
        assert_eq!(c.ask("count conn").await, "0");
    }
    // A slot freed is a slot available again (the server notices the close on its own time).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Console::connect(admin).await;
        if let Some(first) = c.block().await {
            assert!(first.starts_with("Welcome to MPush Console"), "{first}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no console slot freed after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_asks_the_host_to_stop_the_server() {
    let hub = MemoryHub::new();
    let (server, addr, admin) = console_server(&hub).await;
    let _client = bound_client(addr, "dev-s", "android", "user-s", None).await;

    let mut c = Console::connect(admin).await;
    c.greeting().await;
    assert_eq!(c.ask("shutdown").await, "try close connect server...");
    assert!(c.closed().await);
    // What the launcher waits on besides SIGTERM, then the same graceful stop.
    tokio::time::timeout(WAIT, server.shutdown_requested())
        .await
        .expect("shutdown request observed");
    // `shutdown(self)` consumes the handle: a stopped server has no state left to ask.
    server.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "client port closed"
    );
    assert!(TcpStream::connect(admin).await.is_err(), "console closed");
}

#[tokio::test]
async fn console_shutdown_stops_the_launcher_process() {
    let dir = std::env::temp_dir().join(format!("mpush-console-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, gateway, admin) = (free_port(), free_port(), free_port());
    let conf = dir.join("mpush.conf");
    let extra = format!(
        "mp.net.connect-server-port = {port}\n\
         mp.net.gateway-server-port = {gateway}\n\
         mp.net.admin-server-port = {admin}\n\
         mp.spi.service-registry = memory"
    );
    std::fs::write(&conf, launcher_conf(&extra)).unwrap();
    let mut child = tokio::process::Command::from({
        let mut c = Command::new(common::launcher_binary());
        c.arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    })
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut c = loop {
        if let Ok(s) = TcpStream::connect(admin).await {
            break Console {
                stream: s,
                buf: Vec::new(),
            };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "launcher console not listening after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.greeting().await;
    assert_eq!(c.ask("shutdown").await, "try close connect server...");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("launcher exits after console shutdown")
        .unwrap();
    assert!(status.success(), "launcher exit status {status}");
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs Redis and ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_redis_and_zookeeper() {
    use mpush_spi_redis as _;
    use mpush_spi_zk as _;
    let run: u32 = rand::random();
    let mut cfg = test_config();
    on_redis_and_zk(
        &mut cfg,
        &routing::required_env("MPUSH_TEST_REDIS"),
        &routing::required_env("MPUSH_TEST_ZK"),
        &format!("mpush-console-{run}"),
    );
    // Its own online set: mp:oul:<ip> is shared by every test using that Redis.
    let ip = format!("127.{}.{}.9", (run >> 8) & 0xff, run & 0xff);
    cfg.net.connect_server_bind_ip = ip.clone();
    cfg.net.public_ip = ip;
    cfg.net.admin_server_port = free_port();
    let server = mpush::MPushServer::builder()
        .config(cfg)
        .start()
        .await
        .unwrap();
    let (addr, admin) = (server.connect_addr(), server.admin_addr().unwrap());
    let user = format!("console-user-{run}");
    let _client = bound_client(addr, &format!("cdev-{run}"), "android", &user, None).await;

    let mut c = Console::connect(admin).await;
    c.greeting().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = c.ask("count online").await;
        if n == "1" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "count online {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.ask("count conn").await, "1");
    let routes: serde_json::Value =
        serde_json::from_str(&c.ask(&format!("route {user}")).await).unwrap();
    let gateway = server.gateway_addr();
    assert_eq!(routes[0]["routeValue"]["hostAndPort"], gateway.to_string());
    assert_eq!(routes[0]["online"], true);
    assert_eq!(
        c.ask(&format!("route nobody-{run}")).await,
        format!("user [nobody-{run}] offline now.")
    );
    server.shutdown().await;
}
