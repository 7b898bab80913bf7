//! The MPush wire protocol, without I/O (spec §1–§4).
//!
//! Everything here is deterministic and synchronous: decoding partial input returns
//! `Ok(None)` ("need more bytes"), oversized lengths are rejected from the header alone, and
//! no input can make it panic. The tokio codec adapter is [`codec::PacketCodec`].

pub mod ack;
pub mod body;
mod client_type;
pub mod codec;
pub mod compress;
pub mod crypto;
pub mod demo;
mod dns_mapping;
pub mod fields;
pub mod json;
pub mod keys;
pub mod message;
pub mod packet;
pub mod session;
pub mod udp;

pub use ack::AckModel;
pub use client_type::ClientType;
pub use codec::PacketCodec;
pub use dns_mapping::DnsMapping;
pub use message::Message;
pub use packet::{Command, Frame, Packet, flags};

/// The bytes of a hex dump written with spaces (the test vectors, copied from captures).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn hex_dump(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// Errors of the protocol layer: malformed, oversized or undecryptable input.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A packet header announced a body larger than the configured limit.
    #[error("packet body of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        length: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A packet header announced a negative body length.
    #[error("negative packet body length {0}")]
    NegativeLength(i32),
    /// A message body ended before all of its fields were read.
    #[error("truncated message body while reading {0}")]
    Truncated(&'static str),
    /// A field has an invalid value (negative length, bad UTF-8, wrong size, ...).
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A body could not be decrypted (wrong key, tampered data, bad padding).
    /// Deliberately carries no detail (no padding oracle).
    #[error("cannot decrypt packet body")]
    Decrypt,
    /// A body could not be encrypted (e.g. RSA key missing).
    #[error("cannot encrypt packet body: {0}")]
    Encrypt(String),
    /// A key could not be loaded.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A compressed body inflates beyond the allowed size (zip bomb guard, quirk Q28).
    #[error("compressed body inflates beyond {0} bytes")]
    InflateTooLarge(usize),
    /// A compressed body is not a valid zlib stream.
    #[error("corrupt compressed body")]
    Inflate,
    /// A flagged body decoded to nothing.
    #[error("body is empty after decoding")]
    EmptyBody,
    /// A WebSocket JSON frame is malformed.
    #[error("invalid JSON packet: {0}")]
    Json(String),
    /// I/O error from the transport (codec adapter only).
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}
