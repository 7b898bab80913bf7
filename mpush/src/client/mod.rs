//! The Rust client SDK (being written).
