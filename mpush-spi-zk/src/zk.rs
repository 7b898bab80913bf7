//! Thin helpers over `zookeeper-client`: connecting, bounded calls, error mapping and the
//! node reads/writes of spec §11.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use mpush::spi::{ServiceNode, SpiError, SpiResult};
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use crate::{BACKEND, ZkOptions};

/// Result of a raw ZooKeeper call.
pub(crate) type ZkResult<T> = Result<T, ZkError>;

/// A client and the generation it belongs to (bumped on every new session).
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) generation: u64,
    pub(crate) client: Client,
}

/// Awaits `fut` for at most `limit`; running out of time is [`ZkError::Timeout`].
///
/// The client queues requests while disconnected, so without a bound a dead ZooKeeper
/// would hang callers for a whole session timeout or longer.
pub(crate) async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = ZkResult<T>>,
) -> ZkResult<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ZkError::Timeout))
}

/// Maps a ZooKeeper error: connectivity problems are [`SpiError::Unavailable`] (retrying
/// later may help), everything else is [`SpiError::Backend`].
pub(crate) fn to_spi(what: impl Display, e: ZkError) -> SpiError {
    match e {
        ZkError::NoHosts
        | ZkError::Timeout
        | ZkError::ConnectionLoss
        | ZkError::SessionExpired
        | ZkError::SessionMoved
        | ZkError::ClientClosed
        | ZkError::Throttled
        | ZkError::NotReadOnly => SpiError::unavailable_from(BACKEND, what, e),
        // A request in flight when the socket breaks fails with the I/O error itself
        // ("connection reset by peer"), which the client wraps in `Custom`; its other
        // `Custom` errors ("no response from connection", TLS/SASL setup) are connectivity
        // too. The same outage as ConnectionLoss, so callers may retry.
        ZkError::Custom(_) => SpiError::unavailable_from(BACKEND, what, e),
        _ => SpiError::backend_from(BACKEND, what, e),
    }
}

/// The ACL of every node this backend creates.
///
/// With a digest: `CREATOR_ALL` (the session's digest identity gets everything), what MPush's
/// Curator ACL provider sets, so Java peers with the same digest can read and delete our
/// nodes and we theirs. Without one: open, as Curator without an ACL provider.
pub(crate) fn acls(options: &ZkOptions) -> Acls<'static> {
    if options.digest.is_empty() {
        Acls::anyone_all()
    } else {
        Acls::creator_all()
    }
}

/// Opens a session: digest auth, namespace node created if missing, then chrooted into it.
/// Bounded by `connection_timeout`.
pub(crate) async fn connect(options: &ZkOptions) -> SpiResult<Client> {
    let chroot = options.chroot()?;
    let address = &options.server_address;
    let attempt = async {
        // 0.11 deprecates the `&mut self` setters CRATES-AND-STYLE §2.2 mentions; the
        // consuming `with_*` builders are the current API.
        let mut connector = Client::connector().with_session_timeout(options.session_timeout);
        if !options.digest.is_empty() {
            // Auth sent with the connect request and replayed on every reconnect.
            connector = connector.with_auth("digest", options.digest.as_bytes());
        }
        let client = connector
            .connect(address)
            .await
            .map_err(|e| to_spi(format_args!("connect to {address}"), e))?;
        let Some(root) = chroot else {
            return Ok(client);
        };
        // A chroot must exist before anything is created under it; Curator creates it the
        // same way (persistent, with the ACL provider's ACL).
        client
            .mkdir(&root, &CreateMode::Persistent.with_acls(acls(options)))
            .await
            .map_err(|e| to_spi(format_args!("create namespace {root}"), e))?;
        client.chroot(root.clone()).map_err(|_| SpiError::Config {
            backend: BACKEND,
            message: format!("invalid namespace path {root:?}"),
        })
    };
    match tokio::time::timeout(options.connection_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(SpiError::unavailable(
            BACKEND,
            format!(
                "no ZooKeeper session with {address} within {:?}",
                options.connection_timeout
            ),
        )),
    }
}

