//! What pushing needs of the server that runs it: a deliverable connection, a view of its
//! session for broadcast filters, and the server's shared pieces ([`PushEnv`]).
//!
//! These traits are what lets `push` sit below `server`: the server's connection and context
//! implement them, and nothing here names a server type.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::PushCenter;
use crate::config::FlowControlConfig;
use crate::protocol::Command;
use crate::protocol::body::Prepared;
use crate::router::{LocalRouter, RoutedConnection};
use crate::spi::{CacheManager, PushListener};

/// The session fields a broadcast filter reads (spec §9.6). `None` is null, not "".
pub(crate) trait SessionView {
    /// The bound user's tags (free text).
    fn tags(&self) -> Option<&str>;
    /// The client version from the handshake.
    fn client_version(&self) -> Option<&str>;
    /// The OS name from the handshake.
    fn os_name(&self) -> Option<&str>;
    /// The OS version from the handshake.
    fn os_version(&self) -> Option<&str>;
}

/// A client connection a push can be written to.
pub(crate) trait PushTarget: RoutedConnection + Send + Sync {
    /// Why a write was refused (closed, encoding failed, buffer full).
    type SendError;

    /// `true` once the connection is closed or closing.
    fn is_closed(&self) -> bool;

    /// `false` while the client is behind on reading.
    fn is_writable(&self) -> bool;

    /// Resolves when the connection closes.
    fn closed(&self) -> impl Future<Output = ()> + Send;

    /// Queues a message whose body went through the compression step already
    /// ([`Prepared`]: one compression for many connections), encrypted with the
    /// connection's session cipher.
    fn send_prepared(
        &self,
        cmd: Command,
        session_id: i32,
        flags: u8,
        content: &Prepared,
    ) -> Result<(), Self::SendError>;

    /// Queues one broadcast delivery (PUSH, no ACK, already compressed) for the
    /// connection's own writer, where [`PushTarget::send_prepared`] may write it at once.
    fn send_broadcast(&self, session_id: i32, content: &Prepared) -> Result<(), Self::SendError>;

    /// Runs `f` on the connection's session. `f` must be short: the session may be locked
    /// while it runs.
    fn with_session<R>(&self, f: impl FnOnce(&dyn SessionView) -> R) -> R;
}

/// The pieces of a server that unicast and broadcast pushes use.
pub(crate) trait PushEnv: Send + Sync {
    /// The server's connection type.
    type Conn: PushTarget;

    /// Routes to this server's connections.
    fn local_routes(&self) -> &LocalRouter<Self::Conn>;
    /// Pending ACKs, flow control and push ids.
    fn push_center(&self) -> &PushCenter;
    /// The host application's push listener.
    fn push_listener(&self) -> &dyn PushListener;
    /// The shared cache (broadcast task progress and control).
    fn cache(&self) -> &dyn CacheManager;
    /// Cancelled when the server stops.
    fn shutdown(&self) -> &CancellationToken;
    /// Bodies above this many bytes are compressed (`mp.core.compress-threshold`).
    fn compress_threshold(&self) -> usize;
    /// Flow control of one broadcast (`mp.push.flow-control.broadcast`).
    fn broadcast_flow_control(&self) -> FlowControlConfig;
}

impl<E: PushEnv> PushEnv for Arc<E> {
    type Conn = E::Conn;

    fn local_routes(&self) -> &LocalRouter<Self::Conn> {
        (**self).local_routes()
    }
    fn push_center(&self) -> &PushCenter {
        (**self).push_center()
    }
    fn push_listener(&self) -> &dyn PushListener {
        (**self).push_listener()
    }
    fn cache(&self) -> &dyn CacheManager {
        (**self).cache()
    }
    fn shutdown(&self) -> &CancellationToken {
        (**self).shutdown()
    }
    fn compress_threshold(&self) -> usize {
        (**self).compress_threshold()
    }
    fn broadcast_flow_control(&self) -> FlowControlConfig {
        (**self).broadcast_flow_control()
    }
}
