//! The client session (spec §4, §5, §8, §9.2): the fast-reconnect ticket and the sans-I/O
//! state machine every transport drives.
//!
//! [`Session`] takes typed requests ([`Inbound`]) and the results of the effects it asked for,
//! and queues [`Action`]s in order; it never awaits, reads no clock (the caller passes the wall
//! time) and draws no randomness of its own (the caller supplies the server key). The TCP and
//! WebSocket drivers in `server` differ only in how frames become [`Inbound`]s and how
//! [`Out`] replies become bytes.

mod action;
mod identity;
mod idle;
mod machine;
mod ticket;

#[cfg(test)]
mod tests;

pub use action::{Action, BindOutcome, Decrypted, Event, Inbound, Out, Request};
pub use identity::Identity;
pub use idle::{CheckGrid, CheckPlan, IdleCheck, IdleVerdict, PRE_HANDSHAKE_CHECK};
pub use machine::{Cx, Flavor, Session, SessionConfig, negotiate_heartbeat};
pub use ticket::{ReusableSession, is_wire_safe, make_ticket, session_cache_key};