/// Writes `node` as spec §11 says: EPHEMERAL at `<service>/<id>` with the node JSON,
/// parents created persistent, an existing node at the path replaced.
///
/// The replacement is one multi-op (delete + create), so readers never see the path empty;
/// watchers still get the delete and create events Java's delete-then-create produces.
pub(crate) async fn write_node(
    client: &Client,
    acls: Acls<'_>,
    node: &ServiceNode,
) -> ZkResult<()> {
    let path = node.node_path();
    let data = node.to_json();
    let ephemeral = CreateMode::Ephemeral.with_acls(acls);
    // Other writers (a Java peer, a restarted process) may race us; a few rounds settle it.
    for _ in 0..5 {
        match client.create(&path, data.as_bytes(), &ephemeral).await {
            Ok(_) => return Ok(()),
            Err(ZkError::NoNode) => {
                client
                    .mkdir(&node.service_name, &CreateMode::Persistent.with_acls(acls))
                    .await?;
            }
            Err(ZkError::NodeExists) => {
                let mut multi = client.new_multi_writer();
                multi.add_delete(&path, None)?;
                multi.add_create(&path, data.as_bytes(), &ephemeral)?;
                match multi.commit().await.map_err(ZkError::from) {
                    Ok(_) => return Ok(()),
                    // Deleted (or parent removed) meanwhile: start over.
                    Err(ZkError::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(ZkError::UnexpectedError(format!(
        "{path} kept changing while registering"
    )))
}

/// Parses node data; unparsable nodes are skipped with a warning (another system may put
/// anything under a service path).
fn parse_node(service: &str, id: &str, data: &[u8]) -> Option<ServiceNode> {
    let node = std::str::from_utf8(data)
        .ok()
        .and_then(|json| ServiceNode::from_json(service, id, json));
    if node.is_none() {
        tracing::warn!(
            service,
            node_id = id,
            data = %String::from_utf8_lossy(data),
            "skipping a ZooKeeper service node whose data is not node JSON"
        );
    }
    node
}

/// Reads one child of `service`: `None` if it is absent or unparsable.
pub(crate) async fn read_child(
    client: &Client,
    service: &str,
    id: &str,
) -> ZkResult<Option<ServiceNode>> {
    match client.get_data(&format!("{service}/{id}")).await {
        Ok((data, _)) => Ok(parse_node(service, id, &data)),
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads every child of `service`, by node id. A missing service path is empty.
pub(crate) async fn read_all(
    client: &Client,
    service: &str,
) -> ZkResult<BTreeMap<String, ServiceNode>> {
    let children = match client.list_children(service).await {
        Ok(children) => children,
        Err(ZkError::NoNode) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    // Requests go out when the futures are created, so the reads are pipelined.
    let reads: Vec<_> = children
        .into_iter()
        .map(|id| {
            let read = client.get_data(&format!("{service}/{id}"));
            (id, read)
        })
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, read) in reads {
        match read.await {
            Ok((data, _)) => {
                if let Some(node) = parse_node(service, &id, &data) {
                    nodes.insert(id, node);
                }
            }
            // Removed between the listing and the read.
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(nodes)
}

/// Exponential back-off between reconnect and re-watch attempts: 100 ms doubling to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The pause to take now; the following one is twice as long, up to 5 s.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn errors_map_to_unavailable_or_backend() {
        assert!(matches!(
            to_spi("x", ZkError::ConnectionLoss),
            SpiError::Unavailable { .. }
        ));
        assert!(matches!(
            to_spi("x", ZkError::Timeout),
            SpiError::Unavailable { .. }
        ));
        assert!(matches!(
            to_spi("x", ZkError::NoAuth),
            SpiError::Backend { .. }
        ));
    }

    #[test]
    fn unparsable_data_is_skipped() {
        assert!(parse_node("/s", "a", b"not json").is_none());
        assert!(parse_node("/s", "a", &[0xff, 0xfe]).is_none());
        let node = parse_node("/s", "a", br#"{"host":"h","port":1}"#);
        assert_eq!(node.map(|n| n.node_path()).as_deref(), Some("/s/a"));
    }
}
