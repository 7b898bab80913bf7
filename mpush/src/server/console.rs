//! The telnet admin console (spec §13) on `mp.net.admin-server-port`.
//!
//! Line-oriented text over TCP, as MPush's `AdminHandler`: a greeting, then one reply per
//! request line, each followed by CRLF CRLF. It can shut the server down, so it binds to
//! `mp.net.admin-server-host` (loopback by default), and every resource a console client can
//! make the server hold is bounded: the number of console connections, the line length
//! (8192 bytes, as the original's frame decoder), the time a reply may take to be read
//! (a client that floods lines without reading them is closed when a write stalls) and the
//! time a connection may stay silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::ServerContext;
use crate::config::MPushConfig;

/// Longest request line, without its line break (MPush: `DelimiterBasedFrameDecoder(8192)`).
pub const MAX_LINE: usize = 8192;
/// Console connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 16;
/// A console connection that sends no complete line for this long is closed.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A reply the client does not read within this time closes the connection.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Backend look-ups (`count online`, `route`) give up after this long.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

const EOL: &str = "\r\n";

/// MPush's help table (spec §13); several advertised options are not implemented there either.
const HELP: &str = "Option                               Description\r
------                               -----------\r
help                                 show help\r
quit                                 exit console mode\r
shutdown                             stop mpush server\r
restart                              restart mpush server\r
zk:<redis, cs ,gs>                   query zk node\r
count:<conn, online>                 count conn num or online user count\r
route:<uid>                          show user route info\r
push:<uid>, <msg>                    push test msg to client\r
conf:[key]                           show config info\r
monitor:[mxBean]                     show system monitor\r
profile:<1,0>                        enable/disable profile";

/// State shared by the console connections of one server.
struct Console {
    ctx: Arc<ServerContext>,
    /// Cancelled by `shutdown`: the host (the launcher) observes it and stops the server.
    shutdown_request: CancellationToken,
    started: SystemTime,
    started_at: Instant,
    profile: AtomicBool,
    slots: Arc<Semaphore>,
}

/// Accepts console connections until the server shuts down.
pub(crate) async fn accept(
    ctx: Arc<ServerContext>,
    listener: TcpListener,
    tasks: TaskTracker,
    shutdown_request: CancellationToken,
) {
    let console = Arc::new(Console {
        ctx: ctx.clone(),
        shutdown_request,
        started: SystemTime::now(),
        started_at: Instant::now(),
        profile: AtomicBool::new(false),
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    let io = ctx.hooks.executor.handle(crate::spi::ExecutorRole::Io);
    super::accept_loop(&ctx.shutdown, listener, "admin console", |stream, peer| {
        let Ok(slot) = console.slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "console connection refused: too many open");
            return;
        };
        let console = console.clone();
        io.spawn(tasks.track_future(async move {
            let shutdown = console.ctx.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = serve(&console, stream) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "console connection ended");
                    }
                }
            }
            drop(slot);
        }));
    })
    .await;
}

/// Why a console connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConsoleError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the client did not read a reply within {WRITE_TIMEOUT:?}")]
    WriteStalled,
    #[error("no request within {IDLE_TIMEOUT:?}")]
    Idle,
}

async fn write(stream: &mut TcpStream, text: &str) -> Result<(), ConsoleError> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(text.as_bytes()))
        .await
        .map_err(|_| ConsoleError::WriteStalled)??;
    Ok(())
}

/// What the connection does after a reply.
enum After {
    Continue,
    Close,
}

async fn serve(console: &Console, mut stream: TcpStream) -> Result<(), ConsoleError> {
    write(&mut stream, &greeting(console)).await?;
    // Holds at most one line plus the bytes of one read after it.
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                return too_long(&mut stream).await;
            }
            let line = String::from_utf8_lossy(&line);
            let (reply, after) = console.handle(&line).await;
            write(&mut stream, &format!("{reply}{EOL}{EOL}")).await?;
            if let After::Close = after {
                let _ = stream.shutdown().await;
                return Ok(());
            }
        }
        // No line break yet: a line longer than the limit (plus "\r") is refused now,
        // before more of it is buffered.
        if buf.len() > MAX_LINE + 1 {
            return too_long(&mut stream).await;
        }
        let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| ConsoleError::Idle)??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The original's decoder fails the channel on an over-long frame; we say why, then close,
/// because the rest of that line would otherwise be read as new commands.
async fn too_long(stream: &mut TcpStream) -> Result<(), ConsoleError> {
    write(
        stream,
        &format!("line too long: a request is at most {MAX_LINE} bytes, closing{EOL}{EOL}"),
    )
    .await?;
    let _ = stream.shutdown().await;
    Ok(())
}

fn greeting(console: &Console) -> String {
    let ip = crate::address::local_ip(&console.ctx.config.net);
    let hours = console.started_at.elapsed().as_secs() / 3600;
    let now = SystemTime::now();
    format!(
        "Welcome to MPush Console [{ip}]!{EOL}since {} has running {hours}(h){EOL}{EOL}It is {} now.{EOL}{EOL}",
        local_date_time(console.started),
        java_date(now),
    )
}

