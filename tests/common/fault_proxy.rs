//! A fault-injection TCP proxy for the end-to-end tests: it sits on a free 127.0.0.1 port in
//! front of a backend (Redis, ZooKeeper) and can stall it (`pause`), cut it (`drop_all`),
//! take it down (`refuse`) and bring it back (`resume`), without touching the real server.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] proxied connections at once (more are closed on
//! accept), one task per connection plus the accept task, and every task ends when the
//! [`FaultProxy`] is dropped (they all watch its state channel, which closes with it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Proxied connections open at once; a test backend needs a handful.
pub const MAX_CONNECTIONS: usize = 256;
/// How long the proxy waits for the target to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes moved per read.
const CHUNK: usize = 16 * 1024;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Forward,
    /// Sockets stay open, no byte moves in either direction (a stalled backend).
    Paused,
    /// Existing connections are closed and new ones closed on accept (a backend outage).
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    /// Bumped by `drop_all`/`refuse`: a connection opened in an older epoch closes.
    epoch: u64,
}

/// A TCP proxy in front of `target`. Dropping it closes its listener and every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<State>,
    permits: Arc<Semaphore>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, rx) = watch::channel(State {
            mode: Mode::Forward,
            epoch: 0,
        });
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(accept(listener, target, rx, permits.clone()));
        Ok(Self {
            addr,
            target,
            state,
            permits,
        })
    }

    /// The proxy's address: give this to the component under test instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` of [`FaultProxy::addr`].
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// The real backend behind the proxy.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.state.borrow().mode
    }

    /// Proxied connections currently open.
    pub fn connections(&self) -> usize {
        MAX_CONNECTIONS - self.permits.available_permits()
    }

    /// Stall: stop forwarding in both directions, keep every socket open. New connections
    /// are accepted and stall too.
    pub fn pause(&self) {
        self.state.send_modify(|s| s.mode = Mode::Paused);
    }

    /// Closes every open connection (both sides); new ones are still accepted in the
    /// current mode.
    pub fn drop_all(&self) {
        self.state.send_modify(|s| s.epoch += 1);
    }

    /// Outage: closes every open connection and closes new ones as soon as they are accepted.
    pub fn refuse(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Refuse;
            s.epoch += 1;
        });
    }

    /// Back to normal forwarding (after `pause` the stalled bytes flow again).
    pub fn resume(&self) {
        self.state.send_modify(|s| s.mode = Mode::Forward);
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    mut rx: watch::Receiver<State>,
    permits: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return; // the proxy was dropped
                }
                continue;
            }
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // EMFILE and the like: back off instead of spinning; ends with the proxy.
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            continue;
        };
        let state = *rx.borrow();
        if state.mode == Mode::Refuse {
            drop(client);
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(client);
            continue;
        };
        let rx = rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            pipe(client, target, rx, state.epoch).await;
        });
    }
}

/// Moves bytes between `client` and a new connection to `target` as the state allows,
/// until either side closes, the epoch changes or the proxy is dropped.
async fn pipe(
    mut client: TcpStream,
    target: SocketAddr,
    mut rx: watch::Receiver<State>,
    epoch: u64,
) {
    // Bounded by the connect timeout; the state is checked once connected.
    let upstream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let Ok(Ok(mut upstream)) = upstream else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut to_up = vec![0u8; CHUNK];
    let mut to_client = vec![0u8; CHUNK];
    loop {
        let state = *rx.borrow_and_update();
        if state.epoch != epoch || state.mode == Mode::Refuse {
            return;
        }
        if state.mode == Mode::Paused {
            // Not reading: the bytes wait in the kernel buffers, as with a stalled server.
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            n = cr.read(&mut to_up) => {
                let Ok(n @ 1..) = n else { return };
                if uw.write_all(&to_up[..n]).await.is_err() {
                    return;
                }
            }
            n = ur.read(&mut to_client) => {
                let Ok(n @ 1..) = n else { return };
                if cw.write_all(&to_client[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
