//! What the client reports to the application: connection changes, pushes, kicks, errors.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Something that happened on the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session is established (after the auto-bind, if one is configured). Emitted for the
    /// first connection and again after every successful reconnect.
    Connected {
        /// `true` when the session was resumed with FAST_CONNECT, `false` after a full handshake.
        fast: bool,
        /// The heartbeat interval negotiated with the server.
        heartbeat: Duration,
        /// `false` for the connection made by `Client::connect`, `true` for reconnects.
        reconnect: bool,
    },
    /// A PUSH from the server.
    Push {
        /// The packet sessionId: pass it to `Client::ack` when `needs_ack` is set.
        message_id: i32,
        /// The raw header flags (AUTO_ACK 0x08, BIZ_ACK 0x04, ...).
        flags: u8,
        /// The content, decrypted and inflated.
        content: Bytes,
        /// `true` when the application must call `Client::ack(message_id)`: the push asks for
        /// BIZ_ACK, or for AUTO_ACK while `ClientConfig::auto_ack` is off. AUTO_ACK pushes
        /// are otherwise acknowledged by the client before this event is emitted.
        needs_ack: bool,
    },
    /// The server reports that this device's user logged in elsewhere (KICK). The server
    /// does not close the connection (quirk Q24) and neither does the client.
    Kicked {
        /// Device id in the KICK ("" if absent).
        device_id: String,
        /// User id in the KICK ("" if absent).
        user_id: String,
    },
    /// An ERROR packet that answers no pending request, or a packet that could not be decoded
    /// (then `code` is -1). An unsolicited ERROR for a command other than HANDSHAKE/FAST_CONNECT
    /// is followed by a reconnect (spec §4.5 step 6) or, with reconnect disabled, by
    /// `Disconnected`.
    Error {
        /// The command concerned.
        cmd: u8,
        /// The error code (spec §6).
        code: i8,
        /// The reason text ("" if absent).
        reason: String,
    },
    /// The session ended.
    Disconnected {
        /// Why ("connection closed by server", "read timeout", "closed by client", ...).
        reason: String,
        /// `true` if the client is going to reconnect. The last event a client ever emits is
        /// a `Disconnected` with `will_reconnect: false`.
        will_reconnect: bool,
    },
}

/// An application callback that receives every event, called on the connection's task (so it
/// must not block).
pub type EventCallback = Arc<dyn Fn(Event) + Send + Sync>;

/// The events of one client, in order. Ends (yields `None`) once the client has stopped for
/// good. Empty when the configuration routes events to a callback instead.
///
/// The queue is unbounded so that a slow consumer never stalls heartbeats; drain it, or drop
/// it to discard events.
#[derive(Debug)]
pub struct EventStream {
    rx: Option<mpsc::UnboundedReceiver<Event>>,
}

impl EventStream {
    pub(super) fn new(rx: Option<mpsc::UnboundedReceiver<Event>>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the client has stopped and every event was taken.
    pub async fn recv(&mut self) -> Option<Event> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }

    /// The next event if one is already queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.as_mut().and_then(|rx| rx.try_recv().ok())
    }
}

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match &mut self.get_mut().rx {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Where the connection task sends events.
pub(super) enum EventSink {
    Channel(mpsc::UnboundedSender<Event>),
    Callback(EventCallback),
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Channel(_) => "EventSink::Channel",
            Self::Callback(_) => "EventSink::Callback",
        })
    }
}

impl EventSink {
    pub(super) fn emit(&self, event: Event) {
        match self {
            // A dropped stream means the application does not want events: not an error.
            Self::Channel(tx) => {
                let _ = tx.send(event);
            }
            Self::Callback(cb) => cb(event),
        }
    }
}