impl Console {
    /// One request line → the reply (without the trailing CRLF CRLF).
    async fn handle(&self, line: &str) -> (String, After) {
        let tokens: Vec<&str> = line.split(' ').collect();
        let option = tokens[0].to_lowercase();
        // As the original: an argument only when there are exactly two tokens.
        let arg = if tokens.len() == 2 {
            Some(tokens[1])
        } else {
            None
        };
        let reply = match option.as_str() {
            "" | "help" => HELP.to_string(),
            "quit" => return ("have a good day!".into(), After::Close),
            "shutdown" => {
                tracing::warn!("shutdown requested on the admin console");
                self.shutdown_request.cancel();
                return ("try close connect server...".into(), After::Close);
            }
            "count" => match arg {
                Some("conn") => self.ctx.connections.len().to_string(),
                Some("online") => match tokio::time::timeout(
                    BACKEND_TIMEOUT,
                    self.ctx.router.online.online_count(),
                )
                .await
                {
                    Ok(Ok(n)) => n.to_string(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => format!("error: no answer from the cache in {BACKEND_TIMEOUT:?}"),
                },
                other => format!("[{}] unsupported, try help.", other.unwrap_or("")),
            },
            "route" => match arg {
                None => "please input userId".into(),
                Some(user) => self.route(user).await,
            },
            "conf" => conf(&self.ctx.config, arg),
            "profile" => {
                let on = arg == Some("1");
                self.profile.store(on, Ordering::Relaxed);
                if on {
                    "Profiler enabled".into()
                } else {
                    "Profiler disabled".into()
                }
            }
            _ => "unsupported option".into(),
        };
        (reply, After::Continue)
    }

    async fn route(&self, user: &str) -> String {
        let routes =
            match tokio::time::timeout(BACKEND_TIMEOUT, self.ctx.router.remote.lookup_all(user))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return format!("error: {e}"),
                Err(_) => return format!("error: no answer from the cache in {BACKEND_TIMEOUT:?}"),
            };
        if routes.is_empty() {
            return format!("user [{user}] offline now.");
        }
        let mut routes: Vec<_> = routes.into_iter().collect();
        routes.sort_by_key(|(t, _)| *t);
        // The bean serialisation of MPush's RemoteRouter (spec §13).
        let beans: Vec<Value> = routes
            .into_iter()
            .map(|(client_type, loc)| {
                let online = loc.is_online();
                json!({
                    "routeType": "REMOTE",
                    "routeValue": {
                        "host": loc.host,
                        "port": loc.port,
                        "deviceId": loc.device_id,
                        "osName": loc.os_name,
                        "clientVersion": loc.client_version,
                        "connId": loc.conn_id,
                        "clientType": client_type.code(),
                        "hostAndPort": loc.host_and_port(),
                        "online": online,
                        "offline": !online,
                    },
                    "online": online,
                    "offline": !online,
                })
            })
            .collect();
        Value::Array(beans).to_string()
    }
}

/// `conf` / `conf <path>`: the configuration in force as JSON (valid HOCON). Secrets (the
/// RSA private key, the Redis password) are shown as `"******"`: the console is an operator
/// tool, not a way to read them off a server.
fn conf(config: &MPushConfig, path: Option<&str>) -> String {
    let tree = json!({ "mp": config_tree(config) });
    match path {
        None => serde_json::to_string_pretty(&tree).unwrap_or_default(),
        Some(path) => {
            let mut v = &tree;
            for key in path.split('.') {
                match v.get(key) {
                    Some(next) => v = next,
                    None => return format!("key [{path}] not find in config"),
                }
            }
            match v {
                Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            }
        }
    }
}

fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn secret(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "******" }
}

