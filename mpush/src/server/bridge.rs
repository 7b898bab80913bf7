//! The server's side of the lower layers' traits: its [`Connection`] is what the router
//! routes and what pushes are written to, its session is what broadcast filters read, and
//! its context is the environment pushes run in.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::connection::{Connection, SendError};
use super::context::ServerContext;
use super::session::SessionState;
use crate::config::FlowControlConfig;
use crate::protocol::Command;
use crate::protocol::body::Prepared;
use crate::push::{PushCenter, PushEnv, PushTarget, SessionView};
use crate::router::{LocalRouter, RoutedConnection};
use crate::spi::{CacheManager, PushListener};

impl RoutedConnection for Connection {
    fn seq(&self) -> u64 {
        Connection::seq(self)
    }
    fn registered(&self) {
        self.route_check.invalidate();
    }
}

impl SessionView for SessionState {
    fn tags(&self) -> Option<&str> {
        self.tags.as_deref()
    }
    fn client_version(&self) -> Option<&str> {
        SessionState::client_version(self)
    }
    fn os_name(&self) -> Option<&str> {
        SessionState::os_name(self)
    }
    fn os_version(&self) -> Option<&str> {
        SessionState::os_version(self)
    }
}

impl PushTarget for Connection {
    type SendError = SendError;

    fn is_closed(&self) -> bool {
        Connection::is_closed(self)
    }

    fn is_writable(&self) -> bool {
        Connection::is_writable(self)
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        Connection::closed(self)
    }

    fn send_prepared(
        &self,
        cmd: Command,
        session_id: i32,
        flags: u8,
        content: &Prepared,
    ) -> Result<(), SendError> {
        Connection::send_prepared(self, cmd, session_id, flags, content)
    }

    fn send_broadcast(&self, session_id: i32, content: &Prepared) -> Result<(), SendError> {
        Connection::send_fanout(self, session_id, content)
    }

    fn with_session<R>(&self, f: impl FnOnce(&dyn SessionView) -> R) -> R {
        f(&*self.lock_state())
    }
}

impl PushEnv for ServerContext {
    type Conn = Connection;

    fn local_routes(&self) -> &LocalRouter<Connection> {
        &self.router.local
    }
    fn push_center(&self) -> &PushCenter {
        &self.push
    }
    fn push_listener(&self) -> &dyn PushListener {
        &*self.hooks.push_listener
    }
    fn cache(&self) -> &dyn CacheManager {
        &*self.cache
    }
    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
    fn compress_threshold(&self) -> usize {
        self.config.core.compress_threshold
    }
    fn broadcast_flow_control(&self) -> FlowControlConfig {
        self.config.push.broadcast_flow_control
    }
}
