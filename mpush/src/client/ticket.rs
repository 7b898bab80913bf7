//! Fast-reconnect tickets and where the client keeps them (spec §4.5 step 2).
//!
//! A ticket is what HandshakeOk hands out (the `sessionId` string and its expiry) plus the AES
//! session parameters the client must restore when the server accepts a FAST_CONNECT. Keeping
//! it outside the connection lets a reconnect (or a new process, with a persistent store) skip
//! the RSA handshake.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use crate::protocol::crypto::AES_KEY_LEN;

/// A stored fast-reconnect ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTicket {
    /// The ticket string from HandshakeOk (`sessionId`, 32 hex chars on MPush servers).
    pub session_id: String,
    /// Expiry, epoch milliseconds (HandshakeOk `expireTime`).
    pub expire_time: i64,
    /// AES session key (clientKey XOR serverKey).
    pub session_key: [u8; AES_KEY_LEN],
    /// AES IV of the session.
    pub iv: [u8; AES_KEY_LEN],
    /// The device the ticket was issued to; the server rejects it for any other (code 104).
    pub device_id: String,
}

impl fmt::Debug for StoredTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session key decrypts the whole session: never print it.
        f.debug_struct("StoredTicket")
            .field("session_id", &self.session_id)
            .field("expire_time", &self.expire_time)
            .field("session_key", &"<redacted>")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl StoredTicket {
    /// Whether this ticket may be offered by `device_id` at `now_millis`: same device, not
    /// expired, and non-empty.
    pub fn is_usable(&self, device_id: &str, now_millis: i64) -> bool {
        !self.session_id.is_empty() && self.device_id == device_id && self.expire_time > now_millis
    }
}

/// Where a client keeps its ticket between connections.
///
/// Called from the connection task while (re)connecting, so implementations must be quick
/// (an in-memory value, or a small file written synchronously).
pub trait TicketStore: Send + Sync + fmt::Debug {
    /// The stored ticket, if any.
    fn load(&self) -> Option<StoredTicket>;
    /// Replaces the stored ticket (after every successful full handshake).
    fn save(&self, ticket: StoredTicket);
    /// Forgets the ticket (after the server rejected it, or on the application's request).
    fn clear(&self);
}

/// The default [`TicketStore`]: one ticket in memory, lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryTicketStore {
    ticket: Mutex<Option<StoredTicket>>,
}

impl MemoryTicketStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that already holds `ticket` (e.g. restored by the application).
    pub fn with_ticket(ticket: StoredTicket) -> Self {
        Self {
            ticket: Mutex::new(Some(ticket)),
        }
    }
}

impl TicketStore for MemoryTicketStore {
    fn load(&self) -> Option<StoredTicket> {
        // A panic elsewhere cannot leave an Option half-written; keep using the value.
        self.ticket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn save(&self, ticket: StoredTicket) {
        *self.ticket.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticket);
    }

    fn clear(&self) {
        *self.ticket.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