fn config_tree(c: &MPushConfig) -> Value {
    let (core, sec, net, zk, redis, push, spi) = (
        &c.core,
        &c.security,
        &c.net,
        &c.zk,
        &c.redis,
        &c.push,
        &c.spi,
    );
    let flow = |f: &crate::config::FlowControlConfig| json!({ "limit": f.limit, "max": f.max, "duration": duration(f.duration) });
    json!({
        "core": {
            "max-packet-size": core.max_packet_size,
            "compress-threshold": core.compress_threshold,
            "min-heartbeat": duration(core.min_heartbeat),
            "max-heartbeat": duration(core.max_heartbeat),
            "max-hb-timeout-times": core.max_hb_timeout_times,
            "session-expired-time": duration(core.session_expired_time),
        },
        "security": {
            "private-key": secret(&sec.private_key),
            "public-key": sec.public_key,
            "aes-key-length": sec.aes_key_length,
        },
        "net": {
            "local-ip": net.local_ip,
            "public-ip": net.public_ip,
            "connect-server-bind-ip": net.connect_server_bind_ip,
            "connect-server-register-ip": net.connect_server_register_ip,
            "connect-server-port": net.connect_server_port,
            "connect-server-register-attr": net.connect_server_register_attr,
            "connect-server-max-connections": net.connect_server_max_connections,
            "connect-server-ip-connect-rate": net.connect_server_ip_connect_rate,
            "connect-server-max-pending-handshakes": net.connect_server_max_pending_handshakes,
            "connect-server-park-idle": duration(net.connect_server_park_idle),
            "connect-server-park-poll": duration(net.connect_server_park_poll),
            "gateway-server-bind-ip": net.gateway_server_bind_ip,
            "gateway-server-register-ip": net.gateway_server_register_ip,
            "gateway-server-port": net.gateway_server_port,
            "gateway-server-net": net.gateway_server_net,
            "gateway-client-num": net.gateway_client_num,
            "gateway-client-port": net.gateway_client_port,
            "gateway-server-multicast": net.gateway_server_multicast,
            "gateway-client-multicast": net.gateway_client_multicast,
            "gateway-max-packet-size": net.gateway_max_packet_size,
            "gateway-max-in-flight": net.gateway_max_in_flight,
            "admin-server-host": net.admin_server_host,
            "admin-server-port": net.admin_server_port,
            "admin-http-host": net.admin_http_host,
            "admin-http-port": net.admin_http_port,
            "admin-http-token": secret(&net.admin_http_token),
            "alloc-server-port": net.alloc_server_port,
            "ws-server-port": net.ws_server_port,
            "ws-path": net.ws_path,
            "write-buffer-water-mark": {
                "connect-server-low": net.connect_server_low_water_mark,
                "connect-server-high": net.connect_server_high_water_mark,
                "gateway-server-low": net.gateway_server_low_water_mark,
                "gateway-server-high": net.gateway_server_high_water_mark,
            },
            "public-host-mapping": net.public_host_mapping,
        },
        "zk": {
            "server-address": zk.server_address,
            "namespace": zk.namespace,
            "digest": secret(&zk.digest),
            "sessionTimeoutMs": duration(zk.session_timeout),
            "connectionTimeoutMs": duration(zk.connection_timeout),
        },
        "redis": {
            "cluster-model": redis.cluster_model,
            "nodes": redis.nodes.iter().map(|n| redact_node(n)).collect::<Vec<_>>(),
            "password": secret(&redis.password),
        },
        "push": {
            "flow-control": {
                "global": flow(&push.global_flow_control),
                "broadcast": flow(&push.broadcast_flow_control),
            },
            "max-ack-timeout": duration(push.max_ack_timeout),
        },
        "spi": {
            "cache-manager": spi.cache_manager,
            "mq-client": spi.mq_client,
            "service-registry": spi.service_registry,
        },
    })
}

/// `ip:port:password` (MPush's node form) → `ip:port:******`.
fn redact_node(node: &str) -> String {
    let mut parts = node.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(_)) => format!("{h}:{p}:******"),
        _ => node.to_string(),
    }
}

/// (year, month 1-12, day, hour, minute, second, millis, weekday 0 = Sunday) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32, usize) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
        weekday,
    )
}

/// Java's `LocalDateTime.toString()` (in UTC): `2026-12-01T13:06:21.123`.
fn local_date_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}")
}

/// Java's `Date.toString()` (in UTC): `Tue Dec 01 13:06:21 UTC 2026`.
fn java_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _, wd) = civil(t);
    format!(
        "{} {} {d:02} {h:02}:{mi:02}:{s:02} UTC {y}",
        DAYS[wd],
        MONTHS[(mo - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_like_java() {
        // 2026-12-01T13:06:21.5Z was a Tuesday.
        let t = UNIX_EPOCH + Duration::from_millis(1_796_130_381_500);
        assert_eq!(local_date_time(t), "2026-12-01T13:06:21.500");
        assert_eq!(java_date(t), "Tue Dec 01 13:06:21 UTC 2026");
        assert_eq!(java_date(UNIX_EPOCH), "Thu Jan 01 00:00:00 UTC 1970");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(local_date_time(leap), "2000-02-29T00:00:00.000");
    }

    #[test]
    fn conf_paths_and_secrets() {
        let mut c = MPushConfig::default();
        c.redis.nodes = vec!["10.0.0.1:6379:pw".into()];
        assert_eq!(conf(&c, Some("mp.net.connect-server-port")), "3000");
        assert_eq!(conf(&c, Some("mp.net.ws-path")), "/");
        assert_eq!(
            conf(&c, Some("mp.net.nope")),
            "key [mp.net.nope] not find in config"
        );
        let all = conf(&c, None);
        assert!(all.contains("\"admin-server-port\": 3002"), "{all}");
        assert!(!all.contains(&c.security.private_key), "private key leaked");
        assert!(all.contains("10.0.0.1:6379:******"), "{all}");
        assert_eq!(redact_node("10.0.0.1:6379"), "10.0.0.1:6379");
    }
}
