//! The connection shared by the cache and the MQ: single server or cluster, with
//! bounded calls and Redis errors mapped to [`SpiError`].

use std::future::Future;
use std::time::Duration;

use mpush::spi::{SpiError, SpiResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo,
    ProtocolVersion, PushInfo, RedisConnectionInfo, RedisError, ServerErrorKind,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::BACKEND;
use crate::settings::{RedisNode, RedisSettings, Topology};

/// Reconnect attempts per reconnect round of the single-node [`ConnectionManager`]. Kept
/// small so a dead server fails calls quickly; the next call (or the MQ recovery loop)
/// starts a new round, so giving up a round never means giving up for good.
const RECONNECT_RETRIES: usize = 3;
/// Longest pause between two reconnect attempts of one round.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Idle time before TCP keepalive probes start: an idle pub/sub connection to a vanished
/// host (no RST) is otherwise only noticed when the OS gives up, which can take hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Pause between two unanswered keepalive probes, and how many are sent before the socket
/// is given up: a dead idle connection is closed ≈ 45 s after its last traffic, not after
/// the OS default of 30 s + 9 × 75 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the kernel closes the socket
/// (`TCP_USER_TIMEOUT`). The library takes a call's timeout as no reason to reconnect
/// (only a socket error is), so without this a connection to a host that vanished without a
/// reset (power loss, a partition, a failover to another address) failed every call for
/// the ≈ 15 min of the kernel's retransmissions, and the MQ's subscriptions stayed on the
/// dead socket, dropping messages. Once the socket is closed, the connection manager
/// reconnects and the MQ resubscribes. Far above any round trip: the peer's kernel
/// acknowledges data even while Redis itself is busy.
#[cfg(target_os = "linux")]
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to Redis: cheap to clone (both variants are handles on one multiplexed
/// connection per node) and reconnecting by itself.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, through an auto-reconnecting [`ConnectionManager`].
    Single(ConnectionManager),
    /// A Redis Cluster; the library routes by key slot and reconnects per node.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Single(_) => f.write_str("Conn::Single"),
            Conn::Cluster(_) => f.write_str("Conn::Cluster"),
        }
    }
}

/// Bounds `fut` by `limit`, reporting expiry as [`SpiError::Unavailable`].
pub(crate) async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = SpiResult<T>>,
) -> SpiResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(SpiError::unavailable(
            BACKEND,
            format!("{what}: no answer within {limit:?}"),
        )),
    }
}

