//! Pending ACKs: (connection, push sessionId) → waiter.
//!
//! The waiter is registered *before* the PUSH is queued (quirk Q27 fixed), so an ACK that
//! overtakes the write completion still counts; the key includes the connection (quirk Q20
//! fixed), so one client cannot acknowledge another client's push.

use dashmap::DashMap;
use tokio::sync::oneshot;

/// The table of pushes waiting for their ACK.
#[derive(Debug, Default)]
pub(crate) struct AckTable {
    waiting: DashMap<(u64, i32), oneshot::Sender<()>>,
}

/// Removes its entry when dropped, so a push that ends in any way leaves nothing behind.
#[derive(Debug)]
pub(crate) struct AckWaiter<'a> {
    table: &'a AckTable,
    key: (u64, i32),
    /// Resolves when the ACK arrives.
    pub rx: oneshot::Receiver<()>,
}

impl Drop for AckWaiter<'_> {
    fn drop(&mut self) {
        self.table.waiting.remove(&self.key);
    }
}

impl AckTable {
    /// Registers a wait for the ACK of push `session_id` on connection `conn_seq`.
    pub(crate) fn register(&self, conn_seq: u64, session_id: i32) -> AckWaiter<'_> {
        let (tx, rx) = oneshot::channel();
        self.waiting.insert((conn_seq, session_id), tx);
        AckWaiter {
            table: self,
            key: (conn_seq, session_id),
            rx,
        }
    }

    /// Delivers an ACK; `false` if nothing was waiting (late or unknown ACK).
    pub(crate) fn ack(&self, conn_seq: u64, session_id: i32) -> bool {
        match self.waiting.remove(&(conn_seq, session_id)) {
            Some((_, tx)) => tx.send(()).is_ok(),
            None => false,
        }
    }

    /// Number of pushes waiting.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// `true` if nothing waits.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_per_connection_and_cleaned_on_drop() {
        let t = AckTable::default();
        let mut w = t.register(1, 7);
        assert!(!t.ack(2, 7), "another connection cannot ack");
        assert!(t.ack(1, 7));
        assert!(w.rx.try_recv().is_ok());
        drop(w);
        let w2 = t.register(1, 8);
        drop(w2);
        assert!(t.is_empty());
        assert!(!t.ack(1, 8));
    }
}
