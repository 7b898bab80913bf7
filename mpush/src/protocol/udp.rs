//! UDP gateway mode framing limits (spec §1.8): one packet per datagram.

/// Receive buffer: the largest possible UDP payload, so no datagram is ever truncated.
pub const MAX_DATAGRAM: usize = 65_536;