impl Conn {
    /// Connects per `settings`. With `push`, the connection speaks RESP3 and forwards
    /// pub/sub pushes (and disconnect notices) there; the single-node manager then also
    /// re-subscribes by itself after a reconnect. Without, it speaks RESP2, which every
    /// Redis version that Java MPush runs on understands.
    pub(crate) async fn connect(
        settings: &RedisSettings,
        push: Option<UnboundedSender<PushInfo>>,
    ) -> SpiResult<Self> {
        settings.validate()?;
        let options = &settings.options;
        let protocol = if push.is_some() {
            ProtocolVersion::RESP3
        } else {
            ProtocolVersion::RESP2
        };
        let nodes = settings
            .nodes
            .iter()
            .map(|n| connection_info(settings, n, protocol))
            .collect::<SpiResult<Vec<_>>>()?;
        let what = format!("connecting to {}", describe(settings));
        match settings.topology {
            Topology::Single => {
                let Some(info) = nodes.into_iter().next() else {
                    return Err(SpiError::unavailable(BACKEND, "no redis node configured"));
                };
                let client = redis::Client::open(info).map_err(|e| map_err(&what, e))?;
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.response_timeout))
                    .set_number_of_retries(RECONNECT_RETRIES)
                    .set_max_delay(RECONNECT_MAX_DELAY);
                if let Some(tx) = push {
                    config = config.set_push_sender(tx).set_automatic_resubscription();
                }
                let connect = async {
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(|e| map_err(&what, e))
                };
                bounded(options.operation_timeout, &what, connect)
                    .await
                    .map(Conn::Single)
            }
            Topology::Cluster => {
                let mut builder = ClusterClientBuilder::new(nodes)
                    .use_protocol(protocol)
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.response_timeout)
                    .overall_response_timeout(Some(options.operation_timeout))
                    .tcp_settings(tcp_settings());
                if let Some(tx) = push {
                    builder = builder.push_sender(tx);
                }
                let client = builder.build().map_err(|e| map_err(&what, e))?;
                let connect = async {
                    client
                        .get_async_connection()
                        .await
                        .map_err(|e| map_err(&what, e))
                };
                bounded(options.operation_timeout, &what, connect)
                    .await
                    .map(Conn::Cluster)
            }
        }
    }

    /// Runs `op` on a clone of the connection, bounded by `limit`.
    ///
    /// A call that finds the connection refused is tried once more: after an outage longer
    /// than one reconnect round, the first call only collects that round's failure (and
    /// starts a new round), although Redis may be back. Refused means nothing was sent, so
    /// the retry cannot apply a command twice.
    async fn call<T, F, Fut>(&self, what: &str, limit: Duration, op: F) -> SpiResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let run = async {
            match op(self.clone()).await {
                Err(e) if e.is_connection_refusal() => op(self.clone()).await,
                result => result,
            }
            .map_err(|e| map_err(what, e))
        };
        bounded(limit, what, run).await
    }

    /// Runs `cmd`, bounded by `limit`, converting the reply to `T`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        limit: Duration,
        what: &str,
    ) -> SpiResult<T> {
        // Clones are handles on the same multiplexed connection; `query_async` needs `&mut`.
        self.call(what, limit, |conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// `SUBSCRIBE channel`, returning once Redis confirmed it.
    pub(crate) async fn subscribe(&self, channel: &str, limit: Duration) -> SpiResult<()> {
        self.pubsub(true, channel, limit).await
    }

    /// `UNSUBSCRIBE channel`, returning once Redis confirmed it.
    pub(crate) async fn unsubscribe(&self, channel: &str, limit: Duration) -> SpiResult<()> {
        self.pubsub(false, channel, limit).await
    }

    /// `SUBSCRIBE` (`on`) or `UNSUBSCRIBE` `channel`.
    async fn pubsub(&self, on: bool, channel: &str, limit: Duration) -> SpiResult<()> {
        let what = format!("{} {channel}", if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" });
        self.call(&what, limit, |conn| async move {
            match (conn, on) {
                (Conn::Single(mut c), true) => c.subscribe(channel).await,
                (Conn::Single(mut c), false) => c.unsubscribe(channel).await,
                (Conn::Cluster(mut c), true) => c.subscribe(channel).await,
                (Conn::Cluster(mut c), false) => c.unsubscribe(channel).await,
            }
        })
        .await
    }
}

fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
}

fn connection_info(
    settings: &RedisSettings,
    node: &RedisNode,
    protocol: ProtocolVersion,
) -> SpiResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_protocol(protocol);
    if let Some(password) = settings.password_for(node) {
        redis = redis.set_password(password);
    }
    let info = ConnectionAddr::Tcp(node.host.clone(), node.port)
        .into_connection_info()
        .map_err(|e| map_err("redis node address", e))?;
    Ok(info
        .set_redis_settings(redis)
        .set_tcp_settings(tcp_settings()))
}

/// "single 127.0.0.1:6379" / "cluster a:1,b:2", for messages (never includes passwords).
pub(crate) fn describe(settings: &RedisSettings) -> String {
    let nodes: Vec<String> = settings.nodes.iter().map(ToString::to_string).collect();
    let kind = match settings.topology {
        Topology::Single => "single",
        Topology::Cluster => "cluster",
    };
    format!("redis {kind} {}", nodes.join(","))
}

/// Sorts a Redis error into the SPI's three kinds: cannot reach / configured wrong /
/// answered but unusable (e.g. `WRONGTYPE`).
/// The Redis error is kept as the source of `Unavailable` and `Backend`; `Config` has no
/// source field, so there it is part of the message.
pub(crate) fn map_err(what: &str, e: RedisError) -> SpiError {
    let config = |e: &RedisError| SpiError::Config {
        backend: BACKEND,
        message: format!("{what}: {e}"),
    };
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => config(&e),
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => SpiError::unavailable_from(BACKEND, what, e),
        // NOAUTH / WRONGPASS come back as plain server errors.
        _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => config(&e),
        _ if e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() => {
            SpiError::unavailable_from(BACKEND, what, e)
        }
        _ => SpiError::backend_from(BACKEND, what, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead peer that sends no reset must end the socket within seconds (see
    /// [`USER_TIMEOUT`]); the library reconnects only on a socket error.
    #[cfg(target_os = "linux")]
    #[test]
    fn sockets_give_up_a_silent_peer_within_seconds() {
        let s = tcp_settings();
        assert!(s.nodelay());
        assert_eq!(s.user_timeout(), Some(USER_TIMEOUT));
        assert!(s.keepalive().is_some());
        assert!(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_RETRIES <= Duration::from_secs(60));
    }
}
